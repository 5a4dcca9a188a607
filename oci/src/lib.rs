//! OCI images as data: digests, the image model, deterministic layer tars, compression,
//! layer application, OCI layouts and docker-archives. Everything forge writes to or reads from
//! an image goes through this crate; it knows nothing about Dockerfiles or registries.
//!
//! # A tour
//!
//! **Layers** are written from a directory in one streaming pass — tar, hashed for the
//! `diff_id`, compressed, hashed again for the blob digest — and never held in memory.
//! The same tree always gives the same bytes (entries in path order, no host-specific header
//! fields, mtimes clamped to `SOURCE_DATE_EPOCH` when given, reproducible encoders):
//!
//! ```
//! use forge_oci::{apply_layer, write_layer, ApplyOptions, Compression, LayerOptions, SourceKind};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let src = tempfile::tempdir()?;
//! std::fs::create_dir(src.path().join("etc"))?;
//! std::fs::write(src.path().join("etc/motd"), "hello\n")?;
//! std::os::unix::fs::symlink("etc/motd", src.path().join("motd"))?;
//!
//! let opts = LayerOptions {
//!     compression: Compression::Zstd { level: 3 },
//!     source_date_epoch: Some(0),
//!     kind: SourceKind::Tree,
//! };
//! let (info, blob) = write_layer(src.path(), &opts, Vec::new())?;
//! assert_eq!(info.media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
//! assert_eq!(info.size, blob.len() as u64);
//!
//! // Applying it elsewhere recreates the tree and recomputes the same diff_id.
//! let dst = tempfile::tempdir()?;
//! let stats = apply_layer(&blob[..], dst.path(), &ApplyOptions::default())?;
//! assert_eq!(stats.diff_id, info.diff_id);
//! assert_eq!(std::fs::read_to_string(dst.path().join("etc/motd"))?, "hello\n");
//! assert_eq!(std::fs::read_link(dst.path().join("motd"))?, std::path::Path::new("etc/motd"));
//! # Ok(())
//! # }
//! ```
//!
//! [`LayerBuilder`] writes layers entry by entry (COPY results, WORKDIR directories, whiteouts)
//! with explicit metadata. With [`SourceKind::OverlayUpper`], an overlayfs upper directory
//! becomes a layer: its 0:0 character devices turn into `.wh.NAME` whiteouts and its opaque
//! directories get `.wh..wh..opq` markers.
//!
//! **Applying** ([`apply_layer`]) detects gzip, zstd or plain tar by magic bytes. In
//! [`ApplyMode::Merged`] whiteouts delete from the tree below; in
//! [`ApplyMode::OverlaySnapshot`] an empty directory becomes an overlayfs lowerdir, whiteouts
//! becoming overlay whiteouts. Hostile entries (`..`, writes through symlinks already in the
//! target, hard links leaving it) are refused with [`LayerError::Escape`] naming the entry.
//!
//! **Blobs** come from a [`BlobSource`] and go to a [`BlobSink`]; forge-cache's store implements
//! both, [`MemoryBlobs`] and [`DirBlobs`] are small implementations for tests and tools.
//!
//! **Archives** ([`write_archive`], [`write_oci_layout_dir`], [`import`]) are OCI layouts, a
//! directory or a tar; docker-archives (`docker save`'s `manifest.json` format); and the
//! Combined format Docker 25+ writes — an OCI layout whose `manifest.json` points into the same
//! `blobs/sha256/`. `import` detects which one it was given:
//!
//! ```
//! use forge_oci::{import, write_archive, ArchiveFormat, ImageToExport, MemoryBlobs};
//! use forge_oci::image::{media, to_canonical_json, Descriptor, ImageConfig, Manifest, Platform};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let blobs = MemoryBlobs::new();
//! let config = to_canonical_json(&ImageConfig::scratch(&Platform::host()));
//! let config = Descriptor::new(media::OCI_CONFIG, blobs.insert(config.clone()), config.len() as u64);
//! let manifest = to_canonical_json(&Manifest {
//!     schema_version: 2,
//!     media_type: Some(media::OCI_MANIFEST.into()),
//!     artifact_type: None,
//!     config,
//!     layers: vec![],
//!     annotations: None,
//! });
//! let manifest = Descriptor::new(media::OCI_MANIFEST, blobs.insert(manifest.clone()), manifest.len() as u64);
//! let image = ImageToExport { names: vec!["example/empty:1".into()], manifest: manifest.clone() };
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("image.tar");
//! write_archive(&blobs, &[image], ArchiveFormat::Combined, std::fs::File::create(&path)?)?;
//!
//! let store = MemoryBlobs::new();
//! let found = import(&path, &store)?;
//! assert_eq!(found[0].manifest.digest, manifest.digest);
//! assert_eq!(found[0].names, ["docker.io/example/empty:1"]);
//! # Ok(())
//! # }
//! ```

pub mod apply;
pub mod archive;
pub mod blob;
pub mod compression;
pub mod digest;
mod error;
pub mod image;
pub mod layer;
mod pipe;
pub mod reference;
mod sys;
mod tar_read;
mod tar_write;

pub use apply::{apply_layer, decompress, ApplyMode, ApplyOptions, ApplyStats};
pub use archive::{
    import, write_archive, write_oci_layout_dir, ArchiveError, ArchiveFormat, ExportSummary,
    ImageToExport, ImportedImage,
};
pub use blob::{read_blob_bytes, BlobSink, BlobSource, DirBlobs, MemoryBlobs};
pub use compression::{Compression, Encoder};
pub use digest::{Digest, DigestParseError, Hasher, HashingReader, HashingWriter};
pub use error::LayerError;
pub use image::{
    media, ContainerConfig, Descriptor, HealthConfig, History, ImageConfig, Index, Manifest,
    Platform, RootFs,
};
pub use layer::{
    write_layer, DeviceKind, EntryMeta, LayerBuilder, LayerInfo, LayerOptions, SourceKind,
};
pub use reference::Reference;
