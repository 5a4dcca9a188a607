//! Snapshots: unpacked layers keyed by diff_id, used as overlay lowerdirs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use forge_oci::Digest;
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::lock::FileLock;
use crate::store::{Store, SNAPSHOTS};
use crate::{SnapshotError, StoreError};

/// The completion marker inside every snapshot directory, beside its `fs/` tree.
pub(crate) const MARKER: &str = "snapshot.json";
/// The tree itself.
pub(crate) const FS_DIR: &str = "fs";

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct SnapshotMeta {
    pub(crate) diff_id: Digest,
    pub(crate) created_unix: u64,
}

impl Store {
    pub(crate) fn snapshot_dir(&self, diff_id: &Digest) -> PathBuf {
        self.dir(SNAPSHOTS).join(diff_id.hex())
    }

    /// The unpacked tree of the layer with this diff_id, when the snapshot exists and is
    /// complete. The returned directory must be treated as read-only.
    pub fn snapshot_path(&self, diff_id: &Digest) -> Option<PathBuf> {
        let dir = self.snapshot_dir(diff_id);
        if dir.join(MARKER).is_file() {
            Some(dir.join(FS_DIR))
        } else {
            None
        }
    }

    /// Every complete snapshot's diff_id, sorted.
    pub fn list_snapshots(&self) -> Result<Vec<Digest>, StoreError> {
        let dir = self.dir(SNAPSHOTS);
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(StoreError::io("list", &dir))? {
            let e = e.map_err(StoreError::io("list", &dir))?;
            if let Ok(d) = format!("sha256:{}", e.file_name().to_string_lossy()).parse::<Digest>() {
                if self.snapshot_path(&d).is_some() {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn snapshot_lock(&self, diff_id: &Digest) -> Result<FileLock, StoreError> {
        let p = self.dir("locks/snapshots").join(diff_id.hex());
        FileLock::acquire(&p, true, true)
            .map_err(StoreError::io("lock snapshot", &p))?
            .ok_or_else(|| {
                StoreError::io("lock snapshot", &p)(io::Error::other("lock not acquired"))
            })
    }

    /// Creates the snapshot `diff_id` by calling `fill` on an empty staging directory, then
    /// moving it into place atomically. Concurrent creators of the same id (threads or
    /// processes) are serialized: the first one fills, the others get its result. When the
    /// snapshot already exists, `fill` is not called. If `fill` fails or the process dies,
    /// nothing becomes visible.
    ///
    /// The store does not verify that the tree matches `diff_id`; the caller (who unpacked the
    /// layer and computed its diff_id) vouches for it.
    pub fn create_snapshot<E>(
        &self,
        diff_id: &Digest,
        fill: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<PathBuf, SnapshotError<E>> {
        if let Some(p) = self.snapshot_path(diff_id) {
            return Ok(p);
        }
        let _lock = self.snapshot_lock(diff_id)?;
        if let Some(p) = self.snapshot_path(diff_id) {
            return Ok(p);
        }
        let staging = self.temp_dir("snapshot")?;
        let fs_dir = staging.path().join(FS_DIR);
        fs::create_dir(&fs_dir).map_err(StoreError::io("create", &fs_dir))?;
        fill(&fs_dir).map_err(SnapshotError::Fill)?;
        Ok(self.publish_snapshot(diff_id, staging)?)
    }

    /// Moves an already-filled directory (for example an overlay upperdir that lives in a
    /// [`Store::temp_dir`]) into place as snapshot `diff_id`. `staged` must be on the store's
    /// filesystem. When the snapshot already exists, `staged` is left untouched and the existing
    /// path is returned.
    pub fn commit_snapshot_dir(
        &self,
        diff_id: &Digest,
        staged: &Path,
    ) -> Result<PathBuf, StoreError> {
        if let Some(p) = self.snapshot_path(diff_id) {
            return Ok(p);
        }
        let meta =
            fs::symlink_metadata(staged).map_err(StoreError::io("stat staged snapshot", staged))?;
        if !meta.is_dir() {
            return Err(StoreError::io("commit snapshot", staged)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a directory",
            )));
        }
        let _lock = self.snapshot_lock(diff_id)?;
        if let Some(p) = self.snapshot_path(diff_id) {
            return Ok(p);
        }
        let staging = self.temp_dir("snapshot")?;
        let fs_dir = staging.path().join(FS_DIR);
        if let Err(e) = fs::rename(staged, &fs_dir) {
            if e.raw_os_error() == Some(libc::EXDEV) {
                return Err(StoreError::CrossDevice {
                    path: staged.to_path_buf(),
                });
            }
            return Err(StoreError::io("move staged snapshot", staged)(e));
        }
        self.publish_snapshot(diff_id, staging)
    }

    /// Writes the completion marker into `staging` (which holds `fs/`), makes it durable and
    /// renames it to its final name. Caller holds the snapshot's creation lock.
    fn publish_snapshot(
        &self,
        diff_id: &Digest,
        mut staging: crate::TempDir,
    ) -> Result<PathBuf, StoreError> {
        let meta = SnapshotMeta {
            diff_id: diff_id.clone(),
            created_unix: fsutil::now_unix(),
        };
        let marker = staging.path().join(MARKER);
        let bytes = serde_json::to_vec(&meta).expect("snapshot meta serializes");
        fs::write(&marker, bytes).map_err(StoreError::io("write", &marker))?;
        if self.durable() {
            fsutil::syncfs(staging.path()).map_err(StoreError::io("syncfs", staging.path()))?;
        }
        let dest = self.snapshot_dir(diff_id);
        // A leftover directory under the final name without a marker can only come from a
        // manual copy or a removal that crashed before this layout existed: replace it.
        if dest.exists() && !dest.join(MARKER).is_file() {
            self.trash(&dest)?;
        }
        fs::rename(staging.path(), &dest)
            .map_err(StoreError::io("rename snapshot into place", &dest))?;
        staging.disarm();
        if self.durable() {
            let dir = self.dir(SNAPSHOTS);
            fsutil::fsync_dir(&dir).map_err(StoreError::io("fsync", &dir))?;
        }
        Ok(dest.join(FS_DIR))
    }

    /// Removes a directory from the store without ever leaving it half-deleted under its
    /// visible name: it is first renamed into `tmp/` (under our pid, so it counts as stale if
    /// we die), then deleted.
    pub(crate) fn trash(&self, path: &Path) -> Result<(), StoreError> {
        let t = self.tmp_dir().join(fsutil::temp_name("trash"));
        match fs::rename(path, &t) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io("move to trash", path)(e)),
        }
        fsutil::remove_tree(&t).map_err(StoreError::io("remove", &t))
    }
}
