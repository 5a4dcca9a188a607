//! [`Build`]: the builder-style entry point of the library.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use forge_cache::Store;
use forge_oci::{Compression, Digest, ImageConfig, Platform};
use forge_parser::NetworkMode;
use forge_sandbox::{CancelToken, Sandbox};
use forge_solver::{BuildOptions, Event, NamedContext, Secret};

use crate::output::{self, Output};
use crate::registry_images::RegistryImages;
use crate::Error;

/// A `--cache-from` / `--cache-to` spec (`type=registry,ref=…` or `type=local,src|dest=…`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSpec {
    pub kind: String,
    pub attrs: BTreeMap<String, String>,
}

impl CacheSpec {
    /// Parses `type=registry,ref=REF,mode=max` style specs.
    pub fn parse(s: &str) -> Result<CacheSpec, Error> {
        let attrs = output::parse_kv(s)?;
        let kind = attrs.get("type").cloned().ok_or_else(|| Error::Usage(format!("cache spec {s:?} needs type=registry|local")))?;
        Ok(CacheSpec { kind, attrs })
    }
}

/// What a successful build produced.
#[derive(Clone, Debug)]
pub struct BuildResult {
    /// The image manifest's digest (what registries and `docker pull` name).
    pub manifest_digest: Digest,
    /// The image config's digest: Docker's image ID.
    pub config_digest: Digest,
    pub config: ImageConfig,
    /// Tags written into the local store, normalized (`docker.io/library/app:latest`).
    pub tags: Vec<String>,
    /// References pushed to registries.
    pub pushed: Vec<String>,
    pub steps_run: usize,
    pub steps_cached: usize,
}

type Callback = Arc<dyn Fn(Event) + Send + Sync>;

/// A build to run. Every setter consumes and returns the builder.
#[derive(Clone)]
pub struct Build {
    context: PathBuf,
    dockerfile: Option<PathBuf>,
    dockerfile_text: Option<String>,
    tags: Vec<String>,
    build_args: BTreeMap<String, String>,
    target: Option<String>,
    outputs: Vec<Output>,
    cache_from: Vec<CacheSpec>,
    cache_to: Vec<CacheSpec>,
    platform: Option<String>,
    no_cache: bool,
    no_cache_filter: Vec<String>,
    pull: bool,
    push: bool,
    labels: BTreeMap<String, String>,
    network: NetworkMode,
    secrets: BTreeMap<String, Secret>,
    ssh: BTreeMap<String, PathBuf>,
    build_contexts: BTreeMap<String, NamedContext>,
    root: Option<PathBuf>,
    source_date_epoch: Option<i64>,
    allow_insecure: bool,
    insecure_registries: Vec<String>,
    compression: Option<Compression>,
    max_parallel_runs: Option<usize>,
    explain: bool,
    callback: Option<Callback>,
    cancel: CancelToken,
}

impl std::fmt::Debug for Build {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Build")
            .field("context", &self.context)
            .field("dockerfile", &self.dockerfile)
            .field("tags", &self.tags)
            .field("target", &self.target)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl Build {
    /// A build of the context directory `context`, with `context/Dockerfile` unless told otherwise.
    pub fn new(context: impl Into<PathBuf>) -> Build {
        Build {
            context: context.into(),
            dockerfile: None,
            dockerfile_text: None,
            tags: Vec::new(),
            build_args: BTreeMap::new(),
            target: None,
            outputs: Vec::new(),
            cache_from: Vec::new(),
            cache_to: Vec::new(),
            platform: None,
            no_cache: false,
            no_cache_filter: Vec::new(),
            pull: false,
            push: false,
            labels: BTreeMap::new(),
            network: NetworkMode::Default,
            secrets: BTreeMap::new(),
            ssh: BTreeMap::new(),
            build_contexts: BTreeMap::new(),
            root: None,
            source_date_epoch: std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse().ok()),
            allow_insecure: false,
            insecure_registries: Vec::new(),
            compression: None,
            max_parallel_runs: None,
            explain: false,
            callback: None,
            cancel: CancelToken::new(),
        }
    }

    /// The Dockerfile's path (default: `CONTEXT/Dockerfile`).
    pub fn dockerfile(mut self, path: impl Into<PathBuf>) -> Build {
        self.dockerfile = Some(path.into());
        self
    }

    /// The Dockerfile's text, instead of a file.
    pub fn dockerfile_text(mut self, text: impl Into<String>) -> Build {
        self.dockerfile_text = Some(text.into());
        self
    }

    /// Stores the image under this name in the local store (repeatable).
    pub fn tag(mut self, name: impl Into<String>) -> Build {
        self.tags.push(name.into());
        self
    }

    pub fn build_arg(mut self, key: impl Into<String>, value: impl Into<String>) -> Build {
        self.build_args.insert(key.into(), value.into());
        self
    }

    /// Builds this stage instead of the last one.
    pub fn target(mut self, stage: impl Into<String>) -> Build {
        self.target = Some(stage.into());
        self
    }

    /// Adds an output (repeatable).
    pub fn output(mut self, output: Output) -> Build {
        self.outputs.push(output);
        self
    }

    /// Imports a build cache (repeatable): `type=registry,ref=REF` (a cache manifest or an image
    /// with an inline cache) or `type=local,src=DIR`. Only the cache's manifest and config are
    /// read up front; layers are fetched when a step needs them. An unusable cache is a
    /// warning, never an error. See `docs/remote-cache.md`.
    pub fn cache_from(mut self, spec: CacheSpec) -> Build {
        self.cache_from.push(spec);
        self
    }

    /// Exports the build cache after the build: `type=registry,ref=REF`, `type=local,dest=DIR`
    /// (attrs `mode=min|max`, `compression=gzip|zstd`, `max-size=` for local,
    /// `ignore-error=true`), or `type=inline` (records in the image's own config).
    pub fn cache_to(mut self, spec: CacheSpec) -> Build {
        self.cache_to.push(spec);
        self
    }

    /// `os/arch[/variant]`; default: the host's.
    pub fn platform(mut self, platform: impl Into<String>) -> Build {
        self.platform = Some(platform.into());
        self
    }

    pub fn no_cache(mut self, yes: bool) -> Build {
        self.no_cache = yes;
        self
    }

    pub fn no_cache_filter(mut self, stage: impl Into<String>) -> Build {
        self.no_cache_filter.push(stage.into());
        self
    }

    /// Checks the registry for newer base images even when they are in the store.
    pub fn pull(mut self, yes: bool) -> Build {
        self.pull = yes;
        self
    }

    /// Pushes every tag after the build.
    pub fn push(mut self, yes: bool) -> Build {
        self.push = yes;
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Build {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn network(mut self, mode: NetworkMode) -> Build {
        self.network = mode;
        self
    }

    /// A secret for `RUN --mount=type=secret,id=ID`.
    pub fn secret(mut self, id: impl Into<String>, value: impl Into<Vec<u8>>) -> Build {
        self.secrets.insert(id.into(), Secret(value.into()));
        self
    }

    /// An ssh agent socket for `RUN --mount=type=ssh`.
    pub fn ssh(mut self, id: impl Into<String>, socket: impl Into<PathBuf>) -> Build {
        self.ssh.insert(id.into(), socket.into());
        self
    }

    pub fn build_context(mut self, name: impl Into<String>, ctx: NamedContext) -> Build {
        self.build_contexts.insert(name.into(), ctx);
        self
    }

    /// The store directory (default: [`crate::default_root`]).
    pub fn root(mut self, dir: impl Into<PathBuf>) -> Build {
        self.root = Some(dir.into());
        self
    }

    /// Clamps timestamps for reproducible images (default: `$SOURCE_DATE_EPOCH`).
    pub fn source_date_epoch(mut self, epoch: Option<i64>) -> Build {
        self.source_date_epoch = epoch;
        self
    }

    /// Allows `RUN --security=insecure`.
    pub fn allow_insecure(mut self, yes: bool) -> Build {
        self.allow_insecure = yes;
        self
    }

    /// A registry host to reach over plain HTTP.
    pub fn insecure_registry(mut self, host: impl Into<String>) -> Build {
        self.insecure_registries.push(host.into());
        self
    }

    /// Layer compression. Without one, the layers a build makes are stored as plain tars and
    /// compressed with gzip (level 1) only when the image leaves the store: a push, an OCI or
    /// Docker archive output, a remote cache. With one, they are compressed as they are made.
    pub fn compression(mut self, c: Compression) -> Build {
        self.compression = Some(c);
        self
    }

    /// How many RUN steps may run at once (default: the number of cores).
    pub fn max_parallel_runs(mut self, n: usize) -> Build {
        self.max_parallel_runs = Some(n);
        self
    }

    /// Reports why each step missed the cache, as [`Event::Explain`] events.
    pub fn explain(mut self, yes: bool) -> Build {
        self.explain = yes;
        self
    }

    /// Calls `f` for every progress event (from worker threads).
    pub fn on_event(mut self, f: impl Fn(Event) + Send + Sync + 'static) -> Build {
        self.callback = Some(Arc::new(f));
        self
    }

    /// Returns a receiver of progress events; the stream ends when the build ends.
    pub fn events(mut self) -> (Build, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        self.callback = Some(Arc::new(move |e| {
            let _ = tx.lock().map(|t| t.send(e));
        }));
        (self, rx)
    }

    /// A token that cancels the build from another thread.
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    fn read_dockerfile(&self) -> Result<(String, Option<PathBuf>), Error> {
        if let Some(t) = &self.dockerfile_text {
            return Ok((t.clone(), self.dockerfile.clone()));
        }
        let path = self.dockerfile.clone().unwrap_or_else(|| self.context.join("Dockerfile"));
        match std::fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| Error::Usage(format!("{}: the Dockerfile is not valid UTF-8", path.display())))?;
                Ok((text, Some(path)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::Usage(format!("Dockerfile not found at {} (use -f to name it)", path.display())))
            }
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Runs the build and its outputs.
    pub fn run(self) -> Result<BuildResult, Error> {
        let (text, df_path) = self.read_dockerfile()?;
        if !self.context.is_dir() {
            return Err(Error::Usage(format!("build context {} is not a directory", self.context.display())));
        }
        crate::remote_cache::validate_exports(&self.cache_to)?;
        let platform = match &self.platform {
            Some(p) => Platform::parse(p).map_err(|e| Error::Usage(e.to_string()))?,
            None => Platform::host(),
        };
        let root = self.root.clone().unwrap_or_else(Store::default_root);
        // Build without an fsync per file: one syncfs before the image is named makes the result
        // durable. A killed process still never leaves anything half-written visible.
        // FORGE_FSYNC=always restores a flush per write.
        let per_write = std::env::var("FORGE_FSYNC").map(|v| v == "always").unwrap_or(false);
        let store = Store::open_with(&root, &forge_cache::OpenOptions { durable: per_write })?;
        // One lease for the whole build, not just the solve: the manifest and config the solver
        // writes are reachable only once tagged (or exported), and a concurrent `forge prune`
        // between the solve and `set_tag` would delete them under a "successful" build.
        let _lease = store.lease()?;
        // Without an explicit compression a build that only names a local image stores its
        // layers as plain tars: nothing is compressed until the image leaves the store (`forge
        // push`, `forge save`). A build that exports, pushes or writes a cache compresses as it
        // goes (gzip), so the image it reports, tags, exports and caches is one manifest (and a
        // store that imports the cache rebuilds exactly that manifest).
        let exports = self.push
            || !self.cache_to.is_empty()
            || self.outputs.iter().any(|o| matches!(o, Output::Oci { .. } | Output::Docker { .. } | Output::Image { push: true, .. }));
        let compression = self
            .compression
            .or_else(|| self.outputs.iter().find_map(|o| o.compression()))
            .or_else(|| exports.then(Compression::default));
        let export_compression = compression.unwrap_or_default();
        let mut opts = BuildOptions::new(self.context.clone(), text);
        opts.dockerfile_path = df_path;
        opts.build_args = self.build_args.clone();
        opts.target = self.target.clone();
        opts.platform = platform.clone();
        opts.no_cache = self.no_cache;
        opts.no_cache_filter = self.no_cache_filter.clone();
        opts.pull = self.pull;
        opts.labels = self.labels.clone();
        opts.network = self.network;
        opts.secrets = self.secrets.clone();
        opts.ssh = self.ssh.clone();
        opts.build_contexts = self.build_contexts.clone();
        opts.compression = compression;
        opts.source_date_epoch = self.source_date_epoch;
        opts.allow_insecure = self.allow_insecure;
        opts.explain = self.explain;
        opts.url_fetcher = forge_solver::Fetcher(Some(Arc::new(crate::fetch::HttpFetcher::default())));
        if let Some(n) = self.max_parallel_runs {
            opts.max_parallel_runs = n;
        }
        let callback: Callback = self.callback.clone().unwrap_or_else(|| Arc::new(|_| {}));
        let images = RegistryImages::new(store.clone(), &self.insecure_registries)?.with_compression(export_compression);
        let sandbox = Sandbox::new();
        let net = crate::remote_cache::LazyNet::new(&self.insecure_registries);
        let warn = crate::remote_cache::warner(callback.clone());
        let poisoned = crate::remote_cache::Poisoned::default();
        opts.remote_caches = crate::remote_cache::import(&self.cache_from, &store, &net, &platform, &poisoned, &warn)?;
        let mut out = loop {
            match forge_solver::build(&store, &images, &sandbox, &opts, &*callback, &self.cancel) {
                Ok(out) => break out,
                Err(e) => {
                    // A corrupt or missing blob in an imported cache never fails the build: the
                    // records using it are ignored and the build runs again (what it already
                    // did is in the local cache now).
                    let bad = poisoned.take_new();
                    if bad.is_empty() {
                        return Err(e.into());
                    }
                    for (_, why) in bad {
                        warn(format!("{why}; ignoring the cache records that use it and retrying"));
                    }
                }
            }
        };
        if self.cache_to.iter().any(|c| c.kind == "inline") {
            crate::remote_cache::inline(&store, &mut out)?;
        }

        store.sync()?;
        let mut tags = Vec::new();
        for t in &self.tags {
            let name = forge_cache::normalize_tag(t).map_err(|e| Error::Usage(format!("invalid tag {t:?}: {e}")))?;
            store.set_tag(&name, &out.manifest_digest)?;
            tags.push(name);
        }
        let mut pushed = Vec::new();
        for o in &self.outputs {
            if let Some(r) = output::write(o, &store, &images, export_compression, &tags, &out)? {
                pushed.push(r);
            }
        }
        if self.push {
            for t in &tags {
                pushed.push(images.push(&out.manifest_digest, t)?);
            }
        }
        let mut mount_candidates: Vec<forge_oci::Reference> = pushed.iter().filter_map(|p| forge_oci::Reference::parse(p).ok()).collect();
        mount_candidates.extend(self.cache_from.iter().filter_map(|c| c.attrs.get("ref")).filter_map(|r| forge_oci::Reference::parse(r).ok()));
        let cx = crate::remote_cache::ExportContext { store: &store, net: &net, mount_candidates, warn: &warn };
        crate::remote_cache::export(&self.cache_to, &out, &cx)?;
        store.sync()?;
        Ok(BuildResult {
            manifest_digest: out.manifest_digest,
            config_digest: out.config_digest,
            config: out.config,
            tags,
            pushed,
            steps_run: out.steps_run,
            steps_cached: out.steps_cached,
        })
    }
}

/// Reads `--secret id=ID[,src=PATH|,env=VAR]` into (id, bytes).
pub fn read_secret_spec(spec: &str) -> Result<(String, Vec<u8>), Error> {
    let kv = output::parse_kv(spec)?;
    let id = kv.get("id").cloned().ok_or_else(|| Error::Usage(format!("--secret {spec:?} needs id=ID")))?;
    if let Some(src) = kv.get("src").or_else(|| kv.get("source")) {
        let bytes = std::fs::read(Path::new(src)).map_err(|e| Error::Usage(format!("--secret id={id}: cannot read {src}: {e}")))?;
        return Ok((id, bytes));
    }
    let var = kv.get("env").cloned().unwrap_or_else(|| id.clone());
    match std::env::var_os(&var) {
        Some(v) => Ok((id, v.into_encoded_bytes())),
        None => Err(Error::Usage(format!("--secret id={id}: neither src= was given nor is ${var} set"))),
    }
}
