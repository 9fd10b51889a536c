//! Processes sharing files of the tree: shared mappings coherent with the
//! source, and locks between processes on the mount.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::process::Command;

use super::*;
use crate::util::{hold_mapper, map_once, succeeded, Running};

#[test]
fn mappings_of_data_and_of_the_source_are_coherent_both_ways() {
    require_fuse!();
    let mut tm = scratch();
    fs::create_dir(src(&tm, "sub")).unwrap();
    fs::write(src(&tm, "sub/f"), vec![0u8; 16 * PAGE as usize]).unwrap();
    mount_db(&mut tm, &[]);

    // Another process maps the source file and stores into it.
    let direct = hold_mapper(&src(&tm, "sub/f"), &["--write=100=from the source"]);
    // This process maps the file through the mount, at the same time.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(data(&tm, "sub/f"))
        .unwrap();
    // SAFETY: nobody truncates the file while it is mapped here.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&f) }.unwrap();
    assert_eq!(&map[100..115], b"from the source");
    map[5 * PAGE as usize..][..14].copy_from_slice(b"from the mount");
    // A third process mapping the source sees the store at once, unsynced.
    let seen = map_once(&src(&tm, "sub/f"), &[&format!("--read={}=14", 5 * PAGE)]);
    assert!(seen.iter().any(|l| l == "read from the mount"), "{seen:?}");
    // The file's inspection directory sees the page dirty, by its own index.
    let dirty = pages_of(&read(&files(&tm, "sub/f/dirty_pages")));
    assert!(dirty.contains(&5), "dirty_pages {dirty:?}");
    assert_eq!(
        crate::util::stat_value(&read(&whole(&tm, "stats")), "io_mode").as_deref(),
        Some("passthrough"),
        "files of a directory source are passed through, as a file source is"
    );
    map.flush().unwrap();
    drop(map);
    crate::util::finish(direct);
    let bytes = fs::read(src(&tm, "sub/f")).unwrap();
    assert_eq!(&bytes[100..115], b"from the source");
    assert_eq!(&bytes[5 * PAGE as usize..][..14], b"from the mount");
}

#[test]
fn a_write_through_data_is_seen_by_a_mapping_of_the_source() {
    require_fuse!();
    let mut tm = scratch();
    fs::write(src(&tm, "f"), vec![b'.'; 4 * PAGE as usize]).unwrap();
    mount_db(&mut tm, &[]);
    let f = OpenOptions::new().read(true).open(src(&tm, "f")).unwrap();
    // SAFETY: nobody truncates the file while it is mapped here.
    let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
    OpenOptions::new()
        .write(true)
        .open(data(&tm, "f"))
        .unwrap()
        .write_all_at(b"written", 2 * PAGE)
        .unwrap();
    assert_eq!(&map[2 * PAGE as usize..][..7], b"written");
}

/// Hold a lock of `kind` (`flock` or `lockf`) on `path` until stdin ends;
/// prints `locked` once it holds it.
const HOLD_LOCK: &str = r#"
import fcntl, sys
kind, path = sys.argv[1], sys.argv[2]
f = open(path, "r+")
(fcntl.flock if kind == "flock" else fcntl.lockf)(f, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"#;

/// Try a lock of `kind` on `path` without waiting: prints `busy` or `free`.
const TRY_LOCK: &str = r#"
import fcntl, sys
kind, path = sys.argv[1], sys.argv[2]
f = open(path, "r+")
try:
    (fcntl.flock if kind == "flock" else fcntl.lockf)(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("free")
except BlockingIOError:
    print("busy")
"#;

fn try_lock(kind: &str, path: &Path) -> String {
    let out = Command::new(PYTHON)
        .args(["-c", TRY_LOCK, kind])
        .arg(path)
        .output()
        .unwrap();
    succeeded("the lock probe", out).trim().to_string()
}

#[test]
fn posix_and_bsd_locks_hold_between_processes_on_the_mount() {
    require_fuse!();
    let tm = mounted(&[]);
    fs::write(data(&tm, "lockfile"), b"l").unwrap();
    let path = data(&tm, "lockfile");
    for kind in ["lockf", "flock"] {
        assert_eq!(try_lock(kind, &path), "free", "{kind} before");
        let mut cmd = Command::new(PYTHON);
        cmd.args(["-u", "-c", HOLD_LOCK, kind]).arg(&path);
        let mut holder = Running::spawn(cmd);
        holder.wait_line("locked");
        assert_eq!(try_lock(kind, &path), "busy", "{kind} while held");
        crate::util::finish(holder);
        assert_eq!(try_lock(kind, &path), "free", "{kind} after release");
    }
}
