//! The mountpoint: checked (and created if missing) before mounting; after
//! mounting, the mount is known by its device number only and found again
//! through `/proc/self/mountinfo`, so renaming a directory above it or
//! planting something at its old path changes nothing for the daemon.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::mount::MntFlags;
use nix::unistd::UnlinkatFlags;

use crate::error::fail;
use crate::error::{printable, Error, Result};
use crate::mountinfo;
use crate::resolve;

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
    /// Where the directory is now, as the kernel names it, for messages
    /// and for helpers that take a path (`fusermount3`).
    pub path: PathBuf,
    /// The directory, walked to as sources are (no link another user could
    /// plant is followed), held as an `O_PATH` descriptor.
    dir: File,
    /// As given on the command line, to walk again if it vanishes.
    given: PathBuf,
    created: Option<Created>,
}

/// Find (or create) the mountpoint without following links other users
/// could plant, and refuse one that is not a directory or is already
/// mounted.
pub fn prepare(path: &Path) -> Result<Mountpoint> {
    let shown = printable(path);
    let (dir, created) = match resolve::open_dir(path) {
        Ok(resolve::Dir::Found(dir)) => (dir, None),
        Ok(resolve::Dir::Missing { parent, name }) => {
            let dir = resolve::make_dir(&parent, &name, 0o755)
                .map_err(|e| Error::from_io(e, format!("create mountpoint {shown}")))?;
            let meta = dir
                .metadata()
                .map_err(|e| Error::from_io(e, format!("mountpoint {shown}")))?;
            let created = Created {
                parent,
                name,
                dev: meta.dev(),
                ino: meta.ino(),
            };
            (dir, Some(created))
        }
        // ENOTCONN: a FUSE daemon died and left its mount behind.
        Err(e) if e.errno == libc::ENOTCONN => {
            return Err(fail!(
                ENOTCONN,
                "mountpoint {shown} is a dead FUSE mount: clean it up with `fusermount3 -uz {shown}` or `umount -l {shown}`"
            ))
        }
        Err(e) if e.errno == libc::ENOTDIR => {
            return Err(fail!(
                ENOTDIR,
                "mountpoint {shown} is not a directory: give an empty directory (it is created if missing)"
            ))
        }
        Err(e) => return Err(e),
    };
    let now = std::fs::read_link(resolve::fd_path(&dir))
        .map_err(|e| Error::from_io(e, format!("mountpoint {shown}")))?;
    if created.is_none() {
        if let Some(fstype) = mounted_at(&now) {
            return Err(fail!(
                EBUSY,
                "mountpoint {shown} is already mounted ({fstype}): unmount it first with `fusermount3 -u {shown}` or `umount {shown}`"
            ));
        }
    }
    Ok(Mountpoint {
        path: now,
        dir,
        given: path.to_path_buf(),
        created,
    })
}

impl Mountpoint {
    /// What to hand the mount call: when the daemon mounts by itself, the
    /// held directory (`/proc/self/fd/N`), so no name is looked up again;
    /// `fusermount3` runs as another process and gets the path.
    pub fn target(&self, by_helper: bool) -> PathBuf {
        if by_helper {
            self.path.clone()
        } else {
            resolve::fd_path(&self.dir)
        }
    }

    /// The mount failed because the directory vanished (an earlier daemon
    /// removing the mountpoint it created): make it again, once.
    pub fn recreate_if_gone(&mut self) -> bool {
        let gone = self.dir.metadata().map_or(true, |m| m.nlink() == 0);
        if !gone {
            return false;
        }
        match prepare(&self.given) {
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
                log::info!("remove mountpoint {}: {e}", printable(&self.path));
            }
        }
    }
}

/// The filesystem type mounted exactly at `path`, if any.
fn mounted_at(path: &Path) -> Option<String> {
    mountinfo::lines()
        .into_iter()
        .rev()
        .find(|m| m.path.as_path() == path)
        .map(|m| m.fstype)
}

/// Unmount the filesystem whose root has device number `dev`, wherever it
/// is mounted now. Each place is opened and checked to be our root before
/// it is unmounted through that descriptor, so a path swapped in between
/// is never unmounted. The detach is lazy: a process that still has a file
/// open keeps it, and the tree vanishes for everyone else at once.
pub fn unmount(dev: u64) -> Result<()> {
    let mut unmounted = false;
    for (place, root) in mountinfo::roots(dev) {
        let through = format!("/proc/self/fd/{}", root.as_raw_fd());
        match nix::mount::umount2(through.as_str(), MntFlags::MNT_DETACH) {
            Ok(()) => {}
            // Not root: the setuid helper checks that the mount is ours.
            Err(nix::errno::Errno::EPERM) => fusermount_unmount(&place)?,
            Err(e) => {
                return Err(Error::new(
                    e as i32,
                    format!("unmount {}: {e}", printable(&place)),
                ))
            }
        }
        unmounted = true;
    }
    if unmounted {
        Ok(())
    } else {
        Err(fail!(
            ENOENT,
            "found no mount of this filesystem to unmount (covered by another mount?); \
             unmount it with `umount -l` or `fusermount3 -uz`"
        ))
    }
}

fn fusermount_unmount(place: &Path) -> Result<()> {
    let out = std::process::Command::new("fusermount3")
        .args(["-u", "-z", "--"])
        .arg(place)
        .output()
        .map_err(|e| Error::from_io(e, "run fusermount3"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail!(
            EIO,
            "fusermount3 -u {}: {}",
            printable(place),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
