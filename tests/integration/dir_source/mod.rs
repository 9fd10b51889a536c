//! Directory sources: a directory given as SOURCE is served as
//! `MOUNTPOINT/<name>/data/`, where programs work unchanged and everything
//! they do happens in the directory; every regular file of it gets the
//! inspection files of a file source under `files/<relative path>/`, and
//! `stats`, `top`, `msync` and `events` cover the whole tree. Each test
//! checks the result on the source directory itself, and real programs
//! (SQLite, LMDB) are checked there with their own tools.

mod bad_input;
mod inspect;
mod operations;
mod owners;
mod programs;
mod sharing;
mod swaps;

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::TestMount;

/// The source directory's name in the scratch directory, and so its name
/// in the mount.
const DB: &str = "db";

const PAGE: u64 = 4096;

/// The system's Python, where Debian's `python3-lmdb` lives and whose
/// `sqlite3` module uses the system's SQLite.
const PYTHON: &str = "/usr/bin/python3";

/// A scratch directory holding an empty source directory `db`, and nothing
/// mounted yet.
fn scratch() -> TestMount {
    let tm = TestMount::new();
    fs::create_dir(tm.path(DB)).unwrap();
    tm
}

/// `scratch`, mounted as `mmapfs ARGS... db MOUNTPOINT`.
fn mounted(args: &[&str]) -> TestMount {
    let mut tm = scratch();
    mount_db(&mut tm, args);
    tm
}

/// Mount `db` (with `args` before it) and check that it is served as a
/// directory source.
fn mount_db(tm: &mut TestMount, args: &[&str]) {
    let mut all = args.to_vec();
    all.push(DB);
    tm.mount(&all);
    let data = tm.mnt.join(DB).join("data");
    assert!(
        fs::metadata(&data).is_ok_and(|m| m.is_dir()),
        "{} is not a directory",
        data.display()
    );
}

/// `db/REL` in the scratch directory: the source itself.
fn src(tm: &TestMount, rel: &str) -> PathBuf {
    join(&tm.path(DB), rel)
}

/// `MOUNTPOINT/db/data/REL`: the same file through the mount.
fn data(tm: &TestMount, rel: &str) -> PathBuf {
    join(&tm.mnt.join(DB).join("data"), rel)
}

/// `MOUNTPOINT/db/files/REL`: the inspection directory of the file REL.
fn files(tm: &TestMount, rel: &str) -> PathBuf {
    join(&tm.mnt.join(DB).join("files"), rel)
}

/// `MOUNTPOINT/db/FILE`: a directory-wide file (`stats`, `top`...).
fn whole(tm: &TestMount, file: &str) -> PathBuf {
    tm.mnt.join(DB).join(file)
}

fn join(base: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The errno of a failed call, or `None` if it succeeded.
fn errno<T>(result: io::Result<T>) -> Option<i32> {
    result.err().map(|e| e.raw_os_error().unwrap_or(0))
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// The result of a system call that returns -1 and sets errno on failure.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `renameat2(2)` with `flags` (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`).
fn rename2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (from, to) = (cpath(from), cpath(to));
    // SAFETY: both strings are live and NUL-terminated.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    })
}

/// `fallocate(2)` on an open file.
fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: a plain system call on a live descriptor.
    check(unsafe { libc::fallocate(file.as_raw_fd(), mode, offset as i64, len as i64) })
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (path, name) = (cpath(path), CString::new(name).unwrap());
    // SAFETY: live NUL-terminated strings and a buffer of `value.len()` bytes.
    check(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

fn get_xattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let (path, name) = (cpath(path), CString::new(name).unwrap());
    let mut buf = vec![0u8; 4096];
    // SAFETY: live NUL-terminated strings and a buffer of `buf.len()` bytes.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// The names `listxattr(2)` gives for `path`.
fn list_xattr(path: &Path) -> io::Result<Vec<String>> {
    let path = cpath(path);
    let mut buf = vec![0u8; 4096];
    // SAFETY: a live NUL-terminated string and a buffer of `buf.len()` bytes.
    let n = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

fn remove_xattr(path: &Path, name: &str) -> io::Result<()> {
    let (path, name) = (cpath(path), CString::new(name).unwrap());
    // SAFETY: live NUL-terminated strings.
    check(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) })
}

/// Page indices in a cpulist line such as `0-3,17`.
fn pages_of(list: &str) -> Vec<u64> {
    let list = list.trim_end_matches('\n');
    assert!(!list.contains('\n'), "one line expected: {list:?}");
    list.split(',')
        .filter(|part| !part.is_empty())
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => (a.parse::<u64>().unwrap()..=b.parse().unwrap()).collect::<Vec<_>>(),
            None => vec![part.parse().unwrap()],
        })
        .collect()
}

/// One line of `top`: page counts and the path relative to the source.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TopLine {
    resident: u64,
    dirty: u64,
    writeback: u64,
    path: String,
}

/// The lines of `top` that are `resident dirty writeback path` (a header
/// line, if there is one, is left out).
fn top_lines(text: &str) -> Vec<TopLine> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(4, ' ');
            let mut number = || parts.next()?.parse::<u64>().ok();
            let (resident, dirty, writeback) = (number()?, number()?, number()?);
            Some(TopLine {
                resident,
                dirty,
                writeback,
                path: parts.next()?.to_string(),
            })
        })
        .collect()
}

/// The paths `top` lists now.
fn top_paths(tm: &TestMount) -> Vec<String> {
    top_lines(&read(&whole(tm, "top")))
        .into_iter()
        .map(|l| l.path)
        .collect()
}

/// Whether a program the test drives is installed: skip loudly where it is
/// not, never when `CI=true` (`.ci/run` installs it).
fn installed(what: &str, probe: &mut Command, package: &str) -> bool {
    let found = probe.output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {what} is missing (apt-get install {package})"
        );
        eprintln!("\n*** SKIPPING: {what} is not installed (apt-get install {package}) ***\n");
    }
    found
}

/// `python3 tests/integration/dir_source/SCRIPT ARGS...`, unbuffered.
fn python_script(script: &str) -> Command {
    let mut cmd = Command::new(PYTHON);
    cmd.arg("-u").arg(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/integration/dir_source")
            .join(script),
    );
    cmd
}

/// Make `path` reachable by other users (tempdirs are 0700).
fn open_to_all(path: &Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Every name in the directory `path`, sorted.
fn names(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(path)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", path.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
