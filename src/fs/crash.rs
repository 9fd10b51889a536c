//! `--crash-test` at the filesystem's level: a crash drops what the kernel
//! caches of `data` as well as the unsynced pages, every sync is a point an
//! armed crash may fall on, and handles from before a crash are dead.

use super::{Handle, MmapFs};
use crate::error::{fail, Error, Result};
use crate::events::Event;
use crate::held::{CrashReport, Keep, SyncPoint, When};

impl MmapFs {
    /// Crash source `i`: everything unsynced but what `keep` names is lost.
    /// The kernel's cache of `data` is dropped first: its dirty pages, from
    /// before the crash, are refused as they come back, and while the crash
    /// runs every read fails, so nothing from before it is cached again.
    pub(super) fn crash(&self, i: usize, keep: &Keep, cause: String) -> Result<CrashReport> {
        let served = &self.served[i];
        let s = &served.source;
        let held = s.crash_test()?;
        held.set_crashing(true);
        if let Some(kernel) = self.kernel.get() {
            if let Err(e) = kernel.push_and_drop(served.data_ino, 0, u64::MAX) {
                log::warn!("{}: crash: {e}", s.name());
            }
        }
        let report = held.crash(&s.mapping(), s.file(), s.offset(), keep, cause);
        held.set_crashing(false);
        let report = report.map_err(|e| Error::from_io(e, format!("{}: crash", s.name())))?;
        s.events().push(Event::Crash {
            cause: report.cause.clone(),
            lost: report.lost_pages(),
            kept: report.kept_pages(),
        });
        Ok(report)
    }

    /// One sync of source `i` (`fsync`, `echo sync > msync`): `persist`
    /// runs unless an armed crash falls on this sync.
    pub(super) fn sync_point(&self, i: usize, persist: impl FnOnce() -> Result<()>) -> Result<()> {
        let Some(held) = self.source(i).held() else {
            return persist();
        };
        match held.next_sync() {
            SyncPoint::Plain => persist(),
            SyncPoint::Crash(n, When::Before) => {
                self.crash(i, &Keep::Nothing, format!("sync {n} before"))?;
                Err(fail!(EIO, "crashed before sync {n} (--crash-test)"))
            }
            SyncPoint::Crash(n, When::After) => {
                persist()?;
                self.crash(i, &Keep::Nothing, format!("sync {n} after"))
                    .map(|_| ())
            }
        }
    }

    /// A sync point that makes the whole window durable (`fsync`, a write
    /// on an `O_SYNC` file); `what` names it in an error.
    pub(super) fn sync_window(&self, i: usize, what: &str) -> Result<()> {
        let s = self.source(i);
        self.sync_point(i, || {
            s.msync(0, s.length(), libc::MS_SYNC)
                .map_err(|e| Error::from_io(e, what))
        })
    }

    /// `EIO` for a handle of `data` opened before the last crash.
    pub(super) fn check_epoch(&self, i: usize, fh: u64) -> Result<()> {
        let Some(held) = self.source(i).held() else {
            return Ok(());
        };
        match self.handles().get(&fh) {
            Some(Handle::Data { epoch, .. }) if *epoch < held.epoch() => Err(fail!(
                EIO,
                "{}: opened before a crash (--crash-test)",
                self.source(i).name()
            )),
            _ => Ok(()),
        }
    }
}
