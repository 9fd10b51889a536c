//! Which probe answers for which source: the source's page cache
//! (`cachestat`) in shared mode; in private mode, dirty means copied on
//! write (our own page tables) and resident adds those copies. In cached
//! mode the kernel also caches `data` itself, one level up: the `mount_*`
//! probes ask about that cache through a descriptor of `data`.

use std::fs::File;
use std::os::fd::AsFd;

use crate::probe::{self, Ranges};
use crate::source::Source;
use crate::sys::{self, CacheStat, Sharing};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    Resident,
    Dirty,
}

impl PageState {
    fn of(self, stat: &CacheStat) -> u64 {
        match self {
            PageState::Resident => stat.cache,
            PageState::Dirty => stat.dirty,
        }
    }
}

/// Pages of `[first, first + pages)` of the window in `state`, as ranges
/// relative to the window start.
pub fn ranges(source: &Source, state: PageState, first: u64, pages: u64) -> Ranges {
    let page = source.page_size();
    let cached = || {
        probe::page_ranges(source.fd(), source.offset() + first * page, pages, |stat| {
            state.of(stat)
        })
        .unwrap_or_else(|e| {
            log::warn!("{}: cachestat: {e}", source.name());
            Ranges::new()
        })
    };
    let shift = |r: Ranges| r.into_iter().map(|(a, b)| (a + first, b + first)).collect();
    match source.sharing() {
        Sharing::Shared => shift(cached()),
        Sharing::Private => {
            let copied = probe::cow_ranges(source.mapping().address() as u64 + first * page, pages)
                .unwrap_or_else(|e| {
                    log::warn!("{}: pagemap: {e}", source.name());
                    Ranges::new()
                });
            match state {
                PageState::Dirty => shift(copied),
                PageState::Resident => shift(probe::union(&cached(), &copied)),
            }
        }
    }
}

/// How many pages of `[first, first + pages)` are in `state`: one
/// `cachestat` in shared mode.
pub fn count(source: &Source, state: PageState, first: u64, pages: u64) -> u64 {
    match source.sharing() {
        Sharing::Shared => state.of(&cache_stat(source, first, pages)).min(pages),
        Sharing::Private => ranges(source, state, first, pages)
            .iter()
            .map(|(a, b)| b - a + 1)
            .sum(),
    }
}

/// The kernel's page-cache counts for `[first, first + pages)` of the window.
pub fn cache_stat(source: &Source, first: u64, pages: u64) -> CacheStat {
    let page = source.page_size();
    sys::cachestat(source.fd(), source.offset() + first * page, pages * page).unwrap_or_default()
}

/// Pages of `[first, first + pages)` of the window in `state` in the
/// kernel's cache of `data` itself (`view`, opened through the mount:
/// its offset 0 is the window's start).
pub fn mount_ranges(view: &File, state: PageState, first: u64, pages: u64) -> Ranges {
    let page = sys::page_size();
    probe::page_ranges(view.as_fd(), first * page, pages, |stat| state.of(stat))
        .map(|r| r.into_iter().map(|(a, b)| (a + first, b + first)).collect())
        .unwrap_or_else(|e| {
            log::warn!("cachestat of data: {e}");
            Ranges::new()
        })
}

/// The kernel's counts for `[first, first + pages)` of its cache of `data`.
pub fn mount_stat(view: &File, first: u64, pages: u64) -> CacheStat {
    let page = sys::page_size();
    sys::cachestat(view.as_fd(), first * page, pages * page).unwrap_or_default()
}

/// How many pages of `[first, first + pages)` are in `state` in the
/// kernel's cache of `data`.
pub fn mount_count(view: &File, state: PageState, first: u64, pages: u64) -> u64 {
    state.of(&mount_stat(view, first, pages)).min(pages)
}
