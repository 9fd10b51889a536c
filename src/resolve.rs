//! Opening a source path as root without trusting other users' symlinks.
//!
//! The path is walked one component at a time from `/` or the current
//! directory, each component opened `O_PATH | O_NOFOLLOW` and typed with
//! `fstat` on that descriptor. A symbolic link is followed only if it is
//! owned by root or by the daemon's effective uid, and its target is read
//! from the same descriptor whose owner was checked, so nothing is checked
//! by name and then opened by name.
//!
//! Each `openat(dir, name)` is spelled `open("/proc/self/fd/<dir>/<name>")`:
//! nix 0.29's `openat` hands back a bare `RawFd`, and adopting one needs
//! `unsafe`, which this crate keeps in `sys.rs`. The magic link names the
//! very directory the descriptor holds, so the lookup is the same.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::fail;
use crate::error::{printable, Error, Result};

/// The kernel's own limit on links in one lookup (`MAXSYMLINKS`).
const MAX_LINKS: u32 = 40;
/// How often a missing file may turn out to exist when creating it.
const MAX_CREATE_RACES: u32 = 8;

/// How to open the last component.
pub struct OpenRequest {
    /// Open read-write instead of read-only.
    pub write: bool,
    /// Create a missing file with this mode (`O_CREAT | O_EXCL`). A created
    /// file is always opened read-write: it is empty, and the caller sizes
    /// it through this descriptor.
    pub create_mode: Option<u32>,
}

/// A regular file or block device, opened.
pub struct Opened {
    pub file: File,
    /// From `fstat` on `file`, not from the path.
    pub meta: Metadata,
    /// The file did not exist and was created by this open.
    pub created: bool,
}

/// Open `path`, given by the administrator, for mapping.
pub fn open_source(path: &Path, req: &OpenRequest) -> Result<Opened> {
    let shown = printable(path);
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(fail!(ENOENT, "empty source path"));
    }
    let absolute = bytes[0] == b'/';
    let mut dir = open_start(absolute, &shown)?;
    // Where `dir` is, as spelled on the way, for messages.
    let mut at = PathBuf::from(if absolute { "/" } else { "." });
    let mut pending = components(bytes);
    let mut links = 0;
    let mut create_races = 0;
    while let Some(name) = pending.pop_front() {
        let last = pending.is_empty();
        if name == "." && !last {
            continue;
        }
        let here = at.join(&name);
        let node = match open_path(&dir, &name) {
            Ok(node) => node,
            Err(e) if last && e.kind() == io::ErrorKind::NotFound => {
                let Some(mode) = req.create_mode else {
                    return Err(fail!(
                        ENOENT,
                        "{shown}: no such file; give --size N to create it"
                    ));
                };
                match create(&dir, &name, mode) {
                    Ok(file) => return finish(file, true, &shown),
                    // Something appeared at the name: look again.
                    Err(e)
                        if e.kind() == io::ErrorKind::AlreadyExists
                            && create_races < MAX_CREATE_RACES =>
                    {
                        create_races += 1;
                        pending.push_front(name);
                        continue;
                    }
                    Err(e) => {
                        return Err(Error::from_io(
                            e,
                            format!("{shown}: create {}", printable(&here)),
                        ))
                    }
                }
            }
            Err(e) => return Err(Error::from_io(e, format!("{shown}: {}", printable(&here)))),
        };
        let meta = node
            .metadata()
            .map_err(|e| Error::from_io(e, format!("{shown}: {}", printable(&here))))?;
        if meta.file_type().is_symlink() {
            links += 1;
            let start = follow(&node, &meta, &here, &shown, links, &mut pending)?;
            if let Some(root) = start {
                dir = root;
                at = PathBuf::from("/");
            }
            continue;
        }
        if !last {
            if !meta.is_dir() {
                return Err(fail!(
                    ENOTDIR,
                    "{shown}: {} is not a directory",
                    printable(&here)
                ));
            }
            dir = node;
            at = here;
            continue;
        }
        // Refused on the O_PATH descriptor, before any real open: opening a
        // FIFO can block and opening a device can act (a watchdog starts).
        if let Some(what) = describe_kind(&meta) {
            return Err(fail!(
                EINVAL,
                "{shown} is {what}; mmapfs maps regular files and block devices"
            ));
        }
        return finish(reopen(&node, req.write, &shown)?, false, &shown);
    }
    unreachable!("components() is never empty, and a walk returns at its last component")
}

/// A directory path given by the administrator (the mountpoint), walked as
/// sources are: every component `O_NOFOLLOW`, a link followed only when
/// root's (or the daemon's).
#[derive(Debug)]
pub enum Dir {
    /// The directory, as an `O_PATH` descriptor.
    Found(File),
    /// Only the last name is missing: the directory that would hold it.
    Missing { parent: File, name: OsString },
}

pub fn open_dir(path: &Path) -> Result<Dir> {
    let shown = printable(path);
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(fail!(ENOENT, "empty mountpoint path"));
    }
    let absolute = bytes[0] == b'/';
    let mut dir = open_start(absolute, &shown)?;
    let mut at = PathBuf::from(if absolute { "/" } else { "." });
    let mut pending = components(bytes);
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        let last = pending.is_empty();
        let here = at.join(&name);
        let node = match open_path(&dir, &name) {
            Ok(node) => node,
            Err(e) if last && e.kind() == io::ErrorKind::NotFound => {
                return Ok(Dir::Missing { parent: dir, name })
            }
            Err(e) => return Err(Error::from_io(e, format!("{shown}: {}", printable(&here)))),
        };
        let meta = node
            .metadata()
            .map_err(|e| Error::from_io(e, format!("{shown}: {}", printable(&here))))?;
        if meta.file_type().is_symlink() {
            links += 1;
            let start = follow(&node, &meta, &here, &shown, links, &mut pending)?;
            if let Some(root) = start {
                dir = root;
                at = PathBuf::from("/");
            }
            continue;
        }
        if !meta.is_dir() {
            return Err(fail!(
                ENOTDIR,
                "{shown}: {} is not a directory",
                printable(&here)
            ));
        }
        if last {
            return Ok(Dir::Found(node));
        }
        dir = node;
        at = here;
    }
    unreachable!("components() is never empty, and a walk returns at its last component")
}

/// `mkdirat(parent, name)` and the new directory as an `O_PATH` descriptor.
/// `mkdir` never follows a link: an existing name fails with `EEXIST`.
pub fn make_dir(parent: &File, name: &OsStr, mode: u32) -> io::Result<File> {
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(fd_path(parent).join(name))?;
    open_path(parent, name)
}

/// The path through which `fd` is reached without any lookup by name:
/// `/proc/self/fd/N`.
pub fn fd_path(fd: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Follow the `links`-th link of a walk, `node` at `here`, if the owner
/// rule lets us: its names go first in `pending`; an absolute target
/// returns `/`, where the walk starts again.
fn follow(
    node: &File,
    meta: &Metadata,
    here: &Path,
    shown: &str,
    links: u32,
    pending: &mut VecDeque<OsString>,
) -> Result<Option<File>> {
    if links > MAX_LINKS {
        return Err(fail!(
            ELOOP,
            "{shown}: more than {MAX_LINKS} symbolic links on the way; is there a loop?"
        ));
    }
    let target = link_target(node, meta, here, shown)?;
    for comp in components(target.as_bytes()).into_iter().rev() {
        pending.push_front(comp);
    }
    if target.as_bytes().starts_with(b"/") {
        return open_start(true, shown).map(Some);
    }
    Ok(None)
}

/// The owner rule, then the link's text, read through the descriptor whose
/// owner was checked.
fn link_target(link: &File, meta: &Metadata, here: &Path, shown: &str) -> Result<OsString> {
    let owner = meta.uid();
    if owner != 0 && owner != nix::unistd::geteuid().as_raw() {
        return Err(fail!(
            EACCES,
            "{shown}: {} is a symbolic link owned by uid {owner}; mmapfs does not follow \
             links that other users can plant: give the target's path",
            printable(here)
        ));
    }
    nix::fcntl::readlinkat(Some(link.as_raw_fd()), "").map_err(|e| {
        Error::new(
            e as i32,
            format!("{shown}: read link {}: {}", printable(here), e.desc()),
        )
    })
}

/// The names to walk, in order. Never empty: a path with no names (`/`)
/// and one ending in `/` end in `.`, so the last step opens a directory.
fn components(bytes: &[u8]) -> VecDeque<OsString> {
    let mut names: VecDeque<OsString> = bytes
        .split(|&b| b == b'/')
        .filter(|name| !name.is_empty())
        .map(|name| OsStr::from_bytes(name).to_os_string())
        .collect();
    if names.is_empty() || bytes.ends_with(b"/") {
        names.push_back(".".into());
    }
    names
}

fn open_start(absolute: bool, shown: &str) -> Result<File> {
    let start = if absolute { "/" } else { "." };
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(start)
        .map_err(|e| Error::from_io(e, format!("{shown}: {start}")))?;
    // Without /proc every lookup below would fail ENOENT and read as a
    // missing source; say what is really missing.
    std::fs::metadata(fd_path(&dir)).map_err(|e| {
        Error::from_io(
            e,
            format!("{shown}: mmapfs opens sources through /proc/self/fd; is /proc mounted?"),
        )
    })?;
    Ok(dir)
}

/// `openat(dir, name, O_PATH | O_NOFOLLOW | O_CLOEXEC)`.
fn open_path(dir: &File, name: &OsStr) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(fd_path(dir).join(name))
}

/// `openat(dir, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)`:
/// `O_EXCL` fails on any existing name, a planted link included.
fn create(dir: &File, name: &OsStr, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(fd_path(dir).join(name))
}

/// Turn the checked `O_PATH` descriptor into a readable one. The magic link
/// reaches the same inode, whatever happened to the name since, and an
/// inode's type never changes, so no `O_NONBLOCK` is needed.
fn reopen(node: &File, write: bool, shown: &str) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .open(fd_path(node))
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EACCES | libc::EROFS | libc::EPERM | libc::ETXTBSY) if write => fail!(
                EACCES,
                "{shown}: {e}: PROT_WRITE needs a read-write descriptor; use --read-only"
            ),
            _ => Error::from_io(e, shown),
        })
}

fn finish(file: File, created: bool, shown: &str) -> Result<Opened> {
    let meta = file.metadata().map_err(|e| Error::from_io(e, shown))?;
    Ok(Opened {
        file,
        meta,
        created,
    })
}

fn describe_kind(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() || t.is_block_device() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe): a stream has no pages to map")
    } else if t.is_socket() {
        Some("a socket: a stream has no pages to map")
    } else {
        Some("a character device")
    }
}

#[cfg(test)]
mod tests {
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
}
