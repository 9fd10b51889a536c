//! Faults and load: fio with verification, a source truncated or deleted
//! behind the daemon's back, a full disk, and readers during a long sync.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::util::{self, sh, sh_ok, stat_value, TestFs, TestMount};

fn fio(dir: &Path, args: &[&str]) {
    let out = Command::new("fio")
        .args(args)
        .args([
            "--bs=4k",
            "--verify=crc32c",
            "--verify_fatal=1",
            "--randrepeat=1",
        ])
        .current_dir(dir)
        .output()
        .expect("fio (apt-get install fio)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fio {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in text.lines().filter(|l| l.contains("err=")) {
        assert!(line.contains("err= 0"), "{line}");
        eprintln!("fio: {}", line.trim());
    }
}

/// After fio: what `data` served equals the source on disk after unmount.
fn data_matches_source_after_unmount(mut tm: TestMount, names: &[&str]) {
    let served: Vec<Vec<u8>> = names
        .iter()
        .map(|n| fs::read(tm.file(n, "data")).unwrap())
        .collect();
    let (status, err) = tm.unmount();
    assert!(status.success(), "{err}");
    for (name, bytes) in names.iter().zip(served) {
        assert!(
            fs::read(tm.path(name)).unwrap() == bytes,
            "{name}: source differs from data"
        );
    }
}

#[test]
fn fio_psync_verifies_in_both_io_modes() {
    require_fuse!();
    for io in ["auto", "cached"] {
        let mut tm = TestMount::new();
        tm.mount(&["--io", io, "--size", "64M", "src.bin"]);
        fio(
            tm.dir.path(),
            &[
                "--name=psync",
                "--filename=mnt/src.bin/data",
                "--ioengine=psync",
                "--rw=randrw",
                "--size=16M",
                "--numjobs=4",
                "--offset_increment=16M",
                "--group_reporting",
            ],
        );
        data_matches_source_after_unmount(tm, &["src.bin"]);
    }
}

#[test]
fn fio_mmap_verifies_with_four_concurrent_mappers() {
    require_fuse!();
    // fio's mmap engine verifies only at offset 0, so each job gets its
    // own source (see FUSE-NOTES).
    let names = ["a", "b", "c", "d"];
    for io in ["auto", "cached"] {
        let mut tm = TestMount::new();
        let mut args = vec!["--io", io, "--size", "16M"];
        args.extend(names);
        tm.mount(&args);
        let jobs: Vec<_> = names
            .into_iter()
            .map(|n| {
                let dir = tm.dir.path().to_path_buf();
                let file = format!("--filename=mnt/{n}/data");
                std::thread::spawn(move || {
                    fio(
                        &dir,
                        &[
                            &format!("--name=mmap-{n}"),
                            &file,
                            "--ioengine=mmap",
                            "--rw=randrw",
                            "--size=16M",
                        ],
                    )
                })
            })
            .collect();
        for job in jobs {
            job.join().expect("fio job");
        }
        data_matches_source_after_unmount(tm, &names);
    }
}

#[test]
fn a_truncated_source_gives_eio_and_is_logged() {
    require_fuse!();
    for mode in [&["--io", "cached"][..], &["--private"], &["--io", "auto"]] {
        let mut tm = TestMount::new();
        fs::write(tm.path("src.bin"), vec![9u8; 1 << 20]).unwrap();
        let mut args = mode.to_vec();
        args.push("src.bin");
        tm.mount(&args);
        sh_ok(tm.dir.path(), "truncate -s 64K src.bin");
        let f = fs::File::open(tm.file("src.bin", "data")).unwrap();
        let mut buf = [0u8; 4096];
        f.read_exact_at(&mut buf, 4096).unwrap();
        assert_eq!(buf[0], 9, "{mode:?}: bytes before the new end still read");
        let past = f.read_at(&mut buf, 512 << 10);
        if mode[0] != "--private" {
            // A whole shared file: `data` is the file for size purposes, so
            // past its new end is end-of-file, as in the source itself.
            assert!(matches!(past, Ok(0)) || past.is_err(), "{mode:?}: {past:?}");
        } else {
            assert_eq!(
                past.unwrap_err().raw_os_error(),
                Some(libc::EIO),
                "{mode:?}"
            );
        }
        util::wait_until("source_truncated event", || {
            tm.read("src.bin", "events")
                .contains(" source_truncated old_size=1048576 new_size=65536")
        });
        assert_eq!(tm.stat("src.bin", "source_size_bytes"), "65536");
        assert_eq!(tm.stat("src.bin", "source_state"), "truncated");
        // Still alive and serving.
        sh_ok(tm.dir.path(), "echo sync > mnt/src.bin/msync");
        drop(f);
        let (status, err) = tm.unmount();
        assert!(
            status.code().is_some(),
            "{mode:?}: killed by a signal: {status} {err}"
        );
    }
}

#[test]
fn a_deleted_source_is_logged_and_still_served() {
    require_fuse!();
    let mut tm = TestMount::new();
    fs::write(tm.path("src.bin"), b"still here").unwrap();
    tm.mount(&["src.bin"]);
    fs::remove_file(tm.path("src.bin")).unwrap();
    util::wait_until("source_deleted event", || {
        tm.read("src.bin", "events").contains(" source_deleted")
    });
    assert_eq!(tm.stat("src.bin", "source_state"), "deleted");
    assert_eq!(fs::read(tm.file("src.bin", "data")).unwrap(), b"still here");
}

#[test]
fn a_full_disk_is_enospc_and_keeps_what_was_written() {
    require_fuse!();
    for io in ["auto", "cached"] {
        let mut tm = TestMount::new();
        fs::create_dir(tm.path("disk")).unwrap();
        let disk = TestFs::tmpfs(&tm.path("disk"), "2M");
        tm.mount(&["--io", io, "--size", "8M", "disk/src.bin"]);
        let mut data = OpenOptions::new()
            .write(true)
            .open(tm.file("src.bin", "data"))
            .unwrap();
        let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 199) as u8).collect();
        let mut written = 0usize;
        let err = loop {
            match data.write(&chunk) {
                Ok(n) => written += n,
                Err(e) => break e,
            }
            assert!(written < 8 << 20, "{io}: the disk never filled");
        };
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{io}: {err}");
        assert!(written >= 1 << 20, "{io}: wrote {written}");
        drop(data);
        // The daemon survives and what was written before is intact.
        assert_eq!(tm.stat("src.bin", "mode"), "shared");
        let on_disk = fs::read(tm.path("disk/src.bin")).unwrap();
        for (i, byte) in on_disk[..written].iter().enumerate() {
            assert_eq!(*byte, (i % (1 << 20) % 199) as u8, "{io}: byte {i}");
        }
        let (status, _) = tm.unmount();
        assert!(status.code().is_some());
        drop(disk);
    }
}

#[test]
fn stats_answers_while_a_large_sync_runs() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--size", "1G", "src.bin"]);
    // Dirty the whole gigabyte through data.
    sh_ok(
        tm.dir.path(),
        "dd if=/dev/zero of=mnt/src.bin/data bs=1M count=1024 conv=notrunc status=none",
    );
    let dir = tm.dir.path().to_path_buf();
    let sync = std::thread::spawn(move || {
        let started = Instant::now();
        let out = sh(&dir, "echo sync > mnt/src.bin/msync");
        (out.status.success(), started.elapsed())
    });
    let mut worst = std::time::Duration::ZERO;
    let mut reads = 0;
    while !sync.is_finished() {
        let started = Instant::now();
        let stats = tm.read("src.bin", "stats");
        worst = worst.max(started.elapsed());
        assert!(stats.contains("io_mode"));
        reads += 1;
    }
    let (ok, took) = sync.join().unwrap();
    assert!(ok, "sync failed");
    eprintln!("cat stats during a 1 GiB sync ({took:?}): {reads} reads, worst {worst:?}");
    // Blocked behind the sync, stats would answer once or twice in all.
    assert!(
        took < std::time::Duration::from_millis(100) || reads >= 10,
        "stats answered only {reads} times during a {took:?} sync"
    );
    assert_eq!(
        stat_value(&tm.read("src.bin", "msync"), "dirty_pages_after").as_deref(),
        Some("0")
    );
}
