//! Bad input on every file: arbitrary bytes at `msync`, writes to generated
//! files, odd offsets on `data`. Each gets a clear errno and changes nothing.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;

use proptest::prelude::*;

use crate::util::{stat_value, TestMount};

/// What a well-formed command looks like (the oracle for the property).
fn well_formed(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.contains(['\n', '\r', '\0']) {
        return false;
    }
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    let numbers_ok = |w: &[&str]| w.iter().all(|n| n.parse::<u64>().is_ok());
    match words.as_slice() {
        [] => true,
        [cmd, rest @ ..] if ["sync", "1", "async", "invalidate"].contains(cmd) => {
            rest.is_empty()
                || (rest.len() <= 2 && numbers_ok(rest) && {
                    let offset: u64 = rest[0].parse().unwrap();
                    let length: Option<u64> = rest.get(1).map(|l| l.parse().unwrap());
                    offset.is_multiple_of(4096)
                        && offset < 1 << 20
                        && length.is_none_or(|l| l > 0 && offset + l <= 1 << 20)
                })
        }
        _ => false,
    }
}

fn command_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        "(sync|async|invalidate|1|flush|SYNC)?( [0-9]{1,8}){0,3}\n?".prop_map(String::into_bytes),
        "(sync|async) (0|4096|8192|1048576|[0-9]{1,7}) (4096|0|[0-9]{1,7})"
            .prop_map(String::into_bytes),
    ]
}

#[test]
fn arbitrary_msync_writes_are_ok_or_einval_and_change_nothing_when_rejected() {
    require_fuse!();
    let mut tm = TestMount::new();
    tm.mount(&["--size", "1M", "src.bin"]);
    std::fs::write(tm.path("reference"), fs::read(tm.path("src.bin")).unwrap()).unwrap();
    let config = ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(command in command_bytes(), offset in 0u64..10_000)| {
        let before = tm.read("src.bin", "msync");
        let calls = tm.stat("src.bin", "msync_calls");
        let f = OpenOptions::new().write(true).open(tm.file("src.bin", "msync")).unwrap();
        let result = f.write_at(&command, offset);
        if well_formed(&command) {
            prop_assert_eq!(result.ok(), Some(command.len()), "{:?}", String::from_utf8_lossy(&command));
        } else {
            prop_assert_eq!(result.err().and_then(|e| e.raw_os_error()), Some(libc::EINVAL));
            prop_assert_eq!(tm.read("src.bin", "msync"), before);
            prop_assert_eq!(tm.stat("src.bin", "msync_calls"), calls);
        }
    });
    assert_eq!(
        fs::read(tm.path("src.bin")).unwrap(),
        fs::read(tm.path("reference")).unwrap()
    );
}

#[test]
fn generated_files_refuse_writes_and_data_refuses_bad_offsets() {
    require_fuse!();
    let mut tm = TestMount::new();
    // A window shorter than the file has a fixed size (a whole file would
    // grow instead, as the file itself does).
    fs::write(tm.path("src.bin"), vec![0u8; 128 << 10]).unwrap();
    tm.mount(&["--length", "64K", "src.bin"]);
    for name in [
        "stats",
        "dirty_pages",
        "resident_pages",
        "events",
        "mappers",
        "map",
    ] {
        let err = OpenOptions::new()
            .write(true)
            .open(tm.file("src.bin", name))
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{name}");
    }
    let err = OpenOptions::new()
        .write(true)
        .open(tm.mnt.join("stats"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES));
    let data = OpenOptions::new()
        .write(true)
        .open(tm.file("src.bin", "data"))
        .unwrap();
    for offset in [64 << 10, (64 << 10) + 1, 1 << 40, i64::MAX as u64 - 10] {
        let err = data.write_at(b"x", offset).unwrap_err();
        assert!(
            matches!(
                err.raw_os_error(),
                Some(libc::ENOSPC | libc::EFBIG | libc::EINVAL)
            ),
            "{offset}: {err}"
        );
    }
    let mut append = OpenOptions::new()
        .append(true)
        .open(tm.file("src.bin", "data"))
        .unwrap();
    assert_eq!(
        append.write(b"x").unwrap_err().raw_os_error(),
        Some(libc::ENOSPC)
    );
    assert_eq!(fs::read(tm.path("src.bin")).unwrap(), vec![0u8; 128 << 10]);
    let stats = tm.read("src.bin", "stats");
    assert_eq!(stat_value(&stats, "write_bytes").as_deref(), Some("0"));
}
