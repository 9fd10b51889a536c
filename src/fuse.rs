//! The thin fuser adapter: each method unpacks the request, calls one
//! method of [`MmapFs`], and turns its `Result` into a reply. Errors are
//! logged and answered in one place (`reply_err`); what the filesystem does
//! not support is answered in one place too (`unsupported!`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, Notifier, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};

use crate::control::KernelCache;
use crate::error::fail;
use crate::error::{Error, Result};
use crate::fs::{Attr, Caller, MmapFs, SetAttr, WriteFrom};
use crate::sys;

const LARGEST_WRITE: u32 = 1 << 20;

pub struct FuseAdapter {
    fs: Arc<MmapFs>,
    /// Called once when the session ends (the kernel unmounted).
    on_end: Box<dyn Fn() + Send + Sync>,
    /// Backing ids registered at start, adopted on first open: the kernel
    /// refuses a second id for an inode with open handles, so each is kept
    /// for the mount's whole life.
    adopted: Mutex<HashMap<u32, BackingId>>,
}

impl FuseAdapter {
    pub fn new(fs: Arc<MmapFs>, on_end: Box<dyn Fn() + Send + Sync>) -> Self {
        FuseAdapter {
            fs,
            on_end,
            adopted: Mutex::new(HashMap::new()),
        }
    }
}

fn reply_err(op: &str, err: &Error) -> Errno {
    if err.errno == libc::ENOENT {
        log::debug!("{op}: {err}");
    } else {
        log::info!("{op}: {err}");
    }
    Errno::from_i32(err.errno)
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: if a.dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: a.block_size,
        flags: 0,
    }
}

/// Requests the filesystem refuses as a whole: its shape is fixed.
macro_rules! unsupported {
    ($reply:expr, $op:literal, $errno:ident) => {{
        log::debug!(concat!($op, ": not supported"));
        $reply.error(Errno::$errno)
    }};
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // No FUSE_ATOMIC_O_TRUNC: with it the kernel empties its own cache
        // of `data` on an O_TRUNC open, dirty pages of other processes'
        // mappings included. Without it, O_TRUNC arrives as a SETATTR that
        // `MmapFs::setattr` recognises and ignores.
        let _ = config.set_max_write(LARGEST_WRITE);
        // Direct-I/O files (--crash-test's data) may still be mapped shared.
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        let offered = self.fs.wants_passthrough()
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        self.fs.set_kernel_offers_passthrough(offered);
        Ok(())
    }

    fn destroy(&mut self) {
        (self.on_end)();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, &name.to_string_lossy()) {
            Ok(a) => reply.entry(&a.ttl, &file_attr(&a), Generation(a.generation)),
            Err(e) => reply.error(reply_err("lookup", &e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&a.ttl, &file_attr(&a)),
            Err(e) => reply.error(reply_err("getattr", &e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = SetAttr {
            size,
            owner_or_mode: mode.is_some() || uid.is_some() || gid.is_some(),
            on_handle: fh.is_some(),
        };
        match self.fs.setattr(ino.0, change, caller(req)) {
            Ok(a) => reply.attr(&a.ttl, &file_attr(&a)),
            Err(e) => reply.error(reply_err("setattr", &e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let opened = match self.fs.open(ino.0, flags.0, caller(req)) {
            Ok(o) => o,
            Err(e) => return reply.error(reply_err("open", &e)),
        };
        let fh = FileHandle(opened.fh);
        let mut fopen = FopenFlags::empty();
        if opened.direct_io {
            fopen |= FopenFlags::FOPEN_DIRECT_IO;
        }
        if opened.keep_cache {
            fopen |= FopenFlags::FOPEN_KEEP_CACHE;
        }
        if opened.no_flush {
            fopen |= FopenFlags::FOPEN_NOFLUSH;
        }
        let Some(raw) = opened.backing else {
            return reply.opened(fh, fopen);
        };
        let mut adopted = self.adopted.lock().expect("no panics: they abort");
        let id = adopted
            .entry(raw)
            .or_insert_with(|| sys::adopt_backing(&reply, raw));
        reply.opened_passthrough(fh, fopen, id);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(ino.0, fh.0, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(reply_err("read", &e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let from = WriteFrom {
            page_cache: write_flags.contains(WriteFlags::FUSE_WRITE_CACHE),
            synchronous: flags.0 & (libc::O_SYNC | libc::O_DSYNC) != 0,
        };
        self.fs.write(
            ino.0,
            fh.0,
            offset,
            data,
            from,
            move |result| match result {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(reply_err("write", &e)),
            },
        );
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(ino.0, fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.fsync(ino.0, fh.0, move |result| match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(reply_err("fsync", &e)),
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.fs.readdir(ino.0) {
            Ok(e) => e,
            Err(e) => return reply.error(reply_err("readdir", &e)),
        };
        for (i, entry) in entries.into_iter().enumerate().skip(offset as usize) {
            let kind = if entry.dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(INodeNo(entry.ino), (i + 1) as u64, kind, entry.name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks,
            0,
            0,
            s.files,
            0,
            s.block_size,
            s.name_max,
            s.block_size,
        );
    }

    fn mknod(
        &self,
        _r: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _d: u32,
        reply: ReplyEntry,
    ) {
        unsupported!(reply, "mknod", EPERM);
    }

    fn mkdir(&self, _r: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        unsupported!(reply, "mkdir", EPERM);
    }

    fn unlink(&self, _r: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        unsupported!(reply, "unlink", EPERM);
    }

    fn rmdir(&self, _r: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        unsupported!(reply, "rmdir", EPERM);
    }

    fn rename(
        &self,
        _r: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _np: INodeNo,
        _nn: &OsStr,
        _f: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        unsupported!(reply, "rename", EPERM);
    }

    fn create(
        &self,
        _r: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _f: i32,
        reply: ReplyCreate,
    ) {
        unsupported!(reply, "create", EPERM);
    }

    /// `ENOSYS`, not `ENODATA`: the kernel then answers every later
    /// `getxattr` on the mount itself (`EOPNOTSUPP`). Before each write to
    /// a FUSE file, passthrough or not, the kernel looks for
    /// `security.capability` to strip; with any other answer that is one
    /// round trip to the daemon per `write(2)`.
    fn getxattr(&self, _r: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        unsupported!(reply, "getxattr", ENOSYS);
    }

    fn listxattr(&self, _r: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn fallocate(
        &self,
        _r: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        unsupported!(reply, "fallocate", EOPNOTSUPP);
    }
}

/// The kernel side of a command, through FUSE notifications: invalidating
/// a range of `data` makes the kernel write its dirty pages of that range
/// back to us first (`launder_folio`), then drop them. Nothing opens the
/// mount, so nothing depends on the path it is mounted at.
pub struct MountedKernel {
    pub notifier: Notifier,
}

impl KernelCache for MountedKernel {
    fn push_and_drop(&self, data_ino: u64, offset: u64, length: u64) -> Result<()> {
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        match self
            .notifier
            .inval_inode(INodeNo(data_ino), to_i64(offset), to_i64(length))
        {
            Ok(()) => Ok(()),
            // The kernel never looked the inode up: it holds no cache.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(fail!(EIO, "push dirty pages of data to the daemon: {e}")),
        }
    }
}
