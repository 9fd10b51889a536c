//! The inode table: which node each inode number names, the names in each
//! directory, and how many lookups the kernel holds on each inode. Nodes
//! may be added, renamed and removed at run time; an inode number is only
//! reused, with a new generation, once the node is gone and the kernel has
//! forgotten it.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// The root directory's inode number, fixed by FUSE.
pub const ROOT_INO: u64 = 1;

/// The files of a source directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl Node {
    pub fn is_dir(self) -> bool {
        matches!(self, Node::Root | Node::Dir(_))
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
}

#[derive(Debug, Default)]
struct Table {
    /// Slot `ino - 1`; `None` once freed.
    slots: Vec<Option<Entry>>,
    generations: Vec<u64>,
    free: Vec<u64>,
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
        }));
        table.generations.push(0);
        Tree {
            table: Mutex::new(table),
        }
    }

    /// The tree of a mount of `names` sources: root files, then a
    /// directory of files per source.
    /// `sources`: each one's name, and whether it is under `--crash-test`.
    pub fn for_sources<'a>(sources: impl IntoIterator<Item = (&'a str, bool)>) -> Tree {
        let tree = Tree::new();
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
        let mut t = self.lock();
        let entry = Entry {
            node,
            parent,
            children: BTreeMap::new(),
            lookups: 0,
            removed: false,
        };
        let ino = match t.free.pop() {
            Some(ino) => {
                let slot = (ino - 1) as usize;
                t.generations[slot] += 1;
                t.slots[slot] = Some(entry);
                ino
            }
            None => {
                t.slots.push(Some(entry));
                t.generations.push(0);
                t.slots.len() as u64
            }
        };
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

    /// Remove `name` from directory `parent`. The inode stays valid for
    /// the kernel until it forgets it. (Directory sources, whose files come
    /// and go, are the callers; the fixed tree of file sources never is.)
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
            *slot = None;
            self.free.push(ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_tree_looks_up_and_lists() {
        let tree = Tree::for_sources([("a.bin", false), ("b.bin", false)]);
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
