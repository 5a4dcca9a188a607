//! Processes killed (SIGKILL) in the middle of writing: the store stays usable and clean.

mod common;

use std::fs;
use std::io::Write;
use std::time::Duration;

use common::*;
use forge_cache::{PruneOptions, Store, StoreError};
use forge_oci::Digest;

const PREFIX_LEN: usize = 4 << 20;

fn chunk(i: usize) -> Vec<u8> {
    (0..65_536).map(|j| ((i * 31 + j) % 253) as u8).collect()
}

#[test]
fn killed_blob_writer_leaves_no_blob_and_no_temp_file() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let store = Store::open(&root).unwrap();
    let mut child = spawn_child("child_process_entry", "slow_blob", &root);
    let _out = wait_ready(&mut child);

    // Mid-write: the partial content is in exactly one temp file, no blob is visible.
    let tmp = tmp_entries(&store);
    assert_eq!(tmp.len(), 1, "{tmp:?}");
    assert!(
        tmp[0].starts_with(&format!("p{}.", child.0.id())),
        "{tmp:?}"
    );
    let partial = fs::metadata(store.root().join("tmp").join(&tmp[0]))
        .unwrap()
        .len();
    assert!(partial >= PREFIX_LEN as u64, "{partial}");
    assert_eq!(store.list_blobs().unwrap(), vec![]);

    child.0.kill().unwrap();
    child.0.wait().unwrap();

    let prefix: Vec<u8> = (0..PREFIX_LEN / 65_536).flat_map(chunk).collect();
    let reopened = Store::open(&root).unwrap();
    assert_eq!(
        tmp_entries(&reopened),
        Vec::<String>::new(),
        "the dead writer's temp file is removed"
    );
    assert_eq!(reopened.list_blobs().unwrap(), vec![]);
    assert!(!reopened.has_blob(&Digest::of(&prefix)));
    let check = reopened.check(false).unwrap();
    assert!(check.is_clean() && check.stale_temp == 0, "{check:?}");
    // And the store works normally afterwards.
    assert_eq!(
        reopened.put_blob_bytes(&prefix).unwrap(),
        Digest::of(&prefix)
    );
}

#[test]
fn killed_snapshot_creator_leaves_nothing_visible_and_releases_the_lock() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let store = Store::open(&root).unwrap();
    let id = Digest::of(b"slow snapshot");
    let mut child = spawn_child("child_process_entry", "slow_snapshot", &root);
    let _out = wait_ready(&mut child);
    assert_eq!(store.snapshot_path(&id), None);
    let staging = tmp_entries(&store);
    assert_eq!(staging.len(), 1, "{staging:?}");
    assert_eq!(
        fs::read_dir(store.root().join("tmp").join(&staging[0]).join("fs"))
            .unwrap()
            .count(),
        50
    );

    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert_eq!(store.snapshot_path(&id), None);
    assert_eq!(
        entries(&store.root().join("snapshots/v1")),
        Vec::<String>::new()
    );

    // The kernel dropped the dead creator's lock: another creator proceeds at once.
    let p = store
        .create_snapshot(&id, |d| fs::write(d.join("complete"), "yes"))
        .unwrap();
    assert_eq!(entries(&p), vec!["complete"]);
    // The dead creator's staging dir is removed by the next open.
    let reopened = Store::open(&root).unwrap();
    assert_eq!(tmp_entries(&reopened), Vec::<String>::new());
    assert!(reopened.check(false).unwrap().is_clean());
}

#[test]
fn a_killed_builder_releases_its_lease() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let store = Store::open(&root).unwrap();
    let mut child = spawn_child("child_process_entry", "hold_lease", &root);
    let _out = wait_ready(&mut child);
    let orphan = Digest::of(b"written by the builder under its lease");
    assert!(store.has_blob(&orphan));
    let nowait = PruneOptions {
        wait: false,
        ..PruneOptions::default()
    };
    assert!(matches!(store.prune(&nowait), Err(StoreError::Busy)));
    assert!(store.has_blob(&orphan));

    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let r = store.prune(&nowait).unwrap();
    assert_eq!(r.blobs_removed, 1);
    assert!(!store.has_blob(&orphan));
}

/// Not a test: the body of the child processes the tests above spawn and kill (it returns at
/// once in a normal test run).
#[test]
fn child_process_entry() {
    let Some((role, root)) = child_role() else {
        return;
    };
    let store = Store::open(&root).unwrap();
    // Never runs longer than this even if the parent forgets to kill it.
    let give_up = std::time::Instant::now() + Duration::from_secs(600);
    match role.as_str() {
        "slow_blob" => {
            let mut w = store.blob_writer().unwrap();
            for i in 0..PREFIX_LEN / 65_536 {
                w.write_all(&chunk(i)).unwrap();
            }
            w.flush().unwrap();
            println!("\nREADY");
            let mut i = PREFIX_LEN / 65_536;
            while std::time::Instant::now() < give_up {
                w.write_all(&chunk(i)).unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        "slow_snapshot" => {
            let id = Digest::of(b"slow snapshot");
            let _ = store.create_snapshot(&id, |d| {
                for f in 0..50 {
                    fs::write(d.join(format!("f{f}")), vec![b'x'; 1000])?;
                }
                println!("\nREADY");
                while std::time::Instant::now() < give_up {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err::<(), std::io::Error>(std::io::Error::other("gave up"))
            });
        }
        "hold_lease" => {
            let _lease = store.lease().unwrap();
            store
                .put_blob_bytes(b"written by the builder under its lease")
                .unwrap();
            println!("\nREADY");
            while std::time::Instant::now() < give_up {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        other => panic!("unknown child role {other}"),
    }
}
