use super::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn one_of_each() -> Vec<Event> {
    let mut events = vec![
        Event::Mount {
            mountpoint: "/mnt".into(),
            io_mode: "cached",
        },
        Event::Open {
            pid: 1,
            uid: 0,
            access: Access::Read,
        },
        Event::Release { pid: 1, uid: 0 },
        Event::Msync {
            command: "sync",
            offset: 0,
            length: 4096,
            result: "ok".to_string(),
            dirty_before: 1,
            dirty_after: 0,
            duration_ns: 5,
            reached_source: true,
        },
        Event::Rejected {
            file: "msync",
            bytes: 3,
            reason: "bad".into(),
        },
    ];
    for file in ["madvise", "fadvise", "mlock"] {
        events.push(Event::Command {
            file,
            command: "willneed".into(),
            offset: 0,
            length: 4096,
            pages: Some(1),
            result: "ok".into(),
            resident_before: 0,
            resident_after: 1,
            locked_after: 0,
            duration_ns: 5,
        });
        events.push(Event::Rejected {
            file,
            bytes: 3,
            reason: "bad".into(),
        });
    }
    events.extend([
        Event::Crash {
            cause: "now".into(),
            lost: 3,
            kept: 0,
        },
        Event::Rejected {
            file: "crash",
            bytes: 3,
            reason: "bad".into(),
        },
        Event::Invalidate {
            offset: 0,
            length: 4096,
        },
        Event::SourceTruncated {
            old_size: 2,
            new_size: 1,
        },
        Event::SourceResized {
            old_size: 1,
            new_size: 2,
        },
        Event::SourceDeleted,
        Event::Unmount {
            synced: true,
            error: None,
        },
    ]);
    events
}

/// Everything from `offset` to the end, in `chunk`-byte reads.
fn read_all(
    reader: &mut EventReader,
    log: &EventLog,
    mut offset: u64,
    chunk: usize,
    viewer: Option<u32>,
) -> String {
    let mut all = Vec::new();
    loop {
        let bytes = reader.read(log, offset, chunk, viewer);
        if bytes.is_empty() {
            return String::from_utf8(all).unwrap();
        }
        offset += bytes.len() as u64;
        all.extend(bytes);
    }
}

/// `<digits> <known kind>[ ...]`: what a reader must never see broken.
fn assert_well_formed(line: &str) {
    let (stamp, rest) = line.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
    assert!(
        !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit()),
        "{line:?}"
    );
    let kind = rest.split(' ').next().unwrap();
    assert!(KINDS.contains(&kind), "{line:?}");
}

#[test]
fn every_kind_is_listed() {
    let kinds: Vec<&str> = one_of_each().iter().map(Event::kind).collect();
    assert_eq!(kinds, KINDS);
}

#[test]
fn lines_read_as_documented() {
    let log = EventLog::new(100);
    for event in one_of_each() {
        log.push(event);
    }
    let text = read_all(&mut EventReader::default(), &log, 0, 4096, None);
    let tails: Vec<&str> = text.lines().map(|l| l.split_once(' ').unwrap().1).collect();
    assert_eq!(
        tails,
        [
            "mount mountpoint=\"/mnt\" io_mode=cached",
            "open pid=1 access=r",
            "release pid=1",
            "msync command=sync offset=0 length=4096 result=ok dirty_before=1 \
             dirty_after=0 duration_ns=5 reached_source=yes",
            "msync_rejected bytes=3 reason=\"bad\"",
            "madvise command=willneed offset=0 length=4096 pages=1 result=ok \
             resident_before=0 resident_after=1 locked_after=0 duration_ns=5",
            "madvise_rejected bytes=3 reason=\"bad\"",
            "fadvise command=willneed offset=0 length=4096 pages=1 result=ok \
             resident_before=0 resident_after=1 locked_after=0 duration_ns=5",
            "fadvise_rejected bytes=3 reason=\"bad\"",
            "mlock command=willneed offset=0 length=4096 pages=1 result=ok \
             resident_before=0 resident_after=1 locked_after=0 duration_ns=5",
            "mlock_rejected bytes=3 reason=\"bad\"",
            "crash cause=\"now\" lost=3 kept=0",
            "crash_rejected bytes=3 reason=\"bad\"",
            "invalidate offset=0 length=4096",
            "source_truncated old_size=2 new_size=1",
            "source_resized old_size=1 new_size=2",
            "source_deleted",
            "unmount synced=yes",
        ]
    );
    assert_eq!(text.len() as u64, log.end());
}

#[test]
fn free_text_is_escaped() {
    let line = format_line(
        7,
        &Event::Unmount {
            synced: false,
            error: Some("a\"b\\c\nd\te\u{1}f é".into()),
        },
    )
    .text;
    assert_eq!(
        line,
        "7 unmount synced=no error=\"a\\\"b\\\\c\\nd\\te\\x01f é\"\n"
    );
}

#[test]
fn huge_free_text_is_cut_to_the_line_bound() {
    let mib = 1 << 20;
    for reason in ["x".repeat(mib), "\n".repeat(mib), "é".repeat(mib / 2)] {
        let line = format_line(
            unix_ns(),
            &Event::Rejected {
                file: "msync",
                bytes: reason.len(),
                reason,
            },
        )
        .text;
        assert!(line.len() <= LINE_MAX, "{}", line.len());
        assert!(line.len() > LINE_MAX - 8, "uses the room: {}", line.len());
        assert!(line.ends_with("…\"\n"), "{line}");
        assert_eq!(line.matches('\n').count(), 1);
        assert_well_formed(line.trim_end());
    }
    let line = format_line(
        0,
        &Event::Mount {
            mountpoint: "/".repeat(mib),
            io_mode: "passthrough",
        },
    )
    .text;
    assert!(line.len() <= LINE_MAX);
    assert!(line.ends_with("…\" io_mode=passthrough\n"), "{line}");
}

#[test]
fn text_that_fits_exactly_is_not_cut() {
    let prefix = format_line(
        0,
        &Event::Rejected {
            file: "msync",
            bytes: 1,
            reason: String::new(),
        },
    )
    .text
    .len();
    let reason = "y".repeat(LINE_MAX - prefix);
    let line = format_line(
        0,
        &Event::Rejected {
            file: "msync",
            bytes: 1,
            reason,
        },
    )
    .text;
    assert_eq!(line.len(), LINE_MAX);
    assert!(line.ends_with("y\"\n"));
}

#[test]
fn other_users_see_pids_masked_at_the_same_offsets() {
    let log = EventLog::new(10);
    log.push(Event::Open {
        pid: 1234,
        uid: 1000,
        access: Access::ReadWrite,
    });
    log.push(Event::Release {
        pid: 1234,
        uid: 1000,
    });
    log.push(Event::Open {
        pid: 77,
        uid: 0,
        access: Access::Read,
    });
    let read = |viewer| read_all(&mut EventReader::default(), &log, 0, 4096, viewer);
    let all = read(None);
    assert_eq!(read(Some(0)), all);
    let owner = read(Some(1000));
    assert!(owner.contains("open pid=1234 access=rw\n"), "{owner}");
    assert!(owner.contains("release pid=1234\n"), "{owner}");
    assert!(owner.contains("open pid=** access=r\n"), "{owner}");
    let stranger = read(Some(2000));
    assert!(stranger.contains("open pid=**** access=rw\n"), "{stranger}");
    assert!(stranger.contains("release pid=****\n"), "{stranger}");
    assert!(!stranger.contains("1234"), "{stranger}");
    for text in [&owner, &stranger] {
        assert_eq!(text.len(), all.len());
        let ends = |t: &str| t.match_indices('\n').map(|(i, _)| i).collect::<Vec<_>>();
        assert_eq!(ends(text), ends(&all));
    }
}

#[test]
fn partial_reads_join_up() {
    let log = EventLog::new(10);
    for event in one_of_each() {
        log.push(event);
    }
    let whole = read_all(&mut EventReader::default(), &log, 0, 1 << 20, None);
    for chunk in [1, 5, 16, 100] {
        let pieces = read_all(&mut EventReader::default(), &log, 0, chunk, None);
        assert_eq!(pieces, whole, "chunk {chunk}");
    }
}

#[test]
fn a_reader_that_fell_behind_finishes_its_line_then_resumes_at_a_line_start() {
    let log = EventLog::new(3);
    let rejected = |n: usize| Event::Rejected {
        file: "msync",
        bytes: n,
        reason: format!("line {n}"),
    };
    log.push(rejected(0));
    let mut reader = EventReader::default();
    let head = reader.read(&log, 0, 16, None);
    assert_eq!(head.len(), 16);
    for n in 1..10 {
        log.push(rejected(n));
    }
    let text = read_all(&mut reader, &log, 16, 16, None);
    let text = String::from_utf8(head).unwrap() + &text;
    let reasons: Vec<&str> = text
        .lines()
        .map(|l| l.split_once("reason=").unwrap().1)
        .collect();
    assert_eq!(
        reasons,
        ["\"line 0\"", "\"line 7\"", "\"line 8\"", "\"line 9\""]
    );

    // A new reader, or a seek to a dropped offset, starts at the oldest line.
    let fresh = read_all(&mut EventReader::default(), &log, 0, 16, None);
    assert!(fresh.starts_with(|c: char| c.is_ascii_digit()));
    assert!(
        fresh.lines().next().unwrap().ends_with("\"line 7\""),
        "{fresh}"
    );
    assert_eq!(read_all(&mut reader, &log, 5, 4096, None), fresh);
}

#[test]
fn tiny_reads_while_lines_rotate_out_never_splice_lines() {
    let log = Arc::new(EventLog::new(10));
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..3000 {
                    let n = (i * 7 + w * 13) % 300;
                    log.push(Event::Rejected {
                        file: "msync",
                        bytes: n,
                        reason: "x".repeat(n),
                    });
                    log.push(Event::Open {
                        pid: i as u32,
                        uid: 1,
                        access: Access::Read,
                    });
                }
            })
        })
        .collect();
    let reader = {
        let (log, done) = (Arc::clone(&log), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut reader = EventReader::default();
            let (mut offset, mut all) = (0, Vec::new());
            loop {
                let finished = done.load(Ordering::Acquire);
                let bytes = reader.read(&log, offset, 16, Some(2));
                if bytes.is_empty() && finished {
                    return String::from_utf8(all).unwrap();
                }
                offset += bytes.len() as u64;
                all.extend(bytes);
            }
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let text = reader.join().unwrap();
    assert!(text.ends_with('\n'));
    let mut lines = 0;
    for line in text.lines() {
        assert_well_formed(line);
        if let Some(fields) = line.split_once(" msync_rejected ").map(|(_, f)| f) {
            let (bytes, reason) = fields.split_once(" reason=").unwrap();
            let n: usize = bytes.strip_prefix("bytes=").unwrap().parse().unwrap();
            assert_eq!(reason, format!("\"{}\"", "x".repeat(n)), "{line}");
        } else {
            assert!(
                line.contains(" open pid=") && line.ends_with(" access=r"),
                "{line}"
            );
        }
        lines += 1;
    }
    assert!(lines >= 10, "{lines} lines");
}
