//! The `fadvise` control file: `posix_fadvise(2)` on the source file's
//! range of the window. After `dontneed` the report says which pages stayed
//! resident and, where it can tell, why.

use nix::fcntl::PosixFadviseAdvice as Advice;

use super::{intersect, mlock::Locks, Report, State, Target};
use crate::control;
use crate::error::{fail, Error, Result};
use crate::pages::{self, PageState};
use crate::source::{Kind, Source};

/// Every advice the file takes.
const ADVICE: [(&str, Advice); 6] = [
    ("dontneed", Advice::POSIX_FADV_DONTNEED),
    ("willneed", Advice::POSIX_FADV_WILLNEED),
    ("noreuse", Advice::POSIX_FADV_NOREUSE),
    ("sequential", Advice::POSIX_FADV_SEQUENTIAL),
    ("random", Advice::POSIX_FADV_RANDOM),
    ("normal", Advice::POSIX_FADV_NORMAL),
];

/// A parsed `fadvise` command: the word, its advice, `missing`, the target.
pub type Request = control::Advice<Advice>;

/// Parse one write to `fadvise`. Anything malformed is `EINVAL`.
pub fn parse(bytes: &[u8], window: u64, page: u64) -> Result<Request> {
    control::parse_advice("fadvise", bytes, window, page, &ADVICE, &["willneed"])
}

/// Run one advice to completion and record it.
pub fn run(source: &Source, state: &State, locks: &Locks, request: Request) -> Report {
    let r = &request;
    let command = r.name();
    control::run("fadvise", command, source, state, locks, &r.target, || {
        let (target, missing) = control::missing_only(source, &r.target, r.missing);
        let result = apply(source, r, &target);
        let extra = if r.value == Advice::POSIX_FADV_DONTNEED && result.is_ok() {
            stayed(source, locks, &target)
        } else {
            missing
        };
        (result, extra)
    })
}

fn apply(source: &Source, r: &Request, target: &Target) -> Result<()> {
    if source.kind() == Kind::Anon {
        return Err(fail!(
            EINVAL,
            "fadvise: {} is an --anon region: its pages are memory, not a file's cache, \
             so there is nothing to advise; madvise works on it",
            source.name()
        ));
    }
    let page = source.page_size();
    for (offset, length) in target.byte_ranges(page, source.length()) {
        source
            .fadvise(offset, length, r.value)
            .map_err(|e| Error::from_io(e, format!("fadvise({})", r.word)))?;
    }
    Ok(())
}

/// After `dontneed`: the pages of the target still resident, and why where
/// it can tell: dirty pages are not dropped, locked ones neither; the rest
/// are mapped by some process or were in use.
fn stayed(source: &Source, locks: &Locks, target: &Target) -> Vec<(&'static str, String)> {
    let (Some(&(first, _)), Some(&(_, last))) = (target.pages.first(), target.pages.last()) else {
        return Vec::new();
    };
    let span = last - first + 1;
    let count = |r: &[(u64, u64)]| r.iter().map(|(a, b)| b - a + 1).sum::<u64>();
    let resident = intersect(
        &target.pages,
        &pages::ranges(source, PageState::Resident, first, span),
    );
    let dirty = intersect(
        &resident,
        &pages::ranges(source, PageState::Dirty, first, span),
    );
    let clean = Target {
        pages: resident.clone(),
        offset: 0,
        length: 0,
        as_pages: true,
    }
    .without(&dirty);
    let locked = locks.locked_in(source, &clean.pages);
    let stayed = count(&resident);
    let dirty = count(&dirty);
    vec![
        ("stayed_resident_pages", stayed.to_string()),
        ("stayed_dirty_pages", dirty.to_string()),
        ("stayed_locked_pages", locked.to_string()),
        (
            "stayed_mapped_or_busy_pages",
            stayed.saturating_sub(dirty + locked).to_string(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_and_missing() {
        let p = |t: &str| parse(t.as_bytes(), 8 * 4096, 4096);
        assert_eq!(p("dontneed").unwrap().value, Advice::POSIX_FADV_DONTNEED);
        assert!(p("willneed missing").unwrap().missing);
        for bad in ["", "dontneed missing", "evict", "willneed 3"] {
            assert_eq!(p(bad).unwrap_err().errno, libc::EINVAL, "{bad}");
        }
    }
}
