//! Messages between the three processes of a run:
//!
//! ```text
//! caller (Sandbox::run) --Request, then "cancel"--> helper --fork--> init (pid 1)
//!        <--------------- Reply -----------------         <--ChildReport--
//! ```
//!
//! All messages are JSON, one per line. The caller talks to the helper over a unix socket that
//! is the helper's fd 0; the init process (and the command's process until its `execve`) report to the
//! helper over a close-on-exec pipe.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::HelperError;
use crate::spec::{ExitStatus, RunSpec};
use crate::stubs::Stub;

/// Caller → helper: what to run.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub spec: RunSpec,
    /// An empty directory the caller created (and removes afterwards).
    pub staging: PathBuf,
}

/// Caller → helper, after the request: kill the process tree.
pub(crate) const CANCEL: &[u8] = b"cancel\n";

/// Helper → caller: how it ended.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Exited(ExitStatus),
    Failed(HelperError),
}

/// Init → helper.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ChildReport {
    /// Mount points created in the rootfs (sent before `execve`, also after a failed setup).
    Stubs(Vec<Stub>),
    /// Setup or `execve` failed.
    Failed(HelperError),
    /// The command ended.
    Exited(ExitStatus),
}
