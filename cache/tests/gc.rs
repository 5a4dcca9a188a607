//! Leases, prune and check.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use forge_cache::{CacheRecord, MissingBlob, PruneOptions, PruneReport, Store, StoreError};
use forge_oci::{image::to_canonical_json, media, Descriptor, Digest, Index, Platform};
use serde_json::json;

fn no_wait() -> PruneOptions {
    PruneOptions {
        wait: false,
        ..PruneOptions::default()
    }
}

fn blob_set(store: &Store) -> BTreeSet<Digest> {
    store.list_blobs().unwrap().into_iter().collect()
}

fn snap_set(store: &Store) -> BTreeSet<Digest> {
    store.list_snapshots().unwrap().into_iter().collect()
}

#[test]
fn prune_keeps_tagged_images_and_removes_the_rest() {
    let (_t, store) = store();
    let img = put_image(
        &store,
        &[b"base layer", b"app layer"],
        "2024-01-01T00:00:00Z",
    );
    put_snapshots(&store, &img);
    store.set_tag("app:1", &img.manifest).unwrap();
    let orphan_blob = store.put_blob_bytes(b"orphan bytes!").unwrap(); // 13 bytes
    let orphan_snap = Digest::of(b"orphan snapshot");
    store
        .create_snapshot(&orphan_snap, |d| fs::write(d.join("f"), "12345"))
        .unwrap(); // 5 bytes
    let marker_len = fs::metadata(
        store
            .root()
            .join("snapshots/v1")
            .join(orphan_snap.hex())
            .join("snapshot.json"),
    )
    .unwrap()
    .len();

    let report = store.prune(&PruneOptions::default()).unwrap();
    assert_eq!(
        report,
        PruneReport {
            blobs_removed: 1,
            snapshots_removed: 1,
            records_removed: 0,
            temp_removed: 0,
            cache_mounts_removed: 0,
            bytes_freed: 13 + 5 + marker_len,
        }
    );
    assert!(!store.has_blob(&orphan_blob));
    assert_eq!(store.snapshot_path(&orphan_snap), None);
    let want: BTreeSet<Digest> = [img.manifest.clone(), img.config.clone()]
        .into_iter()
        .chain(img.layers.clone())
        .collect();
    assert_eq!(blob_set(&store), want);
    assert_eq!(snap_set(&store), img.diff_ids.iter().cloned().collect());
    // Idempotent.
    assert_eq!(
        store.prune(&PruneOptions::default()).unwrap(),
        PruneReport::default()
    );
    assert!(store.check(false).unwrap().is_clean());

    // Untagging makes the whole image collectable.
    store.remove_tag("app:1").unwrap();
    let r = store.prune(&PruneOptions::default()).unwrap();
    assert_eq!((r.blobs_removed, r.snapshots_removed), (4, 2));
    assert_eq!(blob_set(&store), BTreeSet::new());
    assert_eq!(snap_set(&store), BTreeSet::new());
    assert_eq!(
        entries(&store.root().join("snapshots/v1")),
        Vec::<String>::new()
    );
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
}

#[test]
fn prune_follows_indexes() {
    let (_t, store) = store();
    let amd = put_image_for(
        &store,
        &[b"amd64 layer"],
        "2024-01-01T00:00:00Z",
        &Platform::parse("linux/amd64").unwrap(),
    );
    let arm = put_image_for(
        &store,
        &[b"arm64 layer"],
        "2024-01-01T00:00:00Z",
        &Platform::parse("linux/arm64").unwrap(),
    );
    let mut d_amd = Descriptor::new(media::OCI_MANIFEST, amd.manifest.clone(), amd.manifest_size);
    d_amd.platform = Some(Platform::parse("linux/amd64").unwrap());
    let mut d_arm = Descriptor::new(media::OCI_MANIFEST, arm.manifest.clone(), arm.manifest_size);
    d_arm.platform = Some(Platform::parse("linux/arm64").unwrap());
    let index = Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.to_string()),
        manifests: vec![d_amd, d_arm],
        annotations: None,
    };
    let index = store.put_blob_bytes(&to_canonical_json(&index)).unwrap();
    store.set_tag("multi", &index).unwrap();
    let orphan = store.put_blob_bytes(b"orphan").unwrap();
    let r = store.prune(&PruneOptions::default()).unwrap();
    assert_eq!(r.blobs_removed, 1);
    assert!(!store.has_blob(&orphan));
    for d in [
        &index,
        &amd.manifest,
        &amd.config,
        &amd.layers[0],
        &arm.manifest,
        &arm.config,
        &arm.layers[0],
    ] {
        assert!(store.has_blob(d), "{d} was pruned");
    }
}

#[test]
fn records_keep_their_refs_alive_until_dropped() {
    let (_t, store) = store();
    let layer = store.put_blob_bytes(b"cached layer").unwrap();
    let snap = Digest::of(b"cached snapshot");
    store
        .create_snapshot(&snap, |d| fs::write(d.join("x"), "x"))
        .unwrap();
    // A record whose ref is an image manifest keeps the whole image.
    let img = put_image(&store, &[b"img layer"], "2024-01-01T00:00:00Z");
    put_snapshots(&store, &img);

    let fresh = CacheRecord::new(vec![layer.clone(), snap.clone()], json!({"k": 1}));
    let old = CacheRecord {
        refs: vec![img.manifest.clone()],
        value: json!({"k": 2}),
        created_unix: 1_000,
    };
    store.cache_put("aaaa", &fresh).unwrap();
    store.cache_put("bbbb", &old).unwrap();

    assert_eq!(
        store.prune(&PruneOptions::default()).unwrap(),
        PruneReport::default()
    );
    assert!(store.has_blob(&layer) && store.snapshot_path(&snap).is_some());
    assert!(store.has_blob(&img.config) && store.has_blob(&img.layers[0]));
    assert!(store.snapshot_path(&img.diff_ids[0]).is_some());

    // Age bound: drops the old record, and with it the image.
    let r = store
        .prune(&PruneOptions {
            records_older_than: Some(Duration::from_secs(3600)),
            ..PruneOptions::default()
        })
        .unwrap();
    assert_eq!(
        (r.records_removed, r.blobs_removed, r.snapshots_removed),
        (1, 3, 1)
    );
    assert_eq!(store.cache_keys().unwrap(), vec!["aaaa".to_string()]);
    assert_eq!(blob_set(&store), [layer.clone()].into_iter().collect());
    assert_eq!(snap_set(&store), [snap.clone()].into_iter().collect());

    // --all drops every record.
    let r = store
        .prune(&PruneOptions {
            all_records: true,
            ..PruneOptions::default()
        })
        .unwrap();
    assert_eq!(
        (r.records_removed, r.blobs_removed, r.snapshots_removed),
        (1, 1, 1)
    );
    assert_eq!(store.cache_keys().unwrap(), Vec::<String>::new());
    assert_eq!(blob_set(&store), BTreeSet::new());
}

#[test]
fn prune_drops_unparsable_records() {
    let (_t, store) = store();
    let kept = store.put_blob_bytes(b"kept by a broken record?").unwrap();
    store
        .cache_put("abab", &CacheRecord::new(vec![kept.clone()], json!(0)))
        .unwrap();
    fs::write(
        store.root().join("records/v1/ab/abab.json"),
        b"{\"refs\":[\"sha256:",
    )
    .unwrap();
    let r = store.prune(&PruneOptions::default()).unwrap();
    assert_eq!((r.records_removed, r.blobs_removed), (1, 1));
    assert!(!store.has_blob(&kept));
}

#[test]
fn prune_removes_stale_temp_and_unused_cache_mounts() {
    let (_t, store) = store();
    let dead = dead_pid();
    let tmp = store.root().join("tmp");
    fs::write(tmp.join(format!("p{dead}-9-0-blob")), vec![0u8; 100]).unwrap();
    let live = store.temp_dir("live").unwrap();
    let idle = store.cache_mount_dir("idle").unwrap();
    fs::write(idle.join("data"), vec![1u8; 10]).unwrap();
    let busy = store.cache_mount_dir("busy").unwrap();
    let busy_lock = store.lock_cache_mount("busy", false).unwrap();

    // Without the option, mounts are kept.
    let r = store.prune(&PruneOptions::default()).unwrap();
    assert_eq!(
        (r.temp_removed, r.cache_mounts_removed, r.bytes_freed),
        (1, 0, 100)
    );
    assert!(idle.is_dir());
    assert_eq!(
        tmp_entries(&store),
        vec![live
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()]
    );

    let r = store
        .prune(&PruneOptions {
            cache_mounts: true,
            ..PruneOptions::default()
        })
        .unwrap();
    assert_eq!((r.cache_mounts_removed, r.bytes_freed), (1, 10));
    assert!(!idle.exists());
    assert!(busy.is_dir(), "a locked cache mount is in use");
    drop(busy_lock);
    // The mount comes back empty on next use.
    let again = store.cache_mount_dir("idle").unwrap();
    assert_eq!(entries(&again), Vec::<String>::new());
}

#[test]
fn prune_is_refused_while_this_process_holds_a_lease() {
    let (_t, store) = store();
    let orphan = store.put_blob_bytes(b"written during a build").unwrap();
    let lease = store.lease().unwrap();
    // Even with wait: true, waiting on our own lease would deadlock.
    assert!(matches!(
        store.prune(&PruneOptions::default()),
        Err(StoreError::Busy)
    ));
    assert!(matches!(
        store.clone().prune(&no_wait()),
        Err(StoreError::Busy)
    ));
    assert!(matches!(store.check(true), Err(StoreError::Busy)));
    assert!(
        store.check(false).is_ok(),
        "a read-only check runs beside builds"
    );
    assert!(store.has_blob(&orphan));
    drop(lease);
    assert_eq!(store.prune(&no_wait()).unwrap().blobs_removed, 1);
}

#[test]
fn prune_with_a_held_lease_deletes_nothing_the_holder_wrote() {
    let t = tempfile::tempdir().unwrap();
    let builder = Store::open(t.path()).unwrap();
    let gc = Store::open(t.path()).unwrap(); // another handle: behaves like another process
    let lease = builder.lease().unwrap();
    let unrecorded = builder.put_blob_bytes(b"intermediate").unwrap();
    let recorded = builder.put_blob_bytes(b"result layer").unwrap();
    let snap = Digest::of(b"result snapshot");
    builder
        .create_snapshot(&snap, |d| fs::write(d.join("out"), "out"))
        .unwrap();

    // While the lease is held, a non-waiting prune refuses and nothing is touched.
    assert!(matches!(gc.prune(&no_wait()), Err(StoreError::Busy)));
    assert!(matches!(gc.check(true), Err(StoreError::Busy)));
    assert_eq!(
        blob_set(&builder),
        [unrecorded.clone(), recorded.clone()].into_iter().collect()
    );

    // A waiting prune blocks until the build ends; the build records its result first.
    let waiter = std::thread::spawn(move || gc.prune(&PruneOptions::default()).unwrap());
    builder
        .cache_put(
            "cafe",
            &CacheRecord::new(vec![recorded.clone(), snap.clone()], json!("done")),
        )
        .unwrap();
    drop(lease);
    let report = waiter.join().unwrap();
    assert_eq!((report.blobs_removed, report.snapshots_removed), (1, 0));
    assert!(!builder.has_blob(&unrecorded));
    assert!(builder.has_blob(&recorded));
    assert!(builder.snapshot_path(&snap).is_some());
}

#[test]
fn check_finds_and_repairs_corrupt_blobs() {
    let (_t, store) = store();
    let img = put_image(
        &store,
        &[b"layer one", b"layer two"],
        "2024-01-01T00:00:00Z",
    );
    put_snapshots(&store, &img);
    store.set_tag("img", &img.manifest).unwrap();
    let clean = store.check(false).unwrap();
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!(
        (
            clean.blobs_checked,
            clean.snapshots_checked,
            clean.tags_checked
        ),
        (4, 2, 1)
    );

    // Flip the content of a layer on disk.
    let victim = img.layers[1].clone();
    let p = store.blob_path(&victim);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&p, b"layer 2wo").unwrap();

    let r = store.check(false).unwrap();
    assert_eq!(r.corrupt_blobs, vec![victim.clone()]);
    assert_eq!(
        r.missing_blobs,
        vec![MissingBlob {
            digest: victim.clone(),
            referenced_by: format!("manifest {}", img.manifest)
        }]
    );
    assert!(!r.repaired);
    assert!(p.exists(), "a read-only check changes nothing");

    let r = store.check(true).unwrap();
    assert!(r.repaired);
    assert_eq!(r.corrupt_blobs, vec![victim.clone()]);
    assert!(!p.exists());
    assert!(!store.has_blob(&victim));
    // The tag still names a readable manifest; the missing layer is reported, not hidden.
    let after = store.check(false).unwrap();
    assert_eq!(after.corrupt_blobs, vec![]);
    assert_eq!(after.missing_blobs.len(), 1);
    assert_eq!(after.dangling_tags, Vec::<String>::new());
    // Restoring the blob makes the store clean again.
    store.put_blob_bytes(b"layer two").unwrap();
    assert!(store.check(false).unwrap().is_clean());
}

#[test]
fn check_repairs_snapshots_tags_records_and_strays() {
    let (_t, store) = store();
    let img = put_image(&store, &[b"l"], "2024-01-01T00:00:00Z");
    store.set_tag("good", &img.manifest).unwrap();
    let gone = Digest::of(b"manifest that was never stored");
    store.set_tag("dangling", &gone).unwrap();
    // A snapshot dir without its marker (copied in by hand, say) and one with a wrong marker.
    let half = Digest::of(b"half");
    fs::create_dir_all(
        store
            .root()
            .join("snapshots/v1")
            .join(half.hex())
            .join("fs"),
    )
    .unwrap();
    let wrong = Digest::of(b"wrong");
    let wrong_dir = store.root().join("snapshots/v1").join(wrong.hex());
    fs::create_dir_all(wrong_dir.join("fs")).unwrap();
    fs::write(
        wrong_dir.join("snapshot.json"),
        format!("{{\"diff_id\":\"{half}\",\"created_unix\":1}}"),
    )
    .unwrap();
    // Records: one unparsable, one pointing at nothing, one fine.
    store
        .cache_put(
            "aa01",
            &CacheRecord::new(vec![img.layers[0].clone()], json!(1)),
        )
        .unwrap();
    store
        .cache_put(
            "aa02",
            &CacheRecord::new(vec![Digest::of(b"nothing")], json!(2)),
        )
        .unwrap();
    store
        .cache_put("aa03", &CacheRecord::new(vec![], json!(3)))
        .unwrap();
    fs::write(store.root().join("records/v1/aa/aa03.json"), b"garbage").unwrap();
    // A stray file among the blobs.
    fs::write(store.root().join("blobs/sha256/not-a-digest"), b"?").unwrap();

    assert_eq!(
        store.snapshot_path(&half),
        None,
        "incomplete snapshots are invisible"
    );
    let r = store.check(false).unwrap();
    let mut incomplete = vec![half.hex().to_string(), wrong.hex().to_string()];
    incomplete.sort();
    assert_eq!(r.incomplete_snapshots, incomplete);
    assert_eq!(
        r.dangling_tags,
        vec!["docker.io/library/dangling:latest".to_string()]
    );
    assert_eq!(r.bad_records, vec!["aa03".to_string()]);
    assert_eq!(r.dangling_records, vec!["aa02".to_string()]);
    assert_eq!(
        r.stray_files,
        vec![store.root().join("blobs/sha256/not-a-digest")]
    );
    assert_eq!(r.records_checked, 3);

    let r2 = store.check(true).unwrap();
    assert_eq!(r2.incomplete_snapshots, r.incomplete_snapshots);
    assert_eq!(
        entries(&store.root().join("snapshots/v1")),
        Vec::<String>::new()
    );
    assert_eq!(
        store.list_tags().unwrap(),
        vec![(
            "docker.io/library/good:latest".to_string(),
            img.manifest.clone()
        )]
    );
    assert_eq!(store.cache_keys().unwrap(), vec!["aa01".to_string()]);
    assert!(!store.root().join("blobs/sha256/not-a-digest").exists());
    let r3 = store.check(false).unwrap();
    assert!(r3.is_clean(), "{r3:?}");
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
}

#[test]
fn check_sets_a_corrupt_tags_file_aside() {
    let (_t, store) = store();
    store.set_tag("x", &Digest::of(b"x")).unwrap();
    let tags = store.root().join("tags/v1/tags.json");
    fs::write(&tags, b"\0\0\0").unwrap();
    let r = store.check(false).unwrap();
    assert!(r.tags_file_corrupt && !r.is_clean());
    let r = store.check(true).unwrap();
    assert!(r.tags_file_corrupt);
    assert_eq!(
        fs::read(tags.with_extension("json.corrupt")).unwrap(),
        b"\0\0\0"
    );
    assert_eq!(store.list_tags().unwrap(), vec![]);
    assert!(store.check(false).unwrap().is_clean());
}

#[test]
fn check_reports_and_removes_stale_temp() {
    let (_t, store) = store();
    let dead = dead_pid();
    fs::create_dir(
        store
            .root()
            .join("tmp")
            .join(format!("p{dead}-1-0-snapshot")),
    )
    .unwrap();
    assert_eq!(store.check(false).unwrap().stale_temp, 1);
    assert_eq!(tmp_entries(&store).len(), 1);
    assert_eq!(store.check(true).unwrap().stale_temp, 1);
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
}
