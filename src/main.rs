//! mmapfs: memory-map files and serve them, with their page-cache and sync
//! state, through a FUSE filesystem.

mod cli;
mod control;
mod counters;
mod daemon;
mod dir;
mod error;
mod events;
mod fs;
mod fuse;
mod held;
mod io_mode;
mod logger;
mod manual;
mod mappers;
mod mount;
mod mountinfo;
mod open;
mod pages;
mod probe;
mod render;
mod resolve;
mod size;
mod source;
mod stats;
mod sys;
mod tally;
mod trace;
mod tree;

use std::process::ExitCode;

fn main() -> ExitCode {
    let (config, verbosity) = match cli::parse() {
        Ok(cli::Invocation::Mount { config, verbosity }) => (*config, verbosity),
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
    logger::init(verbosity);
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
    daemon::run(config)
}
