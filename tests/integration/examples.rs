//! The programs in `examples/`, each run as its own process against a real
//! mount. The assertions look at what a user would check: the program's
//! output, the control files, and above all the source file on disk, read
//! directly rather than through the mount.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::util::{self, Running, TestMount};

const RECORDS: usize = 10;

/// The ten `Person { name: [u8; 4], age: i32 }` records as bytes.
fn people_bytes() -> Vec<u8> {
    let mut bytes = Vec::new();
    for i in 0..RECORDS {
        bytes.extend_from_slice(&[b'a' + i as u8, 0, 0, 0]);
        bytes.extend_from_slice(&(20 + i as i32).to_ne_bytes());
    }
    bytes
}

fn people_lines() -> Vec<String> {
    (0..RECORDS)
        .map(|i| format!("name: {} age: {}", (b'a' + i as u8) as char, 20 + i))
        .collect()
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// 64-bit FNV-1a, the checksum `mmap_copy` prints.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Deterministic bytes that are not all alike (xorshift).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn read_source(tm: &TestMount, name: &str) -> Vec<u8> {
    fs::read(tm.path(name)).expect("read source file")
}

/// An example's binary, refusing one older than its source: only a full
/// `cargo test` (or `cargo build --examples`) rebuilds examples, and a stale
/// binary would test yesterday's code.
fn example_bin(name: &str) -> PathBuf {
    let bin = util::example_bin(name);
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.rs"));
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(edited)) = (modified(&bin), modified(&source)) {
        assert!(
            built >= edited,
            "example {name} is older than {}; run `cargo build --examples`",
            source.display()
        );
    }
    bin
}

fn example(name: &str, dir: &Path, args: &[&OsStr]) -> Command {
    let mut cmd = Command::new(example_bin(name));
    cmd.args(args).current_dir(dir);
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run example")
}

/// Run to completion; must succeed. Returns stdout.
fn run_ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `mappers` lists `pid` (one line per mapping: `pid comm start-end perms offset`).
fn maps(tm: &TestMount, source: &str, pid: u32) -> bool {
    tm.read(source, "mappers")
        .lines()
        .any(|l| l.split(' ').next() == Some(pid.to_string().as_str()))
}

#[test]
fn people_writer_records_reach_the_reader_and_after_sync_the_source() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--size", "1M", "src.bin"]);
    let data = tm.file("src.bin", "data");
    let dir = tm.dir.path().to_path_buf();

    let mut writer = Running::spawn(example(
        "people_writer",
        &dir,
        &[data.as_os_str(), "--hold".as_ref()],
    ));
    writer.wait_line("wrote 10 records");
    writer.wait_line("ready");
    let pid = writer.pid();
    util::wait_until("people_writer in mappers", || maps(&tm, "src.bin", pid));

    // A second process sees the stores at once, through its own mapping.
    let out = run_ok(&mut example("people_reader", &dir, &[data.as_os_str()]));
    let lines: Vec<String> = out.lines().map(str::to_string).collect();
    assert_eq!(lines, people_lines());

    util::sh_ok(&dir, "echo sync > mnt/src.bin/msync");
    let report = tm.read("src.bin", "msync");
    assert_eq!(
        util::stat_value(&report, "result").as_deref(),
        Some("ok"),
        "{report}"
    );
    assert_eq!(
        util::stat_value(&report, "reached_source").as_deref(),
        Some("yes"),
        "{report}"
    );

    // The source file itself, not the mount, now holds the records.
    let source = read_source(&tm, "src.bin");
    assert_eq!(source.len(), 1 << 20);
    assert_eq!(&source[..RECORDS * 8], &people_bytes()[..]);
    assert!(source[RECORDS * 8..].iter().all(|&b| b == 0));

    let (status, _, err) = writer.finish();
    assert!(status.success(), "people_writer: {status}\n{err}");
    util::wait_until("people_writer gone from mappers", || {
        !maps(&tm, "src.bin", pid)
    });
}

#[test]
fn people_reader_reads_records_from_the_source_in_cached_mode() {
    require_fuse!();
    let mut tm = TestMount::new();
    let mut source = people_bytes();
    source.resize(64 << 10, 0xee);
    fs::write(tm.path("people.bin"), &source).unwrap();
    tm.mount(&["--io", "cached", "people.bin"]);
    assert_eq!(tm.stat("people.bin", "io_mode"), "cached");

    let data = tm.file("people.bin", "data");
    let out = run_ok(&mut example(
        "people_reader",
        tm.dir.path(),
        &[data.as_os_str()],
    ));
    let lines: Vec<String> = out.lines().map(str::to_string).collect();
    assert_eq!(lines, people_lines());
    // In cached mode the reader's page faults were served by the daemon.
    let reads: u64 = tm.stat("people.bin", "reads").parse().unwrap();
    assert!(reads > 0, "no reads counted in cached mode");
    assert_eq!(
        read_source(&tm, "people.bin"),
        source,
        "a reader changed the source"
    );
}

#[test]
fn mapper_stores_with_msync_are_on_disk_when_it_exits() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--size", "1M", "src.bin"]);
    let data = tm.file("src.bin", "data");
    let out = run_ok(&mut example(
        "mapper",
        tm.dir.path(),
        &[
            data.as_os_str(),
            "--write".as_ref(),
            "4096=hello".as_ref(),
            "--write".as_ref(),
            "0x2000=a=b".as_ref(),
            "--msync".as_ref(),
            "--read".as_ref(),
            "4094=9".as_ref(),
        ],
    ));
    assert_eq!(out, "read \\x00\\x00hello\\x00\\x00\nready\n");

    // No sync through the mount: the mapper's own msync did it.
    let source = read_source(&tm, "src.bin");
    assert_eq!(&source[4096..4101], b"hello");
    assert_eq!(&source[8192..8195], b"a=b");
    assert_eq!(source.iter().filter(|&&b| b != 0).count(), 8);

    // A store outside the mapping is refused, and nothing is written.
    let out = output(&mut example(
        "mapper",
        tm.dir.path(),
        &[data.as_os_str(), "--write".as_ref(), "1048575=xy".as_ref()],
    ));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside"));
    assert_eq!(read_source(&tm, "src.bin")[1048575], 0);
}

#[test]
fn mapper_hold_is_listed_and_its_stores_reach_the_source_at_munmap_in_cached_mode() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--size", "1M", "--io", "cached", "src.bin"]);
    assert_eq!(tm.stat("src.bin", "io_mode"), "cached");
    let data = tm.file("src.bin", "data");
    let page = page_size();
    let store = format!("{}=held store", 3 * page);

    let mut mapper = Running::spawn(example(
        "mapper",
        tm.dir.path(),
        &[
            data.as_os_str(),
            "--write".as_ref(),
            store.as_ref(),
            "--hold".as_ref(),
        ],
    ));
    mapper.wait_line("ready");
    let pid = mapper.pid();
    util::wait_until("mapper in mappers", || maps(&tm, "src.bin", pid));
    let line = tm
        .read("src.bin", "mappers")
        .lines()
        .find(|l| l.starts_with(&format!("{pid} ")))
        .map(str::to_string)
        .unwrap();
    assert!(line.contains(" rw-s "), "a shared writable mapping: {line}");

    // No msync: the stores must reach the source when the mapping goes away.
    let (status, _, err) = mapper.finish();
    assert!(status.success(), "mapper: {status}\n{err}");
    let source = read_source(&tm, "src.bin");
    assert_eq!(&source[3 * page..3 * page + 10], b"held store");
    let writes: u64 = tm.stat("src.bin", "writes").parse().unwrap();
    assert!(writes > 0, "cached mode counts the write-back of the store");
    assert!(!maps(&tm, "src.bin", pid));
}

/// `mmap_copy INPUT mnt/src.bin/data` under the given extra mount options.
fn mmap_copy_roundtrip(extra: &[&str]) -> TestMount {
    let mut tm = TestMount::new();
    let input = pattern(300_001, 7);
    fs::write(tm.path("input.bin"), &input).unwrap();
    let mut args = vec!["--size", "1M"];
    args.extend_from_slice(extra);
    args.push("src.bin");
    tm.mount(&args);

    let data = tm.file("src.bin", "data");
    let out = run_ok(&mut example(
        "mmap_copy",
        tm.dir.path(),
        &["input.bin".as_ref(), data.as_os_str()],
    ));
    assert_eq!(
        out,
        format!("copied 300001 bytes\nchecksum {:016x}\n", fnv1a64(&input))
    );
    // mmap_copy's msync has made it durable: the source holds the copy.
    let source = read_source(&tm, "src.bin");
    assert_eq!(source.len(), 1 << 20);
    assert!(
        source[..input.len()] == input[..],
        "source differs from input"
    );
    assert!(source[input.len()..].iter().all(|&b| b == 0));
    tm
}

#[test]
fn mmap_copy_reaches_the_source_in_default_io_mode() {
    require_fuse!();
    let tm = mmap_copy_roundtrip(&[]);
    let mode = tm.stat("src.bin", "io_mode");
    assert!(mode == "passthrough" || mode == "cached", "io_mode {mode}");

    // A source larger than `data` is refused: a mapping cannot grow a file.
    fs::write(tm.path("big.bin"), vec![1u8; (1 << 20) + 1]).unwrap();
    let data = tm.file("src.bin", "data");
    let out = output(&mut example(
        "mmap_copy",
        tm.dir.path(),
        &["big.bin".as_ref(), data.as_os_str()],
    ));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot grow"));
    assert!(read_source(&tm, "src.bin")[300_001..]
        .iter()
        .all(|&b| b == 0));
}

#[test]
fn mmap_copy_reaches_the_source_in_cached_io_mode() {
    require_fuse!();
    let tm = mmap_copy_roundtrip(&["--io", "cached"]);
    assert_eq!(tm.stat("src.bin", "io_mode"), "cached");
    // Every page came to the daemon as a FUSE write.
    let bytes: u64 = tm.stat("src.bin", "write_bytes").parse().unwrap();
    assert!(bytes >= 300_001, "write_bytes {bytes}");
}

#[test]
fn private_cow_dirties_a_page_that_never_reaches_the_source() {
    require_fuse!();
    let mut tm = TestMount::new();
    let original = pattern(64 << 10, 3);
    fs::write(tm.path("src.bin"), &original).unwrap();
    tm.mount(&["--private", "src.bin"]);
    assert_eq!(tm.stat("src.bin", "mode"), "private");

    let dir = tm.mnt.join("src.bin");
    let out = run_ok(&mut example(
        "private_cow",
        tm.dir.path(),
        &[dir.as_os_str()],
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"dirty_pages before: (none)"), "{out}");
    assert!(lines.contains(&"dirty_pages after: 0"), "{out}");
    assert!(lines.contains(&"reached_source no"), "{out}");

    let report = tm.read("src.bin", "msync");
    assert_eq!(
        util::stat_value(&report, "result").as_deref(),
        Some("ok"),
        "{report}"
    );
    assert_eq!(
        util::stat_value(&report, "reached_source").as_deref(),
        Some("no"),
        "{report}"
    );
    // The mount serves the private copy ...
    let served = fs::read(tm.file("src.bin", "data")).unwrap();
    assert_eq!(&served[..13], b"copy-on-write");
    assert_eq!(served[13..], original[13..]);
    // ... while the file on disk is untouched, after the sync ...
    assert!(
        read_source(&tm, "src.bin") == original,
        "source changed after sync"
    );

    // ... and after the final sync at unmount.
    let (status, err) = tm.unmount();
    assert!(status.success(), "daemon: {status}\n{err}");
    assert!(
        read_source(&tm, "src.bin") == original,
        "source changed at unmount"
    );
}

#[test]
fn private_cow_refuses_a_shared_mount_and_writes_nothing() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--size", "64K", "src.bin"]);
    let dir = tm.mnt.join("src.bin");
    let out = output(&mut example(
        "private_cow",
        tm.dir.path(),
        &[dir.as_os_str()],
    ));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--private"));
    assert!(read_source(&tm, "src.bin").iter().all(|&b| b == 0));
}

#[test]
fn anon_ipc_passes_a_message_between_processes() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--anon", "shm=1M", "--anon", "empty=4K"]);
    assert_eq!(tm.stat("shm", "mode"), "anon");
    let data = tm.file("shm", "data");
    let message = "hello through shared memory";

    // The receiver maps first and waits; the sender comes later.
    let mut recv = Running::spawn(example(
        "anon_ipc",
        tm.dir.path(),
        &["recv".as_ref(), data.as_os_str()],
    ));
    let pid = recv.pid();
    util::wait_until("receiver in mappers", || maps(&tm, "shm", pid));

    let out = run_ok(&mut example(
        "anon_ipc",
        tm.dir.path(),
        &["send".as_ref(), data.as_os_str(), message.as_ref()],
    ));
    assert_eq!(out, format!("sent {} bytes\n", message.len()));

    recv.wait_line(message);
    let (status, lines, err) = recv.finish();
    assert!(status.success(), "recv: {status}\n{err}");
    assert_eq!(lines, [message]);

    // The region itself holds the length word and the text.
    let region = fs::read(&data).unwrap();
    assert_eq!(region.len(), 1 << 20);
    let len = u32::from_ne_bytes(region[..4].try_into().unwrap()) as usize;
    assert_eq!(len, message.len());
    assert_eq!(&region[4..4 + len], message.as_bytes());

    // Nothing was sent to the other region: recv gives up at its deadline.
    let empty = tm.file("empty", "data");
    let out = output(&mut example(
        "anon_ipc",
        tm.dir.path(),
        &[
            "recv".as_ref(),
            "--timeout".as_ref(),
            "0.2".as_ref(),
            empty.as_os_str(),
        ],
    ));
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no message"));
}

#[test]
fn sigbus_past_the_end_of_the_file() {
    require_fuse!();
    let page = page_size();
    let size = 2 * page + 1808; // not a whole number of pages
    for extra in [&[][..], &["--io", "cached"][..]] {
        let mut tm = TestMount::new();
        let content = vec![0x5a; size];
        fs::write(tm.path("src.bin"), &content).unwrap();
        let mut args = extra.to_vec();
        args.push("src.bin");
        tm.mount(&args);

        let data = tm.file("src.bin", "data");
        let out = run_ok(&mut example("sigbus", tm.dir.path(), &[data.as_os_str()]));
        let want = format!(
            "SIGBUS at offset {}: the mapping is longer than the file",
            3 * page
        );
        assert!(out.lines().any(|l| l == want), "{extra:?}: {out}");
        assert!(
            out.contains(&format!(
                "offset {}: last byte of the file, reads fine (0x5a)",
                size - 1
            )),
            "{extra:?}: {out}"
        );
        assert!(
            out.contains(&format!(
                "offset {size}: past end-of-file but in its last page, reads as zero (0x00)"
            )),
            "{extra:?}: {out}"
        );
        // The fault was the client's problem: the daemon and the file are fine.
        assert_eq!(tm.stat("src.bin", "source_state"), "ok");
        assert_eq!(read_source(&tm, "src.bin"), content);
    }
}

fn watch_sync_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/watch_sync.sh")
}

#[test]
fn watch_sync_script_shows_a_dirty_page_cleaned_by_msync() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--size", "1M", "src.bin"]);
    let out = util::sh_ok(
        tm.dir.path(),
        &format!(
            "bash '{}' mnt/src.bin 'watched bytes'",
            watch_sync_script().display()
        ),
    );
    let (before, after) = out
        .split_once("== after echo sync > msync\n")
        .unwrap_or_else(|| panic!("no second section:\n{out}"));
    assert!(before.starts_with("== after dd into page 1\n"), "{out}");
    // The dd just wrote page 1; nothing has written it back yet.
    assert!(before.contains("\ndirty_pages: 1\n"), "{out}");
    assert!(before.contains("\ndirty_pages 1\n"), "{out}");
    // After the sync the page is clean, and the event log says why.
    assert!(after.starts_with("dirty_pages: \ndirty_pages 0\n"), "{out}");
    let msync_event = after
        .lines()
        .find(|l| l.contains(" msync command=sync "))
        .unwrap_or_else(|| panic!("no msync event:\n{out}"));
    assert!(msync_event.contains("result=ok"), "{msync_event}");
    assert!(after.contains("  result ok\n"), "{out}");

    let page = page_size();
    let source = read_source(&tm, "src.bin");
    assert_eq!(&source[page..page + 13], b"watched bytes");
    assert_eq!(source.iter().filter(|&&b| b != 0).count(), 13);
}

#[test]
fn every_example_has_help() {
    for name in [
        "people_writer",
        "people_reader",
        "mapper",
        "mmap_copy",
        "private_cow",
        "anon_ipc",
        "sigbus",
    ] {
        let out = run_ok(&mut example(name, Path::new("."), &["--help".as_ref()]));
        assert!(out.contains("Usage:"), "{name} --help:\n{out}");
    }
    let out = util::sh_ok(
        Path::new("."),
        &format!("bash '{}' --help", watch_sync_script().display()),
    );
    assert!(out.starts_with("Usage: watch_sync.sh MOUNTDIR"), "{out}");
    // Without arguments the script explains itself and fails.
    let out = util::sh(
        Path::new("."),
        &format!("bash '{}'", watch_sync_script().display()),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn forgot_msync_loses_its_commit_in_a_crash_and_msync_keeps_it() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--crash-test", "--size", "64K", "log.bin"]);
    let dir = tm.dir.path();
    let data = tm.file("log.bin", "data");
    let crash = tm.file("log.bin", "crash");
    assert_eq!(
        run_ok(&mut example("forgot_msync", dir, &[data.as_os_str()])),
        "committed\n"
    );
    assert_eq!(tm.read("log.bin", "unsynced_pages"), "0-1\n");
    fs::write(&crash, "now").unwrap();
    let lost = output(&mut example(
        "forgot_msync",
        dir,
        &[OsStr::new("--check"), OsStr::new("log.bin")],
    ));
    assert!(
        !lost.status.success(),
        "the unsynced commit survived a crash"
    );
    run_ok(&mut example(
        "forgot_msync",
        dir,
        &[OsStr::new("--msync"), data.as_os_str()],
    ));
    fs::write(&crash, "now").unwrap();
    assert_eq!(
        run_ok(&mut example(
            "forgot_msync",
            dir,
            &[OsStr::new("--check"), OsStr::new("log.bin")],
        )),
        "committed record present\n"
    );
}
