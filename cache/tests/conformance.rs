//! The BlobSource/BlobSink conformance suite, run against the store and against forge-oci's
//! own implementations (so all of them agree on the contract).

mod common;

use common::*;
use forge_cache::testsuite::blob_store_suite;
use forge_oci::{DirBlobs, MemoryBlobs};

#[test]
fn store_conforms() {
    let (_t, store) = fast_store();
    blob_store_suite(&store);
    assert!(store.check(false).unwrap().is_clean());
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
}

#[test]
fn memory_blobs_conform() {
    blob_store_suite(&MemoryBlobs::new());
}

#[test]
fn dir_blobs_conform() {
    let t = tempfile::tempdir().unwrap();
    blob_store_suite(&DirBlobs::new(t.path()));
}
