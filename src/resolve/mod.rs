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
    if path.as_os_str().is_empty() {
        return Err(fail!(ENOENT, "empty source path"));
    }
    let mut create_races = 0;
    loop {
        let (parent, name, here) = match walk(path, &shown)? {
            Walked::Found { node, meta, .. } => {
                // Refused on the O_PATH descriptor, before any real open:
                // opening a FIFO can block and opening a device can act (a
                // watchdog starts).
                if let Some(what) = describe_kind(&meta) {
                    return Err(fail!(
                        EINVAL,
                        "{shown} is {what}; mmapfs maps regular files and block devices"
                    ));
                }
                return finish(reopen(&node, req.write, &shown)?, false, &shown);
            }
            Walked::Missing { parent, name, here } => (parent, name, here),
        };
        let Some(mode) = req.create_mode else {
            return Err(fail!(
                ENOENT,
                "{shown}: no such file; give --size N to create it"
            ));
        };
        match create(&parent, &name, mode) {
            Ok(file) => return finish(file, true, &shown),
            // Something appeared at the name: look again.
            Err(e)
                if e.kind() == io::ErrorKind::AlreadyExists && create_races < MAX_CREATE_RACES =>
            {
                create_races += 1;
            }
            Err(e) => {
                return Err(Error::from_io(
                    e,
                    format!("{shown}: create {}", printable(&here)),
                ))
            }
        }
    }
}

/// Where a walk ended: at what the path names, or at the directory that
/// would hold its missing last name.
enum Walked {
    Found {
        node: File,
        meta: Metadata,
        here: PathBuf,
    },
    Missing {
        parent: File,
        name: OsString,
        here: PathBuf,
    },
}

/// Walk `path` one component at a time, `O_PATH | O_NOFOLLOW`, following a
/// link only under the owner rule; every name but the last must be a
/// directory.
fn walk(path: &Path, shown: &str) -> Result<Walked> {
    let bytes = path.as_os_str().as_bytes();
    let absolute = bytes.first() == Some(&b'/');
    let mut dir = open_start(absolute, shown)?;
    // Where `dir` is, as spelled on the way, for messages.
    let mut at = PathBuf::from(if absolute { "/" } else { "." });
    let mut pending = components(bytes);
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        let last = pending.is_empty();
        if name == "." && !last {
            continue;
        }
        let here = at.join(&name);
        let node = match open_path(&dir, &name) {
            Ok(node) => node,
            Err(e) if last && e.kind() == io::ErrorKind::NotFound => {
                return Ok(Walked::Missing {
                    parent: dir,
                    name,
                    here,
                })
            }
            Err(e) => return Err(Error::from_io(e, format!("{shown}: {}", printable(&here)))),
        };
        let meta = node
            .metadata()
            .map_err(|e| Error::from_io(e, format!("{shown}: {}", printable(&here))))?;
        if meta.file_type().is_symlink() {
            links += 1;
            if let Some(root) = follow(&node, &meta, &here, shown, links, &mut pending)? {
                dir = root;
                at = PathBuf::from("/");
            }
            continue;
        }
        if last {
            return Ok(Walked::Found { node, meta, here });
        }
        if !meta.is_dir() {
            return Err(fail!(
                ENOTDIR,
                "{shown}: {} is not a directory",
                printable(&here)
            ));
        }
        dir = node;
        at = here;
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
    if path.as_os_str().is_empty() {
        return Err(fail!(ENOENT, "empty mountpoint path"));
    }
    match walk(path, &shown)? {
        Walked::Found { node, meta, here } => {
            if !meta.is_dir() {
                return Err(fail!(
                    ENOTDIR,
                    "{shown}: {} is not a directory",
                    printable(&here)
                ));
            }
            Ok(Dir::Found(node))
        }
        Walked::Missing { parent, name, .. } => Ok(Dir::Missing { parent, name }),
    }
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
mod tests;
