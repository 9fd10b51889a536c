//! The `crash` control file (`--crash-test`): lose the unsynced pages now,
//! keep some of them (a torn crash), or arm a crash at a later sync. The
//! crash itself is the filesystem's (`MmapFs::crash`): it must also drop
//! what the kernel caches of `data`.

use crate::control;
use crate::error::{fail, Result};
use crate::held::{Keep, When};

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Crash now, persisting only what `Keep` names.
    Now(Keep),
    /// Crash at the `n`-th sync from now.
    At { n: u64, when: When },
}

impl Request {
    /// How events and the report name what caused a crash.
    pub fn cause(&self) -> String {
        match self {
            Request::Now(Keep::Nothing) => "now".into(),
            Request::Now(Keep::Pages(r)) => format!("keep pages ({} ranges)", r.len()),
            Request::Now(Keep::Random { probability, seed }) => {
                format!("keep random:{probability} seed={seed}")
            }
            Request::At { n, when } => format!("at sync {n} {}", when.name()),
        }
    }
}

const USAGE: &str =
    "use now, keep pages CPULIST, keep random:P [seed=N] (P from 0 to 1) or at sync N before|after";

/// Parse one write to `crash`. Anything malformed is `EINVAL`.
pub fn parse(bytes: &[u8], window: u64, page: u64) -> Result<Request> {
    if bytes.len() > control::COMMAND_MAX {
        return Err(fail!(EINVAL, "crash: {USAGE}"));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| fail!(EINVAL, "crash: command is not UTF-8 text"))?;
    let words: Vec<&str> = text
        .trim_end_matches(['\n', '\r'])
        .split_ascii_whitespace()
        .collect();
    if words.iter().any(|w| w.contains('\0')) {
        return Err(fail!(EINVAL, "crash: {USAGE}"));
    }
    if words.starts_with(&["keep", "pages"]) {
        // The shared parser reads a page list as every control file does.
        let parsed = control::parse("crash", bytes, window, page, &[])?;
        return Ok(Request::Now(Keep::Pages(parsed.target.pages)));
    }
    match words.as_slice() {
        ["now"] => Ok(Request::Now(Keep::Nothing)),
        ["keep", random, rest @ ..] if random.starts_with("random:") && rest.len() <= 1 => {
            let p = &random["random:".len()..];
            let probability: f64 = p
                .parse()
                .ok()
                .filter(|p: &f64| (0.0..=1.0).contains(p))
                .ok_or_else(|| {
                    fail!(
                        EINVAL,
                        "crash: random:{}: P is a probability from 0 to 1",
                        control::quote(p)
                    )
                })?;
            let seed = match rest {
                [] => fresh_seed(),
                [s] => s
                    .strip_prefix("seed=")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| {
                        fail!(EINVAL, "crash: '{}': expected seed=N", control::quote(s))
                    })?,
                _ => unreachable!("at most one word follows random:P"),
            };
            Ok(Request::Now(Keep::Random { probability, seed }))
        }
        ["at", "sync", n, when] => {
            let n: u64 = n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                fail!(
                    EINVAL,
                    "crash: at sync {}: N counts syncs from now, from 1",
                    control::quote(n)
                )
            })?;
            let when = match *when {
                "before" => When::Before,
                "after" => When::After,
                other => {
                    return Err(fail!(
                        EINVAL,
                        "crash: '{}': before or after",
                        control::quote(other)
                    ))
                }
            };
            Ok(Request::At { n, when })
        }
        _ => Err(fail!(EINVAL, "crash: {USAGE}")),
    }
}

/// A seed for `keep random:P` without one; the report shows it, so the
/// same crash can be asked for again.
fn fresh_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Request {
        parse(text.as_bytes(), 16 * 4096, 4096).unwrap()
    }

    #[test]
    fn commands() {
        assert_eq!(ok("now\n"), Request::Now(Keep::Nothing));
        assert_eq!(
            ok("keep pages 1,3-4"),
            Request::Now(Keep::Pages(vec![(1, 1), (3, 4)]))
        );
        assert_eq!(
            ok("keep random:0.25 seed=9"),
            Request::Now(Keep::Random {
                probability: 0.25,
                seed: 9
            })
        );
        assert!(matches!(
            ok("keep random:1"),
            Request::Now(Keep::Random { .. })
        ));
        assert_eq!(
            ok("at sync 3 before"),
            Request::At {
                n: 3,
                when: When::Before
            }
        );
        assert_eq!(ok("at sync 1 after").cause(), "at sync 1 after");
    }

    #[test]
    fn malformed_commands_are_einval() {
        for text in [
            "",
            "later",
            "now please",
            "keep",
            "keep pages 99",
            "keep random:2",
            "keep random:x",
            "keep random:0.5 seed=x",
            "keep random:0.5 seed=1 more",
            "at sync 0 before",
            "at sync 2 during",
            "at sync 2",
            "now\nnow",
        ] {
            let err = parse(text.as_bytes(), 16 * 4096, 4096).unwrap_err();
            assert_eq!(err.errno, libc::EINVAL, "{text:?}");
        }
    }
}
