//! The inspection side of a directory source: `files/` following the tree,
//! per-file page indices and `msync`, the daemon letting deleted files go,
//! and the directory-wide `top`, `stats`, `msync` and `events`.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;

use super::*;
use crate::util::{map_once, stat_value, wait_until};

/// The files every regular file's inspection directory has at least.
const INSPECTION: [&str; 7] = [
    "msync",
    "dirty_pages",
    "resident_pages",
    "stats",
    "events",
    "mappers",
    "map",
];

fn inspectable(tm: &TestMount, rel: &str) -> bool {
    INSPECTION.iter().all(|f| files(tm, rel).join(f).exists())
}

#[test]
fn the_files_tree_follows_creates_renames_and_unlinks() {
    require_fuse!();
    let tm = mounted(&[]);
    fs::create_dir(data(&tm, "a")).unwrap();
    fs::write(data(&tm, "a/b.db"), b"bytes").unwrap();
    wait_until("files/a/b.db/ with every inspection file", || {
        inspectable(&tm, "a/b.db")
    });
    assert!(fs::metadata(files(&tm, "a")).unwrap().is_dir());
    let stats = read(&files(&tm, "a/b.db/stats"));
    let size = stat_value(&stats, "size_bytes").or_else(|| stat_value(&stats, "source_size_bytes"));
    assert_eq!(size.as_deref(), Some("5"), "{stats}");

    // Renamed through the mount: the file and then its directory.
    fs::rename(data(&tm, "a/b.db"), data(&tm, "a/c.db")).unwrap();
    wait_until("files/ to follow the rename", || {
        inspectable(&tm, "a/c.db") && !files(&tm, "a/b.db").exists()
    });
    fs::rename(data(&tm, "a"), data(&tm, "z")).unwrap();
    wait_until("files/ to follow the directory's rename", || {
        inspectable(&tm, "z/c.db") && !files(&tm, "a").exists()
    });
    fs::remove_file(data(&tm, "z/c.db")).unwrap();
    wait_until("files/z/c.db to go with the file", || {
        !files(&tm, "z/c.db").exists()
    });

    // The same for files changed in the source directly.
    fs::write(src(&tm, "direct.bin"), b"made beside the mount").unwrap();
    wait_until("files/direct.bin for a file made in the source", || {
        inspectable(&tm, "direct.bin")
    });
    fs::rename(src(&tm, "direct.bin"), src(&tm, "z/moved.bin")).unwrap();
    wait_until("files/ to follow a rename in the source", || {
        inspectable(&tm, "z/moved.bin") && !files(&tm, "direct.bin").exists()
    });
    fs::remove_file(src(&tm, "z/moved.bin")).unwrap();
    wait_until("files/z/moved.bin to go", || {
        !files(&tm, "z/moved.bin").exists()
    });
    // Only regular files get inspection directories; directories are plain.
    assert_eq!(names(&files(&tm, "")), ["z"]);
    assert_eq!(names(&files(&tm, "z")), Vec::<String>::new());
}

/// The page cache of `file` as `cachestat(2)` counts it: (cached, dirty).
fn cachestat(file: &File) -> (u64, u64) {
    let range = [0u64, 0];
    let mut stat = [0u64; 5];
    // SAFETY: valid pointers to a [u64; 2] range and a [u64; 5] result,
    // the layout of `struct cachestat`.
    let rc = unsafe {
        libc::syscall(
            451,
            std::os::fd::AsRawFd::as_raw_fd(file),
            range.as_ptr(),
            stat.as_mut_ptr(),
            0,
        )
    };
    assert_eq!(rc, 0, "cachestat: {}", std::io::Error::last_os_error());
    (stat[0], stat[1])
}

/// A sparse file of `pages` pages made in the source, with one byte
/// written to each of `dirty` (pages never read: one-page folios, so
/// the kernel's dirty list is exactly these).
fn sparse_with_dirty(path: &Path, pages: u64, dirty: &[u64]) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.set_len(pages * PAGE).unwrap();
    for page in dirty {
        f.write_all_at(b"x", page * PAGE).unwrap();
    }
    f
}

#[test]
fn page_indices_are_those_of_the_file_and_msync_needs_no_earlier_open() {
    require_fuse!();
    let tm = mounted(&[]);
    fs::create_dir(src(&tm, "sub")).unwrap();
    // A file the daemon never saw opened or mapped: synced straight away.
    let quiet = sparse_with_dirty(&src(&tm, "sub/quiet.bin"), 256, &[5, 9]);
    wait_until("files/sub/quiet.bin/msync", || {
        files(&tm, "sub/quiet.bin/msync").exists()
    });
    assert_eq!(cachestat(&quiet).1, 2, "the test's own dirty count");
    fs::write(files(&tm, "sub/quiet.bin/msync"), "sync\n").unwrap();
    assert_eq!(cachestat(&quiet).1, 0, "msync left pages dirty");
    let result = read(&files(&tm, "sub/quiet.bin/msync"));
    assert_eq!(
        stat_value(&result, "result").as_deref(),
        Some("ok"),
        "{result}"
    );
    assert_eq!(
        stat_value(&result, "dirty_pages_after").as_deref(),
        Some("0"),
        "{result}"
    );

    // Page indices count from the file's start, as the kernel sees them.
    let f = sparse_with_dirty(&src(&tm, "sub/pages.bin"), 1024, &[3, 200, 201, 1023]);
    wait_until("files/sub/pages.bin/dirty_pages", || {
        files(&tm, "sub/pages.bin/dirty_pages").exists()
    });
    assert_eq!(
        pages_of(&read(&files(&tm, "sub/pages.bin/dirty_pages"))),
        [3, 200, 201, 1023]
    );
    let resident = pages_of(&read(&files(&tm, "sub/pages.bin/resident_pages")));
    for page in [3, 200, 201, 1023] {
        assert!(resident.contains(&page), "resident {resident:?}");
    }
    let stats = read(&files(&tm, "sub/pages.bin/stats"));
    assert_eq!(stat_value(&stats, "dirty_pages").as_deref(), Some("4"));
    fs::write(files(&tm, "sub/pages.bin/msync"), "sync 4096 8192").unwrap();
    assert_eq!(
        pages_of(&read(&files(&tm, "sub/pages.bin/dirty_pages"))),
        [3, 200, 201, 1023],
        "a range sync of pages 1-2 touched nothing else"
    );
    fs::write(files(&tm, "sub/pages.bin/msync"), "sync").unwrap();
    assert_eq!(read(&files(&tm, "sub/pages.bin/dirty_pages")), "\n");
    assert_eq!(cachestat(&f).1, 0);
}

/// Every descriptor and mapping of process `pid` that names `needle`.
fn held_by(pid: u32, needle: &str) -> Vec<String> {
    let mut held = Vec::new();
    if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) {
        for entry in dir.flatten() {
            if let Ok(target) = fs::read_link(entry.path()) {
                let target = target.to_string_lossy().into_owned();
                if target.contains(needle) {
                    held.push(format!(
                        "fd {}: {target}",
                        entry.file_name().to_string_lossy()
                    ));
                }
            }
        }
    }
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    held.extend(
        maps.lines()
            .filter(|l| l.contains(needle))
            .map(|l| format!("map: {l}")),
    );
    held
}

#[test]
fn the_daemon_lets_deleted_files_go() {
    require_fuse!();
    let tm = mounted(&[]);
    let pid = tm.pid();
    let doomed = "doomed-through-the-mount";
    // Written, read, mapped and synced through the mount, then unlinked.
    fs::write(data(&tm, doomed), vec![3u8; 64 * PAGE as usize]).unwrap();
    let mut back = Vec::new();
    File::open(data(&tm, doomed))
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back.len() as u64, 64 * PAGE);
    map_once(&data(&tm, doomed), &["--write=8192=mapped", "--msync"]);
    read(&files(&tm, &format!("{doomed}/stats")));
    read(&files(&tm, &format!("{doomed}/dirty_pages")));
    fs::write(files(&tm, &format!("{doomed}/msync")), "sync").unwrap();
    fs::remove_file(data(&tm, doomed)).unwrap();

    // Made, inspected and synced beside the mount, then deleted there.
    let beside = "doomed-in-the-source";
    sparse_with_dirty(&src(&tm, beside), 64, &[1, 2]);
    wait_until("files/ for the file made in the source", || {
        files(&tm, &format!("{beside}/msync")).exists()
    });
    read(&files(&tm, &format!("{beside}/resident_pages")));
    fs::write(files(&tm, &format!("{beside}/msync")), "sync").unwrap();
    fs::remove_file(src(&tm, beside)).unwrap();

    // Replaced by a rename through the mount: the old inode is deleted.
    let replaced = "doomed-by-a-rename";
    fs::write(data(&tm, replaced), b"old").unwrap();
    read(&files(&tm, &format!("{replaced}/stats")));
    fs::write(data(&tm, "newer"), b"new").unwrap();
    fs::rename(data(&tm, "newer"), data(&tm, replaced)).unwrap();

    let mut held = Vec::new();
    wait_until("the daemon to drop every deleted file", || {
        held = [doomed, beside]
            .iter()
            .flat_map(|name| held_by(pid, name))
            .chain(
                held_by(pid, replaced)
                    .into_iter()
                    .filter(|l| l.contains("(deleted)")),
            )
            .collect();
        held.is_empty()
    });
    assert!(held.is_empty(), "{held:?}");
    assert_eq!(fs::read(src(&tm, replaced)).unwrap(), b"new");
}

/// Three files of 256, 16 and 1 dirty pages (and an empty one) made in the
/// source, one in a subdirectory.
fn three_dirty_files(tm: &TestMount) -> Vec<File> {
    fs::create_dir(src(tm, "sub")).unwrap();
    fs::write(src(tm, "empty"), b"").unwrap();
    vec![
        sparse_with_dirty(&src(tm, "big.bin"), 512, &(0..256).collect::<Vec<_>>()),
        sparse_with_dirty(&src(tm, "sub/mid.bin"), 64, &(10..26).collect::<Vec<_>>()),
        sparse_with_dirty(&src(tm, "small.bin"), 8, &[7]),
    ]
}

#[test]
fn top_lists_files_by_page_cache_largest_first() {
    require_fuse!();
    let tm = mounted(&[]);
    let _files = three_dirty_files(&tm);
    let mut lines = Vec::new();
    wait_until("top to list the three files", || {
        lines = top_lines(&read(&whole(&tm, "top")));
        ["big.bin", "sub/mid.bin", "small.bin"]
            .iter()
            .all(|p| lines.iter().any(|l| l.path == *p))
    });
    let order: Vec<&str> = lines
        .iter()
        .map(|l| l.path.as_str())
        .filter(|p| ["big.bin", "sub/mid.bin", "small.bin"].contains(p))
        .collect();
    assert_eq!(order, ["big.bin", "sub/mid.bin", "small.bin"], "{lines:?}");
    let by_path = |p: &str| lines.iter().find(|l| l.path == p).unwrap().clone();
    let (big, mid, small) = (
        by_path("big.bin"),
        by_path("sub/mid.bin"),
        by_path("small.bin"),
    );
    assert_eq!((big.resident, big.dirty), (256, 256), "{big:?}");
    assert_eq!((mid.resident, mid.dirty), (16, 16), "{mid:?}");
    assert_eq!((small.resident, small.dirty), (1, 1), "{small:?}");
    let resident: Vec<u64> = lines.iter().map(|l| l.resident).collect();
    assert!(
        resident.windows(2).all(|w| w[0] >= w[1]),
        "not largest first: {lines:?}"
    );
    assert!(lines.iter().all(|l| l.writeback <= l.resident), "{lines:?}");
}

#[test]
fn directory_stats_and_msync_cover_every_file() {
    require_fuse!();
    let tm = mounted(&[]);
    let handles = three_dirty_files(&tm);
    let stats_path = whole(&tm, "stats");
    wait_until("the directory's stats to count four files", || {
        stat_value(&read(&stats_path), "files").as_deref() == Some("4")
    });
    let stats = read(&stats_path);
    let number = |text: &str, key: &str| -> u64 {
        stat_value(text, key)
            .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(number(&stats, "dirty_pages"), 273, "{stats}");
    assert!(number(&stats, "resident_pages") >= 273, "{stats}");
    // The root's stats include the directory source.
    let root = read(&tm.mnt.join("stats"));
    assert_eq!(number(&root, "sources"), 1, "{root}");
    assert!(number(&root, "dirty_pages") >= 273, "{root}");
    let metrics = read(&tm.mnt.join("metrics"));
    assert!(metrics.contains("source=\"db\""), "{metrics}");

    // One `msync` syncs every file of the tree.
    fs::write(whole(&tm, "msync"), "sync\n").unwrap();
    for (f, name) in handles.iter().zip(["big.bin", "sub/mid.bin", "small.bin"]) {
        assert_eq!(cachestat(f).1, 0, "{name} still dirty");
        assert_eq!(read(&files(&tm, &format!("{name}/dirty_pages"))), "\n");
    }
    assert_eq!(number(&read(&stats_path), "dirty_pages"), 0);
    let result = read(&whole(&tm, "msync"));
    assert!(result.contains("result ok"), "{result}");
    // A malformed command is refused and changes nothing.
    let bad = fs::write(whole(&tm, "msync"), "syncc\n");
    assert_eq!(errno(bad), Some(libc::EINVAL));
}

/// The value of `key=` in an event line, without quotes.
fn event_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    Some(match rest.strip_prefix('"') {
        Some(quoted) => &quoted[..quoted.find('"')?],
        None => rest.split(' ').next()?,
    })
}

#[test]
fn directory_events_record_changes_across_the_tree() {
    require_fuse!();
    let tm = mounted(&[]);
    fs::write(data(&tm, "f1"), b"one").unwrap();
    fs::create_dir(data(&tm, "d")).unwrap();
    fs::hard_link(data(&tm, "f1"), data(&tm, "d/f2")).unwrap();
    fs::rename(data(&tm, "f1"), data(&tm, "f3")).unwrap();
    File::open(data(&tm, "f3")).unwrap();
    fs::write(files(&tm, "f3/msync"), "sync").unwrap();
    fs::remove_file(data(&tm, "f3")).unwrap();
    fs::remove_file(data(&tm, "d/f2")).unwrap();
    fs::remove_dir(data(&tm, "d")).unwrap();

    // (kind, path=, to=): a rename or a link names both paths.
    let expected = [
        ("create", "f1", None),
        ("mkdir", "d", None),
        ("link", "f1", Some("d/f2")),
        ("rename", "f1", Some("f3")),
        ("open", "f3", None),
        ("msync", "f3", None),
        ("unlink", "f3", None),
        ("unlink", "d/f2", None),
        ("rmdir", "d", None),
    ];
    let mut text = String::new();
    let mut missing = Vec::new();
    wait_until("every event in the directory's events", || {
        text = read(&whole(&tm, "events"));
        missing = expected
            .iter()
            .filter(|(kind, path, to)| {
                !text.lines().any(|l| {
                    l.split(' ').nth(1) == Some(*kind)
                        && event_value(l, "path") == Some(*path)
                        && to.is_none_or(|to| event_value(l, "to") == Some(to))
                })
            })
            .collect();
        missing.is_empty()
    });
    // Each line starts with a time in ns, and they come in order.
    let times: Vec<u128> = text
        .lines()
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{text}");
    let at = |kind: &str, path: &str| {
        text.lines()
            .position(|l| l.split(' ').nth(1) == Some(kind) && event_value(l, "path") == Some(path))
            .unwrap()
    };
    assert!(at("create", "f1") < at("unlink", "f3"), "{text}");
    assert!(at("mkdir", "d") < at("rmdir", "d"), "{text}");
}

#[test]
fn file_anon_and_directory_sources_share_one_mount() {
    require_fuse!();
    let mut tm = scratch();
    fs::write(tm.path("src.bin"), vec![1u8; 4 * PAGE as usize]).unwrap();
    fs::write(src(&tm, "inside"), b"in the directory").unwrap();
    tm.mount(&["src.bin", DB, "--anon", "shm=8K"]);
    assert_eq!(names(&tm.mnt), ["db", "metrics", "shm", "src.bin", "stats"]);
    assert_eq!(fs::read(data(&tm, "inside")).unwrap(), b"in the directory");
    fs::write(data(&tm, "added"), b"new").unwrap();
    assert_eq!(fs::read(src(&tm, "added")).unwrap(), b"new");
    crate::util::write_marker(&tm, 100, b"file source");
    assert!(crate::util::source_has(&tm, 100, b"file source"));
    assert_eq!(tm.stat("shm", "length_bytes"), "8192");
    let root = read(&tm.mnt.join("stats"));
    assert_eq!(stat_value(&root, "sources").as_deref(), Some("3"), "{root}");
    let (status, err) = tm.unmount();
    assert!(status.success(), "{err}");
    assert_eq!(fs::read(src(&tm, "added")).unwrap(), b"new");
}
