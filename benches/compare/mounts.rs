// ------------------------------------------------------------------- setup

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{median, progress, report_spread};
use crate::pieces::{pattern, read_text};
use crate::table::{Medians, Via};
use crate::{BLOCK, MIB, MOUNT_DEADLINE};

/// The file under test, seen natively, through mmapfs (default io mode and
/// cached mode, two daemons over the same file) and through bindfs.
pub(crate) struct Paths {
    pub(crate) native: PathBuf,
    // Field order is drop order: unmount before anything else goes away.
    pub(crate) mmapfs: MmapfsMount,
    /// None once `unmount_cached` ran.
    pub(crate) cached: Option<MmapfsMount>,
    bindfs: Option<FuseMount>,
}

impl Paths {
    pub(crate) fn set_up(dir: &Path, size: u64) -> Paths {
        let src_dir = dir.join("src");
        fs::create_dir_all(&src_dir).expect("mkdir src");
        let native = src_dir.join("file.bin");
        progress(&format!("writing the {} MiB test file", size / MIB));
        create_file(&native, size);
        let mmapfs = MmapfsMount::start(dir, "mnt", &[], &native);
        let cached = MmapfsMount::start(dir, "mnt-cached", &["--io", "cached"], &native);
        let bindfs = if on_path("bindfs") {
            let mnt = dir.join("bind");
            let mut cmd = Command::new("bindfs");
            cmd.arg("-f").arg(&src_dir).arg(&mnt);
            Some(FuseMount::start(
                cmd,
                "bindfs",
                &mnt,
                &mnt.join("file.bin"),
                dir,
            ))
        } else {
            progress("bindfs not installed: its columns stay empty");
            None
        };
        Paths {
            native,
            mmapfs,
            cached: Some(cached),
            bindfs,
        }
    }

    /// The file through bindfs, if it is mounted.
    pub(crate) fn bindfs_file(&self) -> Option<PathBuf> {
        self.bindfs_dir().map(|d| d.join("file.bin"))
    }

    /// The directory holding the file, natively: what bindfs serves.
    pub(crate) fn native_dir(&self) -> PathBuf {
        self.native
            .parent()
            .expect("the file has a directory")
            .to_path_buf()
    }

    /// That directory through bindfs, if it is mounted.
    pub(crate) fn bindfs_dir(&self) -> Option<PathBuf> {
        self.bindfs.as_ref().map(|b| b.mnt.clone())
    }

    /// Every way to the file: native, mmapfs, mmapfs cached (until it is
    /// unmounted), then bindfs if mounted.
    pub(crate) fn targets(&self) -> Vec<(Via, PathBuf)> {
        let mut v = vec![
            (Via::Native, self.native.clone()),
            (Via::Mmapfs, self.mmapfs.data()),
        ];
        v.extend(self.cached.as_ref().map(|c| (Via::Cached, c.data())));
        v.extend(self.bindfs_file().map(|b| (Via::Bindfs, b)));
        v
    }

    /// The medians of `runs` rounds of `measure` on every way to the file,
    /// taking turns (see `take_turns`).
    pub(crate) fn compare(&self, runs: usize, mut measure: impl FnMut(&Path) -> f64) -> Medians {
        take_turns(&self.targets(), runs, |_, path| measure(path))
    }

    /// The cached daemon maps the source too. The rows after the comparisons
    /// evict the source and count what stays resident, and a page mapped by
    /// any process stays: let no daemon they do not measure hold a mapping.
    pub(crate) fn unmount_cached(&mut self) {
        self.cached = None;
    }
}

/// The median of `runs` rounds of `measure` on each of `targets`. They take
/// turns within a round, and each round starts with the next one, so none
/// of them always runs right after the same neighbour and drift of the
/// machine (writeback, eviction) hits all alike. Every sample goes to stderr.
pub(crate) fn take_turns(
    targets: &[(Via, PathBuf)],
    runs: usize,
    mut measure: impl FnMut(Via, &Path) -> f64,
) -> Medians {
    let n = targets.len();
    let mut samples = vec![Vec::new(); n];
    for round in 0..runs {
        for k in 0..n {
            let i = (round + k) % n;
            let (via, path) = &targets[i];
            samples[i].push(measure(*via, path));
        }
    }
    medians_of(targets, samples)
}

/// The median of each target's samples (every sample goes to stderr).
pub(crate) fn medians_of(targets: &[(Via, PathBuf)], samples: Vec<Vec<f64>>) -> Medians {
    let mut m = Medians {
        native: f64::NAN,
        mmapfs: None,
        cached: None,
        bindfs: None,
    };
    for ((via, _), s) in targets.iter().zip(samples) {
        report_spread(via.name(), &s);
        let value = median(s);
        match via {
            Via::Native => m.native = value,
            Via::Mmapfs => m.mmapfs = Some(value),
            Via::Cached => m.cached = Some(value),
            Via::Bindfs => m.bindfs = Some(value),
        }
    }
    assert!(!m.native.is_nan(), "every comparison includes native");
    m
}

fn create_file(path: &Path, size: u64) {
    let block = pattern(BLOCK);
    let mut f = File::create(path).expect("create the test file");
    for _ in 0..size / BLOCK as u64 {
        f.write_all(&block).expect("write the test file");
    }
    f.sync_all().expect("fsync the test file");
}

/// A FUSE daemon run in the foreground as our child, unmounted in Drop so
/// that a failing run leaves no mount behind.
struct FuseMount {
    mnt: PathBuf,
    child: Child,
    name: String,
    log: PathBuf,
}

impl FuseMount {
    /// Spawn `cmd` and wait until `ready` exists (the mount answers).
    fn start(mut cmd: Command, name: &str, mnt: &Path, ready: &Path, dir: &Path) -> FuseMount {
        fs::create_dir_all(mnt).expect("mkdir mountpoint");
        // A log file rather than a pipe: a pipe nobody drains could block it.
        let log = dir
            .join(mnt.file_name().expect("mountpoint name"))
            .with_extension("log");
        let out = File::create(&log).expect("create daemon log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let mut mount = FuseMount {
            mnt: mnt.to_path_buf(),
            child,
            name: name.to_string(),
            log,
        };
        let start = Instant::now();
        while !ready.exists() {
            if let Some(status) = mount.child.try_wait().expect("try_wait") {
                panic!(
                    "{name} exited with {status} before mounting: {}",
                    mount.log_text()
                );
            }
            assert!(
                start.elapsed() < MOUNT_DEADLINE,
                "{name} did not mount within {MOUNT_DEADLINE:?}: {}",
                mount.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        mount
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn is_mounted(&self) -> bool {
        let mnt = self.mnt.to_string_lossy();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(&*mnt))
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        // Retry while busy (a descriptor of ours may still be closing).
        let start = Instant::now();
        while self.is_mounted() && start.elapsed() < MOUNT_DEADLINE {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status();
            if self.is_mounted() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let start = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) {
            if start.elapsed() > MOUNT_DEADLINE {
                progress(&format!(
                    "{} did not exit after unmount; killing it",
                    self.name
                ));
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let log = self.log_text();
        if !log.trim().is_empty() {
            progress(&format!("{} said: {}", self.name, log.trim()));
        }
    }
}

/// An mmapfs mount serving one source.
pub(crate) struct MmapfsMount {
    mount: FuseMount,
    pub(crate) mnt: PathBuf,
    /// The source's directory in the mount: `MOUNTPOINT/<basename>`.
    source_dir: PathBuf,
}

impl MmapfsMount {
    pub(crate) fn start(dir: &Path, mnt_name: &str, args: &[&str], src: &Path) -> MmapfsMount {
        if let Some(parent) = src.parent() {
            fs::create_dir_all(parent).expect("mkdir for the source");
        }
        let mnt = dir.join(mnt_name);
        let mut cmd = Command::new(mmapfs_bin());
        cmd.arg("-f").args(args);
        // A mount that names its io mode measures that mode, whatever the
        // environment asks of the others.
        if let (Ok(io), false) = (std::env::var("MMAPFS_BENCH_IO"), args.contains(&"--io")) {
            cmd.arg("--io").arg(io);
        }
        cmd.arg(src).arg(&mnt);
        let mount = FuseMount::start(
            cmd,
            &format!("mmapfs ({mnt_name})"),
            &mnt,
            &mnt.join("stats"),
            dir,
        );
        let source_dir = mnt.join(src.file_name().expect("source has a name"));
        MmapfsMount {
            mount,
            mnt,
            source_dir,
        }
    }

    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.source_dir.join(name)
    }

    pub(crate) fn data(&self) -> PathBuf {
        self.file("data")
    }

    pub(crate) fn pid(&self) -> u32 {
        self.mount.child.id()
    }

    /// One value from the source's `stats`.
    pub(crate) fn stat(&self, key: &str) -> String {
        read_text(&self.file("stats"))
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ').map(str::to_string))
            .unwrap_or_else(|| "?".to_string())
    }
}

fn mmapfs_bin() -> PathBuf {
    let bin = std::env::var_os("MMAPFS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mmapfs")));
    assert!(bin.exists(), "no mmapfs binary at {}", bin.display());
    bin
}

pub(crate) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// `MMAPFS_BENCH_SIZE` (e.g. `256M`, `1G`), in whole MiB; default 1 GiB;
/// at least 2 MiB, since the window row maps all but the first MiB.
pub(crate) fn bench_size() -> u64 {
    let text = std::env::var("MMAPFS_BENCH_SIZE").unwrap_or_else(|_| "1G".to_string());
    let size = parse_size(&text)
        .unwrap_or_else(|| panic!("MMAPFS_BENCH_SIZE={text}: expected a number with K/M/G/T"));
    let size = size / MIB * MIB;
    assert!(size >= 2 * MIB, "MMAPFS_BENCH_SIZE must be at least 2M");
    size
}

fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim().trim_end_matches("iB").trim_end_matches('B');
    let (digits, shift) = match t.chars().last()?.to_ascii_uppercase() {
        'K' => (&t[..t.len() - 1], 10),
        'M' => (&t[..t.len() - 1], 20),
        'G' => (&t[..t.len() - 1], 30),
        'T' => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}
