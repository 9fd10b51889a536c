//! The `mlock` control file: `lock`, `lock onfault`, `unlock` on the
//! daemon's mapping of the window. Locks hold until `unlock`, unmount or
//! exit: `vmtouch -l -d` without another daemon.

use std::sync::Mutex;

use super::{intersect, Report, State, Target};
use crate::control;
use crate::error::{fail, Error, Result};
use crate::probe::{self, Ranges};
use crate::source::Source;

/// The page ranges of a source that are under `mlock`.
#[derive(Debug, Default)]
pub struct Locks {
    ranges: Mutex<Ranges>,
}

impl Locks {
    fn ranges(&self) -> Ranges {
        self.ranges.lock().expect("no panics: they abort").clone()
    }

    /// Locked pages among `pages`: those of the locked ranges that are in
    /// the daemon's page tables now (all of them after `lock`; the touched
    /// ones after `lock onfault`). Free when nothing is locked.
    pub fn locked_in(&self, source: &Source, pages: &[(u64, u64)]) -> u64 {
        let locked = self.ranges();
        if locked.is_empty() {
            return 0;
        }
        let base = source.mapping().address() as u64;
        let page = source.page_size();
        intersect(pages, &locked)
            .iter()
            .filter_map(|&(a, b)| probe::present_ranges(base + a * page, b - a + 1).ok())
            .map(|found| found.iter().map(|(x, y)| y - x + 1).sum::<u64>())
            .sum()
    }

    /// Locked pages of the whole window of `pages` pages.
    pub fn total(&self, source: &Source, pages: u64) -> u64 {
        match pages {
            0 => 0,
            pages => self.locked_in(source, &[(0, pages - 1)]),
        }
    }

    fn add(&self, pages: &[(u64, u64)]) {
        let mut locked = self.ranges.lock().expect("no panics: they abort");
        *locked = probe::union(&locked, pages);
    }

    fn remove(&self, pages: &[(u64, u64)]) {
        let mut locked = self.ranges.lock().expect("no panics: they abort");
        let kept = Target {
            pages: locked.clone(),
            offset: 0,
            length: 0,
            as_pages: true,
        }
        .without(pages);
        *locked = kept.pages;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Lock { onfault: bool },
    Unlock,
}

impl Command {
    fn name(self) -> &'static str {
        match self {
            Command::Lock { onfault: false } => "lock",
            Command::Lock { onfault: true } => "lock onfault",
            Command::Unlock => "unlock",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub target: Target,
}

/// Parse one write to `mlock`. Anything malformed is `EINVAL`.
pub fn parse(bytes: &[u8], window: u64, page: u64) -> Result<Request> {
    let parsed = control::parse("mlock", bytes, window, page, &["onfault"])?;
    let onfault = parsed.qualifiers.contains(&"onfault");
    let command = match parsed.word {
        Some("lock") => Command::Lock { onfault },
        Some("unlock") if !onfault => Command::Unlock,
        Some("unlock") => return Err(fail!(EINVAL, "mlock: onfault goes with lock, not unlock")),
        other => {
            return Err(fail!(
                EINVAL,
                "mlock: unknown command '{}': use lock [onfault] or unlock \
                 [OFFSET [LENGTH] | pages CPULIST]",
                control::quote(other.unwrap_or(""))
            ))
        }
    };
    Ok(Request {
        command,
        target: parsed.target,
    })
}

/// Run one command to completion and record it.
pub fn run(source: &Source, state: &State, locks: &Locks, request: Request) -> Report {
    let r = &request;
    let command = r.command.name().to_string();
    control::run("mlock", command, source, state, locks, &r.target, || {
        (apply(source, locks, r), Vec::new())
    })
}

fn apply(source: &Source, locks: &Locks, r: &Request) -> Result<()> {
    let ranges = r.target.byte_ranges(source.page_size(), source.length());
    match r.command {
        Command::Lock { onfault } => {
            let (locked, result) = source.mlock(&ranges, onfault);
            locks.add(&r.target.pages[..locked]);
            result.map_err(|e| lock_error(e, source, locks, &r.target))
        }
        Command::Unlock => {
            let result = source.munlock(&ranges);
            locks.remove(&r.target.pages);
            result.map_err(|e| Error::from_io(e, "mlock: munlock"))
        }
    }
}

/// Why a lock could not be had, with the limits that decide it: the
/// `RLIMIT_MEMLOCK` of the daemon and the memory limit of its cgroup.
fn lock_error(err: std::io::Error, source: &Source, locks: &Locks, target: &Target) -> Error {
    let page = source.page_size();
    let wanted = target.page_count();
    let locked = locks.total(source, source.pages());
    let mut why = format!("mlock: {err}: the range needs {wanted} pages, {locked} are locked now");
    if let Ok((soft, _)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
    {
        if nix::unistd::geteuid().is_root() {
            why.push_str("; RLIMIT_MEMLOCK does not bind root (CAP_IPC_LOCK)");
        } else if soft == libc::RLIM_INFINITY {
            why.push_str("; RLIMIT_MEMLOCK is unlimited");
        } else {
            let allowed = soft / page;
            why.push_str(&format!(
                "; RLIMIT_MEMLOCK allows {soft} bytes ({allowed} pages) for the whole daemon: \
                 at most {} more pages can be locked",
                allowed.saturating_sub(locked)
            ));
        }
    }
    if let Some((max, current)) = cgroup_memory() {
        why.push_str(&format!(
            "; the daemon's cgroup may use {max} bytes of memory and uses {current}"
        ));
    }
    Error::new(err.raw_os_error().unwrap_or(libc::ENOMEM), why)
}

/// `memory.max` and `memory.current` of the daemon's cgroup (v2), when it
/// has a limit.
fn cgroup_memory() -> Option<(String, String)> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .map(|s| s.trim().to_string())
    };
    let max = read("memory.max")?;
    (max != "max").then(|| (max, read("memory.current").unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        let p = |t: &str| parse(t.as_bytes(), 8 * 4096, 4096);
        assert_eq!(p("lock").unwrap().command, Command::Lock { onfault: false });
        assert_eq!(
            p("lock onfault 4096").unwrap().command,
            Command::Lock { onfault: true }
        );
        assert_eq!(p("unlock pages 1-2").unwrap().target.pages, vec![(1, 2)]);
        for bad in ["", "unlock onfault", "lock 5", "onfault", "LOCK"] {
            assert_eq!(p(bad).unwrap_err().errno, libc::EINVAL, "{bad}");
        }
    }
}
