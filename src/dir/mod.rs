//! Directory sources (`mmapfs DIR MOUNTPOINT`): the directory, held as a
//! descriptor, in which every operation through `data/` is carried out;
//! the walk over its regular files that `top`, `stats` and `msync` of the
//! whole tree share; and its event log.

mod acting;
mod kept;
mod object;

use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::events::EventLog;
use crate::sys::{self, CacheStat};

pub use acting::{supplementary_groups, Acting};
pub use kept::{HandleMount, Kept};
pub use object::{Object, Type};

/// Entries a walk of the tree visits at most: `top` and `stats` of a huge
/// tree stay bounded in time and memory.
pub const WALK_MAX: usize = 1 << 20;

#[derive(Debug)]
pub struct DirSource {
    name: String,
    path: PathBuf,
    root: Arc<Object>,
    /// How objects beneath the root are kept; `None` (descriptors) where
    /// the root cannot be opened for reading.
    handles: Option<Arc<HandleMount>>,
    events: EventLog,
    writable: bool,
}

/// One regular file met by a walk, with its page-cache counts.
#[derive(Debug, Clone)]
pub struct FileCache {
    /// Relative to the source directory.
    pub path: PathBuf,
    pub size: u64,
    pub stat: CacheStat,
}

/// What a walk of the tree found.
#[derive(Debug, Default)]
pub struct Walk {
    pub files: Vec<FileCache>,
    pub dirs: u64,
    /// The walk stopped at `WALK_MAX` entries.
    pub cut: bool,
}

impl DirSource {
    pub fn new(
        name: String,
        path: PathBuf,
        root: Object,
        events_kept: usize,
        writable: bool,
    ) -> DirSource {
        DirSource {
            name,
            path,
            handles: HandleMount::new(&root).ok().map(Arc::new),
            root: Arc::new(root),
            events: EventLog::new(events_kept),
            writable,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn rename(&mut self, name: String) {
        self.name = name;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn root(&self) -> &Arc<Object> {
        &self.root
    }

    /// How to keep `object`, found beneath the root, while the kernel
    /// knows it.
    pub fn keep(&self, object: Object) -> Kept {
        Kept::new(object, self.handles.as_ref())
    }

    pub fn events(&self) -> &EventLog {
        &self.events
    }

    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The object at `rel` beneath the root, one name at a time, never
    /// following a link: a link anywhere on the way is `ELOOP`.
    pub fn resolve(&self, rel: &Path) -> io::Result<Object> {
        let mut at: Option<Object> = None;
        for comp in rel.components() {
            let Component::Normal(name) = comp else {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            };
            let dir = at.as_ref().unwrap_or(&self.root);
            if dir.kind != Type::Dir {
                return Err(io::Error::from_raw_os_error(if dir.kind == Type::Symlink {
                    libc::ELOOP
                } else {
                    libc::ENOTDIR
                }));
            }
            at = Some(dir.lookup(name)?);
        }
        match at {
            Some(o) => Ok(o),
            None => Object::from_fd(sys::open_at(Some(self.root.fd()), c".", libc::O_PATH, 0)?),
        }
    }

    /// Every regular file of the tree with its page-cache counts, up to
    /// `WALK_MAX` entries. Subtrees that vanish on the way are skipped.
    pub fn walk(&self) -> Walk {
        let mut walk = Walk::default();
        let mut visited = 0usize;
        let mut pending: Vec<(Arc<Object>, PathBuf)> = vec![(self.root.clone(), PathBuf::new())];
        while let Some((dir, rel)) = pending.pop() {
            walk.dirs += 1;
            let Ok(names) = list(&dir) else { continue };
            for sys::RawDirEntry { name, d_type, .. } in names {
                visited += 1;
                if visited > WALK_MAX {
                    walk.cut = true;
                    return walk;
                }
                if !matches!(d_type, libc::DT_DIR | libc::DT_REG | libc::DT_UNKNOWN) {
                    continue;
                }
                let Ok(object) = dir.lookup(&name) else {
                    continue;
                };
                let path = rel.join(&name);
                match object.kind {
                    Type::Dir => pending.push((Arc::new(object), path)),
                    Type::File => {
                        if let Some(file) = cache_of(&object, path) {
                            walk.files.push(file);
                        }
                    }
                    _ => {}
                }
            }
        }
        walk
    }
}

/// Entries of directory `dir`, `.` and `..` left out.
pub fn list(dir: &Object) -> io::Result<Vec<sys::RawDirEntry>> {
    let open = dir.open(libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut out = Vec::new();
    let mut cookie = 0;
    loop {
        let batch = sys::read_dir_at(std::os::fd::AsFd::as_fd(&open), cookie, 32 << 10)?;
        let Some(last) = batch.last() else { break };
        cookie = last.next;
        out.extend(
            batch
                .into_iter()
                .filter(|e| e.name != "." && e.name != ".."),
        );
        if out.len() > WALK_MAX {
            break;
        }
    }
    Ok(out)
}

/// A regular file's size and page-cache counts, read through a descriptor
/// opened for the moment (`O_NONBLOCK`: a lease holder cannot stall us).
pub fn cache_of(object: &Object, path: PathBuf) -> Option<FileCache> {
    let file = open_to_probe(object).ok()?;
    let size = file.metadata().ok()?.len();
    let stat = sys::cachestat(std::os::fd::AsFd::as_fd(&file), 0, size).unwrap_or_default();
    Some(FileCache { path, size, stat })
}

/// A readable descriptor of a regular file, for probes and syncs only.
pub fn open_to_probe(object: &Object) -> io::Result<File> {
    if object.kind != Type::File {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    object.open(libc::O_RDONLY | libc::O_NONBLOCK)
}

#[cfg(test)]
mod tests;
