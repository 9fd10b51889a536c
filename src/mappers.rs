//! Who maps a file: one pass over `/proc/*/maps` finds every mapping of
//! any of the files asked about, so the cost of a look does not grow with
//! the number of sources.

use std::os::unix::fs::MetadataExt;

/// One mapping of a file by some process, from `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapper {
    pub pid: u32,
    /// Owner of the process, to show each user only their own.
    pub uid: u32,
    pub comm: String,
    /// The tag of the file it maps.
    pub tag: usize,
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
}

/// A file as `/proc/PID/maps` names it: device major, minor and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub major: u64,
    pub minor: u64,
    pub ino: u64,
}

impl FileId {
    pub fn from_dev_ino(dev: u64, ino: u64) -> FileId {
        FileId {
            major: libc::major(dev) as u64,
            minor: libc::minor(dev) as u64,
            ino,
        }
    }
}

/// Every mapping of any of `files` by processes other than `skip_pid`;
/// each file comes with a tag (the caller's index) that its mappers carry.
pub fn scan(files: &[(FileId, usize)], skip_pid: u32) -> Vec<Mapper> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    let mut pids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid| *pid != skip_pid)
        .collect();
    pids.sort_unstable();
    for pid in pids {
        // Processes come and go while we look: skip any that vanish.
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        let mut owner = None;
        for line in maps.lines() {
            let Some((start, end, perms, offset, id)) = parse_maps_line(line) else {
                continue;
            };
            let Some((_, tag)) = files.iter().find(|(f, _)| *f == id) else {
                continue;
            };
            let (uid, comm) = owner
                .get_or_insert_with(|| {
                    let uid = std::fs::metadata(format!("/proc/{pid}")).map_or(0, |m| m.uid());
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .map(|c| c.trim_end().to_string())
                        .unwrap_or_default();
                    (uid, comm)
                })
                .clone();
            out.push(Mapper {
                pid,
                uid,
                comm,
                tag: *tag,
                start,
                end,
                perms: perms.to_string(),
                offset,
            });
        }
    }
    out
}

fn parse_maps_line(line: &str) -> Option<(u64, u64, &str, u64, FileId)> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let ino: u64 = fields.next()?.parse().ok()?;
    if ino == 0 {
        return None;
    }
    Some((
        u64::from_str_radix(start, 16).ok()?,
        u64::from_str_radix(end, 16).ok()?,
        perms,
        offset,
        FileId {
            major: u64::from_str_radix(major, 16).ok()?,
            minor: u64::from_str_radix(minor, 16).ok()?,
            ino,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_parse() {
        let line = "7f00a000-7f00c000 rw-s 00002000 00:2f 33                         /mnt/x/data";
        let (start, end, perms, offset, id) = parse_maps_line(line).unwrap();
        assert_eq!(
            (start, end, perms, offset),
            (0x7f00a000, 0x7f00c000, "rw-s", 0x2000)
        );
        assert_eq!(
            id,
            FileId {
                major: 0,
                minor: 0x2f,
                ino: 33
            }
        );
        assert!(parse_maps_line("7f00a000-7f00c000 rw-p 00000000 00:00 0 ").is_none());
    }
}
