//! Cache records: the solver's key → result index.

use std::fs;
use std::io;
use std::path::PathBuf;

use forge_oci::Digest;
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::store::{Store, RECORDS};
use crate::StoreError;

/// One cache record. The store understands only `refs` (what the record keeps alive during
/// GC) and `created_unix` (for age-based pruning); `value` is the solver's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// Blob digests and snapshot diff_ids this record keeps alive.
    pub refs: Vec<Digest>,
    /// Opaque to the store.
    pub value: serde_json::Value,
    /// Seconds since the epoch when the record was made.
    pub created_unix: u64,
}

impl CacheRecord {
    /// A record created now.
    pub fn new(refs: Vec<Digest>, value: serde_json::Value) -> CacheRecord {
        CacheRecord {
            refs,
            value,
            created_unix: fsutil::now_unix(),
        }
    }
}

/// Checks that a cache key is lower-case hex, 2 to 128 characters.
pub(crate) fn validate_key(key: &str) -> Result<(), StoreError> {
    let bad = |reason| StoreError::InvalidKey {
        what: "cache key",
        value: key.to_string(),
        reason,
    };
    if key.len() < 2 || key.len() > 128 {
        return Err(bad("expected 2 to 128 hex characters"));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad("expected lower-case hex characters"));
    }
    Ok(())
}

impl Store {
    pub(crate) fn record_path(&self, key: &str) -> PathBuf {
        self.dir(RECORDS)
            .join(&key[..2])
            .join(format!("{key}.json"))
    }

    /// The record for `key`. A record that cannot be parsed (which atomic writes make very
    /// unlikely) is treated as missing; `check(true)` removes it.
    pub fn cache_get(&self, key: &str) -> Result<Option<CacheRecord>, StoreError> {
        validate_key(key)?;
        let p = self.record_path(key);
        match fs::read(&p) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("read record", &p)(e)),
        }
    }

    /// Stores (or replaces) the record for `key`, atomically.
    pub fn cache_put(&self, key: &str, record: &CacheRecord) -> Result<(), StoreError> {
        validate_key(key)?;
        let p = self.record_path(key);
        let dir = p.parent().expect("record path has a parent");
        if !dir.is_dir() {
            match fs::create_dir(dir) {
                Ok(()) if self.durable() => {
                    let parent = self.dir(RECORDS);
                    fsutil::fsync_dir(&parent).map_err(StoreError::io("fsync", &parent))?;
                }
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StoreError::io("create", dir)(e)),
            }
        }
        let bytes = serde_json::to_vec(record).expect("records serialize");
        fsutil::atomic_write(&self.tmp_dir(), &p, &bytes, self.durable())
            .map_err(StoreError::io("write record", &p))
    }

    /// Removes the record for `key`; returns whether it existed.
    pub fn cache_remove(&self, key: &str) -> Result<bool, StoreError> {
        validate_key(key)?;
        let p = self.record_path(key);
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io("remove record", &p)(e)),
        }
    }

    /// Every record key with its path, sorted by key. Files that are not records are skipped.
    pub(crate) fn record_files(&self) -> Result<Vec<(String, PathBuf)>, StoreError> {
        let root = self.dir(RECORDS);
        let mut out = Vec::new();
        for shard in fs::read_dir(&root).map_err(StoreError::io("list", &root))? {
            let shard = shard.map_err(StoreError::io("list", &root))?;
            let sp = shard.path();
            if !sp.is_dir() {
                continue;
            }
            for e in fs::read_dir(&sp).map_err(StoreError::io("list", &sp))? {
                let e = e.map_err(StoreError::io("list", &sp))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(key) = name.strip_suffix(".json") {
                    if validate_key(key).is_ok() {
                        out.push((key.to_string(), e.path()));
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every record key, sorted.
    pub fn cache_keys(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.record_files()?.into_iter().map(|(k, _)| k).collect())
    }
}
