//! Permission checks, and what other users may learn through the mount.

use super::*;

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
