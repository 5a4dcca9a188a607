//! The store's error types.

use std::io;
use std::path::PathBuf;

use forge_oci::Digest;

/// Everything a [`Store`](crate::Store) operation can fail with.
///
/// Infrastructure failures carry the path they happened on; the user's mistakes (a bad image
/// name, an unknown image, an ambiguous short digest) have their own variants so a CLI can map
/// them to a different exit code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Streamed content did not hash to the digest the caller expected; nothing was stored.
    #[error("content mismatch: expected {expected}, got {actual} ({size} bytes)")]
    DigestMismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
    },

    /// A stored blob's bytes no longer hash to its name (disk corruption or tampering).
    #[error("blob {digest} is corrupt: its content hashes to {actual}")]
    CorruptBlob { digest: Digest, actual: Digest },

    /// The blob is not in the store.
    #[error("blob {0} not found in the store")]
    BlobNotFound(Digest),

    /// A blob that should be JSON (manifest, index, config) did not parse.
    #[error("blob {digest} is not a valid {what}: {source}")]
    BadJson {
        digest: Digest,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// The manifest digest points at something that is not an image manifest.
    #[error("{digest} is not an image manifest (media type {media_type:?})")]
    NotAManifest { digest: Digest, media_type: String },

    /// An index has no manifest for any platform forge can use.
    #[error("index {digest} has no manifest for platform {platform}")]
    NoMatchingPlatform { digest: Digest, platform: String },

    /// An image name (tag) could not be parsed.
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },

    /// A cache key or state name is not acceptable.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidKey {
        what: &'static str,
        value: String,
        reason: &'static str,
    },

    /// No image matches the name or digest.
    #[error("no such image: {0}")]
    ImageNotFound(String),

    /// A short digest matches more than one image.
    #[error("short digest {prefix:?} is ambiguous: matches {}", candidates.iter().map(|d| d.short()).collect::<Vec<_>>().join(", "))]
    Ambiguous {
        prefix: String,
        candidates: Vec<Digest>,
    },

    /// The tags file exists but cannot be read as tags; `check(true)` sets it aside.
    #[error("tags file {path} is corrupt: {reason}")]
    CorruptTags { path: PathBuf, reason: String },

    /// The store on disk was written by an incompatible forge version.
    #[error("store at {path} has layout {found:?}, this forge understands {expected:?}")]
    UnsupportedLayout {
        path: PathBuf,
        found: String,
        expected: &'static str,
    },

    /// `prune`/`check(true)` cannot run now: builds hold leases (or this very process holds one,
    /// which would deadlock).
    #[error(
        "the store is in use by a running build (a lease is held); try again when it finishes"
    )]
    Busy,

    /// `commit_snapshot_dir` was given a directory on another filesystem than the store.
    #[error("cannot move {path} into the store: it is on another filesystem")]
    CrossDevice { path: PathBuf },
}

impl StoreError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }

    /// True when the error is the user's: a bad name, an image that does not exist, an ambiguous
    /// short digest. False for storage and infrastructure failures.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            StoreError::InvalidName { .. }
                | StoreError::InvalidKey { .. }
                | StoreError::ImageNotFound(_)
                | StoreError::Ambiguous { .. }
                | StoreError::NotAManifest { .. }
        )
    }
}

impl From<StoreError> for io::Error {
    fn from(e: StoreError) -> io::Error {
        let kind = match &e {
            StoreError::Io { source, .. } => source.kind(),
            StoreError::BlobNotFound(_) | StoreError::ImageNotFound(_) => io::ErrorKind::NotFound,
            StoreError::DigestMismatch { .. }
            | StoreError::CorruptBlob { .. }
            | StoreError::BadJson { .. } => io::ErrorKind::InvalidData,
            StoreError::InvalidName { .. } | StoreError::InvalidKey { .. } => {
                io::ErrorKind::InvalidInput
            }
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// The error of [`Store::create_snapshot`](crate::Store::create_snapshot): either the caller's
/// fill function failed (the half-filled staging directory is discarded) or the store did.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError<E> {
    #[error("filling the snapshot failed: {0}")]
    Fill(E),
    #[error(transparent)]
    Store(#[from] StoreError),
}
