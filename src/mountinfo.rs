//! `/proc/self/mountinfo`: which filesystems are mounted where, and the
//! places where the mount with a given device number is mounted, each
//! opened and checked to be that mount's root before anyone uses it.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

/// FUSE gives the root directory this inode number.
const FUSE_ROOT_INO: u64 = 1;

pub struct MountLine {
    pub dev: (u64, u64),
    /// Bytes as the kernel has them: a mountpoint need not be UTF-8.
    pub path: PathBuf,
    pub fstype: String,
}

pub fn lines() -> Vec<MountLine> {
    let info = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
    info.split(|b| *b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
            let dev = std::str::from_utf8(fields.get(2)?).ok()?;
            let (major, minor) = dev.split_once(':')?;
            let dash = fields.iter().position(|f| *f == b"-")?;
            Some(MountLine {
                dev: (major.parse().ok()?, minor.parse().ok()?),
                path: PathBuf::from(OsString::from_vec(unescape(fields.get(4)?))),
                fstype: String::from_utf8_lossy(fields.get(dash + 1).unwrap_or(&&b"?"[..]))
                    .into_owned(),
            })
        })
        .collect()
}

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 3 < field.len() {
            let octal = std::str::from_utf8(&field[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok());
            if let Some(v) = octal {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// Every place the FUSE filesystem with device number `dev` is mounted,
/// with its root held as an `O_PATH` descriptor. A path is only a hint
/// (anyone may swap a directory on the way): what was opened counts only
/// if it is that filesystem's root.
pub fn roots(dev: u64) -> Vec<(PathBuf, File)> {
    let wanted = (u64::from(libc::major(dev)), u64::from(libc::minor(dev)));
    lines()
        .into_iter()
        .filter(|m| m.dev == wanted)
        .filter_map(|m| {
            let root = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(&m.path)
                .ok()?;
            let ours = root
                .metadata()
                .is_ok_and(|meta| meta.dev() == dev && meta.ino() == FUSE_ROOT_INO);
            ours.then_some((m.path, root))
        })
        .collect()
}
