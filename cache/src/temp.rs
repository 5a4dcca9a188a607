//! Scratch directories under the store's `tmp/`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::fsutil;
use crate::lock;
use crate::StoreError;

/// A scratch directory on the store's filesystem (so its content can be renamed into the
/// store), removed when dropped.
///
/// While it lives, the directory is flock'ed and named after the owner's pid, so neither
/// `Store::open` nor `prune` in another process touches it. If the owner is killed, the next
/// `open` or `prune` removes it.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    lock: Option<File>,
    keep: bool,
}

impl TempDir {
    pub(crate) fn create(tmp_root: &Path, prefix: &str) -> Result<TempDir, StoreError> {
        let path = tmp_root.join(fsutil::temp_name(prefix));
        fs::create_dir(&path).map_err(StoreError::io("create temp dir", &path))?;
        let lock = File::open(&path).map_err(StoreError::io("open temp dir", &path))?;
        lock::try_lock_file(&lock, true).map_err(StoreError::io("lock temp dir", &path))?;
        Ok(TempDir {
            path,
            lock: Some(lock),
            keep: false,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory now, reporting failures (dropping ignores them).
    pub fn close(mut self) -> Result<(), StoreError> {
        self.keep = true;
        let r =
            fsutil::remove_tree(&self.path).map_err(StoreError::io("remove temp dir", &self.path));
        self.lock.take();
        r
    }

    /// Marks the directory as moved away (renamed into the store): dropping no longer removes
    /// anything.
    pub(crate) fn disarm(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fsutil::remove_tree(&self.path);
        }
    }
}
