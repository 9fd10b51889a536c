//! Regressions from adversarial testing: planted mountpoint links, a full
//! disk under a cached-mode msync, stray signals, a closed stderr, names
//! that could smuggle mount options or terminal escapes, and the budget of
//! open generated files.

use super::*;
use crate::util::alice;

/// `umount -l` of whatever is mounted at the path, on drop.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// A tmpfs of `size` at `path`, unmounted on drop.
fn small_disk(path: PathBuf, size: &str) -> Unmount {
    fs::create_dir(&path).unwrap();
    sh_ok(
        Path::new("/"),
        &format!("mount -t tmpfs -o size={size} tmpfs '{}'", path.display()),
    );
    Unmount(path)
}

/// The /proc/self/mountinfo line of the mount at `path`.
fn mountinfo_line(path: &Path) -> Option<String> {
    let target = path.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(target.as_str()))
        .map(str::to_string)
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_mountpoint_through_another_users_link_is_refused() {
    require_fuse!();
    let mut tm = TestMount::new();
    fs::set_permissions(tm.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(tm.path("src.bin"), b"source").unwrap();
    let user = alice();
    for dir in ["t", "t/ad", "t/victim", "t/target"] {
        fs::create_dir(tm.path(dir)).unwrap();
    }
    fs::write(tm.path("t/victim/keep"), b"mine").unwrap();
    sh_ok(tm.dir.path(), &format!("chown {} t/ad", user.name));
    let victim = tm.path("t/victim");
    let _guards = [Unmount(victim.clone()), Unmount(victim.join("newmnt"))];
    user.sh_ok(
        tm.dir.path(),
        &format!(
            "ln -s '{0}' t/ad/mnt && ln -s '{0}' t/ad/link",
            victim.display()
        ),
    );

    // The link is the mountpoint itself, then a directory on the way.
    for (mountpoint, link) in [("t/ad/mnt", "t/ad/mnt"), ("t/ad/link/newmnt", "t/ad/link")] {
        tm.mnt = tm.path(mountpoint);
        let out = tm.run(&["src.bin"]);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{mountpoint}: {err}");
        assert!(
            err.contains(link) && err.contains(&format!("symbolic link owned by uid {}", user.uid)),
            "{mountpoint}: {err}"
        );
        assert!(!is_mounted(&victim), "{mountpoint}: mounted on the victim");
        assert_eq!(fs::read(victim.join("keep")).unwrap(), b"mine");
        assert!(!victim.join("newmnt").exists(), "{mountpoint}");
    }

    // A link root made is still followed.
    let target = tm.path("t/target");
    let _guard = Unmount(target.clone());
    std::os::unix::fs::symlink(&target, tm.path("t/rootmnt")).unwrap();
    tm.mnt = tm.path("t/rootmnt");
    tm.run_ok(&["src.bin"]);
    assert!(is_mounted(&target));
    assert_eq!(fs::read(tm.file("src.bin", "data")).unwrap(), b"source");
    sh_ok(tm.dir.path(), "umount t/target");
    util::wait_until("the root link's mount to go", || !is_mounted(&target));
}

#[test]
fn enospc_under_a_cached_msync_is_reported_and_counted() {
    require_fuse!();
    let mut tm = TestMount::new();
    let disk = small_disk(tm.path("disk"), "1M");
    tm.mount(&["--size", "4M", "--io", "cached", "disk/src.bin"]);
    // A mapper dirties every page of data and keeps the mapping.
    let mut mapper = Command::new("/usr/bin/python3");
    mapper.arg("-c").arg(
        "import mmap, sys\n\
         f = open(sys.argv[1], 'r+b')\n\
         m = mmap.mmap(f.fileno(), 0)\n\
         for i in range(0, len(m), 4096): m[i] = 0x5a\n\
         print('ready', flush=True)\n\
         sys.stdin.read()\n",
    );
    mapper.arg(tm.file("src.bin", "data"));
    let mut mapper = Running::spawn(mapper);
    mapper.wait_line("ready");

    let out = Command::new("bash")
        .arg("-c")
        .arg("echo sync > mnt/src.bin/msync")
        .current_dir(tm.dir.path())
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert!(!out.status.success(), "sync on a full disk succeeded");
    assert!(
        err.contains("No space left on device") || err.contains("ENOSPC"),
        "{err}"
    );
    let report = tm.read("src.bin", "msync");
    assert!(report.contains("result ENOSPC"), "{report}");
    let errors: u64 = tm.stat("src.bin", "writeback_errors").parse().unwrap();
    assert!(errors > 0, "writeback_errors {errors}");

    // Stores were lost: the exit says so. (The mapper still holds the
    // detached mount, so the daemon waits a while for the session to end.)
    tm.signal("TERM");
    let (status, err) = tm.wait_exit();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(!is_mounted(&tm.mnt));
    drop(mapper);
    drop(disk);
}

#[test]
fn stray_signals_are_ignored() {
    require_fuse!();
    let mut tm = TestMount::new();
    fs::write(tm.path("src.bin"), b"source").unwrap();
    tm.mount(&["src.bin"]);
    let signals = [
        libc::SIGXFSZ,
        libc::SIGPWR,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGSYS,
        libc::SIGRTMIN() + 1,
    ];
    for signal in signals {
        // A signal left to its default action kills every thread before
        // kill(2) returns; one the daemon takes is handled by its own
        // thread, and a crash there shows in the exit status below.
        assert_eq!(unsafe { libc::kill(tm.pid() as i32, signal) }, 0);
        let stats = fs::read_to_string(tm.file("src.bin", "stats"));
        assert!(
            stats.is_ok_and(|s| s.contains("io_mode")),
            "signal {signal} stopped the daemon"
        );
    }
    tm.signal("TERM");
    let (status, err) = tm.wait_exit();
    assert!(status.success(), "{status}: {err}");
    assert!(!is_mounted(&tm.mnt));
}

/// A daemon started by the test itself, killed on drop if still running.
struct Daemon(std::process::Child, PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        if is_mounted(&self.1) {
            let _ = Command::new("fusermount3").arg("-uz").arg(&self.1).status();
        }
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn a_closed_stderr_does_not_stop_the_daemon() {
    require_fuse!();
    let tm = TestMount::new();
    fs::write(tm.path("src.bin"), b"still answering").unwrap();
    let child = Command::new(util::mmapfs_bin())
        .args(["-f", "-v", "src.bin"])
        .arg(&tm.mnt)
        .current_dir(tm.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = Daemon(child, tm.mnt.clone());
    drop(daemon.0.stderr.take());
    let stats = tm.file("src.bin", "stats");
    util::wait_until("the mount to answer", || {
        assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon died");
        is_mounted(&tm.mnt) && stats.exists()
    });
    for _ in 0..20 {
        let data = fs::read(tm.file("src.bin", "data")).expect("data after stderr closed");
        assert_eq!(data, b"still answering");
        assert!(tm.read("src.bin", "stats").contains("io_mode"));
    }
    sh_ok(tm.dir.path(), "fusermount3 -u mnt");
    let mut status = None;
    util::wait_until("the daemon to exit", || {
        status = daemon.0.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(0));
}

#[test]
fn the_default_fsname_carries_no_path_and_no_option() {
    require_fuse!();
    let mut tm = TestMount::new();
    fs::write(tm.path("a,allow_other"), b"source").unwrap();
    tm.mount(&["a,allow_other"]);
    let line = mountinfo_line(&tm.mnt).expect("mounted");
    let (mount, sup) = line.split_once(" - ").unwrap();
    let sup: Vec<&str> = sup.split(' ').collect();
    assert_eq!(sup[1], "mmapfs:a_allow_other", "{line}");
    let options = mount.split(' ').nth(5).unwrap();
    for opts in [options, sup[2]] {
        assert!(
            !opts.split(',').any(|o| o == "allow_other"),
            "allow_other reached the options: {line}"
        );
    }
    let (status, _) = tm.unmount();
    assert!(status.success());
}

#[test]
fn a_name_with_a_terminal_escape_is_shown_escaped() {
    require_fuse!();
    let tm = TestMount::new();
    let name = "\x1b]0;x\x07";
    File::create(tm.path(name)).unwrap();
    let out = tm.run(&[name]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(!out.stderr.contains(&0x1b), "{:?}", stderr_of(&out));
    assert!(!out.stderr.contains(&0x07), "{:?}", stderr_of(&out));
    assert!(stderr_of(&out).contains("\\x1b"), "{:?}", stderr_of(&out));
    assert!(!is_mounted(&tm.mnt));
}

#[test]
fn open_generated_files_are_budgeted_and_closing_returns_it() {
    require_fuse!();
    let mut tm = TestMount::new();
    fs::set_permissions(tm.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // 1 GiB sparse with every other page from 131072 on resident: each
    // resident_pages snapshot is ~57 KiB, so 64 MiB is ~1170 opens.
    let source = File::create(tm.path("src.bin")).unwrap();
    source.set_len(1 << 30).unwrap();
    for i in 0..8192u64 {
        source.write_at(b"x", (131072 + 2 * i) * 4096).unwrap();
    }
    fs::set_permissions(tm.path("src.bin"), fs::Permissions::from_mode(0o644)).unwrap();
    tm.mount(&["-o", "allow_other", "src.bin"]);
    let snapshot = tm.read("src.bin", "resident_pages").len();
    assert!(snapshot > 50 << 10, "resident_pages is {snapshot} bytes");

    let out = alice()
        .command("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import errno, os, sys, time\n\
             p = sys.argv[1]\n\
             fds, err = [], None\n\
             while len(fds) < 4000:\n\
             \x20   try: fds.append(os.open(p, os.O_RDONLY))\n\
             \x20   except OSError as e: err = errno.errorcode[e.errno]; break\n\
             print(len(fds), err, flush=True)\n\
             for fd in fds: os.close(fd)\n\
             end = time.monotonic() + 20\n\
             while True:\n\
             \x20   try: os.close(os.open(p, os.O_RDONLY)); break\n\
             \x20   except OSError as e:\n\
             \x20       if e.errno != errno.ENOMEM or time.monotonic() > end: raise\n\
             \x20       time.sleep(0.01)\n\
             for i in range(2000):\n\
             \x20   fd = os.open(p, os.O_RDONLY); os.read(fd, 1 << 20); os.close(fd)\n\
             print('ok')\n",
        )
        .arg(tm.file("src.bin", "resident_pages"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", stderr_of(&out));
    let mut first = said.lines().next().unwrap().split(' ');
    let held: usize = first.next().unwrap().parse().unwrap();
    assert_eq!(first.next(), Some("ENOMEM"), "{said}");
    let limit = (64 << 20) / snapshot;
    assert!(
        held.abs_diff(limit) <= limit / 20,
        "held {held}, budget {limit}: {said}"
    );
    assert!(said.contains("ok"), "{said}");
    let (status, _) = tm.unmount();
    assert!(status.success());
}
