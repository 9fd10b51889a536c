//! Control files: one command per write, run to completion, the last result
//! readable with `cat`. This module holds what they share: the parser of
//! `COMMAND [RANGE]` lines and the kernel side a command may need.

pub mod msync;

use crate::error::fail;
use crate::error::Result;

/// The longest command any control file takes; longer writes are refused
/// before they are looked at, so no user input grows a buffer.
pub const COMMAND_MAX: usize = 256;
/// How much of a bad word an error message quotes.
const QUOTE_MAX: usize = 32;

/// A byte range of the window, page-aligned at its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub offset: u64,
    pub length: u64,
}

/// One parsed write: the command word (None for an empty line) and its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command<'a> {
    pub word: Option<&'a str>,
    pub range: Range,
}

/// What the kernel side of the mount can do for a command: write back the
/// dirty pages of `data` it holds in the FUSE page cache (they reach the
/// daemon as writes) and drop them, for a byte range of the window.
pub trait KernelCache: Send + Sync {
    fn push_and_drop(&self, data_ino: u64, offset: u64, length: u64) -> Result<()>;
}

/// A bad word, quoted short and escaped for an error line.
pub fn quote(word: &str) -> String {
    let mut shown: String = word.chars().take(QUOTE_MAX).collect();
    if shown.len() < word.len() {
        shown.push('…');
    }
    shown.escape_default().to_string()
}

/// Parse `COMMAND [OFFSET [LENGTH]]` written to control file `file`, for a
/// window of `window` bytes. One line per write (a trailing newline or CRLF
/// is allowed); anything malformed is `EINVAL`.
pub fn parse<'a>(file: &str, bytes: &'a [u8], window: u64, page: u64) -> Result<Command<'a>> {
    if bytes.len() > COMMAND_MAX {
        return Err(fail!(
            EINVAL,
            "{file}: a command is at most {COMMAND_MAX} bytes; got {}",
            bytes.len()
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| fail!(EINVAL, "{file}: command is not UTF-8 text"))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.contains(['\n', '\r', '\0']) {
        return Err(fail!(EINVAL, "{file}: one command per write"));
    }
    let mut words = text.split_ascii_whitespace();
    let word = words.next();
    let number = |w: &str, what: &str| {
        crate::size::parse(w).map_err(|e| fail!(EINVAL, "{file}: {what}: {}", quote(&e)))
    };
    let offset = match words.next() {
        Some(w) => number(w, "OFFSET")?,
        None => 0,
    };
    let length = match words.next() {
        Some(w) => Some(number(w, "LENGTH")?),
        None => None,
    };
    if let Some(extra) = words.next() {
        return Err(fail!(
            EINVAL,
            "{file}: unexpected '{}' after LENGTH",
            quote(extra)
        ));
    }
    if !offset.is_multiple_of(page) {
        return Err(fail!(
            EINVAL,
            "{file}: OFFSET {offset} is not a multiple of the page size ({page})"
        ));
    }
    if offset >= window {
        return Err(fail!(
            EINVAL,
            "{file}: OFFSET {offset} is past the end of the mapping ({window} bytes)"
        ));
    }
    let length = length.unwrap_or(window - offset);
    if length == 0 || offset.checked_add(length).is_none_or(|end| end > window) {
        return Err(fail!(
            EINVAL,
            "{file}: LENGTH {length} from {offset} is empty or past the end of the mapping ({window} bytes)"
        ));
    }
    Ok(Command {
        word,
        range: Range { offset, length },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_input_is_refused_and_never_quoted_whole() {
        let long = vec![b'x'; COMMAND_MAX + 1];
        assert_eq!(
            parse("msync", &long, 4096, 4096).unwrap_err().errno,
            libc::EINVAL
        );
        let err = parse(
            "msync",
            format!("sync {}", "9".repeat(200)).as_bytes(),
            4096,
            4096,
        )
        .unwrap_err();
        assert!(err.message.len() < 200, "{}", err.message);
    }
}
