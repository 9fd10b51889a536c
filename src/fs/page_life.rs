//! Page life (`trace`, `writeback`, `history`, `timeline.svg`): opening
//! `trace` starts the daemon's tracefs instance, the reader thread routes
//! its events to the sources' logs, the watcher samples `history`.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use super::{Caller, Handle, MmapFs};
use crate::error::{one_line, Result};
use crate::events::{unix_ns, EventReader};
use crate::render;
use crate::source::Kind;
use crate::tally;
use crate::trace::life::{Sample, Window};
use crate::trace::parse::{Line, What};
use crate::trace::{self, Flushers, Instance, Pump, State, Target, VmDirty};
use crate::tree::{FileKind, Node};

/// How long after the last look at `history` or `timeline.svg` the watcher
/// keeps sampling (it always does while tracing runs).
const HISTORY_WANTED_FOR: Duration = Duration::from_secs(300);
/// How often a busy trace reader counts again the blocks events touched.
const COUNT_EVERY: Duration = Duration::from_millis(50);

impl MmapFs {
    /// `--trace`: trace from the start until exit.
    pub fn trace_from_start(&self) {
        self.tracer.always();
    }

    /// At exit: stop tracing and remove the instance.
    pub fn stop_tracing(&self) {
        self.tracer.stop();
    }

    /// The file the kernel traces for source `i`, or why there is none.
    fn trace_target(&self, i: usize) -> std::result::Result<Target, String> {
        let s = self.source(i);
        if s.kind() != Kind::File {
            return Err(format!(
                "{} is not a regular file: its pages have no file events to trace",
                s.name()
            ));
        }
        let meta = s.file().metadata().map_err(|e| format!("fstat: {e}"))?;
        Ok(Target::from_stat(meta.dev(), meta.ino()))
    }

    /// `stats`' `trace`: `on`, `off` or `unavailable`.
    pub(super) fn trace_state(&self, i: usize) -> &'static str {
        match self.trace_target(i) {
            Ok(_) => self.tracer.state_name(),
            Err(_) => "unavailable",
        }
    }

    /// Open `trace`: follow the log while tracing runs, or a snapshot of
    /// the one line saying why it cannot.
    pub(super) fn open_trace(&self, i: usize, ino: u64, caller: Caller) -> Result<Handle> {
        if self.trace_target(i).is_ok() {
            match self.tracer.acquire() {
                State::On => {
                    return Ok(Handle::Trace {
                        source: i,
                        reader: EventReader::default(),
                    })
                }
                State::Off | State::Starting | State::Unavailable(_) => self.tracer.release(),
            }
        }
        self.snapshot(ino, Node::File(i, FileKind::Trace), caller)
    }

    /// What `trace` shows when it cannot follow the kernel: one line, why
    /// and what to do.
    pub(super) fn render_trace_unavailable(&self, i: usize) -> String {
        let why = match (self.trace_target(i), self.tracer.state()) {
            (Err(why), _) => why,
            (Ok(_), State::Unavailable(why)) => why,
            (Ok(_), _) => {
                "tracing did not start in time (see the daemon's log); open trace again".into()
            }
        };
        format!(
            "{} unavailable reason=\"{}\"\n",
            unix_ns(),
            one_line(&why).replace('"', "'")
        )
    }

    pub(super) fn close_trace(&self) {
        self.tracer.release();
    }

    /// The reader thread: runs the instance while anyone wants it, and
    /// hands each event to the sources it concerns. Returns at exit.
    pub fn trace_loop(&self) {
        trace::remove_stale();
        while self.tracer.wait_for_start() {
            let targets: Vec<(usize, Target)> = (0..self.served.len())
                .filter_map(|i| Some((i, self.trace_target(i).ok()?)))
                .collect();
            let all: Vec<Target> = targets.iter().map(|(_, t)| *t).collect();
            let instance = match Instance::create(&all) {
                Ok(instance) => instance,
                Err((why, todo)) => {
                    log::warn!("trace unavailable: {why}");
                    self.tracer.unavailable(format!("{why}; {todo}"));
                    continue;
                }
            };
            let now = unix_ns();
            let since = tally::boot_ns();
            for (i, _) in &targets {
                self.served[*i].life.begin(self.source(*i), now);
                self.served[*i].tally.restart();
            }
            self.tracer.started(since);
            log::info!("tracing page events of {} source(s)", targets.len());
            self.pump(Pump::new(instance), &targets);
        }
    }

    fn pump(&self, mut pump: Pump, targets: &[(usize, Target)]) {
        let mut by_file: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
        let mut by_ino: HashMap<u64, Vec<usize>> = HashMap::new();
        for (i, t) in targets {
            by_file.entry((t.dev, t.ino)).or_default().push(*i);
            by_ino.entry(t.ino).or_default().push(*i);
        }
        let mut flushers = Flushers::default();
        let none = Vec::new();
        let mut counted_at = Instant::now();
        while self.tracer.keep_on() {
            let (lines, drained) = pump.lines();
            let offset = trace::clock_offset_ns();
            let mut last_stamp = None;
            for line in lines {
                let (at_ns, pid, comm, what) = match line {
                    Line::Lost { count } => {
                        log::warn!("the kernel dropped {count} page events");
                        self.tracer.lost_events(tally::boot_ns());
                        for (i, _) in targets {
                            self.served[*i].life.lost(unix_ns(), count);
                            self.served[*i].tally.restart();
                        }
                        continue;
                    }
                    Line::Event {
                        at_ns,
                        pid,
                        comm,
                        what,
                    } => (at_ns, pid, known_comm(pid, comm), what),
                };
                last_stamp = Some(at_ns);
                let at = u128::try_from(i128::from(at_ns) + offset).unwrap_or(0);
                let sources = match what {
                    What::FlusherWork { .. } | What::SyncQueued => {
                        flushers.note(pid, &comm, &what);
                        continue;
                    }
                    What::Dirtied { ino, .. } => by_ino.get(&ino),
                    What::Fault { dev, ino, .. }
                    | What::Map { dev, ino, .. }
                    | What::Cached { dev, ino, .. }
                    | What::Evicted { dev, ino, .. }
                    | What::Readahead { dev, ino, .. }
                    | What::WritebackBegins { dev, ino }
                    | What::WritebackEnds { dev, ino } => by_file.get(&(dev, ino)),
                };
                for &i in sources.unwrap_or(&none) {
                    let (s, served) = (self.source(i), &self.served[i]);
                    match what {
                        What::WritebackBegins { .. } => {
                            served.life.writeback_begins(flushers.writer(pid, &comm));
                            served.tally.writeback_begins(at_ns);
                        }
                        What::WritebackEnds { .. } => {
                            served.life.writeback_ends(s, at);
                            served.tally.writeback_ends();
                        }
                        _ => {
                            let changed = served.life.record(at, pid, &comm, &what, Window::of(s));
                            if let Some((a, b)) = changed {
                                served.tally.touched(a, b);
                            }
                        }
                    }
                }
            }
            // Count again what the events changed: at once when the pipe
            // is empty, else every COUNT_EVERY (a busy writer's events
            // touch each block many times). Only then do the counts hold
            // every event read.
            let Some(caught_up) = drained.or(last_stamp) else {
                continue;
            };
            let touched: Vec<usize> = targets
                .iter()
                .map(|(i, _)| *i)
                .filter(|&i| self.served[i].tally.has_touched())
                .collect();
            if !touched.is_empty() {
                if drained.is_none() && counted_at.elapsed() < COUNT_EVERY {
                    continue;
                }
                for i in touched {
                    self.served[i].tally.flush(self.source(i));
                }
                counted_at = Instant::now();
            }
            self.tracer.followed_until(caught_up);
        }
        log::info!("tracing stopped");
    }

    /// Someone looks at `history` or `timeline.svg`: keep sampling.
    fn want_history(&self) {
        *self.history_wanted.lock().expect("no panics: they abort") = Some(Instant::now());
    }

    /// The watcher's sample of every source's counts, while tracing runs or
    /// someone looked at the history lately.
    pub(super) fn sample_history(&self) {
        let wanted = self
            .history_wanted
            .lock()
            .expect("no panics: they abort")
            .is_some_and(|at| at.elapsed() < HISTORY_WANTED_FOR);
        if !wanted && self.tracer.state() != State::On {
            return;
        }
        let follow = self.tracer.follow();
        for served in &self.served {
            let s = &served.source;
            let c = served.tally.counts(s, s.pages(), follow).stat;
            served.life.sample(Sample {
                at_ns: unix_ns(),
                resident: c.cache,
                dirty: c.dirty,
                writeback: c.writeback,
            });
        }
    }

    pub(super) fn render_history(&self, i: usize) -> String {
        self.want_history();
        render::history(&self.served[i].life.history().0)
    }

    pub(super) fn render_timeline(&self, i: usize) -> String {
        self.want_history();
        let (samples, marks) = self.served[i].life.history();
        render::timeline(self.source(i).name(), &samples, &marks, unix_ns())
    }

    pub(super) fn render_writeback(&self, i: usize) -> String {
        let s = self.source(i);
        let cache = self.served[i]
            .tally
            .counts(s, s.pages(), self.tracer.follow())
            .stat;
        let on = self.tracer.state() == State::On;
        render::writeback(&render::WritebackView {
            trace: self.tracer.state_name(),
            dirty: cache.dirty,
            writeback: cache.writeback,
            written: on.then(|| self.served[i].life.written()),
            vm: VmDirty::read(s.page_size()),
            now_ns: unix_ns(),
        })
    }
}

/// The kernel prints `<...>` for a process whose name fell out of its
/// small cache of names: ask `/proc` while the thread is alive.
fn known_comm(pid: u32, comm: String) -> String {
    if comm != "<...>" {
        return comm;
    }
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().chars().take(64).collect())
        .unwrap_or(comm)
}
