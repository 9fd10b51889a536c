//! The kernel's own cache of a cached-mode `data`, one level above the
//! source's: an outside mapping's stores sit dirty there until the kernel
//! writes them back to us. To ask `cachestat` about it the daemon opens
//! `data` through its own mount, for the moment of one probe.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::atomic::Ordering;

use super::MmapFs;
use crate::io_mode::IoMode;
use crate::mountinfo;
use crate::resolve;
use crate::tree::FileKind;

/// FUSE requests the daemon's FUSE workers serve at once.
pub const WORKERS: usize = 8;

/// Probes through the mount at once. Each waits for a worker to answer
/// its own OPEN, so at most half of them may wait: the rest stay free.
const MAX_VIEWS: usize = WORKERS / 2;

impl MmapFs {
    /// `data` of source `i` opened through the mount, in cached mode (the
    /// kernel keeps its cache of `data` across opens, so it may hold pages
    /// while nobody has the file open). `None` under passthrough (no such
    /// cache), or when no probe slot is free: then only the source's level
    /// is shown.
    pub(super) fn mount_view(&self, i: usize) -> Option<File> {
        let s = self.source(i);
        let dev = *self.mount_dev.get()?;
        if s.io_mode() != IoMode::Cached {
            return None;
        }
        if self.views.fetch_add(1, Ordering::AcqRel) >= MAX_VIEWS {
            self.views.fetch_sub(1, Ordering::AcqRel);
            log::debug!("{}: every probe slot is busy: source level only", s.name());
            return None;
        }
        let view = self.open_view(dev, i);
        self.views.fetch_sub(1, Ordering::AcqRel);
        view
    }

    fn open_view(&self, dev: u64, i: usize) -> Option<File> {
        let (_, root) = mountinfo::roots(dev).into_iter().next()?;
        // Names inside our own tree are ours: no link can be planted there.
        let path = resolve::fd_path(&root)
            .join(self.source(i).name())
            .join(FileKind::Data.name());
        let thread = nix::unistd::gettid().as_raw() as u32;
        self.own_threads().push(thread);
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path);
        self.own_threads().retain(|t| *t != thread);
        let file = opened.ok()?;
        let meta = file.metadata().ok()?;
        (meta.dev() == dev && meta.ino() == self.served[i].data_ino).then_some(file)
    }

    /// Whether a request comes from one of our own probes.
    pub(super) fn is_own(&self, thread: u32) -> bool {
        self.own_threads().contains(&thread)
    }
}
