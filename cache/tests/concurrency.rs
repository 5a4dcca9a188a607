//! Many writers at once, as threads and as processes: everything is consistent afterwards.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Barrier};

use common::*;
use forge_cache::{CacheRecord, PruneOptions, Store};
use forge_oci::Digest;
use serde_json::json;

const SHARED_BLOBS: usize = 12;
const UNIQUE_BLOBS: usize = 6;
const SHARED_SNAPSHOTS: usize = 4;

fn big_shared() -> Vec<u8> {
    (0..(3 << 20))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

fn shared_snapshot(i: usize) -> Digest {
    Digest::of(format!("shared snapshot {i}").as_bytes())
}

fn unique_snapshot(w: usize) -> Digest {
    Digest::of(format!("snapshot of worker {w}").as_bytes())
}

/// Appends one line to the fill log (O_APPEND: atomic for short writes, across processes).
fn log_fill(log: &Path, what: &Digest) {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .unwrap();
    f.write_all(format!("{what}\n").as_bytes()).unwrap();
}

/// One worker's share: identical blobs and snapshots that every worker writes, its own blobs,
/// snapshot, tag and record, and a tag and record that every worker overwrites.
fn work(store: &Store, w: usize, log: &Path) {
    let _lease = store.lease().unwrap();
    let big = big_shared();
    for round in 0..2 {
        for i in 0..SHARED_BLOBS {
            store
                .put_blob_bytes(format!("shared blob {i}").as_bytes())
                .unwrap();
        }
        // The big one streamed in uneven chunks, with verification, every round (no has_blob
        // shortcut: concurrent commits of the same content must all succeed).
        let mut wr = store.blob_writer().unwrap();
        for c in big.chunks(65_537 + w * 13 + round) {
            wr.write_all(c).unwrap();
        }
        assert_eq!(
            wr.commit(Some(&Digest::of(&big))).unwrap().1,
            big.len() as u64
        );
        for i in 0..SHARED_SNAPSHOTS {
            let id = shared_snapshot(i);
            let p = store
                .create_snapshot(&id, |dir| {
                    log_fill(log, &id);
                    for f in 0..20 {
                        fs::write(dir.join(format!("f{f}")), format!("{id} {f}"))?;
                    }
                    Ok::<(), std::io::Error>(())
                })
                .unwrap();
            assert_eq!(
                fs::read_dir(&p).unwrap().count(),
                20,
                "a visible snapshot is complete"
            );
        }
    }
    let mut mine = Vec::new();
    for i in 0..UNIQUE_BLOBS {
        mine.push(
            store
                .put_blob_bytes(format!("worker {w} blob {i}").as_bytes())
                .unwrap(),
        );
    }
    let snap = unique_snapshot(w);
    let tmp = store.temp_dir("upper").unwrap();
    let upper = tmp.path().join("upper");
    fs::create_dir(&upper).unwrap();
    fs::write(upper.join("who"), w.to_string()).unwrap();
    log_fill(log, &snap);
    store.commit_snapshot_dir(&snap, &upper).unwrap();
    drop(tmp);
    store
        .set_tag(&format!("worker{w}:latest"), &mine[0])
        .unwrap();
    store.set_tag("race:latest", &mine[0]).unwrap();
    let mut refs = mine.clone();
    refs.push(snap);
    store
        .cache_put(
            &format!("{w:04x}"),
            &CacheRecord::new(refs, json!({ "worker": w })),
        )
        .unwrap();
    store
        .cache_put(
            "ffff",
            &CacheRecord::new(vec![mine[1].clone()], json!({ "last": w })),
        )
        .unwrap();
}

/// Asserts the store holds exactly what `workers` workers wrote, then prunes it back to what
/// tags and records reach.
fn verify(store: &Store, workers: usize, log: &Path) {
    let blobs: BTreeSet<Digest> = store.list_blobs().unwrap().into_iter().collect();
    let mut want = BTreeSet::new();
    for i in 0..SHARED_BLOBS {
        want.insert(Digest::of(format!("shared blob {i}").as_bytes()));
    }
    want.insert(Digest::of(&big_shared()));
    let mut first_blobs = Vec::new();
    for w in 0..workers {
        for i in 0..UNIQUE_BLOBS {
            want.insert(Digest::of(format!("worker {w} blob {i}").as_bytes()));
        }
        first_blobs.push(Digest::of(format!("worker {w} blob 0").as_bytes()));
    }
    assert_eq!(blobs, want);

    let snaps: BTreeSet<Digest> = store.list_snapshots().unwrap().into_iter().collect();
    let want_snaps: BTreeSet<Digest> = (0..SHARED_SNAPSHOTS)
        .map(shared_snapshot)
        .chain((0..workers).map(unique_snapshot))
        .collect();
    assert_eq!(snaps, want_snaps);
    for w in 0..workers {
        let p = store.snapshot_path(&unique_snapshot(w)).unwrap();
        assert_eq!(fs::read_to_string(p.join("who")).unwrap(), w.to_string());
    }

    // Every snapshot was filled exactly once, however many workers asked for it.
    let mut fills: BTreeMap<String, usize> = BTreeMap::new();
    for line in fs::read_to_string(log).unwrap().lines() {
        *fills.entry(line.to_string()).or_default() += 1;
    }
    let want_fills: BTreeMap<String, usize> =
        want_snaps.iter().map(|d| (d.to_string(), 1)).collect();
    assert_eq!(fills, want_fills);

    let tags = store.list_tags().unwrap();
    assert_eq!(tags.len(), workers + 1);
    let race = store.get_tag("race").unwrap().unwrap();
    assert!(
        first_blobs.contains(&race),
        "race tag points at a worker's blob"
    );
    for (w, first) in first_blobs.iter().enumerate() {
        assert_eq!(
            store.get_tag(&format!("worker{w}")).unwrap().as_ref(),
            Some(first)
        );
        let rec = store.cache_get(&format!("{w:04x}")).unwrap().unwrap();
        assert_eq!(rec.value, json!({ "worker": w }));
    }
    let last = store.cache_get("ffff").unwrap().unwrap();
    let lw = last.value["last"].as_u64().unwrap() as usize;
    assert!(lw < workers);
    assert_eq!(
        last.refs,
        vec![Digest::of(format!("worker {lw} blob 1").as_bytes())]
    );

    assert_eq!(tmp_entries(store), Vec::<String>::new());
    let check = store.check(false).unwrap();
    assert!(check.is_clean(), "{check:?}");
    assert_eq!(
        (check.blobs_checked, check.snapshots_checked),
        (want.len(), want_snaps.len())
    );

    // Shared content is reached by nothing: prune removes exactly that.
    let r = store.prune(&PruneOptions::default()).unwrap();
    assert_eq!(
        (r.blobs_removed, r.snapshots_removed),
        (SHARED_BLOBS + 1, SHARED_SNAPSHOTS)
    );
    assert_eq!(store.list_blobs().unwrap().len(), workers * UNIQUE_BLOBS);
    assert_eq!(store.list_snapshots().unwrap().len(), workers);
}

#[test]
fn eight_threads_share_one_store() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let store = Store::open(&root).unwrap();
    let log = t.path().join("fills.log");
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|w| {
            // Half the workers share the handle, half open their own.
            let s = if w % 2 == 0 {
                store.clone()
            } else {
                Store::open(&root).unwrap()
            };
            let log = log.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                work(&s, w, &log);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    verify(&store, 8, &log);
}

#[test]
fn four_processes_share_one_store() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let store = Store::open(&root).unwrap();
    let mut children: Vec<ChildGuard> = (0..4)
        .map(|w| spawn_child("child_process_entry", &format!("worker:{w}"), &root))
        .collect();
    let _outs: Vec<_> = children.iter_mut().map(wait_ready).collect();
    for c in children.iter_mut() {
        send_go(c);
    }
    for mut c in children {
        let status = c.0.wait().unwrap();
        assert!(status.success(), "worker failed: {status}");
    }
    verify(&store, 4, &t.path().join("fills.log"));
}

/// Not a test: the body of the worker processes `four_processes_share_one_store` spawns
/// (it returns at once in a normal test run).
#[test]
fn child_process_entry() {
    let Some((role, root)) = child_role() else {
        return;
    };
    let w: usize = role
        .strip_prefix("worker:")
        .expect("worker role")
        .parse()
        .unwrap();
    let store = Store::open(&root).unwrap();
    ready_then_wait_for_go();
    work(&store, w, &root.parent().unwrap().join("fills.log"));
}
