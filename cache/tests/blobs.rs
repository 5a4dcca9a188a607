//! Blobs: streaming, verification, atomic visibility, the BlobSource/BlobSink traits.

mod common;

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;

use common::*;
use forge_cache::StoreError;
use forge_oci::{BlobSink, BlobSource, Digest};

#[test]
fn put_bytes_round_trips_and_is_idempotent() {
    let (_t, store) = store();
    let d = store.put_blob_bytes(b"hello").unwrap();
    assert_eq!(d, Digest::of(b"hello"));
    assert!(store.has_blob(&d));
    assert_eq!(
        store.blob_path(&d),
        store.root().join("blobs/sha256").join(d.hex())
    );
    assert_eq!(store.read_blob(&d).unwrap(), b"hello");
    assert_eq!(store.blob_size(&d).unwrap(), 5);
    let mut s = String::new();
    store.open_blob(&d).unwrap().read_to_string(&mut s).unwrap();
    assert_eq!(s, "hello");
    // Stored read-only.
    assert_eq!(
        fs::metadata(store.blob_path(&d))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o444
    );
    assert_eq!(store.put_blob_bytes(b"hello").unwrap(), d);
    assert_eq!(store.list_blobs().unwrap(), vec![d]);
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
}

#[test]
fn writer_streams_and_verifies() {
    let (_t, store) = store();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let expected = Digest::of(&data);
    let mut w = store.blob_writer().unwrap();
    for chunk in data.chunks(7919) {
        w.write_all(chunk).unwrap();
    }
    assert_eq!(w.len(), data.len() as u64);
    // Before commit the blob is not visible; the bytes sit in one temp file.
    assert!(!store.has_blob(&expected));
    assert_eq!(tmp_entries(&store).len(), 1);
    let (d, size) = w.commit(Some(&expected)).unwrap();
    assert_eq!((d.clone(), size), (expected, data.len() as u64));
    assert_eq!(store.read_blob(&d).unwrap(), data);
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
}

#[test]
fn mismatched_content_never_becomes_visible() {
    let (_t, store) = store();
    let claimed = Digest::of(b"what the registry promised");
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"what arrived").unwrap();
    match w.commit(Some(&claimed)) {
        Err(StoreError::DigestMismatch {
            expected,
            actual,
            size,
        }) => {
            assert_eq!(expected, claimed);
            assert_eq!(actual, Digest::of(b"what arrived"));
            assert_eq!(size, 12);
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(!store.has_blob(&claimed));
    assert!(!store.has_blob(&Digest::of(b"what arrived")));
    assert_eq!(store.list_blobs().unwrap(), vec![]);
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
}

#[test]
fn dropped_writer_leaves_nothing() {
    let (_t, store) = store();
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"abandoned").unwrap();
    assert_eq!(tmp_entries(&store).len(), 1);
    drop(w);
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
    assert_eq!(store.list_blobs().unwrap(), vec![]);
}

#[test]
fn missing_and_corrupt_blobs_are_typed_errors() {
    let (_t, store) = store();
    let absent = Digest::of(b"absent");
    assert!(matches!(store.read_blob(&absent), Err(StoreError::BlobNotFound(d)) if d == absent));
    assert!(matches!(
        store.open_blob(&absent),
        Err(StoreError::BlobNotFound(_))
    ));
    assert!(matches!(
        store.blob_size(&absent),
        Err(StoreError::BlobNotFound(_))
    ));
    assert!(!store.has_blob(&absent));

    let d = store.put_blob_bytes(b"original").unwrap();
    let p = store.blob_path(&d);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&p, b"tampered").unwrap();
    match store.read_blob(&d) {
        Err(StoreError::CorruptBlob { digest, actual }) => {
            assert_eq!(digest, d);
            assert_eq!(actual, Digest::of(b"tampered"));
        }
        other => panic!("expected CorruptBlob, got {other:?}"),
    }
}

/// A reader that fails the test if it is read.
struct MustNotRead;
impl Read for MustNotRead {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other("the store read a stream it already had"))
    }
}

#[test]
fn blob_traits() {
    let (_t, store) = store();
    let sink: &dyn BlobSink = &store;
    let data = b"via the trait".to_vec();
    let d = Digest::of(&data);
    assert!(!sink.has_blob(&d));
    let (got, size) = sink.put_blob(&mut data.as_slice(), Some(&d)).unwrap();
    assert_eq!((got.clone(), size), (d.clone(), data.len() as u64));
    assert!(sink.has_blob(&d));
    // Already present: returned without reading the stream.
    assert_eq!(
        sink.put_blob(&mut MustNotRead, Some(&d)).unwrap(),
        (d.clone(), data.len() as u64)
    );
    // Without an expected digest the stream is read and hashed.
    let (d2, _) = sink.put_blob(&mut &b"unverified"[..], None).unwrap();
    assert_eq!(d2, Digest::of(b"unverified"));
    // A wrong expectation is InvalidData and stores nothing.
    let wrong = Digest::of(b"other");
    let err = sink
        .put_blob(&mut &b"payload"[..], Some(&wrong))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(!store.has_blob(&Digest::of(b"payload")));

    let src: &dyn BlobSource = &store;
    let mut buf = Vec::new();
    src.open_blob(&d).unwrap().read_to_end(&mut buf).unwrap();
    assert_eq!(buf, data);
    assert_eq!(src.blob_size(&d).unwrap(), data.len() as u64);
    assert_eq!(
        src.open_blob(&wrong).err().unwrap().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        src.blob_size(&wrong).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(forge_oci::read_blob_bytes(src, &d).unwrap(), data);
}

#[test]
fn prehashed_writer_takes_the_callers_digest_and_needs_one() {
    let (_t, store) = store();
    let mut w = store.blob_writer_prehashed().unwrap();
    w.write_all(b"layer tar bytes").unwrap();
    let d = Digest::of(b"layer tar bytes");
    assert_eq!(w.commit(Some(&d)).unwrap(), (d.clone(), 15));
    assert_eq!(store.read_blob(&d).unwrap(), b"layer tar bytes");

    let mut w = store.blob_writer_prehashed().unwrap();
    w.write_all(b"no digest given").unwrap();
    assert!(w.commit(None).is_err(), "a prehashed blob without its digest must be refused");
    assert_eq!(tmp_entries(&store), Vec::<String>::new(), "the refused blob's temp file is gone");
    assert_eq!(store.list_blobs().unwrap(), vec![d]);
}
