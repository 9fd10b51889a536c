//! The filesystem's logic in plain Rust: what each request on each node
//! means. `fuse.rs` only translates requests and replies to and from this.

mod changes;
mod crash;
mod dir_io;
#[cfg(test)]
mod dir_tests;
mod dirs;
mod generated;
mod mount_cache;
mod page_life;
mod replies;
#[cfg(test)]
mod tests;
mod tree_views;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::control::{self, mlock, KernelCache};
use crate::dir::DirSource;
use crate::error::fail;
use crate::error::Result;
use crate::events::{Access, Event, EventReader};
use crate::io_mode::{self, IoChoice, IoMode};
use crate::source::{Kind, Source};
use crate::tally::Tally;
use crate::trace::life::PageLife;
use crate::trace::Tracer;
use crate::tree::{FileKind, Ino, Node, Tree, View, ROOT_INO};

pub use dirs::Make;
use dirs::{FileState, TreeServed};
pub use mount_cache::WORKERS;
pub use replies::{
    Attr, Backing, Caller, DirEntry, Opened, SetAttr, SetTime, Statfs, Type, WriteFrom,
};

/// Bytes of rendered generated files a user other than root may hold open
/// at once: each open keeps its snapshot, and a page list of a huge sparse
/// file can be megabytes.
const SNAPSHOT_BUDGET: u64 = 64 << 20;

/// `data` and directories change shape rarely; generated files must be
/// asked about every time.
const STABLE_TTL: Duration = Duration::from_secs(1);

/// How long after opening `data` a thread's size-0 SETATTR by path is
/// taken for the O_TRUNC of that open: the kernel sends it within the same
/// `open(2)`, microseconds later.
const O_TRUNC_WINDOW: Duration = Duration::from_secs(2);

/// Per-open state of files other than `data`.
#[derive(Debug)]
enum Handle {
    /// Rendered bytes; rendered again when read again from offset 0.
    Snapshot {
        ino: u64,
        node: Node,
        caller: Caller,
        bytes: Vec<u8>,
        read: bool,
    },
    Events {
        log: Log,
        reader: EventReader,
        viewer: u32,
    },
    /// `trace` while tracing runs (a reader keeps it running).
    Trace { source: usize, reader: EventReader },
    /// `data`: who opened it (RELEASE comes with no caller), and under
    /// `--crash-test` after which crash.
    Data { pid: u32, uid: u32, epoch: u64 },
    /// `data` opened by the daemon itself to probe the kernel's cache.
    OwnView,
    /// A regular file under a directory source's `data/`, opened as its
    /// caller asked.
    Real {
        file: Arc<File>,
        state: Arc<FileState>,
        /// Who opened it: writes through it are made as them.
        opener: Caller,
        /// DIR lets the file grow only at its end (`chattr +a`): `file` is
        /// `O_APPEND`, and the handle is served by the daemon.
        append_only: bool,
    },
    /// A directory under a directory source's `data/`, open for listing.
    RealDir { dir: Arc<File> },
}

/// Whose `events` an open reads.
#[derive(Debug)]
enum Log {
    Source(usize),
    Tree(usize),
    File(Arc<FileState>),
}

/// A source and what the files beside its `data` keep.
#[derive(Debug)]
struct Served {
    source: Source,
    msync: control::State,
    madvise: control::State,
    fadvise: control::State,
    mlock: control::State,
    /// Ranges under `mlock`, held until unlock or exit.
    locks: mlock::Locks,
    /// Mappings by other processes at the watcher's last look, per uid of
    /// the mapping process.
    mappers: Mutex<Vec<(u32, u64)>>,
    data_ino: u64,
    /// `trace`, and what the trace tells `writeback` and `history`.
    life: PageLife,
    /// Page counts of a large window, kept a chunk at a time.
    tally: Tally,
}

pub struct MmapFs {
    served: Vec<Served>,
    trees: Vec<TreeServed>,
    tree: Tree,
    daemon_pid: u32,
    uid: u32,
    gid: u32,
    started: SystemTime,
    io_choice: IoChoice,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    kernel: OnceLock<Arc<dyn KernelCache>>,
    kernel_offers_passthrough: AtomicBool,
    /// `st_dev` of the mount, to find mappings of `data` in /proc.
    mount_dev: OnceLock<u64>,
    mappers_wanted: Mutex<Option<Instant>>,
    /// Bytes of open snapshots per uid, against `SNAPSHOT_BUDGET`.
    snapshot_bytes: Mutex<HashMap<u32, u64>>,
    /// The `data` inode each thread opened last, and when: an O_TRUNC
    /// open's SETATTR comes from the same thread right after its OPEN.
    fresh_opens: Mutex<HashMap<u32, (u64, Instant)>>,
    /// Set to have the watcher look before its interval is up.
    watch_early: (Mutex<bool>, Condvar),
    /// Probes of the kernel's cache through the mount under way, and the
    /// threads making them (their OPEN of `data` is not a user's).
    views: AtomicUsize,
    own_threads: Mutex<Vec<u32>>,
    /// Which source the watcher's page counting starts with next.
    tally_turn: AtomicUsize,
    tracer: Tracer,
    /// Walks of directory sources' trees under way.
    tree_walks: AtomicUsize,
    /// When `history` or `timeline.svg` was last read.
    history_wanted: Mutex<Option<Instant>>,
}

impl MmapFs {
    pub fn new(
        sources: Vec<Source>,
        dirs: Vec<DirSource>,
        io_choice: IoChoice,
        events_kept: usize,
    ) -> MmapFs {
        let tree = Tree::for_sources(
            sources.iter().map(|s| (s.name(), s.held().is_some())),
            dirs.iter().map(|d| (d.name(), d.root().clone())),
        );
        let trees = dirs
            .into_iter()
            .map(|d| TreeServed::new(d, events_kept))
            .collect();
        let served = sources
            .into_iter()
            .map(|source| Served {
                data_ino: tree
                    .child(ROOT_INO, source.name())
                    .and_then(|dir| tree.child(dir, FileKind::Data.name()))
                    .unwrap_or(0),
                source,
                msync: control::State::default(),
                madvise: control::State::default(),
                fadvise: control::State::default(),
                mlock: control::State::default(),
                locks: mlock::Locks::default(),
                mappers: Mutex::new(Vec::new()),
                life: PageLife::default(),
                tally: Tally::default(),
            })
            .collect();
        MmapFs {
            served,
            trees,
            tree,
            daemon_pid: std::process::id(),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            started: SystemTime::now(),
            io_choice,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            kernel: OnceLock::new(),
            kernel_offers_passthrough: AtomicBool::new(false),
            mount_dev: OnceLock::new(),
            mappers_wanted: Mutex::new(None),
            snapshot_bytes: Mutex::new(HashMap::new()),
            fresh_opens: Mutex::new(HashMap::new()),
            watch_early: (Mutex::new(false), Condvar::new()),
            views: AtomicUsize::new(0),
            own_threads: Mutex::new(Vec::new()),
            tally_turn: AtomicUsize::new(0),
            tracer: Tracer::default(),
            tree_walks: AtomicUsize::new(0),
            history_wanted: Mutex::new(None),
        }
    }

    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.served.iter().map(|s| &s.source)
    }

    pub fn dir_sources(&self) -> impl Iterator<Item = &DirSource> {
        self.trees.iter().map(|t| &t.dir)
    }

    /// Whether files served with direct I/O must still be mapped shared:
    /// only a `--crash-test` source's `data` needs it. Without it the
    /// kernel refuses a shared mapping of such a file (`ENODEV`), which
    /// keeps stores out of an append-only file of a directory source.
    pub fn direct_io_maps(&self) -> bool {
        self.sources().any(|s| s.held().is_some())
    }

    /// Whether any source could use passthrough, so `init` asks for it.
    pub fn wants_passthrough(&self) -> bool {
        self.sources()
            .any(|s| io_mode::wanted(self.io_choice, s.passthrough_possible()))
            || (!self.trees.is_empty() && io_mode::wanted(self.io_choice, true))
    }

    /// What the kernel answered at `init`.
    pub fn set_kernel_offers_passthrough(&self, offered: bool) {
        self.kernel_offers_passthrough
            .store(offered, Ordering::Relaxed);
    }

    /// Decide every source's I/O mode (see `io_mode::decide`); `register`
    /// hands a source's file to the kernel as a passthrough backing file.
    pub fn decide_io_modes(
        &self,
        mut register: impl FnMut(&Source) -> std::io::Result<u32>,
    ) -> Result<()> {
        let offered = self.kernel_offers_passthrough.load(Ordering::Relaxed);
        for s in self.sources() {
            let (mode, backing) = io_mode::decide(
                s.name(),
                self.io_choice,
                s.passthrough_possible(),
                offered,
                || register(s),
            )?;
            s.set_io(mode, backing);
        }
        for t in &self.trees {
            let (mode, _) = io_mode::decide(t.dir.name(), self.io_choice, true, offered, || Ok(0))?;
            t.passthrough
                .store(mode == IoMode::Passthrough, Ordering::Relaxed);
        }
        Ok(())
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
        self.tree
            .node(ino)
            .ok_or_else(|| fail!(ENOENT, "no inode {ino}"))
    }

    fn handles(&self) -> MutexGuard<'_, HashMap<u64, Handle>> {
        self.handles.lock().expect("no panics: they abort")
    }

    fn own_threads(&self) -> MutexGuard<'_, Vec<u32>> {
        self.own_threads.lock().expect("no panics: they abort")
    }

    fn source(&self, i: usize) -> &Source {
        &self.served[i].source
    }

    pub fn lookup(&self, parent: u64, name: &OsStr, caller: Caller) -> Result<Attr> {
        let node = self.node(parent)?;
        if let Node::Real(d, view) = node {
            return self.tree_lookup(d, view, parent, name, caller);
        }
        if !node.is_dir() {
            return Err(fail!(ENOTDIR, "not a directory"));
        }
        let shown = name.to_string_lossy();
        let (ino, node) = name
            .to_str()
            .and_then(|name| self.tree.lookup(parent, name))
            .ok_or_else(|| fail!(ENOENT, "no such entry {shown}"))?;
        Ok(self.attr(ino, node))
    }

    /// Whether the mount serves any directory source (whose extended
    /// attributes are real).
    pub fn has_dir_sources(&self) -> bool {
        !self.trees.is_empty()
    }

    pub fn forget(&self, ino: u64, lookups: u64) {
        self.tree.forget(ino, lookups);
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let node = self.node(ino)?;
        Ok(self.attr(Ino { ino, generation: 0 }, node))
    }

    fn attr(&self, ino: Ino, node: Node) -> Attr {
        let mut attr = Attr {
            ino: ino.ino,
            generation: ino.generation,
            ttl: Duration::ZERO,
            kind: if node.is_dir() { Type::Dir } else { Type::File },
            size: 0,
            perm: 0o444,
            uid: self.uid,
            gid: self.gid,
            nlink: 1,
            rdev: 0,
            block_size: 4096,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
        };
        match node {
            Node::Root | Node::Dir(_) => {
                attr.ttl = STABLE_TTL;
                attr.perm = 0o555;
                attr.nlink = 2;
            }
            Node::RootStats | Node::RootMetrics => {}
            Node::Tree(_) | Node::TreeFile(..) | Node::Real(..) | Node::Inspect(..) => {
                self.tree_attr(ino, node, &mut attr)
            }
            Node::File(i, kind) => {
                // A source's files are the source's: who may not read the
                // source may not read what it shows either.
                let s = self.source(i);
                let owner = s.owner();
                attr.uid = owner.uid;
                attr.gid = owner.gid;
                attr.perm = owner.perm & 0o444;
                match kind {
                    FileKind::Data => {
                        attr.ttl = STABLE_TTL;
                        attr.perm = owner.perm;
                        let meta = s.file().metadata().ok();
                        // One `fstat` gives a whole file's size and times.
                        attr.size = match &meta {
                            Some(meta) if s.resizable() => meta.len(),
                            _ => s.length(),
                        };
                        if let Some(meta) = meta {
                            attr.atime = time(meta.atime(), meta.atime_nsec());
                            attr.mtime = time(meta.mtime(), meta.mtime_nsec());
                            attr.ctime = time(meta.ctime(), meta.ctime_nsec());
                        }
                    }
                    kind if kind.is_control() => {
                        attr.perm = owner.perm & 0o666;
                        // One write per command: stdio buffers by this, and
                        // a long `pages` list must not arrive in pieces.
                        attr.block_size = control::COMMAND_MAX as u32;
                    }
                    FileKind::Events => attr.size = s.events().end(),
                    FileKind::Trace => attr.size = self.served[i].life.log().end(),
                    _ => {}
                }
            }
        }
        attr
    }

    /// Entries of directory `ino` from `offset` on (`fh` from `opendir`).
    pub fn readdir(&self, ino: u64, fh: u64, offset: u64, caller: Caller) -> Result<Vec<DirEntry>> {
        let node = self.node(ino)?;
        if let Node::Real(_, View::Data) = node {
            return self.tree_readdir(fh, offset);
        }
        if !node.is_dir() {
            return Err(fail!(ENOTDIR, "not a directory"));
        }
        let parent = self.tree.parent(ino).unwrap_or(ROOT_INO);
        let mut out = vec![
            (ino, Type::Dir, ".".into()),
            (parent, Type::Dir, "..".into()),
        ];
        match node {
            Node::Real(d, View::Files) => {
                // Asked again at each read: what the handle lists is found
                // again by its path, and another directory there may be
                // closed to the caller.
                let (object, path) = self.located_for(d, ino, libc::O_RDONLY, caller)?;
                out.extend(self.files_entries(&object, &path)?)
            }
            _ => out.extend(self.tree.children(ino).unwrap_or_default().into_iter().map(
                |(ino, node, name)| {
                    let kind = if node.is_dir() || matches!(node, Node::Real(_, View::Data)) {
                        Type::Dir
                    } else {
                        Type::File
                    };
                    (ino, kind, name.into())
                },
            )),
        }
        Ok(out
            .into_iter()
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .map(|(i, (ino, kind, name))| DirEntry {
                ino,
                kind,
                name,
                next: i as u64 + 1,
            })
            .collect())
    }

    pub fn statfs(&self, ino: u64) -> Result<Statfs> {
        match self.node(ino)? {
            Node::Tree(d) | Node::TreeFile(d, _) | Node::Real(d, _) | Node::Inspect(d, _) => {
                self.tree_statfs(d)
            }
            _ => Ok(Statfs {
                blocks: self.sources().map(|s| s.length().div_ceil(4096)).sum(),
                blocks_free: 0,
                blocks_available: 0,
                files: self.tree.len(),
                files_free: 0,
                block_size: 4096,
                name_max: 255,
                fragment_size: 4096,
            }),
        }
    }

    pub fn open(&self, ino: u64, flags: i32, caller: Caller) -> Result<Opened> {
        let node = self.node(ino)?;
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if let Node::Inspect(d, _) = node {
            self.located_for(d, ino, flags, caller)?;
        }
        let handle = match node {
            Node::Root | Node::Dir(_) | Node::Tree(_) | Node::Real(_, View::Files) => {
                return Err(fail!(EISDIR, "is a directory"))
            }
            Node::Real(d, View::Data) => return self.tree_open(d, ino, flags, caller),
            Node::File(_, FileKind::Data) if self.is_own(caller.pid) => {
                self.handles().insert(fh, Handle::OwnView);
                return Ok(Opened {
                    fh,
                    direct_io: false,
                    backing: None,
                    keep_cache: true,
                    no_flush: true,
                });
            }
            Node::File(i, FileKind::Data) => {
                self.remember_open(ino, caller.pid);
                return self.open_data(i, fh, writing, caller);
            }
            Node::File(_, kind) | Node::TreeFile(_, kind) | Node::Inspect(_, kind)
                if kind.is_control() =>
            {
                self.snapshot(ino, node, caller)?
            }
            _ if writing => return Err(fail!(EACCES, "generated files are read-only")),
            Node::File(source, FileKind::Events) => self.events_handle(Log::Source(source), caller),
            Node::TreeFile(d, FileKind::Events) => self.events_handle(Log::Tree(d), caller),
            Node::Inspect(d, FileKind::Events) => {
                let (object, _) = self.located(d, ino)?;
                let state = self.tree(d).files.of(&object);
                self.events_handle(Log::File(state), caller)
            }
            Node::File(source, FileKind::Trace) => self.open_trace(source, ino, caller)?,
            _ => self.snapshot(ino, node, caller)?,
        };
        self.handles().insert(fh, handle);
        Ok(Opened {
            fh,
            direct_io: true,
            backing: None,
            keep_cache: false,
            no_flush: false,
        })
    }

    fn open_data(&self, i: usize, fh: u64, writing: bool, caller: Caller) -> Result<Opened> {
        let s = self.source(i);
        if writing && !s.writable() {
            return Err(fail!(EROFS, "{} is mounted read-only", s.name()));
        }
        s.counters().opened();
        self.handles().insert(
            fh,
            Handle::Data {
                pid: caller.pid,
                uid: caller.uid,
                epoch: s.held().map_or(0, |h| h.epoch()),
            },
        );
        s.events().push(Event::Open {
            pid: caller.pid,
            uid: caller.uid,
            access: if writing {
                Access::ReadWrite
            } else {
                Access::Read
            },
        });
        let backing = match s.io_mode() {
            IoMode::Passthrough => s.backing_id().map(Backing::Registered),
            IoMode::Cached => None,
        };
        // Close-to-open: a source changed behind our back since the kernel
        // last dropped its cache of `data` is read afresh from this open on.
        // (Passthrough has no cache of its own, and refuses the flag.)
        let keep_cache = backing.is_none() && {
            s.health();
            !s.take_changed_behind()
        };
        Ok(Opened {
            fh,
            // A fixed-size region served by passthrough (`--anon`): mappings
            // still pass through, but reads and writes come to us so its end
            // is ours to enforce (ENOSPC, not the sealed memfd's EPERM).
            // Under --crash-test reads and writes go straight to the held
            // copy: only mappings use the kernel's cache, so a crash has
            // little of it to drop.
            direct_io: (backing.is_some() && s.kind() == Kind::Anon) || s.held().is_some(),
            backing,
            keep_cache,
            no_flush: false,
        })
    }

    fn remember_open(&self, ino: u64, thread: u32) {
        let mut fresh = self.fresh_opens.lock().expect("no panics: they abort");
        // Bounded by the threads that opened `data` within the window.
        fresh.retain(|_, (_, at)| at.elapsed() < O_TRUNC_WINDOW);
        fresh.insert(thread, (ino, Instant::now()));
    }

    /// Whether a SETATTR from `thread` is the O_TRUNC of its open of `ino`
    /// (each open answers for one SETATTR at most).
    fn is_o_trunc(&self, ino: u64, thread: u32, change: SetAttr) -> bool {
        let opened = self
            .fresh_opens
            .lock()
            .expect("no panics: they abort")
            .remove(&thread);
        change.size == Some(0)
            && !change.on_handle()
            && opened.is_some_and(|(i, at)| i == ino && at.elapsed() < O_TRUNC_WINDOW)
    }

    /// Create and open `name` in directory source directory `parent`.
    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> Result<(Attr, Opened)> {
        match self.node(parent)? {
            Node::Real(d, View::Data) => self.tree_create(d, parent, name, mode, flags, caller),
            _ => Err(fail!(EPERM, "the mount's own directories are fixed")),
        }
    }

    fn events_handle(&self, log: Log, caller: Caller) -> Handle {
        Handle::Events {
            log,
            reader: EventReader::default(),
            viewer: caller.uid,
        }
    }

    fn snapshot(&self, ino: u64, node: Node, caller: Caller) -> Result<Handle> {
        let bytes = self.render(ino, node, caller).into_bytes();
        self.charge(caller.uid, bytes.len(), 0)?;
        Ok(Handle::Snapshot {
            ino,
            node,
            caller,
            bytes,
            read: false,
        })
    }

    /// Account `now` bytes of snapshots for `uid` in place of `was`; refuse
    /// (and account nothing) past the budget. Root is not limited.
    fn charge(&self, uid: u32, now: usize, was: usize) -> Result<()> {
        let mut held = self.snapshot_bytes.lock().expect("no panics: they abort");
        let total = held.entry(uid).or_insert(0);
        let after = (*total + now as u64).saturating_sub(was as u64);
        if uid != 0 && now > was && after > SNAPSHOT_BUDGET {
            return Err(fail!(
                ENOMEM,
                "uid {uid} holds {} bytes of open generated files (at most {SNAPSHOT_BUDGET}): close some",
                *total
            ));
        }
        *total = after;
        Ok(())
    }

    pub fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let node = self.node(ino)?;
        if let Node::Real(_, View::Data) = node {
            return self.tree_read(fh, offset, size);
        }
        if let Node::File(i, FileKind::Data) = node {
            self.check_epoch(i, fh)?;
            let mut buf = vec![0; size as usize];
            let s = self.source(i);
            let n = s.read_window(offset, &mut buf).inspect_err(|_| {
                // Past a new end: drop the kernel's stale pages now, not at
                // the watcher's next look.
                if s.changed_behind() {
                    self.watch_soon();
                }
            })?;
            buf.truncate(n);
            return Ok(buf);
        }
        // A reader polling with pread(0) wants fresh numbers. Rendering can
        // take long on a huge page list: never with the handle table locked.
        let again = match self.handles().get(&fh) {
            Some(Handle::Snapshot {
                ino,
                node,
                caller,
                read,
                ..
            }) if offset == 0 && *read => Some((*ino, *node, *caller)),
            _ => None,
        };
        let fresh = again.map(|(ino, node, caller)| self.render(ino, node, caller).into_bytes());
        let mut handles = self.handles();
        match handles.get_mut(&fh) {
            Some(Handle::Snapshot {
                caller,
                bytes,
                read,
                ..
            }) => {
                if let Some(fresh) = fresh {
                    self.charge(caller.uid, fresh.len(), bytes.len())?;
                    *bytes = fresh;
                }
                *read = true;
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let end = start.saturating_add(size as usize).min(bytes.len());
                Ok(bytes[start..end].to_vec())
            }
            Some(Handle::Events {
                log,
                reader,
                viewer,
            }) => {
                let log = match log {
                    Log::Source(i) => self.served[*i].source.events(),
                    Log::Tree(d) => self.trees[*d].dir.events(),
                    Log::File(state) => &state.events,
                };
                Ok(reader.read(log, offset, size as usize, Some(*viewer)))
            }
            Some(Handle::Trace { source, reader }) => {
                Ok(reader.read(self.served[*source].life.log(), offset, size as usize, None))
            }
            Some(
                Handle::Data { .. }
                | Handle::OwnView
                | Handle::Real { .. }
                | Handle::RealDir { .. },
            )
            | None => Err(fail!(EBADF, "no open handle {fh}")),
        }
    }

    pub fn release(&self, ino: u64, fh: u64) {
        let handle = self.handles().remove(&fh);
        match (self.node(ino), handle) {
            (Ok(Node::File(i, FileKind::Data)), Some(Handle::Data { pid, uid, .. })) => {
                let s = self.source(i);
                s.counters().released();
                s.events().push(Event::Release { pid, uid });
            }
            (_, Some(Handle::Snapshot { caller, bytes, .. })) => {
                let _ = self.charge(caller.uid, 0, bytes.len());
            }
            (_, Some(Handle::Trace { .. })) => self.close_trace(),
            (_, Some(Handle::Real { state, opener, .. })) => {
                state.open_handles.fetch_sub(1, Ordering::Relaxed);
                state.events.push(Event::Release {
                    pid: opener.pid,
                    uid: opener.uid,
                });
            }
            _ => {}
        }
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
