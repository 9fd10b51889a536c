//! Watch copy-on-write happen in a `MAP_PRIVATE` mapping.
//!
//! With `mmapfs --private`, the daemon maps its source `MAP_PRIVATE`. The
//! first store to a page makes the kernel copy that page into memory that
//! belongs to the daemon alone; from then on the page is "dirty" (it differs
//! from the file) but it can never be written back: a private mapping has no
//! path to the file. `msync(2)` succeeds and does nothing useful, which
//! mmapfs reports as `reached_source no`.
//!
//! ```text
//! mmapfs --private src.bin mnt
//! private_cow mnt/src.bin
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

/// Write into a --private mount's `data` and show that sync cannot reach the source.
#[derive(Parser)]
#[command(name = "private_cow")]
struct Args {
    /// A source directory of a `mmapfs --private` mount, e.g. MOUNTPOINT/src.bin.
    mountdir: PathBuf,

    /// Where to write in `data` (bytes).
    #[arg(long, default_value_t = 0)]
    offset: u64,

    /// What to write.
    #[arg(long, default_value = "copy-on-write")]
    text: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("private_cow: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read(dir: &Path, name: &str) -> Result<String, String> {
    fs::read_to_string(dir.join(name)).map_err(|e| format!("{}/{name}: {e}", dir.display()))
}

/// `dirty_pages` is one cpulist-style line, empty when nothing is dirty.
fn dirty_pages(dir: &Path) -> Result<String, String> {
    let list = read(dir, "dirty_pages")?.trim().to_string();
    Ok(if list.is_empty() {
        "(none)".to_string()
    } else {
        list
    })
}

fn value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
}

fn run(args: &Args) -> Result<(), String> {
    let dir = &args.mountdir;
    let stats = read(dir, "stats")?;
    let mode = value(&stats, "mode").unwrap_or("unknown");
    if mode != "private" {
        return Err(format!(
            "{} is a '{mode}' mapping; mount with --private to see copy-on-write",
            dir.display()
        ));
    }

    println!("dirty_pages before: {}", dirty_pages(dir)?);

    // An ordinary write(2) to `data`: the daemon copies it into its private
    // mapping, and that store is what triggers the copy-on-write fault.
    let data = OpenOptions::new()
        .write(true)
        .open(dir.join("data"))
        .map_err(|e| format!("data: {e}"))?;
    data.write_all_at(args.text.as_bytes(), args.offset)
        .map_err(|e| format!("write data: {e}"))?;
    println!("wrote {} bytes at offset {}", args.text.len(), args.offset);

    // The copied page now counts as dirty: it differs from the file.
    println!("dirty_pages after: {}", dirty_pages(dir)?);

    // The same as `echo sync > msync`: the write returns when msync(2) is done.
    println!("echo sync > msync");
    OpenOptions::new()
        .write(true)
        .open(dir.join("msync"))
        .and_then(|mut f| f.write_all(b"sync\n"))
        .map_err(|e| format!("msync: {e}"))?;

    let report = read(dir, "msync")?;
    for line in report.lines() {
        println!("  {line}");
    }
    match value(&report, "reached_source") {
        Some("no") => {
            println!("reached_source no");
            println!(
                "msync succeeded, but a MAP_PRIVATE page has no way back to the file: \
                 the source is unchanged, and the copy is lost at unmount"
            );
            println!("dirty_pages after sync: {}", dirty_pages(dir)?);
            Ok(())
        }
        other => Err(format!(
            "expected `reached_source no` after sync, got {other:?}"
        )),
    }
}
