//! A mounted mmapfs for one test: a scratch directory, the real binary in
//! the foreground, and an unmount in `Drop` so a failing test leaves no
//! mount behind. Also: programs run with a deadline, unprivileged users to
//! run them as, and the binary installed for `mount -t fuse.mmapfs`.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn mmapfs_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mmapfs"))
}

/// A binary built from `examples/`, next to the test binary's directory.
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("deps dir");
    let path = deps
        .parent()
        .expect("profile dir")
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "example {name} not built at {}; run `cargo test` (it builds examples)",
        path.display()
    );
    path
}

/// First line of every test that mounts: skip loudly where FUSE or root is
/// missing, never when `CI=true`.
macro_rules! require_fuse {
    () => {
        if !$crate::util::fuse_available() {
            return;
        }
        let _writeback_timing = $crate::util::writeback_timing_kept();
    };
}

/// Held for reading by every mounting test (through `require_fuse!`), and
/// for writing by a test that changes the system's writeback timing
/// (`/proc/sys/vm/dirty_*`), so no test measuring dirty pages runs while
/// the flusher is made to clean them sooner.
pub static WRITEBACK_TIMING: RwLock<()> = RwLock::new(());

pub fn writeback_timing_kept() -> RwLockReadGuard<'static, ()> {
    WRITEBACK_TIMING.read().unwrap_or_else(|e| e.into_inner())
}

pub fn writeback_timing_changed() -> RwLockWriteGuard<'static, ()> {
    WRITEBACK_TIMING.write().unwrap_or_else(|e| e.into_inner())
}

/// First line of every test that mounts as an unprivileged user: it needs
/// /dev/fuse open to users (mode 0666, as Debian's udev makes it; `.ci/run`
/// sees to it). Skip loudly elsewhere, never when `CI=true`.
macro_rules! require_user_fuse {
    () => {
        require_fuse!();
        if !$crate::util::users_can_open_dev_fuse() {
            return;
        }
    };
}

pub fn users_can_open_dev_fuse() -> bool {
    use std::os::unix::fs::MetadataExt;
    let ok = fs::metadata("/dev/fuse").is_ok_and(|m| m.mode() & 0o006 == 0o006);
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but /dev/fuse is not open to users (chmod 0666 /dev/fuse)"
        );
        eprintln!("\n*** SKIPPING UNPRIVILEGED FUSE TEST: /dev/fuse is not mode 0666 ***\n");
    }
    ok
}

/// FUSE tests need /dev/fuse and root. Skipping is allowed only outside CI.
pub fn fuse_available() -> bool {
    let ok = Path::new("/dev/fuse").exists() && nix_is_root();
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but FUSE is unavailable (/dev/fuse and root are required)"
        );
        eprintln!("\n*** SKIPPING FUSE TEST: /dev/fuse or root privileges unavailable ***\n");
    }
    ok
}

fn nix_is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Poll `cond` until it holds or the deadline passes (then panic with `what`).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run a shell command line in `dir`; returns its output (not checked).
pub fn sh(dir: &Path, script: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh")
}

/// Run a shell command that must succeed; returns its stdout.
pub fn sh_ok(dir: &Path, script: &str) -> String {
    succeeded(&format!("`{script}`"), sh(dir, script))
}

/// The stdout of a program that ran, which must have succeeded (`what`
/// names it if it failed, with its stderr).
pub fn succeeded(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A key's value in `key value` lines.
pub fn stat_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.to_string())
    })
}

pub struct TestMount {
    pub dir: tempfile::TempDir,
    pub mnt: PathBuf,
    child: Option<Child>,
}

impl TestMount {
    /// A scratch directory; nothing mounted yet.
    pub fn new() -> TestMount {
        let dir = tempfile::Builder::new()
            .prefix("mmapfs-test")
            .tempdir()
            .expect("tempdir");
        let mnt = dir.path().join("mnt");
        TestMount {
            dir,
            mnt,
            child: None,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Start `mmapfs -f ARGS... mnt` in the scratch directory and wait
    /// until the mount answers. Panics with the daemon's stderr if it exits.
    pub fn mount(&mut self, args: &[&str]) -> &mut Self {
        let mut child = Command::new(mmapfs_bin())
            .arg("-f")
            .args(args)
            .arg(&self.mnt)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mmapfs");
        let stats = self.mnt.join("stats");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                let err = take_stderr(&mut child);
                panic!("mmapfs {args:?} exited with {status} before mounting: {err}");
            }
            if is_mounted(&self.mnt) && stats.exists() {
                break;
            }
            assert!(start.elapsed() < DEADLINE, "mount did not answer in time");
            std::thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
        self
    }

    /// Run `mmapfs ARGS... mnt` to completion in the scratch directory (as a
    /// daemon unless ARGS has `-f`); returns its status and output.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(mmapfs_bin())
            .args(args)
            .arg(&self.mnt)
            .current_dir(self.dir.path())
            .output()
            .expect("run mmapfs")
    }

    /// `run`, which must succeed.
    pub fn run_ok(&self, args: &[&str]) {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "mmapfs {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `mnt/NAME/FILE`
    pub fn file(&self, source: &str, file: &str) -> PathBuf {
        self.mnt.join(source).join(file)
    }

    pub fn read(&self, source: &str, file: &str) -> String {
        fs::read_to_string(self.file(source, file)).expect("read control file")
    }

    pub fn stat(&self, source: &str, key: &str) -> String {
        let text = self.read(source, "stats");
        stat_value(&text, key).unwrap_or_else(|| panic!("no {key} in stats:\n{text}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("mounted").id()
    }

    /// Unmount with fusermount3 and wait for the daemon; returns its exit
    /// status and stderr.
    /// Retries while busy: a child forked by a parallel test holds copies
    /// of our descriptors until it execs.
    pub fn unmount(&mut self) -> (std::process::ExitStatus, String) {
        let mut last = String::new();
        wait_until("fusermount3 -u to succeed", || {
            let out = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .output()
                .expect("fusermount3");
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                out.status.success() || last.contains("busy"),
                "fusermount3 -u: {last}"
            );
            out.status.success()
        });
        self.wait_exit()
    }

    /// Wait for the daemon to exit by itself; returns status and stderr.
    pub fn wait_exit(&mut self) -> (std::process::ExitStatus, String) {
        self.wait_exit_within(DEADLINE)
            .expect("timed out waiting for the daemon to exit")
    }

    /// `wait_exit`, giving up after `within`: then `None`, and the daemon
    /// is left to `Drop`.
    pub fn wait_exit_within(&mut self, within: Duration) -> Option<(ExitStatus, String)> {
        let start = Instant::now();
        loop {
            let child = self.child.as_mut().expect("mounted");
            if let Some(status) = child.try_wait().expect("try_wait") {
                let mut child = self.child.take().expect("mounted");
                return Some((status, take_stderr(&mut child)));
            }
            if start.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill -9` the daemon, then clean up its dead mount the way a user
    /// would (`fusermount3 -uz`) and flush the scratch files to disk (only
    /// them: a machine-wide `sync` would write back pages that tests
    /// running alongside are watching).
    pub fn kill_9_and_clean_up(&mut self) {
        self.signal("KILL");
        let (status, _) = self.wait_exit();
        assert!(!status.success(), "the daemon survived kill -9");
        let out = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.mnt)
            .output()
            .expect("fusermount3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        sh_ok(self.dir.path(), "find . -xdev -type f -exec sync {} +");
    }

    /// Send a signal to the daemon (e.g. "TERM", "KILL").
    pub fn signal(&self, name: &str) {
        let out = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .output()
            .expect("kill");
        assert!(out.status.success());
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mnt)
                .output();
        }
        if let Some(mut child) = self.child.take() {
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() && start.elapsed() < DEADLINE {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The exit status of `child`, which must exit before the deadline.
fn wait_for_exit(child: &mut Child, what: &str) -> ExitStatus {
    let mut status = None;
    wait_until(what, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status.expect("exited")
}

/// Everything `child` wrote to its piped stderr.
fn take_stderr(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

/// Whether `path` is a mount point now (from /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = path.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == target))
}

/// A program that is still running, with its stdout read line by line.
pub struct Running {
    child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn example");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&mut self) -> String {
        take_stderr(&mut self.child)
    }

    /// Block until the program prints exactly `want` (or fail at the deadline).
    pub fn wait_line(&mut self, want: &str) {
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line == want;
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no line {want:?} in time; got {:?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.child.wait();
                    let err = self.stderr();
                    panic!(
                        "program ended without printing {want:?}; got {:?}\nstderr:\n{err}",
                        self.seen
                    )
                }
            }
        }
    }

    /// Close stdin (ends a `--hold`), wait for the exit; returns the status
    /// and every stdout line.
    pub fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        drop(self.child.stdin.take());
        let status = wait_for_exit(&mut self.child, "the example to exit");
        // The reader thread ends at end-of-file, so this drains everything.
        let mut lines = std::mem::take(&mut self.seen);
        lines.extend(self.lines.iter());
        let err = self.stderr();
        (status, lines, err)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `mapper PATH ARGS --hold` process (`examples/mapper.rs`), mapped and
/// waiting until `finish`; what it printed before `ready` is in `seen`.
pub fn hold_mapper(path: &Path, args: &[&str]) -> Running {
    let mut cmd = Command::new(example_bin("mapper"));
    cmd.arg(path).args(args).arg("--hold");
    let mut mapper = Running::spawn(cmd);
    mapper.wait_line("ready");
    mapper.seen.pop();
    mapper
}

/// End a `hold_mapper`, which must exit successfully.
pub fn finish(mapper: Running) {
    let (status, _, err) = mapper.finish();
    assert!(status.success(), "{err}");
}

/// One-shot `mapper PATH ARGS` run, which must succeed: its output lines.
pub fn map_once(path: &Path, args: &[&str]) -> Vec<String> {
    let out = Command::new(example_bin("mapper"))
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    succeeded("mapper", out)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Run `cmd` to completion, but for no longer than `within`: `None` (the
/// program sent SIGKILL) if it is still running then.
pub fn output_within(mut cmd: Command, within: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = read_to_end_in_background(child.stdout.take().expect("stdout"));
    let stderr = read_to_end_in_background(child.stderr.take().expect("stderr"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() >= within {
            // A process waiting on a FUSE request the daemon already took
            // cannot die before the answer: reap it in the background.
            let _ = child.kill();
            std::thread::spawn(move || child.wait());
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // A daemon forked by the program may hold the pipes a little longer.
    Some(Output {
        status,
        stdout: stdout.recv_timeout(DEADLINE).unwrap_or_default(),
        stderr: stderr.recv_timeout(DEADLINE).unwrap_or_default(),
    })
}

fn read_to_end_in_background(mut pipe: impl Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(bytes);
    });
    rx
}

/// An unprivileged system user to run programs as.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Users made by `test_user`, so each is looked up (or created) once per
/// test process however many tests run in parallel.
static USERS: Mutex<Vec<User>> = Mutex::new(Vec::new());

/// The system user `name`, created (no home, no login shell) if missing.
/// Another process creating it at the same moment is fine.
pub fn test_user(name: &str) -> User {
    let mut users = USERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(user) = users.iter().find(|u| u.name == name) {
        return user.clone();
    }
    if id(name, "-u").is_none() {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .output()
            .expect("run useradd");
        assert!(
            out.status.success() || id(name, "-u").is_some(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let user = User {
        name: name.to_string(),
        uid: id(name, "-u").expect("uid of the new user"),
        gid: id(name, "-g").expect("gid of the new user"),
    };
    users.push(user.clone());
    user
}

/// `id FLAG NAME` as a number, or `None` if there is no such user.
fn id(name: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id").arg(flag).arg(name).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

pub fn alice() -> User {
    test_user("mmapfs-alice")
}

pub fn bob() -> User {
    test_user("mmapfs-bob")
}

pub fn carol() -> User {
    test_user("mmapfs-carol")
}

impl User {
    /// `program` run as this user: real and effective ids, its groups,
    /// and `LC_ALL=C` so error messages can be matched.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--init-groups")
            .arg(program)
            .env("LC_ALL", "C");
        cmd
    }

    /// Run a shell script as this user in `dir`; returns its output (not
    /// checked).
    pub fn sh(&self, dir: &Path, script: &str) -> Output {
        self.command("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .expect("run setpriv")
    }

    /// `sh`, which must succeed; returns its stdout.
    pub fn sh_ok(&self, dir: &Path, script: &str) -> String {
        succeeded(
            &format!("`{script}` as {}", self.name),
            self.sh(dir, script),
        )
    }
}

/// `mmapfs` on mount.fuse3's fixed PATH (`/usr/local/bin/mmapfs`), for
/// `mount -t fuse.mmapfs`. Tests running at once share one link: the
/// first makes it, the last to drop removes it.
pub struct Installed(());

static INSTALLED: Mutex<usize> = Mutex::new(0);

const INSTALL_LINK: &str = "/usr/local/bin/mmapfs";

impl Installed {
    /// `None` (skip the test) if another install is there already.
    pub fn new() -> Option<Installed> {
        let mut users = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        if *users == 0 {
            let link = Path::new(INSTALL_LINK);
            if link.exists() && fs::read_link(link).ok() != Some(mmapfs_bin()) {
                eprintln!("*** {INSTALL_LINK} is another install; not replacing it ***");
                assert!(std::env::var("CI").as_deref() != Ok("true"));
                return None;
            }
            let _ = fs::remove_file(link);
            std::os::unix::fs::symlink(mmapfs_bin(), link).unwrap();
        }
        *users += 1;
        Some(Installed(()))
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let mut users = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        *users -= 1;
        if *users == 0 {
            let _ = fs::remove_file(INSTALL_LINK);
        }
    }
}

/// Write `text` at `offset` of the `data` of `src.bin`.
pub fn write_marker(tm: &TestMount, offset: u64, text: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(tm.file("src.bin", "data"))
        .unwrap()
        .write_all_at(text, offset)
        .unwrap();
}

/// Whether the source file `src.bin` holds `text` at `offset`.
pub fn source_has(tm: &TestMount, offset: usize, text: &[u8]) -> bool {
    let bytes = fs::read(tm.path("src.bin")).unwrap();
    &bytes[offset..offset + text.len()] == text
}

/// A filesystem a test mounted, lazily unmounted on drop.
pub struct TestFs(PathBuf);

impl TestFs {
    /// A tmpfs of `size` (`mount -o size=`) on the directory `at`.
    pub fn tmpfs(at: &Path, size: &str) -> TestFs {
        sh_ok(
            Path::new("/"),
            &format!(
                "mount -t tmpfs -o size={size} mmapfs-test '{}'",
                at.display()
            ),
        );
        TestFs(at.to_path_buf())
    }

    /// A new ext4 of `size` on the directory `at`, made in the image file
    /// `image`, keeping `reserved_percent` of its blocks for root.
    pub fn ext4(at: &Path, image: &Path, size: &str, reserved_percent: u32) -> TestFs {
        sh_ok(
            Path::new("/"),
            &format!(
                "truncate -s {size} '{img}' && mkfs.ext4 -q -F -m {reserved_percent} '{img}' \
                 && mount -o loop '{img}' '{at}'",
                img = image.display(),
                at = at.display()
            ),
        );
        TestFs(at.to_path_buf())
    }
}

impl Drop for TestFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
