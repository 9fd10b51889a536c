//! Page events from the kernel (tracefs), per source: when tracing runs
//! ([`Tracer`]), reading the daemon's instance ([`Pump`]), who started a
//! writeback and why ([`Flushers`]), and the dirty-page settings of the
//! system (`/proc/sys/vm`, `/proc/vmstat`).
//!
//! One instance per daemon serves all its sources: one ring buffer, one
//! reader thread, filters joined with `||`.

pub mod life;
pub mod parse;
pub mod tracefs;

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use life::{Cause, Writer};
use parse::{Line, What};
pub use tracefs::{remove_stale, Instance, Target};

use crate::tally::{self, Follow};

/// How long an open of `trace` waits for the instance to be set up.
const START_WAIT: Duration = Duration::from_secs(5);
/// How long the daemon waits at exit for the instance to be removed.
const STOP_WAIT: Duration = Duration::from_secs(3);
/// How long a read of the pipe waits for events: also how soon the reader
/// notices that nobody wants the trace any more.
pub const POLL_MS: u16 = 100;
/// Most bytes of an unfinished line kept between reads (lines are ~300).
const PARTIAL_MAX: usize = 64 << 10;
/// Flusher threads whose current reason is remembered.
const FLUSHERS_MAX: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Off,
    /// Wanted; the reader thread is setting the instance up.
    Starting,
    On,
    /// The one line `trace` shows instead, saying why and what to do.
    Unavailable(String),
}

#[derive(Debug)]
struct Want {
    readers: usize,
    /// `--trace`: on for the daemon's whole life.
    always: bool,
    stopping: bool,
    state: State,
    /// How far the trace has followed page changes, once it ran.
    follow: Option<Follow>,
}

impl Want {
    fn wanted(&self) -> bool {
        (self.readers > 0 || self.always) && !self.stopping
    }
}

/// Whether tracing should run, and whether it does.
#[derive(Debug)]
pub struct Tracer {
    want: Mutex<Want>,
    changed: Condvar,
}

impl Default for Tracer {
    fn default() -> Self {
        Tracer {
            want: Mutex::new(Want {
                readers: 0,
                always: false,
                stopping: false,
                state: State::Off,
                follow: None,
            }),
            changed: Condvar::new(),
        }
    }
}

impl Tracer {
    fn lock(&self) -> MutexGuard<'_, Want> {
        self.want.lock().expect("no panics: they abort")
    }

    fn start_if_off(w: &mut Want) {
        if w.state == State::Off || matches!(w.state, State::Unavailable(_)) && w.readers == 1 {
            w.state = State::Starting;
        }
    }

    /// `--trace`: keep tracing on until exit.
    pub fn always(&self) {
        let mut w = self.lock();
        w.always = true;
        Self::start_if_off(&mut w);
        self.changed.notify_all();
    }

    /// A reader opens `trace`: start tracing if it is off (trying again if
    /// it was unavailable), and wait a little for the outcome.
    pub fn acquire(&self) -> State {
        let mut w = self.lock();
        w.readers += 1;
        Self::start_if_off(&mut w);
        self.changed.notify_all();
        let (w, _) = self
            .changed
            .wait_timeout_while(w, START_WAIT, |w| w.state == State::Starting)
            .expect("no panics: they abort");
        w.state.clone()
    }

    /// A reader closed `trace`.
    pub fn release(&self) {
        let mut w = self.lock();
        w.readers = w.readers.saturating_sub(1);
        self.changed.notify_all();
    }

    pub fn state(&self) -> State {
        self.lock().state.clone()
    }

    /// `on`, `off` or `unavailable`, for `stats`.
    pub fn state_name(&self) -> &'static str {
        match self.lock().state {
            State::On => "on",
            State::Off | State::Starting => "off",
            State::Unavailable(_) => "unavailable",
        }
    }

    /// The reader thread: wait until tracing is to start; `false` at exit.
    pub fn wait_for_start(&self) -> bool {
        let w = self.lock();
        let w = self
            .changed
            .wait_while(w, |w| w.state != State::Starting && !w.stopping)
            .expect("no panics: they abort");
        !w.stopping
    }

    /// The reader thread: tracing could not start.
    pub fn unavailable(&self, line: String) {
        let mut w = self.lock();
        w.state = State::Unavailable(line);
        self.changed.notify_all();
    }

    /// The reader thread: tracing runs, and has seen every page change
    /// since `at` (boot ns).
    pub fn started(&self, at: u64) {
        let mut w = self.lock();
        w.state = State::On;
        w.follow = Some(Follow {
            since: at,
            until: at,
            running: true,
        });
        self.changed.notify_all();
    }

    /// The reader thread: the counts hold every page change up to `at`.
    pub fn followed_until(&self, at: u64) {
        if let Some(f) = self.lock().follow.as_mut() {
            f.until = f.until.max(at);
        }
    }

    /// The reader thread: the kernel dropped events; only what changed
    /// after `at` is followed.
    pub fn lost_events(&self, at: u64) {
        if let Some(f) = self.lock().follow.as_mut() {
            f.since = at;
            f.until = at;
        }
    }

    /// How far page changes have been followed (`None`: tracing never ran).
    pub fn follow(&self) -> Option<Follow> {
        self.lock().follow
    }

    /// The reader thread, between reads: go on, or (atomically, so no
    /// reader who opens meanwhile is left without a trace) mark it off.
    pub fn keep_on(&self) -> bool {
        let mut w = self.lock();
        if w.wanted() {
            return true;
        }
        w.state = State::Off;
        if let Some(f) = w.follow.as_mut() {
            f.running = false;
        }
        self.changed.notify_all();
        false
    }

    /// At exit: stop the reader thread and wait until it removed the
    /// instance.
    pub fn stop(&self) {
        let mut w = self.lock();
        w.stopping = true;
        self.changed.notify_all();
        let _ = self
            .changed
            .wait_timeout_while(w, STOP_WAIT, |w| w.state == State::On)
            .expect("no panics: they abort");
    }
}

/// What the flusher threads are doing, and who asked for the last sync:
/// a writeback by a flusher is attributed to its reason, and a sync(2)
/// to the process that waits for it.
#[derive(Debug, Default)]
pub struct Flushers {
    reasons: HashMap<u32, u64>,
    syncer: Option<(u32, String)>,
}

impl Flushers {
    pub fn note(&mut self, pid: u32, comm: &str, what: &What) {
        match what {
            What::FlusherWork { reason } => {
                if self.reasons.len() >= FLUSHERS_MAX {
                    self.reasons.clear();
                }
                self.reasons.insert(pid, *reason);
            }
            What::SyncQueued => self.syncer = Some((pid, comm.to_string())),
            _ => {}
        }
    }

    /// Who is behind a writeback begun in the context of `pid`.
    pub fn writer(&self, pid: u32, comm: &str) -> Writer {
        let own = |cause| Writer {
            pid,
            comm: comm.to_string(),
            cause,
        };
        if comm.starts_with("kswapd") {
            return own(Cause::Reclaim);
        }
        let Some(reason) = self.reasons.get(&pid) else {
            // Not a flusher: a process writing its own pages (msync,
            // fsync, sync_file_range, O_SYNC).
            return own(Cause::Sync);
        };
        match (Cause::of_reason(*reason), &self.syncer) {
            (Cause::Sync, Some((pid, comm))) => Writer {
                pid: *pid,
                comm: comm.clone(),
                cause: Cause::Sync,
            },
            (cause, _) => own(cause),
        }
    }
}

/// Reads an instance's pipe into parsed lines.
pub struct Pump {
    instance: Instance,
    buf: Vec<u8>,
    partial: Vec<u8>,
}

impl Pump {
    pub fn new(instance: Instance) -> Pump {
        Pump {
            instance,
            buf: vec![0; 256 << 10],
            partial: Vec::new(),
        }
    }

    /// The lines that came within [`POLL_MS`] (maybe none), and, when none
    /// came, the boot time before the read: every event until then was read.
    pub fn lines(&mut self) -> (Vec<Line>, Option<u64>) {
        let before = tally::boot_ns();
        let n = match self.instance.read(&mut self.buf, POLL_MS) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("read trace_pipe: {e}");
                std::thread::sleep(Duration::from_millis(u64::from(POLL_MS)));
                0
            }
        };
        let drained = (n == 0).then_some(before);
        self.partial.extend_from_slice(&self.buf[..n]);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            if self.partial.len() > PARTIAL_MAX {
                self.partial.clear();
            }
            return (Vec::new(), drained);
        };
        let text = String::from_utf8_lossy(&self.partial[..end]);
        let lines = text.lines().filter_map(parse::line).collect();
        self.partial.drain(..=end);
        (lines, drained)
    }
}

/// The boot clock of the instance (`trace_clock` = boot) in unix ns.
pub fn clock_offset_ns() -> i128 {
    use nix::time::{clock_gettime, ClockId};
    let ns = |id| {
        clock_gettime(id).map_or(0, |t| {
            i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())
        })
    };
    ns(ClockId::CLOCK_REALTIME) - ns(ClockId::CLOCK_BOOTTIME)
}

/// The system's dirty-page settings and state, read live.
#[derive(Debug, Clone, Copy, Default)]
pub struct VmDirty {
    pub expire_centisecs: u64,
    pub writeback_centisecs: u64,
    pub background_ratio: u64,
    pub background_bytes: u64,
    /// `nr_dirty` of `/proc/vmstat`.
    pub dirty_pages: u64,
    /// Pages above which the flushers write in the background.
    pub background_threshold_pages: u64,
}

impl VmDirty {
    pub fn read(page_size: u64) -> VmDirty {
        let sysctl = |name: &str| -> u64 {
            std::fs::read_to_string(format!("/proc/sys/vm/{name}"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        };
        let vmstat = std::fs::read_to_string("/proc/vmstat").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let value = |text: &str, key: &str| -> u64 {
            text.lines()
                .find_map(|l| {
                    let rest = l.strip_prefix(key)?;
                    rest.trim_start_matches(':')
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or(0)
        };
        let background_ratio = sysctl("dirty_background_ratio");
        let background_bytes = sysctl("dirty_background_bytes");
        // As the kernel reckons it: a share of the memory that could hold
        // dirty pages (free and file-backed), unless set in bytes.
        let dirtyable_kib = value(&meminfo, "MemFree")
            + value(&meminfo, "Active(file)")
            + value(&meminfo, "Inactive(file)");
        let background_threshold_pages = if background_bytes > 0 {
            background_bytes / page_size
        } else {
            dirtyable_kib * 1024 / page_size * background_ratio / 100
        };
        VmDirty {
            expire_centisecs: sysctl("dirty_expire_centisecs"),
            writeback_centisecs: sysctl("dirty_writeback_centisecs"),
            background_ratio,
            background_bytes,
            dirty_pages: value(&vmstat, "nr_dirty "),
            background_threshold_pages,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_by_context() {
        let mut f = Flushers::default();
        assert_eq!(f.writer(10, "python3").cause, Cause::Sync);
        assert_eq!(f.writer(11, "kswapd0").cause, Cause::Reclaim);
        f.note(20, "kworker/u8:3", &What::FlusherWork { reason: 3 });
        assert_eq!(f.writer(20, "kworker/u8:3").cause, Cause::Periodic);
        f.note(30, "sync", &What::SyncQueued);
        f.note(20, "kworker/u8:3", &What::FlusherWork { reason: 2 });
        let w = f.writer(20, "kworker/u8:3");
        assert_eq!((w.pid, w.comm.as_str(), w.cause), (30, "sync", Cause::Sync));
    }

    #[test]
    fn tracer_starts_once_and_stops_when_unwanted() {
        let t = Tracer::default();
        t.always();
        assert!(t.wait_for_start());
        t.started(5);
        assert_eq!(t.state_name(), "on");
        assert!(t.keep_on());
        t.followed_until(9);
        t.lost_events(7);
        assert_eq!(
            t.follow(),
            Some(Follow {
                since: 7,
                until: 7,
                running: true
            })
        );
        let t = Tracer::default();
        assert!(!t.keep_on());
        assert_eq!(t.state_name(), "off");
    }

    #[test]
    fn vm_settings_are_read() {
        let vm = VmDirty::read(4096);
        assert!(vm.expire_centisecs > 0 && vm.writeback_centisecs > 0);
    }
}
