//! Hardening: many sources, bounded events, signals, odd source names, an
//! unprivileged user, the size rules of `data` (with SQLite on top), and
//! metrics that Prometheus tooling accepts.

mod adversarial;
mod resources;
mod sizes;
mod unprivileged;

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::util::{
    self, example_bin, is_mounted, sh, sh_ok, source_has, stat_value, write_marker, Running,
    TestMount,
};

/// Poll `cond` until it holds, failing after `limit` (for promises that
/// name a time shorter than `util::DEADLINE`).
fn wait_within(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `n` source names that sort in command-line order: s001 … s300.
fn numbered(n: usize) -> Vec<String> {
    let width = n.to_string().len();
    (1..=n).map(|i| format!("s{i:0width$}")).collect()
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn errno(result: std::io::Result<usize>) -> Option<i32> {
    result.err().and_then(|e| e.raw_os_error())
}

/// Run `check` on every case, then fail once naming each case that failed
/// (their panics are printed as they happen).
fn each_case<T: std::fmt::Debug>(cases: &[T], check: impl Fn(&T)) {
    let failed: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| check(case)));
            let payload = outcome.err()?;
            let why = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("panicked");
            let why: String = why.lines().collect::<Vec<_>>().join(" | ");
            Some(format!(
                "{case:?}: {}",
                why.chars().take(300).collect::<String>()
            ))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

/// Run `promtool check metrics` on `text`; returns (success, everything it said).
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && said.trim().is_empty(), said)
}
