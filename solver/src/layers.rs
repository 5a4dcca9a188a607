//! Layers in the store: unpacking blobs into snapshots, committing new trees as layers, and
//! writing the final config and manifest.

use std::path::{Path, PathBuf};

use forge_cache::{SnapshotError, Store};
use forge_oci::apply::{apply_layer, ApplyMode, ApplyOptions};
use forge_oci::image::{media, to_canonical_json};
use forge_oci::layer::{write_layer, LayerOptions, SourceKind};
use forge_oci::{Compression, Descriptor, Digest, ImageConfig, Manifest};

use crate::build::Layer;
use crate::error::SolveError;

/// The snapshot (overlay lowerdir) of a layer, unpacking its blob on first use.
pub fn ensure_snapshot(store: &Store, layer: &Layer) -> Result<PathBuf, SolveError> {
    if let Some(p) = store.snapshot_path(&layer.diff_id) {
        return Ok(p);
    }
    let r = store.create_snapshot(&layer.diff_id, |dir: &Path| -> Result<(), SolveError> {
        let blob = store.open_blob(&layer.blob.digest)?;
        let stats = apply_layer(std::io::BufReader::new(blob), dir, &ApplyOptions::new(ApplyMode::OverlaySnapshot))
            .map_err(|e| SolveError::Layer(format!("unpacking layer {}: {e}", layer.blob.digest)))?;
        if stats.diff_id != layer.diff_id {
            return Err(SolveError::Layer(format!(
                "layer {} unpacks to {} but the image config says {}",
                layer.blob.digest, stats.diff_id, layer.diff_id
            )));
        }
        Ok(())
    });
    match r {
        Ok(p) => Ok(p),
        Err(SnapshotError::Fill(e)) => Err(e),
        Err(SnapshotError::Store(e)) => Err(e.into()),
    }
}

/// Writes `dir` as a layer blob into the store and moves `dir` into place as its snapshot.
/// `dir` must live in a store temp dir (same filesystem).
pub fn commit_tree(store: &Store, dir: &Path, _kind: SourceKind, opts: &LayerOptions) -> Result<Layer, SolveError> {
    // The layer writer hashes exactly the bytes it writes (the tar itself when uncompressed,
    // the compressor's output otherwise): the blob writer need not hash them again.
    let w = store.blob_writer_prehashed()?;
    let (info, w) = write_layer(dir, opts, w).map_err(|e| SolveError::Layer(format!("writing layer from {}: {e}", dir.display())))?;
    let (digest, size) = w.commit(Some(&info.digest))?;
    store.commit_snapshot_dir(&info.diff_id, dir)?;
    Ok(Layer { diff_id: info.diff_id, blob: Descriptor::new(info.media_type, digest, size) })
}

/// The layer as a blob compressed with `want`: itself when it already is, else a recompressed
/// copy (same diff_id, new blob). Cached layers made under another setting go through here.
pub fn with_compression(store: &Store, layer: &Layer, want: Compression) -> Result<Layer, SolveError> {
    let blob = store.compressed_layer(&layer.blob, want, false)?;
    Ok(Layer { diff_id: layer.diff_id.clone(), blob })
}

/// Stores the config and an OCI manifest for an image; returns the manifest's digest and size,
/// the manifest and the config digest.
pub fn write_image(store: &Store, config: &ImageConfig, layers: &[Layer]) -> Result<(Digest, u64, Manifest, Digest), SolveError> {
    let config_bytes = to_canonical_json(config);
    let config_digest = store.put_blob_bytes(&config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.to_string()),
        artifact_type: None,
        config: Descriptor::new(media::OCI_CONFIG, config_digest.clone(), config_bytes.len() as u64),
        layers: layers.iter().map(|l| l.blob.clone()).collect(),
        annotations: None,
    };
    let manifest_bytes = to_canonical_json(&manifest);
    let manifest_digest = store.put_blob_bytes(&manifest_bytes)?;
    Ok((manifest_digest, manifest_bytes.len() as u64, manifest, config_digest))
}
