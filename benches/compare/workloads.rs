// ---------------------------------------------------------------- workloads

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::helpers::{mb_per_s, median, ms, page_size, progress, report_spread, secs, SplitMix64};
use crate::mounts::{on_path, take_turns, MmapfsMount, Paths};
use crate::pieces::{
    cat, cpulist_count, dirty_scattered, drop_cache, echo, pattern, pread_each, read_all,
    read_range, read_text, resident_fraction, run_vmtouch, sync_file, time_sync, touch_pages,
    vm_rss_mib, write_all,
};
use crate::table::{Medians, Row, Target, Via};
use crate::{
    BLOCK, CAT_RUNS, COLD_RUNS, MIB, MSYNC_DIRTY, RANDOM_READS, RUNS, SCATTERED_DIRTY, SLOW_RUNS,
    SPARSE_DIRTY_SIZE, SPARSE_RESIDENT_SIZE, STATS_RUNS, WINDOW_OFFSET,
};

/// Row 1: Warm sequential read: every cache layer is filled once first.
pub(crate) fn warm_read(p: &Paths, size: u64) -> Row {
    progress("warm sequential read");
    let t = warm_turns(&p.targets(), |_| 0, size);
    Row::new("warm seq read, 1 MiB", "MB/s", t, Target::RatioAtLeast(0.8))
        .and_cached(Target::RatioAtLeast(0.5))
}

/// Row 2: Cold sequential read: the source's pages are dropped before each run;
/// for bindfs and mmapfs the source is the same native file.
pub(crate) fn cold_read(p: &Paths, size: u64) -> Row {
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
        .and_cached(Target::RatioAtLeast(0.7))
}

/// Row 3: Sequential write over the whole file; the dirty pages are written back
/// (untimed) after each run so every run starts from the same clean state.
pub(crate) fn seq_write(p: &Paths, size: u64) -> Row {
    progress("sequential write");
    let block = pattern(BLOCK);
    let t = p.compare(SLOW_RUNS, |path| {
        let s = secs(|| write_all(path, &block, size));
        sync_file(&p.native);
        mb_per_s(size, s)
    });
    Row::new("seq write, 1 MiB", "MB/s", t, Target::RatioAtLeast(0.7))
        .and_cached(Target::RatioAtLeast(0.3))
}

/// Row 4: 4 KiB random reads from a warm file, one thread, the same offsets for
/// every target.
pub(crate) fn random_reads(p: &Paths, size: u64) -> Row {
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
    .and_cached(Target::RatioAtLeast(0.3))
}

/// Row 5: An outside MAP_SHARED mapping touching one byte per page; a fresh
/// mapping each run so every page faults again.
pub(crate) fn mmap_walk(p: &Paths, size: u64) -> Row {
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
    .and_cached(Target::RatioAtMost(2.0))
}

/// Row 6: warm sequential read of a window: a cached-mode daemon with
/// `--offset` (its length defaults to the rest of the file), against native
/// and bindfs reading the same byte range of the same file.
pub(crate) fn window_read(dir: &Path, p: &Paths, size: u64) -> Row {
    progress("warm sequential read of a window");
    let offset = WINDOW_OFFSET.to_string();
    let window = MmapfsMount::start(
        dir,
        "mnt-window",
        &["--offset", &offset, "--io", "cached"],
        &p.native,
    );
    // The window's `data` begins at the window; the file, at its offset.
    let start = |via| if via == Via::Cached { 0 } else { WINDOW_OFFSET };
    let m = warm_turns(
        &cached_targets(p, window.data()),
        start,
        size - WINDOW_OFFSET,
    );
    Row::cached_only(
        &format!(
            "warm seq read, window (--offset {}M), 1 MiB",
            WINDOW_OFFSET / MIB
        ),
        "MB/s",
        m,
        Target::RatioAtLeast(0.5),
    )
}

/// Row 7: warm sequential read through a cached-mode daemon with
/// `--private`, which serves reads from its copy-on-write mapping rather
/// than by `pread` on the source.
pub(crate) fn private_read(dir: &Path, p: &Paths, size: u64) -> Row {
    progress("warm sequential read, --private");
    let private = MmapfsMount::start(
        dir,
        "mnt-private",
        &["--private", "--io", "cached"],
        &p.native,
    );
    let m = warm_turns(&cached_targets(p, private.data()), |_| 0, size);
    Row::cached_only(
        "warm seq read, --private, 1 MiB",
        "MB/s",
        m,
        Target::RatioAtLeast(0.5),
    )
}

/// Native, a cached-mode `data`, and bindfs if mounted.
fn cached_targets(p: &Paths, data: PathBuf) -> Vec<(Via, PathBuf)> {
    let mut v = vec![(Via::Native, p.native.clone()), (Via::Cached, data)];
    v.extend(p.bindfs_file().map(|b| (Via::Bindfs, b)));
    v
}

/// Warm sequential reads of `len` bytes from `start(via)` to the end, in
/// turns, after one untimed read through each way fills every cache layer.
pub(crate) fn warm_turns(
    targets: &[(Via, PathBuf)],
    start: impl Fn(Via) -> u64,
    len: u64,
) -> Medians {
    for (via, path) in targets {
        read_range(path, start(*via), len);
    }
    take_turns(targets, RUNS, |via, path| {
        mb_per_s(len, secs(|| read_range(path, start(via), len)))
    })
}

/// Rows 8 and 12: `cat dirty_pages` on a 64 GiB sparse source with scattered
/// dirty pages, against `vmtouch -v` on the same file; then the daemon's RSS
/// with that source mapped and idle.
pub(crate) fn dirty_pages_and_rss(dir: &Path) -> Vec<Row> {
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
            .map(|_| ms(secs(|| run_vmtouch("-v", &src))))
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

/// Row 9: `cat resident_pages` on a 1 TiB sparse source with nothing resident.
pub(crate) fn resident_pages(dir: &Path) -> Row {
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

/// Row 10: `cat stats`, per source (which probes the page cache) or at the root.
pub(crate) fn cat_stats(mount: &MmapfsMount, root: bool) -> Row {
    let (file, name) = if root {
        (mount.mnt.join("stats"), "cat stats (root)")
    } else {
        (mount.file("stats"), "cat stats (source, warm file)")
    };
    progress(name);
    let t = median((0..STATS_RUNS).map(|_| ms(secs(|| cat(&file)))).collect());
    Row::single(name, "ms", t, Target::Below(1.0))
}

/// Row 11: `echo sync > msync` against msync(2) of a native MAP_SHARED mapping,
/// each after dirtying the same 64 MiB through a mapping (of `data` for
/// mmapfs, of the source for native). Only the sync itself is timed.
pub(crate) fn msync_cost(p: &Paths, size: u64) -> Row {
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
                    echo(&control, b"sync\n")
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
    let t = Medians {
        native: median(native),
        mmapfs: Some(median(ours)),
        cached: None,
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

/// Rows: `cat stats` and `cat writeback` of a 4 GiB source whose every page
/// sits in the page cache in its own 4 KiB folio (written a page at a time),
/// so counting it whole costs `cachestat` about 50 ms: the daemon must sum
/// counts it keeps instead. The first read, which counts every chunk, is
/// untimed.
pub(crate) fn counts_of_small_folios(dir: &Path) -> Vec<Row> {
    progress("cat stats / writeback, 4 GiB in 4 KiB folios");
    let src = dir.join("folios/src.bin");
    fs::create_dir_all(src.parent().expect("parent")).expect("mkdir");
    let file = fs::File::create(&src).expect("create");
    let size = 4u64 << 30;
    file.set_len(size).expect("size");
    let page = vec![7u8; page_size() as usize];
    for off in (0..size).step_by(page.len()) {
        std::os::unix::fs::FileExt::write_all_at(&file, &page, off).expect("write a page");
    }
    let mount = MmapfsMount::start(dir, "mnt-folios", &[], &src);
    let mut rows = Vec::new();
    for (name, file) in [
        (
            "cat stats, 4 GiB resident in 4 KiB folios",
            mount.file("stats"),
        ),
        (
            "cat writeback, 4 GiB resident in 4 KiB folios",
            mount.file("writeback"),
        ),
    ] {
        cat(&file);
        let t = median((0..STATS_RUNS).map(|_| ms(secs(|| cat(&file)))).collect());
        let limit = if name.contains("writeback") { 2.0 } else { 1.0 };
        rows.push(Row::single(name, "ms", t, Target::Below(limit)));
    }
    drop(mount);
    let _ = fs::remove_file(&src);
    rows
}
