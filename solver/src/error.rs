//! Solver errors. User mistakes (a bad Dockerfile, a missing COPY source, a failing RUN) are
//! kept apart from infrastructure failures (I/O, the store, the registry) so the CLI can map
//! them to exit codes and render source snippets for the former.

use std::path::{Path, PathBuf};

use forge_parser::Span;

/// Where in the Dockerfile an error belongs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The instruction text (e.g. `RUN make`).
    pub instruction: String,
    pub span: Span,
}

#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    #[error("{0}")]
    Parse(#[from] forge_parser::ParseError),

    /// A problem with a specific instruction, found while planning or running it.
    #[error("line {}: {}: {message}", .location.span.line, .location.instruction)]
    Step { location: Location, message: String, help: Option<String> },

    /// A RUN step exited non-zero or was killed.
    #[error("line {}: {} {status}", .location.span.line, .location.instruction)]
    RunFailed { location: Location, status: String, last_output: Vec<String> },

    #[error("build context {}: {message}", .path.display())]
    Context { path: PathBuf, message: String },

    #[error("target stage {target:?} not found{}", .help.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    UnknownTarget { target: String, help: Option<String> },

    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("store: {0}")]
    Store(#[from] forge_cache::StoreError),

    #[error("image {reference}: {message}")]
    Image { reference: String, message: String },

    #[error("sandbox: {0}")]
    Sandbox(#[from] forge_sandbox::SandboxError),

    #[error("layer: {0}")]
    Layer(String),

    #[error("the build was cancelled")]
    Cancelled,

    #[error("{0}")]
    Other(String),
}

impl SolveError {
    pub fn io(path: &Path, source: std::io::Error) -> SolveError {
        SolveError::Io { path: path.to_path_buf(), source }
    }

    pub fn step(location: &Location, message: impl Into<String>) -> SolveError {
        SolveError::Step { location: location.clone(), message: message.into(), help: None }
    }

    /// The Dockerfile location of the error, when it has one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            SolveError::Step { location, .. } | SolveError::RunFailed { location, .. } => Some(location),
            _ => None,
        }
    }

    /// True for errors caused by the build's inputs rather than by forge or the machine.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            SolveError::Parse(_)
                | SolveError::Step { .. }
                | SolveError::RunFailed { .. }
                | SolveError::Context { .. }
                | SolveError::UnknownTarget { .. }
                | SolveError::Image { .. }
        )
    }
}
