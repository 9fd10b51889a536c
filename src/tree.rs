//! The shape of the mount: inode numbers, names and attributes of the
//! virtual tree. Nothing here changes after start-up.

use crate::source::Source;

pub const ROOT: u64 = 1;
const ROOT_STATS: u64 = 2;
const ROOT_METRICS: u64 = 3;
/// Source `i` owns inodes `FIRST_SOURCE + i * STRIDE ..` (its directory first).
const FIRST_SOURCE: u64 = 16;
const STRIDE: u64 = 16;

/// The files in each source directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Data,
    Msync,
    DirtyPages,
    ResidentPages,
    Stats,
    Events,
    Mappers,
    Map,
}

impl FileKind {
    pub const ALL: [FileKind; 8] = [
        FileKind::Data,
        FileKind::Msync,
        FileKind::DirtyPages,
        FileKind::ResidentPages,
        FileKind::Stats,
        FileKind::Events,
        FileKind::Mappers,
        FileKind::Map,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FileKind::Data => "data",
            FileKind::Msync => "msync",
            FileKind::DirtyPages => "dirty_pages",
            FileKind::ResidentPages => "resident_pages",
            FileKind::Stats => "stats",
            FileKind::Events => "events",
            FileKind::Mappers => "mappers",
            FileKind::Map => "map",
        }
    }

    fn index(self) -> u64 {
        FileKind::ALL.iter().position(|k| *k == self).unwrap_or(0) as u64
    }
}

/// What an inode number names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Root,
    RootStats,
    RootMetrics,
    Dir(usize),
    File(usize, FileKind),
}

impl Node {
    pub fn ino(self) -> u64 {
        match self {
            Node::Root => ROOT,
            Node::RootStats => ROOT_STATS,
            Node::RootMetrics => ROOT_METRICS,
            Node::Dir(i) => FIRST_SOURCE + i as u64 * STRIDE,
            Node::File(i, kind) => FIRST_SOURCE + i as u64 * STRIDE + 1 + kind.index(),
        }
    }

    pub fn from_ino(ino: u64, sources: usize) -> Option<Node> {
        match ino {
            ROOT => Some(Node::Root),
            ROOT_STATS => Some(Node::RootStats),
            ROOT_METRICS => Some(Node::RootMetrics),
            _ if ino >= FIRST_SOURCE => {
                let i = usize::try_from((ino - FIRST_SOURCE) / STRIDE).ok()?;
                if i >= sources {
                    return None;
                }
                match (ino - FIRST_SOURCE) % STRIDE {
                    0 => Some(Node::Dir(i)),
                    n => FileKind::ALL
                        .get(usize::try_from(n - 1).ok()?)
                        .map(|k| Node::File(i, *k)),
                }
            }
            _ => None,
        }
    }

    pub fn is_dir(self) -> bool {
        matches!(self, Node::Root | Node::Dir(_))
    }
}

/// Children of a directory node, with their names, in listing order.
pub fn children(node: Node, sources: &[Source]) -> Vec<(Node, String)> {
    match node {
        Node::Root => {
            let mut out = vec![
                (Node::RootStats, "stats".to_string()),
                (Node::RootMetrics, "metrics".to_string()),
            ];
            out.extend(
                sources
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (Node::Dir(i), s.name.clone())),
            );
            out
        }
        Node::Dir(i) => FileKind::ALL
            .iter()
            .map(|k| (Node::File(i, *k), k.name().to_string()))
            .collect(),
        _ => Vec::new(),
    }
}

pub fn parent(node: Node) -> Node {
    match node {
        Node::File(i, _) => Node::Dir(i),
        _ => Node::Root,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_numbers_round_trip() {
        let mut nodes = vec![Node::Root, Node::RootStats, Node::RootMetrics];
        for i in 0..3 {
            nodes.push(Node::Dir(i));
            nodes.extend(FileKind::ALL.iter().map(|k| Node::File(i, *k)));
        }
        for node in nodes {
            assert_eq!(Node::from_ino(node.ino(), 3), Some(node));
        }
        assert_eq!(Node::from_ino(Node::Dir(3).ino(), 3), None);
        assert_eq!(Node::from_ino(0, 3), None);
        assert_eq!(Node::from_ino(9, 3), None);
    }
}
