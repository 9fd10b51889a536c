//! Files belong to the user who creates them, and the source's permissions
//! hold through the mount: an unprivileged user can do nothing there that
//! the source directory would not let them do.

use std::fs;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::process::Output;

use super::*;
use crate::util::{alice, TestFs, User};

/// A scratch directory others can traverse, with `db` 0755 holding:
/// `hers/` (0755, alice's), `rootdir/` (0755, root's), `secret` (0600,
/// root's), `public` (0644, root's) and `shared/` (1777); mounted with
/// `allow_other` so alice reaches the mount.
fn shared_tree(alice: &User) -> TestMount {
    let mut tm = scratch();
    open_to_all(tm.dir.path());
    open_to_all(&src(&tm, ""));
    fs::create_dir(src(&tm, "hers")).unwrap();
    open_to_all(&src(&tm, "hers"));
    chown(src(&tm, "hers"), Some(alice.uid), Some(alice.gid)).unwrap();
    fs::create_dir(src(&tm, "rootdir")).unwrap();
    open_to_all(&src(&tm, "rootdir"));
    fs::write(src(&tm, "rootdir/inside"), b"root's").unwrap();
    fs::write(src(&tm, "secret"), b"top secret").unwrap();
    fs::set_permissions(src(&tm, "secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(src(&tm, "public"), b"read me").unwrap();
    fs::set_permissions(src(&tm, "public"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(src(&tm, "shared")).unwrap();
    fs::set_permissions(src(&tm, "shared"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(src(&tm, "shared/roots"), b"in a sticky directory").unwrap();
    mount_db(&mut tm, &["-o", "allow_other"]);
    tm
}

/// A scratch directory others can traverse, whose `db` (not mounted
/// yet) is a new ext4 of `size`, mode 1777, keeping `reserved_percent`
/// of its blocks for root.
fn scratch_on_ext4(size: &str, reserved_percent: u32) -> (TestMount, TestFs) {
    let tm = scratch();
    open_to_all(tm.dir.path());
    let disk = TestFs::ext4(&src(&tm, ""), &tm.path("db.img"), size, reserved_percent);
    fs::set_permissions(src(&tm, ""), fs::Permissions::from_mode(0o1777)).unwrap();
    (tm, disk)
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn files_a_user_creates_belong_to_them_in_the_source() {
    require_user_fuse!();
    let alice = alice();
    let tm = shared_tree(&alice);
    let d = data(&tm, "");
    alice.sh_ok(
        &d,
        "echo mine > hers/file && mkdir hers/dir && echo also > shared/hers \
         && ln -s file hers/link && cat public > hers/copy",
    );
    for rel in ["hers/file", "hers/dir", "shared/hers", "hers/copy"] {
        let meta = fs::metadata(src(&tm, rel)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (alice.uid, alice.gid),
            "{rel} in the source"
        );
        let seen = fs::metadata(data(&tm, rel)).unwrap();
        assert_eq!((seen.uid(), seen.gid()), (alice.uid, alice.gid), "{rel}");
    }
    let link = fs::symlink_metadata(src(&tm, "hers/link")).unwrap();
    assert_eq!(link.uid(), alice.uid, "symlink owner");
    assert_eq!(fs::read(src(&tm, "hers/copy")).unwrap(), b"read me");
    // Her umask applies, as it would in the source.
    let out = alice.sh_ok(
        &d,
        "umask 077 && echo x > hers/private && stat -c %a hers/private",
    );
    assert_eq!(out.trim(), "600");
    assert_eq!(
        fs::metadata(src(&tm, "hers/private")).unwrap().mode() & 0o777,
        0o600
    );
    // She may chmod and rename her own files, and remove them.
    alice.sh_ok(
        &d,
        "chmod 640 hers/file && mv hers/file hers/moved && rm hers/copy",
    );
    assert_eq!(
        fs::metadata(src(&tm, "hers/moved")).unwrap().mode() & 0o777,
        0o640
    );
    assert!(!src(&tm, "hers/copy").exists());
}

#[test]
fn a_user_cannot_do_through_the_mount_what_the_source_forbids() {
    require_user_fuse!();
    let alice = alice();
    let tm = shared_tree(&alice);
    let d = data(&tm, "");
    let mut problems = Vec::new();
    for (what, script) in [
        ("read a root 0600 file", "cat secret"),
        ("write a root 0644 file", "echo x >> public"),
        ("create in a root 0755 directory", "echo x > rootdir/new"),
        ("mkdir in a root 0755 directory", "mkdir rootdir/newdir"),
        ("unlink in a root 0755 directory", "rm -f rootdir/inside"),
        ("rename out of a root directory", "mv rootdir/inside hers/"),
        (
            "unlink root's file in a sticky directory",
            "rm -f shared/roots",
        ),
        ("chmod a root file", "chmod 666 public"),
        ("chown to herself", "chown $(id -u) public"),
        ("set the time of a root file", "touch -d @1 public"),
        (
            "hard-link a root file into her directory",
            "ln secret hers/stolen",
        ),
        ("truncate a root file", "truncate -s 0 public"),
        ("create in the top of the tree", "echo x > top"),
        (
            "set an xattr on a root file",
            "/usr/bin/python3 -c \"import os; os.setxattr('public', 'user.x', b'1')\"",
        ),
    ] {
        let out = alice.sh(&d, script);
        let text = said(&out);
        if out.status.success() {
            problems.push(format!("{what}: `{script}` succeeded: {text}"));
        } else if !(text.contains("Permission denied") || text.contains("Operation not permitted"))
        {
            problems.push(format!("{what}: `{script}`: not EACCES/EPERM: {text}"));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    // Nothing changed in the source.
    assert_eq!(fs::read(src(&tm, "secret")).unwrap(), b"top secret");
    assert_eq!(fs::read(src(&tm, "public")).unwrap(), b"read me");
    assert_eq!(names(&src(&tm, "rootdir")), ["inside"]);
    assert_eq!(names(&src(&tm, "hers")), Vec::<String>::new());
    assert_eq!(names(&src(&tm, "shared")), ["roots"]);
    assert!(!src(&tm, "top").exists());
    let public = fs::metadata(src(&tm, "public")).unwrap();
    assert_eq!((public.mode() & 0o7777, public.uid()), (0o644, 0));
    assert!(public.mtime() > 1);
    // What the source allows her, she may do: read a 0644 file.
    assert_eq!(alice.sh_ok(&d, "cat public"), "read me");
}

#[test]
fn a_write_by_a_user_clears_set_id_bits_as_in_the_source() {
    require_user_fuse!();
    let alice = alice();
    let tm = shared_tree(&alice);
    let d = data(&tm, "");
    for (rel, mode) in [("shared/suid", 0o4777), ("shared/both", 0o6777)] {
        fs::write(src(&tm, rel), b"root's program").unwrap();
        fs::set_permissions(src(&tm, rel), fs::Permissions::from_mode(mode)).unwrap();
    }
    // Once through the daemon's lookup, so the kernel knows the mode.
    assert_eq!(
        fs::metadata(data(&tm, "shared/suid")).unwrap().mode() & 0o7777,
        0o4777
    );
    alice.sh_ok(
        &d,
        "printf x | dd of=shared/suid conv=notrunc status=none \
         && printf x | dd of=shared/both bs=1 seek=3 conv=notrunc status=none \
         && echo mine > hers/own && chmod 6755 hers/own \
         && printf y | dd of=hers/own conv=notrunc status=none",
    );
    for (rel, left) in [
        ("shared/suid", 0o777),
        ("shared/both", 0o777),
        ("hers/own", 0o755),
    ] {
        let in_source = fs::metadata(src(&tm, rel)).unwrap().mode() & 0o7777;
        assert_eq!(in_source, left, "{rel} in the source: {in_source:o}");
        let seen = alice.sh_ok(&d, &format!("stat -c %a {rel}"));
        assert_eq!(seen.trim(), format!("{left:o}"), "{rel} through the mount");
    }
    assert_eq!(
        fs::read(src(&tm, "shared/suid")).unwrap(),
        b"xoot's program"
    );
    assert_eq!(fs::read(src(&tm, "hers/own")).unwrap(), b"yine\n");
    // A truncate clears them too, as the kernel does for its caller.
    fs::set_permissions(src(&tm, "shared/suid"), fs::Permissions::from_mode(0o6777)).unwrap();
    alice.sh_ok(&d, "truncate -s 2 shared/suid");
    assert_eq!(
        fs::metadata(src(&tm, "shared/suid")).unwrap().mode() & 0o7777,
        0o777
    );
    // And so does fallocate, made as the opener.
    fs::set_permissions(src(&tm, "shared/suid"), fs::Permissions::from_mode(0o6777)).unwrap();
    alice.sh_ok(&d, "fallocate -z -o 0 -l 4096 shared/suid");
    assert_eq!(
        fs::metadata(src(&tm, "shared/suid")).unwrap().mode() & 0o7777,
        0o777
    );
}

#[test]
fn a_user_lists_attributes_and_sets_link_times_of_her_own_files() {
    require_user_fuse!();
    let alice = alice();
    let tm = shared_tree(&alice);
    let d = data(&tm, "");
    alice.sh_ok(
        &d,
        "echo mine > hers/tagged && ln -s tagged hers/link \
         && setfattr -n user.colour -v blue hers/tagged \
         && touch -h -d 2001-02-03T04:05:06Z hers/link",
    );
    // Root's trusted.* names are not hers to list, as in the source.
    let root_set = crate::util::sh(&src(&tm, "hers"), "setfattr -n trusted.hidden -v 1 tagged");
    assert!(root_set.status.success(), "{}", said(&root_set));
    let listed = alice.sh_ok(&d, "getfattr --absolute-names -m - -d hers/tagged");
    assert!(listed.contains("user.colour=\"blue\""), "{listed}");
    assert!(!listed.contains("trusted."), "{listed}");
    let link = fs::symlink_metadata(src(&tm, "hers/link")).unwrap();
    assert_eq!(
        link.mtime(),
        981_173_106,
        "the link's own time, in the source"
    );
}

#[test]
fn a_user_filling_the_disk_through_the_mount_leaves_roots_reserved_blocks() {
    require_user_fuse!();
    let alice = alice();
    // A fifth of the disk is kept for root, as ext4 does (5 % by default).
    let (mut tm, _disk) = scratch_on_ext4("32M", 20);
    mount_db(&mut tm, &["-o", "allow_other"]);
    let reserved = {
        let v = nix::sys::statvfs::statvfs(&src(&tm, "")).unwrap();
        (v.blocks_free() - v.blocks_available()) * v.fragment_size()
    };
    // Root holds her file open through the mount while she writes: the
    // file's one backing file then serves both.
    alice.sh_ok(&data(&tm, ""), "touch fill");
    let mut holder = crate::util::Running::spawn({
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg("exec 3<fill && echo held && cat >/dev/null")
            .current_dir(data(&tm, ""));
        cmd
    });
    holder.wait_line("held");
    let filled = alice.sh(
        &data(&tm, ""),
        "dd if=/dev/zero of=fill bs=64k count=1024 conv=notrunc",
    );
    let (status, _, err) = holder.finish();
    assert!(status.success(), "{err}");
    assert!(
        !filled.status.success() && said(&filled).contains("No space left"),
        "alice's 64 MiB fitted a 32 MiB disk: {}",
        said(&filled)
    );
    assert_eq!(fs::metadata(src(&tm, "fill")).unwrap().uid(), alice.uid);
    // Her writes stopped where they would have in DIR: root's share is
    // there for root.
    let v = nix::sys::statvfs::statvfs(&src(&tm, "")).unwrap();
    let left = v.blocks_free() * v.fragment_size();
    assert!(
        left >= reserved / 2,
        "alice's writes took root's reserved blocks: {left} of {reserved} bytes left"
    );
    crate::util::sh_ok(
        &src(&tm, ""),
        "dd if=/dev/zero of=roots bs=64k count=16 conv=fsync status=none",
    );
}

#[test]
fn an_acl_that_refuses_a_user_holds_under_files_too() {
    require_user_fuse!();
    let alice = alice();
    let tm = shared_tree(&alice);
    let db = tm.mnt.join(DB);
    let refused = [
        "cat data/public",
        "ls data/rootdir",
        "ls files/rootdir",
        "cat files/rootdir/inside/stats",
        "cat files/public/stats",
        "cat files/public/resident_pages",
        "ls files/public",
    ];
    // The mode bits let her in everywhere; then ACLs in DIR shut her out
    // of `rootdir` and `public`, and the mount follows at once.
    for script in refused {
        alice.sh_ok(&db, script);
    }
    crate::util::sh_ok(
        &src(&tm, ""),
        &format!("setfacl -m u:{}:--- rootdir public", alice.name),
    );
    for script in refused {
        let out = alice.sh(&db, script);
        assert!(
            !out.status.success() && said(&out).contains("Permission denied"),
            "`{script}` as alice got past the ACL: {}",
            said(&out)
        );
    }
    // Root and what the ACLs do not name are as before.
    crate::util::sh_ok(&db, "cat files/public/stats files/rootdir/inside/stats");
    alice.sh_ok(&db, "cat files/shared/roots/stats && ls files/shared");
}

#[test]
fn what_files_shows_of_a_deleted_file_never_passes_to_the_next_with_its_number() {
    require_user_fuse!();
    let alice = alice();
    // A fresh ext4 gives a freed inode number to the next file made.
    let (mut tm, _disk) = scratch_on_ext4("16M", 0);
    fs::create_dir_all(src(&tm, "pub/d")).unwrap();
    fs::write(src(&tm, "pub/d/public"), b"").unwrap();
    mount_db(&mut tm, &["-o", "allow_other"]);
    let db = tm.mnt.join(DB);

    // Root's secret file, opened and synced through the mount, then
    // deleted in DIR itself: the mount never sees it go.
    let number = |rel: &str| fs::metadata(src(&tm, rel)).unwrap().ino();
    crate::util::sh_ok(
        &db,
        "umask 077 && echo topsecret > data/secret && cat data/secret >/dev/null \
         && echo sync > files/secret/msync",
    );
    let secret = number("secret");
    fs::remove_file(src(&tm, "secret")).unwrap();
    alice.sh_ok(&db, "echo mine > data/hers");
    assert_eq!(number("hers"), secret, "the premise: the number came back");
    let seen = alice.sh_ok(&db, "cat files/hers/msync files/hers/events");
    assert!(
        seen.starts_with("command none\n") && !seen.contains(" uid=0"),
        "alice sees what was done to root's deleted file: {seen}"
    );

    // A directory handle alice holds on a `files/` directory lists nothing
    // of the closed directory that took its number.
    let mut lister = crate::util::Running::spawn({
        let mut cmd = alice.command(PYTHON);
        cmd.arg("-uc").arg(
            "import os, sys\n\
             fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n\
             print(os.listdir(fd))\n\
             sys.stdin.read()\n\
             os.lseek(fd, 0, 0)\n\
             try:\n    print(os.listdir(fd))\n\
             except OSError as e:\n    print(e.strerror)\n",
        );
        cmd.arg(db.join("files/pub/d"));
        cmd
    });
    lister.wait_line("['public']");
    let dir = number("pub/d");
    crate::util::sh_ok(
        &src(&tm, "pub"),
        "rm -r d && mkdir -m 700 d && touch d/SECRET",
    );
    assert_eq!(number("pub/d"), dir, "the premise: the number came back");
    let (status, lines, err) = lister.finish();
    assert!(status.success(), "{err}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("Permission denied"),
        "{lines:?}"
    );
}
