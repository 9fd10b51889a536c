//! The `msync` control file: its commands and running one against a
//! source's mapping. The report is the shared one (`control::Report`).

use super::{execute, mlock::Locks, KernelCache, Report, State, Target};
use crate::control;
use crate::error::{errno_name, fail, Error, Result};
use crate::events::Event;
use crate::io_mode::IoMode;
use crate::source::{Kind, Source};
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

    pub fn flags(self) -> libc::c_int {
        match self {
            Command::Sync => libc::MS_SYNC,
            Command::Async => libc::MS_ASYNC,
            Command::Invalidate => libc::MS_INVALIDATE,
        }
    }
}

/// A parsed, range-checked command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub target: Target,
}

/// Parse one write to `msync`. Anything malformed is `EINVAL`.
pub fn parse(bytes: &[u8], window: u64, page: u64) -> Result<Request> {
    let parsed = control::parse("msync", bytes, window, page, &[])?;
    let command = match parsed.word {
        None | Some("sync") | Some("1") => Command::Sync,
        Some("async") => Command::Async,
        Some("invalidate") => Command::Invalidate,
        Some(other) => {
            return Err(fail!(
                EINVAL,
                "msync: unknown command '{}': use sync, async or invalidate \
                 [OFFSET [LENGTH] | pages CPULIST]",
                control::quote(other)
            ))
        }
    };
    Ok(Request {
        command,
        target: parsed.target,
    })
}

/// Run one command to completion and record it. `data_ino` names the
/// source's `data` file to the kernel side.
pub fn run(
    source: &Source,
    state: &State,
    locks: &Locks,
    request: Request,
    kernel: &dyn KernelCache,
    data_ino: u64,
) -> Report {
    state.run_one(|| {
        let r = &request;
        let report = execute(
            r.command.name().to_string(),
            source,
            &r.target,
            locks,
            || {
                let result = sync_ranges(source, r, kernel, data_ino);
                let reached = result.is_ok() && reaches_source(source);
                let yes_no = if reached { "yes" } else { "no" };
                (result, vec![("reached_source", yes_no.to_string())])
            },
        );
        source
            .counters()
            .record_msync(report.duration_ns, report.result.is_ok());
        source.events().push(event(
            r.command,
            &report,
            report.result.is_ok() && reaches_source(source),
        ));
        report
    })
}

/// The `msync` event of a command's report.
pub fn event(command: Command, report: &Report, reached_source: bool) -> Event {
    Event::Msync {
        command: command.name(),
        offset: report.offset,
        length: report.length,
        result: match &report.result {
            Ok(()) => "ok".to_string(),
            Err(e) => errno_name(e.errno),
        },
        dirty_before: report.before.dirty,
        dirty_after: report.after.dirty,
        duration_ns: report.duration_ns,
        reached_source,
    }
}

/// Have the kernel write its dirty pages of the range back to us; a write
/// of theirs that failed (a full disk) fails the command, with its errno.
pub fn push(
    source: &Source,
    kernel: &dyn KernelCache,
    data_ino: u64,
    offset: u64,
    length: u64,
) -> Result<()> {
    let (failed_before, _) = source.write_failures();
    kernel.push_and_drop(data_ino, offset, length)?;
    let (failed_after, errno) = source.write_failures();
    if failed_after > failed_before {
        return Err(Error::new(
            errno,
            format!(
                "{} of the kernel's dirty pages of data could not be written to the source: {}",
                failed_after - failed_before,
                errno_name(errno)
            ),
        ));
    }
    Ok(())
}

/// A sync writes to a file: not from a private copy (but for a crash
/// test's, which a sync persists), and an anonymous region has no file.
fn reaches_source(source: &Source) -> bool {
    source.held().is_some() || (source.sharing() == Sharing::Shared && source.kind() != Kind::Anon)
}

fn sync_ranges(
    source: &Source,
    r: &Request,
    kernel: &dyn KernelCache,
    data_ino: u64,
) -> Result<()> {
    // In cached mode, stores through outside mappings of `data` sit dirty
    // in the FUSE inode's page cache until pushed to us; push them first.
    let fuse_cache = source.io_mode() == IoMode::Cached;
    let ranges = r.target.byte_ranges(source.page_size(), source.length());
    for &(offset, length) in &ranges {
        if fuse_cache && r.command != Command::Async {
            push(source, kernel, data_ino, offset, length)?;
        }
        source
            .msync(offset, length, r.command.flags())
            .map_err(|e| Error::from_io(e, format!("msync({})", r.command.name())))?;
        if r.command == Command::Invalidate {
            source.counters().record_invalidation();
            if fuse_cache {
                push(source, kernel, data_ino, offset, length)?;
            }
            source.events().push(Event::Invalidate { offset, length });
        }
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
        let span = |command, offset: u64, length: u64| Request {
            command,
            target: Target {
                pages: vec![(offset / 4096, (offset + length - 1) / 4096)],
                offset,
                length,
                as_pages: false,
            },
        };
        let whole = |command| span(command, 0, LEN);
        assert_eq!(ok(""), whole(Command::Sync));
        assert_eq!(ok("\n"), whole(Command::Sync));
        assert_eq!(ok("1\n"), whole(Command::Sync));
        assert_eq!(ok("sync"), whole(Command::Sync));
        assert_eq!(ok("async\n"), whole(Command::Async));
        assert_eq!(ok("invalidate\r\n"), whole(Command::Invalidate));
        assert_eq!(ok("sync 8192 4096\n"), span(Command::Sync, 8192, 4096));
        assert_eq!(ok("async 4K").target.length, LEN - 4096);
        assert_eq!(ok("sync pages 1,3-4").target.pages, vec![(1, 1), (3, 4)]);
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
