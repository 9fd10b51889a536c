//! Security: what users other than the mounting one may do and learn
//! through the mount, and start-up paths another user could tamper with
//! (planted symlinks and FIFOs, a renamed mountpoint). The other users
//! are unprivileged system users made for the tests.

mod access;
mod paths;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::toolbox::umount_and_wait;
use crate::util::{
    self, alice, bob, example_bin, is_mounted, mmapfs_bin, output_within, sh, sh_ok, stat_value,
    test_user, Installed, Running, TestMount, User, DEADLINE,
};

/// How long a refused start or an exit after SIGTERM may take: well under
/// the daemon's own fallback timeouts, so waiting on one of those fails.
const PROMPTLY: Duration = Duration::from_secs(5);

/// The per-source files that are only read.
const READ_ONLY_FILES: [&str; 6] = [
    "stats",
    "dirty_pages",
    "resident_pages",
    "map",
    "events",
    "mappers",
];

/// A scratch directory other users can traverse (tempdirs are 0700).
fn scratch() -> TestMount {
    let tm = TestMount::new();
    fs::set_permissions(tm.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    tm
}

/// Write `bytes` to `path` and give it `mode`.
fn put(path: &Path, bytes: &[u8], mode: u32) {
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(path: &Path, mode: u32) {
    fs::create_dir(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Failed with EACCES.
fn denied(out: &Output) -> bool {
    !out.status.success() && stderr(out).contains("Permission denied")
}

/// `mmapfs ARGS... mnt` in daemon mode, which must finish (mounted or
/// refused) within `PROMPTLY`.
fn start(tm: &TestMount, args: &[&str]) -> Output {
    let mut cmd = Command::new(mmapfs_bin());
    cmd.args(args).arg(&tm.mnt).current_dir(tm.dir.path());
    output_within(cmd, PROMPTLY)
        .unwrap_or_else(|| panic!("mmapfs {args:?} hung at start-up (killed after {PROMPTLY:?})"))
}

/// A start that must be refused: exit 1 and one line on stderr, which is
/// returned. A start that mounted is unmounted again and reported.
fn refused(tm: &TestMount, args: &[&str]) -> Result<String, String> {
    let out = start(tm, args);
    let err = stderr(&out);
    if out.status.success() {
        umount_and_wait(tm.dir.path(), &tm.mnt);
        return Err(format!("{args:?} started and mounted"));
    }
    if out.status.code() != Some(1) || err.trim_end().lines().count() != 1 {
        return Err(format!(
            "{args:?}: {}, not exit 1 with one line: {err}",
            out.status
        ));
    }
    Ok(err)
}

/// `refused`, with every one of `needles` in the line; what was wrong, if
/// anything.
fn refusal_problem(tm: &TestMount, args: &[&str], needles: &[&str]) -> Option<String> {
    match refused(tm, args) {
        Err(problem) => Some(problem),
        Ok(err) => {
            let missing: Vec<&&str> = needles.iter().filter(|n| !err.contains(**n)).collect();
            (!missing.is_empty()).then(|| format!("{args:?}: no {missing:?} in: {err}"))
        }
    }
}

fn assert_no_problems(problems: &[String]) {
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// `mapper PATH --hold` run by `cmd`, once it has mapped the file.
fn hold_mapping(mut cmd: Command, path: &Path) -> Running {
    cmd.arg(path).arg("--hold");
    let mut mapper = Running::spawn(cmd);
    mapper.wait_line("ready");
    mapper
}
