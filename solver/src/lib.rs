//! forge's solver: Dockerfile stages become a graph of steps that run in parallel, each behind a
//! content-hash cache key.
//!
//! ```text
//! Dockerfile ──parse──▶ stages ──plan──▶ stage DAG (petgraph)
//!                                            │ independent stages run on their own threads
//!                                            ▼
//!                   step: expand → key (blake3) → store hit? ──yes──▶ reuse the layer
//!                                                   │no
//!                                                   ▼
//!                         RUN: sandbox on an overlay of the snapshots → upperdir → layer
//!                         COPY/ADD/WORKDIR: staging tree → layer
//! ```
//!
//! The solver knows images only through [`ImageSource`] and runs commands only through
//! [`forge_sandbox::Sandbox`]; the frontend wires both. Cache keys are described in
//! [`key`]; why a step missed is told by [`explain`].

pub mod add;
pub mod build;
pub mod config;
pub mod context;
pub mod copy;
pub mod error;
pub mod event;
pub mod explain;
pub mod fetch;
pub mod git;
pub mod glob;
pub mod images;
pub mod key;
pub mod layered;
pub mod layers;
pub mod remote;
pub mod run;
pub mod users;

pub use build::{build, BuildOptions, BuildOutput, Layer, NamedContext, Secret};
pub use error::{Location, SolveError};
pub use event::{Event, EventSink, LogStream};
pub use images::{ImageSource, ResolvedImage, StoreImages};
pub use fetch::{Fetched, Fetcher, UrlFetcher};
pub use remote::{RemoteCache, RemoteCaches, RemoteRecord, StepRecord};
