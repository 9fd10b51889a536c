//! `--crash-test`: what a program wrote reaches the source only when it
//! syncs, and a crash loses exactly the rest.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{self, hold_mapper, map_once, sh, TestMount};

const PAGE: u64 = 4096;
const SIZE: u64 = 1 << 20;
/// The system's Python, where Debian's `python3-lmdb` lives.
const PYTHON: &str = "/usr/bin/python3";

fn crash_mount(source: &[u8]) -> TestMount {
    let mut tm = TestMount::new();
    fs::write(tm.path("src.bin"), source).unwrap();
    tm.mount(&["--crash-test", "src.bin"]);
    assert_eq!(tm.stat("src.bin", "mode"), "crash_test");
    tm
}

fn source_at(tm: &TestMount, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    fs::File::open(tm.path("src.bin"))
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

fn crash(tm: &TestMount, command: &str) {
    fs::write(tm.file("src.bin", "crash"), command).unwrap();
}

#[test]
fn refusals_name_the_option_that_conflicts() {
    require_fuse!();
    for (args, word) in [
        (&["--io", "passthrough"][..], "--io passthrough"),
        (&["--private"], "--private"),
        (&["--read-only"], "--read-only"),
    ] {
        let tm = TestMount::new();
        fs::write(tm.path("src.bin"), vec![0u8; 4096]).unwrap();
        let mut all = vec!["--crash-test"];
        all.extend(args);
        all.push("src.bin");
        let out = tm.run(&all);
        assert_eq!(out.status.code(), Some(2), "{word}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(word), "{word}: {err}");
    }
    let tm = TestMount::new();
    let out = tm.run(&["--crash-test", "--anon", "shm=4K"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--anon"));
}

#[test]
fn only_synced_writes_survive_a_crash() {
    require_fuse!();
    let tm = crash_mount(&vec![b'.'; SIZE as usize]);
    let data = tm.file("src.bin", "data");
    let old = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&data)
        .unwrap();
    old.write_all_at(b"durable", 2 * PAGE).unwrap();
    old.sync_data().unwrap();
    old.write_all_at(b"lost", 5 * PAGE).unwrap();
    old.write_all_at(b"kept", 9 * PAGE).unwrap();
    // Readers see their writes at once; the source has only the synced one.
    let mut seen = [0u8; 4];
    old.read_exact_at(&mut seen, 5 * PAGE).unwrap();
    assert_eq!(&seen, b"lost");
    assert_eq!(source_at(&tm, 5 * PAGE, 4), b"....");
    assert_eq!(tm.read("src.bin", "unsynced_pages"), "5,9\n");
    assert_eq!(tm.stat("src.bin", "unsynced_pages"), "2");
    crash(&tm, "keep pages 9");
    let report = tm.read("src.bin", "crash");
    for line in [
        "lost_pages 5\n",
        "kept_pages 9\n",
        "crashes 1\n",
        "last keep pages",
    ] {
        assert!(report.contains(line), "{line}: {report}");
    }
    assert_eq!(source_at(&tm, 2 * PAGE, 7), b"durable");
    assert_eq!(source_at(&tm, 5 * PAGE, 4), b"....");
    assert_eq!(source_at(&tm, 9 * PAGE, 4), b"kept");
    // A handle from before the crash is dead; a new one sees the disk.
    let err = old.read_exact_at(&mut seen, 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let err = old.write_all_at(b"x", 0).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let now = fs::read(&data).unwrap();
    assert_eq!(&now[5 * PAGE as usize..][..4], b"....");
    assert_eq!(&now[9 * PAGE as usize..][..4], b"kept");
    assert_eq!(tm.read("src.bin", "unsynced_pages"), "\n");
    assert!(tm
        .read("src.bin", "events")
        .contains(" crash cause=\"keep pages (1 ranges)\" lost=1 kept=1"));
}

#[test]
fn stores_through_a_mapping_are_lost_unless_msynced() {
    require_fuse!();
    let tm = crash_mount(&vec![0u8; SIZE as usize]);
    let data = tm.file("src.bin", "data");
    // A sync is of the whole file, as `fsync` is: whoever stored first.
    map_once(&data, &["--write=16384=synced", "--msync"]);
    map_once(&data, &["--write=8192=forgotten"]);
    // munmap wrote the forgotten store back to the daemon: held, not durable.
    assert_eq!(tm.read("src.bin", "unsynced_pages"), "2\n");
    crash(&tm, "now");
    assert_eq!(source_at(&tm, 8192, 9), vec![0u8; 9]);
    assert_eq!(source_at(&tm, 16384, 6), b"synced");
}

#[test]
fn a_mapping_from_before_a_crash_gets_sigbus() {
    require_fuse!();
    let tm = crash_mount(&vec![0u8; SIZE as usize]);
    let mapper = hold_mapper(
        &tm.file("src.bin", "data"),
        &["--write=0=x", "--check-at-exit"],
    );
    crash(&tm, "now");
    let (status, _, _) = mapper.finish();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGBUS),
        "{status:?}"
    );
}

/// A fresh LMDB database in one file of `SIZE` bytes, made natively.
fn lmdb_source(dir: &Path) -> Vec<u8> {
    let path = dir.join("fresh.mdb");
    let out = Command::new(PYTHON)
        .arg("-c")
        .arg(format!(
            "import lmdb; lmdb.open({:?}, subdir=False, lock=False, map_size={SIZE}).close()",
            path.display().to_string()
        ))
        .output()
        .expect("python3");
    util::succeeded("making an LMDB file", out);
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(SIZE).unwrap();
    fs::read(&path).unwrap()
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/integration/crash_test")
        .join(name)
}

const COMMITS: usize = 4;

/// Run the LMDB writer on the mount; the commits it recorded as returned.
fn write_commits(tm: &TestMount, mode: &str) -> Vec<usize> {
    let log = tm.path("commits.log");
    let _ = fs::remove_file(&log);
    let _ = Command::new(PYTHON)
        .arg(script("lmdb_writer.py"))
        .arg(tm.file("src.bin", "data"))
        .arg(&log)
        .arg(COMMITS.to_string())
        .arg(mode)
        .output()
        .expect("python3");
    fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// The commits LMDB finds in the source file (the durable state).
fn commits_in_source(tm: &TestMount) -> Vec<usize> {
    let out = Command::new(PYTHON)
        .arg(script("lmdb_check.py"))
        .arg(tm.path("src.bin"))
        .output()
        .expect("python3");
    util::succeeded("LMDB reading the source after the crash", out)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

fn require_lmdb() -> bool {
    let found = Command::new(PYTHON)
        .args(["-c", "import lmdb"])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3-lmdb is missing (.ci/run installs it)"
        );
        eprintln!("SKIPPED: python3-lmdb is not installed (apt-get install python3-lmdb)");
    }
    found
}

#[test]
fn lmdb_survives_a_crash_at_every_sync_point() {
    require_fuse!();
    if !require_lmdb() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let fresh = lmdb_source(scratch.path());
    // A run without a crash: how many syncs the program makes.
    let tm = crash_mount(&fresh);
    assert_eq!(write_commits(&tm, "sync"), (0..COMMITS).collect::<Vec<_>>());
    let syncs: u64 = tm.stat("src.bin", "syncs").parse().unwrap();
    assert!(syncs >= COMMITS as u64, "{syncs} syncs");
    drop(tm);
    let mut walked = Vec::new();
    for n in 1..=syncs {
        for when in ["before", "after"] {
            let tm = crash_mount(&fresh);
            crash(&tm, &format!("at sync {n} {when}"));
            let recorded = write_commits(&tm, "sync");
            util::wait_until("the armed crash", || {
                tm.read("src.bin", "crash").contains("crashes 1\n")
            });
            let durable = commits_in_source(&tm);
            for commit in &recorded {
                assert!(
                    durable.contains(commit),
                    "crash at sync {n} {when}: commit {commit} returned but is gone ({durable:?})"
                );
            }
            walked.push(format!("{n} {when}: {} recorded", recorded.len()));
        }
    }
    eprintln!("crash points: {walked:?}");
}

#[test]
fn lmdb_without_sync_is_caught_losing_a_commit() {
    require_fuse!();
    if !require_lmdb() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let tm = crash_mount(&lmdb_source(scratch.path()));
    let recorded = write_commits(&tm, "nosync");
    assert_eq!(recorded.len(), COMMITS);
    assert_eq!(tm.stat("src.bin", "syncs"), "0");
    crash(&tm, "now");
    let durable = commits_in_source(&tm);
    assert!(
        recorded.iter().any(|c| !durable.contains(c)),
        "MDB_NOSYNC: every recorded commit survived ({durable:?}): the crash lost nothing"
    );
    let out = sh(tm.dir.path(), "mdb_stat -n src.bin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
