use super::*;
use std::io::{Read, Write};
use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::sync::mpsc;
use std::time::Duration;

const NOBODY: u32 = 65534;

fn read_only() -> OpenRequest {
    OpenRequest {
        write: false,
        create_mode: None,
    }
}

fn read_write() -> OpenRequest {
    OpenRequest {
        write: true,
        create_mode: None,
    }
}

fn creating(mode: u32) -> OpenRequest {
    OpenRequest {
        write: true,
        create_mode: Some(mode),
    }
}

fn contents(opened: Opened) -> String {
    let mut s = String::new();
    let mut file = opened.file;
    file.read_to_string(&mut s).unwrap();
    s
}

fn refused(path: &Path, req: &OpenRequest) -> Error {
    match open_source(path, req) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
}

/// A symlink at `link` to `target`, owned by nobody, as another user's would be.
fn planted(target: &Path, link: &Path) {
    symlink(target, link).unwrap();
    lchown(link, Some(NOBODY), Some(NOBODY)).unwrap();
}

#[test]
fn opens_a_plain_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("f");
    std::fs::write(&path, "hello").unwrap();
    let opened = open_source(&path, &read_only()).unwrap();
    assert!(opened.meta.is_file());
    assert!(!opened.created);
    assert_eq!(contents(opened), "hello");

    let mut opened = open_source(&path, &read_write()).unwrap();
    opened.file.write_all(b"HE").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"HEllo");
}

#[test]
fn relative_paths_and_dot_dot() {
    let opened = open_source(Path::new("src/../Cargo.toml"), &read_only()).unwrap();
    assert!(contents(opened).contains("name = \"mmapfs\""));

    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("d")).unwrap();
    std::fs::write(tmp.path().join("f"), "up").unwrap();
    let opened = open_source(&tmp.path().join("d/./../f"), &read_only()).unwrap();
    assert_eq!(contents(opened), "up");
}

#[test]
fn follows_links_owned_by_root() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("f"), "behind").unwrap();
    // Relative, absolute, and a link used as a directory on the way.
    symlink("d/f", tmp.path().join("rel")).unwrap();
    symlink(dir.join("f"), tmp.path().join("abs")).unwrap();
    symlink(&dir, tmp.path().join("dirlink")).unwrap();
    for name in ["rel", "abs", "dirlink/f"] {
        let opened = open_source(&tmp.path().join(name), &read_only()).unwrap();
        assert_eq!(contents(opened), "behind", "{name}");
    }
}

#[test]
fn refuses_links_owned_by_another_user() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("f"), "secret").unwrap();
    planted(&dir.join("f"), &tmp.path().join("last"));
    planted(&dir, &tmp.path().join("middle"));
    for name in ["last", "middle/f"] {
        let path = tmp.path().join(name);
        for req in [read_only(), creating(0o644)] {
            let e = refused(&path, &req);
            assert_eq!(e.errno, libc::EACCES, "{name}: {e}");
            assert!(
                e.message.contains("is a symbolic link owned by uid 65534"),
                "{e}"
            );
        }
    }
    assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"secret");
}

#[test]
fn never_creates_behind_a_planted_link() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    planted(&dir.join("new"), &tmp.path().join("last"));
    planted(&dir, &tmp.path().join("middle"));
    for name in ["last", "middle/new"] {
        let e = refused(&tmp.path().join(name), &creating(0o644));
        assert_eq!(e.errno, libc::EACCES, "{name}: {e}");
    }
    assert!(!dir.join("new").exists());
}

#[test]
fn creates_only_when_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("new");
    let e = refused(&path, &read_write());
    assert_eq!(e.errno, libc::ENOENT);
    assert!(e.message.contains("give --size N to create it"), "{e}");

    let opened = open_source(&path, &creating(0o600)).unwrap();
    assert!(opened.created);
    assert!(opened.meta.is_file());
    assert_eq!(opened.meta.permissions().mode() & 0o777, 0o600);
    opened.file.set_len(4096).unwrap();

    let opened = open_source(&path, &creating(0o600)).unwrap();
    assert!(!opened.created);
    assert_eq!(opened.meta.len(), 4096);
}

#[test]
fn reports_a_fifo_without_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("fifo");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (tx, rx) = mpsc::channel();
    // A blocking open of a FIFO with no writer would never return.
    std::thread::spawn(move || tx.send(open_source(&path, &read_only()).err()).unwrap());
    let e = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("opening a FIFO hung")
        .expect("a FIFO opened");
    assert!(e.message.contains("is a FIFO (named pipe)"), "{e}");
}

#[test]
fn reports_sockets_devices_and_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let cases = [
        (sock, "is a socket"),
        (PathBuf::from("/dev/null"), "is a character device"),
        (tmp.path().to_path_buf(), "is a directory"),
        (PathBuf::from("/"), "is a directory"),
    ];
    for (path, what) in cases {
        let e = refused(&path, &read_only());
        assert_eq!(e.errno, libc::EINVAL, "{e}");
        assert!(e.message.contains(what), "{e}");
    }
}

#[test]
fn a_file_on_the_way_is_not_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f");
    std::fs::write(&file, "x").unwrap();
    for path in [file.join("g"), tmp.path().join("f/")] {
        let e = refused(&path, &read_only());
        assert_eq!(e.errno, libc::ENOTDIR, "{e}");
    }
}

#[test]
fn a_link_loop_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    symlink("b", tmp.path().join("a")).unwrap();
    symlink("a", tmp.path().join("b")).unwrap();
    symlink("self/f", tmp.path().join("self")).unwrap();
    for name in ["a", "self"] {
        let e = refused(&tmp.path().join(name), &creating(0o644));
        assert_eq!(e.errno, libc::ELOOP, "{e}");
    }
    assert!(!tmp.path().join("f").exists());
}
