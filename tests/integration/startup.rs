//! Start-up: every refusal of SPEC §1 prints one clear line, exits 1 (2 for
//! usage) and mounts nothing; and the accepted command lines work.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::util::{self, is_mounted, mmapfs_bin, sh_ok, TestMount};

/// Run mmapfs in the foreground with `args` then the mountpoint; it must
/// fail with `code`, print `needle` in one line, and leave nothing mounted.
fn refused(tm: &TestMount, args: &[&str], code: i32, needle: &str) -> String {
    let err = run_refused(tm, args, code, needle);
    assert!(!is_mounted(&tm.mnt), "{args:?} left a mount behind");
    err
}

/// Like `refused`, without looking at the mountpoint.
fn run_refused(tm: &TestMount, args: &[&str], code: i32, needle: &str) -> String {
    let out = tm.run(&[&["-f"], args].concat());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{args:?}: stderr: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in: {err}"
    );
    if code == 1 {
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "one line expected: {err}"
        );
    }
    err
}

#[test]
fn empty_file_is_refused_with_the_mmap_rule() {
    require_fuse!();
    let tm = TestMount::new();
    fs::write(tm.path("empty"), b"").unwrap();
    refused(
        &tm,
        &["empty"],
        1,
        "cannot map an empty file: mmap needs a length > 0; extend it with --size",
    );
    assert!(
        !tm.mnt.exists(),
        "the created mountpoint must be removed again"
    );
}

#[test]
fn windows_must_fit_and_align() {
    require_fuse!();
    let tm = TestMount::new();
    fs::write(tm.path("f"), vec![7u8; 1 << 20]).unwrap();
    refused(
        &tm,
        &["--offset", "100", "f"],
        1,
        "not a multiple of the page size (4096",
    );
    refused(
        &tm,
        &["--length", "2M", "f"],
        1,
        "a mapping cannot grow the file; use --size",
    );
    refused(
        &tm,
        &["--offset", "1M", "f"],
        1,
        "a mapping cannot grow the file; use --size",
    );
    refused(
        &tm,
        &["-o", "offset=512K,length=1M", "f"],
        1,
        "a mapping cannot grow the file",
    );
    refused(&tm, &["--length", "0", "f"], 1, "mmap needs a length > 0");
    assert_eq!(
        fs::metadata(tm.path("f")).unwrap().len(),
        1 << 20,
        "source untouched"
    );
}

#[test]
fn streams_directories_and_missing_files_are_named() {
    require_fuse!();
    let tm = TestMount::new();
    fs::create_dir(tm.path("adir")).unwrap();
    sh_ok(tm.dir.path(), "mkfifo fifo");
    let _socket = std::os::unix::net::UnixListener::bind(tm.path("sock")).unwrap();
    // A directory is a source of its own kind, served whole.
    refused(&tm, &["--private", "adir"], 1, "is a directory: --private");
    refused(&tm, &["fifo"], 1, "is a FIFO");
    refused(&tm, &["sock"], 1, "is a socket");
    refused(&tm, &["/dev/null"], 1, "is a character device");
    refused(
        &tm,
        &["nothere"],
        1,
        "no such file; give --size N to create it",
    );
    assert!(!tm.path("nothere").exists());
}

#[test]
fn the_same_file_twice_is_refused_even_through_a_hard_link() {
    require_fuse!();
    let tm = TestMount::new();
    fs::write(tm.path("a"), b"x").unwrap();
    fs::hard_link(tm.path("a"), tm.path("b")).unwrap();
    refused(&tm, &["a", "a"], 1, "are the same file");
    refused(&tm, &["a", "b"], 1, "are the same file");
}

#[test]
fn same_basename_gets_a_suffix() {
    require_fuse!();
    let mut tm = TestMount::new();
    for d in ["one", "two"] {
        fs::create_dir(tm.path(d)).unwrap();
        fs::write(tm.path(d).join("f"), d).unwrap();
    }
    tm.mount(&["one/f", "two/f"]);
    assert_eq!(fs::read(tm.file("f", "data")).unwrap(), b"one");
    assert_eq!(fs::read(tm.file("f~2", "data")).unwrap(), b"two");
}

/// Make `dir` read-only for everyone, root included, with a read-only bind
/// mount; undone on drop.
struct ReadOnlyBind(std::path::PathBuf);

impl ReadOnlyBind {
    fn new(src: &Path, dst: &Path) -> Self {
        fs::create_dir(dst).unwrap();
        let s = src.display();
        let d = dst.display();
        sh_ok(
            Path::new("/"),
            &format!("mount --bind '{s}' '{d}' && mount -o remount,bind,ro '{d}'"),
        );
        ReadOnlyBind(dst.to_path_buf())
    }
}

impl Drop for ReadOnlyBind {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_source_needs_read_only() {
    require_fuse!();
    let mut tm = TestMount::new();
    fs::create_dir(tm.path("rw")).unwrap();
    fs::write(tm.path("rw/f"), b"hello").unwrap();
    let _ro = ReadOnlyBind::new(&tm.path("rw"), &tm.path("ro"));
    refused(
        &tm,
        &["ro/f"],
        1,
        "PROT_WRITE needs a read-write descriptor; use --read-only",
    );
    tm.mount(&["--read-only", "ro/f"]);
    let data = tm.file("f", "data");
    assert_eq!(fs::read(&data).unwrap(), b"hello");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o444
    );
    let err = fs::OpenOptions::new().write(true).open(&data).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert_eq!(tm.stat("f", "writable"), "no");
    let (status, _) = tm.unmount();
    assert!(status.success());
}

#[test]
fn mountpoint_problems_are_explained() {
    require_fuse!();
    let mut tm = TestMount::new();
    fs::write(tm.path("f"), b"x").unwrap();
    fs::write(&tm.mnt, b"not a dir").unwrap();
    refused(&tm, &["f"], 1, "is not a directory");
    fs::remove_file(&tm.mnt).unwrap();
    tm.mount(&["f"]);
    let err = run_refused(&tm, &["f"], 1, "already mounted");
    assert!(err.contains("fusermount3 -u"), "{err}");
    // The refused second daemon must not have disturbed the first mount.
    assert_eq!(fs::read(tm.file("f", "data")).unwrap(), b"x");
}

#[test]
fn missing_dev_fuse_is_explained() {
    require_fuse!();
    let tm = TestMount::new();
    fs::write(tm.path("f"), b"x").unwrap();
    let script = format!(
        "mount -t tmpfs none /dev && exec '{}' -f f '{}'",
        mmapfs_bin().display(),
        tm.mnt.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .current_dir(tm.dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no /dev/fuse") && err.contains("modprobe fuse"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    require_fuse!();
    let tm = TestMount::new();
    fs::write(tm.path("f"), b"x").unwrap();
    refused(
        &tm,
        &["f", "-o", "bogus"],
        2,
        "unknown mount option 'bogus'",
    );
    refused(&tm, &["--size", "12Q", "f"], 2, "unknown size suffix");
    let out = Command::new(mmapfs_bin()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn size_creates_and_extends_but_never_shrinks() {
    require_fuse!();
    let mut tm = TestMount::new();
    fs::write(tm.path("big"), vec![1u8; 8192]).unwrap();
    tm.mount(&["--size", "64K", "new.bin", "-o", "size=4K", "big"]);
    assert_eq!(fs::metadata(tm.path("new.bin")).unwrap().len(), 4096);
    assert_eq!(fs::metadata(tm.path("big")).unwrap().len(), 8192);
    assert_eq!(fs::metadata(tm.file("big", "data")).unwrap().len(), 8192);
    tm.unmount();
    let mut tm2 = TestMount::new();
    fs::write(tm2.path("small"), b"abc").unwrap();
    tm2.mount(&["--size", "16K", "small"]);
    let data = fs::read(tm2.file("small", "data")).unwrap();
    assert_eq!(data.len(), 16384);
    assert_eq!(&data[..4], b"abc\0");
}

#[test]
fn daemon_mode_returns_only_once_the_mount_answers() {
    require_fuse!();
    let tm = TestMount::new();
    tm.run_ok(&["--size", "1M", "src.bin"]);
    // No waiting: the parent exited only after the mount answered.
    let stats = fs::read_to_string(tm.mnt.join("src.bin/stats")).unwrap();
    assert!(stats.contains("length_bytes 1048576"), "{stats}");
    let pid = daemon_pid(&tm.mnt);
    sh_ok(tm.dir.path(), "echo hi > mnt/src.bin/data");
    sh_ok(
        tm.dir.path(),
        &format!("fusermount3 -u '{}'", tm.mnt.display()),
    );
    util::wait_until("daemon exit", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    assert_eq!(&fs::read(tm.path("src.bin")).unwrap()[..3], b"hi\n");
    assert!(!tm.mnt.exists(), "created mountpoint removed on exit");

    // A failing daemon start reports the error and exits non-zero.
    fs::write(tm.path("empty"), b"").unwrap();
    let out = tm.run(&["empty"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot map an empty file"));
}

/// The pid of the mmapfs process serving `mnt` (its command line names it).
pub fn daemon_pid(mnt: &Path) -> u32 {
    let target = mnt.to_string_lossy().into_owned();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("mmapfs")) && args.contains(&target) {
            return pid;
        }
    }
    panic!("no mmapfs process for {target}");
}

/// A loop device over a scratch file, detached on drop.
struct LoopDevice(String);

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn block_devices_are_accepted() {
    require_fuse!();
    let mut tm = TestMount::new();
    fs::write(tm.path("disk.img"), vec![0u8; 1 << 20]).unwrap();
    let dev = sh_ok(tm.dir.path(), "losetup -f --show disk.img")
        .trim()
        .to_string();
    let _loop = LoopDevice(dev.clone());
    tm.mount(&[&dev]);
    let name = Path::new(&dev)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(tm.stat(&name, "length_bytes"), (1 << 20).to_string());
    sh_ok(
        tm.dir.path(),
        &format!("printf block > mnt/{name}/data && echo sync > mnt/{name}/msync"),
    );
    assert_eq!(&fs::read(tm.path("disk.img")).unwrap()[..5], b"block");
    let (status, _) = tm.unmount();
    assert!(status.success());
}
