//! Build caches that travel between machines (`--cache-to` / `--cache-from`).
//!
//! A cache is a set of **records**: a step key (the solver's 64-hex key) → the layer the step
//! produced (diff_id + blob descriptor, or none when the step changed no files), when the step
//! first ran, and the key of the state it ran on (its parent). The config changes a step makes
//! (ENV, WORKDIR, …) are not stored: they follow from the Dockerfile, which is part of the key.
//!
//! On the wire a cache is one **OCI image manifest** (never an index: some registries reject
//! indexes that list layers):
//!
//! - `config`: a JSON blob of media type [`CONFIG_MEDIA_TYPE`] holding a [`CacheConfig`];
//! - `layers`: every blob a record refers to, each once, sorted by digest.
//!
//! The same manifest lives in a registry (`type=registry`), or in an OCI layout directory whose
//! `index.json` names it (`type=local`, see [`local`]). An image pushed with `type=inline`
//! carries a [`CacheConfig`] in its own config under the top-level field [`INLINE_FIELD`]; its
//! layers are the image's layers.
//!
//! ```
//! use forge_cache::remote::{CacheConfig, CacheEntry, CacheLayer};
//! use forge_oci::{media, Descriptor, Digest};
//!
//! let blob = Descriptor::new(media::OCI_LAYER_GZIP, Digest::of(b"layer"), 5);
//! let mut cfg = CacheConfig::default();
//! cfg.add_generation([(
//!     "ab".repeat(32),
//!     CacheEntry {
//!         parent: "cd".repeat(32),
//!         layer: Some(CacheLayer { diff_id: Digest::of(b"tar"), blob: blob.clone() }),
//!         created: Some("2026-01-01T00:00:00Z".into()),
//!         generation: 0,
//!     },
//! )]);
//! let bytes = cfg.to_json();
//! let back = CacheConfig::from_json(&bytes).unwrap();
//! assert_eq!(back.lookup(&"ab".repeat(32)).unwrap().layer.as_ref().unwrap().blob, blob);
//! let config_desc = Descriptor::new(forge_cache::remote::CONFIG_MEDIA_TYPE, Digest::of(&bytes), bytes.len() as u64);
//! let manifest = back.manifest(config_desc);
//! assert_eq!(manifest.layers, vec![blob]);
//! ```

use std::collections::BTreeMap;

use forge_oci::{media, Descriptor, Digest, Manifest};
use serde::{Deserialize, Serialize};

pub mod local;

/// The media type of a cache manifest's config blob (version 1 of the format).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.forge.cache.config.v1+json";

/// The `artifactType` a cache manifest declares.
pub const ARTIFACT_TYPE: &str = "application/vnd.forge.cache.v1";

/// The top-level image-config field an inline cache lives in (`--cache-to type=inline`).
pub const INLINE_FIELD: &str = "forge.cache.v1";

/// The format version inside the config; readers reject other versions.
pub const FORMAT_VERSION: u32 = 1;

/// What went wrong reading or writing a cache.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The cache is not in a format forge understands (or is damaged).
    #[error("invalid cache: {0}")]
    Invalid(String),
    /// The cache was written by another version of the format.
    #[error(
        "unsupported cache format version {found} (this forge reads version {FORMAT_VERSION})"
    )]
    UnsupportedVersion { found: u32 },
    /// A blob's bytes do not match its descriptor.
    #[error("cache blob {digest} is corrupt: {reason}")]
    CorruptBlob { digest: Digest, reason: String },
    /// A record refers to a blob the cache does not have.
    #[error("cache blob {0} is missing")]
    MissingBlob(Digest),
    #[error(transparent)]
    Store(#[from] crate::StoreError),
}

impl RemoteError {
    pub(crate) fn io(
        path: impl Into<std::path::PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> RemoteError {
        let path = path.into();
        move |source| RemoteError::Io { path, source }
    }
}

/// A step's layer: the same JSON shape as the solver's `Layer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheLayer {
    pub diff_id: Digest,
    pub blob: Descriptor,
}

/// One cache record (the key is the map key in [`CacheConfig::records`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The key of the state the step ran on.
    pub parent: String,
    /// The layer the step produced; `None` when it changed no files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<CacheLayer>,
    /// When the step first ran (RFC 3339): imported hits keep the original history times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The export that last wrote this record; pruning drops the lowest generations first.
    #[serde(default)]
    pub generation: u64,
}

/// The cache config blob: every record of a cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    pub version: u32,
    /// Incremented by every export that merges into an existing cache.
    #[serde(default)]
    pub generation: u64,
    pub records: BTreeMap<String, CacheEntry>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            version: FORMAT_VERSION,
            generation: 0,
            records: BTreeMap::new(),
        }
    }
}

fn is_key(k: &str) -> bool {
    k.len() == 64 && k.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl CacheConfig {
    /// Parses and validates a config blob (version, key syntax, layer media types).
    pub fn from_json(bytes: &[u8]) -> Result<CacheConfig, RemoteError> {
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
        }
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|e| RemoteError::Invalid(format!("cache config is not valid JSON: {e}")))?;
        if probe.version != FORMAT_VERSION {
            return Err(RemoteError::UnsupportedVersion {
                found: probe.version,
            });
        }
        let cfg: CacheConfig = serde_json::from_slice(bytes)
            .map_err(|e| RemoteError::Invalid(format!("cache config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads an inline cache from an image config's JSON, if it has one.
    pub fn from_image_config(bytes: &[u8]) -> Result<Option<CacheConfig>, RemoteError> {
        let v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| RemoteError::Invalid(format!("image config is not valid JSON: {e}")))?;
        match v.get(INLINE_FIELD) {
            None => Ok(None),
            Some(inline) => {
                let raw =
                    serde_json::to_vec(inline).map_err(|e| RemoteError::Invalid(e.to_string()))?;
                CacheConfig::from_json(&raw).map(Some)
            }
        }
    }

    fn validate(&self) -> Result<(), RemoteError> {
        for (k, e) in &self.records {
            if !is_key(k) {
                return Err(RemoteError::Invalid(format!(
                    "record key {k:?} is not a 64-digit hex key"
                )));
            }
            if let Some(l) = &e.layer {
                if !media::is_layer(&l.blob.media_type) {
                    return Err(RemoteError::Invalid(format!(
                        "record {k}: blob {} has media type {:?}, not a layer",
                        l.blob.digest, l.blob.media_type
                    )));
                }
            }
        }
        Ok(())
    }

    /// Canonical JSON (sorted keys): the same records give the same bytes.
    pub fn to_json(&self) -> Vec<u8> {
        forge_oci::image::to_canonical_json(self)
    }

    pub fn lookup(&self, key: &str) -> Option<&CacheEntry> {
        self.records.get(key)
    }

    /// Adds (or refreshes) records as a new generation.
    pub fn add_generation(&mut self, entries: impl IntoIterator<Item = (String, CacheEntry)>) {
        if !self.records.is_empty() {
            self.generation += 1;
        }
        for (k, mut e) in entries {
            e.generation = self.generation;
            self.records.insert(k, e);
        }
    }

    /// Every blob the records refer to, once each, sorted by digest.
    pub fn blobs(&self) -> Vec<Descriptor> {
        let mut by_digest: BTreeMap<&Digest, &Descriptor> = BTreeMap::new();
        for l in self.records.values().filter_map(|e| e.layer.as_ref()) {
            by_digest.entry(&l.blob.digest).or_insert(&l.blob);
        }
        by_digest.into_values().cloned().collect()
    }

    /// The total size of [`CacheConfig::blobs`].
    pub fn blobs_size(&self) -> u64 {
        self.blobs().iter().map(|d| d.size).sum()
    }

    /// Drops records, oldest generation first (then by key, for determinism), until the blobs
    /// they refer to fit in `max_size` bytes. Returns how many records were dropped.
    pub fn prune_to(&mut self, max_size: u64) -> usize {
        // Records without a layer cost nothing and are kept.
        let mut order: Vec<(u64, String)> = self
            .records
            .iter()
            .filter(|(_, e)| e.layer.is_some())
            .map(|(k, e)| (e.generation, k.clone()))
            .collect();
        order.sort();
        let mut dropped = 0;
        for (_, k) in order {
            if self.blobs_size() <= max_size {
                break;
            }
            self.records.remove(&k);
            dropped += 1;
        }
        dropped
    }

    /// The cache manifest for this config (whose descriptor is `config`).
    pub fn manifest(&self, config: Descriptor) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.to_string()),
            artifact_type: Some(ARTIFACT_TYPE.to_string()),
            config,
            layers: self.blobs(),
            annotations: None,
        }
    }
}

/// Checks that a manifest is a forge cache manifest and returns it.
pub fn parse_cache_manifest(bytes: &[u8]) -> Result<Manifest, RemoteError> {
    let m: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| RemoteError::Invalid(format!("cache manifest is not an OCI manifest: {e}")))?;
    if m.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(RemoteError::Invalid(format!(
            "manifest config has media type {:?}, not {CONFIG_MEDIA_TYPE}",
            m.config.media_type
        )));
    }
    Ok(m)
}

/// Checks a config against its manifest: every record's blob must be one of its layers.
/// Records that are not are dropped (a damaged cache is a partial cache, never an error).
pub fn keep_listed(cfg: &mut CacheConfig, layers: &[Descriptor]) -> usize {
    let listed: std::collections::HashSet<(&Digest, u64)> =
        layers.iter().map(|d| (&d.digest, d.size)).collect();
    let before = cfg.records.len();
    cfg.records.retain(|_, e| {
        e.layer
            .as_ref()
            .map(|l| listed.contains(&(&l.blob.digest, l.blob.size)))
            .unwrap_or(true)
    });
    before - cfg.records.len()
}

/// Parses a size like `500MiB`, `2GB`, `1g` or `123456` (bytes).
pub fn parse_size(s: &str) -> Result<u64, RemoteError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        RemoteError::Invalid(format!(
            "size {s:?}: expected a number with an optional unit"
        ))
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gi" | "gib" => 1 << 30,
        "t" | "tb" => 1000u64.pow(4),
        "ti" | "tib" => 1 << 40,
        other => {
            return Err(RemoteError::Invalid(format!(
                "size {s:?}: unknown unit {other:?}"
            )))
        }
    };
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(gen: u64, blob: &[u8]) -> CacheEntry {
        CacheEntry {
            parent: "0".repeat(64),
            layer: Some(CacheLayer {
                diff_id: Digest::of(&[blob, b"-tar"].concat()),
                blob: Descriptor::new(media::OCI_LAYER_GZIP, Digest::of(blob), blob.len() as u64),
            }),
            created: None,
            generation: gen,
        }
    }

    #[test]
    fn round_trip_and_version_check() {
        let mut c = CacheConfig::default();
        c.add_generation([("a".repeat(64), entry(0, b"one"))]);
        assert_eq!(CacheConfig::from_json(&c.to_json()).unwrap(), c);
        let bad = br#"{"version":2,"records":{}}"#;
        assert!(matches!(
            CacheConfig::from_json(bad),
            Err(RemoteError::UnsupportedVersion { found: 2 })
        ));
        assert!(matches!(
            CacheConfig::from_json(b"{nope"),
            Err(RemoteError::Invalid(_))
        ));
        let badkey = br#"{"version":1,"records":{"zz":{"parent":""}}}"#;
        assert!(matches!(
            CacheConfig::from_json(badkey),
            Err(RemoteError::Invalid(_))
        ));
    }

    #[test]
    fn prune_drops_oldest_generation_first() {
        let mut c = CacheConfig::default();
        c.add_generation([
            ("a".repeat(64), entry(0, b"aaaa")),
            ("b".repeat(64), entry(0, b"bbbb")),
        ]);
        c.add_generation([("c".repeat(64), entry(0, b"cccc"))]);
        assert_eq!(c.records["c".repeat(64).as_str()].generation, 1);
        assert_eq!(c.blobs_size(), 12);
        assert_eq!(c.prune_to(5), 2);
        assert_eq!(
            c.records.keys().cloned().collect::<Vec<_>>(),
            vec!["c".repeat(64)]
        );
        assert_eq!(c.prune_to(100), 0);
    }

    #[test]
    fn shared_blobs_are_listed_once_and_unlisted_records_dropped() {
        let mut c = CacheConfig::default();
        c.add_generation([
            ("a".repeat(64), entry(0, b"same")),
            ("b".repeat(64), entry(0, b"same")),
            ("c".repeat(64), entry(0, b"other")),
        ]);
        assert_eq!(c.blobs().len(), 2);
        let only_same = vec![entry(0, b"same").layer.unwrap().blob];
        assert_eq!(keep_listed(&mut c, &only_same), 1);
        assert_eq!(c.records.len(), 2);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("2KiB").unwrap(), 2048);
        assert_eq!(parse_size("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("500mib").unwrap(), 500 << 20);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn inline_config_field() {
        let mut c = CacheConfig::default();
        c.add_generation([("a".repeat(64), entry(0, b"x"))]);
        let mut img: serde_json::Value = serde_json::json!({"architecture":"amd64","os":"linux"});
        img[INLINE_FIELD] = serde_json::from_slice(&c.to_json()).unwrap();
        let bytes = serde_json::to_vec(&img).unwrap();
        assert_eq!(CacheConfig::from_image_config(&bytes).unwrap(), Some(c));
        assert_eq!(
            CacheConfig::from_image_config(br#"{"os":"linux"}"#).unwrap(),
            None
        );
    }
}
