//! Read the ten `Person` records that `people_writer` stored, through a
//! read-only shared mapping.
//!
//! Because both programs use `MAP_SHARED` on the same file, the reader sees
//! the writer's stores straight from the page cache — even while they are
//! still dirty and have not reached the disk. That is the whole point of
//! shared file mappings as an IPC mechanism.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Map DATA read-only and print the ten `Person` records at offset 0.
#[derive(Parser)]
#[command(name = "people_reader")]
struct Args {
    /// The file to read (e.g. MOUNTPOINT/NAME/data).
    data: PathBuf,
}

/// Must match the writer's layout byte for byte; `#[repr(C)]` guarantees it.
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
            eprintln!("people_reader: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    // O_RDONLY is enough: PROT_READ only needs a readable descriptor.
    let file = File::open(&args.data).map_err(|e| format!("{}: {e}", args.data.display()))?;
    let len = RECORDS * std::mem::size_of::<Person>();
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    if file_len < len as u64 {
        return Err(format!(
            "{} is {file_len} bytes, shorter than {RECORDS} records ({len} bytes)",
            args.data.display()
        ));
    }

    // SAFETY: a new kernel-chosen mapping; checked before use.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    // The descriptor can be closed now: the mapping keeps its own reference
    // to the file, exactly as in C.
    drop(file);

    let people = addr.cast::<Person>().cast_const();
    for i in 0..RECORDS {
        // `read_volatile` copies the record out of the shared pages; another
        // process may change them at any time, so we never hold a reference.
        // SAFETY: i < RECORDS keeps the read inside the mapping.
        let p = unsafe { people.add(i).read_volatile() };
        let end = p.name.iter().position(|&b| b == 0).unwrap_or(p.name.len());
        let name = String::from_utf8_lossy(&p.name[..end]);
        println!("name: {name} age: {}", p.age);
    }

    // SAFETY: exactly the range mmap returned; not used afterwards.
    if unsafe { libc::munmap(addr, len) } != 0 {
        return Err(format!("munmap: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
