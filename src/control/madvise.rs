//! The `madvise` control file: `madvise(2)` hints on the daemon's mapping
//! of the window. `willneed missing` and `populate_read missing` touch only
//! the pages not resident now.

use super::{mlock::Locks, Report, State, Target};
use crate::control;
use crate::error::{fail, Error, Result};
use crate::source::Source;

/// Every hint the file takes, with its `madvise(2)` advice.
const ADVICE: [(&str, libc::c_int); 9] = [
    ("willneed", libc::MADV_WILLNEED),
    ("dontneed", libc::MADV_DONTNEED),
    ("cold", libc::MADV_COLD),
    ("pageout", libc::MADV_PAGEOUT),
    ("populate_read", libc::MADV_POPULATE_READ),
    ("populate_write", libc::MADV_POPULATE_WRITE),
    ("random", libc::MADV_RANDOM),
    ("sequential", libc::MADV_SEQUENTIAL),
    ("normal", libc::MADV_NORMAL),
];

/// Hints that read pages in, which `missing` can narrow to absent pages.
const FILLING: [&str; 2] = ["willneed", "populate_read"];

/// A parsed `madvise` command: the word, its advice, `missing`, the target.
pub type Request = control::Advice<libc::c_int>;

/// Parse one write to `madvise`. Anything malformed is `EINVAL`.
pub fn parse(bytes: &[u8], window: u64, page: u64) -> Result<Request> {
    control::parse_advice("madvise", bytes, window, page, &ADVICE, &FILLING)
}

/// Run one hint to completion and record it.
pub fn run(source: &Source, state: &State, locks: &Locks, request: Request) -> Report {
    let r = &request;
    let command = r.name();
    control::run("madvise", command, source, state, locks, &r.target, || {
        let (target, extra) = control::missing_only(source, &r.target, r.missing);
        (apply(source, locks, r, &target), extra)
    })
}

fn apply(source: &Source, locks: &Locks, r: &Request, target: &Target) -> Result<()> {
    if r.value == libc::MADV_POPULATE_WRITE && !source.writable() {
        return Err(fail!(
            EACCES,
            "madvise: populate_write needs a writable mapping, and {} is mounted read-only",
            source.name()
        ));
    }
    source
        .madvise(
            &target.byte_ranges(source.page_size(), source.length()),
            r.value,
        )
        .map_err(|e| {
            let mut why = Error::from_io(e, format!("madvise({})", r.word));
            if why.errno == libc::EINVAL && locks.locked_in(source, &target.pages) > 0 {
                why.message
                    .push_str(": the range holds locked pages (mlock); unlock them first");
            }
            why
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_and_missing() {
        let p = |t: &str| parse(t.as_bytes(), 8 * 4096, 4096);
        assert_eq!(p("pageout").unwrap().value, libc::MADV_PAGEOUT);
        let r = p("populate_read missing pages 0-3").unwrap();
        assert!(r.missing && r.target.pages == vec![(0, 3)]);
        for bad in ["", "dontneed missing", "missing", "WILLNEED", "willneed 1"] {
            assert_eq!(p(bad).unwrap_err().errno, libc::EINVAL, "{bad}");
        }
    }
}
