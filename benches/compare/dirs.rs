//! Directory sources: the directory holding the file under test, served
//! whole by a daemon of its own (`MOUNTPOINT/src/data/`), against the same
//! directory natively and through bindfs: the 1 GiB file read and mapped
//! inside it, SQLite with WAL and `mmap_size`, and small-file metadata.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::helpers::{page_size, progress, secs};
use crate::mounts::{medians_of, on_path, take_turns, MmapfsMount, Paths};
use crate::pieces::{pattern, read_all, touch_pages};
use crate::table::{Row, Target, Via};
use crate::workloads::warm_turns;
use crate::RUNS;

/// Rounds of the SQLite workload for native and mmapfs; bindfs, an order
/// of magnitude slower at it, takes the first round only.
const SQLITE_RUNS: usize = 3;
const SQLITE_TXNS: usize = 1000;
const SQLITE_ROWS_PER_TXN: usize = 100;
const SQLITE_QUERIES: usize = 10_000;
/// Keys of the indexed column: each query reads about 20 of them.
const SQLITE_KEYS: usize = 100_000;
/// Files of the small-file workload. With an fsync each they cost about a
/// millisecond apiece on a virtual disk, and one run's rate moves by 3×
/// with what ext4 deleted just before (its inode allocator skips recently
/// freed inodes): three rounds, taking turns, give the medians.
const SMALL_FILES: usize = 3_000;
const SMALL_RUNS: usize = 3;

pub(crate) fn dir_rows(dir: &Path, p: &Paths, size: u64) -> Vec<Row> {
    let native = p.native_dir();
    let mount = MmapfsMount::start(dir, "mnt-dir", &[], &native);
    progress(&format!(
        "directory source: {} served at {}",
        native.display(),
        mount.data().display()
    ));
    let ways = |rel: &str| {
        let mut v = vec![
            (Via::Native, native.join(rel)),
            (Via::Mmapfs, mount.data().join(rel)),
        ];
        v.extend(p.bindfs_dir().map(|b| (Via::Bindfs, b.join(rel))));
        v
    };
    let file = ways("file.bin");
    let mut rows = vec![read_in_dir(&file, size), walk_in_dir(&file, size)];
    for sub in ["sqlite", "small"] {
        fs::create_dir_all(native.join(sub)).expect("mkdir in the source directory");
    }
    rows.extend(sqlite(dir, &ways("sqlite")));
    rows.extend(small_files(&ways("small")));
    for sub in ["sqlite", "small"] {
        let _ = fs::remove_dir_all(native.join(sub));
    }
    rows
}

/// Warm sequential read of the 1 GiB file inside the directory source.
fn read_in_dir(targets: &[(Via, PathBuf)], size: u64) -> Row {
    progress("directory source: warm sequential read of the file");
    let m = warm_turns(targets, |_| 0, size);
    Row::new(
        "dir source: warm seq read, 1 MiB",
        "MB/s",
        m,
        Target::RatioAtLeast(0.8),
    )
}

/// An outside mapping of the file inside the directory source, touching
/// one byte per page (a fresh mapping each run).
fn walk_in_dir(targets: &[(Via, PathBuf)], size: u64) -> Row {
    progress("directory source: mmap page walk of the file");
    read_all(&targets[0].1, size);
    let pages = (size / page_size()) as f64;
    let m = take_turns(targets, RUNS, |_, path| {
        secs(|| touch_pages(path)) * 1e9 / pages
    });
    Row::new(
        "dir source: outside mmap, touch every page",
        "ns/page",
        m,
        Target::RatioAtMost(1.5),
    )
}

/// The SQLite workload, run by the `sqlite3` program on `app.db` in each
/// way's directory: `SQLITE_TXNS` transactions of `SQLITE_ROWS_PER_TXN`
/// inserts (WAL, `mmap_size` 256 MiB, `synchronous=NORMAL`, an index on
/// `k`), then, by a second process, `SQLITE_QUERIES` indexed range reads.
/// Each run starts from no database (removed untimed).
fn sqlite(dir: &Path, targets: &[(Via, PathBuf)]) -> Vec<Row> {
    if !on_path("sqlite3") {
        progress("sqlite3 not installed: no SQLite rows");
        return Vec::new();
    }
    progress("directory source: SQLite, WAL + mmap_size");
    let (insert, select) = (dir.join("insert.sql"), dir.join("select.sql"));
    fs::write(&insert, insert_script()).expect("write the insert script");
    fs::write(&select, select_script()).expect("write the select script");
    let n = targets.len();
    let (mut inserts, mut selects) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    let mut wholes = vec![Vec::new(); n];
    for round in 0..SQLITE_RUNS {
        for k in 0..n {
            let i = (round + k) % n;
            let (via, dir) = &targets[i];
            if *via == Via::Bindfs && round > 0 {
                continue;
            }
            let db = dir.join("app.db");
            remove_database(&db);
            let rows = (SQLITE_TXNS * SQLITE_ROWS_PER_TXN) as f64;
            let writing = secs(|| run_sqlite(&db, &insert));
            let reading = secs(|| run_sqlite(&db, &select));
            inserts[i].push(rows / writing);
            selects[i].push(SQLITE_QUERIES as f64 / reading);
            wholes[i].push((rows + SQLITE_QUERIES as f64) / (writing + reading));
            remove_database(&db);
        }
    }
    // The target is the workload's, inserts then reads; each part is
    // shown too, against native only: the reads go through SQLite's own
    // mapping of a warm file, which bindfs serves at nearly native speed.
    vec![
        Row::over_bindfs(
            "dir source: SQLite WAL+mmap_size, the workload: inserts, then reads",
            "stmts/s",
            medians_of(targets, wholes),
            Some(Target::RatioAtLeast(0.8)),
            3.0,
        ),
        Row::new(
            "dir source: SQLite, its 100k inserts in 1k txns",
            "rows/s",
            medians_of(targets, inserts),
            Target::RatioAtLeast(0.8),
        ),
        Row::new(
            "dir source: SQLite, its 10k indexed reads",
            "queries/s",
            medians_of(targets, selects),
            Target::RatioAtLeast(0.8),
        ),
    ]
}

fn insert_script() -> String {
    let mut sql = String::from(
        "PRAGMA journal_mode=WAL;\nPRAGMA mmap_size=268435456;\nPRAGMA synchronous=NORMAL;\n\
         CREATE TABLE t(id INTEGER PRIMARY KEY, k INTEGER, v TEXT);\n\
         CREATE INDEX t_k ON t(k);\n",
    );
    for txn in 0..SQLITE_TXNS {
        sql.push_str("BEGIN;\n");
        for row in 0..SQLITE_ROWS_PER_TXN {
            let r = txn * SQLITE_ROWS_PER_TXN + row;
            let k = r * 7919 % SQLITE_KEYS;
            sql.push_str(&format!(
                "INSERT INTO t(k, v) VALUES ({k}, '{r:08}-{}');\n",
                "v".repeat(40)
            ));
        }
        sql.push_str("COMMIT;\n");
    }
    sql
}

fn select_script() -> String {
    let mut sql = String::from("PRAGMA mmap_size=268435456;\n");
    for q in 0..SQLITE_QUERIES {
        let k = q * 7907 % SQLITE_KEYS;
        sql.push_str(&format!(
            "SELECT count(*), sum(length(v)) FROM t WHERE k BETWEEN {k} AND {};\n",
            k + 20
        ));
    }
    sql
}

/// `sqlite3 DB < SCRIPT`, its output discarded; it must succeed.
fn run_sqlite(db: &Path, script: &Path) {
    let status = Command::new("sqlite3")
        .arg(db)
        .stdin(File::open(script).expect("open the script"))
        .stdout(Stdio::null())
        .status()
        .expect("run sqlite3");
    assert!(status.success(), "sqlite3 {}: {status}", db.display());
}

fn remove_database(db: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        let _ = fs::remove_file(PathBuf::from(path));
    }
}

/// `SMALL_FILES` files created, each with 4 KiB written, fsync'd and
/// closed; then each renamed; then each unlinked: one row per phase, in
/// files per second.
fn small_files(targets: &[(Via, PathBuf)]) -> Vec<Row> {
    progress(&format!(
        "directory source: {SMALL_FILES} small files: create+fsync, rename, unlink"
    ));
    let block = pattern(4096);
    let n = targets.len();
    let mut phases = [
        vec![Vec::new(); n],
        vec![Vec::new(); n],
        vec![Vec::new(); n],
    ];
    for round in 0..SMALL_RUNS {
        for k in 0..n {
            let i = (round + k) % n;
            let dir = &targets[i].1;
            let names: Vec<PathBuf> = (0..SMALL_FILES)
                .map(|j| dir.join(format!("f{j:05}")))
                .collect();
            let moved: Vec<PathBuf> = (0..SMALL_FILES)
                .map(|j| dir.join(format!("renamed-{j:05}")))
                .collect();
            let rate = |s: f64| SMALL_FILES as f64 / s;
            phases[0][i].push(rate(secs(|| {
                for path in &names {
                    let mut f = File::create(path).expect("create a small file");
                    f.write_all(&block).expect("write a small file");
                    f.sync_all().expect("fsync a small file");
                }
            })));
            phases[1][i].push(rate(secs(|| {
                for (from, to) in names.iter().zip(&moved) {
                    fs::rename(from, to).expect("rename a small file");
                }
            })));
            phases[2][i].push(rate(secs(|| {
                for path in &moved {
                    fs::remove_file(path).expect("unlink a small file");
                }
            })));
        }
    }
    let [create, rename, unlink] = phases;
    [
        ("create+write 4 KiB+fsync+close", create),
        ("rename", rename),
        ("unlink", unlink),
    ]
    .into_iter()
    .map(|(phase, samples)| {
        Row::over_bindfs(
            &format!("dir source: {}k small files, {phase}", SMALL_FILES / 1000),
            "files/s",
            medians_of(targets, samples),
            None,
            2.0,
        )
    })
    .collect()
}
