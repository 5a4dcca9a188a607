//! OCI images as data for forge: digests, the image model, and (as the crate grows) layer tars,
//! compression, OCI layouts and docker-archives.

pub mod digest;
pub mod image;
pub mod reference;

pub use digest::{Digest, DigestParseError, Hasher, HashingReader, HashingWriter};
pub use image::{
    media, ContainerConfig, Descriptor, HealthConfig, History, ImageConfig, Index, Manifest, Platform,
    RootFs,
};
