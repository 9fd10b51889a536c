//! The classic mmap durability bug: a program stores a record through a
//! `MAP_SHARED` mapping, then a "committed" flag, and exits believing both
//! are on disk. They are only in the page cache: without `msync(MS_SYNC)`
//! (or `fsync`) a power cut before the kernel's writeback (about 30 s
//! later) loses them, and nothing ever reported an error.
//!
//! `mmapfs --crash-test` makes that power cut happen on command:
//!
//! ```text
//! mmapfs --crash-test --size 1M log.bin mnt
//! forgot_msync mnt/log.bin/data            # "committed", no msync
//! cat mnt/log.bin/unsynced_pages           # 0: a crash now would lose it
//! echo now > mnt/log.bin/crash; cat mnt/log.bin/crash
//! forgot_msync --check log.bin             # lost: the record never reached the disk
//! forgot_msync --msync mnt/log.bin/data    # the fix: msync before saying "committed"
//! ```

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use memmap2::MmapMut;

const RECORD: &[u8] = b"record: alice pays bob 100";
const COMMITTED: &[u8] = b"committed";
/// Where the flag goes: after the record, where a log keeps its commit mark.
const FLAG_AT: usize = 4096;

/// Store a record and a commit flag through a mapping of FILE.
#[derive(Parser)]
#[command(name = "forgot_msync")]
struct Args {
    /// The file to map (e.g. MOUNTPOINT/NAME/data), at least 8 KiB.
    file: PathBuf,

    /// Do it right: msync(MS_SYNC) the record before storing the flag, and
    /// the flag before saying "committed".
    #[arg(long)]
    msync: bool,

    /// Only read FILE and say whether the committed record is there.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("forgot_msync: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let file = OpenOptions::new()
        .read(true)
        .write(!args.check)
        .open(&args.file)
        .map_err(|e| format!("{}: {e}", args.file.display()))?;
    if args.check {
        let bytes = std::fs::read(&args.file).map_err(|e| e.to_string())?;
        let has = |at: usize, text: &[u8]| bytes.get(at..at + text.len()) == Some(text);
        return match (has(0, RECORD), has(FLAG_AT, COMMITTED)) {
            (true, true) => {
                println!("committed record present");
                Ok(())
            }
            _ => Err("lost: the committed record never reached the disk".into()),
        };
    }
    // SAFETY: only this program writes the file while it runs; the bytes
    // are copied in and never referenced across calls.
    let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(|e| format!("mmap: {e}"))?;
    if map.len() < FLAG_AT + COMMITTED.len() {
        return Err("the file is too short: give it at least 8 KiB".into());
    }
    map[..RECORD.len()].copy_from_slice(RECORD);
    if args.msync {
        // The record must be durable before the flag that vouches for it.
        map.flush_range(0, RECORD.len())
            .map_err(|e| format!("msync: {e}"))?;
    }
    map[FLAG_AT..FLAG_AT + COMMITTED.len()].copy_from_slice(COMMITTED);
    if args.msync {
        map.flush_range(FLAG_AT, COMMITTED.len())
            .map_err(|e| format!("msync: {e}"))?;
    }
    // Without --msync this is the bug: "committed" is only a promise.
    println!("committed");
    Ok(())
}
