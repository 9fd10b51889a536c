//! A directory or file of the tree swapped for a symlink while the mount
//! uses it: the daemon resolves through what it holds, never through a
//! symlink, so nothing happens outside the source directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

use super::*;
use crate::util::{alice, output_within, Running, DEADLINE};

/// `root/outside/` (0700) holding `victim` (0600, "outside"), beside `db`.
fn outside_dir(tm: &TestMount) -> PathBuf {
    let outside = tm.path("outside");
    fs::create_dir(&outside).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(outside.join("victim"), b"outside").unwrap();
    fs::set_permissions(outside.join("victim"), fs::Permissions::from_mode(0o600)).unwrap();
    outside
}

fn assert_outside_untouched(outside: &Path) {
    assert_eq!(names(outside), ["victim"], "something was made outside");
    let victim = outside.join("victim");
    assert_eq!(fs::read(&victim).unwrap(), b"outside");
    let meta = fs::metadata(&victim).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o600, 0));
}

/// `openat(dir, name, O_CREAT | O_WRONLY | O_EXCL)`.
fn create_at(dir: &File, name: &str) -> io::Result<File> {
    let name = CString::new(name).unwrap();
    // SAFETY: a live descriptor and a NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_EXCL | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

fn mkdir_at(dir: &File, name: &str) -> io::Result<()> {
    let name = CString::new(name).unwrap();
    // SAFETY: a live descriptor and a NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) })
}

/// `fstatat(dir, name)` without following a last symlink: the inode number.
fn ino_at(dir: &File, name: &str) -> io::Result<u64> {
    let name = CString::new(name).unwrap();
    // SAFETY: a zeroed stat is a valid value for the kernel to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a live descriptor, a NUL-terminated name and a live struct.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st.st_ino)
}

#[test]
fn a_directory_swapped_for_a_symlink_under_an_open_handle_leads_nowhere() {
    require_fuse!();
    let mut tm = scratch();
    let outside = outside_dir(&tm);
    fs::create_dir(src(&tm, "sub")).unwrap();
    mount_db(&mut tm, &[]);
    let dir = File::open(data(&tm, "sub")).unwrap();
    // Beside the mount, `sub` becomes a symlink to the outside directory.
    fs::rename(src(&tm, "sub"), src(&tm, "sub.old")).unwrap();
    symlink(&outside, src(&tm, "sub")).unwrap();

    // Through the handle the kernel asks for names in the directory it
    // knows; whatever the daemon answers, it is never the outside one.
    let victim = fs::metadata(outside.join("victim")).unwrap().ino();
    assert_ne!(
        ino_at(&dir, "victim").ok(),
        Some(victim),
        "looked up outside"
    );
    let made = create_at(&dir, "made").map(|mut f| f.write_all(b"inside"));
    let mkdir = mkdir_at(&dir, "madedir");
    assert_outside_untouched(&outside);
    // What succeeded happened in the directory the handle was opened on.
    if let Ok(written) = made {
        written.unwrap();
        assert_eq!(fs::read(src(&tm, "sub.old/made")).unwrap(), b"inside");
    }
    if mkdir.is_ok() {
        assert!(src(&tm, "sub.old/madedir").is_dir());
    }
}

#[test]
fn a_file_swapped_for_a_symlink_under_an_open_handle_changes_nothing_outside() {
    require_fuse!();
    let mut tm = scratch();
    let outside = outside_dir(&tm);
    fs::write(src(&tm, "f"), b"mine").unwrap();
    mount_db(&mut tm, &[]);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(data(&tm, "f"))
        .unwrap();
    fs::rename(src(&tm, "f"), src(&tm, "f.old")).unwrap();
    symlink(outside.join("victim"), src(&tm, "f")).unwrap();

    // Every change through the handle is of the file it was opened on,
    // or refused; none reaches the symlink's target.
    let results = [
        (
            "fchmod",
            f.set_permissions(fs::Permissions::from_mode(0o666)).err(),
        ),
        (
            "fchown",
            std::os::unix::fs::fchown(&f, Some(4321), Some(4321)).err(),
        ),
        ("ftruncate", f.set_len(1).err()),
        (
            "futimens",
            f.set_times(fs::FileTimes::new().set_modified(
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(5),
            ))
            .err(),
        ),
        ("write", (&f).write_all(b"X").err()),
    ];
    assert_outside_untouched(&outside);
    let victim = fs::metadata(outside.join("victim")).unwrap();
    assert!(victim.mtime() > 5, "the victim's times changed");
    let old = fs::metadata(src(&tm, "f.old")).unwrap();
    for (what, err) in results {
        if let Some(err) = err {
            eprintln!("{what} after the swap: {err}");
            continue;
        }
        match what {
            "fchmod" => assert_eq!(old.mode() & 0o777, 0o666),
            "fchown" => assert_eq!(old.uid(), 4321),
            "ftruncate" => assert_eq!(old.len(), 1),
            _ => {}
        }
    }
}

/// Swap `sub` (a directory) and `lnk` (a symlink to TARGET) in the current
/// directory for SECONDS seconds, as fast as rename(2) goes; prints `ready`
/// after the first round and `swaps N` at the end.
const SWAPPER: &str = r#"
import os, sys, time
target, seconds = sys.argv[1], float(sys.argv[2])
os.symlink(target, "lnk")
end = time.monotonic() + seconds
n = 0
while time.monotonic() < end:
    os.rename("sub", "sub.real")
    os.rename("lnk", "sub")
    os.rename("sub", "lnk")
    os.rename("sub.real", "sub")
    n += 1
    if n == 1:
        print("ready", flush=True)
print("swaps %d" % n)
"#;

/// Create files and directories under DIR/sub for SECONDS seconds;
/// prints `tries N made M`.
const CREATOR: &str = r#"
import os, sys, time
base, seconds = sys.argv[1], float(sys.argv[2])
end = time.monotonic() + seconds
tries = made = 0
while time.monotonic() < end:
    for path, make in (
        ("%s/sub/f%d" % (base, tries), lambda p: os.close(os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))),
        ("%s/sub/d%d" % (base, tries), lambda p: os.mkdir(p)),
        ("%s/sub/s%d" % (base, tries), lambda p: os.symlink("x", p)),
    ):
        try:
            make(path)
            made += 1
        except OSError:
            pass
    tries += 1
print("tries %d made %d" % (tries, made))
"#;

#[test]
fn a_user_swapping_her_directory_for_a_symlink_creates_nothing_in_a_root_only_one() {
    require_user_fuse!();
    let alice = alice();
    let mut tm = scratch();
    open_to_all(tm.dir.path());
    open_to_all(&src(&tm, ""));
    let rootonly = outside_dir(&tm);
    let hers = src(&tm, "alice");
    fs::create_dir_all(hers.join("sub")).unwrap();
    for path in [&hers, &hers.join("sub")] {
        open_to_all(path);
        std::os::unix::fs::chown(path, Some(alice.uid), Some(alice.gid)).unwrap();
    }
    mount_db(&mut tm, &["-o", "allow_other"]);

    let mut swapper = alice.command(PYTHON);
    swapper
        .args(["-u", "-c", SWAPPER])
        .arg(&rootonly)
        .arg("4")
        .current_dir(&hers);
    let mut swapper = Running::spawn(swapper);
    swapper.wait_line("ready");
    let mut creator = alice.command(PYTHON);
    creator
        .args(["-c", CREATOR])
        .arg(data(&tm, "alice"))
        .arg("3");
    let out = output_within(creator, DEADLINE).expect("the creator hung");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, lines, err) = swapper.finish();
    assert!(status.success(), "swapper: {err}");
    eprintln!("{said} {lines:?}");
    assert_outside_untouched(&rootonly);
    let words: Vec<u64> = said
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(words.len() == 2 && words[0] > 0, "{said}");
    // Whatever was made is hers, inside her directory.
    let mut made = 0;
    for dir in ["sub", "sub.real", "lnk"] {
        let path = hers.join(dir);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            for entry in fs::read_dir(&path).unwrap() {
                let meta = entry.unwrap().metadata().unwrap();
                assert_eq!(meta.uid(), alice.uid);
                made += 1;
            }
        }
    }
    assert_eq!(
        made, words[1],
        "made through the mount vs found in her directory"
    );
}
