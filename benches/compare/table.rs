// ------------------------------------------------------------------- report

use std::fs;
use std::path::Path;

use crate::{MIB, SLOW_RUNS, STATS_RUNS};

pub(crate) struct Triple {
    pub(crate) native: f64,
    pub(crate) mmapfs: f64,
    pub(crate) bindfs: Option<f64>,
}

/// What a row must reach, in the row's unit.
pub(crate) enum Target {
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

pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) unit: &'static str,
    pub(crate) native: Option<f64>,
    pub(crate) mmapfs: f64,
    pub(crate) bindfs: Option<f64>,
    pub(crate) target: Target,
}

impl Row {
    pub(crate) fn new(name: &str, unit: &'static str, t: Triple, target: Target) -> Row {
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
    pub(crate) fn single(name: &str, unit: &'static str, value: f64, target: Target) -> Row {
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

pub(crate) fn print_table(rows: &[Row]) {
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
