//! Compression on the way out: plain-tar layers become compressed blobs when an image leaves
//! the store, once per layer and codec.

mod common;

use common::*;
use forge_oci::image::{media, to_canonical_json};
use forge_oci::{Compression, Descriptor, Digest, Manifest};

/// A stored image whose layers are the given (media type, bytes) blobs; returns its manifest.
fn image(store: &forge_cache::Store, layers: &[(&str, Vec<u8>)], manifest_type: &str) -> Digest {
    let config = store.put_blob_bytes(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#).unwrap();
    let layers = layers
        .iter()
        .map(|(mt, bytes)| Descriptor::new(*mt, store.put_blob_bytes(bytes).unwrap(), bytes.len() as u64))
        .collect();
    let m = Manifest {
        schema_version: 2,
        media_type: Some(manifest_type.to_string()),
        artifact_type: None,
        config: Descriptor::new(media::OCI_CONFIG, config, 82),
        layers,
        annotations: None,
    };
    store.put_blob_bytes(&to_canonical_json(&m)).unwrap()
}

fn tar_of(name: &str, content: &[u8]) -> Vec<u8> {
    let mut b = forge_oci::layer::LayerBuilder::new(Vec::new(), &forge_oci::layer::LayerOptions {
        compression: Compression::None,
        source_date_epoch: None,
        kind: forge_oci::layer::SourceKind::Tree,
    })
    .unwrap();
    let meta = forge_oci::layer::EntryMeta { mode: 0o644, uid: 0, gid: 0, mtime: 0, xattrs: Default::default() };
    b.append_file(std::path::Path::new(name), &meta, content.len() as u64, &mut &content[..]).unwrap();
    b.finish().unwrap().1
}

#[test]
fn plain_layers_are_compressed_once_and_compressed_ones_kept() {
    let (_t, store) = store();
    let plain = tar_of("a.txt", &b"hello ".repeat(1000));
    let already = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let m = image(&store, &[(media::OCI_LAYER_TAR, plain.clone()), (media::OCI_LAYER_GZIP, already.clone())], media::OCI_MANIFEST);

    let out = store.export_image(&m, Compression::default()).unwrap();
    assert_ne!(out.digest, m, "a new manifest names the compressed layer");
    let exported: Manifest = serde_json::from_slice(&store.read_blob(&out.digest).unwrap()).unwrap();
    assert_eq!(exported.layers[0].media_type, media::OCI_LAYER_GZIP);
    assert_eq!(exported.layers[1].digest, Digest::of(&already), "compressed layers stay as they are");
    // The compressed blob decompresses to the plain tar (same diff_id).
    let mut back = Vec::new();
    std::io::copy(&mut forge_oci::decompress(store.open_blob(&exported.layers[0].digest).unwrap()).unwrap(), &mut back).unwrap();
    assert_eq!(back, plain);

    // Again: the same manifest, from the remembered blob.
    assert_eq!(store.export_image(&m, Compression::default()).unwrap(), out);
    // zstd is another blob; `None` and fully compressed images change nothing.
    let z = store.export_image(&m, Compression::Zstd { level: 3 }).unwrap();
    let zm: Manifest = serde_json::from_slice(&store.read_blob(&z.digest).unwrap()).unwrap();
    assert_eq!(zm.layers[0].media_type, media::OCI_LAYER_ZSTD);
    assert_eq!(store.export_image(&m, Compression::None).unwrap().digest, m);
    assert_eq!(store.export_image(&out.digest, Compression::default()).unwrap().digest, out.digest);
}

#[test]
fn docker_manifests_get_docker_layer_types() {
    let (_t, store) = store();
    let m = image(&store, &[(media::DOCKER_LAYER_TAR, tar_of("b", b"bee"))], media::DOCKER_MANIFEST);
    let out = store.export_image(&m, Compression::default()).unwrap();
    assert_eq!(out.media_type, media::DOCKER_MANIFEST);
    let exported: Manifest = serde_json::from_slice(&store.read_blob(&out.digest).unwrap()).unwrap();
    assert_eq!(exported.layers[0].media_type, media::DOCKER_LAYER_GZIP);
}

#[test]
fn a_corrupt_plain_layer_is_refused_not_compressed() {
    let (_t, store) = store();
    let plain = tar_of("c", b"sea");
    let m = image(&store, &[(media::OCI_LAYER_TAR, plain.clone())], media::OCI_MANIFEST);
    let path = store.blob_path(&Digest::of(&plain));
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&path, perms).unwrap();
    let mut bad = plain.clone();
    bad[600] ^= 1;
    std::fs::write(&path, bad).unwrap();
    let e = store.export_image(&m, Compression::default()).unwrap_err().to_string();
    assert!(e.contains("corrupt"), "{e}");
}
