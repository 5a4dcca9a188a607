//! Hooks for imported build caches (`--cache-from`).
//!
//! The solver asks a [`RemoteCache`] for a step's key only after the local store missed. A hit
//! costs nothing up front: the layer's blob is fetched only when something needs it: a later
//! RUN or COPY that must see the files, or the export of the final image. Steps whose results
//! are never needed are never downloaded.

use std::sync::Arc;

use forge_oci::{Descriptor, Digest};
use serde::{Deserialize, Serialize};

use crate::build::Layer;

/// What an imported cache knows about a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRecord {
    /// The layer the step produced (`None`: the step changed no files).
    pub layer: Option<Layer>,
    /// When the step first ran (RFC 3339), for reproducible history.
    pub created: Option<String>,
}

/// An imported build cache.
pub trait RemoteCache: Send + Sync {
    /// The record for a step key (lower-case hex), if the cache has one.
    fn lookup(&self, key: &str) -> Option<RemoteRecord>;
    /// Brings a blob the cache refers to into the local store.
    fn fetch(&self, blob: &Descriptor) -> Result<(), String>;
}

/// The imported caches of a build, asked in order.
#[derive(Clone, Default)]
pub struct RemoteCaches(pub Vec<Arc<dyn RemoteCache>>);

impl std::fmt::Debug for RemoteCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteCaches({} imported)", self.0.len())
    }
}

/// One step of a finished build, for exporting the cache (`--cache-to`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's key (hex).
    pub key: String,
    /// The key of the filesystem state the step ran on (hex).
    pub parent: String,
    pub layer: Option<Layer>,
    pub created: Option<String>,
    /// The stage it belongs to.
    pub stage: usize,
    /// True when the final image contains the step's layer (`mode=min` exports only these).
    pub in_final_image: bool,
}

/// The blobs a set of records needs.
pub fn blobs_of(records: &[StepRecord]) -> Vec<Digest> {
    let mut v: Vec<Digest> = records.iter().filter_map(|r| r.layer.as_ref().map(|l| l.blob.digest.clone())).collect();
    v.sort();
    v.dedup();
    v
}
