//! What the files beside a directory source's `data/` show (`stats`,
//! `top`, `msync`), what each file's inspection files in `files/` show, and
//! the `msync` commands of both.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::dirs::FileState;
use super::{Caller, MmapFs};
use crate::control::{msync, Counts, Report};
use crate::dir::{self, DirSource, FileCache, Object, Walk};
use crate::error::{fail, Error, Result};
use crate::events::{unix_ns, Event};
use crate::mappers::{self, FileId};
use crate::pages::{self, PageState};
use crate::render;
use crate::source::Owner;
use crate::stats;
use crate::sys::{self, Mapping, Sharing};
use crate::tree::{FileKind, Node, RealKey};

/// A directory source's regular file, opened to be probed.
struct Probed {
    object: Object,
    path: std::path::PathBuf,
    state: Arc<FileState>,
    file: std::fs::File,
    size: u64,
}

/// Walks of directory sources' trees (`stats`, `top`) that may run at once.
pub(super) const WALKS_AT_ONCE: usize = super::WORKERS / 4;

impl MmapFs {
    /// The content of a directory source's generated file.
    pub(super) fn render_tree(&self, ino: u64, node: Node, caller: Caller) -> String {
        match node {
            Node::TreeFile(d, FileKind::Stats) => match self.tree_stats(d, caller) {
                Ok(stats) => render::stats(&stats),
                Err(e) => format!("{e}\n"),
            },
            Node::TreeFile(d, FileKind::Top) => {
                let mut files = match self.walk_as(d, caller) {
                    Ok(walk) => walk.files,
                    Err(e) => return format!("{e}\n"),
                };
                files.retain(|f| f.stat.cache + f.stat.dirty + f.stat.writeback > 0);
                files.sort_by(|a, b| {
                    (b.stat.cache, b.stat.dirty, b.stat.writeback)
                        .cmp(&(a.stat.cache, a.stat.dirty, a.stat.writeback))
                        .then_with(|| a.path.cmp(&b.path))
                });
                render::top(&files)
            }
            Node::TreeFile(d, _) => render::report(self.tree(d).msync.last().as_ref()),
            Node::Inspect(d, kind) => self
                .render_inspect(d, ino, kind, caller)
                .unwrap_or_else(|e| format!("{e}\n")),
            _ => String::new(),
        }
    }

    /// The source directory's owner and mode, as `default_permissions`
    /// sees them: who may not read it sees nothing of it in the root.
    pub(super) fn tree_owner(&self, d: usize) -> Owner {
        match self.tree(d).dir.root().stat() {
            Ok(st) => Owner {
                uid: st.st_uid,
                gid: st.st_gid,
                perm: (st.st_mode & 0o7777) as u16,
            },
            Err(_) => Owner {
                uid: 0,
                gid: 0,
                perm: 0,
            },
        }
    }

    /// The walk of directory source `d` that `caller` could make in DIR:
    /// as them, so it lists only directories they may read and counts
    /// only files they may open.
    /// At most `WALKS_AT_ONCE` run at once, so readers of `stats` and
    /// `top` of a huge tree cannot hold every FUSE worker: past that, none
    /// (`EAGAIN`).
    fn walk_as(&self, d: usize, caller: Caller) -> Result<Walk> {
        let walks = &self.tree_walks;
        if walks.fetch_add(1, Ordering::AcqRel) >= WALKS_AT_ONCE {
            walks.fetch_sub(1, Ordering::AcqRel);
            return Err(fail!(
                EAGAIN,
                "{WALKS_AT_ONCE} walks of directory sources are under way: try again"
            ));
        }
        let walk = {
            let _acting = caller.acting();
            self.tree(d).dir.walk()
        };
        walks.fetch_sub(1, Ordering::AcqRel);
        Ok(walk)
    }

    /// `stats` of directory source `d` as `caller` may see it, also summed
    /// into the root's.
    pub(super) fn tree_stats(&self, d: usize, caller: Caller) -> Result<stats::Stats> {
        let t = self.tree(d);
        Ok(stats::of_tree(
            t.dir.path().to_string_lossy().into_owned(),
            t.io_mode_name(),
            t.dir.writable(),
            &self.walk_as(d, caller)?,
        ))
    }

    /// The regular file a `files/` inode names, opened to be probed, with
    /// what the daemon keeps about it.
    fn probed(&self, d: usize, ino: u64) -> Result<Probed> {
        let (object, path) = self.located(d, ino)?;
        let state = self.tree(d).files.of(&object);
        let file = dir::open_to_probe(&object).map_err(|e| Error::from_io(e, "open"))?;
        let size = file
            .metadata()
            .map_err(|e| Error::from_io(e, "stat"))?
            .len();
        Ok(Probed {
            object,
            path,
            state,
            file,
            size,
        })
    }

    fn render_inspect(&self, d: usize, ino: u64, kind: FileKind, caller: Caller) -> Result<String> {
        let Probed {
            object,
            path,
            state,
            file,
            size,
        } = self.probed(d, ino)?;
        let page = sys::page_size();
        let pages = size.div_ceil(page);
        Ok(match kind {
            FileKind::DirtyPages => {
                render::cpulist(&pages::mount_ranges(&file, PageState::Dirty, 0, pages))
            }
            FileKind::ResidentPages => {
                render::cpulist(&pages::mount_ranges(&file, PageState::Resident, 0, pages))
            }
            FileKind::Map => render::map(pages, page, |first, n| {
                (
                    pages::mount_count(&file, PageState::Resident, first, n),
                    pages::mount_count(&file, PageState::Dirty, first, n),
                )
            }),
            FileKind::Mappers => render::mappers(&self.file_mappers(d, &object, caller)),
            FileKind::Msync => render::report(state.msync.last().as_ref()),
            FileKind::Stats => {
                let stat = sys::cachestat(file.as_fd(), 0, size).unwrap_or_default();
                let load = |n: &std::sync::atomic::AtomicU64| {
                    n.load(std::sync::atomic::Ordering::Relaxed).to_string()
                };
                render::file_stats(&[
                    ("path", path.to_string_lossy().into_owned()),
                    ("size_bytes", size.to_string()),
                    ("page_size_bytes", page.to_string()),
                    ("pages", pages.to_string()),
                    ("resident_pages", stat.cache.to_string()),
                    ("dirty_pages", stat.dirty.to_string()),
                    ("writeback_pages", stat.writeback.to_string()),
                    ("evicted_pages", stat.evicted.to_string()),
                    ("recently_evicted_pages", stat.recently_evicted.to_string()),
                    ("opens", load(&state.opens)),
                    ("open_handles", load(&state.open_handles)),
                    (
                        "mappers",
                        self.file_mappers(d, &object, caller).len().to_string(),
                    ),
                ])
            }
            _ => String::new(),
        })
    }

    /// Mappings of a directory source's file by other processes: with
    /// passthrough they map the file itself, so `/proc/*/maps` names it.
    /// Mappings made through the mount name the mount's inode in
    /// `/proc/PID/maps`, those made in DIR the file's: both count.
    fn file_mappers(&self, d: usize, object: &Object, caller: Caller) -> Vec<mappers::Mapper> {
        let mut ids = vec![(FileId::from_dev_ino(object.dev, object.ino), 0)];
        let key = RealKey::data(d, object.dev, object.ino);
        if let (Some(dev), Some(ino)) = (self.mount_dev.get(), self.tree.real_ino(&key)) {
            ids.push((FileId::from_dev_ino(*dev, ino), 0));
        }
        mappers::scan(&ids, self.daemon_pid)
            .into_iter()
            .filter(|m| caller.uid == 0 || m.uid == caller.uid)
            .collect()
    }

    /// `echo CMD > files/PATH/msync`: `msync(2)` on a mapping of the file
    /// made for the command, so it works on files the daemon never mapped.
    pub(super) fn file_msync(
        &self,
        d: usize,
        ino: u64,
        bytes: &[u8],
        caller: Caller,
    ) -> Result<()> {
        let Probed {
            object,
            path,
            state,
            file,
            size,
        } = self.probed(d, ino)?;
        let page = sys::page_size();
        let request = msync::parse(bytes, size.max(1), page).inspect_err(|e| {
            state.events.push(Event::Rejected {
                file: "msync",
                bytes: bytes.len(),
                reason: e.message.clone(),
            });
        })?;
        let report = state.msync.run_one(|| {
            let started = Instant::now();
            let at_unix_ns = unix_ns();
            let ranges = request.target.byte_ranges(page, size);
            let count = || counts(&file, &ranges);
            let before = count();
            let result = sync_ranges(&object, &file, size, &ranges, request.command);
            let after = count();
            Report {
                command: request.command.name().to_string(),
                offset: request.target.offset,
                length: request.target.length,
                pages: None,
                result,
                before,
                after,
                extra: vec![("reached_source", "yes".to_string())],
                duration_ns: started.elapsed().as_nanos() as u64,
                at_unix_ns,
            }
        });
        state
            .events
            .push(msync::event(request.command, &report, true));
        self.tree_event(d, "msync", &path, None, caller);
        report.result
    }

    /// `echo sync > msync` beside `data/`: `fdatasync` every file of the
    /// tree that has dirty or writeback pages.
    pub(super) fn tree_msync(&self, d: usize, bytes: &[u8], caller: Caller) -> Result<()> {
        let text = String::from_utf8_lossy(bytes);
        let word = text.trim();
        if !matches!(word, "" | "1" | "sync") {
            let e = fail!(
                EINVAL,
                "msync of a directory source: only 'sync' (every file of the tree); \
                 sync one file's range through files/PATH/msync"
            );
            self.tree(d).dir.events().push(Event::Rejected {
                file: "msync",
                bytes: bytes.len(),
                reason: e.message.clone(),
            });
            return Err(e);
        }
        let t = self.tree(d);
        let report = t.msync.run_one(|| {
            let started = Instant::now();
            let at_unix_ns = unix_ns();
            let _acting = caller.acting();
            let walk = t.dir.walk();
            let total = |f: &dyn Fn(&FileCache) -> u64| walk.files.iter().map(f).sum::<u64>();
            let before = Counts {
                resident: total(&|f| f.stat.cache),
                dirty: total(&|f| f.stat.dirty + f.stat.writeback),
                locked: 0,
            };
            let (result, synced) = sync_files(&t.dir, &walk);
            let after_walk = t.dir.walk();
            let after_total =
                |f: &dyn Fn(&FileCache) -> u64| after_walk.files.iter().map(f).sum::<u64>();
            Report {
                command: "sync".to_string(),
                offset: 0,
                length: total(&|f| f.size),
                pages: None,
                result,
                before,
                after: Counts {
                    resident: after_total(&|f| f.stat.cache),
                    dirty: after_total(&|f| f.stat.dirty + f.stat.writeback),
                    locked: 0,
                },
                extra: vec![
                    ("files", walk.files.len().to_string()),
                    ("files_synced", synced.to_string()),
                ],
                duration_ns: started.elapsed().as_nanos() as u64,
                at_unix_ns,
            }
        });
        self.tree_event(d, "msync", std::path::Path::new(""), None, caller);
        report.result
    }

    /// Run a directory source's control-file write off the FUSE workers.
    pub(super) fn tree_command(
        self: &Arc<Self>,
        ino: u64,
        node: Node,
        data: &[u8],
        caller: Caller,
        done: impl FnOnce(Result<u32>) + Send + 'static,
    ) {
        let (fs, bytes) = (Arc::clone(self), data.to_vec());
        let spawned = std::thread::Builder::new()
            .name("msync".into())
            .spawn(move || {
                let result = match node {
                    Node::TreeFile(d, FileKind::Msync) => fs.tree_msync(d, &bytes, caller),
                    Node::Inspect(d, FileKind::Msync) => fs.file_msync(d, ino, &bytes, caller),
                    _ => Err(fail!(EACCES, "only the msync files are writable")),
                };
                done(result.map(|()| bytes.len() as u32));
            });
        if let Err(e) = spawned {
            log::error!("cannot start an msync thread: {e}");
        }
    }
}

/// `fdatasync` every file of `walk` with dirty or writeback pages: the
/// first error, and how many were synced.
pub(super) fn sync_files(dir: &DirSource, walk: &Walk) -> (Result<()>, u64) {
    let mut result = Ok(());
    let mut synced = 0u64;
    for f in walk
        .files
        .iter()
        .filter(|f| f.stat.dirty + f.stat.writeback > 0)
    {
        let done = dir
            .resolve(&f.path)
            .and_then(|o| dir::open_to_probe(&o))
            .and_then(|file| file.sync_data());
        match done {
            Ok(()) => synced += 1,
            // Gone since the walk: nothing left to sync.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => {
                if result.is_ok() {
                    result = Err(Error::from_io(e, f.path.to_string_lossy()));
                }
            }
        }
    }
    (result, synced)
}

/// Resident and not-yet-on-disk pages of `ranges` of `file`.
fn counts(file: &std::fs::File, ranges: &[(u64, u64)]) -> Counts {
    let mut c = Counts {
        resident: 0,
        dirty: 0,
        locked: 0,
    };
    for &(offset, length) in ranges {
        let stat = sys::cachestat(file.as_fd(), offset, length).unwrap_or_default();
        c.resident += stat.cache;
        c.dirty += stat.dirty + stat.writeback;
    }
    c
}

/// `msync(2)` over `ranges` of a shared mapping of the file made for the
/// command, through a read-write descriptor (a read-only one makes a
/// mapping msync never writes back); mapped `PROT_READ`, so the daemon
/// cannot change a byte. Where the file cannot be opened read-write (a
/// program running it, a read-only filesystem, a lease), `MS_SYNC` falls
/// back to `fdatasync` of the whole file and `MS_ASYNC` to starting
/// writeback of the ranges.
fn sync_ranges(
    object: &Object,
    file: &std::fs::File,
    size: u64,
    ranges: &[(u64, u64)],
    command: msync::Command,
) -> Result<()> {
    if size == 0 {
        return Ok(());
    }
    let mapped = object
        .open(libc::O_RDWR | libc::O_NONBLOCK)
        .and_then(|rw| Mapping::new(rw.as_fd(), 0, size, false, Sharing::Shared));
    match (mapped, command) {
        (Ok(mapping), _) => ranges.iter().try_for_each(|&(offset, length)| {
            let length = length.min(size.saturating_sub(offset));
            if length == 0 {
                return Ok(());
            }
            mapping
                .msync(offset, length, command.flags())
                .map_err(|e| Error::from_io(e, "msync"))
        }),
        (Err(_), msync::Command::Sync) => {
            file.sync_data().map_err(|e| Error::from_io(e, "fdatasync"))
        }
        (Err(_), msync::Command::Async) => ranges.iter().try_for_each(|&(offset, length)| {
            sys::start_writeback(file.as_fd(), offset, length)
                .map_err(|e| Error::from_io(e, "sync_file_range"))
        }),
        (Err(_), msync::Command::Invalidate) => Ok(()),
    }
}
