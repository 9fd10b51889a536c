//! Bad input in or around the source directory: symlinks pointing out of
//! it, the directory renamed or removed while mounted, mount points, FIFOs,
//! sockets and devices. Nothing escapes the directory, errors are clear,
//! nothing hangs and nothing is lost.

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};
use std::process::{Command, Output};
use std::time::Duration;

use super::*;
use crate::toolbox::umount_and_wait;
use crate::util::{output_within, sh_ok, stat_value, wait_until, Running, TestFs, DEADLINE};

/// What a request that must neither hang nor crash the daemon may take.
const PROMPTLY: Duration = Duration::from_secs(5);

/// Do OP (`create`, `read`, `list`, `mkdir`, `open_nonblock`) on PATH in a
/// process of its own; prints `ok` or the errno's name.
const TRY_OP: &str = r#"
import errno, os, sys
op, path = sys.argv[1], sys.argv[2]
try:
    if op == "create":
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
    elif op == "read":
        open(path, "rb").read()
    elif op == "list":
        os.listdir(path)
    elif op == "mkdir":
        os.mkdir(path)
    elif op == "open_nonblock":
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    print("ok")
except OSError as e:
    print(errno.errorcode[e.errno])
"#;

/// `op` on `path` in another process, which must answer within `PROMPTLY`.
fn try_op(op: &str, path: &Path) -> String {
    let mut cmd = Command::new(PYTHON);
    cmd.args(["-c", TRY_OP, op]).arg(path);
    let out =
        output_within(cmd, PROMPTLY).unwrap_or_else(|| panic!("{op} {} hung", path.display()));
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The daemon still answers: the root's and the directory's `stats` read
/// within `PROMPTLY`.
fn still_serving(tm: &TestMount) -> String {
    let mut cmd = Command::new("cat");
    cmd.arg(tm.mnt.join("stats")).arg(whole(tm, "stats"));
    let out = output_within(cmd, PROMPTLY).expect("reading stats hung");
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Errors that say clearly that the directory is gone.
const GONE: [&str; 3] = ["ENOENT", "ESTALE", "EIO"];

#[test]
fn symlinks_pointing_out_of_the_source_are_never_followed_by_the_daemon() {
    require_fuse!();
    let mut tm = scratch();
    let outside = tm.path("outside.bin");
    fs::write(&outside, b"outside secret").unwrap();
    fs::create_dir(tm.path("outdir")).unwrap();
    fs::write(tm.path("outdir/inner.bin"), b"inner").unwrap();
    fs::write(src(&tm, "regular"), b"r").unwrap();
    symlink(&outside, src(&tm, "abs")).unwrap();
    symlink("../outside.bin", src(&tm, "rel")).unwrap();
    symlink(tm.path("outdir"), src(&tm, "absdir")).unwrap();
    symlink("../outdir", src(&tm, "reldir")).unwrap();
    mount_db(&mut tm, &[]);
    // The outside files are in the page cache: if the daemon looked through
    // the links, top would show them.
    fs::read(&outside).unwrap();
    fs::read(tm.path("outdir/inner.bin")).unwrap();

    for (name, target) in [
        ("abs", outside.to_string_lossy().into_owned()),
        ("rel", "../outside.bin".to_string()),
        ("reldir", "../outdir".to_string()),
    ] {
        let meta = fs::symlink_metadata(data(&tm, name)).unwrap();
        assert!(meta.file_type().is_symlink(), "{name} is not a symlink");
        assert_eq!(
            fs::read_link(data(&tm, name)).unwrap().to_string_lossy(),
            target
        );
    }
    // Only the regular file is inspected; no link leads into files/.
    wait_until("files/regular", || files(&tm, "regular/stats").exists());
    assert_eq!(names(&files(&tm, "")), ["regular"]);
    for rel in ["abs", "rel", "absdir/inner.bin", "reldir/inner.bin"] {
        assert!(
            fs::symlink_metadata(files(&tm, rel)).is_err(),
            "files/{rel} exists"
        );
    }
    let stats = read(&whole(&tm, "stats"));
    assert_eq!(stat_value(&stats, "files").as_deref(), Some("1"), "{stats}");
    assert_eq!(top_paths(&tm).iter().filter(|p| *p != "regular").count(), 0);

    // Changes to a link through the mount are to the link itself.
    std::os::unix::fs::lchown(data(&tm, "abs"), Some(4321), Some(4321)).unwrap();
    assert_eq!(fs::symlink_metadata(src(&tm, "abs")).unwrap().uid(), 4321);
    let times = [libc::timespec {
        tv_sec: 5,
        tv_nsec: 0,
    }; 2];
    let link = cpath(&data(&tm, "abs"));
    // SAFETY: a live NUL-terminated path and two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            link.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    // Either the link's own times change, or the daemon refuses: it never
    // sets the target's.
    match check(rc) {
        Ok(()) => assert_eq!(fs::symlink_metadata(src(&tm, "abs")).unwrap().mtime(), 5),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "utimensat: {e}"),
    }
    let name = CString::new("user.x").unwrap();
    // SAFETY: live NUL-terminated strings and a one-byte value.
    let rc = unsafe { libc::lsetxattr(link.as_ptr(), name.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    assert_eq!(
        rc, -1,
        "user.* attributes on a symlink are refused by ext4 and tmpfs"
    );
    fs::hard_link(data(&tm, "rel"), data(&tm, "rel2")).unwrap();
    assert!(fs::symlink_metadata(src(&tm, "rel2"))
        .unwrap()
        .file_type()
        .is_symlink());
    fs::rename(data(&tm, "abs"), data(&tm, "abs2")).unwrap();
    fs::remove_file(data(&tm, "abs2")).unwrap();
    fs::remove_file(data(&tm, "reldir")).unwrap();

    let meta = fs::metadata(&outside).unwrap();
    assert_eq!(fs::read(&outside).unwrap(), b"outside secret");
    assert_eq!((meta.uid(), meta.nlink()), (0, 1));
    assert!(meta.mtime() > 5, "the target's times changed");
    assert_eq!(errno(get_xattr(&outside, "user.x")), Some(libc::ENODATA));
    assert_eq!(names(&tm.path("outdir")), ["inner.bin"]);
    // A relative link resolves in the mount, where its target would be
    // beside `data/`: nothing is made through it, outside or in.
    let made = try_op("create", &data(&tm, "rel"));
    assert!(["EPERM", "EACCES"].contains(&made.as_str()), "{made}");
    assert_eq!(fs::read(&outside).unwrap(), b"outside secret");
}

#[test]
fn the_source_directory_renamed_while_mounted_stays_the_one_served() {
    require_fuse!();
    let mut tm = mounted(&[]);
    fs::write(data(&tm, "before"), b"kept").unwrap();
    fs::rename(tm.path(DB), tm.path("moved")).unwrap();
    // Someone makes a new directory at the old path.
    fs::create_dir(tm.path(DB)).unwrap();

    let created = try_op("create", &data(&tm, "after"));
    if created == "ok" {
        assert!(
            tm.path("moved/after").exists(),
            "created, but not in the directory served"
        );
    } else {
        assert!(GONE.contains(&created.as_str()), "create: {created}");
    }
    let read_back = try_op("read", &data(&tm, "before"));
    assert!(
        read_back == "ok" || GONE.contains(&read_back.as_str()),
        "read: {read_back}"
    );
    assert_eq!(
        names(&tm.path(DB)),
        Vec::<String>::new(),
        "the new directory was used"
    );
    still_serving(&tm);
    let (status, err) = tm.unmount();
    assert!(status.success(), "{err}");
    assert_eq!(fs::read(tm.path("moved/before")).unwrap(), b"kept");
}

#[test]
fn the_source_directory_removed_while_mounted_fails_clearly() {
    require_fuse!();
    let mut tm = mounted(&[]);
    fs::create_dir(data(&tm, "sub")).unwrap();
    fs::write(data(&tm, "f"), b"gone soon").unwrap();
    wait_until("files/f", || files(&tm, "f/stats").exists());
    fs::remove_dir_all(tm.path(DB)).unwrap();

    for (op, rel) in [
        ("create", "new"),
        ("create", "sub/new"),
        ("mkdir", "newdir"),
    ] {
        let got = try_op(op, &data(&tm, rel));
        assert!(GONE.contains(&got.as_str()), "{op} {rel}: {got}");
    }
    let listed = try_op("list", &data(&tm, ""));
    assert!(
        listed == "ok" || GONE.contains(&listed.as_str()),
        "list: {listed}"
    );
    wait_until("files/f to go", || !files(&tm, "f").exists());
    let stats = still_serving(&tm);
    assert!(stats.contains("source db\n"), "{stats}");
    assert!(!tm.path(DB).exists(), "the removed directory came back");
    let (status, err) = tm.unmount();
    assert!(status.success(), "{err}");
}

#[test]
fn a_mount_point_inside_the_source_is_served_and_renames_across_it_are_exdev() {
    require_fuse!();
    let mut tm = scratch();
    fs::create_dir(src(&tm, "sub")).unwrap();
    let tmpfs = TestFs::tmpfs(&src(&tm, "sub"), "16m");
    mount_db(&mut tm, &[]);
    fs::write(data(&tm, "sub/y"), b"on the tmpfs").unwrap();
    assert_eq!(fs::read(src(&tm, "sub/y")).unwrap(), b"on the tmpfs");
    for (what, result) in [
        ("rename", fs::rename(data(&tm, "sub/y"), data(&tm, "y"))),
        ("link", fs::hard_link(data(&tm, "sub/y"), data(&tm, "y"))),
    ] {
        assert_eq!(errno(result), Some(libc::EXDEV), "{what} across mounts");
    }
    assert_eq!(fs::read(src(&tm, "sub/y")).unwrap(), b"on the tmpfs");
    assert!(!src(&tm, "y").exists());
    let (status, err) = tm.unmount();
    assert!(status.success(), "{err}");
    drop(tmpfs);
    assert_eq!(
        names(&src(&tm, "sub")),
        Vec::<String>::new(),
        "written below the tmpfs"
    );
}

#[test]
fn a_source_directory_that_is_a_mount_point_serves_what_is_mounted_or_is_refused() {
    require_fuse!();
    let tm = scratch();
    let tmpfs = TestFs::tmpfs(&src(&tm, ""), "16m");
    let mut cmd = Command::new(crate::util::mmapfs_bin());
    cmd.arg(DB).arg(&tm.mnt).current_dir(tm.dir.path());
    let out = output_within(cmd, DEADLINE).expect("start-up hung");
    let err = stderr(&out);
    if !out.status.success() {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("mount"), "{err}");
        return;
    }
    fs::write(data(&tm, "x"), b"on the tmpfs").unwrap();
    assert_eq!(fs::read(src(&tm, "x")).unwrap(), b"on the tmpfs");
    let path = cpath(&data(&tm, ""));
    // SAFETY: a zeroed statvfs is a valid value for the kernel to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a live NUL-terminated path and a live output struct.
    check(unsafe { libc::statvfs(path.as_ptr(), &mut st) }).unwrap();
    assert_eq!(st.f_blocks * st.f_frsize, 16 << 20, "statfs is the tmpfs's");
    umount_and_wait(tm.dir.path(), &tm.mnt);
    drop(tmpfs);
    assert_eq!(
        names(&src(&tm, "")),
        Vec::<String>::new(),
        "written below the tmpfs"
    );
}

#[test]
fn fifos_sockets_and_devices_in_the_source_hang_nothing() {
    require_fuse!();
    let mut tm = scratch();
    fs::write(src(&tm, "regular"), b"r").unwrap();
    sh_ok(
        tm.dir.path(),
        "mkfifo db/fifo && mknod db/null c 1 3 && /usr/bin/python3 -c \
         'import socket; socket.socket(socket.AF_UNIX).bind(\"db/sock\")'",
    );
    mount_db(&mut tm, &[]);
    let kind = |name: &str| fs::symlink_metadata(data(&tm, name)).unwrap();
    assert!(kind("fifo").file_type().is_fifo());
    assert!(kind("sock").file_type().is_socket());
    assert!(kind("null").file_type().is_char_device());
    assert_eq!(kind("null").rdev(), libc::makedev(1, 3));
    assert_eq!(names(&data(&tm, "")), ["fifo", "null", "regular", "sock"]);

    assert_eq!(try_op("open_nonblock", &data(&tm, "fifo")), "ok");
    // A reader blocked on the FIFO waits in the kernel, not in the daemon.
    let mut reader = Running::spawn({
        let mut cat = Command::new("cat");
        cat.arg(data(&tm, "fifo"));
        cat
    });
    still_serving(&tm);
    assert_eq!(try_op("list", &files(&tm, "")), "ok");
    let mut writer = Command::new("sh");
    writer.arg("-c").arg(format!(
        "echo through the fifo > '{}'",
        data(&tm, "fifo").display()
    ));
    let out = output_within(writer, PROMPTLY).expect("writing the FIFO hung");
    assert!(out.status.success(), "{}", stderr(&out));
    reader.wait_line("through the fifo");

    // Only the regular file is inspected.
    wait_until("files/regular", || files(&tm, "regular/stats").exists());
    assert_eq!(names(&files(&tm, "")), ["regular"]);
    let stats = still_serving(&tm);
    assert!(stats.contains("files 1\n"), "{stats}");
    let (status, err) = tm.unmount();
    assert!(status.success(), "{err}");
}
