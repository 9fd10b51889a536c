//! One object of a directory source, held as an `O_PATH | O_NOFOLLOW`
//! descriptor, and every operation on it or on a name beneath it. Names
//! are single components looked up with `openat` relative to a descriptor
//! the daemon holds: nothing is reached by a path string someone else can
//! change, and no symbolic link is ever followed on the daemon's side.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::{AtFlags, RenameFlags};
use nix::sys::stat::{FileStat, Mode, SFlag};

use crate::sys;

/// What a name in the tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Type {
    pub fn of_mode(mode: u32) -> Type {
        match SFlag::from_bits_truncate(mode & libc::S_IFMT) {
            SFlag::S_IFDIR => Type::Dir,
            SFlag::S_IFLNK => Type::Symlink,
            SFlag::S_IFIFO => Type::Fifo,
            SFlag::S_IFSOCK => Type::Socket,
            SFlag::S_IFCHR => Type::CharDevice,
            SFlag::S_IFBLK => Type::BlockDevice,
            _ => Type::File,
        }
    }
}

#[derive(Debug)]
pub struct Object {
    fd: OwnedFd,
    pub dev: u64,
    pub ino: u64,
    pub kind: Type,
}

/// A name the kernel may hand us for one directory entry: one component.
fn component(name: &OsStr) -> io::Result<CString> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn nix_err(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl Object {
    /// Take an `O_PATH` descriptor (or any descriptor) of an object.
    pub fn from_fd(fd: OwnedFd) -> io::Result<Object> {
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(nix_err)?;
        Ok(Object {
            fd,
            dev: st.st_dev,
            ino: st.st_ino,
            kind: Type::of_mode(st.st_mode),
        })
    }

    /// A descriptor of an object whose identity is known already (opened
    /// by a file handle, which names exactly one object).
    pub fn known(fd: OwnedFd, dev: u64, ino: u64, kind: Type) -> Object {
        Object { fd, dev, ino, kind }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `name` in this directory, never following a link.
    pub fn lookup(&self, name: &OsStr) -> io::Result<Object> {
        let name = component(name)?;
        Object::from_fd(sys::open_at(
            Some(self.fd()),
            &name,
            libc::O_PATH | libc::O_NOFOLLOW,
            0,
        )?)
    }

    pub fn stat(&self) -> io::Result<FileStat> {
        nix::sys::stat::fstat(self.fd.as_raw_fd()).map_err(nix_err)
    }

    /// Whether the thread's filesystem identity may access the object for
    /// `mode` (`R_OK`, `W_OK`...): its filesystem's own check, ACLs
    /// included, without opening it.
    pub fn may(&self, mode: nix::unistd::AccessFlags) -> io::Result<()> {
        // AT_EACCESS: the thread's filesystem ids, not the real ones.
        nix::unistd::faccessat(
            None,
            self.proc_path().as_c_str(),
            mode,
            nix::fcntl::AtFlags::AT_EACCESS,
        )
        .map_err(nix_err)
    }

    /// `/proc/self/fd/N`: the magic link reaches this very inode whatever
    /// happened to its names, for the calls that take no descriptor.
    pub fn proc_path(&self) -> CString {
        CString::new(format!("/proc/self/fd/{}", self.fd.as_raw_fd())).expect("no NUL")
    }

    /// A real descriptor of this object with `flags` (access mode and
    /// status flags; never `O_CREAT`). The object's type cannot change, so
    /// a FIFO is never opened here: callers open only files and directories.
    /// Always `O_NONBLOCK`: an open that would wait for another process to
    /// give up a lease fails with `EWOULDBLOCK` instead of holding a FUSE
    /// worker (it changes nothing else for files and directories).
    pub fn open(&self, flags: i32) -> io::Result<File> {
        let flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY);
        let path = self.proc_path();
        let fd = sys::open_at(
            None,
            &path,
            (flags & !libc::O_NOFOLLOW) | libc::O_NONBLOCK,
            0,
        )?;
        Ok(File::from(fd))
    }

    /// Create and open `name`. Always `O_EXCL`, so what is opened is the
    /// file just made, never a FIFO or device that appeared at the name
    /// since the kernel looked: without the caller's `O_EXCL`, a regular
    /// file that appeared is opened instead (and emptied for `O_TRUNC`:
    /// the kernel, which asked to create it, will not), anything else is
    /// `EEXIST`.
    pub fn create(&self, name: &OsStr, flags: i32, mode: u32) -> io::Result<(File, Object)> {
        let c = component(name)?;
        let made = sys::open_at(
            Some(self.fd()),
            &c,
            (flags | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_NONBLOCK)
                & !libc::O_NOCTTY,
            mode,
        );
        let file = match made {
            Ok(fd) => File::from(fd),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && flags & libc::O_EXCL == 0 => {
                let there = self.lookup(name)?;
                if there.kind != Type::File {
                    return Err(e);
                }
                if self.sticky_refuses(&there)? {
                    return Err(io::Error::from_raw_os_error(libc::EACCES));
                }
                let file = there.open(flags)?;
                if flags & libc::O_TRUNC != 0 && flags & libc::O_ACCMODE != libc::O_RDONLY {
                    file.set_len(0)?;
                }
                return Ok((file, there));
            }
            Err(e) => return Err(e),
        };
        let object = Object::from_fd(file.try_clone()?.into())?;
        // The object is kept as a path descriptor, like every other.
        let path = sys::open_at(None, &object.proc_path(), libc::O_PATH, 0)?;
        Ok((file, Object::from_fd(path)?))
    }

    /// Whether the kernel would refuse an `O_CREAT` open of the existing
    /// regular file `there` in this directory (`fs.protected_regular`): in
    /// a sticky directory others may write to, a file owned neither by the
    /// directory's owner nor by the thread's filesystem uid. The daemon
    /// opens such a file without `O_CREAT`, so it asks itself.
    fn sticky_refuses(&self, there: &Object) -> io::Result<bool> {
        let dir = self.stat()?;
        let file = there.stat()?;
        if dir.st_mode & libc::S_ISVTX == 0 || file.st_uid == dir.st_uid {
            return Ok(false);
        }
        // An invalid id changes nothing and returns the current one.
        let fsuid = nix::unistd::setfsuid(nix::unistd::Uid::from_raw(u32::MAX));
        if file.st_uid == fsuid.as_raw() {
            return Ok(false);
        }
        let level: u32 = std::fs::read_to_string("/proc/sys/fs/protected_regular")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Ok(match level {
            0 => false,
            1 => dir.st_mode & 0o002 != 0,
            _ => dir.st_mode & 0o022 != 0,
        })
    }

    pub fn mkdir(&self, name: &OsStr, mode: u32) -> io::Result<Object> {
        let c = component(name)?;
        nix::sys::stat::mkdirat(
            Some(self.fd.as_raw_fd()),
            c.as_c_str(),
            Mode::from_bits_truncate(mode),
        )
        .map_err(nix_err)?;
        self.lookup(name)
    }

    pub fn mknod(&self, name: &OsStr, mode: u32, rdev: u64) -> io::Result<Object> {
        let c = component(name)?;
        nix::sys::stat::mknodat(
            Some(self.fd.as_raw_fd()),
            c.as_c_str(),
            SFlag::from_bits_truncate(mode & libc::S_IFMT),
            Mode::from_bits_truncate(mode & 0o7777),
            rdev,
        )
        .map_err(nix_err)?;
        self.lookup(name)
    }

    pub fn symlink(&self, name: &OsStr, target: &OsStr) -> io::Result<Object> {
        let c = component(name)?;
        nix::unistd::symlinkat(target, Some(self.fd.as_raw_fd()), c.as_c_str()).map_err(nix_err)?;
        self.lookup(name)
    }

    /// A new name for this object in `dir`. Through the magic link with
    /// `AT_SYMLINK_FOLLOW`, which links the object itself.
    pub fn link_into(&self, dir: &Object, name: &OsStr) -> io::Result<Object> {
        let c = component(name)?;
        nix::unistd::linkat(
            None,
            self.proc_path().as_c_str(),
            Some(dir.fd.as_raw_fd()),
            c.as_c_str(),
            AtFlags::AT_SYMLINK_FOLLOW,
        )
        .map_err(nix_err)?;
        dir.lookup(name)
    }

    pub fn unlink(&self, name: &OsStr, dir: bool) -> io::Result<()> {
        let c = component(name)?;
        let flag = if dir {
            nix::unistd::UnlinkatFlags::RemoveDir
        } else {
            nix::unistd::UnlinkatFlags::NoRemoveDir
        };
        nix::unistd::unlinkat(Some(self.fd.as_raw_fd()), c.as_c_str(), flag).map_err(nix_err)
    }

    /// `renameat2`: `flags` are `RENAME_NOREPLACE`/`RENAME_EXCHANGE`/`RENAME_WHITEOUT`.
    pub fn rename(
        &self,
        name: &OsStr,
        to: &Object,
        new_name: &OsStr,
        flags: u32,
    ) -> io::Result<()> {
        let (a, b) = (component(name)?, component(new_name)?);
        nix::fcntl::renameat2(
            Some(self.fd.as_raw_fd()),
            a.as_c_str(),
            Some(to.fd.as_raw_fd()),
            b.as_c_str(),
            RenameFlags::from_bits(flags)
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?,
        )
        .map_err(nix_err)
    }

    pub fn readlink(&self) -> io::Result<OsString> {
        nix::fcntl::readlinkat(Some(self.fd.as_raw_fd()), "").map_err(nix_err)
    }

    pub fn chmod(&self, mode: u32) -> io::Result<()> {
        if self.kind == Type::Symlink {
            return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        nix::sys::stat::fchmodat(
            None,
            self.proc_path().as_c_str(),
            Mode::from_bits_truncate(mode & 0o7777),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(nix_err)
    }

    /// `fchownat(fd, "", AT_EMPTY_PATH)`: works on the path descriptor, a
    /// symbolic link included.
    pub fn chown(&self, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        nix::unistd::fchownat(
            Some(self.fd.as_raw_fd()),
            "",
            uid.map(nix::unistd::Uid::from_raw),
            gid.map(nix::unistd::Gid::from_raw),
            AtFlags::AT_SYMLINK_NOFOLLOW | AtFlags::AT_EMPTY_PATH,
        )
        .map_err(nix_err)
    }

    /// Truncate through `open` (an open descriptor of the caller's) or by
    /// the magic link.
    pub fn truncate(&self, size: u64, open: Option<&File>) -> io::Result<()> {
        match open {
            Some(file) => file.set_len(size),
            None => {
                let size = libc::off_t::try_from(size)
                    .map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
                nix::unistd::truncate(self.proc_path().as_c_str(), size).map_err(nix_err)
            }
        }
    }

    /// Times of a regular file or directory, through the magic link. A
    /// symbolic link's own times are set by `name` in directory `place`
    /// (the caller's identity makes a name swapped meanwhile harmless:
    /// they could set its times themselves, or get `EPERM`).
    pub fn utimens(
        &self,
        atime: libc::timespec,
        mtime: libc::timespec,
        place: Option<(&Object, &OsStr)>,
    ) -> io::Result<()> {
        if self.kind == Type::Symlink {
            let Some((dir, name)) = place else {
                return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
            };
            let c = component(name)?;
            return nix::sys::stat::utimensat(
                Some(dir.fd.as_raw_fd()),
                c.as_c_str(),
                &atime.into(),
                &mtime.into(),
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .map_err(nix_err);
        }
        nix::sys::stat::utimensat(
            None,
            self.proc_path().as_c_str(),
            &atime.into(),
            &mtime.into(),
            nix::sys::stat::UtimensatFlags::FollowSymlink,
        )
        .map_err(nix_err)
    }

    /// Extended attributes go through the magic link; a symbolic link's
    /// own are not reachable that way, so it has none here.
    fn xattr_path(&self) -> io::Result<CString> {
        if self.kind == Type::Symlink {
            return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        Ok(self.proc_path())
    }

    /// The value, or with `size` 0 its length only.
    pub fn get_xattr(&self, name: &OsStr, size: usize) -> io::Result<(usize, Vec<u8>)> {
        let name = CString::new(name.as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut buf = vec![0; size];
        let n = sys::get_xattr(&self.xattr_path()?, &name, &mut buf)?;
        buf.truncate(n);
        Ok((n, buf))
    }

    pub fn set_xattr(&self, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
        let name = CString::new(name.as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        sys::set_xattr(&self.xattr_path()?, &name, value, flags)
    }

    /// The names, NUL-separated; with `size` 0, how many bytes they take.
    pub fn list_xattr(&self, size: usize) -> io::Result<(usize, Vec<u8>)> {
        let mut buf = vec![0; size];
        let n = sys::list_xattr(&self.xattr_path()?, &mut buf)?;
        buf.truncate(n);
        Ok((n, buf))
    }

    pub fn remove_xattr(&self, name: &OsStr) -> io::Result<()> {
        let name = CString::new(name.as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        sys::remove_xattr(&self.xattr_path()?, &name)
    }

    /// Whether the object has a POSIX access ACL (one that may refuse a
    /// user what its mode bits allow).
    pub fn has_acl(&self) -> bool {
        self.kind != Type::Symlink
            && sys::get_xattr(&self.proc_path(), c"system.posix_acl_access", &mut []).is_ok()
    }

    pub fn statvfs(&self) -> io::Result<nix::sys::statvfs::Statvfs> {
        nix::sys::statvfs::fstatvfs(&self.fd).map_err(nix_err)
    }
}
