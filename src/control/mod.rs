//! Control files: one command per write, run to completion, the last result
//! readable with `cat`. This module holds what they share: the parser of
//! `COMMAND [QUALIFIER] [RANGE]` lines, where a command applies, the
//! report every file keeps, and the kernel side a command may need.

pub mod crash;
pub mod fadvise;
pub mod madvise;
pub mod mlock;
pub mod msync;

use std::sync::Mutex;
use std::time::Instant;

use crate::error::{errno_name, fail, Error, Result};
use crate::events::{unix_ns, Event};
use crate::pages::{self, PageState};
use crate::probe::{self, Ranges};
use crate::source::Source;
use crate::sys::Sharing;

/// The longest command any control file takes: the largest write the mount
/// accepts, so a `pages CPULIST` of a big working set fits. It is parsed and
/// dropped; no user input is kept beyond a quoted word in a message.
pub const COMMAND_MAX: usize = 1 << 20;
/// How much of a bad word an error message quotes.
const QUOTE_MAX: usize = 32;

/// Where a command applies: page ranges of the window (inclusive indices,
/// sorted and merged). Spelled as `OFFSET [LENGTH]` or `pages CPULIST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pages: Ranges,
    /// The first byte and the byte count of the whole span, as written
    /// (`OFFSET [LENGTH]`), or of the pages' span.
    pub offset: u64,
    pub length: u64,
    /// Given as `pages CPULIST`.
    pub as_pages: bool,
}

impl Target {
    /// `[offset, offset + length)` byte ranges of the window, one per page
    /// range, the last clipped to the window's end.
    pub fn byte_ranges(&self, page: u64, window: u64) -> Vec<(u64, u64)> {
        if !self.as_pages {
            return vec![(self.offset, self.length)];
        }
        self.pages
            .iter()
            .map(|&(a, b)| {
                let start = a * page;
                (start, ((b + 1) * page).min(window) - start)
            })
            .collect()
    }

    pub fn page_count(&self) -> u64 {
        self.pages.iter().map(|(a, b)| b - a + 1).sum()
    }

    /// The part of this target that is not in `ranges` (both sorted).
    pub fn without(&self, ranges: &[(u64, u64)]) -> Target {
        let mut out = Ranges::new();
        for &(a, b) in &self.pages {
            let mut next = a;
            for &(x, y) in ranges.iter().filter(|(x, y)| *y >= a && *x <= b) {
                if x > next {
                    out.push((next, x - 1));
                }
                next = next.max(y + 1);
            }
            if next <= b {
                out.push((next, b));
            }
        }
        Target::of_pages(out)
    }

    fn of_pages(pages: Ranges) -> Target {
        Target {
            offset: 0,
            length: 0,
            as_pages: true,
            pages,
        }
    }
}

/// The pages both sorted range lists hold.
pub fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Ranges {
    let (mut i, mut j) = (0, 0);
    let mut out = Ranges::new();
    while i < a.len() && j < b.len() {
        let first = a[i].0.max(b[j].0);
        let last = a[i].1.min(b[j].1);
        if first <= last {
            out.push((first, last));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// One parsed write: the command word (None for an empty line), the
/// qualifier words it carried, and where it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command<'a> {
    pub word: Option<&'a str>,
    pub qualifiers: Vec<&'a str>,
    pub target: Target,
}

/// What the kernel side of the mount can do for a command: write back the
/// dirty pages of `data` it holds in the FUSE page cache (they reach the
/// daemon as writes) and drop them, for a byte range of the window.
pub trait KernelCache: Send + Sync {
    fn push_and_drop(&self, data_ino: u64, offset: u64, length: u64) -> Result<()>;
    /// Have the kernel drop its name `name` in directory `parent` (a file
    /// deleted behind the mount), so it forgets the inode once unused.
    fn forget_name(&self, parent: u64, name: &std::ffi::OsStr) -> Result<()>;
}

/// An advice file's command (`madvise`, `fadvise`): one word of `table`,
/// and `missing` where the word is one of `filling`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advice<T> {
    pub word: &'static str,
    pub value: T,
    pub missing: bool,
    pub target: Target,
}

impl<T> Advice<T> {
    /// The command as a report names it: `willneed missing`.
    pub fn name(&self) -> String {
        if self.missing {
            format!("{} missing", self.word)
        } else {
            self.word.to_string()
        }
    }
}

/// Parse `WORD [missing] [RANGE]` for an advice file.
pub fn parse_advice<T: Copy>(
    file: &str,
    bytes: &[u8],
    window: u64,
    page: u64,
    table: &[(&'static str, T)],
    filling: &[&str],
) -> Result<Advice<T>> {
    let parsed = parse(file, bytes, window, page, &["missing"])?;
    let given = parsed.word.unwrap_or("");
    let Some(&(word, value)) = table.iter().find(|(w, _)| *w == given) else {
        let words: Vec<&str> = table.iter().map(|(w, _)| *w).collect();
        return Err(fail!(
            EINVAL,
            "{file}: unknown advice '{}': use {} [OFFSET [LENGTH] | pages CPULIST]",
            quote(given),
            words.join(", ")
        ));
    };
    let missing = parsed.qualifiers.contains(&"missing");
    if missing && !filling.contains(&word) {
        return Err(fail!(
            EINVAL,
            "{file}: missing goes with {}, not {word}",
            filling.join(" or ")
        ));
    }
    Ok(Advice {
        word,
        value,
        missing,
        target: parsed.target,
    })
}

/// A bad word, quoted short and escaped for an error line.
pub fn quote(word: &str) -> String {
    let mut shown: String = word.chars().take(QUOTE_MAX).collect();
    if shown.len() < word.len() {
        shown.push('…');
    }
    shown.escape_default().to_string()
}

/// Parse `COMMAND [QUALIFIER...] [OFFSET [LENGTH] | pages CPULIST]` written
/// to control file `file`, for a window of `window` bytes; `qualifiers` are
/// the words that may follow the command. One line per write (a trailing
/// newline or CRLF is allowed); anything malformed is `EINVAL`.
pub fn parse<'a>(
    file: &str,
    bytes: &'a [u8],
    window: u64,
    page: u64,
    qualifiers: &[&str],
) -> Result<Command<'a>> {
    if bytes.len() > COMMAND_MAX {
        return Err(fail!(
            EINVAL,
            "{file}: a command is at most {COMMAND_MAX} bytes; got {}",
            bytes.len()
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| fail!(EINVAL, "{file}: command is not UTF-8 text"))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.contains(['\n', '\r', '\0']) {
        return Err(fail!(EINVAL, "{file}: one command per write"));
    }
    let mut words = text.split_ascii_whitespace().peekable();
    let word = words.next();
    let mut given = Vec::new();
    while let Some(w) = words.next_if(|w| qualifiers.contains(w)) {
        given.push(w);
    }
    let target = match words.peek() {
        Some(&"pages") => {
            words.next();
            let list = words.next().unwrap_or("");
            pages_target(file, list, window, page)?
        }
        _ => span_target(file, words.next(), words.next(), window, page)?,
    };
    if let Some(extra) = words.next() {
        return Err(fail!(
            EINVAL,
            "{file}: unexpected '{}' after the range",
            quote(extra)
        ));
    }
    Ok(Command {
        word,
        qualifiers: given,
        target,
    })
}

fn span_target(
    file: &str,
    offset: Option<&str>,
    length: Option<&str>,
    window: u64,
    page: u64,
) -> Result<Target> {
    let number = |w: &str, what: &str| {
        crate::size::parse(w).map_err(|e| fail!(EINVAL, "{file}: {what}: {}", quote(&e)))
    };
    if window == 0 && offset.is_none() {
        // A whole file truncated to nothing: the whole window is no page.
        return Ok(Target::of_pages(Ranges::new()));
    }
    let offset = offset.map_or(Ok(0), |w| number(w, "OFFSET"))?;
    let length = length.map(|w| number(w, "LENGTH")).transpose()?;
    if !offset.is_multiple_of(page) {
        return Err(fail!(
            EINVAL,
            "{file}: OFFSET {offset} is not a multiple of the page size ({page})"
        ));
    }
    if offset >= window {
        return Err(fail!(
            EINVAL,
            "{file}: OFFSET {offset} is past the end of the mapping ({window} bytes)"
        ));
    }
    let length = length.unwrap_or(window - offset);
    if length == 0 || offset.checked_add(length).is_none_or(|end| end > window) {
        return Err(fail!(
            EINVAL,
            "{file}: LENGTH {length} from {offset} is empty or past the end of the mapping ({window} bytes)"
        ));
    }
    Ok(Target {
        pages: vec![(offset / page, (offset + length - 1) / page)],
        offset,
        length,
        as_pages: false,
    })
}

/// `pages 0-99,4096`: page indices of the window in the format
/// `resident_pages` prints; an empty list is no page at all.
fn pages_target(file: &str, list: &str, window: u64, page: u64) -> Result<Target> {
    let last_page = window.div_ceil(page).saturating_sub(1);
    let index = |w: &str| -> Result<u64> {
        let n: u64 = w.parse().map_err(|_| {
            fail!(
                EINVAL,
                "{file}: pages: '{}' is not a page index (format: 0-3,17,1024-1030)",
                quote(w)
            )
        })?;
        if n > last_page {
            return Err(fail!(
                EINVAL,
                "{file}: pages: page {n} is past the last page of the mapping ({last_page})"
            ));
        }
        Ok(n)
    };
    let mut ranges = Ranges::new();
    for item in list.split(',').filter(|i| !i.is_empty()) {
        let (a, b) = match item.split_once('-') {
            Some((a, b)) => (index(a)?, index(b)?),
            None => {
                let n = index(item)?;
                (n, n)
            }
        };
        if a > b {
            return Err(fail!(EINVAL, "{file}: pages: range {a}-{b} runs backwards"));
        }
        ranges.push((a, b));
    }
    let pages = probe::union(&ranges, &[]);
    let (offset, length) = match (pages.first(), pages.last()) {
        (Some(&(a, _)), Some(&(_, b))) => (a * page, ((b + 1) * page).min(window) - a * page),
        _ => (0, 0),
    };
    Ok(Target {
        pages,
        offset,
        length,
        as_pages: true,
    })
}

/// The pages of `target` not resident now.
fn without_resident(source: &Source, target: &Target) -> Target {
    let (Some(&(first, _)), Some(&(_, last))) = (target.pages.first(), target.pages.last()) else {
        return target.clone();
    };
    let resident = pages::ranges(source, PageState::Resident, first, last - first + 1);
    target.without(&resident)
}

/// Page counts of a target at one moment, for a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub resident: u64,
    pub dirty: u64,
    pub locked: u64,
}

/// Resident, dirty and locked pages of `target` now. In shared mode one
/// `cachestat` per range gives both counts, so a page list costs what its
/// own pages cost, not what the span between them holds; in private mode
/// the copies are found once over the span and kept to the target.
pub fn measure(source: &Source, target: &Target, locks: &mlock::Locks) -> Counts {
    let locked = locks.locked_in(source, &target.pages);
    if source.sharing() == Sharing::Shared {
        let mut counts = Counts {
            locked,
            ..Counts::default()
        };
        for &(a, b) in &target.pages {
            let n = b - a + 1;
            let stat = pages::cache_stat(source, a, n);
            counts.resident += stat.cache.min(n);
            counts.dirty += stat.dirty.min(n);
        }
        return counts;
    }
    let (Some(&(first, _)), Some(&(_, last))) = (target.pages.first(), target.pages.last()) else {
        return Counts::default();
    };
    let span = last - first + 1;
    let count = |state| {
        let found = pages::ranges(source, state, first, span);
        Target::of_pages(intersect(&target.pages, &found)).page_count()
    };
    Counts {
        resident: count(PageState::Resident),
        dirty: count(PageState::Dirty),
        locked,
    }
}

/// The most ranges a report repeats; a longer list shows as a count.
const REPORT_RANGES_MAX: usize = 512;

/// What the last command of a control file did; reading the file renders
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The command as run, with its qualifiers (`lock onfault`).
    pub command: String,
    pub offset: u64,
    pub length: u64,
    /// For `pages CPULIST`: how many pages, and the list if it is short.
    pub pages: Option<(u64, Option<Ranges>)>,
    pub result: std::result::Result<(), Error>,
    pub before: Counts,
    pub after: Counts,
    /// Lines only this file reports (`reached_source`, `stayed_...`).
    pub extra: Vec<(&'static str, String)>,
    pub duration_ns: u64,
    pub at_unix_ns: u128,
}

/// Run one command on `target` of `source`: count before, `act`, count
/// after. `act` returns the result and any lines of its own for the
/// report.
pub fn execute(
    command: String,
    source: &Source,
    target: &Target,
    locks: &mlock::Locks,
    act: impl FnOnce() -> (Result<()>, Vec<(&'static str, String)>),
) -> Report {
    let started = Instant::now();
    let at_unix_ns = unix_ns();
    let before = measure(source, target, locks);
    let (result, extra) = act();
    let after = measure(source, target, locks);
    let duration_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let pages = target.as_pages.then(|| {
        (
            target.page_count(),
            (target.pages.len() <= REPORT_RANGES_MAX).then(|| target.pages.clone()),
        )
    });
    Report {
        command,
        offset: target.offset,
        length: target.length,
        pages,
        result,
        before,
        after,
        extra,
        duration_ns,
        at_unix_ns,
    }
}

/// Run a cache-control command alone on its file: count, `act`, count,
/// keep the report and log its event (`msync` logs its own).
pub fn run(
    file: &'static str,
    command: String,
    source: &Source,
    state: &State,
    locks: &mlock::Locks,
    target: &Target,
    act: impl FnOnce() -> (Result<()>, Vec<(&'static str, String)>),
) -> Report {
    state.run_one(|| {
        let report = execute(command, source, target, locks, act);
        source.events().push(command_event(file, &report));
        report
    })
}

/// With `missing`, only the pages of `target` not resident now, and the
/// report line saying how many that was.
pub fn missing_only(
    source: &Source,
    target: &Target,
    missing: bool,
) -> (Target, Vec<(&'static str, String)>) {
    if !missing {
        return (target.clone(), Vec::new());
    }
    let narrowed = without_resident(source, target);
    let line = vec![("missing_pages", narrowed.page_count().to_string())];
    (narrowed, line)
}

/// The event of a cache-control command (`msync` has its own).
fn command_event(file: &'static str, report: &Report) -> Event {
    Event::Command {
        file,
        command: report.command.clone(),
        offset: report.offset,
        length: report.length,
        pages: report.pages.as_ref().map(|(n, _)| *n),
        result: match &report.result {
            Ok(()) => "ok".to_string(),
            Err(e) => errno_name(e.errno),
        },
        resident_before: report.before.resident,
        resident_after: report.after.resident,
        locked_after: report.after.locked,
        duration_ns: report.duration_ns,
    }
}

/// A control file's state for one source: commands run one at a time so
/// reports stay truthful, and the last report.
#[derive(Debug, Default)]
pub struct State {
    serial: Mutex<()>,
    last: Mutex<Option<Report>>,
}

impl State {
    pub fn last(&self) -> Option<Report> {
        self.last.lock().expect("no panics: they abort").clone()
    }

    /// Run `command` alone on this file and keep its report.
    pub fn run_one(&self, command: impl FnOnce() -> Report) -> Report {
        let _serial = self.serial.lock().expect("no panics: they abort");
        let report = command();
        *self.last.lock().expect("no panics: they abort") = Some(report.clone());
        report
    }
}

#[cfg(test)]
mod tests;
