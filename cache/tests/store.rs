//! Open/recovery, snapshots, temp dirs, tags, records, state and cache mounts.

mod common;

use std::cell::Cell;
use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;
use forge_cache::{normalize_tag, CacheRecord, SnapshotError, Store, StoreError, LAYOUT_VERSION};
use forge_oci::Digest;
use serde_json::json;

#[test]
fn open_creates_the_versioned_layout() {
    let (_t, store) = store();
    let root = store.root();
    assert!(root.is_absolute());
    assert_eq!(
        fs::read_to_string(root.join("LAYOUT")).unwrap().trim(),
        LAYOUT_VERSION
    );
    for d in [
        "blobs/sha256",
        "snapshots/v1",
        "tags/v1",
        "records/v1",
        "tmp",
        "locks",
        "state/v1",
        "cache-mounts/v1",
    ] {
        assert!(root.join(d).is_dir(), "{d} missing");
    }
    // Reopening an existing store works and keeps content.
    let d = store.put_blob_bytes(b"kept").unwrap();
    let again = Store::open(root).unwrap();
    assert!(again.has_blob(&d));
}

#[test]
fn open_refuses_another_layout() {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("LAYOUT"), "forge-store-v99\n").unwrap();
    match Store::open(t.path()) {
        Err(StoreError::UnsupportedLayout {
            found, expected, ..
        }) => {
            assert_eq!(found, "forge-store-v99");
            assert_eq!(expected, LAYOUT_VERSION);
        }
        other => panic!("expected UnsupportedLayout, got {other:?}"),
    }
}

#[test]
fn open_removes_only_stale_temp_entries() {
    let (_t, store) = store();
    let tmp = store.root().join("tmp");
    let dead = dead_pid();
    // A dead owner's file and directory: stale.
    fs::write(tmp.join(format!("p{dead}-1-0-blob")), b"partial").unwrap();
    fs::create_dir_all(tmp.join(format!("p{dead}-2-0-snapshot/fs/deep"))).unwrap();
    fs::write(tmp.join(format!("p{dead}-2-0-snapshot/fs/deep/f")), b"x").unwrap();
    // A live owner (us), unlocked: kept (it may be between create and lock).
    fs::write(tmp.join(format!("p{}-3-0-write", std::process::id())), b"").unwrap();
    // Our pid but another start time: a previous process that had the same pid (pid 1 in a
    // container, say). Stale.
    fs::write(
        tmp.join(format!("p{}.1-4-0-blob", std::process::id())),
        b"old",
    )
    .unwrap();
    // A temp dir held by this process through the API: kept.
    let held = store.temp_dir("held").unwrap();
    let held_name = held
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    let reopened = Store::open(store.root()).unwrap();
    let mut want = vec![format!("p{}-3-0-write", std::process::id()), held_name];
    want.sort();
    assert_eq!(tmp_entries(&reopened), want);
    drop(held);
}

#[test]
fn default_root_honours_forge_root() {
    // Only this test touches FORGE_ROOT in this binary.
    std::env::set_var("FORGE_ROOT", "/some/where");
    assert_eq!(
        Store::default_root(),
        std::path::PathBuf::from("/some/where")
    );
    std::env::remove_var("FORGE_ROOT");
    let r = Store::default_root();
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(r, std::path::PathBuf::from("/var/lib/forge"));
    } else {
        assert!(r.ends_with("forge"), "{r:?}");
    }
}

// ------------------------------------------------------------------ snapshots

#[test]
fn create_snapshot_fills_once() {
    let (_t, store) = store();
    let id = Digest::of(b"layer");
    assert_eq!(store.snapshot_path(&id), None);
    let calls = Cell::new(0);
    let p = store
        .create_snapshot(&id, |dir| {
            calls.set(calls.get() + 1);
            assert!(dir.is_dir());
            assert_eq!(
                fs::read_dir(dir).unwrap().count(),
                0,
                "fill gets an empty dir"
            );
            fs::create_dir(dir.join("etc"))?;
            fs::write(dir.join("etc/hostname"), "forge")
        })
        .unwrap();
    assert_eq!(calls.get(), 1);
    assert_eq!(store.snapshot_path(&id), Some(p.clone()));
    assert!(p.starts_with(store.root().join("snapshots/v1")));
    assert_eq!(fs::read_to_string(p.join("etc/hostname")).unwrap(), "forge");
    // The completion marker sits beside the tree, not inside it.
    assert_eq!(entries(&p), vec!["etc"]);
    assert!(p.parent().unwrap().join("snapshot.json").is_file());

    let again = store
        .create_snapshot(&id, |_| -> std::io::Result<()> {
            calls.set(calls.get() + 1);
            Ok(())
        })
        .unwrap();
    assert_eq!(again, p);
    assert_eq!(calls.get(), 1, "an existing snapshot is not refilled");
    assert_eq!(store.list_snapshots().unwrap(), vec![id]);
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
}

#[test]
fn failed_fill_leaves_nothing_visible() {
    let (_t, store) = store();
    let id = Digest::of(b"broken layer");
    let r = store.create_snapshot(&id, |dir| {
        fs::write(dir.join("half"), "written").unwrap();
        Err("tar stream ended early")
    });
    match r {
        Err(SnapshotError::Fill(msg)) => assert_eq!(msg, "tar stream ended early"),
        other => panic!("expected Fill error, got {other:?}"),
    }
    assert_eq!(store.snapshot_path(&id), None);
    assert_eq!(
        entries(&store.root().join("snapshots/v1")),
        Vec::<String>::new()
    );
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
    // The lock was released: a retry works.
    let p = store
        .create_snapshot(&id, |dir| fs::write(dir.join("whole"), "ok"))
        .unwrap();
    assert_eq!(entries(&p), vec!["whole"]);
}

#[test]
fn commit_snapshot_dir_moves_a_filled_dir() {
    let (_t, store) = store();
    let id = Digest::of(b"upper");
    let work = store.temp_dir("overlay").unwrap();
    let upper = work.path().join("upper");
    fs::create_dir_all(upper.join("usr/bin")).unwrap();
    fs::write(upper.join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(
        upper.join("usr/bin/tool"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let p = store.commit_snapshot_dir(&id, &upper).unwrap();
    assert!(!upper.exists(), "the staged dir was moved, not copied");
    assert_eq!(store.snapshot_path(&id), Some(p.clone()));
    assert_eq!(
        fs::read_to_string(p.join("usr/bin/tool")).unwrap(),
        "#!/bin/sh\n"
    );
    assert_eq!(
        fs::metadata(p.join("usr/bin/tool"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );

    // Committing the same id again returns the existing snapshot and leaves the new dir alone.
    let other = work.path().join("upper2");
    fs::create_dir(&other).unwrap();
    assert_eq!(store.commit_snapshot_dir(&id, &other).unwrap(), p);
    assert!(other.is_dir());

    // Not a directory: an error, nothing created.
    let file = work.path().join("file");
    fs::write(&file, "x").unwrap();
    let id2 = Digest::of(b"not a dir");
    assert!(matches!(
        store.commit_snapshot_dir(&id2, &file),
        Err(StoreError::Io { .. })
    ));
    assert_eq!(store.snapshot_path(&id2), None);
    drop(work);
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
}

// ------------------------------------------------------------------ temp dirs

#[test]
fn temp_dirs_are_removed_on_drop_and_close() {
    let (_t, store) = store();
    let a = store.temp_dir("a/b c").unwrap();
    let b = store.temp_dir("work").unwrap();
    assert_ne!(a.path(), b.path());
    assert!(a.path().starts_with(store.root().join("tmp")));
    let name = a.path().file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("p{}.", std::process::id())),
        "{name}"
    );
    assert!(!name.contains('/') && !name.contains(' '));
    // Read-only and nested content is removed too.
    fs::create_dir_all(a.path().join("x/y")).unwrap();
    fs::write(a.path().join("x/y/f"), "f").unwrap();
    fs::set_permissions(a.path().join("x/y"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::set_permissions(a.path().join("x"), fs::Permissions::from_mode(0o000)).unwrap();
    let a_path = a.path().to_path_buf();
    drop(a);
    assert!(!a_path.exists());
    let b_path = b.path().to_path_buf();
    b.close().unwrap();
    assert!(!b_path.exists());
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
}

// ------------------------------------------------------------------ tags

#[test]
fn tags_are_normalized_and_atomic() {
    let (_t, store) = store();
    let m1 = Digest::of(b"m1");
    let m2 = Digest::of(b"m2");
    assert_eq!(store.get_tag("busybox").unwrap(), None);
    store.set_tag("busybox", &m1).unwrap();
    assert_eq!(store.get_tag("busybox").unwrap(), Some(m1.clone()));
    assert_eq!(
        store.get_tag("docker.io/library/busybox:latest").unwrap(),
        Some(m1.clone())
    );
    assert_eq!(
        store.get_tag("index.docker.io/library/busybox").unwrap(),
        Some(m1.clone())
    );
    assert_eq!(store.get_tag("busybox:1.36").unwrap(), None);
    store.set_tag("localhost:5000/team/app:v1", &m2).unwrap();
    store.set_tag("busybox", &m2).unwrap(); // retag
    assert_eq!(
        store.list_tags().unwrap(),
        vec![
            ("docker.io/library/busybox:latest".to_string(), m2.clone()),
            ("localhost:5000/team/app:v1".to_string(), m2.clone()),
        ]
    );
    assert!(store.remove_tag("busybox:latest").unwrap());
    assert!(!store.remove_tag("busybox:latest").unwrap());
    assert_eq!(
        store.list_tags().unwrap(),
        vec![("localhost:5000/team/app:v1".to_string(), m2.clone())]
    );
    // Survives a reopen.
    let again = Store::open(store.root()).unwrap();
    assert_eq!(
        again.get_tag("localhost:5000/team/app:v1").unwrap(),
        Some(m2)
    );
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
}

#[test]
fn bad_tag_names_are_rejected() {
    let (_t, store) = store();
    let m = Digest::of(b"m");
    for bad in ["", "Upper/Case", "busybox:bad tag", "a//b"] {
        assert!(
            matches!(store.set_tag(bad, &m), Err(StoreError::InvalidName { .. })),
            "{bad:?} should be rejected"
        );
    }
    let pinned = format!("busybox@{m}");
    assert!(matches!(
        store.set_tag(&pinned, &m),
        Err(StoreError::InvalidName { .. })
    ));
    assert_eq!(store.list_tags().unwrap(), vec![]);
    assert_eq!(
        normalize_tag("ubuntu:22.04").unwrap(),
        "docker.io/library/ubuntu:22.04"
    );
    assert_eq!(normalize_tag("ghcr.io/o/r").unwrap(), "ghcr.io/o/r:latest");
}

#[test]
fn corrupt_tags_file_is_an_error_not_an_empty_list() {
    let (_t, store) = store();
    store.set_tag("a", &Digest::of(b"a")).unwrap();
    fs::write(store.root().join("tags/v1/tags.json"), b"{ not json").unwrap();
    assert!(matches!(
        store.list_tags(),
        Err(StoreError::CorruptTags { .. })
    ));
    // A write must not silently replace what it cannot read.
    assert!(matches!(
        store.set_tag("b", &Digest::of(b"b")),
        Err(StoreError::CorruptTags { .. })
    ));
}

// ------------------------------------------------------------------ records

#[test]
fn records_round_trip() {
    let (_t, store) = store();
    let key = "0123456789abcdef";
    assert_eq!(store.cache_get(key).unwrap(), None);
    let rec = CacheRecord {
        refs: vec![Digest::of(b"x")],
        value: json!({"snapshot": "s", "n": [1, 2]}),
        created_unix: 1_700_000_000,
    };
    store.cache_put(key, &rec).unwrap();
    assert_eq!(store.cache_get(key).unwrap(), Some(rec.clone()));
    assert!(store
        .root()
        .join("records/v1/01/0123456789abcdef.json")
        .is_file());
    let rec2 = CacheRecord::new(vec![], json!(null));
    assert!(rec2.created_unix > 1_700_000_000);
    store.cache_put(key, &rec2).unwrap();
    assert_eq!(store.cache_get(key).unwrap(), Some(rec2));
    store.cache_put("ff00", &rec).unwrap();
    assert_eq!(
        store.cache_keys().unwrap(),
        vec![key.to_string(), "ff00".to_string()]
    );
    assert!(store.cache_remove(key).unwrap());
    assert!(!store.cache_remove(key).unwrap());
    assert_eq!(store.cache_get(key).unwrap(), None);
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
}

#[test]
fn bad_keys_and_unparsable_records() {
    let (_t, store) = store();
    let rec = CacheRecord::new(vec![], json!(1));
    for bad in ["", "a", "ABCD", "../etc", "zz", &"a".repeat(129)] {
        assert!(
            matches!(
                store.cache_put(bad, &rec),
                Err(StoreError::InvalidKey { .. })
            ),
            "{bad:?}"
        );
        assert!(
            matches!(store.cache_get(bad), Err(StoreError::InvalidKey { .. })),
            "{bad:?}"
        );
    }
    store.cache_put("abcd", &rec).unwrap();
    fs::write(
        store.root().join("records/v1/ab/abcd.json"),
        b"{\"refs\": [tru",
    )
    .unwrap();
    assert_eq!(
        store.cache_get("abcd").unwrap(),
        None,
        "an unparsable record reads as missing"
    );
}

// ------------------------------------------------------------------ state and cache mounts

#[test]
fn state_files() {
    let (_t, store) = store();
    assert_eq!(store.read_state("stat-cache").unwrap(), None);
    store.write_state("stat-cache", b"v1").unwrap();
    store.write_state("stat-cache", b"v2").unwrap();
    assert_eq!(
        store.read_state("stat-cache").unwrap(),
        Some(b"v2".to_vec())
    );
    assert_eq!(fs::read(store.state_path("stat-cache")).unwrap(), b"v2");
    // Any name maps to one file directly inside the state dir.
    let state_dir = store.root().join("state/v1");
    for name in ["../../escape", "a/b", "..", ".", "", "ctx:/home/me"] {
        let p = store.state_path(name);
        assert_eq!(p.parent().unwrap(), state_dir, "{name:?} -> {p:?}");
        store.write_state(name, name.as_bytes()).unwrap();
        assert_eq!(
            store.read_state(name).unwrap(),
            Some(name.as_bytes().to_vec())
        );
    }
    assert_ne!(store.state_path("a/b"), store.state_path("a_b"));
    assert_eq!(entries(&state_dir).len(), 7);
}

#[test]
fn cache_mount_dirs_persist_per_id() {
    let (_t, store) = store();
    let a = store.cache_mount_dir("apt-cache").unwrap();
    let b = store.cache_mount_dir("/root/.cargo").unwrap();
    assert_ne!(a, b);
    assert!(a.is_dir() && b.is_dir());
    assert_eq!(a.parent().unwrap(), store.root().join("cache-mounts/v1"));
    fs::write(a.join("pkg.deb"), "deb").unwrap();
    assert_eq!(store.cache_mount_dir("apt-cache").unwrap(), a);
    assert_eq!(fs::read_to_string(a.join("pkg.deb")).unwrap(), "deb");
    let id_file = a.with_extension("id");
    assert_eq!(fs::read_to_string(id_file).unwrap(), "apt-cache");
    assert_eq!(tmp_entries(&store), Vec::<String>::new());
}

#[test]
fn temp_dir_removal_never_enters_a_mount() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: temp_dir_removal_never_enters_a_mount needs root to mount a tmpfs");
        return;
    }
    let (_t, store) = store();
    let tmp = store.temp_dir("overlay").unwrap();
    let merged = tmp.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let c = |p: &std::path::Path| std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let (src, target, fstype) = (c("tmpfs".as_ref()), c(&merged), c("tmpfs".as_ref()));
    // SAFETY: valid C strings; mounting a fresh tmpfs on a directory we own.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
    fs::write(merged.join("precious"), "do not delete").unwrap();
    let tmp_path = tmp.path().to_path_buf();
    let err = tmp.close().unwrap_err();
    assert!(err.to_string().contains("mounted"), "{err}");
    assert_eq!(
        fs::read_to_string(merged.join("precious")).unwrap(),
        "do not delete"
    );
    // SAFETY: unmounting what we mounted.
    assert_eq!(unsafe { libc::umount2(target.as_ptr(), 0) }, 0);
    assert!(tmp_path.exists());
    // Once unmounted, the leftover is ordinary garbage: owned by a live process (us) it stays,
    // but remove_tree-based cleanup of it works.
    let reopened = Store::open(store.root()).unwrap();
    assert_eq!(tmp_entries(&reopened).len(), 1);
    fs::remove_dir_all(&tmp_path).unwrap();
}

#[test]
fn temp_dir_removal_never_enters_a_bind_mount_of_the_same_filesystem() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "SKIPPED: temp_dir_removal_never_enters_a_bind_mount_of_the_same_filesystem needs root"
        );
        return;
    }
    let (t, store) = store();
    // The user's build context, on the same filesystem as the store.
    let context = t.path().join("context");
    fs::create_dir(&context).unwrap();
    fs::write(context.join("Dockerfile"), "FROM scratch\n").unwrap();
    let tmp = store.temp_dir("rootfs").unwrap();
    let target = tmp.path().join("ctx");
    fs::create_dir(&target).unwrap();
    let c = |p: &std::path::Path| std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let (src, dst) = (c(&context), c(&target));
    // SAFETY: valid C strings; a bind mount of a directory we own.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "bind mount: {}", std::io::Error::last_os_error());
    let err = tmp.close().unwrap_err();
    assert!(err.to_string().contains("mounted"), "{err}");
    // SAFETY: unmounting what we mounted.
    assert_eq!(unsafe { libc::umount2(dst.as_ptr(), 0) }, 0);
    assert_eq!(
        fs::read_to_string(context.join("Dockerfile")).unwrap(),
        "FROM scratch\n"
    );
}

/// The inode flags of a directory, or None where the filesystem has none.
fn inode_flags(dir: &std::path::Path) -> Option<libc::c_long> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(dir).unwrap();
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long through a valid pointer.
    (unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) } == 0).then_some(flags)
}

#[test]
fn temp_area_is_a_top_directory_where_the_filesystem_has_the_flag() {
    const FS_TOPDIR_FL: libc::c_long = 0x0002_0000;
    let (t, store) = store();
    // Can this filesystem hold the flag at all? Try on a scratch directory.
    let probe = t.path().join("probe");
    std::fs::create_dir(&probe).unwrap();
    let supported = inode_flags(&probe).is_some_and(|f| {
        use std::os::fd::AsRawFd;
        let d = std::fs::File::open(&probe).unwrap();
        let with = f | FS_TOPDIR_FL;
        // SAFETY: as above.
        let set = unsafe { libc::ioctl(d.as_raw_fd(), libc::FS_IOC_SETFLAGS, &with) } == 0;
        set && inode_flags(&probe).is_some_and(|g| g & FS_TOPDIR_FL != 0)
    });
    if !supported {
        eprintln!("SKIPPED: the filesystem under {} has no top-directory flag", t.path().display());
        return;
    }
    let flags = inode_flags(&store.root().join("tmp")).unwrap();
    assert_ne!(flags & FS_TOPDIR_FL, 0, "tmp/ is not marked as a top directory");
}
