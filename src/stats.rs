//! The `stats` vocabulary, declared once: every key with what kind of
//! number it is, how the root sums it, and what it means. `stats`, the root
//! `stats` and `metrics` are all rendered from this.

use crate::counters::Snapshot;
use crate::dir::Walk;
use crate::pages;
use crate::source::{Health, Source};
use crate::sys::CacheStat;
use crate::tally::Counts;

/// What kind of value a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows: a Prometheus counter (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Text: a label of the `mmapfs_source_info` metric.
    Label,
}

/// How the root `stats` combines one key over the sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtRoot {
    Sum,
    Max,
    Omit,
}

#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
    pub at_root: AtRoot,
    pub help: &'static str,
}

const fn key(name: &'static str, kind: Kind, at_root: AtRoot, help: &'static str) -> Key {
    Key {
        name,
        kind,
        at_root,
        help,
    }
}

use AtRoot::{Max, Omit, Sum};
use Kind::{Counter, Gauge, Label};

pub const SOURCE: Key = key("source", Label, Omit, "path of the source, or memfd:NAME");
pub const MODE: Key = key("mode", Label, Omit, "shared, private or anon");
pub const IO_MODE: Key = key("io_mode", Label, Omit, "passthrough or cached");
pub const WRITABLE: Key = key("writable", Label, Omit, "yes or no");
pub const OFFSET: Key = key(
    "offset_bytes",
    Gauge,
    Sum,
    "Start of the mapped window in the source, in bytes.",
);
pub const LENGTH: Key = key(
    "length_bytes",
    Gauge,
    Sum,
    "Length of the mapped window, in bytes.",
);
pub const PAGE_SIZE: Key = key("page_size_bytes", Gauge, Max, "Page size, in bytes.");
pub const PAGES: Key = key("pages", Gauge, Sum, "Pages in the mapped window.");
pub const RESIDENT: Key = key(
    "resident_pages",
    Gauge,
    Sum,
    "Pages of the window in the source's page cache now.",
);
pub const DIRTY: Key = key(
    "dirty_pages",
    Gauge,
    Sum,
    "Pages of the window dirty in the source's page cache now (in private mode: copied on write).",
);
pub const FUSE_RESIDENT: Key = key(
    "fuse_resident_pages",
    Gauge,
    Sum,
    "Cached mode: pages of data in the kernel's own cache of data, one level above the source's (0 under passthrough).",
);
pub const FUSE_DIRTY: Key = key(
    "fuse_dirty_pages",
    Gauge,
    Sum,
    "Cached mode: pages of data dirty in the kernel's own cache of data: stores of outside mappings not yet written back to the daemon.",
);
pub const WRITEBACK: Key = key(
    "writeback_pages",
    Gauge,
    Sum,
    "Pages of the window being written back now.",
);
pub const EVICTED: Key = key(
    "evicted_pages",
    Gauge,
    Sum,
    "Pages of the window evicted from the page cache (kernel shadow entries).",
);
pub const RECENTLY_EVICTED: Key = key(
    "recently_evicted_pages",
    Gauge,
    Sum,
    "Evicted pages that would still count as recently used.",
);
pub const UNSYNCED: Key = key(
    "unsynced_pages",
    Gauge,
    Sum,
    "--crash-test: pages written but not synced, which a crash now would lose.",
);
pub const SYNCS: Key = key(
    "syncs",
    Counter,
    Sum,
    "--crash-test: syncs of data seen (fsync, fdatasync, msync, O_SYNC writes, echo sync > msync).",
);
pub const CRASHES: Key = key("crashes", Counter, Sum, "--crash-test: crashes so far.");
pub const READS: Key = key(
    "reads",
    Counter,
    Sum,
    "Read requests on data served by the daemon (0 under passthrough, but for --anon regions).",
);
pub const READ_BYTES: Key = key(
    "read_bytes",
    Counter,
    Sum,
    "Bytes read from data through the daemon.",
);
pub const WRITES: Key = key(
    "writes",
    Counter,
    Sum,
    "Write requests on data served by the daemon (0 under passthrough, but for --anon regions).",
);
pub const WRITE_BYTES: Key = key(
    "write_bytes",
    Counter,
    Sum,
    "Bytes written to data through the daemon.",
);
pub const WRITE_ERRORS: Key = key("writeback_errors", Counter, Sum, "Write-backs of an outside mapping's pages of data (cached mode) that failed to reach the source.");
pub const MSYNC_CALLS: Key = key(
    "msync_calls",
    Counter,
    Sum,
    "Commands run through the msync file.",
);
pub const MSYNC_ERRORS: Key = key("msync_errors", Counter, Sum, "msync commands that failed.");
pub const MSYNC_LAST: Key = key(
    "msync_last_ns",
    Gauge,
    Max,
    "Duration of the last msync command.",
);
pub const MSYNC_TOTAL: Key = key(
    "msync_total_ns",
    Counter,
    Sum,
    "Time spent in msync commands.",
);
pub const INVALIDATIONS: Key = key(
    "invalidations",
    Counter,
    Sum,
    "msync invalidate commands run.",
);
pub const OPEN_HANDLES: Key = key("open_handles", Gauge, Sum, "Open file handles on data.");
pub const LOCKED: Key = key(
    "locked_pages",
    Gauge,
    Sum,
    "Pages of the window locked through the mlock file.",
);
pub const MAPPERS: Key = key(
    "mappers",
    Gauge,
    Sum,
    "Mappings of the source by other processes (the reader's own, for users other than root), at the last look.",
);
pub const SOURCE_SIZE: Key = key(
    "source_size_bytes",
    Gauge,
    Sum,
    "Size of the source file now, in bytes.",
);
pub const SOURCE_STATE: Key = key("source_state", Label, Omit, "ok, truncated or deleted");
pub const TRACE: Key = key(
    "trace",
    Label,
    Omit,
    "on, off or unavailable: page-event tracing (the trace file)",
);
pub const COUNTS_AGE: Key = key(
    "counts_age_ns",
    Gauge,
    Max,
    "Time since the page counts above were last exact: 0 when counted at this read; for a window over 256 MiB, kept by chunk, since the oldest chunk was counted or brought up to date from the trace.",
);
pub const UPTIME: Key = key(
    "uptime_ns",
    Gauge,
    Max,
    "Time since the source was mounted.",
);

pub const FILES: Key = key(
    "files",
    Gauge,
    Sum,
    "Directory sources: regular files in the tree.",
);
pub const DIRECTORIES: Key = key(
    "directories",
    Gauge,
    Sum,
    "Directory sources: directories in the tree, its own included.",
);
pub const WALK_CUT: Key = key(
    "walk_cut",
    Gauge,
    Max,
    "Directory sources: 1 when the tree had more entries than one walk visits; the counts are of the part walked.",
);

/// The keys only a directory source's `stats` has.
#[cfg(test)]
pub const TREE_ONLY: [&Key; 3] = [&FILES, &DIRECTORIES, &WALK_CUT];

/// Every key, in the order `stats` shows them.
pub const ALL: [&Key; 39] = [
    &SOURCE,
    &MODE,
    &IO_MODE,
    &WRITABLE,
    &OFFSET,
    &LENGTH,
    &PAGE_SIZE,
    &FILES,
    &DIRECTORIES,
    &WALK_CUT,
    &PAGES,
    &RESIDENT,
    &DIRTY,
    &WRITEBACK,
    &FUSE_RESIDENT,
    &FUSE_DIRTY,
    &UNSYNCED,
    &SYNCS,
    &CRASHES,
    &EVICTED,
    &RECENTLY_EVICTED,
    &READS,
    &READ_BYTES,
    &WRITES,
    &WRITE_BYTES,
    &WRITE_ERRORS,
    &MSYNC_CALLS,
    &MSYNC_ERRORS,
    &MSYNC_LAST,
    &MSYNC_TOTAL,
    &INVALIDATIONS,
    &OPEN_HANDLES,
    &LOCKED,
    &MAPPERS,
    &SOURCE_SIZE,
    &SOURCE_STATE,
    &TRACE,
    &COUNTS_AGE,
    &UPTIME,
];

/// One value of `stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Num(u64),
    Text(String),
}

pub type Stats = Vec<(&'static Key, Value)>;

/// Everything `stats` shows for one source, in order, from one look at the
/// source file (`health`) and its page counts (`counts`, see `tally.rs`),
/// plus a page-table walk in private mode.
/// `up`: the kernel's counts for its own cache of `data` (cached mode);
/// `trace`: whether page events are traced (`on`, `off`, `unavailable`).
pub fn of_source(
    source: &Source,
    health: &Health,
    counts: Counts,
    locked: u64,
    mappers: u64,
    up: Option<CacheStat>,
    trace: &str,
) -> Stats {
    use Value::{Num, Text};
    let length = source.length_at(health);
    let pages = length.div_ceil(source.page_size());
    let cache = counts.stat;
    let dirty = match source.sharing() {
        crate::sys::Sharing::Shared => cache.dirty,
        crate::sys::Sharing::Private => pages::count(source, pages::PageState::Dirty, 0, pages),
    };
    let c: Snapshot = source.counters().snapshot();
    let yes_no = |b: bool| Text(if b { "yes" } else { "no" }.to_string());
    vec![
        (&SOURCE, Text(source.origin())),
        (&MODE, Text(source.mode_name().to_string())),
        (&IO_MODE, Text(source.io_mode().name().to_string())),
        (&WRITABLE, yes_no(source.writable())),
        (&OFFSET, Num(source.offset())),
        (&LENGTH, Num(length)),
        (&PAGE_SIZE, Num(source.page_size())),
        (&PAGES, Num(pages)),
        (&RESIDENT, Num(cache.cache)),
        (&DIRTY, Num(dirty)),
        (&WRITEBACK, Num(cache.writeback)),
        (&FUSE_RESIDENT, Num(up.map_or(0, |u| u.cache))),
        (&FUSE_DIRTY, Num(up.map_or(0, |u| u.dirty))),
        (&UNSYNCED, Num(source.held().map_or(0, |_| dirty))),
        (&SYNCS, Num(source.held().map_or(0, |h| h.syncs()))),
        (&CRASHES, Num(source.held().map_or(0, |h| h.crashes()))),
        (&EVICTED, Num(cache.evicted)),
        (&RECENTLY_EVICTED, Num(cache.recently_evicted)),
        (&READS, Num(c.reads)),
        (&READ_BYTES, Num(c.read_bytes)),
        (&WRITES, Num(c.writes)),
        (&WRITE_BYTES, Num(c.write_bytes)),
        (&WRITE_ERRORS, Num(c.write_errors)),
        (&MSYNC_CALLS, Num(c.msync_calls)),
        (&MSYNC_ERRORS, Num(c.msync_errors)),
        (&MSYNC_LAST, Num(c.msync_last_ns)),
        (&MSYNC_TOTAL, Num(c.msync_total_ns)),
        (&INVALIDATIONS, Num(c.invalidations)),
        (&OPEN_HANDLES, Num(c.open_handles)),
        (&LOCKED, Num(locked)),
        (&MAPPERS, Num(mappers)),
        (&SOURCE_SIZE, Num(health.size)),
        (&SOURCE_STATE, Text(health.state().to_string())),
        (&TRACE, Text(trace.to_string())),
        (&COUNTS_AGE, Num(counts.age_ns)),
        (&UPTIME, Num(source.uptime_ns())),
    ]
}

/// What `stats` shows for a directory source: sums over its regular files
/// (`source_size_bytes` is their total size) from one walk of the tree.
pub fn of_tree(path: String, io_mode: &'static str, writable: bool, walk: &Walk) -> Stats {
    use Value::{Num, Text};
    let sum = |f: &dyn Fn(&crate::dir::FileCache) -> u64| walk.files.iter().map(f).sum::<u64>();
    let page = crate::sys::page_size();
    vec![
        (&SOURCE, Text(path)),
        (&MODE, Text("directory".to_string())),
        (&IO_MODE, Text(io_mode.to_string())),
        (
            &WRITABLE,
            Text(if writable { "yes" } else { "no" }.to_string()),
        ),
        (&PAGE_SIZE, Num(page)),
        (&FILES, Num(walk.files.len() as u64)),
        (&DIRECTORIES, Num(walk.dirs)),
        (&WALK_CUT, Num(u64::from(walk.cut))),
        (&PAGES, Num(sum(&|f| f.size.div_ceil(page)))),
        (&RESIDENT, Num(sum(&|f| f.stat.cache))),
        (&DIRTY, Num(sum(&|f| f.stat.dirty))),
        (&WRITEBACK, Num(sum(&|f| f.stat.writeback))),
        (&EVICTED, Num(sum(&|f| f.stat.evicted))),
        (&RECENTLY_EVICTED, Num(sum(&|f| f.stat.recently_evicted))),
        (&SOURCE_SIZE, Num(sum(&|f| f.size))),
    ]
}

/// The root `stats`: `sources N`, then every numeric key combined over
/// the sources as its declaration says.
pub fn at_root(all: &[Stats]) -> Vec<(&'static str, u64)> {
    let mut out: Vec<(&'static str, u64)> = vec![("sources", all.len() as u64)];
    for stats in all {
        for (key, value) in stats {
            let Value::Num(n) = value else { continue };
            if key.at_root == Omit {
                continue;
            }
            match out.iter_mut().find(|(k, _)| *k == key.name) {
                Some((_, total)) if key.at_root == Max => *total = (*total).max(*n),
                Some((_, total)) => *total = total.saturating_add(*n),
                None => out.push((key.name, *n)),
            }
        }
    }
    out
}

/// The Prometheus name of a numeric key and the factor its value is
/// divided by: times in seconds, counters ending in `_total`.
pub fn metric_name(key: &Key) -> (String, u64) {
    let (base, divisor) = match key.name.strip_suffix("_ns") {
        Some(stem) => (format!("{stem}_seconds"), 1_000_000_000),
        None => (key.name.to_string(), 1),
    };
    let base = match (key.name, key.kind) {
        // `msync_total_ns` is a total of seconds: say it once.
        ("msync_total_ns", _) => "msync_seconds".to_string(),
        _ => base,
    };
    match key.kind {
        Counter => (format!("mmapfs_{base}_total"), divisor),
        Gauge | Label => (format!("mmapfs_{base}"), divisor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_sums_numbers_and_counts_sources() {
        let a: Stats = vec![
            (&MODE, Value::Text("shared".into())),
            (&PAGES, Value::Num(3)),
            (&PAGE_SIZE, Value::Num(4096)),
        ];
        let b: Stats = vec![(&PAGES, Value::Num(4)), (&PAGE_SIZE, Value::Num(4096))];
        assert_eq!(
            at_root(&[a, b]),
            vec![("sources", 2), ("pages", 7), ("page_size_bytes", 4096)]
        );
    }

    #[test]
    fn metric_names_follow_prometheus_conventions() {
        assert_eq!(metric_name(&READS), ("mmapfs_reads_total".into(), 1));
        assert_eq!(
            metric_name(&READ_BYTES),
            ("mmapfs_read_bytes_total".into(), 1)
        );
        assert_eq!(
            metric_name(&MSYNC_TOTAL),
            ("mmapfs_msync_seconds_total".into(), 1_000_000_000)
        );
        assert_eq!(
            metric_name(&MSYNC_LAST),
            ("mmapfs_msync_last_seconds".into(), 1_000_000_000)
        );
        assert_eq!(metric_name(&PAGES), ("mmapfs_pages".into(), 1));
    }
}
