//! The daemon's own tracefs instance: a directory under `instances/` with
//! its own ring buffer, in which only the page events of the served files
//! are enabled, filtered by the kernel (so other files cost us nothing).
//! Named `mmapfs-<pid>-<start time>-<n>`, so an instance whose daemon died
//! (`kill -9`) can be told from a live one and removed at the next start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::poll::{PollFd, PollFlags, PollTimeout};

const ROOT: &str = "/sys/kernel/tracing";
const PREFIX: &str = "mmapfs-";
/// Kernel buffer per CPU: at ~100 bytes an event, room for ~40000 events
/// between two reads.
const BUFFER_KB: u32 = 4096;

/// A file whose events to trace: the kernel's device encoding
/// (`major << 20 | minor`) and inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub dev: u64,
    pub ino: u64,
}

impl Target {
    /// From `st_dev`/`st_ino` as `stat(2)` gives them.
    pub fn from_stat(st_dev: u64, ino: u64) -> Target {
        let major = nix::sys::stat::major(st_dev);
        let minor = nix::sys::stat::minor(st_dev);
        Target {
            dev: (major << 20) | minor,
            ino,
        }
    }
}

/// Events on a file, filtered on its device and inode.
const FILE_EVENTS: [&str; 8] = [
    "filemap/mm_filemap_fault",
    "filemap/mm_filemap_map_pages",
    "filemap/mm_filemap_add_to_page_cache",
    "filemap/mm_filemap_delete_from_page_cache",
    "readahead/page_cache_sync_ra",
    "readahead/page_cache_async_ra",
    "writeback/sb_mark_inode_writeback",
    "writeback/sb_clear_inode_writeback",
];

/// `Some(why, what to do)` when tracing cannot run here.
pub type Unavailable = (String, &'static str);

pub struct Instance {
    dir: PathBuf,
    pipe: Option<File>,
}

static SERIAL: AtomicU64 = AtomicU64::new(0);

impl Instance {
    /// Make an instance tracing `targets` and open its pipe. Mounts tracefs
    /// first if it is missing (root only).
    pub fn create(targets: &[Target]) -> Result<Instance, Unavailable> {
        let root = Path::new(ROOT);
        if !root.join("instances").is_dir() {
            if !nix::unistd::geteuid().is_root() {
                return Err((
                    "tracefs is not mounted and only root may mount it".into(),
                    "run mmapfs as root, or mount -t tracefs nodev /sys/kernel/tracing",
                ));
            }
            nix::mount::mount(
                Some("nodev"),
                root,
                Some("tracefs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|e| {
                (
                    format!("cannot mount tracefs on {ROOT}: {e}"),
                    "the kernel needs CONFIG_TRACING; mount -t tracefs nodev /sys/kernel/tracing",
                )
            })?;
        }
        for event in FILE_EVENTS.iter().chain(&[
            "writeback/writeback_dirty_folio",
            "writeback/writeback_start",
            "writeback/writeback_queue",
        ]) {
            if !root.join("events").join(event).is_dir() {
                return Err((
                    format!("this kernel has no {event} trace event"),
                    "a kernel of 6.x with CONFIG_TRACING has them; nothing else to do",
                ));
            }
        }
        let name = format!(
            "{PREFIX}{}-{}-{}",
            std::process::id(),
            start_time(std::process::id()).unwrap_or(0),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let dir = root.join("instances").join(name);
        fs::create_dir(&dir).map_err(|e| {
            (
                format!("cannot create a tracefs instance: {e}"),
                "run mmapfs as root (tracefs needs it)",
            )
        })?;
        let mut instance = Instance { dir, pipe: None };
        instance.set_up(targets).map_err(|e| {
            (
                format!("cannot set up the tracefs instance: {e}"),
                "check that tracefs is writable by root here (not a locked-down kernel)",
            )
        })?;
        Ok(instance)
    }

    fn set_up(&mut self, targets: &[Target]) -> io::Result<()> {
        let write = |file: &str, text: &str| fs::write(self.dir.join(file), text);
        write("tracing_on", "0")?;
        write("options/irq-info", "0")?;
        write("options/fields", "1")?;
        write("options/overwrite", "0")?;
        // The boot clock: converted to unix time with one offset, and not
        // stopped while the machine sleeps.
        write("trace_clock", "boot")?;
        write("buffer_size_kb", &BUFFER_KB.to_string())?;
        let by_file = targets
            .iter()
            .map(|t| format!("(s_dev == {} && i_ino == {})", t.dev, t.ino))
            .collect::<Vec<_>>()
            .join(" || ");
        let by_sb = targets
            .iter()
            .map(|t| format!("(dev == {} && ino == {})", t.dev, t.ino))
            .collect::<Vec<_>>()
            .join(" || ");
        let by_ino = targets
            .iter()
            .map(|t| format!("ino == {}", t.ino))
            .collect::<Vec<_>>()
            .join(" || ");
        for event in FILE_EVENTS {
            let filter = if event.starts_with("writeback/") {
                &by_sb
            } else {
                &by_file
            };
            write(&format!("events/{event}/filter"), filter)?;
            write(&format!("events/{event}/enable"), "1")?;
        }
        write("events/writeback/writeback_dirty_folio/filter", &by_ino)?;
        write("events/writeback/writeback_dirty_folio/enable", "1")?;
        // Which flusher work is for which reason: few events, unfiltered.
        write("events/writeback/writeback_start/enable", "1")?;
        // Who asked for a sync(2)/syncfs(2) (reason 2, WB_REASON_SYNC).
        write("events/writeback/writeback_queue/filter", "reason == 2")?;
        write("events/writeback/writeback_queue/enable", "1")?;
        self.pipe = Some(
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(self.dir.join("trace_pipe"))?,
        );
        write("tracing_on", "1")
    }

    /// Read what the kernel has, waiting up to `timeout_ms` for something.
    /// `Ok(0)` when nothing came.
    pub fn read(&mut self, buf: &mut [u8], timeout_ms: u16) -> io::Result<usize> {
        let Some(pipe) = self.pipe.as_mut() else {
            return Ok(0);
        };
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::from(timeout_ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(0),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        match pipe.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            other => other,
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("tracing_on"), "0");
        // The directory cannot go while its pipe is open.
        drop(self.pipe.take());
        if let Err(e) = fs::remove_dir(&self.dir) {
            log::warn!("remove tracefs instance {}: {e}", self.dir.display());
        }
    }
}

/// The start time of process `pid` (field 22 of `/proc/PID/stat`, clock
/// ticks since boot): with the pid, it names one process for good.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Remove the instances of mmapfs daemons that are gone (killed before
/// they could remove their own). Those of live daemons stay.
pub fn remove_stale() {
    let Ok(entries) = fs::read_dir(Path::new(ROOT).join("instances")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let mut parts = rest.split('-');
        let (Some(pid), Some(started)) = (
            parts.next().and_then(|p| p.parse::<u32>().ok()),
            parts.next().and_then(|s| s.parse::<u64>().ok()),
        ) else {
            continue;
        };
        if start_time(pid) == Some(started) {
            continue;
        }
        match fs::remove_dir(entry.path()) {
            Ok(()) => log::info!("removed the tracefs instance {rest} of a daemon that is gone"),
            Err(e) => log::warn!("remove stale tracefs instance {rest}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_device_encoding() {
        // 254:0 as glibc's st_dev, and as the kernel's dev_t.
        let st_dev = nix::sys::stat::makedev(254, 0);
        assert_eq!(Target::from_stat(st_dev, 7).dev, 254 << 20);
        let st_dev = nix::sys::stat::makedev(8, 3);
        assert_eq!(Target::from_stat(st_dev, 7).dev, (8 << 20) | 3);
    }

    #[test]
    fn our_own_start_time_is_known() {
        assert!(start_time(std::process::id()).is_some());
        assert_eq!(start_time(u32::MAX), None);
    }
}
