//! Evicting a file (`fadvise dontneed`) and warming it (`madvise
//! populate_read`/`willneed`, `fadvise willneed`, `... missing`).

use super::{cachestat, mount_with, num, resident, resident_source, run, wait_resident};
use crate::util::TestMount;

#[test]
fn fadvise_dontneed_evicts_and_says_what_stayed() {
    require_fuse!();
    let tm = mount_with(&["src.bin"], |tm| resident_source(&tm.path("src.bin"), 256));
    let src = tm.path("src.bin");
    assert_eq!(cachestat(&src, 0, 0).cache, 256);
    let report = run(&tm, "src.bin", "fadvise", "dontneed");
    assert_eq!(cachestat(&src, 0, 0).cache, 0, "{report}");
    assert_eq!(num(&report, "resident_pages_before"), 256);
    assert_eq!(num(&report, "resident_pages_after"), 0);
    for key in [
        "stayed_resident_pages",
        "stayed_dirty_pages",
        "stayed_locked_pages",
        "stayed_mapped_or_busy_pages",
    ] {
        assert_eq!(num(&report, key), 0, "{key}:\n{report}");
    }

    // Resident again, with pages 0-15 locked: those stay, and say why.
    resident_source(&src, 256);
    run(&tm, "src.bin", "mlock", "lock pages 0-15");
    let report = run(&tm, "src.bin", "fadvise", "dontneed");
    assert_eq!(resident(&src), (0..16).collect::<Vec<_>>(), "{report}");
    assert_eq!(num(&report, "resident_pages_before"), 256);
    assert_eq!(num(&report, "resident_pages_after"), 16);
    assert_eq!(num(&report, "stayed_resident_pages"), 16);
    assert_eq!(num(&report, "stayed_locked_pages"), 16);
    assert_eq!(num(&report, "stayed_dirty_pages"), 0);
    assert_eq!(num(&report, "locked_pages_after"), 16);
    let events = tm.read("src.bin", "events");
    assert!(
        events.contains(
            " fadvise command=dontneed offset=0 length=1048576 result=ok \
             resident_before=256 resident_after=16 locked_after=16 "
        ),
        "{events}"
    );
}

#[test]
fn populate_read_and_willneed_warm_a_cold_file() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--size", "1M", "a.bin", "b.bin", "c.bin"]);
    for (src, file, command) in [
        ("a.bin", "madvise", "populate_read"),
        ("b.bin", "fadvise", "willneed"),
        ("c.bin", "madvise", "willneed"),
    ] {
        let path = tm.path(src);
        assert_eq!(cachestat(&path, 0, 0).cache, 0, "{src} starts cold");
        let report = run(&tm, src, file, command);
        // willneed starts reads and returns: wait for them.
        let all: Vec<u64> = (0..256).collect();
        wait_resident(&path, &all, &format!("{command} on {file} warms {src}"));
        assert_eq!(cachestat(&path, 0, 0).cache, 256);
        assert_eq!(num(&report, "resident_pages_before"), 0, "{report}");
        if command == "populate_read" {
            assert_eq!(num(&report, "resident_pages_after"), 256, "{report}");
        }
    }
}

#[test]
fn missing_touches_only_the_pages_not_resident() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--size", "1M", "a.bin", "b.bin", "c.bin"]);
    for (src, file, command) in [
        ("a.bin", "madvise", "populate_read missing"),
        ("b.bin", "madvise", "willneed missing"),
        ("c.bin", "fadvise", "willneed missing"),
    ] {
        let path = tm.path(src);
        // fadvise willneed reads exactly the pages asked for.
        run(&tm, src, "fadvise", "willneed pages 0-9,100-149");
        let mut want = (0..10).chain(100..150).collect::<Vec<_>>();
        wait_resident(&path, &want, "the partial warm-up");
        let missing = 256 - resident(&path).len() as u64;
        assert_eq!(missing, 196);
        let report = run(&tm, src, file, command);
        assert_eq!(num(&report, "missing_pages"), missing, "{report}");
        assert_eq!(num(&report, "resident_pages_before"), 60, "{report}");
        want = (0..256).collect();
        wait_resident(&path, &want, &format!("{command} fills {src}"));
        assert_eq!(
            tm.read(src, "resident_pages"),
            "0-255\n",
            "the daemon agrees"
        );
    }
}
