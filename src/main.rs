//! mmapfs: memory-map files and serve them, with their page-cache and sync
//! state, through a FUSE filesystem.

mod cli;
mod daemon;
mod error;
mod events;
mod fs;
mod fuse;
mod logger;
mod mapping;
mod msync;
mod probe;
mod render;
mod source;
mod tree;

use std::process::ExitCode;

fn main() -> ExitCode {
    let opts = match cli::parse() {
        Ok(opts) => opts,
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
