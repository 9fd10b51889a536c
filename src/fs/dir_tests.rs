//! Directory sources without a mount: requests made as the adapter makes
//! them, checked in the source directory.

use std::ffi::OsStr;
use std::sync::Arc;

use super::tests::ROOT;
use super::*;
use crate::open;

/// A mount of one directory source named `tree`.
fn mounted() -> (tempfile::TempDir, Arc<MmapFs>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).expect("mkdir");
    let fs = super::tests::cached(&open::Config::plain(vec![tree], 100));
    assert_eq!((fs.sources().count(), fs.trees.len()), (0, 1));
    (dir, fs)
}

fn at(fs: &MmapFs, path: &str) -> Result<u64> {
    let mut ino = ROOT_INO;
    for name in std::path::Path::new(path).iter() {
        ino = fs.lookup(ino, name, ROOT)?.ino;
    }
    Ok(ino)
}

fn read_all(fs: &MmapFs, path: &str) -> String {
    let ino = at(fs, path).expect(path);
    let opened = fs.open(ino, libc::O_RDONLY, ROOT).expect("open");
    let bytes = fs.read(ino, opened.fh, 0, 1 << 20).expect("read");
    fs.release(ino, opened.fh);
    String::from_utf8(bytes).expect("utf-8")
}

fn names(fs: &MmapFs, path: &str) -> Vec<String> {
    let ino = at(fs, path).expect(path);
    let fh = fs.opendir(ino, ROOT).expect("opendir");
    let mut out: Vec<String> = fs
        .readdir(ino, fh, 0, ROOT)
        .expect("readdir")
        .into_iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .filter(|n| n != "." && n != "..")
        .collect();
    fs.release(ino, fh);
    out.sort();
    out
}

#[test]
fn a_directory_source_has_data_files_and_its_own_files() {
    let (_dir, fs) = mounted();
    assert_eq!(
        names(&fs, "tree"),
        ["data", "events", "files", "msync", "stats", "top"]
    );
    let data = fs.getattr(at(&fs, "tree/data").unwrap()).unwrap();
    assert_eq!(data.kind, Type::Dir);
    assert!(read_all(&fs, "tree/stats").contains("mode directory\n"));
    assert!(read_all(&fs, "stats").contains("files 0\n"));
}

#[test]
fn changes_happen_in_the_directory_and_files_follow() {
    let (dir, fs) = mounted();
    let tree = dir.path().join("tree");
    let data = at(&fs, "tree/data").unwrap();
    let (attr, opened) = fs
        .create(
            data,
            OsStr::new("a.db"),
            0o640,
            libc::O_RDWR | libc::O_EXCL,
            ROOT,
        )
        .expect("create");
    assert_eq!(attr.kind, Type::File);
    assert!(opened.backing.is_none(), "cached: no passthrough");
    let from = WriteFrom {
        page_cache: false,
        synchronous: false,
        caller: ROOT,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    fs.write(attr.ino, opened.fh, 0, b"hello", from, move |r| {
        let _ = tx.send(r);
    });
    assert_eq!(rx.recv().unwrap().expect("write"), 5);
    fs.release(attr.ino, opened.fh);
    assert_eq!(std::fs::read(tree.join("a.db")).unwrap(), b"hello");
    assert_eq!(names(&fs, "tree/data"), ["a.db"]);
    assert!(read_all(&fs, "tree/files/a.db/stats").contains("size_bytes 5\n"));

    fs.make(data, OsStr::new("sub"), Make::Dir { mode: 0o755 }, ROOT)
        .expect("mkdir");
    let sub = at(&fs, "tree/data/sub").unwrap();
    fs.rename(data, OsStr::new("a.db"), sub, OsStr::new("b.db"), 0, ROOT)
        .expect("rename");
    assert!(tree.join("sub/b.db").exists());
    assert_eq!(
        at(&fs, "tree/files/a.db").unwrap_err().errno,
        libc::ENOENT,
        "the old files/ path is gone at once"
    );
    assert!(read_all(&fs, "tree/files/sub/b.db/stats").contains("path sub/b.db\n"));
    assert_eq!(
        fs.rename(
            sub,
            OsStr::new("b.db"),
            data,
            OsStr::new("sub"),
            libc::RENAME_NOREPLACE,
            ROOT
        )
        .unwrap_err()
        .errno,
        libc::EEXIST
    );
    fs.remove(sub, OsStr::new("b.db"), false, ROOT)
        .expect("unlink");
    fs.remove(data, OsStr::new("sub"), true, ROOT)
        .expect("rmdir");
    assert!(std::fs::read_dir(&tree).unwrap().next().is_none());
    let events = read_all(&fs, "tree/events");
    for kind in ["create", "mkdir", "rename", "unlink", "rmdir"] {
        assert!(
            events.contains(&format!(" {kind} path=")),
            "{kind} in {events}"
        );
    }
    assert!(
        events.contains("rename path=\"a.db\" to=\"sub/b.db\""),
        "{events}"
    );
}

#[test]
fn links_are_shown_and_never_followed() {
    let (dir, fs) = mounted();
    let tree = dir.path().join("tree");
    std::os::unix::fs::symlink("/etc", tree.join("out")).unwrap();
    std::fs::write(tree.join("f"), b"x").unwrap();
    let out = fs.getattr(at(&fs, "tree/data/out").unwrap()).unwrap();
    assert_eq!(out.kind, Type::Symlink);
    assert_eq!(fs.readlink(out.ino).unwrap(), b"/etc");
    assert_eq!(
        at(&fs, "tree/data/out/passwd").unwrap_err().errno,
        libc::ENOTDIR,
        "a lookup beneath a link is not a lookup in its target"
    );
    assert_eq!(
        names(&fs, "tree/files"),
        ["f"],
        "files/ shows files and directories only"
    );
    assert_eq!(at(&fs, "tree/files/out").unwrap_err().errno, libc::ENOENT);
    assert!(read_all(&fs, "tree/top").lines().any(|l| l.ends_with(" f")));
}
