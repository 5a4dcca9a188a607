//! forge-registry: pull and push images over the OCI distribution API.
//!
//! A [`Client`] talks to any registry that speaks the distribution protocol (Docker Hub, GHCR,
//! `docker-registry`, …). It handles what a command line needs without ceremony:
//!
//! - **References** are [`forge_oci::Reference`]s, normalized like Docker (`busybox` is
//!   `docker.io/library/busybox`, reached at `registry-1.docker.io`).
//! - **Authentication**: anonymous, Basic, or bearer tokens from the registry's token service,
//!   with credentials read from the docker `config.json` (inline `auths`, `credsStore`,
//!   `credHelpers`). [`Client::login`] verifies and stores credentials in the same file.
//!   Secrets never appear in `Debug` output or error messages.
//! - **Transport**: HTTPS with the system's trust store (rustls); plain HTTP for loopback
//!   registries and those listed as insecure ([`ClientOptions::insecure_registries`] or
//!   `FORGE_INSECURE_REGISTRIES`). Connection failures, resets, 5xx and 429 are retried with
//!   exponential backoff, a bounded number of times; interrupted blob downloads resume with
//!   `Range`; bodies longer than announced are cut off.
//! - **Integrity**: every blob streams into a temp file of the [`forge_cache::Store`] while it
//!   is hashed, and becomes visible only when its digest and size match the descriptor.
//!
//! # Example
//!
//! ```no_run
//! use forge_oci::{Platform, Reference};
//! use forge_registry::{Client, ClientOptions, Progress};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = forge_cache::Store::open(&forge_cache::Store::default_root())?;
//! let client = Client::new(ClientOptions::default())?;
//! let busybox = Reference::parse("busybox:1.36")?;
//! let report = |p: Progress| {
//!     if let Progress::BlobDone { digest, outcome, .. } = p {
//!         eprintln!("{}: {outcome:?}", digest.short());
//!     }
//! };
//! let image = client.pull(&busybox, &Platform::host(), &store, &report).await?;
//! store.set_tag(&busybox.with_default_tag().to_string(), &image.manifest_digest)?;
//!
//! // Push it elsewhere: blobs first, then the manifest under the tag.
//! let dest = Reference::parse("localhost:5000/tools/busybox:1.36")?;
//! client.push(&store, &image.manifest_digest, &dest, None, &report).await?;
//! # Ok(()) }
//! ```
//!
//! The lower-level methods ([`Client::get_manifest`], [`Client::head_blob`],
//! [`Client::fetch_blob_into_store`], [`Client::push_blob_from_store`],
//! [`Client::put_manifest`]) are what the remote build cache uses.

mod auth;
mod client;
mod credentials;
mod error;
mod transport;

pub use auth::{parse_challenges, Challenge, Credentials, Scopes};
pub use client::{
    detect_media_type, select_platform, BlobOutcome, Client, FetchedManifest, Progress, PulledImage,
};
pub use credentials::{config_key, registry_host, DockerConfig, DOCKER_HUB_KEY};
pub use error::{CredentialsError, RegistryError};
pub use transport::{is_loopback, ClientOptions, CredentialSource};
