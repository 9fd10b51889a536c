//! Each operation a program does in `data/` happens in the source
//! directory, with the errors the source's filesystem gives.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::time::{Duration, SystemTime};

use super::*;
use crate::util::{sh, sh_ok, wait_until};

#[test]
fn create_read_write_and_truncate_happen_in_the_source() {
    require_fuse!();
    let tm = mounted(&[]);
    fs::write(data(&tm, "a.txt"), b"hello").unwrap();
    assert_eq!(fs::read(src(&tm, "a.txt")).unwrap(), b"hello");
    assert_eq!(fs::read(data(&tm, "a.txt")).unwrap(), b"hello");

    // A change made in the source is what the mount reads.
    fs::write(src(&tm, "a.txt"), b"changed in the source").unwrap();
    wait_until("the mount to read the source's new bytes", || {
        fs::read(data(&tm, "a.txt")).unwrap() == b"changed in the source"
    });

    // O_EXCL: a new name is created, an existing one is EEXIST and untouched.
    let excl = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(data(&tm, "a.txt"))
    };
    assert_eq!(errno(excl()), Some(libc::EEXIST));
    assert_eq!(
        fs::read(src(&tm, "a.txt")).unwrap(),
        b"changed in the source"
    );
    let mut fresh = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(data(&tm, "fresh"))
        .unwrap();
    fresh.write_all(b"0123456789").unwrap();
    fresh.sync_all().unwrap();
    fresh.sync_data().unwrap();
    drop(fresh);
    let meta = fs::metadata(src(&tm, "fresh")).unwrap();
    assert_eq!(meta.len(), 10);
    assert_eq!(meta.mode() & 0o777, 0o640 & !umask());

    // O_APPEND, pwrite at an offset, O_TRUNC.
    let mut append = OpenOptions::new()
        .append(true)
        .open(data(&tm, "fresh"))
        .unwrap();
    append.write_all(b"+tail").unwrap();
    drop(append);
    let f = OpenOptions::new()
        .write(true)
        .open(data(&tm, "fresh"))
        .unwrap();
    f.write_all_at(b"AB", 2).unwrap();
    drop(f);
    assert_eq!(fs::read(src(&tm, "fresh")).unwrap(), b"01AB456789+tail");
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(data(&tm, "a.txt"))
        .unwrap();
    assert_eq!(fs::metadata(src(&tm, "a.txt")).unwrap().len(), 0);

    // truncate(2) both ways, through a handle and by path.
    let f = OpenOptions::new()
        .write(true)
        .open(data(&tm, "fresh"))
        .unwrap();
    f.set_len(4).unwrap();
    assert_eq!(fs::read(src(&tm, "fresh")).unwrap(), b"01AB");
    f.set_len(3 * PAGE).unwrap();
    drop(f);
    assert_eq!(fs::metadata(src(&tm, "fresh")).unwrap().len(), 3 * PAGE);
    assert_eq!(fs::metadata(data(&tm, "fresh")).unwrap().len(), 3 * PAGE);
}

fn umask() -> u32 {
    // SAFETY: umask only swaps a process-wide mask; it is put back at once.
    let old = unsafe { libc::umask(0o022) };
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    old
}

#[test]
fn fallocate_allocates_and_punches_holes_in_the_source() {
    require_fuse!();
    let tm = mounted(&[]);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(data(&tm, "prealloc"))
        .unwrap();
    fallocate(&f, 0, 0, 64 * PAGE).unwrap();
    let meta = fs::metadata(src(&tm, "prealloc")).unwrap();
    assert_eq!(meta.len(), 64 * PAGE);
    assert!(meta.blocks() * 512 >= 64 * PAGE, "{} blocks", meta.blocks());

    f.write_all_at(&[7u8; 4 * PAGE as usize], 0).unwrap();
    f.sync_all().unwrap();
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    fallocate(&f, mode, PAGE, PAGE).unwrap();
    drop(f);
    let bytes = fs::read(src(&tm, "prealloc")).unwrap();
    assert_eq!(bytes.len() as u64, 64 * PAGE);
    assert_eq!(bytes[0], 7);
    assert!(bytes[PAGE as usize..2 * PAGE as usize]
        .iter()
        .all(|&b| b == 0));
    assert_eq!(bytes[2 * PAGE as usize], 7);
}

#[test]
fn directories_renames_and_unlinks_happen_in_the_source() {
    require_fuse!();
    let tm = mounted(&[]);
    fs::create_dir(data(&tm, "sub")).unwrap();
    fs::create_dir(data(&tm, "sub/deeper")).unwrap();
    fs::write(data(&tm, "sub/deeper/f"), b"deep").unwrap();
    assert_eq!(fs::read(src(&tm, "sub/deeper/f")).unwrap(), b"deep");
    assert!(fs::metadata(src(&tm, "sub/deeper")).unwrap().is_dir());
    assert_eq!(names(&data(&tm, "sub")), ["deeper"]);

    // rmdir of a directory that is not empty: ENOTEMPTY, nothing removed.
    assert_eq!(
        errno(fs::remove_dir(data(&tm, "sub/deeper"))),
        Some(libc::ENOTEMPTY)
    );
    assert!(src(&tm, "sub/deeper/f").exists());

    // rename across directories; onto an existing name it replaces.
    fs::rename(data(&tm, "sub/deeper/f"), data(&tm, "g")).unwrap();
    assert!(!src(&tm, "sub/deeper/f").exists());
    assert_eq!(fs::read(src(&tm, "g")).unwrap(), b"deep");
    fs::write(data(&tm, "h"), b"other").unwrap();
    fs::rename(data(&tm, "h"), data(&tm, "g")).unwrap();
    assert_eq!(fs::read(src(&tm, "g")).unwrap(), b"other");
    assert!(!src(&tm, "h").exists());

    // RENAME_NOREPLACE: EEXIST onto an existing name, a move otherwise.
    fs::write(data(&tm, "x"), b"xx").unwrap();
    let noreplace = libc::RENAME_NOREPLACE;
    assert_eq!(
        errno(rename2(&data(&tm, "x"), &data(&tm, "g"), noreplace)),
        Some(libc::EEXIST)
    );
    assert_eq!(fs::read(src(&tm, "x")).unwrap(), b"xx");
    assert_eq!(fs::read(src(&tm, "g")).unwrap(), b"other");
    rename2(&data(&tm, "x"), &data(&tm, "sub/y"), noreplace).unwrap();
    assert!(!src(&tm, "x").exists());
    assert_eq!(fs::read(src(&tm, "sub/y")).unwrap(), b"xx");

    // RENAME_EXCHANGE swaps two names, a file and a directory too.
    rename2(&data(&tm, "g"), &data(&tm, "sub/y"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(src(&tm, "g")).unwrap(), b"xx");
    assert_eq!(fs::read(src(&tm, "sub/y")).unwrap(), b"other");
    rename2(&data(&tm, "g"), &data(&tm, "sub"), libc::RENAME_EXCHANGE).unwrap();
    assert!(fs::metadata(src(&tm, "g")).unwrap().is_dir());
    assert_eq!(fs::read(src(&tm, "sub")).unwrap(), b"xx");
    assert_eq!(fs::read(data(&tm, "g/y")).unwrap(), b"other");

    // unlink and rmdir; a missing name is ENOENT.
    fs::remove_file(data(&tm, "sub")).unwrap();
    assert!(!src(&tm, "sub").exists());
    assert_eq!(errno(fs::remove_file(data(&tm, "sub"))), Some(libc::ENOENT));
    fs::remove_file(data(&tm, "g/y")).unwrap();
    fs::remove_dir(data(&tm, "g/deeper")).unwrap();
    fs::remove_dir(data(&tm, "g")).unwrap();
    assert_eq!(names(&src(&tm, "")), Vec::<String>::new());
    assert_eq!(names(&data(&tm, "")), Vec::<String>::new());
}

#[test]
fn hard_and_symbolic_links_are_made_in_the_source() {
    require_fuse!();
    let tm = mounted(&[]);
    fs::write(data(&tm, "f"), b"linked").unwrap();
    fs::hard_link(data(&tm, "f"), data(&tm, "hard")).unwrap();
    let (f, hard) = (
        fs::metadata(src(&tm, "f")).unwrap(),
        fs::metadata(src(&tm, "hard")).unwrap(),
    );
    assert_eq!((f.ino(), f.nlink()), (hard.ino(), 2));
    wait_until("nlink 2 through the mount", || {
        fs::metadata(data(&tm, "f")).unwrap().nlink() == 2
    });
    // A write through one name is read through the other.
    fs::write(data(&tm, "hard"), b"both").unwrap();
    assert_eq!(fs::read(data(&tm, "f")).unwrap(), b"both");
    assert_eq!(fs::read(src(&tm, "f")).unwrap(), b"both");

    symlink("f", data(&tm, "soft")).unwrap();
    assert_eq!(fs::read_link(src(&tm, "soft")).unwrap().to_str(), Some("f"));
    assert!(fs::symlink_metadata(src(&tm, "soft"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_link(data(&tm, "soft")).unwrap().to_str(),
        Some("f")
    );
    assert_eq!(fs::read(data(&tm, "soft")).unwrap(), b"both");
    // A symlink made in the source reads the same through the mount.
    symlink("no/such/target", src(&tm, "dangling")).unwrap();
    wait_until("the source's symlink through the mount", || {
        fs::read_link(data(&tm, "dangling")).is_ok_and(|t| t.to_str() == Some("no/such/target"))
    });
    assert_eq!(errno(fs::read(data(&tm, "dangling"))), Some(libc::ENOENT));
}

#[test]
fn chmod_chown_utimens_and_xattrs_reach_the_source() {
    require_fuse!();
    let tm = mounted(&[]);
    fs::write(data(&tm, "f"), b"attrs").unwrap();
    fs::create_dir(data(&tm, "d")).unwrap();

    fs::set_permissions(data(&tm, "f"), fs::Permissions::from_mode(0o604)).unwrap();
    fs::set_permissions(data(&tm, "d"), fs::Permissions::from_mode(0o711)).unwrap();
    assert_eq!(fs::metadata(src(&tm, "f")).unwrap().mode() & 0o7777, 0o604);
    assert_eq!(fs::metadata(src(&tm, "d")).unwrap().mode() & 0o7777, 0o711);

    std::os::unix::fs::chown(data(&tm, "f"), Some(4321), Some(8765)).unwrap();
    let meta = fs::metadata(src(&tm, "f")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4321, 8765));
    let seen = fs::metadata(data(&tm, "f")).unwrap();
    assert_eq!((seen.uid(), seen.gid()), (4321, 8765));

    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let f = File::options().write(true).open(data(&tm, "f")).unwrap();
    f.set_times(
        fs::FileTimes::new()
            .set_modified(when)
            .set_accessed(when + Duration::from_secs(7)),
    )
    .unwrap();
    drop(f);
    let meta = fs::metadata(src(&tm, "f")).unwrap();
    assert_eq!(meta.mtime(), 1_000_000_000);
    assert_eq!(meta.atime(), 1_000_000_007);

    // user.* attributes pass through, in both directions.
    set_xattr(&data(&tm, "f"), "user.through", b"the mount").unwrap();
    assert_eq!(
        get_xattr(&src(&tm, "f"), "user.through").unwrap(),
        b"the mount"
    );
    set_xattr(&src(&tm, "f"), "user.direct", b"the source").unwrap();
    assert_eq!(
        get_xattr(&data(&tm, "f"), "user.direct").unwrap(),
        b"the source"
    );
    let mut listed = list_xattr(&data(&tm, "f")).unwrap();
    listed.retain(|n| n.starts_with("user."));
    listed.sort();
    assert_eq!(listed, ["user.direct", "user.through"]);
    remove_xattr(&data(&tm, "f"), "user.through").unwrap();
    assert_eq!(
        errno(get_xattr(&src(&tm, "f"), "user.through")),
        Some(libc::ENODATA)
    );
    assert_eq!(
        errno(get_xattr(&data(&tm, "f"), "user.missing")),
        Some(libc::ENODATA)
    );
}

#[test]
fn o_tmpfile_is_refused_with_eopnotsupp_and_leaves_nothing() {
    require_fuse!();
    let tm = mounted(&[]);
    fs::write(data(&tm, "keep"), b"k").unwrap();
    let tmp = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(data(&tm, ""));
    assert_eq!(errno(tmp), Some(libc::EOPNOTSUPP));
    assert_eq!(names(&src(&tm, "")), ["keep"]);
    // The mount still serves after the refusal.
    fs::write(data(&tm, "after"), b"a").unwrap();
    assert_eq!(names(&src(&tm, "")), ["after", "keep"]);
}

/// `statvfs(2)` of `path`.
fn statvfs(path: &Path) -> libc::statvfs {
    let path = cpath(path);
    // SAFETY: a zeroed statvfs is a valid value for the kernel to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a live NUL-terminated string and a live output struct.
    check(unsafe { libc::statvfs(path.as_ptr(), &mut st) }).unwrap();
    st
}

#[test]
fn statfs_of_data_is_the_source_filesystem() {
    require_fuse!();
    let tm = mounted(&[]);
    let (ours, theirs) = (statvfs(&data(&tm, "")), statvfs(&src(&tm, "")));
    let bytes = |s: &libc::statvfs| s.f_blocks * s.f_frsize;
    assert_eq!(bytes(&ours), bytes(&theirs), "total size");
    assert_eq!(ours.f_files, theirs.f_files, "inodes");
    assert_eq!(ours.f_namemax, theirs.f_namemax, "name length");
    // Free space is the source's too (within what others write meanwhile).
    let free = |s: &libc::statvfs| (s.f_bavail * s.f_frsize) as f64;
    let (a, b) = (free(&ours), free(&theirs));
    assert!((a - b).abs() <= 0.01 * b.max(1.0), "free {a} vs {b}");
}

#[test]
fn subdirectories_are_served_recursively() {
    require_fuse!();
    let mut tm = scratch();
    let deep = "a/b/c/d/e";
    fs::create_dir_all(src(&tm, deep)).unwrap();
    fs::write(src(&tm, &format!("{deep}/leaf")), b"leaf").unwrap();
    fs::write(src(&tm, "a/top"), b"top").unwrap();
    mount_db(&mut tm, &[]);
    assert_eq!(
        fs::read(data(&tm, &format!("{deep}/leaf"))).unwrap(),
        b"leaf"
    );
    assert_eq!(names(&data(&tm, "a")), ["b", "top"]);
    let mut leaf = String::new();
    File::open(data(&tm, &format!("{deep}/leaf")))
        .unwrap()
        .read_to_string(&mut leaf)
        .unwrap();
    assert_eq!(leaf, "leaf");
    fs::write(data(&tm, &format!("{deep}/new")), b"new").unwrap();
    assert_eq!(fs::read(src(&tm, &format!("{deep}/new"))).unwrap(), b"new");
}

/// The daemon keeps each object the kernel knows as a file handle, not a
/// descriptor: a tree larger than the descriptors a process may hold is
/// served whole, and a deleted file's space is never held by the daemon.
#[test]
fn a_tree_of_thousands_of_files_costs_the_daemon_no_descriptors() {
    require_fuse!();
    let tm = mounted(&[]);
    let (dirs, per_dir) = (100, 30);
    for d in 0..dirs {
        let dir = data(&tm, &format!("d{d}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..per_dir {
            fs::write(dir.join(format!("f{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    // Every name known to the kernel at once: each looked up and stat'ed.
    let mut seen = 0;
    for d in 0..dirs {
        for f in 0..per_dir {
            let rel = format!("d{d}/f{f}");
            assert_eq!(read(&data(&tm, &rel)), format!("{d}/{f}"));
            assert_eq!(
                fs::metadata(data(&tm, &rel)).unwrap().len(),
                rel.len() as u64 - 2
            );
            seen += 1;
        }
    }
    let held = fs::read_dir(format!("/proc/{}/fd", tm.pid()))
        .unwrap()
        .count();
    assert!(
        held < 64,
        "the daemon holds {held} descriptors with {seen} files and {dirs} directories known"
    );
    // A file deleted in DIR behind the mount is gone through it too (no
    // descriptor kept it), and one renamed there is still the same file.
    fs::remove_file(src(&tm, "d0/f0")).unwrap();
    fs::rename(src(&tm, "d1/f1"), src(&tm, "d1/moved")).unwrap();
    assert_eq!(read(&data(&tm, "d1/moved")), "1/1");
    wait_until("the deleted file to be gone through the mount", || {
        errno(fs::metadata(data(&tm, "d0/f0"))) == Some(libc::ENOENT)
    });
}

/// `chattr +a` on a file until dropped, so its directory can be removed.
struct AppendOnly(PathBuf);

impl AppendOnly {
    fn set(path: PathBuf) -> AppendOnly {
        sh_ok(Path::new("/"), &format!("chattr +a '{}'", path.display()));
        AppendOnly(path)
    }
}

impl Drop for AppendOnly {
    fn drop(&mut self) {
        let _ = sh(Path::new("/"), &format!("chattr -a '{}'", self.0.display()));
    }
}

#[test]
fn an_append_only_file_takes_appends_and_nothing_else() {
    require_fuse!();
    let tm = mounted(&[]);
    fs::write(src(&tm, "log"), b"first\n").unwrap();
    let _append_only = AppendOnly::set(src(&tm, "log"));
    let d = data(&tm, "");
    // A reader holding it open (`tail -f`) never stands in an appender's way.
    let reader = File::open(data(&tm, "log")).unwrap();
    sh_ok(&d, "echo second >> log");
    for script in ["echo over > log", "truncate -s 0 log", "rm log"] {
        let out = sh(&d, script);
        assert!(
            !out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
            "`{script}` on an append-only file: {out:?}"
        );
    }
    // No shared mapping can store into it, as in DIR.
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(data(&tm, "log"))
        .unwrap();
    // SAFETY: were the mapping made, the test alone would use it.
    let mapped = unsafe { memmap2::MmapMut::map_mut(&file) };
    assert!(
        mapped.is_err(),
        "an append-only file was mapped for writing"
    );
    drop((file, reader));
    sh_ok(&d, "echo third >> log");
    assert_eq!(
        fs::read(src(&tm, "log")).unwrap(),
        b"first\nsecond\nthird\n"
    );
    assert_eq!(
        fs::read(data(&tm, "log")).unwrap(),
        b"first\nsecond\nthird\n"
    );
}
