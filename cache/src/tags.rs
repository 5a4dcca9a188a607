//! Tags: image names pointing at manifest digests, in one JSON file replaced atomically.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::PathBuf;

use forge_oci::reference::Reference;
use forge_oci::Digest;
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::lock::FileLock;
use crate::store::{Store, TAGS};
use crate::StoreError;

#[derive(Serialize, Deserialize, Default)]
pub(crate) struct TagsFile {
    pub(crate) tags: BTreeMap<String, Digest>,
}

/// Normalizes an image name the way Docker does (`busybox` → `docker.io/library/busybox:latest`).
/// Names pinned by digest cannot be tags.
pub fn normalize_tag(name: &str) -> Result<String, StoreError> {
    let r = Reference::parse(name).map_err(|e| StoreError::InvalidName {
        name: name.to_string(),
        reason: e.kind.to_string(),
    })?;
    if r.digest.is_some() {
        return Err(StoreError::InvalidName {
            name: name.to_string(),
            reason: "a name pinned by digest (@sha256:…) cannot be used as a tag".to_string(),
        });
    }
    Ok(r.with_default_tag().to_string())
}

impl Store {
    pub(crate) fn tags_path(&self) -> PathBuf {
        self.dir(TAGS).join("tags.json")
    }

    pub(crate) fn read_tags(&self) -> Result<TagsFile, StoreError> {
        let p = self.tags_path();
        match fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::CorruptTags {
                path: p.clone(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(TagsFile::default()),
            Err(e) => Err(StoreError::io("read", &p)(e)),
        }
    }

    /// Runs `f` on the tags under the tags lock and writes the result atomically if it says so.
    pub(crate) fn update_tags<T>(
        &self,
        f: impl FnOnce(&mut TagsFile) -> (bool, T),
    ) -> Result<T, StoreError> {
        let lock_path = self.dir("locks").join("tags.lock");
        let _lock = FileLock::acquire(&lock_path, true, true)
            .map_err(StoreError::io("lock", &lock_path))?
            .ok_or_else(|| {
                StoreError::io("lock", &lock_path)(io::Error::other("lock not acquired"))
            })?;
        let mut tags = self.read_tags()?;
        let (changed, out) = f(&mut tags);
        if changed {
            let bytes = serde_json::to_vec_pretty(&tags).expect("tags serialize");
            let p = self.tags_path();
            fsutil::atomic_write(&self.tmp_dir(), &p, &bytes, self.durable())
                .map_err(StoreError::io("write", &p))?;
        }
        Ok(out)
    }

    /// Points `name` (normalized, e.g. `docker.io/library/busybox:latest`) at a manifest digest,
    /// replacing any previous target. Atomic: readers see the old or the new mapping.
    pub fn set_tag(&self, name: &str, manifest: &Digest) -> Result<(), StoreError> {
        let key = normalize_tag(name)?;
        self.update_tags(|t| {
            let changed = t.tags.get(&key) != Some(manifest);
            t.tags.insert(key, manifest.clone());
            (changed, ())
        })
    }

    /// The manifest digest `name` points at.
    pub fn get_tag(&self, name: &str) -> Result<Option<Digest>, StoreError> {
        let key = normalize_tag(name)?;
        Ok(self.read_tags()?.tags.get(&key).cloned())
    }

    /// All tags (normalized names), sorted by name.
    pub fn list_tags(&self) -> Result<Vec<(String, Digest)>, StoreError> {
        Ok(self.read_tags()?.tags.into_iter().collect())
    }

    /// Removes a tag; returns whether it existed. The image's blobs stay until `prune`.
    pub fn remove_tag(&self, name: &str) -> Result<bool, StoreError> {
        let key = normalize_tag(name)?;
        self.update_tags(|t| {
            let existed = t.tags.remove(&key).is_some();
            (existed, existed)
        })
    }
}
