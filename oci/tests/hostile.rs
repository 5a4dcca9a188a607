//! Hostile layers: every attempt to write outside the target is refused with an error that
//! names the entry, and nothing appears outside the target.

mod common;

use std::fs;
use std::path::Path;

use forge_oci::{apply_layer, ApplyMode, ApplyOptions, LayerError};

/// A raw ustar header, written by hand so the test can say things forge's writer refuses to.
fn header(name: &str, flag: u8, size: usize, link: &str) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = flag;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hard(&'a str, &'a str),
}

fn tar(entries: &[E<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        match e {
            E::File(n, data) => {
                out.extend_from_slice(&header(n, b'0', data.len(), ""));
                out.extend_from_slice(data);
                out.resize(out.len().div_ceil(512) * 512, 0);
            }
            E::Dir(n) => out.extend_from_slice(&header(n, b'5', 0, "")),
            E::Symlink(n, t) => out.extend_from_slice(&header(n, b'2', 0, t)),
            E::Hard(n, t) => out.extend_from_slice(&header(n, b'1', 0, t)),
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

struct Scene {
    _tmp: tempfile::TempDir,
    target: std::path::PathBuf,
    outside: std::path::PathBuf,
}

/// `<tmp>/target` to apply into, `<tmp>/outside` with a `secret` file, `<tmp>` otherwise empty.
fn scene() -> Scene {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    let outside = tmp.path().join("outside");
    fs::create_dir(&target).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"untouched").unwrap();
    Scene {
        target,
        outside,
        _tmp: tmp,
    }
}

/// Lists everything under `dir` except `target/` (what an escape would have created).
fn outside_listing(s: &Scene) -> Vec<String> {
    let root = s.target.parent().unwrap();
    let mut v = Vec::new();
    fn walk(root: &Path, dir: &Path, skip: &Path, v: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p == skip {
                continue;
            }
            v.push(p.strip_prefix(root).unwrap().display().to_string());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(root, &p, skip, v);
            }
        }
    }
    walk(root, root, &s.target, &mut v);
    v.sort();
    v
}

fn assert_refused(entries: &[E<'_>], entry: &str) {
    let s = scene();
    let before = outside_listing(&s);
    let blob = tar(entries);
    for mode in [ApplyMode::Merged, ApplyMode::OverlaySnapshot] {
        let t = s.target.join(format!("{mode:?}"));
        fs::create_dir(&t).unwrap();
        let err = apply_layer(&blob[..], &t, &ApplyOptions::new(mode))
            .expect_err("hostile layer was applied");
        match &err {
            LayerError::Escape { entry: e, .. } => {
                assert_eq!(e, entry, "error names the wrong entry: {err}")
            }
            other => panic!("expected an Escape error for {entry:?}, got {other:?}"),
        }
        assert!(
            err.to_string().contains(entry),
            "message does not name the entry: {err}"
        );
    }
    assert_eq!(
        outside_listing(&s),
        before,
        "something was written outside the target"
    );
    assert_eq!(fs::read(s.outside.join("secret")).unwrap(), b"untouched");
}

#[test]
fn dot_dot_entries_are_refused() {
    assert_refused(&[E::File("../evil", b"x")], "../evil");
    assert_refused(
        &[E::Dir("a/"), E::File("a/../../evil", b"x")],
        "a/../../evil",
    );
    assert_refused(
        &[E::File("./../outside/secret", b"pwned")],
        "./../outside/secret",
    );
}

#[test]
fn writes_through_an_absolute_symlink_are_refused() {
    let s = scene();
    let abs = s.outside.to_str().unwrap().to_string();
    drop(s);
    // The symlink's target need not exist for the test to mean something: if the applier
    // followed it, the write would create (or fail on) a path outside.
    assert_refused(
        &[E::Symlink("link", &abs), E::File("link/pwned", b"x")],
        "link/pwned",
    );
    assert_refused(
        &[E::Symlink("etc", "/etc"), E::File("etc/forge-pwned", b"x")],
        "etc/forge-pwned",
    );
    assert!(!Path::new("/etc/forge-pwned").exists());
}

#[test]
fn writes_through_a_dot_dot_symlink_are_refused() {
    assert_refused(
        &[E::Symlink("up", ".."), E::File("up/pwned", b"x")],
        "up/pwned",
    );
    assert_refused(
        &[
            E::Dir("d/"),
            E::Symlink("d/up", "../.."),
            E::Dir("d/up/outside/"),
            E::File("d/up/outside/x", b"x"),
        ],
        "d/up/outside/",
    );
}

#[test]
fn hardlinks_to_outside_files_are_refused() {
    assert_refused(&[E::Hard("hl", "../outside/secret")], "hl");
    // An absolute target is taken inside the target, where it does not exist.
    assert_refused(&[E::Hard("hl", "/etc/passwd")], "hl");
    // Through a symlinked parent.
    assert_refused(
        &[E::Symlink("o", "../outside"), E::Hard("hl", "o/secret")],
        "hl",
    );
}

#[test]
fn a_file_replacing_a_symlink_does_not_write_through_it() {
    let s = scene();
    let victim = s.outside.join("secret");
    let blob = tar(&[
        E::Symlink("s", victim.to_str().unwrap()),
        E::File("s", b"pwned"),
    ]);
    apply_layer(&blob[..], &s.target, &ApplyOptions::new(ApplyMode::Merged)).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"untouched");
    assert_eq!(fs::read(s.target.join("s")).unwrap(), b"pwned");
    assert!(fs::symlink_metadata(s.target.join("s")).unwrap().is_file());
}

#[test]
fn a_hardlink_to_a_symlink_links_the_symlink_itself() {
    let s = scene();
    let victim = s.outside.join("secret");
    let blob = tar(&[E::Symlink("s", victim.to_str().unwrap()), E::Hard("h", "s")]);
    apply_layer(&blob[..], &s.target, &ApplyOptions::new(ApplyMode::Merged)).unwrap();
    let m = fs::symlink_metadata(s.target.join("h")).unwrap();
    assert!(
        m.file_type().is_symlink(),
        "the hard link must be to the symlink, not its target"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(&victim).unwrap().nlink(),
        1,
        "the outside file gained a link"
    );
}

#[test]
fn whiteouts_cannot_name_parents() {
    let s = scene();
    for name in ["a/.wh..", "a/.wh..."] {
        let blob = tar(&[E::Dir("a/"), E::File(name, b"")]);
        let t = s.target.join(name.replace('/', "_"));
        fs::create_dir(&t).unwrap();
        let err = apply_layer(&blob[..], &t, &ApplyOptions::new(ApplyMode::Merged)).unwrap_err();
        assert!(matches!(err, LayerError::Escape { .. }), "{name}: {err:?}");
        assert!(
            t.join("a").is_dir(),
            "{name}: the directory itself was removed"
        );
    }
}

#[test]
fn garbage_is_a_malformed_error_not_a_panic() {
    let s = scene();
    let mut blob = tar(&[E::File("ok", b"data")]);
    blob[148] = b'9'; // corrupt the checksum
    let err = apply_layer(&blob[..], &s.target, &ApplyOptions::default()).unwrap_err();
    assert!(matches!(err, LayerError::Malformed(_)), "{err:?}");
    let err = apply_layer(
        &[0x1f, 0x8b, 1, 2, 3][..],
        &s.target,
        &ApplyOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, LayerError::Stream(_)), "{err:?}");
}
