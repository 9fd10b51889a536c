//! The inode table: which node each inode number names, the names in each
//! directory, and how many lookups the kernel holds on each inode. Nodes
//! may be added, renamed and removed at run time; an inode number is only
//! reused, with a new generation, once the node is gone and the kernel has
//! forgotten it.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::dir::{Kept, Object};

/// The root directory's inode number, fixed by FUSE.
pub const ROOT_INO: u64 = 1;

/// The files of a source directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    Data,
    Msync,
    Madvise,
    Fadvise,
    Mlock,
    DirtyPages,
    ResidentPages,
    Stats,
    Events,
    Mappers,
    Map,
    UnsyncedPages,
    Crash,
    Trace,
    Writeback,
    History,
    Timeline,
    /// A directory source's files by page cache held.
    Top,
}

impl FileKind {
    pub const ALL: [FileKind; 15] = [
        FileKind::Data,
        FileKind::Msync,
        FileKind::Madvise,
        FileKind::Fadvise,
        FileKind::Mlock,
        FileKind::DirtyPages,
        FileKind::ResidentPages,
        FileKind::Stats,
        FileKind::Events,
        FileKind::Mappers,
        FileKind::Map,
        FileKind::Trace,
        FileKind::Writeback,
        FileKind::History,
        FileKind::Timeline,
    ];

    /// Beside a directory source's `data/` and `files/`.
    pub const TREE: [FileKind; 4] = [
        FileKind::Stats,
        FileKind::Top,
        FileKind::Msync,
        FileKind::Events,
    ];

    /// In `files/<path>/` for each regular file of a directory source.
    pub const INSPECT: [FileKind; 7] = [
        FileKind::Msync,
        FileKind::DirtyPages,
        FileKind::ResidentPages,
        FileKind::Stats,
        FileKind::Events,
        FileKind::Mappers,
        FileKind::Map,
    ];

    /// Only under `--crash-test`.
    pub const CRASH_TEST: [FileKind; 2] = [FileKind::UnsyncedPages, FileKind::Crash];

    /// Control files: written with one command, read for the last result.
    pub fn is_control(self) -> bool {
        matches!(
            self,
            FileKind::Msync
                | FileKind::Madvise
                | FileKind::Fadvise
                | FileKind::Mlock
                | FileKind::Crash
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            FileKind::Data => "data",
            FileKind::Msync => "msync",
            FileKind::Madvise => "madvise",
            FileKind::Fadvise => "fadvise",
            FileKind::Mlock => "mlock",
            FileKind::DirtyPages => "dirty_pages",
            FileKind::ResidentPages => "resident_pages",
            FileKind::Stats => "stats",
            FileKind::Events => "events",
            FileKind::Mappers => "mappers",
            FileKind::Map => "map",
            FileKind::UnsyncedPages => "unsynced_pages",
            FileKind::Crash => "crash",
            FileKind::Trace => "trace",
            FileKind::Writeback => "writeback",
            FileKind::History => "history",
            FileKind::Timeline => "timeline.svg",
            FileKind::Top => "top",
        }
    }
}

/// What an inode names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Root,
    RootStats,
    RootMetrics,
    /// The directory of source `i`.
    Dir(usize),
    File(usize, FileKind),
    /// The directory of directory source `d`.
    Tree(usize),
    /// `stats`, `top`, `msync`, `events` of directory source `d`.
    TreeFile(usize, FileKind),
    /// An object of directory source `d`, seen from `data/` (the object
    /// itself) or from `files/` (a directory: of inspection files for a
    /// regular file, of the entries for a directory).
    Real(usize, View),
    /// An inspection file in `files/<path>/` of directory source `d`.
    Inspect(usize, FileKind),
}

/// Which side of a directory source an object is seen from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    Data,
    Files,
}

impl Node {
    /// Whether the node is a directory whatever it names (`data/` objects
    /// are what the source's objects are: ask them).
    pub fn is_dir(self) -> bool {
        matches!(
            self,
            Node::Root | Node::Dir(_) | Node::Tree(_) | Node::Real(_, View::Files)
        )
    }
}

/// The real object behind a `Node::Real`.
#[derive(Debug, Clone)]
pub enum Real {
    /// Under `data/`: the object, kept while the kernel knows the inode.
    Held(Arc<Kept>),
    /// Under `files/`: nothing held; what it was, found again at each use
    /// (by the names from `files/` down to it, `Tree::path`) so a deleted
    /// file is never kept alive.
    At { dev: u64, ino: u64 },
}

/// One real object seen from one side of one directory source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RealKey {
    pub source: usize,
    pub view: View,
    /// For an inspection file, which one.
    pub kind: Option<FileKind>,
    pub dev: u64,
    pub ino: u64,
}

impl RealKey {
    /// An object seen from `data/` of directory source `source`.
    pub fn data(source: usize, dev: u64, ino: u64) -> RealKey {
        RealKey {
            source,
            view: View::Data,
            kind: None,
            dev,
            ino,
        }
    }
}

/// An inode number and the generation it has now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ino {
    pub ino: u64,
    pub generation: u64,
}

#[derive(Debug)]
struct Entry {
    node: Node,
    parent: u64,
    /// Children by name, for directories.
    children: BTreeMap<String, u64>,
    /// Lookups the kernel holds; the entry may go once this is 0 and the
    /// node has been removed.
    lookups: u64,
    removed: bool,
    /// A directory source's object, and its name in `parent` when it is
    /// not in the parent's `children` (objects the kernel names for us).
    real: Option<Real>,
    name: OsString,
    key: Option<RealKey>,
}

#[derive(Debug, Default)]
struct Table {
    /// Slot `ino - 1`; `None` once freed.
    slots: Vec<Option<Entry>>,
    generations: Vec<u64>,
    free: Vec<u64>,
    /// Inodes of directory sources' objects, so one object keeps one inode.
    reals: HashMap<RealKey, u64>,
}

#[derive(Debug)]
pub struct Tree {
    table: Mutex<Table>,
}

impl Tree {
    /// A tree with just the root directory.
    pub fn new() -> Tree {
        let mut table = Table::default();
        table.slots.push(Some(Entry {
            node: Node::Root,
            parent: ROOT_INO,
            children: BTreeMap::new(),
            lookups: 1,
            removed: false,
            real: None,
            name: OsString::new(),
            key: None,
        }));
        table.generations.push(0);
        Tree {
            table: Mutex::new(table),
        }
    }

    /// The tree of a mount of `names` sources: root files, then a
    /// directory of files per source.
    /// `sources`: each one's name, and whether it is under `--crash-test`;
    /// `trees`: each directory source's name and directory.
    pub fn for_sources<'a>(
        sources: impl IntoIterator<Item = (&'a str, bool)>,
        trees: impl IntoIterator<Item = (&'a str, Arc<Object>)>,
    ) -> Tree {
        let tree = Tree::new();
        for (d, (name, root)) in trees.into_iter().enumerate() {
            let dir = tree.add(ROOT_INO, name, Node::Tree(d));
            tree.add_real(
                dir.ino,
                "data",
                Node::Real(d, View::Data),
                Real::Held(Arc::new(Kept::Open(root.clone()))),
            );
            tree.add_real(
                dir.ino,
                "files",
                Node::Real(d, View::Files),
                Real::At {
                    dev: root.dev,
                    ino: root.ino,
                },
            );
            for kind in FileKind::TREE {
                tree.add(dir.ino, kind.name(), Node::TreeFile(d, kind));
            }
        }
        tree.add(ROOT_INO, "stats", Node::RootStats);
        tree.add(ROOT_INO, "metrics", Node::RootMetrics);
        for (i, (name, crash_test)) in sources.into_iter().enumerate() {
            let dir = tree.add(ROOT_INO, name, Node::Dir(i));
            let extra: &[FileKind] = if crash_test {
                &FileKind::CRASH_TEST
            } else {
                &[]
            };
            for kind in FileKind::ALL.iter().chain(extra) {
                tree.add(dir.ino, kind.name(), Node::File(i, *kind));
            }
        }
        tree
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().expect("no panics: they abort")
    }

    /// Add `node` as `name` in directory `parent`; returns its inode.
    /// An existing entry of that name is replaced.
    pub fn add(&self, parent: u64, name: &str, node: Node) -> Ino {
        self.add_entry(parent, name, node, None)
    }

    /// `add`, for a fixed node that names a directory source's object.
    pub fn add_real(&self, parent: u64, name: &str, node: Node, real: Real) -> Ino {
        self.add_entry(parent, name, node, Some(real))
    }

    fn add_entry(&self, parent: u64, name: &str, node: Node, real: Option<Real>) -> Ino {
        let mut t = self.lock();
        let ino = t.alloc(Entry {
            node,
            parent,
            children: BTreeMap::new(),
            lookups: 0,
            removed: false,
            real,
            name: OsString::new(),
            key: None,
        });
        if let Some(old) = t
            .entry_mut(parent)
            .and_then(|p| p.children.insert(name.to_string(), ino))
        {
            t.unlink(old);
        }
        Ino {
            ino,
            generation: t.generations[(ino - 1) as usize],
        }
    }

    /// The inode of a directory source's object as `name` in `parent`,
    /// counting one kernel lookup: the same object keeps its inode while
    /// the kernel knows it (hard links, `files/` and `data/` each apart).
    /// The node's place is updated to `parent` and `name`.
    pub fn adopt(&self, parent: u64, name: &OsStr, node: Node, key: RealKey, real: Real) -> Ino {
        let mut t = self.lock();
        if let Some(&ino) = t.reals.get(&key) {
            let generation = t.generations[(ino - 1) as usize];
            // The number may now be another object's, the one kept deleted
            // behind the mount: that inode stays the old object's (which
            // answers ENOENT) and this one gets its own.
            let same = match (t.entry(ino).and_then(|e| e.real.as_ref()), &real) {
                (Some(Real::Held(old)), Real::Held(new)) => old.same_object(new),
                _ => true,
            };
            if !same {
                t.reals.remove(&key);
            } else if let Some(e) = t.entry_mut(ino) {
                e.lookups += 1;
                e.parent = parent;
                e.name = name.to_os_string();
                return Ino { ino, generation };
            }
        }
        let ino = t.alloc(Entry {
            node,
            parent,
            children: BTreeMap::new(),
            lookups: 1,
            removed: true,
            real: Some(real),
            name: name.to_os_string(),
            key: Some(key),
        });
        t.reals.insert(key, ino);
        Ino {
            ino,
            generation: t.generations[(ino - 1) as usize],
        }
    }

    /// Every object kept as a descriptor for `data/` views, with the name
    /// the kernel last used for it: `(parent, name, object)`.
    pub fn held(&self) -> Vec<(u64, OsString, Arc<Object>)> {
        let t = self.lock();
        t.slots
            .iter()
            .flatten()
            .filter_map(|e| match (&e.real, e.key) {
                (Some(Real::Held(k)), Some(_)) => {
                    Some((e.parent, e.name.clone(), k.open()?.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// The real object behind `ino`, if it names one.
    pub fn real(&self, ino: u64) -> Option<Real> {
        self.lock().entry(ino)?.real.clone()
    }

    /// The inode the kernel knows for `key`, if any.
    pub fn real_ino(&self, key: &RealKey) -> Option<u64> {
        self.lock().reals.get(key).copied()
    }

    /// Where the kernel last named an adopted object: its parent and name.
    pub fn place(&self, ino: u64) -> Option<(u64, OsString)> {
        let t = self.lock();
        let e = t.entry(ino)?;
        e.key.map(|_| (e.parent, e.name.clone()))
    }

    /// An adopted object was renamed to `name` in `parent`.
    pub fn moved(&self, ino: u64, parent: u64, name: &OsStr) {
        if let Some(e) = self.lock().entry_mut(ino) {
            if e.key.is_some() {
                e.parent = parent;
                e.name = name.to_os_string();
            }
        }
    }

    /// The path of an adopted object below the fixed node it hangs from
    /// (`data/` or `files/`), by the names the kernel last used.
    pub fn path(&self, ino: u64) -> PathBuf {
        let t = self.lock();
        let mut names = Vec::new();
        let mut at = ino;
        while let Some(e) = t.entry(at) {
            if e.key.is_none() || names.len() > 4096 {
                break;
            }
            names.push(e.name.clone());
            at = e.parent;
        }
        names.iter().rev().collect()
    }

    /// Remove `name` from directory `parent`. The inode stays valid for
    /// the kernel until it forgets it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn remove(&self, parent: u64, name: &str) -> bool {
        let mut t = self.lock();
        match t.entry_mut(parent).and_then(|p| p.children.remove(name)) {
            Some(ino) => {
                t.unlink(ino);
                true
            }
            None => false,
        }
    }

    /// Move `name` of `parent` to `new_name` in `new_parent`, replacing
    /// whatever was there.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn rename(&self, parent: u64, name: &str, new_parent: u64, new_name: &str) -> bool {
        let mut t = self.lock();
        let Some(ino) = t.entry_mut(parent).and_then(|p| p.children.remove(name)) else {
            return false;
        };
        if let Some(old) = t
            .entry_mut(new_parent)
            .and_then(|p| p.children.insert(new_name.to_string(), ino))
        {
            t.unlink(old);
        }
        if let Some(e) = t.entry_mut(ino) {
            e.parent = new_parent;
        }
        true
    }

    /// The node an inode names now.
    pub fn node(&self, ino: u64) -> Option<Node> {
        self.lock().entry(ino).map(|e| e.node)
    }

    /// `name` in directory `parent`, for the daemon's own use: no kernel
    /// lookup is counted.
    pub fn child(&self, parent: u64, name: &str) -> Option<u64> {
        self.lock().entry(parent)?.children.get(name).copied()
    }

    /// `name` in directory `parent`, counting one kernel lookup on it.
    pub fn lookup(&self, parent: u64, name: &str) -> Option<(Ino, Node)> {
        let mut t = self.lock();
        let ino = *t.entry(parent)?.children.get(name)?;
        let generation = t.generations[(ino - 1) as usize];
        let entry = t.entry_mut(ino)?;
        entry.lookups += 1;
        Some((Ino { ino, generation }, entry.node))
    }

    /// The kernel dropped `n` lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut t = self.lock();
        let gone = match t.entry_mut(ino) {
            Some(e) => {
                e.lookups = e.lookups.saturating_sub(n);
                e.lookups == 0 && e.removed
            }
            None => false,
        };
        if gone {
            t.free_slot(ino);
        }
    }

    pub fn parent(&self, ino: u64) -> Option<u64> {
        self.lock().entry(ino).map(|e| e.parent)
    }

    /// The entries of a directory: inode, node and name, in name order.
    pub fn children(&self, ino: u64) -> Option<Vec<(u64, Node, String)>> {
        let t = self.lock();
        let dir = t.entry(ino)?;
        Some(
            dir.children
                .iter()
                .filter_map(|(name, &child)| Some((child, t.entry(child)?.node, name.clone())))
                .collect(),
        )
    }

    /// How many nodes the tree holds now.
    pub fn len(&self) -> u64 {
        let t = self.lock();
        t.slots
            .iter()
            .filter(|s| s.as_ref().is_some_and(|e| !e.removed))
            .count() as u64
    }
}

impl Table {
    fn alloc(&mut self, entry: Entry) -> u64 {
        match self.free.pop() {
            Some(ino) => {
                let slot = (ino - 1) as usize;
                self.generations[slot] += 1;
                self.slots[slot] = Some(entry);
                ino
            }
            None => {
                self.slots.push(Some(entry));
                self.generations.push(0);
                self.slots.len() as u64
            }
        }
    }

    fn entry(&self, ino: u64) -> Option<&Entry> {
        self.slots.get(ino.checked_sub(1)? as usize)?.as_ref()
    }

    fn entry_mut(&mut self, ino: u64) -> Option<&mut Entry> {
        self.slots.get_mut(ino.checked_sub(1)? as usize)?.as_mut()
    }

    /// A name of `ino` went away: it and its subtree are removed, and
    /// freed once the kernel holds no lookup.
    fn unlink(&mut self, ino: u64) {
        let Some(e) = self.entry_mut(ino) else {
            return;
        };
        e.removed = true;
        let children: Vec<u64> = std::mem::take(&mut e.children).into_values().collect();
        let free_now = e.lookups == 0;
        for child in children {
            self.unlink(child);
        }
        if free_now {
            self.free_slot(ino);
        }
    }

    fn free_slot(&mut self, ino: u64) {
        if ino == ROOT_INO {
            return;
        }
        if let Some(slot) = self.slots.get_mut((ino - 1) as usize) {
            if let Some(key) = slot.take().and_then(|e| e.key) {
                // A later object with the same number may have taken the key.
                if self.reals.get(&key) == Some(&ino) {
                    self.reals.remove(&key);
                }
            }
            self.free.push(ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_tree_looks_up_and_lists() {
        let tree = Tree::for_sources([("a.bin", false), ("b.bin", false)], []);
        let (dir, node) = tree.lookup(ROOT_INO, "b.bin").unwrap();
        assert_eq!(node, Node::Dir(1));
        let (data, node) = tree.lookup(dir.ino, "data").unwrap();
        assert_eq!(node, Node::File(1, FileKind::Data));
        assert_eq!(tree.child(dir.ino, "data"), Some(data.ino));
        assert_eq!(tree.parent(data.ino), Some(dir.ino));
        let names: Vec<String> = tree
            .children(ROOT_INO)
            .unwrap()
            .into_iter()
            .map(|(_, _, n)| n)
            .collect();
        assert_eq!(names, ["a.bin", "b.bin", "metrics", "stats"]);
        assert!(tree.lookup(ROOT_INO, "nope").is_none());
        assert_eq!(tree.node(0), None);
        assert_eq!(tree.node(10_000), None);
    }

    #[test]
    fn removed_nodes_live_until_forgotten_then_reuse_with_a_new_generation() {
        let tree = Tree::new();
        let first = tree.add(ROOT_INO, "x", Node::Dir(0));
        tree.lookup(ROOT_INO, "x").unwrap();
        assert!(tree.remove(ROOT_INO, "x"));
        assert!(tree.lookup(ROOT_INO, "x").is_none());
        assert_eq!(
            tree.node(first.ino),
            Some(Node::Dir(0)),
            "still held by the kernel"
        );
        tree.forget(first.ino, 1);
        assert_eq!(tree.node(first.ino), None);
        let second = tree.add(ROOT_INO, "y", Node::Dir(1));
        assert_eq!(second.ino, first.ino);
        assert_eq!(second.generation, first.generation + 1);
    }

    #[test]
    fn rename_moves_and_replaces() {
        let tree = Tree::new();
        let a = tree.add(ROOT_INO, "a", Node::Dir(0));
        let b = tree.add(ROOT_INO, "b", Node::Dir(1));
        assert!(tree.rename(ROOT_INO, "a", ROOT_INO, "b"));
        let (now, _) = tree.lookup(ROOT_INO, "b").unwrap();
        assert_eq!(now.ino, a.ino);
        assert_eq!(tree.node(b.ino), None, "the replaced node had no lookups");
    }
}
