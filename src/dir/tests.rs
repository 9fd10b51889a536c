use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

fn source(dir: &Path) -> DirSource {
    let fd = sys::open_at(
        None,
        &std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap(),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .expect("open the directory");
    DirSource::new(
        "t".into(),
        dir.to_path_buf(),
        Object::from_fd(fd).expect("object"),
        10,
        true,
    )
}

fn errno(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

#[test]
fn names_are_single_components() {
    let tmp = tempfile::tempdir().unwrap();
    let root = source(tmp.path());
    for bad in ["", ".", "..", "a/b", "../x"] {
        assert_eq!(
            errno(root.root().lookup(OsStr::new(bad)).unwrap_err()),
            libc::EINVAL,
            "{bad:?}"
        );
    }
}

#[test]
fn operations_happen_in_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let d = source(tmp.path());
    let root = d.root();
    let (file, made) = root
        .create(OsStr::new("a"), libc::O_RDWR | libc::O_EXCL, 0o640)
        .expect("create");
    assert_eq!(made.kind, Type::File);
    std::os::unix::fs::FileExt::write_at(&file, b"hello", 0).unwrap();
    assert_eq!(std::fs::read(tmp.path().join("a")).unwrap(), b"hello");
    assert_eq!(
        errno(
            root.create(OsStr::new("a"), libc::O_RDWR | libc::O_EXCL, 0o640)
                .unwrap_err()
        ),
        libc::EEXIST
    );
    let sub = root.mkdir(OsStr::new("sub"), 0o750).expect("mkdir");
    assert_eq!(sub.kind, Type::Dir);
    made.link_into(&sub, OsStr::new("b")).expect("link");
    assert_eq!(std::fs::metadata(tmp.path().join("a")).unwrap().nlink(), 2);
    root.symlink(OsStr::new("l"), OsStr::new("/etc/passwd"))
        .expect("symlink");
    let link = root.lookup(OsStr::new("l")).expect("lookup");
    assert_eq!(link.kind, Type::Symlink, "never followed");
    assert_eq!(link.readlink().unwrap(), "/etc/passwd");
    // RENAME_NOREPLACE onto a name that exists, then RENAME_EXCHANGE.
    assert_eq!(
        errno(
            root.rename(
                OsStr::new("a"),
                root,
                OsStr::new("l"),
                libc::RENAME_NOREPLACE
            )
            .unwrap_err()
        ),
        libc::EEXIST
    );
    root.rename(
        OsStr::new("a"),
        root,
        OsStr::new("l"),
        libc::RENAME_EXCHANGE,
    )
    .expect("exchange");
    assert!(std::fs::symlink_metadata(tmp.path().join("a"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(tmp.path().join("l")).unwrap(), b"hello");
    made.chmod(0o600).unwrap();
    assert_eq!(
        std::fs::metadata(tmp.path().join("l"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    made.truncate(2, None).unwrap();
    assert_eq!(std::fs::read(tmp.path().join("l")).unwrap(), b"he");
    made.set_xattr(OsStr::new("user.k"), b"v", 0)
        .expect("setxattr");
    assert_eq!(made.get_xattr(OsStr::new("user.k"), 16).unwrap().1, b"v");
    assert_eq!(made.get_xattr(OsStr::new("user.k"), 0).unwrap().0, 1);
    assert!(made
        .list_xattr(64)
        .unwrap()
        .1
        .windows(6)
        .any(|w| w == b"user.k"));
    made.remove_xattr(OsStr::new("user.k")).unwrap();
    root.unlink(OsStr::new("a"), false)
        .expect("unlink the link");
    sub.unlink(OsStr::new("b"), false).unwrap();
    root.unlink(OsStr::new("sub"), true).expect("rmdir");
    assert!(!tmp.path().join("sub").exists());
}

#[test]
fn resolving_never_follows_a_link() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("d")).unwrap();
    std::fs::write(tmp.path().join("d/f"), b"x").unwrap();
    std::os::unix::fs::symlink("/etc", tmp.path().join("out")).unwrap();
    std::os::unix::fs::symlink("d", tmp.path().join("in")).unwrap();
    let d = source(tmp.path());
    assert_eq!(d.resolve(Path::new("d/f")).unwrap().kind, Type::File);
    assert_eq!(
        errno(d.resolve(Path::new("out/passwd")).unwrap_err()),
        libc::ELOOP
    );
    assert_eq!(
        errno(d.resolve(Path::new("in/f")).unwrap_err()),
        libc::ELOOP
    );
    assert_eq!(
        errno(d.resolve(Path::new("../etc")).unwrap_err()),
        libc::EINVAL
    );
    assert_eq!(d.resolve(Path::new("")).unwrap().ino, d.root().ino);
}

#[test]
fn the_walk_finds_regular_files_only() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("a/b")).unwrap();
    std::fs::write(tmp.path().join("a/b/f"), vec![1u8; 10000]).unwrap();
    std::fs::write(tmp.path().join("g"), b"x").unwrap();
    std::os::unix::fs::symlink("/etc", tmp.path().join("out")).unwrap();
    nix::unistd::mkfifo(
        &tmp.path().join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let walk = source(tmp.path()).walk();
    let mut paths: Vec<String> = walk
        .files
        .iter()
        .map(|f| f.path.to_string_lossy().into_owned())
        .collect();
    paths.sort();
    assert_eq!(paths, ["a/b/f", "g"]);
    assert_eq!(walk.dirs, 3);
    assert!(!walk.cut);
    let f = walk
        .files
        .iter()
        .find(|f| f.path == Path::new("a/b/f"))
        .unwrap();
    assert_eq!(f.size, 10000);
    assert!(f.stat.cache >= 1, "just written, so cached");
}

#[test]
fn acting_as_a_user_makes_files_theirs_and_checks_as_them() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("*** SKIPPING: needs root to take another identity ***");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::create_dir(tmp.path().join("closed")).unwrap();
    std::fs::set_permissions(
        tmp.path().join("closed"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let d = source(tmp.path());
    {
        let _as = Acting::as_caller(65534, 65534, std::process::id());
        d.root()
            .create(OsStr::new("mine"), libc::O_RDWR | libc::O_EXCL, 0o644)
            .expect("create as the user");
        let closed = d.root().lookup(OsStr::new("closed")).unwrap();
        assert_eq!(
            errno(closed.mkdir(OsStr::new("x"), 0o755).unwrap_err()),
            libc::EACCES,
            "the user may not write a root 0700 directory"
        );
    }
    let meta = std::fs::metadata(tmp.path().join("mine")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    // Back to root: the thread took its own identity again.
    d.root()
        .lookup(OsStr::new("closed"))
        .unwrap()
        .mkdir(OsStr::new("x"), 0o755)
        .expect("root may");
}

#[test]
fn a_kept_object_is_the_same_file_whatever_its_names_become() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("sub")).unwrap();
    std::fs::write(tmp.path().join("sub/f"), b"kept").unwrap();
    let src = source(tmp.path());
    let file = src.resolve(Path::new("sub/f")).unwrap();
    let (dev, ino) = (file.dev, file.ino);
    let kept = src.keep(file);
    assert!(kept.open().is_none(), "kept as a handle, not a descriptor");
    std::fs::rename(tmp.path().join("sub/f"), tmp.path().join("moved")).unwrap();
    let again = kept.object().unwrap();
    assert_eq!((again.dev, again.ino, again.kind), (dev, ino, Type::File));
    assert_eq!(again.stat().unwrap().st_size, 4);
    drop(again);
    std::fs::remove_file(tmp.path().join("moved")).unwrap();
    assert_eq!(errno(kept.object().unwrap_err()), libc::ENOENT);
}

#[test]
fn a_file_that_appeared_before_a_create_is_opened_as_the_create_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let d = source(tmp.path());
    let root = d.root();
    std::fs::write(tmp.path().join("kept"), b"old").unwrap();
    std::fs::write(tmp.path().join("emptied"), b"old").unwrap();
    let (_, kept) = root
        .create(OsStr::new("kept"), libc::O_RDWR, 0o644)
        .expect("open what is there");
    assert_eq!(kept.stat().unwrap().st_size, 3);
    let (file, _) = root
        .create(OsStr::new("emptied"), libc::O_WRONLY | libc::O_TRUNC, 0o644)
        .expect("open what is there");
    assert_eq!(
        file.metadata().unwrap().len(),
        0,
        "O_TRUNC was not honoured"
    );
    std::os::unix::fs::symlink("kept", tmp.path().join("link")).unwrap();
    assert_eq!(
        errno(
            root.create(OsStr::new("link"), libc::O_WRONLY | libc::O_TRUNC, 0o644)
                .unwrap_err()
        ),
        libc::EEXIST,
        "a link that appeared is never followed"
    );
    assert_eq!(std::fs::read(tmp.path().join("kept")).unwrap(), b"old");
}

#[test]
fn a_create_meeting_another_users_file_in_a_sticky_directory_does_as_the_kernel() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("*** SKIPPING: needs root to chown and set fs.protected_regular ***");
        return;
    }
    const KNOB: &str = "/proc/sys/fs/protected_regular";
    struct Restore(String);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::write(KNOB, &self.0);
        }
    }
    let _restore = Restore(std::fs::read_to_string(KNOB).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let d = source(tmp.path());
    let theirs = tmp.path().join("theirs");
    for (level, dir_mode) in [
        (0, 0o1777),
        (1, 0o1777),
        (1, 0o1775),
        (2, 0o1775),
        (2, 0o1755),
    ] {
        std::fs::write(KNOB, level.to_string()).unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(dir_mode)).unwrap();
        let _ = std::fs::remove_file(&theirs);
        std::fs::write(&theirs, b"their data").unwrap();
        std::os::unix::fs::chown(&theirs, Some(4242), Some(4242)).unwrap();
        let native = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&theirs)
            .map(drop)
            .map_err(errno);
        let ours = d
            .root()
            .create(OsStr::new("theirs"), libc::O_WRONLY | libc::O_TRUNC, 0o644)
            .map(drop)
            .map_err(errno);
        assert_eq!(
            ours, native,
            "protected_regular {level}, directory {dir_mode:o}"
        );
        if native.is_err() {
            assert_eq!(std::fs::read(&theirs).unwrap(), b"their data");
        }
    }
}
