// ------------------------------------------------------------- crash test

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::helpers::{mb_per_s, median, ms, page_size, progress, report_spread, secs};
use crate::mounts::{take_turns, MmapfsMount, Paths};
use crate::pieces::{echo, pattern, sync_file, write_all};
use crate::table::{Row, Target, Via};
use crate::{BLOCK, SLOW_RUNS};

/// Rows 8–10: a `--crash-test` daemon over the same file. Nothing is ever
/// synced through it, so the source never changes: each run ends with
/// `echo now > crash` (untimed but in row 9), which throws away what the
/// run wrote.
pub(crate) fn crash_rows(dir: &Path, p: &Paths, size: u64) -> Vec<Row> {
    let crash = MmapfsMount::start(dir, "mnt-crash", &["--crash-test"], &p.native);
    let command = crash.file("crash");
    let forget = |via: Via, path: &Path| match via {
        Via::Native => sync_file(path),
        _ => echo(&command, b"now\n"),
    };
    let targets = [(Via::Native, p.native.clone()), (Via::Cached, crash.data())];

    progress("sequential write, --crash-test");
    let block = pattern(BLOCK);
    let write = take_turns(&targets, SLOW_RUNS, |via, path| {
        let s = secs(|| write_all(path, &block, size));
        forget(via, path);
        mb_per_s(size, s)
    });

    progress("outside mmap stores, --crash-test");
    let pages = (size / page_size()) as f64;
    let stores = take_turns(&targets, SLOW_RUNS, |via, path| {
        let s = store_pages(path);
        forget(via, path);
        s * 1e9 / pages
    });

    progress("echo now > crash, everything unsynced");
    let mut samples = Vec::new();
    for _ in 0..SLOW_RUNS {
        write_all(&crash.data(), &block, size);
        samples.push(ms(secs(|| echo(&command, b"now\n"))));
    }
    report_spread("echo now > crash", &samples);
    vec![
        Row::cached_only(
            "seq write, --crash-test, 1 MiB",
            "MB/s",
            write,
            Target::RatioAtLeast(0.3),
        ),
        Row::cached_only(
            "outside mmap stores, --crash-test",
            "ns/page",
            stores,
            Target::RatioAtMost(3.0),
        ),
        Row::single(
            &format!("echo now > crash, {} MiB unsynced", size >> 20),
            "ms",
            median(samples),
            Target::Below(100.0),
        ),
    ]
}

/// Store one byte into every page through a shared writable mapping; the
/// time of the stores alone (the unmap's write-back is not counted).
fn store_pages(path: &Path) -> f64 {
    let f: File = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open for mmap");
    // SAFETY: nobody truncates the file while it is mapped here.
    let mut map = unsafe { memmap2::MmapOptions::new().map_mut(&f) }.expect("mmap");
    let step = page_size() as usize;
    secs(|| {
        for off in (0..map.len()).step_by(step) {
            // SAFETY: `off` is inside the mapping; volatile so every page faults.
            unsafe { std::ptr::write_volatile(map.as_mut_ptr().add(off), 1) };
        }
    })
}
