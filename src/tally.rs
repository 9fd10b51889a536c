//! Page counts of a window too large to count at every read. `cachestat`
//! costs in proportion to the folios it walks (about 12 ms per GiB of 4 KiB
//! folios here, so most of a second for 64 GiB), so `stats`, `metrics`,
//! `history` and `writeback` of a large window sum counts kept per chunk
//! (256 MiB) and, inside a chunk, per block (2 MiB). Small windows are
//! counted exactly at every read.
//!
//! Two things keep the counts current:
//! - while tracing runs, each page event (a folio cached, evicted or
//!   dirtied; a writeback of the file ending) marks its block, and the
//!   trace reader counts the marked blocks again ([`Tally::flush`]): one
//!   `cachestat` of at most 512 pages per block, however many events
//!   touched it. Counting a block again is idempotent, so an event for a
//!   page a count already saw costs a probe, never a wrong number;
//! - the watcher counts whole chunks again ([`Tally::refresh`]) within a
//!   budget: the chunks the trace does not follow at every look, and the
//!   ones it follows once every [`RECOUNT_FOLLOWED_NS`], for what no event
//!   tells (shadow entries the kernel drops on its own, what "recently
//!   evicted" means as memory use changes).
//!
//! All times here are the boot clock in ns, the trace's own clock.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::pages;
use crate::source::Source;
use crate::sys::CacheStat;

/// Pages of one chunk (256 MiB of 4 KiB pages).
const CHUNK_PAGES: u64 = 1 << 16;
/// Pages of one block: the largest page-cache folio (2 MiB of 4 KiB
/// pages). Folios are aligned to their size, so a folio named by its first
/// page lies wholly in that page's block.
const BLOCK_PAGES: u64 = 512;
const BLOCKS_PER_CHUNK: u64 = CHUNK_PAGES / BLOCK_PAGES;
/// Windows up to this many pages are counted at every read: a few ms at
/// worst.
const EXACT_PAGES: u64 = CHUNK_PAGES;
/// Pages the watcher counts per look, over all sources: about 8 ms of
/// `cachestat` a second at worst.
pub const BUDGET_PAGES: u64 = 4 * CHUNK_PAGES;
/// The watcher keeps counting while someone read the counts this recently.
const WANTED_FOR: Duration = Duration::from_secs(60);
/// How often a chunk the trace follows is counted again whole.
pub const RECOUNT_FOLLOWED_NS: u64 = 600 * 1_000_000_000;

/// A window's page counts, and how fresh they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub stat: CacheStat,
    /// Time since the counts were last exact: counted, or brought up to
    /// date from the trace. 0 when counted at this read.
    pub age_ns: u64,
}

/// How far page events have been followed: the trace saw every change to
/// the page cache after `since`, and the counts hold those up to `until`
/// (boot ns). `since` moves on when tracing starts again or the kernel
/// lost events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Follow {
    pub since: u64,
    pub until: u64,
    /// Tracing runs now (`until` moves on).
    pub running: bool,
}

/// The boot clock in ns: the clock of the trace's events.
pub fn boot_ns() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_BOOTTIME).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(t.tv_nsec()).unwrap_or(0)
    })
}

#[derive(Debug, Default)]
pub struct Tally {
    inner: Mutex<Inner>,
    /// One prober at a time (a first read, the watcher, the trace reader),
    /// so counts are never replaced by older ones. Readers of the counts
    /// never wait for it.
    probing: Mutex<()>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The window's pages the chunks were laid out for.
    pages: u64,
    chunks: Vec<Chunk>,
    /// The chunk the watcher looks at next.
    next: usize,
    read_at: Option<Instant>,
    /// Blocks page events changed since they were last counted.
    touched: BTreeSet<u64>,
    /// A writeback of the file under way since then: pages leave the dirty
    /// count without events until it ends.
    writeback_since: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct Chunk {
    /// When it was last counted whole; `None`: never.
    counted_at: Option<u64>,
    total: CacheStat,
    /// Per block; empty while every block is empty.
    blocks: Vec<Block>,
}

/// The counts of one block (at most [`BLOCK_PAGES`] each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Block {
    cache: u16,
    dirty: u16,
    writeback: u16,
    evicted: u16,
    recently_evicted: u16,
}

impl Block {
    fn of(s: &CacheStat) -> Block {
        let n = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
        Block {
            cache: n(s.cache),
            dirty: n(s.dirty),
            writeback: n(s.writeback),
            evicted: n(s.evicted),
            recently_evicted: n(s.recently_evicted),
        }
    }

    fn stat(self) -> CacheStat {
        CacheStat {
            cache: self.cache.into(),
            dirty: self.dirty.into(),
            writeback: self.writeback.into(),
            evicted: self.evicted.into(),
            recently_evicted: self.recently_evicted.into(),
        }
    }
}

fn add(total: &mut CacheStat, s: &CacheStat) {
    total.cache += s.cache;
    total.dirty += s.dirty;
    total.writeback += s.writeback;
    total.evicted += s.evicted;
    total.recently_evicted += s.recently_evicted;
}

fn sub(total: &mut CacheStat, s: &CacheStat) {
    total.cache = total.cache.saturating_sub(s.cache);
    total.dirty = total.dirty.saturating_sub(s.dirty);
    total.writeback = total.writeback.saturating_sub(s.writeback);
    total.evicted = total.evicted.saturating_sub(s.evicted);
    total.recently_evicted = total.recently_evicted.saturating_sub(s.recently_evicted);
}

/// A chunk as counted at `at` (the moment before the first probe, so any
/// change the probes missed comes as an event after it).
struct Counted {
    at: u64,
    total: CacheStat,
    blocks: Vec<Block>,
}

/// The page counts of `[first, first + n)` of the window.
type Probe<'a> = dyn Fn(u64, u64) -> CacheStat + 'a;

impl Tally {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("no panics: they abort")
    }

    fn probing(&self) -> MutexGuard<'_, ()> {
        self.probing.lock().expect("no panics: they abort")
    }

    /// The counts of `source`'s window of `pages` pages: exact for a small
    /// window; for a large one, the sum of the chunks (a chunk never
    /// counted is counted now, so only the first read pays for the whole
    /// window). `follow`: how far the trace has followed (see [`Follow`]).
    pub fn counts(&self, source: &Source, pages: u64, follow: Option<Follow>) -> Counts {
        if pages <= EXACT_PAGES {
            return Counts {
                stat: pages::cache_stat(source, 0, pages),
                age_ns: 0,
            };
        }
        self.counts_by(
            &|first, n| pages::cache_stat(source, first, n),
            pages,
            follow,
        )
    }

    fn counts_by(&self, probe: &Probe<'_>, pages: u64, follow: Option<Follow>) -> Counts {
        let never: Vec<usize> = {
            let mut inner = self.lock();
            inner.fit(pages);
            inner.read_at = Some(Instant::now());
            (0..inner.chunks.len())
                .filter(|&k| inner.chunks[k].counted_at.is_none())
                .collect()
        };
        if !never.is_empty() {
            let _probing = self.probing();
            for k in never {
                let counted = count_chunk(probe, k, pages, true);
                self.lock().set_chunk(k, pages, counted);
            }
        }
        self.lock().sum(follow, boot_ns())
    }

    /// The watcher's share: count again the chunks of a large window that
    /// are due, as long as `budget` (pages, shared by all sources) lasts
    /// and someone reads the counts. Due: a chunk the trace does not
    /// follow, at every look (in turn); one it follows, when its last whole
    /// count is older than [`RECOUNT_FOLLOWED_NS`].
    pub fn refresh(&self, source: &Source, budget: &mut u64, follow: Option<Follow>) {
        let pages = source.pages();
        if pages <= EXACT_PAGES {
            return;
        }
        self.refresh_by(
            &|first, n| pages::cache_stat(source, first, n),
            pages,
            budget,
            follow,
            boot_ns(),
        );
    }

    fn refresh_by(
        &self,
        probe: &Probe<'_>,
        pages: u64,
        budget: &mut u64,
        follow: Option<Follow>,
        now: u64,
    ) {
        let due: Vec<usize> = {
            let mut inner = self.lock();
            let wanted = inner.read_at.is_some_and(|at| at.elapsed() < WANTED_FOR);
            if !wanted {
                return;
            }
            inner.fit(pages);
            let n = inner.chunks.len();
            let mut due = Vec::new();
            for j in 0..n {
                if *budget == 0 {
                    break;
                }
                let k = (inner.next + j) % n;
                let followed = follow.is_some_and(|f| f.running && inner.followed(k, f));
                let counted = inner.chunks[k].counted_at;
                if followed
                    && counted.is_some_and(|at| now.saturating_sub(at) < RECOUNT_FOLLOWED_NS)
                {
                    continue;
                }
                due.push(k);
                *budget = budget.saturating_sub(CHUNK_PAGES);
            }
            if let Some(&last) = due.last() {
                inner.next = (last + 1) % n;
            }
            due
        };
        if due.is_empty() {
            return;
        }
        let _probing = self.probing();
        for k in due {
            let was_empty = self
                .lock()
                .chunks
                .get(k)
                .is_none_or(|c| c.blocks.is_empty());
            let counted = count_chunk(probe, k, pages, was_empty);
            self.lock().set_chunk(k, pages, counted);
        }
    }

    /// A page event changed window pages `[a, b]`: count their blocks
    /// again at the next [`Tally::flush`].
    pub fn touched(&self, a: u64, b: u64) {
        let mut inner = self.lock();
        if inner.chunks.is_empty() {
            // A small window (counted at every read), or never read.
            return;
        }
        let blocks = inner.pages.div_ceil(BLOCK_PAGES);
        let last = (b / BLOCK_PAGES).min(blocks.saturating_sub(1));
        for block in a / BLOCK_PAGES..=last {
            inner.touched.insert(block);
        }
    }

    /// A writeback of the file began at `at`.
    pub fn writeback_begins(&self, at: u64) {
        self.lock().writeback_since.get_or_insert(at);
    }

    /// It ended: no page is under writeback now, and the dirty pages it
    /// wrote are clean. Count again every block that held either.
    pub fn writeback_ends(&self) {
        let mut inner = self.lock();
        inner.writeback_since = None;
        let mut held = Vec::new();
        for (k, chunk) in inner.chunks.iter().enumerate() {
            for (i, b) in chunk.blocks.iter().enumerate() {
                if b.dirty > 0 || b.writeback > 0 {
                    held.push(k as u64 * BLOCKS_PER_CHUNK + i as u64);
                }
            }
        }
        inner.touched.extend(held);
    }

    /// Tracing starts again, or the kernel lost events: forget what the
    /// trace said is under way (the chunks are counted again anyway).
    pub fn restart(&self) {
        let mut inner = self.lock();
        inner.writeback_since = None;
        inner.touched.clear();
    }

    /// Whether page events marked blocks that are not counted again yet.
    pub fn has_touched(&self) -> bool {
        !self.lock().touched.is_empty()
    }

    /// The trace reader: count again the blocks page events changed.
    pub fn flush(&self, source: &Source) {
        self.flush_by(&|first, n| pages::cache_stat(source, first, n));
    }

    fn flush_by(&self, probe: &Probe<'_>) {
        let _probing = self.probing();
        let (blocks, pages) = {
            let mut inner = self.lock();
            (std::mem::take(&mut inner.touched), inner.pages)
        };
        let counted: Vec<(u64, CacheStat)> = blocks
            .into_iter()
            .filter_map(|b| {
                let first = b * BLOCK_PAGES;
                (first < pages).then(|| (b, probe(first, BLOCK_PAGES.min(pages - first))))
            })
            .collect();
        let mut inner = self.lock();
        if inner.pages != pages {
            return;
        }
        for (b, stat) in counted {
            inner.set_block(b, &stat);
        }
    }
}

impl Inner {
    /// Chunks for a window of `pages`; a whole file that changed size has
    /// its last chunk counted again.
    fn fit(&mut self, pages: u64) {
        if self.pages == pages {
            return;
        }
        let n = usize::try_from(pages.div_ceil(CHUNK_PAGES)).unwrap_or(usize::MAX);
        self.chunks.resize(n, Chunk::default());
        if let Some(last) = self.chunks.last_mut() {
            *last = Chunk::default();
        }
        self.pages = pages;
        self.next %= n.max(1);
    }

    fn set_chunk(&mut self, k: usize, pages: u64, counted: Counted) {
        if self.pages != pages {
            return;
        }
        if let Some(chunk) = self.chunks.get_mut(k) {
            *chunk = Chunk {
                counted_at: Some(counted.at),
                total: counted.total,
                blocks: counted.blocks,
            };
        }
    }

    fn set_block(&mut self, b: u64, stat: &CacheStat) {
        let k = usize::try_from(b / BLOCKS_PER_CHUNK).unwrap_or(usize::MAX);
        let i = (b % BLOCKS_PER_CHUNK) as usize;
        let first = k as u64 * CHUNK_PAGES;
        let in_chunk = CHUNK_PAGES.min(self.pages.saturating_sub(first));
        let Some(chunk) = self.chunks.get_mut(k) else {
            return;
        };
        if chunk.counted_at.is_none() {
            // Counted whole at the next read.
            return;
        }
        let new = Block::of(stat);
        if chunk.blocks.is_empty() {
            if new == Block::default() {
                return;
            }
            chunk.blocks = vec![Block::default(); in_chunk.div_ceil(BLOCK_PAGES) as usize];
        }
        let Some(old) = chunk.blocks.get_mut(i) else {
            return;
        };
        sub(&mut chunk.total, &old.stat());
        add(&mut chunk.total, &new.stat());
        *old = new;
    }

    /// Whether the trace has followed chunk `k` since it was counted.
    fn followed(&self, k: usize, f: Follow) -> bool {
        self.chunks[k].counted_at.is_some_and(|at| at >= f.since)
    }

    /// When chunk `k` was last exact: counted, or brought up to date from
    /// the trace (not past the start of a writeback under way).
    fn exact_at(&self, k: usize, follow: Option<Follow>) -> u64 {
        let counted = self.chunks[k].counted_at.unwrap_or(0);
        match follow {
            Some(f) if self.followed(k, f) => {
                let until = f.until.min(self.writeback_since.unwrap_or(u64::MAX));
                counted.max(until)
            }
            _ => counted,
        }
    }

    fn sum(&self, follow: Option<Follow>, now: u64) -> Counts {
        let mut total = CacheStat::default();
        let mut oldest = now;
        for (k, chunk) in self.chunks.iter().enumerate() {
            add(&mut total, &chunk.total);
            oldest = oldest.min(self.exact_at(k, follow));
        }
        Counts {
            stat: total,
            age_ns: now.saturating_sub(oldest),
        }
    }
}

/// Count chunk `k` of a window of `pages` block by block; a chunk that
/// was empty is first asked whole, and stays one probe while it is.
fn count_chunk(probe: &Probe<'_>, k: usize, pages: u64, was_empty: bool) -> Counted {
    let at = boot_ns();
    let first = k as u64 * CHUNK_PAGES;
    let n = CHUNK_PAGES.min(pages.saturating_sub(first));
    if was_empty {
        let whole = probe(first, n);
        if whole == CacheStat::default() {
            return Counted {
                at,
                total: whole,
                blocks: Vec::new(),
            };
        }
    }
    let mut total = CacheStat::default();
    let blocks = (0..n.div_ceil(BLOCK_PAGES))
        .map(|b| {
            let start = b * BLOCK_PAGES;
            let stat = probe(first + start, BLOCK_PAGES.min(n - start));
            add(&mut total, &stat);
            Block::of(&stat)
        })
        .collect();
    Counted { at, total, blocks }
}

#[cfg(test)]
mod tests;
