//! Signals, and an unprivileged user mounting, remounting and failing after the fork.

use super::*;

// ---------------------------------------------------------------------------
// 10. signals

fn daemon_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

#[test]
fn usr1_usr2_pipe_and_alrm_are_ignored() {
    require_fuse!();
    each_case(&["USR1", "USR2", "PIPE", "ALRM"], |signal| {
        let mut tm = TestMount::new();
        tm.mount(&["--io", "cached", "--size", "1M", "src.bin"]);
        let pid = tm.pid();
        tm.signal(signal);
        assert!(daemon_alive(pid), "SIG{signal} ended the daemon");
        // Still serving: a write, a sync and a stats read go through.
        write_marker(&tm, 8192, b"after the signal");
        sh_ok(tm.dir.path(), "echo sync > mnt/src.bin/msync");
        assert_eq!(tm.stat("src.bin", "mode"), "shared");
        assert!(daemon_alive(pid), "SIG{signal} ended the daemon");
        // And it still stops the normal way.
        tm.signal("TERM");
        let (status, err) = tm.wait_exit();
        assert!(
            status.success(),
            "after SIG{signal}, SIGTERM: {status}: {err}"
        );
        assert!(
            !is_mounted(&tm.mnt),
            "after SIG{signal}, SIGTERM left the mount behind"
        );
        assert!(source_has(&tm, 8192, b"after the signal"));
    });
}

#[test]
fn term_int_hup_and_quit_unmount_sync_and_exit_0() {
    require_fuse!();
    each_case(&["TERM", "INT", "HUP", "QUIT"], |signal| {
        let mut tm = TestMount::new();
        tm.mount(&["--io", "cached", "--size", "1M", "src.bin"]);
        write_marker(&tm, 4096 * 9, b"before the signal");
        tm.signal(signal);
        let (status, err) = tm.wait_exit();
        assert!(status.success(), "SIG{signal}: {status}: {err}");
        assert!(!is_mounted(&tm.mnt), "SIG{signal}: mount left behind");
        assert!(!tm.mnt.exists(), "SIG{signal}: created mountpoint left");
        assert!(source_has(&tm, 4096 * 9, b"before the signal"));
    });
}

// ---------------------------------------------------------------------------
// 11, 12. an unprivileged user

/// Run `program args...` in `dir` as the unprivileged test user.
fn as_carol(dir: &Path, program: &Path, args: &[&str]) -> Output {
    util::carol()
        .command(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux)")
}

/// A scratch directory the test user can reach: `home/` is hers and holds
/// her 64 KiB `src.bin`; `mmapfs` is a copy of the binary she may run.
struct CarolHome {
    /// Owns the scratch directory (removed on drop).
    _scratch: TestMount,
    home: PathBuf,
    bin: PathBuf,
}

impl CarolHome {
    fn new() -> CarolHome {
        let user = util::carol();
        let tm = TestMount::new();
        fs::set_permissions(tm.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let bin = tm.path("mmapfs");
        fs::copy(util::mmapfs_bin(), &bin).unwrap();
        let home = tm.path("home");
        fs::create_dir(&home).unwrap();
        fs::write(home.join("src.bin"), vec![7u8; 64 << 10]).unwrap();
        for path in [&home, &home.join("src.bin")] {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).unwrap();
        }
        CarolHome {
            _scratch: tm,
            home,
            bin,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        as_carol(&self.home, &self.bin, args)
    }
}

/// Whatever is still mounted at the path is detached on drop.
struct DetachOnDrop(PathBuf);

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("fusermount3").arg("-uz").arg(&self.0).output();
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn an_unprivileged_user_can_unmount_and_remount_at_once_20_times() {
    require_user_fuse!();
    let carol = CarolHome::new();
    let mnt = carol.home.join("mnt");
    let _detach = DetachOnDrop(mnt.clone());
    let mnt_arg = mnt.to_str().unwrap();
    let mut daemons = HashSet::new();
    for round in 1..=20 {
        let out = carol.run(&["src.bin", mnt_arg]);
        assert!(out.status.success(), "mount {round}/20: {}", text(&out));
        assert!(is_mounted(&mnt), "mount {round}/20: not mounted");
        daemons.insert(crate::startup::daemon_pid(&mnt));
        let out = as_carol(&carol.home, Path::new("cat"), &["mnt/src.bin/stats"]);
        assert!(out.status.success(), "stats {round}/20: {}", text(&out));
        assert_eq!(
            stat_value(&String::from_utf8_lossy(&out.stdout), "mode").as_deref(),
            Some("shared")
        );
        let out = as_carol(&carol.home, Path::new("fusermount3"), &["-u", mnt_arg]);
        assert!(out.status.success(), "unmount {round}/20: {}", text(&out));
    }
    util::wait_until("every daemon to exit", || {
        daemons.iter().all(|pid| !daemon_alive(*pid))
    });
    assert!(!is_mounted(&mnt));
}

#[test]
fn an_error_after_the_fork_is_printed_once() {
    require_user_fuse!();
    let conf = fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    assert!(
        !conf.lines().any(|l| l.trim() == "user_allow_other"),
        "this test needs /etc/fuse.conf without user_allow_other"
    );
    let carol = CarolHome::new();
    let mnt = carol.home.join("mnt");
    let _detach = DetachOnDrop(mnt.clone());
    // Daemon mode: the mount (and its refusal) happens in the child.
    let out = carol.run(&["-o", "allow_other", "src.bin", mnt.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // Counted in the text, not by lines: two writers may interleave.
    assert_eq!(
        err.matches("mmapfs:").count(),
        1,
        "want the error once:\n{err}"
    );
    assert!(err.starts_with("mmapfs: "), "{err}");
    assert!(!is_mounted(&mnt));
    assert!(!mnt.exists(), "created mountpoint left behind");
}
