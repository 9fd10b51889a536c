//! Opening, reading, writing, syncing and listing a directory source's
//! objects, its `statfs`, and extended attributes: each carried out on
//! descriptors of the source directory, as the caller where the source's
//! filesystem should decide.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::dirs::{io_err, shown};
use super::{Attr, Backing, Caller, DirEntry, Handle, MmapFs, Opened, Statfs};
use crate::dir::{self, Object, Type};
use crate::error::{fail, Error, Result};
use crate::events::{Access, Event};
use crate::tree::{FileKind, Node, View};

impl MmapFs {
    /// Open a `data/` regular file.
    pub(super) fn tree_open(
        &self,
        d: usize,
        ino: u64,
        flags: i32,
        caller: Caller,
    ) -> Result<Opened> {
        self.writable_for(d, flags)?;
        let object = self.held(ino)?;
        if object.kind != Type::File {
            return Err(fail!(EINVAL, "only regular files are opened here"));
        }
        let file = {
            let _acting = caller.acting();
            match object.open(own_flags(flags)) {
                // An append-only file (`chattr +a`) refuses a write open
                // that `O_APPEND` makes acceptable.
                Err(e) if e.raw_os_error() == Some(libc::EPERM) && flags & libc::O_APPEND != 0 => {
                    object.open(flags & !libc::O_DIRECT)
                }
                opened => opened,
            }
        }
        .map_err(|e| io_err(e, "open"))?;
        let append_only = crate::sys::is_append_only(file.as_fd());
        let path = self.tree.path(ino);
        self.tree_event(d, "open", &path, None, caller);
        Ok(self.open_handle(d, file, &object, flags, caller, append_only))
    }

    /// Create and open `name` in `data/` directory `parent`.
    pub(super) fn tree_create(
        &self,
        d: usize,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> Result<(Attr, Opened)> {
        self.writable_tree(d)?;
        let dir = self.held(parent)?;
        let (file, object) = {
            let _acting = caller.acting();
            dir.create(name, own_flags(flags), mode)
        }
        .map_err(|e| io_err(e, name.to_string_lossy()))?;
        self.tree_event(d, "create", &self.child_path(parent, name), None, caller);
        let opened = self.open_handle(d, file, &object, flags, caller, false);
        Ok((self.adopt_data(d, parent, name, object), opened))
    }

    /// `EROFS` for an open that would write in a read-only directory source.
    fn writable_for(&self, d: usize, flags: i32) -> Result<()> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            self.writable_tree(d)?;
        }
        Ok(())
    }

    /// The handle of an open `file` of `object`: counted and logged in the
    /// file's state, passed through where the source is. No open of an
    /// `append_only` file is (the kernel refuses to mix passed-through and
    /// served opens of one file): a mapping passed through would store
    /// anywhere in the file, as the kernel does not know the mount's file
    /// to be append-only. Served with direct I/O, it cannot be mapped
    /// shared at all (`MmapFs::direct_io_maps`), and the write-back of
    /// stores is refused anyway.
    fn open_handle(
        &self,
        d: usize,
        file: File,
        object: &Object,
        flags: i32,
        caller: Caller,
        append_only: bool,
    ) -> Opened {
        let state = self.tree(d).files.of(object);
        state.opens.fetch_add(1, Ordering::Relaxed);
        state.open_handles.fetch_add(1, Ordering::Relaxed);
        let access = if flags & libc::O_ACCMODE == libc::O_RDONLY {
            Access::Read
        } else {
            Access::ReadWrite
        };
        state.events.push(Event::Open {
            pid: caller.pid,
            uid: caller.uid,
            access,
        });
        let file = Arc::new(file);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles().insert(
            fh,
            Handle::Real {
                file: file.clone(),
                state,
                opener: caller,
                append_only,
            },
        );
        let passthrough = self.tree(d).passthrough.load(Ordering::Relaxed) && !append_only;
        Opened {
            fh,
            direct_io: append_only,
            backing: passthrough.then_some(Backing::File(file)),
            keep_cache: false,
            // A passthrough file has no pages of the mount's own to write
            // back at close: the FLUSH round trip would carry nothing.
            no_flush: passthrough,
        }
    }

    /// Reads and writes of a `data/` file when the kernel does not pass
    /// them through.
    pub(super) fn tree_read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let file = self.real_file(fh)?;
        let mut buf = vec![0; size as usize];
        let n = file
            .read_at(&mut buf, offset)
            .map_err(|e| io_err(e, "read"))?;
        buf.truncate(n);
        Ok(buf)
    }

    /// As the opener: a write by someone without `CAP_FSETID` clears the
    /// file's set-id bits, as it would in DIR (the daemon's own would not).
    /// `page_cache`: the write-back of the kernel's cache of the file, which
    /// holds stores through mappings.
    pub(super) fn tree_write(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
        page_cache: bool,
    ) -> Result<u32> {
        let (file, opener) = self.opened_file(fh)?;
        if page_cache && self.append_only(fh) {
            return Err(fail!(
                EPERM,
                "an append-only file cannot be written through a mapping"
            ));
        }
        let _acting = opener.acting();
        let n = file
            .write_at(data, offset)
            .map_err(|e| io_err(e, "write"))?;
        Ok(n as u32)
    }

    /// The daemon's descriptor of an opened file, and who opened it.
    fn opened_file(&self, fh: u64) -> Result<(Arc<File>, Caller)> {
        match self.handles().get(&fh) {
            Some(Handle::Real { file, opener, .. }) => Ok((file.clone(), *opener)),
            _ => Err(fail!(EBADF, "no open handle {fh}")),
        }
    }

    fn append_only(&self, fh: u64) -> bool {
        matches!(
            self.handles().get(&fh),
            Some(Handle::Real {
                append_only: true,
                ..
            })
        )
    }

    pub(super) fn real_file(&self, fh: u64) -> Result<Arc<File>> {
        match self.handles().get(&fh) {
            Some(Handle::Real { file, .. } | Handle::RealDir { dir: file }) => Ok(file.clone()),
            _ => Err(fail!(EBADF, "no open handle {fh}")),
        }
    }

    pub(super) fn tree_fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        let file = self.real_file(fh)?;
        if datasync {
            file.sync_data()
        } else {
            file.sync_all()
        }
        .map_err(|e| io_err(e, "fsync"))
    }

    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> Result<()> {
        let (file, opener) = self.opened_file(fh)?;
        let to_off = |v: u64| libc::off_t::try_from(v).map_err(|_| fail!(EFBIG, "offset {v}"));
        // As the opener, like a write: set-id bits are cleared as in DIR.
        let _acting = opener.acting();
        nix::fcntl::fallocate(
            file.as_raw_fd(),
            nix::fcntl::FallocateFlags::from_bits_truncate(mode),
            to_off(offset)?,
            to_off(length)?,
        )
        .map_err(|e| Error::new(e as i32, format!("fallocate: {}", e.desc())))
    }

    pub fn opendir(&self, ino: u64, caller: Caller) -> Result<u64> {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let node = self.node(ino)?;
        if let Node::Real(d, View::Files) = node {
            self.located_for(d, ino, libc::O_RDONLY, caller)?;
        }
        if let Node::Real(_, View::Data) = node {
            let object = self.held(ino)?;
            let _acting = caller.acting();
            let dir = object
                .open(libc::O_RDONLY | libc::O_DIRECTORY)
                .map_err(|e| io_err(e, "opendir"))?;
            self.handles()
                .insert(fh, Handle::RealDir { dir: Arc::new(dir) });
        }
        Ok(fh)
    }

    /// A `data/` directory's entries from the directory's own cookie on.
    pub(super) fn tree_readdir(&self, fh: u64, offset: u64) -> Result<Vec<DirEntry>> {
        let dir = self.real_file(fh)?;
        let raw = crate::sys::read_dir_at(dir.as_fd(), offset as i64, 16 << 10)
            .map_err(|e| io_err(e, "readdir"))?;
        Ok(raw
            .into_iter()
            .map(|e| DirEntry {
                ino: e.ino,
                kind: match e.d_type {
                    libc::DT_DIR => Type::Dir,
                    libc::DT_LNK => Type::Symlink,
                    libc::DT_FIFO => Type::Fifo,
                    libc::DT_SOCK => Type::Socket,
                    libc::DT_CHR => Type::CharDevice,
                    libc::DT_BLK => Type::BlockDevice,
                    _ => Type::File,
                },
                name: e.name,
                next: e.next as u64,
            })
            .collect())
    }

    /// A `files/` directory: a directory's files and subdirectories, or a
    /// file's inspection files.
    /// Entries carry the object's own inode number: the kernel only
    /// shows it as `d_ino`, and a lookup gives the real one.
    pub(super) fn files_entries(
        &self,
        object: &Object,
        path: &Path,
    ) -> Result<Vec<(u64, Type, OsString)>> {
        if object.kind == Type::File {
            return Ok(FileKind::INSPECT
                .iter()
                .map(|k| (object.ino, Type::File, OsString::from(k.name())))
                .collect());
        }
        let names = dir::list(object).map_err(|e| io_err(e, shown(path)))?;
        Ok(names
            .into_iter()
            .filter(|e| matches!(e.d_type, libc::DT_DIR | libc::DT_REG))
            .map(|e| (e.ino, Type::Dir, e.name))
            .collect())
    }

    pub(super) fn tree_statfs(&self, d: usize) -> Result<Statfs> {
        let v = self
            .tree(d)
            .dir
            .root()
            .statvfs()
            .map_err(|e| io_err(e, "statfs"))?;
        Ok(Statfs {
            blocks: v.blocks(),
            blocks_free: v.blocks_free(),
            blocks_available: v.blocks_available(),
            files: v.files(),
            files_free: v.files_free(),
            block_size: v.block_size() as u32,
            name_max: v.name_max() as u32,
            fragment_size: v.fragment_size() as u32,
        })
    }

    /// Extended attributes of `data/` objects; everything else has none.
    pub fn getxattr(
        &self,
        ino: u64,
        name: &OsStr,
        size: u32,
        caller: Caller,
    ) -> Result<(usize, Vec<u8>)> {
        let object = self
            .xattr_object(ino)
            .map_err(|_| fail!(ENODATA, "no attribute"))?;
        let _acting = caller.acting();
        object
            .get_xattr(name, size as usize)
            .map_err(|e| io_err(e, "getxattr"))
    }

    pub fn listxattr(&self, ino: u64, size: u32, caller: Caller) -> Result<(usize, Vec<u8>)> {
        let Ok(object) = self.xattr_object(ino) else {
            return Ok((0, Vec::new()));
        };
        let _acting = caller.acting();
        object
            .list_xattr(size as usize)
            .map_err(|e| io_err(e, "listxattr"))
    }

    pub fn setxattr(
        &self,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        caller: Caller,
    ) -> Result<()> {
        let object = self.xattr_object(ino)?;
        self.writable_node(ino)?;
        let _acting = caller.acting();
        object
            .set_xattr(name, value, flags)
            .map_err(|e| io_err(e, "setxattr"))
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr, caller: Caller) -> Result<()> {
        let object = self.xattr_object(ino)?;
        self.writable_node(ino)?;
        let _acting = caller.acting();
        object
            .remove_xattr(name)
            .map_err(|e| io_err(e, "removexattr"))
    }

    fn writable_node(&self, ino: u64) -> Result<()> {
        match self.node(ino)? {
            Node::Real(d, _) => self.writable_tree(d),
            _ => Ok(()),
        }
    }

    fn xattr_object(&self, ino: u64) -> Result<Arc<Object>> {
        match self.node(ino)? {
            Node::Real(_, View::Data) => self.held(ino),
            _ => Err(fail!(
                EPERM,
                "the mount's own files have no extended attributes"
            )),
        }
    }
}

/// The flags of the daemon's own descriptor of an opened file: it serves
/// fsync, truncate, fallocate and, without passthrough, reads and writes
/// at the offsets the kernel gives, so never `O_APPEND` (pwrite would
/// append) nor `O_DIRECT` (alignment).
fn own_flags(flags: i32) -> i32 {
    flags & !(libc::O_APPEND | libc::O_DIRECT)
}
