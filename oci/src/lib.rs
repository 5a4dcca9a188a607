//! OCI images as data for forge: digests, the image model, and (as the crate grows) layer tars,
//! compression, OCI layouts and docker-archives.

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
