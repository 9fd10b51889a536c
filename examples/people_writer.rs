//! Write ten fixed-size records into a file through a shared memory mapping.
//!
//! This is the Rust twin of the classic `map_normalfile1.c` teaching program:
//! instead of `write(2)`-ing each record, we map the file and assign to a
//! `Person` that lives *in the file's pages*. With `MAP_SHARED` those stores
//! land in the page cache, so every other process that reads or maps the file
//! sees them at once; they reach the disk later, on `msync(2)` or writeback.
//!
//! Try it on an mmapfs mount:
//!
//! ```text
//! mmapfs --size 1M people.bin mnt
//! cargo run --example people_writer -- mnt/people.bin/data --hold
//! cat mnt/people.bin/dirty_pages          # page 0 is dirty
//! cargo run --example people_reader -- mnt/people.bin/data
//! echo sync > mnt/people.bin/msync        # now it is on disk too
//! ```

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Map DATA with MAP_SHARED and store ten `Person` records at offset 0.
#[derive(Parser)]
#[command(name = "people_writer")]
struct Args {
    /// The file to write into (e.g. MOUNTPOINT/NAME/data); it must already
    /// be at least 80 bytes long, because a mapping cannot grow a file.
    data: PathBuf,

    /// After writing, print `ready` and keep the mapping until stdin closes.
    #[arg(long)]
    hold: bool,
}

/// The record, laid out exactly like the C struct: `#[repr(C)]` fixes the
/// field order and padding, so C and Rust programs can share the file.
#[repr(C)]
#[derive(Clone, Copy)]
struct Person {
    name: [u8; 4],
    age: i32,
}

const RECORDS: usize = 10;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("people_writer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&args.data)
        .map_err(|e| format!("{}: {e}", args.data.display()))?;

    let len = RECORDS * std::mem::size_of::<Person>();
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    if file_len < len as u64 {
        // The C original extends the file with lseek + write first. Touching
        // mapped bytes past the end of the file would raise SIGBUS instead.
        return Err(format!(
            "{} is {file_len} bytes; {len} are needed (a mapping cannot grow the file)",
            args.data.display()
        ));
    }

    // SAFETY: a fresh mapping chosen by the kernel (addr = NULL) aliases no
    // Rust object; the result is checked before use.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED, // stores go to the shared page cache, not a private copy
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }

    // The mapping is page-aligned, so it is aligned for `Person` too. Treat
    // it as an array of ten records, as the C program does with a pointer.
    let people = addr.cast::<Person>();
    for i in 0..RECORDS {
        let mut name = [0u8; 4]; // NUL-padded, like strcpy into char[4]
        name[0] = b'a' + i as u8;
        let person = Person {
            name,
            age: 20 + i as i32,
        };
        // SAFETY: i < RECORDS, so the record lies inside the `len` bytes mapped.
        unsafe { people.add(i).write(person) };
    }
    println!("wrote {RECORDS} records");

    if args.hold {
        // Keeping the mapping open lets another process (or a test) look at
        // the file while our stores are still only in the page cache.
        println!("ready");
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    }

    // munmap does not write anything back by itself: the dirty pages stay in
    // the page cache until msync(2), fsync(2) or the kernel's writeback.
    // SAFETY: `addr`/`len` are exactly what mmap returned; nothing uses them after.
    if unsafe { libc::munmap(addr, len) } != 0 {
        return Err(format!("munmap: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
