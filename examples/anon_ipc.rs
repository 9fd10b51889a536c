//! Pass a message between two unrelated processes through shared memory.
//!
//! `mmapfs --anon shm=1M mnt` creates a memfd-backed region with no file
//! on disk and serves it as `mnt/shm/data`. Any process that maps that file
//! `MAP_SHARED` gets the *same physical pages*, so a store by one process is
//! a load away for the other — no pipe, no socket, no copy through the kernel.
//!
//! Layout of the region used here:
//!
//! ```text
//! offset 0: u32 length (native endian), 0 = "no message yet"
//! offset 4: the message bytes
//! ```
//!
//! The order of stores matters. The sender writes the bytes first and the
//! length last, with `Ordering::Release`; the receiver loads the length with
//! `Ordering::Acquire`. That pairing guarantees that once the receiver sees a
//! non-zero length, it also sees every byte written before it — on any CPU.
//! Plain stores could be reordered so the length appears before the text.
//!
//! ```text
//! mmapfs --anon shm=1M mnt
//! anon_ipc recv mnt/shm/data &          # waits
//! anon_ipc send mnt/shm/data 'hello'    # recv prints: hello
//! ```
//!
//! This is a one-message mailbox: for a stream, use a ring buffer with head
//! and tail indices published the same way.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

/// Exchange a message through a shared mapping of an `--anon` region's `data`.
#[derive(Parser)]
#[command(name = "anon_ipc")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Store MESSAGE in DATA, then publish its length.
    Send {
        /// The shared file, e.g. MOUNTPOINT/shm/data.
        data: PathBuf,
        /// The text to send (must not be empty: length 0 means "nothing yet").
        message: String,
    },
    /// Wait until DATA holds a message, then print it.
    Recv {
        /// The shared file, e.g. MOUNTPOINT/shm/data.
        data: PathBuf,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
        timeout: f64,
    },
}

/// Bytes before the message: the length word.
const HEADER: usize = std::mem::size_of::<u32>();

/// A `MAP_SHARED` mapping of a whole file, unmapped on drop.
struct Shared {
    addr: *mut libc::c_void,
    len: usize,
}

impl Shared {
    fn map(path: &Path) -> Result<Shared, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let len = file.metadata().map_err(|e| e.to_string())?.len() as usize;
        if len <= HEADER {
            return Err(format!("{} is too small ({len} bytes)", path.display()));
        }
        // Both sides map read-write: Rust's atomics are only defined on
        // memory that is valid for writes, even when we only load.
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a new kernel-chosen mapping, checked before use.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED, // MAP_PRIVATE would give each process its own copy
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(Shared { addr, len })
    }

    /// The length word, as an atomic: other processes change it under us.
    fn length(&self) -> &AtomicU32 {
        // SAFETY: the mapping is page-aligned (so 4-byte aligned), at least
        // HEADER bytes long, readable and writable, and lives as long as
        // `self`.
        unsafe { AtomicU32::from_ptr(self.addr.cast::<u32>()) }
    }

    fn message_ptr(&self) -> *mut u8 {
        // SAFETY: HEADER < len, checked in `map`.
        unsafe { self.addr.cast::<u8>().add(HEADER) }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: exactly the range mmap returned.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.command {
        Command::Send { data, message } => send(data, message),
        Command::Recv { data, timeout } => recv(data, Duration::from_secs_f64(*timeout)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("anon_ipc: {e}");
            ExitCode::FAILURE
        }
    }
}

fn send(data: &Path, message: &str) -> Result<(), String> {
    let bytes = message.as_bytes();
    if bytes.is_empty() {
        return Err("the message must not be empty".into());
    }
    let shared = Shared::map(data)?;
    let room = shared.len - HEADER;
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|_| bytes.len() <= room)
        .ok_or_else(|| format!("the message is {} bytes; only {room} fit", bytes.len()))?;

    // Take down any older message first, so a receiver never pairs the old
    // length with half-written new bytes.
    shared.length().store(0, Ordering::Release);
    // SAFETY: `bytes.len() <= room`, so the copy stays inside the mapping.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), shared.message_ptr(), bytes.len()) };
    // Publish: everything stored above is visible to whoever loads this
    // length with Acquire and sees it non-zero.
    shared.length().store(len, Ordering::Release);

    println!("sent {len} bytes");
    Ok(())
}

fn recv(data: &Path, timeout: Duration) -> Result<(), String> {
    let shared = Shared::map(data)?;
    let deadline = Instant::now() + timeout;
    // Polling is the simplest way to wait on shared memory. Real programs
    // sleep on a futex in the region, or use an eventfd or pipe to wake up.
    let len = loop {
        let len = shared.length().load(Ordering::Acquire);
        if len != 0 {
            break len as usize;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no message in {} within {:.1} s",
                data.display(),
                timeout.as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if len > shared.len - HEADER {
        return Err(format!("corrupt length {len} in {}", data.display()));
    }
    let mut message = vec![0u8; len];
    // SAFETY: len fits in the mapping (checked above).
    unsafe { std::ptr::copy_nonoverlapping(shared.message_ptr(), message.as_mut_ptr(), len) };
    println!("{}", String::from_utf8_lossy(&message));
    Ok(())
}
