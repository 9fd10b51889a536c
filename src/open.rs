//! Opening sources: every start-up refusal of the spec lives here, phrased
//! to teach the rule of `mmap(2)` it enforces. The result is a list of
//! [`Source`]s with unique, reachable directory names.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::dir::{DirSource, Object};
use crate::error::fail;
use crate::error::{printable, Error, Result};
use crate::resolve::{self, OpenRequest};
use crate::source::{Kind, Owner, Parts, Source};
use crate::sys::{self, Mapping, Sharing};

/// What the command line says about opening and mapping sources.
#[derive(Debug, Clone)]
pub struct Config {
    pub sources: Vec<PathBuf>,
    pub anon: Vec<(String, u64)>,
    pub read_only: bool,
    pub sharing: Sharing,
    pub offset: u64,
    pub length: Option<u64>,
    pub size: Option<u64>,
    pub events_kept: usize,
    /// Hold writes in the private mapping until synced (`--crash-test`).
    pub crash_test: bool,
}

#[cfg(test)]
impl Config {
    /// `SOURCES` mapped shared and whole, as with no option given.
    pub fn plain(sources: Vec<PathBuf>, events_kept: usize) -> Config {
        Config {
            sources,
            anon: Vec::new(),
            read_only: false,
            sharing: crate::sys::Sharing::Shared,
            offset: 0,
            length: None,
            size: None,
            events_kept,
            crash_test: false,
        }
    }
}

/// Names the root of the mount uses for itself.
pub const RESERVED_NAMES: [&str; 2] = ["stats", "metrics"];

/// Every source opened: files and regions, and directories.
pub struct Sources {
    pub files: Vec<Source>,
    pub dirs: Vec<DirSource>,
}

/// Open, check and map every source and `--anon` region, in order.
pub fn open_all(config: &Config) -> Result<Sources> {
    let mut sources: Vec<Source> = Vec::new();
    let mut dirs: Vec<DirSource> = Vec::new();
    let mut seen: Vec<(u64, u64, PathBuf)> = Vec::new();
    for path in &config.sources {
        // A directory found by this walk is served from the descriptor it
        // gave; anything else is opened (walked again) as a file.
        let (dev, ino) = match resolve::open_dir(path) {
            Ok(resolve::Dir::Found(node)) => {
                let dir = open_tree(path, node, config)?;
                let id = (dir.root().dev, dir.root().ino);
                dirs.push(dir);
                id
            }
            _ => {
                let source = open_file(path, config)?;
                let meta = source
                    .file()
                    .metadata()
                    .map_err(|e| Error::from_io(e, printable(path)))?;
                sources.push(source);
                (meta.dev(), meta.ino())
            }
        };
        if let Some((_, _, first)) = seen.iter().find(|(d, i, _)| *d == dev && *i == ino) {
            return Err(fail!(
                EINVAL,
                "{} and {} are the same file (device {dev}, inode {ino}): give each file once",
                printable(first),
                printable(path),
            ));
        }
        seen.push((dev, ino, path.clone()));
    }
    for (name, size) in &config.anon {
        sources.push(open_anon(name, *size, config)?);
    }
    let names = unique_names(
        sources
            .iter()
            .map(Source::name)
            .chain(dirs.iter().map(DirSource::name)),
    );
    let mut names = names.into_iter();
    for (source, name) in sources.iter_mut().zip(names.by_ref()) {
        source.rename(name);
    }
    for (dir, name) in dirs.iter_mut().zip(names) {
        dir.rename(name);
    }
    Ok(Sources {
        files: sources,
        dirs,
    })
}

/// A directory source: served whole, so the options that shape one
/// mapping do not apply to it.
fn open_tree(path: &Path, node: File, config: &Config) -> Result<DirSource> {
    let shown = printable(path);
    let refused = [
        (config.offset != 0, "--offset"),
        (config.length.is_some(), "--length"),
        (config.size.is_some(), "--size"),
        (config.sharing == Sharing::Private, "--private"),
        (config.crash_test, "--crash-test"),
    ];
    if let Some((_, option)) = refused.iter().find(|(given, _)| *given) {
        return Err(fail!(
            EINVAL,
            "{shown} is a directory: {option} shapes the mapping of one file, and a directory \
             source serves each of its files whole; give files for {option}"
        ));
    }
    let root = Object::from_fd(node.into()).map_err(|e| Error::from_io(e, shown.clone()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "source".to_string());
    Ok(DirSource::new(
        name,
        path.to_path_buf(),
        root,
        config.events_kept,
        !config.read_only,
    ))
}

/// `name`, then `name~2`, `name~3` for later sources with the same name or
/// a name the root uses itself, so every source is reachable.
fn unique_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let names: Vec<&str> = names.collect();
    let mut out: Vec<String> = Vec::new();
    for (i, base) in names.iter().enumerate() {
        let taken = |candidate: &str, out: &[String]| {
            RESERVED_NAMES.contains(&candidate)
                || out.iter().any(|n| n == candidate)
                || (candidate != *base && names[i + 1..].contains(&candidate))
        };
        let mut name = base.to_string();
        let mut n = 1;
        while taken(&name, &out) {
            n += 1;
            name = format!("{base}~{n}");
        }
        out.push(name);
    }
    out
}

fn open_file(path: &Path, config: &Config) -> Result<Source> {
    let shown = printable(path);
    let private = config.sharing == Sharing::Private;
    if config.size.is_some_and(|n| i64::try_from(n).is_err()) {
        return Err(fail!(
            EFBIG,
            "--size {}: larger than any file can be (at most {} bytes)",
            config.size.unwrap_or_default(),
            i64::MAX
        ));
    }
    if config.size == Some(0) {
        return Err(fail!(
            EINVAL,
            "--size 0: cannot map an empty file: mmap needs a length > 0"
        ));
    }
    // A private mapping never writes back, so it needs no write access;
    // growing the file does, and so does persisting a crash test's syncs.
    let writable = !config.read_only;
    let grows = config.size.is_some() && writable;
    let opened = resolve::open_source(
        path,
        &OpenRequest {
            write: writable && (!private || grows || config.crash_test),
            create_mode: config.size.filter(|_| writable).map(|_| 0o644),
        },
    )?;
    if opened.created {
        log::info!("{shown}: created for --size");
    }
    let (file, meta) = (opened.file, opened.meta);
    let kind = if meta.file_type().is_block_device() {
        Kind::BlockDevice
    } else {
        Kind::File
    };
    if let Some(size) = config.size {
        // Grown through the descriptor just opened, never by name, and
        // never shrunk: a racing writer keeps what it wrote.
        if kind == Kind::File && meta.len() < size {
            if config.read_only {
                return Err(fail!(
                    EINVAL,
                    "{shown}: --size needs to write the file, but --read-only was given"
                ));
            }
            file.set_len(size)
                .map_err(|e| Error::from_io(e, format!("{shown}: --size {size}")))?;
        }
    }
    let file_size = (&file)
        .seek(SeekFrom::End(0))
        .map_err(|e| Error::from_io(e, format!("{shown}: size")))?;
    let (offset, length) = window(&shown, file_size, config)?;
    let mapping = Mapping::new(file.as_fd(), offset, length, writable, config.sharing)
        .map_err(|e| Error::from_io(e, format!("{shown}: mmap")))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "source".to_string());
    Ok(Source::new(Parts {
        name,
        path: Some(path.to_path_buf()),
        kind,
        file,
        mapping,
        sharing: config.sharing,
        writable,
        offset,
        length,
        owner: Owner {
            uid: meta.uid(),
            gid: meta.gid(),
            perm: (meta.mode() & 0o7777) as u16,
        },
        whole_file: !private && offset == 0 && length == file_size,
        events_kept: config.events_kept,
        crash_test: config.crash_test,
    }))
}

/// The `[offset, offset + length)` window of a file of `file_size` bytes.
fn window(shown: &str, file_size: u64, config: &Config) -> Result<(u64, u64)> {
    let page = sys::page_size();
    let offset = config.offset;
    if file_size == 0 {
        return Err(fail!(
            EINVAL,
            "{shown}: cannot map an empty file: mmap needs a length > 0; extend it with --size"
        ));
    }
    if !offset.is_multiple_of(page) {
        return Err(fail!(
            EINVAL,
            "--offset {offset} is not a multiple of the page size ({page} bytes): mmap offsets must be page-aligned"
        ));
    }
    if config.length == Some(0) {
        return Err(fail!(
            EINVAL,
            "--length 0: cannot map an empty window: mmap needs a length > 0"
        ));
    }
    if offset >= file_size {
        return Err(fail!(
            EINVAL,
            "{shown}: --offset {offset} is at or past the end of the file ({file_size} bytes): a mapping cannot grow the file; use --size"
        ));
    }
    let length = config.length.unwrap_or(file_size - offset);
    if offset.checked_add(length).is_none_or(|end| end > file_size) {
        return Err(fail!(
            EINVAL,
            "{shown}: window {offset}+{length} ends past the end of the file ({file_size} bytes): a mapping cannot grow the file; use --size"
        ));
    }
    Ok((offset, length))
}

fn open_anon(name: &str, size: u64, config: &Config) -> Result<Source> {
    let fd = sys::memfd(name).map_err(|e| Error::from_io(e, format!("--anon {name}")))?;
    let file = File::from(fd);
    file.set_len(size)
        .map_err(|e| Error::from_io(e, format!("--anon {name}={size}")))?;
    // Fixed size, like a mapping: even a passthrough write at the end
    // cannot grow it.
    nix::fcntl::fcntl(
        file.as_raw_fd(),
        nix::fcntl::FcntlArg::F_ADD_SEALS(
            nix::fcntl::SealFlag::F_SEAL_GROW | nix::fcntl::SealFlag::F_SEAL_SHRINK,
        ),
    )
    .map_err(|e| Error::new(e as i32, format!("--anon {name}: seal size: {e}")))?;
    let mapping = Mapping::new(file.as_fd(), 0, size, true, Sharing::Shared)
        .map_err(|e| Error::from_io(e, format!("--anon {name}: mmap")))?;
    Ok(Source::new(Parts {
        name: name.to_string(),
        path: None,
        kind: Kind::Anon,
        file,
        mapping,
        sharing: Sharing::Shared,
        writable: true,
        offset: 0,
        length: size,
        owner: Owner {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            perm: 0o600,
        },
        whole_file: true,
        events_kept: config.events_kept,
        crash_test: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_never_the_root_files() {
        let names = unique_names(["a", "stats", "a", "metrics", "a~2"].into_iter());
        assert_eq!(names, ["a", "stats~2", "a~3", "metrics~2", "a~2"]);
    }
}
