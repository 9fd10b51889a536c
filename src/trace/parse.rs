//! Lines of a tracefs instance's `trace_pipe`, printed with the `fields`
//! option (every field as `name=0xHEX (DECIMAL)`) and without irq-info:
//!
//! ```text
//!          python3-14232   [001]   9595.858294: mm_filemap_fault: i_ino=0x98c0b3 (10010803) s_dev=0xfe00000 (266338304) index=0xa (10)
//! CPU:1 [LOST 123 EVENTS]
//! ```
//!
//! The command name is free text of its process's choosing (up to 15
//! bytes, right-aligned in 16 columns), so it is read by position, never by
//! searching for separators it could contain.

/// One page event, as the kernel reported it (page indices of the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// `mm_filemap_fault`: a fault that looked the page up in the cache.
    Fault { dev: u64, ino: u64, index: u64 },
    /// `mm_filemap_map_pages`: fault-around mapped cached pages.
    Map {
        dev: u64,
        ino: u64,
        first: u64,
        last: u64,
    },
    /// `mm_filemap_add_to_page_cache`: a folio of `1 << order` pages.
    Cached {
        dev: u64,
        ino: u64,
        index: u64,
        order: u32,
    },
    /// `mm_filemap_delete_from_page_cache`.
    Evicted {
        dev: u64,
        ino: u64,
        index: u64,
        order: u32,
    },
    /// `page_cache_sync_ra` / `page_cache_async_ra`.
    Readahead {
        dev: u64,
        ino: u64,
        index: u64,
        sync: bool,
        requested: u64,
        size: u64,
        ra_pages: u64,
    },
    /// `writeback_dirty_folio`: the folio starting at `index` became dirty.
    Dirtied { ino: u64, index: u64 },
    /// `sb_mark_inode_writeback`: the inode's first folio went under
    /// writeback, in the context of whoever started it.
    WritebackBegins { dev: u64, ino: u64 },
    /// `sb_clear_inode_writeback`: its last folio finished writeback.
    WritebackEnds { dev: u64, ino: u64 },
    /// `writeback_start`: a flusher begins a piece of work for `reason`.
    FlusherWork { reason: u64 },
    /// `writeback_queue` (filtered to reason sync): a process asked the
    /// flushers to sync, and waits for them.
    SyncQueued,
}

/// One line of `trace_pipe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Event {
        /// The instance's clock (`boot`), in ns.
        at_ns: u64,
        pid: u32,
        comm: String,
        what: What,
    },
    /// The kernel's buffer overflowed: `count` events were dropped.
    Lost { count: u64 },
}

/// Width the kernel right-aligns the command name to.
const COMM_WIDTH: usize = 16;

/// Parse one line (without its newline); `None` for anything this daemon
/// did not ask for or cannot read.
pub fn line(text: &str) -> Option<Line> {
    if let Some(rest) = text.strip_prefix("CPU:") {
        let count = rest.split_once("[LOST ")?.1.split_once(' ')?.0;
        return Some(Line::Lost {
            count: count.parse().ok()?,
        });
    }
    if text.len() <= COMM_WIDTH || !text.is_char_boundary(COMM_WIDTH) {
        return None;
    }
    let (comm, rest) = text.split_at(COMM_WIDTH);
    let rest = rest.strip_prefix('-')?;
    let (pid, rest) = rest.split_once(' ')?;
    let rest = rest.trim_start().strip_prefix('[')?;
    let (_cpu, rest) = rest.split_once(']')?;
    let (stamp, rest) = rest.trim_start().split_once(": ")?;
    let (event, fields) = rest.split_once(": ")?;
    let fields = Fields::of(fields);
    Some(Line::Event {
        at_ns: stamp_ns(stamp)?,
        pid: pid.parse().ok()?,
        comm: comm.trim_start().to_string(),
        what: what(event, &fields)?,
    })
}

/// `SECONDS.MICROSECONDS` in ns.
fn stamp_ns(stamp: &str) -> Option<u64> {
    let (secs, micros) = stamp.split_once('.')?;
    let secs: u64 = secs.parse().ok()?;
    let micros: u64 = micros.parse().ok()?;
    secs.checked_mul(1_000_000_000)?
        .checked_add(micros.checked_mul(1000)?)
}

fn what(event: &str, f: &Fields) -> Option<What> {
    let file = || Some((f.get("s_dev")?, f.get("i_ino")?));
    Some(match event {
        "mm_filemap_fault" => {
            let (dev, ino) = file()?;
            What::Fault {
                dev,
                ino,
                index: f.get("index")?,
            }
        }
        "mm_filemap_map_pages" => {
            let (dev, ino) = file()?;
            What::Map {
                dev,
                ino,
                first: f.get("index")?,
                last: f.get("last_index")?,
            }
        }
        "mm_filemap_add_to_page_cache" | "mm_filemap_delete_from_page_cache" => {
            let (dev, ino) = file()?;
            let index = f.get("index")?;
            let order = u32::try_from(f.get("order")?).ok()?;
            if event == "mm_filemap_add_to_page_cache" {
                What::Cached {
                    dev,
                    ino,
                    index,
                    order,
                }
            } else {
                What::Evicted {
                    dev,
                    ino,
                    index,
                    order,
                }
            }
        }
        "page_cache_sync_ra" | "page_cache_async_ra" => {
            let (dev, ino) = file()?;
            What::Readahead {
                dev,
                ino,
                index: f.get("index")?,
                sync: event == "page_cache_sync_ra",
                requested: f.get("req_count")?,
                size: f.get("size")?,
                ra_pages: f.get("ra_pages")?,
            }
        }
        "writeback_dirty_folio" => What::Dirtied {
            ino: f.get("ino")?,
            index: f.get("index")?,
        },
        "sb_mark_inode_writeback" => What::WritebackBegins {
            dev: f.get("dev")?,
            ino: f.get("ino")?,
        },
        "sb_clear_inode_writeback" => What::WritebackEnds {
            dev: f.get("dev")?,
            ino: f.get("ino")?,
        },
        "writeback_start" => What::FlusherWork {
            reason: f.get("reason")?,
        },
        "writeback_queue" => What::SyncQueued,
        _ => return None,
    })
}

/// The numeric fields of an event: `name=0xHEX (DEC)`, or `name=(DEC)`
/// for single bytes. Text fields (`name=254:0`) are skipped.
struct Fields<'a>(Vec<(&'a str, u64)>);

impl<'a> Fields<'a> {
    fn of(text: &'a str) -> Fields<'a> {
        let mut out = Vec::new();
        let mut tokens = text.split(' ').peekable();
        while let Some(token) = tokens.next() {
            let Some((name, value)) = token.split_once('=') else {
                continue;
            };
            let decimal = |t: &str| t.strip_prefix('(')?.strip_suffix(')')?.parse().ok();
            let number = match decimal(value) {
                Some(n) => Some(n),
                None if value.starts_with("0x") => {
                    tokens.next_if(|t| t.starts_with('(')).and_then(decimal)
                }
                None => None,
            };
            if let Some(n) = number {
                out.push((name, n));
            }
        }
        Fields(out)
    }

    fn get(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_filemap_lines() {
        let l = "         python3-13008   [001]   9494.857399: mm_filemap_add_to_page_cache: pfn=0x13d575 (1299829) i_ino=0x98c0b3 (10010803) index=0x2 (2) s_dev=0xfe00000 (266338304) order=(2)";
        assert_eq!(
            line(l),
            Some(Line::Event {
                at_ns: 9_494_857_399_000,
                pid: 13008,
                comm: "python3".into(),
                what: What::Cached {
                    dev: 266_338_304,
                    ino: 10_010_803,
                    index: 2,
                    order: 2
                }
            })
        );
        let l = "         python3-13008   [001]   9494.858572: mm_filemap_map_pages: i_ino=0x98c0b3 (10010803) s_dev=0xfe00000 (266338304) index=0x0 (0) last_index=0xf (15)";
        assert!(matches!(
            line(l),
            Some(Line::Event {
                what: What::Map {
                    first: 0,
                    last: 15,
                    ..
                },
                ..
            })
        ));
    }

    #[test]
    fn reads_writeback_lines() {
        let l = "    kworker/u8:3-7650    [001]   9597.311511: writeback_start: name=254:0 nr_pages=0x7fffffffffffffff (9223372036854775807) sb_dev=0xfe00000 (266338304) sync_mode=0x1 (1) for_kupdate=0x0 (0) range_cyclic=0x0 (0) for_background=0x0 (0) reason=0x3 (3) cgroup_ino=0x1 (1)";
        match line(l) {
            Some(Line::Event {
                pid, comm, what, ..
            }) => {
                assert_eq!((pid, comm.as_str()), (7650, "kworker/u8:3"));
                assert_eq!(what, What::FlusherWork { reason: 3 });
            }
            other => panic!("{other:?}"),
        }
        let l = "         python3-13008   [001]   9494.858581: writeback_dirty_folio: name=254:0 ino=0x98c0b3 (10010803) index=0x14 (20)";
        assert!(matches!(
            line(l),
            Some(Line::Event {
                what: What::Dirtied {
                    ino: 10_010_803,
                    index: 20
                },
                ..
            })
        ));
    }

    #[test]
    fn a_command_name_cannot_fake_fields() {
        // A process may call itself anything that fits in 15 bytes.
        let l = " x-1 [0] 1.0: a-4242    [000]   10.000001: mm_filemap_fault: i_ino=0x1 (1) s_dev=0x2 (2) index=0x3 (3)";
        assert_eq!(line(l), None, "a misaligned line is not guessed at");
        let l = " a-1 [0] 1.0: ab-4242    [000]   10.000001: mm_filemap_fault: i_ino=0x1 (1) s_dev=0x2 (2) index=0x3 (3)";
        match line(l) {
            Some(Line::Event { pid, comm, .. }) => {
                assert_eq!((pid, comm.as_str()), (4242, "a-1 [0] 1.0: ab"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_lost_events() {
        assert_eq!(
            line("CPU:1 [LOST 123 EVENTS]"),
            Some(Line::Lost { count: 123 })
        );
        assert_eq!(line("garbage"), None);
    }
}
