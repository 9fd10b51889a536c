//! Why touching a mapping past the end of its file raises SIGBUS.
//!
//! `mmap(2)` happily maps more bytes than a file has: it only reserves
//! address space. Pages are filled lazily, on the first access, by the page
//! fault handler, which asks the file for that page. Then:
//!
//! * inside the file: the page is read in, all fine;
//! * in the last, partial page: the bytes after end-of-file read as zero
//!   (and stores there never reach the file);
//! * a whole page past end-of-file: there is no data that could back it, so
//!   the kernel cannot complete the fault and sends **SIGBUS** ("bus error").
//!
//! Contrast with SIGSEGV, which means the address is not mapped at all (or
//! the access breaks the protection). SIGBUS means: mapped, but the object
//! behind the mapping cannot supply the page. It also happens when a file is
//! truncated while someone has it mapped.
//!
//! To survive the signal, this program makes the dangerous access in a
//! forked child. The child catches SIGBUS with a `sigaction` handler that
//! reports the faulting address (`si_addr`) through a pipe; the parent turns
//! it into an offset and explains it.
//!
//! ```text
//! mmapfs --size 10000 src.bin mnt
//! sigbus mnt/src.bin/data
//! ```

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};

use clap::Parser;

/// Map DATA one page longer than the file and show the SIGBUS that follows.
#[derive(Parser)]
#[command(name = "sigbus")]
struct Args {
    /// The file to map (e.g. MOUNTPOINT/NAME/data).
    data: PathBuf,
}

/// The pipe's write end, for the signal handler (it cannot capture state).
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);

/// Runs in the child when it gets SIGBUS. Only async-signal-safe calls are
/// allowed here: `write(2)` and `_exit(2)` are; allocation and println are not.
extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers, and
    // for SIGBUS `si_addr` is the faulting address.
    let addr = unsafe { (*info).si_addr() } as usize;
    let bytes = addr.to_ne_bytes();
    // SAFETY: writing a local buffer to a pipe, then leaving the process.
    unsafe {
        libc::write(
            REPORT_FD.load(Ordering::Relaxed),
            bytes.as_ptr().cast(),
            bytes.len(),
        );
        libc::_exit(0);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("sigbus: {e}");
            ExitCode::FAILURE
        }
    }
}

fn os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn run(args: &Args) -> Result<bool, String> {
    let file = File::open(&args.data).map_err(|e| format!("{}: {e}", args.data.display()))?;
    let size = file.metadata().map_err(|e| e.to_string())?.len() as usize;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;

    // The file's pages, rounded up, plus one page that has no file behind it.
    let file_pages = size.div_ceil(page) * page;
    let map_len = file_pages + page;
    println!("file size {size} bytes, page size {page}, mapping {map_len} bytes");

    // SAFETY: a new kernel-chosen mapping, checked before use.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(os_error("mmap"));
    }
    let base = base.cast::<u8>();
    println!("mmap of {map_len} bytes succeeded: mmap does not check the file size");

    if size > 0 {
        // SAFETY: size - 1 < map_len; the page is backed by the file.
        let last = unsafe { base.add(size - 1).read_volatile() };
        println!(
            "offset {}: last byte of the file, reads fine ({last:#04x})",
            size - 1
        );
    }
    if size < file_pages {
        // SAFETY: still inside the last page that holds file data.
        let tail = unsafe { base.add(size).read_volatile() };
        println!(
            "offset {size}: past end-of-file but in its last page, reads as zero ({tail:#04x})"
        );
    }

    // Now the first byte of the extra page, in a child process.
    let touch = file_pages;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) returns.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(os_error("pipe"));
    }
    let [read_fd, write_fd] = fds;

    // SAFETY: this program is single-threaded, so the child may run
    // ordinary code after fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(os_error("fork"));
    }
    if pid == 0 {
        // Child: install the handler, then touch the page with no file behind it.
        REPORT_FD.store(write_fd, Ordering::Relaxed);
        // SAFETY: a zeroed sigaction with our handler and SA_SIGINFO is valid.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
            // This load faults; the handler reports and exits.
            let _ = base.add(touch).read_volatile();
            // Only reached if no SIGBUS came.
            libc::_exit(1);
        }
    }

    // Parent: wait for the child's report.
    // SAFETY: we own both pipe ends; the write end must be closed here so
    // the read sees end-of-file if the child dies without writing.
    unsafe { libc::close(write_fd) };
    let mut reader = unsafe { File::from_raw_fd(read_fd) };
    let mut report = Vec::new();
    let _ = reader.read_to_end(&mut report);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };

    let caught = <[u8; std::mem::size_of::<usize>()]>::try_from(report.as_slice()).ok();
    let ok = match caught {
        Some(bytes) => {
            let addr = usize::from_ne_bytes(bytes);
            // The child is a copy of us, so its mapping sits at the same address.
            let offset = addr.wrapping_sub(base as usize);
            println!("SIGBUS at offset {offset}: the mapping is longer than the file");
            true
        }
        None => {
            println!("no SIGBUS at offset {touch} (child wait status {status:#x})");
            false
        }
    };

    // SAFETY: exactly the range mmap returned.
    unsafe { libc::munmap(base.cast(), map_len) };
    Ok(ok)
}
