//! Base images from the local store first, then from registries: the [`ImageSource`] the
//! frontend gives the solver, plus pushing.

use std::sync::OnceLock;

use forge_cache::Store;
use forge_oci::{Platform, Reference};
use forge_registry::{Client, ClientOptions, Progress};
use forge_solver::{Event, EventSink, ImageSource, ResolvedImage, SolveError, StoreImages};

use crate::Error;

/// Resolves images against the store, pulling what is missing (or everything, with `--pull`).
pub struct RegistryImages {
    store: Store,
    opts: ClientOptions,
    client: OnceLock<Result<Client, String>>,
    runtime: OnceLock<Result<tokio::runtime::Runtime, String>>,
    compression: forge_oci::Compression,
}

impl RegistryImages {
    pub fn new(store: Store, insecure: &[String]) -> Result<RegistryImages, Error> {
        let mut opts = ClientOptions::default();
        opts.insecure_registries.extend(insecure.iter().cloned());
        Ok(RegistryImages { store, opts, client: OnceLock::new(), runtime: OnceLock::new(), compression: forge_oci::Compression::default() })
    }

    /// How pushes compress layers the store keeps as plain tars (default: gzip).
    pub fn with_compression(mut self, c: forge_oci::Compression) -> RegistryImages {
        self.compression = c;
        self
    }

    fn client(&self) -> Result<&Client, String> {
        self.client.get_or_init(|| Client::new(self.opts.clone()).map_err(|e| e.to_string())).as_ref().map_err(Clone::clone)
    }

    /// A runtime for the async registry client, made on first use.
    pub fn runtime(&self) -> Result<&tokio::runtime::Runtime, String> {
        self.runtime
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the network runtime: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Pulls `reference` into the store and tags it.
    pub fn pull(&self, reference: &str, platform: &Platform, progress: &(dyn Fn(Progress) + Send + Sync)) -> Result<forge_registry::PulledImage, Error> {
        let r = Reference::parse(reference).map_err(|e| Error::Usage(e.to_string()))?;
        let client = self.client().map_err(Error::Usage)?;
        let rt = self.runtime().map_err(Error::Usage)?;
        let img = rt.block_on(client.pull(&r, platform, &self.store, progress))?;
        if r.digest.is_none() {
            let tag = r.with_default_tag().to_string();
            self.store.set_tag(&tag, img.index_digest.as_ref().unwrap_or(&img.manifest_digest))?;
        }
        Ok(img)
    }

    /// Pushes a stored manifest to `dest` (a tag), compressing its plain-tar layers first;
    /// returns `dest@digest` (the pushed manifest's digest).
    pub fn push(&self, manifest: &forge_oci::Digest, dest: &str) -> Result<String, Error> {
        self.push_with(manifest, dest, &|_| {})
    }

    pub fn push_with(&self, manifest: &forge_oci::Digest, dest: &str, progress: &(dyn Fn(Progress) + Send + Sync)) -> Result<String, Error> {
        let r = Reference::parse(dest).map_err(|e| Error::Usage(e.to_string()))?;
        let client = self.client().map_err(Error::Usage)?;
        let rt = self.runtime().map_err(Error::Usage)?;
        let exported = self.store.export_image(manifest, self.compression)?;
        let d = rt.block_on(client.push(&self.store, &exported.digest, &r, None, progress))?;
        Ok(format!("{}@{d}", r.with_default_tag()))
    }

    pub fn client_for_cli(&self) -> Result<(&Client, &tokio::runtime::Runtime), Error> {
        Ok((self.client().map_err(Error::Usage)?, self.runtime().map_err(Error::Usage)?))
    }
}

impl ImageSource for RegistryImages {
    fn resolve(&self, reference: &str, platform: &Platform, pull: bool, step: usize, events: &EventSink) -> Result<ResolvedImage, SolveError> {
        let image_err = |message: String| SolveError::Image { reference: reference.to_string(), message };
        if !pull {
            if let Ok(d) = self.store.resolve_image(reference) {
                let d = self.store.platform_manifest(&d, platform).map_err(|e| image_err(e.to_string()))?;
                return StoreImages::load(&self.store, reference, &d);
            }
        }
        let progress = |p: Progress| {
            if let Progress::BlobProgress { done, size, .. } = p {
                events(Event::Progress { id: step, current: done, total: size });
            }
        };
        let img = self.pull(reference, platform, &progress).map_err(|e| match e {
            Error::Registry(r) => image_err(r.to_string()),
            other => image_err(other.to_string()),
        })?;
        Ok(ResolvedImage {
            reference: img.reference.to_string(),
            manifest_digest: img.manifest_digest,
            manifest: img.manifest,
            config: img.config,
            config_digest: img.config_digest,
        })
    }
}
