// ---------------------------------------------------------- workload pieces

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::helpers::{page_size, secs, SplitMix64};
use crate::BLOCK;

/// Read the whole file in 1 MiB blocks through a fresh descriptor.
pub(crate) fn read_all(path: &Path, size: u64) {
    read_range(path, 0, size);
}

/// Read from `start` to the end of the file in 1 MiB blocks through a fresh
/// descriptor; there must be `len` bytes.
pub(crate) fn read_range(path: &Path, start: u64, len: u64) {
    let mut f = File::open(path).expect("open for reading");
    f.seek(SeekFrom::Start(start)).expect("seek");
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert_eq!(total, len, "short read of {}", path.display());
}

/// pwrite `block` over the whole file, in order.
pub(crate) fn write_all(path: &Path, block: &[u8], size: u64) {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for writing");
    for off in (0..size).step_by(block.len()) {
        f.write_all_at(block, off).expect("pwrite");
    }
}

pub(crate) fn pread_each(path: &Path, offsets: &[u64]) {
    let f = File::open(path).expect("open for reading");
    let mut buf = [0u8; 4096];
    for &off in offsets {
        f.read_exact_at(&mut buf, off).expect("pread");
    }
}

/// Map the file MAP_SHARED read-only and read one byte of every page.
pub(crate) fn touch_pages(path: &Path) {
    let f = File::open(path).expect("open for mmap");
    // SAFETY: nobody truncates the file while it is mapped here.
    let map = unsafe { memmap2::MmapOptions::new().map(&f) }.expect("mmap");
    let mut sum = 0u8;
    for off in (0..map.len()).step_by(page_size() as usize) {
        // SAFETY: `off` is inside the mapping; volatile so every page faults.
        sum = sum.wrapping_add(unsafe { std::ptr::read_volatile(map.as_ptr().add(off)) });
    }
    std::hint::black_box(sum);
}

/// Map `path` shared and writable, store into every page of the first
/// `dirty` bytes, then time `sync` alone.
pub(crate) fn time_sync(
    path: &Path,
    dirty: u64,
    round: usize,
    sync: impl FnOnce(&memmap2::MmapMut),
) -> f64 {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open for a shared writable mapping");
    // SAFETY: nobody truncates the file while it is mapped here.
    let mut map = unsafe { memmap2::MmapOptions::new().map_mut(&f) }.expect("mmap");
    for off in (0..dirty as usize).step_by(page_size() as usize) {
        map[off] = map[off].wrapping_add(round as u8 + 1);
    }
    secs(|| sync(&map))
}

/// `echo COMMAND > control`: one open, one write(2) of the whole command,
/// one close.
pub(crate) fn echo(control: &Path, command: &[u8]) {
    let mut f = OpenOptions::new()
        .write(true)
        .open(control)
        .unwrap_or_else(|e| panic!("open {}: {e}", control.display()));
    let n = f
        .write(command)
        .unwrap_or_else(|e| panic!("write to {}: {e}", control.display()));
    assert_eq!(n, command.len(), "short write to {}", control.display());
}

/// `cat FILE`: open, read to the end, close.
pub(crate) fn cat(path: &Path) {
    let mut f = File::open(path).expect("open control file");
    let mut buf = Vec::with_capacity(64 * 1024);
    f.read_to_end(&mut buf).expect("read control file");
    std::hint::black_box(buf);
}

pub(crate) fn read_text(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `vmtouch FLAG src` as a process, its output discarded.
pub(crate) fn run_vmtouch(flag: &str, src: &Path) {
    let status = Command::new("vmtouch")
        .arg(flag)
        .arg(src)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run vmtouch");
    assert!(status.success(), "vmtouch failed: {status}");
}

/// Dirty `n` distinct pages at deterministic random offsets with 1-byte
/// pwrites to the source itself. Pages never read make one-page folios, so
/// the kernel reports exactly these pages dirty (large folios would not).
pub(crate) fn dirty_scattered(src: &Path, size: u64, n: usize) {
    let f = OpenOptions::new()
        .write(true)
        .open(src)
        .expect("open sparse source");
    let mut rng = SplitMix64(7);
    let mut pages = BTreeSet::new();
    while pages.len() < n {
        pages.insert(rng.below(size / page_size()));
    }
    for page in pages {
        f.write_all_at(b"x", page * page_size())
            .expect("pwrite 1 byte");
    }
}

/// Write back, then drop, the source's pages (and those of the path under
/// test, if it has a page cache of its own, as a FUSE inode can).
pub(crate) fn drop_cache(native: &Path, path: &Path) {
    sync_file(native);
    for p in [native, path] {
        let f = File::open(p).expect("open to drop the cache");
        // SAFETY: plain syscall on a valid descriptor.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise(DONTNEED) on {}", p.display());
    }
}

pub(crate) fn sync_file(path: &Path) {
    File::open(path)
        .and_then(|f| f.sync_data())
        .expect("fdatasync the source");
}

/// Fraction of the file's pages in memory, from mincore(2).
pub(crate) fn resident_fraction(path: &Path) -> f64 {
    let f = File::open(path).expect("open for mincore");
    // SAFETY: mapped only to ask mincore; never dereferenced.
    let map = unsafe { memmap2::MmapOptions::new().map(&f) }.expect("mmap");
    let pages = map.len().div_ceil(page_size() as usize);
    let mut vec = vec![0u8; pages];
    // SAFETY: the mapping is `map.len()` bytes and `vec` has one byte per page.
    let rc = unsafe { libc::mincore(map.as_ptr() as *mut _, map.len(), vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore");
    vec.iter().filter(|&&b| b & 1 == 1).count() as f64 / pages as f64
}

/// Number of pages in a cpulist line such as `0-3,17`.
pub(crate) fn cpulist_count(text: &str) -> u64 {
    text.trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

pub(crate) fn vm_rss_mib(pid: u32) -> f64 {
    let status = read_text(&PathBuf::from(format!("/proc/{pid}/status")));
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib / 1024.0
}

/// Pseudo-random bytes, so that the file is not sparse and nothing
/// along the way can take a shortcut for zeros.
pub(crate) fn pattern(len: usize) -> Vec<u8> {
    let mut rng = SplitMix64(1);
    (0..len).map(|_| rng.next() as u8).collect()
}
