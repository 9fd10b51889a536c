// ------------------------------------------------------------------- report

use std::fs;
use std::path::Path;

use crate::{MIB, SLOW_RUNS, STATS_RUNS};

/// One way to the file under test, and the table column it fills.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Native,
    /// The mmapfs mount with the default (or `MMAPFS_BENCH_IO`) io mode.
    Mmapfs,
    /// An mmapfs mount in cached mode: the daemon serves every read and write.
    Cached,
    Bindfs,
}

impl Via {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Via::Native => "native",
            Via::Mmapfs => "mmapfs",
            Via::Cached => "mmapfs cached",
            Via::Bindfs => "bindfs",
        }
    }
}

/// The medians of one comparison; None for a way that was not measured.
pub(crate) struct Medians {
    pub(crate) native: f64,
    pub(crate) mmapfs: Option<f64>,
    pub(crate) cached: Option<f64>,
    pub(crate) bindfs: Option<f64>,
}

/// How many times better than bindfs every cached-mode number must be.
const CACHED_OVER_BINDFS: f64 = 5.0;

/// What a row must reach, in the row's unit.
#[derive(Clone, Copy)]
pub(crate) enum Target {
    /// value / native at least this (throughput: higher is better).
    RatioAtLeast(f64),
    /// value / native at most this (cost: lower is better).
    RatioAtMost(f64),
    /// value below this.
    Below(f64),
    /// value below `below`, and native / value at least `speedup`.
    FasterThan { below: f64, speedup: f64 },
    /// value at most `factor` × native + `slack`.
    AtMostPlus { factor: f64, slack: f64 },
}

impl Target {
    /// Only throughputs have a floor; every other target is a cost.
    fn higher_is_better(self) -> bool {
        matches!(self, Target::RatioAtLeast(_))
    }

    /// None when the target needs a native number that is missing.
    fn met(self, v: f64, native: Option<f64>) -> Option<bool> {
        Some(match self {
            Target::RatioAtLeast(r) => v >= r * native?,
            Target::RatioAtMost(r) => v <= r * native?,
            Target::Below(limit) => v < limit,
            Target::FasterThan { below, speedup } => v < below && native? >= speedup * v,
            Target::AtMostPlus { factor, slack } => v <= factor * native? + slack,
        })
    }

    fn text(self, u: &str) -> String {
        match self {
            Target::RatioAtLeast(r) => format!("≥ {r}× native"),
            Target::RatioAtMost(r) => format!("≤ {r}× native"),
            Target::Below(v) => format!("< {v} {u}"),
            Target::FasterThan { below, speedup } => {
                format!("< {below} {u}, ≥ {speedup}× faster")
            }
            Target::AtMostPlus { factor, slack } => format!("≤ {factor}× native + {slack} {u}"),
        }
    }
}

pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) unit: &'static str,
    pub(crate) native: Option<f64>,
    pub(crate) mmapfs: Option<f64>,
    pub(crate) cached: Option<f64>,
    pub(crate) bindfs: Option<f64>,
    /// What the default mount must reach; None on cached-mode-only rows.
    pub(crate) target: Option<Target>,
    /// What the cached mount must reach against native; it must also be
    /// `CACHED_OVER_BINDFS` times better than bindfs where that is measured.
    pub(crate) cached_target: Option<Target>,
    /// How many times bindfs's throughput the default mount must reach,
    /// where bindfs is measured (the directory-source rows).
    pub(crate) over_bindfs: Option<f64>,
}

impl Row {
    /// A row of the default mount against native (and the rest, if measured).
    pub(crate) fn new(name: &str, unit: &'static str, m: Medians, target: Target) -> Row {
        Row {
            name: name.to_string(),
            unit,
            native: Some(m.native),
            mmapfs: m.mmapfs,
            cached: m.cached,
            bindfs: m.bindfs,
            target: Some(target),
            cached_target: None,
            over_bindfs: None,
        }
    }

    /// A throughput row of the default mount that must reach `times` ×
    /// bindfs, and `target` against native if there is one.
    pub(crate) fn over_bindfs(
        name: &str,
        unit: &'static str,
        m: Medians,
        target: Option<Target>,
        times: f64,
    ) -> Row {
        Row {
            target,
            over_bindfs: Some(times),
            ..Row::new(name, unit, m, Target::RatioAtLeast(0.0))
        }
    }

    /// The same row with a target for its cached-mode column too.
    pub(crate) fn and_cached(self, cached_target: Target) -> Row {
        Row {
            cached_target: Some(cached_target),
            ..self
        }
    }

    /// A row that only cached mode can serve (a window, a private mapping).
    pub(crate) fn cached_only(
        name: &str,
        unit: &'static str,
        m: Medians,
        cached_target: Target,
    ) -> Row {
        Row {
            name: name.to_string(),
            unit,
            native: Some(m.native),
            mmapfs: None,
            cached: m.cached,
            bindfs: m.bindfs,
            target: None,
            cached_target: Some(cached_target),
            over_bindfs: None,
        }
    }

    /// A row with no native or bindfs counterpart.
    pub(crate) fn single(name: &str, unit: &'static str, value: f64, target: Target) -> Row {
        Row {
            name: name.to_string(),
            unit,
            native: None,
            mmapfs: Some(value),
            cached: None,
            bindfs: None,
            target: Some(target),
            cached_target: None,
            over_bindfs: None,
        }
    }

    /// The ratio shown for `value` against native, in the target's terms.
    fn ratio(&self, value: f64) -> Option<String> {
        let native = self.native?;
        Some(match self.target {
            Some(Target::FasterThan { .. }) => format!("{:.0}× faster", native / value),
            _ => format!("{:.2}×", value / native),
        })
    }

    /// The cached column's ratio, and how it stands against bindfs in the
    /// terms of the bindfs target: `N× bindfs` for a throughput, `bindfs / N`
    /// for a cost, N being how many times better cached is.
    fn cached_ratio(&self) -> Option<String> {
        let cached = self.cached?;
        let ratio = self.ratio(cached)?;
        let (Some(bindfs), Some(t)) = (self.bindfs, self.cached_target) else {
            return Some(ratio);
        };
        Some(if t.higher_is_better() {
            format!("{ratio} ({:.1}× bindfs)", cached / bindfs)
        } else {
            format!("{ratio} (bindfs / {:.1})", bindfs / cached)
        })
    }

    /// The default mount's ratio, and for rows with a bindfs target how
    /// many times bindfs's throughput it reached.
    fn mmapfs_ratio(&self) -> Option<String> {
        let ratio = self.ratio(self.mmapfs?)?;
        match (self.over_bindfs, self.bindfs) {
            (Some(_), Some(b)) => Some(format!("{ratio} ({:.1}× bindfs)", self.mmapfs? / b)),
            _ => Some(ratio),
        }
    }

    fn target_text(&self) -> String {
        let u = self.unit;
        let mut parts: Vec<String> = self.target.iter().map(|t| t.text(u)).collect();
        if let Some(times) = self.over_bindfs {
            parts.push(format!("≥ {times}× bindfs"));
        }
        if let Some(t) = self.cached_target {
            let bindfs = if t.higher_is_better() {
                format!("≥ {CACHED_OVER_BINDFS}× bindfs")
            } else {
                format!("≤ bindfs / {CACHED_OVER_BINDFS}")
            };
            parts.push(format!("cached {}, {bindfs}", t.text(u)));
        }
        parts.join("; ")
    }

    /// Every target that applies: the default mount's, the cached mount's
    /// against native, and against bindfs when bindfs was measured. None
    /// when one needs a native number that is missing.
    fn passes(&self) -> Option<bool> {
        let mut checks = Vec::new();
        if let (Some(t), Some(v)) = (self.target, self.mmapfs) {
            checks.push(t.met(v, self.native));
        }
        if let (Some(times), Some(v), Some(b)) = (self.over_bindfs, self.mmapfs, self.bindfs) {
            checks.push(Some(v >= times * b));
        }
        if let (Some(t), Some(v)) = (self.cached_target, self.cached) {
            checks.push(t.met(v, self.native));
            if let Some(b) = self.bindfs {
                checks.push(Some(if t.higher_is_better() {
                    v >= CACHED_OVER_BINDFS * b
                } else {
                    v * CACHED_OVER_BINDFS <= b
                }));
            }
        }
        if checks.contains(&Some(false)) {
            Some(false)
        } else {
            checks
                .into_iter()
                .collect::<Option<Vec<bool>>>()
                .map(|_| true)
        }
    }
}

/// Numbers with precision that suits their size.
pub(crate) fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

pub(crate) fn print_machine(dir: &Path, size: u64) {
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

/// The table; `io_mode` is the default mount's, named in its column header.
pub(crate) fn print_table(rows: &[Row], io_mode: &str) {
    let mmapfs = format!("mmapfs ({io_mode})");
    let header = [
        "workload",
        "native",
        &mmapfs,
        "ratio",
        "mmapfs (cached)",
        "ratio",
        "bindfs",
        "ratio",
        "target",
        "pass/fail",
    ];
    let dash = || "-".to_string();
    let cells: Vec<[String; 10]> = rows
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
                r.mmapfs.map_or_else(dash, fmt_value),
                r.mmapfs_ratio().unwrap_or_else(dash),
                r.cached.map_or_else(dash, fmt_value),
                r.cached_ratio().unwrap_or_else(dash),
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
        "ratio = value / native; for dirty_pages it is how many times faster than \
         vmtouch. After the cached ratio, in brackets: how it stands against bindfs \
         (N× bindfs for a throughput, bindfs / N for a cost). Medians of \
         {SLOW_RUNS}-{STATS_RUNS} runs."
    );
}
