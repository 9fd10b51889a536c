//! Cached mode (`--io cached`, windows, `--private`): the kernel keeps its
//! own page cache of `data`, and nothing that happens to it may lose a
//! store, serve stale bytes or hide dirty pages.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::util::{self, hold_mapper, sh_ok, Running, TestMount};

const PAGE: usize = 4096;
/// Source size; windows start one page in.
const SOURCE: usize = (1 << 20) + PAGE;

/// Every way `data` ends up in cached mode, with where the window starts
/// in the source and whether stores reach the source.
const CACHED_MODES: [(&str, &[&str], usize, bool); 3] = [
    ("plain", &["--io", "cached"], 0, true),
    ("window", &["--offset", "4K"], PAGE, true),
    ("private", &["--private"], 0, false),
];

fn each_cached_mode(test: impl Fn(&TestMount, &str, usize, bool)) {
    require_fuse!();
    for (mode, args, offset, shared) in CACHED_MODES {
        let mut tm = TestMount::new();
        let pattern: Vec<u8> = (0..SOURCE).map(|i| (i % 251) as u8).collect();
        fs::write(tm.path("src.bin"), pattern).unwrap();
        let mut all = args.to_vec();
        all.push("src.bin");
        tm.mount(&all);
        assert_eq!(tm.stat("src.bin", "io_mode"), "cached", "{mode}");
        test(&tm, mode, offset, shared);
    }
}

/// A mapper of `data` holding its mapping, with one store per page.
fn storing_mapper(data: &Path, pages: usize) -> Running {
    let stores: Vec<String> = (0..pages)
        .map(|page| format!("--write={}=s{page}", page * PAGE + 100))
        .collect();
    let mut args: Vec<&str> = stores.iter().map(String::as_str).collect();
    args.push("--check-at-exit");
    hold_mapper(data, &args)
}

#[test]
fn o_trunc_loses_no_other_process_store() {
    each_cached_mode(|tm, mode, offset, shared| {
        let data = tm.file("src.bin", "data");
        let mapper = storing_mapper(&data, 256);
        for (how, script) in [
            ("echo", "echo x > mnt/src.bin/data"),
            (":", ": > mnt/src.bin/data"),
            ("cp", "printf x > one && cp one mnt/src.bin/data"),
        ] {
            sh_ok(tm.dir.path(), script);
            assert_eq!(
                fs::metadata(&data).unwrap().len() as usize,
                SOURCE - offset,
                "{mode}: {how}: data keeps its size"
            );
        }
        let (status, lines, err) = mapper.finish();
        assert!(status.success(), "{mode}: the mapper: {err}");
        assert!(lines.iter().any(|l| l == "kept"), "{mode}: {lines:?}");
        let seen = fs::read(&data).unwrap();
        let source = fs::read(tm.path("src.bin")).unwrap();
        assert_eq!(seen[0], b'x', "{mode}: the write itself");
        for page in 0..256 {
            let text = format!("s{page}");
            let at = page * PAGE + 100;
            assert_eq!(
                &seen[at..at + text.len()],
                text.as_bytes(),
                "{mode}: store {page} in data"
            );
            let in_source = &source[offset + at..offset + at + text.len()] == text.as_bytes();
            assert_eq!(in_source, shared, "{mode}: store {page} in the source");
        }
    });
}

/// Whether reading `len` bytes at `at` gives bytes the source no longer
/// has (its end is now below `at`): a short read or `EIO` is right.
fn stale(file: &fs::File, at: u64, mode: &str) -> bool {
    let mut buf = vec![0u8; 8192];
    match file.read_at(&mut buf, at) {
        Ok(n) => n > 0,
        Err(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::EIO), "{mode}");
            false
        }
    }
}

fn shrink_source(tm: &TestMount, size: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(tm.path("src.bin"))
        .unwrap()
        .set_len(size)
        .unwrap();
}

#[test]
fn a_source_truncated_behind_the_daemon_serves_no_stale_bytes() {
    each_cached_mode(|tm, mode, _, _| {
        let data = tm.file("src.bin", "data");
        let reader = fs::File::open(&data).unwrap();
        // Both ranges are now in the kernel's cache of `data`.
        let mut buf = vec![0u8; 8192];
        reader.read_exact_at(&mut buf, 768 << 10).unwrap();
        reader.read_exact_at(&mut buf, 384 << 10).unwrap();
        // Nobody opens `data` again: the daemon's watcher notices.
        shrink_source(tm, 512 << 10);
        util::wait_until("the cached pages past the new end to go", || {
            !stale(&reader, 768 << 10, mode)
        });
        // A new open notices at once, for every descriptor.
        reader.read_exact_at(&mut buf, 384 << 10).unwrap();
        shrink_source(tm, 256 << 10);
        let fresh = fs::File::open(&data).unwrap();
        assert!(!stale(&fresh, 384 << 10, mode), "{mode}: a new open");
        assert!(!stale(&reader, 384 << 10, mode), "{mode}: an older open");
        assert!(
            tm.read("src.bin", "events").contains(" source_truncated "),
            "{mode}"
        );
    });
}

#[test]
fn an_outside_mappers_unsynced_stores_show_as_dirty() {
    each_cached_mode(|tm, mode, _, _| {
        fs::File::open(tm.path("src.bin"))
            .unwrap()
            .sync_all()
            .unwrap();
        let data = tm.file("src.bin", "data");
        let mapper = hold_mapper(&data, &["--write=20480=hi", "--write=40960=yo"]);
        // They sit in the kernel's cache of `data`, not yet sent to us.
        assert_eq!(tm.stat("src.bin", "fuse_dirty_pages"), "2", "{mode}");
        assert_eq!(tm.read("src.bin", "dirty_pages"), "5,10\n", "{mode}");
        let map = tm.read("src.bin", "map");
        assert!(map.lines().nth(1).unwrap().contains('D'), "{mode}: {map}");
        // Looking did not push them: still one level up.
        assert_eq!(tm.stat("src.bin", "fuse_dirty_pages"), "2", "{mode}");
        let (status, _, err) = mapper.finish();
        assert!(status.success(), "{mode}: {err}");
        // The daemon's own opens of data, to look, are not a user's.
        let events = tm.read("src.bin", "events");
        assert_eq!(events.matches(" open ").count(), 1, "{mode}: {events}");
        // munmap wrote them back to the daemon: the source level has them
        // (as whole folios: the kernel may write back more than the two).
        assert_eq!(tm.stat("src.bin", "fuse_dirty_pages"), "0", "{mode}");
        let below: u64 = tm.stat("src.bin", "dirty_pages").parse().unwrap();
        assert!(below >= 2, "{mode}: {below}");
    });
}
