use std::os::unix::fs::FileExt;

use super::*;
use crate::open;

/// A page cache to probe: per page, cached / dirty / under writeback.
struct Cache {
    pages: Vec<(bool, bool, bool)>,
}

impl Cache {
    fn new(pages: u64) -> Cache {
        Cache {
            pages: vec![(false, false, false); pages as usize],
        }
    }

    fn len(&self) -> u64 {
        self.pages.len() as u64
    }

    fn set(&mut self, first: u64, n: u64, state: (bool, bool, bool)) {
        for p in &mut self.pages[first as usize..(first + n) as usize] {
            *p = state;
        }
    }

    fn stat(&self, first: u64, n: u64) -> CacheStat {
        let mut s = CacheStat::default();
        for &(cached, dirty, writeback) in &self.pages[first as usize..(first + n) as usize] {
            s.cache += u64::from(cached);
            s.dirty += u64::from(dirty);
            s.writeback += u64::from(writeback);
        }
        s
    }

    fn counts(&self, tally: &Tally, follow: Option<Follow>) -> CacheStat {
        tally
            .counts_by(&|a, n| self.stat(a, n), self.len(), follow)
            .stat
    }

    fn flush(&self, tally: &Tally) {
        tally.flush_by(&|a, n| self.stat(a, n));
    }
}

const CACHED: (bool, bool, bool) = (true, false, false);
const DIRTY: (bool, bool, bool) = (true, true, false);
const FOLLOWED: Option<Follow> = Some(Follow {
    since: 0,
    until: u64::MAX,
    running: true,
});

#[test]
fn events_keep_the_counts_current_and_counting_again_is_idempotent() {
    // Two and a half chunks; a partly cached first chunk.
    let mut cache = Cache::new(5 * CHUNK_PAGES / 2);
    cache.set(0, 1000, CACHED);
    let tally = Tally::default();
    assert_eq!(cache.counts(&tally, FOLLOWED).cache, 1000);

    // A 2 MiB folio of chunk 1 is dirtied; its event names its first page.
    let folio = CHUNK_PAGES + 4 * BLOCK_PAGES;
    cache.set(folio, BLOCK_PAGES, DIRTY);
    assert_eq!(
        cache.counts(&tally, FOLLOWED).dirty,
        0,
        "nothing counted again without an event"
    );
    tally.touched(folio, folio);
    cache.flush(&tally);
    let now = cache.counts(&tally, FOLLOWED);
    assert_eq!((now.cache, now.dirty), (1000 + BLOCK_PAGES, BLOCK_PAGES));

    // An event for pages already counted (read late, or seen twice).
    tally.touched(folio + 3, folio + 3);
    cache.flush(&tally);
    assert_eq!(cache.counts(&tally, FOLLOWED), now);

    // Evictions across a block edge, in the half chunk at the end.
    let tail = 2 * CHUNK_PAGES + BLOCK_PAGES - 2;
    cache.set(tail, 4, CACHED);
    tally.touched(tail, tail + 3);
    cache.flush(&tally);
    assert_eq!(cache.counts(&tally, FOLLOWED).cache, now.cache + 4);
    cache.set(tail, 4, (false, false, false));
    cache.set(0, 1000, (false, false, false));
    tally.touched(tail, tail + 3);
    tally.touched(0, 999);
    cache.flush(&tally);
    assert_eq!(cache.counts(&tally, FOLLOWED).cache, BLOCK_PAGES);
    assert_eq!(
        tally
            .counts_by(&|a, n| cache.stat(a, n), cache.len(), None)
            .stat,
        cache.stat(0, cache.len())
    );
}

#[test]
fn the_end_of_a_writeback_counts_the_dirty_blocks_again() {
    let mut cache = Cache::new(2 * CHUNK_PAGES);
    cache.set(10, 5, DIRTY);
    cache.set(CHUNK_PAGES + 7000, 3, DIRTY);
    let tally = Tally::default();
    assert_eq!(cache.counts(&tally, FOLLOWED).dirty, 8);
    tally.writeback_begins(1);
    // Written: clean, and the trace saw no event per page.
    cache.set(10, 5, CACHED);
    cache.set(CHUNK_PAGES + 7000, 3, CACHED);
    assert_eq!(cache.counts(&tally, FOLLOWED).dirty, 8);
    tally.writeback_ends();
    cache.flush(&tally);
    let now = cache.counts(&tally, FOLLOWED);
    assert_eq!((now.cache, now.dirty), (8, 0));
}

#[test]
fn the_age_says_since_when_the_counts_are_exact() {
    let mut cache = Cache::new(2 * CHUNK_PAGES);
    cache.set(0, 1, CACHED);
    let tally = Tally::default();
    cache.counts(&tally, None);
    for chunk in &mut tally.lock().chunks {
        chunk.counted_at = Some(100);
    }
    let age = |follow| tally.lock().sum(follow, 2000).age_ns;
    assert_eq!(age(None), 1900, "not traced: since counted");
    let follow = |since, until| {
        Some(Follow {
            since,
            until,
            running: true,
        })
    };
    assert_eq!(age(follow(50, 1000)), 1000, "followed up to 1000");
    assert_eq!(
        age(follow(150, 1000)),
        1900,
        "counted before the trace saw everything: since counted"
    );
    tally.writeback_begins(500);
    assert_eq!(age(follow(50, 1000)), 1500, "a writeback under way");
    tally.writeback_ends();
    assert_eq!(age(follow(50, 1000)), 1000);
    tally.lock().chunks[1].counted_at = Some(1800);
    assert_eq!(age(follow(150, 1000)), 1900, "the oldest chunk");
}

#[test]
fn the_watcher_counts_again_what_the_trace_does_not_follow() {
    let mut cache = Cache::new(3 * CHUNK_PAGES);
    let tally = Tally::default();
    let start = boot_ns();
    cache.counts(&tally, FOLLOWED);
    cache.set(5, 1, CACHED);
    let refresh = |cache: &Cache, follow, now| {
        let mut budget = CHUNK_PAGES;
        tally.refresh_by(
            &|a, n| cache.stat(a, n),
            cache.len(),
            &mut budget,
            follow,
            now,
        );
        budget
    };
    assert_eq!(
        refresh(&cache, FOLLOWED, start + 1),
        CHUNK_PAGES,
        "followed chunks counted lately are left alone"
    );
    assert_eq!(cache.counts(&tally, FOLLOWED).cache, 0);
    assert_eq!(
        refresh(&cache, FOLLOWED, boot_ns() + RECOUNT_FOLLOWED_NS),
        0,
        "followed chunks are counted again now and then, within the budget"
    );
    assert_eq!(cache.counts(&tally, FOLLOWED).cache, 1);
    cache.set(CHUNK_PAGES, 1, CACHED);
    let stopped = Some(Follow {
        running: false,
        ..FOLLOWED.unwrap()
    });
    assert_eq!(refresh(&cache, stopped, boot_ns()), 0, "tracing stopped");
    assert_eq!(cache.counts(&tally, None).cache, 2);
}

/// A 1 GiB sparse source: four chunks, nothing cached.
fn large() -> (tempfile::TempDir, Source) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.bin");
    let file = std::fs::File::create(&path).expect("create");
    file.set_len(4 * CHUNK_PAGES * 4096).expect("size");
    let mut sources = open::open_all(&open::Config::plain(vec![path], 10)).expect("open");
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
    let first = tally.counts(&source, source.pages(), None);
    assert!(first.stat.cache >= 1, "the first read counts every chunk");
    source.file().write_all_at(b"y", 4096).expect("write");
    assert_eq!(
        tally.counts(&source, source.pages(), None).stat.cache,
        first.stat.cache,
        "a read sums what was counted: no walk of the window"
    );
    let mut budget = CHUNK_PAGES;
    tally.refresh(&source, &mut budget, None);
    assert_eq!(budget, 0, "one chunk spent the budget");
    assert!(
        tally.counts(&source, source.pages(), None).stat.cache > first.stat.cache,
        "the watcher's refresh of chunk 0 saw the new page"
    );
}
