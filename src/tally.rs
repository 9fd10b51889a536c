//! Page counts of a window too large to count at every read. `cachestat`
//! costs in proportion to the folios it walks (about 12 ms per GiB of 4 KiB
//! folios here, so most of a second for 64 GiB), so `stats`, `metrics`,
//! `history` and `writeback` of a large window sum counts the watcher takes
//! a chunk at a time, within a budget per look. Small windows are counted
//! exactly at every read.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::pages;
use crate::source::Source;
use crate::sys::CacheStat;

/// Pages of one chunk (256 MiB of 4 KiB pages).
const CHUNK_PAGES: u64 = 1 << 16;
/// Windows up to this many pages are counted at every read: a few ms at
/// worst.
const EXACT_PAGES: u64 = CHUNK_PAGES;
/// Pages the watcher counts per look, over all sources: about 8 ms of
/// `cachestat` a second at worst.
pub const BUDGET_PAGES: u64 = 4 * CHUNK_PAGES;
/// The watcher keeps counting while someone read the counts this recently.
const WANTED_FOR: Duration = Duration::from_secs(60);

/// A window's page counts, and how old the oldest part of them is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub stat: CacheStat,
    /// 0 when counted at this read.
    pub age_ns: u64,
}

#[derive(Debug, Default)]
pub struct Tally {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    chunks: Vec<Option<(CacheStat, Instant)>>,
    /// The chunk the watcher counts next.
    next: usize,
    read_at: Option<Instant>,
}

impl Tally {
    /// The counts of `source`'s window of `pages` pages: exact for a small
    /// window; for a large one, the sum of the chunks (a chunk never
    /// counted is counted now, so only the first read pays for the whole
    /// window).
    pub fn counts(&self, source: &Source, pages: u64) -> Counts {
        if pages <= EXACT_PAGES {
            return Counts {
                stat: pages::cache_stat(source, 0, pages),
                age_ns: 0,
            };
        }
        let mut inner = self.inner.lock().expect("no panics: they abort");
        inner.fit(pages);
        inner.read_at = Some(Instant::now());
        let mut total = CacheStat::default();
        let mut oldest = Duration::ZERO;
        for k in 0..inner.chunks.len() {
            let (stat, at) = *inner.chunks[k].get_or_insert_with(|| count(source, k, pages));
            total.cache += stat.cache;
            total.dirty += stat.dirty;
            total.writeback += stat.writeback;
            total.evicted += stat.evicted;
            total.recently_evicted += stat.recently_evicted;
            oldest = oldest.max(at.elapsed());
        }
        Counts {
            stat: total,
            age_ns: u64::try_from(oldest.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// The watcher's share: count the next chunks of a large window, as
    /// long as `budget` (pages, shared by all sources) lasts and someone
    /// reads the counts.
    pub fn refresh(&self, source: &Source, budget: &mut u64) {
        let pages = source.pages();
        let mut inner = self.inner.lock().expect("no panics: they abort");
        let wanted = inner.read_at.is_some_and(|at| at.elapsed() < WANTED_FOR);
        if pages <= EXACT_PAGES || !wanted {
            return;
        }
        inner.fit(pages);
        let n = inner.chunks.len();
        for _ in 0..n {
            if *budget == 0 {
                return;
            }
            let k = inner.next % n;
            inner.chunks[k] = Some(count(source, k, pages));
            inner.next = (k + 1) % n;
            *budget = budget.saturating_sub(CHUNK_PAGES);
        }
    }
}

impl Inner {
    /// Chunks for a window of `pages`; a whole file that changed size has
    /// its last chunk counted again.
    fn fit(&mut self, pages: u64) {
        let n = usize::try_from(pages.div_ceil(CHUNK_PAGES)).unwrap_or(usize::MAX);
        if self.chunks.len() != n {
            self.chunks.resize(n, None);
            if let Some(last) = self.chunks.last_mut() {
                *last = None;
            }
        }
    }
}

fn count(source: &Source, k: usize, pages: u64) -> (CacheStat, Instant) {
    let first = k as u64 * CHUNK_PAGES;
    let n = CHUNK_PAGES.min(pages - first);
    (pages::cache_stat(source, first, n), Instant::now())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::open;
    use crate::sys::Sharing;

    /// A 1 GiB sparse source: four chunks, nothing cached.
    fn large() -> (tempfile::TempDir, Source) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.bin");
        let file = std::fs::File::create(&path).expect("create");
        file.set_len(4 * CHUNK_PAGES * 4096).expect("size");
        let mut sources = open::open_all(&open::Config {
            sources: vec![path],
            anon: Vec::new(),
            read_only: false,
            sharing: Sharing::Shared,
            offset: 0,
            length: None,
            size: None,
            events_kept: 10,
            crash_test: false,
        })
        .expect("open");
        (dir, sources.files.remove(0))
    }

    #[test]
    fn large_windows_are_counted_by_chunk_and_refreshed_within_the_budget() {
        let (_dir, source) = large();
        let tally = Tally::default();
        source
            .file()
            .write_all_at(b"x", 3 * CHUNK_PAGES * 4096)
            .expect("write");
        let first = tally.counts(&source, source.pages());
        assert!(first.stat.cache >= 1, "the first read counts every chunk");
        source.file().write_all_at(b"y", 4096).expect("write");
        assert_eq!(
            tally.counts(&source, source.pages()).stat.cache,
            first.stat.cache,
            "a read sums what was counted: no walk of the window"
        );
        assert!(tally.counts(&source, source.pages()).age_ns > 0);
        let mut budget = CHUNK_PAGES;
        tally.refresh(&source, &mut budget);
        assert_eq!(budget, 0, "one chunk spent the budget");
        assert!(
            tally.counts(&source, source.pages()).stat.cache > first.stat.cache,
            "the watcher's refresh of chunk 0 saw the new page"
        );
    }
}
