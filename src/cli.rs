//! The command line: clap definitions, `-o` mount options (as mount.fuse3
//! passes them) and size suffixes, turned into one checked [`Options`].

use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};

use crate::daemon;
use crate::io_mode::IoChoice;
use crate::open;
use crate::size;
use crate::sys::Sharing;

/// Serve files through FUSE from a memory mapping, and show their page-cache
/// and sync state as plain files (`data`, `msync`, `dirty_pages`, `stats`...).
#[derive(Parser, Debug)]
#[command(name = "mmapfs", version, max_term_width = 100)]
#[command(
    override_usage = "mmapfs [OPTIONS] SOURCE... MOUNTPOINT\n       mmapfs [OPTIONS] --anon NAME=SIZE... MOUNTPOINT"
)]
#[command(
    after_help = "Unmount with `fusermount3 -u MOUNTPOINT`, `umount MOUNTPOINT`, SIGTERM or \
Ctrl-C; every path ends with a final msync(MS_SYNC). See `man mmapfs` and doc/SEMANTICS.md."
)]
pub struct Cli {
    /// Files, block devices or directories to serve, then the directory to mount on.
    #[arg(value_name = "SOURCE... MOUNTPOINT", required_unless_present_any = ["man", "completions"])]
    paths: Vec<PathBuf>,

    /// Print the man page (roff) and exit.
    #[arg(long, hide = true)]
    man: bool,

    /// Print shell completions (bash, zsh, fish...) and exit.
    #[arg(long, hide = true, value_name = "SHELL")]
    completions: Option<clap_complete::Shell>,

    /// Stay in the foreground instead of daemonizing once mounted.
    #[arg(short, long)]
    foreground: bool,

    /// Mount options: ro, rw, allow_other, allow_root, default_permissions,
    /// auto_unmount, fsname=NAME, private, offset=N, length=N, size=N, io=MODE,
    /// crash_test, trace (in fstab: mmap_private, mmap_offset=N, mmap_length=N).
    #[arg(short = 'o', value_name = "OPT[,OPT...]")]
    options: Vec<String>,

    /// Open sources read-only and map them PROT_READ; `data` loses its write bits.
    #[arg(long)]
    read_only: bool,

    /// Map MAP_PRIVATE: writes are copy-on-write and never reach the source.
    #[arg(long)]
    private: bool,

    /// Start of the mapped window in each source (page-aligned; 4K, 16M, 1G...).
    #[arg(long, value_name = "N", value_parser = size::parse)]
    offset: Option<u64>,

    /// Length of the mapped window (default: to the end of the file).
    #[arg(long, value_name = "N", value_parser = size::parse)]
    length: Option<u64>,

    /// Create a missing source, or extend a shorter one, to N bytes. Never shrinks.
    #[arg(long, value_name = "N", value_parser = size::parse)]
    size: Option<u64>,

    /// Add an anonymous shared region (memfd) named NAME; repeatable.
    #[arg(long, value_name = "NAME=SIZE", value_parser = parse_anon)]
    anon: Vec<(String, u64)>,

    /// How `data` is served: passthrough shares the source's page cache.
    #[arg(long, value_enum, value_name = "MODE")]
    io: Option<IoChoice>,

    /// Hold every write to data until it is synced (fsync, msync, O_SYNC,
    /// `echo sync > msync`), so `crash` can lose exactly what never was.
    #[arg(long)]
    crash_test: bool,

    /// Trace page events from the start (otherwise only while `trace` is open).
    #[arg(long)]
    trace: bool,

    /// Skip the final msync(MS_SYNC) at unmount.
    #[arg(long)]
    no_sync_on_exit: bool,

    /// Events kept per source in `events`.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    events: usize,

    /// More log output (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Less log output.
    #[arg(short, long, action = clap::ArgAction::Count)]
    quiet: u8,
}

/// Everything the command line said, checked for consistency.
#[derive(Debug, Clone)]
struct Options {
    pub sources: Vec<PathBuf>,
    pub anon: Vec<(String, u64)>,
    pub mountpoint: PathBuf,
    pub foreground: bool,
    pub read_only: bool,
    pub sharing: Sharing,
    pub offset: u64,
    pub length: Option<u64>,
    pub size: Option<u64>,
    pub io: IoChoice,
    pub crash_test: bool,
    pub sync_on_exit: bool,
    pub trace: bool,
    pub events: usize,
    pub allow_other: bool,
    pub allow_root: bool,
    pub auto_unmount: bool,
    pub fsname: Option<String>,
    /// 0 = warnings and errors, negative quieter, positive louder.
    pub verbosity: i8,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    Mount {
        config: Box<daemon::Config>,
        /// 0 = warnings and errors, negative quieter, positive louder.
        verbosity: i8,
    },
    Man,
    Completions(clap_complete::Shell),
}

/// Parse the process arguments; a usage problem is a clap error (exit 2).
pub fn parse() -> Result<Invocation, clap::Error> {
    let cli = Cli::try_parse()?;
    if cli.man {
        return Ok(Invocation::Man);
    }
    if let Some(shell) = cli.completions {
        return Ok(Invocation::Completions(shell));
    }
    let o = options_from(cli)?;
    Ok(Invocation::Mount {
        verbosity: o.verbosity,
        config: Box::new(daemon::Config {
            open: open::Config {
                sources: o.sources,
                anon: o.anon,
                read_only: o.read_only,
                sharing: o.sharing,
                offset: o.offset,
                length: o.length,
                size: o.size,
                events_kept: o.events,
                crash_test: o.crash_test,
            },
            mountpoint: o.mountpoint,
            foreground: o.foreground,
            io: o.io,
            sync_on_exit: o.sync_on_exit,
            trace: o.trace,
            allow_other: o.allow_other,
            allow_root: o.allow_root,
            auto_unmount: o.auto_unmount,
            fsname: o.fsname,
        }),
    })
}

#[cfg(test)]
fn parse_from<I, T>(args: I) -> Result<Options, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    options_from(Cli::try_parse_from(args)?)
}

fn usage(message: impl std::fmt::Display) -> clap::Error {
    Cli::command().error(ErrorKind::InvalidValue, message)
}

fn options_from(cli: Cli) -> Result<Options, clap::Error> {
    let mut paths = cli.paths;
    let mountpoint = paths.pop().ok_or_else(|| usage("missing MOUNTPOINT"))?;
    let mut opts = Options {
        sources: paths,
        anon: cli.anon,
        mountpoint,
        foreground: cli.foreground,
        read_only: cli.read_only,
        sharing: if cli.private {
            Sharing::Private
        } else {
            Sharing::Shared
        },
        offset: cli.offset.unwrap_or(0),
        length: cli.length,
        size: cli.size,
        io: cli.io.unwrap_or(IoChoice::Auto),
        crash_test: cli.crash_test,
        sync_on_exit: !cli.no_sync_on_exit,
        trace: cli.trace,
        events: cli.events,
        allow_other: false,
        allow_root: false,
        auto_unmount: false,
        fsname: None,
        verbosity: i8::try_from(i16::from(cli.verbose) - i16::from(cli.quiet)).unwrap_or(0),
    };
    for word in cli.options.iter().flat_map(|o| o.split(',')) {
        apply_mount_option(&mut opts, word)?;
    }
    if opts.sources.is_empty() && opts.anon.is_empty() {
        return Err(Cli::command().error(
            ErrorKind::MissingRequiredArgument,
            "need at least one SOURCE (or --anon NAME=SIZE) before MOUNTPOINT",
        ));
    }
    if opts.events == 0 {
        return Err(usage("--events must be at least 1"));
    }
    if opts.crash_test {
        check_crash_test(&opts)?;
        // The writes are held in a private mapping, served through us.
        opts.sharing = Sharing::Private;
        opts.io = IoChoice::Cached;
    }
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in &opts.anon {
        if names.contains(&name.as_str()) {
            return Err(usage(format!("--anon {name} given twice")));
        }
        names.push(name);
    }
    Ok(opts)
}

/// `--crash-test` must see every write and every sync of `data`, and hold
/// writes until a sync makes them durable in the source.
fn check_crash_test(opts: &Options) -> Result<(), clap::Error> {
    let why = if opts.io == IoChoice::Passthrough {
        "--io passthrough: the kernel would write to the source without the daemon seeing it"
    } else if opts.sharing == Sharing::Private {
        "--private: private writes never reach the source, so no sync could make them durable"
    } else if !opts.anon.is_empty() {
        "--anon: an anonymous region has no disk to crash"
    } else if opts.read_only {
        "--read-only: nothing can be written, so nothing can be lost"
    } else {
        return Ok(());
    };
    Err(usage(format!("--crash-test cannot be combined with {why}")))
}

fn apply_mount_option(opts: &mut Options, word: &str) -> Result<(), clap::Error> {
    let (key, value) = match word.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (word, None),
    };
    let size = |v: Option<&str>| -> Result<u64, clap::Error> {
        let v = v.ok_or_else(|| usage(format!("-o {key} needs a value: {key}=N")))?;
        size::parse(v).map_err(|e| usage(format!("-o {key}: {e}")))
    };
    match (key, value) {
        ("", None) => {}
        ("ro", None) => opts.read_only = true,
        ("rw", None) => opts.read_only = false,
        ("allow_other", None) => opts.allow_other = true,
        ("allow_root", None) => opts.allow_root = true,
        // Always on (see daemon::fuse_config).
        ("default_permissions", None) => {}
        ("auto_unmount", None) => opts.auto_unmount = true,
        ("trace", None) => opts.trace = true,
        // mount(8) takes `private` (propagation) and `offset=` (loop
        // device) for itself, so fstab lines need the mmap_ spellings.
        ("private" | "mmap_private", None) => opts.sharing = Sharing::Private,
        ("crash_test", None) => opts.crash_test = true,
        ("fsname", Some(name)) if !name.is_empty() => opts.fsname = Some(name.to_string()),
        ("offset" | "mmap_offset", _) => opts.offset = size(value)?,
        ("length" | "mmap_length", _) => opts.length = Some(size(value)?),
        ("size", _) => opts.size = Some(size(value)?),
        ("io", Some(mode)) => {
            opts.io = IoChoice::from_str(mode, false).map_err(|_| {
                usage(format!(
                    "-o io={mode}: expected auto, passthrough or cached"
                ))
            })?
        }
        // Words fstab and mount(8) pass along that mean nothing to a FUSE daemon.
        (
            "defaults" | "noauto" | "auto" | "nofail" | "_netdev" | "user" | "users" | "nouser",
            None,
        ) => {}
        ("dev" | "nodev" | "suid" | "nosuid" | "exec" | "noexec" | "atime" | "noatime", None) => {}
        _ => return Err(usage(format!("unknown mount option '{word}'"))),
    }
    Ok(())
}

fn parse_anon(text: &str) -> Result<(String, u64), String> {
    let (name, size) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}': expected NAME=SIZE, e.g. shm=16M"))?;
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!("'{name}' cannot be a directory name"));
    }
    // memfd_create(2) takes at most 249 bytes of name.
    if name.len() > 249 {
        return Err(format!(
            "--anon name of {} bytes: at most 249 (the memfd_create limit)",
            name.len()
        ));
    }
    if name == "stats" || name == "metrics" {
        return Err(format!("'{name}' is taken by the root {name} file"));
    }
    let size = size::parse(size)?;
    if size == 0 {
        return Err(format!(
            "--anon {name}: cannot map an empty region: mmap needs a length > 0"
        ));
    }
    Ok((name.to_string(), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_after_positionals_like_mount_fuse3() {
        let o = parse_from([
            "mmapfs",
            "src",
            "mnt",
            "-o",
            "ro,allow_other,noauto,fsname=x",
        ])
        .unwrap();
        assert_eq!(o.sources, vec![PathBuf::from("src")]);
        assert_eq!(o.mountpoint, PathBuf::from("mnt"));
        assert!(o.read_only && o.allow_other);
        assert_eq!(o.fsname.as_deref(), Some("x"));
    }

    #[test]
    fn mount_options_carry_values() {
        let o = parse_from([
            "mmapfs",
            "-o",
            "offset=4K,length=1M,io=cached,private",
            "a",
            "m",
        ])
        .unwrap();
        assert_eq!((o.offset, o.length), (4096, Some(1 << 20)));
        assert_eq!(o.io, IoChoice::Cached);
        assert_eq!(o.sharing, Sharing::Private);
        assert!(!o.trace);
        assert!(
            parse_from(["mmapfs", "-o", "trace", "a", "m"])
                .unwrap()
                .trace
        );
        assert!(parse_from(["mmapfs", "--trace", "a", "m"]).unwrap().trace);
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        for args in [
            vec!["mmapfs", "mnt"],
            vec!["mmapfs", "a", "m", "-o", "bogus"],
            vec!["mmapfs", "a", "m", "-o", "io=fast"],
            vec!["mmapfs", "a", "m", "--size", "12Q"],
            vec!["mmapfs", "--anon", "x", "m"],
            vec!["mmapfs", "--anon", "x=0", "m"],
            vec!["mmapfs", "--anon", "x=1M", "--anon", "x=2M", "m"],
        ] {
            let err = parse_from(&args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn anon_alone_needs_no_source() {
        let o = parse_from(["mmapfs", "--anon", "shm=1M", "m"]).unwrap();
        assert!(o.sources.is_empty());
        assert_eq!(o.anon, vec![("shm".to_string(), 1 << 20)]);
    }
}
