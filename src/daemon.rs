//! The daemon's life: check the mountpoint, daemonize only once the mount
//! answers, wait for a signal or an outside unmount, then sync and leave.

use std::fs::OpenOptions;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, MountOption, Session, SessionACL};
use nix::sys::signal::{SigSet, Signal};

use crate::cli::{IoChoice, Options};
use crate::error::{Error, Result};
use crate::fail;
use crate::fs::MmapFs;
use crate::fuse::{Backing, FuseAdapter, MountedKernel};
use crate::logger;
use crate::source::{self, IoMode};
use crate::sys;

/// FUSE worker threads: at least two, so a sync can push dirty pages
/// through the mount while another request is being served.
const WORKERS: usize = 4;
/// How often the watcher looks for truncation, deletion and mappers.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

pub fn run(opts: Options) -> Result<ExitCode> {
    check_fuse_device()?;
    let sources = source::open_all(&opts)?;
    for s in &sources {
        let mode = if s.passthrough_possible && opts.io != IoChoice::Cached {
            IoMode::Passthrough
        } else {
            IoMode::Cached
        };
        if opts.io == IoChoice::Passthrough && mode != IoMode::Passthrough {
            return Err(fail!(
                EINVAL,
                "{}: --io passthrough cannot apply: passthrough serves the whole file shared, \
                 so it excludes --offset, a --length shorter than the file, and --private",
                s.name
            ));
        }
        s.set_io_mode(mode);
    }
    let created = prepare_mountpoint(&opts.mountpoint)?;
    let mountpoint = opts
        .mountpoint
        .canonicalize()
        .map_err(|e| Error::from_io(e, opts.mountpoint.display()))?;
    let mut ready = None;
    if !opts.foreground {
        match daemonize(&mountpoint, created)? {
            Some(pipe) => ready = Some(pipe),
            None => return Ok(ExitCode::SUCCESS),
        }
    }
    let result = serve(sources, &opts, &mountpoint, ready);
    if created {
        let _ = std::fs::remove_dir(&mountpoint);
    }
    result
}

fn check_fuse_device() -> Result<()> {
    match std::fs::metadata("/dev/fuse") {
        Ok(_) => Ok(()),
        Err(_) => Err(fail!(
            ENODEV,
            "no /dev/fuse: load the FUSE module with `modprobe fuse` (in a container, pass --device /dev/fuse)"
        )),
    }
}

/// Create a missing mountpoint (returns true if we did) and refuse one
/// that is not a directory or is already mounted.
fn prepare_mountpoint(path: &Path) -> Result<bool> {
    let shown = path.display().to_string();
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => Err(fail!(
            ENOTDIR,
            "mountpoint {shown} is not a directory: give an empty directory (it is created if missing)"
        )),
        Ok(_) => {
            let canonical = path
                .canonicalize()
                .map_err(|e| Error::from_io(e, &shown))?;
            if let Some(fstype) = mounted_at(&canonical) {
                return Err(fail!(
                    EBUSY,
                    "mountpoint {shown} is already mounted ({fstype}): unmount it first with `fusermount3 -u {shown}` or `umount {shown}`"
                ));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(path)
                .map_err(|e| Error::from_io(e, format!("create mountpoint {shown}")))?;
            Ok(true)
        }
        // ENOTCONN: a FUSE daemon died and left its mount behind.
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Err(fail!(
            ENOTCONN,
            "mountpoint {shown} is a dead FUSE mount: clean it up with `fusermount3 -uz {shown}` or `umount -l {shown}`"
        )),
        Err(e) => Err(Error::from_io(e, format!("mountpoint {shown}"))),
    }
}

/// The filesystem type mounted exactly at `path`, if any.
fn mounted_at(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let target = path.to_str()?;
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let mount_point = unescape_mountinfo(fields.get(4)?);
        let dash = fields.iter().position(|f| *f == "-")?;
        (mount_point == target).then(|| fields.get(dash + 1).unwrap_or(&"?").to_string())
    })
}

fn unescape_mountinfo(field: &str) -> String {
    let mut out = Vec::new();
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Fork; the parent waits until the child reports the mount ready (exit 0)
/// or fails (prints the child's error, exit 1). Returns the child's end.
fn daemonize(mountpoint: &Path, created: bool) -> Result<Option<OwnedFd>> {
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::new(e as i32, format!("pipe: {e}")))?;
    match sys::fork().map_err(|e| Error::from_io(e, "fork"))? {
        Some(_child) => {
            drop(write_end);
            let mut message = String::new();
            let _ = std::fs::File::from(read_end).read_to_string(&mut message);
            if let Some(hint) = message.strip_prefix("ok\n") {
                show_hint(hint);
                std::process::exit(0);
            }
            if created {
                let _ = std::fs::remove_dir(mountpoint);
            }
            let message = message.trim();
            if message.is_empty() {
                eprintln!("mmapfs: the daemon exited before the mount was ready");
            } else {
                eprintln!("mmapfs: {message}");
            }
            std::process::exit(1);
        }
        None => {
            drop(read_end);
            let _ = nix::unistd::setsid();
            Ok(Some(write_end))
        }
    }
}

/// Tell the waiting parent (or, in the foreground, the terminal) how
/// start-up went, then let go of the terminal.
fn report_ready(pipe: Option<OwnedFd>, outcome: &Result<String>) {
    let Some(pipe) = pipe else {
        if let Ok(hint) = outcome {
            show_hint(hint);
        }
        return;
    };
    let mut pipe = std::fs::File::from(pipe);
    let _ = match outcome {
        Ok(hint) => pipe.write_all(format!("ok\n{hint}").as_bytes()),
        Err(e) => pipe.write_all(e.message.as_bytes()),
    };
    drop(pipe);
    if outcome.is_ok() {
        logger::switch_to_syslog();
        if let Ok(null) = OpenOptions::new().read(true).write(true).open("/dev/null") {
            for fd in 0..3 {
                let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
            }
        }
        let _ = std::env::set_current_dir("/");
    }
}

fn fuse_config(opts: &Options) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(opts.fsname.clone().unwrap_or_else(|| {
            opts.sources
                .first()
                .map_or("mmapfs".to_string(), |p| p.display().to_string())
        })),
        MountOption::Subtype("mmapfs".to_string()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if opts.default_permissions {
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    if opts.auto_unmount {
        config.mount_options.push(MountOption::AutoUnmount);
    }
    config.acl = if opts.allow_other || (opts.auto_unmount && !opts.allow_root) {
        SessionACL::All
    } else if opts.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(WORKERS);
    config.clone_fd = true;
    config
}

fn serve(
    sources: Vec<source::Source>,
    opts: &Options,
    mountpoint: &Path,
    ready: Option<OwnedFd>,
) -> Result<ExitCode> {
    // Every thread inherits this mask; the main thread takes the signals.
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        signals.add(s);
    }
    let _ = signals.thread_block();
    if let Err(e) = sys::install_sigbus_guard() {
        log::warn!("cannot install the SIGBUS guard: {e}");
    }
    let fs = Arc::new(MmapFs::new(sources));
    let (session_done, mount) = match start_session(&fs, opts, mountpoint) {
        Ok(started) => started,
        Err(e) => {
            report_ready(ready, &Err(e.clone()));
            return Err(e);
        }
    };
    report_ready(ready, &Ok(hint(&fs, mountpoint)));
    let names: Vec<&str> = fs.sources.iter().map(|s| s.name.as_str()).collect();
    log::info!("mounted {} on {}", names.join(", "), mountpoint.display());
    let watcher = Arc::clone(&fs);
    let _ = std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || loop {
            watcher.watch();
            std::thread::sleep(WATCH_INTERVAL);
        });
    let signal = signals.wait().unwrap_or(Signal::SIGTERM);
    if signal != Signal::SIGUSR1 {
        log::info!("{signal}: unmounting {}", mountpoint.display());
        fs.push_fuse_dirty_pages();
        unmount(mount, mountpoint);
    }
    // The kernel pushes the last dirty FUSE pages to us while unmounting;
    // the session ends once it is done (or at once if the mount is gone).
    let _ = session_done.recv_timeout(Duration::from_secs(10));
    let synced = if opts.sync_on_exit {
        fs.final_sync()
    } else {
        true
    };
    Ok(if synced {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Scripts and mount(8) get a quiet start; a person at a terminal gets
/// the hint.
fn show_hint(hint: &str) {
    if std::io::stdout().is_terminal() {
        print!("{hint}");
    }
}

/// What a new user might try next, shown when started from a terminal.
fn hint(fs: &MmapFs, mountpoint: &Path) -> String {
    let m = mountpoint.display();
    let first = fs.sources.first().map_or("", |s| s.name.as_str());
    format!(
        "mmapfs: mounted on {m}. Try:\n  \
         cat {m}/{first}/stats\n  \
         echo hello > {m}/{first}/data; cat {m}/{first}/dirty_pages\n  \
         echo sync > {m}/{first}/msync; cat {m}/{first}/msync\n  \
         tail -f {m}/{first}/events\n  \
         fusermount3 -u {m}\n"
    )
}

/// Mount, register passthrough backing files, start the workers, and wait
/// until the mount answers. Returns a channel that fires when the session
/// ends, and the unmounter.
fn start_session(
    fs: &Arc<MmapFs>,
    opts: &Options,
    mountpoint: &Path,
) -> Result<(mpsc::Receiver<()>, fuser::SessionUnmounter)> {
    let backing = Backing::new(fs.sources.len());
    let mut session = Session::new(
        FuseAdapter::new(Arc::clone(fs), Arc::clone(&backing)),
        mountpoint,
        &fuse_config(opts),
    )
    .map_err(|e| Error::from_io(e, format!("mount on {}", mountpoint.display())))?;
    let mut unmounter = session.unmount_callable();
    // Everything a request may need is in place before the first one.
    let registered = register_backing(fs, &session, &backing);
    fs.set_kernel(Arc::new(MountedKernel {
        notifier: session.notifier(),
        mountpoint: mountpoint.to_path_buf(),
        names: fs.sources.iter().map(|s| s.name.clone()).collect(),
    }));
    for s in &fs.sources {
        s.events.push(
            "mount",
            &format!(
                "mountpoint={} io_mode={}",
                mountpoint.display(),
                s.io_mode().name()
            ),
        );
    }
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("session".into())
        .spawn(move || {
            if let Err(e) = session.run() {
                log::error!("FUSE session ended: {e}");
            }
            let _ = done_tx.send(());
            // Wake the main thread if the unmount came from outside.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), Signal::SIGUSR1);
        })
        .map_err(|e| Error::from_io(e, "start FUSE session"))?;
    let answered = registered.and_then(|()| {
        std::fs::metadata(mountpoint).map_err(|e| {
            Error::from_io(
                e,
                format!("mount on {} does not answer", mountpoint.display()),
            )
        })
    });
    match answered {
        Ok(meta) => {
            fs.set_mount_dev(meta.dev());
            Ok((done_rx, unmounter))
        }
        Err(e) => {
            let _ = unmounter.unmount();
            let _ = done_rx.recv_timeout(Duration::from_secs(5));
            Err(e)
        }
    }
}

/// Register each passthrough source's file with the kernel now, so a
/// refusal is known at start: an error for `--io passthrough`, a fall back
/// to cached mode for `--io auto`.
fn register_backing(fs: &MmapFs, session: &Session<FuseAdapter>, backing: &Backing) -> Result<()> {
    for (i, s) in fs.sources.iter().enumerate() {
        if s.io_mode() != IoMode::Passthrough {
            continue;
        }
        match fuser::BackingId::create_raw(session, &s.file) {
            Ok(id) => backing.set(i, id),
            Err(e) if s.io_choice == IoChoice::Passthrough => {
                return Err(fail!(
                    EIO,
                    "{}: --io passthrough: the kernel refused the backing file: {e}",
                    s.name
                ));
            }
            Err(e) => {
                log::warn!(
                    "{}: FUSE passthrough refused ({e}); serving data in cached mode",
                    s.name
                );
                s.set_io_mode(IoMode::Cached);
            }
        }
    }
    Ok(())
}

fn unmount(mut mount: fuser::SessionUnmounter, mountpoint: &Path) {
    if let Err(e) = mount.unmount() {
        // Busy (a process still has a file open or mapped): detach it so
        // it vanishes from the tree now; our final sync still runs.
        log::warn!("unmount {}: {e}; detaching lazily", mountpoint.display());
        if let Err(e) = nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH) {
            log::error!("lazy unmount {}: {e}", mountpoint.display());
        }
    }
}
