//! Fitting the Linux toolbox: `mount -t fuse.mmapfs`, fstab lines, the man
//! page and completions.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::startup::daemon_pid;
use crate::util::{self, mmapfs_bin, sh, sh_ok, stat_value, Installed, TestMount};

fn stats_of(mnt: &Path, source: &str) -> String {
    fs::read_to_string(mnt.join(source).join("stats")).unwrap()
}

/// `umount MNT` (retried while busy), then wait for its daemon to exit.
pub fn umount_and_wait(dir: &Path, mnt: &Path) {
    let pid = daemon_pid(mnt);
    util::wait_until("umount", || {
        sh(dir, &format!("umount '{}'", mnt.display()))
            .status
            .success()
    });
    util::wait_until("daemon exit", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
}

#[test]
fn mount_t_fuse_mmapfs_and_fstab_lines_work() {
    require_fuse!();
    let Some(_installed) = Installed::new() else {
        return;
    };
    let tm = TestMount::new();
    fs::write(tm.path("src.bin"), vec![5u8; 64 << 10]).unwrap();
    fs::create_dir(&tm.mnt).unwrap();
    let src = tm.path("src.bin");
    let dir = tm.dir.path();

    sh_ok(
        dir,
        &format!(
            "mount -t fuse.mmapfs '{}' '{}' -o ro",
            src.display(),
            tm.mnt.display()
        ),
    );
    let stats = stats_of(&tm.mnt, "src.bin");
    assert_eq!(stat_value(&stats, "writable").as_deref(), Some("no"));
    umount_and_wait(dir, &tm.mnt);

    // An fstab line (from a file given to mount -T, not the system's).
    let fstab = tm.path("fstab");
    fs::write(
        &fstab,
        format!(
            "{}  {}  fuse.mmapfs  defaults,mmap_private,io=cached  0 0\n",
            src.display(),
            tm.mnt.display()
        ),
    )
    .unwrap();
    sh_ok(
        dir,
        &format!("mount -T '{}' '{}'", fstab.display(), tm.mnt.display()),
    );
    let stats = stats_of(&tm.mnt, "src.bin");
    assert_eq!(stat_value(&stats, "mode").as_deref(), Some("private"));
    sh_ok(dir, "printf private > mnt/src.bin/data");
    umount_and_wait(dir, &tm.mnt);
    assert_eq!(
        fs::read(&src).unwrap(),
        vec![5u8; 64 << 10],
        "private never reaches the file"
    );
}

#[test]
fn man_page_and_completions_are_generated() {
    let out = Command::new(mmapfs_bin()).arg("--man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        "THE TREE",
        "EXIT STATUS",
        "EXAMPLES",
    ] {
        assert!(page.contains(section), "man page lacks {section}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(mmapfs_bin())
            .args(["--completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("read-only"),
            "{shell}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("mmapfs.bash");
    fs::write(
        &script,
        Command::new(mmapfs_bin())
            .args(["--completions", "bash"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    sh_ok(tmp.path(), &format!("bash -n '{}'", script.display()));
    let help = Command::new(mmapfs_bin()).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.lines().count() < 80,
        "--help should stay readable:\n{help}"
    );
    assert!(
        help.contains("--private") && help.contains("fusermount3 -u"),
        "{help}"
    );
}
