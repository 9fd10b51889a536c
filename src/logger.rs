//! A tiny `log` backend: stderr in the foreground, syslog once daemonized.
//! Verbosity comes from `-v`/`-q`, overridden by `RUST_LOG` in the usual
//! `env_filter` syntax (`debug`, or `mmapfs=debug,fuser=warn`).

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use env_filter::{Builder, Filter};
use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::sys;

struct Logger {
    filter: Filter,
    syslog: AtomicBool,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        if self.syslog.load(Ordering::Relaxed) {
            let priority = match record.level() {
                Level::Error => libc::LOG_ERR,
                Level::Warn => libc::LOG_WARNING,
                Level::Info => libc::LOG_INFO,
                Level::Debug | Level::Trace => libc::LOG_DEBUG,
            };
            sys::syslog(priority, &record.args().to_string());
        } else {
            let level = record.level().as_str().to_ascii_lowercase();
            // Never `eprintln!`: a closed pipe or a full disk behind stderr
            // would panic, and a panic aborts the daemon.
            let _ = writeln!(std::io::stderr(), "mmapfs: {level}: {}", record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: std::sync::OnceLock<Logger> = std::sync::OnceLock::new();

pub fn init(verbosity: i8) {
    let default = match verbosity {
        i8::MIN..=-2 => LevelFilter::Off,
        -1 => LevelFilter::Error,
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    // fuser warns about requests we answer on purpose (xattrs, a second
    // unmount attempt); show them only when asked for more.
    let fuser = if verbosity > 0 {
        default
    } else {
        LevelFilter::Error
    };
    let mut builder = Builder::new();
    builder.filter_level(default).filter_module("fuser", fuser);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse(&spec);
    }
    let logger = Logger {
        filter: builder.build(),
        syslog: AtomicBool::new(false),
    };
    let max = logger.filter.filter();
    if LOGGER.set(logger).is_ok() {
        if let Some(logger) = LOGGER.get() {
            let _ = log::set_logger(logger);
            log::set_max_level(max);
        }
    }
}

/// From now on, log lines go to syslog (the daemon has no terminal).
pub fn switch_to_syslog() {
    sys::openlog();
    if let Some(logger) = LOGGER.get() {
        logger.syslog.store(true, Ordering::Relaxed);
    }
}
