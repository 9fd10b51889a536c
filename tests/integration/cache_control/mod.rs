//! The cache-control files `madvise`, `fadvise`, `mlock` (and ranges on
//! `msync`). Every effect is checked against the test's own measurement,
//! never the daemon's: `cachestat(2)` and `mincore(2)` on the source,
//! `/proc/<daemon>/smaps` for locked and copied pages, `vmtouch -e` for
//! eviction. Measurements follow the command at once: this kernel's DAMON
//! evicts clean pages left idle for about 30 s.

mod bad_input;
mod evict_warm;
mod lock;
mod modes;
mod ranges;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::util::{stat_value, TestMount};

pub const PAGE: u64 = 4096;

/// `struct cachestat` of `cachestat(2)`, in pages.
#[repr(C)]
#[derive(Debug, Default)]
pub struct CacheStat {
    pub cache: u64,
    pub dirty: u64,
    pub writeback: u64,
    pub evicted: u64,
    pub recently_evicted: u64,
}

/// `struct cachestat_range`.
#[repr(C)]
struct CacheStatRange {
    off: u64,
    len: u64,
}

/// The kernel's page-cache counts for `pages` pages of `path` from page
/// `first` (`pages == 0`: to the end of the file).
pub fn cachestat(path: &Path, first: u64, pages: u64) -> CacheStat {
    let file = File::open(path).unwrap();
    let range = CacheStatRange {
        off: first * PAGE,
        len: pages * PAGE,
    };
    let mut stat = CacheStat::default();
    // SAFETY: syscall 451 is cachestat(fd, range, stat, flags); both
    // pointers are to live repr(C) values laid out as the kernel's structs,
    // and the kernel writes only `stat`.
    let rc = unsafe {
        libc::syscall(
            451,
            file.as_raw_fd(),
            &range as *const CacheStatRange,
            &mut stat as *mut CacheStat,
            0u32,
        )
    };
    assert_eq!(rc, 0, "cachestat: {}", std::io::Error::last_os_error());
    stat
}

/// The pages of `path` in the page cache now, by `mincore(2)` on a mapping
/// of our own that is never read through (so it maps no page itself).
pub fn resident(path: &Path) -> Vec<u64> {
    let file = File::open(path).unwrap();
    // SAFETY: a read-only shared mapping we never dereference; only
    // mincore looks at its address range.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let mut vec = vec![0u8; map.len().div_ceil(PAGE as usize)];
    // SAFETY: `map` is a live mapping of `map.len()` bytes and `vec` has one
    // byte for each of its pages.
    let rc = unsafe {
        libc::mincore(
            map.as_ptr() as *mut libc::c_void,
            map.len(),
            vec.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    (0u64..)
        .zip(vec)
        .filter(|(_, v)| v & 1 == 1)
        .map(|(i, _)| i)
        .collect()
}

/// Page indices of a cpulist line (`0-3,17`).
pub fn pages_of(list: &str) -> Vec<u64> {
    list.trim_end()
        .split(',')
        .filter(|p| !p.is_empty())
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => (a.parse::<u64>().unwrap()..=b.parse().unwrap()).collect(),
            None => vec![part.parse().unwrap()],
        })
        .collect()
}

/// The sum of `field` (in kB) over the daemon's mappings whose header line
/// contains `name`, or over all of them.
pub fn smaps_kb(pid: u32, name: Option<&str>, field: &str) -> u64 {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut counting = false;
    let mut total = 0;
    for line in smaps.lines() {
        // Headers start with an address; fields with a capitalised name.
        if line.starts_with(|c: char| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
            counting = name.is_none_or(|n| line.contains(n));
        } else if let Some(value) = line.strip_prefix(field).filter(|_| counting) {
            let kb = value.trim().trim_end_matches(" kB");
            total += kb.parse::<u64>().unwrap_or_else(|_| panic!("{line}"));
        }
    }
    total
}

/// Pages locked in the daemon: its smaps `Locked:` (4 KiB pages).
pub fn locked_pages(tm: &TestMount) -> u64 {
    smaps_kb(tm.pid(), None, "Locked:") / (PAGE / 1024)
}

/// One command in one `write(2)` to control file `file` of `src`; the
/// errno if it fails.
pub fn send(tm: &TestMount, src: &str, file: &str, command: &[u8]) -> Result<(), i32> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(tm.file(src, file))
        .unwrap();
    match f.write(command) {
        Ok(n) => {
            assert_eq!(n, command.len(), "a short write");
            Ok(())
        }
        Err(e) => Err(e.raw_os_error().unwrap_or(0)),
    }
}

/// `send`, which must succeed; returns the file's report.
pub fn run(tm: &TestMount, src: &str, file: &str, command: &str) -> String {
    let sent = send(tm, src, file, command.as_bytes());
    let report = tm.read(src, file);
    assert_eq!(sent, Ok(()), "{file} '{command}':\n{report}");
    assert_eq!(stat_value(&report, "result").as_deref(), Some("ok"));
    report
}

/// A number in a report or `stats`.
pub fn num(text: &str, key: &str) -> u64 {
    stat_value(text, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {key} in:\n{text}"))
}

/// The byte every page `i` of a test source holds.
pub fn fill_byte(page: u64) -> u8 {
    (page % 251) as u8 + 1
}

/// Write `pages` pages of `path` one page per write, then sync: all of
/// them resident and clean, in one-page folios, so that eviction and
/// locking act page by page. Never truncates a file a mount serves.
pub fn resident_source(path: &Path, pages: u64) {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    for page in 0..pages {
        file.write_all_at(&[fill_byte(page); PAGE as usize], page * PAGE)
            .unwrap();
    }
    file.sync_all().unwrap();
    assert_eq!(cachestat(path, 0, pages).cache, pages);
}

/// A fresh mount of `args`, after `prepare` has set up its directory.
pub fn mount_with(args: &[&str], prepare: impl FnOnce(&TestMount)) -> TestMount {
    let mut tm = TestMount::new();
    prepare(&tm);
    tm.mount(args);
    tm
}

/// How many events of `kind` the source's `events` holds.
pub fn events_of(tm: &TestMount, src: &str, kind: &str) -> usize {
    let needle = format!(" {kind} ");
    tm.read(src, "events")
        .lines()
        .filter(|l| l.contains(&needle))
        .count()
}

/// Wait until the pages of `path` in the page cache are exactly `want`
/// (reads started by a hint finish after the write returns).
pub fn wait_resident(path: &Path, want: &[u64], what: &str) {
    let start = std::time::Instant::now();
    loop {
        let now = resident(path);
        if now == want {
            return;
        }
        assert!(
            start.elapsed() < crate::util::DEADLINE,
            "{what}: resident {now:?}, want {want:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
