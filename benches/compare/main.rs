//! `cargo bench --bench compare`: mmapfs against the native file (and against
//! bindfs, a plain FUSE pass-through, when it is installed), one row per
//! performance target of SPEC §4.
//!
//! Everything is measured in one process, in one run, on one machine, so the
//! ratios compare like with like. Each number is the median of several runs;
//! native, mmapfs (default io mode), mmapfs in cached mode and bindfs take
//! turns in every round so that drift of the machine (background writeback,
//! page-cache eviction) hits them all alike.
//!
//! Needs /dev/fuse (root for passthrough). Environment:
//! - `MMAPFS_BENCH_SIZE`: size of the file under test (default `1G`; `256M`...),
//!   also read and mapped inside the directory source of the last rows
//! - `MMAPFS_BENCH_IO`: passed as `--io` to the daemons that do not name one
//!   (default: the daemon's); the cached-mode daemons always get `--io cached`
//! - `MMAPFS_BIN`: the daemon binary (default: the one cargo just built)
//! - `TMPDIR`: where the scratch files live (the filesystem being measured)
//!
//! It runs only when cargo passes `--bench` (so `cargo test --all-targets`
//! does not start a minute of FUSE I/O); any other argument is ignored.

mod cache;
mod crash;
mod dirs;
mod helpers;
mod mounts;
mod pieces;
mod table;
mod tracing;
mod workloads;

use std::path::Path;
use std::time::Duration;

use cache::{fadvise_dontneed, madvise_populate, pages_list};
use helpers::progress;
use mounts::{bench_size, Paths};
use table::{print_machine, print_table, Row};
use workloads::{
    cat_stats, cold_read, counts_of_small_folios, dirty_pages_and_rss, mmap_walk, msync_cost,
    private_read, random_reads, resident_pages, seq_write, warm_read, window_read,
};

const MIB: u64 = 1 << 20;
/// Block size of the sequential workloads.
const BLOCK: usize = 1 << 20;
/// Rounds for fast workloads; slow ones (write, vmtouch) use `SLOW_RUNS`.
const RUNS: usize = 5;
pub(crate) const SLOW_RUNS: usize = 3;
/// Cold reads depend on the storage below, which is the noisiest part of a
/// machine (a virtual disk may be cached by its host): take more rounds.
const COLD_RUNS: usize = 7;
/// Evictions take a few ms, noisily, and each needs the file read in first.
const EVICT_RUNS: usize = 7;
/// Rounds for the control files: each read is short, so take many.
const CAT_RUNS: usize = 21;
const STATS_RUNS: usize = 101;
const RANDOM_READS: usize = 20_000;
const SCATTERED_DIRTY: usize = 1000;
/// Single-page ranges in the `pages CPULIST` written to `madvise`.
const PAGES_RANGES: usize = 10_000;
const MSYNC_DIRTY: u64 = 64 * MIB;
const SPARSE_DIRTY_SIZE: &str = "64G";
const SPARSE_RESIDENT_SIZE: &str = "1T";
const MOUNT_DEADLINE: Duration = Duration::from_secs(20);
/// Where the window of the window row starts in the file under test.
const WINDOW_OFFSET: u64 = MIB;

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
    let (rows, io_mode) = run_all(dir.path(), size);
    print_table(&rows, &io_mode);
}

/// Every workload in turn, and the default mount's io mode; the mounts live
/// only as long as they are needed, and each unmounts in Drop even if a
/// workload panics.
fn run_all(dir: &Path, size: u64) -> (Vec<Row>, String) {
    let mut paths = Paths::set_up(dir, size);
    let io_mode = paths.mmapfs.stat("io_mode");
    println!("mmapfs io_mode: {io_mode}");
    if let Some(cached) = &paths.cached {
        println!("mmapfs (cached) io_mode: {}", cached.stat("io_mode"));
    }
    println!();

    let mut rows = vec![
        warm_read(&paths, size),
        cold_read(&paths, size),
        seq_write(&paths, size),
        random_reads(&paths, size),
        mmap_walk(&paths, size),
    ];
    paths.unmount_cached();
    rows.push(window_read(dir, &paths, size));
    rows.push(private_read(dir, &paths, size));
    rows.extend(crash::crash_rows(dir, &paths, size));
    rows.extend(dirty_pages_and_rss(dir));
    rows.push(resident_pages(dir));
    rows.push(cat_stats(&paths.mmapfs, false));
    rows.push(cat_stats(&paths.mmapfs, true));
    rows.extend(counts_of_small_folios(dir));
    rows.push(msync_cost(&paths, size));
    rows.push(fadvise_dontneed(&paths, size));
    rows.push(madvise_populate(&paths, size));
    rows.push(pages_list(&paths, size));
    rows.push(tracing::traced_mapping(&paths));
    rows.extend(dirs::dir_rows(dir, &paths, size));
    (rows, io_mode)
}
