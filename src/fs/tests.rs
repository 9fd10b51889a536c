//! The filesystem logic without a mount: a temporary source, a fake kernel
//! side that records what it was asked, and requests made as the adapter
//! makes them.

use std::path::Path;
use std::sync::mpsc;

use super::*;
use crate::open;

/// Records every push the daemon asks of the kernel.
#[derive(Default)]
struct FakeKernel {
    pushes: Mutex<Vec<(u64, u64, u64)>>,
}

impl KernelCache for FakeKernel {
    fn push_and_drop(&self, data_ino: u64, offset: u64, length: u64) -> Result<()> {
        self.pushes
            .lock()
            .expect("test lock")
            .push((data_ino, offset, length));
        Ok(())
    }

    fn forget_name(&self, _parent: u64, _name: &std::ffi::OsStr) -> Result<()> {
        Ok(())
    }
}

/// The filesystem serving what `config` opens, in cached mode.
pub(super) fn cached(config: &open::Config) -> Arc<MmapFs> {
    let sources = open::open_all(config).expect("open sources");
    let fs = Arc::new(MmapFs::new(
        sources.files,
        sources.dirs,
        IoChoice::Cached,
        config.events_kept,
    ));
    fs.decide_io_modes(|_| panic!("cached mode registers nothing"))
        .expect("io modes");
    fs
}

pub(super) const ROOT: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 1,
};
const STRANGER: Caller = Caller {
    uid: 4242,
    gid: 4242,
    pid: 1,
};

struct Fixture {
    _dir: tempfile::TempDir,
    fs: Arc<MmapFs>,
    kernel: Arc<FakeKernel>,
}

/// A mount of one 64 KiB source named `src.bin` (mode 0600), cached.
fn mounted(offset: u64, length: Option<u64>) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("src.bin");
    std::fs::write(&path, vec![7u8; 64 << 10]).expect("write source");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let fs = cached(&open::Config {
        offset,
        length,
        ..open::Config::plain(vec![path], 100)
    });
    let kernel = Arc::new(FakeKernel::default());
    fs.set_kernel(kernel.clone());
    Fixture {
        _dir: dir,
        fs,
        kernel,
    }
}

fn ino(fs: &MmapFs, path: &str) -> u64 {
    let mut ino = ROOT_INO;
    for name in Path::new(path).iter() {
        ino = fs.lookup(ino, name, ROOT).expect(path).ino;
    }
    ino
}

fn read_all(fs: &MmapFs, path: &str, caller: Caller) -> String {
    let ino = ino(fs, path);
    let opened = fs.open(ino, libc::O_RDONLY, caller).expect("open");
    let bytes = fs.read(ino, opened.fh, 0, 1 << 20).expect("read");
    fs.release(ino, opened.fh);
    String::from_utf8(bytes).expect("utf-8")
}

/// Write a command to `msync` and wait for its answer.
fn msync(fs: &Arc<MmapFs>, command: &str) -> Result<u32> {
    let (tx, rx) = mpsc::channel();
    fs.write(
        ino(fs, "src.bin/msync"),
        0,
        0,
        command.as_bytes(),
        WriteFrom {
            page_cache: false,
            synchronous: false,
            caller: ROOT,
        },
        move |r| {
            let _ = tx.send(r);
        },
    );
    rx.recv_timeout(Duration::from_secs(20))
        .expect("msync answered")
}

#[test]
fn the_tree_has_the_spec_files_and_attributes_follow_the_source() {
    let f = mounted(0, None);
    let names: Vec<String> =
        f.fs.readdir(ino(&f.fs, "src.bin"), 0, 0, ROOT)
            .expect("readdir")
            .into_iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect();
    for name in [
        ".",
        "..",
        "data",
        "msync",
        "dirty_pages",
        "resident_pages",
        "stats",
        "events",
        "mappers",
        "map",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    let data = f.fs.getattr(ino(&f.fs, "src.bin/data")).expect("getattr");
    assert_eq!((data.size, data.perm), (64 << 10, 0o600));
    let stats = f.fs.getattr(ino(&f.fs, "src.bin/stats")).expect("getattr");
    assert_eq!(stats.perm, 0o400, "readable as the source is");
    assert_eq!(stats.ttl, Duration::ZERO);
    let msync = f.fs.getattr(ino(&f.fs, "src.bin/msync")).expect("getattr");
    assert_eq!(msync.perm, 0o600);
    let keys: Vec<String> = read_all(&f.fs, "src.bin/stats", ROOT)
        .lines()
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect();
    let declared: Vec<&str> = crate::stats::ALL
        .iter()
        .filter(|k| !crate::stats::TREE_ONLY.iter().any(|t| t.name == k.name))
        .map(|k| k.name)
        .collect();
    assert_eq!(
        keys, declared,
        "stats shows every file-source key, in order"
    );
    let root = f.fs.getattr(ROOT_INO).expect("getattr");
    assert!(root.kind == Type::Dir && root.perm == 0o555);
    assert_eq!(
        f.fs.lookup(ROOT_INO, "nope".as_ref(), ROOT)
            .unwrap_err()
            .errno,
        libc::ENOENT
    );
}

#[test]
fn each_open_is_one_snapshot_and_a_reread_from_zero_refreshes() {
    let f = mounted(0, None);
    let stats = ino(&f.fs, "src.bin/stats");
    let opened = f.fs.open(stats, libc::O_RDONLY, ROOT).expect("open");
    let first = f.fs.read(stats, opened.fh, 0, 1 << 20).expect("read");
    f.fs.write(
        ino(&f.fs, "src.bin/data"),
        0,
        0,
        b"hello",
        WriteFrom {
            page_cache: false,
            synchronous: false,
            caller: ROOT,
        },
        |r| {
            assert_eq!(r.expect("write"), 5);
        },
    );
    let tail = f.fs.read(stats, opened.fh, 10, 1 << 20).expect("read");
    assert_eq!(
        tail,
        first[10..],
        "a read at an offset sees the same snapshot"
    );
    let again =
        String::from_utf8(f.fs.read(stats, opened.fh, 0, 1 << 20).expect("read")).expect("utf-8");
    assert!(again.contains("\nwrites 1\n"), "{again}");
    f.fs.release(stats, opened.fh);
}

#[test]
fn setattr_refuses_owner_mode_and_resizing_what_cannot_change() {
    let f = mounted(4096, Some(8192));
    let data = ino(&f.fs, "src.bin/data");
    let owner = SetAttr {
        size: None,
        mode: Some(0o600),
        ..SetAttr::default()
    };
    assert_eq!(
        f.fs.setattr(data, owner, ROOT).unwrap_err().errno,
        libc::EPERM
    );
    let resize = |size| SetAttr {
        size: Some(size),
        fh: Some(1),
        ..SetAttr::default()
    };
    assert_eq!(
        f.fs.setattr(data, resize(100), ROOT).unwrap_err().errno,
        libc::EPERM,
        "a window keeps its length"
    );
    assert_eq!(
        f.fs.setattr(data, resize(8192), ROOT)
            .expect("same size")
            .size,
        8192
    );
    let stats = ino(&f.fs, "src.bin/stats");
    assert_eq!(
        f.fs.setattr(stats, resize(5), ROOT).unwrap_err().errno,
        libc::EPERM
    );
    assert_eq!(
        f.fs.write_window_error(data, 8192),
        libc::ENOSPC,
        "writes at the end of a window"
    );
}

#[test]
fn a_whole_file_follows_truncate_and_writes_past_its_end() {
    let f = mounted(0, None);
    let data = ino(&f.fs, "src.bin/data");
    let shrink = SetAttr {
        size: Some(4096),
        ..SetAttr::default()
    };
    assert_eq!(
        f.fs.setattr(data, shrink, ROOT).expect("truncate").size,
        4096
    );
    f.fs.write(
        data,
        0,
        10_000,
        b"x",
        WriteFrom {
            page_cache: false,
            synchronous: false,
            caller: ROOT,
        },
        |r| assert_eq!(r.expect("write"), 1),
    );
    assert_eq!(f.fs.getattr(data).expect("getattr").size, 10_001);
}

#[test]
fn o_trunc_is_told_from_truncate_by_the_thread_that_just_opened() {
    let f = mounted(0, None);
    let data = ino(&f.fs, "src.bin/data");
    let to_zero = SetAttr {
        size: Some(0),
        ..SetAttr::default()
    };
    let opener = Caller { pid: 77, ..ROOT };
    let opened = f.fs.open(data, libc::O_WRONLY, opener).expect("open");
    assert_eq!(
        f.fs.setattr(data, to_zero, opener).expect("o_trunc").size,
        64 << 10,
        "the O_TRUNC of an open changes nothing"
    );
    assert_eq!(
        f.fs.setattr(data, to_zero, opener).expect("truncate").size,
        0,
        "an open answers for one SETATTR only: truncate(2) after it is real"
    );
    f.fs.release(data, opened.fh);
    let g = mounted(0, None);
    let data = ino(&g.fs, "src.bin/data");
    let opened = g.fs.open(data, libc::O_WRONLY, opener).expect("open");
    let other = Caller { pid: 78, ..ROOT };
    assert_eq!(
        g.fs.setattr(data, to_zero, other).expect("truncate").size,
        0,
        "another thread's truncate(2) is real"
    );
    g.fs.release(data, opened.fh);
}

#[test]
fn msync_reports_runs_and_pushes_the_kernel_cache_first() {
    let f = mounted(0, None);
    assert_eq!(msync(&f.fs, "sync 4096 8192\n").expect("sync"), 15);
    let report = read_all(&f.fs, "src.bin/msync", ROOT);
    for line in [
        "command sync\n",
        "offset_bytes 4096\n",
        "length_bytes 8192\n",
        "result ok\n",
        "reached_source yes\n",
    ] {
        assert!(report.contains(line), "{line} in {report}");
    }
    let data = ino(&f.fs, "src.bin/data");
    assert_eq!(
        *f.kernel.pushes.lock().expect("test lock"),
        vec![(data, 4096, 8192)],
        "cached mode: the kernel's dirty pages of that range come first"
    );
    assert_eq!(msync(&f.fs, "async").expect("async"), 5);
    assert_eq!(
        f.kernel.pushes.lock().expect("test lock").len(),
        1,
        "async waits for nothing"
    );
    assert_eq!(msync(&f.fs, "bogus").unwrap_err().errno, libc::EINVAL);
    assert!(
        read_all(&f.fs, "src.bin/msync", ROOT).contains("command async\n"),
        "a rejected command changes no report"
    );
    let events = read_all(&f.fs, "src.bin/events", ROOT);
    assert!(
        events.contains(" msync command=sync offset=4096 length=8192 result=ok "),
        "{events}"
    );
    assert!(
        events.contains(" msync_rejected bytes=5 reason="),
        "{events}"
    );
}

#[test]
fn other_users_see_only_what_the_source_lets_them() {
    let f = mounted(0, None);
    let data = ino(&f.fs, "src.bin/data");
    let opened =
        f.fs.open(data, libc::O_RDONLY, Caller { pid: 777, ..ROOT })
            .expect("open");
    f.fs.release(data, opened.fh);
    let for_root = read_all(&f.fs, "src.bin/events", ROOT);
    let for_stranger = read_all(&f.fs, "src.bin/events", STRANGER);
    assert!(for_root.contains(" open pid=777 access=r"), "{for_root}");
    assert!(
        for_stranger.contains(" open pid=*** access=r"),
        "{for_stranger}"
    );
    assert_eq!(
        for_root.len(),
        for_stranger.len(),
        "same offsets for everyone"
    );
    assert!(read_all(&f.fs, "stats", ROOT).starts_with("sources 1\n"));
    assert!(
        read_all(&f.fs, "stats", STRANGER).starts_with("sources 0\n"),
        "a 0600 source is not summed for a user who cannot read it"
    );
    assert!(!read_all(&f.fs, "metrics", STRANGER).contains("src.bin"));
}

impl MmapFs {
    /// The errno of a one-byte write to `data` at `offset`.
    fn write_window_error(&self, data: u64, offset: u64) -> i32 {
        let Ok(Node::File(i, FileKind::Data)) = self.node(data) else {
            panic!("not data");
        };
        self.source(i)
            .write_window(offset, b"x", false)
            .unwrap_err()
            .errno
    }
}
