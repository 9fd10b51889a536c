//! The `msync` control file: its commands, running one against a source's
//! mapping, and the report that reading `msync` shows.

use std::sync::Mutex;
use std::time::Instant;

use super::KernelCache;
use crate::control;
use crate::error::fail;
use crate::error::{errno_name, Error, Result};
use crate::events::{unix_ns, Event};
use crate::io_mode::IoMode;
use crate::pages;
use crate::source::Source;
use crate::sys::Sharing;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Sync,
    Async,
    Invalidate,
}

impl Command {
    pub fn name(self) -> &'static str {
        match self {
            Command::Sync => "sync",
            Command::Async => "async",
            Command::Invalidate => "invalidate",
        }
    }

    fn flags(self) -> libc::c_int {
        match self {
            Command::Sync => libc::MS_SYNC,
            Command::Async => libc::MS_ASYNC,
            Command::Invalidate => libc::MS_INVALIDATE,
        }
    }
}

/// A parsed, range-checked command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub offset: u64,
    pub length: u64,
}

/// Parse one write to `msync`. Anything malformed is `EINVAL`.
pub fn parse(bytes: &[u8], mapping_len: u64, page: u64) -> Result<Request> {
    let parsed = control::parse("msync", bytes, mapping_len, page)?;
    let command = match parsed.word {
        None | Some("sync") | Some("1") => Command::Sync,
        Some("async") => Command::Async,
        Some("invalidate") => Command::Invalidate,
        Some(other) => {
            return Err(fail!(
                EINVAL,
                "msync: unknown command '{}': use sync, async or invalidate [OFFSET [LENGTH]]",
                control::quote(other)
            ))
        }
    };
    Ok(Request {
        command,
        offset: parsed.range.offset,
        length: parsed.range.length,
    })
}

/// What the last msync did; reading `msync` renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub request: Request,
    pub result: std::result::Result<(), Error>,
    pub reached_source: bool,
    pub dirty_before: u64,
    pub dirty_after: u64,
    pub duration_ns: u64,
    pub at_unix_ns: u128,
}

/// The msync file's state for one source: commands run one at a time so
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
}

/// Run one command to completion and record it. `data_ino` names the
/// source's `data` file to the kernel side.
pub fn run(
    source: &Source,
    state: &State,
    request: Request,
    kernel: &dyn KernelCache,
    data_ino: u64,
) -> Report {
    let _serial = state.serial.lock().expect("no panics: they abort");
    let started = Instant::now();
    let at_unix_ns = unix_ns();
    let dirty_before = pages::dirty_in(source, request.offset, request.length);
    let result = execute(source, request, kernel, data_ino);
    let dirty_after = pages::dirty_in(source, request.offset, request.length);
    let duration_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let report = Report {
        request,
        reached_source: result.is_ok() && source.sharing() == Sharing::Shared,
        result,
        dirty_before,
        dirty_after,
        duration_ns,
        at_unix_ns,
    };
    source
        .counters()
        .record_msync(duration_ns, report.result.is_ok());
    source.events().push(Event::Msync {
        command: request.command.name(),
        offset: request.offset,
        length: request.length,
        result: match &report.result {
            Ok(()) => "ok".to_string(),
            Err(e) => errno_name(e.errno),
        },
        dirty_before,
        dirty_after,
        duration_ns,
        reached_source: report.reached_source,
    });
    *state.last.lock().expect("no panics: they abort") = Some(report.clone());
    report
}

fn execute(source: &Source, r: Request, kernel: &dyn KernelCache, data_ino: u64) -> Result<()> {
    // In cached mode, stores through outside mappings of `data` sit dirty
    // in the FUSE inode's page cache until pushed to us; push them first.
    let fuse_cache = source.io_mode() == IoMode::Cached;
    if fuse_cache && r.command != Command::Async {
        kernel.push_and_drop(data_ino, r.offset, r.length)?;
    }
    source
        .msync(r.offset, r.length, r.command.flags())
        .map_err(|e| Error::from_io(e, format!("msync({})", r.command.name())))?;
    if r.command == Command::Invalidate {
        source.counters().record_invalidation();
        if fuse_cache {
            kernel.push_and_drop(data_ino, r.offset, r.length)?;
        }
        source.events().push(Event::Invalidate {
            offset: r.offset,
            length: r.length,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEN: u64 = 16 * 4096;

    fn ok(text: &str) -> Request {
        parse(text.as_bytes(), LEN, 4096).unwrap()
    }

    fn bad(text: &[u8]) {
        let err = parse(text, LEN, 4096).unwrap_err();
        assert_eq!(
            err.errno,
            libc::EINVAL,
            "{:?}",
            String::from_utf8_lossy(text)
        );
    }

    #[test]
    fn commands_and_ranges() {
        let whole = |command| Request {
            command,
            offset: 0,
            length: LEN,
        };
        assert_eq!(ok(""), whole(Command::Sync));
        assert_eq!(ok("\n"), whole(Command::Sync));
        assert_eq!(ok("1\n"), whole(Command::Sync));
        assert_eq!(ok("sync"), whole(Command::Sync));
        assert_eq!(ok("async\n"), whole(Command::Async));
        assert_eq!(ok("invalidate\r\n"), whole(Command::Invalidate));
        assert_eq!(
            ok("sync 8192 4096\n"),
            Request {
                command: Command::Sync,
                offset: 8192,
                length: 4096
            }
        );
        assert_eq!(ok("async 4K").length, LEN - 4096);
    }

    #[test]
    fn malformed_commands_are_einval() {
        for text in [
            &b"flush"[..],
            b"sync 100",
            b"sync 0 0",
            b"sync 0 99999999",
            b"sync 65536",
            b"sync -1",
            b"sync 0 4096 7",
            b"sync\nsync\n",
            b"\xff\xfe",
            b"sync\0",
            b"SYNC",
        ] {
            bad(text);
        }
    }
}
