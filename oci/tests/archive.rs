//! Image archives: our own round trips, and the real tools (umoci, skopeo, docker) reading what
//! forge writes and forge reading what they write.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use forge_oci::image::{to_canonical_json, ContainerConfig, RootFs};
use forge_oci::{
    apply_layer, import, media, write_archive, write_layer, write_oci_layout_dir, ApplyOptions,
    ArchiveFormat, BlobSource, Compression, Descriptor, Digest, ImageConfig, ImageToExport,
    LayerOptions, Manifest, MemoryBlobs, Platform, SourceKind,
};

/// A small real image: busybox with a few applet symlinks in one layer, a file in a second.
struct TestImage {
    blobs: MemoryBlobs,
    image: ImageToExport,
    config: Digest,
    diff_ids: Vec<Digest>,
    _tmp: tempfile::TempDir,
}

fn busybox_image(names: &[&str]) -> Option<TestImage> {
    let busybox = Path::new("/usr/bin/busybox");
    if !busybox.exists() {
        skip("/usr/bin/busybox not found");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let l1 = tmp.path().join("l1");
    fs::create_dir_all(l1.join("usr/bin")).unwrap();
    fs::copy(busybox, l1.join("usr/bin/busybox")).unwrap();
    for applet in ["sh", "echo", "cat", "ls"] {
        std::os::unix::fs::symlink("busybox", l1.join("usr/bin").join(applet)).unwrap();
    }
    std::os::unix::fs::symlink("usr/bin", l1.join("bin")).unwrap();
    fs::create_dir_all(l1.join("tmp")).unwrap();
    let l2 = tmp.path().join("l2");
    fs::create_dir_all(l2.join("etc")).unwrap();
    fs::write(l2.join("etc/forge-test"), b"layer two\n").unwrap();

    let blobs = MemoryBlobs::new();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for dir in [&l1, &l2] {
        let opts = LayerOptions {
            compression: Compression::Gzip { level: 1 },
            source_date_epoch: Some(0),
            kind: SourceKind::Tree,
        };
        let (info, bytes) = write_layer(dir, &opts, Vec::new()).unwrap();
        assert_eq!(blobs.insert(bytes), info.digest);
        layers.push(Descriptor::new(
            info.media_type.clone(),
            info.digest,
            info.size,
        ));
        diff_ids.push(info.diff_id);
    }
    let mut cfg = ImageConfig::scratch(&Platform::host());
    cfg.created = Some("1970-01-01T00:00:00Z".into());
    cfg.config = ContainerConfig {
        env: Some(vec!["PATH=/usr/bin:/bin".into()]),
        cmd: Some(vec!["sh".into()]),
        ..ContainerConfig::default()
    };
    cfg.rootfs = RootFs {
        typ: "layers".into(),
        diff_ids: diff_ids.clone(),
    };
    let cfg_bytes = to_canonical_json(&cfg);
    let cfg_desc = Descriptor::new(
        media::OCI_CONFIG,
        Digest::of(&cfg_bytes),
        cfg_bytes.len() as u64,
    );
    blobs.insert(cfg_bytes);
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        artifact_type: None,
        config: cfg_desc.clone(),
        layers,
        annotations: None,
    };
    let m_bytes = to_canonical_json(&manifest);
    let m_desc = Descriptor::new(
        media::OCI_MANIFEST,
        Digest::of(&m_bytes),
        m_bytes.len() as u64,
    );
    blobs.insert(m_bytes);
    Some(TestImage {
        blobs,
        image: ImageToExport {
            names: names.iter().map(|s| s.to_string()).collect(),
            manifest: m_desc,
        },
        config: cfg_desc.digest,
        diff_ids,
        _tmp: tmp,
    })
}

fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        skip(&format!("{name} not found"));
    }
    found
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Unpacks every layer of an imported image into a fresh dir and checks the busybox tree.
fn check_imported_rootfs(blobs: &MemoryBlobs, manifest: &Descriptor, want_diff_ids: &[Digest]) {
    let m: Manifest =
        serde_json::from_slice(&blobs.get(&manifest.digest).expect("manifest stored")).unwrap();
    let cfg: ImageConfig =
        serde_json::from_slice(&blobs.get(&m.config.digest).expect("config stored")).unwrap();
    assert_eq!(cfg.rootfs.diff_ids, want_diff_ids);
    let dir = tempfile::tempdir().unwrap();
    for (l, want) in m.layers.iter().zip(want_diff_ids) {
        let blob = blobs.get(&l.digest).expect("layer stored");
        assert_eq!(Digest::of(&blob), l.digest);
        assert_eq!(blob.len() as u64, l.size);
        let st = apply_layer(&blob[..], dir.path(), &ApplyOptions::default()).unwrap();
        assert_eq!(&st.diff_id, want, "layer content changed on the way");
    }
    assert_eq!(
        fs::read(dir.path().join("usr/bin/busybox")).unwrap(),
        fs::read("/usr/bin/busybox").unwrap()
    );
    assert_eq!(
        fs::read_link(dir.path().join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert_eq!(
        fs::read(dir.path().join("etc/forge-test")).unwrap(),
        b"layer two\n"
    );
}

#[test]
fn own_formats_round_trip_through_import() {
    let Some(img) = busybox_image(&["example.com/forge/rt:v1", "rt:latest"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for format in [
        ArchiveFormat::Oci,
        ArchiveFormat::Docker,
        ArchiveFormat::Combined,
    ] {
        let path = tmp.path().join(format!("{format:?}.tar"));
        let f = fs::File::create(&path).unwrap();
        write_archive(&img.blobs, std::slice::from_ref(&img.image), format, f).unwrap();
        // Deterministic: a second write is byte-identical.
        let mut again = Vec::new();
        write_archive(
            &img.blobs,
            std::slice::from_ref(&img.image),
            format,
            &mut again,
        )
        .unwrap();
        assert!(
            fs::read(&path).unwrap() == again,
            "{format:?} archive is not deterministic"
        );

        let sink = MemoryBlobs::new();
        let imported = import(&path, &sink).unwrap();
        assert_eq!(imported.len(), 1, "{format:?}");
        let got = &imported[0];
        match format {
            ArchiveFormat::Docker => {
                // A synthesized Docker manifest over uncompressed layers, same config.
                assert_eq!(got.manifest.media_type, media::DOCKER_MANIFEST);
                let m: Manifest =
                    serde_json::from_slice(&sink.get(&got.manifest.digest).unwrap()).unwrap();
                assert_eq!(m.config.digest, img.config);
                assert!(m
                    .layers
                    .iter()
                    .all(|l| l.media_type == media::DOCKER_LAYER_TAR));
                assert_eq!(
                    m.layers
                        .iter()
                        .map(|l| l.digest.clone())
                        .collect::<Vec<_>>(),
                    img.diff_ids
                );
                assert_eq!(
                    got.names,
                    vec![
                        "example.com/forge/rt:v1".to_string(),
                        "rt:latest".to_string()
                    ]
                );
            }
            _ => {
                assert_eq!(got.manifest.digest, img.image.manifest.digest, "{format:?}");
                assert_eq!(
                    got.names,
                    vec![
                        "example.com/forge/rt:v1".to_string(),
                        "docker.io/library/rt:latest".to_string()
                    ],
                    "{format:?}"
                );
            }
        }
        check_imported_rootfs(&sink, &got.manifest, &img.diff_ids);

        // The same archive extracted to a directory imports the same way.
        let dir = tmp.path().join(format!("{format:?}-dir"));
        fs::create_dir(&dir).unwrap();
        run(Command::new("tar")
            .arg("-xf")
            .arg(&path)
            .arg("-C")
            .arg(&dir));
        if format == ArchiveFormat::Combined {
            // docker's manifest.json points into the OCI layout's blobs, as Docker 25+ writes it.
            let mj: serde_json::Value =
                serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
            assert_eq!(
                mj[0]["Config"],
                format!("blobs/sha256/{}", img.config.hex())
            );
            let m: Manifest =
                serde_json::from_slice(&img.blobs.get(&img.image.manifest.digest).unwrap())
                    .unwrap();
            let want: Vec<String> = m
                .layers
                .iter()
                .map(|l| format!("blobs/sha256/{}", l.digest.hex()))
                .collect();
            assert_eq!(mj[0]["Layers"], serde_json::json!(want));
            assert_eq!(
                mj[0]["RepoTags"],
                serde_json::json!(["example.com/forge/rt:v1", "rt:latest"])
            );
            let idx: serde_json::Value =
                serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
            let ann = &idx["manifests"][1]["annotations"];
            assert_eq!(
                ann["io.containerd.image.name"],
                "docker.io/library/rt:latest"
            );
            assert_eq!(ann["org.opencontainers.image.ref.name"], "latest");
            assert!(dir.join("oci-layout").is_file() && dir.join("repositories").is_file());
        }
        let sink2 = MemoryBlobs::new();
        let again = import(&dir, &sink2).unwrap();
        assert_eq!(
            again, imported,
            "{format:?} dir import differs from tar import"
        );
    }
}

#[test]
fn gzipped_archives_and_garbage() {
    let Some(img) = busybox_image(&["gz:1"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("a.tar");
    write_archive(
        &img.blobs,
        std::slice::from_ref(&img.image),
        ArchiveFormat::Combined,
        fs::File::create(&path).unwrap(),
    )
    .unwrap();
    run(Command::new("gzip").arg("-k").arg(&path));
    let sink = MemoryBlobs::new();
    let imported = import(&tmp.path().join("a.tar.gz"), &sink).unwrap();
    assert_eq!(imported[0].manifest.digest, img.image.manifest.digest);

    fs::write(tmp.path().join("junk"), b"not an archive at all").unwrap();
    let err = import(&tmp.path().join("junk"), &MemoryBlobs::new()).unwrap_err();
    assert!(
        matches!(err, forge_oci::ArchiveError::MalformedTar { .. }),
        "{err:?}"
    );
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let err = import(&empty, &MemoryBlobs::new()).unwrap_err();
    assert!(
        matches!(err, forge_oci::ArchiveError::UnknownFormat { .. }),
        "{err:?}"
    );

    // A tampered blob is caught by digest verification.
    let dir = tmp.path().join("x");
    write_oci_layout_dir(&img.blobs, std::slice::from_ref(&img.image), &dir).unwrap();
    let cfg = dir.join("blobs/sha256").join(img.config.hex());
    let mut bytes = fs::read(&cfg).unwrap();
    bytes[0] = b' ';
    fs::write(&cfg, bytes).unwrap();
    assert!(
        import(&dir, &MemoryBlobs::new()).is_err(),
        "a tampered config was imported"
    );
}

#[test]
fn oci_layout_dir_merges_index_entries() {
    let Some(img) = busybox_image(&["merge:a"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layout");
    write_oci_layout_dir(&img.blobs, std::slice::from_ref(&img.image), &dir).unwrap();
    let mut second = img.image.clone();
    second.names = vec!["merge:b".into()];
    let s = write_oci_layout_dir(&img.blobs, &[second], &dir).unwrap();
    assert_eq!(s.blobs, 0, "blobs already present were written again");
    let idx: forge_oci::Index =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let refs: Vec<String> = idx
        .manifests
        .iter()
        .map(|d| d.annotations.as_ref().unwrap()["org.opencontainers.image.ref.name"].clone())
        .collect();
    assert_eq!(refs, vec!["a", "b"]);
    let layout: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
}

#[test]
fn umoci_and_skopeo_read_our_layout_and_we_read_skopeo() {
    let Some(img) = busybox_image(&["forge/test:tag"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layout");
    write_oci_layout_dir(&img.blobs, std::slice::from_ref(&img.image), &dir).unwrap();
    let layout_ref = format!("{}:tag", dir.display());

    if let Some(umoci) = tool("umoci") {
        if is_root() {
            let bundle = tmp.path().join("bundle");
            run(Command::new(umoci)
                .args(["unpack", "--image", &layout_ref])
                .arg(&bundle));
            let rootfs = bundle.join("rootfs");
            assert_eq!(
                fs::read(rootfs.join("usr/bin/busybox")).unwrap(),
                fs::read("/usr/bin/busybox").unwrap()
            );
            assert_eq!(
                fs::read_link(rootfs.join("usr/bin/sh")).unwrap(),
                Path::new("busybox")
            );
            assert_eq!(
                fs::read(rootfs.join("etc/forge-test")).unwrap(),
                b"layer two\n"
            );
            let cfg: serde_json::Value =
                serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
            assert_eq!(cfg["process"]["args"][0], "sh");
        } else {
            skip("umoci unpack needs root here");
        }
    }
    let Some(skopeo) = tool("skopeo") else { return };
    let inspect = run(Command::new(&skopeo).args(["inspect", &format!("oci:{layout_ref}")]));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Digest"], img.image.manifest.digest.to_string());
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2);

    // Our tars too: the OCI one as oci-archive, the Combined one as both oci-archive and
    // docker-archive.
    for (format, transport) in [
        (ArchiveFormat::Oci, "oci-archive"),
        (ArchiveFormat::Combined, "oci-archive"),
        (ArchiveFormat::Combined, "docker-archive"),
        (ArchiveFormat::Docker, "docker-archive"),
    ] {
        let t = tmp.path().join(format!("{format:?}.tar"));
        write_archive(
            &img.blobs,
            std::slice::from_ref(&img.image),
            format,
            fs::File::create(&t).unwrap(),
        )
        .unwrap();
        let target = if transport == "oci-archive" {
            format!("{transport}:{}:tag", t.display())
        } else {
            format!("{transport}:{}", t.display())
        };
        let v: serde_json::Value =
            serde_json::from_str(&run(Command::new(&skopeo).args(["inspect", &target]))).unwrap();
        assert_eq!(v["Layers"].as_array().unwrap().len(), 2, "{target}");
        assert_eq!(v["Env"][0], "PATH=/usr/bin:/bin", "{target}");
    }

    let x = tmp.path().join("x.tar");
    run(Command::new(&skopeo).args([
        "copy",
        &format!("oci:{layout_ref}"),
        &format!("docker-archive:{}:forge/test:tag", x.display()),
    ]));
    let sink = MemoryBlobs::new();
    let imported = import(&x, &sink).unwrap();
    assert_eq!(imported.len(), 1);
    // skopeo writes the normalized name into RepoTags.
    assert_eq!(
        imported[0].names,
        vec!["docker.io/forge/test:tag".to_string()]
    );
    check_imported_rootfs(&sink, &imported[0].manifest, &img.diff_ids);
}

fn docker() -> Option<PathBuf> {
    let d = PathBuf::from("/usr/bin/docker");
    if !d.exists() {
        skip("/usr/bin/docker not found");
        return None;
    }
    let ok = Command::new(&d)
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        skip("the docker daemon is not reachable");
        return None;
    }
    Some(d)
}

/// Removes the test's images even when an assertion fails.
struct Rmi(PathBuf, Vec<String>);
impl Drop for Rmi {
    fn drop(&mut self) {
        for n in &self.1 {
            let _ = Command::new(&self.0).args(["rmi", "-f", n]).output();
        }
    }
}

#[test]
fn docker_loads_and_runs_our_archives_and_we_import_docker_save() {
    let Some(docker) = docker() else { return };
    let pid = std::process::id();
    let tmp = tempfile::tempdir().unwrap();
    for format in [ArchiveFormat::Combined, ArchiveFormat::Docker] {
        let name = format!(
            "forge-oci-test/{}:{pid}",
            format!("{format:?}").to_lowercase()
        );
        let Some(img) = busybox_image(&[&name]) else {
            return;
        };
        let _cleanup = Rmi(docker.clone(), vec![name.clone()]);
        let path = tmp.path().join(format!("{format:?}.tar"));
        write_archive(
            &img.blobs,
            std::slice::from_ref(&img.image),
            format,
            fs::File::create(&path).unwrap(),
        )
        .unwrap();
        let loaded = run(Command::new(&docker).arg("load").arg("-i").arg(&path));
        assert!(
            loaded.contains(&name),
            "docker load did not report {name}: {loaded}"
        );
        let out = run(Command::new(&docker).args([
            "run",
            "--rm",
            "--network=none",
            &name,
            "busybox",
            "echo",
            "hi",
        ]));
        assert_eq!(out, "hi\n");
        let cat = run(Command::new(&docker).args([
            "run",
            "--rm",
            "--network=none",
            &name,
            "cat",
            "/etc/forge-test",
        ]));
        assert_eq!(cat, "layer two\n");

        // And back: docker save → import.
        let saved = tmp.path().join(format!("{format:?}-saved.tar"));
        run(Command::new(&docker)
            .args(["save", "-o"])
            .arg(&saved)
            .arg(&name));
        let sink = MemoryBlobs::new();
        let imported = import(&saved, &sink).unwrap();
        assert_eq!(imported.len(), 1);
        let names = &imported[0].names;
        assert!(
            names
                .iter()
                .any(|n| n == &name || n.ends_with(&format!("/{name}"))),
            "{names:?}"
        );
        check_imported_rootfs(&sink, &imported[0].manifest, &img.diff_ids);
        // Docker keeps the config bytes as they were.
        let m: Manifest =
            serde_json::from_slice(&sink.get(&imported[0].manifest.digest).unwrap()).unwrap();
        assert_eq!(m.config.digest, img.config);
        let mut r = sink.open_blob(&m.config.digest).unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert!(s.contains("PATH=/usr/bin:/bin"));
    }
}
