//! Outside processes that `mmap(MAP_SHARED)` `data`: coherence with
//! `write(2)`, with each other and with the source; the `mappers` file; and
//! a killed daemon.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;

use crate::util::{self, finish, hold_mapper, map_once, sh_ok, Running, TestMount};

fn source_bytes(tm: &TestMount, offset: usize, len: usize) -> Vec<u8> {
    fs::read(tm.path("src.bin")).unwrap()[offset..offset + len].to_vec()
}

#[test]
fn passthrough_mappings_share_the_source_page_cache() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--size", "1M", "src.bin"]);
    assert_eq!(tm.stat("src.bin", "io_mode"), "passthrough");
    let data = tm.file("src.bin", "data");
    OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .write_at(b"via write", 100)
        .unwrap();
    let a = hold_mapper(&data, &["--write", "8192=from mapper A", "--read", "100=9"]);
    assert_eq!(a.seen, ["read via write"], "a mapper sees write(2) at once");
    // Another mapper sees A's store; the source path sees it with no msync.
    assert_eq!(
        map_once(&data, &["--read", "8192=13"]),
        ["read from mapper A", "ready"]
    );
    assert_eq!(source_bytes(&tm, 8192, 13), b"from mapper A");
    assert!(tm
        .read("src.bin", "dirty_pages")
        .split([',', '\n'])
        .any(|r| {
            r == "2"
                || r.split_once('-').is_some_and(|(x, y)| {
                    x.parse::<u64>().unwrap() <= 2 && y.parse::<u64>().unwrap() >= 2
                })
        }));
    let mappers = tm.read("src.bin", "mappers");
    let line = mappers
        .lines()
        .find(|l| l.starts_with(&format!("{} ", a.pid())))
        .unwrap_or_else(|| panic!("mapper {} not listed:\n{mappers}", a.pid()));
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 5, "{line}");
    assert_eq!(fields[1], "mapper");
    assert_eq!(fields[3], "rw-s");
    assert_eq!(fields[4], "0");
    util::wait_until("stats counts the mapper", || {
        tm.stat("src.bin", "mappers") != "0"
    });
    let pid = a.pid();
    finish(a);
    util::wait_until("mapper gone from mappers", || {
        !tm.read("src.bin", "mappers").contains(&format!("{pid} "))
    });
    util::wait_until("stats mappers back to 0", || {
        tm.stat("src.bin", "mappers") == "0"
    });
}

#[test]
fn cached_mode_stores_reach_the_source_on_msync() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--io", "cached", "--size", "1M", "src.bin"]);
    let data = tm.file("src.bin", "data");
    // The mapper's own msync pushes its stores.
    map_once(&data, &["--write", "4096=own msync", "--msync"]);
    assert_eq!(source_bytes(&tm, 4096, 9), b"own msync");
    // A held mapping without msync: `echo sync > msync` pushes it.
    let held = hold_mapper(&data, &["--write", "65536=held store"]);
    sh_ok(tm.dir.path(), "echo sync > mnt/src.bin/msync");
    assert_eq!(source_bytes(&tm, 65536, 10), b"held store");
    assert_eq!(
        map_once(&data, &["--read", "65536=10"]),
        ["read held store", "ready"]
    );
    finish(held);
}

#[test]
fn many_openers_and_mappers_leave_the_counts_at_zero() {
    require_fuse!();
    for io in ["auto", "cached"] {
        let mut tm = TestMount::new();
        tm.mount(&["--io", io, "--size", "4M", "src.bin"]);
        let data = tm.file("src.bin", "data");
        let held: Vec<Running> = (0..6)
            .map(|i| hold_mapper(&data, &["--write", &format!("{}=m{i}", i * 4096)]))
            .collect();
        let readers: Vec<_> = (0..6)
            .map(|_| {
                let dir = tm.dir.path().to_path_buf();
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        sh_ok(
                            &dir,
                            "cat mnt/src.bin/data > /dev/null; cat mnt/src.bin/stats > /dev/null",
                        );
                    }
                })
            })
            .collect();
        util::wait_until("stats counts the mappers", || {
            tm.stat("src.bin", "mappers").parse::<u32>().unwrap() >= 6
        });
        for r in readers {
            r.join().unwrap();
        }
        held.into_iter().for_each(finish);
        sh_ok(tm.dir.path(), "echo sync > mnt/src.bin/msync");
        for i in 0..6 {
            assert_eq!(
                source_bytes(&tm, i * 4096, 2),
                format!("m{i}").as_bytes(),
                "{io}"
            );
        }
        util::wait_until("open_handles back to 0", || {
            tm.stat("src.bin", "open_handles") == "0"
        });
        util::wait_until("mappers back to 0", || tm.stat("src.bin", "mappers") == "0");
        assert_eq!(tm.read("src.bin", "mappers"), "");
    }
}

#[test]
fn kill_9_keeps_stores_of_outside_mappings() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--size", "1M", "src.bin"]);
    let data = tm.file("src.bin", "data");
    let held = hold_mapper(&data, &["--write", "20000=mapped then killed"]);
    tm.kill_9_and_clean_up();
    finish(held);
    assert_eq!(source_bytes(&tm, 20000, 18), b"mapped then killed");
}
