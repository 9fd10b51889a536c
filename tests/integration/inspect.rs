//! `dirty_pages`, `resident_pages`, `map`, `metrics`: what the kernel says,
//! checked against the test's own `cachestat(2)`.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use crate::util::{self, sh_ok, TestMount};

const PAGE: u64 = 4096;

#[repr(C)]
#[derive(Default)]
struct CacheStat {
    cache: u64,
    dirty: u64,
    writeback: u64,
    evicted: u64,
    recently_evicted: u64,
}

/// The test's own measurement: cachestat over a byte range of `file`.
fn cachestat(file: &File, offset: u64, len: u64) -> CacheStat {
    let range = [offset, len];
    let mut stat = CacheStat::default();
    // SAFETY: valid pointers to a [u64; 2] range and a repr(C) result.
    let rc = unsafe {
        libc::syscall(
            451,
            file.as_raw_fd(),
            range.as_ptr(),
            &mut stat as *mut CacheStat,
            0,
        )
    };
    assert_eq!(rc, 0, "cachestat: {}", std::io::Error::last_os_error());
    stat
}

/// Expand a cpulist line into page indices.
fn pages_of(list: &str) -> Vec<u64> {
    let list = list.trim_end_matches('\n');
    assert!(!list.contains('\n'), "one line expected: {list:?}");
    if list.is_empty() {
        return Vec::new();
    }
    list.split(',')
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => (a.parse::<u64>().unwrap()..=b.parse().unwrap()).collect::<Vec<_>>(),
            None => vec![part.parse().unwrap()],
        })
        .collect()
}

fn mount_sparse(size: &str, extra: &[&str]) -> Option<TestMount> {
    if !util::fuse_available() {
        return None;
    }
    let mut tm = TestMount::new();
    let mut args = vec!["--size", size];
    args.extend_from_slice(extra);
    args.push("src.bin");
    tm.mount(&args);
    Some(tm)
}

#[test]
fn dirty_pages_lists_exactly_the_written_pages() {
    let Some(tm) = mount_sparse("64M", &[]) else {
        return;
    };
    let last = (64 << 20) / PAGE - 1;
    let data = OpenOptions::new()
        .write(true)
        .open(tm.file("src.bin", "data"))
        .unwrap();
    // Never-read pages written once each become one-page folios.
    let mut expected = vec![0, 17, 18, 19, 1000, 4097, last];
    for p in &expected {
        data.write_at(b"d", p * PAGE).unwrap();
    }
    data.write_at(&vec![1u8; 8 * PAGE as usize], 9000 * PAGE)
        .unwrap();
    expected.extend(9000..9008);
    expected.sort_unstable();
    let listed = pages_of(&tm.read("src.bin", "dirty_pages"));
    let source = File::open(tm.path("src.bin")).unwrap();
    let truth = cachestat(&source, 0, 0);
    assert_eq!(listed.len() as u64, truth.dirty, "agrees with cachestat");
    assert_eq!(listed, expected);
    let text = tm.read("src.bin", "dirty_pages");
    assert!(
        text.contains("17-19") && text.contains("9000-9007"),
        "{text}"
    );
    sh_ok(tm.dir.path(), "echo sync > mnt/src.bin/msync");
    assert_eq!(tm.read("src.bin", "dirty_pages"), "\n");
}

#[test]
fn writes_to_the_source_path_show_up_too() {
    let Some(tm) = mount_sparse("16M", &[]) else {
        return;
    };
    let source = OpenOptions::new()
        .write(true)
        .open(tm.path("src.bin"))
        .unwrap();
    source.write_at(b"behind our back", 300 * PAGE).unwrap();
    assert_eq!(pages_of(&tm.read("src.bin", "dirty_pages")), vec![300]);
    assert!(pages_of(&tm.read("src.bin", "resident_pages")).contains(&300));
}

#[test]
fn resident_pages_follow_reads_and_eviction() {
    let Some(tm) = mount_sparse("16M", &[]) else {
        return;
    };
    let source = File::open(tm.path("src.bin")).unwrap();
    // SAFETY: plain fadvise on a valid descriptor.
    unsafe { libc::posix_fadvise(source.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(tm.read("src.bin", "resident_pages"), "\n");
    let mut buf = vec![0u8; 64 * PAGE as usize];
    File::open(tm.file("src.bin", "data"))
        .unwrap()
        .read_exact_at(&mut buf, 1024 * PAGE)
        .unwrap();
    let resident = pages_of(&tm.read("src.bin", "resident_pages"));
    assert!((1024..1088).all(|p| resident.contains(&p)), "{resident:?}");
    assert_eq!(resident.len() as u64, cachestat(&source, 0, 0).cache);
    // SAFETY: as above.
    unsafe { libc::posix_fadvise(source.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(tm.read("src.bin", "resident_pages"), "\n");
    assert_eq!(tm.stat("src.bin", "resident_pages"), "0");
}

#[test]
fn huge_sparse_files_answer_quickly_and_exactly() {
    let Some(tm) = mount_sparse("1T", &[]) else {
        return;
    };
    assert_eq!(tm.read("src.bin", "resident_pages"), "\n");
    let data = OpenOptions::new()
        .write(true)
        .open(tm.file("src.bin", "data"))
        .unwrap();
    let pages = [3u64, 1 << 20, (1 << 28) - 1];
    for p in pages {
        data.write_at(b"x", p * PAGE).unwrap();
    }
    assert_eq!(pages_of(&tm.read("src.bin", "dirty_pages")), pages);
    assert_eq!(tm.stat("src.bin", "pages"), (1u64 << 28).to_string());
}

#[test]
fn map_draws_resident_and_dirty_buckets() {
    let Some(tm) = mount_sparse("8M", &[]) else {
        return;
    };
    let source = File::open(tm.path("src.bin")).unwrap();
    // SAFETY: plain fadvise on a valid descriptor.
    unsafe { libc::posix_fadvise(source.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let data = OpenOptions::new()
        .write(true)
        .open(tm.file("src.bin", "data"))
        .unwrap();
    data.write_at(&vec![1u8; PAGE as usize], 0).unwrap();
    let map = tm.read("src.bin", "map");
    let mut lines = map.lines();
    let legend = lines.next().unwrap();
    assert!(
        legend.starts_with("# 2048 pages") && legend.contains("1 page(s) per cell"),
        "{legend}"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 32, "{map}");
    assert!(rows.iter().all(|r| r.chars().count() == 64));
    assert_eq!(rows[0].chars().next(), Some('D'), "{map}");
    assert!(rows[10].chars().all(|c| c == ' '), "{map}");
}

#[test]
fn metrics_parse_back_to_the_stats() {
    let Some(tm) = mount_sparse("1M", &[]) else {
        return;
    };
    let metrics = fs::read_to_string(tm.mnt.join("metrics")).unwrap();
    let mut families = 0;
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(kind == "counter" || kind == "gauge", "{line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            families += 1;
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let (name, labels) = series.split_once('{').unwrap();
        assert!(name.starts_with("mmapfs_"), "{line}");
        assert!(
            labels.starts_with("source=\"src.bin\"") && labels.ends_with('}'),
            "{line}"
        );
        if name == "mmapfs_source_info" {
            assert!(labels.contains("mode=\"shared\""), "{line}");
            continue;
        }
        let key = name["mmapfs_".len()..].trim_end_matches("_total");
        if key.ends_with("_seconds") {
            continue;
        }
        if ![
            "uptime_ns",
            "resident_pages",
            "evicted_pages",
            "recently_evicted_pages",
        ]
        .contains(&key)
        {
            assert_eq!(tm.stat("src.bin", key), value.to_string(), "{key}");
        }
    }
    assert!(families >= 20, "{metrics}");
}
