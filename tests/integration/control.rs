//! The control and generated files: `msync` commands and reports, `stats`,
//! `events`, and snapshot reads.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;

use crate::util::{self, sh, sh_ok, stat_value, TestMount};

fn mounted(args: &[&str]) -> Option<TestMount> {
    if !util::fuse_available() {
        return None;
    }
    let mut tm = TestMount::new();
    tm.mount(args);
    Some(tm)
}

/// Write one command to `msync` with a single write(2); the errno if any.
fn msync(tm: &TestMount, command: &[u8]) -> Result<usize, i32> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(tm.file("src.bin", "msync"))
        .unwrap();
    f.write(command).map_err(|e| e.raw_os_error().unwrap_or(0))
}

#[test]
fn sync_reports_what_the_kernel_saw() {
    let Some(tm) = mounted(&["--size", "1M", "src.bin"]) else {
        return;
    };
    assert_eq!(tm.read("src.bin", "msync"), "command none\n");
    // Writes into never-read pages make one-page folios: exact counts.
    let data = OpenOptions::new()
        .write(true)
        .open(tm.file("src.bin", "data"))
        .unwrap();
    for page in [0u64, 5, 200] {
        data.write_at(b"dirty", page * 4096).unwrap();
    }
    sh_ok(tm.dir.path(), "echo sync > mnt/src.bin/msync");
    let report = tm.read("src.bin", "msync");
    assert_eq!(stat_value(&report, "command").as_deref(), Some("sync"));
    assert_eq!(stat_value(&report, "result").as_deref(), Some("ok"));
    assert_eq!(
        stat_value(&report, "reached_source").as_deref(),
        Some("yes")
    );
    assert_eq!(
        stat_value(&report, "length_bytes").as_deref(),
        Some("1048576")
    );
    let before: u64 = stat_value(&report, "dirty_pages_before")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&before), "{report}");
    assert_eq!(
        stat_value(&report, "dirty_pages_after").as_deref(),
        Some("0")
    );
    for key in ["offset_bytes", "duration_ns", "at_unix_ns"] {
        assert!(stat_value(&report, key).is_some(), "{key} in {report}");
    }
    assert_eq!(tm.read("src.bin", "dirty_pages"), "\n");
    assert_eq!(tm.stat("src.bin", "msync_calls"), "1");
    assert!(tm
        .read("src.bin", "events")
        .contains(" msync command=sync offset=0 length=1048576 result=ok"));
}

#[test]
fn every_command_form_is_accepted() {
    let Some(tm) = mounted(&["--size", "1M", "src.bin"]) else {
        return;
    };
    for (command, name, offset, length) in [
        (&b"sync"[..], "sync", 0, 1 << 20),
        (b"1\n", "sync", 0, 1 << 20),
        (b"\n", "sync", 0, 1 << 20),
        (b"", "sync", 0, 1 << 20),
        (b"async\n", "async", 0, 1 << 20),
        (b"invalidate\n", "invalidate", 0, 1 << 20),
        (b"sync 8192\n", "sync", 8192, (1 << 20) - 8192),
        (b"async 4096 8192\n", "async", 4096, 8192),
        (b"invalidate 64K 4K", "invalidate", 65536, 4096),
    ] {
        assert_eq!(msync(&tm, command), Ok(command.len()), "{command:?}");
        let report = tm.read("src.bin", "msync");
        assert_eq!(
            stat_value(&report, "command").as_deref(),
            Some(name),
            "{report}"
        );
        assert_eq!(
            stat_value(&report, "offset_bytes"),
            Some(offset.to_string())
        );
        assert_eq!(
            stat_value(&report, "length_bytes"),
            Some(length.to_string())
        );
    }
    assert_eq!(tm.stat("src.bin", "invalidations"), "2");
}

#[test]
fn malformed_commands_are_einval_and_change_nothing() {
    let Some(tm) = mounted(&["--size", "1M", "src.bin"]) else {
        return;
    };
    assert_eq!(msync(&tm, b"sync 0 4096"), Ok(11));
    let report = tm.read("src.bin", "msync");
    let stats_calls = tm.stat("src.bin", "msync_calls");
    for bad in [
        &b"flush"[..],
        b"sync 100",
        b"sync 0 0",
        b"sync 2M",
        b"sync 0 4096 9",
        b"sync\nasync\n",
        b"\xff",
    ] {
        assert_eq!(msync(&tm, bad), Err(libc::EINVAL), "{bad:?}");
    }
    assert_eq!(
        tm.read("src.bin", "msync"),
        report,
        "the last result is unchanged"
    );
    assert_eq!(tm.stat("src.bin", "msync_calls"), stats_calls);
    let events = tm.read("src.bin", "events");
    assert_eq!(events.matches(" msync_rejected ").count(), 7, "{events}");
    let out = sh(
        tm.dir.path(),
        "LC_ALL=C bash -c 'echo bogus > mnt/src.bin/msync'",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Invalid argument"));
}

#[test]
fn stats_has_every_key_and_counts_cached_io() {
    let Some(tm) = mounted(&["--io", "cached", "--size", "1M", "src.bin"]) else {
        return;
    };
    sh_ok(
        tm.dir.path(),
        "dd if=mnt/src.bin/data of=/dev/null bs=64K status=none",
    );
    sh_ok(tm.dir.path(), "printf abc > mnt/src.bin/data");
    let stats = tm.read("src.bin", "stats");
    for key in [
        "source",
        "mode",
        "io_mode",
        "writable",
        "offset_bytes",
        "length_bytes",
        "page_size_bytes",
        "pages",
        "resident_pages",
        "dirty_pages",
        "writeback_pages",
        "evicted_pages",
        "reads",
        "read_bytes",
        "writes",
        "write_bytes",
        "msync_calls",
        "msync_errors",
        "msync_last_ns",
        "msync_total_ns",
        "invalidations",
        "open_handles",
        "mappers",
        "source_size_bytes",
        "uptime_ns",
    ] {
        assert!(stat_value(&stats, key).is_some(), "missing {key}:\n{stats}");
    }
    assert_eq!(stat_value(&stats, "mode").as_deref(), Some("shared"));
    assert_eq!(stat_value(&stats, "pages").as_deref(), Some("256"));
    assert_eq!(stat_value(&stats, "read_bytes").as_deref(), Some("1048576"));
    assert_eq!(stat_value(&stats, "write_bytes").as_deref(), Some("3"));
    assert_eq!(stat_value(&stats, "writes").as_deref(), Some("1"));
    assert_eq!(stat_value(&stats, "open_handles").as_deref(), Some("0"));
    let root = fs::read_to_string(tm.mnt.join("stats")).unwrap();
    assert_eq!(stat_value(&root, "sources").as_deref(), Some("1"));
    assert_eq!(stat_value(&root, "read_bytes").as_deref(), Some("1048576"));
}

#[test]
fn generated_files_are_one_snapshot_per_open() {
    let Some(tm) = mounted(&["--size", "1M", "src.bin"]) else {
        return;
    };
    let path = tm.file("src.bin", "stats");
    let mut f = fs::File::open(&path).unwrap();
    let mut pieces = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        pieces.extend_from_slice(&buf[..n]);
        // Activity between reads must not tear the snapshot.
        sh_ok(tm.dir.path(), "printf z > mnt/src.bin/data");
    }
    let text = String::from_utf8(pieces).unwrap();
    assert_eq!(text.matches("uptime_ns ").count(), 1, "{text}");
    assert!(text.ends_with('\n'));
    let grep = sh_ok(tm.dir.path(), "grep -c . mnt/src.bin/stats");
    assert_eq!(grep.trim(), text.lines().count().to_string());
}

#[test]
fn events_log_lifecycle_and_is_bounded() {
    let Some(tm) = mounted(&["--events", "5", "--size", "1M", "src.bin"]) else {
        return;
    };
    let first = tm.read("src.bin", "events");
    assert!(first.lines().next().unwrap().contains(" mount "), "{first}");
    for _ in 0..10 {
        sh_ok(tm.dir.path(), "cat mnt/src.bin/data > /dev/null");
    }
    let events = tm.read("src.bin", "events");
    assert_eq!(events.lines().count(), 5, "{events}");
    for line in events.lines() {
        let mut words = line.split(' ');
        assert!(words.next().unwrap().parse::<u128>().is_ok(), "{line}");
        assert!(matches!(words.next(), Some("open" | "release")), "{line}");
    }
    // The size only grows, so tail -f can follow it.
    let size = fs::metadata(tm.file("src.bin", "events")).unwrap().len();
    assert!(
        size > events.len() as u64,
        "size {size} counts dropped lines too"
    );
}

#[test]
fn tail_follows_events() {
    let Some(tm) = mounted(&["--size", "1M", "src.bin"]) else {
        return;
    };
    let mut tail = std::process::Command::new("tail")
        .args(["-f", "-n", "+1", "-s", "0.1"])
        .arg(tm.file("src.bin", "events"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = std::sync::Arc::clone(&lines);
    std::thread::spawn(move || {
        let mut stdout = stdout;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    util::wait_until("tail prints the mount event", || {
        lines.lock().unwrap().contains(" mount ")
    });
    sh_ok(tm.dir.path(), "echo sync > mnt/src.bin/msync");
    util::wait_until("tail follows the msync event", || {
        lines.lock().unwrap().contains(" msync command=sync")
    });
    let _ = tail.kill();
    let _ = tail.wait();
}
