//! Page life: `trace` lines provoked by separate processes, the flusher's
//! periodic writeback, `writeback`, `history`, `timeline.svg`, and the
//! daemon's tracefs instance coming and going.

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{example_bin, finish, hold_mapper, sh_ok, stat_value, wait_until, TestMount};

const INSTANCES: &str = "/sys/kernel/tracing/instances";

/// Tracing needs tracefs with the page events (root is checked by
/// `require_fuse!`). Skip loudly elsewhere, never when `CI=true`.
macro_rules! require_tracefs {
    () => {
        if !Path::new("/sys/kernel/tracing").exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but tracefs is unavailable"
            );
            eprintln!("\n*** SKIPPING TRACE TEST: no tracefs on this kernel ***\n");
            return;
        }
    };
}

/// `trace` held open and read as `tail -f` does.
struct Follower {
    file: File,
    text: String,
}

impl Follower {
    fn open(tm: &TestMount) -> Follower {
        Follower {
            file: File::open(tm.file("src.bin", "trace")).expect("open trace"),
            text: String::new(),
        }
    }

    /// Wait for a line holding every one of `words`; returns it.
    fn wait_for(&mut self, words: &[&str]) -> String {
        let mut found = None;
        wait_until(&format!("a trace line with {words:?}"), || {
            let mut more = String::new();
            self.file.read_to_string(&mut more).expect("read trace");
            self.text.push_str(&more);
            found = self
                .text
                .lines()
                .find(|l| words.iter().all(|w| l.split(' ').any(|f| matches(f, w))))
                .map(str::to_string);
            found.is_some()
        });
        found.expect("found")
    }
}

/// Whether field `f` of a line is `want`; `pages=N` also matches a range
/// holding page N (a large folio is listed whole).
fn matches(f: &str, want: &str) -> bool {
    let range = |t: &str| -> Option<(u64, u64)> {
        let t = t.strip_prefix("pages=")?;
        let (a, b) = t.split_once('-').unwrap_or((t, t));
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    match (range(f), range(want)) {
        (Some((a, b)), Some((n, _))) => a <= n && n <= b,
        _ => f == want,
    }
}

/// A mount of a 1 MiB file whose pages are on disk and not cached.
fn mounted(extra: &[&str]) -> TestMount {
    let mut tm = TestMount::new();
    let src = tm.path("src.bin");
    fs::write(&src, vec![7u8; 1 << 20]).unwrap();
    evict(&src);
    let mut args = extra.to_vec();
    args.push("src.bin");
    tm.mount(&args);
    tm
}

/// `posix_fadvise(POSIX_FADV_DONTNEED)` of the whole file, from `dd`
/// (after an `fsync`, so every page can go). Returns dd's pid.
fn evict(path: &Path) -> u32 {
    sh_ok(Path::new("/"), &format!("sync {}", path.display()));
    let mut dd = Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .spawn()
        .expect("dd");
    let pid = dd.id();
    assert!(dd.wait().unwrap().success());
    pid
}

/// Run `mapper ARGS` to completion; returns its pid.
fn mapper(tm: &TestMount, args: &[&str]) -> u32 {
    let mut child = Command::new(example_bin("mapper"))
        .arg(tm.file("src.bin", "data"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("mapper");
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    pid
}

#[test]
fn trace_shows_each_step_with_the_process_behind_it() {
    require_fuse!();
    require_tracefs!();
    let tm = mounted(&[]);
    assert_eq!(tm.stat("src.bin", "trace"), "off");
    let mut trace = Follower::open(&tm);
    assert_eq!(tm.stat("src.bin", "trace"), "on");
    let instance = format!("mmapfs-{}-", tm.pid());
    let ours = || {
        fs::read_dir(INSTANCES)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&instance))
    };
    assert!(ours(), "opening trace makes the daemon's instance");

    // Each mapper is kept alive until its line is seen: a process that is
    // gone may have left the kernel's table of command names by the time
    // its line is read.
    let holder = hold_mapper(&tm.file("src.bin", "data"), &["--read", "40960=4"]);
    let reader = holder.pid().to_string();
    let line = trace.wait_for(&["fault", "pages=10", &format!("pid={reader}")]);
    assert!(line.contains(" comm=mapper"), "{line}");
    trace.wait_for(&["cached", &format!("pid={reader}")]);
    finish(holder);

    let holder = hold_mapper(&tm.file("src.bin", "data"), &["--write", "81920=hello"]);
    let writer = holder.pid().to_string();
    trace.wait_for(&[
        "dirtied",
        "pages=20",
        &format!("pid={writer}"),
        "comm=mapper",
    ]);
    finish(holder);
    let wb = tm.read("src.bin", "writeback");
    assert_ne!(
        stat_value(&wb, "oldest_dirty_age_ns").unwrap(),
        "unknown",
        "{wb}"
    );

    sh_ok(&tm.mnt, "echo sync > src.bin/msync");
    // The daemon's thread that runs the command did the sync.
    trace.wait_for(&["written", "pages=20", "comm=msync", "cause=sync"]);
    let wb = tm.read("src.bin", "writeback");
    assert_ne!(stat_value(&wb, "written_sync_pages").unwrap(), "0", "{wb}");
    assert_ne!(
        stat_value(&wb, "dirtied_to_written_max_ns").unwrap(),
        "unknown"
    );

    let dd = evict(&tm.path("src.bin")).to_string();
    trace.wait_for(&["evicted", &format!("pid={dd}"), "comm=dd"]);
    assert!(
        trace.text.lines().all(|l| !l.contains(" lost ")),
        "{}",
        trace.text
    );

    drop(trace);
    wait_until("the instance to go with the last reader", || !ours());
    assert_eq!(tm.stat("src.bin", "trace"), "off");
}

/// Lowers the flusher's expiry and interval for one test; restores them.
struct FastFlusher {
    saved: Vec<(&'static str, String)>,
}

impl FastFlusher {
    fn new() -> FastFlusher {
        let mut saved = Vec::new();
        for name in ["dirty_expire_centisecs", "dirty_writeback_centisecs"] {
            let path = format!("/proc/sys/vm/{name}");
            saved.push((name, fs::read_to_string(&path).unwrap()));
            fs::write(&path, "100").unwrap();
        }
        FastFlusher { saved }
    }
}

impl Drop for FastFlusher {
    fn drop(&mut self) {
        for (name, value) in &self.saved {
            let _ = fs::write(format!("/proc/sys/vm/{name}"), value.trim());
        }
    }
}

#[test]
fn the_periodic_flusher_writes_expired_pages() {
    // Not `require_fuse!`: this test takes the writeback timing for itself.
    if !crate::util::fuse_available() {
        return;
    }
    require_tracefs!();
    let _timing = crate::util::writeback_timing_changed();
    let tm = mounted(&["--trace"]);
    let mut trace = Follower::open(&tm);
    let _fast = FastFlusher::new();
    let wb = tm.read("src.bin", "writeback");
    assert_eq!(stat_value(&wb, "dirty_expire_centisecs").unwrap(), "100");
    mapper(&tm, &["--write", "122880=periodic"]);
    trace.wait_for(&["dirtied", "pages=30"]);
    let line = trace.wait_for(&["written", "pages=30", "cause=periodic"]);
    assert!(line.contains("comm=kworker"), "{line}");
    let wb = tm.read("src.bin", "writeback");
    assert_ne!(
        stat_value(&wb, "written_periodic_pages").unwrap(),
        "0",
        "{wb}"
    );
}

#[test]
fn history_and_timeline_show_the_last_minutes() {
    require_fuse!();
    require_tracefs!();
    let tm = mounted(&["-o", "trace"]);
    wait_until("tracing from the start", || {
        tm.stat("src.bin", "trace") == "on"
    });
    mapper(&tm, &["--write", "0=x"]);
    wait_until("two samples in history", || {
        tm.read("src.bin", "history").lines().count() >= 2
    });
    let history = tm.read("src.bin", "history");
    for line in history.lines() {
        let numbers: Vec<u128> = line.split(' ').map(|n| n.parse().unwrap()).collect();
        assert_eq!(numbers.len(), 4, "{line}");
    }
    let svg = tm.read("src.bin", "timeline.svg");
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.contains("dirty") && svg.contains("sync"));
}

#[test]
fn an_instance_left_by_a_killed_daemon_goes_at_the_next_start() {
    require_fuse!();
    require_tracefs!();
    let mut first = mounted(&["--trace"]);
    let prefix = format!("mmapfs-{}-", first.pid());
    let left = || {
        fs::read_dir(INSTANCES)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
    };
    wait_until("the first daemon's instance", left);
    first.kill_9_and_clean_up();
    assert!(left(), "kill -9 leaves the instance behind");
    let second = mounted(&[]);
    wait_until("the next daemon to remove it", || !left());
    assert_eq!(second.stat("src.bin", "trace"), "off");
}

/// Pages in a cpulist line such as `0-3,17`.
fn cpulist_pages(text: &str) -> u64 {
    text.trim()
        .split(',')
        .filter(|r| !r.is_empty())
        .map(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1
        })
        .sum()
}

#[test]
fn counts_of_a_large_window_follow_the_trace() {
    require_fuse!();
    require_tracefs!();
    // 8 GiB, sparse: 32 chunks of 256 MiB, of which the watcher counts at
    // most four a second on its own.
    const CHUNK: u64 = 256 << 20;
    let mut tm = TestMount::new();
    let src = tm.path("src.bin");
    File::create(&src).unwrap().set_len(32 * CHUNK).unwrap();
    tm.mount(&["--trace", "src.bin"]);
    wait_until("tracing from the start", || {
        tm.stat("src.bin", "trace") == "on"
    });
    assert_eq!(tm.stat("src.bin", "dirty_pages"), "0");

    // One store into every chunk, through an outside mapping.
    let stores: Vec<String> = (0..32)
        .map(|k| format!("--write={}=x", k * CHUNK + 5 * 4096))
        .collect();
    let stores: Vec<&str> = stores.iter().map(String::as_str).collect();
    let holder = hold_mapper(&tm.file("src.bin", "data"), &stores);

    // The watcher alone would need eight looks, a second apart, to count
    // every chunk again; the trace's events bring the counts up to date
    // well before. (A sync(2) elsewhere may clean the pages meanwhile: the
    // counts must follow that too.)
    let start = Instant::now();
    let within = Duration::from_secs(3);
    loop {
        let stats = tm.read("src.bin", "stats");
        let counted = stat_value(&stats, "dirty_pages").unwrap();
        let dirty = cpulist_pages(&tm.read("src.bin", "dirty_pages"));
        if counted == dirty.to_string() && dirty > 0 {
            break;
        }
        assert!(
            start.elapsed() < within,
            "stats counts {counted} dirty pages, dirty_pages lists {dirty}:\n{stats}\n{}",
            tm.read("src.bin", "trace")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    wait_until("resident_pages in stats to follow too", || {
        let counted = tm.stat("src.bin", "resident_pages");
        counted == cpulist_pages(&tm.read("src.bin", "resident_pages")).to_string()
    });
    finish(holder);
}

#[test]
fn regions_without_file_events_say_why() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--anon", "shm=1M"]);
    let line = fs::read_to_string(tm.file("shm", "trace")).unwrap();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains(" unavailable reason=\"shm is not a regular file"),
        "{line}"
    );
    assert_eq!(tm.stat("shm", "trace"), "unavailable");
    assert!(tm.read("shm", "stats").contains("resident_pages"));
}
