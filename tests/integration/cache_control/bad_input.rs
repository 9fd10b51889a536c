//! Malformed writes to every control file: `EINVAL`, the last report
//! unchanged, a `<file>_rejected` event, and no page touched.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use super::{cachestat, events_of, locked_pages, resident, run, send, PAGE};
use crate::util::TestMount;

/// Bad writes to `file`, whose command `word` would change pages if any
/// part of it ran.
fn bad_inputs(file: &str, word: &str) -> Vec<Vec<u8>> {
    let mut bad: Vec<String> = match file {
        "madvise" => vec!["evict", "WILLNEED", "dontneed missing", "willneed onfault"],
        "fadvise" => vec!["evict", "populate_read", "dontneed missing"],
        "mlock" => vec!["pin", "unlock onfault", "onfault", "lock missing"],
        _ => vec!["flush", "sync missing", "sync onfault"],
    }
    .into_iter()
    .map(String::from)
    .collect();
    bad.extend([
        format!("{word} pages 0-3,256"),
        format!("{word} pages 250-300"),
        format!("{word} pages 20-10"),
        format!("{word} pages 0-3,x"),
        format!("{word} 100"),
        format!("{word} 0 2M"),
        format!("{word} 0 4096 more"),
        format!("{word} pages 0-3\n{word} pages 4-7\n"),
    ]);
    let mut bad: Vec<Vec<u8>> = bad.into_iter().map(String::into_bytes).collect();
    bad.push(format!("{word} pages 0-3 \u{0}").into_bytes());
    bad.push(b"\xff\xfe".to_vec());
    let mut not_utf8 = format!("{word} pages 0-3 ").into_bytes();
    not_utf8.push(0xc3);
    bad.push(not_utf8);
    bad
}

#[test]
fn malformed_commands_are_einval_and_change_nothing() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--size", "1M", "src.bin"]);
    let src = tm.path("src.bin");
    // Pages 0-3 dirty: a sync or an eviction of any of them would show.
    let data = OpenOptions::new()
        .write(true)
        .open(tm.file("src.bin", "data"))
        .unwrap();
    for page in 0..4 {
        data.write_at(b"dirty", page * PAGE).unwrap();
    }
    let files = [
        ("madvise", "populate_read", "normal"),
        ("fadvise", "willneed", "normal"),
        ("mlock", "lock", "unlock"),
        ("msync", "sync", "async pages 200"),
    ];
    // One harmless command each, so there is a report to keep.
    let reports: Vec<String> = files
        .iter()
        .map(|(file, _, good)| run(&tm, "src.bin", file, good))
        .collect();
    for ((file, word, _), report) in files.iter().zip(&reports) {
        let commands = events_of(&tm, "src.bin", file);
        let bad = bad_inputs(file, word);
        for input in &bad {
            assert_eq!(
                send(&tm, "src.bin", file, input),
                Err(libc::EINVAL),
                "{file} {:?}",
                String::from_utf8_lossy(input)
            );
        }
        assert_eq!(&tm.read("src.bin", file), report, "{file} report kept");
        assert_eq!(
            events_of(&tm, "src.bin", &format!("{file}_rejected")),
            bad.len(),
            "{file}"
        );
        assert_eq!(
            events_of(&tm, "src.bin", file),
            commands,
            "{file} ran nothing"
        );
        // Measured, not reported: nothing read, dropped, synced or locked.
        assert_eq!(resident(&src), [0, 1, 2, 3], "after bad {file} input");
        assert_eq!(cachestat(&src, 0, 0).dirty, 4, "after bad {file} input");
        assert_eq!(locked_pages(&tm), 0, "after bad {file} input");
    }
}
