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
mod mapping;
mod msync;
mod probe;
mod render;
mod source;
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
    match daemon::run(opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mmapfs: {e}");
            ExitCode::from(1)
        }
    }
}
