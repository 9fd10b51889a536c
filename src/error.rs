//! One error type for the whole daemon: an errno for the kernel and a
//! message for people. Every failure path builds one of these; the FUSE
//! adapter turns it into a reply in one place.

use std::fmt;
use std::io;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub errno: i32,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        Error {
            errno,
            message: message.into(),
        }
    }

    pub fn from_io(err: io::Error, context: impl fmt::Display) -> Self {
        Error::new(
            err.raw_os_error().unwrap_or(libc::EIO),
            format!("{context}: {err}"),
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Build an [`Error`] at the failure site: `fail!(EINVAL, "bad {x}")`.
macro_rules! fail {
    ($errno:ident, $($fmt:tt)+) => {
        $crate::error::Error::new(libc::$errno, format!($($fmt)+))
    };
}
pub(crate) use fail;

/// The symbolic name of an errno (`EIO`, `ENOSPC`...), for reports.
pub fn errno_name(errno: i32) -> String {
    format!("{:?}", nix::errno::Errno::from_raw(errno))
}

/// Free text in a one-line format: control characters and backslashes are
/// escaped, so a name can never start a line of its own.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// A path as shown to a person (messages, the start-up hint): a name made
/// by another user cannot carry terminal escapes or a line break.
pub fn printable(path: &std::path::Path) -> String {
    one_line(&path.display().to_string())
}
