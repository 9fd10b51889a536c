//! One render function per generated file: plain state in, the bytes a
//! reader sees out. Rendering happens at open (see `fs.rs`), so every
//! partial read of one open file sees one snapshot.

use std::fmt::Write as _;

use crate::control::Report;
use crate::error::{errno_name, one_line};
use crate::held::{CrashReport, When};
use crate::mappers::Mapper;
use crate::stats::{self, Kind, Stats, Value};

/// `key value` lines of one source.
pub fn stats(stats: &Stats) -> String {
    let mut s = String::new();
    for (key, value) in stats {
        let _ = match value {
            Value::Num(n) => writeln!(s, "{} {n}", key.name),
            Value::Text(t) => writeln!(s, "{} {}", key.name, one_line(t)),
        };
    }
    s
}

/// The root `stats`: combined numbers, `sources` first.
pub fn root_stats(totals: &[(&str, u64)]) -> String {
    let mut s = String::new();
    for (key, n) in totals {
        let _ = writeln!(s, "{key} {n}");
    }
    s
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition: an info metric carrying every text value
/// as labels, then one family per numeric key, one sample per source.
pub fn metrics(names: &[&str], all: &[Stats]) -> String {
    let mut s = String::new();
    let Some(first) = all.first() else {
        return s;
    };
    let _ = writeln!(
        s,
        "# HELP mmapfs_source_info One sample per source; its labels say what the source is and how it is served.\n# TYPE mmapfs_source_info gauge"
    );
    for (name, stats) in names.iter().zip(all) {
        let mut labels = format!("source=\"{}\"", label(name));
        for (key, value) in stats {
            if let (Kind::Label, Value::Text(t)) = (key.kind, value) {
                let key = if key.name == "source" {
                    "path"
                } else {
                    key.name
                };
                let _ = write!(labels, ",{key}=\"{}\"", label(t));
            }
        }
        let _ = writeln!(s, "mmapfs_source_info{{{labels}}} 1");
    }
    for (key, _) in first.iter().filter(|(k, _)| k.kind != Kind::Label) {
        let (metric, divisor) = stats::metric_name(key);
        let kind = if key.kind == Kind::Counter {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(s, "# HELP {metric} {}", key.help);
        let _ = writeln!(s, "# TYPE {metric} {kind}");
        for (name, stats) in names.iter().zip(all) {
            let Some((_, Value::Num(n))) = stats.iter().find(|(k, _)| k.name == key.name) else {
                continue;
            };
            let value = if divisor == 1 {
                n.to_string()
            } else {
                format!("{}", *n as f64 / divisor as f64)
            };
            let _ = writeln!(s, "{metric}{{source=\"{}\"}} {value}", label(name));
        }
    }
    s
}

/// A control file (`msync`, `madvise`, `fadvise`, `mlock`): the last
/// report, or `command none`.
pub fn report(report: Option<&Report>) -> String {
    let Some(r) = report else {
        return "command none\n".to_string();
    };
    let mut s = String::new();
    let _ = writeln!(s, "command {}", r.command);
    let _ = writeln!(s, "offset_bytes {}", r.offset);
    let _ = writeln!(s, "length_bytes {}", r.length);
    if let Some((count, list)) = &r.pages {
        let _ = writeln!(s, "pages_count {count}");
        if let Some(list) = list {
            let _ = write!(s, "pages {}", cpulist(list));
        }
    }
    match &r.result {
        Ok(()) => s.push_str("result ok\n"),
        Err(e) => {
            let _ = writeln!(s, "result {}", errno_name(e.errno));
            let _ = writeln!(s, "error {}", one_line(&e.message));
        }
    }
    for (key, value) in &r.extra {
        let _ = writeln!(s, "{key} {value}");
    }
    for (key, before, after) in [
        ("resident_pages", r.before.resident, r.after.resident),
        ("dirty_pages", r.before.dirty, r.after.dirty),
        ("locked_pages", r.before.locked, r.after.locked),
    ] {
        let _ = writeln!(s, "{key}_before {before}");
        let _ = writeln!(s, "{key}_after {after}");
    }
    let _ = writeln!(s, "duration_ns {}", r.duration_ns);
    let _ = writeln!(s, "at_unix_ns {}", r.at_unix_ns);
    s
}

/// Page lists longer than this many ranges are only counted in `crash`.
const CRASH_LIST_MAX: usize = 1000;

/// `crash`: the last crash (what it lost and kept), what is armed, and
/// the syncs and crashes so far.
pub fn crash(
    last: Option<&CrashReport>,
    armed: Option<(u64, When)>,
    syncs: u64,
    crashes: u64,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "syncs {syncs}");
    let _ = writeln!(s, "crashes {crashes}");
    match armed {
        Some((at, when)) => {
            let _ = writeln!(s, "armed sync {at} {}", when.name());
        }
        None => s.push_str("armed none\n"),
    }
    let Some(r) = last else {
        s.push_str("last none\n");
        return s;
    };
    let _ = writeln!(s, "last {}", one_line(&r.cause));
    for (key, pages, list) in [
        ("lost", r.lost_pages(), &r.lost),
        ("kept", r.kept_pages(), &r.kept),
    ] {
        let _ = writeln!(s, "{key}_pages_count {pages}");
        if list.len() <= CRASH_LIST_MAX {
            let _ = write!(s, "{key}_pages {}", cpulist(list));
        } else {
            let _ = writeln!(s, "{key}_ranges {}", list.len());
        }
    }
    let _ = writeln!(s, "at_unix_ns {}", r.at_unix_ns);
    s
}

/// `dirty_pages`, `resident_pages`: the kernel's cpulist format,
/// `0-3,17,1024-1030`, then a newline.
pub fn cpulist(ranges: &[(u64, u64)]) -> String {
    let mut s = String::new();
    for (i, (a, b)) in ranges.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        if a == b {
            let _ = write!(s, "{a}");
        } else {
            let _ = write!(s, "{a}-{b}");
        }
    }
    s.push('\n');
    s
}

/// `mappers`: `pid comm start-end perms offset_bytes`, one line per mapping.
pub fn mappers(mappers: &[Mapper]) -> String {
    let mut s = String::new();
    for m in mappers {
        let _ = writeln!(
            s,
            "{} {} {:x}-{:x} {} {}",
            m.pid,
            one_line(&m.comm).replace(' ', "\\x20"),
            m.start,
            m.end,
            m.perms,
            m.offset
        );
    }
    s
}

/// Columns of the `map` chart.
pub const MAP_COLUMNS: u64 = 64;
/// Most rows the chart grows to before buckets get bigger.
pub const MAP_MAX_ROWS: u64 = 32;

/// `map`: a vmtouch -v style chart, one cell per bucket of `bucket` pages,
/// from `(pages in the bucket, resident, dirty)` per cell.
pub fn map(pages: u64, page_size: u64, bucket: u64, cells: &[(u64, u64, u64)]) -> String {
    let mut s = format!(
        "# {pages} pages of {page_size} bytes, {bucket} page(s) per cell; ' ' none resident, 'o' some, 'O' all, 'd' some dirty, 'D' all dirty\n"
    );
    for row in cells.chunks(MAP_COLUMNS as usize) {
        for &(n, resident, dirty) in row {
            s.push(match (dirty, resident) {
                (d, _) if d >= n => 'D',
                (d, _) if d > 0 => 'd',
                (_, r) if r >= n => 'O',
                (_, r) if r > 0 => 'o',
                _ => ' ',
            });
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_inject_lines_or_samples() {
        assert_eq!(one_line("a\nb\\c"), "a\\nb\\\\c");
        let all: Vec<Stats> = vec![vec![
            (&stats::SOURCE, Value::Text("/x/evil\nname".into())),
            (&stats::READS, Value::Num(3)),
        ]];
        let text = metrics(&["evil\"\nmmapfs_reads_total 99"], &all);
        assert_eq!(text.matches("\nmmapfs_reads_total").count(), 1, "{text}");
        assert!(text.contains("source=\"evil\\\"\\nmmapfs_reads_total 99\""));
        assert!(text.contains("# TYPE mmapfs_reads_total counter"));
    }

    #[test]
    fn cpulist_format() {
        assert_eq!(cpulist(&[]), "\n");
        assert_eq!(
            cpulist(&[(0, 3), (17, 17), (1024, 1030)]),
            "0-3,17,1024-1030\n"
        );
    }

    #[test]
    fn map_marks_cells() {
        let text = map(4, 4096, 1, &[(1, 0, 0), (1, 1, 0), (1, 1, 1), (2, 1, 0)]);
        assert!(text.ends_with("\n ODo\n"), "{text:?}");
    }
}
