//! Opening sources: every start-up refusal of the spec lives here, phrased
//! to teach the rule of `mmap(2)` it enforces. The result is a [`Source`]:
//! the open file, its mapping, and the counters the virtual files report.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::cli::{IoChoice, Options};
use crate::error::{Error, Result};
use crate::events::EventLog;
use crate::fail;
use crate::msync::MsyncReport;
use crate::probe::{self, PageState, Ranges};
use crate::sys::{self, Mapping, Sharing};

/// What backs a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    BlockDevice,
    Anon,
}

/// How `data` is served for one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    Passthrough,
    Cached,
}

impl IoMode {
    pub fn name(self) -> &'static str {
        match self {
            IoMode::Passthrough => "passthrough",
            IoMode::Cached => "cached",
        }
    }
}

/// Monotonic counters shown in `stats`.
#[derive(Debug, Default)]
pub struct Counters {
    pub reads: AtomicU64,
    pub read_bytes: AtomicU64,
    pub writes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub msync_calls: AtomicU64,
    pub msync_errors: AtomicU64,
    pub msync_last_ns: AtomicU64,
    pub msync_total_ns: AtomicU64,
    pub invalidations: AtomicU64,
    pub open_handles: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct Source {
    /// Directory name in the mount.
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
    pub uid: u32,
    pub gid: u32,
    /// Permission bits of the source, used for `data`.
    pub perm: u16,
    /// Whether kernel passthrough can serve `data` at all (see `io_mode`).
    pub passthrough_possible: bool,
    pub io_choice: IoChoice,
    io_mode: AtomicU8,
    pub counters: Counters,
    pub events: EventLog,
    pub last_msync: Mutex<Option<MsyncReport>>,
    /// Serialises msync commands on this source so reports stay truthful.
    pub msync_lock: Mutex<()>,
    pub started: Instant,
    /// Last size/link count seen, to log truncation and deletion once.
    pub health: Mutex<Health>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub size: u64,
    pub deleted: bool,
    /// The file no longer covers the whole window.
    pub short: bool,
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

impl Source {
    pub fn io_mode(&self) -> IoMode {
        if self.io_mode.load(Ordering::Relaxed) == 1 {
            IoMode::Passthrough
        } else {
            IoMode::Cached
        }
    }

    pub fn set_io_mode(&self, mode: IoMode) {
        self.io_mode
            .store(u8::from(mode == IoMode::Passthrough), Ordering::Relaxed);
    }

    pub fn mode_name(&self) -> &'static str {
        match (self.kind, self.sharing) {
            (Kind::Anon, _) => "anon",
            (_, Sharing::Private) => "private",
            (_, Sharing::Shared) => "shared",
        }
    }

    pub fn page_size(&self) -> u64 {
        sys::page_size()
    }

    /// Pages of `[first, first + pages)` of the window in `state`, from the
    /// kernel. In private mode, dirty means copied-on-write.
    pub fn page_ranges(&self, state: PageState, first: u64, pages: u64) -> Ranges {
        let page = self.page_size();
        let cached = || {
            probe::page_ranges(self.file.as_fd(), self.offset + first * page, pages, state)
                .unwrap_or_else(|e| {
                    log::warn!("{}: cachestat: {e}", self.name);
                    Ranges::new()
                })
        };
        let shift = |r: Ranges| r.into_iter().map(|(a, b)| (a + first, b + first)).collect();
        match (self.sharing, state) {
            (Sharing::Shared, _) => shift(cached()),
            (Sharing::Private, _) => {
                let copied = probe::cow_ranges(self.mapping.address() as u64 + first * page, pages)
                    .unwrap_or_else(|e| {
                        log::warn!("{}: pagemap: {e}", self.name);
                        Ranges::new()
                    });
                match state {
                    PageState::Dirty => shift(copied),
                    PageState::Resident => shift(probe::union(&cached(), &copied)),
                }
            }
        }
    }

    /// Pages of `[first, first + pages)` in `state`: one `cachestat` in
    /// shared mode.
    pub fn page_count(&self, state: PageState, first: u64, pages: u64) -> u64 {
        let page = self.page_size();
        match self.sharing {
            Sharing::Shared => {
                sys::cachestat(self.file.as_fd(), self.offset + first * page, pages * page)
                    .map(|c| match state {
                        PageState::Dirty => c.dirty,
                        PageState::Resident => c.cache,
                    })
                    .unwrap_or(0)
                    .min(pages)
            }
            Sharing::Private => self
                .page_ranges(state, first, pages)
                .iter()
                .map(|(a, b)| b - a + 1)
                .sum(),
        }
    }

    /// Look at the source file now; log `source_truncated`,
    /// `source_deleted` (and growth back) the first time each is seen.
    pub fn health(&self) -> Health {
        let meta = self.file.metadata();
        let mut last = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(meta) = meta else {
            return *last;
        };
        let size = if meta.file_type().is_block_device() || self.kind == Kind::Anon {
            last.size
        } else {
            meta.len()
        };
        let now = Health {
            size,
            deleted: meta.nlink() == 0 && self.kind != Kind::Anon,
            short: size < self.offset + self.length,
        };
        if now != *last {
            if now.size < last.size && now.short {
                self.events.push(
                    "source_truncated",
                    &format!("old_size={} new_size={}", last.size, now.size),
                );
            } else if now.size != last.size {
                self.events.push(
                    "source_resized",
                    &format!("old_size={} new_size={}", last.size, now.size),
                );
            }
            if now.deleted && !last.deleted {
                self.events.push("source_deleted", "");
            }
            *last = now;
        }
        now
    }

    /// Bytes of the window still backed by the file (the source may have
    /// been truncated behind our back).
    fn backed_length(&self) -> u64 {
        self.health()
            .size
            .saturating_sub(self.offset)
            .min(self.length)
    }

    fn past_the_end(&self, offset: u64) -> Error {
        self.health();
        fail!(
            EIO,
            "{}: offset {offset} is past the end of the truncated source",
            self.name
        )
    }

    /// Read window bytes at `offset` (already clipped to the window).
    /// Shared mappings are read with `pread` on the source: the same page
    /// cache as the mapping, but a truncated file gives a short read
    /// instead of SIGBUS. Private mappings are read from the copy.
    pub fn read_window(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let n = match self.sharing {
            Sharing::Shared => self
                .file
                .read_at(buf, self.offset + offset)
                .map_err(|e| Error::from_io(e, format!("{}: read", self.name)))?,
            Sharing::Private => {
                let backed = self.backed_length().saturating_sub(offset);
                let n = buf.len().min(usize::try_from(backed).unwrap_or(usize::MAX));
                self.mapping.read_at(offset, &mut buf[..n]);
                n
            }
        };
        if n == 0 && !buf.is_empty() {
            return Err(self.past_the_end(offset));
        }
        Ok(n)
    }

    /// Write window bytes at `offset` (already clipped to the window).
    /// Shared: `pwrite` on the source, so a full disk is `ENOSPC` for the
    /// writer instead of a SIGBUS in the daemon. Private: into the copy.
    pub fn write_window(&self, offset: u64, data: &[u8]) -> Result<usize> {
        let backed = self.backed_length().saturating_sub(offset);
        if backed == 0 {
            return Err(self.past_the_end(offset));
        }
        let data = &data[..data
            .len()
            .min(usize::try_from(backed).unwrap_or(usize::MAX))];
        match self.sharing {
            Sharing::Shared => self
                .file
                .write_at(data, self.offset + offset)
                .map_err(|e| Error::from_io(e, format!("{}: write", self.name))),
            Sharing::Private => {
                self.mapping.write_at(offset, data);
                Ok(data.len())
            }
        }
    }
}

/// Open, check and map every source and `--anon` region, in order.
pub fn open_all(opts: &Options) -> Result<Vec<Source>> {
    let mut sources: Vec<Source> = Vec::new();
    let mut seen: Vec<(u64, u64, PathBuf)> = Vec::new();
    for path in &opts.sources {
        let source = open_file(path, opts)?;
        let meta = source
            .file
            .metadata()
            .map_err(|e| Error::from_io(e, path.display()))?;
        if let Some((_, _, first)) = seen
            .iter()
            .find(|(dev, ino, _)| *dev == meta.dev() && *ino == meta.ino())
        {
            return Err(fail!(
                EINVAL,
                "{} and {} are the same file (device {}, inode {}): give each file once",
                first.display(),
                path.display(),
                meta.dev(),
                meta.ino()
            ));
        }
        seen.push((meta.dev(), meta.ino(), path.clone()));
        sources.push(source);
    }
    for (name, size) in &opts.anon {
        sources.push(open_anon(name, *size, opts)?);
    }
    dedupe_names(&mut sources);
    Ok(sources)
}

/// `name`, then `name~2`, `name~3` for later sources with the same name.
fn dedupe_names(sources: &mut [Source]) {
    for i in 0..sources.len() {
        let base = sources[i].name.clone();
        let mut n = 1;
        while sources[..i].iter().any(|s| s.name == sources[i].name)
            || (n > 1 && sources[i + 1..].iter().any(|s| s.name == sources[i].name))
        {
            n += 1;
            sources[i].name = format!("{base}~{n}");
        }
    }
}

fn describe_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO (named pipe): a stream has no pages to map")
    } else if t.is_socket() {
        Some("a socket: a stream has no pages to map")
    } else if t.is_char_device() {
        Some("a character device: mmapfs maps regular files and block devices")
    } else if t.is_symlink() {
        Some("a dangling symbolic link")
    } else {
        None
    }
}

fn open_file(path: &Path, opts: &Options) -> Result<Source> {
    let shown = path.display().to_string();
    let private = opts.sharing == Sharing::Private;
    if let Some(size) = opts.size {
        grow(path, size, opts)?;
    }
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail!(
                ENOENT,
                "{shown}: no such file; give --size N to create it"
            ))
        }
        Err(e) => return Err(Error::from_io(e, &shown)),
    };
    if let Some(what) = describe_kind(&meta) {
        return Err(fail!(
            EINVAL,
            "{shown} is {what}; mmapfs maps regular files and block devices"
        ));
    }
    // A private mapping never writes back, so it needs no write access.
    let writable = !opts.read_only;
    let open_rw = writable && !private;
    let mut file = OpenOptions::new()
        .read(true)
        .write(open_rw)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EACCES | libc::EROFS | libc::EPERM | libc::ETXTBSY) if open_rw => fail!(
                EACCES,
                "{shown}: {e}: PROT_WRITE needs a read-write descriptor; use --read-only"
            ),
            _ => Error::from_io(e, &shown),
        })?;
    let kind = if meta.file_type().is_block_device() {
        Kind::BlockDevice
    } else {
        Kind::File
    };
    let file_size = file
        .seek(SeekFrom::End(0))
        .map_err(|e| Error::from_io(e, format!("{shown}: size")))?;
    let (offset, length) = window(&shown, file_size, opts)?;
    let sharing = opts.sharing;
    let mapping = Mapping::new(file.as_fd(), offset, length, writable, sharing)
        .map_err(|e| Error::from_io(e, format!("{shown}: mmap")))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "source".to_string());
    let passthrough_possible = sharing == Sharing::Shared && offset == 0 && length == file_size;
    Ok(Source::new(
        SourceParts {
            name,
            path: Some(path.to_path_buf()),
            kind,
            file,
            mapping,
            sharing,
            writable,
            offset,
            length,
            uid: meta.uid(),
            gid: meta.gid(),
            perm: (meta.mode() & 0o7777) as u16,
            passthrough_possible,
        },
        opts,
    ))
}

/// Apply `--size`: create a missing file or extend a shorter one.
fn grow(path: &Path, size: u64, opts: &Options) -> Result<()> {
    let shown = path.display().to_string();
    if size == 0 {
        return Err(fail!(
            EINVAL,
            "--size 0: cannot map an empty file: mmap needs a length > 0"
        ));
    }
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() || meta.len() >= size => return Ok(()),
        _ => {}
    }
    if opts.read_only {
        return Err(fail!(
            EINVAL,
            "{shown}: --size needs to write the file, but --read-only was given"
        ));
    }
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(|e| Error::from_io(e, format!("{shown}: --size")))?;
    // Re-check under the open descriptor so a racing writer is never shrunk.
    let current = file
        .metadata()
        .map_err(|e| Error::from_io(e, &shown))?
        .len();
    if current < size {
        file.set_len(size)
            .map_err(|e| Error::from_io(e, format!("{shown}: --size {size}")))?;
    }
    Ok(())
}

/// The `[offset, offset + length)` window of a file of `file_size` bytes.
fn window(shown: &str, file_size: u64, opts: &Options) -> Result<(u64, u64)> {
    let page = sys::page_size();
    let offset = opts.offset;
    if file_size == 0 {
        return Err(fail!(
            EINVAL,
            "{shown}: cannot map an empty file: mmap needs a length > 0; extend it with --size"
        ));
    }
    if !offset.is_multiple_of(page) {
        return Err(fail!(
            EINVAL,
            "--offset {offset} is not a multiple of the page size ({page} bytes): mmap offsets must be page-aligned"
        ));
    }
    if opts.length == Some(0) {
        return Err(fail!(
            EINVAL,
            "--length 0: cannot map an empty window: mmap needs a length > 0"
        ));
    }
    if offset >= file_size {
        return Err(fail!(
            EINVAL,
            "{shown}: --offset {offset} is at or past the end of the file ({file_size} bytes): a mapping cannot grow the file; use --size"
        ));
    }
    let length = opts.length.unwrap_or(file_size - offset);
    if offset.checked_add(length).is_none_or(|end| end > file_size) {
        return Err(fail!(
            EINVAL,
            "{shown}: window {offset}+{length} ends past the end of the file ({file_size} bytes): a mapping cannot grow the file; use --size"
        ));
    }
    Ok((offset, length))
}

fn open_anon(name: &str, size: u64, opts: &Options) -> Result<Source> {
    let fd = sys::memfd(name).map_err(|e| Error::from_io(e, format!("--anon {name}")))?;
    let file = File::from(fd);
    file.set_len(size)
        .map_err(|e| Error::from_io(e, format!("--anon {name}={size}")))?;
    // Fixed size, like a mapping: even a passthrough write at the end
    // cannot grow it.
    nix::fcntl::fcntl(
        file.as_raw_fd(),
        nix::fcntl::FcntlArg::F_ADD_SEALS(
            nix::fcntl::SealFlag::F_SEAL_GROW | nix::fcntl::SealFlag::F_SEAL_SHRINK,
        ),
    )
    .map_err(|e| Error::new(e as i32, format!("--anon {name}: seal size: {e}")))?;
    let mapping = Mapping::new(file.as_fd(), 0, size, true, Sharing::Shared)
        .map_err(|e| Error::from_io(e, format!("--anon {name}: mmap")))?;
    Ok(Source::new(
        SourceParts {
            name: name.to_string(),
            path: None,
            kind: Kind::Anon,
            file,
            mapping,
            sharing: Sharing::Shared,
            writable: true,
            offset: 0,
            length: size,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            perm: 0o600,
            passthrough_possible: true,
        },
        opts,
    ))
}

struct SourceParts {
    name: String,
    path: Option<PathBuf>,
    kind: Kind,
    file: File,
    mapping: Mapping,
    sharing: Sharing,
    writable: bool,
    offset: u64,
    length: u64,
    uid: u32,
    gid: u32,
    perm: u16,
    passthrough_possible: bool,
}

impl Source {
    fn new(p: SourceParts, opts: &Options) -> Source {
        let size = p.offset + p.length;
        Source {
            name: p.name,
            path: p.path,
            kind: p.kind,
            file: p.file,
            mapping: p.mapping,
            sharing: p.sharing,
            writable: p.writable,
            offset: p.offset,
            length: p.length,
            uid: p.uid,
            gid: p.gid,
            perm: if p.writable { p.perm } else { 0o444 },
            passthrough_possible: p.passthrough_possible,
            io_choice: opts.io,
            io_mode: AtomicU8::new(0),
            counters: Counters::default(),
            events: EventLog::new(opts.events),
            last_msync: Mutex::new(None),
            msync_lock: Mutex::new(()),
            started: Instant::now(),
            health: Mutex::new(Health {
                size,
                deleted: false,
                short: false,
            }),
        }
    }
}
