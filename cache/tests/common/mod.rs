//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use forge_cache::{OpenOptions, Store};
use forge_oci::{
    image::to_canonical_json, media, Descriptor, Digest, ImageConfig, Manifest, Platform,
};

/// A fresh store in a temp dir (durable writes on, as in production).
pub fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store")).expect("open store");
    (dir, store)
}

/// A fresh store with fsync turned off, for tests that write a lot.
pub fn fast_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(&dir.path().join("store"), &OpenOptions { durable: false })
        .expect("open store");
    (dir, store)
}

/// An image put into a store: its manifest, config, layer blobs and layer diff_ids.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub manifest: Digest,
    pub manifest_size: u64,
    pub config: Digest,
    pub layers: Vec<Digest>,
    pub layer_sizes: Vec<u64>,
    pub diff_ids: Vec<Digest>,
}

/// Writes a small image: each layer's "compressed" bytes are `layer` itself, its diff_id is the
/// digest of `b"diff:" + layer`. Nothing is tagged.
pub fn put_image(store: &Store, layers: &[&[u8]], created: &str) -> TestImage {
    put_image_for(store, layers, created, &Platform::host())
}

pub fn put_image_for(
    store: &Store,
    layers: &[&[u8]],
    created: &str,
    platform: &Platform,
) -> TestImage {
    let mut layer_digests = Vec::new();
    let mut sizes = Vec::new();
    let mut diff_ids = Vec::new();
    let mut descs = Vec::new();
    for l in layers {
        let d = store.put_blob_bytes(l).unwrap();
        descs.push(Descriptor::new(
            media::OCI_LAYER_GZIP,
            d.clone(),
            l.len() as u64,
        ));
        layer_digests.push(d);
        sizes.push(l.len() as u64);
        diff_ids.push(Digest::of(&[b"diff:".as_slice(), l].concat()));
    }
    let mut cfg = ImageConfig::scratch(platform);
    cfg.created = Some(created.to_string());
    cfg.rootfs.diff_ids = diff_ids.clone();
    let cfg_bytes = to_canonical_json(&cfg);
    let config = store.put_blob_bytes(&cfg_bytes).unwrap();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.to_string()),
        artifact_type: None,
        config: Descriptor::new(media::OCI_CONFIG, config.clone(), cfg_bytes.len() as u64),
        layers: descs,
        annotations: None,
    };
    let m_bytes = to_canonical_json(&manifest);
    let manifest = store.put_blob_bytes(&m_bytes).unwrap();
    TestImage {
        manifest,
        manifest_size: m_bytes.len() as u64,
        config,
        layers: layer_digests,
        layer_sizes: sizes,
        diff_ids,
    }
}

/// Creates the snapshots of an image's layers, each holding one file named after the layer.
pub fn put_snapshots(store: &Store, img: &TestImage) {
    for (i, d) in img.diff_ids.iter().enumerate() {
        store
            .create_snapshot(d, |dir| {
                fs::write(dir.join(format!("layer{i}")), d.to_string())
            })
            .unwrap();
    }
}

/// The names of the entries directly under `dir`, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn tmp_entries(store: &Store) -> Vec<String> {
    entries(&store.root().join("tmp"))
}

/// The env var that turns a test binary into a child worker.
pub const CHILD_ENV: &str = "FORGE_CACHE_TEST_CHILD";

/// A child test process, killed (SIGKILL) and reaped when dropped so a failing test never
/// leaves workers behind.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns this test binary running only the test `entry`, with the child role in the env.
/// Its stdin and stdout are piped so the parent can wait for a READY line and send GO.
pub fn spawn_child(entry: &str, role: &str, root: &Path) -> ChildGuard {
    ChildGuard(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", entry, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, role)
            .env("FORGE_CACHE_TEST_ROOT", root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child test process"),
    )
}

/// The role and store root when this process is a child worker.
pub fn child_role() -> Option<(String, PathBuf)> {
    let role = std::env::var(CHILD_ENV).ok()?;
    let root = PathBuf::from(std::env::var_os("FORGE_CACHE_TEST_ROOT")?);
    Some((role, root))
}

/// Reads the child's stdout until a line equal to `READY` (panics if it exits first).
pub fn wait_ready(child: &mut ChildGuard) -> BufReader<std::process::ChildStdout> {
    let mut out = BufReader::new(child.0.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).unwrap();
        assert!(n > 0, "child exited before it was ready");
        // libtest prints `test <name> ... ` without a newline before the test's own output.
        if line.trim_end().ends_with("READY") {
            return out;
        }
    }
}

/// In a child: announces READY on stdout, then blocks until the parent writes a line to stdin.
pub fn ready_then_wait_for_go() {
    println!("\nREADY");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
}

/// In the parent: lets a child that called `ready_then_wait_for_go` proceed.
pub fn send_go(child: &mut ChildGuard) {
    use std::io::Write;
    let stdin = child.0.stdin.as_mut().expect("piped stdin");
    stdin.write_all(b"GO\n").unwrap();
    stdin.flush().unwrap();
}

/// A pid that is certainly not running: a child that already exited and was reaped.
pub fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().expect("spawn true");
    let pid = c.id();
    c.wait().unwrap();
    pid
}
