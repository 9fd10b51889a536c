//! The `msync` control file: parsing one command per write, running it
//! against a source's mapping, and the report that reading `msync` shows.

use std::fmt::Write as _;
use std::time::Instant;

use crate::cli::parse_size;
use crate::error::{Error, Result};
use crate::events::unix_ns;
use crate::fail;
use crate::probe::PageState;
use crate::source::{Counters, IoMode, Source};
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
    let text = std::str::from_utf8(bytes)
        .map_err(|_| fail!(EINVAL, "msync: command is not UTF-8 text"))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.contains(['\n', '\r', '\0']) {
        return Err(fail!(EINVAL, "msync: one command per write"));
    }
    let mut words = text.split_ascii_whitespace();
    let command = match words.next() {
        None | Some("sync") | Some("1") => Command::Sync,
        Some("async") => Command::Async,
        Some("invalidate") => Command::Invalidate,
        Some(other) => {
            return Err(fail!(
                EINVAL,
                "msync: unknown command '{}': use sync, async or invalidate [OFFSET [LENGTH]]",
                other.escape_default()
            ))
        }
    };
    let number = |w: &str, what: &str| {
        parse_size(w).map_err(|e| fail!(EINVAL, "msync: {what}: {}", e.escape_default()))
    };
    let offset = match words.next() {
        Some(w) => number(w, "OFFSET")?,
        None => 0,
    };
    let length = match words.next() {
        Some(w) => Some(number(w, "LENGTH")?),
        None => None,
    };
    if let Some(extra) = words.next() {
        return Err(fail!(
            EINVAL,
            "msync: unexpected '{}' after LENGTH",
            extra.escape_default()
        ));
    }
    if !offset.is_multiple_of(page) {
        return Err(fail!(
            EINVAL,
            "msync: OFFSET {offset} is not a multiple of the page size ({page})"
        ));
    }
    if offset >= mapping_len {
        return Err(fail!(
            EINVAL,
            "msync: OFFSET {offset} is past the end of the mapping ({mapping_len} bytes)"
        ));
    }
    let length = length.unwrap_or(mapping_len - offset);
    if length == 0
        || offset
            .checked_add(length)
            .is_none_or(|end| end > mapping_len)
    {
        return Err(fail!(
            EINVAL,
            "msync: LENGTH {length} from {offset} is empty or past the end of the mapping ({mapping_len} bytes)"
        ));
    }
    Ok(Request {
        command,
        offset,
        length,
    })
}

/// What the last msync did; reading `msync` renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsyncReport {
    pub request: Request,
    pub result: std::result::Result<(), Error>,
    pub reached_source: bool,
    pub dirty_before: u64,
    pub dirty_after: u64,
    pub duration_ns: u64,
    pub at_unix_ns: u128,
}

impl MsyncReport {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let r = &self.request;
        let _ = writeln!(s, "command {}", r.command.name());
        let _ = writeln!(s, "offset_bytes {}", r.offset);
        let _ = writeln!(s, "length_bytes {}", r.length);
        match &self.result {
            Ok(()) => s.push_str("result ok\n"),
            Err(e) => {
                let _ = writeln!(s, "result {}", errno_name(e.errno));
                let _ = writeln!(s, "error {}", e.message);
            }
        }
        let _ = writeln!(
            s,
            "reached_source {}",
            if self.reached_source { "yes" } else { "no" }
        );
        let _ = writeln!(s, "dirty_pages_before {}", self.dirty_before);
        let _ = writeln!(s, "dirty_pages_after {}", self.dirty_after);
        let _ = writeln!(s, "duration_ns {}", self.duration_ns);
        let _ = writeln!(s, "at_unix_ns {}", self.at_unix_ns);
        s
    }

    fn event_fields(&self) -> String {
        let r = &self.request;
        let result = match &self.result {
            Ok(()) => "ok",
            Err(e) => errno_name(e.errno),
        };
        format!(
            "command={} offset={} length={} result={} dirty_before={} dirty_after={} duration_ns={} reached_source={}",
            r.command.name(),
            r.offset,
            r.length,
            result,
            self.dirty_before,
            self.dirty_after,
            self.duration_ns,
            if self.reached_source { "yes" } else { "no" },
        )
    }
}

/// What the kernel side of the mount can do for a sync: push dirty pages
/// of `data` held in the FUSE page cache to us, and drop that cache.
pub trait KernelCache: Send + Sync {
    fn flush(&self, source: usize) -> Result<()>;
    fn invalidate(&self, source: usize, offset: u64, length: u64) -> Result<()>;
}

/// Dirty pages of the window range now, as the kernel counts them.
pub fn dirty_count(source: &Source, offset: u64, length: u64) -> u64 {
    let page = source.page_size();
    source.page_count(PageState::Dirty, offset / page, length.div_ceil(page))
}

/// Run one command to completion and record it.
pub fn run(
    source: &Source,
    index: usize,
    request: Request,
    kernel: &dyn KernelCache,
) -> MsyncReport {
    let _serial = source.msync_lock.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let at_unix_ns = unix_ns();
    let dirty_before = dirty_count(source, request.offset, request.length);
    let result = execute(source, index, request, kernel);
    let dirty_after = dirty_count(source, request.offset, request.length);
    let duration_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let report = MsyncReport {
        request,
        reached_source: result.is_ok() && source.sharing == Sharing::Shared,
        result,
        dirty_before,
        dirty_after,
        duration_ns,
        at_unix_ns,
    };
    let c = &source.counters;
    Counters::add(&c.msync_calls, 1);
    Counters::add(&c.msync_total_ns, duration_ns);
    c.msync_last_ns
        .store(duration_ns, std::sync::atomic::Ordering::Relaxed);
    if report.result.is_err() {
        Counters::add(&c.msync_errors, 1);
    }
    source.events.push("msync", &report.event_fields());
    *source.last_msync.lock().unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
    report
}

fn execute(source: &Source, index: usize, r: Request, kernel: &dyn KernelCache) -> Result<()> {
    // In cached mode, stores through outside mappings of `data` sit dirty
    // in the FUSE inode's page cache until pushed to us; push them first.
    let fuse_cache = source.io_mode() == IoMode::Cached;
    if fuse_cache && r.command != Command::Async {
        kernel.flush(index)?;
    }
    source
        .mapping
        .msync(r.offset, r.length, r.command.flags())
        .map_err(|e| Error::from_io(e, format!("msync({})", r.command.name())))?;
    if r.command == Command::Invalidate {
        Counters::add(&source.counters.invalidations, 1);
        if fuse_cache {
            kernel.invalidate(index, r.offset, r.length)?;
        }
        source.events.push(
            "invalidate",
            &format!("offset={} length={}", r.offset, r.length),
        );
    }
    Ok(())
}

pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EIO => "EIO",
        libc::ENOSPC => "ENOSPC",
        libc::EINVAL => "EINVAL",
        libc::ENOMEM => "ENOMEM",
        libc::EBUSY => "EBUSY",
        libc::EDQUOT => "EDQUOT",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EROFS => "EROFS",
        libc::ENOENT => "ENOENT",
        libc::ENODEV => "ENODEV",
        libc::EINTR => "EINTR",
        _ => "error",
    }
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
