//! The tracing row: the same page-heavy work with `trace` open and not.

use std::fs::{File, OpenOptions};
use std::io::Read;

use crate::helpers::{median, page_size, progress, report_spread, secs};
use crate::mounts::Paths;
use crate::pieces::{drop_cache, sync_file, touch_pages};
use crate::table::{Medians, Row, Target};

/// Rounds of one untraced and one traced run, in alternating order. The
/// machine's load moves the ratio more than tracing does (two CPUs, and
/// the trace reader needs one while the writer runs): take more than the
/// other slow rows.
const ROUNDS: usize = 5;

/// A writer dirtying every page of `data` through its own mapping, then
/// (after a sync and an eviction, untimed) a reader faulting it all back
/// in: untraced in the native column, with `trace` open in the mmapfs one.
/// One untimed run first, so every timed one starts from the state the
/// last left (clean, cached in the reader's folios), not from the row
/// before. Panics if the trace says the kernel lost events.
pub(crate) fn traced_mapping(p: &Paths) -> Row {
    progress("tracing on: dirty every page through a mapping, fault it back");
    let data = p.mmapfs.data();
    let work = || {
        let written = secs(|| {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&data)
                .unwrap();
            // SAFETY: nobody truncates the file while it is mapped here.
            let mut map = unsafe { memmap2::MmapMut::map_mut(&f) }.expect("mmap");
            for off in (0..map.len()).step_by(page_size() as usize) {
                map[off] = map[off].wrapping_add(1);
            }
        });
        sync_file(&p.native);
        drop_cache(&p.native, &data);
        written + secs(|| touch_pages(&data))
    };
    work();
    let (mut plain, mut traced) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for k in 0..2 {
            if (round + k) % 2 == 0 {
                plain.push(work());
                continue;
            }
            let mut trace = File::open(p.mmapfs.file("trace")).expect("open trace");
            traced.push(work());
            let mut text = String::new();
            trace.read_to_string(&mut text).expect("read trace");
            let lost = text.lines().filter(|l| l.contains(" lost ")).count();
            assert_eq!(lost, 0, "the kernel lost page events while tracing");
        }
    }
    report_spread("untraced (s)", &plain);
    report_spread("traced (s)", &traced);
    Row::new(
        "tracing on: dirty every page via mmap + fault back (s)",
        "s",
        Medians {
            native: median(plain),
            mmapfs: Some(median(traced)),
            cached: None,
            bindfs: None,
        },
        Target::RatioAtMost(1.3),
    )
}
