//! The page life of one source: its `trace` log, the dirty pages the trace
//! has seen and since when (to tell which pages a writeback wrote, and how
//! long they waited), pages written by cause, and the samples behind
//! `history` and `timeline.svg`. Every collection here is bounded.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard};

use super::parse::What;
use crate::error::one_line;
use crate::events::EventLog;
use crate::pages::{self, PageState};
use crate::source::Source;

/// Lines `trace` keeps (each at most `events::LINE_MAX` bytes, ~100
/// typically): a few MiB per source.
pub const TRACE_KEPT: usize = 65_536;
/// Dirty ranges tracked; past this a new page joins its neighbour's range
/// (an over-estimate the next writeback's probe corrects).
const DIRTY_RANGES_MAX: usize = 65_536;
/// Large folios remembered, to widen a `dirtied` folio to its real size.
const FOLIOS_MAX: usize = 65_536;
/// Dirtied-to-written times kept for the percentiles.
const LATENCIES_KEPT: usize = 4096;
/// Samples of `history`: ten minutes at one a second.
pub const HISTORY_KEPT: usize = 600;
/// Writeback marks kept for the timeline.
const MARKS_KEPT: usize = 1000;

/// Why pages were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The flusher's periodic pass: the inode was dirty longer than
    /// `dirty_expire_centisecs`.
    Periodic,
    /// The flusher, because the system is over its background threshold.
    Background,
    /// A process asked: `msync`, `fsync`, `sync`, `O_SYNC`...
    Sync,
    /// Memory pressure.
    Reclaim,
}

impl Cause {
    pub const ALL: [Cause; 4] = [
        Cause::Periodic,
        Cause::Background,
        Cause::Sync,
        Cause::Reclaim,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cause::Periodic => "periodic",
            Cause::Background => "background",
            Cause::Sync => "sync",
            Cause::Reclaim => "reclaim",
        }
    }

    /// From the kernel's `enum wb_reason` of a flusher's work.
    pub fn of_reason(reason: u64) -> Cause {
        match reason {
            1 => Cause::Reclaim,
            2 => Cause::Sync,
            // 4: laptop mode's timer, a periodic pass of its own.
            3 | 4 => Cause::Periodic,
            _ => Cause::Background,
        }
    }
}

/// Who started a writeback, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    pub pid: u32,
    pub comm: String,
    pub cause: Cause,
}

/// The window in file pages: `first` is page 0 of `trace`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub first: u64,
    pub pages: u64,
}

impl Window {
    pub fn of(source: &Source) -> Window {
        Window {
            first: source.offset() / source.page_size(),
            pages: source.pages(),
        }
    }

    /// File pages `[a, b]` as window pages, clipped; `None` outside.
    fn clip(self, a: u64, b: u64) -> Option<(u64, u64)> {
        let end = self.first + self.pages;
        if b < self.first || a >= end {
            return None;
        }
        Some((a.max(self.first) - self.first, b.min(end - 1) - self.first))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at_ns: u128,
    pub resident: u64,
    pub dirty: u64,
    pub writeback: u64,
}

/// What `writeback` shows, from the trace.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// When the oldest page now dirty was dirtied (or tracing began, for
    /// pages dirty before).
    pub oldest_dirty_ns: Option<u128>,
    pub by_cause: [u64; 4],
    /// Dirtied-to-written times, ns, sorted.
    pub latencies: Vec<u64>,
}

#[derive(Debug, Default)]
struct Life {
    /// Window page -> (last page of the range, when it was dirtied).
    dirty: BTreeMap<u64, (u64, u128)>,
    /// Large folios: first file page -> pages.
    folios: BTreeMap<u64, u64>,
    writer: Option<Writer>,
    written: [u64; 4],
    latencies: VecDeque<u64>,
    history: VecDeque<Sample>,
    marks: VecDeque<(u128, Cause)>,
}

#[derive(Debug)]
pub struct PageLife {
    log: EventLog,
    life: Mutex<Life>,
}

impl Default for PageLife {
    fn default() -> Self {
        PageLife {
            log: EventLog::new(TRACE_KEPT),
            life: Mutex::new(Life::default()),
        }
    }
}

impl PageLife {
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    fn lock(&self) -> MutexGuard<'_, Life> {
        self.life.lock().expect("no panics: they abort")
    }

    /// Tracing begins: what is dirty now is dirty since now, as far as
    /// anyone can tell.
    pub fn begin(&self, source: &Source, now_ns: u128) {
        let dirty = pages::ranges(source, PageState::Dirty, 0, source.pages());
        let mut l = self.lock();
        l.dirty.clear();
        l.folios.clear();
        l.writer = None;
        for (a, b) in dirty {
            insert_dirty(&mut l.dirty, a, b, now_ns);
        }
    }

    /// `count` events of unknown sources were dropped by the kernel.
    pub fn lost(&self, at_ns: u128, count: u64) {
        self.log.push_text(format!(
            "{at_ns} lost count={count} reason=kernel_buffer_full\n"
        ));
    }

    /// A page event on this source's file. Returns the window pages whose
    /// counts it changed (a folio cached, evicted or dirtied).
    pub fn record(
        &self,
        at_ns: u128,
        pid: u32,
        comm: &str,
        what: &What,
        window: Window,
    ) -> Option<(u64, u64)> {
        let line = |kind: &str, (a, b): (u64, u64), extra: &str| {
            let mut text = format!("{at_ns} {kind} pages={a}");
            if b != a {
                let _ = write!(text, "-{b}");
            }
            let _ = writeln!(text, " pid={pid} comm={}{extra}", comm_word(comm));
            text
        };
        let folio = |index: u64, order: u32| index..=index + (1u64 << order.min(20)) - 1;
        let mut l = self.lock();
        match *what {
            What::Fault { index, .. } => {
                if let Some(r) = window.clip(index, index) {
                    self.log.push_text(line("fault", r, ""));
                }
                None
            }
            What::Map { first, last, .. } => {
                if let Some(r) = window.clip(first, last) {
                    self.log.push_text(line("map", r, ""));
                }
                None
            }
            What::Cached { index, order, .. } => {
                let pages = folio(index, order);
                if order > 0 && (l.folios.len() < FOLIOS_MAX || l.folios.contains_key(&index)) {
                    l.folios.insert(index, 1 << order.min(20));
                }
                let r = window.clip(*pages.start(), *pages.end())?;
                self.log
                    .push_text(line("cached", r, &format!(" order={order}")));
                Some(r)
            }
            What::Evicted { index, order, .. } => {
                let pages = folio(index, order);
                l.folios.remove(&index);
                let r = window.clip(*pages.start(), *pages.end())?;
                remove_dirty(&mut l.dirty, r.0, r.1);
                self.log
                    .push_text(line("evicted", r, &format!(" order={order}")));
                Some(r)
            }
            What::Readahead {
                index,
                sync,
                requested,
                size,
                ra_pages,
                ..
            } => {
                let last = index + requested.max(1) - 1;
                if let Some(r) = window.clip(index, last) {
                    let mode = if sync { "sync" } else { "async" };
                    self.log.push_text(line(
                        "readahead",
                        r,
                        &format!(" mode={mode} size={size} max={ra_pages}"),
                    ));
                }
                None
            }
            What::Dirtied { index, .. } => {
                // The event names the folio's first page only.
                let pages = l.folios.get(&index).copied().unwrap_or(1);
                let (a, b) = window.clip(index, index + pages - 1)?;
                insert_dirty(&mut l.dirty, a, b, at_ns);
                self.log.push_text(line("dirtied", (a, b), ""));
                Some((a, b))
            }
            What::WritebackBegins { .. }
            | What::WritebackEnds { .. }
            | What::FlusherWork { .. }
            | What::SyncQueued => None,
        }
    }

    /// Writeback of this file began, started by `writer`.
    pub fn writeback_begins(&self, writer: Writer) {
        self.lock().writer = Some(writer);
    }

    /// Writeback of this file ended: the tracked pages no longer dirty were
    /// written. One `cachestat` (and a bisection where a range was written
    /// in part) per tracked dirty range.
    pub fn writeback_ends(&self, source: &Source, at_ns: u128) {
        let mut l = self.lock();
        let Some(writer) = l.writer.take() else {
            return;
        };
        let tracked = std::mem::take(&mut l.dirty);
        let mut wrote = 0;
        for (start, (last, since)) in tracked {
            let still = pages::ranges(source, PageState::Dirty, start, last - start + 1);
            let mut next = start;
            for &(a, b) in still.iter().chain([(last + 1, last + 1)].iter()) {
                if a > next {
                    let (first, end) = (next, a - 1);
                    let count = end - first + 1;
                    wrote += count;
                    let age = u64::try_from(at_ns.saturating_sub(since)).unwrap_or(u64::MAX);
                    for _ in 0..count.min(LATENCIES_KEPT as u64) {
                        if l.latencies.len() == LATENCIES_KEPT {
                            l.latencies.pop_front();
                        }
                        l.latencies.push_back(age);
                    }
                    let pages = if first == end {
                        format!("{first}")
                    } else {
                        format!("{first}-{end}")
                    };
                    self.log.push_text(format!(
                        "{at_ns} written pages={pages} pid={} comm={} cause={} count={count} age_ns={age}\n",
                        writer.pid,
                        comm_word(&writer.comm),
                        writer.cause.name()
                    ));
                }
                if b <= last {
                    insert_dirty(&mut l.dirty, a, b, since);
                }
                next = b + 1;
            }
        }
        if wrote > 0 {
            let i = Cause::ALL
                .iter()
                .position(|c| *c == writer.cause)
                .unwrap_or(0);
            l.written[i] += wrote;
            if l.marks.len() == MARKS_KEPT {
                l.marks.pop_front();
            }
            l.marks.push_back((at_ns, writer.cause));
        }
    }

    pub fn written(&self) -> Written {
        let l = self.lock();
        let mut latencies: Vec<u64> = l.latencies.iter().copied().collect();
        latencies.sort_unstable();
        Written {
            oldest_dirty_ns: l.dirty.values().map(|(_, since)| *since).min(),
            by_cause: l.written,
            latencies,
        }
    }

    pub fn sample(&self, sample: Sample) {
        let mut l = self.lock();
        if l.history.len() == HISTORY_KEPT {
            l.history.pop_front();
        }
        l.history.push_back(sample);
    }

    pub fn history(&self) -> (Vec<Sample>, Vec<(u128, Cause)>) {
        let l = self.lock();
        (
            l.history.iter().copied().collect(),
            l.marks.iter().copied().collect(),
        )
    }
}

/// A command name as one word: escaped, spaces as `\x20`.
fn comm_word(comm: &str) -> String {
    one_line(comm).replace(' ', "\\x20")
}

/// Add pages `[a, b]` dirtied at `since`, merging with overlapping or
/// adjacent ranges (which keep the older time).
fn insert_dirty(dirty: &mut BTreeMap<u64, (u64, u128)>, a: u64, b: u64, since: u128) {
    let (mut a, mut b, mut since) = (a, b, since);
    let touching: Vec<u64> = dirty
        .range(..=b.saturating_add(1))
        .rev()
        .take_while(|(_, (last, _))| last.saturating_add(1) >= a)
        .map(|(start, _)| *start)
        .collect();
    for start in touching {
        if let Some((last, t)) = dirty.remove(&start) {
            a = a.min(start);
            b = b.max(last);
            since = since.min(t);
        }
    }
    if dirty.len() >= DIRTY_RANGES_MAX {
        // Full: join the nearest range before (or after) instead.
        let before = dirty.range(..a).next_back().map(|(s, _)| *s);
        let neighbour = before.or_else(|| dirty.range(b..).next().map(|(s, _)| *s));
        if let Some(start) = neighbour {
            if let Some((last, t)) = dirty.remove(&start) {
                a = a.min(start);
                b = b.max(last);
                since = since.min(t);
            }
        }
    }
    dirty.insert(a, (b, since));
}

/// Forget pages `[a, b]` (evicted: no longer dirty).
fn remove_dirty(dirty: &mut BTreeMap<u64, (u64, u128)>, a: u64, b: u64) {
    let overlapping: Vec<(u64, u64, u128)> = dirty
        .range(..=b)
        .rev()
        .take_while(|(_, (last, _))| *last >= a)
        .map(|(s, (l, t))| (*s, *l, *t))
        .collect();
    for (start, last, since) in overlapping {
        dirty.remove(&start);
        if start < a {
            dirty.insert(start, (a - 1, since));
        }
        if last > b {
            dirty.insert(b + 1, (last, since));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(d: &BTreeMap<u64, (u64, u128)>) -> Vec<(u64, u64, u128)> {
        d.iter().map(|(a, (b, t))| (*a, *b, *t)).collect()
    }

    #[test]
    fn dirty_ranges_merge_and_split() {
        let mut d = BTreeMap::new();
        insert_dirty(&mut d, 5, 5, 10);
        insert_dirty(&mut d, 7, 9, 20);
        assert_eq!(ranges(&d), [(5, 5, 10), (7, 9, 20)]);
        insert_dirty(&mut d, 6, 6, 30);
        assert_eq!(
            ranges(&d),
            [(5, 9, 10)],
            "adjacent ranges join, oldest time kept"
        );
        remove_dirty(&mut d, 7, 7);
        assert_eq!(ranges(&d), [(5, 6, 10), (8, 9, 10)]);
        remove_dirty(&mut d, 0, 100);
        assert!(d.is_empty());
    }

    #[test]
    fn window_clips_and_shifts() {
        let w = Window {
            first: 10,
            pages: 5,
        };
        assert_eq!(w.clip(0, 9), None);
        assert_eq!(w.clip(15, 20), None);
        assert_eq!(w.clip(8, 11), Some((0, 1)));
        assert_eq!(w.clip(12, 40), Some((2, 4)));
    }

    #[test]
    fn trace_lines_name_pages_and_process() {
        let life = PageLife::default();
        let w = Window {
            first: 0,
            pages: 1000,
        };
        life.record(
            5,
            42,
            "my prog",
            &What::Cached {
                dev: 1,
                ino: 2,
                index: 16,
                order: 2,
            },
            w,
        );
        life.record(6, 42, "my prog", &What::Dirtied { ino: 2, index: 16 }, w);
        let mut reader = crate::events::EventReader::default();
        let text = String::from_utf8(reader.read(life.log(), 0, 4096, None)).unwrap();
        assert_eq!(
            text,
            "5 cached pages=16-19 pid=42 comm=my\\x20prog order=2\n\
             6 dirtied pages=16-19 pid=42 comm=my\\x20prog\n"
        );
        assert_eq!(
            life.written().oldest_dirty_ns,
            Some(6),
            "a large folio is dirty whole"
        );
    }
}
