//! `--cache-from` / `--cache-to`: build caches shared through a registry, a directory, or the
//! image itself (inline). The format lives in [`forge_cache::remote`]; this module connects it
//! to the solver's [`RemoteCache`] hooks and to the registry client.
//!
//! Import reads only the cache manifest and its config up front. A layer blob is fetched when
//! the solver needs it (a later step must see the files, or the export needs the blob), never
//! before. A cache that cannot be read is a warning; a blob that turns out corrupt or missing
//! is *poisoned*: the build is retried with the records that use it ignored, so a bad cache
//! costs time but never fails a build.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use forge_cache::remote::local::{self, LocalCache};
use forge_cache::remote::{self as fmt, CacheConfig, CacheEntry, CacheLayer, RemoteError};
use forge_cache::Store;
use forge_oci::{media, Compression, Descriptor, Digest, Index, Manifest, Platform, Reference};
use forge_registry::{Client, ClientOptions};
use forge_solver::{
    BuildOutput, Event, Layer, RemoteCache, RemoteCaches, RemoteRecord, StepRecord,
};

use crate::builder::CacheSpec;
use crate::Error;

type Warn<'a> = &'a (dyn Fn(String) + Send + Sync);

/// Blobs found corrupt or missing during a build: records using them are ignored afterwards.
#[derive(Clone, Default)]
pub(crate) struct Poisoned(Arc<Mutex<PoisonState>>);

#[derive(Default)]
struct PoisonState {
    /// Every poisoned blob.
    all: HashSet<Digest>,
    /// Poisoned since the last [`Poisoned::take_new`], with the reason.
    new: Vec<(Digest, String)>,
}

impl Poisoned {
    fn contains(&self, d: &Digest) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .all
            .contains(d)
    }

    fn add(&self, d: &Digest, why: String) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.all.insert(d.clone()) {
            g.new.push((d.clone(), why));
        }
    }

    /// Blobs poisoned since the last call, with the reason.
    pub(crate) fn take_new(&self) -> Vec<(Digest, String)> {
        std::mem::take(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()).new)
    }
}

/// The registry client and the runtime it runs on, made once per build when needed.
pub(crate) struct Net {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl Net {
    pub(crate) fn new(insecure: &[String]) -> Result<Net, Error> {
        let mut opts = ClientOptions::default();
        opts.insecure_registries.extend(insecure.iter().cloned());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Usage(format!("cannot start the network runtime: {e}")))?;
        Ok(Net {
            rt,
            client: Client::new(opts)?,
        })
    }
}

/// Lazily made [`Net`].
pub(crate) struct LazyNet {
    insecure: Vec<String>,
    net: std::sync::OnceLock<Result<Arc<Net>, String>>,
}

impl LazyNet {
    pub(crate) fn new(insecure: &[String]) -> LazyNet {
        LazyNet {
            insecure: insecure.to_vec(),
            net: std::sync::OnceLock::new(),
        }
    }

    fn get(&self) -> Result<Arc<Net>, String> {
        self.net
            .get_or_init(|| {
                Net::new(&self.insecure)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
    }
}

fn to_record(e: &CacheEntry) -> RemoteRecord {
    RemoteRecord {
        layer: e.layer.as_ref().map(|l| Layer {
            diff_id: l.diff_id.clone(),
            blob: l.blob.clone(),
        }),
        created: e.created.clone(),
    }
}

fn usable(e: &CacheEntry, poisoned: &Poisoned) -> bool {
    e.layer
        .as_ref()
        .map(|l| !poisoned.contains(&l.blob.digest))
        .unwrap_or(true)
}

// ------------------------------------------------------------------ import: local

/// `type=local,src=DIR`.
struct LocalImport {
    cache: LocalCache,
    store: Store,
    poisoned: Poisoned,
}

impl RemoteCache for LocalImport {
    fn lookup(&self, key: &str) -> Option<RemoteRecord> {
        self.cache
            .lookup(key)
            .filter(|e| usable(e, &self.poisoned))
            .map(to_record)
    }

    fn fetch(&self, blob: &Descriptor) -> Result<(), String> {
        self.cache.copy_blob_into(blob, &self.store).map_err(|e| {
            let msg = format!("cache {}: {e}", self.cache.dir().display());
            self.poisoned.add(&blob.digest, msg.clone());
            msg
        })
    }
}

// ------------------------------------------------------------------ import: registry

/// `type=registry,ref=REF` (a cache manifest, or an image with an inline cache).
struct RegistryImport {
    net: Arc<Net>,
    reference: Reference,
    config: CacheConfig,
    store: Store,
    poisoned: Poisoned,
}

impl RemoteCache for RegistryImport {
    fn lookup(&self, key: &str) -> Option<RemoteRecord> {
        self.config
            .lookup(key)
            .filter(|e| usable(e, &self.poisoned))
            .map(to_record)
    }

    fn fetch(&self, blob: &Descriptor) -> Result<(), String> {
        let r = self.net.rt.block_on(self.net.client.fetch_blob_into_store(
            &self.reference,
            blob,
            &self.store,
            &|_| {},
        ));
        r.map(|_| ()).map_err(|e| {
            let msg = format!("cache {}: {e}", self.reference);
            self.poisoned.add(&blob.digest, msg.clone());
            msg
        })
    }
}

/// Reads a small blob (a config) through the store, where it is verified on the way in.
async fn small_blob(
    client: &Client,
    r: &Reference,
    d: &Descriptor,
    store: &Store,
) -> Result<Vec<u8>, String> {
    const MAX_CONFIG: u64 = 64 << 20;
    if d.size > MAX_CONFIG {
        return Err(format!(
            "config blob {} is {} bytes, more than forge reads ({MAX_CONFIG})",
            d.digest, d.size
        ));
    }
    client
        .fetch_blob_into_store(r, d, store, &|_| {})
        .await
        .map_err(|e| e.to_string())?;
    store.read_blob(&d.digest).map_err(|e| e.to_string())
}

/// Fetches a cache manifest + config, or an image manifest whose config has an inline cache.
fn read_registry_cache(
    net: &Net,
    r: &Reference,
    store: &Store,
    platform: &Platform,
) -> Result<CacheConfig, String> {
    net.rt.block_on(async {
        let mut m = net.client.fetch_manifest(r).await.map_err(|e| e.to_string())?;
        if media::is_index(&m.media_type) {
            let index: Index = serde_json::from_slice(&m.bytes).map_err(|e| format!("not an index: {e}"))?;
            let d = forge_registry::select_platform(&index, platform)
                .ok_or_else(|| format!("the index has no manifest for {platform}"))?;
            let mut by_digest = r.clone();
            by_digest.digest = Some(d.digest.clone());
            m = net.client.fetch_manifest(&by_digest).await.map_err(|e| e.to_string())?;
        }
        cache_in_manifest(&net.client, r, &m.bytes, store, true)
            .await?
            .ok_or_else(|| "neither a forge cache nor an image with an inline cache (built with --cache-to type=inline)".to_string())
    })
}

/// The cache records a manifest carries: its config when that is a forge cache config, or
/// (with `inline`) the cache inside an image config; `None` when it carries neither. Records
/// whose blob the manifest does not list are left out.
async fn cache_in_manifest(
    client: &Client,
    r: &Reference,
    manifest: &[u8],
    store: &Store,
    inline: bool,
) -> Result<Option<CacheConfig>, String> {
    let manifest: Manifest = serde_json::from_slice(manifest).map_err(|e| format!("not an OCI manifest: {e}"))?;
    let forge = manifest.config.media_type == fmt::CONFIG_MEDIA_TYPE;
    if !forge && !inline {
        return Ok(None);
    }
    let bytes = small_blob(client, r, &manifest.config, store).await?;
    let cfg = if forge {
        Some(CacheConfig::from_json(&bytes).map_err(|e| e.to_string())?)
    } else {
        CacheConfig::from_image_config(&bytes).map_err(|e| e.to_string())?
    };
    Ok(cfg.map(|mut c| {
        fmt::keep_listed(&mut c, &manifest.layers);
        c
    }))
}

/// Opens every `--cache-from`. Unreadable caches become warnings and are left out.
pub(crate) fn import(
    specs: &[CacheSpec],
    store: &Store,
    net: &LazyNet,
    platform: &Platform,
    poisoned: &Poisoned,
    warn: Warn<'_>,
) -> Result<RemoteCaches, Error> {
    let mut caches: Vec<Arc<dyn RemoteCache>> = Vec::new();
    for spec in specs {
        match spec.kind.as_str() {
            "local" => {
                let src = spec
                    .attrs
                    .get("src")
                    .ok_or_else(|| Error::Usage("--cache-from type=local needs src=DIR".into()))?;
                match LocalCache::open(Path::new(src)) {
                    Ok(cache) => {
                        if cache.dropped > 0 {
                            warn(format!("cache {src}: {} records refer to blobs the manifest does not list; ignored", cache.dropped));
                        }
                        caches.push(Arc::new(LocalImport { cache, store: store.clone(), poisoned: poisoned.clone() }));
                    }
                    Err(e) => warn(format!("cannot import cache from {src}: {e}; building without it")),
                }
            }
            "registry" => {
                let r = spec
                    .attrs
                    .get("ref")
                    .ok_or_else(|| Error::Usage("--cache-from type=registry needs ref=REF".into()))?;
                let reference = Reference::parse(r).map_err(|e| Error::Usage(format!("--cache-from ref={r}: {e}")))?;
                let net = match net.get() {
                    Ok(n) => n,
                    Err(e) => {
                        warn(format!("cannot import cache from {r}: {e}"));
                        continue;
                    }
                };
                match read_registry_cache(&net, &reference, store, platform) {
                    Ok(config) => caches.push(Arc::new(RegistryImport {
                        net,
                        reference,
                        config,
                        store: store.clone(),
                        poisoned: poisoned.clone(),
                    })),
                    Err(e) => warn(format!("cannot import cache from {r}: {e}; building without it")),
                }
            }
            "inline" => return Err(Error::Usage("--cache-from type=inline: use type=registry,ref=IMAGE to read an image's inline cache".into())),
            other => return Err(Error::Usage(format!("--cache-from type={other}: unknown cache type (expected registry or local)"))),
        }
    }
    Ok(RemoteCaches(caches))
}

// ------------------------------------------------------------------ export

/// Checks the `--cache-to` specs before the build, so a typo fails fast.
pub(crate) fn validate_exports(specs: &[CacheSpec]) -> Result<(), Error> {
    for s in specs {
        let need = |k: &str| {
            s.attrs
                .get(k)
                .map(|_| ())
                .ok_or_else(|| Error::Usage(format!("--cache-to type={} needs {k}=…", s.kind)))
        };
        match s.kind.as_str() {
            "registry" => need("ref")?,
            "local" => need("dest")?,
            "inline" => {}
            other => {
                return Err(Error::Usage(format!(
                "--cache-to type={other}: unknown cache type (expected registry, local or inline)"
            )))
            }
        }
        mode_of(s)?;
        compression_of(s)?;
        max_size_of(s)?;
    }
    Ok(())
}

fn max_size_of(s: &CacheSpec) -> Result<Option<u64>, Error> {
    s.attrs
        .get("max-size")
        .map(|m| fmt::parse_size(m))
        .transpose()
        .map_err(|e| Error::Usage(format!("--cache-to max-size: {e}")))
}

fn mode_of(s: &CacheSpec) -> Result<bool, Error> {
    match s.attrs.get("mode").map(String::as_str) {
        None | Some("min") => Ok(false),
        Some("max") => Ok(true),
        Some(o) => Err(Error::Usage(format!(
            "--cache-to mode={o}: expected min or max"
        ))),
    }
}

fn compression_of(s: &CacheSpec) -> Result<Option<Compression>, Error> {
    match s.attrs.get("compression").map(String::as_str) {
        None => Ok(None),
        Some("gzip") => Ok(Some(Compression::Gzip { level: 1 })),
        Some("zstd") => Ok(Some(Compression::Zstd { level: 3 })),
        Some(o) => Err(Error::Usage(format!(
            "--cache-to compression={o}: expected gzip or zstd"
        ))),
    }
}

fn entries(steps: &[StepRecord], max: bool) -> Vec<(String, CacheEntry)> {
    steps
        .iter()
        .filter(|s| max || s.in_final_image)
        .map(|s| {
            (
                s.key.clone(),
                CacheEntry {
                    parent: s.parent.clone(),
                    layer: s.layer.as_ref().map(|l| CacheLayer {
                        diff_id: l.diff_id.clone(),
                        blob: l.blob.clone(),
                    }),
                    created: s.created.clone(),
                    generation: 0,
                },
            )
        })
        .collect()
}

/// Compresses the layers a cache exports: plain tars (how builds store their layers) with
/// `wanted` or gzip, and, when `compression=` asked for a codec, layers in another codec are
/// rewritten into it (a new blob, same diff_id). Blobs not in the store are left as they are.
fn recompress(
    store: &Store,
    entries: &mut [(String, CacheEntry)],
    wanted: Option<Compression>,
) -> Result<(), Error> {
    let c = wanted.unwrap_or_default();
    for (_, e) in entries.iter_mut() {
        let Some(l) = e.layer.as_mut() else { continue };
        if store.has_blob(&l.blob.digest) && (wanted.is_some() || forge_cache::is_plain_layer(&l.blob)) {
            l.blob = store.compressed_layer(&l.blob, c, false)?;
        }
    }
    Ok(())
}

fn remote_err(dest: &str, e: RemoteError) -> Error {
    match e {
        RemoteError::Io { path, source } => Error::Io { path, source },
        RemoteError::Store(s) => Error::Store(s),
        other => Error::Output {
            dest: PathBuf::from(dest),
            message: other.to_string(),
        },
    }
}

/// What `--cache-to` needs besides the build output.
pub(crate) struct ExportContext<'a> {
    pub store: &'a Store,
    pub net: &'a LazyNet,
    /// References the image was (or will be) pushed to: cross-repository mount sources.
    pub mount_candidates: Vec<Reference>,
    pub warn: Warn<'a>,
}

/// Writes every `--cache-to` except `inline` (see [`inline`]).
pub(crate) fn export(
    specs: &[CacheSpec],
    out: &BuildOutput,
    cx: &ExportContext<'_>,
) -> Result<(), Error> {
    for s in specs {
        let ignore_error = s
            .attrs
            .get("ignore-error")
            .map(|v| v == "true")
            .unwrap_or(false);
        let r = match s.kind.as_str() {
            "local" => export_local(s, out, cx),
            "registry" => export_registry(s, out, cx),
            _ => Ok(()),
        };
        match r {
            Err(e) if ignore_error => (cx.warn)(format!(
                "--cache-to type={}: {e} (ignored: ignore-error=true)",
                s.kind
            )),
            other => other?,
        }
    }
    Ok(())
}

fn export_local(s: &CacheSpec, out: &BuildOutput, cx: &ExportContext<'_>) -> Result<(), Error> {
    let dest = s.attrs.get("dest").cloned().unwrap_or_default();
    let mut list = entries(&out.steps, mode_of(s)?);
    recompress(cx.store, &mut list, compression_of(s)?)?;
    let max_size = max_size_of(s)?;
    let report = local::export(
        Path::new(&dest),
        cx.store,
        list,
        &local::ExportOptions { max_size },
    )
    .map_err(|e| remote_err(&dest, e))?;
    if let Some(why) = report.replaced_unreadable {
        (cx.warn)(format!(
            "cache {dest}: the existing cache was unreadable ({why}); replaced"
        ));
    }
    Ok(())
}

fn export_registry(s: &CacheSpec, out: &BuildOutput, cx: &ExportContext<'_>) -> Result<(), Error> {
    let r = s.attrs.get("ref").cloned().unwrap_or_default();
    let dest =
        Reference::parse(&r).map_err(|e| Error::Usage(format!("--cache-to ref={r}: {e}")))?;
    let mut list = entries(&out.steps, mode_of(s)?);
    recompress(cx.store, &mut list, compression_of(s)?)?;
    let max_size = max_size_of(s)?;
    let net = cx.net.get().map_err(Error::Usage)?;
    let mount_from = cx
        .mount_candidates
        .iter()
        .find(|m| m.registry == dest.registry && m.repository != dest.repository);
    net.rt.block_on(async {
        let mut kept = Vec::with_capacity(list.len());
        for (k, e) in list {
            if let Some(l) = &e.layer {
                // A record served by an imported cache whose blob was never needed here: keep
                // it only when the destination already has the blob.
                if !cx.store.has_blob(&l.blob.digest)
                    && net.client.head_blob(&dest, &l.blob.digest).await?.is_none()
                {
                    continue;
                }
            }
            kept.push((k, e));
        }
        // The records of the cache already at the destination are kept, and the new build's
        // form a newer generation that wins: builds of several targets or branches sharing
        // one cache ref add to it instead of replacing each other.
        let mut cfg = match existing_registry_cache(&net.client, &dest, cx.store).await {
            Ok(c) => c.unwrap_or_default(),
            Err(why) => {
                (cx.warn)(format!("cache {r}: the existing cache was unreadable ({why}); replaced"));
                CacheConfig::default()
            }
        };
        cfg.add_generation(kept);
        if let Some(max) = max_size {
            cfg.prune_to(max);
        }
        let mut gone = HashSet::new();
        for b in cfg.blobs() {
            if cx.store.has_blob(&b.digest) {
                net.client
                    .push_blob_from_store(cx.store, &dest, &b.digest, mount_from, &|_| {})
                    .await?;
            } else if net.client.head_blob(&dest, &b.digest).await?.is_none() {
                // An old record whose blob the registry no longer has (garbage-collected).
                gone.insert(b.digest);
            }
        }
        if !gone.is_empty() {
            cfg.records.retain(|_, e| e.layer.as_ref().is_none_or(|l| !gone.contains(&l.blob.digest)));
        }
        let cbytes = cfg.to_json();
        let cdigest = cx.store.put_blob_bytes(&cbytes)?;
        net.client
            .push_blob_from_store(cx.store, &dest, &cdigest, None, &|_| {})
            .await?;
        let manifest = cfg.manifest(Descriptor::new(
            fmt::CONFIG_MEDIA_TYPE,
            cdigest,
            cbytes.len() as u64,
        ));
        let mbytes = forge_oci::image::to_canonical_json(&manifest);
        net.client
            .put_manifest(&dest, &mbytes, media::OCI_MANIFEST)
            .await?;
        Ok::<(), Error>(())
    })
}

/// The forge cache at `dest`, if there is one: `None` when the reference does not exist or
/// names something else (an image); an error when it is a forge cache that cannot be read.
async fn existing_registry_cache(client: &Client, dest: &Reference, store: &Store) -> Result<Option<CacheConfig>, String> {
    let m = match client.fetch_manifest(dest).await {
        Ok(m) => m,
        Err(forge_registry::RegistryError::ManifestNotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if media::is_index(&m.media_type) {
        return Ok(None);
    }
    cache_in_manifest(client, dest, &m.bytes, store, false).await
}

/// `--cache-to type=inline`: writes the final image's records into its config under
/// [`fmt::INLINE_FIELD`] (a new config blob and manifest; `out` is updated to name them).
pub(crate) fn inline(store: &Store, out: &mut BuildOutput) -> Result<(), Error> {
    let layers: HashSet<&Digest> = out.manifest.layers.iter().map(|d| &d.digest).collect();
    let list: Vec<_> = entries(&out.steps, false)
        .into_iter()
        .filter(|(_, e)| {
            e.layer
                .as_ref()
                .map(|l| layers.contains(&l.blob.digest))
                .unwrap_or(true)
        })
        .collect();
    let mut cfg = CacheConfig::default();
    cfg.add_generation(list);
    let bytes = store.read_blob(&out.config_digest)?;
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Usage(format!(
            "image config {} is not JSON: {e}",
            out.config_digest
        ))
    })?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| Error::Usage("image config is not a JSON object".into()))?;
    obj.insert(
        fmt::INLINE_FIELD.to_string(),
        serde_json::from_slice(&cfg.to_json()).expect("cache config is JSON"),
    );
    let new_config = forge_oci::image::to_canonical_json(&v);
    let config_digest = store.put_blob_bytes(&new_config)?;
    let mut manifest = out.manifest.clone();
    manifest.config.digest = config_digest.clone();
    manifest.config.size = new_config.len() as u64;
    let mbytes = forge_oci::image::to_canonical_json(&manifest);
    out.manifest_digest = store.put_blob_bytes(&mbytes)?;
    out.manifest_size = mbytes.len() as u64;
    out.manifest = manifest;
    out.config_digest = config_digest;
    Ok(())
}

/// Emits a warning event.
pub(crate) fn warner(cb: Arc<dyn Fn(Event) + Send + Sync>) -> impl Fn(String) + Send + Sync {
    move |message| cb(Event::Warning { message })
}
