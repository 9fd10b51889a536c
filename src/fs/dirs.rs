//! Requests on directory sources. Under `data/` each one is carried out in
//! the source directory, relative to descriptors the daemon holds and as
//! the caller (so the source's filesystem decides what they may do, and
//! what they create is theirs). Under `files/` every object is found
//! again from the source directory at each use, so nothing there keeps a
//! file alive.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use nix::sys::stat::FileStat;

use super::{time, Attr, Caller, Handle, MmapFs, SetAttr, SetTime};
use crate::control;
use crate::dir::{DirSource, Object, Type};
use crate::error::{fail, Error, Result};
use crate::events::{Event, EventLog};
use crate::tree::{FileKind, Ino, Node, Real, RealKey, View};

/// What the kernel may keep of `data/` names and attributes: they change
/// behind us only when someone works in the directory itself.
const DATA_TTL: Duration = Duration::from_secs(1);

/// Regular files whose events and last `msync` are kept at once; the
/// least recently used go first.
const FILE_STATES_MAX: usize = 4096;

/// Events kept per file of a directory source.
const FILE_EVENTS_MAX: usize = 1000;

/// A directory source and what the files beside its `data/` keep.
pub(super) struct TreeServed {
    pub dir: DirSource,
    pub msync: control::State,
    pub files: FileStates,
    /// Opens of its files are served by kernel passthrough.
    pub passthrough: AtomicBool,
}

impl TreeServed {
    pub fn new(dir: DirSource, events_kept: usize) -> TreeServed {
        TreeServed {
            dir,
            msync: control::State::default(),
            files: FileStates::new(events_kept.min(FILE_EVENTS_MAX)),
            passthrough: AtomicBool::new(false),
        }
    }

    pub fn io_mode_name(&self) -> &'static str {
        if self.passthrough.load(Ordering::Relaxed) {
            "passthrough"
        } else {
            "cached"
        }
    }
}

/// What the inspection files of one regular file keep between opens.
#[derive(Debug)]
pub(super) struct FileState {
    pub events: EventLog,
    pub msync: control::State,
    pub opens: AtomicU64,
    pub open_handles: AtomicU64,
    touched: AtomicU64,
    /// The file's handle (`name_to_handle_at`; empty where its filesystem
    /// makes none): a later file with the same inode number, once this one
    /// is deleted in DIR, has another, and none of this state.
    handle: Vec<u8>,
}

#[derive(Debug)]
pub(super) struct FileStates {
    map: Mutex<HashMap<(u64, u64), Arc<FileState>>>,
    keep: usize,
    clock: AtomicU64,
}

impl FileStates {
    fn new(keep: usize) -> FileStates {
        FileStates {
            map: Mutex::new(HashMap::new()),
            keep,
            clock: AtomicU64::new(0),
        }
    }

    /// The state of the regular file `object`, made if missing.
    pub fn of(&self, object: &Object) -> Arc<FileState> {
        let (dev, ino) = (object.dev, object.ino);
        let handle = crate::sys::file_handle(object.fd()).unwrap_or_default();
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut map = self.map.lock().expect("no panics: they abort");
        if map.get(&(dev, ino)).is_some_and(|s| s.handle != handle) {
            map.remove(&(dev, ino));
        }
        if !map.contains_key(&(dev, ino)) && map.len() >= FILE_STATES_MAX {
            let oldest = map
                .iter()
                .filter(|(_, s)| s.open_handles.load(Ordering::Relaxed) == 0)
                .min_by_key(|(_, s)| s.touched.load(Ordering::Relaxed))
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        let state = map.entry((dev, ino)).or_insert_with(|| {
            Arc::new(FileState {
                events: EventLog::new(self.keep),
                msync: control::State::default(),
                opens: AtomicU64::new(0),
                open_handles: AtomicU64::new(0),
                touched: AtomicU64::new(now),
                handle,
            })
        });
        state.touched.store(now, Ordering::Relaxed);
        state.clone()
    }

    /// The file is gone: its state goes with it.
    pub fn forget(&self, dev: u64, ino: u64) {
        self.map
            .lock()
            .expect("no panics: they abort")
            .remove(&(dev, ino));
    }
}

pub(super) fn io_err(e: io::Error, what: impl std::fmt::Display) -> Error {
    Error::from_io(e, what)
}

pub(super) fn shown(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A timespec for `utimensat`: a time, now, or left alone.
fn timespec(t: Option<SetTime>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(SetTime::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(SetTime::At(at)) => {
            let (secs, nanos) = match at.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
                Err(e) => (-(e.duration().as_secs() as i64), 0),
            };
            libc::timespec {
                tv_sec: secs,
                tv_nsec: nanos,
            }
        }
    }
}

impl MmapFs {
    pub(super) fn tree(&self, d: usize) -> &TreeServed {
        &self.trees[d]
    }

    /// Files deleted in a source directory behind the mount: the kernel
    /// is asked to drop its names of them, so it forgets their inodes and
    /// the daemon lets go of the files (their space is freed once no
    /// process holds them).
    pub(super) fn drop_deleted(&self) {
        let Some(kernel) = self.kernel.get() else {
            return;
        };
        for (parent, name, object) in self.tree.held() {
            let gone = object.kind == Type::File && object.stat().is_ok_and(|st| st.st_nlink == 0);
            if gone {
                if let Err(e) = kernel.forget_name(parent, &name) {
                    log::debug!("{e}");
                }
            }
        }
    }

    /// The `mount` event of each directory source.
    pub fn announce_dir_sources(&self, mountpoint: &str) {
        for t in &self.trees {
            t.dir.events().push(Event::Mount {
                mountpoint: mountpoint.to_string(),
                io_mode: t.io_mode_name(),
            });
        }
    }

    /// The object a `data/` inode holds.
    pub(super) fn held(&self, ino: u64) -> Result<Arc<Object>> {
        match self.tree.real(ino) {
            Some(Real::Held(k)) => k.object().map_err(|e| io_err(e, format!("inode {ino}"))),
            _ => Err(fail!(ENOENT, "no object for inode {ino}")),
        }
    }

    /// The object a `files/` inode names, found again from the source
    /// directory; gone (`ENOENT`) if another object is there now.
    /// (An inspection file names its file: the object of its directory.)
    pub(super) fn located(&self, d: usize, ino: u64) -> Result<(Object, PathBuf)> {
        let Some(Real::At { dev, ino: i }) = self.tree.real(ino) else {
            return Err(fail!(ENOENT, "no object for inode {ino}"));
        };
        let named = match self.tree.node(ino) {
            Some(Node::Inspect(..)) => self.tree.parent(ino).unwrap_or(ino),
            _ => ino,
        };
        let path = self.tree.path(named);
        let object = self
            .tree(d)
            .dir
            .resolve(&path)
            .map_err(|e| io_err(e, shown(&path)))?;
        if object.dev != dev || object.ino != i {
            return Err(fail!(ENOENT, "{} is another file now", shown(&path)));
        }
        Ok((object, path))
    }

    /// `located`, for `caller` opening `files/` inode `ino` with `flags`:
    /// refused unless they may read (or write) the file it shows, or list
    /// the directory, by DIR's own check. The kernel has checked the mode
    /// bits the inode shows; this adds what they do not tell, such as an
    /// ACL.
    pub(super) fn located_for(
        &self,
        d: usize,
        ino: u64,
        flags: i32,
        caller: Caller,
    ) -> Result<(Object, PathBuf)> {
        use nix::unistd::AccessFlags;
        let (object, path) = self.located(d, ino)?;
        let mode = match flags & libc::O_ACCMODE {
            libc::O_RDONLY => AccessFlags::R_OK,
            libc::O_WRONLY => AccessFlags::W_OK,
            _ => AccessFlags::R_OK | AccessFlags::W_OK,
        };
        {
            let _acting = caller.acting();
            object.may(mode)
        }
        .map_err(|e| io_err(e, shown(&path)))?;
        Ok((object, path))
    }

    pub(super) fn writable_tree(&self, d: usize) -> Result<()> {
        if self.tree(d).dir.writable() {
            Ok(())
        } else {
            Err(fail!(
                EROFS,
                "{} is mounted read-only",
                self.tree(d).dir.name()
            ))
        }
    }

    /// A name looked up under `data/` or `files/` of directory source `d`.
    pub(super) fn tree_lookup(
        &self,
        d: usize,
        view: View,
        parent: u64,
        name: &OsStr,
        caller: Caller,
    ) -> Result<Attr> {
        match view {
            View::Data => {
                let dir = self.held(parent)?;
                // As the caller: DIR's filesystem checks their search
                // permission, ACLs included.
                let child = {
                    let _acting = caller.acting();
                    dir.lookup(name)
                }
                .map_err(|e| io_err(e, name.to_string_lossy()))?;
                let mut attr = self.adopt_data(d, parent, name, child);
                // The kernel checks only mode bits on names it keeps: in a
                // directory with an ACL, it must ask (as the caller) each time.
                if dir.has_acl() {
                    attr.ttl = Duration::ZERO;
                }
                Ok(attr)
            }
            View::Files => {
                let (dir, path) = self.located(d, parent)?;
                let at = Real::At {
                    dev: dir.dev,
                    ino: dir.ino,
                };
                if dir.kind == Type::File {
                    let kind = FileKind::INSPECT
                        .into_iter()
                        .find(|k| OsStr::new(k.name()) == name)
                        .ok_or_else(|| {
                            fail!(ENOENT, "no inspection file {}", name.to_string_lossy())
                        })?;
                    let key = RealKey {
                        source: d,
                        view: View::Files,
                        kind: Some(kind),
                        dev: dir.dev,
                        ino: dir.ino,
                    };
                    let ino = self
                        .tree
                        .adopt(parent, name, Node::Inspect(d, kind), key, at);
                    return Ok(self.attr(ino, Node::Inspect(d, kind)));
                }
                // As the caller, as under `data/`: their search permission
                // in DIR, ACLs included (the kernel keeps no `files/` name).
                let child = {
                    let _acting = caller.acting();
                    dir.lookup(name)
                }
                .map_err(|e| io_err(e, shown(&path.join(name))))?;
                if !matches!(child.kind, Type::File | Type::Dir) {
                    return Err(fail!(
                        ENOENT,
                        "files/ shows regular files and directories only"
                    ));
                }
                let key = RealKey {
                    source: d,
                    view: View::Files,
                    kind: None,
                    dev: child.dev,
                    ino: child.ino,
                };
                let real = Real::At {
                    dev: child.dev,
                    ino: child.ino,
                };
                let ino = self
                    .tree
                    .adopt(parent, name, Node::Real(d, View::Files), key, real);
                Ok(self.attr(ino, Node::Real(d, View::Files)))
            }
        }
    }

    /// Give a `data/` object its inode (the one it has if the kernel knows
    /// it already) and answer with its attributes.
    pub(super) fn adopt_data(&self, d: usize, parent: u64, name: &OsStr, object: Object) -> Attr {
        let key = RealKey::data(d, object.dev, object.ino);
        let st = object.stat();
        let ino = self.tree.adopt(
            parent,
            name,
            Node::Real(d, View::Data),
            key,
            Real::Held(Arc::new(self.tree(d).dir.keep(object))),
        );
        match st {
            Ok(st) => real_attr(ino, &st),
            Err(_) => self.attr(ino, Node::Real(d, View::Data)),
        }
    }

    /// Attributes of a directory source's node.
    pub(super) fn tree_attr(&self, ino: Ino, node: Node, attr: &mut Attr) {
        match node {
            Node::Real(_, View::Data) => {
                if let Some(st) = self.held(ino.ino).ok().and_then(|o| o.stat().ok()) {
                    *attr = real_attr(ino, &st);
                }
            }
            Node::Real(d, View::Files) | Node::Inspect(d, _) => {
                attr.ttl = Duration::ZERO;
                let Ok((object, _)) = self.located(d, ino.ino) else {
                    return;
                };
                let Ok(st) = object.stat() else { return };
                attr.uid = st.st_uid;
                attr.gid = st.st_gid;
                let read = (st.st_mode & 0o444) as u16;
                match node {
                    // Who may read the file (or list the directory) may
                    // enter its directory of inspection files.
                    Node::Real(..) => {
                        attr.kind = Type::Dir;
                        attr.perm = if object.kind == Type::Dir {
                            (st.st_mode & 0o555) as u16
                        } else {
                            read | read >> 2
                        };
                        attr.nlink = 2;
                    }
                    Node::Inspect(_, kind) if kind.is_control() => {
                        attr.perm = (st.st_mode & 0o666) as u16;
                        attr.block_size = control::COMMAND_MAX as u32;
                    }
                    _ => attr.perm = read,
                }
                attr.mtime = time(st.st_mtime, st.st_mtime_nsec);
                attr.ctime = time(st.st_ctime, st.st_ctime_nsec);
            }
            Node::Tree(_) => {
                // Fixed for the mount's life, and on the path of every
                // name in `data/`: a path walk must not ask for it.
                attr.ttl = super::STABLE_TTL;
                attr.kind = Type::Dir;
                attr.perm = 0o555;
                attr.nlink = 2;
            }
            Node::TreeFile(d, kind) => {
                if let Ok(st) = self.tree(d).dir.root().stat() {
                    attr.uid = st.st_uid;
                    attr.gid = st.st_gid;
                    attr.perm = (st.st_mode & if kind.is_control() { 0o666 } else { 0o444 }) as u16;
                }
                if kind == FileKind::Events {
                    attr.size = self.tree(d).dir.events().end();
                }
            }
            _ => {}
        }
    }

    /// Record `kind` for `path` in the directory source's events.
    pub(super) fn tree_event(
        &self,
        d: usize,
        kind: &'static str,
        path: &Path,
        to: Option<&Path>,
        caller: Caller,
    ) {
        self.tree(d).dir.events().push(Event::Path {
            kind,
            path: shown(path),
            to: to.map(shown),
            pid: caller.pid,
            uid: caller.uid,
        });
    }

    /// `data/`-relative path of `name` in directory inode `parent`.
    pub(super) fn child_path(&self, parent: u64, name: &OsStr) -> PathBuf {
        self.tree.path(parent).join(name)
    }

    /// mknod, mkdir, symlink: made as the caller, then looked up.
    pub fn make(&self, parent: u64, name: &OsStr, what: Make<'_>, caller: Caller) -> Result<Attr> {
        let Node::Real(d, View::Data) = self.node(parent)? else {
            return Err(fail!(EPERM, "the mount's own directories are fixed"));
        };
        self.writable_tree(d)?;
        let dir = self.held(parent)?;
        let made = {
            let _acting = caller.acting();
            match what {
                Make::Node { mode, rdev } => dir.mknod(name, mode, rdev),
                Make::Dir { mode } => dir.mkdir(name, mode),
                Make::Symlink { target } => dir.symlink(name, target),
            }
        }
        .map_err(|e| io_err(e, name.to_string_lossy()))?;
        let kind = match what {
            Make::Node { .. } => "mknod",
            Make::Dir { .. } => "mkdir",
            Make::Symlink { .. } => "symlink",
        };
        self.tree_event(d, kind, &self.child_path(parent, name), None, caller);
        Ok(self.adopt_data(d, parent, name, made))
    }

    pub fn link(&self, ino: u64, parent: u64, name: &OsStr, caller: Caller) -> Result<Attr> {
        let (Node::Real(d, View::Data), Node::Real(d2, View::Data)) =
            (self.node(ino)?, self.node(parent)?)
        else {
            return Err(fail!(
                EPERM,
                "links are made only inside a directory source's data/"
            ));
        };
        if d != d2 {
            return Err(fail!(EXDEV, "a link cannot cross directory sources"));
        }
        self.writable_tree(d)?;
        let (object, dir) = (self.held(ino)?, self.held(parent)?);
        let linked = {
            let _acting = caller.acting();
            object.link_into(&dir, name)
        }
        .map_err(|e| io_err(e, name.to_string_lossy()))?;
        let to = self.child_path(parent, name);
        self.tree_event(d, "link", &self.tree.path(ino), Some(&to), caller);
        Ok(self.adopt_data(d, parent, name, linked))
    }

    pub fn remove(&self, parent: u64, name: &OsStr, dir_too: bool, caller: Caller) -> Result<()> {
        let Node::Real(d, View::Data) = self.node(parent)? else {
            return Err(fail!(EPERM, "the mount's own directories are fixed"));
        };
        self.writable_tree(d)?;
        let dir = self.held(parent)?;
        // What the name is now, to drop what we keep about it once gone.
        let before = dir.lookup(name).ok();
        {
            let _acting = caller.acting();
            dir.unlink(name, dir_too)
        }
        .map_err(|e| io_err(e, name.to_string_lossy()))?;
        self.tree_event(
            d,
            if dir_too { "rmdir" } else { "unlink" },
            &self.child_path(parent, name),
            None,
            caller,
        );
        if let Some(gone) = before {
            if gone.stat().is_ok_and(|st| st.st_nlink == 0) {
                self.tree(d).files.forget(gone.dev, gone.ino);
            }
        }
        Ok(())
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
        caller: Caller,
    ) -> Result<()> {
        let (Node::Real(d, View::Data), Node::Real(d2, View::Data)) =
            (self.node(parent)?, self.node(new_parent)?)
        else {
            return Err(fail!(EPERM, "the mount's own directories are fixed"));
        };
        if d != d2 {
            return Err(fail!(EXDEV, "a rename cannot cross directory sources"));
        }
        self.writable_tree(d)?;
        let (from, to) = (self.held(parent)?, self.held(new_parent)?);
        let moving = from.lookup(name).ok();
        let replaced = to.lookup(new_name).ok();
        {
            let _acting = caller.acting();
            from.rename(name, &to, new_name, flags)
        }
        .map_err(|e| io_err(e, name.to_string_lossy()))?;
        let (old_path, new_path) = (
            self.child_path(parent, name),
            self.child_path(new_parent, new_name),
        );
        self.tree_event(d, "rename", &old_path, Some(&new_path), caller);
        let key = |o: &Object| RealKey::data(d, o.dev, o.ino);
        if let Some(ino) = moving.as_ref().and_then(|o| self.tree.real_ino(&key(o))) {
            self.tree.moved(ino, new_parent, new_name);
        }
        if flags & libc::RENAME_EXCHANGE != 0 {
            if let Some(ino) = replaced.as_ref().and_then(|o| self.tree.real_ino(&key(o))) {
                self.tree.moved(ino, parent, name);
            }
        } else if let Some(gone) = replaced {
            if gone.stat().is_ok_and(|st| st.st_nlink == 0) {
                self.tree(d).files.forget(gone.dev, gone.ino);
            }
        }
        Ok(())
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let object = self.held(ino)?;
        object
            .readlink()
            .map(|t| t.as_bytes().to_vec())
            .map_err(|e| io_err(e, "readlink"))
    }

    /// `setattr` of a `data/` object, as the caller.
    pub(super) fn tree_setattr(
        &self,
        d: usize,
        ino: u64,
        change: SetAttr,
        caller: Caller,
    ) -> Result<Attr> {
        self.writable_tree(d)?;
        let object = self.held(ino)?;
        let open = change.fh.and_then(|fh| match self.handles().get(&fh) {
            Some(Handle::Real { file, .. }) => Some(file.clone()),
            _ => None,
        });
        // A symbolic link's times are set by name in its directory.
        let place = (change.atime.is_some() || change.mtime.is_some())
            .then(|| self.tree.place(ino))
            .flatten()
            .and_then(|(parent, name)| Some((self.held(parent).ok()?, name)));
        {
            // Objects are opened by handle as root (above): as the caller,
            // the daemon may not.
            let _acting = caller.acting();
            let err = |what: &'static str| move |e| io_err(e, what);
            if let Some(mode) = change.mode {
                object.chmod(mode).map_err(err("chmod"))?;
            }
            if change.uid.is_some() || change.gid.is_some() {
                object.chown(change.uid, change.gid).map_err(err("chown"))?;
            }
            if let Some(size) = change.size {
                object
                    .truncate(size, open.as_deref())
                    .map_err(err("truncate"))?;
            }
            if change.atime.is_some() || change.mtime.is_some() {
                object
                    .utimens(
                        timespec(change.atime),
                        timespec(change.mtime),
                        place
                            .as_ref()
                            .map(|(dir, name)| (dir.as_ref(), name.as_os_str())),
                    )
                    .map_err(err("utimens"))?;
            }
        }
        let st = object.stat().map_err(|e| io_err(e, "stat"))?;
        let mut attr = real_attr(Ino { ino, generation: 0 }, &st);
        if change.is_empty() {
            // A SETATTR with nothing to set is the kernel about to write
            // to a set-id file: the write will clear bits in DIR (see
            // HANDLE_KILLPRIV_V2 in `fuse.rs`), so these attributes are
            // stale as soon as it lands.
            attr.ttl = Duration::ZERO;
        }
        Ok(attr)
    }
}

/// What `mknod`, `mkdir` and `symlink` make.
#[derive(Debug, Clone, Copy)]
pub enum Make<'a> {
    Node { mode: u32, rdev: u64 },
    Dir { mode: u32 },
    Symlink { target: &'a OsStr },
}

/// Attributes of a `data/` object, from its `fstat`.
fn real_attr(ino: Ino, st: &FileStat) -> Attr {
    Attr {
        ino: ino.ino,
        generation: ino.generation,
        ttl: DATA_TTL,
        kind: Type::of_mode(st.st_mode),
        size: st.st_size as u64,
        perm: (st.st_mode & 0o7777) as u16,
        uid: st.st_uid,
        gid: st.st_gid,
        nlink: st.st_nlink as u32,
        rdev: st.st_rdev as u32,
        block_size: st.st_blksize as u32,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
    }
}
