//! What the cache-control commands do in `--read-only`, `--anon`, window
//! and `--private` mounts.

use std::fs;

use super::{
    cachestat, fill_byte, locked_pages, mount_with, num, resident, resident_source, run, send,
    smaps_kb, wait_resident, PAGE,
};
use crate::util::{stat_value, TestMount};

#[test]
fn read_only_refuses_populate_write_and_says_why() {
    require_fuse!();
    let tm = mount_with(&["--read-only", "src.bin"], |tm| {
        resident_source(&tm.path("src.bin"), 64)
    });
    let src = tm.path("src.bin");
    let before = fs::read(&src).unwrap();
    assert_eq!(
        send(&tm, "src.bin", "madvise", b"populate_write"),
        Err(libc::EACCES)
    );
    let report = tm.read("src.bin", "madvise");
    assert_eq!(stat_value(&report, "result").as_deref(), Some("EACCES"));
    let error = stat_value(&report, "error").unwrap_or_default();
    assert!(error.contains("read-only"), "{report}");
    assert_eq!(cachestat(&src, 0, 0).dirty, 0, "no page made writable");
    assert_eq!(fs::read(&src).unwrap(), before);
    assert!(tm
        .read("src.bin", "events")
        .contains(" madvise command=populate_write offset=0 length=262144 result=EACCES "));
    // Reading commands still work.
    run(&tm, "src.bin", "madvise", "populate_read");
    run(&tm, "src.bin", "mlock", "lock pages 0-7");
    assert_eq!(locked_pages(&tm), 8);
}

#[test]
fn anon_refuses_fadvise_but_madvise_and_mlock_work() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--anon", "shm=1M"]);
    for command in ["dontneed", "willneed pages 0-3"] {
        assert_eq!(
            send(&tm, "shm", "fadvise", command.as_bytes()),
            Err(libc::EINVAL),
            "{command}"
        );
        let report = tm.read("shm", "fadvise");
        assert_eq!(stat_value(&report, "result").as_deref(), Some("EINVAL"));
        let error = stat_value(&report, "error").unwrap_or_default();
        assert!(
            error.contains("--anon") && error.contains("madvise"),
            "{report}"
        );
    }
    // The region's pages, as the daemon maps them.
    let memfd = |field| smaps_kb(tm.pid(), Some("/memfd:shm"), field) / (PAGE / 1024);
    assert_eq!(memfd("Rss:"), 0);
    let report = run(&tm, "shm", "madvise", "populate_write pages 0-9");
    assert_eq!(num(&report, "resident_pages_after"), 10, "{report}");
    assert_eq!(memfd("Rss:"), 10);
    let report = run(&tm, "shm", "mlock", "lock pages 0-19");
    assert_eq!(num(&report, "locked_pages_after"), 20, "{report}");
    assert_eq!((memfd("Rss:"), memfd("Locked:")), (20, 20));
    assert_eq!(tm.stat("shm", "locked_pages"), "20");
    run(&tm, "shm", "mlock", "unlock");
    assert_eq!(memfd("Locked:"), 0);
    assert_eq!(tm.stat("shm", "locked_pages"), "0");
}

#[test]
fn a_window_maps_its_page_zero_to_the_source_page_at_the_offset() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&[
        "--size", "1M", "--offset", "64K", "--length", "256K", "w.bin",
    ]);
    let src = tm.path("w.bin");
    assert_eq!(tm.stat("w.bin", "pages"), "64");
    // Window page N is source page 16 + N.
    run(&tm, "w.bin", "fadvise", "willneed pages 0,50");
    wait_resident(&src, &[16, 66], "fadvise willneed in the window");
    run(&tm, "w.bin", "madvise", "random");
    run(&tm, "w.bin", "madvise", "populate_read 40K 8K");
    assert_eq!(resident(&src), [16, 26, 27, 66]);
    run(&tm, "w.bin", "mlock", "lock pages 20-21");
    assert_eq!(resident(&src), [16, 26, 27, 36, 37, 66]);
    assert_eq!(locked_pages(&tm), 2);
    assert_eq!(tm.stat("w.bin", "locked_pages"), "2");
    assert_eq!(tm.read("w.bin", "resident_pages"), "0,10-11,20-21,50\n");
    // Far from the pages faulted in (which the kernel may map with
    // neighbours, out of fadvise's reach).
    run(&tm, "w.bin", "fadvise", "dontneed pages 50");
    assert_eq!(resident(&src), [16, 26, 27, 36, 37]);
    assert_eq!(
        send(&tm, "w.bin", "madvise", b"willneed pages 64"),
        Err(libc::EINVAL),
        "page 64 is past the window"
    );
    assert_eq!(cachestat(&src, 80, 0).cache, 0, "nothing after the window");
}

#[test]
fn private_populate_write_copies_pages_and_leaves_the_source_alone() {
    require_fuse!();
    let tm = mount_with(&["--private", "src.bin"], |tm| {
        resident_source(&tm.path("src.bin"), 64)
    });
    let src = tm.path("src.bin");
    let before = fs::read(&src).unwrap();
    let report = run(&tm, "src.bin", "madvise", "populate_write pages 3-6");
    assert_eq!(num(&report, "dirty_pages_before"), 0, "{report}");
    assert_eq!(num(&report, "dirty_pages_after"), 4, "{report}");
    assert_eq!(tm.stat("src.bin", "dirty_pages"), "4");
    assert_eq!(tm.read("src.bin", "dirty_pages"), "3-6\n");
    // The copies are the daemon's anonymous pages in its mapping of src.bin.
    let path = fs::canonicalize(&src).unwrap();
    let anon = smaps_kb(tm.pid(), Some(path.to_str().unwrap()), "Anonymous:");
    assert_eq!(anon / (PAGE / 1024), 4);
    assert_eq!(cachestat(&src, 0, 0).dirty, 0, "the source is not dirtied");
    assert_eq!(fs::read(&src).unwrap(), before);
    assert_eq!(before[5 * PAGE as usize], fill_byte(5));
}
