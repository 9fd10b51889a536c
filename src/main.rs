//! mmapfs: memory-map files and serve them, with their page-cache and sync
//! state, through a FUSE filesystem.

mod cli;
mod daemon;
mod error;
mod events;
mod fs;
mod fuse;
mod logger;
mod manual;
mod msync;
mod probe;
mod render;
mod source;
mod sys;
mod tree;

use std::process::ExitCode;

fn main() -> ExitCode {
    let opts = match cli::parse() {
        Ok(cli::Invocation::Mount(opts)) => *opts,
        Ok(cli::Invocation::Man) => {
            return match manual::write_man_page(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(1),
            };
        }
        Ok(cli::Invocation::Completions(shell)) => {
            manual::write_completions(shell, &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Err(e) => e.exit(),
    };
    logger::init(opts.verbosity);
    // A panic is a bug. Abort at once, whichever thread it hit: a dead
    // worker would leave requests hanging, while a dead daemon fails loudly
    // (ENOTCONN) and, in shared mode, loses nothing: the bytes live in the
    // source's page cache.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log::error!("bug: {info}");
        default_hook(info);
        std::process::abort();
    }));
    match daemon::run(opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mmapfs: {e}");
            ExitCode::from(1)
        }
    }
}
