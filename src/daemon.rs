//! The daemon's life: open the sources, daemonize only once the mount
//! answers, wait for a signal or an outside unmount, then sync and leave.

use std::fs::OpenOptions;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config as FuseConfig, MountOption, Session, SessionACL};
use nix::sys::signal::{SigSet, Signal};

use crate::error::fail;
use crate::error::{printable, Error, Result};
use crate::fs::MmapFs;
use crate::fuse::{FuseAdapter, MountedKernel};
use crate::io_mode::IoChoice;
use crate::logger;
use crate::mount::{self, Mountpoint};
use crate::open;
use crate::sys;

/// FUSE worker threads: at least two, so the kernel can write dirty pages
/// to us while another request waits for that.
/// How often the watcher looks for truncation, deletion and mappers.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// How long the kernel may take to hand back the session after unmounting.
const SESSION_END: Duration = Duration::from_secs(10);

/// What the command line says about the mount and the daemon.
#[derive(Debug, Clone)]
pub struct Config {
    pub open: open::Config,
    pub mountpoint: PathBuf,
    pub foreground: bool,
    pub io: IoChoice,
    pub sync_on_exit: bool,
    /// `--trace`: page-event tracing from the start.
    pub trace: bool,
    pub allow_other: bool,
    pub allow_root: bool,
    pub auto_unmount: bool,
    pub fsname: Option<String>,
}

/// Signals that unmount, sync and exit 0. Every other signal that could
/// end the process is taken and ignored (see doc/SEMANTICS.md, Signals):
/// only the faults a thread causes itself keep their default action.
const STOP: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];
const OWN_FAULTS: [Signal; 5] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGILL,
    Signal::SIGFPE,
    Signal::SIGABRT,
];

/// Every signal but the faults: blocked in all threads, taken by one.
fn taken_signals() -> SigSet {
    let mut set = SigSet::all();
    for s in OWN_FAULTS {
        set.remove(s);
    }
    set
}

/// What wakes the main thread.
enum Wake {
    Signal(Signal),
    SessionEnded,
}

/// Run the daemon; every error is printed once, here or by the waiting
/// parent.
pub fn run(config: Config) -> ExitCode {
    let mut reported = false;
    match start(&config, &mut reported) {
        Ok(code) => code,
        Err(e) => {
            if !reported {
                eprintln!("mmapfs: {e}");
            }
            ExitCode::from(1)
        }
    }
}

fn start(config: &Config, reported: &mut bool) -> Result<ExitCode> {
    check_fuse_device()?;
    let opened = open::open_all(&config.open)?;
    if !opened.dirs.is_empty() {
        prepare_for_dir_sources();
    }
    for s in &opened.files {
        crate::io_mode::check(s.name(), config.io, s.passthrough_possible())?;
    }
    let mut mountpoint = mount::prepare(&config.mountpoint)?;
    let pipe = if config.foreground {
        None
    } else {
        match daemonize(&mountpoint)? {
            Some(pipe) => Some(pipe),
            None => return Ok(ExitCode::SUCCESS),
        }
    };
    // Every thread inherits this mask; one thread takes the signals.
    let _ = taken_signals().thread_block();
    let fs = Arc::new(MmapFs::new(
        opened.files,
        opened.dirs,
        config.io,
        config.open.events_kept,
    ));
    let started = start_session(&fs, config, &mut mountpoint);
    let hint = started.as_ref().map(|_| hint(&fs, &mountpoint));
    report_ready(pipe, &hint, reported);
    let (wake, dev) = started?;
    let result = serve(&fs, config, wake, dev);
    mountpoint.remove_if_created();
    result
}

/// A directory source creates files with the mode the kernel already
/// masked with the caller's umask: the daemon's own must not mask it
/// again. And where DIR's filesystem makes no file handles it keeps a
/// descriptor per object the kernel knows: as many as the system allows
/// one process.
fn prepare_for_dir_sources() {
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let most = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    let limit = nix::sys::resource::Resource::RLIMIT_NOFILE;
    if nix::sys::resource::setrlimit(limit, most, most).is_err() {
        if let Ok((_, hard)) = nix::sys::resource::getrlimit(limit) {
            let _ = nix::sys::resource::setrlimit(limit, hard, hard);
        }
    }
}

fn check_fuse_device() -> Result<()> {
    match OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(fail!(
            EACCES,
            "cannot open /dev/fuse: {e}: users other than root need it mode 0666, as Debian's udev makes it (`chmod 0666 /dev/fuse`)"
        )),
        Err(_) => Err(fail!(
            ENODEV,
            "no /dev/fuse: load the FUSE module with `modprobe fuse` (in a container, pass --device /dev/fuse)"
        )),
    }
}

/// Fork; the parent waits until the child reports the mount ready (exit 0)
/// or fails (prints the child's error, exit 1). Returns the child's end.
fn daemonize(mountpoint: &Mountpoint) -> Result<Option<OwnedFd>> {
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
            mountpoint.remove_if_created();
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
/// start-up went, then let go of the terminal. `reported` records that a
/// parent was told, so the error is not printed twice.
fn report_ready(
    pipe: Option<OwnedFd>,
    outcome: &std::result::Result<String, &Error>,
    reported: &mut bool,
) {
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
    *reported = true;
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

/// The name the kernel shows as the mount's device (`df`, mountinfo, which
/// every user can read): `fsname=`, else `mmapfs:` and the first source's
/// name, which the mount's root lists anyway — never its path. Mount
/// options are joined with commas, so none may reach them from a name.
fn fsname(config: &Config) -> String {
    let name = config.fsname.clone().unwrap_or_else(|| {
        let first = config.open.sources.first().and_then(|p| p.file_name());
        let first = first.map(|n| n.to_string_lossy().into_owned());
        let first = first.or_else(|| config.open.anon.first().map(|(n, _)| n.clone()));
        format!("mmapfs:{}", first.unwrap_or_default())
    });
    name.chars()
        .map(|c| {
            if c == ',' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

fn fuse_config(config: &Config) -> FuseConfig {
    let mut fuse = FuseConfig::default();
    fuse.mount_options = vec![
        MountOption::FSName(fsname(config)),
        MountOption::Subtype("mmapfs".to_string()),
        MountOption::NoDev,
        MountOption::NoSuid,
        // Always: whatever reaches the kernel as allow_other (allow_other,
        // allow_root, auto_unmount) must come with permission checks, and
        // the daemon checks nothing itself.
        MountOption::DefaultPermissions,
    ];
    if config.auto_unmount {
        fuse.mount_options.push(MountOption::AutoUnmount);
    }
    fuse.acl = if config.allow_other || (config.auto_unmount && !config.allow_root) {
        SessionACL::All
    } else if config.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    fuse.n_threads = Some(crate::fs::WORKERS);
    fuse.clone_fd = true;
    fuse
}

/// Wait for a stop signal or an outside unmount; then unmount, sync and
/// report how the last sync went.
fn serve(
    fs: &Arc<MmapFs>,
    config: &Config,
    wake: mpsc::Receiver<Wake>,
    dev: u64,
) -> Result<ExitCode> {
    let names: Vec<&str> = fs.sources().map(|s| s.name()).collect();
    log::info!(
        "mounted {} on {}",
        names.join(", "),
        printable(&config.mountpoint)
    );
    let watcher = Arc::clone(fs);
    let _ = std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || loop {
            watcher.watch();
            watcher.wait_to_watch(WATCH_INTERVAL);
        });
    if config.trace {
        fs.trace_from_start();
    }
    let tracer = Arc::clone(fs);
    let _ = std::thread::Builder::new()
        .name("trace".into())
        .spawn(move || tracer.trace_loop());
    let mut pushed = true;
    if let Ok(Wake::Signal(signal)) = wake.recv() {
        log::info!("{signal}: unmounting");
        pushed = fs.push_fuse_dirty_pages();
        if let Err(e) = mount::unmount(dev) {
            log::error!("{e}");
            pushed = false;
        }
        // The kernel pushes the last dirty FUSE pages to us while
        // unmounting; the session ends once it is done.
        while let Ok(Wake::Signal(_)) = wake.recv_timeout(SESSION_END) {}
    }
    fs.stop_tracing();
    // Any write-back of an outside mapping's pages that did not reach its
    // source, in the mount's whole life, is data lost: the exit says so.
    let synced = fs.final_sync(config.sync_on_exit) && pushed;
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
fn hint(fs: &MmapFs, mountpoint: &Mountpoint) -> String {
    let m = printable(&mountpoint.path);
    if let (None, Some(d)) = (fs.sources().next(), fs.dir_sources().next()) {
        let d = crate::error::one_line(d.name());
        return format!(
            "mmapfs: mounted on {m}. Try:\n  \
             ls {m}/{d}/data      (point programs here)\n  \
             cat {m}/{d}/top      (files by page cache held)\n  \
             ls {m}/{d}/files     (dirty_pages, msync, ... of each file)\n  \
             tail -f {m}/{d}/events\n  \
             fusermount3 -u {m}\n"
        );
    }
    let first = fs
        .sources()
        .next()
        .map_or(String::new(), |s| crate::error::one_line(s.name()));
    format!(
        "mmapfs: mounted on {m}. Try:\n  \
         cat {m}/{first}/stats\n  \
         echo hello > {m}/{first}/data; cat {m}/{first}/dirty_pages\n  \
         echo sync > {m}/{first}/msync; cat {m}/{first}/msync\n  \
         tail -f {m}/{first}/events\n  \
         fusermount3 -u {m}\n"
    )
}

/// Mount, decide each source's I/O mode, start the workers and the signal
/// thread, and wait until the mount answers. Returns what wakes the main
/// thread and the mount's device number.
fn start_session(
    fs: &Arc<MmapFs>,
    config: &Config,
    mountpoint: &mut Mountpoint,
) -> Result<(mpsc::Receiver<Wake>, u64)> {
    let fuse_config = fuse_config(config);
    let (wake_tx, wake) = mpsc::channel();
    let new_session = |mountpoint: &Mountpoint| {
        let ended = wake_tx.clone();
        let on_end = Box::new(move || {
            let _ = ended.send(Wake::SessionEnded);
        });
        // Only root mounts by itself; users and `auto_unmount` go through
        // the setuid `fusermount3`.
        let by_helper = config.auto_unmount || !nix::unistd::geteuid().is_root();
        Session::new(
            FuseAdapter::new(Arc::clone(fs), on_end),
            mountpoint.target(by_helper),
            &fuse_config,
        )
    };
    let session = match new_session(mountpoint) {
        Err(_) if mountpoint.recreate_if_gone() => new_session(mountpoint),
        other => other,
    };
    let session = session
        .map_err(|e| Error::from_io(e, format!("mount on {}", printable(&mountpoint.path))))?;
    // Everything a request may need is in place before the first one.
    fs.decide_io_modes(|s| fuser::BackingId::create_raw(&session, s.file()))?;
    for s in fs.sources() {
        s.events().push(crate::events::Event::Mount {
            mountpoint: mountpoint.path.display().to_string(),
            io_mode: s.io_mode().name(),
        });
    }
    fs.announce_dir_sources(&mountpoint.path.display().to_string());
    fs.set_kernel(Arc::new(MountedKernel {
        notifier: session.notifier(),
    }));
    let background = session
        .spawn()
        .map_err(|e| Error::from_io(e, "start FUSE session"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || wait_for_signals(wake_tx))
        .map_err(|e| Error::from_io(e, "start signal thread"))?;
    let meta = match std::fs::metadata(&mountpoint.path) {
        Ok(meta) => meta,
        Err(e) => {
            let _ = background.umount_and_join();
            return Err(Error::from_io(
                e,
                format!("mount on {} does not answer", printable(&mountpoint.path)),
            ));
        }
    };
    // fuser would unmount by the path the mount had at start when its
    // session is dropped, and that path may hold someone else's mount by
    // then (the next daemon on the same mountpoint). So it is never
    // dropped: the daemon unmounts by device (`mount::unmount`), or the
    // kernel already did.
    std::mem::forget(background);
    fs.set_mount_dev(meta.dev());
    Ok((wake, meta.dev()))
}

/// Take every blocked signal and pass the stopping ones on; the rest
/// (including real-time signals, which `nix` does not name) are ignored.
fn wait_for_signals(wake: mpsc::Sender<Wake>) {
    let set = taken_signals();
    loop {
        match sys::sigwait(&set).map(Signal::try_from) {
            Ok(Ok(signal)) if STOP.contains(&signal) => {
                if wake.send(Wake::Signal(signal)).is_err() {
                    return;
                }
            }
            Ok(Ok(signal)) => log::info!("{signal}: ignored"),
            Ok(Err(_)) => log::info!("a real-time signal: ignored"),
            Err(e) => log::info!("waiting for signals: {e}"),
        }
    }
}
