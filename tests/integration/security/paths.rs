//! Paths another user could tamper with: planted symlinks and FIFOs, a renamed mountpoint.

use super::*;

// ---- 3. Paths another user could tamper with ------------------------------

/// A world-writable sticky directory `tmp` in the scratch directory.
fn sticky_tmp(tm: &TestMount) -> PathBuf {
    let tmp = tm.path("tmp");
    mkdir(&tmp, 0o1777);
    tmp
}

/// Whether `text` names `user`, by name or by uid.
fn names_user(text: &str, user: &User) -> bool {
    let uid = user.uid.to_string();
    text.split(|c: char| !c.is_alphanumeric() && c != '-')
        .any(|w| w == user.name || w == uid)
}

#[test]
fn size_never_follows_a_symlink_planted_in_a_sticky_directory() {
    require_fuse!();
    let alice = alice();
    let tm = scratch();
    sticky_tmp(&tm);
    let victim = tm.path("secret.db");
    put(&victim, &[9u8; 4096], 0o600);
    alice.sh_ok(tm.dir.path(), "ln -s ../secret.db tmp/new.bin");
    let mut problems = Vec::new();
    for args in [&["--size", "64M", "tmp/new.bin"][..], &["tmp/new.bin"]] {
        match refused(&tm, args) {
            Err(problem) => problems.push(problem),
            Ok(err) if !err.contains("tmp/new.bin") || !names_user(&err, &alice) => {
                problems.push(format!("{args:?}: name the link and its owner: {err}"));
            }
            Ok(_) => {}
        }
        let bytes = fs::read(&victim).unwrap();
        if bytes != [9u8; 4096] {
            problems.push(format!("{args:?}: secret.db is now {} bytes", bytes.len()));
        }
    }
    assert_no_problems(&problems);
}

#[test]
fn size_never_follows_a_directory_symlink_owned_by_another_user() {
    require_fuse!();
    let alice = alice();
    let tm = scratch();
    sticky_tmp(&tm);
    let rootdir = tm.path("rootdir");
    mkdir(&rootdir, 0o700);
    put(&rootdir.join("victim"), &[10u8; 4096], 0o600);
    // One link in the sticky directory, one in a directory of her own.
    let home = tm.path("home");
    mkdir(&home, 0o755);
    std::os::unix::fs::chown(&home, Some(alice.uid), Some(alice.gid)).unwrap();
    alice.sh_ok(
        tm.dir.path(),
        "ln -s ../rootdir tmp/dlink && ln -s ../rootdir home/dlink",
    );
    let mut problems = Vec::new();
    for link in ["tmp/dlink", "home/dlink"] {
        for file in ["victim", "new.bin"] {
            let path = format!("{link}/{file}");
            problems.extend(refusal_problem(&tm, &["--size", "64M", &path], &[link]));
        }
    }
    assert_no_problems(&problems);
    assert_eq!(fs::read(rootdir.join("victim")).unwrap(), [10u8; 4096]);
    assert!(
        !rootdir.join("new.bin").exists(),
        "created through her link"
    );
}

#[test]
fn a_root_owned_symlink_is_still_followed() {
    require_fuse!();
    let mut tm = scratch();
    let tmp = sticky_tmp(&tm);
    put(&tm.path("real.bin"), &[11u8; 4096], 0o644);
    mkdir(&tm.path("rootdir"), 0o755);
    symlink("../real.bin", tmp.join("rootlink")).unwrap();
    symlink("../rootdir", tmp.join("rootdirlink")).unwrap();
    tm.mount(&["--size", "64K", "tmp/rootlink", "tmp/rootdirlink/made.bin"]);
    assert_eq!(fs::metadata(tm.path("real.bin")).unwrap().len(), 65536);
    assert_eq!(
        fs::metadata(tm.path("rootdir/made.bin")).unwrap().len(),
        65536
    );
    assert_eq!(
        &fs::read(tm.file("rootlink", "data")).unwrap()[..4],
        &[11u8; 4]
    );
    assert_eq!(tm.stat("made.bin", "length_bytes"), "65536");
    let (status, err) = tm.unmount();
    assert!(status.success(), "{err}");
}

#[test]
fn a_fifo_at_the_source_path_is_refused_at_once() {
    require_fuse!();
    let alice = alice();
    let tm = scratch();
    sticky_tmp(&tm);
    alice.sh_ok(tm.dir.path(), "mkfifo -m 666 tmp/fifo");
    let mut problems = Vec::new();
    for args in [
        &["tmp/fifo"][..],
        &["--read-only", "tmp/fifo"],
        &["--private", "tmp/fifo"],
        &["--size", "64M", "tmp/fifo"],
    ] {
        problems.extend(refusal_problem(&tm, args, &["FIFO"]));
    }
    assert_no_problems(&problems);
}

/// Swap `p` between a regular file (a hard link to `reg`) and a FIFO, as
/// fast as rename(2) goes; prints `ready` after the first round.
const SWAP_LOOP: &str = r#"
use POSIX qw(mkfifo);
$| = 1;
open(my $f, '>', 'reg') or die "reg: $!";
print $f 'x' x 4096;
close($f);
my $first = 1;
while (1) {
    mkfifo('f.tmp', 0644) or die "mkfifo: $!";
    rename('f.tmp', 'p') or die "rename: $!";
    link('reg', 'r.tmp') or die "link: $!";
    rename('r.tmp', 'p') or die "rename: $!";
    print "ready\n" if $first;
    $first = 0;
}
"#;

#[test]
fn a_path_swapped_between_file_and_fifo_never_hangs_start_up() {
    require_fuse!();
    let alice = alice();
    let tm = scratch();
    let tmp = sticky_tmp(&tm);
    let mut cmd = alice.command("perl");
    cmd.arg("-e").arg(SWAP_LOOP).current_dir(&tmp);
    let mut swapper = Running::spawn(cmd);
    swapper.wait_line("ready");
    let (mut mounted, mut fifo_refusals) = (0, 0);
    let mut problems = Vec::new();
    for i in 0..30 {
        // Read-only opens of a FIFO block; read-write ones do not.
        let args: &[&str] = if i % 2 == 0 {
            &["--read-only", "tmp/p"]
        } else {
            &["tmp/p"]
        };
        let out = start(&tm, args);
        let err = stderr(&out);
        if out.status.success() {
            mounted += 1;
            umount_and_wait(tm.dir.path(), &tm.mnt);
        } else if out.status.code() == Some(1)
            && err.contains("FIFO")
            && err.trim_end().lines().count() == 1
        {
            fifo_refusals += 1;
        } else {
            problems.push(format!("start {i} {args:?}: {}: {err}", out.status));
        }
    }
    assert_no_problems(&problems);
    eprintln!("{mounted} starts mounted, {fifo_refusals} refused the FIFO");
}

// ---- 4. A mountpoint whose parent is renamed ------------------------------

/// Who plants what at the old mountpoint path once its parent is renamed.
enum Plant {
    Nothing,
    /// A FIFO where the mountpoint was.
    FifoAtMountpoint,
    /// A FIFO where the old path of `src.bin/data` was.
    FifoAtData,
}

/// Mount a 4 KiB-offset window (cached mode) at `tmp/parent/mnt`, store
/// through an outside mapping, rename `tmp/parent` to `tmp/moved`, plant
/// something at the old path; then `echo sync > msync` via the new path
/// pushes the store, and SIGTERM unmounts and exits 0 promptly.
fn sync_and_sigterm_after_parent_rename(plant: Plant) {
    let alice = alice();
    let mut tm = scratch();
    let tmp = sticky_tmp(&tm);
    mkdir(&tmp.join("parent"), 0o755);
    mkdir(&tmp.join("parent/mnt"), 0o755);
    put(&tm.path("src.bin"), &[0u8; 65536], 0o644);
    let old = tmp.join("parent/mnt");
    tm.mnt = old.clone();
    tm.mount(&["--offset", "4096", "src.bin"]);
    assert_eq!(tm.stat("src.bin", "io_mode"), "cached");
    let mut cmd = Command::new(example_bin("mapper"));
    cmd.arg("--write").arg("4096=held store");
    let held = hold_mapping(cmd, &tm.file("src.bin", "data"));

    fs::rename(tmp.join("parent"), tmp.join("moved")).unwrap();
    let new = tmp.join("moved/mnt");
    tm.mnt = new.clone();
    let dir = tm.dir.path();
    match plant {
        Plant::Nothing => {}
        Plant::FifoAtMountpoint => {
            alice.sh_ok(dir, "mkdir tmp/parent && mkfifo tmp/parent/mnt");
        }
        Plant::FifoAtData => {
            alice.sh_ok(
                dir,
                "mkdir -p tmp/parent/mnt/src.bin && mkfifo tmp/parent/mnt/src.bin/data",
            );
        }
    }
    let mut sync = Command::new("sh");
    sync.arg("-c")
        .arg("echo sync > tmp/moved/mnt/src.bin/msync")
        .current_dir(dir);
    let Some(out) = output_within(sync, DEADLINE) else {
        // The stuck write ends only when the daemon answers or dies.
        tm.signal("KILL");
        panic!("echo sync > msync hung");
    };
    assert!(
        out.status.success(),
        "sync via the new path: {}",
        stderr(&out)
    );
    let source = fs::read(tm.path("src.bin")).unwrap();
    assert_eq!(
        &source[8192..8202],
        b"held store",
        "the sync pushed the store"
    );
    let (status, _, err) = held.finish();
    assert!(status.success(), "{err}");

    tm.signal("TERM");
    let Some((status, err)) = tm.wait_exit_within(PROMPTLY) else {
        tm.signal("KILL");
        panic!("the daemon still runs {PROMPTLY:?} after SIGTERM");
    };
    assert!(status.success(), "{status}: {err}");
    assert!(!is_mounted(&new) && !is_mounted(&old), "mount left behind");
    assert!(
        fs::metadata(&new).is_ok_and(|m| m.is_dir()),
        "the new path is a plain directory again"
    );
}

#[test]
fn sync_and_sigterm_work_after_the_mountpoint_parent_is_renamed() {
    require_fuse!();
    sync_and_sigterm_after_parent_rename(Plant::Nothing);
}

#[test]
fn a_fifo_planted_at_the_old_mountpoint_path_hangs_nothing() {
    require_fuse!();
    sync_and_sigterm_after_parent_rename(Plant::FifoAtMountpoint);
}

#[test]
fn a_fifo_planted_at_the_old_data_path_hangs_nothing() {
    require_fuse!();
    sync_and_sigterm_after_parent_rename(Plant::FifoAtData);
}
