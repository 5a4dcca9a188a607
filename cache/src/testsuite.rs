//! A conformance suite for [`BlobSource`] + [`BlobSink`] implementations (enabled with the
//! `testsuite` feature). The store runs it in its tests, and so can any other implementation
//! (forge-oci's `MemoryBlobs` and `DirBlobs`, a remote cache backend):
//!
//! ```
//! forge_cache::testsuite::blob_store_suite(&forge_oci::MemoryBlobs::new());
//! ```
//!
//! Every check panics with a message naming the broken rule: this module is test code.

use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};

use forge_oci::{read_blob_bytes, BlobSink, BlobSource, Digest};

/// Runs every check against an empty store `s`.
pub fn blob_store_suite<S: BlobSource + BlobSink + Sync>(s: &S) {
    round_trip(s);
    empty_blob(s);
    large_streamed_blob(s);
    mismatch_stores_nothing(s);
    idempotent_puts(s);
    missing_blobs_are_not_found(s);
    concurrent_puts(s);
}

fn read_all(s: &dyn BlobSource, d: &Digest) -> Vec<u8> {
    let mut buf = Vec::new();
    s.open_blob(d)
        .unwrap_or_else(|e| panic!("open_blob({d}) failed: {e}"))
        .read_to_end(&mut buf)
        .unwrap_or_else(|e| panic!("reading {d} failed: {e}"));
    buf
}

/// put → has → open → size give back exactly what was put.
pub fn round_trip<S: BlobSource + BlobSink>(s: &S) {
    let data = b"conformance: round trip".to_vec();
    let d = Digest::of(&data);
    assert!(!s.has_blob(&d), "has_blob is true before put");
    let (got, size) = s
        .put_blob(&mut data.as_slice(), Some(&d))
        .expect("put_blob with the right digest");
    assert_eq!(got, d, "put_blob returned another digest");
    assert_eq!(size, data.len() as u64, "put_blob returned another size");
    assert!(s.has_blob(&d), "has_blob is false after put");
    assert_eq!(read_all(s, &d), data, "open_blob returned other bytes");
    assert_eq!(
        s.blob_size(&d).expect("blob_size"),
        data.len() as u64,
        "blob_size is wrong"
    );
    assert_eq!(read_blob_bytes(s, &d).expect("read_blob_bytes"), data);
    let (d2, _) = s
        .put_blob(&mut &b"conformance: unverified"[..], None)
        .expect("put_blob without a digest");
    assert_eq!(
        d2,
        Digest::of(b"conformance: unverified"),
        "put_blob(None) computed a wrong digest"
    );
}

/// The empty blob is a blob like any other.
pub fn empty_blob<S: BlobSource + BlobSink>(s: &S) {
    let d = Digest::of(b"");
    let (got, size) = s
        .put_blob(&mut io::empty(), Some(&d))
        .expect("put the empty blob");
    assert_eq!((got, size), (d.clone(), 0));
    assert!(s.has_blob(&d));
    assert_eq!(read_all(s, &d), Vec::<u8>::new());
}

/// Several MiB streamed through a reader that returns short reads.
pub fn large_streamed_blob<S: BlobSource + BlobSink>(s: &S) {
    struct Dribble {
        left: usize,
        n: usize,
    }
    impl Read for Dribble {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let k = buf.len().min(self.left).min(1 + self.n % 9973);
            for b in &mut buf[..k] {
                *b = (self.n % 251) as u8;
                self.n += 1;
            }
            self.left -= k;
            Ok(k)
        }
    }
    let len = 3 << 20;
    let mut expect = Vec::with_capacity(len);
    io::copy(&mut Dribble { left: len, n: 0 }, &mut expect).unwrap();
    let d = Digest::of(&expect);
    let (got, size) = s
        .put_blob(&mut Dribble { left: len, n: 0 }, Some(&d))
        .expect("stream a large blob");
    assert_eq!((got, size), (d.clone(), len as u64));
    assert!(read_all(s, &d) == expect, "large blob content differs");
}

/// A stream that does not match the expected digest fails with InvalidData and leaves neither
/// digest visible.
pub fn mismatch_stores_nothing<S: BlobSource + BlobSink>(s: &S) {
    let claimed = Digest::of(b"conformance: claimed");
    let err = s
        .put_blob(&mut &b"conformance: actual"[..], Some(&claimed))
        .expect_err("put_blob accepted content that does not match the expected digest");
    assert_eq!(
        err.kind(),
        io::ErrorKind::InvalidData,
        "a mismatch must be InvalidData: {err}"
    );
    assert!(!s.has_blob(&claimed), "the claimed digest became visible");
    assert!(
        !s.has_blob(&Digest::of(b"conformance: actual")),
        "the mismatching content became visible"
    );
}

/// Putting the same content twice is fine and changes nothing.
pub fn idempotent_puts<S: BlobSource + BlobSink>(s: &S) {
    let data = b"conformance: twice";
    let d = Digest::of(data);
    let a = s.put_blob(&mut &data[..], Some(&d)).expect("first put");
    let b = s.put_blob(&mut &data[..], None).expect("second put");
    assert_eq!(a, b);
    assert_eq!(read_all(s, &d), data);
}

/// Absent blobs are NotFound, not some other error.
pub fn missing_blobs_are_not_found<S: BlobSource + BlobSink>(s: &S) {
    let d = Digest::of(b"conformance: never stored");
    assert!(!s.has_blob(&d));
    let e = s
        .open_blob(&d)
        .err()
        .expect("open_blob of a missing blob succeeded");
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "open_blob: {e}");
    let e = s
        .blob_size(&d)
        .expect_err("blob_size of a missing blob succeeded");
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "blob_size: {e}");
}

/// Eight threads putting the same and different blobs at once all succeed.
pub fn concurrent_puts<S: BlobSource + BlobSink + Sync>(s: &S) {
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..8 {
            let done = &done;
            scope.spawn(move || {
                for i in 0..16 {
                    let shared = format!("conformance: shared {i}").into_bytes();
                    let own = format!("conformance: thread {t} blob {i}").into_bytes();
                    for data in [shared, own] {
                        let d = Digest::of(&data);
                        let (got, _) = s
                            .put_blob(&mut data.as_slice(), Some(&d))
                            .expect("concurrent put");
                        assert_eq!(got, d);
                        assert_eq!(
                            read_all(s, &d),
                            data,
                            "a concurrently written blob is not intact"
                        );
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    assert_eq!(done.load(Ordering::SeqCst), 8);
}
