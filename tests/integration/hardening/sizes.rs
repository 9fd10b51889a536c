//! The size of `data` (with SQLite on top) and metrics that Prometheus tooling accepts.

use super::*;

// ---------------------------------------------------------------------------
// 13. the size of `data`

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn len_of(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

#[test]
fn whole_file_data_is_the_file_for_size_purposes() {
    require_fuse!();
    each_case(&["auto", "cached"], |io| {
        let mut tm = TestMount::new();
        fs::write(tm.path("src.bin"), pattern(64 << 10)).unwrap();
        tm.mount(&["--io", io, "src.bin"]);
        let data = tm.file("src.bin", "data");
        let source = tm.path("src.bin");
        assert_eq!(len_of(&data), 64 << 10, "{io}");

        // The source grows behind the daemon's back: data follows.
        File::options()
            .write(true)
            .open(&source)
            .unwrap()
            .set_len(128 << 10)
            .unwrap();
        wait_within(
            Duration::from_secs(5),
            "data size to follow the source",
            || len_of(&data) == 128 << 10,
        );

        // A write at the end extends both.
        let f = OpenOptions::new().write(true).open(&data).unwrap();
        assert_eq!(
            f.write_at(b"tail", 128 << 10).map_err(|e| e.to_string()),
            Ok(4),
            "{io}: write at the end"
        );
        drop(f);
        assert_eq!(len_of(&source), (128 << 10) + 4, "{io}");
        assert_eq!(len_of(&data), (128 << 10) + 4, "{io}");
        assert_eq!(&fs::read(&source).unwrap()[128 << 10..], b"tail");

        // truncate of data shrinks and grows the source.
        sh_ok(tm.dir.path(), "truncate -s 32K mnt/src.bin/data");
        assert_eq!(len_of(&source), 32 << 10, "{io}: shrink");
        assert_eq!(len_of(&data), 32 << 10, "{io}: shrink");
        sh_ok(tm.dir.path(), "truncate -s 200K mnt/src.bin/data");
        assert_eq!(len_of(&source), 200 << 10, "{io}: grow");
        assert_eq!(len_of(&data), 200 << 10, "{io}: grow");

        // O_TRUNC is still ignored.
        sh_ok(tm.dir.path(), "echo hi > mnt/src.bin/data");
        assert_eq!(len_of(&data), 200 << 10, "{io}: O_TRUNC");
        let bytes = fs::read(&source).unwrap();
        assert_eq!(bytes.len(), 200 << 10, "{io}");
        assert_eq!(&bytes[..3], b"hi\n");
        assert_eq!(bytes[3..32 << 10], pattern(32 << 10)[3..], "{io}");
        assert!(bytes[32 << 10..].iter().all(|b| *b == 0), "{io}");
        let (status, err) = tm.unmount();
        assert!(status.success(), "{io}: {err}");
    });
}

#[test]
fn windows_private_and_anon_keep_a_fixed_size() {
    require_fuse!();
    let cases: [(&[&str], &str); 4] = [
        (&["--offset", "4K", "src.bin"], "src.bin"),
        (&["--length", "32K", "src.bin"], "src.bin"),
        (&["--private", "src.bin"], "src.bin"),
        (&["--anon", "ram=64K"], "ram"),
    ];
    each_case(&cases, |(args, name)| {
        let mut tm = TestMount::new();
        fs::write(tm.path("src.bin"), pattern(64 << 10)).unwrap();
        tm.mount(args);
        let io = tm.stat(name, "io_mode");
        let data = tm.file(name, "data");
        let len = len_of(&data);
        let f = OpenOptions::new().write(true).open(&data).unwrap();
        for at in [len, len + 4096] {
            assert_eq!(
                errno(f.write_at(b"x", at)),
                Some(libc::ENOSPC),
                "{args:?} ({io}): write at {at} of {len}"
            );
        }
        assert_eq!(
            f.write_at(b"straddle", len - 4).map_err(|e| e.to_string()),
            Ok(4),
            "{args:?}: a write across the end is short"
        );
        for size in [len / 2, len * 2] {
            let err = f.set_len(size).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{args:?}: {size}");
        }
        drop(f);
        let before = fs::read(&data).unwrap();
        sh_ok(tm.dir.path(), &format!("echo hi > mnt/{name}/data"));
        let after = fs::read(&data).unwrap();
        assert_eq!(after.len() as u64, len, "{args:?}: O_TRUNC");
        assert_eq!(&after[..3], b"hi\n", "{args:?}");
        assert_eq!(after[3..], before[3..], "{args:?}");
        assert_eq!(len_of(&tm.path("src.bin")), 64 << 10, "{args:?}");
    });
}

#[test]
fn sqlite_with_a_memory_journal_on_data_stays_intact() {
    require_fuse!();
    each_case(&["auto", "cached"], |io| {
        let mut tm = TestMount::new();
        sh_ok(
            tm.dir.path(),
            "sqlite3 db.sqlite 'PRAGMA page_size=4096; CREATE TABLE seed(x); INSERT INTO seed VALUES (1);'",
        );
        tm.mount(&["--io", io, "db.sqlite"]);
        let out = sh(
            tm.dir.path(),
            "sqlite3 -bail mnt/db.sqlite/data <<'EOF'
PRAGMA journal_mode=MEMORY;
CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
CREATE INDEX t_v ON t(v);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000)
  INSERT INTO t(v) SELECT printf('row-%06d-%s', i, hex(randomblob(24))) FROM c;
DELETE FROM t WHERE id % 3 = 0;
VACUUM;
SELECT count(*) FROM t;
EOF",
        );
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{io}: sqlite3 on data: {said}");
        assert_eq!(said, "memory\n13334\n", "{io}");
        let (status, err) = tm.unmount();
        assert!(status.success(), "{io}: {err}");
        let check = sh_ok(
            tm.dir.path(),
            "sqlite3 db.sqlite 'PRAGMA integrity_check; SELECT count(*) FROM t; PRAGMA page_count;'",
        );
        let lines: Vec<&str> = check.lines().collect();
        assert_eq!(lines[..2], ["ok", "13334"], "{io}: {check}");
        // VACUUM's truncate reached the source.
        let pages: u64 = lines[2].parse().unwrap();
        assert_eq!(len_of(&tm.path("db.sqlite")), pages * 4096, "{io}");
    });
}

// ---------------------------------------------------------------------------
// 14. metrics for Prometheus

/// Metric families in `text`: name -> (type, help).
fn families(text: &str) -> BTreeMap<String, (String, String)> {
    let mut out: BTreeMap<String, (String, String)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            out.entry(name.to_string()).or_default().0 = kind.to_string();
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.entry(name.to_string()).or_default().1 = help.to_string();
        }
    }
    out
}

#[test]
fn metrics_pass_promtool_with_totals_seconds_and_an_info_metric() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--io", "cached", "--size", "64K", "a.bin", "b.bin"]);
    sh_ok(
        tm.dir.path(),
        "printf x > mnt/a.bin/data && cat mnt/b.bin/data >/dev/null && echo sync > mnt/a.bin/msync",
    );
    let text = fs::read_to_string(tm.mnt.join("metrics")).unwrap();
    let (ok, said) = promtool_check(&text);
    assert!(ok, "promtool check metrics:\n{said}");

    let families = families(&text);
    assert!(!families.is_empty(), "{text}");
    for (name, (kind, help)) in &families {
        assert!(!kind.is_empty(), "{name}: no TYPE");
        assert!(!help.trim().is_empty(), "{name}: no HELP");
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name}");
        }
        let unit_words = [
            "ns",
            "us",
            "ms",
            "nanoseconds",
            "microseconds",
            "milliseconds",
        ];
        assert!(
            !name.split('_').any(|w| unit_words.contains(&w)),
            "{name}: times go in seconds"
        );
    }
    let has = |part: &str, suffixes: &[&str]| {
        families
            .keys()
            .any(|n| n.contains(part) && suffixes.iter().any(|s| n.ends_with(s)))
    };
    assert!(has("uptime", &["_seconds"]), "no uptime in seconds");
    assert!(
        has("msync", &["_seconds", "_seconds_total"]),
        "no msync time in seconds"
    );

    // Text values go in one info metric per source.
    let info: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("mmapfs_source_info{"))
        .collect();
    assert_eq!(info.len(), 2, "want one info line per source:\n{text}");
    for line in info {
        for label in ["source=\"", "mode=\"shared\"", "io_mode=\"cached\""] {
            assert!(line.contains(label), "{line}: no {label}");
        }
        assert!(line.ends_with("} 1"), "{line}");
    }
}
