//! The `forge` command line: clap types, then settings, then the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // RUN steps execute in a re-executed copy of this binary; that copy never returns here.
    forge::init();
    let args = cli::Cli::parse();
    cli::run(args)
}
