//! Cross-checks with other clients: skopeo reads what forge pushed and forge pulls what skopeo
//! pushed (OCI and Docker schema 2); docker pulls and runs a forge-pushed busybox image.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use forge_oci::{media, Descriptor, Digest, ImageConfig, Index, Manifest, Platform};
use forge_registry::{Client, CredentialSource};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn skopeo() -> Option<Command> {
    let bin = require_tool("skopeo", "/usr/bin/skopeo")?;
    let mut c = Command::new(bin);
    c.arg("--insecure-policy");
    Some(c)
}

/// Writes an OCI image layout with one image (blobs copied from `store`), tagged `tag`.
fn write_layout(store: &forge_cache::Store, manifest: &Digest, dir: &Path, tag: &str) {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut all = image_blobs(store, manifest);
    all.push((manifest.clone(), store.blob_size(manifest).unwrap()));
    for (d, _) in &all {
        std::fs::write(blobs.join(d.hex()), store.read_blob(d).unwrap()).unwrap();
    }
    let mut desc = Descriptor::new(
        media::OCI_MANIFEST,
        manifest.clone(),
        store.blob_size(manifest).unwrap(),
    );
    desc.annotations = Some(
        [(
            "org.opencontainers.image.ref.name".to_string(),
            tag.to_string(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_reads_what_forge_pushed() {
    let Some(mut sk) = skopeo() else { return };
    let Some(reg) = TestRegistry::start(RegistryAuth::None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("store"));
    let manifest = sample_image(&store, 200_000, 11);
    let client = Client::new(test_options(CredentialSource::Anonymous)).unwrap();
    let dest = reg.reference("forge/for-skopeo:v1");
    client
        .push(&store, &manifest, &dest, None, &no_progress())
        .await
        .unwrap();

    let url = format!("docker://{}/forge/for-skopeo:v1", reg.host());
    let inspect: serde_json::Value =
        serde_json::from_str(&run(sk.args(["inspect", "--tls-verify=false", &url]))).unwrap();
    assert_eq!(inspect["Digest"], manifest.to_string());
    let layers: Vec<String> = image_blobs(&store, &manifest)[1..]
        .iter()
        .map(|(d, _)| d.to_string())
        .collect();
    assert_eq!(inspect["Layers"], serde_json::json!(layers));
    let raw = run(skopeo()
        .unwrap()
        .args(["inspect", "--raw", "--tls-verify=false", &url]));
    assert_eq!(raw.as_bytes(), store.read_blob(&manifest).unwrap());

    // skopeo copy verifies every digest it downloads.
    let out = dir.path().join("copied");
    run(skopeo().unwrap().args([
        "copy",
        "--src-tls-verify=false",
        &url,
        &format!("oci:{}:v1", out.display()),
    ]));
    for (d, _) in image_blobs(&store, &manifest) {
        let copied = std::fs::read(out.join("blobs/sha256").join(d.hex())).unwrap();
        assert_eq!(copied, store.read_blob(&d).unwrap(), "blob {d}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forge_pulls_what_skopeo_pushed() {
    let Some(_) = skopeo() else { return };
    let Some(reg) = TestRegistry::start(RegistryAuth::None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = open_store(&dir.path().join("src"));
    let manifest = sample_image(&src, 150_000, 12);
    let layout = dir.path().join("layout");
    write_layout(&src, &manifest, &layout, "t");
    let client = Client::new(test_options(CredentialSource::Anonymous)).unwrap();
    let want = image_blobs(&src, &manifest);

    // As OCI, unchanged.
    let oci_url = format!("docker://{}/skopeo/oci:1", reg.host());
    run(skopeo().unwrap().args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:t", layout.display()),
        &oci_url,
    ]));
    let out = open_store(&dir.path().join("out"));
    let r = reg.reference("skopeo/oci:1");
    let pulled = client
        .pull(&r, &Platform::host(), &out, &no_progress())
        .await
        .unwrap();
    assert_eq!(pulled.manifest_digest, manifest);
    for (d, _) in &want {
        assert_eq!(
            out.read_blob(d).unwrap(),
            src.read_blob(d).unwrap(),
            "blob {d}"
        );
    }

    // Converted to Docker schema 2 media types.
    let docker_url = format!("docker://{}/skopeo/docker:1", reg.host());
    run(skopeo().unwrap().args([
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &format!("oci:{}:t", layout.display()),
        &docker_url,
    ]));
    let r = reg.reference("skopeo/docker:1");
    let (_, media_type, _) = client.get_manifest(&r).await.unwrap();
    assert_eq!(media_type, media::DOCKER_MANIFEST);
    let out2 = open_store(&dir.path().join("out2"));
    let pulled = client
        .pull(&r, &Platform::host(), &out2, &no_progress())
        .await
        .unwrap();
    assert_eq!(pulled.manifest.config.media_type, media::DOCKER_CONFIG);
    assert_eq!(
        pulled.config.config.cmd.as_deref(),
        Some(&["/bin/true".to_string()][..])
    );
    let layer_digests: Vec<&Digest> = pulled.manifest.layers.iter().map(|l| &l.digest).collect();
    let want_layers: Vec<&Digest> = want[1..].iter().map(|(d, _)| d).collect();
    assert_eq!(
        layer_digests, want_layers,
        "skopeo keeps the gzip layers as they are"
    );
    for l in &pulled.manifest.layers {
        assert_eq!(l.media_type, media::DOCKER_LAYER_GZIP);
        assert!(out2.has_blob(&l.digest));
    }
}

/// A gzip layer with `bin/busybox` (the host's static busybox) and `bin/sh` → busybox.
fn busybox_layer(busybox: &Path) -> (Vec<u8>, Digest) {
    use std::io::Write;
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(0);
    tar.append_data(&mut dir, "bin/", std::io::empty()).unwrap();
    let bytes = std::fs::read(busybox).unwrap();
    let mut f = tar::Header::new_gnu();
    f.set_entry_type(tar::EntryType::Regular);
    f.set_mode(0o755);
    f.set_size(bytes.len() as u64);
    f.set_mtime(0);
    tar.append_data(&mut f, "bin/busybox", &bytes[..]).unwrap();
    let mut l = tar::Header::new_gnu();
    l.set_entry_type(tar::EntryType::Symlink);
    l.set_mode(0o777);
    l.set_size(0);
    l.set_mtime(0);
    tar.append_link(&mut l, "bin/sh", "busybox").unwrap();
    let raw = tar.into_inner().unwrap();
    let diff_id = Digest::of(&raw);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    (gz.finish().unwrap(), diff_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pulls_and_runs_a_forge_pushed_busybox() {
    let Some(docker) = require_tool("docker", "/usr/bin/docker") else {
        return;
    };
    let Some(busybox) = require_tool("busybox", "/usr/bin/busybox") else {
        return;
    };
    let daemon_up = Command::new(&docker)
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !daemon_up {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("dockerd is not reachable, and CI=true requires it");
        }
        eprintln!("SKIPPED: dockerd not reachable");
        return;
    }
    let Some(reg) = TestRegistry::start(RegistryAuth::None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let (layer, diff_id) = busybox_layer(&busybox);
    let manifest = store_image(
        &store,
        &[(layer, diff_id, media::OCI_LAYER_GZIP)],
        &["/bin/sh", "-c", "echo hello from forge"],
    );
    let client = Client::new(test_options(CredentialSource::Anonymous)).unwrap();
    let image = format!("{}/forge/busybox:test", reg.host());
    client
        .push(
            &store,
            &manifest,
            &reg.reference("forge/busybox:test"),
            None,
            &no_progress(),
        )
        .await
        .unwrap();

    let pull = Command::new(&docker)
        .args(["pull", &image])
        .output()
        .unwrap();
    let result = if pull.status.success() {
        Command::new(&docker)
            .args(["run", "--rm", "--network=none", &image])
            .output()
            .unwrap()
    } else {
        pull
    };
    let _ = Command::new(&docker).args(["rmi", "-f", &image]).output();
    assert!(
        result.status.success(),
        "docker failed: {}{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&result.stdout),
        "hello from forge\n"
    );

    // And forge reads the image back the way docker saw it.
    let (bytes, _, digest) = client
        .get_manifest(&reg.reference("forge/busybox:test"))
        .await
        .unwrap();
    assert_eq!(digest, manifest);
    let m: Manifest = serde_json::from_slice(&bytes).unwrap();
    let config: ImageConfig =
        serde_json::from_slice(&store.read_blob(&m.config.digest).unwrap()).unwrap();
    assert_eq!(config.rootfs.diff_ids.len(), 1);
}
