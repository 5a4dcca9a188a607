//! Overlay upper directories → OCI whiteouts → overlay snapshots, checked with a real mount.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use common::*;
use forge_oci::{
    apply_layer, write_layer, ApplyMode, ApplyOptions, Compression, LayerOptions, SourceKind,
};

/// base: a.txt, keep.txt, dir/old.txt, dir/sub/deep.txt.
fn make_base(base: &Path) {
    fs::create_dir_all(base.join("dir/sub")).unwrap();
    fs::write(base.join("a.txt"), b"a").unwrap();
    fs::write(base.join("keep.txt"), b"keep").unwrap();
    fs::write(base.join("dir/old.txt"), b"old").unwrap();
    fs::write(base.join("dir/sub/deep.txt"), b"deep").unwrap();
}

/// An upper dir as overlayfs would leave it after `rm a.txt; rm -r dir; mkdir dir;
/// echo new > dir/new.txt; echo added > added.txt`.
fn make_upper(upper: &Path) {
    fs::create_dir(upper).unwrap();
    mknod(&upper.join("a.txt"), libc::S_IFCHR, 0, 0);
    fs::create_dir(upper.join("dir")).unwrap();
    set_xattr(&upper.join("dir"), "trusted.overlay.opaque", b"y").unwrap();
    fs::write(upper.join("dir/new.txt"), b"new").unwrap();
    fs::write(upper.join("added.txt"), b"added").unwrap();
    // Overlay bookkeeping that must not leak into the layer.
    set_xattr(
        &upper.join("added.txt"),
        "trusted.overlay.origin",
        b"\x00\xfb",
    )
    .unwrap();
}

#[test]
fn overlay_upper_becomes_oci_whiteouts_and_back() {
    if !is_root() {
        skip("overlay test needs root (mknod 0:0 whiteouts, trusted.* xattrs)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let upper = tmp.path().join("upper");
    make_base(&base);
    make_upper(&upper);

    let opts = LayerOptions {
        compression: Compression::Zstd { level: 3 },
        source_date_epoch: None,
        kind: SourceKind::OverlayUpper,
    };
    let (info, blob) = write_layer(&upper, &opts, Vec::new()).unwrap();
    let names = tar_names(&blob);
    assert_eq!(
        names,
        vec![
            ".wh.a.txt",
            "added.txt",
            "dir/",
            "dir/.wh..wh..opq",
            "dir/new.txt"
        ]
    );

    // The same upper read as a plain tree keeps the device and the xattrs are still filtered.
    let tree = LayerOptions {
        kind: SourceKind::Tree,
        ..opts.clone()
    };
    let (_, plain) = write_layer(&upper, &tree, Vec::new()).unwrap();
    assert_eq!(
        tar_names(&plain),
        vec!["a.txt", "added.txt", "dir/", "dir/new.txt"]
    );

    // Merged: applied onto a copy of base, whiteouts delete.
    let merged = tmp.path().join("merged");
    make_base(&merged);
    let st = apply_layer(&blob[..], &merged, &ApplyOptions::new(ApplyMode::Merged)).unwrap();
    assert_eq!(st.diff_id, info.diff_id);
    assert_eq!(st.whiteouts, 2);
    assert!(!merged.join("a.txt").exists());
    assert!(!merged.join("dir/old.txt").exists());
    assert!(!merged.join("dir/sub").exists());
    assert_eq!(fs::read(merged.join("dir/new.txt")).unwrap(), b"new");
    assert_eq!(fs::read(merged.join("keep.txt")).unwrap(), b"keep");
    assert_eq!(fs::read(merged.join("added.txt")).unwrap(), b"added");
    assert!(
        xattrs_of(&merged.join("added.txt")).is_empty(),
        "overlay xattrs leaked into the layer"
    );

    // OverlaySnapshot: whiteouts become 0:0 devices and the opaque xattr.
    let snap = tmp.path().join("snap");
    fs::create_dir(&snap).unwrap();
    let st = apply_layer(
        &blob[..],
        &snap,
        &ApplyOptions::new(ApplyMode::OverlaySnapshot),
    )
    .unwrap();
    assert_eq!(st.diff_id, info.diff_id);
    let wh = fs::symlink_metadata(snap.join("a.txt")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "a.txt is not an overlay whiteout"
    );
    assert_eq!(
        xattrs_of(&snap.join("dir"))
            .get("trusted.overlay.opaque")
            .map(Vec::as_slice),
        Some(&b"y"[..])
    );
    assert!(!snap.join("dir/.wh..wh..opq").exists());

    // A real overlay mount of snapshot over base shows the layer's view.
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let lower = format!("lowerdir={}:{}", snap.display(), base.display());
    let out = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &lower])
        .arg(&mnt)
        .output()
        .unwrap();
    if !out.status.success() {
        skip(&format!(
            "overlay mount failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        return;
    }
    let view = (
        mnt.join("a.txt").exists(),
        mnt.join("dir/old.txt").exists(),
        mnt.join("dir/sub").exists(),
        fs::read(mnt.join("dir/new.txt")).ok(),
        fs::read(mnt.join("keep.txt")).ok(),
    );
    let umount = Command::new("umount").arg(&mnt).status().unwrap();
    assert!(umount.success());
    assert_eq!(
        view,
        (
            false,
            false,
            false,
            Some(b"new".to_vec()),
            Some(b"keep".to_vec())
        )
    );
}

#[test]
fn userxattr_snapshots_use_user_overlay_opaque() {
    let tmp = tempfile::tempdir().unwrap();
    if !user_xattrs_supported(tmp.path()) {
        skip("user xattrs not supported on the temp filesystem");
        return;
    }
    let mut b = forge_oci::LayerBuilder::new(Vec::new(), &LayerOptions::default()).unwrap();
    b.append_dir(Path::new("d"), &forge_oci::EntryMeta::new(0o755))
        .unwrap();
    b.append_opaque(Path::new("d"), &forge_oci::EntryMeta::new(0o755))
        .unwrap();
    let (_, blob) = b.finish().unwrap();
    let snap = tmp.path().join("snap");
    fs::create_dir(&snap).unwrap();
    let opts = ApplyOptions {
        mode: ApplyMode::OverlaySnapshot,
        preserve_owner: false,
        userxattr: true,
    };
    apply_layer(&blob[..], &snap, &opts).unwrap();
    let x = xattrs_of(&snap.join("d"));
    assert_eq!(
        x.get("user.overlay.opaque").map(Vec::as_slice),
        Some(&b"y"[..])
    );
    assert!(!x.contains_key("trusted.overlay.opaque"));
}

#[test]
fn snapshots_must_start_empty() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("x"), b"").unwrap();
    let (_, blob) = forge_oci::LayerBuilder::new(Vec::new(), &LayerOptions::default())
        .unwrap()
        .finish()
        .unwrap();
    assert!(apply_layer(
        &blob[..],
        tmp.path(),
        &ApplyOptions::new(ApplyMode::OverlaySnapshot)
    )
    .is_err());
}
