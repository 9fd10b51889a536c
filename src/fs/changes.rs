//! Requests that change something: writes to `data` and the control
//! files (commands run off the FUSE workers), `fsync`, `setattr`, and the
//! last pushes and syncs at unmount.

use std::sync::Arc;

use super::MmapFs;
use super::{Caller, SetAttr, WriteFrom};
use crate::control::{crash, fadvise, madvise, mlock, msync};
use crate::error::{fail, Result};
use crate::events::Event;
use crate::fs::Attr;
use crate::io_mode::IoMode;
use crate::tree::{FileKind, Node, View};

/// A parsed command for one of the control files.
enum Command {
    Msync(msync::Request),
    Madvise(madvise::Request),
    Fadvise(fadvise::Request),
    Mlock(mlock::Request),
    Crash(crash::Request),
}

impl MmapFs {
    /// A write to `data` or to a control file. `done` gets the result: at
    /// once for `data` and for malformed commands; from another thread
    /// once a command finished, so no FUSE worker waits on the disk.
    pub fn write(
        self: &Arc<Self>,
        ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        from: WriteFrom,
        done: impl FnOnce(Result<u32>) + Send + 'static,
    ) {
        match self.node(ino) {
            Ok(Node::Real(_, View::Data)) => {
                done(self.tree_write(fh, offset, data, from.page_cache))
            }
            Ok(node @ (Node::TreeFile(_, FileKind::Msync) | Node::Inspect(_, FileKind::Msync))) => {
                self.tree_command(ino, node, data, from.caller, done)
            }
            Ok(Node::File(i, FileKind::Data)) => {
                // The kernel writes back its cache through any open
                // handle: only a process's own write is tied to its handle.
                let live = if from.page_cache {
                    Ok(())
                } else {
                    self.check_epoch(i, fh)
                };
                let s = self.source(i);
                let written = live.and_then(|()| s.write_window(offset, data, from.page_cache));
                // A direct write on an O_SYNC file reaches us with no FSYNC
                // after it (--crash-test serves data with direct I/O).
                let synced = match written {
                    Ok(n) if from.synchronous && s.held().is_some() => {
                        self.sync_window(i, "O_SYNC write").map(|()| n)
                    }
                    other => other,
                };
                done(synced.map(|n| n as u32))
            }
            Ok(Node::File(i, kind)) if kind.is_control() => self.write_control(i, kind, data, done),
            Ok(_) => done(Err(fail!(
                EACCES,
                "only data and the control files are writable"
            ))),
            Err(e) => done(Err(e)),
        }
    }

    fn write_control(
        self: &Arc<Self>,
        i: usize,
        kind: FileKind,
        data: &[u8],
        done: impl FnOnce(Result<u32>) + Send + 'static,
    ) {
        let s = self.source(i);
        let (window, page) = (s.length(), s.page_size());
        let parsed = match kind {
            FileKind::Madvise => madvise::parse(data, window, page).map(Command::Madvise),
            FileKind::Fadvise => fadvise::parse(data, window, page).map(Command::Fadvise),
            FileKind::Mlock => mlock::parse(data, window, page).map(Command::Mlock),
            FileKind::Crash => crash::parse(data, window, page).map(Command::Crash),
            _ => msync::parse(data, window, page).map(Command::Msync),
        };
        let command = match parsed {
            Ok(c) => c,
            Err(e) => {
                s.events().push(Event::Rejected {
                    file: kind.name(),
                    bytes: data.len(),
                    reason: e.message.clone(),
                });
                return done(Err(e));
            }
        };
        let written = data.len() as u32;
        let fs = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(kind.name().into())
            .spawn(move || {
                let Some(kernel) = fs.kernel.get() else {
                    return done(Err(fail!(EAGAIN, "mount not ready")));
                };
                let sv = &fs.served[i];
                let (source, locks) = (&sv.source, &sv.locks);
                let result = match command {
                    Command::Msync(r) if r.command == msync::Command::Sync => {
                        fs.sync_point(i, || {
                            msync::run(source, &sv.msync, locks, r, kernel.as_ref(), sv.data_ino)
                                .result
                        })
                    }
                    Command::Msync(r) => {
                        msync::run(source, &sv.msync, locks, r, kernel.as_ref(), sv.data_ino).result
                    }
                    Command::Madvise(r) => madvise::run(source, &sv.madvise, locks, r).result,
                    Command::Fadvise(r) => fadvise::run(source, &sv.fadvise, locks, r).result,
                    Command::Mlock(r) => mlock::run(source, &sv.mlock, locks, r).result,
                    Command::Crash(r) => fs.run_crash(i, r),
                };
                done(result.map(|()| written));
            });
        if let Err(e) = spawned {
            log::error!("cannot start a {} thread: {e}", kind.name());
        }
    }

    /// `fsync(2)` on `data`: make the whole window durable, off the FUSE
    /// workers. The kernel has written its dirty pages to us before this.
    pub fn fsync(
        self: &Arc<Self>,
        ino: u64,
        fh: u64,
        datasync: bool,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        let i = match self.node(ino) {
            Ok(Node::File(i, FileKind::Data)) => i,
            Ok(Node::Real(_, View::Data)) => {
                let fs = Arc::clone(self);
                let spawned = std::thread::Builder::new()
                    .name("fsync".into())
                    .spawn(move || done(fs.tree_fsync(fh, datasync)));
                if let Err(e) = spawned {
                    log::error!("cannot start fsync thread: {e}");
                }
                return;
            }
            Ok(_) => return done(Ok(())),
            Err(e) => return done(Err(e)),
        };
        if let Err(e) = self.check_epoch(i, fh) {
            return done(Err(e));
        }
        let fs = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("fsync".into())
            .spawn(move || done(fs.sync_window(i, "fsync: msync")));
        if let Err(e) = spawned {
            log::error!("cannot start fsync thread: {e}");
        }
    }

    /// A `crash` command: crash now, or arm a crash at a later sync.
    fn run_crash(&self, i: usize, request: crash::Request) -> Result<()> {
        let cause = request.cause();
        match request {
            crash::Request::Now(keep) => self.crash(i, &keep, cause).map(|_| ()),
            crash::Request::At { n, when } => {
                self.source(i).crash_test()?.arm(n, when);
                Ok(())
            }
        }
    }

    /// Owner and mode never change; only `data` may change size, and only
    /// as its source allows (see `Source::set_length`). O_TRUNC is ignored,
    /// as on a block device: it would empty the file under every mapping.
    pub fn setattr(&self, ino: u64, change: SetAttr, caller: Caller) -> Result<Attr> {
        let node = self.node(ino)?;
        if let Node::Real(d, View::Data) = node {
            return self.tree_setattr(d, ino, change, caller);
        }
        if change.owner_or_mode() {
            return Err(fail!(EPERM, "mmapfs files keep their owner and mode"));
        }
        if self.is_o_trunc(ino, caller.pid, change) {
            log::debug!("O_TRUNC open of data by thread {}: ignored", caller.pid);
            return self.getattr(ino);
        }
        if let Some(size) = change.size {
            match node {
                Node::File(i, FileKind::Data) => self.source(i).set_length(size)?,
                Node::File(_, kind) if kind.is_control() => {}
                _ if size == 0 => {}
                _ => return Err(fail!(EPERM, "generated files cannot be resized")),
            }
        }
        self.getattr(ino)
    }

    /// Before unmounting: have the kernel push stores that outside mappings
    /// left dirty in the FUSE page cache (cached mode) to our mapping.
    /// Returns false if any could not be written to its source.
    pub fn push_fuse_dirty_pages(&self) -> bool {
        let Some(kernel) = self.kernel.get() else {
            return true;
        };
        let mut ok = true;
        for served in &self.served {
            let s = &served.source;
            if s.io_mode() == IoMode::Cached && s.writable() {
                if let Err(e) = msync::push(s, kernel.as_ref(), served.data_ino, 0, s.length()) {
                    log::error!("{}: pushing dirty pages before unmount: {e}", s.name());
                    ok = false;
                }
            }
        }
        ok
    }

    /// The last `msync(MS_SYNC)` at unmount (unless `sync` is false);
    /// returns false if any failed, or if any write-back of an outside
    /// mapping's pages failed to reach its source in the mount's life.
    pub fn final_sync(&self, sync: bool) -> bool {
        let mut ok = true;
        for s in self.sources() {
            let synced = if sync {
                s.msync(0, s.length(), libc::MS_SYNC)
            } else {
                Ok(())
            };
            let (failed, errno) = s.write_failures();
            let result = synced.and_then(|()| match failed {
                0 => Ok(()),
                _ => Err(std::io::Error::other(format!(
                    "{failed} write-backs of the kernel's dirty pages of data never reached the source: {}",
                    crate::error::errno_name(errno)
                ))),
            });
            if let Err(e) = &result {
                log::error!("{}: {e}", s.name());
                ok = false;
            } else if !sync {
                // Nothing synced, nothing lost: no `unmount` line to log.
                continue;
            }
            s.events().push(Event::Unmount {
                synced: result.is_ok(),
                error: result.err().map(|e| e.to_string()),
            });
        }
        // A directory source: every file of the tree with pages not yet
        // on disk is synced (one walk, as root).
        for d in self.dir_sources().filter(|_| sync) {
            let (result, _) = super::tree_views::sync_files(d, &d.walk());
            if let Err(e) = &result {
                log::error!("{}: {e}", d.name());
                ok = false;
            }
            d.events().push(Event::Unmount {
                synced: result.is_ok(),
                error: result.err().map(|e| e.to_string()),
            });
        }
        ok
    }
}
