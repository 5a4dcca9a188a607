//! Argument types and command dispatch.

mod build;
mod commands;
mod errors;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use errors::Failure;

/// forge: build OCI images from Dockerfiles, without a daemon.
#[derive(Parser, Debug)]
#[command(name = "forge", version, about, long_about = None, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Store directory [default: $FORGE_ROOT, else /var/lib/forge as root, else ~/.local/share/forge]
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// How much to log: error, warn, info, debug (debug also prints the store path and why steps missed the cache)
    #[arg(long, global = true, value_enum, default_value = "warn", value_name = "L")]
    pub log_level: LogLevel,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build an image from a Dockerfile
    #[command(after_help = "Examples:\n  forge build -t my-app .\n  forge build -f docker/Dockerfile --target test --build-arg VERSION=1.2 .\n  forge build -o type=oci,dest=app.tar -t app:1 .\n  forge build --explain .   # say why each step missed the cache")]
    Build(build::BuildArgs),
    /// List images in the store
    #[command(after_help = "Examples:\n  forge images\n  forge images --format json")]
    Images(commands::ImagesArgs),
    /// Show an image's manifest and config as JSON
    #[command(after_help = "Examples:\n  forge inspect my-app:latest")]
    Inspect(commands::InspectArgs),
    /// Give an image another name
    #[command(after_help = "Examples:\n  forge tag my-app:latest registry.example.com/team/my-app:1.0")]
    Tag(commands::TagArgs),
    /// Remove image names from the store (content goes with `forge prune`)
    #[command(after_help = "Examples:\n  forge rmi my-app:latest")]
    Rmi(commands::RmiArgs),
    /// Pull an image from a registry into the store
    #[command(after_help = "Examples:\n  forge pull busybox:1.36\n  forge pull --platform linux/arm64 localhost:5000/base:1")]
    Pull(commands::PullArgs),
    /// Push an image from the store to a registry
    #[command(after_help = "Examples:\n  forge push localhost:5000/my-app:1\n  forge push my-app:latest localhost:5000/team/my-app:1")]
    Push(commands::PushArgs),
    /// Save images to a tar archive (OCI layout + docker-archive by default)
    #[command(after_help = "Examples:\n  forge save -o app.tar my-app:latest\n  forge save --format oci -o app-oci.tar my-app:latest")]
    Save(commands::SaveArgs),
    /// Load images from a tar archive or OCI layout directory
    #[command(after_help = "Examples:\n  forge load -i app.tar")]
    Load(commands::LoadArgs),
    /// Create an image from a root filesystem directory or tar
    #[command(after_help = "Examples:\n  forge import rootfs/ busybox:local")]
    Import(commands::ImportArgs),
    /// Run a command in an image, with the host network
    #[command(after_help = "Examples:\n  forge run --rm my-app:latest\n  forge run -e DEBUG=1 -v $PWD/data:/data my-app sh -c 'ls /data'")]
    Run(commands::RunArgs),
    /// Remove content no image name and no cache record needs
    #[command(after_help = "Examples:\n  forge prune\n  forge prune --all   # drop the build cache too")]
    Prune(commands::PruneArgs),
    /// Verify the store: every blob's digest and every snapshot
    #[command(after_help = "Examples:\n  forge check\n  forge check --repair")]
    Check(commands::CheckArgs),
    /// Log in to a registry (writes ~/.docker/config.json)
    #[command(after_help = "Examples:\n  echo \"$TOKEN\" | forge login -u me --password-stdin registry.example.com")]
    Login(commands::LoginArgs),
    /// Log out of a registry
    Logout(commands::LogoutArgs),
    /// Check a Dockerfile for errors and warnings
    #[command(after_help = "Examples:\n  forge lint\n  forge lint -f docker/Dockerfile")]
    Lint(commands::LintArgs),
    /// Show version information
    Version(commands::VersionArgs),
}

pub fn run(cli: Cli) -> ExitCode {
    let root = cli.root.clone();
    let result = match cli.command {
        Command::Build(a) => build::run(root, a, cli.log_level),
        Command::Images(a) => commands::images(root, a),
        Command::Inspect(a) => commands::inspect(root, a),
        Command::Tag(a) => commands::tag(root, a),
        Command::Rmi(a) => commands::rmi(root, a),
        Command::Pull(a) => commands::pull(root, a),
        Command::Push(a) => commands::push(root, a),
        Command::Save(a) => commands::save(root, a),
        Command::Load(a) => commands::load(root, a),
        Command::Import(a) => commands::import(root, a),
        Command::Run(a) => commands::run_image(root, a),
        Command::Prune(a) => commands::prune(root, a),
        Command::Check(a) => commands::check(root, a),
        Command::Login(a) => commands::login(a),
        Command::Logout(a) => commands::logout(a),
        Command::Lint(a) => commands::lint(a),
        Command::Version(a) => commands::version(a),
    };
    match result {
        Ok(code) => code,
        Err(f) => f.report(),
    }
}
