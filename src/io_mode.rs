//! How `data` is served, decided in one place from what the source allows,
//! what was asked and what the kernel offered.

use crate::error::fail;
use crate::error::{Error, Result};

/// What the command line asks for (`--io`, `-o io=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IoChoice {
    /// Passthrough where it can apply, else cached.
    Auto,
    /// Kernel passthrough to the source; fail at start if impossible.
    Passthrough,
    /// Every read and write goes through the daemon and is counted.
    Cached,
}

/// How `data` is served for one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    Passthrough,
    Cached,
}

impl IoMode {
    pub fn name(self) -> &'static str {
        match self {
            IoMode::Passthrough => "passthrough",
            IoMode::Cached => "cached",
        }
    }
}

/// Whether to ask the kernel for passthrough at all.
pub fn wanted(asked: IoChoice, source_allows: bool) -> bool {
    asked != IoChoice::Cached && source_allows
}

/// Refuse, before anything is mounted, `--io passthrough` for a source it
/// cannot serve.
pub fn check(name: &str, asked: IoChoice, source_allows: bool) -> Result<()> {
    if asked == IoChoice::Passthrough && !source_allows {
        return Err(fail!(
            EINVAL,
            "{name}: --io passthrough cannot apply: passthrough serves the whole file shared, \
             so it excludes --offset, a --length shorter than the file, and --private"
        ));
    }
    Ok(())
}

/// The mode of one source. `register` hands the source's file to the
/// kernel as a backing file; it is called only when passthrough is wanted
/// and offered. Returns the mode and the backing id.
pub fn decide(
    name: &str,
    asked: IoChoice,
    source_allows: bool,
    kernel_offers: bool,
    register: impl FnOnce() -> std::io::Result<u32>,
) -> Result<(IoMode, Option<u32>)> {
    check(name, asked, source_allows)?;
    if !wanted(asked, source_allows) {
        return Ok((IoMode::Cached, None));
    }
    if !kernel_offers {
        if asked == IoChoice::Passthrough {
            return Err(fail!(
                EINVAL,
                "{name}: --io passthrough: this kernel offers no FUSE passthrough (needs Linux 6.9+)"
            ));
        }
        log::warn!("{name}: the kernel offers no FUSE passthrough; serving data in cached mode");
        return Ok((IoMode::Cached, None));
    }
    match register() {
        Ok(id) => Ok((IoMode::Passthrough, Some(id))),
        Err(e) if asked == IoChoice::Passthrough => Err(Error::from_io(
            e,
            format!("{name}: --io passthrough: the kernel refused the backing file"),
        )),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            log::info!(
                "{name}: FUSE passthrough needs root (CAP_SYS_ADMIN); serving data in cached mode"
            );
            Ok((IoMode::Cached, None))
        }
        Err(e) => {
            log::warn!("{name}: FUSE passthrough refused ({e}); serving data in cached mode");
            Ok((IoMode::Cached, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> std::io::Result<u32> {
        Err(std::io::Error::from_raw_os_error(libc::EPERM))
    }

    #[test]
    fn auto_falls_back_to_cached_and_passthrough_insists() {
        let ok = || Ok(7);
        assert_eq!(
            decide("a", IoChoice::Auto, true, true, ok).unwrap(),
            (IoMode::Passthrough, Some(7))
        );
        for (allows, offers) in [(false, true), (true, false)] {
            assert_eq!(
                decide("a", IoChoice::Auto, allows, offers, ok).unwrap(),
                (IoMode::Cached, None)
            );
            assert!(decide("a", IoChoice::Passthrough, allows, offers, ok).is_err());
        }
        assert_eq!(
            decide("a", IoChoice::Auto, true, true, refused).unwrap(),
            (IoMode::Cached, None)
        );
        assert_eq!(
            decide("a", IoChoice::Passthrough, true, true, refused)
                .unwrap_err()
                .errno,
            libc::EPERM
        );
        assert_eq!(
            decide("a", IoChoice::Cached, true, true, || panic!("not asked")).unwrap(),
            (IoMode::Cached, None)
        );
    }
}
