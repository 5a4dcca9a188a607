//! The library's error type: what went wrong, kept typed so callers can tell a bad Dockerfile
//! from a broken machine.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The build failed (a Dockerfile problem, a failing RUN, a missing source, …).
    #[error(transparent)]
    Solve(#[from] forge_solver::SolveError),
    #[error("store: {0}")]
    Store(#[from] forge_cache::StoreError),
    #[error("registry: {0}")]
    Registry(#[from] forge_registry::RegistryError),
    /// Invalid options given to the builder (the CLI maps these to exit code 2).
    #[error("{0}")]
    Usage(String),
    #[error("output {dest}: {message}")]
    Output { dest: PathBuf, message: String },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }

    /// True when the error is the user's to fix (bad input or a failing build step).
    pub fn is_user_error(&self) -> bool {
        match self {
            Error::Solve(e) => e.is_user_error(),
            Error::Usage(_) => true,
            _ => false,
        }
    }
}
