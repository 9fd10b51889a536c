//! One served source: its open file, its mapping of the window, who owns
//! it, how `data` is served, and what has happened to it (counters,
//! events, health). Opening and the start-up refusals live in `open.rs`.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use crate::counters::Counters;
use crate::error::fail;
use crate::error::{Error, Result};
use crate::events::{Event, EventLog};
use crate::held::Held;
use crate::io_mode::IoMode;
use crate::sys::{self, Mapping, Sharing};

/// What backs a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    BlockDevice,
    Anon,
}

/// Owner, group and permission bits, as the kernel checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub perm: u16,
}

/// Everything `open.rs` found out, to build a [`Source`] from.
pub struct Parts {
    pub name: String,
    /// The path given on the command line (None for `--anon`).
    pub path: Option<PathBuf>,
    pub kind: Kind,
    pub file: File,
    pub mapping: Mapping,
    pub sharing: Sharing,
    pub writable: bool,
    pub offset: u64,
    pub length: u64,
    pub owner: Owner,
    /// The whole file, shared: passthrough may serve it, and `data` is the
    /// file for size purposes.
    pub whole_file: bool,
    pub events_kept: usize,
    /// `--crash-test`: writes are held in the private mapping until synced.
    pub crash_test: bool,
}

/// What the last look at the source file saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub size: u64,
    pub deleted: bool,
    /// The file no longer covers the whole (fixed) window.
    pub short: bool,
    /// Modification time, ns: a change made behind the daemon's back.
    pub mtime_ns: i128,
}

impl Health {
    pub fn state(&self) -> &'static str {
        match (self.deleted, self.short) {
            (true, _) => "deleted",
            (false, true) => "truncated",
            (false, false) => "ok",
        }
    }
}

#[derive(Debug)]
pub struct Source {
    name: String,
    path: Option<PathBuf>,
    kind: Kind,
    file: File,
    /// Replaced when a whole-file source changes size, so `msync` covers
    /// the file as it is now.
    mapping: RwLock<Arc<Mapping>>,
    sharing: Sharing,
    writable: bool,
    offset: u64,
    /// The window length at start; whole-file sources follow the file.
    fixed_length: u64,
    owner: Owner,
    whole_file: bool,
    /// Decided once, after the kernel said what it offers.
    io: OnceLock<(IoMode, Option<u32>)>,
    counters: Counters,
    events: EventLog,
    health: Mutex<Health>,
    /// The source changed behind the daemon's back since the kernel's
    /// cache of `data` was last dropped.
    changed_behind: AtomicBool,
    /// Writes of ours under way: a change seen meanwhile may be theirs.
    writing: AtomicU64,
    /// `--crash-test`: what is held until synced, and the crashes.
    held: Option<Held>,
    started: Instant,
}

impl Source {
    pub fn new(p: Parts) -> Source {
        let size = p.offset + p.length;
        let mtime_ns = p.file.metadata().map_or(0, |m| mtime_ns(&m));
        Source {
            name: p.name,
            path: p.path,
            kind: p.kind,
            file: p.file,
            mapping: RwLock::new(Arc::new(p.mapping)),
            sharing: p.sharing,
            writable: p.writable,
            offset: p.offset,
            fixed_length: p.length,
            owner: Owner {
                perm: if p.writable {
                    p.owner.perm
                } else {
                    p.owner.perm & 0o7555
                },
                ..p.owner
            },
            whole_file: p.whole_file,
            io: OnceLock::new(),
            counters: Counters::default(),
            events: EventLog::new(p.events_kept),
            health: Mutex::new(Health {
                size,
                deleted: false,
                short: false,
                mtime_ns,
            }),
            changed_behind: AtomicBool::new(false),
            writing: AtomicU64::new(0),
            held: p.crash_test.then(Held::default),
            started: Instant::now(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Give a source another directory name (`name~2`) at start.
    pub fn rename(&mut self, name: String) {
        self.name = name;
    }

    /// The path given at start, or `memfd:NAME`.
    pub fn origin(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => format!("memfd:{}", self.name),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn sharing(&self) -> Sharing {
        self.sharing
    }

    pub fn writable(&self) -> bool {
        self.writable
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn owner(&self) -> Owner {
        self.owner
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn events(&self) -> &EventLog {
        &self.events
    }

    pub fn uptime_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn page_size(&self) -> u64 {
        sys::page_size()
    }

    /// Under `--crash-test`: what is held until synced.
    pub fn held(&self) -> Option<&Held> {
        self.held.as_ref()
    }

    /// The same, for what only a crash test can do.
    pub fn crash_test(&self) -> Result<&Held> {
        self.held
            .as_ref()
            .ok_or_else(|| fail!(EINVAL, "{}: not mounted with --crash-test", self.name))
    }

    pub fn mode_name(&self) -> &'static str {
        if self.held.is_some() {
            return "crash_test";
        }
        match (self.kind, self.sharing) {
            (Kind::Anon, _) => "anon",
            (_, Sharing::Private) => "private",
            (_, Sharing::Shared) => "shared",
        }
    }

    /// Whole-file shared sources could be served by passthrough.
    pub fn passthrough_possible(&self) -> bool {
        self.whole_file
    }

    /// `data` is the file for size purposes: it follows the source, writes
    /// past the end extend it and truncate changes it. Anonymous regions
    /// and block devices keep their size.
    pub fn resizable(&self) -> bool {
        self.whole_file && self.kind == Kind::File
    }

    pub fn set_io(&self, mode: IoMode, backing: Option<u32>) {
        let _ = self.io.set((mode, backing));
    }

    pub fn io_mode(&self) -> IoMode {
        self.io.get().map_or(IoMode::Cached, |(mode, _)| *mode)
    }

    /// The kernel's backing id of this source, when passthrough serves it.
    pub fn backing_id(&self) -> Option<u32> {
        self.io.get().and_then(|(_, id)| *id)
    }

    /// Bytes of the window: fixed, or the file's size now.
    pub fn length(&self) -> u64 {
        if self.resizable() {
            self.health().size
        } else {
            self.fixed_length
        }
    }

    /// The window's length as of `health`, a look just taken.
    pub fn length_at(&self, health: &Health) -> u64 {
        if self.resizable() {
            health.size
        } else {
            self.fixed_length
        }
    }

    pub fn pages(&self) -> u64 {
        self.length().div_ceil(self.page_size())
    }

    /// The daemon's mapping of the window as it is now. A whole-file
    /// source that changed size is mapped again at its new size.
    pub fn mapping(&self) -> Arc<Mapping> {
        let current = Arc::clone(&self.mapping.read().expect("no panics: they abort"));
        let length = self.length();
        if !self.resizable() || length == current.len() || length == 0 {
            return current;
        }
        match Mapping::new(self.fd(), 0, length, self.writable, self.sharing) {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                *self.mapping.write().expect("no panics: they abort") = Arc::clone(&fresh);
                fresh
            }
            Err(e) => {
                log::warn!("{}: map again at {length} bytes: {e}", self.name);
                current
            }
        }
    }

    /// Look at the source file now; log `source_truncated`,
    /// `source_deleted` (and other size changes) the first time each is
    /// seen, and note a change of size or time as made behind our back.
    pub fn health(&self) -> Health {
        self.look(false)
    }

    /// Whether the source changed behind the daemon's back since the
    /// kernel's cache of `data` was last dropped.
    pub fn changed_behind(&self) -> bool {
        self.changed_behind.load(Ordering::Relaxed)
    }

    /// The same, and from now on the caller drops that cache.
    pub fn take_changed_behind(&self) -> bool {
        self.changed_behind.swap(false, Ordering::Relaxed)
    }

    /// `ours`: the daemon itself just changed the file (a write through
    /// `data`, a truncate), so the kernel's cache already agrees.
    fn look(&self, ours: bool) -> Health {
        let meta = self.file.metadata();
        let mut last = self.health.lock().expect("no panics: they abort");
        let Ok(meta) = meta else {
            return *last;
        };
        let size = if meta.file_type().is_block_device() || self.kind == Kind::Anon {
            last.size
        } else {
            meta.len()
        };
        // A fixed window is short while the file does not cover it; a
        // whole file is "truncated" from a shrink until it grows again.
        let short = if self.resizable() {
            size < last.size || (size == last.size && last.short)
        } else {
            size < self.offset + self.fixed_length
        };
        let now = Health {
            size,
            deleted: meta.nlink() == 0 && self.kind != Kind::Anon,
            short,
            mtime_ns: mtime_ns(&meta),
        };
        // A look racing one of our writes cannot tell whose change it sees:
        // take it for ours (the write's own look follows it).
        let ours = ours || self.writing.load(Ordering::Acquire) > 0;
        if !ours && (now.size != last.size || now.mtime_ns != last.mtime_ns) {
            self.changed_behind.store(true, Ordering::Relaxed);
        }
        if now != *last {
            if now.size < last.size && (now.short || self.resizable()) {
                self.events.push(Event::SourceTruncated {
                    old_size: last.size,
                    new_size: now.size,
                });
            } else if now.size != last.size {
                self.events.push(Event::SourceResized {
                    old_size: last.size,
                    new_size: now.size,
                });
            }
            if now.deleted && !last.deleted {
                self.events.push(Event::SourceDeleted);
            }
            *last = now;
        }
        now
    }

    /// Bytes of the window from `offset` still backed by the file (the
    /// source may have been truncated behind our back).
    fn backed_from(&self, offset: u64) -> u64 {
        let backed = self
            .health()
            .size
            .saturating_sub(self.offset)
            .min(self.length());
        backed.saturating_sub(offset)
    }

    /// A fault on the daemon's own mapping: the file no longer backs that
    /// page (it shrank between our size check and the copy).
    fn vanished(&self, err: std::io::Error, offset: u64) -> Error {
        if err.raw_os_error() == Some(libc::EFAULT) {
            self.health();
            return self.past_the_end(offset);
        }
        Error::from_io(err, format!("{}: mapping", self.name))
    }

    fn past_the_end(&self, offset: u64) -> Error {
        fail!(
            EIO,
            "{}: offset {offset} is past the end of the truncated source",
            self.name
        )
    }

    /// Read window bytes at `offset`. Shared mappings are read with `pread`
    /// on the source: the same page cache as the mapping, but a truncated
    /// file gives a short read instead of a fault. Private mappings are
    /// read from the daemon's copy.
    pub fn read_window(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.not_crashing()?;
        // A whole file ends where the file ends, and `pread` says where
        // that is: no `fstat` on this path.
        let buf = if self.resizable() {
            buf
        } else {
            if offset >= self.fixed_length {
                return Ok(0);
            }
            let want = clip(buf.len(), self.fixed_length - offset);
            &mut buf[..want]
        };
        let n = match self.sharing {
            Sharing::Shared => self
                .file
                .read_at(buf, self.offset + offset)
                .map_err(|e| Error::from_io(e, format!("{}: read", self.name)))?,
            Sharing::Private => {
                let n = clip(buf.len(), self.backed_from(offset));
                self.mapping()
                    .read_at(offset, &mut buf[..n])
                    .map_err(|e| self.vanished(e, offset))?
            }
        };
        if n == 0 && !buf.is_empty() && !self.resizable() {
            self.health();
            return Err(self.past_the_end(offset));
        }
        self.counters.record_read(n as u64);
        Ok(n)
    }

    /// Writes that failed so far and the errno of the last one (see
    /// `write_window`).
    pub fn write_failures(&self) -> (u64, i32) {
        self.counters.write_failures()
    }

    /// Write window bytes at `offset`. Shared: `pwrite` on the source, so a
    /// full disk is `ENOSPC` for the writer instead of a fault in the
    /// daemon. Private: into the copy. A fixed window ends at its end.
    pub fn write_window(&self, offset: u64, data: &[u8], from_page_cache: bool) -> Result<usize> {
        if !self.writable {
            return Err(fail!(EROFS, "{} is mounted read-only", self.name));
        }
        // Pages the kernel pushes while a crash is under way are from
        // before it: they are the lost ones.
        self.not_crashing()?;
        let _held = self.held.as_ref().map(Held::writing);
        let data = if self.resizable() {
            data
        } else {
            if offset >= self.fixed_length {
                return Err(fail!(
                    ENOSPC,
                    "{}: write at {offset} is at or past the end of the mapping ({} bytes)",
                    self.name,
                    self.fixed_length
                ));
            }
            let backed = self.backed_from(offset);
            if backed == 0 {
                return Err(self.past_the_end(offset));
            }
            &data[..clip(data.len(), backed)]
        };
        self.writing.fetch_add(1, Ordering::AcqRel);
        let written = match self.sharing {
            Sharing::Shared => self
                .file
                .write_at(data, self.offset + offset)
                .map_err(|e| Error::from_io(e, format!("{}: write", self.name))),
            Sharing::Private => self
                .mapping()
                .write_at(offset, data)
                .map_err(|e| self.vanished(e, offset)),
        };
        if written.is_ok() && self.sharing == Sharing::Shared {
            self.look(true);
        }
        self.writing.fetch_sub(1, Ordering::AcqRel);
        match written {
            Ok(n) => {
                self.counters.record_write(n as u64);
                Ok(n)
            }
            Err(e) => {
                // The kernel writing back an outside mapping's pages has no
                // one to tell of a failure; a sync or the unmount asks here.
                if from_page_cache {
                    self.counters.record_write_error(e.errno);
                }
                Err(e)
            }
        }
    }

    /// `truncate(2)` of `data`: changes the file in whole-file shared mode;
    /// a fixed window only accepts its own size.
    pub fn set_length(&self, size: u64) -> Result<()> {
        if self.resizable() {
            if !self.writable {
                return Err(fail!(EROFS, "{} is mounted read-only", self.name));
            }
            self.file
                .set_len(size)
                .map_err(|e| Error::from_io(e, format!("{}: truncate to {size}", self.name)))?;
            self.look(true);
            return Ok(());
        }
        if size != self.fixed_length {
            return Err(fail!(
                EPERM,
                "{}: a mapping has a fixed length ({} bytes); cannot resize to {size}",
                self.name,
                self.fixed_length
            ));
        }
        Ok(())
    }

    fn not_crashing(&self) -> Result<()> {
        if self.held.as_ref().is_some_and(Held::crashing) {
            return Err(fail!(EIO, "{}: crashing (--crash-test)", self.name));
        }
        Ok(())
    }

    /// `msync(2)` of `[offset, offset + length)` of the window; under
    /// `--crash-test`, persisting what is held there (`MS_SYNC`).
    pub fn msync(&self, offset: u64, length: u64, flags: libc::c_int) -> std::io::Result<()> {
        match &self.held {
            Some(held) if flags & libc::MS_SYNC != 0 => held
                .persist(&self.mapping(), &self.file, self.offset, offset, length)
                .map(|_| ()),
            Some(_) => Ok(()),
            None => self.on_mapping(&[(offset, length)], |m, o, l| m.msync(o, l, flags)),
        }
    }

    /// `madvise(2)` of each `(offset, length)` range of the window.
    pub fn madvise(&self, ranges: &[(u64, u64)], advice: libc::c_int) -> std::io::Result<()> {
        self.on_mapping(ranges, |m, o, l| m.madvise(o, l, advice))
    }

    /// `mlock2(2)` of each `(offset, length)` range of the window; stops at
    /// the first refusal and says how many ranges were locked before it.
    pub fn mlock(&self, ranges: &[(u64, u64)], onfault: bool) -> (usize, std::io::Result<()>) {
        let mut done = 0;
        let result = self.on_mapping(ranges, |m, o, l| {
            m.mlock(o, l, onfault)?;
            done += 1;
            Ok(())
        });
        (done, result)
    }

    /// `munlock(2)` of each `(offset, length)` range of the window.
    pub fn munlock(&self, ranges: &[(u64, u64)]) -> std::io::Result<()> {
        self.on_mapping(ranges, |m, o, l| m.munlock(o, l))
    }

    /// `posix_fadvise(2)` of `[offset, offset + length)` of the window, on
    /// the source file.
    pub fn fadvise(
        &self,
        offset: u64,
        length: u64,
        advice: nix::fcntl::PosixFadviseAdvice,
    ) -> std::io::Result<()> {
        let to_off = |v: u64| libc::off_t::try_from(v).unwrap_or(libc::off_t::MAX);
        nix::fcntl::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&self.file),
            to_off(self.offset + offset),
            to_off(length),
            advice,
        )
        .map_err(std::io::Error::from)
    }

    /// A call on each range, on the part the current mapping covers (a
    /// whole file may have shrunk since the command was parsed). The
    /// mapping is looked up once: a page list may hold many ranges.
    fn on_mapping(
        &self,
        ranges: &[(u64, u64)],
        mut call: impl FnMut(&Mapping, u64, u64) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mapping = self.mapping();
        for &(offset, length) in ranges {
            let end = offset.saturating_add(length).min(mapping.len());
            if end > offset {
                call(&mapping, offset, end - offset)?;
            }
        }
        Ok(())
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

fn clip(len: usize, limit: u64) -> usize {
    len.min(usize::try_from(limit).unwrap_or(usize::MAX))
}
