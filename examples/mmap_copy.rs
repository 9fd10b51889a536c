//! Copy a file into another with two memory mappings and one `memcpy`.
//!
//! `cp` reads into a buffer and writes the buffer out: two copies through
//! the kernel. Here both files are mapped, so copying is a single
//! `copy_from_slice` between the two sets of page-cache pages; the kernel
//! only steps in to fault pages in and, on `msync(2)`, to write them back.
//!
//! The destination must already be large enough: a mapping never grows a
//! file (mmapfs's `data` has a fixed size; create it with `--size`).
//!
//! ```text
//! mmapfs --size 16M dst.bin mnt
//! mmap_copy some-file mnt/dst.bin/data
//! cmp -n "$(stat -c %s some-file)" some-file dst.bin   # already on disk
//! ```

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use memmap2::{Mmap, MmapOptions};

/// Copy SRC into the start of DATA through mmap, msync, print a checksum.
#[derive(Parser)]
#[command(name = "mmap_copy")]
struct Args {
    /// The file to copy from.
    src: PathBuf,
    /// The file to copy into (e.g. MOUNTPOINT/NAME/data); at least as large as SRC.
    data: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mmap_copy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let src = File::open(&args.src).map_err(|e| format!("{}: {e}", args.src.display()))?;
    let dst = OpenOptions::new()
        .read(true)
        .write(true) // MAP_SHARED + PROT_WRITE needs a writable descriptor
        .open(&args.data)
        .map_err(|e| format!("{}: {e}", args.data.display()))?;

    let n = src.metadata().map_err(|e| e.to_string())?.len();
    let room = dst.metadata().map_err(|e| e.to_string())?.len();
    if n > room {
        return Err(format!(
            "{} is {n} bytes but {} only {room}: a mapping cannot grow the file",
            args.src.display(),
            args.data.display()
        ));
    }
    if n == 0 {
        // mmap(2) refuses a zero length, and there is nothing to copy.
        println!("copied 0 bytes");
        println!("checksum {:016x}", fnv1a64(&[]));
        return Ok(());
    }
    let n = usize::try_from(n).map_err(|_| "SRC is too large to map".to_string())?;

    // SAFETY: nobody else is expected to change these files while we copy;
    // if someone does, we copy whatever bytes are there at that moment.
    let from: Mmap = unsafe { Mmap::map(&src) }.map_err(|e| format!("mmap SRC: {e}"))?;
    // Map only the first `n` bytes of the destination: that is all we touch.
    let mut to = unsafe { MmapOptions::new().len(n).map_mut(&dst) }
        .map_err(|e| format!("mmap DATA: {e}"))?;

    // The copy itself. Each first touch of a destination page is a page
    // fault that brings the page in; the stores then make it dirty.
    to.copy_from_slice(&from);

    // msync(MS_SYNC) over the whole destination mapping: returns once the
    // dirty pages have been written to the file. Without it they would still
    // reach the file eventually (writeback), but not at a known time.
    to.flush().map_err(|e| format!("msync: {e}"))?;

    // Checksum what the destination mapping holds now, so the caller can
    // compare it with a checksum of SRC computed any other way.
    println!("copied {n} bytes");
    println!("checksum {:016x}", fnv1a64(&to));
    Ok(())
}

/// 64-bit FNV-1a: tiny and good enough to spot a wrong byte.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
