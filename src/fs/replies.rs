//! What the filesystem answers, independent of the FUSE library: the
//! caller of a request, attributes with their TTL, open flags, directory
//! entries, `statfs`.

use std::ffi::OsString;
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use crate::dir::Type;

use crate::dir::supplementary_groups;
use crate::source::Owner;

/// Who sent a request, as the kernel tells us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl Caller {
    /// Until dropped, the calling thread acts as this caller in a
    /// directory source (`Acting::as_caller`).
    pub fn acting(self) -> crate::dir::Acting {
        crate::dir::Acting::as_caller(self.uid, self.gid, self.pid)
    }

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
        if self.gid == owner.gid
            || supplementary_groups(self.pid, self.uid, self.gid).contains(&owner.gid)
        {
            return perm & 0o040 != 0;
        }
        perm & 0o004 != 0
    }
}

/// Attributes of one node, and how long the kernel may cache them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub generation: u64,
    pub ttl: Duration,
    pub kind: Type,
    pub size: u64,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub rdev: u32,
    /// What `stat` reports as the preferred I/O size: programs (the shell's
    /// `echo`) size their writes by it.
    pub block_size: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
}

/// The file the kernel serves a passthrough open from.
#[derive(Debug, Clone)]
pub enum Backing {
    /// A source's, registered once at start.
    Registered(u32),
    /// A directory source's file: registered at its first open, kept while
    /// any open of its inode lasts.
    File(Arc<File>),
}

/// How the kernel should treat a freshly opened file.
#[derive(Debug, Clone)]
pub struct Opened {
    pub fh: u64,
    /// Generated files: every read comes to us, sizes may lie.
    pub direct_io: bool,
    /// Serve through kernel passthrough from this file.
    pub backing: Option<Backing>,
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
    pub kind: Type,
    pub name: OsString,
    /// The offset at which the listing goes on after this entry.
    pub next: u64,
}

/// What `statfs` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statfs {
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_available: u64,
    pub files: u64,
    pub files_free: u64,
    pub block_size: u32,
    pub name_max: u32,
    pub fragment_size: u32,
}

/// A time `setattr` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    Now,
    At(SystemTime),
}

/// What a `setattr` asks to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    /// Sent on an open file (`ftruncate`), not by path.
    pub fh: Option<u64>,
}

impl SetAttr {
    pub fn owner_or_mode(&self) -> bool {
        self.mode.is_some() || self.uid.is_some() || self.gid.is_some()
    }

    /// Nothing to change: how the kernel announces a write that clears
    /// set-id bits.
    pub fn is_empty(&self) -> bool {
        !self.owner_or_mode() && self.size.is_none() && self.atime.is_none() && self.mtime.is_none()
    }

    pub fn on_handle(&self) -> bool {
        self.fh.is_some()
    }
}

/// Where a write to `data` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteFrom {
    /// The kernel writing back its cache of `data` (an outside mapping's
    /// stores), not a process's `write`.
    pub page_cache: bool,
    /// The file was opened `O_SYNC`/`O_DSYNC`: the write is also a sync.
    pub synchronous: bool,
    pub caller: Caller,
}
