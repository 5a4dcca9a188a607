//! The images view: names and digests resolved to manifests and configs.

use std::collections::BTreeMap;

use forge_oci::reference::Reference;
use forge_oci::{media, Digest, ImageConfig, Index, Manifest, Platform};
use serde_json::Value;

use crate::store::Store;
use crate::StoreError;

/// One local image as `forge images` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSummary {
    /// Every tag pointing at this manifest, normalized and sorted.
    pub names: Vec<String>,
    /// The tagged digest (a manifest, or an index for multi-platform images).
    pub manifest: Digest,
    /// The image config's digest (for an index: the host platform's image).
    pub config: Digest,
    /// The config's `created` timestamp, as written (RFC 3339).
    pub created: Option<String>,
    /// Total compressed size of the layers.
    pub size: u64,
    /// `os/arch[/variant]` from the config.
    pub platform: String,
}

impl Store {
    /// Resolves what a user typed to a manifest digest, the way Docker does:
    /// a full digest (`sha256:…`) that is stored; a name (`busybox` means
    /// `docker.io/library/busybox:latest`) that is tagged; `name@sha256:…` whose digest is
    /// stored; or a unique prefix of a stored manifest's digest (`3f2a`, `sha256:3f2a`).
    pub fn resolve_image(&self, name_or_digest: &str) -> Result<Digest, StoreError> {
        let s = name_or_digest.trim();
        let not_found = || StoreError::ImageNotFound(s.to_string());
        if let Ok(d) = s.parse::<Digest>() {
            return if self.has_blob(&d) {
                Ok(d)
            } else {
                Err(not_found())
            };
        }
        // A bare 64-hex string is an ID, not a name.
        if s.len() == 64 {
            if let Ok(d) = format!("sha256:{s}").parse::<Digest>() {
                return if self.has_blob(&d) {
                    Ok(d)
                } else {
                    Err(not_found())
                };
            }
        }
        let name_err = match Reference::parse(s) {
            Ok(r) => {
                if let Some(d) = r.digest {
                    return if self.has_blob(&d) {
                        Ok(d)
                    } else {
                        Err(not_found())
                    };
                }
                if let Some(d) = self.get_tag(s)? {
                    return Ok(d);
                }
                None
            }
            Err(e) => Some(StoreError::InvalidName {
                name: s.to_string(),
                reason: e.kind.to_string(),
            }),
        };
        let prefix = s.strip_prefix("sha256:").unwrap_or(s);
        let is_hex = !prefix.is_empty()
            && prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if is_hex {
            let candidates: Vec<Digest> = self
                .list_blobs()?
                .into_iter()
                .filter(|d| d.hex().starts_with(prefix))
                .filter(|d| self.small_json_blob(d).is_some_and(|v| is_image_json(&v)))
                .collect();
            match candidates.len() {
                0 => {}
                1 => return Ok(candidates.into_iter().next().expect("one candidate")),
                _ => {
                    return Err(StoreError::Ambiguous {
                        prefix: prefix.to_string(),
                        candidates,
                    })
                }
            }
        }
        Err(name_err.unwrap_or_else(not_found))
    }

    /// For an index, the digest of the manifest for `platform`; for a manifest, itself.
    pub fn platform_manifest(&self, d: &Digest, platform: &Platform) -> Result<Digest, StoreError> {
        let bytes = self.read_blob(d)?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::BadJson {
                digest: d.clone(),
                what: "manifest",
                source,
            })?;
        let mt = value
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !(media::is_index(&mt) || (mt.is_empty() && value.get("manifests").is_some())) {
            return Ok(d.clone());
        }
        let index: Index = serde_json::from_value(value).map_err(|source| StoreError::BadJson {
            digest: d.clone(),
            what: "index",
            source,
        })?;
        let mut fallback = None;
        for m in &index.manifests {
            if !media::is_manifest(&m.media_type) {
                continue;
            }
            match &m.platform {
                Some(p) if platform.matches(p) => return Ok(m.digest.clone()),
                None if fallback.is_none() => fallback = Some(m.digest.clone()),
                _ => {}
            }
        }
        fallback.ok_or_else(|| StoreError::NoMatchingPlatform {
            digest: d.clone(),
            platform: platform.to_string(),
        })
    }

    /// The manifest, image config and config digest of a stored image. An index is resolved to
    /// the host platform's manifest first.
    pub fn image(&self, manifest: &Digest) -> Result<(Manifest, ImageConfig, Digest), StoreError> {
        let d = self.platform_manifest(manifest, &Platform::host())?;
        let bytes = self.read_blob(&d)?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::BadJson {
                digest: d.clone(),
                what: "manifest",
                source,
            })?;
        let mt = value.get("mediaType").and_then(Value::as_str).unwrap_or("");
        let shaped = value.get("layers").is_some_and(Value::is_array)
            && value.get("config").and_then(|c| c.get("digest")).is_some();
        if (!mt.is_empty() && !media::is_manifest(mt)) || !shaped {
            return Err(StoreError::NotAManifest {
                digest: d.clone(),
                media_type: mt.to_string(),
            });
        }
        let m: Manifest = serde_json::from_value(value).map_err(|source| StoreError::BadJson {
            digest: d.clone(),
            what: "manifest",
            source,
        })?;
        let cfg_bytes = self.read_blob(&m.config.digest)?;
        let cfg: ImageConfig =
            serde_json::from_slice(&cfg_bytes).map_err(|source| StoreError::BadJson {
                digest: m.config.digest.clone(),
                what: "image config",
                source,
            })?;
        let cfg_digest = m.config.digest.clone();
        Ok((m, cfg, cfg_digest))
    }

    /// Every tagged image, one entry per manifest digest, sorted by first name. Tags whose image
    /// cannot be read (missing or corrupt blobs) are left out; `check` reports them.
    pub fn list_images(&self) -> Result<Vec<ImageSummary>, StoreError> {
        let mut by_digest: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        for (name, d) in self.list_tags()? {
            by_digest.entry(d).or_default().push(name);
        }
        let mut out = Vec::new();
        for (d, mut names) in by_digest {
            let Ok((m, cfg, cfg_digest)) = self.image(&d) else {
                continue;
            };
            names.sort();
            out.push(ImageSummary {
                names,
                manifest: d,
                config: cfg_digest,
                created: cfg.created.clone(),
                size: m.layers.iter().map(|l| l.size).sum(),
                platform: cfg.platform().to_string(),
            });
        }
        out.sort_by(|a, b| a.names.cmp(&b.names));
        Ok(out)
    }
}

fn is_image_json(v: &Value) -> bool {
    v.get("manifests").is_some_and(Value::is_array)
        || (v.get("config").is_some() && v.get("layers").is_some())
}
