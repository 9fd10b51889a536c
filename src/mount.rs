//! The mountpoint: checked (and created if missing) before mounting; after
//! mounting, the mount is known by its device number only and found again
//! through `/proc/self/mountinfo`, so renaming a directory above it or
//! planting something at its old path changes nothing for the daemon.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::mount::MntFlags;
use nix::unistd::UnlinkatFlags;

use crate::error::fail;
use crate::error::{Error, Result};

/// FUSE gives the root directory this inode number.
const FUSE_ROOT_INO: u64 = 1;

/// A directory we created as the mountpoint, remembered by its parent's
/// descriptor and its identity, so we remove that one and nothing else.
#[derive(Debug)]
struct Created {
    parent: File,
    name: OsString,
    dev: u64,
    ino: u64,
}

#[derive(Debug)]
pub struct Mountpoint {
    /// The path as it was at start (absolute), for messages and mounting.
    pub path: PathBuf,
    created: Option<Created>,
}

/// Create a missing mountpoint and refuse one that is not a directory or
/// is already mounted.
pub fn prepare(path: &Path) -> Result<Mountpoint> {
    let shown = path.display().to_string();
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => Err(fail!(
            ENOTDIR,
            "mountpoint {shown} is not a directory: give an empty directory (it is created if missing)"
        )),
        Ok(_) => {
            let canonical = path
                .canonicalize()
                .map_err(|e| Error::from_io(e, &shown))?;
            if let Some(fstype) = mounted_at(&canonical) {
                return Err(fail!(
                    EBUSY,
                    "mountpoint {shown} is already mounted ({fstype}): unmount it first with `fusermount3 -u {shown}` or `umount {shown}`"
                ));
            }
            Ok(Mountpoint {
                path: canonical,
                created: None,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        // ENOTCONN: a FUSE daemon died and left its mount behind.
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(fail!(
            ENOTCONN,
            "mountpoint {shown} is a dead FUSE mount: clean it up with `fusermount3 -uz {shown}` or `umount -l {shown}`"
        )),
        Err(e) => Err(Error::from_io(e, format!("mountpoint {shown}"))),
    }
}

fn create(path: &Path) -> Result<Mountpoint> {
    let shown = path.display().to_string();
    let name = path
        .file_name()
        .ok_or_else(|| fail!(EINVAL, "mountpoint {shown} has no name to create"))?
        .to_os_string();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(parent)
        .map_err(|e| Error::from_io(e, format!("create mountpoint {shown}")))?;
    nix::sys::stat::mkdirat(
        Some(parent.as_raw_fd()),
        name.as_os_str(),
        nix::sys::stat::Mode::from_bits_truncate(0o755),
    )
    .map_err(|e| Error::new(e as i32, format!("create mountpoint {shown}: {e}")))?;
    let meta = nix::sys::stat::fstatat(
        Some(parent.as_raw_fd()),
        name.as_os_str(),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| Error::new(e as i32, format!("mountpoint {shown}: {e}")))?;
    let canonical = path.canonicalize().map_err(|e| Error::from_io(e, &shown))?;
    Ok(Mountpoint {
        path: canonical,
        created: Some(Created {
            parent,
            name,
            dev: meta.st_dev,
            ino: meta.st_ino,
        }),
    })
}

impl Mountpoint {
    /// The mount failed because the directory vanished (an earlier daemon
    /// removing the mountpoint it created): make it again, once.
    pub fn recreate_if_gone(&mut self) -> bool {
        if self.path.exists() {
            return false;
        }
        match create(&self.path) {
            Ok(fresh) => {
                *self = fresh;
                true
            }
            Err(_) => false,
        }
    }

    /// Remove the directory if we created it and it is still that one
    /// (empty directories only: `rmdir` never loses anything).
    pub fn remove_if_created(&self) {
        let Some(c) = &self.created else {
            return;
        };
        let fd = c.parent.as_raw_fd();
        let same =
            nix::sys::stat::fstatat(Some(fd), c.name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok_and(|m| m.st_dev == c.dev && m.st_ino == c.ino);
        if same {
            if let Err(e) =
                nix::unistd::unlinkat(Some(fd), c.name.as_os_str(), UnlinkatFlags::RemoveDir)
            {
                log::info!("remove mountpoint {}: {e}", self.path.display());
            }
        }
    }
}

/// The filesystem type mounted exactly at `path`, if any.
fn mounted_at(path: &Path) -> Option<String> {
    let target = path.to_str()?;
    mountinfo()
        .into_iter()
        .rev()
        .find(|m| m.path == target)
        .map(|m| m.fstype)
}

struct MountLine {
    dev: (u64, u64),
    path: String,
    fstype: String,
}

fn mountinfo() -> Vec<MountLine> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let (major, minor) = fields.get(2)?.split_once(':')?;
            let dash = fields.iter().position(|f| *f == "-")?;
            Some(MountLine {
                dev: (major.parse().ok()?, minor.parse().ok()?),
                path: unescape_mountinfo(fields.get(4)?),
                fstype: fields.get(dash + 1).unwrap_or(&"?").to_string(),
            })
        })
        .collect()
}

fn unescape_mountinfo(field: &str) -> String {
    let mut out = Vec::new();
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmount the filesystem whose root has device number `dev`, wherever it
/// is mounted now. Each place is opened and checked to be our root before
/// it is unmounted through that descriptor, so a path swapped in between
/// is never unmounted. The detach is lazy: a process that still has a file
/// open keeps it, and the tree vanishes for everyone else at once.
pub fn unmount(dev: u64) -> Result<()> {
    let wanted = (u64::from(libc::major(dev)), u64::from(libc::minor(dev)));
    let places: Vec<String> = mountinfo()
        .into_iter()
        .filter(|m| m.dev == wanted)
        .map(|m| m.path)
        .collect();
    for place in places {
        let Ok(root) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&place)
        else {
            continue;
        };
        let ours = root
            .metadata()
            .is_ok_and(|m| m.dev() == dev && m.ino() == FUSE_ROOT_INO);
        if !ours {
            continue;
        }
        let through = format!("/proc/self/fd/{}", root.as_raw_fd());
        match nix::mount::umount2(through.as_str(), MntFlags::MNT_DETACH) {
            Ok(()) => {}
            // Not root: the setuid helper checks that the mount is ours.
            Err(nix::errno::Errno::EPERM) => fusermount_unmount(&place)?,
            Err(e) => return Err(Error::new(e as i32, format!("unmount {place}: {e}"))),
        }
    }
    Ok(())
}

fn fusermount_unmount(place: &str) -> Result<()> {
    let out = std::process::Command::new("fusermount3")
        .args(["-u", "-z", "--", place])
        .output()
        .map_err(|e| Error::from_io(e, "run fusermount3"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail!(
            EIO,
            "fusermount3 -u {place}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
