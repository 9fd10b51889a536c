//! Acting as the caller: a worker thread takes the caller's filesystem
//! uid, gid and groups for one operation in a directory source, so the
//! source's filesystem checks what the caller may do and new files belong
//! to the caller. Only this thread changes, and only for the operation.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::unistd::{setfsgid, setfsuid, Gid, Uid};

use crate::sys;

/// Until dropped, this thread acts as the caller.
pub struct Acting {
    active: bool,
    /// Root's capabilities, out of the effective set while acting: the
    /// filesystem ones go with the uid, but others (CAP_SYS_ADMIN lists
    /// `trusted.*` attributes, CAP_SYS_RESOURCE passes quotas and reserved
    /// blocks) would still serve the caller.
    caps: Option<sys::SavedCaps>,
}

impl Acting {
    /// Act as `uid`/`gid` with the groups of process `pid`. Root callers,
    /// and a daemon that is not root itself, change nothing: the first
    /// already may, the second cannot take another identity.
    pub fn as_caller(uid: u32, gid: u32, pid: u32) -> Acting {
        Self::taking(uid, gid, pid, 0)
    }

    /// Act as a user while registering a file opened by `opener` as a
    /// passthrough backing file: the kernel keeps these credentials and
    /// makes every read, write and mapping through the backing file with
    /// them, for every open of the file while any lasts. So they carry no
    /// capability a write checks (CAP_SYS_RESOURCE passes quotas and ext4's
    /// reserved blocks, CAP_FSETID keeps set-id bits, which the kernel
    /// leaves it to us to clear: `HANDLE_KILLPRIV_V2`), only CAP_SYS_ADMIN,
    /// which the registration needs; and the identity is the opener's, or
    /// for root the file's owner (`owner`), so a user who opens a file
    /// after root cannot write with root's share of the disk unless the
    /// file is root's.
    pub fn registering_backing(opener: (u32, u32, u32), owner: (u32, u32)) -> Acting {
        let (uid, gid, pid) = opener;
        if uid != 0 {
            return Self::taking(uid, gid, pid, 1 << sys::CAP_SYS_ADMIN);
        }
        if owner.0 != 0 {
            return Self::taking(owner.0, owner.1, 0, 1 << sys::CAP_SYS_ADMIN);
        }
        let caps = sys::lower_effective_caps(1 << sys::CAP_FSETID | 1 << sys::CAP_SYS_RESOURCE)
            .map_err(|e| log::warn!("dropping CAP_FSETID and CAP_SYS_RESOURCE: {e}"))
            .ok();
        Acting {
            active: false,
            caps,
        }
    }

    /// Act as the caller, with no effective capability but those in `keep`.
    fn taking(uid: u32, gid: u32, pid: u32, keep: u64) -> Acting {
        if uid == 0 || !nix::unistd::geteuid().is_root() {
            return Acting {
                active: false,
                caps: None,
            };
        }
        own_groups();
        let mut groups = groups_of(pid, uid, gid);
        groups.retain(|&g| g != gid);
        groups.insert(0, gid);
        if let Err(e) = sys::set_thread_groups(&groups) {
            log::warn!("setgroups for uid {uid}: {e}");
        }
        setfsgid(Gid::from_raw(gid));
        setfsuid(Uid::from_raw(uid));
        let caps = sys::lower_effective_caps(!keep)
            .map_err(|e| log::warn!("dropping capabilities for uid {uid}: {e}"))
            .ok();
        Acting { active: true, caps }
    }
}

impl Drop for Acting {
    fn drop(&mut self) {
        if let Some(caps) = &self.caps {
            if let Err(e) = sys::restore_caps(caps) {
                log::warn!("restoring capabilities: {e}");
            }
        }
        if self.active {
            setfsuid(Uid::from_raw(0));
            setfsgid(Gid::from_raw(0));
            if let Err(e) = sys::set_thread_groups(own_groups()) {
                log::warn!("setgroups back: {e}");
            }
        }
    }
}

/// The daemon's own groups, to go back to.
fn own_groups() -> &'static [libc::gid_t] {
    static GROUPS: OnceLock<Vec<libc::gid_t>> = OnceLock::new();
    GROUPS.get_or_init(|| {
        nix::unistd::getgroups()
            .map(|g| g.into_iter().map(Gid::as_raw).collect())
            .unwrap_or_default()
    })
}

/// How long a process's groups are taken as read: reading `/proc` costs
/// about as much as the request itself, and a program making many calls
/// keeps its groups.
const GROUPS_FRESH: Duration = Duration::from_secs(1);
/// Processes whose groups are remembered at once.
const GROUPS_KEPT: usize = 1024;

/// `supplementary_groups`, remembered for `GROUPS_FRESH` per process and
/// identity.
fn groups_of(pid: u32, uid: u32, gid: u32) -> Vec<u32> {
    type Seen = HashMap<(u32, u32, u32), (Instant, Vec<u32>)>;
    static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
    let seen = SEEN.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some((at, groups)) = seen
        .lock()
        .expect("no panics: they abort")
        .get(&(pid, uid, gid))
    {
        if at.elapsed() < GROUPS_FRESH {
            return groups.clone();
        }
    }
    let groups = supplementary_groups(pid, uid, gid);
    let mut seen = seen.lock().expect("no panics: they abort");
    if seen.len() >= GROUPS_KEPT {
        seen.retain(|_, (at, _)| at.elapsed() < GROUPS_FRESH);
        if seen.len() >= GROUPS_KEPT {
            seen.clear();
        }
    }
    seen.insert((pid, uid, gid), (Instant::now(), groups.clone()));
    groups
}

/// The caller's supplementary groups, from `/proc` (a request carries only
/// the primary group). Only if that process still has the caller's
/// filesystem uid and gid: a process that exited may have left its pid to
/// another, whose groups are not the caller's.
pub fn supplementary_groups(pid: u32, uid: u32, gid: u32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    // `Uid:`/`Gid:` lines: real, effective, saved, filesystem.
    let fs_id = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|ids| ids.split_whitespace().nth(3)?.parse::<u32>().ok())
    };
    if fs_id("Uid:") != Some(uid) || fs_id("Gid:") != Some(gid) {
        return Vec::new();
    }
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
