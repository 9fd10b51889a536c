//! Real databases run on the mount, several processes at once, and are
//! checked afterwards on the source directory with their own tools; while
//! they run, the inspection files show their files.

use std::fs;
use std::process::Command;

use super::*;
use crate::util::{sh, sh_ok, succeeded, wait_until, Running};

fn have_sqlite() -> bool {
    installed(
        "sqlite3",
        Command::new("sqlite3").arg("--version"),
        "sqlite3",
    ) && installed(
        "Python's sqlite3 module",
        Command::new(PYTHON).args(["-c", "import sqlite3"]),
        "python3",
    )
}

fn have_lmdb() -> bool {
    installed(
        "python3-lmdb",
        Command::new(PYTHON).args(["-c", "import lmdb"]),
        "python3-lmdb",
    ) && installed("mdb_stat", Command::new("mdb_stat").arg("-V"), "lmdb-utils")
}

/// The summed `dirty_pages` of every file in `rels`, read from their
/// inspection directories.
fn dirty_of(tm: &TestMount, rels: &[&str]) -> usize {
    rels.iter()
        .map(|rel| pages_of(&read(&files(tm, &format!("{rel}/dirty_pages")))).len())
        .sum()
}

/// A program's line `reads N distinct M`: (N, M).
fn reads_line(lines: &[String]) -> (u64, u64) {
    let line = lines
        .iter()
        .find(|l| l.starts_with("reads "))
        .unwrap_or_else(|| panic!("no `reads` line in {lines:?}"));
    let words: Vec<&str> = line.split(' ').collect();
    (words[1].parse().unwrap(), words[3].parse().unwrap())
}

/// End a reader started with `Running::spawn`: it must exit 0; its counts.
fn finish_reader(reader: Running) -> (u64, u64) {
    let (status, lines, err) = reader.finish();
    assert!(status.success(), "reader: {status}: {err}");
    reads_line(&lines)
}

/// Run `sqlite3 ARGS` on the source and return its output, which must be
/// a success.
fn sqlite_on_source(tm: &TestMount, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(src(tm, "sql/app.db"))
        .arg(sql)
        .output()
        .unwrap();
    succeeded("sqlite3 on the source", out)
}

const SQL_TXNS: u64 = 40;
const SQL_ROWS: u64 = 500;

fn sqlite_writer(tm: &TestMount, mode: &str) -> Running {
    let mut cmd = python_script("sqlite_writer.py");
    cmd.arg(data(tm, "sql/app.db"))
        .arg(mode)
        .arg(SQL_TXNS.to_string())
        .arg(SQL_ROWS.to_string());
    let mut writer = Running::spawn(cmd);
    writer.wait_line("created");
    writer
}

fn sqlite_reader(tm: &TestMount) -> Running {
    let mut cmd = python_script("sqlite_reader.py");
    cmd.arg(data(tm, "sql/app.db"))
        .arg(SQL_ROWS.to_string())
        .arg((SQL_TXNS * SQL_ROWS).to_string());
    Running::spawn(cmd)
}

/// The paths `top` lists, once it lists every one of `want`.
fn top_shows(tm: &TestMount, want: &[&str]) -> Vec<String> {
    let mut paths = Vec::new();
    wait_until(&format!("top to list {want:?}"), || {
        paths = top_paths(tm);
        want.iter().all(|w| paths.iter().any(|p| p == w))
    });
    paths
}

#[test]
fn sqlite_in_wal_mode_with_mmap_serves_a_writer_and_a_reader_at_once() {
    require_fuse!();
    if !have_sqlite() {
        return;
    }
    let tm = mounted(&[]);
    fs::create_dir(data(&tm, "sql")).unwrap();
    let mut writer = sqlite_writer(&tm, "wal");
    let mut reader = sqlite_reader(&tm);
    writer.wait_line("paused");
    // The reader has read a state older than the last before the writer
    // goes on, however slowly it started.
    reader.wait_line("first read");
    // Halfway, with both processes connected: the database, its WAL and
    // its shared-memory index are in the tree, and what SQLite has not
    // synced (at least the index it stores into through a mapping) is dirty.
    let all = ["sql/app.db", "sql/app.db-wal", "sql/app.db-shm"];
    top_shows(&tm, &all);
    assert!(all
        .iter()
        .all(|rel| files(&tm, rel).join("dirty_pages").exists()));
    assert!(dirty_of(&tm, &all) > 0, "no dirty page in {all:?}");
    let shm_mappers = read(&files(&tm, "sql/app.db-shm/mappers"));
    assert!(
        shm_mappers
            .lines()
            .any(|l| l.split(' ').next() == Some(&writer.pid().to_string())),
        "the writer maps the index: {shm_mappers}"
    );
    let (status, lines, err) = writer.finish();
    assert!(status.success(), "writer: {status}: {err}");
    assert_eq!(lines.last().map(String::as_str), Some("done"));
    let (reads, distinct) = finish_reader(reader);
    assert!(
        distinct >= 2,
        "the reader saw only {distinct} states in {reads} reads: it did not run alongside"
    );
    let check = sqlite_on_source(
        &tm,
        "PRAGMA integrity_check; SELECT count(*), count(DISTINCT txn) FROM t; PRAGMA journal_mode;",
    );
    assert_eq!(
        check,
        format!("ok\n{}|{SQL_TXNS}\nwal\n", SQL_TXNS * SQL_ROWS)
    );
}

#[test]
fn sqlite_with_the_rollback_journal_commits_and_locks_as_on_the_source() {
    require_fuse!();
    if !have_sqlite() {
        return;
    }
    let tm = mounted(&[]);
    fs::create_dir(data(&tm, "sql")).unwrap();
    let mut writer = sqlite_writer(&tm, "rollback");
    let reader = sqlite_reader(&tm);
    writer.wait_line("paused");
    // Inside a transaction that spilled: the hot journal is in the tree,
    // the database file holds unsynced pages, and the writer's lock keeps
    // another process on the mount out.
    wait_until("files/sql/app.db-journal", || {
        files(&tm, "sql/app.db-journal/stats").exists()
    });
    assert!(src(&tm, "sql/app.db-journal").exists());
    top_shows(&tm, &["sql/app.db", "sql/app.db-journal"]);
    assert!(
        dirty_of(&tm, &["sql/app.db"]) > 0,
        "the spilled transaction left no dirty page in app.db"
    );
    let out = sh(
        tm.dir.path(),
        &format!(
            "sqlite3 '{}' 'SELECT count(*) FROM t'",
            data(&tm, "sql/app.db").display()
        ),
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("locked"),
        "a reader got past the writer's lock: {said}"
    );
    let (status, _, err) = writer.finish();
    assert!(status.success(), "writer: {status}: {err}");
    finish_reader(reader);
    assert!(!src(&tm, "sql/app.db-journal").exists());
    let check = sqlite_on_source(
        &tm,
        "PRAGMA integrity_check; SELECT count(*), count(DISTINCT txn) FROM t; PRAGMA journal_mode;",
    );
    assert_eq!(
        check,
        format!("ok\n{}|{SQL_TXNS}\ndelete\n", SQL_TXNS * SQL_ROWS)
    );
    // The CLI itself, on the mount, sees the same.
    let through = sh_ok(
        tm.dir.path(),
        &format!(
            "sqlite3 '{}' 'SELECT count(*) FROM t WHERE txn = 7'",
            data(&tm, "sql/app.db").display()
        ),
    );
    assert_eq!(through, format!("{SQL_ROWS}\n"));
}

const LMDB_TXNS: u64 = 200;

fn lmdb_reader(path: &Path, final_count: u64) -> Running {
    let mut cmd = python_script("lmdb_reader.py");
    cmd.arg(path).arg(final_count.to_string());
    Running::spawn(cmd)
}

#[test]
fn lmdb_with_its_lock_file_serves_a_writer_and_concurrent_readers() {
    require_fuse!();
    if !have_lmdb() {
        return;
    }
    let tm = mounted(&[]);
    let env = data(&tm, "env");
    let mut cmd = python_script("lmdb_writer.py");
    cmd.arg(&env).arg(LMDB_TXNS.to_string());
    let mut writer = Running::spawn(cmd);
    writer.wait_line("opened");
    assert_eq!(names(&src(&tm, "env")), ["data.mdb", "lock.mdb"]);
    let mut readers = [lmdb_reader(&env, LMDB_TXNS), lmdb_reader(&env, LMDB_TXNS)];
    writer.wait_line("paused");
    for reader in &mut readers {
        reader.wait_line("first read");
    }
    // Halfway: both files are in the tree; the lock file, which LMDB only
    // ever stores into through its mapping, has dirty pages; the writer
    // maps the data file.
    top_shows(&tm, &["env/data.mdb", "env/lock.mdb"]);
    assert!(
        dirty_of(&tm, &["env/lock.mdb"]) > 0,
        "lock.mdb has no dirty page"
    );
    dirty_of(&tm, &["env/data.mdb"]);
    let mappers = read(&files(&tm, "env/data.mdb/mappers"));
    assert!(
        mappers
            .lines()
            .any(|l| l.split(' ').next() == Some(&writer.pid().to_string())),
        "the writer maps data.mdb: {mappers}"
    );
    let (status, lines, err) = writer.finish();
    assert!(status.success(), "writer: {status}: {err}");
    assert_eq!(lines.last().map(String::as_str), Some("done"));
    for reader in readers {
        let (reads, distinct) = finish_reader(reader);
        assert!(
            distinct >= 2,
            "a reader saw {distinct} states in {reads} reads: it did not run alongside"
        );
    }
    // The source, checked by LMDB's own tool and read whole.
    let stat = sh_ok(tm.dir.path(), "mdb_stat db/env");
    assert!(
        stat.lines()
            .any(|l| l.trim() == format!("Entries: {}", LMDB_TXNS + 1)),
        "{stat}"
    );
    let full = finish_reader(lmdb_reader(&src(&tm, "env"), LMDB_TXNS));
    assert_eq!(full, (1, 1));
}
