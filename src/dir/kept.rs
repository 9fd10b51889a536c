//! How the daemon keeps an object of a directory source while the kernel
//! knows its inode: as a file handle, opened again for each use, so a tree
//! of any size costs no descriptors and nothing kept stops a deleted
//! file's space from being freed; as a descriptor only where the source's
//! filesystem makes no handles, or the object is on another filesystem
//! mounted inside DIR.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use super::object::{Object, Type};
use crate::sys;

#[derive(Debug)]
pub enum Kept {
    Open(Arc<Object>),
    Handle(Handle),
}

#[derive(Debug)]
pub struct Handle {
    /// The kernel's `struct file_handle`.
    bytes: Box<[u8]>,
    /// DIR's root, opened for reading: handles are opened on its mount.
    within: Arc<HandleMount>,
    dev: u64,
    ino: u64,
    kind: Type,
}

/// DIR's root as a real descriptor (`open_by_handle_at` takes no
/// `O_PATH` one) and the filesystem it is on.
#[derive(Debug)]
pub struct HandleMount {
    root: File,
    dev: u64,
}

impl HandleMount {
    pub fn new(root: &Object) -> io::Result<HandleMount> {
        Ok(HandleMount {
            root: root.open(libc::O_RDONLY | libc::O_DIRECTORY)?,
            dev: root.dev,
        })
    }
}

impl Kept {
    /// `object`, found beneath DIR, kept as a handle if it can be.
    pub fn new(object: Object, mount: Option<&Arc<HandleMount>>) -> Kept {
        let Some(mount) = mount.filter(|m| m.dev == object.dev) else {
            return Kept::Open(Arc::new(object));
        };
        match sys::file_handle(object.fd()) {
            Ok(bytes) => Kept::Handle(Handle {
                bytes: bytes.into_boxed_slice(),
                within: mount.clone(),
                dev: object.dev,
                ino: object.ino,
                kind: object.kind,
            }),
            Err(e) => {
                log::debug!("no file handle ({e}): keeping a descriptor");
                Kept::Open(Arc::new(object))
            }
        }
    }

    /// The object, as an `O_PATH` descriptor for this use. `ENOENT` once
    /// it no longer exists.
    pub fn object(&self) -> io::Result<Arc<Object>> {
        match self {
            Kept::Open(object) => Ok(object.clone()),
            Kept::Handle(h) => {
                let gone = || io::Error::from_raw_os_error(libc::ENOENT);
                let fd = sys::open_by_handle(h.within.root.as_fd(), &h.bytes, libc::O_PATH)
                    .map_err(|e| match e.raw_os_error() {
                        Some(libc::ESTALE) => gone(),
                        _ => e,
                    })?;
                // Some filesystems decode a handle whose generation is 0
                // (ext2/3, ext4 without metadata_csum after `chattr -v 0`)
                // to whatever object has the number now: the handle of what
                // was opened must be the one kept, or it is another object.
                if sys::file_handle(fd.as_fd())?.as_slice() != &*h.bytes {
                    return Err(gone());
                }
                Ok(Arc::new(Object::known(fd, h.dev, h.ino, h.kind)))
            }
        }
    }

    /// Whether `other` keeps the same object: a number of a deleted
    /// object can come back as another object's, but not with the same
    /// handle (its generation differs).
    pub fn same_object(&self, other: &Kept) -> bool {
        match (self, other) {
            (Kept::Handle(a), Kept::Handle(b)) => a.bytes == b.bytes,
            (Kept::Open(a), Kept::Open(b)) => (a.dev, a.ino) == (b.dev, b.ino),
            _ => false,
        }
    }

    /// The descriptor kept, if this is one.
    pub fn open(&self) -> Option<&Arc<Object>> {
        match self {
            Kept::Open(object) => Some(object),
            Kept::Handle(_) => None,
        }
    }
}
