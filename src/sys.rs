//! The system-call layer: raw calls the safe crates do not wrap, and the
//! memory mapping. This is the only module with `unsafe`; each block says
//! why it is sound.
use std::ffi::CString;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::ptr;

use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;

/// `cachestat(2)` has the same number on every architecture that has it.
const SYS_CACHESTAT: libc::c_long = 451;

pub fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(4096)
}

/// How the daemon maps a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// `MAP_SHARED`: stores land in the source's page cache.
    Shared,
    /// `MAP_PRIVATE`: stores are copied on write and never reach the source.
    Private,
}

/// One `mmap(2)` of a file window, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    addr: *mut u8,
    len: usize,
    writable: bool,
}

// SAFETY: the mapping is plain memory shared with other processes anyway;
// the pointer is never freed while a `&Mapping` exists (only in `Drop`).
unsafe impl Send for Mapping {}
// SAFETY: see `Send`; concurrent byte copies to and from shared memory are
// what every process mapping the file does too.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub fn new(
        fd: BorrowedFd<'_>,
        offset: u64,
        len: u64,
        writable: bool,
        sharing: Sharing,
    ) -> io::Result<Mapping> {
        let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let flags = match sharing {
            Sharing::Shared => libc::MAP_SHARED,
            Sharing::Private => libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        };
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL) cannot
        // alias any Rust object; the result is checked before use.
        let addr = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, fd.as_raw_fd(), offset) };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            addr: addr.cast(),
            len,
            writable,
        })
    }

    pub fn len(&self) -> u64 {
        self.len as u64
    }

    pub fn address(&self) -> usize {
        self.addr as usize
    }

    /// Copy mapped bytes at `offset` into `buf`; returns how many were
    /// copied. Goes through `process_vm_readv` on ourselves: a page whose
    /// file backing vanished (the source shrank) is `EFAULT` here instead of
    /// a SIGBUS that would kill the daemon.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let offset = self.checked(offset, buf.len());
        let len = buf.len();
        let remote = [RemoteIoVec {
            base: self.address() + offset,
            len,
        }];
        let n = process_vm_readv(Pid::this(), &mut [IoSliceMut::new(buf)], &remote)?;
        Ok(n)
    }

    /// Copy `data` into the mapping at `offset` (copy-on-write in a private
    /// mapping); returns how many bytes were stored. `EFAULT`, never SIGBUS,
    /// for pages without backing, as in `read_at`.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<usize> {
        if !self.writable {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        let offset = self.checked(offset, data.len());
        let remote = [RemoteIoVec {
            base: self.address() + offset,
            len: data.len(),
        }];
        Ok(process_vm_writev(
            Pid::this(),
            &[IoSlice::new(data)],
            &remote,
        )?)
    }

    fn checked(&self, offset: u64, len: usize) -> usize {
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "access outside the mapping"
        );
        offset
    }

    /// `msync(2)` over `[offset, offset + len)`; offset must be page-aligned.
    pub fn msync(&self, offset: u64, len: u64, flags: libc::c_int) -> io::Result<()> {
        let offset = self.checked(offset, usize::try_from(len).unwrap_or(usize::MAX));
        // SAFETY: the range lies inside our mapping; msync reads no memory
        // of ours and cannot invalidate Rust references.
        let rc = unsafe { libc::msync(self.addr.add(offset).cast(), len as usize, flags) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Mapping {
    /// `madvise(2)` over `[offset, offset + len)`; offset page-aligned.
    pub fn madvise(&self, offset: u64, len: u64, advice: libc::c_int) -> io::Result<()> {
        let offset = self.checked(offset, usize::try_from(len).unwrap_or(usize::MAX));
        // SAFETY: the range lies inside our own mapping. Advice may drop or
        // populate pages of it, which no Rust reference points into: every
        // copy to or from it goes through `process_vm_*`.
        let rc = unsafe { libc::madvise(self.addr.add(offset).cast(), len as usize, advice) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `mlock2(2)` over `[offset, offset + len)`: lock now (reading the
    /// pages in), or as pages are faulted (`onfault`).
    pub fn mlock(&self, offset: u64, len: u64, onfault: bool) -> io::Result<()> {
        let offset = self.checked(offset, usize::try_from(len).unwrap_or(usize::MAX));
        let flags = if onfault { libc::MLOCK_ONFAULT } else { 0 };
        // SAFETY: the range lies inside our own mapping; locking changes
        // no memory contents.
        let rc = unsafe { libc::mlock2(self.addr.add(offset).cast(), len as usize, flags) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `munlock(2)` over `[offset, offset + len)`.
    pub fn munlock(&self, offset: u64, len: u64) -> io::Result<()> {
        let offset = self.checked(offset, usize::try_from(len).unwrap_or(usize::MAX));
        // SAFETY: the range lies inside our own mapping; unlocking changes
        // no memory contents.
        let rc = unsafe { libc::munlock(self.addr.add(offset).cast(), len as usize) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: addr/len came from our own successful mmap and no
        // reference into the mapping outlives `self`.
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}

/// Page-cache counts of `cachestat(2)`, in pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CacheStat {
    pub cache: u64,
    pub dirty: u64,
    pub writeback: u64,
    pub evicted: u64,
    pub recently_evicted: u64,
}

#[repr(C)]
struct CacheStatRange {
    off: u64,
    len: u64,
}

/// `cachestat(2)` over the byte range `[offset, offset + len)` of `fd`.
pub fn cachestat(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<CacheStat> {
    let range = CacheStatRange { off: offset, len };
    let mut stat = CacheStat::default();
    // SAFETY: both pointers are to live, correctly laid out repr(C) values;
    // the kernel writes only `stat`.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd.as_raw_fd(),
            &range as *const CacheStatRange,
            &mut stat as *mut CacheStat,
            0u32,
        )
    };
    if rc == 0 {
        Ok(stat)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `struct pm_scan_arg` of the `PAGEMAP_SCAN` ioctl (Linux 6.7+).
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region`: `[start, end)` with its categories.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610; // _IOWR('f', 16, struct pm_scan_arg)
const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;

/// Byte ranges `[start, end)` of our own address range `[addr, addr + len)`
/// that hold anonymous pages (present or swapped, not the file's): in a
/// `MAP_PRIVATE` file mapping, the pages copied on write. The kernel walks
/// only populated page tables, so the cost follows the populated ranges.
pub fn anon_ranges(addr: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
    scan_pages(
        addr,
        len,
        PAGE_IS_FILE,
        PAGE_IS_FILE,
        PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
    )
}

/// Byte ranges of `[addr, addr + len)` whose pages are present in our own
/// page tables: in a locked range, the pages that are locked.
pub fn present_ranges(addr: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
    scan_pages(addr, len, 0, 0, PAGE_IS_PRESENT)
}

/// `PAGEMAP_SCAN` over our own address range with the given categories.
fn scan_pages(
    addr: u64,
    len: u64,
    inverted: u64,
    mask: u64,
    anyof: u64,
) -> io::Result<Vec<(u64, u64)>> {
    let pagemap = std::fs::File::open("/proc/self/pagemap")?;
    let mut regions = [PageRegion::default(); 256];
    let mut out = Vec::new();
    let end = addr + len;
    let mut cursor = addr;
    while cursor < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start: cursor,
            end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            category_inverted: inverted,
            category_mask: mask,
            category_anyof_mask: anyof,
            return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_FILE,
            ..PmScanArg::default()
        };
        // SAFETY: `arg` and `regions` are live, repr(C) and sized as the
        // kernel expects; it writes at most `vec_len` regions and `walk_end`.
        let found = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg) };
        let found = usize::try_from(found).map_err(|_| io::Error::last_os_error())?;
        out.extend(
            regions[..found.min(regions.len())]
                .iter()
                .map(|r| (r.start, r.end)),
        );
        if arg.walk_end <= cursor {
            break;
        }
        cursor = arg.walk_end;
    }
    Ok(out)
}

/// An anonymous shareable file (`memfd_create(2)`), sized and sealed by
/// the caller.
pub fn memfd(name: &str) -> io::Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(memfd_create(
        &name,
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )?)
}

/// `sigwait(3)` on `set`: the number of the signal taken. `nix`'s own wait
/// panics on a signal it has no name for (the real-time ones).
pub fn sigwait(set: &nix::sys::signal::SigSet) -> io::Result<libc::c_int> {
    let mut signal: libc::c_int = 0;
    // SAFETY: `set` is a valid, initialised sigset_t and `signal` a live
    // int the call writes.
    let rc = unsafe { libc::sigwait(set.as_ref(), &mut signal) };
    if rc == 0 {
        Ok(signal)
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// `fork(2)` for daemonizing; called before any thread is started.
pub fn fork() -> io::Result<Option<libc::pid_t>> {
    // SAFETY: the process is single-threaded at this point (checked by the
    // caller's order of operations), so the child may run arbitrary code.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// Send one line to syslog (daemon facility).
pub fn syslog(priority: libc::c_int, line: &str) {
    let Ok(line) = CString::new(line.replace('\0', " ")) else {
        return;
    };
    // SAFETY: a constant "%s" format and a valid C string argument.
    unsafe { libc::syslog(priority | libc::LOG_DAEMON, c"%s".as_ptr(), line.as_ptr()) };
}

/// Open syslog with the program name as identifier, pid included.
pub fn openlog() {
    // SAFETY: a static C string that lives for the whole program.
    unsafe { libc::openlog(c"mmapfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
}

/// Wrap a backing id registered at start (`BackingId::create_raw`) so the
/// reply can use it; the returned value closes it when dropped.
pub fn adopt_backing(reply: &fuser::ReplyOpen, id: u32) -> fuser::BackingId {
    // SAFETY: `id` was returned by FUSE_DEV_IOC_BACKING_OPEN on this very
    // session, is adopted exactly once per source, and is never closed
    // elsewhere.
    unsafe { reply.wrap_backing(id) }
}

/// `openat(dir, name, flags | O_CLOEXEC, mode)` (no `dir`: `AT_FDCWD`), for directory sources:
/// every name is looked up beneath a directory descriptor the daemon holds.
pub fn open_at(
    dir: Option<BorrowedFd<'_>>,
    name: &std::ffi::CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid C string for the call; the variadic mode
    // argument is passed as the unsigned int openat reads.
    let fd = unsafe {
        libc::openat(
            dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd()),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned to us and nobody else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// `setgroups(2)` for the calling thread only. glibc's wrapper changes
/// every thread of the process; a worker acting for one caller must not.
pub fn set_thread_groups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: the kernel reads `groups.len()` gids from a live slice.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Extended-attribute calls on a path (a `/proc/self/fd/N` magic link, so
/// an `O_PATH` descriptor is enough). A zero-length buffer asks for the size.
pub fn get_xattr(
    path: &std::ffi::CStr,
    name: &std::ffi::CStr,
    buf: &mut [u8],
) -> io::Result<usize> {
    // SAFETY: valid C strings; the kernel writes at most `buf.len()` bytes.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

pub fn set_xattr(
    path: &std::ffi::CStr,
    name: &std::ffi::CStr,
    value: &[u8],
    flags: libc::c_int,
) -> io::Result<()> {
    // SAFETY: valid C strings; the kernel reads `value.len()` bytes.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn list_xattr(path: &std::ffi::CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: a valid C string; the kernel writes at most `buf.len()` bytes.
    let n = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

pub fn remove_xattr(path: &std::ffi::CStr, name: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: valid C strings.
    let rc = unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One entry of `getdents64(2)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDirEntry {
    pub ino: u64,
    /// The directory's own cookie for the entry after this one.
    pub next: i64,
    pub d_type: u8,
    pub name: std::ffi::OsString,
}

/// Entries of the open directory `dir` from the cookie `offset` on, one
/// `getdents64` call's worth (at most `buf_len` bytes of them).
pub fn read_dir_at(
    dir: BorrowedFd<'_>,
    offset: i64,
    buf_len: usize,
) -> io::Result<Vec<RawDirEntry>> {
    use std::os::unix::ffi::OsStrExt;
    nix::unistd::lseek(dir.as_raw_fd(), offset, nix::unistd::Whence::SeekSet)
        .map_err(io::Error::from)?;
    let mut buf = vec![0u8; buf_len.max(1024)];
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            dir.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let mut out = Vec::new();
    let mut at = 0;
    // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
    while at + 19 <= n {
        let ino = u64::from_ne_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
        let next = i64::from_ne_bytes(buf[at + 8..at + 16].try_into().expect("8 bytes"));
        let reclen =
            u16::from_ne_bytes(buf[at + 16..at + 18].try_into().expect("2 bytes")) as usize;
        let d_type = buf[at + 18];
        if reclen == 0 || at + reclen > n {
            break;
        }
        let name = &buf[at + 19..at + reclen];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        out.push(RawDirEntry {
            ino,
            next,
            d_type,
            name: std::ffi::OsStr::from_bytes(name).to_os_string(),
        });
        at += reclen;
    }
    Ok(out)
}

/// `sync_file_range(2)` with `SYNC_FILE_RANGE_WRITE`: start writing back
/// the dirty pages of `[offset, offset + len)` without waiting.
pub fn start_writeback(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let to_off = |v: u64| libc::off64_t::try_from(v).unwrap_or(libc::off64_t::MAX);
    // SAFETY: plain integer arguments; the kernel reads no memory of ours.
    let rc = unsafe {
        libc::sync_file_range(
            fd.as_raw_fd(),
            to_off(offset),
            to_off(len),
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// From `<linux/capability.h>`: the capability that lets a writer keep a
/// file's set-id bits.
pub const CAP_FSETID: u32 = 4;
/// The one that registering a passthrough backing file needs.
pub const CAP_SYS_ADMIN: u32 = 21;
/// The one that passes quotas and reserved blocks.
pub const CAP_SYS_RESOURCE: u32 = 24;
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn thread_caps() -> io::Result<[CapData; 2]> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: version 3 makes the kernel write two `CapData` into `data`.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc == 0 {
        Ok(data)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_thread_caps(data: &[CapData; 2]) -> io::Result<()> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: version 3 makes the kernel read two `CapData` from `data`;
    // pid 0 changes the calling thread only.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's capability sets, as they were before
/// `lower_effective_caps`.
pub struct SavedCaps([CapData; 2]);

/// Takes the capabilities in `mask` (bit N for capability N) out of the
/// calling thread's effective set; the permitted set stays, so
/// `restore_caps` can bring them back.
pub fn lower_effective_caps(mask: u64) -> io::Result<SavedCaps> {
    let before = thread_caps()?;
    let mut lowered = before;
    lowered[0].effective &= !(mask as u32);
    lowered[1].effective &= !((mask >> 32) as u32);
    set_thread_caps(&lowered)?;
    Ok(SavedCaps(before))
}

pub fn restore_caps(saved: &SavedCaps) -> io::Result<()> {
    set_thread_caps(&saved.0)
}

/// `FS_IOC_GETFLAGS` and `FS_APPEND_FL` from `<linux/fs.h>`.
const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_APPEND_FL: libc::c_int = 0x20;

/// Whether the file of `fd` is append-only (`chattr +a`); false where its
/// filesystem has no such flags.
pub fn is_append_only(fd: BorrowedFd<'_>) -> bool {
    let mut flags: libc::c_int = 0;
    // SAFETY: the kernel writes one int of inode flags into `flags`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_GETFLAGS as _, &mut flags) };
    rc == 0 && flags & FS_APPEND_FL != 0
}

/// The largest file handle the kernel makes (`MAX_HANDLE_SZ`).
const HANDLE_MAX: usize = 128;
/// `struct file_handle`: `handle_bytes` and `handle_type` before the bytes.
const HANDLE_HEADER: usize = 8;

/// `name_to_handle_at(fd, "", AT_EMPTY_PATH)`: a handle naming the object
/// of `fd` for as long as the object exists, whatever its names become.
/// The bytes are the kernel's `struct file_handle`, header included.
pub fn file_handle(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; HANDLE_HEADER + HANDLE_MAX];
    buf[..4].copy_from_slice(&(HANDLE_MAX as u32).to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `buf` is a `struct file_handle` whose `handle_bytes` says
    // how many bytes follow the header; the kernel copies within them
    // (bytewise: the buffer needs no alignment).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let len = u32::from_ne_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    buf.truncate(HANDLE_HEADER + len.min(HANDLE_MAX));
    Ok(buf)
}

/// `open_by_handle_at(2)` of a handle from `file_handle`, on the mount of
/// `mount` (needs CAP_DAC_READ_SEARCH). `ESTALE` once the object is gone.
pub fn open_by_handle(mount: BorrowedFd<'_>, handle: &[u8], flags: i32) -> io::Result<OwnedFd> {
    let declared = handle
        .get(..4)
        .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")) as usize);
    if declared.map(|n| HANDLE_HEADER + n) != Some(handle.len()) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `handle` is a whole `struct file_handle`: its header says
    // how many bytes follow, and exactly that many do (checked above); the
    // kernel copies it in bytewise.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            handle.as_ptr(),
            flags | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}
