//! Throughput over loopback: forge push/pull of a ~300 MB image next to `skopeo copy` of the
//! same image. Ignored by default (it moves about 2 GB through the disk); run with
//!
//! ```text
//! cargo test --release -p forge-registry --test bench -- --ignored --nocapture
//! ```

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::*;
use forge_oci::{media, Descriptor, Digest, Index, Platform};
use forge_registry::{Client, CredentialSource};

const LAYERS: usize = 3;
const LAYER_BYTES: usize = 100 * 1024 * 1024;

fn mbps(bytes: u64, secs: f64) -> String {
    format!("{:7.1} MB/s ({:.2} s)", bytes as f64 / 1e6 / secs, secs)
}

fn write_layout(store: &forge_cache::Store, manifest: &Digest, dir: &Path) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut all = image_blobs(store, manifest);
    all.push((manifest.clone(), 0));
    for (d, _) in &all {
        std::fs::copy(store.blob_path(d), blobs.join(d.hex())).unwrap();
    }
    let mut desc = Descriptor::new(
        media::OCI_MANIFEST,
        manifest.clone(),
        store.blob_size(manifest).unwrap(),
    );
    desc.annotations = Some(
        [(
            "org.opencontainers.image.ref.name".to_string(),
            "bench".to_string(),
        )]
        .into(),
    );
    let index = Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.into()),
        manifests: vec![desc],
        annotations: None,
    };
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

fn skopeo_copy(from: &str, to: &str) -> f64 {
    let t = Instant::now();
    let out = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            from,
            to,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy {from} {to}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: moves ~2 GB; run explicitly with --ignored"]
async fn bench_pull_push_300mb() {
    let Some(_) = require_tool("skopeo", "/usr/bin/skopeo") else {
        return;
    };
    let Some(reg_forge) = TestRegistry::start(RegistryAuth::None) else {
        return;
    };
    let Some(reg_skopeo) = TestRegistry::start(RegistryAuth::None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = open_store(&dir.path().join("src"));
    // Incompressible layers stored as they are (uncompressed tar media type): the benchmark
    // measures transfer, not compression.
    let mut layers = Vec::new();
    for i in 0..LAYERS {
        let data = pseudo_random(LAYER_BYTES, i as u8 + 100);
        let mut tar = tar::Builder::new(Vec::with_capacity(LAYER_BYTES + 4096));
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        tar.append_data(&mut h, format!("data/{i}.bin"), &data[..])
            .unwrap();
        let raw = tar.into_inner().unwrap();
        let d = Digest::of(&raw);
        layers.push((raw, d, media::OCI_LAYER_TAR));
    }
    let manifest = store_image(&src, &layers, &["/bin/true"]);
    drop(layers);
    let total: u64 = image_blobs(&src, &manifest).iter().map(|(_, s)| s).sum();
    let layout = dir.path().join("layout");
    write_layout(&src, &manifest, &layout);
    eprintln!("image: {LAYERS} layers, {:.1} MB", total as f64 / 1e6);

    let client = Client::new(ClientOptionsExt::bench()).unwrap();
    let t = Instant::now();
    client
        .push(
            &src,
            &manifest,
            &reg_forge.reference("bench/forge:1"),
            None,
            &no_progress(),
        )
        .await
        .unwrap();
    let forge_push = t.elapsed().as_secs_f64();

    let mono = {
        let mut o = ClientOptionsExt::bench();
        o.chunk_size = u64::MAX;
        Client::new(o).unwrap()
    };
    let t = Instant::now();
    mono.push(
        &src,
        &manifest,
        &reg_forge.reference("bench/forge-mono:1"),
        None,
        &no_progress(),
    )
    .await
    .unwrap();
    let forge_push_mono = t.elapsed().as_secs_f64();

    let skopeo_push = skopeo_copy(
        &format!("oci:{}:bench", layout.display()),
        &format!("docker://{}/bench/skopeo:1", reg_skopeo.host()),
    );

    let out = open_store(&dir.path().join("pulled"));
    let t = Instant::now();
    let pulled = client
        .pull(
            &reg_forge.reference("bench/forge:1"),
            &Platform::host(),
            &out,
            &no_progress(),
        )
        .await
        .unwrap();
    let forge_pull = t.elapsed().as_secs_f64();
    assert_eq!(pulled.manifest_digest, manifest);

    let skopeo_pull = skopeo_copy(
        &format!("docker://{}/bench/skopeo:1", reg_skopeo.host()),
        &format!("oci:{}:bench", dir.path().join("skopeo-out").display()),
    );

    eprintln!(
        "forge push (chunked {} MiB): {}",
        client.options().chunk_size >> 20,
        mbps(total, forge_push)
    );
    eprintln!(
        "forge push (monolithic PUT): {}",
        mbps(total, forge_push_mono)
    );
    eprintln!("skopeo copy oci: -> docker:  {}", mbps(total, skopeo_push));
    eprintln!("forge pull:                  {}", mbps(total, forge_pull));
    eprintln!("skopeo copy docker: -> oci:  {}", mbps(total, skopeo_pull));
}

struct ClientOptionsExt;

impl ClientOptionsExt {
    fn bench() -> forge_registry::ClientOptions {
        forge_registry::ClientOptions {
            credentials: CredentialSource::Anonymous,
            ..Default::default()
        }
    }
}
