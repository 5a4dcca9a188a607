//! Leases, garbage collection and integrity checks.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use forge_oci::{Descriptor, Digest, HashingReader};
use serde_json::Value;

use crate::fsutil;
use crate::lock::FileLock;
use crate::records::CacheRecord;
use crate::snapshot::{SnapshotMeta, FS_DIR, MARKER};
use crate::store::{lease_count, Inner, Store, BLOBS, MOUNTS, SNAPSHOTS};
use crate::StoreError;

/// JSON blobs bigger than this are not read while walking references (no manifest, index or
/// config is anywhere near it).
const MAX_JSON_BLOB: u64 = 16 << 20;

/// Held by a running build: while any lease exists (in any process), `prune` and
/// `check(true)` do not run, so nothing the build reads or writes disappears under it.
/// Released on drop.
#[derive(Debug)]
pub struct Lease {
    _lock: FileLock,
    inner: Arc<Inner>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.inner.leases.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What `prune` should remove besides unreachable content.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Drop every cache record first (`forge prune --all`), so only tagged images survive.
    pub all_records: bool,
    /// Drop cache records created longer ago than this.
    pub records_older_than: Option<Duration>,
    /// Also remove `RUN --mount=type=cache` directories that nobody has locked.
    pub cache_mounts: bool,
    /// Wait for running builds (leases) to finish; when false, return [`StoreError::Busy`]
    /// instead.
    pub wait: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            all_records: false,
            records_older_than: None,
            cache_mounts: false,
            wait: true,
        }
    }
}

/// What `prune` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub blobs_removed: usize,
    pub snapshots_removed: usize,
    pub records_removed: usize,
    pub temp_removed: usize,
    pub cache_mounts_removed: usize,
    pub bytes_freed: u64,
}

/// A blob that something in the store refers to but that is not there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingBlob {
    pub digest: Digest,
    /// Who refers to it: `manifest <digest>`.
    pub referenced_by: String,
}

/// What `check` found (and, with repair, fixed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub blobs_checked: usize,
    pub snapshots_checked: usize,
    pub tags_checked: usize,
    pub records_checked: usize,
    /// Blobs whose content does not hash to their name.
    pub corrupt_blobs: Vec<Digest>,
    /// Files under `blobs/sha256/` whose names are not digests.
    pub stray_files: Vec<PathBuf>,
    /// Snapshot directories without a valid completion marker or tree (by directory name).
    pub incomplete_snapshots: Vec<String>,
    /// Tags whose manifest blob is missing or corrupt.
    pub dangling_tags: Vec<String>,
    /// Config or layer blobs that a tagged image needs but the store lacks (not repairable
    /// locally: pull the image again).
    pub missing_blobs: Vec<MissingBlob>,
    /// Record files that do not parse.
    pub bad_records: Vec<String>,
    /// Records with a ref that is neither a blob nor a snapshot.
    pub dangling_records: Vec<String>,
    /// The tags file itself does not parse.
    pub tags_file_corrupt: bool,
    /// Temp entries of dead processes (removed by repair).
    pub stale_temp: usize,
    /// Whether this was `check(true)` and the problems above were removed.
    pub repaired: bool,
}

impl CheckReport {
    /// True when nothing is wrong (stale temp entries do not count: they are harmless).
    pub fn is_clean(&self) -> bool {
        self.corrupt_blobs.is_empty()
            && self.stray_files.is_empty()
            && self.incomplete_snapshots.is_empty()
            && self.dangling_tags.is_empty()
            && self.missing_blobs.is_empty()
            && self.bad_records.is_empty()
            && self.dangling_records.is_empty()
            && !self.tags_file_corrupt
    }
}

#[derive(Default)]
struct Reach {
    blobs: HashSet<Digest>,
    snapshots: HashSet<Digest>,
    visited: HashSet<Digest>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Unknown,
    Layer,
}

impl Store {
    fn gc_lock_path(&self) -> PathBuf {
        self.dir("locks").join("gc.lock")
    }

    /// Takes a lease (a shared lock on the store-wide GC lock). Hold it for the whole of a build,
    /// pull or import: `prune` waits until every lease is gone, so blobs and snapshots written
    /// before the build has tagged or recorded them are safe.
    pub fn lease(&self) -> Result<Lease, StoreError> {
        let p = self.gc_lock_path();
        let lock = FileLock::acquire(&p, false, true)
            .map_err(StoreError::io("lock", &p))?
            .ok_or_else(|| StoreError::io("lock", &p)(io::Error::other("lock not acquired")))?;
        self.inner.leases.fetch_add(1, Ordering::SeqCst);
        Ok(Lease {
            _lock: lock,
            inner: self.inner.clone(),
        })
    }

    fn exclusive_gc(&self, wait: bool) -> Result<FileLock, StoreError> {
        if lease_count(&self.inner) > 0 {
            // Waiting for our own lease would never end.
            return Err(StoreError::Busy);
        }
        let p = self.gc_lock_path();
        FileLock::acquire(&p, true, wait)
            .map_err(StoreError::io("lock", &p))?
            .ok_or(StoreError::Busy)
    }

    /// Removes everything no tag and no cache record reaches, plus temp entries of dead
    /// processes; optionally old or all cache records and unused cache mounts first.
    ///
    /// Reachability: tag → manifest (or index → manifests) → config + layer blobs; config
    /// `rootfs.diff_ids` → snapshots; record `refs` → blobs and snapshots (a ref that is a
    /// manifest, index or config blob is followed like a tag).
    ///
    /// Runs under the exclusive GC lock: it waits for (or, with `wait: false`, refuses to run
    /// during) every lease. Calling it while this process holds a lease returns
    /// [`StoreError::Busy`].
    pub fn prune(&self, opts: &PruneOptions) -> Result<PruneReport, StoreError> {
        let _gc = self.exclusive_gc(opts.wait)?;
        let mut report = PruneReport::default();

        let (temp, temp_bytes) = self.clean_stale_temp();
        report.temp_removed = temp;
        report.bytes_freed += temp_bytes;

        // Records: drop by options, drop unreadable ones, collect the refs of the rest.
        let now = fsutil::now_unix();
        let mut reach = Reach::default();
        let mut record_refs = Vec::new();
        for (_key, path) in self.record_files()? {
            let record: Option<CacheRecord> = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let drop = match &record {
                None => true,
                Some(_) if opts.all_records => true,
                Some(r) => opts
                    .records_older_than
                    .is_some_and(|age| now.saturating_sub(r.created_unix) > age.as_secs()),
            };
            if drop {
                let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                match fs::remove_file(&path) {
                    Ok(()) => {
                        report.records_removed += 1;
                        report.bytes_freed += size;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io("remove record", &path)(e)),
                }
            } else if let Some(r) = record {
                record_refs.extend(r.refs);
            }
        }

        for (_name, d) in self.read_tags()?.tags {
            self.visit(&d, Kind::Unknown, &mut reach);
        }
        for d in record_refs {
            reach.snapshots.insert(d.clone());
            self.visit(&d, Kind::Unknown, &mut reach);
        }

        for d in self.list_blobs()? {
            if reach.blobs.contains(&d) {
                continue;
            }
            let p = self.blob_path(&d);
            let size = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            match fs::remove_file(&p) {
                Ok(()) => {
                    report.blobs_removed += 1;
                    report.bytes_freed += size;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("remove blob", &p)(e)),
            }
        }

        let snap_root = self.dir(SNAPSHOTS);
        for e in fs::read_dir(&snap_root).map_err(StoreError::io("list", &snap_root))? {
            let e = e.map_err(StoreError::io("list", &snap_root))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let keep = format!("sha256:{name}")
                .parse::<Digest>()
                .is_ok_and(|d| reach.snapshots.contains(&d))
                && e.path().join(MARKER).is_file();
            if keep {
                continue;
            }
            let size = fsutil::tree_size(&e.path());
            self.trash(&e.path())?;
            report.snapshots_removed += 1;
            report.bytes_freed += size;
        }
        if self.durable() {
            for dir in [self.dir(BLOBS), snap_root] {
                fsutil::fsync_dir(&dir).map_err(StoreError::io("fsync", &dir))?;
            }
        }

        if opts.cache_mounts {
            let mounts = self.dir(MOUNTS);
            for e in fs::read_dir(&mounts).map_err(StoreError::io("list", &mounts))? {
                let e = e.map_err(StoreError::io("list", &mounts))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if !e.path().is_dir() {
                    continue;
                }
                let lock_path = self.dir("locks/mounts").join(&name);
                let Some(_lock) = FileLock::acquire(&lock_path, true, false)
                    .map_err(StoreError::io("lock", &lock_path))?
                else {
                    continue; // in use by a RUN right now
                };
                let size = fsutil::tree_size(&e.path());
                self.trash(&e.path())?;
                let _ = fs::remove_file(mounts.join(format!("{name}.id")));
                report.cache_mounts_removed += 1;
                report.bytes_freed += size;
            }
        }

        // Lock files nobody holds can go (lockers re-check the inode, see lock.rs).
        for sub in ["locks/snapshots", "locks/mounts"] {
            let dir = self.dir(sub);
            if let Ok(entries) = fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let _ = FileLock::remove_if_unused(&e.path());
                }
            }
        }
        Ok(report)
    }

    /// Marks `d` and whatever it references as reachable.
    fn visit(&self, d: &Digest, kind: Kind, reach: &mut Reach) {
        reach.blobs.insert(d.clone());
        if kind == Kind::Layer || !reach.visited.insert(d.clone()) {
            return;
        }
        let Some(value) = self.small_json_blob(d) else {
            return;
        };
        if let Some(diff_ids) = value
            .get("rootfs")
            .and_then(|r| r.get("diff_ids"))
            .and_then(Value::as_array)
        {
            for id in diff_ids {
                if let Some(id) = id.as_str().and_then(|s| s.parse::<Digest>().ok()) {
                    reach.snapshots.insert(id);
                }
            }
        }
        if let Some(list) = value.get("manifests").and_then(Value::as_array) {
            for m in list {
                if let Ok(desc) = serde_json::from_value::<Descriptor>(m.clone()) {
                    self.visit(&desc.digest, Kind::Unknown, reach);
                }
            }
        }
        if let Some(cfg) = value
            .get("config")
            .and_then(|c| serde_json::from_value::<Descriptor>(c.clone()).ok())
        {
            self.visit(&cfg.digest, Kind::Unknown, reach);
        }
        if let Some(layers) = value.get("layers").and_then(Value::as_array) {
            for l in layers {
                if let Ok(desc) = serde_json::from_value::<Descriptor>(l.clone()) {
                    self.visit(&desc.digest, Kind::Layer, reach);
                }
            }
        }
    }

    /// The blob parsed as a JSON object, when it is a small one (layers are never read whole).
    pub(crate) fn small_json_blob(&self, d: &Digest) -> Option<Value> {
        let mut f = File::open(self.blob_path(d)).ok()?;
        let len = f.metadata().ok()?.len();
        if len > MAX_JSON_BLOB {
            return None;
        }
        let mut first = [0u8; 1];
        f.read_exact(&mut first).ok()?;
        if first[0] != b'{' {
            return None;
        }
        let mut buf = vec![b'{'];
        f.read_to_end(&mut buf).ok()?;
        let v: Value = serde_json::from_slice(&buf).ok()?;
        v.is_object().then_some(v)
    }

    /// Verifies the store: re-hashes every blob, checks every snapshot's completion marker,
    /// every tag's manifest (and the config and layer blobs it needs) and every record. With
    /// `repair`, removes corrupt blobs, stray files, incomplete snapshots, dangling tags,
    /// unreadable and dangling records, and stale temp entries; a corrupt tags file is set
    /// aside as `tags.json.corrupt`.
    ///
    /// `check(false)` runs beside builds; `check(true)` needs the exclusive GC lock and returns
    /// [`StoreError::Busy`] while any lease is held.
    pub fn check(&self, repair: bool) -> Result<CheckReport, StoreError> {
        let _gc = if repair {
            self.exclusive_gc(false)?
        } else {
            let p = self.gc_lock_path();
            FileLock::acquire(&p, false, true)
                .map_err(StoreError::io("lock", &p))?
                .ok_or_else(|| StoreError::io("lock", &p)(io::Error::other("lock not acquired")))?
        };
        let mut report = CheckReport {
            repaired: repair,
            ..CheckReport::default()
        };

        // Blobs.
        let blob_dir = self.dir(BLOBS);
        let mut corrupt = BTreeSet::new();
        for e in fs::read_dir(&blob_dir).map_err(StoreError::io("list", &blob_dir))? {
            let e = e.map_err(StoreError::io("list", &blob_dir))?;
            let path = e.path();
            let Ok(d) = format!("sha256:{}", e.file_name().to_string_lossy()).parse::<Digest>()
            else {
                if repair {
                    fsutil::remove_tree(&path).map_err(StoreError::io("remove", &path))?;
                }
                report.stray_files.push(path);
                continue;
            };
            report.blobs_checked += 1;
            let f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("open blob", &path)(e)),
            };
            let mut r = HashingReader::new(io::BufReader::with_capacity(1 << 20, f));
            io::copy(&mut r, &mut io::sink()).map_err(StoreError::io("read blob", &path))?;
            let (actual, _) = r.finish();
            if actual != d {
                if repair {
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(StoreError::io("remove blob", &path)(e)),
                    }
                }
                corrupt.insert(d.clone());
                report.corrupt_blobs.push(d);
            }
        }
        report.corrupt_blobs.sort();
        report.stray_files.sort();
        let blob_ok = |d: &Digest| self.has_blob(d) && !corrupt.contains(d);

        // Snapshots.
        let snap_root = self.dir(SNAPSHOTS);
        for e in fs::read_dir(&snap_root).map_err(StoreError::io("list", &snap_root))? {
            let e = e.map_err(StoreError::io("list", &snap_root))?;
            let name = e.file_name().to_string_lossy().into_owned();
            report.snapshots_checked += 1;
            let dir = e.path();
            let meta: Option<SnapshotMeta> = fs::read(dir.join(MARKER))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let ok = meta.is_some_and(|m| m.diff_id.hex() == name) && dir.join(FS_DIR).is_dir();
            if !ok {
                if repair {
                    self.trash(&dir)?;
                }
                report.incomplete_snapshots.push(name);
            }
        }
        report.incomplete_snapshots.sort();
        let snapshot_ok = |d: &Digest| self.snapshot_path(d).is_some();

        // Tags and the images they name.
        match self.read_tags() {
            Ok(tags) => {
                let mut seen = HashSet::new();
                for (name, d) in &tags.tags {
                    report.tags_checked += 1;
                    if !blob_ok(d) {
                        report.dangling_tags.push(name.clone());
                        continue;
                    }
                    if seen.insert(d.clone()) {
                        self.check_image_blobs(d, &blob_ok, &mut report.missing_blobs);
                    }
                }
                if repair && !report.dangling_tags.is_empty() {
                    let dangling = report.dangling_tags.clone();
                    self.update_tags(|t| {
                        for n in &dangling {
                            t.tags.remove(n);
                        }
                        (true, ())
                    })?;
                }
            }
            Err(StoreError::CorruptTags { path, .. }) => {
                report.tags_file_corrupt = true;
                if repair {
                    let aside = path.with_extension("json.corrupt");
                    fs::rename(&path, &aside).map_err(StoreError::io("set aside", &path))?;
                }
            }
            Err(e) => return Err(e),
        }

        // Records.
        for (key, path) in self.record_files()? {
            report.records_checked += 1;
            let record: Option<CacheRecord> = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let bad = match record {
                None => {
                    report.bad_records.push(key);
                    true
                }
                Some(r) if r.refs.iter().any(|d| !blob_ok(d) && !snapshot_ok(d)) => {
                    report.dangling_records.push(key);
                    true
                }
                Some(_) => false,
            };
            if bad && repair {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io("remove record", &path)(e)),
                }
            }
        }

        // Temp entries of dead processes.
        if repair {
            report.stale_temp = self.clean_stale_temp().0;
        } else {
            report.stale_temp = self.count_stale_temp();
        }
        Ok(report)
    }

    /// Records the config and layer blobs an image (manifest or index) needs but lacks.
    fn check_image_blobs(
        &self,
        d: &Digest,
        blob_ok: &dyn Fn(&Digest) -> bool,
        missing: &mut Vec<MissingBlob>,
    ) {
        let Some(value) = self.small_json_blob(d) else {
            return;
        };
        let mut need = |dd: &Digest, by: &str| {
            if !blob_ok(dd) {
                missing.push(MissingBlob {
                    digest: dd.clone(),
                    referenced_by: by.to_string(),
                });
            }
        };
        let by = format!("manifest {d}");
        if let Some(list) = value.get("manifests").and_then(Value::as_array) {
            // An index: platform manifests that were not pulled are normal; check the present ones.
            for m in list {
                if let Ok(desc) = serde_json::from_value::<Descriptor>(m.clone()) {
                    if blob_ok(&desc.digest) {
                        self.check_image_blobs(&desc.digest, blob_ok, missing);
                    }
                }
            }
            return;
        }
        if let Some(cfg) = value
            .get("config")
            .and_then(|c| serde_json::from_value::<Descriptor>(c.clone()).ok())
        {
            need(&cfg.digest, &by);
        }
        if let Some(layers) = value.get("layers").and_then(Value::as_array) {
            for l in layers {
                if let Ok(desc) = serde_json::from_value::<Descriptor>(l.clone()) {
                    need(&desc.digest, &by);
                }
            }
        }
    }

    fn count_stale_temp(&self) -> usize {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if fsutil::temp_owner(&name).is_some_and(fsutil::owner_alive) {
                    return false;
                }
                File::open(e.path())
                    .ok()
                    .is_some_and(|f| crate::lock::try_lock_file_nb(&f, true).unwrap_or(false))
            })
            .count()
    }
}
