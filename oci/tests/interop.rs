//! Interoperability with GNU tar in both directions, and the entry-level LayerBuilder.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use forge_oci::{
    apply_layer, write_layer, ApplyMode, ApplyOptions, Compression, EntryMeta, LayerBuilder,
    LayerError, LayerOptions, SourceKind,
};

/// A tree with the awkward cases: long names and link targets, hard links, xattrs, odd modes.
fn awkward_tree(root: &Path, xattrs: bool) {
    let long = "d".repeat(90);
    fs::create_dir_all(root.join(&long).join(&long)).unwrap();
    let deep = root.join(&long).join(&long).join("f".repeat(120));
    fs::write(&deep, b"deep").unwrap();
    fs::hard_link(&deep, root.join("hard")).unwrap();
    std::os::unix::fs::symlink("t".repeat(180), root.join("longlink")).unwrap();
    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir(root.join("sticky")).unwrap();
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    mknod(&root.join("fifo"), libc::S_IFIFO | 0o640, 0, 0);
    fs::write(root.join("ünïcödé"), b"u").unwrap();
    if xattrs {
        set_xattr(&root.join("setuid"), "user.note", b"hello xattr").unwrap();
        set_xattr(&root.join("sticky"), "user.big", &vec![b'x'; 2000]).unwrap();
    }
    if is_root() {
        lchown(&root.join("setuid"), 4_000_000, 12);
    }
    for p in [
        root.join("setuid"),
        root.join("fifo"),
        root.join("longlink"),
        deep,
    ] {
        set_mtime(&p, 1_234_567_890);
    }
}

#[test]
fn gnu_tar_extracts_our_layers_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let xattrs = user_xattrs_supported(tmp.path());
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    awkward_tree(&src, xattrs);
    let (_, blob) = write_layer(
        &src,
        &LayerOptions {
            compression: Compression::None,
            ..Default::default()
        },
        Vec::new(),
    )
    .unwrap();
    let tar = tmp.path().join("l.tar");
    fs::write(&tar, &blob).unwrap();
    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let out = Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--same-owner",
            "--numeric-owner",
            "-xpf",
        ])
        .arg(&tar)
        .arg("-C")
        .arg(&dst)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "GNU tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // GNU tar sets directory mtimes from the archive as well; compare everything.
    fs::set_permissions(&dst, fs::metadata(&src).unwrap().permissions()).unwrap();
    assert_eq!(describe(&src), describe(&dst));
}

#[test]
fn we_apply_gnu_and_pax_archives_exactly() {
    for format in ["gnu", "pax"] {
        let tmp = tempfile::tempdir().unwrap();
        let xattrs = user_xattrs_supported(tmp.path()) && format == "pax";
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        awkward_tree(&src, xattrs);
        let tar = tmp.path().join("t.tar");
        let mut cmd = Command::new("tar");
        cmd.arg(format!("--format={format}")).arg("--numeric-owner");
        if xattrs {
            cmd.args(["--xattrs", "--xattrs-include=*"]);
        }
        let out = cmd
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dst = tmp.path().join("dst");
        fs::create_dir(&dst).unwrap();
        let st = apply_layer(
            fs::File::open(&tar).unwrap(),
            &dst,
            &ApplyOptions::default(),
        )
        .unwrap();
        assert_eq!(
            st.diff_id,
            forge_oci::Digest::of(&fs::read(&tar).unwrap()),
            "{format}: diff_id covers the whole stream"
        );
        let (a, b) = (describe(&src), describe(&dst));
        for (p, n) in &a.nodes {
            assert_eq!(Some(n), b.nodes.get(p), "{format}: {p}");
        }
        assert_eq!(a, b, "{format}");
    }
}

#[test]
fn builder_writes_explicit_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host.txt");
    fs::write(&host, b"from the host").unwrap();
    let meta = |mode| EntryMeta {
        mode,
        uid: 1000,
        gid: 1000,
        mtime: 1_700_000_000,
        ..EntryMeta::default()
    };
    let opts = LayerOptions {
        compression: Compression::Gzip { level: 1 },
        source_date_epoch: Some(1_600_000_000),
        kind: SourceKind::Tree,
    };
    let mut b = LayerBuilder::new(Vec::new(), &opts).unwrap();
    b.append_dir(Path::new("/app"), &meta(0o755)).unwrap();
    b.append_file(Path::new("app/data"), &meta(0o600), 5, &mut &b"12345"[..])
        .unwrap();
    b.append_file_from_host(Path::new("./app/copied"), &meta(0o644), &host)
        .unwrap();
    b.append_hardlink(Path::new("app/again"), Path::new("app/data"), &meta(0o600))
        .unwrap();
    b.append_symlink(Path::new("app/link"), Path::new("data"), &meta(0o777))
        .unwrap();
    b.append_fifo(Path::new("app/pipe"), &meta(0o600)).unwrap();
    b.append_whiteout(Path::new("app/gone"), &meta(0o600))
        .unwrap();
    let tree = tmp.path().join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("sub/x"), b"x").unwrap();
    b.append_dir(Path::new("app/tree"), &meta(0o755)).unwrap();
    // The edit hook sees layer paths and can rewrite ownership (COPY --chown).
    let mut seen = Vec::new();
    b.append_tree_with(
        Path::new("app/tree"),
        &tree,
        SourceKind::Tree,
        &mut |p, m| {
            seen.push(p.to_path_buf());
            m.uid = 7;
            m.gid = 8;
        },
    )
    .unwrap();
    assert_eq!(
        seen,
        [Path::new("app/tree/sub"), Path::new("app/tree/sub/x")]
    );
    let (info, blob) = b.finish().unwrap();
    assert_eq!(
        info.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(
        tar_names(&blob),
        [
            "app/",
            "app/data",
            "app/copied",
            "app/again",
            "app/link",
            "app/pipe",
            "app/.wh.gone",
            "app/tree/",
            "app/tree/sub/",
            "app/tree/sub/x"
        ]
    );

    // Merged onto a tree that has app/gone: the whiteout deletes it.
    let dst = tmp.path().join("dst");
    fs::create_dir_all(dst.join("app")).unwrap();
    fs::write(dst.join("app/gone"), b"old").unwrap();
    let st = apply_layer(&blob[..], &dst, &ApplyOptions::new(ApplyMode::Merged)).unwrap();
    assert_eq!(st.diff_id, info.diff_id);
    assert!(!dst.join("app/gone").exists());
    assert_eq!(fs::read(dst.join("app/again")).unwrap(), b"12345");
    assert_eq!(fs::read(dst.join("app/copied")).unwrap(), b"from the host");
    let d = describe(&dst);
    assert_eq!(
        d.nodes["app/data"].mtime, 1_600_000_000,
        "mtime not clamped to the epoch"
    );
    assert_eq!(
        d.link_groups,
        vec![vec!["app/again".to_string(), "app/data".to_string()]]
    );
    if is_root() {
        assert_eq!(
            (d.nodes["app/data"].uid, d.nodes["app/data"].gid),
            (1000, 1000)
        );
        assert_eq!(
            (d.nodes["app/tree/sub/x"].uid, d.nodes["app/tree/sub/x"].gid),
            (7, 8)
        );
    }
}

#[test]
fn builder_refuses_bad_paths_and_short_readers() {
    let mut b = LayerBuilder::new(Vec::new(), &LayerOptions::default()).unwrap();
    let m = EntryMeta::new(0o644);
    assert!(matches!(
        b.append_dir(Path::new("a/../b"), &m),
        Err(LayerError::InvalidPath { .. })
    ));
    assert!(matches!(
        b.append_dir(Path::new("/"), &m),
        Err(LayerError::InvalidPath { .. })
    ));
    assert!(matches!(
        b.append_hardlink(Path::new("x"), Path::new("../y"), &m),
        Err(LayerError::InvalidPath { .. })
    ));
    let err = b
        .append_file(Path::new("short"), &m, 10, &mut &b"abc"[..])
        .unwrap_err();
    assert!(matches!(err, LayerError::Io { .. }), "{err:?}");
    let bad = LayerOptions {
        compression: Compression::Gzip { level: 11 },
        ..LayerOptions::default()
    };
    assert!(matches!(
        LayerBuilder::new(Vec::new(), &bad),
        Err(LayerError::Compression(_))
    ));
}
