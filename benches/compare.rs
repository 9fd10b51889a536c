//! `cargo bench --bench compare`: mmapfs against the native file (and against
//! bindfs, a plain FUSE pass-through, when it is installed), one row per
//! performance target of SPEC §4.
//!
//! Everything is measured in one process, in one run, on one machine, so the
//! ratios compare like with like. Each number is the median of several runs;
//! native, mmapfs and bindfs take turns in every round so that drift of the
//! machine (background writeback, page-cache eviction) hits all three alike.
//!
//! Needs /dev/fuse (root for passthrough). Environment:
//! - `MMAPFS_BENCH_SIZE`: size of the file under test (default `1G`; `256M`...)
//! - `MMAPFS_BENCH_IO`: passed to the daemon as `--io` (default: the daemon's)
//! - `MMAPFS_BIN`: the daemon binary (default: the one cargo just built)
//! - `TMPDIR`: where the scratch files live (the filesystem being measured)
//!
//! It runs only when cargo passes `--bench` (so `cargo test --all-targets`
//! does not start a minute of FUSE I/O); any other argument is ignored.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Block size of the sequential workloads.
const BLOCK: usize = 1 << 20;
/// Rounds for fast workloads; slow ones (write, vmtouch) use `SLOW_RUNS`.
const RUNS: usize = 5;
const SLOW_RUNS: usize = 3;
/// Cold reads depend on the storage below, which is the noisiest part of a
/// machine (a virtual disk may be cached by its host): take more rounds.
const COLD_RUNS: usize = 7;
/// Rounds for the control files: each read is short, so take many.
const CAT_RUNS: usize = 21;
const STATS_RUNS: usize = 101;
const RANDOM_READS: usize = 20_000;
const SCATTERED_DIRTY: usize = 1000;
const MSYNC_DIRTY: u64 = 64 * MIB;
const SPARSE_DIRTY_SIZE: &str = "64G";
const SPARSE_RESIDENT_SIZE: &str = "1T";
const MOUNT_DEADLINE: Duration = Duration::from_secs(20);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("compare: not run as a benchmark; use `cargo bench --bench compare`");
        return;
    }
    if !Path::new("/dev/fuse").exists() {
        eprintln!("compare: SKIPPED: /dev/fuse is missing, nothing can be mounted");
        return;
    }
    let size = bench_size();
    let dir = tempfile::Builder::new()
        .prefix("mmapfs-bench")
        .tempdir()
        .expect("create the scratch directory");
    progress(&format!("scratch directory {}", dir.path().display()));
    print_machine(dir.path(), size);
    let rows = run_all(dir.path(), size);
    print_table(&rows);
}

/// Every workload in turn; the mounts live only as long as they are needed,
/// and each unmounts in Drop even if a workload panics.
fn run_all(dir: &Path, size: u64) -> Vec<Row> {
    let paths = Paths::set_up(dir, size);
    println!("mmapfs io_mode: {}", paths.mmapfs.stat("io_mode"));
    println!();

    let mut rows = vec![
        warm_read(&paths, size),
        cold_read(&paths, size),
        seq_write(&paths, size),
        random_reads(&paths, size),
        mmap_walk(&paths, size),
    ];
    rows.extend(dirty_pages_and_rss(dir));
    rows.push(resident_pages(dir));
    rows.push(cat_stats(&paths.mmapfs, false));
    rows.push(cat_stats(&paths.mmapfs, true));
    rows.push(msync_cost(&paths, size));
    rows
}

// ---------------------------------------------------------------- workloads

/// Row 1: Warm sequential read: every cache layer is filled once first.
fn warm_read(p: &Paths, size: u64) -> Row {
    progress("warm sequential read");
    for path in p.targets() {
        read_all(&path, size);
    }
    let t = p.compare(RUNS, |path| mb_per_s(size, secs(|| read_all(path, size))));
    Row::new("warm seq read, 1 MiB", "MB/s", t, Target::RatioAtLeast(0.8))
}

/// Row 2: Cold sequential read: the source's pages are dropped before each run;
/// for bindfs and mmapfs the source is the same native file.
fn cold_read(p: &Paths, size: u64) -> Row {
    progress("cold sequential read");
    let mut worst_left = 0.0f64;
    let t = p.compare(COLD_RUNS, |path| {
        drop_cache(&p.native, path);
        worst_left = worst_left.max(resident_fraction(&p.native));
        mb_per_s(size, secs(|| read_all(path, size)))
    });
    // fadvise cannot drop pages that some process has mapped; say so if the
    // "cold" read was not cold.
    if worst_left > 0.01 {
        progress(&format!(
            "  warning: up to {:.1}% of the source stayed resident after DONTNEED",
            worst_left * 100.0
        ));
    }
    Row::new("cold seq read, 1 MiB", "MB/s", t, Target::RatioAtLeast(0.8))
}

/// Row 3: Sequential write over the whole file; the dirty pages are written back
/// (untimed) after each run so every run starts from the same clean state.
fn seq_write(p: &Paths, size: u64) -> Row {
    progress("sequential write");
    let block = pattern(BLOCK);
    let t = p.compare(SLOW_RUNS, |path| {
        let s = secs(|| write_all(path, &block, size));
        sync_file(&p.native);
        mb_per_s(size, s)
    });
    Row::new("seq write, 1 MiB", "MB/s", t, Target::RatioAtLeast(0.7))
}

/// Row 4: 4 KiB random reads from a warm file, one thread, the same offsets for
/// every target.
fn random_reads(p: &Paths, size: u64) -> Row {
    progress("4 KiB random reads");
    read_all(&p.native, size);
    let mut rng = SplitMix64(42);
    let pages = size / 4096;
    let offsets: Vec<u64> = (0..RANDOM_READS).map(|_| rng.below(pages) * 4096).collect();
    let t = p.compare(RUNS, |path| {
        RANDOM_READS as f64 / secs(|| pread_each(path, &offsets))
    });
    Row::new(
        "4 KiB random read, 1 thread",
        "IOPS",
        t,
        Target::RatioAtLeast(0.5),
    )
}

/// Row 5: An outside MAP_SHARED mapping touching one byte per page; a fresh
/// mapping each run so every page faults again.
fn mmap_walk(p: &Paths, size: u64) -> Row {
    progress("mmap page walk");
    read_all(&p.native, size);
    let pages = (size / page_size()) as f64;
    let t = p.compare(RUNS, |path| secs(|| touch_pages(path)) * 1e9 / pages);
    Row::new(
        "outside mmap, touch every page",
        "ns/page",
        t,
        Target::RatioAtMost(1.5),
    )
}

/// Rows 6 and 10: `cat dirty_pages` on a 64 GiB sparse source with scattered
/// dirty pages, against `vmtouch -v` on the same file; then the daemon's RSS
/// with that source mapped and idle.
fn dirty_pages_and_rss(dir: &Path) -> Vec<Row> {
    progress(&format!(
        "dirty_pages on a {SPARSE_DIRTY_SIZE} sparse source"
    ));
    let src = dir.join("sparse").join("big.img");
    let mount = MmapfsMount::start(dir, "mnt-dirty", &["--size", SPARSE_DIRTY_SIZE], &src);
    let size = fs::metadata(&src).expect("stat sparse source").len();
    dirty_scattered(&src, size, SCATTERED_DIRTY);

    let file = mount.file("dirty_pages");
    let before = cpulist_count(&read_text(&file));
    let samples: Vec<f64> = (0..CAT_RUNS).map(|_| ms(secs(|| cat(&file)))).collect();
    report_spread("cat dirty_pages (ms)", &samples);
    let ours = median(samples);
    let after = cpulist_count(&read_text(&file));
    progress(&format!(
        "  dirty_pages listed {before} pages before and {after} after timing \
         ({SCATTERED_DIRTY} written)"
    ));
    let vmtouch = on_path("vmtouch").then(|| {
        let samples: Vec<f64> = (0..SLOW_RUNS)
            .map(|_| ms(secs(|| run_vmtouch(&src))))
            .collect();
        report_spread("vmtouch -v (ms)", &samples);
        median(samples)
    });
    let dirty = Row {
        native: vmtouch,
        ..Row::single(
            &format!("cat dirty_pages, {SPARSE_DIRTY_SIZE} sparse, {SCATTERED_DIRTY} dirty (native: vmtouch -v)"),
            "ms",
            ours,
            Target::FasterThan {
                below: 10.0,
                speedup: 20.0,
            },
        )
    };

    // Let the daemon settle so the number is the idle footprint.
    std::thread::sleep(Duration::from_millis(500));
    let rss = Row::single(
        &format!("daemon RSS, {SPARSE_DIRTY_SIZE} source mapped, idle"),
        "MiB",
        vm_rss_mib(mount.pid()),
        Target::Below(32.0),
    );
    vec![dirty, rss]
}

/// Row 7: `cat resident_pages` on a 1 TiB sparse source with nothing resident.
fn resident_pages(dir: &Path) -> Row {
    progress(&format!(
        "resident_pages on a {SPARSE_RESIDENT_SIZE} sparse source"
    ));
    let src = dir.join("sparse").join("huge.img");
    let mount = MmapfsMount::start(dir, "mnt-resident", &["--size", SPARSE_RESIDENT_SIZE], &src);
    let file = mount.file("resident_pages");
    let listed = cpulist_count(&read_text(&file));
    if listed != 0 {
        progress(&format!(
            "  warning: resident_pages lists {listed} pages, expected none"
        ));
    }
    let t = median((0..CAT_RUNS).map(|_| ms(secs(|| cat(&file)))).collect());
    Row::single(
        &format!("cat resident_pages, {SPARSE_RESIDENT_SIZE} sparse, none resident"),
        "ms",
        t,
        Target::Below(2.0),
    )
}

/// Row 8: `cat stats`, per source (which probes the page cache) or at the root.
fn cat_stats(mount: &MmapfsMount, root: bool) -> Row {
    let (file, name) = if root {
        (mount.mnt.join("stats"), "cat stats (root)")
    } else {
        (mount.file("stats"), "cat stats (source, warm file)")
    };
    progress(name);
    let t = median((0..STATS_RUNS).map(|_| ms(secs(|| cat(&file)))).collect());
    Row::single(name, "ms", t, Target::Below(1.0))
}

/// Row 9: `echo sync > msync` against msync(2) of a native MAP_SHARED mapping,
/// each after dirtying the same 64 MiB through a mapping (of `data` for
/// mmapfs, of the source for native). Only the sync itself is timed.
fn msync_cost(p: &Paths, size: u64) -> Row {
    progress("msync: echo sync > msync vs msync(2)");
    let dirty = MSYNC_DIRTY.min(size);
    let control = p.mmapfs.file("msync");
    let mut native = Vec::new();
    let mut ours = Vec::new();
    for round in 0..RUNS {
        // Alternate which one goes first, as `Paths::compare` does.
        for k in 0..2 {
            sync_file(&p.native);
            if (round + k) % 2 == 0 {
                native.push(ms(time_sync(&p.native, dirty, round, |map| {
                    map.flush().expect("msync(MS_SYNC)")
                })));
            } else {
                ours.push(ms(time_sync(&p.mmapfs.data(), dirty, round, |_| {
                    echo_sync(&control)
                })));
            }
        }
    }
    progress(&format!(
        "  last msync result: {}",
        read_text(&control).lines().collect::<Vec<_>>().join(", ")
    ));
    report_spread("msync(2)", &native);
    report_spread("echo sync > msync", &ours);
    let t = Triple {
        native: median(native),
        mmapfs: median(ours),
        bindfs: None,
    };
    Row::new(
        &format!(
            "echo sync > msync, {} MiB dirty (native: msync(2))",
            dirty / MIB
        ),
        "ms",
        t,
        Target::AtMostPlus {
            factor: 1.2,
            slack: 0.2,
        },
    )
}

// ---------------------------------------------------------- workload pieces

/// Read the whole file in 1 MiB blocks through a fresh descriptor.
fn read_all(path: &Path, size: u64) {
    let mut f = File::open(path).expect("open for reading");
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert_eq!(total, size, "short read of {}", path.display());
}

/// pwrite `block` over the whole file, in order.
fn write_all(path: &Path, block: &[u8], size: u64) {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for writing");
    for off in (0..size).step_by(block.len()) {
        f.write_all_at(block, off).expect("pwrite");
    }
}

fn pread_each(path: &Path, offsets: &[u64]) {
    let f = File::open(path).expect("open for reading");
    let mut buf = [0u8; 4096];
    for &off in offsets {
        f.read_exact_at(&mut buf, off).expect("pread");
    }
}

/// Map the file MAP_SHARED read-only and read one byte of every page.
fn touch_pages(path: &Path) {
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
fn time_sync(path: &Path, dirty: u64, round: usize, sync: impl FnOnce(&memmap2::MmapMut)) -> f64 {
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

/// `echo sync > msync`: one open, one write, one close.
fn echo_sync(control: &Path) {
    let mut f = OpenOptions::new()
        .write(true)
        .open(control)
        .expect("open msync");
    f.write_all(b"sync\n").expect("write sync to msync");
}

/// `cat FILE`: open, read to the end, close.
fn cat(path: &Path) {
    let mut f = File::open(path).expect("open control file");
    let mut buf = Vec::with_capacity(64 * 1024);
    f.read_to_end(&mut buf).expect("read control file");
    std::hint::black_box(buf);
}

fn read_text(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn run_vmtouch(src: &Path) {
    let status = Command::new("vmtouch")
        .arg("-v")
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
fn dirty_scattered(src: &Path, size: u64, n: usize) {
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
fn drop_cache(native: &Path, path: &Path) {
    sync_file(native);
    for p in [native, path] {
        let f = File::open(p).expect("open to drop the cache");
        // SAFETY: plain syscall on a valid descriptor.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise(DONTNEED) on {}", p.display());
    }
}

fn sync_file(path: &Path) {
    File::open(path)
        .and_then(|f| f.sync_data())
        .expect("fdatasync the source");
}

/// Fraction of the file's pages in memory, from mincore(2).
fn resident_fraction(path: &Path) -> f64 {
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
fn cpulist_count(text: &str) -> u64 {
    text.trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

fn vm_rss_mib(pid: u32) -> f64 {
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
fn pattern(len: usize) -> Vec<u8> {
    let mut rng = SplitMix64(1);
    (0..len).map(|_| rng.next() as u8).collect()
}

// ------------------------------------------------------------------- setup

/// The file under test, seen natively, through mmapfs and through bindfs.
struct Paths {
    native: PathBuf,
    // Field order is drop order: unmount before anything else goes away.
    mmapfs: MmapfsMount,
    bindfs: Option<FuseMount>,
}

impl Paths {
    fn set_up(dir: &Path, size: u64) -> Paths {
        let src_dir = dir.join("src");
        fs::create_dir_all(&src_dir).expect("mkdir src");
        let native = src_dir.join("file.bin");
        progress(&format!("writing the {} MiB test file", size / MIB));
        create_file(&native, size);
        let mmapfs = MmapfsMount::start(dir, "mnt", &[], &native);
        let bindfs = if on_path("bindfs") {
            let mnt = dir.join("bind");
            let mut cmd = Command::new("bindfs");
            cmd.arg("-f").arg(&src_dir).arg(&mnt);
            Some(FuseMount::start(
                cmd,
                "bindfs",
                &mnt,
                &mnt.join("file.bin"),
                dir,
            ))
        } else {
            progress("bindfs not installed: its columns stay empty");
            None
        };
        Paths {
            native,
            mmapfs,
            bindfs,
        }
    }

    fn bindfs_file(&self) -> Option<PathBuf> {
        self.bindfs.as_ref().map(|b| b.mnt.join("file.bin"))
    }

    /// Every path to the file: native, mmapfs, then bindfs if mounted.
    fn targets(&self) -> Vec<PathBuf> {
        let mut v = vec![self.native.clone(), self.mmapfs.data()];
        v.extend(self.bindfs_file());
        v
    }

    /// The median of `runs` rounds of `measure` on each path. The paths take
    /// turns within a round, and each round starts with the next path, so
    /// none of them always runs right after the same neighbour.
    fn compare(&self, runs: usize, mut measure: impl FnMut(&Path) -> f64) -> Triple {
        let targets = self.targets();
        let n = targets.len();
        let mut samples = vec![Vec::new(); n];
        for round in 0..runs {
            for k in 0..n {
                let i = (round + k) % n;
                samples[i].push(measure(&targets[i]));
            }
        }
        for (name, s) in ["native", "mmapfs", "bindfs"].iter().zip(&samples) {
            report_spread(name, s);
        }
        let mut medians = samples.into_iter().map(median);
        Triple {
            native: medians.next().unwrap(),
            mmapfs: medians.next().unwrap(),
            bindfs: medians.next(),
        }
    }
}

fn create_file(path: &Path, size: u64) {
    let block = pattern(BLOCK);
    let mut f = File::create(path).expect("create the test file");
    for _ in 0..size / BLOCK as u64 {
        f.write_all(&block).expect("write the test file");
    }
    f.sync_all().expect("fsync the test file");
}

/// A FUSE daemon run in the foreground as our child, unmounted in Drop so
/// that a failing run leaves no mount behind.
struct FuseMount {
    mnt: PathBuf,
    child: Child,
    name: String,
    log: PathBuf,
}

impl FuseMount {
    /// Spawn `cmd` and wait until `ready` exists (the mount answers).
    fn start(mut cmd: Command, name: &str, mnt: &Path, ready: &Path, dir: &Path) -> FuseMount {
        fs::create_dir_all(mnt).expect("mkdir mountpoint");
        // A log file rather than a pipe: a pipe nobody drains could block it.
        let log = dir
            .join(mnt.file_name().expect("mountpoint name"))
            .with_extension("log");
        let out = File::create(&log).expect("create daemon log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let mut mount = FuseMount {
            mnt: mnt.to_path_buf(),
            child,
            name: name.to_string(),
            log,
        };
        let start = Instant::now();
        while !ready.exists() {
            if let Some(status) = mount.child.try_wait().expect("try_wait") {
                panic!(
                    "{name} exited with {status} before mounting: {}",
                    mount.log_text()
                );
            }
            assert!(
                start.elapsed() < MOUNT_DEADLINE,
                "{name} did not mount within {MOUNT_DEADLINE:?}: {}",
                mount.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        mount
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn is_mounted(&self) -> bool {
        let mnt = self.mnt.to_string_lossy();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(&*mnt))
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        // Retry while busy (a descriptor of ours may still be closing).
        let start = Instant::now();
        while self.is_mounted() && start.elapsed() < MOUNT_DEADLINE {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status();
            if self.is_mounted() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let start = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) {
            if start.elapsed() > MOUNT_DEADLINE {
                progress(&format!(
                    "{} did not exit after unmount; killing it",
                    self.name
                ));
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let log = self.log_text();
        if !log.trim().is_empty() {
            progress(&format!("{} said: {}", self.name, log.trim()));
        }
    }
}

/// An mmapfs mount serving one source.
struct MmapfsMount {
    mount: FuseMount,
    mnt: PathBuf,
    /// The source's directory in the mount: `MOUNTPOINT/<basename>`.
    source_dir: PathBuf,
}

impl MmapfsMount {
    fn start(dir: &Path, mnt_name: &str, args: &[&str], src: &Path) -> MmapfsMount {
        if let Some(parent) = src.parent() {
            fs::create_dir_all(parent).expect("mkdir for the source");
        }
        let mnt = dir.join(mnt_name);
        let mut cmd = Command::new(mmapfs_bin());
        cmd.arg("-f").args(args);
        if let Ok(io) = std::env::var("MMAPFS_BENCH_IO") {
            cmd.arg("--io").arg(io);
        }
        cmd.arg(src).arg(&mnt);
        let mount = FuseMount::start(
            cmd,
            &format!("mmapfs ({mnt_name})"),
            &mnt,
            &mnt.join("stats"),
            dir,
        );
        let source_dir = mnt.join(src.file_name().expect("source has a name"));
        MmapfsMount {
            mount,
            mnt,
            source_dir,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.source_dir.join(name)
    }

    fn data(&self) -> PathBuf {
        self.file("data")
    }

    fn pid(&self) -> u32 {
        self.mount.child.id()
    }

    /// One value from the source's `stats`.
    fn stat(&self, key: &str) -> String {
        read_text(&self.file("stats"))
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ').map(str::to_string))
            .unwrap_or_else(|| "?".to_string())
    }
}

fn mmapfs_bin() -> PathBuf {
    let bin = std::env::var_os("MMAPFS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mmapfs")));
    assert!(bin.exists(), "no mmapfs binary at {}", bin.display());
    bin
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// `MMAPFS_BENCH_SIZE` (e.g. `256M`, `1G`), in whole MiB; default 1 GiB.
fn bench_size() -> u64 {
    let text = std::env::var("MMAPFS_BENCH_SIZE").unwrap_or_else(|_| "1G".to_string());
    let size = parse_size(&text)
        .unwrap_or_else(|| panic!("MMAPFS_BENCH_SIZE={text}: expected a number with K/M/G/T"));
    let size = size / MIB * MIB;
    assert!(size >= MIB, "MMAPFS_BENCH_SIZE must be at least 1M");
    size
}

fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim().trim_end_matches("iB").trim_end_matches('B');
    let (digits, shift) = match t.chars().last()?.to_ascii_uppercase() {
        'K' => (&t[..t.len() - 1], 10),
        'M' => (&t[..t.len() - 1], 20),
        'G' => (&t[..t.len() - 1], 30),
        'T' => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as u64 }
}

// ------------------------------------------------------------ small helpers

/// The timing helper: wall-clock seconds of one call.
fn secs(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

fn ms(secs: f64) -> f64 {
    secs * 1e3
}

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

/// Show every sample on stderr: a median hides how noisy a workload is.
fn report_spread(name: &str, samples: &[f64]) {
    let all: Vec<String> = samples.iter().map(|&v| fmt_value(v)).collect();
    progress(&format!("  {name}: {}", all.join(" ")));
}

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "median of nothing");
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// splitmix64: a tiny deterministic PRNG, so every run reads the same offsets.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn progress(msg: &str) {
    eprintln!("[compare] {msg}");
}

// ------------------------------------------------------------------- report

struct Triple {
    native: f64,
    mmapfs: f64,
    bindfs: Option<f64>,
}

/// What a row must reach, in the row's unit.
enum Target {
    /// mmapfs / native at least this (throughput: higher is better).
    RatioAtLeast(f64),
    /// mmapfs / native at most this (cost: lower is better).
    RatioAtMost(f64),
    /// mmapfs below this value.
    Below(f64),
    /// mmapfs below `below`, and native / mmapfs at least `speedup`.
    FasterThan { below: f64, speedup: f64 },
    /// mmapfs at most `factor` × native + `slack`.
    AtMostPlus { factor: f64, slack: f64 },
}

struct Row {
    name: String,
    unit: &'static str,
    native: Option<f64>,
    mmapfs: f64,
    bindfs: Option<f64>,
    target: Target,
}

impl Row {
    fn new(name: &str, unit: &'static str, t: Triple, target: Target) -> Row {
        Row {
            name: name.to_string(),
            unit,
            native: Some(t.native),
            mmapfs: t.mmapfs,
            bindfs: t.bindfs,
            target,
        }
    }

    /// A row with no native or bindfs counterpart.
    fn single(name: &str, unit: &'static str, value: f64, target: Target) -> Row {
        Row {
            name: name.to_string(),
            unit,
            native: None,
            mmapfs: value,
            bindfs: None,
            target,
        }
    }

    /// The ratio shown for `value` against native, in the target's terms.
    fn ratio(&self, value: f64) -> Option<String> {
        let native = self.native?;
        Some(match self.target {
            Target::FasterThan { .. } => format!("{:.0}× faster", native / value),
            _ => format!("{:.2}×", value / native),
        })
    }

    fn target_text(&self) -> String {
        let u = self.unit;
        match self.target {
            Target::RatioAtLeast(r) => format!("≥ {r}× native"),
            Target::RatioAtMost(r) => format!("≤ {r}× native"),
            Target::Below(v) => format!("< {v} {u}"),
            Target::FasterThan { below, speedup } => {
                format!("< {below} {u}, ≥ {speedup}× faster")
            }
            Target::AtMostPlus { factor, slack } => format!("≤ {factor}× native + {slack} {u}"),
        }
    }

    /// None when the target needs a native number that is missing.
    fn passes(&self) -> Option<bool> {
        let v = self.mmapfs;
        Some(match self.target {
            Target::RatioAtLeast(r) => v >= r * self.native?,
            Target::RatioAtMost(r) => v <= r * self.native?,
            Target::Below(limit) => v < limit,
            Target::FasterThan { below, speedup } => v < below && self.native? >= speedup * v,
            Target::AtMostPlus { factor, slack } => v <= factor * self.native? + slack,
        })
    }
}

/// Numbers with precision that suits their size.
fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn print_machine(dir: &Path, size: u64) {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    println!("kernel: {}", kernel.trim());
    println!("CPUs: {cpus}");
    println!("memory: {:.1} GiB", mem_kib as f64 / (1 << 20) as f64);
    println!("filesystem of the scratch directory: {}", fs_type(dir));
    println!("test file: {} MiB", size / MIB);
}

/// The type of the filesystem holding `dir`: the longest mount point above it.
fn fs_type(dir: &Path) -> String {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let mount_point = l.split(' ').nth(4)?;
            let fstype = l.split(" - ").nth(1)?.split(' ').next()?;
            dir.starts_with(mount_point)
                .then(|| (mount_point.len(), fstype.to_string()))
        })
        .max()
        .map_or_else(|| "unknown".to_string(), |(_, t)| t)
}

fn print_table(rows: &[Row]) {
    let header = [
        "workload",
        "native",
        "mmapfs",
        "ratio",
        "bindfs",
        "ratio",
        "target",
        "pass/fail",
    ];
    let dash = || "-".to_string();
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let verdict = match r.passes() {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "n/a",
            };
            [
                format!("{} ({})", r.name, r.unit),
                r.native.map_or_else(dash, fmt_value),
                fmt_value(r.mmapfs),
                r.ratio(r.mmapfs).unwrap_or_else(dash),
                r.bindfs.map_or_else(dash, fmt_value),
                r.bindfs.and_then(|b| r.ratio(b)).unwrap_or_else(dash),
                r.target_text(),
                verdict.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[String]| {
        let padded: Vec<String> = cols
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("| {} |", padded.join(" | "));
    };
    line(&header.map(str::to_string));
    line(&widths.map(|w| "-".repeat(w)));
    for row in &cells {
        line(row);
    }
    println!();
    println!(
        "ratio = mmapfs (or bindfs) / native; for dirty_pages it is how many times \
         faster than vmtouch. Medians of {SLOW_RUNS}-{STATS_RUNS} runs."
    );
}
