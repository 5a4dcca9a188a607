//! The same tree, written twice with different mtimes and creation order, gives byte-identical
//! blobs once SOURCE_DATE_EPOCH clamps the mtimes.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use forge_oci::{write_layer, Compression, Digest, LayerOptions, SourceKind};

const EPOCH: i64 = 1_600_000_000;

/// Creates the same content in `order`, stamping everything with `mtime`.
fn make(root: &Path, reverse: bool, mtime: i64) {
    let mut names: Vec<String> = (0..30).map(|i| format!("f{i:02}")).collect();
    if reverse {
        names.reverse();
    }
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    for n in &names {
        fs::write(root.join(n), n.repeat(1000)).unwrap();
        fs::write(root.join("sub/deeper").join(n), n.as_bytes()).unwrap();
    }
    std::os::unix::fs::symlink("f01", root.join("sub/link")).unwrap();
    fs::hard_link(root.join("f03"), root.join("sub/hard")).unwrap();
    // An old file keeps its mtime: the epoch only clamps newer ones.
    fs::write(root.join("old"), b"old").unwrap();
    set_mtime(&root.join("old"), 1_000_000_000);
    for p in [
        root.join("sub/deeper"),
        root.join("sub/link"),
        root.join("sub"),
    ]
    .iter()
    .chain(
        names
            .iter()
            .map(|n| root.join(n))
            .collect::<Vec<_>>()
            .iter(),
    ) {
        set_mtime(p, mtime);
    }
}

fn blob(root: &Path, c: Compression, epoch: Option<i64>) -> (Digest, Digest, Vec<u8>) {
    let opts = LayerOptions {
        compression: c,
        source_date_epoch: epoch,
        kind: SourceKind::Tree,
    };
    let (info, out) = write_layer(root, &opts, Vec::new()).unwrap();
    (info.diff_id, info.digest, out)
}

#[test]
fn same_tree_different_mtimes_gives_identical_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    make(&a, false, EPOCH + 1000);
    make(&b, true, EPOCH + 999_999);

    for c in [
        Compression::Gzip { level: 6 },
        Compression::Gzip { level: 1 },
        Compression::Zstd { level: 3 },
        Compression::Zstd { level: 19 },
        Compression::None,
    ] {
        let (da, ga, ba) = blob(&a, c, Some(EPOCH));
        let (db, gb, bb) = blob(&b, c, Some(EPOCH));
        assert_eq!(da, db, "{c:?}: diff_ids differ");
        assert_eq!(ga, gb, "{c:?}: digests differ");
        assert!(ba == bb, "{c:?}: blobs differ");
        // Without the epoch the mtimes differ, and so do the layers: the test can fail.
        let (dx, _, _) = blob(&a, c, None);
        let (dy, _, _) = blob(&b, c, None);
        assert_ne!(dx, dy, "{c:?}: mtimes do not reach the layer");
    }
}

#[test]
fn clamping_keeps_older_mtimes() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    make(&a, false, EPOCH + 5);
    let (_, _, out) = blob(&a, Compression::None, Some(EPOCH));
    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    forge_oci::apply_layer(&out[..], &dst, &forge_oci::ApplyOptions::default()).unwrap();
    let d = describe(&dst);
    assert_eq!(d.nodes["old"].mtime, 1_000_000_000);
    assert_eq!(d.nodes["f00"].mtime, EPOCH);
    assert_eq!(d.nodes["sub/link"].mtime, EPOCH);
}

#[test]
fn gzip_header_has_no_timestamp() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("x"), b"x").unwrap();
    let (_, _, out) = blob(tmp.path(), Compression::Gzip { level: 6 }, None);
    assert_eq!(&out[..2], &[0x1f, 0x8b]);
    assert_eq!(&out[4..8], &[0, 0, 0, 0], "gzip MTIME must be zero");
    let (_, _, z) = blob(tmp.path(), Compression::Zstd { level: 3 }, None);
    assert_eq!(&z[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
}
