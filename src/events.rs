//! The `events` log: an append-only byte stream of lines, of which only the
//! newest N lines are kept. Offsets are positions in the whole stream since
//! mount, so the file's size only grows and `tail -f` follows it.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[derive(Debug)]
pub struct EventLog {
    keep: usize,
    inner: Mutex<Lines>,
}

#[derive(Debug, Default)]
struct Lines {
    lines: VecDeque<String>,
    /// Stream offset of the first kept line.
    start: u64,
    /// Stream offset just past the last line.
    end: u64,
}

impl EventLog {
    pub fn new(keep: usize) -> Self {
        EventLog {
            keep: keep.max(1),
            inner: Mutex::new(Lines::default()),
        }
    }

    /// Append `<unix_ns> <kind> <fields>`; `fields` is `key=value ...`.
    pub fn push(&self, kind: &str, fields: &str) {
        let mut line = String::with_capacity(32 + kind.len() + fields.len());
        let _ = write!(line, "{} {kind}", unix_ns());
        if !fields.is_empty() {
            line.push(' ');
            line.push_str(fields);
        }
        line.push('\n');
        log::info!("{}", line.trim_end());
        let mut l = self.lock();
        l.end += line.len() as u64;
        l.lines.push_back(line);
        while l.lines.len() > self.keep {
            if let Some(old) = l.lines.pop_front() {
                l.start += old.len() as u64;
            }
        }
    }

    /// Size of the stream so far: what `events` reports as its file size.
    pub fn end(&self) -> u64 {
        self.lock().end
    }

    /// Up to `max` bytes from stream offset `at`. A position older than the
    /// oldest kept line resumes there; the returned offset says where the
    /// bytes really start.
    pub fn read(&self, at: u64, max: usize) -> (u64, Vec<u8>) {
        let l = self.lock();
        let at = at.max(l.start);
        let mut out = Vec::new();
        let mut line_start = l.start;
        for line in &l.lines {
            let line_end = line_start + line.len() as u64;
            if line_end > at {
                let skip = at.saturating_sub(line_start) as usize;
                out.extend_from_slice(&line.as_bytes()[skip..]);
                if out.len() >= max {
                    out.truncate(max);
                    break;
                }
            }
            line_start = line_end;
        }
        (at, out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_lines_and_resumes_at_the_oldest() {
        let log = EventLog::new(2);
        log.push("a", "x=1");
        log.push("b", "");
        log.push("c", "y=2");
        let (at, bytes) = log.read(0, 1 << 20);
        let text = String::from_utf8(bytes).unwrap();
        assert!(at > 0);
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().next().unwrap().ends_with(" b"));
        assert!(text.ends_with(" c y=2\n"));
        assert_eq!(at + text.len() as u64, log.end());
    }

    #[test]
    fn partial_reads_join_up() {
        let log = EventLog::new(10);
        log.push("one", "k=v");
        log.push("two", "k=w");
        let mut whole = Vec::new();
        let mut pos = 0;
        loop {
            let (at, chunk) = log.read(pos, 5);
            if chunk.is_empty() {
                break;
            }
            pos = at + chunk.len() as u64;
            whole.extend(chunk);
        }
        assert_eq!(whole, log.read(0, 1 << 20).1);
    }
}
