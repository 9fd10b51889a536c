//! One render function per virtual file: the state of a source in, the
//! bytes a reader sees out. Rendering happens at open (see `fs.rs`), so
//! every partial read of one open file sees one snapshot.

use std::fmt::Write as _;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use crate::probe::{self, FileId, PageState};
use crate::source::Source;
use crate::sys::{self, CacheStat, Sharing};

/// A `stats` value: numbers are summed at the root, text is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Num(u64),
    Text(String),
}

/// Everything `stats` shows for one source, in order.
pub fn stats_pairs(source: &Source, mappers: u64) -> Vec<(&'static str, Value)> {
    use Value::{Num, Text};
    let page = source.page_size();
    let pages = source.length.div_ceil(page);
    let cache = sys::cachestat(source.file.as_fd(), source.offset, source.length)
        .unwrap_or_else(|_| CacheStat::default());
    let dirty = match source.sharing {
        Sharing::Shared => cache.dirty,
        Sharing::Private => source.page_count(PageState::Dirty, 0, pages),
    };
    let c = &source.counters;
    let load = |a: &std::sync::atomic::AtomicU64| Num(a.load(Ordering::Relaxed));
    let health = source.health();
    vec![
        (
            "source",
            Text(match &source.path {
                Some(p) => p.display().to_string(),
                None => format!("memfd:{}", source.name),
            }),
        ),
        ("mode", Text(source.mode_name().to_string())),
        ("io_mode", Text(source.io_mode().name().to_string())),
        ("writable", Text(yes_no(source.writable))),
        ("offset_bytes", Num(source.offset)),
        ("length_bytes", Num(source.length)),
        ("page_size_bytes", Num(page)),
        ("pages", Num(pages)),
        ("resident_pages", Num(cache.cache)),
        ("dirty_pages", Num(dirty)),
        ("writeback_pages", Num(cache.writeback)),
        ("evicted_pages", Num(cache.evicted)),
        ("recently_evicted_pages", Num(cache.recently_evicted)),
        ("reads", load(&c.reads)),
        ("read_bytes", load(&c.read_bytes)),
        ("writes", load(&c.writes)),
        ("write_bytes", load(&c.write_bytes)),
        ("msync_calls", load(&c.msync_calls)),
        ("msync_errors", load(&c.msync_errors)),
        ("msync_last_ns", load(&c.msync_last_ns)),
        ("msync_total_ns", load(&c.msync_total_ns)),
        ("invalidations", load(&c.invalidations)),
        ("open_handles", load(&c.open_handles)),
        ("mappers", Num(mappers)),
        ("source_size_bytes", Num(health.size)),
        ("source_state", Text(health.state().to_string())),
        (
            "uptime_ns",
            Num(u64::try_from(source.started.elapsed().as_nanos()).unwrap_or(u64::MAX)),
        ),
    ]
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn key_value_lines(pairs: &[(&str, Value)]) -> String {
    let mut s = String::new();
    for (key, value) in pairs {
        let _ = match value {
            Value::Num(n) => writeln!(s, "{key} {n}"),
            Value::Text(t) => writeln!(s, "{key} {t}"),
        };
    }
    s
}

pub fn stats(source: &Source, mappers: u64) -> String {
    key_value_lines(&stats_pairs(source, mappers))
}

/// The root `stats`: every numeric key summed over the sources (the page
/// size is the same for all; uptime is the daemon's), plus `sources`.
pub fn root_stats(all: &[Vec<(&'static str, Value)>]) -> String {
    let mut sums: Vec<(&'static str, Value)> = vec![("sources", Value::Num(all.len() as u64))];
    for pairs in all {
        for (key, value) in pairs {
            let Value::Num(n) = value else { continue };
            match sums.iter_mut().find(|(k, _)| k == key) {
                Some((_, Value::Num(total))) => {
                    *total = match *key {
                        "page_size_bytes" | "uptime_ns" => (*total).max(*n),
                        _ => total.saturating_add(*n),
                    }
                }
                _ => sums.push((key, Value::Num(*n))),
            }
        }
    }
    key_value_lines(&sums)
}

/// Prometheus text exposition of every numeric `stats` key, per source.
pub fn metrics(names: &[&str], all: &[Vec<(&'static str, Value)>]) -> String {
    let mut s = String::new();
    let Some(first) = all.first() else {
        return s;
    };
    for (key, _) in first {
        if !all.iter().any(|p| {
            p.iter()
                .any(|(k, v)| k == key && matches!(v, Value::Num(_)))
        }) {
            continue;
        }
        let metric = format!("mmapfs_{key}");
        let kind = if is_counter(key) { "counter" } else { "gauge" };
        let _ = writeln!(s, "# HELP {metric} mmapfs stats key {key}, per source.");
        let _ = writeln!(s, "# TYPE {metric} {kind}");
        for (name, pairs) in names.iter().zip(all) {
            if let Some((_, Value::Num(n))) = pairs.iter().find(|(k, _)| k == key) {
                let label = name.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(s, "{metric}{{source=\"{label}\"}} {n}");
            }
        }
    }
    s
}

fn is_counter(key: &str) -> bool {
    matches!(
        key,
        "reads"
            | "read_bytes"
            | "writes"
            | "write_bytes"
            | "msync_calls"
            | "msync_errors"
            | "msync_total_ns"
            | "invalidations"
    )
}

pub fn msync(source: &Source) -> String {
    match &*source.last_msync.lock().unwrap_or_else(|e| e.into_inner()) {
        Some(report) => report.render(),
        None => "command none\n".to_string(),
    }
}

pub fn dirty_pages(source: &Source) -> String {
    let pages = source.length.div_ceil(source.page_size());
    probe::cpulist(&source.page_ranges(PageState::Dirty, 0, pages))
}

pub fn resident_pages(source: &Source) -> String {
    let pages = source.length.div_ceil(source.page_size());
    probe::cpulist(&source.page_ranges(PageState::Resident, 0, pages))
}

/// `pid comm start-end perms offset_bytes`, one line per mapping.
pub fn mappers(files: &[FileId], daemon_pid: u32) -> String {
    let mut s = String::new();
    for m in probe::mappers(files, daemon_pid) {
        let _ = writeln!(
            s,
            "{} {} {:x}-{:x} {} {}",
            m.pid, m.comm, m.start, m.end, m.perms, m.offset
        );
    }
    s
}

/// Columns of the `map` chart.
const MAP_COLUMNS: u64 = 64;
/// Most rows the chart grows to before buckets get bigger.
const MAP_MAX_ROWS: u64 = 32;

/// A vmtouch -v style chart: one cell per bucket of pages.
pub fn map(source: &Source) -> String {
    let page = source.page_size();
    let pages = source.length.div_ceil(page);
    let cells = pages.min(MAP_COLUMNS * MAP_MAX_ROWS);
    let bucket = pages.div_ceil(cells);
    let mut s = format!(
        "# {} pages of {page} bytes, {bucket} page(s) per cell; ' ' none resident, 'o' some, 'O' all, 'd' some dirty, 'D' all dirty\n",
        pages
    );
    let mut first = 0;
    let mut column = 0;
    while first < pages {
        let n = bucket.min(pages - first);
        let resident = source.page_count(PageState::Resident, first, n);
        let dirty = source.page_count(PageState::Dirty, first, n);
        s.push(match (dirty, resident) {
            (d, _) if d >= n => 'D',
            (d, _) if d > 0 => 'd',
            (_, r) if r >= n => 'O',
            (_, r) if r > 0 => 'o',
            _ => ' ',
        });
        column += 1;
        if column == MAP_COLUMNS {
            s.push('\n');
            column = 0;
        }
        first += n;
    }
    if column != 0 {
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_sums_numbers_and_counts_sources() {
        let a = vec![
            ("mode", Value::Text("shared".into())),
            ("pages", Value::Num(3)),
            ("page_size_bytes", Value::Num(4096)),
        ];
        let b = vec![
            ("pages", Value::Num(4)),
            ("page_size_bytes", Value::Num(4096)),
        ];
        let text = root_stats(&[a, b]);
        assert_eq!(text, "sources 2\npages 7\npage_size_bytes 4096\n");
    }

    #[test]
    fn metrics_have_help_type_and_labels() {
        let a = vec![("reads", Value::Num(3)), ("mode", Value::Text("x".into()))];
        let text = metrics(&["f\"1"], &[a]);
        assert_eq!(
            text,
            "# HELP mmapfs_reads mmapfs stats key reads, per source.\n# TYPE mmapfs_reads counter\nmmapfs_reads{source=\"f\\\"1\"} 3\n"
        );
    }
}
