//! Who may use the mount: only the mounting user without `allow_other`;
//! with it, the source's permissions decide (`default_permissions`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::util::{sh, TestMount};

/// Run `script` as the unprivileged user `nobody`; returns (success, stderr).
fn as_nobody(dir: &Path, script: &str) -> (bool, String) {
    let out = sh(
        dir,
        &format!("LC_ALL=C setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '{script}'"),
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch() -> TestMount {
    let tm = TestMount::new();
    fs::set_permissions(tm.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    tm
}

#[test]
fn other_users_are_shut_out_without_allow_other() {
    require_fuse!();
    let mut tm = scratch();
    fs::write(tm.path("src.bin"), b"secret").unwrap();
    fs::set_permissions(tm.path("src.bin"), fs::Permissions::from_mode(0o644)).unwrap();
    tm.mount(&["src.bin"]);
    let (ok, err) = as_nobody(tm.dir.path(), "cat mnt/stats");
    assert!(!ok && err.contains("Permission denied"), "{err}");
    let (ok, err) = as_nobody(tm.dir.path(), "cat mnt/src.bin/data");
    assert!(!ok && err.contains("Permission denied"), "{err}");
}

#[test]
fn with_allow_other_the_source_permissions_decide() {
    require_fuse!();
    let mut tm = scratch();
    fs::write(tm.path("open.bin"), b"public").unwrap();
    fs::set_permissions(tm.path("open.bin"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(tm.path("closed.bin"), b"secret").unwrap();
    fs::set_permissions(tm.path("closed.bin"), fs::Permissions::from_mode(0o600)).unwrap();
    tm.mount(&["-o", "allow_other", "open.bin", "closed.bin"]);
    let dir = tm.dir.path();
    let (ok, err) = as_nobody(dir, "cat mnt/open.bin/data && cat mnt/stats >/dev/null");
    assert!(ok, "{err}");
    let (ok, err) = as_nobody(dir, "cat mnt/closed.bin/data");
    assert!(!ok && err.contains("Permission denied"), "{err}");
    let (ok, err) = as_nobody(dir, "printf x > mnt/open.bin/data");
    assert!(!ok && err.contains("Permission denied"), "{err}");
    let (ok, err) = as_nobody(dir, "echo sync > mnt/open.bin/msync");
    assert!(
        !ok && err.contains("Permission denied"),
        "msync is 0644 root: {err}"
    );
    assert_eq!(fs::read(tm.path("open.bin")).unwrap(), b"public");
}
