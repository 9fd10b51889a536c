//! Page-state probes: which pages of a file range are resident or dirty,
//! asked of the kernel with `cachestat(2)` bisection so the cost follows the
//! number of ranges, not the file size; and which pages of a private
//! mapping were copied on write (`PAGEMAP_SCAN`).

use std::io;
use std::os::fd::BorrowedFd;

use crate::sys::{self, CacheStat};

/// Inclusive ranges of page indices (relative to the window start).
pub type Ranges = Vec<(u64, u64)>;

/// Cells of the first split: one whole-window query, then this many
/// sub-queries, skips most of the bisection levels on huge sparse files.
const FIRST_LEVEL_CELLS: u64 = 1024;

/// Pages within `pages` pages starting at byte `base` of `fd` that `state`
/// counts (it picks one count of a `cachestat` result).
pub fn page_ranges(
    fd: BorrowedFd<'_>,
    base: u64,
    pages: u64,
    state: impl Fn(&CacheStat) -> u64 + Sync,
) -> io::Result<Ranges> {
    let prober = Prober {
        fd,
        base,
        page: sys::page_size(),
        state,
    };
    let mut out = Ranges::new();
    let total = prober.count(0, pages)?;
    if total == 0 {
        return Ok(out);
    }
    if total >= pages {
        out.push((0, pages - 1));
        return Ok(out);
    }
    let cell = pages.div_ceil(FIRST_LEVEL_CELLS).max(1);
    let cells = pages.div_ceil(cell);
    if cells < PARALLEL_CELLS {
        prober.cells(0, cells, cell, pages, &mut out)?;
        return Ok(out);
    }
    // Two halves on two threads: the syscalls dominate and are independent.
    let half = cells / 2;
    let (left, right) = std::thread::scope(|scope| {
        let right = scope.spawn(|| {
            let mut r = Ranges::new();
            prober.cells(half, cells, cell, pages, &mut r).map(|()| r)
        });
        let mut l = Ranges::new();
        let left = prober.cells(0, half, cell, pages, &mut l).map(|()| l);
        (left, right.join())
    });
    out = left?;
    let right = right.map_err(|_| io::Error::other("page probe thread panicked"))??;
    for (first, last) in right {
        push_range(&mut out, first, last);
    }
    Ok(out)
}

/// Splitting the first level over two threads pays off only on big windows.
const PARALLEL_CELLS: u64 = 256;

struct Prober<'a, F> {
    fd: BorrowedFd<'a>,
    base: u64,
    page: u64,
    state: F,
}

impl<F: Fn(&CacheStat) -> u64> Prober<'_, F> {
    /// Cells `[from, to)` of `cell` pages each, clipped to `pages`.
    fn cells(&self, from: u64, to: u64, cell: u64, pages: u64, out: &mut Ranges) -> io::Result<()> {
        for c in from..to {
            let first = c * cell;
            let n = cell.min(pages - first);
            let count = self.count(first, n)?;
            self.bisect(first, n, count, out)?;
        }
        Ok(())
    }

    fn count(&self, first: u64, n: u64) -> io::Result<u64> {
        let stat = sys::cachestat(self.fd, self.base + first * self.page, n * self.page)?;
        Ok((self.state)(&stat).min(n))
    }

    /// `count` pages of `[first, first + n)` are in the state; find them.
    /// Only the left half is asked; the right half is the difference.
    fn bisect(&self, first: u64, n: u64, count: u64, out: &mut Ranges) -> io::Result<()> {
        if count == 0 {
            return Ok(());
        }
        if count >= n {
            push_range(out, first, first + n - 1);
            return Ok(());
        }
        let half = n / 2;
        let left = self.count(first, half)?;
        self.bisect(first, half, left, out)?;
        // Counts move while we look; a derived "all" is checked, since
        // trusting it wrongly would list pages that are not there.
        let mut right = count.saturating_sub(left);
        if right >= n - half {
            right = self.count(first + half, n - half)?;
        }
        self.bisect(first + half, n - half, right, out)
    }
}

/// Append `first..=last` to sorted `out`, merging with its last range.
pub fn push_range(out: &mut Ranges, first: u64, last: u64) {
    match out.last_mut() {
        Some((_, end)) if *end + 1 >= first => *end = (*end).max(last),
        _ => out.push((first, last)),
    }
}

/// Pages of our own `MAP_PRIVATE` mapping at `addr` that were copied on
/// write, as page indices relative to `addr` (`PAGEMAP_SCAN`).
pub fn cow_ranges(addr: u64, pages: u64) -> io::Result<Ranges> {
    let page = sys::page_size();
    let mut out = Ranges::new();
    for (start, end) in sys::anon_ranges(addr, pages * page)? {
        push_range(&mut out, (start - addr) / page, (end - addr) / page - 1);
    }
    Ok(out)
}

/// Pages of our own mapping at `addr` present in our page tables, as page
/// indices relative to `addr` (`PAGEMAP_SCAN`).
pub fn present_ranges(addr: u64, pages: u64) -> io::Result<Ranges> {
    let page = sys::page_size();
    let mut out = Ranges::new();
    for (start, end) in sys::present_ranges(addr, pages * page)? {
        push_range(&mut out, (start - addr) / page, (end - addr) / page - 1);
    }
    Ok(out)
}

/// The union of two range lists.
pub fn union(a: &[(u64, u64)], b: &[(u64, u64)]) -> Ranges {
    let mut all: Ranges = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    let mut out = Ranges::new();
    for (first, last) in all {
        push_range(&mut out, first, last);
    }
    out
}

/// Pages in both sorted range lists.
pub fn intersection(a: &[(u64, u64)], b: &[(u64, u64)]) -> Ranges {
    let (mut i, mut j, mut out) = (0, 0, Ranges::new());
    while i < a.len() && j < b.len() {
        let (first, last) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        if first <= last {
            push_range(&mut out, first, last);
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Pages of sorted `a` not in sorted `b`.
pub fn difference(a: &[(u64, u64)], b: &[(u64, u64)]) -> Ranges {
    let mut out = Ranges::new();
    let mut j = 0;
    for &(first, last) in a {
        let mut from = first;
        while j < b.len() && b[j].1 < from {
            j += 1;
        }
        let mut k = j;
        while from <= last {
            match b.get(k) {
                Some(&(bf, bl)) if bf <= last => {
                    if bf > from {
                        push_range(&mut out, from, bf - 1);
                    }
                    from = from.max(bl.saturating_add(1));
                    k += 1;
                }
                _ => {
                    push_range(&mut out, from, last);
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersection_and_difference() {
        let a = [(0, 5), (8, 9), (20, 30)];
        let b = [(3, 8), (25, 25)];
        assert_eq!(intersection(&a, &b), vec![(3, 5), (8, 8), (25, 25)]);
        assert_eq!(difference(&a, &b), vec![(0, 2), (9, 9), (20, 24), (26, 30)]);
        assert_eq!(difference(&a, &[]), a.to_vec());
        assert_eq!(intersection(&a, &[]), vec![]);
    }

    #[test]
    fn union_merges_overlaps() {
        assert_eq!(
            union(&[(0, 2), (9, 9)], &[(1, 4), (6, 6)]),
            vec![(0, 4), (6, 6), (9, 9)]
        );
    }

    #[test]
    fn adjacent_ranges_merge() {
        let mut r = Ranges::new();
        push_range(&mut r, 0, 1);
        push_range(&mut r, 2, 2);
        push_range(&mut r, 5, 6);
        assert_eq!(r, vec![(0, 2), (5, 6)]);
    }

    #[test]
    fn bisection_finds_exact_dirty_pages() {
        use std::io::Write as _;
        use std::os::fd::AsFd;
        let mut file = tempfile::tempfile().unwrap();
        let page = sys::page_size();
        file.set_len(4096 * page).unwrap();
        // Writes into never-read pages make one-page folios: exact lists.
        for p in [0u64, 7, 8, 9, 1000, 4095] {
            std::os::unix::fs::FileExt::write_at(&file, b"x", p * page).unwrap();
        }
        file.flush().unwrap();
        let ranges = page_ranges(file.as_fd(), 0, 4096, |s| s.dirty).unwrap();
        if ranges.is_empty() {
            eprintln!("pages were written back before we looked; nothing to check");
            return;
        }
        assert_eq!(ranges, vec![(0, 0), (7, 9), (1000, 1000), (4095, 4095)]);
    }
}
