//! One render function per generated file: plain state in, the bytes a
//! reader sees out. Rendering happens at open (see `fs.rs`), so every
//! partial read of one open file sees one snapshot.

use std::fmt::Write as _;

use crate::control::Report;
use crate::dir::FileCache;
use crate::error::{errno_name, one_line};
use crate::held::{CrashReport, When};
use crate::mappers::Mapper;
use crate::stats::{self, Key, Kind, Stats, Value};
use crate::trace::life::{Cause, Sample, Written};
use crate::trace::VmDirty;

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

/// `files/PATH/stats`: `key value` lines of one file of a directory source.
pub fn file_stats(lines: &[(&str, String)]) -> String {
    let mut s = String::new();
    for (key, value) in lines {
        let _ = writeln!(s, "{key} {}", one_line(value));
    }
    s
}

/// Most lines `top` shows: the files holding the most page cache.
pub const TOP_MAX: usize = 1000;

/// `top`: `resident_pages dirty_pages writeback_pages path`, largest first
/// (the caller sorts), then how many files were left out.
pub fn top(files: &[FileCache]) -> String {
    let mut s = String::from("# resident_pages dirty_pages writeback_pages path\n");
    for f in files.iter().take(TOP_MAX) {
        let _ = writeln!(
            s,
            "{} {} {} {}",
            f.stat.cache,
            f.stat.dirty,
            f.stat.writeback,
            one_line(&f.path.to_string_lossy())
        );
    }
    if files.len() > TOP_MAX {
        let _ = writeln!(s, "# {} more files hold pages", files.len() - TOP_MAX);
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
    if all.is_empty() {
        return s;
    }
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
    let shown = |key: &Key| {
        all.iter()
            .any(|st| st.iter().any(|(k, _)| k.name == key.name))
    };
    for key in stats::ALL
        .into_iter()
        .filter(|k| k.kind != Kind::Label && shown(k))
    {
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
const MAP_COLUMNS: u64 = 64;
/// Most rows the chart grows to before buckets get bigger.
const MAP_MAX_ROWS: u64 = 32;

/// `map` of `pages` pages, in at most `MAP_COLUMNS * MAP_MAX_ROWS` cells:
/// `count(first, n)` gives the resident and dirty pages of the bucket of
/// `n` pages from `first`.
pub fn map(pages: u64, page_size: u64, mut count: impl FnMut(u64, u64) -> (u64, u64)) -> String {
    let cells = pages.min(MAP_COLUMNS * MAP_MAX_ROWS);
    let bucket = pages.div_ceil(cells.max(1)).max(1);
    let mut counts = Vec::new();
    let mut first = 0;
    while first < pages {
        let n = bucket.min(pages - first);
        let (resident, dirty) = count(first, n);
        counts.push((n, resident, dirty));
        first += n;
    }
    map_cells(pages, page_size, bucket, &counts)
}

/// The chart, vmtouch -v style, one cell per bucket of `bucket` pages, from
/// `(pages in the bucket, resident, dirty)` per cell.
fn map_cells(pages: u64, page_size: u64, bucket: u64, cells: &[(u64, u64, u64)]) -> String {
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

/// What `writeback` shows.
pub struct WritebackView {
    pub trace: &'static str,
    pub dirty: u64,
    pub writeback: u64,
    /// From the trace, while it runs.
    pub written: Option<Written>,
    pub vm: VmDirty,
    pub now_ns: u128,
}

/// `writeback`: `key value` lines on the way of the dirty pages to disk.
/// What only the trace can know says `unknown` while it does not run.
pub fn writeback(v: &WritebackView) -> String {
    let mut s = String::new();
    let mut line = |key: &str, value: String| {
        let _ = writeln!(s, "{key} {value}");
    };
    let unknown = || "unknown".to_string();
    line("trace", v.trace.to_string());
    line("dirty_pages", v.dirty.to_string());
    line("writeback_pages", v.writeback.to_string());
    let dirtied = v.written.as_ref().and_then(|w| w.oldest_dirty_ns);
    line(
        "oldest_dirty_age_ns",
        dirtied.map_or_else(unknown, |t| v.now_ns.saturating_sub(t).to_string()),
    );
    line(
        "inode_dirtied_unix_ns",
        dirtied.map_or_else(unknown, |t| t.to_string()),
    );
    let expire_ns = u128::from(v.vm.expire_centisecs) * 10_000_000;
    let interval_ns = u128::from(v.vm.writeback_centisecs) * 10_000_000;
    // The flusher takes an inode dirty for longer than the expiry at its
    // first periodic pass after that: within one interval.
    line(
        "periodic_writeback_after_unix_ns",
        dirtied.map_or_else(unknown, |t| (t + expire_ns).to_string()),
    );
    line(
        "periodic_writeback_by_unix_ns",
        dirtied.map_or_else(unknown, |t| (t + expire_ns + interval_ns).to_string()),
    );
    line("dirty_expire_centisecs", v.vm.expire_centisecs.to_string());
    line(
        "dirty_writeback_centisecs",
        v.vm.writeback_centisecs.to_string(),
    );
    line("dirty_background_ratio", v.vm.background_ratio.to_string());
    line("dirty_background_bytes", v.vm.background_bytes.to_string());
    line("system_dirty_pages", v.vm.dirty_pages.to_string());
    line(
        "background_threshold_pages",
        v.vm.background_threshold_pages.to_string(),
    );
    let over = v.vm.dirty_pages > v.vm.background_threshold_pages;
    line(
        "over_background_threshold",
        if over { "yes" } else { "no" }.to_string(),
    );
    for (i, cause) in Cause::ALL.iter().enumerate() {
        line(
            &format!("written_{}_pages", cause.name()),
            v.written
                .as_ref()
                .map_or_else(unknown, |w| w.by_cause[i].to_string()),
        );
    }
    let latencies = v.written.as_ref().map(|w| w.latencies.as_slice());
    let at = |q: f64| {
        latencies
            .filter(|l| !l.is_empty())
            .map_or_else(unknown, |l| {
                let i = ((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1;
                l[i].to_string()
            })
    };
    line("dirtied_to_written_p50_ns", at(0.5));
    line("dirtied_to_written_p99_ns", at(0.99));
    line("dirtied_to_written_max_ns", at(1.0));
    line(
        "dirtied_to_written_samples",
        latencies.map_or_else(unknown, |l| l.len().to_string()),
    );
    s
}

/// `history`: `unix_ns resident dirty writeback`, oldest first.
pub fn history(samples: &[Sample]) -> String {
    let mut s = String::new();
    for x in samples {
        let _ = writeln!(s, "{} {} {} {}", x.at_ns, x.resident, x.dirty, x.writeback);
    }
    s
}

/// `timeline.svg`: resident, dirty and writeback pages over the last
/// samples, seconds before `now_ns`, with a vertical mark per writeback
/// (syncs in one colour, the flusher's in another).
pub fn timeline(name: &str, samples: &[Sample], marks: &[(u128, Cause)], now_ns: u128) -> String {
    use plotters::prelude::*;
    let ago = |t: u128| -(now_ns.saturating_sub(t) as f64 / 1e9);
    let start = samples.first().map_or(-60.0, |x| ago(x.at_ns).min(-1.0));
    let top = samples
        .iter()
        .map(|x| x.resident.max(x.dirty).max(x.writeback))
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 420)).into_drawing_area();
        let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(
                    format!("{} — pages over time", one_line(name)),
                    ("sans-serif", 20),
                )
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(70)
                .build_cartesian_2d(start..0.0, 0.0..top)?;
            chart
                .configure_mesh()
                .x_desc("seconds ago")
                .y_desc("pages")
                .draw()?;
            let series = |pick: fn(&Sample) -> u64| {
                samples
                    .iter()
                    .map(move |x| (ago(x.at_ns), pick(x) as f64))
                    .collect::<Vec<_>>()
            };
            for (label, colour, pick) in [
                (
                    "resident",
                    BLUE,
                    (|x: &Sample| x.resident) as fn(&Sample) -> u64,
                ),
                ("dirty", RED, |x: &Sample| x.dirty),
                ("writeback", GREEN, |x: &Sample| x.writeback),
            ] {
                chart
                    .draw_series(LineSeries::new(series(pick), colour.stroke_width(2)))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour));
            }
            for (mark, colour) in [(Cause::Sync, MAGENTA), (Cause::Periodic, BLACK)] {
                let at: Vec<f64> = marks
                    .iter()
                    .filter(|(t, c)| (*c == mark) == (mark == Cause::Sync) && ago(*t) >= start)
                    .map(|(t, _)| ago(*t))
                    .collect();
                let label = if mark == Cause::Sync {
                    "sync"
                } else {
                    "flusher writeback"
                };
                chart
                    .draw_series(at.iter().map(|&x| {
                        PathElement::new([(x, 0.0), (x, top)], colour.mix(0.6).stroke_width(1))
                    }))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
            root.present()?;
            Ok(())
        })();
        if let Err(e) = drawn {
            log::warn!("draw timeline.svg: {e}");
        }
    }
    svg
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
    fn timeline_is_an_svg_with_marks() {
        let samples: Vec<Sample> = (0..5)
            .map(|i| Sample {
                at_ns: i * 1_000_000_000,
                resident: 10 * i as u64,
                dirty: i as u64,
                writeback: 0,
            })
            .collect();
        let svg = timeline(
            "a.bin",
            &samples,
            &[(3_000_000_000, Cause::Sync)],
            5_000_000_000,
        );
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        assert!(svg.contains("flusher writeback") && svg.contains("resident"));
    }

    #[test]
    fn writeback_without_trace_says_unknown() {
        let text = writeback(&WritebackView {
            trace: "off",
            dirty: 3,
            writeback: 0,
            written: None,
            vm: VmDirty::default(),
            now_ns: 1,
        });
        assert!(text.contains("dirty_pages 3\n"));
        assert!(text.contains("oldest_dirty_age_ns unknown\n"));
        assert!(text.lines().all(|l| l.split(' ').count() == 2), "{text}");
    }

    #[test]
    fn map_marks_cells() {
        let text = map_cells(4, 4096, 1, &[(1, 0, 0), (1, 1, 0), (1, 1, 1), (2, 1, 0)]);
        assert!(text.ends_with("\n ODo\n"), "{text:?}");
    }
}
