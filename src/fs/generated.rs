//! What the generated files show, rendered for the caller who opens them,
//! and the watcher that keeps the counts they need.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Caller, MmapFs};
use crate::io_mode::IoMode;
use crate::mappers::{self, FileId};
use crate::pages::{self, PageState};
use crate::probe::{self, Ranges};
use crate::render;
use crate::stats;
use crate::tally;
use crate::tree::{FileKind, Node};

/// How long after the last look at `stats` or `metrics` the watcher keeps
/// counting mappers: an idle mount costs nothing per process.
const MAPPERS_WANTED_FOR: Duration = Duration::from_secs(60);

impl MmapFs {
    /// The content of a generated file, as `caller` may see it.
    pub(super) fn render(&self, ino: u64, node: Node, caller: Caller) -> String {
        match node {
            Node::Tree(_) | Node::TreeFile(..) | Node::Real(..) | Node::Inspect(..) => {
                self.render_tree(ino, node, caller)
            }
            Node::RootStats | Node::RootMetrics => {
                self.want_mappers();
                let visible: Vec<usize> = (0..self.served.len())
                    .filter(|&i| caller.may_read(self.source(i).owner()))
                    .collect();
                let trees: Vec<usize> = (0..self.trees.len())
                    .filter(|&d| caller.may_read(self.tree_owner(d)))
                    .collect();
                let mut all: Vec<stats::Stats> =
                    visible.iter().map(|&i| self.stats(i, caller)).collect();
                // A tree whose walk cannot run now is left out of the sums.
                let trees: Vec<(usize, stats::Stats)> = trees
                    .into_iter()
                    .filter_map(|d| Some((d, self.tree_stats(d, caller).ok()?)))
                    .collect();
                all.extend(trees.iter().map(|(_, st)| st.clone()));
                if node == Node::RootStats {
                    render::root_stats(&stats::at_root(&all))
                } else {
                    let names: Vec<&str> = visible
                        .iter()
                        .map(|&i| self.source(i).name())
                        .chain(trees.iter().map(|(d, _)| self.tree(*d).dir.name()))
                        .collect();
                    render::metrics(&names, &all)
                }
            }
            Node::File(i, kind) => match kind {
                FileKind::Stats => {
                    self.want_mappers();
                    render::stats(&self.stats(i, caller))
                }
                FileKind::Msync => render::report(self.served[i].msync.last().as_ref()),
                FileKind::Madvise => render::report(self.served[i].madvise.last().as_ref()),
                FileKind::Fadvise => render::report(self.served[i].fadvise.last().as_ref()),
                FileKind::Mlock => render::report(self.served[i].mlock.last().as_ref()),
                FileKind::DirtyPages => render::cpulist(&self.page_list(i, PageState::Dirty)),
                FileKind::ResidentPages => render::cpulist(&self.page_list(i, PageState::Resident)),
                FileKind::Mappers => {
                    let files: Vec<(FileId, usize)> =
                        self.mapped_files(i).into_iter().map(|f| (f, i)).collect();
                    let visible: Vec<mappers::Mapper> = mappers::scan(&files, self.daemon_pid)
                        .into_iter()
                        .filter(|m| caller.uid == 0 || m.uid == caller.uid)
                        .collect();
                    render::mappers(&visible)
                }
                FileKind::Map => self.render_map(i),
                FileKind::UnsyncedPages => {
                    let s = self.source(i);
                    let held = s.held().map(|h| h.unsynced(&s.mapping(), 0, s.pages()));
                    render::cpulist(&held.and_then(Result::ok).unwrap_or_default())
                }
                FileKind::Crash => match self.source(i).held() {
                    Some(h) => render::crash(h.last().as_ref(), h.armed(), h.syncs(), h.crashes()),
                    None => String::new(),
                },
                FileKind::Trace => self.render_trace_unavailable(i),
                FileKind::Writeback => self.render_writeback(i),
                FileKind::History => self.render_history(i),
                FileKind::Timeline => self.render_timeline(i),
                FileKind::Data | FileKind::Events | FileKind::Top => String::new(),
            },
            Node::Root | Node::Dir(_) => String::new(),
        }
    }

    /// Pages of source `i` in `state` at either level: the source's page
    /// cache, or the kernel's cache of `data` itself (cached mode).
    fn page_list(&self, i: usize, state: PageState) -> Ranges {
        let s = self.source(i);
        let pages = s.pages();
        let below = pages::ranges(s, state, 0, pages);
        match self.mount_view(i) {
            Some(view) => probe::union(&below, &pages::mount_ranges(&view, state, 0, pages)),
            None => below,
        }
    }

    /// Each cell counts the level that holds more pages in that state: a
    /// page may be dirty at both at once, so the sum would count it twice.
    fn render_map(&self, i: usize) -> String {
        let s = self.source(i);
        let view = self.mount_view(i);
        let up = |state, first, n| {
            view.as_ref()
                .map_or(0, |v| pages::mount_count(v, state, first, n))
        };
        render::map(s.pages(), s.page_size(), |first, n| {
            (
                pages::count(s, PageState::Resident, first, n).max(up(
                    PageState::Resident,
                    first,
                    n,
                )),
                pages::count(s, PageState::Dirty, first, n).max(up(PageState::Dirty, first, n)),
            )
        })
    }

    /// `stats` of source `i` as `caller` may see it: the mappers count
    /// covers only the caller's own processes, as the `mappers` file does
    /// (root: all).
    fn stats(&self, i: usize, caller: Caller) -> stats::Stats {
        let served = &self.served[i];
        let mappers = served.mappers.lock().expect("no panics: they abort");
        let count = mappers
            .iter()
            .filter(|(uid, _)| caller.uid == 0 || *uid == caller.uid)
            .map(|(_, n)| n)
            .sum();
        drop(mappers);
        let s = &served.source;
        // One look at the file for the size, the state and the page count.
        let health = s.health();
        let pages = s.length_at(&health).div_ceil(s.page_size());
        let up = self
            .mount_view(i)
            .map(|view| pages::mount_stat(&view, 0, pages));
        stats::of_source(
            s,
            &health,
            served.tally.counts(s, pages, self.tracer.follow()),
            served.locks.total(s, pages),
            count,
            up,
            self.trace_state(i),
        )
    }

    /// Drop the kernel's cache of a `data` file; it first writes back to
    /// us what outside mappings left dirty there, so no store is lost.
    fn drop_kernel_cache(&self, data_ino: u64) {
        if let Some(kernel) = self.kernel.get() {
            if let Err(e) = kernel.push_and_drop(data_ino, 0, u64::MAX) {
                log::warn!("drop the kernel's cache of inode {data_ino}: {e}");
            }
        }
    }

    /// Someone looks at mapper counts: keep the watcher counting a while.
    fn want_mappers(&self) {
        *self.mappers_wanted.lock().expect("no panics: they abort") = Some(Instant::now());
    }

    /// The files whose mappings count as mapping source `i`: the source
    /// itself and its `data` file in the mount.
    fn mapped_files(&self, i: usize) -> Vec<FileId> {
        let mut ids = Vec::new();
        if let Ok(meta) = self.source(i).file().metadata() {
            ids.push(FileId::from_dev_ino(meta.dev(), meta.ino()));
        }
        if let Some(dev) = self.mount_dev.get() {
            ids.push(FileId::from_dev_ino(*dev, self.served[i].data_ino));
        }
        ids
    }

    /// Sleep until the next look is due: `interval` from now, or sooner
    /// if asked (`watch_soon`).
    pub fn wait_to_watch(&self, interval: Duration) {
        let (early, wake) = &self.watch_early;
        let asked = early.lock().expect("no panics: they abort");
        let (mut asked, _) = wake
            .wait_timeout_while(asked, interval, |asked| !*asked)
            .expect("no panics: they abort");
        *asked = false;
    }

    /// Have the watcher look now (it runs off the FUSE workers, so it may
    /// wait on the kernel).
    pub(super) fn watch_soon(&self) {
        let (early, wake) = &self.watch_early;
        *early.lock().expect("no panics: they abort") = true;
        wake.notify_one();
    }

    /// The watcher's periodic look: truncation, deletion and changes of
    /// every source (dropping what the kernel caches of a changed source's
    /// `data`), a budget of page counting for large windows whose counts
    /// are read, and, while someone reads the counts, one pass over `/proc`
    /// for the mappers of all sources at once.
    pub fn watch(&self) {
        // Each look starts counting where the last one's budget ran out.
        let mut budget = tally::BUDGET_PAGES;
        let follow = self.tracer.follow();
        let n = self.served.len();
        let start = self.tally_turn.fetch_add(1, Ordering::Relaxed) % n.max(1);
        for k in 0..n {
            let served = &self.served[(start + k) % n];
            served.tally.refresh(&served.source, &mut budget, follow);
        }
        self.sample_history();
        self.drop_deleted();
        for served in &self.served {
            let s = &served.source;
            s.health();
            if s.io_mode() == IoMode::Cached && s.take_changed_behind() {
                self.drop_kernel_cache(served.data_ino);
            }
        }
        let wanted = self
            .mappers_wanted
            .lock()
            .expect("no panics: they abort")
            .is_some_and(|at| at.elapsed() < MAPPERS_WANTED_FOR);
        if !wanted {
            return;
        }
        let files: Vec<(FileId, usize)> = (0..self.served.len())
            .flat_map(|i| self.mapped_files(i).into_iter().map(move |f| (f, i)))
            .collect();
        let mut counts: Vec<Vec<(u32, u64)>> = vec![Vec::new(); self.served.len()];
        for m in mappers::scan(&files, self.daemon_pid) {
            let per_uid = &mut counts[m.tag];
            match per_uid.iter_mut().find(|(uid, _)| *uid == m.uid) {
                Some((_, n)) => *n += 1,
                None => per_uid.push((m.uid, 1)),
            }
        }
        for (served, count) in self.served.iter().zip(counts) {
            *served.mappers.lock().expect("no panics: they abort") = count;
        }
    }
}
