//! The `forge` command line: clap types, then settings, then the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // RUN steps execute in a re-executed copy of this binary; that copy never returns here.
    forge::init();
    let args = cli::Cli::parse();
    // Without root, the rest runs as mapped root inside a user + mount namespace (re-executing
    // this binary there), so store writes, layer unpacking and overlay mounts all work.
    if let Err(e) = forge_sandbox::enter_rootless_namespace_if_needed() {
        eprintln!("error: cannot set up rootless mode: {e}");
        return ExitCode::from(1);
    }
    cli::run(args)
}
