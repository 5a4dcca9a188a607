//! The local-directory backend (`type=local,dest=DIR` / `type=local,src=DIR`): an OCI image
//! layout whose `index.json` names one cache manifest (annotation
//! `org.opencontainers.image.ref.name` = [`REF_NAME`]).
//!
//! ```text
//! DIR/oci-layout                  {"imageLayoutVersion":"1.0.0"}
//! DIR/index.json                  → the cache manifest
//! DIR/blobs/sha256/<hex>          manifest, config (CacheConfig) and the layer blobs
//! ```
//!
//! Export is incremental: blobs already in the directory are not rewritten, records of earlier
//! exports are kept (merged, newest generation wins), and with a size bound the oldest records
//! are dropped first, then the blobs no record refers to any more. Concurrent exports to the
//! same directory are serialized by a lock file (`DIR/.forge-cache.lock`).

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use forge_oci::{media, Descriptor, Digest, Index, Manifest};

use super::{
    keep_listed, parse_cache_manifest, CacheConfig, CacheEntry, RemoteError, CONFIG_MEDIA_TYPE,
};
use crate::Store;

/// The `org.opencontainers.image.ref.name` of the cache manifest in `index.json`.
pub const REF_NAME: &str = "forge-cache";
const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// A cache directory opened for import.
#[derive(Debug, Clone)]
pub struct LocalCache {
    dir: PathBuf,
    manifest_digest: Digest,
    manifest: Manifest,
    config: CacheConfig,
    /// Records dropped at open because their blob is not listed in the manifest.
    pub dropped: usize,
}

fn blob_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join(d.algorithm()).join(d.hex())
}

/// Reads a small blob and checks its digest.
fn read_verified(dir: &Path, d: &Digest, what: &str) -> Result<Vec<u8>, RemoteError> {
    let p = blob_path(dir, d);
    let bytes = match fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RemoteError::MissingBlob(d.clone()))
        }
        Err(e) => return Err(RemoteError::io(p)(e)),
    };
    let actual = Digest::of(&bytes);
    if &actual != d {
        return Err(RemoteError::CorruptBlob {
            digest: d.clone(),
            reason: format!("the {what} hashes to {actual}"),
        });
    }
    Ok(bytes)
}

impl LocalCache {
    /// Opens the cache in `dir`: reads `index.json`, the manifest and the config (verifying
    /// both digests). Layer blobs are not read.
    pub fn open(dir: &Path) -> Result<LocalCache, RemoteError> {
        let index_path = dir.join("index.json");
        let bytes = fs::read(&index_path).map_err(RemoteError::io(&index_path))?;
        let index: Index = serde_json::from_slice(&bytes).map_err(|e| {
            RemoteError::Invalid(format!("{}: not an OCI index: {e}", index_path.display()))
        })?;
        let desc = index
            .manifests
            .iter()
            .find(|d| {
                d.annotations
                    .as_ref()
                    .and_then(|a| a.get(REF_ANNOTATION))
                    .map(|n| n == REF_NAME)
                    .unwrap_or(false)
            })
            .or_else(|| {
                index
                    .manifests
                    .iter()
                    .find(|d| d.media_type == media::OCI_MANIFEST)
            })
            .ok_or_else(|| {
                RemoteError::Invalid(format!("{} names no cache manifest", index_path.display()))
            })?;
        let mbytes = read_verified(dir, &desc.digest, "manifest")?;
        let manifest = parse_cache_manifest(&mbytes)?;
        let cbytes = read_verified(dir, &manifest.config.digest, "cache config")?;
        let mut config = CacheConfig::from_json(&cbytes)?;
        let dropped = keep_listed(&mut config, &manifest.layers);
        Ok(LocalCache {
            dir: dir.to_path_buf(),
            manifest_digest: desc.digest.clone(),
            manifest,
            config,
            dropped,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest_digest(&self) -> &Digest {
        &self.manifest_digest
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    pub fn lookup(&self, key: &str) -> Option<&CacheEntry> {
        self.config.lookup(key)
    }

    /// Where a blob of this cache lives.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        blob_path(&self.dir, d)
    }

    /// Copies a blob into the store, verifying its size and digest on the way (a corrupt blob
    /// never enters the store).
    pub fn copy_blob_into(&self, desc: &Descriptor, store: &Store) -> Result<(), RemoteError> {
        if store.has_blob(&desc.digest) {
            return Ok(());
        }
        let p = self.blob_path(&desc.digest);
        let mut f = match fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RemoteError::MissingBlob(desc.digest.clone()))
            }
            Err(e) => return Err(RemoteError::io(p)(e)),
        };
        let mut w = store.blob_writer()?;
        io::copy(&mut f, &mut w).map_err(RemoteError::io(&p))?;
        if w.len() != desc.size {
            return Err(RemoteError::CorruptBlob {
                digest: desc.digest.clone(),
                reason: format!("{} bytes, the record says {}", w.len(), desc.size),
            });
        }
        match w.commit(Some(&desc.digest)) {
            Ok(_) => Ok(()),
            Err(crate::StoreError::DigestMismatch { actual, .. }) => {
                Err(RemoteError::CorruptBlob {
                    digest: desc.digest.clone(),
                    reason: format!("its content hashes to {actual}"),
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// How to export.
#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// Keep the layer blobs under this many bytes (oldest records are dropped first).
    pub max_size: Option<u64>,
}

/// What an export did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportReport {
    pub manifest_digest: Option<Digest>,
    /// Records in the cache after the export.
    pub records: usize,
    /// Records offered whose blob was neither in the store nor in the directory (skipped).
    pub skipped: usize,
    /// Blobs copied into the directory, and blobs that were already there.
    pub blobs_written: usize,
    pub blobs_kept: usize,
    /// Records dropped by the size bound and blobs deleted because nothing refers to them.
    pub records_pruned: usize,
    pub blobs_removed: usize,
    /// Bytes of layer blobs the cache refers to.
    pub size: u64,
    /// Why an existing cache in the directory was not merged (it was unreadable).
    pub replaced_unreadable: Option<String>,
}

fn write_atomic(dir: &Path, dest: &Path, bytes: &[u8]) -> Result<(), RemoteError> {
    let tmp = dir.join(format!(".tmp-{}", crate::fsutil::temp_name("cache")));
    let mut f = fs::File::create(&tmp).map_err(RemoteError::io(&tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(RemoteError::io(&tmp))?;
    fs::rename(&tmp, dest).map_err(RemoteError::io(dest))
}

fn copy_blob(store: &Store, dir: &Path, d: &Digest) -> Result<(), RemoteError> {
    let dest = blob_path(dir, d);
    let tmp = dest.with_file_name(format!(".tmp-{}", crate::fsutil::temp_name("blob")));
    let mut src = store.open_blob(d)?;
    let result = (|| -> io::Result<()> {
        let mut out = fs::File::create(&tmp)?;
        io::copy(&mut src, &mut out)?;
        out.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(RemoteError::io(&tmp)(e));
    }
    fs::rename(&tmp, &dest).map_err(RemoteError::io(&dest))
}

fn present_with_size(dir: &Path, d: &Descriptor) -> bool {
    fs::metadata(blob_path(dir, &d.digest))
        .map(|m| m.is_file() && m.len() == d.size)
        .unwrap_or(false)
}

/// Exports records into the cache directory `dir` (created when missing), merging with the
/// cache already there. Blobs come from `store`; a record whose blob is neither in the store
/// nor already in the directory is skipped.
pub fn export(
    dir: &Path,
    store: &Store,
    entries: Vec<(String, CacheEntry)>,
    opts: &ExportOptions,
) -> Result<ExportReport, RemoteError> {
    let blobs_dir = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs_dir).map_err(RemoteError::io(&blobs_dir))?;
    let lock_path = dir.join(".forge-cache.lock");
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(RemoteError::io(&lock_path))?;
    crate::lock::lock_file(&lock_file, true).map_err(RemoteError::io(&lock_path))?;

    let mut report = ExportReport::default();
    let mut old_blobs: HashSet<Digest> = HashSet::new();
    let mut cfg = match LocalCache::open(dir) {
        Ok(c) => {
            old_blobs.insert(c.manifest_digest.clone());
            old_blobs.insert(c.manifest.config.digest.clone());
            old_blobs.extend(c.manifest.layers.iter().map(|d| d.digest.clone()));
            c.config
        }
        Err(RemoteError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            CacheConfig::default()
        }
        Err(e) => {
            report.replaced_unreadable = Some(e.to_string());
            CacheConfig::default()
        }
    };
    // Old records whose blob went missing from the directory are dropped.
    cfg.records.retain(|_, e| {
        e.layer
            .as_ref()
            .map(|l| present_with_size(dir, &l.blob))
            .unwrap_or(true)
    });

    let mut fresh = Vec::new();
    for (k, e) in entries {
        let ok = match &e.layer {
            None => true,
            Some(l) => store.has_blob(&l.blob.digest) || present_with_size(dir, &l.blob),
        };
        if ok {
            fresh.push((k, e));
        } else {
            report.skipped += 1;
        }
    }
    cfg.add_generation(fresh);
    if let Some(max) = opts.max_size {
        report.records_pruned = cfg.prune_to(max);
    }

    for d in cfg.blobs() {
        if present_with_size(dir, &d) {
            report.blobs_kept += 1;
        } else {
            copy_blob(store, dir, &d.digest)?;
            report.blobs_written += 1;
        }
    }
    let cbytes = cfg.to_json();
    let cdesc = Descriptor::new(CONFIG_MEDIA_TYPE, Digest::of(&cbytes), cbytes.len() as u64);
    write_atomic(&blobs_dir, &blob_path(dir, &cdesc.digest), &cbytes)?;
    let manifest = cfg.manifest(cdesc.clone());
    let mbytes = forge_oci::image::to_canonical_json(&manifest);
    let mdigest = Digest::of(&mbytes);
    write_atomic(&blobs_dir, &blob_path(dir, &mdigest), &mbytes)?;
    let mut mdesc = Descriptor::new(media::OCI_MANIFEST, mdigest.clone(), mbytes.len() as u64);
    mdesc.annotations = Some(
        [(REF_ANNOTATION.to_string(), REF_NAME.to_string())]
            .into_iter()
            .collect(),
    );
    mdesc.artifact_type = Some(super::ARTIFACT_TYPE.to_string());
    let index = Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.to_string()),
        manifests: vec![mdesc],
        annotations: None,
    };
    write_atomic(
        dir,
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    write_atomic(
        dir,
        &dir.join("index.json"),
        &forge_oci::image::to_canonical_json(&index),
    )?;

    // Blobs of the previous cache that nothing refers to any more (only those: the directory
    // may hold other files the user put there).
    let mut live: HashSet<Digest> = cfg.blobs().into_iter().map(|d| d.digest).collect();
    live.insert(cdesc.digest.clone());
    live.insert(mdigest.clone());
    for d in old_blobs.difference(&live) {
        match fs::remove_file(blob_path(dir, d)) {
            Ok(()) => report.blobs_removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(RemoteError::io(blob_path(dir, d))(e)),
        }
    }
    report.records = cfg.records.len();
    report.size = cfg.blobs_size();
    report.manifest_digest = Some(mdigest);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::CacheLayer;

    fn put(store: &Store, bytes: &[u8]) -> CacheLayer {
        let d = store.put_blob_bytes(bytes).unwrap();
        CacheLayer {
            diff_id: Digest::of(&[bytes, b"-tar"].concat()),
            blob: Descriptor::new(media::OCI_LAYER_GZIP, d, bytes.len() as u64),
        }
    }

    fn rec(layer: Option<CacheLayer>) -> CacheEntry {
        CacheEntry {
            parent: "0".repeat(64),
            layer,
            created: None,
            generation: 0,
        }
    }

    #[test]
    fn export_open_copy_incremental_and_prune() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(&t.path().join("a")).unwrap();
        let dir = t.path().join("cache");
        let l1 = put(&store, &[1u8; 100]);
        let l2 = put(&store, &[2u8; 100]);
        let r = export(
            &dir,
            &store,
            vec![
                ("a".repeat(64), rec(Some(l1.clone()))),
                ("b".repeat(64), rec(None)),
            ],
            &ExportOptions::default(),
        )
        .unwrap();
        assert_eq!(
            (r.records, r.blobs_written, r.blobs_kept, r.skipped),
            (2, 1, 0, 0)
        );

        // Incremental: l1 is kept, l2 is written; a record with an unknown blob is skipped.
        let ghost = CacheLayer {
            diff_id: Digest::of(b"g"),
            blob: Descriptor::new(media::OCI_LAYER_GZIP, Digest::of(b"ghost"), 5),
        };
        let r = export(
            &dir,
            &store,
            vec![
                ("c".repeat(64), rec(Some(l2.clone()))),
                ("d".repeat(64), rec(Some(ghost))),
            ],
            &ExportOptions::default(),
        )
        .unwrap();
        assert_eq!(
            (r.records, r.blobs_written, r.blobs_kept, r.skipped),
            (3, 1, 1, 1)
        );

        let c = LocalCache::open(&dir).unwrap();
        assert_eq!(c.lookup(&"a".repeat(64)).unwrap().layer, Some(l1.clone()));
        assert!(c.lookup(&"b".repeat(64)).unwrap().layer.is_none());
        let b = Store::open(&t.path().join("b")).unwrap();
        c.copy_blob_into(&l2.blob, &b).unwrap();
        assert_eq!(b.read_blob(&l2.blob.digest).unwrap(), vec![2u8; 100]);

        // Size bound: the oldest record with a blob (a) goes, and l1's blob file with it; b
        // (no layer) costs nothing and stays.
        let r = export(
            &dir,
            &store,
            vec![],
            &ExportOptions {
                max_size: Some(150),
            },
        )
        .unwrap();
        assert_eq!(r.records_pruned, 1);
        assert_eq!(r.records, 2);
        assert_eq!(r.size, 100);
        assert!(!blob_path(&dir, &l1.blob.digest).exists());
        assert!(blob_path(&dir, &l2.blob.digest).exists());
        assert!(LocalCache::open(&dir)
            .unwrap()
            .lookup(&"a".repeat(64))
            .is_none());
    }

    #[test]
    fn corrupt_blob_never_enters_the_store() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(&t.path().join("a")).unwrap();
        let dir = t.path().join("cache");
        let l1 = put(&store, b"good layer bytes");
        export(
            &dir,
            &store,
            vec![("a".repeat(64), rec(Some(l1.clone())))],
            &ExportOptions::default(),
        )
        .unwrap();
        let p = blob_path(&dir, &l1.blob.digest);
        let mut perm = fs::metadata(&p).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        fs::set_permissions(&p, perm).unwrap();
        fs::write(&p, b"evil layer bytes").unwrap();
        let b = Store::open(&t.path().join("b")).unwrap();
        let c = LocalCache::open(&dir).unwrap();
        assert!(matches!(
            c.copy_blob_into(&l1.blob, &b),
            Err(RemoteError::CorruptBlob { .. })
        ));
        assert!(!b.has_blob(&l1.blob.digest));
        fs::remove_file(&p).unwrap();
        assert!(matches!(
            c.copy_blob_into(&l1.blob, &b),
            Err(RemoteError::MissingBlob(_))
        ));
    }

    #[test]
    fn damaged_index_or_config_is_a_typed_error() {
        let t = tempfile::tempdir().unwrap();
        assert!(matches!(
            LocalCache::open(t.path()),
            Err(RemoteError::Io { .. })
        ));
        fs::write(t.path().join("index.json"), b"not json").unwrap();
        assert!(matches!(
            LocalCache::open(t.path()),
            Err(RemoteError::Invalid(_))
        ));
        let store = Store::open(&t.path().join("s")).unwrap();
        let dir = t.path().join("cache");
        let r = export(
            &dir,
            &store,
            vec![("a".repeat(64), rec(None))],
            &ExportOptions::default(),
        )
        .unwrap();
        let m = LocalCache::open(&dir).unwrap();
        let cfg_path = blob_path(&dir, &m.manifest().config.digest);
        fs::write(&cfg_path, b"{}").unwrap();
        assert!(matches!(
            LocalCache::open(&dir),
            Err(RemoteError::CorruptBlob { .. })
        ));
        // A later export replaces the unreadable cache instead of failing.
        let r2 = export(
            &dir,
            &store,
            vec![("b".repeat(64), rec(None))],
            &ExportOptions::default(),
        )
        .unwrap();
        assert!(r2.replaced_unreadable.is_some());
        assert_eq!(r2.records, 1);
        assert_ne!(r.manifest_digest, r2.manifest_digest);
    }
}
