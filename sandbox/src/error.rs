//! The crate's error type.
//!
//! Errors split into the user's mistakes (a bad `USER`, a missing executable, an invalid spec),
//! which the CLI reports as build errors, and infrastructure failures (a mount the kernel refused,
//! a helper that died), which point at the host. [`SandboxError::is_user_error`] tells them apart.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything that can go wrong while running a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The [`crate::RunSpec`] cannot be run as given (empty argv, relative mount target, ...).
    #[error("invalid run spec: {0}")]
    InvalidSpec(String),
    /// `USER` names a user or group that the rootfs does not know.
    #[error("user {user:?}: {reason}")]
    User {
        /// The `USER` value.
        user: String,
        /// Why it could not be resolved.
        reason: String,
    },
    /// The command could not be executed (not found in `$PATH`, not executable).
    #[error("cannot execute {program:?}: {reason}")]
    Exec {
        /// `args[0]`.
        program: String,
        /// What went wrong.
        reason: String,
    },
    /// A setup step inside the sandbox failed (a mount, pivot_root, a namespace, ...).
    #[error("sandbox setup: {context}: {source}")]
    Setup {
        /// The step that failed, with its paths.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The helper process could not be started.
    #[error("starting sandbox helper {exe}: {source}")]
    Spawn {
        /// The helper executable.
        exe: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The helper broke the protocol or died without reporting (it was probably killed).
    #[error("sandbox helper: {0}")]
    Helper(String),
    /// Reading output or talking to the helper failed.
    #[error("sandbox I/O: {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The run was cancelled through its [`crate::CancelToken`]; the process tree was killed.
    #[error("run cancelled")]
    Cancelled,
    /// Entering the rootless user namespace failed.
    #[error("rootless namespace: {0}")]
    Rootless(String),
}

impl SandboxError {
    /// True for mistakes in the build definition rather than in the host.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            SandboxError::InvalidSpec(_) | SandboxError::User { .. } | SandboxError::Exec { .. }
        )
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> SandboxError {
        SandboxError::Io {
            context: context.into(),
            source,
        }
    }
}

/// A failure inside the helper, in a form that crosses the process boundary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub(crate) enum HelperError {
    #[error("invalid spec: {0}")]
    Spec(String),
    #[error("user {user:?}: {reason}")]
    User { user: String, reason: String },
    #[error("cannot execute {program:?}: {reason}")]
    Exec { program: String, reason: String },
    #[error("{context}: os error {errno}")]
    Sys { context: String, errno: i32 },
}

impl HelperError {
    /// A failed system call: `context` names the step and its paths, errno comes from the OS.
    pub(crate) fn sys(context: impl Into<String>, err: io::Error) -> HelperError {
        HelperError::Sys {
            context: context.into(),
            errno: err.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    #[cfg(test)]
    pub(crate) fn errno(&self) -> Option<i32> {
        match self {
            HelperError::Sys { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

impl From<HelperError> for SandboxError {
    fn from(e: HelperError) -> SandboxError {
        match e {
            HelperError::Spec(msg) => SandboxError::InvalidSpec(msg),
            HelperError::User { user, reason } => SandboxError::User { user, reason },
            HelperError::Exec { program, reason } => SandboxError::Exec { program, reason },
            HelperError::Sys { context, errno } => SandboxError::Setup {
                context,
                source: io::Error::from_raw_os_error(errno),
            },
        }
    }
}

/// Shorthand inside the helper.
pub(crate) type HResult<T> = Result<T, HelperError>;

/// Adds a context string to an `io::Result`.
pub(crate) trait Context<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> HResult<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> HResult<T> {
        self.map_err(|e| HelperError::sys(context(), e))
    }
}
