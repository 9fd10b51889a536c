//! Many sources, bounded events, the mapper watcher, rotating events, and source names.

use super::*;

// ---------------------------------------------------------------------------
// 5. --private with more sources than a fixed table holds

/// Read (or write) all of `data` above its first 64 KiB, in one request
/// each time with `O_DIRECT` (so every request reaches the daemon and the
/// kernel never caches a smaller size), until `stop`. EIO is what a short
/// source gives; anything else (ENOTCONN: the daemon died) ends the loop.
fn hammer(data: PathBuf, write: bool, stop: Arc<AtomicBool>) -> Result<u64, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(&data)
        .map_err(|e| format!("open data: {e}"))?;
    let mut buf = vec![0x33u8; (1 << 20) - (64 << 10)];
    let mut passes = 0;
    while !stop.load(Ordering::Relaxed) {
        let done = if write {
            f.write_at(&buf, 64 << 10)
        } else {
            f.read_at(&mut buf, 64 << 10)
        };
        match done {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
            Err(e) => return Err(format!("{e}")),
        }
        passes += 1;
    }
    Ok(passes)
}

#[test]
fn private_mode_with_300_sources_survives_truncating_the_last() {
    require_fuse!();
    let mut tm = TestMount::new();
    let names = numbered(300);
    for name in &names {
        File::create(tm.path(name))
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
    }
    let last = names.last().unwrap().clone();
    fs::write(tm.path(&last), vec![0x5a; 1 << 20]).unwrap();
    let mut args = vec!["--private"];
    args.extend(names.iter().map(String::as_str));
    tm.mount(&args);

    // Readers and writers go over source #300's `data` while the source
    // shrinks and grows again under them: each truncate drops the daemon's
    // pages past the end, so the next touch of one faults on a file that
    // may be short at that moment (SIGBUS).
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = [false, true, false, true]
        .into_iter()
        .map(|write| {
            let data = tm.file(&last, "data");
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || hammer(data, write, stop))
        })
        .collect();
    let source = OpenOptions::new().write(true).open(tm.path(&last)).unwrap();
    let stats = tm.file(&last, "stats");
    for round in 0..2000 {
        source.set_len(64 << 10).unwrap();
        if let Err(e) = fs::read_to_string(&stats) {
            stop.store(true, Ordering::Relaxed);
            let (status, _) = tm.wait_exit();
            panic!("round {round}: stats: {e}; the daemon ended with {status}");
        }
        source.set_len(1 << 20).unwrap();
        if workers.iter().any(|w| w.is_finished()) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        match worker.join().unwrap() {
            Ok(passes) => assert!(passes > 0),
            Err(e) => {
                let (status, _) = tm.wait_exit();
                panic!("data of source #300: {e}; the daemon ended with {status}");
            }
        }
    }

    // Settled short: reads past the new end are EIO, the rest still reads.
    source.set_len(64 << 10).unwrap();
    let f = File::open(tm.file(&last, "data")).unwrap();
    let mut buf = [0u8; 4096];
    assert_eq!(errno(f.read_at(&mut buf, 512 << 10)), Some(libc::EIO));
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(tm.stat(&last, "source_state"), "truncated");
    assert_eq!(tm.stat(&names[0], "mode"), "private");
    drop(f);
    let (status, err) = tm.unmount();
    assert!(status.success(), "{status}: {err}");
}

// ---------------------------------------------------------------------------
// 6. events bounded in bytes; rejected input does not pile up in memory

/// Resident memory of `pid` in KiB (`VmRSS` in /proc/PID/status).
fn vm_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

#[test]
fn rejected_megabyte_msync_writes_keep_events_and_memory_small() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--size", "64K", "src.bin"]);
    let before = vm_rss_kib(tm.pid());
    let junk = vec![b'x'; 1 << 20];
    let mut msync = OpenOptions::new()
        .write(true)
        .open(tm.file("src.bin", "msync"))
        .unwrap();
    for i in 0..100 {
        assert_eq!(
            errno(msync.write(&junk)),
            Some(libc::EINVAL),
            "rejected write {i}"
        );
    }
    drop(msync);
    let after = vm_rss_kib(tm.pid());
    eprintln!("daemon VmRSS {before} KiB -> {after} KiB after 100 rejected 1 MiB commands");
    let events = fs::read(tm.file("src.bin", "events")).unwrap();
    for line in events.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        assert!(
            line.len() <= 512,
            "an events line of {} bytes: {}...",
            line.len(),
            String::from_utf8_lossy(&line[..200])
        );
    }
    let text = String::from_utf8_lossy(&events);
    let last = text.lines().last().unwrap_or_default();
    assert!(last.contains(" msync_rejected"), "{last}");
    assert!(
        after.saturating_sub(before) < 32 << 10,
        "VmRSS grew from {before} KiB to {after} KiB"
    );
    // The daemon still takes good commands.
    sh_ok(tm.dir.path(), "echo sync > mnt/src.bin/msync");
}

// ---------------------------------------------------------------------------
// 7. the mapper watcher with 1000 sources

/// `cond` must hold within 5 s; past that, wait on to util::DEADLINE so a
/// failure says how late it was.
fn promptly(what: &str, cond: impl FnMut() -> bool) {
    let start = Instant::now();
    util::wait_until(what, cond);
    let took = start.elapsed();
    eprintln!("{what}: {took:?}");
    assert!(took < Duration::from_secs(5), "{what} took {took:?}");
}

#[test]
fn a_mapper_of_the_1000th_source_shows_within_seconds() {
    require_fuse!();
    let mut tm = TestMount::new();
    let names = numbered(1000);
    let mut args = vec!["--size", "4K"];
    args.extend(names.iter().map(String::as_str));
    tm.mount(&args);
    assert_eq!(
        stat_value(
            &fs::read_to_string(tm.mnt.join("stats")).unwrap(),
            "sources"
        )
        .as_deref(),
        Some("1000")
    );
    let last = names.last().unwrap();
    let mut cmd = Command::new(example_bin("mapper"));
    cmd.arg(tm.file(last, "data")).arg("--hold");
    let mut mapper = Running::spawn(cmd);
    mapper.wait_line("ready");
    promptly("stats to count the mapper of s1000", || {
        tm.stat(last, "mappers") != "0"
    });
    assert!(tm
        .read(last, "mappers")
        .starts_with(&format!("{} mapper ", mapper.pid())));
    assert_eq!(tm.stat(&names[0], "mappers"), "0");
    let (status, _, err) = mapper.finish();
    assert!(status.success(), "{err}");
    promptly("stats mappers back to 0", || {
        tm.stat(last, "mappers") == "0"
    });
}

// ---------------------------------------------------------------------------
// 8. small reads of a rotating events log

/// `<unix_ns> <kind> key=value ...` with a timestamp in `from..=to`.
fn well_formed_event(line: &str, from: u128, to: u128) -> bool {
    let mut words = line.split(' ');
    let ts_ok = words
        .next()
        .filter(|t| t.len() == 19)
        .and_then(|t| t.parse::<u128>().ok())
        .is_some_and(|t| (from..=to).contains(&t));
    let kind_ok = words
        .next()
        .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    ts_ok
        && kind_ok
        && words.all(|w| {
            w.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
        })
}

#[test]
fn sixteen_byte_reads_of_rotating_events_give_whole_lines() {
    require_fuse!();
    let mut tm = TestMount::new();
    let from = unix_ns();
    tm.mount(&["--events", "10", "--size", "64K", "src.bin"]);
    let stop = Arc::new(AtomicBool::new(false));
    // Each open and release of `data` is an event.
    let producers: Vec<_> = (0..2)
        .map(|_| {
            let data = tm.file("src.bin", "data");
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut opens = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    drop(File::open(&data).unwrap());
                    opens += 1;
                }
                opens
            })
        })
        .collect();
    // Each dd stops after 256 reads (the log may grow faster than it
    // reads); the line that cut off is not judged.
    let mut lines = Vec::new();
    for _ in 0..100 {
        let out = sh_ok(
            tm.dir.path(),
            "dd if=mnt/src.bin/events bs=16 count=256 status=none",
        );
        let whole = match out.rfind('\n') {
            Some(end) => &out[..end],
            None => "",
        };
        lines.extend(whole.lines().map(str::to_string));
    }
    stop.store(true, Ordering::Relaxed);
    let opens: u64 = producers.into_iter().map(|p| p.join().unwrap()).sum();
    let to = unix_ns();
    let bad: Vec<String> = lines
        .iter()
        .filter(|l| !well_formed_event(l, from, to))
        .map(|l| l.chars().take(120).collect())
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} lines are not whole events, e.g. {:?}",
        bad.len(),
        lines.len(),
        &bad[..bad.len().min(3)]
    );
    assert!(lines.len() > 100, "only {} lines read", lines.len());
    assert!(opens > 100, "only {opens} opens: the log hardly rotated");
}

// ---------------------------------------------------------------------------
// 9. source names that clash with the root files or carry control characters

#[test]
fn sources_named_stats_or_metrics_get_a_suffix() {
    require_fuse!();
    let mut tm = TestMount::new();
    for (dir, name, text) in [("a", "stats", "source a"), ("b", "metrics", "source b")] {
        fs::create_dir(tm.path(dir)).unwrap();
        fs::write(tm.path(dir).join(name), text).unwrap();
    }
    tm.mount(&["a/stats", "b/metrics"]);
    let names: Vec<String> = fs::read_dir(&tm.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let unique: HashSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "duplicate names: {names:?}");
    for want in ["stats", "metrics", "stats~2", "metrics~2"] {
        assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
    }
    assert!(fs::metadata(tm.mnt.join("stats")).unwrap().is_file());
    assert!(fs::metadata(tm.mnt.join("metrics")).unwrap().is_file());
    assert_eq!(fs::read(tm.file("stats~2", "data")).unwrap(), b"source a");
    assert_eq!(fs::read(tm.file("metrics~2", "data")).unwrap(), b"source b");
    assert!(tm.stat("stats~2", "source").ends_with("a/stats"));
    let root = fs::read_to_string(tm.mnt.join("stats")).unwrap();
    assert_eq!(stat_value(&root, "sources").as_deref(), Some("2"));
}

#[test]
fn newlines_quotes_and_backslashes_in_source_names_are_escaped() {
    require_fuse!();
    let mut tm = TestMount::new();
    let odd = "q\"b\\s\nmmapfs_injected 1\n#";
    fs::write(tm.path(odd), b"odd").unwrap();
    fs::write(tm.path("plain.bin"), b"plain").unwrap();
    tm.mount(&[odd, "plain.bin"]);
    assert_eq!(fs::read(tm.file(odd, "data")).unwrap(), b"odd");

    let stats = tm.read(odd, "stats");
    let lines: Vec<&str> = stats.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("source "))
        .unwrap_or_else(|| panic!("no source line:\n{stats}"));
    assert!(
        lines.get(at + 1).is_some_and(|l| l.starts_with("mode ")),
        "the source value spans lines:\n{stats}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("mmapfs_injected") || *l == "#"),
        "{stats}"
    );

    let metrics = fs::read_to_string(tm.mnt.join("metrics")).unwrap();
    for line in metrics.lines() {
        assert!(
            line.is_empty()
                || line.starts_with("mmapfs_")
                || line.starts_with("# HELP ")
                || line.starts_with("# TYPE "),
            "a line the source name injected: {line:?}"
        );
        assert!(!line.starts_with("mmapfs_injected"), "{line:?}");
    }
    let (ok, said) = promtool_check(&metrics);
    assert!(ok, "promtool check metrics: {said}\n{metrics}");
}
