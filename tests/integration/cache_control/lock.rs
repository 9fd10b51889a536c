//! `mlock`: `lock`, `lock onfault`, `unlock`, checked against the daemon's
//! smaps `Locked:` and against `vmtouch -e`, which must fail to evict.

use super::{cachestat, locked_pages, mount_with, num, resident, resident_source, run, send};
use crate::util::{sh_ok, TestMount};

#[test]
fn locked_pages_survive_eviction_and_other_commands_until_unlock() {
    require_fuse!();
    let tm = mount_with(&["src.bin"], |tm| resident_source(&tm.path("src.bin"), 256));
    let src = tm.path("src.bin");
    let report = run(&tm, "src.bin", "mlock", "lock pages 0-63");
    assert_eq!(num(&report, "locked_pages_before"), 0, "{report}");
    assert_eq!(num(&report, "locked_pages_after"), 64, "{report}");
    assert_eq!(locked_pages(&tm), 64, "smaps Locked");
    assert_eq!(tm.stat("src.bin", "locked_pages"), "64");

    // vmtouch -e drops everything but the locked pages.
    sh_ok(tm.dir.path(), "vmtouch -q -e src.bin");
    assert_eq!(resident(&src), (0..64).collect::<Vec<_>>());
    assert_eq!(cachestat(&src, 0, 0).cache, 64);

    // Other commands leave the lock alone; those the kernel refuses on
    // locked pages fail with its errno.
    for (file, command, errno) in [
        ("fadvise", "dontneed", None),
        ("madvise", "willneed pages 0-63", None),
        ("madvise", "sequential", None),
        ("madvise", "normal", None),
        ("madvise", "pageout pages 100-120", None),
        ("madvise", "pageout", Some(libc::EINVAL)),
        ("madvise", "cold pages 0-7", Some(libc::EINVAL)),
        ("madvise", "dontneed pages 0-63", Some(libc::EINVAL)),
        ("msync", "sync", None),
        ("msync", "invalidate pages 100", None),
        ("msync", "invalidate pages 0-3", Some(libc::EBUSY)),
        ("mlock", "lock onfault pages 200-201", None),
        ("mlock", "unlock pages 200-201", None),
    ] {
        let sent = send(&tm, "src.bin", file, command.as_bytes());
        let report = tm.read("src.bin", file);
        assert_eq!(
            sent,
            errno.map_or(Ok(()), Err),
            "{file} {command}:\n{report}"
        );
        assert_eq!(locked_pages(&tm), 64, "after {file} {command}");
        assert_eq!(tm.stat("src.bin", "locked_pages"), "64");
    }
    sh_ok(tm.dir.path(), "vmtouch -q -e src.bin");
    assert_eq!(resident(&src), (0..64).collect::<Vec<_>>());

    let report = run(&tm, "src.bin", "mlock", "unlock");
    assert_eq!(num(&report, "locked_pages_before"), 64, "{report}");
    assert_eq!(num(&report, "locked_pages_after"), 0, "{report}");
    assert_eq!(locked_pages(&tm), 0, "smaps Locked");
    assert_eq!(tm.stat("src.bin", "locked_pages"), "0");
    // Unlocked pages are still mapped by the daemon; unmapped, they go.
    run(&tm, "src.bin", "madvise", "dontneed");
    sh_ok(tm.dir.path(), "vmtouch -q -e src.bin");
    assert_eq!(cachestat(&src, 0, 0).cache, 0);
}

#[test]
fn lock_onfault_locks_pages_as_they_are_touched() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--size", "1M", "src.bin"]);
    let src = tm.path("src.bin");
    // A fault then reads just its page, so the kernel's fault-around finds
    // no neighbour in the cache to map (and lock) with it.
    run(&tm, "src.bin", "madvise", "random");
    let report = run(&tm, "src.bin", "mlock", "lock onfault");
    assert_eq!(num(&report, "locked_pages_after"), 0, "{report}");
    assert_eq!(locked_pages(&tm), 0, "nothing locked before a touch");
    assert_eq!(cachestat(&src, 0, 0).cache, 0, "locking read nothing");
    assert_eq!(tm.stat("src.bin", "locked_pages"), "0");

    let report = run(&tm, "src.bin", "madvise", "populate_read pages 2-5");
    assert_eq!(num(&report, "locked_pages_after"), 4, "{report}");
    assert_eq!(locked_pages(&tm), 4, "smaps Locked");
    assert_eq!(tm.stat("src.bin", "locked_pages"), "4");
    assert_eq!(resident(&src), vec![2, 3, 4, 5]);
    sh_ok(tm.dir.path(), "vmtouch -q -e src.bin");
    assert_eq!(resident(&src), vec![2, 3, 4, 5], "locked pages stay");

    run(&tm, "src.bin", "mlock", "unlock");
    assert_eq!(locked_pages(&tm), 0, "smaps Locked");
    assert_eq!(tm.stat("src.bin", "locked_pages"), "0");
}
