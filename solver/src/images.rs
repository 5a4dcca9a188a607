//! Base images: how a `FROM` or `COPY --from=<image>` name becomes layers in the store.
//!
//! The solver only knows the [`ImageSource`] trait. [`StoreImages`] answers from the local
//! store; the frontend stacks a registry-backed source on top of it.

use forge_cache::Store;
use forge_oci::{Digest, ImageConfig, Manifest, Platform};

use crate::error::SolveError;
use crate::event::EventSink;

/// An image whose manifest, config and layer blobs are all in the local store.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// The name as resolved (normalized reference, or a digest).
    pub reference: String,
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config: ImageConfig,
    pub config_digest: Digest,
}

/// Turns image names into images in the store.
pub trait ImageSource: Send + Sync {
    /// Resolves `reference` for `platform`. With `pull`, a remote copy is checked even when a
    /// local one exists. `step` is the progress id to report transfer progress against.
    fn resolve(
        &self,
        reference: &str,
        platform: &Platform,
        pull: bool,
        step: usize,
        events: &EventSink,
    ) -> Result<ResolvedImage, SolveError>;
}

/// Resolves names against the local store's tags only.
pub struct StoreImages {
    store: Store,
}

impl StoreImages {
    pub fn new(store: Store) -> StoreImages {
        StoreImages { store }
    }

    /// Loads a stored image by manifest digest.
    pub fn load(store: &Store, reference: &str, manifest_digest: &Digest) -> Result<ResolvedImage, SolveError> {
        let (manifest, config, config_digest) = store.image(manifest_digest).map_err(|e| SolveError::Image {
            reference: reference.to_string(),
            message: e.to_string(),
        })?;
        Ok(ResolvedImage {
            reference: reference.to_string(),
            manifest_digest: manifest_digest.clone(),
            manifest,
            config,
            config_digest,
        })
    }
}

impl ImageSource for StoreImages {
    fn resolve(
        &self,
        reference: &str,
        _platform: &Platform,
        pull: bool,
        _step: usize,
        _events: &EventSink,
    ) -> Result<ResolvedImage, SolveError> {
        let not_found = || SolveError::Image {
            reference: reference.to_string(),
            message: if pull {
                "not in the local store, and no registry is configured to pull it from".to_string()
            } else {
                "not found in the local store (pull it, load it with `forge load`, or pass --build-context)".to_string()
            },
        };
        let digest = self.store.resolve_image(reference).map_err(|_| not_found())?;
        StoreImages::load(&self.store, reference, &digest)
    }
}
