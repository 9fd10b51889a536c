//! `data`: the mapping's bytes through read/write, in both I/O modes, and
//! the refusals that keep the mapping's shape.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::util::{self, sh, sh_ok, TestMount};

/// A 1 MiB source with a recognisable pattern, mounted with `extra` args.
fn patterned(extra: &[&str]) -> TestMount {
    let mut tm = TestMount::new();
    let pattern: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    fs::write(tm.path("src.bin"), &pattern).unwrap();
    let mut args = extra.to_vec();
    args.push("src.bin");
    tm.mount(&args);
    tm
}

fn both_modes(test: impl Fn(TestMount, &str)) {
    require_fuse!();
    for mode in ["passthrough", "cached"] {
        let tm = patterned(&["--io", mode]);
        assert_eq!(tm.stat("src.bin", "io_mode"), mode);
        test(tm, mode);
    }
}

#[test]
fn reads_match_the_source_at_any_offset() {
    both_modes(|tm, mode| {
        let source = fs::read(tm.path("src.bin")).unwrap();
        let data = tm.file("src.bin", "data");
        assert_eq!(fs::metadata(&data).unwrap().len(), 1 << 20);
        assert_eq!(fs::read(&data).unwrap(), source, "{mode}: cat");
        let f = fs::File::open(&data).unwrap();
        for (offset, len) in [(0u64, 1usize), (4095, 2), (12345, 7000), ((1 << 20) - 3, 3)] {
            let mut buf = vec![0; len];
            f.read_exact_at(&mut buf, offset).unwrap();
            assert_eq!(
                buf,
                source[offset as usize..offset as usize + len],
                "{mode}: {offset}"
            );
        }
        let mut past = [0u8; 8];
        assert_eq!(f.read_at(&mut past, 1 << 20).unwrap(), 0, "{mode}: EOF");
        let head = sh_ok(tm.dir.path(), "head -c 5 mnt/src.bin/data | od -An -tu1");
        assert_eq!(
            head.split_whitespace().collect::<Vec<_>>(),
            ["0", "1", "2", "3", "4"]
        );
    });
}

#[test]
fn writes_reach_the_source_at_once_and_o_trunc_loses_nothing() {
    both_modes(|tm, mode| {
        sh_ok(tm.dir.path(), "echo hi > mnt/src.bin/data");
        let source = fs::read(tm.path("src.bin")).unwrap();
        assert_eq!(&source[..3], b"hi\n", "{mode}");
        assert_eq!(source[3], 3, "{mode}: O_TRUNC must not lose the rest");
        assert_eq!(source.len(), 1 << 20, "{mode}");
        assert_eq!(
            fs::metadata(tm.file("src.bin", "data")).unwrap().len(),
            1 << 20
        );
        sh_ok(
            tm.dir.path(),
            "printf XYZ | dd of=mnt/src.bin/data bs=1 seek=5000 conv=notrunc status=none",
        );
        let mut buf = [0u8; 3];
        fs::File::open(tm.path("src.bin"))
            .unwrap()
            .read_exact_at(&mut buf, 5000)
            .unwrap();
        assert_eq!(&buf, b"XYZ", "{mode}: visible through the source path");
        let mut back = [0u8; 3];
        fs::File::open(tm.file("src.bin", "data"))
            .unwrap()
            .read_exact_at(&mut back, 5000)
            .unwrap();
        assert_eq!(&back, b"XYZ", "{mode}: visible to readers of data");
    });
}

#[test]
fn writes_past_the_end_extend_a_whole_file_source() {
    both_modes(|tm, mode| {
        let f = OpenOptions::new()
            .write(true)
            .open(tm.file("src.bin", "data"))
            .unwrap();
        assert_eq!(f.write_at(b"abcdef", (1 << 20) - 2).unwrap(), 6, "{mode}");
        let source = fs::read(tm.path("src.bin")).unwrap();
        assert_eq!(source.len(), (1 << 20) + 4, "{mode}: the source grew");
        assert_eq!(&source[(1 << 20) - 2..], b"abcdef", "{mode}");
        util::wait_until("data to follow the source's size", || {
            fs::metadata(tm.file("src.bin", "data")).unwrap().len() == (1 << 20) + 4
        });
    });
}

#[test]
fn the_shape_of_the_tree_cannot_change() {
    both_modes(|tm, mode| {
        let dir = tm.dir.path();
        for (script, why) in [
            ("touch mnt/new", "create"),
            ("mkdir mnt/d", "mkdir"),
            ("rm mnt/src.bin/stats", "unlink"),
            ("mv mnt/src.bin/data mnt/src.bin/data2", "rename"),
            ("rmdir mnt/src.bin", "rmdir"),
            ("chmod 600 mnt/src.bin/data", "chmod"),
        ] {
            let out = sh(dir, &format!("LC_ALL=C {script}"));
            assert!(!out.status.success(), "{mode}: {why} succeeded");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("Operation not permitted"),
                "{mode}: {why}: {err}"
            );
        }
        sh_ok(dir, "truncate -s 1M mnt/src.bin/data");
        assert_eq!(fs::metadata(tm.path("src.bin")).unwrap().len(), 1 << 20);
        assert!(!tm.mnt.join("new").exists());
        assert_eq!(
            fs::read(tm.path("src.bin")).unwrap()[7],
            7,
            "{mode}: data intact"
        );
    });
}

#[test]
fn many_sources_and_the_root_stats_sum_them() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--size", "64K", "a", "b", "c"]);
    let root = fs::read_to_string(tm.mnt.join("stats")).unwrap();
    assert_eq!(util::stat_value(&root, "sources").as_deref(), Some("3"));
    assert_eq!(
        util::stat_value(&root, "length_bytes").as_deref(),
        Some("196608")
    );
    let names: Vec<String> = fs::read_dir(&tm.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for name in ["a", "b", "c", "stats", "metrics"] {
        assert!(names.contains(&name.to_string()), "{names:?}");
    }
}

/// `getxattr(path, name)` with no buffer: the value's size, or the errno.
fn xattr_size(path: &Path, name: &str) -> Result<usize, i32> {
    let path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    // SAFETY: both strings are live and NUL-terminated; with a null buffer
    // and size 0 the kernel writes nothing and returns the value's size.
    let rc = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    usize::try_from(rc).map_err(|_| std::io::Error::last_os_error().raw_os_error().unwrap())
}

/// Before every `write(2)` to a FUSE file the kernel asks the daemon for
/// `security.capability` (to strip it), unless the daemon once answered
/// `getxattr` with `ENOSYS`: then the kernel answers `EOPNOTSUPP` itself
/// and a stream of writes costs the daemon no request at all.
#[test]
fn writes_do_not_ask_the_daemon_for_extended_attributes() {
    require_fuse!();
    for mode in ["passthrough", "cached"] {
        let mut tm = patterned(&["-vv", "--io", mode]);
        assert_eq!(tm.stat("src.bin", "io_mode"), mode);
        let data = tm.file("src.bin", "data");
        let f = OpenOptions::new().write(true).open(&data).unwrap();
        for i in 0..64u64 {
            f.write_at(&[i as u8; 4096], i * 4096).unwrap();
        }
        drop(f);
        assert_eq!(fs::read(tm.path("src.bin")).unwrap()[63 * 4096], 63);
        for name in ["security.capability", "user.any"] {
            assert_eq!(
                xattr_size(&data, name),
                Err(libc::EOPNOTSUPP),
                "{mode}: {name}"
            );
        }
        let (status, stderr) = tm.unmount();
        assert!(status.success(), "{mode}: {stderr}");
        let asked = stderr.matches("getxattr: not supported").count();
        assert!(
            asked <= 1,
            "{mode}: getxattr reached the daemon {asked} times"
        );
    }
}
