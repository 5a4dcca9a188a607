//! The commands besides `build`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use forge_cache::{PruneOptions, Store};
use forge_oci::archive::{self, ArchiveFormat, ImageToExport};
use forge_oci::{Descriptor, Digest, ImageConfig, Platform};
use forge_sandbox::{CancelToken, Mount, MountKind, Network, OutputStream, Rootfs, RunSpec, Sandbox};

use super::Failure;

/// `println!` that ends quietly when stdout is closed (`forge images | head`) instead of
/// panicking on the broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn open_store(root: Option<PathBuf>) -> Result<Store, Failure> {
    let root = root.unwrap_or_else(forge::default_root);
    Store::open(&root).map_err(|e| Failure::failed(format!("cannot open the store at {}: {e}", root.display())))
}

fn resolve(store: &Store, name: &str) -> Result<Digest, Failure> {
    store.resolve_image(name).map_err(|_| Failure::failed(format!("no such image: {name} (see `forge images`)")))
}

/// The single-platform manifest for an image name (an index picks the host platform).
fn resolve_manifest(store: &Store, name: &str) -> Result<Digest, Failure> {
    let d = resolve(store, name)?;
    store.platform_manifest(&d, &Platform::host()).map_err(Failure::from)
}

fn manifest_descriptor(store: &Store, d: &Digest) -> Result<Descriptor, Failure> {
    let bytes = store.read_blob(d)?;
    let mt = forge_registry::detect_media_type(None, &bytes).unwrap_or_else(|| forge_oci::media::OCI_MANIFEST.to_string());
    Ok(Descriptor::new(mt, d.clone(), bytes.len() as u64))
}

fn human_size(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", units[i]).replace(".000", "")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Print only image ids
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

pub fn images(root: Option<PathBuf>, a: ImagesArgs) -> Result<ExitCode, Failure> {
    let store = open_store(root)?;
    let list = store.list_images()?;
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for i in &list {
            let _ = writeln!(out, "{}", &i.config.hex()[..12]);
        }
        return Ok(ExitCode::SUCCESS);
    }
    match a.format {
        Format::Json => {
            let v: Vec<_> = list
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "names": i.names, "manifest": i.manifest.to_string(), "id": i.config.to_string(),
                        "created": i.created, "size": i.size, "platform": i.platform,
                    })
                })
                .collect();
            let _ = writeln!(out, "{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Format::Table => {
            let _ = writeln!(out, "{:<40} {:<12} {:<14} {:<22} {}", "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE");
            for i in &list {
                let names = if i.names.is_empty() { vec!["<none>:<none>".to_string()] } else { i.names.clone() };
                for n in names {
                    let (repo, tag) = match forge_oci::Reference::parse(&n) {
                        Ok(r) => (r.familiar().rsplit_once(':').map(|(a, _)| a.to_string()).unwrap_or(r.familiar()), r.tag.clone().unwrap_or_else(|| "<none>".into())),
                        Err(_) => ("<none>".to_string(), "<none>".to_string()),
                    };
                    let _ = writeln!(
                        out,
                        "{:<40} {:<12} {:<14} {:<22} {}",
                        repo,
                        tag,
                        &i.config.hex()[..12],
                        i.created.clone().unwrap_or_default(),
                        human_size(i.size)
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Images (names or digests)
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub fn inspect(root: Option<PathBuf>, a: InspectArgs) -> Result<ExitCode, Failure> {
    let store = open_store(root)?;
    let mut all = Vec::new();
    for name in &a.images {
        let d = resolve_manifest(&store, name)?;
        let (manifest, config, config_digest) = store.image(&d)?;
        let tags: Vec<String> = store.list_tags()?.into_iter().filter(|(_, t)| *t == d).map(|(n, _)| n).collect();
        all.push(serde_json::json!({
            "Id": config_digest.to_string(),
            "RepoTags": tags,
            "ManifestDigest": d.to_string(),
            "Manifest": manifest,
            "Config": config,
        }));
    }
    outln!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

pub fn tag(root: Option<PathBuf>, a: TagArgs) -> Result<ExitCode, Failure> {
    let store = open_store(root)?;
    let d = resolve(&store, &a.source)?;
    let name = forge_cache::normalize_tag(&a.target).map_err(|e| Failure::usage(format!("invalid name {:?}: {e}", a.target)))?;
    store.set_tag(&name, &d)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub fn rmi(root: Option<PathBuf>, a: RmiArgs) -> Result<ExitCode, Failure> {
    let store = open_store(root)?;
    for name in &a.images {
        let removed = match forge_cache::normalize_tag(name) {
            Ok(n) if store.get_tag(&n)?.is_some() => {
                store.remove_tag(&n)?;
                vec![n]
            }
            _ => {
                let d = resolve(&store, name)?;
                let names: Vec<String> = store.list_tags()?.into_iter().filter(|(_, t)| *t == d).map(|(n, _)| n).collect();
                for n in &names {
                    store.remove_tag(n)?;
                }
                names
            }
        };
        for n in removed {
            outln!("Untagged: {n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct PullArgs {
    pub reference: String,
    /// Platform to pull from a multi-platform image
    #[arg(long)]
    pub platform: Option<String>,
    /// Reach this registry over plain HTTP (repeatable)
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
}

fn registry_progress(p: forge_registry::Progress) {
    use forge_registry::Progress as P;
    match p {
        P::Resolved { reference, digest, .. } => eprintln!("{reference}: resolved to {digest}"),
        P::BlobDone { digest, size, outcome } => eprintln!("{}: {:?} ({})", digest.short(), outcome, human_size(size)),
        P::Retrying { digest, attempt, reason } => eprintln!("{}: retry {attempt}: {reason}", digest.short()),
        P::ManifestPushed { reference, digest } => eprintln!("{reference}: pushed {digest}"),
        _ => {}
    }
}

pub fn pull(root: Option<PathBuf>, a: PullArgs) -> Result<ExitCode, Failure> {
    let store = open_store(root)?;
    let platform = match &a.platform {
        Some(p) => Platform::parse(p).map_err(|e| Failure::usage(e.to_string()))?,
        None => Platform::host(),
    };
    // The lease keeps a concurrent prune from collecting blobs before the tag is written.
    let _lease = store.lease()?;
    let images = forge::registry_images::RegistryImages::new(store.clone(), &a.insecure_registries)?;
    let img = images.pull(&a.reference, &platform, &registry_progress)?;
    outln!("{}", img.manifest_digest);
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The image to push (a name in the store)
    pub reference: String,
    /// Where to push it [default: the same name]
    pub dest: Option<String>,
    /// Reach this registry over plain HTTP (repeatable)
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
}

pub fn push(root: Option<PathBuf>, a: PushArgs) -> Result<ExitCode, Failure> {
    let store = open_store(root)?;
    // The compressed copies of plain-tar layers a push makes belong to no tag yet.
    let _lease = store.lease()?;
    let d = resolve(&store, &a.reference)?;
    let dest = a.dest.clone().unwrap_or_else(|| a.reference.clone());
    let images = forge::registry_images::RegistryImages::new(store, &a.insecure_registries)?;
    let pushed = images.push_with(&d, &dest, &registry_progress)?;
    outln!("{pushed}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SaveFormat {
    /// OCI layout and docker-archive in one tar (what `docker save` writes since Docker 25)
    Combined,
    Oci,
    Docker,
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to this file [default: stdout]
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "combined")]
    pub format: SaveFormat,
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub fn save(root: Option<PathBuf>, a: SaveArgs) -> Result<ExitCode, Failure> {
    let store = open_store(root)?;
    let _lease = store.lease()?;
    let mut exports = Vec::new();
    for name in &a.images {
        let d = resolve_manifest(&store, name)?;
        let names = match forge_cache::normalize_tag(name) {
            Ok(n) if store.get_tag(&n)?.is_some() => vec![n],
            _ => Vec::new(),
        };
        // Layers a build stored as plain tars leave the store gzip-compressed (indexes, and
        // images whose layers are all compressed, go out as they are).
        let manifest = match manifest_descriptor(&store, &d)? {
            m if forge_oci::media::is_manifest(&m.media_type) => store.export_image(&d, forge_oci::Compression::default())?,
            m => m,
        };
        exports.push(ImageToExport { names, manifest });
    }
    let format = match a.format {
        SaveFormat::Combined => ArchiveFormat::Combined,
        SaveFormat::Oci => ArchiveFormat::Oci,
        SaveFormat::Docker => ArchiveFormat::Docker,
    };
    match &a.output {
        Some(p) => {
            let tmp = p.with_file_name(format!(".{}.forge-tmp", p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default()));
            let mut f = std::fs::File::create(&tmp).map_err(|e| Failure::failed(format!("{}: {e}", tmp.display())))?;
            let r = archive::write_archive(&store, &exports, format, &mut f);
            if let Err(e) = r {
                let _ = std::fs::remove_file(&tmp);
                return Err(Failure::failed(format!("saving to {}: {e}", p.display())));
            }
            f.sync_all().map_err(|e| Failure::failed(e.to_string()))?;
            std::fs::rename(&tmp, p).map_err(|e| Failure::failed(format!("{}: {e}", p.display())))?;
        }
        None => {
            let out = std::io::stdout().lock();
            archive::write_archive(&store, &exports, format, out).map_err(|e| Failure::failed(e.to_string()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from this tar or OCI layout directory [default: stdin]
    #[arg(short = 'i', long = "input")]
    pub input: Option<PathBuf>,
}

pub fn load(root: Option<PathBuf>, a: LoadArgs) -> Result<ExitCode, Failure> {
    let store = open_store(root)?;
    let _lease = store.lease()?;
    let _spool;
    let path = match &a.input {
        Some(p) => p.clone(),
        None => {
            let tmp = store.temp_dir("load").map_err(Failure::from)?;
            let p = tmp.path().join("stdin.tar");
            let mut f = std::fs::File::create(&p).map_err(|e| Failure::failed(e.to_string()))?;
            std::io::copy(&mut std::io::stdin().lock(), &mut f).map_err(|e| Failure::failed(format!("reading stdin: {e}")))?;
            _spool = tmp;
            p
        }
    };
    let imported = archive::import(&path, &store).map_err(|e| Failure::failed(format!("loading {}: {e}", path.display())))?;
    if imported.is_empty() {
        return Err(Failure::failed(format!("{}: no images found", path.display())));
    }
    for img in imported {
        if img.names.is_empty() {
            outln!("Loaded image ID: {}", img.manifest.digest);
        }
        for n in &img.names {
            let name = forge_cache::normalize_tag(n).map_err(|e| Failure::failed(format!("image name {n:?} in the archive: {e}")))?;
            store.set_tag(&name, &img.manifest.digest)?;
            outln!("Loaded image: {n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Imports an OCI layout (`PATH[:TAG]`) for `--build-context NAME=oci-layout://…`; returns the
/// manifest digest to build from.
pub fn import_oci_layout(root: &Path, spec: &str) -> Result<String, Failure> {
    let store = Store::open(root).map_err(Failure::from)?;
    let _lease = store.lease()?;
    let (path, tag) = match spec.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') && Path::new(p).exists() => (p, Some(t)),
        _ => (spec, None),
    };
    let imported = archive::import(Path::new(path), &store).map_err(|e| Failure::usage(format!("oci-layout://{spec}: {e}")))?;
    let pick = match tag {
        Some(t) => imported.iter().find(|i| i.names.iter().any(|n| n == t || n.ends_with(&format!(":{t}")))),
        None => imported.first(),
    };
    pick.map(|i| i.manifest.digest.to_string())
        .ok_or_else(|| Failure::usage(format!("oci-layout://{spec}: no image{} in the layout", tag.map(|t| format!(" tagged {t}")).unwrap_or_default())))
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A root filesystem: a directory or a tar (optionally gzip or zstd compressed)
    pub source: PathBuf,
    /// Name for the new image
    pub name: String,
    /// Set the image's CMD (JSON array or a command line run by /bin/sh -c)
    #[arg(long)]
    pub cmd: Option<String>,
}

pub fn import(root: Option<PathBuf>, a: ImportArgs) -> Result<ExitCode, Failure> {
    use forge_oci::layer::{write_layer, LayerOptions, SourceKind};
    let store = open_store(root)?;
    let _lease = store.lease()?;
    let tmp = store.temp_dir("import")?;
    let dir = if a.source.is_dir() {
        a.source.clone()
    } else {
        let d = tmp.path().join("fs");
        std::fs::create_dir(&d).map_err(|e| Failure::failed(e.to_string()))?;
        let f = std::fs::File::open(&a.source).map_err(|e| Failure::usage(format!("{}: {e}", a.source.display())))?;
        forge_oci::apply::apply_layer(std::io::BufReader::new(f), &d, &forge_oci::apply::ApplyOptions::new(forge_oci::apply::ApplyMode::Merged))
            .map_err(|e| Failure::failed(format!("{}: {e}", a.source.display())))?;
        d
    };
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.parse().ok());
    let opts = LayerOptions { compression: forge_oci::Compression::default(), source_date_epoch: epoch, kind: SourceKind::Tree };
    let w = store.blob_writer()?;
    let (info, w) = write_layer(&dir, &opts, w).map_err(|e| Failure::failed(format!("{}: {e}", dir.display())))?;
    let (digest, size) = w.commit(Some(&info.digest))?;
    let mut config = ImageConfig::scratch(&Platform::host());
    config.rootfs.diff_ids.push(info.diff_id.clone());
    config.created = Some(forge_solver::build::rfc3339(epoch.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    })));
    config.config.env = Some(vec![format!("PATH={}", forge_sandbox::DEFAULT_PATH)]);
    if let Some(c) = &a.cmd {
        config.config.cmd = Some(match serde_json::from_str::<Vec<String>>(c) {
            Ok(v) => v,
            Err(_) => vec!["/bin/sh".into(), "-c".into(), c.clone()],
        });
    }
    config.history.push(forge_oci::History {
        created: config.created.clone(),
        created_by: Some(format!("forge import {}", a.source.display())),
        ..Default::default()
    });
    let layer = forge_solver::Layer { diff_id: info.diff_id, blob: Descriptor::new(info.media_type, digest, size) };
    let (manifest_digest, ..) = forge_solver::layers::write_image(&store, &config, &[layer]).map_err(|e| Failure::failed(e.to_string()))?;
    let name = forge_cache::normalize_tag(&a.name).map_err(|e| Failure::usage(format!("invalid name {:?}: {e}", a.name)))?;
    store.set_tag(&name, &manifest_digest)?;
    outln!("{manifest_digest}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Accepted for docker compatibility: forge never keeps a container after it exits
    #[arg(long)]
    pub rm: bool,
    /// Set an environment variable (repeatable)
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Bind mount HOST:CONTAINER[:ro] (repeatable)
    #[arg(short = 'v', long = "volume", value_name = "HOST:CTR[:ro]")]
    pub volumes: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// User name or uid[:gid]
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Override the image's entrypoint
    #[arg(long)]
    pub entrypoint: Option<String>,
    pub image: String,
    /// Command and arguments (replace the image's CMD)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn run_image(root: Option<PathBuf>, a: RunArgs) -> Result<ExitCode, Failure> {
    let store = open_store(root)?;
    let d = resolve_manifest(&store, &a.image)?;
    let (manifest, config, _) = store.image(&d)?;
    let mut lower = Vec::new();
    for (blob, diff) in manifest.layers.iter().zip(config.rootfs.diff_ids.iter()).rev() {
        let l = forge_solver::Layer { diff_id: diff.clone(), blob: blob.clone() };
        let snap = forge_solver::layers::ensure_snapshot(&store, &l).map_err(|e| Failure::failed(e.to_string()))?;
        // Identical layers share a snapshot; overlayfs refuses a lowerdir listed twice.
        if !lower.contains(&snap) {
            lower.push(snap);
        }
    }
    let c = &config.config;
    let mut args: Vec<String> = match &a.entrypoint {
        Some(e) => vec![e.clone()],
        None => c.entrypoint.clone().unwrap_or_default(),
    };
    if a.command.is_empty() {
        if a.entrypoint.is_none() {
            args.extend(c.cmd.clone().unwrap_or_default());
        }
    } else {
        args.extend(a.command.iter().cloned());
    }
    if args.is_empty() {
        return Err(Failure::usage(format!("{}: the image has no CMD or ENTRYPOINT; give a command", a.image)));
    }
    let mut env = c.env.clone().unwrap_or_default();
    for e in &a.env {
        let e = if e.contains('=') { e.clone() } else { format!("{e}={}", std::env::var(e).unwrap_or_default()) };
        let key = e.split('=').next().unwrap_or("").to_string();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(e);
    }
    let mut mounts = Vec::new();
    for v in &a.volumes {
        let parts: Vec<&str> = v.split(':').collect();
        let (host, target, ro) = match parts.as_slice() {
            [h, t] => (*h, *t, false),
            [h, t, "ro"] => (*h, *t, true),
            [h, t, "rw"] => (*h, *t, false),
            _ => return Err(Failure::usage(format!("-v {v}: expected HOST:CONTAINER[:ro]"))),
        };
        let host = std::fs::canonicalize(host).map_err(|e| Failure::usage(format!("-v {v}: {host}: {e}")))?;
        mounts.push(Mount { target: target.to_string(), kind: MountKind::Bind { source: host, readonly: ro } });
    }
    let tmp = store.temp_dir("run")?;
    let (upper, work) = (tmp.path().join("upper"), tmp.path().join("work"));
    for p in [&upper, &work] {
        std::fs::create_dir(p).map_err(|e| Failure::failed(e.to_string()))?;
    }
    let mut spec = RunSpec::new(Rootfs::Overlay { lower, upper, work }, args);
    spec.env = env;
    spec.cwd = a.workdir.clone().or_else(|| c.working_dir.clone()).filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into());
    spec.user = a.user.clone().or_else(|| c.user.clone()).filter(|u| !u.is_empty());
    spec.network = Network::Host;
    spec.mounts = mounts;
    let cancel = CancelToken::new();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let status = Sandbox::new()
        .run(
            &spec,
            &mut |s, bytes| {
                let _ = match s {
                    OutputStream::Stdout => out.write_all(bytes).and_then(|_| out.flush()),
                    OutputStream::Stderr => err.write_all(bytes),
                };
            },
            &cancel,
        )
        .map_err(|e| Failure::failed(e.to_string()))?;
    let code = match (status.code, status.signal) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Also drop the whole build cache (only named images survive)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Also remove RUN --mount=type=cache directories
    #[arg(long)]
    pub cache_mounts: bool,
    /// Accepted for docker compatibility (forge never asks)
    #[arg(short = 'f', long)]
    pub force: bool,
}

pub fn prune(root: Option<PathBuf>, a: PruneArgs) -> Result<ExitCode, Failure> {
    let store = open_store(root)?;
    let opts = PruneOptions { all_records: a.all, cache_mounts: a.cache_mounts, ..Default::default() };
    let r = store.prune(&opts)?;
    outln!(
        "removed {} blobs, {} snapshots, {} cache records, {} temporary items, {} cache mounts; freed {}",
        r.blobs_removed,
        r.snapshots_removed,
        r.records_removed,
        r.temp_removed,
        r.cache_mounts_removed,
        human_size(r.bytes_freed)
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Remove what is corrupt or incomplete
    #[arg(long)]
    pub repair: bool,
}

pub fn check(root: Option<PathBuf>, a: CheckArgs) -> Result<ExitCode, Failure> {
    let store = open_store(root)?;
    let r = store.check(a.repair)?;
    outln!(
        "checked {} blobs, {} snapshots, {} tags, {} cache records",
        r.blobs_checked, r.snapshots_checked, r.tags_checked, r.records_checked
    );
    let mut problems = 0;
    for d in &r.corrupt_blobs {
        outln!("corrupt blob {d}");
        problems += 1;
    }
    for s in &r.incomplete_snapshots {
        outln!("incomplete snapshot {s}");
        problems += 1;
    }
    for t in &r.dangling_tags {
        outln!("dangling tag {t}");
        problems += 1;
    }
    for m in &r.missing_blobs {
        outln!("missing blob {} (needed by {})", m.digest, m.referenced_by);
        problems += 1;
    }
    if problems == 0 {
        outln!("no problems found");
        Ok(ExitCode::SUCCESS)
    } else if a.repair {
        outln!("{problems} problems found and repaired where possible");
        Ok(ExitCode::SUCCESS)
    } else {
        outln!("{problems} problems found; run `forge check --repair`");
        Ok(ExitCode::from(1))
    }
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    pub server: String,
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin)
    #[arg(short = 'p', long)]
    pub password: Option<String>,
    /// Read the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
}

pub fn login(a: LoginArgs) -> Result<ExitCode, Failure> {
    let user = a.username.clone().ok_or_else(|| Failure::usage("--username is required"))?;
    let password = match (&a.password, a.password_stdin) {
        (Some(_), true) => return Err(Failure::usage("--password and --password-stdin are mutually exclusive")),
        (Some(p), false) => p.clone(),
        (None, true) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| Failure::failed(e.to_string()))?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => return Err(Failure::usage("give --password-stdin (or --password)")),
    };
    let client = forge_registry::Client::new(forge_registry::ClientOptions::default())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Failure::failed(e.to_string()))?;
    rt.block_on(client.login(&a.server, &user, &password))?;
    outln!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    pub server: String,
}

pub fn logout(a: LogoutArgs) -> Result<ExitCode, Failure> {
    let client = forge_registry::Client::new(forge_registry::ClientOptions::default())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Failure::failed(e.to_string()))?;
    if rt.block_on(client.logout(&a.server))? {
        outln!("Removing login credentials for {}", a.server);
    } else {
        outln!("Not logged in to {}", a.server);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct LintArgs {
    /// The Dockerfile [default: ./Dockerfile]
    #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
    pub file: PathBuf,
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub fn lint(a: LintArgs) -> Result<ExitCode, Failure> {
    let text = std::fs::read_to_string(&a.file).map_err(|e| Failure::usage(format!("{}: {e}", a.file.display())))?;
    let diags = forge_parser::lint(&text);
    let name = a.file.display().to_string();
    let errors = diags.iter().filter(|d| d.severity == forge_parser::Severity::Error).count();
    match a.format {
        Format::Json => {
            let v: Vec<_> = diags
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "severity": if d.severity == forge_parser::Severity::Error { "error" } else { "warning" },
                        "rule": d.rule, "message": d.message, "help": d.help,
                        "file": name, "line": d.span.line, "column": d.span.column,
                    })
                })
                .collect();
            outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Format::Table => {
            for d in &diags {
                print!("{}", d.render(&name, &text));
            }
            let warnings = diags.len() - errors;
            outln!("{name}: {errors} error(s), {warnings} warning(s)");
        }
    }
    Ok(if errors > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

#[derive(Args, Debug)]
pub struct VersionArgs {
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub fn version(a: VersionArgs) -> Result<ExitCode, Failure> {
    let v = env!("CARGO_PKG_VERSION");
    let platform = Platform::host().to_string();
    match a.format {
        Format::Json => outln!("{}", serde_json::json!({ "version": v, "platform": platform })),
        Format::Table => outln!("forge {v} ({platform})"),
    }
    Ok(ExitCode::SUCCESS)
}
