//! The filesystem's logic in plain Rust: what each request on each node
//! means. `fuse.rs` only translates requests and replies to and from this.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::fail;
use crate::msync::{self, KernelCache};
use crate::probe::FileId;
use crate::render;
use crate::source::{Counters, IoMode, Source};
use crate::tree::{self, FileKind, Node};

/// Attributes of one node, independent of the FUSE library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub dir: bool,
    pub size: u64,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

/// How the kernel should treat a freshly opened file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// Generated files: every read comes to us, sizes may lie.
    pub direct_io: bool,
    /// Keep the FUSE page cache of `data` across this open.
    pub keep_cache: bool,
    /// Serve through kernel passthrough to this source's file.
    pub passthrough: Option<usize>,
}

/// Per-open state of generated files.
#[derive(Debug)]
enum Handle {
    /// Rendered bytes; re-rendered when read again from offset 0.
    Snapshot {
        node: Node,
        bytes: Vec<u8>,
        read: bool,
    },
    /// `events`: our read offset minus the stream offset served.
    Events { source: usize, skipped: u64 },
    /// `data`: who opened it (RELEASE comes with no pid).
    Data { pid: u32 },
}

pub struct MmapFs {
    pub sources: Vec<Source>,
    pub daemon_pid: u32,
    uid: u32,
    gid: u32,
    started: SystemTime,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    kernel: OnceLock<Arc<dyn KernelCache>>,
    /// `st_dev` of the mount, to find mappings of `data` in /proc.
    mount_dev: OnceLock<u64>,
    /// Mapper counts, refreshed by `watch` (a /proc scan is too slow for `stats`).
    mapper_counts: Vec<AtomicU64>,
}

impl MmapFs {
    pub fn new(sources: Vec<Source>) -> MmapFs {
        let mapper_counts = sources.iter().map(|_| AtomicU64::new(0)).collect();
        MmapFs {
            sources,
            daemon_pid: std::process::id(),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            started: SystemTime::now(),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            kernel: OnceLock::new(),
            mount_dev: OnceLock::new(),
            mapper_counts,
        }
    }

    /// Connect the kernel side once the session exists.
    pub fn set_kernel(&self, kernel: Arc<dyn KernelCache>) {
        let _ = self.kernel.set(kernel);
    }

    /// The mount's device number, known once it answers `stat`.
    pub fn set_mount_dev(&self, dev: u64) {
        let _ = self.mount_dev.set(dev);
    }

    fn node(&self, ino: u64) -> Result<Node> {
        Node::from_ino(ino, self.sources.len()).ok_or_else(|| fail!(ENOENT, "no inode {ino}"))
    }

    fn handles(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Handle>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lookup(&self, parent: u64, name: &str) -> Result<Attr> {
        let parent = self.node(parent)?;
        if !parent.is_dir() {
            return Err(fail!(ENOTDIR, "not a directory"));
        }
        let (node, _) = tree::children(parent, &self.sources)
            .into_iter()
            .find(|(_, n)| n == name)
            .ok_or_else(|| fail!(ENOENT, "no such entry {name}"))?;
        self.attr(node)
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        self.attr(self.node(ino)?)
    }

    fn attr(&self, node: Node) -> Result<Attr> {
        let mut attr = Attr {
            ino: node.ino(),
            dir: node.is_dir(),
            size: 0,
            perm: if node.is_dir() { 0o555 } else { 0o444 },
            uid: self.uid,
            gid: self.gid,
            nlink: if node.is_dir() { 2 } else { 1 },
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
        };
        match node {
            Node::File(i, FileKind::Data) => {
                let s = &self.sources[i];
                attr.size = s.length;
                attr.perm = s.perm;
                attr.uid = s.uid;
                attr.gid = s.gid;
                if let Ok(meta) = s.file.metadata() {
                    attr.atime = time(meta.atime(), meta.atime_nsec());
                    attr.mtime = time(meta.mtime(), meta.mtime_nsec());
                    attr.ctime = time(meta.ctime(), meta.ctime_nsec());
                }
            }
            Node::File(_, FileKind::Msync) => attr.perm = 0o644,
            Node::File(i, FileKind::Events) => attr.size = self.sources[i].events.end(),
            _ => {}
        }
        Ok(attr)
    }

    pub fn readdir(&self, ino: u64) -> Result<Vec<(u64, bool, String)>> {
        let node = self.node(ino)?;
        if !node.is_dir() {
            return Err(fail!(ENOTDIR, "not a directory"));
        }
        let mut out = vec![
            (node.ino(), true, ".".to_string()),
            (tree::parent(node).ino(), true, "..".to_string()),
        ];
        out.extend(
            tree::children(node, &self.sources)
                .into_iter()
                .map(|(n, name)| (n.ino(), n.is_dir(), name)),
        );
        Ok(out)
    }

    pub fn open(&self, ino: u64, flags: i32, pid: u32) -> Result<Opened> {
        let node = self.node(ino)?;
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let generated = Opened {
            fh,
            direct_io: true,
            keep_cache: false,
            passthrough: None,
        };
        match node {
            Node::Root | Node::Dir(_) => Err(fail!(EISDIR, "is a directory")),
            Node::File(i, FileKind::Data) => self.open_data(i, fh, writing, pid),
            Node::File(_, FileKind::Msync) => {
                self.handles().insert(fh, self.snapshot(node)?);
                Ok(generated)
            }
            _ if writing => Err(fail!(EACCES, "generated files are read-only")),
            Node::File(source, FileKind::Events) => {
                self.handles()
                    .insert(fh, Handle::Events { source, skipped: 0 });
                Ok(generated)
            }
            _ => {
                self.handles().insert(fh, self.snapshot(node)?);
                Ok(generated)
            }
        }
    }

    fn open_data(&self, i: usize, fh: u64, writing: bool, pid: u32) -> Result<Opened> {
        let s = &self.sources[i];
        if writing && !s.writable {
            return Err(fail!(EROFS, "{} is mounted read-only", s.name));
        }
        Counters::add(&s.counters.open_handles, 1);
        self.handles().insert(fh, Handle::Data { pid });
        s.events.push(
            "open",
            &format!("pid={pid} access={}", if writing { "rw" } else { "r" }),
        );
        let passthrough = s.io_mode() == IoMode::Passthrough;
        Ok(Opened {
            fh,
            direct_io: false,
            // Our own flush opens keep the cache so dirty pages are pushed in
            // bulk; other opens drop it, so they see the source as it is now.
            keep_cache: pid == self.daemon_pid,
            passthrough: passthrough.then_some(i),
        })
    }

    fn snapshot(&self, node: Node) -> Result<Handle> {
        Ok(Handle::Snapshot {
            node,
            bytes: self.render(node)?.into_bytes(),
            read: false,
        })
    }

    fn render(&self, node: Node) -> Result<String> {
        Ok(match node {
            Node::RootStats => render::root_stats(&self.all_stats()),
            Node::RootMetrics => {
                let names: Vec<&str> = self.sources.iter().map(|s| s.name.as_str()).collect();
                render::metrics(&names, &self.all_stats())
            }
            Node::File(i, kind) => {
                let s = &self.sources[i];
                match kind {
                    FileKind::Stats => render::stats(s, self.mapper_count(i)),
                    FileKind::Msync => render::msync(s),
                    FileKind::DirtyPages => render::dirty_pages(s),
                    FileKind::ResidentPages => render::resident_pages(s),
                    FileKind::Mappers => render::mappers(&self.mapped_files(i), self.daemon_pid),
                    FileKind::Map => render::map(s),
                    FileKind::Data | FileKind::Events => {
                        return Err(fail!(EINVAL, "{} is not rendered", kind.name()))
                    }
                }
            }
            Node::Root | Node::Dir(_) => return Err(fail!(EISDIR, "is a directory")),
        })
    }

    fn all_stats(&self) -> Vec<Vec<(&'static str, render::Value)>> {
        self.sources
            .iter()
            .enumerate()
            .map(|(i, s)| render::stats_pairs(s, self.mapper_count(i)))
            .collect()
    }

    fn mapper_count(&self, i: usize) -> u64 {
        self.mapper_counts[i].load(Ordering::Relaxed)
    }

    /// The files whose mappings count as mapping source `i`: the source
    /// itself and its `data` file in the mount.
    fn mapped_files(&self, i: usize) -> Vec<FileId> {
        let mut ids = Vec::new();
        if let Ok(meta) = self.sources[i].file.metadata() {
            ids.push(FileId::from_dev_ino(meta.dev(), meta.ino()));
        }
        if let Some(dev) = self.mount_dev.get() {
            ids.push(FileId::from_dev_ino(
                *dev,
                Node::File(i, FileKind::Data).ino(),
            ));
        }
        ids
    }

    pub fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        match self.node(ino)? {
            Node::File(i, FileKind::Data) => self.read_data(i, offset, size),
            node => self.read_generated(node, fh, offset, size as usize),
        }
    }

    fn read_data(&self, i: usize, offset: u64, size: u32) -> Result<Vec<u8>> {
        let s = &self.sources[i];
        if offset >= s.length {
            return Ok(Vec::new());
        }
        let n = u64::from(size).min(s.length - offset) as usize;
        let mut buf = vec![0; n];
        let n = s.read_window(offset, &mut buf)?;
        buf.truncate(n);
        Counters::add(&s.counters.reads, 1);
        Counters::add(&s.counters.read_bytes, n as u64);
        Ok(buf)
    }

    fn read_generated(&self, node: Node, fh: u64, offset: u64, size: usize) -> Result<Vec<u8>> {
        let mut handles = self.handles();
        match handles.get_mut(&fh) {
            Some(Handle::Snapshot {
                node: n,
                bytes,
                read,
            }) => {
                if offset == 0 && *read {
                    // A reader polling with pread(0) wants fresh numbers.
                    *bytes = self.render(*n)?.into_bytes();
                }
                *read = true;
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let end = start.saturating_add(size).min(bytes.len());
                Ok(bytes[start..end].to_vec())
            }
            Some(Handle::Events { source, skipped }) => {
                let (at, bytes) = self.sources[*source].events.read(offset + *skipped, size);
                *skipped = at - offset;
                Ok(bytes)
            }
            Some(Handle::Data { .. }) | None => {
                Err(fail!(EBADF, "no open handle {fh} for {:?}", node))
            }
        }
    }

    pub fn write(&self, ino: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let Node::File(i, FileKind::Data) = self.node(ino)? else {
            return Err(fail!(EACCES, "only data and msync are writable"));
        };
        let s = &self.sources[i];
        if !s.writable {
            return Err(fail!(EROFS, "{} is mounted read-only", s.name));
        }
        if offset >= s.length {
            return Err(fail!(
                ENOSPC,
                "{}: write at {offset} is at or past the end of the mapping ({} bytes)",
                s.name,
                s.length
            ));
        }
        let n = (data.len() as u64).min(s.length - offset) as usize;
        let n = s.write_window(offset, &data[..n])?;
        Counters::add(&s.counters.writes, 1);
        Counters::add(&s.counters.write_bytes, n as u64);
        Ok(n as u32)
    }

    /// A write to `msync`: parse now, run on another thread, and call
    /// `done` when finished so no FUSE worker waits on the disk.
    pub fn write_msync(
        self: &Arc<Self>,
        ino: u64,
        data: &[u8],
        done: impl FnOnce(Result<u32>) + Send + 'static,
    ) {
        let i = match self.node(ino) {
            Ok(Node::File(i, FileKind::Msync)) => i,
            Ok(_) => return done(Err(fail!(EINVAL, "not an msync file"))),
            Err(e) => return done(Err(e)),
        };
        let s = &self.sources[i];
        let request = match msync::parse(data, s.length, s.page_size()) {
            Ok(r) => r,
            Err(e) => {
                s.events.push(
                    "msync_rejected",
                    &format!("bytes={} reason=\"{}\"", data.len(), e.message),
                );
                return done(Err(e));
            }
        };
        let written = data.len() as u32;
        let fs = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("msync".into())
            .spawn(move || {
                let Some(kernel) = fs.kernel.get() else {
                    return done(Err(fail!(EAGAIN, "mount not ready")));
                };
                let report = msync::run(&fs.sources[i], i, request, kernel.as_ref());
                done(report.result.map(|()| written));
            });
        if let Err(e) = spawned {
            log::error!("cannot start msync thread: {e}");
        }
    }

    /// `fsync(2)` on `data` from a user: make the whole window durable.
    pub fn fsync(
        self: &Arc<Self>,
        ino: u64,
        pid: u32,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        let i = match self.node(ino) {
            Ok(Node::File(i, FileKind::Data)) => i,
            Ok(_) => return done(Ok(())),
            Err(e) => return done(Err(e)),
        };
        // Our own flush (see msync) only needs the kernel to push pages.
        if pid == self.daemon_pid {
            return done(Ok(()));
        }
        let fs = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("fsync".into())
            .spawn(move || {
                let s = &fs.sources[i];
                done(
                    s.mapping
                        .msync(0, s.length, libc::MS_SYNC)
                        .map_err(|e| Error::from_io(e, "fsync: msync")),
                )
            });
        if let Err(e) = spawned {
            log::error!("cannot start fsync thread: {e}");
        }
    }

    /// Only size changes matter: truncating to the current size is fine,
    /// anything else would change the mapping's length.
    pub fn setattr(&self, ino: u64, size: Option<u64>, owner_or_mode: bool) -> Result<Attr> {
        let node = self.node(ino)?;
        if owner_or_mode {
            return Err(fail!(EPERM, "mmapfs files keep their owner and mode"));
        }
        if let Some(size) = size {
            match node {
                Node::File(i, FileKind::Data) if size != self.sources[i].length => {
                    return Err(fail!(
                        EPERM,
                        "{}: a mapping has a fixed length ({} bytes); cannot resize to {size}",
                        self.sources[i].name,
                        self.sources[i].length
                    ))
                }
                Node::File(_, FileKind::Data | FileKind::Msync) => {}
                _ if size == 0 => {}
                _ => return Err(fail!(EPERM, "generated files cannot be resized")),
            }
        }
        self.attr(node)
    }

    pub fn release(&self, ino: u64, fh: u64) {
        let handle = self.handles().remove(&fh);
        if let (Ok(Node::File(i, FileKind::Data)), Some(Handle::Data { pid })) =
            (self.node(ino), handle)
        {
            let s = &self.sources[i];
            s.counters.open_handles.fetch_sub(1, Ordering::Relaxed);
            s.events.push("release", &format!("pid={pid}"));
        }
    }

    /// Periodic look at the sources: truncation/deletion events, mappers.
    pub fn watch(&self) {
        for (i, s) in self.sources.iter().enumerate() {
            s.health();
            let count = crate::probe::mappers(&self.mapped_files(i), self.daemon_pid).len();
            self.mapper_counts[i].store(count as u64, Ordering::Relaxed);
        }
    }

    /// Before unmounting: have the kernel push stores that outside mappings
    /// left dirty in the FUSE page cache (cached mode) to our mapping.
    pub fn push_fuse_dirty_pages(&self) {
        let Some(kernel) = self.kernel.get() else {
            return;
        };
        for (i, s) in self.sources.iter().enumerate() {
            if s.io_mode() == IoMode::Cached && s.writable {
                if let Err(e) = kernel.flush(i) {
                    log::error!("{}: pushing dirty pages before unmount: {e}", s.name);
                }
            }
        }
    }

    /// The last `msync(MS_SYNC)` at unmount; returns false if any failed.
    pub fn final_sync(&self) -> bool {
        let mut ok = true;
        for s in &self.sources {
            let result = s.mapping.msync(0, s.length, libc::MS_SYNC);
            let fields = match &result {
                Ok(()) => "synced=yes".to_string(),
                Err(e) => format!("synced=no error=\"{e}\""),
            };
            if let Err(e) = result {
                log::error!("{}: final msync failed: {e}", s.name);
                ok = false;
            }
            s.events.push("unmount", &fields);
        }
        ok
    }
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    let d = Duration::new(secs.unsigned_abs(), u32::try_from(nsecs).unwrap_or(0));
    if secs >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}
