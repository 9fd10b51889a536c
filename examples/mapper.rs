//! Map a whole file `MAP_SHARED`, store and load bytes through the mapping,
//! optionally `msync(2)` it, and optionally keep it mapped.
//!
//! A small tool for experiments (and for the mmapfs tests): while `--hold`
//! keeps the mapping alive you can watch it from the outside:
//!
//! ```text
//! mapper mnt/src.bin/data --write 4096=hello --hold &
//! cat mnt/src.bin/mappers        # our pid and the mapped range
//! cat mnt/src.bin/dirty_pages    # page 1 is dirty
//! ```
//!
//! It uses the `memmap2` crate: `MmapMut::map_mut` is
//! `mmap(PROT_READ|PROT_WRITE, MAP_SHARED)`, `Mmap::map` is
//! `mmap(PROT_READ, MAP_SHARED)`, `flush()` is `msync(MS_SYNC)`, and dropping
//! the map is `munmap`.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use memmap2::{Mmap, MmapMut};

/// Map PATH whole with MAP_SHARED, apply stores and loads, print `ready`.
#[derive(Parser)]
#[command(name = "mapper")]
struct Args {
    /// The file to map (e.g. MOUNTPOINT/NAME/data).
    path: PathBuf,

    /// Copy TEXT's bytes into the mapping at OFFSET (repeatable, in order).
    /// Any --write maps the file PROT_READ|PROT_WRITE, otherwise PROT_READ.
    #[arg(long = "write", value_name = "OFFSET=TEXT", value_parser = parse_store)]
    writes: Vec<(usize, String)>,

    /// After the stores, print LEN bytes from OFFSET as `read <text>`
    /// (non-printable bytes are escaped, e.g. `\x00`). Repeatable.
    #[arg(long = "read", value_name = "OFFSET=LEN", value_parser = parse_load)]
    reads: Vec<(usize, usize)>,

    /// msync(MS_SYNC) the whole mapping after the stores.
    #[arg(long)]
    msync: bool,

    /// After `ready`, keep the mapping until stdin reaches end-of-file.
    #[arg(long)]
    hold: bool,

    /// Before unmapping, check that every --write is still in the mapping
    /// (another process may have truncated or overwritten the file while
    /// it was held), then msync(MS_SYNC); print `kept` or fail.
    #[arg(long)]
    check_at_exit: bool,
}

/// `4096=hello` -> (4096, "hello"); the text may itself contain `=`.
fn parse_store(s: &str) -> Result<(usize, String), String> {
    let (offset, text) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}': expected OFFSET=TEXT"))?;
    Ok((parse_number(offset)?, text.to_string()))
}

/// `4096=5` -> (4096, 5)
fn parse_load(s: &str) -> Result<(usize, usize), String> {
    let (offset, len) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}': expected OFFSET=LEN"))?;
    Ok((parse_number(offset)?, parse_number(len)?))
}

/// Decimal, or hexadecimal with a `0x` prefix.
fn parse_number(s: &str) -> Result<usize, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => usize::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("'{s}' is not a number"))
}

/// The mapping, writable or not. Deref to a byte slice either way.
enum Map {
    ReadOnly(Mmap),
    ReadWrite(MmapMut),
}

impl Map {
    fn bytes(&self) -> &[u8] {
        match self {
            Map::ReadOnly(m) => m,
            Map::ReadWrite(m) => m,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mapper: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let writing = !args.writes.is_empty();
    let path = args.path.display();
    // PROT_WRITE on a MAP_SHARED mapping needs a descriptor opened for
    // writing too, or mmap fails with EACCES.
    let file = OpenOptions::new()
        .read(true)
        .write(writing)
        .open(&args.path)
        .map_err(|e| format!("{path}: {e}"))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len == 0 {
        return Err(format!("{path} is empty: mmap needs a length > 0"));
    }

    // SAFETY (both arms): the file may be changed by other processes while
    // mapped — that is what we want to observe — so we only copy bytes in
    // and out and never keep references into the mapping across calls.
    let mut map = if writing {
        Map::ReadWrite(unsafe { MmapMut::map_mut(&file) }.map_err(|e| format!("mmap: {e}"))?)
    } else {
        Map::ReadOnly(unsafe { Mmap::map(&file) }.map_err(|e| format!("mmap: {e}"))?)
    };
    // As in C, the mapping outlives the descriptor.
    drop(file);
    let size = map.bytes().len();

    if let Map::ReadWrite(m) = &mut map {
        for (offset, text) in &args.writes {
            let range = checked_range(*offset, text.len(), size)?;
            // A plain store into memory: no system call happens here. The
            // page becomes dirty in the page cache shared with every other
            // mapping and reader of the file.
            m[range].copy_from_slice(text.as_bytes());
        }
    }
    if args.msync {
        // msync(MS_SYNC): write this mapping's dirty pages back to the file
        // and wait until that is done. On a read-only mapping it is legal
        // too and has nothing of ours to write.
        match &map {
            Map::ReadWrite(m) => m.flush().map_err(|e| format!("msync: {e}"))?,
            Map::ReadOnly(m) => msync_readonly(m)?,
        }
    }

    for (offset, len) in &args.reads {
        let range = checked_range(*offset, *len, size)?;
        let text = map.bytes()[range].escape_ascii().to_string();
        println!("read {text}");
    }

    println!("ready");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    if args.hold {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    }
    if args.check_at_exit {
        check_stores(&map, &args.writes)?;
    }
    // Dropping `map` calls munmap. Dirty pages are not lost: they stay in
    // the page cache and are written back later (or by the next msync).
    drop(map);
    Ok(())
}

/// A store lost from the page cache reads back as whatever the file holds
/// now; a page past a shrunk end kills us with SIGBUS.
fn check_stores(map: &Map, writes: &[(usize, String)]) -> Result<(), String> {
    for (offset, text) in writes {
        let range = checked_range(*offset, text.len(), map.bytes().len())?;
        if &map.bytes()[range] != text.as_bytes() {
            return Err(format!("the store at {offset} is gone"));
        }
    }
    if let Map::ReadWrite(m) = map {
        m.flush().map_err(|e| format!("msync: {e}"))?;
    }
    println!("kept");
    std::io::stdout().flush().map_err(|e| e.to_string())
}

fn msync_readonly(m: &Mmap) -> Result<(), String> {
    // SAFETY: the pointer and length describe exactly our live mapping.
    let rc = unsafe { libc::msync(m.as_ptr() as *mut libc::c_void, m.len(), libc::MS_SYNC) };
    if rc != 0 {
        return Err(format!("msync: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// `offset..offset+len`, or an error if it leaves the mapping: touching
/// memory past the end would be a segfault (or SIGBUS past end of file).
fn checked_range(offset: usize, len: usize, size: usize) -> Result<std::ops::Range<usize>, String> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(offset..end),
        _ => Err(format!("{offset}+{len} is outside the {size}-byte mapping")),
    }
}
