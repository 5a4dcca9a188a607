//! Progress events. The solver reports through a sink; the library turns them into a stream
//! and the CLI renders them.

use std::time::Duration;

/// Which output stream a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One progress event. Step ids are unique within a build and numbered from 1 in the order the
/// steps are announced.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A step began: `name` reads like `[builder 2/5] RUN make`.
    StepStarted { id: usize, name: String },
    /// The step's result came from the cache; nothing ran.
    StepCached { id: usize },
    /// Why the step missed the cache (`--explain`).
    Explain { id: usize, reason: String },
    /// A line of output from a RUN (without its newline).
    Log { id: usize, stream: LogStream, line: String },
    /// Bytes transferred for a pull.
    Progress { id: usize, current: u64, total: u64 },
    /// The step finished.
    StepDone { id: usize, duration: Duration, cached: bool },
    /// The step failed; the build's error follows.
    StepFailed { id: usize, message: String },
    /// Something the user should know that does not stop the build.
    Warning { message: String },
}

/// Where events go. Must be cheap: it is called from every worker.
pub type EventSink = dyn Fn(Event) + Send + Sync;
