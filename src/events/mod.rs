//! The `events` log: an append-only byte stream of lines, of which only the
//! newest N lines are kept. Offsets are positions in the whole stream since
//! mount, so the file's size only grows and `tail -f` follows it.
//!
//! A line is `<unix_ns> <kind> key=value ...`, at most [`LINE_MAX`] bytes, so
//! the log holds at most N × [`LINE_MAX`] bytes whatever users write.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest line, newline included.
pub const LINE_MAX: usize = 512;

/// Every kind of event, in the order of [`Event`]'s variants.
pub const KINDS: &[&str] = &[
    "mount",
    "open",
    "release",
    "msync",
    "msync_rejected",
    "madvise",
    "madvise_rejected",
    "fadvise",
    "fadvise_rejected",
    "mlock",
    "mlock_rejected",
    "crash",
    "crash_rejected",
    "invalidate",
    "source_truncated",
    "source_resized",
    "source_deleted",
    "unmount",
];

/// Marks free text that was cut to fit the line.
const CUT: &str = "…";

pub fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// How `data` was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Mount {
        mountpoint: String,
        io_mode: &'static str,
    },
    /// `uid` is the opener's: not printed, it decides who sees the pid.
    Open {
        pid: u32,
        uid: u32,
        access: Access,
    },
    Release {
        pid: u32,
        uid: u32,
    },
    Msync {
        command: &'static str,
        offset: u64,
        length: u64,
        /// `ok` or the errno name.
        result: String,
        dirty_before: u64,
        dirty_after: u64,
        duration_ns: u64,
        reached_source: bool,
    },
    /// A command of a cache-control file: `madvise`, `fadvise`, `mlock`.
    Command {
        file: &'static str,
        command: String,
        offset: u64,
        length: u64,
        /// Pages of a `pages CPULIST` target.
        pages: Option<u64>,
        /// `ok` or the errno name.
        result: String,
        resident_before: u64,
        resident_after: u64,
        locked_after: u64,
        duration_ns: u64,
    },
    /// `--crash-test`: unsynced pages lost (and kept) at once.
    Crash {
        /// What caused it: `now`, `keep ...`, `sync N before|after`.
        cause: String,
        lost: u64,
        kept: u64,
    },
    /// A malformed write to control file `file`.
    Rejected {
        file: &'static str,
        bytes: usize,
        reason: String,
    },
    Invalidate {
        offset: u64,
        length: u64,
    },
    SourceTruncated {
        old_size: u64,
        new_size: u64,
    },
    SourceResized {
        old_size: u64,
        new_size: u64,
    },
    SourceDeleted,
    /// A change or an open in a directory source's tree: `kind` is
    /// `create`, `mkdir`, `mknod`, `symlink`, `link`, `unlink`, `rmdir`,
    /// `rename` (with `to`), `open` or `msync`; paths are relative to it.
    Path {
        kind: &'static str,
        path: String,
        to: Option<String>,
        pid: u32,
        uid: u32,
    },
    Unmount {
        synced: bool,
        error: Option<String>,
    },
}

/// One `key=value` value as it is printed.
enum Value<'a> {
    Num(u64),
    /// Shown as `*`s to readers other than its owner (`Line::bytes_for`).
    Pid(u32),
    /// A word of ours (a command, an errno name): never needs quoting.
    Word(&'a str),
    /// Free text (paths, messages, user input): quoted, escaped, cut to fit.
    Text(&'a str),
    /// Free text only its owner may read (a path in a directory source):
    /// shown as `*`s to other readers, like `Pid`.
    Private(&'a str),
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Mount { .. } => "mount",
            Event::Open { .. } => "open",
            Event::Release { .. } => "release",
            Event::Msync { .. } => "msync",
            Event::Command { file, .. } => file,
            Event::Rejected { file, .. } => match *file {
                "madvise" => "madvise_rejected",
                "fadvise" => "fadvise_rejected",
                "mlock" => "mlock_rejected",
                "crash" => "crash_rejected",
                _ => "msync_rejected",
            },
            Event::Crash { .. } => "crash",
            Event::Invalidate { .. } => "invalidate",
            Event::SourceTruncated { .. } => "source_truncated",
            Event::SourceResized { .. } => "source_resized",
            Event::SourceDeleted => "source_deleted",
            Event::Path { kind, .. } => kind,
            Event::Unmount { .. } => "unmount",
        }
    }

    /// Whose pid the line shows, if any.
    fn owner(&self) -> Option<u32> {
        match self {
            Event::Open { uid, .. } | Event::Release { uid, .. } | Event::Path { uid, .. } => {
                Some(*uid)
            }
            _ => None,
        }
    }

    fn fields(&self) -> Vec<(&'static str, Value<'_>)> {
        use Value::{Num, Pid, Text, Word};
        let yes_no = |b: bool| Word(if b { "yes" } else { "no" });
        match self {
            Event::Mount {
                mountpoint,
                io_mode,
            } => vec![("mountpoint", Text(mountpoint)), ("io_mode", Word(io_mode))],
            Event::Open { pid, access, .. } => vec![
                ("pid", Pid(*pid)),
                (
                    "access",
                    Word(match access {
                        Access::Read => "r",
                        Access::ReadWrite => "rw",
                    }),
                ),
            ],
            Event::Release { pid, .. } => vec![("pid", Pid(*pid))],
            Event::Msync {
                command,
                offset,
                length,
                result,
                dirty_before,
                dirty_after,
                duration_ns,
                reached_source,
            } => vec![
                ("command", Word(command)),
                ("offset", Num(*offset)),
                ("length", Num(*length)),
                ("result", Word(result)),
                ("dirty_before", Num(*dirty_before)),
                ("dirty_after", Num(*dirty_after)),
                ("duration_ns", Num(*duration_ns)),
                ("reached_source", yes_no(*reached_source)),
            ],
            Event::Command {
                command,
                offset,
                length,
                pages,
                result,
                resident_before,
                resident_after,
                locked_after,
                duration_ns,
                ..
            } => {
                let mut fields = vec![
                    ("command", Word(command)),
                    ("offset", Num(*offset)),
                    ("length", Num(*length)),
                ];
                if let Some(pages) = pages {
                    fields.push(("pages", Num(*pages)));
                }
                fields.extend([
                    ("result", Word(result)),
                    ("resident_before", Num(*resident_before)),
                    ("resident_after", Num(*resident_after)),
                    ("locked_after", Num(*locked_after)),
                    ("duration_ns", Num(*duration_ns)),
                ]);
                fields
            }
            Event::Crash { cause, lost, kept } => vec![
                ("cause", Text(cause)),
                ("lost", Num(*lost)),
                ("kept", Num(*kept)),
            ],
            Event::Rejected { bytes, reason, .. } => {
                vec![("bytes", Num(*bytes as u64)), ("reason", Text(reason))]
            }
            Event::Invalidate { offset, length } => {
                vec![("offset", Num(*offset)), ("length", Num(*length))]
            }
            Event::SourceTruncated { old_size, new_size }
            | Event::SourceResized { old_size, new_size } => {
                vec![("old_size", Num(*old_size)), ("new_size", Num(*new_size))]
            }
            Event::SourceDeleted => vec![],
            Event::Path { path, to, pid, .. } => {
                let mut fields = vec![("path", Value::Private(path))];
                if let Some(to) = to {
                    fields.push(("to", Value::Private(to)));
                }
                fields.push(("pid", Pid(*pid)));
                fields
            }
            Event::Unmount { synced, error } => {
                let mut fields = vec![("synced", yes_no(*synced))];
                if let Some(error) = error {
                    fields.push(("error", Text(error)));
                }
                fields
            }
        }
    }
}

impl Value<'_> {
    /// Printed length, counting free text as its two quotes only.
    fn fixed_len(&self) -> usize {
        let digits = |n: u64| n.checked_ilog10().map_or(1, |d| d as usize + 1);
        match self {
            Value::Num(n) => digits(*n),
            Value::Pid(p) => digits(u64::from(*p)),
            Value::Word(w) => w.len(),
            Value::Text(_) | Value::Private(_) => 2,
        }
    }
}

/// A formatted line and where its pid digits are, for masking.
struct Formatted {
    text: String,
    /// Where the pid digits and private text are.
    masked: Vec<Range<usize>>,
}

/// `<unix_ns> <kind> key=value ...\n`, at most [`LINE_MAX`] bytes: free text
/// shares whatever room the fixed parts leave.
fn format_line(at_unix_ns: u128, event: &Event) -> Formatted {
    let fields = event.fields();
    let mut text = String::with_capacity(LINE_MAX);
    let _ = write!(text, "{at_unix_ns} {}", event.kind());
    let fixed: usize = fields
        .iter()
        .map(|(key, value)| 2 + key.len() + value.fixed_len())
        .sum();
    let mut room = LINE_MAX.saturating_sub(text.len() + fixed + 1);
    let mut masked = Vec::new();
    for (key, value) in &fields {
        let _ = write!(text, " {key}=");
        match value {
            Value::Num(n) => {
                let _ = write!(text, "{n}");
            }
            Value::Pid(p) => {
                let start = text.len();
                let _ = write!(text, "{p}");
                masked.push(start..text.len());
            }
            Value::Word(w) => text.push_str(w),
            Value::Text(t) | Value::Private(t) => {
                text.push('"');
                let start = text.len();
                room -= push_escaped(&mut text, t, room);
                if matches!(value, Value::Private(_)) {
                    masked.push(start..text.len());
                }
                text.push('"');
            }
        }
    }
    text.push('\n');
    debug_assert!(text.len() <= LINE_MAX, "{text}");
    Formatted { text, masked }
}

/// Append `text` escaped so it stays on one line inside quotes, using at
/// most `room` bytes: if it does not fit, cut between characters (never
/// inside an escape) and end with [`CUT`]. Returns the bytes used.
fn push_escaped(out: &mut String, text: &str, room: usize) -> usize {
    let begin = out.len();
    // The longest prefix that still leaves room for the cut mark.
    let mut fits_with_mark = begin;
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            // Control characters are all below U+0100.
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
        let used = out.len() - begin;
        if used > room {
            out.truncate(fits_with_mark);
            if fits_with_mark - begin + CUT.len() <= room {
                out.push_str(CUT);
            }
            return out.len() - begin;
        }
        if used + CUT.len() <= room {
            fits_with_mark = out.len();
        }
    }
    out.len() - begin
}

#[derive(Debug)]
struct Line {
    /// Stream offset of the first byte.
    start: u64,
    /// Boxed so the line takes its length, not a growable capacity.
    text: Box<str>,
    /// Lines with a pid (and private text): whose they are, and where.
    masked: Option<(u32, Vec<Range<usize>>)>,
}

impl Line {
    fn end(&self) -> u64 {
        self.start + self.text.len() as u64
    }

    /// The line as `viewer` may see it: others' pids (and paths) become
    /// `*` of the same length, so every reader sees the same offsets.
    fn bytes_for(&self, viewer: Option<u32>) -> Cow<'_, [u8]> {
        match (&self.masked, viewer) {
            (Some((owner, ranges)), Some(v)) if v != 0 && v != *owner => {
                let mut bytes = self.text.as_bytes().to_vec();
                for r in ranges {
                    bytes[r.clone()].fill(b'*');
                }
                Cow::Owned(bytes)
            }
            _ => Cow::Borrowed(self.text.as_bytes()),
        }
    }
}

#[derive(Debug, Default)]
struct Lines {
    lines: VecDeque<Line>,
    /// Stream offset just past the last line.
    end: u64,
}

impl Lines {
    /// Stream offset of the oldest kept line; always a line start.
    fn start(&self) -> u64 {
        self.lines.front().map_or(self.end, |l| l.start)
    }
}

#[derive(Debug)]
pub struct EventLog {
    keep: usize,
    inner: Mutex<Lines>,
}

impl EventLog {
    /// A log keeping the newest `keep` lines (`--events N`).
    pub fn new(keep: usize) -> Self {
        EventLog {
            keep: keep.max(1),
            inner: Mutex::new(Lines::default()),
        }
    }

    pub fn push(&self, event: Event) {
        let Formatted { text, masked } = format_line(unix_ns(), &event);
        log::info!("{}", text.trim_end());
        self.append(text, event.owner().map(|owner| (owner, masked)));
    }

    /// Append a line formatted elsewhere (`trace`): one line, ending in a
    /// newline, cut to [`LINE_MAX`] bytes. Not logged: page events come by
    /// the thousand.
    pub fn push_text(&self, mut text: String) {
        debug_assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        if text.len() > LINE_MAX {
            let mut cut = LINE_MAX - 1;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('\n');
        }
        self.append(text, None);
    }

    /// Append one formatted line; the oldest go past `keep` lines.
    fn append(&self, text: String, masked: Option<(u32, Vec<Range<usize>>)>) {
        let mut l = self.lock();
        let start = l.end;
        l.end += text.len() as u64;
        l.lines.push_back(Line {
            start,
            text: text.into_boxed_str(),
            masked,
        });
        while l.lines.len() > self.keep {
            l.lines.pop_front();
        }
    }

    /// Size of the stream so far: what `events` reports as its file size.
    pub fn end(&self) -> u64 {
        self.lock().end
    }

    fn lock(&self) -> MutexGuard<'_, Lines> {
        self.inner.lock().expect("no panics: they abort")
    }
}

/// One open `events` file: where its file offsets are in the stream, and
/// the rest of a line it has begun to send.
#[derive(Debug, Default)]
pub struct EventReader {
    /// Stream offset minus file offset; grows when the reader falls behind
    /// and skips lines that rotated out.
    skipped: u64,
    /// The unsent rest of a partly read line (at most [`LINE_MAX`] bytes),
    /// kept so the line ends as it began even if it rotates out meanwhile.
    rest: Vec<u8>,
    /// File offset at which `rest` continues.
    rest_at: u64,
}

impl EventReader {
    /// Up to `size` bytes at file `offset`. A reader that fell behind the
    /// oldest kept line first finishes the line it began, then resumes at
    /// the start of the oldest kept line, so it never sees a line made of
    /// two halves.
    pub fn read(
        &mut self,
        log: &EventLog,
        offset: u64,
        size: usize,
        viewer: Option<u32>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(size.min(64 * LINE_MAX));
        if size == 0 {
            return out;
        }
        if offset == self.rest_at && !self.rest.is_empty() {
            let n = size.min(self.rest.len());
            out.extend(self.rest.drain(..n));
            self.rest_at += n as u64;
            if !self.rest.is_empty() {
                return out;
            }
        } else {
            // Any other offset is a seek: serve the stream as it is there.
            self.rest.clear();
        }
        let here = offset + out.len() as u64;
        let l = log.lock();
        let mut at = here.saturating_add(self.skipped).max(l.start());
        self.skipped = at - here;
        let first = l.lines.partition_point(|line| line.end() <= at);
        for line in l.lines.range(first..) {
            let bytes = line.bytes_for(viewer);
            let tail = &bytes[(at - line.start) as usize..];
            let room = size - out.len();
            if tail.len() > room {
                out.extend_from_slice(&tail[..room]);
                self.rest = tail[room..].to_vec();
                self.rest_at = offset + out.len() as u64;
                break;
            }
            out.extend_from_slice(tail);
            at = line.end();
        }
        out
    }
}

#[cfg(test)]
mod tests;
