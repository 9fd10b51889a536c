//! Ranges on every control file: `OFFSET LENGTH` and `pages CPULIST`, a
//! recorded working set replayed with ordinary tools, and a list of
//! 10 000 ranges.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use super::{cachestat, locked_pages, num, pages_of, resident, run, send, wait_resident, PAGE};
use crate::util::{sh, sh_ok, stat_value, TestMount};

fn cold(size: &str) -> TestMount {
    let mut tm = TestMount::new();
    tm.mount(&["--size", size, "src.bin"]);
    tm
}

#[test]
fn madvise_fadvise_and_mlock_take_spans_and_page_lists() {
    require_fuse!();
    let tm = cold("1M");
    let src = tm.path("src.bin");
    let mut want: Vec<u64> = Vec::new();
    let mut check = |add: &[u64], drop: &[u64], what: &str| {
        want.extend_from_slice(add);
        want.retain(|p| !drop.contains(p));
        want.sort_unstable();
        wait_resident(&src, &want, what);
    };
    run(&tm, "src.bin", "fadvise", "willneed 400K 8K");
    check(&[100, 101], &[], "fadvise willneed OFFSET LENGTH");
    let report = run(&tm, "src.bin", "fadvise", "willneed pages 110,112-113");
    assert_eq!(stat_value(&report, "pages").as_deref(), Some("110,112-113"));
    assert_eq!(num(&report, "pages_count"), 3);
    check(&[110, 112, 113], &[], "fadvise willneed pages");

    // With `random`, a fault reads only its own page. The kernel's
    // fault-around may map cached neighbours up to 15 pages away into the
    // daemon's mapping, where fadvise cannot drop them: the pages evicted
    // below are far from every page faulted here.
    run(&tm, "src.bin", "madvise", "random");
    run(&tm, "src.bin", "madvise", "populate_read 64K 4K");
    check(&[16], &[], "madvise OFFSET LENGTH");
    run(&tm, "src.bin", "madvise", "populate_read pages 20,22");
    check(&[20, 22], &[], "madvise pages");

    let report = run(&tm, "src.bin", "mlock", "lock 128K 8K");
    assert_eq!(
        (num(&report, "offset_bytes"), num(&report, "length_bytes")),
        (128 << 10, 8 << 10)
    );
    check(&[32, 33], &[], "mlock OFFSET LENGTH");
    assert_eq!(locked_pages(&tm), 2);
    run(&tm, "src.bin", "mlock", "lock pages 40,42");
    check(&[40, 42], &[], "mlock pages");
    assert_eq!(locked_pages(&tm), 4);
    assert_eq!(tm.stat("src.bin", "locked_pages"), "4");
    run(&tm, "src.bin", "mlock", "unlock pages 40,42");
    assert_eq!(locked_pages(&tm), 2);
    run(&tm, "src.bin", "mlock", "unlock 128K 8K");
    assert_eq!(locked_pages(&tm), 0);

    run(&tm, "src.bin", "fadvise", "dontneed pages 100,110");
    check(&[], &[100, 110], "fadvise dontneed pages");
    run(&tm, "src.bin", "fadvise", "dontneed 448K 8K");
    check(&[], &[112, 113], "fadvise dontneed OFFSET LENGTH");
    assert_eq!(want, [16, 20, 22, 32, 33, 40, 42, 101]);
    assert_eq!(pages_of(&tm.read("src.bin", "resident_pages")), want);
}

#[test]
fn msync_takes_page_lists() {
    require_fuse!();
    let tm = cold("1M");
    let src = tm.path("src.bin");
    let data = OpenOptions::new()
        .write(true)
        .open(tm.file("src.bin", "data"))
        .unwrap();
    // Writes to never-read pages make one-page folios: exact dirty counts.
    for page in [3, 7, 9] {
        data.write_at(b"dirty", page * PAGE).unwrap();
    }
    let dirty = |page| cachestat(&src, page, 1).dirty;
    assert_eq!((dirty(3), dirty(7), dirty(9)), (1, 1, 1));
    sh_ok(
        tm.dir.path(),
        r#"echo "sync pages 3,7" > mnt/src.bin/msync"#,
    );
    let report = tm.read("src.bin", "msync");
    assert_eq!(stat_value(&report, "result").as_deref(), Some("ok"));
    assert_eq!(stat_value(&report, "pages").as_deref(), Some("3,7"));
    assert_eq!(num(&report, "dirty_pages_before"), 2, "{report}");
    assert_eq!(num(&report, "dirty_pages_after"), 0, "{report}");
    assert_eq!((dirty(3), dirty(7), dirty(9)), (0, 0, 1));
    run(&tm, "src.bin", "msync", "sync 36K 4K");
    assert_eq!(cachestat(&src, 0, 0).dirty, 0);
}

/// `cat resident_pages > ws; echo dontneed > fadvise; echo "populate_read
/// pages $(cat ws)" > madvise`, in `shell`, for the pages `ws` of a cold
/// source of `size`.
fn record_and_replay(size: &str, shell: &str, ws: &[u64]) {
    let tm = cold(size);
    let src = tm.path("src.bin");
    let list: Vec<String> = ws.iter().map(u64::to_string).collect();
    let warm = format!("willneed pages {}", list.join(","));
    assert_eq!(send(&tm, "src.bin", "fadvise", warm.as_bytes()), Ok(()));
    wait_resident(&src, ws, "the working set is read");

    sh_ok(tm.dir.path(), "cat mnt/src.bin/resident_pages > ws");
    sh_ok(tm.dir.path(), "echo dontneed > mnt/src.bin/fadvise");
    assert_eq!(cachestat(&src, 0, 0).cache, 0, "evicted");
    let out = sh(
        tm.dir.path(),
        &format!("{shell} -c 'echo \"populate_read pages $(cat ws)\" > mnt/src.bin/madvise'"),
    );
    let report = tm.read("src.bin", "madvise");
    assert!(
        out.status.success(),
        "{shell}: {}\n{report}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(num(&report, "pages_count"), ws.len() as u64, "{report}");
    assert_eq!(num(&report, "resident_pages_after"), ws.len() as u64);
    // The kernel reads around a fault and in whole folios: every page of
    // the set is back, maybe with neighbours.
    let now = resident(&src);
    let lost: Vec<&u64> = ws
        .iter()
        .filter(|p| now.binary_search(p).is_err())
        .collect();
    assert!(lost.is_empty(), "not restored: {lost:?}");
}

#[test]
fn a_recorded_working_set_replays() {
    require_fuse!();
    let mut ws: Vec<u64> = [1, 2, 3, 17, 300]
        .into_iter()
        .chain(40..48)
        .chain(1000..1004)
        .collect();
    ws.sort_unstable();
    record_and_replay("4M", "sh", &ws);
}

/// The same from bash with a list longer than 4 KiB of text: bash's
/// `echo` goes through stdio, which writes in blocks of the file's
/// `st_blksize` (4096 on the control files), so the line reaches the
/// daemon as two writes. The whole working set must still be replayed.
#[test]
fn a_long_working_set_replays_from_bash() {
    require_fuse!();
    let ws: Vec<u64> = (0..4096).step_by(3).collect();
    record_and_replay("16M", "bash", &ws);
}

#[test]
fn ten_thousand_single_page_ranges_are_applied() {
    require_fuse!();
    let tm = cold("80M");
    let src = tm.path("src.bin");
    let ws: Vec<u64> = (0..20_000).step_by(2).collect();
    let list: Vec<String> = ws.iter().map(u64::to_string).collect();
    let command = format!("willneed pages {}", list.join(","));
    assert!(command.len() < 1 << 20);
    assert_eq!(send(&tm, "src.bin", "madvise", command.as_bytes()), Ok(()));
    let report = tm.read("src.bin", "madvise");
    assert_eq!(stat_value(&report, "result").as_deref(), Some("ok"));
    assert_eq!(num(&report, "pages_count"), 10_000, "{report}");
    // willneed reads exactly the pages asked for.
    wait_resident(&src, &ws, "10 000 pages read");
    assert_eq!(cachestat(&src, 0, 0).cache, 10_000);
}
