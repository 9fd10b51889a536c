//! Mapping modes: `--private`, `--anon`, and windows (`--offset`/`--length`),
//! with what reaches the disk checked on the source file itself.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};

use crate::util::{sh_ok, stat_value, TestMount};

const PAGE: u64 = 4096;

#[test]
fn private_writes_never_reach_the_source() {
    require_fuse!();
    let mut tm = TestMount::new();
    let original: Vec<u8> = (0..1u32 << 20).map(|i| (i % 13) as u8).collect();
    fs::write(tm.path("src.bin"), &original).unwrap();
    tm.mount(&["-o", "private", "src.bin"]);
    assert_eq!(tm.stat("src.bin", "mode"), "private");
    assert_eq!(tm.stat("src.bin", "io_mode"), "cached");
    assert_eq!(tm.read("src.bin", "dirty_pages"), "\n");
    let data = OpenOptions::new()
        .write(true)
        .open(tm.file("src.bin", "data"))
        .unwrap();
    data.write_at(b"private!", 5 * PAGE).unwrap();
    data.write_at(b"also", 100 * PAGE + 10).unwrap();
    // data serves the private copy...
    let mut buf = [0u8; 8];
    fs::File::open(tm.file("src.bin", "data"))
        .unwrap()
        .read_exact_at(&mut buf, 5 * PAGE)
        .unwrap();
    assert_eq!(&buf, b"private!");
    // ...dirty_pages lists exactly the copied-on-write pages...
    assert_eq!(tm.read("src.bin", "dirty_pages"), "5,100\n");
    assert_eq!(tm.stat("src.bin", "dirty_pages"), "2");
    // ...and a sync succeeds without touching the source.
    sh_ok(tm.dir.path(), "echo sync > mnt/src.bin/msync");
    let report = tm.read("src.bin", "msync");
    assert_eq!(stat_value(&report, "result").as_deref(), Some("ok"));
    assert_eq!(stat_value(&report, "reached_source").as_deref(), Some("no"));
    assert_eq!(fs::read(tm.path("src.bin")).unwrap(), original);
    drop(data);
    let (status, _) = tm.unmount();
    assert!(status.success());
    assert_eq!(
        fs::read(tm.path("src.bin")).unwrap(),
        original,
        "unchanged after unmount"
    );
}

#[test]
fn anon_regions_need_no_source_and_are_shared() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--anon", "shm=1M", "--anon", "small=4K"]);
    assert_eq!(tm.stat("shm", "mode"), "anon");
    assert_eq!(tm.stat("shm", "source"), "memfd:shm");
    assert_eq!(tm.stat("small", "length_bytes"), "4096");
    assert_eq!(fs::metadata(tm.file("shm", "data")).unwrap().len(), 1 << 20);
    // One process writes, an unrelated one reads.
    sh_ok(
        tm.dir.path(),
        "printf 'from A' | dd of=mnt/shm/data bs=1 seek=4096 conv=notrunc status=none",
    );
    let got = sh_ok(
        tm.dir.path(),
        "dd if=mnt/shm/data bs=1 skip=4096 count=6 status=none",
    );
    assert_eq!(got, "from A");
    assert!(
        tm.read("shm", "resident_pages").contains('1'),
        "page 1 is resident"
    );
    sh_ok(tm.dir.path(), "echo sync > mnt/shm/msync");
    assert_eq!(
        stat_value(&tm.read("shm", "msync"), "result").as_deref(),
        Some("ok")
    );
}

#[test]
fn a_window_is_just_that_part_of_the_file() {
    require_fuse!();
    let mut tm = TestMount::new();
    let original: Vec<u8> = (0..4u32 << 20).map(|i| (i / 4096) as u8).collect();
    fs::write(tm.path("src.bin"), &original).unwrap();
    tm.mount(&["--offset", "1M", "--length", "64K", "src.bin"]);
    assert_eq!(tm.stat("src.bin", "offset_bytes"), (1 << 20).to_string());
    assert_eq!(tm.stat("src.bin", "io_mode"), "cached");
    assert_eq!(tm.stat("src.bin", "pages"), "16");
    let data = fs::read(tm.file("src.bin", "data")).unwrap();
    assert_eq!(data, original[1 << 20..(1 << 20) + (64 << 10)]);
    // Page 2 of the window is page 258 of the file.
    let f = OpenOptions::new()
        .write(true)
        .open(tm.file("src.bin", "data"))
        .unwrap();
    f.write_at(b"window", 2 * PAGE).unwrap();
    // The fault reads ahead, so the kernel may dirty a whole large folio;
    // indices stay relative to the window either way.
    let dirty = tm.read("src.bin", "dirty_pages");
    let listed: Vec<u64> = dirty
        .trim()
        .split(',')
        .flat_map(|r| match r.split_once('-') {
            Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect::<Vec<u64>>(),
            None => vec![r.parse().unwrap()],
        })
        .collect();
    assert!(
        listed.contains(&2) && listed.iter().all(|p| *p < 16),
        "{dirty}"
    );
    let err = f.write_at(b"x", 64 << 10).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    sh_ok(tm.dir.path(), "echo sync > mnt/src.bin/msync");
    let on_disk = fs::read(tm.path("src.bin")).unwrap();
    assert_eq!(&on_disk[(1 << 20) + 2 * 4096..][..6], b"window");
    assert_eq!(on_disk.len(), 4 << 20);
    assert_eq!(
        on_disk[..1 << 20],
        original[..1 << 20],
        "outside the window untouched"
    );
}

#[test]
fn passthrough_is_refused_where_it_cannot_apply() {
    require_fuse!();
    let tm = TestMount::new();
    fs::write(tm.path("src.bin"), vec![0u8; 1 << 20]).unwrap();
    for args in [
        &["-f", "--io", "passthrough", "--offset", "4K", "src.bin"][..],
        &["-f", "--io", "passthrough", "--private", "src.bin"],
    ] {
        let out = tm.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--io passthrough cannot apply"), "{err}");
    }
}

#[test]
fn private_dirty_pages_scale_to_huge_sparse_files() {
    require_fuse!();
    let mut tm = TestMount::new();
    fs::File::create(tm.path("huge.bin"))
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    tm.mount(&["--private", "huge.bin"]);
    let data = OpenOptions::new()
        .write(true)
        .open(tm.file("huge.bin", "data"))
        .unwrap();
    data.write_at(b"x", (1 << 39) + 7).unwrap();
    assert_eq!(
        tm.read("huge.bin", "dirty_pages"),
        format!("{}\n", (1u64 << 39) / PAGE)
    );
    assert_eq!(tm.stat("huge.bin", "dirty_pages"), "1");
    assert_eq!(
        fs::metadata(tm.path("huge.bin")).unwrap().blocks(),
        0,
        "the source stays sparse"
    );
}
