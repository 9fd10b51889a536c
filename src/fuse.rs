//! The thin fuser adapter: unpack each request, call one method of
//! [`MmapFs`], turn its `Result` into a reply. Errors are logged and
//! answered in one place (`reply_err`).

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, Notifier, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};

use crate::cli::IoChoice;
use crate::error::{Error, Result};
use crate::fail;
use crate::fs::{Attr, MmapFs};
use crate::msync::KernelCache;
use crate::source::IoMode;
use crate::sys;
use crate::tree::{FileKind, Node};

/// `data` and directories never change shape; generated files must be
/// asked about every time.
const STABLE_TTL: Duration = Duration::from_secs(1);
const LARGEST_WRITE: u32 = 1 << 20;

/// Passthrough backing files, one per source for the mount's whole life
/// (the kernel refuses a second id for an inode with open handles).
/// Registered at start as raw ids; adopted on first open.
pub struct Backing {
    raw: Vec<OnceLock<u32>>,
    adopted: Vec<Mutex<Option<BackingId>>>,
}

impl Backing {
    pub fn new(sources: usize) -> Arc<Backing> {
        Arc::new(Backing {
            raw: (0..sources).map(|_| OnceLock::new()).collect(),
            adopted: (0..sources).map(|_| Mutex::new(None)).collect(),
        })
    }

    pub fn set(&self, source: usize, id: u32) {
        let _ = self.raw[source].set(id);
    }
}

pub struct FuseAdapter {
    fs: Arc<MmapFs>,
    backing: Arc<Backing>,
}

impl FuseAdapter {
    pub fn new(fs: Arc<MmapFs>, backing: Arc<Backing>) -> Self {
        FuseAdapter { fs, backing }
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
        blksize: 4096,
        flags: 0,
    }
}

fn ttl(a: &Attr) -> Duration {
    match Node::from_ino(a.ino, usize::MAX) {
        Some(Node::File(_, FileKind::Data)) | Some(Node::Root | Node::Dir(_)) => STABLE_TTL,
        _ => Duration::ZERO,
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // OPEN carries O_TRUNC, so `echo hi > data` is not a truncate(0).
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        let _ = config.set_max_write(LARGEST_WRITE);
        let wants_passthrough = self
            .fs
            .sources
            .iter()
            .any(|s| s.io_mode() == IoMode::Passthrough);
        if !wants_passthrough {
            return Ok(());
        }
        let granted = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        if !granted {
            for s in &self.fs.sources {
                if s.io_choice == IoChoice::Passthrough {
                    return Err(std::io::Error::other(format!(
                        "{}: --io passthrough: this kernel offers no FUSE passthrough (needs Linux 6.9+)",
                        s.name
                    )));
                }
                s.set_io_mode(IoMode::Cached);
            }
            log::warn!("kernel has no FUSE passthrough; serving data in cached mode");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_string_lossy();
        match self.fs.lookup(parent.0, &name) {
            Ok(a) => reply.entry(&ttl(&a), &file_attr(&a), Generation(0)),
            Err(e) => reply.error(reply_err("lookup", &e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&ttl(&a), &file_attr(&a)),
            Err(e) => reply.error(reply_err("getattr", &e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let owner_or_mode = mode.is_some() || uid.is_some() || gid.is_some();
        match self.fs.setattr(ino.0, size, owner_or_mode) {
            Ok(a) => reply.attr(&ttl(&a), &file_attr(&a)),
            Err(e) => reply.error(reply_err("setattr", &e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let opened = match self.fs.open(ino.0, flags.0, req.pid()) {
            Ok(o) => o,
            Err(e) => return reply.error(reply_err("open", &e)),
        };
        let mut fopen = FopenFlags::empty();
        if opened.direct_io {
            fopen |= FopenFlags::FOPEN_DIRECT_IO;
        }
        if opened.keep_cache {
            fopen |= FopenFlags::FOPEN_KEEP_CACHE;
        }
        let fh = FileHandle(opened.fh);
        let Some(i) = opened.passthrough else {
            return reply.opened(fh, fopen);
        };
        let mut adopted = self.backing.adopted[i]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if adopted.is_none() {
            if let Some(raw) = self.backing.raw[i].get() {
                *adopted = Some(sys::adopt_backing(&reply, *raw));
            }
        }
        match adopted.as_ref() {
            Some(id) => reply.opened_passthrough(fh, fopen, id),
            None => {
                self.fs.release(ino.0, opened.fh);
                reply.error(reply_err(
                    "open",
                    &fail!(EIO, "no passthrough backing file"),
                ))
            }
        }
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
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if let Ok(Node::File(_, FileKind::Msync)) = self.fs_node(ino) {
            return self
                .fs
                .write_msync(ino.0, data, move |result| match result {
                    Ok(n) => reply.written(n),
                    Err(e) => reply.error(reply_err("msync", &e)),
                });
        }
        match self.fs.write(ino.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(reply_err("write", &e)),
        }
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
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.fsync(ino.0, req.pid(), move |result| match result {
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
        for (i, (ino, dir, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            let kind = if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks: u64 = self
            .fs
            .sources
            .iter()
            .map(|s| s.length.div_ceil(4096))
            .sum();
        let files = 3 + self.fs.sources.len() as u64 * (FileKind::ALL.len() as u64 + 1);
        reply.statfs(blocks, 0, 0, files, 0, 4096, 255, 4096);
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
        reply.error(Errno::EPERM);
    }

    fn mkdir(&self, _r: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        reply.error(Errno::EPERM);
    }

    fn unlink(&self, _r: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM);
    }

    fn rmdir(&self, _r: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EPERM);
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
        reply.error(Errno::EPERM);
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
        reply.error(Errno::EPERM);
    }

    fn getxattr(&self, _r: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENODATA);
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
        reply.error(Errno::EOPNOTSUPP);
    }
}

impl FuseAdapter {
    fn fs_node(&self, ino: INodeNo) -> Result<Node> {
        Node::from_ino(ino.0, self.fs.sources.len()).ok_or_else(|| fail!(ENOENT, "no inode"))
    }
}

/// The kernel side of syncing, through the mounted filesystem itself.
pub struct MountedKernel {
    pub notifier: Notifier,
    pub mountpoint: PathBuf,
    pub names: Vec<String>,
}

impl KernelCache for MountedKernel {
    /// Open our own `data` and fsync it: the kernel then writes every dirty
    /// FUSE page to us. Runs off the FUSE workers (see `MmapFs::write_msync`).
    fn flush(&self, source: usize) -> Result<()> {
        let path = self.mountpoint.join(&self.names[source]).join("data");
        let file = OpenOptions::new()
            .read(true)
            .open(&path)
            .map_err(|e| Error::from_io(e, "flush: open data"))?;
        file.sync_all()
            .map_err(|e| Error::from_io(e, "flush: fsync data"))
    }

    fn invalidate(&self, source: usize, offset: u64, length: u64) -> Result<()> {
        let ino = INodeNo(Node::File(source, FileKind::Data).ino());
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        match self
            .notifier
            .inval_inode(ino, to_i64(offset), to_i64(length))
        {
            Ok(()) => Ok(()),
            // The kernel never looked the inode up: it holds no cache.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(Error::from_io(e, "invalidate FUSE page cache")),
        }
    }
}
