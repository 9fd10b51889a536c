//! Hardening: many sources, bounded events, signals, odd source names, an
//! unprivileged user, the size rules of `data` (with SQLite on top), and
//! metrics that Prometheus tooling accepts.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::util::{self, example_bin, is_mounted, sh, sh_ok, stat_value, Running, TestMount};

/// Poll `cond` until it holds, failing after `limit` (for promises that
/// name a time shorter than `util::DEADLINE`).
fn wait_within(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `n` source names that sort in command-line order: s001 … s300.
fn numbered(n: usize) -> Vec<String> {
    let width = n.to_string().len();
    (1..=n).map(|i| format!("s{i:0width$}")).collect()
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn errno(result: std::io::Result<usize>) -> Option<i32> {
    result.err().and_then(|e| e.raw_os_error())
}

/// Run `check` on every case, then fail once naming each case that failed
/// (their panics are printed as they happen).
fn each_case<T: std::fmt::Debug>(cases: &[T], check: impl Fn(&T)) {
    let failed: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| check(case)));
            let payload = outcome.err()?;
            let why = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("panicked");
            let why: String = why.lines().collect::<Vec<_>>().join(" | ");
            Some(format!(
                "{case:?}: {}",
                why.chars().take(300).collect::<String>()
            ))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

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

/// Run `promtool check metrics` on `text`; returns (success, everything it said).
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && said.trim().is_empty(), said)
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

// ---------------------------------------------------------------------------
// 10. signals

fn daemon_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

fn write_marker(tm: &TestMount, offset: u64, text: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(tm.file("src.bin", "data"))
        .unwrap()
        .write_all_at(text, offset)
        .unwrap();
}

fn source_has(tm: &TestMount, offset: usize, text: &[u8]) -> bool {
    let bytes = fs::read(tm.path("src.bin")).unwrap();
    &bytes[offset..offset + text.len()] == text
}

#[test]
fn usr1_usr2_pipe_and_alrm_are_ignored() {
    require_fuse!();
    each_case(&["USR1", "USR2", "PIPE", "ALRM"], |signal| {
        let mut tm = TestMount::new();
        tm.mount(&["--io", "cached", "--size", "1M", "src.bin"]);
        let pid = tm.pid();
        tm.signal(signal);
        assert!(daemon_alive(pid), "SIG{signal} ended the daemon");
        // Still serving: a write, a sync and a stats read go through.
        write_marker(&tm, 8192, b"after the signal");
        sh_ok(tm.dir.path(), "echo sync > mnt/src.bin/msync");
        assert_eq!(tm.stat("src.bin", "mode"), "shared");
        assert!(daemon_alive(pid), "SIG{signal} ended the daemon");
        // And it still stops the normal way.
        tm.signal("TERM");
        let (status, err) = tm.wait_exit();
        assert!(
            status.success(),
            "after SIG{signal}, SIGTERM: {status}: {err}"
        );
        assert!(
            !is_mounted(&tm.mnt),
            "after SIG{signal}, SIGTERM left the mount behind"
        );
        assert!(source_has(&tm, 8192, b"after the signal"));
    });
}

#[test]
fn term_int_hup_and_quit_unmount_sync_and_exit_0() {
    require_fuse!();
    each_case(&["TERM", "INT", "HUP", "QUIT"], |signal| {
        let mut tm = TestMount::new();
        tm.mount(&["--io", "cached", "--size", "1M", "src.bin"]);
        write_marker(&tm, 4096 * 9, b"before the signal");
        tm.signal(signal);
        let (status, err) = tm.wait_exit();
        assert!(status.success(), "SIG{signal}: {status}: {err}");
        assert!(!is_mounted(&tm.mnt), "SIG{signal}: mount left behind");
        assert!(!tm.mnt.exists(), "SIG{signal}: created mountpoint left");
        assert!(source_has(&tm, 4096 * 9, b"before the signal"));
    });
}

// ---------------------------------------------------------------------------
// 11, 12. an unprivileged user

const USER: &str = "mmapfs-carol";

struct User {
    uid: u32,
    gid: u32,
}

fn user_exists() -> bool {
    Command::new("id")
        .arg(USER)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The unprivileged test user, created once per test process (and reused
/// if an earlier run made it).
fn carol() -> &'static User {
    static CAROL: OnceLock<User> = OnceLock::new();
    CAROL.get_or_init(|| {
        // Retried: another useradd may hold the lock on /etc/passwd.
        util::wait_until("useradd to create the test user", || {
            if user_exists() {
                return true;
            }
            let out = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(USER)
                .output()
                .expect("useradd (apt-get install passwd)");
            if !out.status.success() {
                eprintln!("useradd: {}", String::from_utf8_lossy(&out.stderr));
            }
            user_exists()
        });
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, USER]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        User {
            uid: id("-u"),
            gid: id("-g"),
        }
    })
}

/// Run `program args...` in `dir` as the test user.
fn as_carol(dir: &Path, program: &Path, args: &[&str]) -> Output {
    let user = carol();
    Command::new("setpriv")
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .arg("--init-groups")
        .arg("--")
        .arg(program)
        .args(args)
        .current_dir(dir)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux)")
}

/// A scratch directory the test user can reach: `home/` is hers and holds
/// her 64 KiB `src.bin`; `mmapfs` is a copy of the binary she may run.
struct CarolHome {
    /// Owns the scratch directory (removed on drop).
    _scratch: TestMount,
    home: PathBuf,
    bin: PathBuf,
}

impl CarolHome {
    fn new() -> CarolHome {
        let user = carol();
        let tm = TestMount::new();
        fs::set_permissions(tm.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let bin = tm.path("mmapfs");
        fs::copy(util::mmapfs_bin(), &bin).unwrap();
        let home = tm.path("home");
        fs::create_dir(&home).unwrap();
        fs::write(home.join("src.bin"), vec![7u8; 64 << 10]).unwrap();
        for path in [&home, &home.join("src.bin")] {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).unwrap();
        }
        CarolHome {
            _scratch: tm,
            home,
            bin,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        as_carol(&self.home, &self.bin, args)
    }
}

/// Whatever is still mounted at the path is detached on drop.
struct DetachOnDrop(PathBuf);

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("fusermount3").arg("-uz").arg(&self.0).output();
        }
    }
}

/// Without udev (as in some VMs) /dev/fuse may be 0600: then only a mount
/// through the setuid fusermount3 works for a user.
fn dev_fuse_hint() -> String {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata("/dev/fuse") {
        Ok(m) if m.mode() & 0o006 != 0o006 => format!(
            "\n(/dev/fuse is {:o}: users cannot open it, so the mount must go through fusermount3)",
            m.mode() & 0o777
        ),
        _ => String::new(),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn an_unprivileged_user_can_unmount_and_remount_at_once_20_times() {
    require_fuse!();
    let carol = CarolHome::new();
    let mnt = carol.home.join("mnt");
    let _detach = DetachOnDrop(mnt.clone());
    let mnt_arg = mnt.to_str().unwrap();
    let mut daemons = HashSet::new();
    for round in 1..=20 {
        let out = carol.run(&["src.bin", mnt_arg]);
        assert!(
            out.status.success(),
            "mount {round}/20: {}{}",
            text(&out),
            dev_fuse_hint()
        );
        assert!(is_mounted(&mnt), "mount {round}/20: not mounted");
        daemons.insert(crate::startup::daemon_pid(&mnt));
        let out = as_carol(&carol.home, Path::new("cat"), &["mnt/src.bin/stats"]);
        assert!(out.status.success(), "stats {round}/20: {}", text(&out));
        assert_eq!(
            stat_value(&String::from_utf8_lossy(&out.stdout), "mode").as_deref(),
            Some("shared")
        );
        let out = as_carol(&carol.home, Path::new("fusermount3"), &["-u", mnt_arg]);
        assert!(out.status.success(), "unmount {round}/20: {}", text(&out));
    }
    util::wait_until("every daemon to exit", || {
        daemons.iter().all(|pid| !daemon_alive(*pid))
    });
    assert!(!is_mounted(&mnt));
}

#[test]
fn an_error_after_the_fork_is_printed_once() {
    require_fuse!();
    let conf = fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    assert!(
        !conf.lines().any(|l| l.trim() == "user_allow_other"),
        "this test needs /etc/fuse.conf without user_allow_other"
    );
    let carol = CarolHome::new();
    let mnt = carol.home.join("mnt");
    let _detach = DetachOnDrop(mnt.clone());
    // Daemon mode: the mount (and its refusal) happens in the child.
    let out = carol.run(&["-o", "allow_other", "src.bin", mnt.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // Counted in the text, not by lines: two writers may interleave.
    assert_eq!(
        err.matches("mmapfs:").count(),
        1,
        "want the error once:\n{err}{}",
        dev_fuse_hint()
    );
    assert!(err.starts_with("mmapfs: "), "{err}");
    assert!(!is_mounted(&mnt));
    assert!(!mnt.exists(), "created mountpoint left behind");
}

// ---------------------------------------------------------------------------
// 13. the size of `data`

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn len_of(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

#[test]
fn whole_file_data_is_the_file_for_size_purposes() {
    require_fuse!();
    each_case(&["auto", "cached"], |io| {
        let mut tm = TestMount::new();
        fs::write(tm.path("src.bin"), pattern(64 << 10)).unwrap();
        tm.mount(&["--io", io, "src.bin"]);
        let data = tm.file("src.bin", "data");
        let source = tm.path("src.bin");
        assert_eq!(len_of(&data), 64 << 10, "{io}");

        // The source grows behind the daemon's back: data follows.
        File::options()
            .write(true)
            .open(&source)
            .unwrap()
            .set_len(128 << 10)
            .unwrap();
        wait_within(
            Duration::from_secs(5),
            "data size to follow the source",
            || len_of(&data) == 128 << 10,
        );

        // A write at the end extends both.
        let f = OpenOptions::new().write(true).open(&data).unwrap();
        assert_eq!(
            f.write_at(b"tail", 128 << 10).map_err(|e| e.to_string()),
            Ok(4),
            "{io}: write at the end"
        );
        drop(f);
        assert_eq!(len_of(&source), (128 << 10) + 4, "{io}");
        assert_eq!(len_of(&data), (128 << 10) + 4, "{io}");
        assert_eq!(&fs::read(&source).unwrap()[128 << 10..], b"tail");

        // truncate of data shrinks and grows the source.
        sh_ok(tm.dir.path(), "truncate -s 32K mnt/src.bin/data");
        assert_eq!(len_of(&source), 32 << 10, "{io}: shrink");
        assert_eq!(len_of(&data), 32 << 10, "{io}: shrink");
        sh_ok(tm.dir.path(), "truncate -s 200K mnt/src.bin/data");
        assert_eq!(len_of(&source), 200 << 10, "{io}: grow");
        assert_eq!(len_of(&data), 200 << 10, "{io}: grow");

        // O_TRUNC is still ignored.
        sh_ok(tm.dir.path(), "echo hi > mnt/src.bin/data");
        assert_eq!(len_of(&data), 200 << 10, "{io}: O_TRUNC");
        let bytes = fs::read(&source).unwrap();
        assert_eq!(bytes.len(), 200 << 10, "{io}");
        assert_eq!(&bytes[..3], b"hi\n");
        assert_eq!(bytes[3..32 << 10], pattern(32 << 10)[3..], "{io}");
        assert!(bytes[32 << 10..].iter().all(|b| *b == 0), "{io}");
        let (status, err) = tm.unmount();
        assert!(status.success(), "{io}: {err}");
    });
}

#[test]
fn windows_private_and_anon_keep_a_fixed_size() {
    require_fuse!();
    let cases: [(&[&str], &str); 4] = [
        (&["--offset", "4K", "src.bin"], "src.bin"),
        (&["--length", "32K", "src.bin"], "src.bin"),
        (&["--private", "src.bin"], "src.bin"),
        (&["--anon", "ram=64K"], "ram"),
    ];
    each_case(&cases, |(args, name)| {
        let mut tm = TestMount::new();
        fs::write(tm.path("src.bin"), pattern(64 << 10)).unwrap();
        tm.mount(args);
        let io = tm.stat(name, "io_mode");
        let data = tm.file(name, "data");
        let len = len_of(&data);
        let f = OpenOptions::new().write(true).open(&data).unwrap();
        for at in [len, len + 4096] {
            assert_eq!(
                errno(f.write_at(b"x", at)),
                Some(libc::ENOSPC),
                "{args:?} ({io}): write at {at} of {len}"
            );
        }
        assert_eq!(
            f.write_at(b"straddle", len - 4).map_err(|e| e.to_string()),
            Ok(4),
            "{args:?}: a write across the end is short"
        );
        for size in [len / 2, len * 2] {
            let err = f.set_len(size).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{args:?}: {size}");
        }
        drop(f);
        let before = fs::read(&data).unwrap();
        sh_ok(tm.dir.path(), &format!("echo hi > mnt/{name}/data"));
        let after = fs::read(&data).unwrap();
        assert_eq!(after.len() as u64, len, "{args:?}: O_TRUNC");
        assert_eq!(&after[..3], b"hi\n", "{args:?}");
        assert_eq!(after[3..], before[3..], "{args:?}");
        assert_eq!(len_of(&tm.path("src.bin")), 64 << 10, "{args:?}");
    });
}

#[test]
fn sqlite_with_a_memory_journal_on_data_stays_intact() {
    require_fuse!();
    each_case(&["auto", "cached"], |io| {
        let mut tm = TestMount::new();
        sh_ok(
            tm.dir.path(),
            "sqlite3 db.sqlite 'PRAGMA page_size=4096; CREATE TABLE seed(x); INSERT INTO seed VALUES (1);'",
        );
        tm.mount(&["--io", io, "db.sqlite"]);
        let out = sh(
            tm.dir.path(),
            "sqlite3 -bail mnt/db.sqlite/data <<'EOF'
PRAGMA journal_mode=MEMORY;
CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
CREATE INDEX t_v ON t(v);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000)
  INSERT INTO t(v) SELECT printf('row-%06d-%s', i, hex(randomblob(24))) FROM c;
DELETE FROM t WHERE id % 3 = 0;
VACUUM;
SELECT count(*) FROM t;
EOF",
        );
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{io}: sqlite3 on data: {said}");
        assert_eq!(said, "memory\n13334\n", "{io}");
        let (status, err) = tm.unmount();
        assert!(status.success(), "{io}: {err}");
        let check = sh_ok(
            tm.dir.path(),
            "sqlite3 db.sqlite 'PRAGMA integrity_check; SELECT count(*) FROM t; PRAGMA page_count;'",
        );
        let lines: Vec<&str> = check.lines().collect();
        assert_eq!(lines[..2], ["ok", "13334"], "{io}: {check}");
        // VACUUM's truncate reached the source.
        let pages: u64 = lines[2].parse().unwrap();
        assert_eq!(len_of(&tm.path("db.sqlite")), pages * 4096, "{io}");
    });
}

// ---------------------------------------------------------------------------
// 14. metrics for Prometheus

/// Metric families in `text`: name -> (type, help).
fn families(text: &str) -> BTreeMap<String, (String, String)> {
    let mut out: BTreeMap<String, (String, String)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            out.entry(name.to_string()).or_default().0 = kind.to_string();
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.entry(name.to_string()).or_default().1 = help.to_string();
        }
    }
    out
}

#[test]
fn metrics_pass_promtool_with_totals_seconds_and_an_info_metric() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--io", "cached", "--size", "64K", "a.bin", "b.bin"]);
    sh_ok(
        tm.dir.path(),
        "printf x > mnt/a.bin/data && cat mnt/b.bin/data >/dev/null && echo sync > mnt/a.bin/msync",
    );
    let text = fs::read_to_string(tm.mnt.join("metrics")).unwrap();
    let (ok, said) = promtool_check(&text);
    assert!(ok, "promtool check metrics:\n{said}");

    let families = families(&text);
    assert!(!families.is_empty(), "{text}");
    for (name, (kind, help)) in &families {
        assert!(!kind.is_empty(), "{name}: no TYPE");
        assert!(!help.trim().is_empty(), "{name}: no HELP");
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name}");
        }
        let unit_words = [
            "ns",
            "us",
            "ms",
            "nanoseconds",
            "microseconds",
            "milliseconds",
        ];
        assert!(
            !name.split('_').any(|w| unit_words.contains(&w)),
            "{name}: times go in seconds"
        );
    }
    let has = |part: &str, suffixes: &[&str]| {
        families
            .keys()
            .any(|n| n.contains(part) && suffixes.iter().any(|s| n.ends_with(s)))
    };
    assert!(has("uptime", &["_seconds"]), "no uptime in seconds");
    assert!(
        has("msync", &["_seconds", "_seconds_total"]),
        "no msync time in seconds"
    );

    // Text values go in one info metric per source.
    let info: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("mmapfs_source_info{"))
        .collect();
    assert_eq!(info.len(), 2, "want one info line per source:\n{text}");
    for line in info {
        for label in ["source=\"", "mode=\"shared\"", "io_mode=\"cached\""] {
            assert!(line.contains(label), "{line}: no {label}");
        }
        assert!(line.ends_with("} 1"), "{line}");
    }
}
