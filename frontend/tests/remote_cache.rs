//! Remote build caches end to end (`--cache-to` / `--cache-from`), with two separate stores:
//! store A builds and exports, store B starts empty (except for the base image) and imports.
//! RUN steps write `/proc/sys/kernel/random/uuid` into the image, so a RUN that ran again is
//! visible in the image content, not only in the progress output.

mod common;
use common::*;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const DOCKERFILE: &str = r#"FROM busybox:local
RUN cat /proc/sys/kernel/random/uuid > /stamp
COPY early.txt /early.txt
RUN cat /proc/sys/kernel/random/uuid > /stamp2
COPY late.txt /late.txt
RUN cat /late.txt /stamp > /combined
"#;

const RUN_STAMP: &str = "RUN cat /proc/sys/kernel/random/uuid > /stamp";
const COPY_EARLY: &str = "COPY early.txt /early.txt";
const RUN_STAMP2: &str = "RUN cat /proc/sys/kernel/random/uuid > /stamp2";
const COPY_LATE: &str = "COPY late.txt /late.txt";
const RUN_LATE: &str = "RUN cat /late.txt /stamp > /combined";
const ALL: [&str; 5] = [RUN_STAMP, COPY_EARLY, RUN_STAMP2, COPY_LATE, RUN_LATE];

fn app_context() -> TempDir {
    context(&[
        ("Dockerfile", DOCKERFILE),
        ("early.txt", "early\n"),
        ("late.txt", "late v1\n"),
    ])
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The blob digests (hex) a store holds.
fn store_blobs(f: &Forge) -> Vec<String> {
    let dir = f.root().join("blobs/sha256");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The layer descriptors (hex digest, size) of a local cache directory's manifest.
fn cache_layers(dir: &Path) -> Vec<(String, u64)> {
    let index: serde_json::Value = serde_json::from_str(&read(&dir.join("index.json"))).unwrap();
    let m = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&dir.join("blobs/sha256").join(m))).unwrap();
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.forge.cache.config.v1+json"
    );
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("sha256:")
                    .to_string(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn warnings(b: &Build) -> Vec<String> {
    b.out
        .stderr
        .lines()
        .filter(|l| l.contains("WARNING"))
        .map(str::to_string)
        .collect()
}

// ------------------------------------------------------------------ a real registry

// ------------------------------------------------------------------ two stores

/// A exports with `cache_to`; B imports with `cache_from` and must run nothing, giving the same
/// image (same digest, same stamps); then a fresh store C with a changed late file runs only the
/// steps after it.
fn two_store_round_trip(cache_to: &str, cache_from: &str) {
    let Some(a) = Forge::with_base() else { return };
    let b = Forge::with_base().unwrap();
    let ctx = app_context();

    let (ba, rootfs_a) = build_rootfs(&a, ctx.path(), &["-t", "app:1", "--cache-to", cache_to]);
    assert_eq!(ba.progress.ran(), ALL, "store A is cold\n{}", ba.out.stderr);

    let (bb, rootfs_b) = build_rootfs(&b, ctx.path(), &["-t", "app:1", "--cache-from", cache_from]);
    assert!(
        bb.progress.ran().is_empty(),
        "store B ran {:?} despite the imported cache\n{}",
        bb.progress.ran(),
        bb.out.stderr
    );
    assert_eq!(bb.progress.cached(), ALL);
    assert!(
        warnings(&bb).is_empty(),
        "unexpected warnings: {:?}",
        warnings(&bb)
    );
    assert_eq!(
        read(&rootfs_b.join("stamp")),
        read(&rootfs_a.join("stamp")),
        "B's /stamp comes from A's RUN"
    );
    assert_eq!(
        read(&rootfs_b.join("stamp2")),
        read(&rootfs_a.join("stamp2"))
    );
    assert_eq!(
        bb.digest(),
        ba.digest(),
        "the imported cache must give A's image byte for byte"
    );

    // A change to the late COPY source: a third, empty store reruns only what follows it.
    let c = Forge::with_base().unwrap();
    write_files(ctx.path(), &[("late.txt", "late v2\n")]);
    let (bc, rootfs_c) = build_rootfs(&c, ctx.path(), &["-t", "app:1", "--cache-from", cache_from]);
    assert_eq!(
        bc.progress.ran(),
        [COPY_LATE, RUN_LATE],
        "{}",
        bc.out.stderr
    );
    assert_eq!(
        read(&rootfs_c.join("stamp2")),
        read(&rootfs_a.join("stamp2"))
    );
    assert_eq!(
        read(&rootfs_c.join("combined")),
        format!("late v2\n{}", read(&rootfs_a.join("stamp")))
    );
}

#[test]
fn local_cache_two_stores() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("cache");
    two_store_round_trip(
        &format!("type=local,dest={}", d.display()),
        &format!("type=local,src={}", d.display()),
    );
}

#[test]
fn registry_cache_two_stores() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let r = format!("{}/forge/app:buildcache", reg.host());
    two_store_round_trip(
        &format!("type=registry,ref={r},mode=max"),
        &format!("type=registry,ref={r}"),
    );
}

#[test]
fn registry_cache_exports_add_to_the_cache_already_there() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let Some(a) = Forge::with_base() else { return };
    let ctx = app_context();
    let r = format!("{}/forge/merge:buildcache", reg.host());
    let to = format!("type=registry,ref={r}");
    let from = format!("type=registry,ref={r}");
    let (v1, rootfs_v1) = build_rootfs(&a, ctx.path(), &["-t", "app:1", "--cache-to", &to]);
    assert_eq!(v1.progress.ran(), ALL, "{}", v1.out.stderr);
    // A second build (another branch, say) exports to the same ref.
    write_files(ctx.path(), &[("late.txt", "late v2\n")]);
    let (v2, rootfs_v2) = build_rootfs(&a, ctx.path(), &["-t", "app:2", "--cache-to", &to]);
    assert_eq!(v2.progress.ran(), [COPY_LATE, RUN_LATE], "{}", v2.out.stderr);

    // An empty store finds both builds in the cache: the second export kept the first's records.
    let b = Forge::with_base().unwrap();
    for (late, rootfs, want) in [("late v1\n", &rootfs_v1, &v1), ("late v2\n", &rootfs_v2, &v2)] {
        write_files(ctx.path(), &[("late.txt", late)]);
        let (got, rootfs_b) = build_rootfs(&b, ctx.path(), &["-t", "app:b", "--cache-from", &from]);
        assert!(got.progress.ran().is_empty(), "{late:?} ran {:?}\n{}", got.progress.ran(), got.out.stderr);
        assert_eq!(read(&rootfs_b.join("combined")), read(&rootfs.join("combined")));
        assert_eq!(got.digest(), want.digest());
    }

    // max-size bounds a registry cache too (oldest generations go first; here everything).
    a.build(ctx.path(), &["-t", "app:2", "--cache-to", &format!("{to},max-size=1")]);
    let c = Forge::with_base().unwrap();
    let got = c.build(ctx.path(), &["-t", "app:c", "--cache-from", &from]);
    assert_eq!(got.progress.ran(), ALL, "{}", got.out.stderr);
}

#[test]
fn registry_cache_is_one_oci_manifest_with_a_forge_config() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let Some(a) = Forge::with_base() else { return };
    let ctx = app_context();
    let r = format!("{}/forge/shape:cache", reg.host());
    // The image is pushed too: the cache's blobs are mounted from its repository.
    let img = format!("{}/forge/shape:1", reg.host());
    a.build(
        ctx.path(),
        &[
            "-t",
            &img,
            "--push",
            "--cache-to",
            &format!("type=registry,ref={r}"),
        ],
    );
    let out = run_cmd(
        Command::new("curl")
            .args([
                "-sf",
                "-H",
                "Accept: application/vnd.oci.image.manifest.v1+json",
            ])
            .arg(format!(
                "http://{}/v2/forge/shape/manifests/cache",
                reg.host()
            )),
    );
    if out.code == 127 {
        skip_or_fail("curl");
        return;
    }
    let m: serde_json::Value = serde_json::from_str(&out.ok().stdout).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.forge.cache.config.v1+json"
    );
    // mode=min: the final image's own layers (base excluded: it is not a build step). The RUN
    // and COPY steps give five layers.
    assert_eq!(m["layers"].as_array().unwrap().len(), 5, "{m}");
}

#[test]
fn inline_cache_in_the_pushed_image() {
    let Some(reg) = Registry::start(None) else {
        return;
    };
    let Some(a) = Forge::with_base() else { return };
    let b = Forge::with_base().unwrap();
    let ctx = app_context();
    let img = format!("{}/forge/inline:1", reg.host());
    let (ba, rootfs_a) = build_rootfs(
        &a,
        ctx.path(),
        &["-t", &img, "--push", "--cache-to", "type=inline"],
    );
    assert_eq!(ba.progress.ran(), ALL);
    let (bb, rootfs_b) = build_rootfs(
        &b,
        ctx.path(),
        &[
            "-t",
            "x:1",
            "--cache-from",
            &format!("type=registry,ref={img}"),
        ],
    );
    assert!(
        bb.progress.ran().is_empty(),
        "the image's inline cache did not hit: ran {:?}\n{}",
        bb.progress.ran(),
        bb.out.stderr
    );
    assert_eq!(read(&rootfs_b.join("stamp")), read(&rootfs_a.join("stamp")));
    // An ordinary image without an inline cache is a warning, not an error.
    let plain = format!("{}/forge/plain:1", reg.host());
    b.build(ctx.path(), &["-t", &plain, "--push"]);
    let c = Forge::with_base().unwrap();
    let bc = c.build(
        ctx.path(),
        &[
            "-t",
            "y:1",
            "--cache-from",
            &format!("type=registry,ref={plain}"),
        ],
    );
    assert!(
        warnings(&bc).iter().any(|w| w.contains("inline cache")),
        "{}",
        bc.out.stderr
    );
    assert_eq!(bc.progress.ran(), ALL);
}

// ------------------------------------------------------------------ lazy fetching

/// mode=max exports the `tools` stage too. In B every step hits; the final image does not
/// contain the tools layer and no step needs its files (a bind mount's key is the stage's key),
/// so its blob is never copied into B's store.
#[test]
fn layers_nobody_needs_are_not_fetched() {
    let Some(a) = Forge::with_base() else { return };
    let b = Forge::with_base().unwrap();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox:local AS tools\n\
         RUN head -c 300000 /dev/urandom > /blob.bin\n\
         FROM busybox:local\n\
         RUN --mount=type=bind,from=tools,target=/t cat /proc/sys/kernel/random/uuid > /stamp && wc -c < /t/blob.bin > /size\n",
    )]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("cache");
    let (ba, rootfs_a) = build_rootfs(
        &a,
        ctx.path(),
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", d.display()),
        ],
    );
    assert_eq!(ba.progress.ran().len(), 2);
    assert_eq!(read(&rootfs_a.join("size")).trim(), "300000");
    let layers = cache_layers(&d);
    assert_eq!(
        layers.len(),
        2,
        "mode=max holds both RUN layers: {layers:?}"
    );
    let tools = layers.iter().max_by_key(|l| l.1).unwrap().0.clone();

    let before = store_blobs(&b);
    let (bb, rootfs_b) = build_rootfs(
        &b,
        ctx.path(),
        &["--cache-from", &format!("type=local,src={}", d.display())],
    );
    assert!(bb.progress.ran().is_empty(), "{}", bb.out.stderr);
    assert_eq!(read(&rootfs_b.join("stamp")), read(&rootfs_a.join("stamp")));
    let after = store_blobs(&b);
    assert!(
        !after.contains(&tools),
        "the tools layer was fetched although nothing needed it"
    );
    let small = layers.iter().find(|l| l.0 != tools).unwrap().0.clone();
    assert!(
        after.contains(&small),
        "the final image's layer must have been fetched"
    );
    // New blobs: the one fetched layer, plus the image's config and manifest.
    let new: Vec<_> = after.iter().filter(|x| !before.contains(x)).collect();
    assert_eq!(new.len(), 3, "new blobs in B: {new:?}");
}

// ------------------------------------------------------------------ damage

#[test]
fn missing_caches_warn_and_the_build_goes_on() {
    let Some(b) = Forge::with_base() else { return };
    let ctx = app_context();
    let nowhere = tempfile::tempdir().unwrap();
    let src = format!("type=local,src={}", nowhere.path().join("none").display());
    // A registry port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let reg = format!("type=registry,ref=127.0.0.1:{port}/none/cache:x");
    let bb = b.build(ctx.path(), &["--cache-from", &src, "--cache-from", &reg]);
    let w = warnings(&bb);
    assert_eq!(
        w.len(),
        2,
        "one warning per unusable cache: {w:?}\n{}",
        bb.out.stderr
    );
    assert!(w.iter().all(|l| l.contains("cannot import cache")), "{w:?}");
    assert_eq!(bb.progress.ran(), ALL);
}

#[test]
fn corrupted_cache_never_fails_a_build() {
    let Some(a) = Forge::with_base() else { return };
    let ctx = app_context();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("cache");
    let (_, rootfs_a) = build_rootfs(
        &a,
        ctx.path(),
        &["--cache-to", &format!("type=local,dest={}", d.display())],
    );

    // Damage one layer blob in place (same size, other bytes): found only when it is fetched.
    let layers = cache_layers(&d);
    let victim = layers.iter().max_by_key(|l| l.1).unwrap();
    let p = d.join("blobs/sha256").join(&victim.0);
    std::fs::write(&p, vec![0u8; victim.1 as usize]).unwrap();
    let b = Forge::with_base().unwrap();
    let (bb, rootfs_b) = build_rootfs(
        &b,
        ctx.path(),
        &["--cache-from", &format!("type=local,src={}", d.display())],
    );
    let w = warnings(&bb);
    assert!(
        w.iter().any(|l| l.contains("corrupt")),
        "no warning about the corrupt blob: {w:?}\n{}",
        bb.out.stderr
    );
    assert_eq!(read(&rootfs_b.join("early.txt")), "early\n");
    assert_eq!(read(&rootfs_b.join("late.txt")), "late v1\n");
    assert!(rootfs_b.join("combined").exists() && rootfs_a.join("combined").exists());
    assert!(
        !store_blobs(&b).contains(&victim.0),
        "a corrupt blob must never enter the store"
    );

    // Garbage where the config should be: a warning, the build runs everything.
    let index: serde_json::Value = serde_json::from_str(&read(&d.join("index.json"))).unwrap();
    let m = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    std::fs::write(d.join("blobs/sha256").join(m), b"{ not a manifest").unwrap();
    let c = Forge::with_base().unwrap();
    let bc = c.build(
        ctx.path(),
        &["--cache-from", &format!("type=local,src={}", d.display())],
    );
    assert!(
        warnings(&bc)
            .iter()
            .any(|l| l.contains("cannot import cache")),
        "{}",
        bc.out.stderr
    );
    assert_eq!(bc.progress.ran(), ALL);
}

// ------------------------------------------------------------------ portability

/// The same files checked out under umask 022 and 002 (and with other mtimes) give the same
/// keys: B, with the 002 checkout, hits everything A exported from the 022 checkout.
#[test]
fn umask_of_the_checkout_does_not_change_keys() {
    let Some(a) = Forge::with_base() else { return };
    let b = Forge::with_base().unwrap();
    let df = "FROM busybox:local\nCOPY src/ /app/\nRUN cat /proc/sys/kernel/random/uuid > /stamp && ls -ln /app > /listing\n";
    let files = [
        ("Dockerfile", df),
        ("src/main.sh", "#!/bin/sh\necho hi\n"),
        ("src/lib/data.txt", "data\n"),
    ];
    let checkout = |umask: u32, mtime: u64| {
        let c = context(&files);
        for (p, exec) in [
            ("src", true),
            ("src/lib", true),
            ("src/main.sh", true),
            ("src/lib/data.txt", false),
            ("Dockerfile", false),
        ] {
            let mode = if exec { 0o777 } else { 0o666 } & !umask;
            let path = c.path().join(p);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            if !path.is_dir() {
                set_mtime(&path, mtime);
            }
        }
        c
    };
    let c022 = checkout(0o022, 1_600_000_000);
    let c002 = checkout(0o002, 1_700_000_000);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("cache");
    let (ba, rootfs_a) = build_rootfs(
        &a,
        c022.path(),
        &["--cache-to", &format!("type=local,dest={}", d.display())],
    );
    let (bb, rootfs_b) = build_rootfs(
        &b,
        c002.path(),
        &["--cache-from", &format!("type=local,src={}", d.display())],
    );
    assert!(
        bb.progress.ran().is_empty(),
        "the umask-002 checkout missed: ran {:?}\n{}",
        bb.progress.ran(),
        bb.out.stderr
    );
    assert_eq!(bb.digest(), ba.digest());
    assert_eq!(read(&rootfs_b.join("stamp")), read(&rootfs_a.join("stamp")));
    // A cold build of the 002 checkout writes what a umask-022 checkout gives.
    let c = Forge::with_base().unwrap();
    let (_, rootfs_c) = build_rootfs(&c, c002.path(), &[] as &[&str]);
    let mode = |p: &str| {
        std::fs::metadata(rootfs_c.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        (
            mode("app/main.sh"),
            mode("app/lib/data.txt"),
            mode("app/lib")
        ),
        (0o755, 0o644, 0o755)
    );
}

/// `compression=zstd` re-encodes the exported layers (same diff_ids); an importing store runs
/// nothing and its image content is the same.
#[test]
fn zstd_cache_layers_import() {
    let Some(a) = Forge::with_base() else { return };
    let b = Forge::with_base().unwrap();
    let ctx = app_context();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("cache");
    let (_, rootfs_a) = build_rootfs(
        &a,
        ctx.path(),
        &[
            "--cache-to",
            &format!("type=local,dest={},compression=zstd", d.display()),
        ],
    );
    let index: serde_json::Value = serde_json::from_str(&read(&d.join("index.json"))).unwrap();
    let m = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&d.join("blobs/sha256").join(m))).unwrap();
    let types: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(types.len(), 5);
    assert!(
        types
            .iter()
            .all(|t| *t == "application/vnd.oci.image.layer.v1.tar+zstd"),
        "{types:?}"
    );
    let (bb, rootfs_b) = build_rootfs(
        &b,
        ctx.path(),
        &["--cache-from", &format!("type=local,src={}", d.display())],
    );
    assert!(bb.progress.ran().is_empty(), "{}", bb.out.stderr);
    assert_eq!(read(&rootfs_b.join("stamp")), read(&rootfs_a.join("stamp")));
    assert_eq!(
        read(&rootfs_b.join("combined")),
        read(&rootfs_a.join("combined"))
    );
}
