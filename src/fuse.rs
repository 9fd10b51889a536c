//! The thin fuser adapter: each method unpacks the request, calls one
//! method of [`MmapFs`], and turns its `Result` into a reply. Errors are
//! logged and answered in one place (`reply_err`); what the filesystem does
//! not support is answered in one place too (`unsupported!`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, Notifier, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};

use crate::control::KernelCache;
use crate::dir::Acting;
use crate::error::fail;
use crate::error::{Error, Result};
use crate::fs::{
    Attr, Backing, Caller, DirEntry, Make, MmapFs, Opened, SetAttr, SetTime, Type, WriteFrom,
};
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
    /// Backing ids of directory sources' files: one per inode while any
    /// open of it lasts (held by each open, found by inode).
    backings: Mutex<Backings>,
}

#[derive(Default)]
struct Backings {
    by_ino: HashMap<u64, Weak<BackingId>>,
    by_fh: HashMap<u64, Arc<BackingId>>,
}

impl Backings {
    /// The inode's backing id, registered with `register` if it has none,
    /// for `file`, opened by `opener` (`Acting::registering_backing`).
    fn get_or(
        &mut self,
        ino: u64,
        fh: u64,
        opener: Caller,
        file: &std::fs::File,
        register: impl FnOnce() -> std::io::Result<BackingId>,
    ) -> std::io::Result<Arc<BackingId>> {
        use std::os::unix::fs::MetadataExt;
        let id = match self.by_ino.get(&ino).and_then(Weak::upgrade) {
            Some(id) => id,
            None => {
                let owner = file.metadata().map(|m| (m.uid(), m.gid()))?;
                let id = Arc::new({
                    let _acting =
                        Acting::registering_backing((opener.uid, opener.gid, opener.pid), owner);
                    register()?
                });
                self.by_ino.insert(ino, Arc::downgrade(&id));
                id
            }
        };
        self.by_fh.insert(fh, id.clone());
        Ok(id)
    }

    fn put(&mut self, ino: u64, fh: u64) {
        if self.by_fh.remove(&fh).is_some()
            && self.by_ino.get(&ino).is_some_and(|w| w.strong_count() == 0)
        {
            self.by_ino.remove(&ino);
        }
    }
}

impl FuseAdapter {
    pub fn new(fs: Arc<MmapFs>, on_end: Box<dyn Fn() + Send + Sync>) -> Self {
        FuseAdapter {
            fs,
            on_end,
            adopted: Mutex::new(HashMap::new()),
            backings: Mutex::new(Backings::default()),
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
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.block_size,
        flags: 0,
    }
}

fn file_type(kind: Type) -> FileType {
    match kind {
        Type::File => FileType::RegularFile,
        Type::Dir => FileType::Directory,
        Type::Symlink => FileType::Symlink,
        Type::Fifo => FileType::NamedPipe,
        Type::Socket => FileType::Socket,
        Type::CharDevice => FileType::CharDevice,
        Type::BlockDevice => FileType::BlockDevice,
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(at) => SetTime::At(at),
    })
}

fn fopen_flags(opened: &Opened) -> FopenFlags {
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
    fopen
}

fn entry(reply: ReplyEntry, op: &str, result: Result<Attr>) {
    match result {
        Ok(a) => reply.entry(&a.ttl, &file_attr(&a), Generation(a.generation)),
        Err(e) => reply.error(reply_err(op, &e)),
    }
}

fn empty(reply: ReplyEmpty, op: &str, result: Result<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(reply_err(op, &e)),
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
        if self.fs.direct_io_maps() {
            let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        }
        // Set-id bits are cleared by the source's filesystem, not by the
        // kernel's SETATTR as the writer (who may not own the file): the
        // daemon writes and truncates as the caller, passthrough writes
        // run as a user without CAP_FSETID (`Acting::registering_backing`),
        // and a store into `data` is a store through a mapping, which
        // clears nothing. The kernel then asks GETXATTR(security.capability)
        // once per refresh of a file's attributes instead of before every
        // write.
        let _ = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        let offered = self.fs.wants_passthrough()
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        self.fs.set_kernel_offers_passthrough(offered);
        Ok(())
    }

    fn destroy(&mut self) {
        (self.on_end)();
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry(reply, "lookup", self.fs.lookup(parent.0, name, caller(req)));
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
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
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
            mode,
            uid,
            gid,
            atime: set_time(atime),
            mtime: set_time(mtime),
            fh: fh.map(|fh| fh.0),
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
        let (fh, fopen) = (FileHandle(opened.fh), fopen_flags(&opened));
        match opened.backing {
            None => reply.opened(fh, fopen),
            Some(Backing::Registered(raw)) => {
                let mut adopted = self.adopted.lock().expect("no panics: they abort");
                let id = adopted
                    .entry(raw)
                    .or_insert_with(|| sys::adopt_backing(&reply, raw));
                reply.opened_passthrough(fh, fopen, id);
            }
            Some(Backing::File(file)) => {
                let mut backings = self.backings.lock().expect("no panics: they abort");
                match backings.get_or(ino.0, fh.0, caller(req), &file, || {
                    reply.open_backing(file.as_ref())
                }) {
                    Ok(id) => reply.opened_passthrough(fh, fopen, &id),
                    Err(e) => {
                        log::warn!("open: passthrough refused ({e}): served through the daemon");
                        reply.opened(fh, fopen);
                    }
                }
            }
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let (a, opened) = match self.fs.create(parent.0, name, mode, flags, caller(req)) {
            Ok(o) => o,
            Err(e) => return reply.error(reply_err("create", &e)),
        };
        let (attr, generation) = (file_attr(&a), Generation(a.generation));
        let (fh, fopen) = (FileHandle(opened.fh), fopen_flags(&opened));
        if let Some(Backing::File(file)) = opened.backing {
            let mut backings = self.backings.lock().expect("no panics: they abort");
            match backings.get_or(a.ino, fh.0, caller(req), &file, || {
                reply.open_backing(file.as_ref())
            }) {
                Ok(id) => {
                    return reply.created_passthrough(&a.ttl, &attr, generation, fh, fopen, &id)
                }
                Err(e) => {
                    log::warn!("create: passthrough refused ({e}): served through the daemon")
                }
            }
        }
        reply.created(&a.ttl, &attr, generation, fh, fopen);
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
        req: &Request,
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
            caller: caller(req),
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
        self.backings
            .lock()
            .expect("no panics: they abort")
            .put(ino.0, fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.fsync(ino.0, fh.0, datasync, move |result| {
            empty(reply, "fsync", result)
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0, caller(req)) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(reply_err("opendir", &e)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.fs.readdir(ino.0, fh.0, offset, caller(req)) {
            Ok(e) => e,
            Err(e) => return reply.error(reply_err("readdir", &e)),
        };
        for DirEntry {
            ino,
            kind,
            name,
            next,
        } in entries
        {
            if reply.add(INodeNo(ino), next, file_type(kind), name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.release(ino.0, fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.fsync(ino.0, fh.0, datasync, move |result| {
            empty(reply, "fsyncdir", result)
        });
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs(ino.0) {
            Ok(s) => reply.statfs(
                s.blocks,
                s.blocks_free,
                s.blocks_available,
                s.files,
                s.files_free,
                s.block_size,
                s.name_max,
                s.fragment_size,
            ),
            Err(e) => reply.error(reply_err("statfs", &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(reply_err("readlink", &e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let what = Make::Node {
            mode,
            rdev: u64::from(rdev),
        };
        entry(
            reply,
            "mknod",
            self.fs.make(parent.0, name, what, caller(req)),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let what = Make::Dir { mode };
        entry(
            reply,
            "mkdir",
            self.fs.make(parent.0, name, what, caller(req)),
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let what = Make::Symlink {
            target: target.as_os_str(),
        };
        entry(
            reply,
            "symlink",
            self.fs.make(parent.0, link_name, what, caller(req)),
        );
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        entry(
            reply,
            "link",
            self.fs.link(ino.0, newparent.0, newname, caller(req)),
        );
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            "unlink",
            self.fs.remove(parent.0, name, false, caller(req)),
        );
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            "rmdir",
            self.fs.remove(parent.0, name, true, caller(req)),
        );
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self.fs.rename(
            parent.0,
            name,
            newparent.0,
            newname,
            flags.bits(),
            caller(req),
        );
        empty(reply, "rename", result);
    }

    /// Without directory sources: `ENOSYS`, not `ENODATA`, so the kernel
    /// answers every later `getxattr` on the mount itself (`EOPNOTSUPP`).
    /// Before each write to a FUSE file, passthrough or not, the kernel
    /// looks for `security.capability` to strip; with any other answer
    /// that is one round trip to the daemon per `write(2)`. With them, the
    /// attributes of their files are real and must be asked for.
    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if !self.fs.has_dir_sources() {
            return unsupported!(reply, "getxattr", ENOSYS);
        }
        match self.fs.getxattr(ino.0, name, size, caller(req)) {
            Ok((n, _)) if size == 0 => reply.size(n as u32),
            Ok((_, value)) => reply.data(&value),
            Err(e) => reply.error(reply_err("getxattr", &e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(ino.0, size, caller(req)) {
            Ok((n, _)) if size == 0 => reply.size(n as u32),
            Ok((_, names)) => reply.data(&names),
            Err(e) => reply.error(reply_err("listxattr", &e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            "setxattr",
            self.fs.setxattr(ino.0, name, value, flags, caller(req)),
        );
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            "removexattr",
            self.fs.removexattr(ino.0, name, caller(req)),
        );
    }

    fn fallocate(
        &self,
        _r: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            "fallocate",
            self.fs.fallocate(fh.0, offset, length, mode),
        );
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

    fn forget_name(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.notifier
            .inval_entry(INodeNo(parent), name)
            .map_err(|e| {
                fail!(
                    EIO,
                    "drop the kernel's name {}: {e}",
                    name.to_string_lossy()
                )
            })
    }
}
