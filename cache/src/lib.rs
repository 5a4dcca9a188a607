//! forge's local store: content-addressed blobs, unpacked layer snapshots, tags, the solver's
//! cache records, and the locks and garbage collection that keep them consistent when several
//! builds (threads or processes) share one store and any of them may be killed at any moment.
//!
//! # A tour
//!
//! ```
//! use forge_cache::{CacheRecord, PruneOptions, Store};
//! use forge_oci::Digest;
//! use std::io::Write;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path()).unwrap();
//!
//! // A running build holds a lease: prune (in any process) waits until it is released.
//! let lease = store.lease().unwrap();
//!
//! // Blobs are named by their sha256; small ones in one call, big ones streamed.
//! let config = store.put_blob_bytes(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#).unwrap();
//! let mut w = store.blob_writer().unwrap();
//! w.write_all(b"layer bytes").unwrap();
//! let (layer, size) = w.commit(None).unwrap();   // verified, fsynced, renamed into place
//! assert_eq!(size, 11);
//! assert_eq!(store.read_blob(&layer).unwrap(), b"layer bytes");
//!
//! // Snapshots are unpacked layers keyed by diff_id; `fill` works in a staging directory and the
//! // result appears atomically (concurrent creators of the same id are serialized).
//! let diff_id = Digest::of(b"some layer tar");
//! let tree = store
//!     .create_snapshot(&diff_id, |dir| std::fs::write(dir.join("hello"), "hi"))
//!     .unwrap();
//! assert_eq!(std::fs::read_to_string(tree.join("hello")).unwrap(), "hi");
//!
//! // The solver remembers results under its cache keys; refs keep blobs and snapshots alive.
//! let record = CacheRecord::new(vec![layer.clone(), diff_id.clone()], serde_json::json!({"step": 1}));
//! store.cache_put("ab12cd", &record).unwrap();
//! assert_eq!(store.cache_get("ab12cd").unwrap(), Some(record));
//!
//! // Tags map normalized image names to manifest digests.
//! let manifest = store.put_blob_bytes(format!(
//!     r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":82}},"layers":[]}}"#
//! ).as_bytes()).unwrap();
//! store.set_tag("busybox", &manifest).unwrap();
//! assert_eq!(store.list_tags().unwrap()[0].0, "docker.io/library/busybox:latest");
//! assert_eq!(store.resolve_image("busybox:latest").unwrap(), manifest);
//! assert_eq!(store.resolve_image(&manifest.hex()[..8]).unwrap(), manifest);
//!
//! // GC: everything reachable from tags and records survives; the rest goes.
//! let orphan = store.put_blob_bytes(b"nobody needs me").unwrap();
//! drop(lease);
//! let report = store.prune(&PruneOptions::default()).unwrap();
//! assert_eq!(report.blobs_removed, 1);
//! assert!(!store.has_blob(&orphan) && store.has_blob(&layer) && store.has_blob(&config));
//! assert!(store.check(false).unwrap().is_clean());
//! ```
//!
//! # Layout
//!
//! Everything lives under one root (see [`Store::default_root`]); every area carries a version
//! in its name so a future layout can sit beside this one. `docs/layout.md` has the details.
//!
//! ```text
//! <root>/LAYOUT                       "forge-store-v1"
//! <root>/blobs/sha256/<hex>           immutable blobs (read-only files)
//! <root>/snapshots/v1/<diff hex>/     snapshot.json (completion marker) + fs/ (the tree)
//! <root>/tags/v1/tags.json            {"tags": {"docker.io/library/busybox:latest": "sha256:…"}}
//! <root>/records/v1/<key[0..2]>/<key>.json
//! <root>/state/v1/<name>              the solver's named state files
//! <root>/cache-mounts/v1/<sha256(id)>/ and <sha256(id)>.id
//! <root>/tmp/p<pid>.<start>-<seq>-<nanos>-<label>   temp files and dirs, flock'ed by the owner
//! <root>/locks/{gc.lock, tags.lock, snapshots/<hex>, mounts/<hash>}
//! ```
//!
//! # Crash safety
//!
//! Nothing becomes visible under its final name until it is complete: every write goes to a
//! temp file or directory under `tmp/` (same filesystem), is fsynced (snapshots: `syncfs`), then
//! renamed, and the parent directory is fsynced. Blobs are hashed while written and a blob whose
//! content does not match the expected digest is never renamed into place. Removal is the
//! reverse: snapshots are first renamed into `tmp/`, then deleted. A killed process therefore
//! leaves only `tmp/` entries, and [`Store::open`] (and [`Store::prune`]) delete those whose
//! owner pid is dead and whose flock is free. A cache record that fails to parse reads as
//! missing.
//!
//! # Locking
//!
//! All locks are flock(2) on files under `locks/` (or on the temp entry itself), so they work
//! the same between threads and processes and vanish with a killed process:
//! - a per-snapshot creation lock serializes creators of one diff_id;
//! - the tags lock serializes read-modify-write of `tags.json` (readers need no lock);
//! - the store-wide GC lock: [`Store::lease`] takes it shared, [`Store::prune`] and
//!   `check(true)` exclusive. Hold a lease for the whole of a build, pull or import: anything
//!   written while it is held survives until the lease is dropped, and after that only what a
//!   tag or record reaches survives the next prune.
//!
//! # Garbage collection
//!
//! Roots are tags and cache records. A tag reaches its manifest (or index, then its manifests),
//! which reach their config and layer blobs; a config's `rootfs.diff_ids` reach snapshots. A
//! record's `refs` reach blobs and snapshots with those digests (followed like a tag when the
//! blob is a manifest, index or config). [`Store::prune`] removes everything else, optionally
//! after dropping old or all records; [`Store::check`] audits and repairs.
//!
//! `Store` implements [`forge_oci::BlobSource`] and [`forge_oci::BlobSink`], so OCI layout and
//! archive code reads from and writes into it directly.

mod compress;
mod error;
mod fsutil;
mod gc;
mod images;
mod lock;
mod records;
pub mod remote;
mod snapshot;
mod store;
mod tags;
mod temp;
#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use compress::is_plain_layer;
pub use error::{SnapshotError, StoreError};
pub use gc::{CheckReport, Lease, MissingBlob, PruneOptions, PruneReport};
pub use images::ImageSummary;
pub use lock::FileLock;
pub use records::CacheRecord;
pub use store::{BlobWriter, OpenOptions, Store, LAYOUT_VERSION};
pub use tags::normalize_tag;
pub use temp::TempDir;
