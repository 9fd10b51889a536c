//! Security: what users other than the mounting one may do and learn
//! through the mount, and start-up paths another user could tamper with
//! (planted symlinks and FIFOs, a renamed mountpoint). The other users
//! are unprivileged system users made for the tests.

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

// ---- 1. Permission checks -------------------------------------------------

const SECRET: &[u8] = b"root only: not for other users";

/// Each combination of the options that let other users reach the mount.
const ACCESS_OPTIONS: [&str; 8] = [
    "",
    "allow_other",
    "allow_root",
    "auto_unmount",
    "allow_other,allow_root",
    "allow_other,auto_unmount",
    "allow_root,auto_unmount",
    "allow_other,allow_root,auto_unmount",
];

/// The kernel's super options of the mount at `mnt` (/proc/self/mountinfo).
fn super_options(mnt: &Path) -> String {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = mnt.to_string_lossy();
    info.lines()
        .find(|l| l.split(' ').nth(4) == Some(&*target))
        .and_then(|l| l.split(" - ").nth(1))
        .and_then(|rest| rest.split(' ').nth(2))
        .unwrap_or_else(|| panic!("{target} not in mountinfo:\n{info}"))
        .to_string()
}

/// Mount a root-only 0600 source with each option set (through `mmapfs`
/// itself, or `mount -t fuse.mmapfs`); another user must neither read nor
/// write `data` nor write `msync`.
fn root_only_source_stays_closed(through_mount_t: bool) {
    let alice = alice();
    let mut problems = Vec::new();
    for opts in ACCESS_OPTIONS {
        let tm = scratch();
        let secret = tm.path("secret.bin");
        put(&secret, SECRET, 0o600);
        fs::create_dir(&tm.mnt).unwrap();
        let out = if through_mount_t {
            let o = if opts.is_empty() {
                String::new()
            } else {
                format!(" -o {opts}")
            };
            sh(
                tm.dir.path(),
                &format!("mount -t fuse.mmapfs secret.bin mnt{o}"),
            )
        } else if opts.is_empty() {
            start(&tm, &["secret.bin"])
        } else {
            start(&tm, &["-o", opts, "secret.bin"])
        };
        if !out.status.success() {
            // libfuse refuses allow_other with allow_root; so may mmapfs.
            let both = opts.contains("allow_other") && opts.contains("allow_root");
            if !both || stderr(&out).trim_end().lines().count() != 1 || is_mounted(&tm.mnt) {
                problems.push(format!("-o {opts:?}: did not mount: {}", stderr(&out)));
            }
            continue;
        }
        let options = super_options(&tm.mnt);
        let words: Vec<&str> = options.split(',').collect();
        if words.contains(&"allow_other") && !words.contains(&"default_permissions") {
            problems.push(format!(
                "-o {opts:?}: allow_other without default_permissions: {options}"
            ));
        }
        for (what, script) in [
            ("read data", "cat mnt/secret.bin/data"),
            ("write data", "printf x > mnt/secret.bin/data"),
            ("write msync", "echo sync > mnt/secret.bin/msync"),
        ] {
            let out = alice.sh(tm.dir.path(), script);
            if !denied(&out) {
                problems.push(format!(
                    "-o {opts:?}: {} could {what}: {}, stderr {:?}",
                    alice.name,
                    out.status,
                    stderr(&out)
                ));
            }
        }
        umount_and_wait(tm.dir.path(), &tm.mnt);
        if fs::read(&secret).unwrap() != SECRET {
            problems.push(format!("-o {opts:?}: the source changed"));
        }
    }
    assert_no_problems(&problems);
}

#[test]
fn a_root_only_source_stays_closed_under_every_access_option() {
    require_fuse!();
    root_only_source_stays_closed(false);
}

#[test]
fn a_root_only_source_stays_closed_when_mounted_with_mount_t() {
    require_fuse!();
    let Some(_installed) = Installed::new() else {
        return;
    };
    root_only_source_stays_closed(true);
}

// ---- 2. What other users may learn ----------------------------------------

fn mode_of(path: &Path) -> (u32, u32, u32) {
    let meta = fs::metadata(path).unwrap();
    (meta.uid(), meta.gid(), meta.mode() & 0o7777)
}

#[test]
fn generated_files_of_a_root_only_source_are_closed_to_other_users() {
    require_fuse!();
    let alice = alice();
    let mut tm = scratch();
    put(&tm.path("pub.bin"), &[1u8; 8192], 0o644);
    put(&tm.path("secret.bin"), &[2u8; 8192], 0o600);
    tm.mount(&["-o", "allow_other", "pub.bin", "secret.bin"]);
    let dir = tm.dir.path();
    let mut problems = Vec::new();
    for file in READ_ONLY_FILES {
        let out = alice.sh(dir, &format!("cat mnt/secret.bin/{file}"));
        if !denied(&out) {
            problems.push(format!("read secret.bin/{file}: {}", out.status));
        }
        let out = alice.sh(dir, &format!("cat mnt/pub.bin/{file} > /dev/null"));
        if !out.status.success() {
            problems.push(format!("pub.bin/{file} unreadable: {}", stderr(&out)));
        }
    }
    let expected = [
        ("secret.bin/stats", 0o400),
        ("secret.bin/events", 0o400),
        ("secret.bin/msync", 0o600),
        ("secret.bin/data", 0o600),
        ("pub.bin/stats", 0o444),
        ("pub.bin/msync", 0o644),
        ("secret.bin", 0o555),
        ("", 0o555),
    ];
    for (file, mode) in expected {
        let (uid, _, got) = mode_of(&tm.mnt.join(file));
        if (uid, got) != (0, mode) {
            problems.push(format!("{file}: uid {uid} mode {got:o}, want 0 {mode:o}"));
        }
    }
    assert_no_problems(&problems);
}

#[test]
fn generated_files_follow_the_source_owner_group_and_mode() {
    require_fuse!();
    let (alice, bob) = (alice(), bob());
    let carol = test_user("mmapfs-carol");
    let mut tm = scratch();
    let team = tm.path("team.bin");
    put(&team, &[3u8; 8192], 0o640);
    std::os::unix::fs::chown(&team, Some(alice.uid), Some(bob.gid)).unwrap();
    tm.mount(&["-o", "allow_other", "team.bin"]);
    let dir = tm.dir.path();
    let mut problems = Vec::new();
    for (file, mode) in [("data", 0o640), ("stats", 0o440), ("msync", 0o640)] {
        let got = mode_of(&tm.file("team.bin", file));
        if got != (alice.uid, bob.gid, mode) {
            problems.push(format!(
                "{file}: (uid, gid, mode) {got:?}, want the source's"
            ));
        }
    }
    let checks: [(&User, &str, bool); 6] = [
        (&alice, "echo sync > mnt/team.bin/msync", true),
        (&alice, "cat mnt/team.bin/stats mnt/team.bin/events", true),
        (&bob, "cat mnt/team.bin/stats mnt/team.bin/events", true),
        (&bob, "echo sync > mnt/team.bin/msync", false),
        (&carol, "cat mnt/team.bin/stats", false),
        (&carol, "cat mnt/team.bin/mappers", false),
    ];
    for (user, script, allowed) in checks {
        let out = user.sh(dir, script);
        if allowed != out.status.success() || (!allowed && !denied(&out)) {
            problems.push(format!(
                "{} `{script}`: {}, stderr {:?}",
                user.name,
                out.status,
                stderr(&out)
            ));
        }
    }
    assert_no_problems(&problems);
    assert!(
        tm.read("team.bin", "msync").contains("result ok"),
        "the owner's sync ran"
    );
}

/// Whether a `mappers` listing has a line for `pid`.
fn lists_pid(mappers: &str, pid: u32) -> bool {
    mappers
        .lines()
        .any(|l| l.split(' ').next() == Some(&*pid.to_string()))
}

/// `mapper PATH --hold` run by `cmd`, once it has mapped the file.
fn hold_mapping(mut cmd: Command, path: &Path) -> Running {
    cmd.arg(path).arg("--hold");
    let mut mapper = Running::spawn(cmd);
    mapper.wait_line("ready");
    mapper
}

#[test]
fn mappers_shows_other_users_only_their_own_processes() {
    require_fuse!();
    let (alice, bob) = (alice(), bob());
    let mut tm = scratch();
    put(&tm.path("pub.bin"), &[4u8; 65536], 0o644);
    // The example may sit in a directory other users cannot enter.
    let mapper = tm.path("mapper");
    fs::copy(example_bin("mapper"), &mapper).unwrap();
    fs::set_permissions(&mapper, fs::Permissions::from_mode(0o755)).unwrap();
    tm.mount(&["-o", "allow_other", "pub.bin"]);
    let data = tm.file("pub.bin", "data");
    let roots = hold_mapping(Command::new(&mapper), &data);
    let alices = hold_mapping(alice.command(&mapper), &data);
    let (root_pid, alice_pid) = (roots.pid(), alices.pid());

    let seen_by_root = tm.read("pub.bin", "mappers");
    assert!(
        lists_pid(&seen_by_root, root_pid) && lists_pid(&seen_by_root, alice_pid),
        "root sees every mapping:\n{seen_by_root}"
    );
    let seen_by_alice = alice.sh_ok(tm.dir.path(), "cat mnt/pub.bin/mappers");
    assert!(
        lists_pid(&seen_by_alice, alice_pid),
        "{} sees her own mapping:\n{seen_by_alice}",
        alice.name
    );
    assert!(
        !lists_pid(&seen_by_alice, root_pid),
        "{} must not see root's mapper {root_pid}:\n{seen_by_alice}",
        alice.name
    );
    let seen_by_bob = bob.sh_ok(tm.dir.path(), "cat mnt/pub.bin/mappers");
    assert_eq!(seen_by_bob, "", "{} maps nothing", bob.name);
    for mapper in [roots, alices] {
        let (status, _, err) = mapper.finish();
        assert!(status.success(), "{err}");
    }
}

/// The `pid=` values of an events listing.
fn event_pids(events: &str) -> Vec<&str> {
    events
        .split([' ', '\n'])
        .filter_map(|w| w.strip_prefix("pid="))
        .collect()
}

/// Open and read `data` in a background `cat`; returns its pid.
fn open_data_as(user: Option<&User>, dir: &Path) -> String {
    let script = "cat mnt/pub.bin/data > /dev/null & echo $!; wait";
    let out = match user {
        Some(user) => user.sh_ok(dir, script),
        None => sh_ok(dir, script),
    };
    out.trim().to_string()
}

#[test]
fn events_mask_the_pids_of_other_users_opens() {
    require_fuse!();
    let (alice, bob) = (alice(), bob());
    let mut tm = scratch();
    put(&tm.path("pub.bin"), &[5u8; 8192], 0o644);
    tm.mount(&["-o", "allow_other", "pub.bin"]);
    let dir = tm.dir.path();
    let root_pid = open_data_as(None, dir);
    let alice_pid = open_data_as(Some(&alice), dir);
    util::wait_until("both releases in events", || {
        let events = tm.read("pub.bin", "events");
        let pids = event_pids(&events);
        [&root_pid, &alice_pid]
            .iter()
            .all(|p| pids.iter().filter(|q| *q == *p).count() == 2)
    });
    let seen_by_root = tm.read("pub.bin", "events");
    let seen_by_alice = alice.sh_ok(dir, "cat mnt/pub.bin/events");
    let seen_by_bob = bob.sh_ok(dir, "cat mnt/pub.bin/events");
    let masked = "*".repeat(root_pid.len());
    let pids = event_pids(&seen_by_alice);
    assert!(
        pids.contains(&alice_pid.as_str()) && pids.contains(&masked.as_str()),
        "{} sees her own pid and root's masked:\n{seen_by_alice}",
        alice.name
    );
    assert!(
        pids.iter()
            .all(|p| *p == alice_pid || p.chars().all(|c| c == '*')),
        "{} sees another user's pid:\n{seen_by_alice}",
        alice.name
    );
    assert!(
        event_pids(&seen_by_bob)
            .iter()
            .all(|p| p.chars().all(|c| c == '*')),
        "{} opened nothing, so every pid is masked:\n{seen_by_bob}",
        bob.name
    );
    // Masking keeps each line's length, so offsets match for everyone.
    for (theirs, roots) in seen_by_alice.lines().zip(seen_by_root.lines()) {
        assert_eq!(theirs.len(), roots.len(), "{theirs:?} vs {roots:?}");
    }
}

/// What one reader (root if `None`) should find in the root `stats` and
/// `metrics`: `sources`, `length_bytes`, names shown, names hidden.
type View<'a> = (
    Option<&'a User>,
    &'a str,
    &'a str,
    &'a [&'a str],
    &'a [&'a str],
);

#[test]
fn root_stats_and_metrics_cover_only_sources_the_reader_may_read() {
    require_fuse!();
    let (alice, bob) = (alice(), bob());
    let mut tm = scratch();
    put(&tm.path("pub.bin"), &[6u8; 4096], 0o644);
    put(&tm.path("team.bin"), &[7u8; 8192], 0o640);
    std::os::unix::fs::chown(tm.path("team.bin"), None, Some(bob.gid)).unwrap();
    put(&tm.path("secret.bin"), &[8u8; 16384], 0o600);
    tm.mount(&["-o", "allow_other", "pub.bin", "team.bin", "secret.bin"]);
    let dir = tm.dir.path();
    let all: &[&str] = &["pub.bin", "team.bin", "secret.bin"];
    let views: [View; 3] = [
        (None, "3", "28672", all, &[]),
        (Some(&bob), "2", "12288", &all[..2], &all[2..]),
        (Some(&alice), "1", "4096", &all[..1], &all[1..]),
    ];
    let mut problems = Vec::new();
    for (reader, sources, length_bytes, shown, hidden) in views {
        let read = |file: &str| match reader {
            Some(u) => u.sh_ok(dir, &format!("cat mnt/{file}")),
            None => sh_ok(dir, &format!("cat mnt/{file}")),
        };
        let who = reader.map_or("root", |u| u.name.as_str());
        let (stats, metrics) = (read("stats"), read("metrics"));
        let got = (
            stat_value(&stats, "sources"),
            stat_value(&stats, "length_bytes"),
        );
        if got != (Some(sources.into()), Some(length_bytes.into())) {
            problems.push(format!("{who}: stats (sources, length_bytes) {got:?}"));
        }
        for name in shown.iter().filter(|n| !metrics.contains(**n)) {
            problems.push(format!("{who}: {name} missing from metrics"));
        }
        for name in hidden.iter().filter(|n| metrics.contains(**n)) {
            problems.push(format!("{who}: metrics mention {name}"));
        }
    }
    assert_no_problems(&problems);
}

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
