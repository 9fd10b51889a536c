// ------------------------------------------------------------ small helpers

use std::time::Instant;

use crate::table::fmt_value;

/// The timing helper: wall-clock seconds of one call.
pub(crate) fn secs(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

pub(crate) fn ms(secs: f64) -> f64 {
    secs * 1e3
}

pub(crate) fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

/// Show every sample on stderr: a median hides how noisy a workload is.
pub(crate) fn report_spread(name: &str, samples: &[f64]) {
    let all: Vec<String> = samples.iter().map(|&v| fmt_value(v)).collect();
    progress(&format!("  {name}: {}", all.join(" ")));
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "median of nothing");
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// splitmix64: a tiny deterministic PRNG, so every run reads the same offsets.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub(crate) fn progress(msg: &str) {
    eprintln!("[compare] {msg}");
}

pub(crate) fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |n| n as u64)
}
