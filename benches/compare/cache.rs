// ------------------------------------------------------ cache-control rows

use std::collections::BTreeSet;
use std::path::Path;

use crate::helpers::{median, ms, page_size, progress, report_spread, secs, SplitMix64};
use crate::mounts::{on_path, Paths};
use crate::pieces::{drop_cache, echo, read_all, read_text, resident_fraction, run_vmtouch};
use crate::table::{Row, Target};
use crate::{CAT_RUNS, COLD_RUNS, EVICT_RUNS, MIB, PAGES_RANGES};

/// Row 13: `echo dontneed > fadvise` against `vmtouch -e` on the source,
/// each on the fully resident file (read through the source before every
/// sample, untimed).
pub(crate) fn fadvise_dontneed(p: &Paths, size: u64) -> Row {
    progress("echo dontneed > fadvise vs vmtouch -e");
    let control = p.mmapfs.file("fadvise");
    let mut worst_left = 0.0f64;
    let mut report = String::new();
    let prepare = || read_all(&p.native, size);
    let (ours, vmtouch) = versus_vmtouch(
        EVICT_RUNS,
        prepare,
        || echo(&control, b"dontneed\n"),
        "-e",
        &p.native,
        |ours| {
            worst_left = worst_left.max(resident_fraction(&p.native));
            if ours {
                report = last_report(
                    &control,
                    &["resident_pages_before", "stayed_resident_pages"],
                );
            }
        },
    );
    if worst_left > 0.01 {
        progress(&format!(
            "  warning: up to {:.1}% of the source stayed resident after an eviction",
            worst_left * 100.0
        ));
    }
    progress(&report);
    Row {
        native: vmtouch,
        ..Row::single(
            &format!(
                "echo dontneed > fadvise, {} resident (native: vmtouch -e)",
                size_text(size)
            ),
            "ms",
            ours,
            Target::RatioAtMost(1.2),
        )
    }
}

/// Row 14: `echo populate_read > madvise` against `vmtouch -t` on the
/// source, each on a cold file. Before every sample, untimed and the same
/// for both: `echo dontneed > madvise` (the daemon's mapping holds the pages
/// the last `populate_read` faulted in, and `posix_fadvise` cannot drop
/// mapped pages), then `fdatasync` and `POSIX_FADV_DONTNEED` on the source.
pub(crate) fn madvise_populate(p: &Paths, size: u64) -> Row {
    progress("echo populate_read > madvise vs vmtouch -t");
    let control = p.mmapfs.file("madvise");
    let mut worst_left = 0.0f64;
    let mut worst_short = 0.0f64;
    let mut report = String::new();
    let evict = || {
        echo(&control, b"dontneed\n");
        drop_cache(&p.native, &p.native);
        resident_fraction(&p.native)
    };
    let (ours, vmtouch) = versus_vmtouch(
        COLD_RUNS,
        || worst_left = worst_left.max(evict()),
        || echo(&control, b"populate_read\n"),
        "-t",
        &p.native,
        |ours| {
            worst_short = worst_short.max(1.0 - resident_fraction(&p.native));
            if ours {
                report = last_report(&control, &["resident_pages_before", "resident_pages_after"]);
            }
        },
    );
    for (what, worst) in [
        ("stayed resident before", worst_left),
        ("was not resident after", worst_short),
    ] {
        if worst > 0.01 {
            progress(&format!(
                "  warning: up to {:.1}% of the source {what} a sample",
                worst * 100.0
            ));
        }
    }
    progress(&report);
    // Leave no page mapped by the daemon: later workloads evict the source.
    echo(&control, b"dontneed\n");
    Row {
        native: vmtouch,
        ..Row::single(
            &format!(
                "echo populate_read > madvise, {} cold (native: vmtouch -t)",
                size_text(size)
            ),
            "ms",
            ours,
            Target::RatioAtMost(1.2),
        )
    }
}

/// Row 15: `willneed pages LIST` written to `madvise`, LIST holding
/// `PAGES_RANGES` single pages from a fixed-seed PRNG, no two adjacent, so
/// the daemon parses and applies that many ranges. The file is resident, so
/// the time is the daemon's (parse, one `madvise(2)` per range, the counts
/// before and after), not the disk's.
pub(crate) fn pages_list(p: &Paths, size: u64) -> Row {
    let pages = size / page_size();
    // Single pages with a gap between any two need at least 2 pages each.
    let n = PAGES_RANGES.min((pages / 4) as usize);
    progress(&format!("willneed pages LIST > madvise, {n} ranges"));
    let command = format!("willneed pages {}\n", scattered_pages(pages, n));
    progress(&format!("  command: {} bytes", command.len()));
    let control = p.mmapfs.file("madvise");
    read_all(&p.native, size);
    let samples: Vec<f64> = (0..CAT_RUNS)
        .map(|_| ms(secs(|| echo(&control, command.as_bytes()))))
        .collect();
    report_spread("willneed pages LIST (ms)", &samples);
    progress(&last_report(&control, &["pages_count"]));
    Row::single(
        &format!("willneed pages LIST > madvise, {n} single-page ranges"),
        "ms",
        median(samples),
        Target::Below(20.0),
    )
}

/// `rounds` rounds of `ours` (timed open + write + close of a control file)
/// and `vmtouch FLAG src` (timed, as a process), alternating which goes
/// first; `prepare` runs untimed before each sample and `check` after it
/// (told whether the sample was mmapfs's). The medians, vmtouch's None if it
/// is not installed.
fn versus_vmtouch(
    rounds: usize,
    mut prepare: impl FnMut(),
    mut ours: impl FnMut(),
    flag: &str,
    src: &Path,
    mut check: impl FnMut(bool),
) -> (f64, Option<f64>) {
    let have_vmtouch = on_path("vmtouch");
    if !have_vmtouch {
        progress("  vmtouch not installed: its column stays empty");
    }
    let mut mine = Vec::new();
    let mut theirs = Vec::new();
    for round in 0..rounds {
        for k in 0..2 {
            let vmtouch_turn = (round + k) % 2 == 1;
            if vmtouch_turn && !have_vmtouch {
                continue;
            }
            prepare();
            if vmtouch_turn {
                theirs.push(ms(secs(|| run_vmtouch(flag, src))));
            } else {
                mine.push(ms(secs(&mut ours)));
            }
            check(!vmtouch_turn);
        }
    }
    report_spread("mmapfs (ms)", &mine);
    let vmtouch = have_vmtouch.then(|| {
        report_spread(&format!("vmtouch {flag} (ms)"), &theirs);
        median(theirs)
    });
    (median(mine), vmtouch)
}

/// `n` distinct page indices below `pages`, no two adjacent (so each is a
/// range of its own), sorted, in the `pages CPULIST` format.
fn scattered_pages(pages: u64, n: usize) -> String {
    let mut rng = SplitMix64(16);
    let mut chosen = BTreeSet::new();
    while chosen.len() < n {
        let page = rng.below(pages);
        if chosen
            .range(page.saturating_sub(1)..=page + 1)
            .next()
            .is_none()
        {
            chosen.insert(page);
        }
    }
    let list: Vec<String> = chosen.iter().map(u64::to_string).collect();
    list.join(",")
}

/// What the control file's last report says: its result, how long the
/// daemon took inside (without FUSE and parsing) and any of `keys`.
fn last_report(control: &Path, keys: &[&str]) -> String {
    let text = read_text(control);
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .unwrap_or("?")
            .to_string()
    };
    let ns: f64 = value("duration_ns").parse().unwrap_or(f64::NAN);
    let mut parts = vec![
        format!("result {}", value("result")),
        format!("{:.2} ms in the daemon", ns / 1e6),
    ];
    parts.extend(keys.iter().map(|k| format!("{k} {}", value(k))));
    format!(
        "  last {} report: {}",
        control.file_name().unwrap_or_default().to_string_lossy(),
        parts.join(", ")
    )
}

fn size_text(size: u64) -> String {
    if size.is_multiple_of(1024 * MIB) {
        format!("{} GiB", size / (1024 * MIB))
    } else {
        format!("{} MiB", size / MIB)
    }
}
