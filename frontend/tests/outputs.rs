//! Every `--output` type, checked with tools that are not forge: skopeo, umoci, docker, tar.

mod common;
use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

const DOCKERFILE: &str = r#"FROM busybox:local
COPY --chown=1000:1000 hello.txt /srv/hello.txt
RUN mkdir -p /data && echo made > /data/made.txt && chown 1000:1000 /data/made.txt && chmod 640 /data/made.txt
LABEL forge.test=outputs
CMD ["cat", "/srv/hello.txt"]
"#;

fn setup() -> Option<(Forge, TempDir)> {
    let f = Forge::with_base()?;
    let ctx = context(&[
        ("Dockerfile", DOCKERFILE),
        ("hello.txt", "hello from forge\n"),
    ]);
    Some((f, ctx))
}

fn json_of(o: &Out) -> serde_json::Value {
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", o.stdout))
}

/// Checks a merged root filesystem directory (type=local, umoci's rootfs).
fn check_rootfs(dir: &Path) {
    assert_eq!(
        std::fs::read_to_string(dir.join("srv/hello.txt")).unwrap(),
        "hello from forge\n"
    );
    let m = std::fs::metadata(dir.join("srv/hello.txt")).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (1000, 1000),
        "COPY --chown=1000:1000 owner lost"
    );
    let m = std::fs::metadata(dir.join("data/made.txt")).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("data/made.txt")).unwrap(),
        "made\n"
    );
    assert_eq!((m.uid(), m.gid()), (1000, 1000), "RUN chown owner lost");
    assert_eq!(m.permissions().mode() & 0o7777, 0o640);
    assert!(
        dir.join("bin/busybox").is_file(),
        "the base layer is missing"
    );
    assert_eq!(
        std::fs::read_link(dir.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
}

#[test]
fn oci_tar_checked_with_skopeo_and_metadata_file() {
    let Some((f, ctx)) = setup() else { return };
    let Some(skopeo) = tool("skopeo") else { return };
    let dest = f.scratch("image.tar");
    let meta = f.scratch("meta.json");
    let iid = f.scratch("iid");
    let b = f.build(
        ctx.path(),
        &[
            "-t".as_ref(),
            "out:1".as_ref(),
            "-o".as_ref(),
            format!("type=oci,dest={}", dest.display()).as_ref(),
            "--metadata-file".as_ref(),
            meta.as_os_str(),
            "--iidfile".as_ref(),
            iid.as_os_str(),
        ] as &[&std::ffi::OsStr],
    );
    assert!(dest.is_file(), "type=oci did not write a tar");

    // --metadata-file and --iidfile agree with the store.
    let ins = f.inspect("out:1");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    assert_eq!(
        m["containerimage.digest"], ins["ManifestDigest"],
        "metadata digest != store"
    );
    assert_eq!(m["containerimage.digest"].as_str().unwrap(), b.digest());
    assert_eq!(m["containerimage.config.digest"], ins["Id"]);
    assert_eq!(
        m["containerimage.config.digest"],
        ins["Manifest"]["config"]["digest"]
    );
    assert_eq!(
        m["containerimage.descriptor"]["digest"],
        ins["ManifestDigest"]
    );
    assert!(m["image.name"].as_str().unwrap().contains("out:1"), "{m}");
    assert_eq!(
        std::fs::read_to_string(&iid).unwrap().trim(),
        ins["Id"].as_str().unwrap()
    );

    let o = run_cmd(
        Command::new(&skopeo)
            .arg("inspect")
            .arg(format!("oci-archive:{}", dest.display())),
    )
    .ok();
    let s = json_of(&o);
    assert_eq!(
        s["Digest"], ins["ManifestDigest"],
        "skopeo sees another manifest"
    );
    assert_eq!(
        s["Layers"].as_array().unwrap().len(),
        3,
        "base + COPY + RUN layers: {s}"
    );
    assert_eq!(s["Labels"]["forge.test"], "outputs");
    let o = run_cmd(
        Command::new(&skopeo)
            .args(["inspect", "--config"])
            .arg(format!("oci-archive:{}", dest.display())),
    )
    .ok();
    let c = json_of(&o);
    assert_eq!(
        c["config"]["Cmd"],
        serde_json::json!(["cat", "/srv/hello.txt"])
    );
    assert_eq!(c["rootfs"]["diff_ids"], ins["Config"]["rootfs"]["diff_ids"]);
}

#[test]
fn oci_directory_checked_with_skopeo_and_umoci() {
    let Some((f, ctx)) = setup() else { return };
    let Some(skopeo) = tool("skopeo") else { return };
    let Some(umoci) = tool("umoci") else { return };
    let dest = f.scratch("layout");
    f.build(
        ctx.path(),
        &[
            "-t",
            "out:1",
            "-o",
            &format!("type=oci,dest={},tar=false", dest.display()),
        ],
    );
    assert!(
        dest.join("oci-layout").is_file() && dest.join("index.json").is_file(),
        "tar=false did not write a layout directory"
    );
    let ins = f.inspect("out:1");
    let o = run_cmd(
        Command::new(&skopeo)
            .arg("inspect")
            .arg(format!("oci:{}", dest.display())),
    )
    .ok();
    assert_eq!(json_of(&o)["Digest"], ins["ManifestDigest"]);

    // umoci wants the ref name the layout gives the image.
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dest.join("index.json")).unwrap()).unwrap();
    let refname = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or_else(|| panic!("no ref name annotation in index.json: {index}"))
        .to_string();
    let bundle = f.scratch("bundle");
    run_cmd(
        Command::new(&umoci)
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{refname}", dest.display()))
            .arg(&bundle),
    )
    .ok();
    check_rootfs(&bundle.join("rootfs"));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(
        cfg["process"]["args"],
        serde_json::json!(["cat", "/srv/hello.txt"])
    );
}

/// Removes a docker image when dropped.
struct DockerImage<'a>(&'a Path, String);
impl Drop for DockerImage<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.0).args(["rmi", "-f", &self.1]).output();
    }
}

#[test]
fn docker_archive_loads_and_runs_in_docker() {
    let Some((f, ctx)) = setup() else { return };
    let Some(docker) = docker() else { return };
    let name = format!("forge-e2e-out-{}:1", std::process::id());
    let dest = f.scratch("docker.tar");
    f.build(
        ctx.path(),
        &[
            "-t",
            &name,
            "-o",
            &format!("type=docker,dest={}", dest.display()),
        ],
    );
    let _guard = DockerImage(&docker, name.clone());
    let o = run_cmd(Command::new(&docker).arg("load").arg("-i").arg(&dest)).ok();
    assert!(
        o.stdout.contains(&name),
        "docker load did not report {name}: {}",
        o.stdout
    );
    let o = run_cmd(Command::new(&docker).args(["run", "--rm", "--network=none", &name])).ok();
    assert_eq!(o.stdout, "hello from forge\n");
    let o = run_cmd(Command::new(&docker).args([
        "run",
        "--rm",
        "--network=none",
        &name,
        "sh",
        "-c",
        "stat -c '%u:%g %a' /data/made.txt; cat /data/made.txt",
    ]))
    .ok();
    assert_eq!(o.stdout, "1000:1000 640\nmade\n");
    // docker computes the same image id (config digest) as forge.
    let o = run_cmd(Command::new(&docker).args(["image", "inspect", "--format", "{{.Id}}", &name]))
        .ok();
    let id = f.inspect(&name)["Id"].as_str().unwrap().to_string();
    let docker_id = o.stdout.trim();
    // Docker with the containerd image store reports the manifest digest instead.
    let manifest = f.inspect(&name)["ManifestDigest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        docker_id == id || docker_id == manifest,
        "docker id {docker_id} is neither config {id} nor manifest {manifest}"
    );
}

#[test]
fn image_output_tags_the_store() {
    let Some((f, ctx)) = setup() else { return };
    let b = f.build(
        ctx.path(),
        &["-o", "type=image,name=registry.example/team/out:2"],
    );
    let imgs = f.images();
    let hit = imgs
        .iter()
        .find(|i| {
            i["names"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "registry.example/team/out:2")
        })
        .unwrap_or_else(|| panic!("type=image did not tag the store: {imgs:?}"));
    assert_eq!(hit["manifest"].as_str().unwrap(), b.digest());
    assert_eq!(
        f.inspect("registry.example/team/out:2")["ManifestDigest"]
            .as_str()
            .unwrap(),
        b.digest()
    );
    let o = f.ok(&["run", "--rm", "registry.example/team/out:2"]);
    assert_eq!(o.stdout, "hello from forge\n");
}

#[test]
fn local_output_writes_the_root_filesystem() {
    let Some((f, ctx)) = setup() else { return };
    let dest = f.scratch("rootfs");
    f.build(
        ctx.path(),
        &["-o", &format!("type=local,dest={}", dest.display())],
    );
    check_rootfs(&dest);
    // A bare path means type=local too.
    let dest2 = f.scratch("rootfs2");
    f.build(ctx.path(), &["-o", dest2.to_str().unwrap()]);
    check_rootfs(&dest2);
}

#[test]
fn tar_output_writes_the_root_filesystem_as_a_tar() {
    let Some((f, ctx)) = setup() else { return };
    let Some(tar) = tool("tar") else { return };
    let dest = f.scratch("rootfs.tar");
    f.build(
        ctx.path(),
        &["-o", &format!("type=tar,dest={}", dest.display())],
    );
    let o = run_cmd(
        Command::new(&tar)
            .args(["--numeric-owner", "-tvf"])
            .arg(&dest),
    )
    .ok();
    let line = |path: &str| {
        o.stdout
            .lines()
            .find(|l| {
                let name = l.split_once(" -> ").map(|(n, _)| n).unwrap_or(l);
                name.ends_with(&format!(" {path}")) || name.ends_with(&format!(" ./{path}"))
            })
            .unwrap_or_else(|| panic!("{path} not in the tar:\n{}", o.stdout))
            .to_string()
    };
    let made = line("data/made.txt");
    assert!(made.starts_with("-rw-r----- 1000/1000 "), "{made}");
    let hello = line("srv/hello.txt");
    assert!(hello.starts_with("-rw-r--r-- 1000/1000 "), "{hello}");
    assert!(line("bin/sh").starts_with('l'), "bin/sh is not a symlink");
    // Contents.
    let x = f.scratch("x");
    std::fs::create_dir_all(&x).unwrap();
    run_cmd(
        Command::new(&tar)
            .arg("-xf")
            .arg(&dest)
            .arg("-C")
            .arg(&x)
            .arg("--same-owner"),
    )
    .ok();
    check_rootfs(&x);
}

fn layer_media_types(skopeo: &Path, transport: &str) -> Vec<String> {
    let o = run_cmd(Command::new(skopeo).args(["inspect", "--raw", transport])).ok();
    let m = json_of(&o);
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_string())
        .collect()
}

fn check_zstd_layout(skopeo: &Path, f: &Forge, dest: &Path) {
    let types = layer_media_types(skopeo, &format!("oci:{}", dest.display()));
    assert_eq!(types.len(), 3);
    assert!(
        types
            .iter()
            .skip(1)
            .all(|t| t == "application/vnd.oci.image.layer.v1.tar+zstd"),
        "built layers are not zstd: {types:?}"
    );
    // The result is a valid image that skopeo can copy (it verifies the blobs).
    let copy = f.scratch("copied");
    run_cmd(
        Command::new(skopeo)
            .arg("copy")
            .arg(format!("oci:{}", dest.display()))
            .arg(format!("oci:{}:x", copy.display())),
    )
    .ok();
}

#[test]
fn zstd_compression_gives_zstd_layers() {
    let Some((f, ctx)) = setup() else { return };
    let Some(skopeo) = tool("skopeo") else { return };
    let dest = f.scratch("zstd");
    f.build(
        ctx.path(),
        &[
            "-o",
            &format!(
                "type=oci,dest={},tar=false,compression=zstd",
                dest.display()
            ),
        ],
    );
    check_zstd_layout(&skopeo, &f, &dest);
}

#[test]
fn zstd_compression_after_a_gzip_build_recompresses_cached_layers() {
    let Some((f, ctx)) = setup() else { return };
    let Some(skopeo) = tool("skopeo") else { return };
    let dest = f.scratch("gzip");
    f.build(
        ctx.path(),
        &["-o", &format!("type=oci,dest={},tar=false", dest.display())],
    );
    let types = layer_media_types(&skopeo, &format!("oci:{}", dest.display()));
    assert!(types.iter().all(|t| t.ends_with("tar+gzip")), "{types:?}");
    let dest = f.scratch("zstd");
    f.build(
        ctx.path(),
        &[
            "-o",
            &format!(
                "type=oci,dest={},tar=false,compression=zstd",
                dest.display()
            ),
        ],
    );
    check_zstd_layout(&skopeo, &f, &dest);
}

#[test]
fn zstd_compression_on_image_output() {
    let Some((f, ctx)) = setup() else { return };
    f.build(ctx.path(), &["-o", "type=image,name=z:1,compression=zstd"]);
    let ins = f.inspect("z:1");
    let layers = ins["Manifest"]["layers"].as_array().unwrap();
    assert!(
        layers
            .iter()
            .skip(1)
            .all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"),
        "{layers:?}"
    );
    let o = f.ok(&["run", "--rm", "z:1"]);
    assert_eq!(o.stdout, "hello from forge\n");
}

/// A build that only tags a local image keeps its own layers as plain tars (nothing is
/// compressed); `forge save` and `forge push`-style exports compress them (gzip) on the way
/// out, and the loaded copy runs the same.
#[test]
fn local_builds_stay_uncompressed_until_the_image_leaves_the_store() {
    let Some((f, ctx)) = setup() else { return };
    f.build(ctx.path(), &["-t", "plain:1"]);
    let ins = f.inspect("plain:1");
    let layers = ins["Manifest"]["layers"].as_array().unwrap().clone();
    assert!(
        layers.iter().skip(1).all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar"),
        "the build's own layers are plain tars: {layers:?}"
    );
    let saved = f.scratch("plain.tar");
    f.ok(&["save", "-o", saved.to_str().unwrap(), "plain:1"]);
    let g = Forge::new();
    g.ok(&["load", "-i", saved.to_str().unwrap()]);
    let back = g.inspect("plain:1");
    let out = back["Manifest"]["layers"].as_array().unwrap();
    assert_eq!(out.len(), layers.len());
    assert!(
        out.iter().all(|l| l["mediaType"] != "application/vnd.oci.image.layer.v1.tar"),
        "saved layers are compressed: {out:?}"
    );
    // Same image content: the config (diff_ids included) is unchanged.
    assert_eq!(back["Id"], ins["Id"]);
    assert_eq!(g.ok(&["run", "--rm", "plain:1"]).stdout, "hello from forge\n");
    // Saving again reuses the compressed blobs: the same archive manifest.
    let again = f.scratch("again.tar");
    f.ok(&["save", "-o", again.to_str().unwrap(), "plain:1"]);
    let h = Forge::new();
    h.ok(&["load", "-i", again.to_str().unwrap()]);
    assert_eq!(h.inspect("plain:1")["ManifestDigest"], back["ManifestDigest"]);
}

/// `forge push` of an image built for the local store only: its plain-tar layers are
/// compressed on the way out (gzip), the pushed manifest is what the command prints, a second
/// push sends the same manifest (the compressed blobs are remembered), and a store that pulls
/// it gets gzip layers, the same image ID, and an image that runs.
#[test]
fn push_compresses_a_local_only_image() {
    let Some((f, ctx)) = setup() else { return };
    let Some(reg) = Registry::start(None) else { return };
    f.build(ctx.path(), &["-t", "local:1"]);
    let local = f.inspect("local:1");
    let dest = format!("{}/forge/local:1", reg.host());
    let first = f.ok(&["push", "local:1", &dest]).stdout.trim().to_string();
    let (_, pushed_digest) = first.rsplit_once('@').unwrap_or_else(|| panic!("push printed {first:?}"));
    assert_ne!(pushed_digest, local["ManifestDigest"].as_str().unwrap(), "the pushed manifest names compressed layers");
    let second = f.ok(&["push", "local:1", &dest]).stdout.trim().to_string();
    assert_eq!(second, first, "a second push sends the same manifest");

    let g = Forge::new();
    g.ok(&["pull", &dest]);
    let pulled = g.inspect(&dest);
    assert_eq!(pulled["ManifestDigest"].as_str().unwrap(), pushed_digest);
    assert_eq!(pulled["Id"], local["Id"], "same config, same image ID");
    let layers = pulled["Manifest"]["layers"].as_array().unwrap();
    assert!(
        layers.iter().all(|l| l["mediaType"].as_str().unwrap().contains("gzip")),
        "{layers:?}"
    );
    assert_eq!(g.ok(&["run", "--rm", &dest]).stdout, "hello from forge\n");
}
