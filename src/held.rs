//! `--crash-test`: every write to `data` is held in the daemon's private
//! (copy-on-write) mapping of the window until a sync persists it to the
//! source, like a disk cache that loses power. The copied pages are the
//! unsynced ones; a crash throws them away (or keeps some, on command) and
//! the mapping shows the source again.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::probe::{self, Ranges};
use crate::sys::{self, Mapping};

/// Bytes copied from the private mapping to the source per `pwrite`.
const CHUNK: usize = 1 << 20;

/// Which unsynced pages a crash keeps (persists) rather than loses.
#[derive(Debug, Clone, PartialEq)]
pub enum Keep {
    Nothing,
    /// These pages of the window (the others are lost).
    Pages(Ranges),
    /// Each page with this probability, from a seeded generator.
    Random {
        probability: f64,
        seed: u64,
    },
}

/// When an armed crash happens, relative to the sync that triggers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Before,
    After,
}

impl When {
    pub fn name(self) -> &'static str {
        match self {
            When::Before => "before",
            When::After => "after",
        }
    }
}

/// What a sync point turns out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPoint {
    Plain,
    /// The armed crash: `(sync number, when)`.
    Crash(u64, When),
}

/// What a crash did.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashReport {
    pub cause: String,
    pub lost: Ranges,
    pub kept: Ranges,
    pub at_unix_ns: u128,
}

impl CrashReport {
    pub fn lost_pages(&self) -> u64 {
        self.lost.iter().map(|(a, b)| b - a + 1).sum()
    }

    pub fn kept_pages(&self) -> u64 {
        self.kept.iter().map(|(a, b)| b - a + 1).sum()
    }
}

#[derive(Debug, Default)]
pub struct Held {
    /// Writes take it shared; a sync or a crash takes it alone, so no
    /// write lands between copying a page out and dropping the copy.
    lock: RwLock<()>,
    /// Bumped by each crash: handles opened before it are dead.
    epoch: AtomicU64,
    /// A crash is under way: reads and writes of `data` fail.
    crashing: AtomicBool,
    syncs: AtomicU64,
    crashes: AtomicU64,
    /// The sync number (counted from the mount) an armed crash waits for.
    armed: Mutex<Option<(u64, When)>>,
    last: Mutex<Option<CrashReport>>,
}

impl Held {
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn crashing(&self) -> bool {
        self.crashing.load(Ordering::Acquire)
    }

    pub fn set_crashing(&self, on: bool) {
        self.crashing.store(on, Ordering::Release);
    }

    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    pub fn crashes(&self) -> u64 {
        self.crashes.load(Ordering::Relaxed)
    }

    pub fn last(&self) -> Option<CrashReport> {
        self.last.lock().expect("no panics: they abort").clone()
    }

    /// Held shared by a write to the private mapping.
    pub fn writing(&self) -> RwLockReadGuard<'_, ()> {
        self.lock.read().expect("no panics: they abort")
    }

    /// Arm a crash at the `n`-th sync from now (1 = the next one).
    pub fn arm(&self, n: u64, when: When) -> u64 {
        let at = self.syncs().saturating_add(n);
        *self.armed.lock().expect("no panics: they abort") = Some((at, when));
        at
    }

    pub fn armed(&self) -> Option<(u64, When)> {
        *self.armed.lock().expect("no panics: they abort")
    }

    /// Count one sync; the armed crash if this is its sync.
    pub fn next_sync(&self) -> SyncPoint {
        let n = self.syncs.fetch_add(1, Ordering::Relaxed) + 1;
        let mut armed = self.armed.lock().expect("no panics: they abort");
        match *armed {
            Some((at, when)) if at == n => {
                *armed = None;
                SyncPoint::Crash(n, when)
            }
            _ => SyncPoint::Plain,
        }
    }

    /// Unsynced pages of `[first, first + pages)` of the window: the pages
    /// the private mapping holds copies of.
    pub fn unsynced(&self, mapping: &Mapping, first: u64, pages: u64) -> io::Result<Ranges> {
        let page = sys::page_size();
        let ranges = probe::cow_ranges(mapping.address() as u64 + first * page, pages)?;
        Ok(ranges
            .into_iter()
            .map(|(a, b)| (a + first, b + first))
            .collect())
    }

    /// Persist the unsynced pages of `[offset, offset + length)`: copy them
    /// to the source (`base` is the window's offset in it), `fdatasync`,
    /// then drop the copies so the mapping shows the source again. Returns
    /// the pages persisted.
    pub fn persist(
        &self,
        mapping: &Mapping,
        file: &File,
        base: u64,
        offset: u64,
        length: u64,
    ) -> io::Result<u64> {
        let _alone = self.lock.write().expect("no panics: they abort");
        let page = sys::page_size();
        let end = offset.saturating_add(length).min(mapping.len());
        if end <= offset {
            return Ok(0);
        }
        let first = offset / page;
        let ranges = self.unsynced(mapping, first, (end - first * page).div_ceil(page))?;
        copy_out(mapping, file, base, &ranges)?;
        file.sync_data()?;
        drop_copies(mapping, &ranges)?;
        Ok(ranges.iter().map(|(a, b)| b - a + 1).sum())
    }

    /// Lose every unsynced page but those `keep` names (they are persisted
    /// first), and start a new epoch. The caller has made the kernel drop
    /// its cache of `data` with `crashing` set, so nothing older arrives.
    pub fn crash(
        &self,
        mapping: &Mapping,
        file: &File,
        base: u64,
        keep: &Keep,
        cause: String,
    ) -> io::Result<CrashReport> {
        let _alone = self.lock.write().expect("no panics: they abort");
        let page = sys::page_size();
        let held = self.unsynced(mapping, 0, mapping.len().div_ceil(page))?;
        let (kept, lost) = split(&held, keep);
        copy_out(mapping, file, base, &kept)?;
        if !kept.is_empty() {
            file.sync_data()?;
        }
        drop_copies(mapping, &held)?;
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.crashes.fetch_add(1, Ordering::Relaxed);
        let report = CrashReport {
            cause,
            lost,
            kept,
            at_unix_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        };
        *self.last.lock().expect("no panics: they abort") = Some(report.clone());
        Ok(report)
    }
}

fn copy_out(mapping: &Mapping, file: &File, base: u64, ranges: &Ranges) -> io::Result<()> {
    let page = sys::page_size();
    let mut buf = vec![0u8; CHUNK];
    for &(a, b) in ranges {
        let (mut at, end) = (a * page, ((b + 1) * page).min(mapping.len()));
        while at < end {
            let n = usize::try_from(end - at).unwrap_or(CHUNK).min(CHUNK);
            let got = mapping.read_at(at, &mut buf[..n])?;
            if got == 0 {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            file.write_all_at(&buf[..got], base + at)?;
            at += got as u64;
        }
    }
    Ok(())
}

/// `MADV_DONTNEED` on a private file mapping throws the copies away: the
/// pages read the file again.
fn drop_copies(mapping: &Mapping, ranges: &Ranges) -> io::Result<()> {
    let page = sys::page_size();
    for &(a, b) in ranges {
        let end = ((b + 1) * page).min(mapping.len());
        mapping.madvise(a * page, end - a * page, libc::MADV_DONTNEED)?;
    }
    Ok(())
}

/// The held ranges split into (kept, lost) as `keep` says.
fn split(held: &Ranges, keep: &Keep) -> (Ranges, Ranges) {
    match keep {
        Keep::Nothing => (Ranges::new(), held.clone()),
        Keep::Pages(wanted) => {
            let kept = probe::intersection(held, wanted);
            let lost = probe::difference(held, &kept);
            (kept, lost)
        }
        Keep::Random { probability, seed } => {
            let mut rng = SplitMix64(*seed);
            let (mut kept, mut lost) = (Ranges::new(), Ranges::new());
            for &(a, b) in held {
                for p in a..=b {
                    let roll = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
                    let side = if roll < *probability {
                        &mut kept
                    } else {
                        &mut lost
                    };
                    probe::push_range(side, p, p);
                }
            }
            (kept, lost)
        }
    }
}

/// A small seeded generator, so `keep random:P seed=N` is repeatable.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_splits_the_held_pages() {
        let held = vec![(0, 3), (10, 10)];
        assert_eq!(split(&held, &Keep::Nothing), (vec![], held.clone()));
        assert_eq!(
            split(&held, &Keep::Pages(vec![(2, 10)])),
            (vec![(2, 3), (10, 10)], vec![(0, 1)])
        );
        let all = split(
            &held,
            &Keep::Random {
                probability: 1.0,
                seed: 1,
            },
        );
        assert_eq!(all, (held.clone(), vec![]));
        let some = split(
            &held,
            &Keep::Random {
                probability: 0.5,
                seed: 7,
            },
        );
        assert_eq!(
            split(
                &held,
                &Keep::Random {
                    probability: 0.5,
                    seed: 7
                }
            ),
            some,
            "the same seed gives the same crash"
        );
        let count = |r: &Ranges| r.iter().map(|(a, b)| b - a + 1).sum::<u64>();
        assert_eq!(count(&some.0) + count(&some.1), 5);
    }

    #[test]
    fn the_armed_crash_fires_at_its_sync() {
        let h = Held::default();
        assert_eq!(h.next_sync(), SyncPoint::Plain);
        h.arm(2, When::Before);
        assert_eq!(h.next_sync(), SyncPoint::Plain);
        assert_eq!(h.next_sync(), SyncPoint::Crash(3, When::Before));
        assert_eq!(h.next_sync(), SyncPoint::Plain, "fires once");
    }
}
