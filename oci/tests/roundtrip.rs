//! Property test: a generated tree → layer → apply (Merged) gives an identical tree.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use forge_oci::{
    apply_layer, write_layer, ApplyMode, ApplyOptions, Compression, LayerOptions, SourceKind,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    HardLink(usize),
    Fifo,
    Char(u32, u32),
    Block(u32, u32),
}

#[derive(Clone, Debug)]
struct Spec {
    parent: usize,
    name: String,
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattr: Option<(String, Vec<u8>)>,
}

fn name_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9._-]{0,12}",
        // Long names push paths past ustar's 100 bytes (PAX path records).
        "[a-z]{120,250}",
        // Non-ASCII names.
        "[a-zé☃]{1,8}",
    ]
}

fn kind_strategy() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Kind::File),
        3 => Just(Kind::Dir),
        2 => prop_oneof!["[a-z/.]{1,20}", "/[a-z]{150,300}", "\\.\\./\\.\\./etc/passwd"].prop_map(Kind::Symlink),
        2 => any::<usize>().prop_map(Kind::HardLink),
        1 => Just(Kind::Fifo),
        1 => (1u32..300, 0u32..300).prop_map(|(a, b)| Kind::Char(a, b)),
        1 => (1u32..300, 0u32..300).prop_map(|(a, b)| Kind::Block(a, b)),
    ]
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        any::<usize>(),
        name_strategy(),
        kind_strategy(),
        0u32..0o10000,
        prop_oneof![Just(0u32), 1u32..70000, Just(3_000_000u32)],
        prop_oneof![Just(0u32), 1u32..70000, Just(2_500_000u32)],
        prop_oneof![
            0i64..2_000_000_000,
            Just(-86_400i64),
            Just(10_000_000_000i64)
        ],
        proptest::option::of((
            "user\\.[a-z]{1,10}",
            proptest::collection::vec(any::<u8>(), 0..40),
        )),
    )
        .prop_map(|(parent, name, kind, mode, uid, gid, mtime, xattr)| Spec {
            parent,
            name,
            kind,
            mode,
            uid,
            gid,
            mtime,
            xattr,
        })
}

/// Creates the tree described by `specs` under `root`; returns how many entries it made.
fn build(root: &Path, specs: &[Spec], xattrs: bool) -> usize {
    let root_user = is_root();
    let mut dirs: Vec<PathBuf> = vec![root.to_path_buf()];
    let mut files: Vec<PathBuf> = Vec::new();
    let mut made = 0;
    let mut dir_meta: Vec<(PathBuf, u32, i64)> = Vec::new();
    for s in specs {
        let parent = dirs[s.parent % dirs.len()].clone();
        let p = parent.join(&s.name);
        if fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        let mode = match s.kind {
            // Only root may create devices.
            Kind::Char(..) | Kind::Block(..) if !root_user => continue,
            // Without root, keep files readable and dirs traversable by us.
            _ if !root_user => s.mode | 0o600,
            _ => s.mode,
        };
        match &s.kind {
            Kind::File(data) => {
                fs::write(&p, data).unwrap();
                files.push(p.clone());
            }
            Kind::Dir => {
                fs::create_dir(&p).unwrap();
                dirs.push(p.clone());
            }
            Kind::Symlink(t) => std::os::unix::fs::symlink(t, &p).unwrap(),
            Kind::HardLink(i) => {
                if files.is_empty() {
                    continue;
                }
                fs::hard_link(&files[i % files.len()], &p).unwrap();
                made += 1;
                continue; // shares the target's metadata
            }
            Kind::Fifo => mknod(&p, libc::S_IFIFO | 0o644, 0, 0),
            Kind::Char(a, b) => mknod(&p, libc::S_IFCHR | 0o644, *a, *b),
            Kind::Block(a, b) => mknod(&p, libc::S_IFBLK | 0o644, *a, *b),
        }
        made += 1;
        let is_link = matches!(s.kind, Kind::Symlink(_));
        if xattrs && matches!(s.kind, Kind::File(_) | Kind::Dir) {
            if let Some((k, v)) = &s.xattr {
                set_xattr(&p, k, v).unwrap();
            }
        }
        if root_user {
            lchown(&p, s.uid, s.gid);
        }
        if matches!(s.kind, Kind::Dir) {
            dir_meta.push((p, mode, s.mtime));
        } else {
            if !is_link {
                fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            }
            set_mtime(&p, s.mtime);
        }
    }
    // Directories last, deepest first: children change their mtime, modes may forbid writes.
    dir_meta.sort_by(|a, b| b.0.cmp(&a.0));
    for (p, mode, mtime) in dir_meta {
        fs::set_permissions(
            &p,
            fs::Permissions::from_mode(if root_user { mode } else { mode | 0o700 }),
        )
        .unwrap();
        set_mtime(&p, mtime);
    }
    made
}

fn round_trip(specs: Vec<Spec>, compression: Compression) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dst = tmp.path().join("dst");
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    let xattrs = user_xattrs_supported(tmp.path());
    build(&src, &specs, xattrs);

    let opts = LayerOptions {
        compression,
        source_date_epoch: None,
        kind: SourceKind::Tree,
    };
    let (info, blob) = write_layer(&src, &opts, Vec::new()).unwrap();
    prop_assert_eq!(info.size, blob.len() as u64);
    prop_assert_eq!(&info.digest, &forge_oci::Digest::of(&blob));

    let stats = apply_layer(&blob[..], &dst, &ApplyOptions::new(ApplyMode::Merged)).unwrap();
    prop_assert_eq!(&stats.diff_id, &info.diff_id);
    prop_assert_eq!(stats.uncompressed_size, info.uncompressed_size);

    let a = describe(&src);
    let b = describe(&dst);
    for (path, node) in &a.nodes {
        prop_assert_eq!(Some(node), b.nodes.get(path), "entry {}", path);
    }
    prop_assert_eq!(a.nodes.len(), b.nodes.len());
    prop_assert_eq!(a.link_groups, b.link_groups);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn tree_round_trips_through_a_layer(specs in proptest::collection::vec(spec_strategy(), 1..40), z in any::<bool>()) {
        let c = if z { Compression::Zstd { level: 3 } } else { Compression::Gzip { level: 1 } };
        round_trip(specs, c)?;
    }
}

/// A fixed tree that exercises every kind at once, so a failure here is easy to read.
#[test]
fn every_kind_round_trips() {
    let mut specs = Vec::new();
    let kinds = [
        Kind::Dir,
        Kind::File(b"hello".to_vec()),
        Kind::HardLink(0),
        Kind::Symlink("../x".into()),
        Kind::Symlink("/".to_string() + &"s".repeat(200)),
        Kind::Fifo,
        Kind::Char(1, 3),
        Kind::Block(7, 0),
        Kind::File(vec![7u8; 100_000]),
    ];
    for (i, k) in kinds.into_iter().enumerate() {
        specs.push(Spec {
            parent: if i == 0 { 0 } else { 1 },
            name: if i == 8 {
                "n".repeat(250)
            } else {
                format!("e{i}")
            },
            kind: k,
            mode: [
                0o755, 0o4711, 0o644, 0o777, 0o777, 0o600, 0o620, 0o660, 0o1777,
            ][i],
            uid: [0, 1000, 0, 3_000_000, 5, 6, 7, 8, 9][i],
            gid: [0, 1000, 0, 12, 5, 6, 7, 8, 2_500_000][i],
            mtime: [1_700_000_000, -86_400, 5, 6, 7, 8, 9, 10, 10_000_000_000][i],
            xattr: Some(("user.forge".into(), vec![i as u8; 3])),
        });
    }
    round_trip(specs, Compression::Gzip { level: 6 }).unwrap();
}
