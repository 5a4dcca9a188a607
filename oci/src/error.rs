//! The error type shared by layer writing and applying.

use std::io;
use std::path::PathBuf;

/// Why a layer could not be written or applied.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// An I/O error on a file of the host tree (reading a source, or creating an entry).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An I/O error on the layer stream itself (the output writer or the input reader).
    #[error("layer stream: {0}")]
    Stream(#[source] io::Error),
    /// A source file changed size or identity while it was being archived.
    #[error("{path}: file changed while it was being archived")]
    Changed { path: PathBuf },
    /// A path given to the layer builder is not a clean relative path.
    #[error("invalid layer path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// A compression level out of range.
    #[error("invalid compression settings: {0}")]
    Compression(String),
    /// A tar entry would write outside the target directory.
    #[error("refusing layer entry {entry:?}: {reason}")]
    Escape { entry: String, reason: String },
    /// The layer stream is not a readable tar (after decompression).
    #[error("malformed layer tar: {0}")]
    Malformed(String),
    /// A tar entry of a kind forge cannot apply.
    #[error("unsupported layer entry {entry:?}: {what}")]
    Unsupported { entry: String, what: String },
}

impl LayerError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> LayerError {
        LayerError::Io {
            path: path.into(),
            source,
        }
    }
}
