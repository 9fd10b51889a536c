//! What the filesystem answers, independent of the FUSE library: the
//! caller of a request, attributes with their TTL, open flags, directory
//! entries, `statfs`.

use std::time::{Duration, SystemTime};

use crate::source::Owner;

/// Who sent a request, as the kernel tells us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl Caller {
    /// Whether this caller may read a file with `owner`'s bits, as the
    /// kernel's `default_permissions` would decide.
    pub fn may_read(&self, owner: Owner) -> bool {
        let perm = u32::from(owner.perm);
        if self.uid == 0 {
            return true;
        }
        if self.uid == owner.uid {
            return perm & 0o400 != 0;
        }
        if self.gid == owner.gid || supplementary_groups(self.pid).contains(&owner.gid) {
            return perm & 0o040 != 0;
        }
        perm & 0o004 != 0
    }
}

/// The caller's supplementary groups, from `/proc` (the request has only
/// the primary group).
fn supplementary_groups(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Groups:"))?;
            Some(
                line["Groups:".len()..]
                    .split_whitespace()
                    .filter_map(|g| g.parse().ok())
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// Attributes of one node, and how long the kernel may cache them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub generation: u64,
    pub ttl: Duration,
    pub dir: bool,
    pub size: u64,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    /// What `stat` reports as the preferred I/O size: programs (the shell's
    /// `echo`) size their writes by it.
    pub block_size: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

/// How the kernel should treat a freshly opened file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// Generated files: every read comes to us, sizes may lie.
    pub direct_io: bool,
    /// Serve through kernel passthrough to this backing id.
    pub backing: Option<u32>,
    /// Keep what the kernel caches of the file (cached-mode `data` whose
    /// source did not change behind our back): otherwise each open drops it.
    pub keep_cache: bool,
    /// Closing it writes nothing back: a probe must not push the dirty
    /// pages it looks at (by default a close writes back the whole file).
    pub no_flush: bool,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub dir: bool,
    pub name: String,
}

/// What `statfs` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statfs {
    pub blocks: u64,
    pub files: u64,
    pub block_size: u32,
    pub name_max: u32,
}

/// What a `setattr` asks to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub owner_or_mode: bool,
    /// Sent on an open file (`ftruncate`), not by path.
    pub on_handle: bool,
}

/// Where a write to `data` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteFrom {
    /// The kernel writing back its cache of `data` (an outside mapping's
    /// stores), not a process's `write`.
    pub page_cache: bool,
    /// The file was opened `O_SYNC`/`O_DSYNC`: the write is also a sync.
    pub synchronous: bool,
}
