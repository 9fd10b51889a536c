//! Ending a mount: every way out syncs, exits 0 and leaves no mount; a
//! killed daemon loses nothing that reached `data`.

use std::fs;
use std::os::unix::fs::FileExt;

use crate::util::{self, is_mounted, source_has, write_marker, TestMount};

fn ends_cleanly(how: &str, io: &str) {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--io", io, "--size", "4M", "src.bin"]);
    write_marker(&tm, 3 << 20, b"last words");
    let (status, err) = match how {
        "fusermount3" => tm.unmount(),
        "umount" => {
            util::wait_until("umount to succeed", || {
                util::sh(tm.dir.path(), "umount mnt").status.success()
            });
            tm.wait_exit()
        }
        signal => {
            tm.signal(signal);
            tm.wait_exit()
        }
    };
    assert!(status.success(), "{how}/{io}: {status}: {err}");
    assert!(!is_mounted(&tm.mnt), "{how}/{io}: mount left behind");
    assert!(
        !tm.mnt.exists(),
        "{how}/{io}: created mountpoint not removed"
    );
    assert!(
        source_has(&tm, 3 << 20, b"last words"),
        "{how}/{io}: data lost"
    );
}

#[test]
fn sigterm_syncs_and_exits_0() {
    ends_cleanly("TERM", "auto");
    ends_cleanly("TERM", "cached");
}

#[test]
fn ctrl_c_syncs_and_exits_0() {
    ends_cleanly("INT", "auto");
    ends_cleanly("INT", "cached");
}

#[test]
fn umount_and_fusermount_sync_and_exit_0() {
    ends_cleanly("umount", "auto");
    ends_cleanly("fusermount3", "cached");
}

#[test]
fn kill_9_loses_nothing_written_in_shared_mode() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--size", "4M", "src.bin"]);
    write_marker(&tm, 4096 * 77, b"survives kill -9");
    tm.kill_9_and_clean_up();
    assert!(source_has(&tm, 4096 * 77, b"survives kill -9"));
    // A new mount of the same source serves it.
    tm.mount(&["src.bin"]);
    let mut buf = [0u8; 16];
    fs::File::open(tm.file("src.bin", "data"))
        .unwrap()
        .read_exact_at(&mut buf, 4096 * 77)
        .unwrap();
    assert_eq!(&buf, b"survives kill -9");
}

#[test]
fn no_sync_on_exit_skips_the_final_sync_event() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["-v", "--no-sync-on-exit", "--size", "64K", "src.bin"]);
    let (status, err) = tm.unmount();
    assert!(status.success());
    assert!(!err.contains("unmount synced=yes"), "{err}");
    let mut tm = TestMount::new();
    tm.mount(&["-v", "--size", "64K", "src.bin"]);
    let (status, err) = tm.unmount();
    assert!(status.success());
    assert!(err.contains("unmount synced=yes"), "{err}");
}

#[test]
fn auto_unmount_cleans_up_after_kill_9_and_daemon_mode_returns() {
    require_fuse!();
    let tm = TestMount::new();
    // Daemon mode: the parent must return even though fusermount3 keeps a
    // watcher process for auto_unmount.
    tm.run_ok(&["-o", "auto_unmount", "--size", "64K", "src.bin"]);
    assert!(is_mounted(&tm.mnt));
    let pid = crate::startup::daemon_pid(&tm.mnt);
    util::sh_ok(tm.dir.path(), &format!("kill -9 {pid}"));
    util::wait_until("auto_unmount to remove the dead mount", || {
        !is_mounted(&tm.mnt)
    });
}
