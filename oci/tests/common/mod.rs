//! Helpers shared by the integration tests: describing a tree on disk so two trees can be
//! compared, small syscall wrappers, and the "skip loudly unless CI" rule.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Everything the round trip must keep about one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    /// File content, symlink target or "major:minor".
    pub data: Vec<u8>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// A tree: path → node, plus the hard-link groups (sets of paths sharing an inode).
#[derive(Debug, PartialEq, Eq)]
pub struct TreeDesc {
    pub nodes: BTreeMap<String, Node>,
    pub link_groups: Vec<Vec<String>>,
}

pub fn xattrs_of(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let mut out = BTreeMap::new();
    if n <= 0 {
        return out;
    }
    for name in buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
    {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        let k = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        if k >= 0 {
            v.truncate(k as usize);
            out.insert(String::from_utf8_lossy(name).into_owned(), v);
        }
    }
    // The kernel adds security labels on some systems; they are not part of the tree we made.
    out.retain(|k, _| !k.starts_with("security.selinux"));
    out
}

pub fn describe(root: &Path) -> TreeDesc {
    let mut nodes = BTreeMap::new();
    let mut inodes: HashMap<u64, Vec<String>> = HashMap::new();
    walk(root, root, &mut nodes, &mut inodes);
    let mut link_groups: Vec<Vec<String>> = inodes
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    link_groups.sort();
    TreeDesc { nodes, link_groups }
}

fn walk(
    root: &Path,
    dir: &Path,
    nodes: &mut BTreeMap<String, Node>,
    inodes: &mut HashMap<u64, Vec<String>>,
) {
    for ent in fs::read_dir(dir).unwrap() {
        let ent = ent.unwrap();
        let p = ent.path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let m = fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let (kind, data) = if ft.is_dir() {
            ("dir", Vec::new())
        } else if ft.is_file() {
            ("file", fs::read(&p).unwrap())
        } else if ft.is_symlink() {
            (
                "symlink",
                fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec(),
            )
        } else if ft.is_fifo() {
            ("fifo", Vec::new())
        } else if ft.is_char_device() {
            (
                "char",
                format!("{}:{}", libc::major(m.rdev()), libc::minor(m.rdev())).into_bytes(),
            )
        } else if ft.is_block_device() {
            (
                "block",
                format!("{}:{}", libc::major(m.rdev()), libc::minor(m.rdev())).into_bytes(),
            )
        } else {
            ("other", Vec::new())
        };
        if !ft.is_dir() {
            inodes.entry(m.ino()).or_default().push(rel.clone());
        }
        let node = Node {
            kind,
            mode: if ft.is_symlink() {
                0
            } else {
                m.mode() & 0o7777
            },
            uid: m.uid(),
            gid: m.gid(),
            mtime: m.mtime(),
            data,
            xattrs: xattrs_of(&p),
        };
        nodes.insert(rel, node);
        if ft.is_dir() {
            walk(root, &p, nodes, inodes);
        }
    }
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

pub fn ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

/// Prints a loud SKIPPED line, or panics under CI=true.
pub fn skip(what: &str) {
    if ci() {
        panic!("CI=true but {what}");
    }
    // Written to the real stderr, not through eprintln!, so the test harness does not swallow it.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}");
}

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

pub fn mknod(p: &Path, mode: u32, major: u32, minor: u32) {
    let rc = unsafe { libc::mknod(cstr(p).as_ptr(), mode, libc::makedev(major, minor)) };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

pub fn lchown(p: &Path, uid: u32, gid: u32) {
    let rc = unsafe { libc::lchown(cstr(p).as_ptr(), uid, gid) };
    assert_eq!(
        rc,
        0,
        "lchown {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

pub fn set_mtime(p: &Path, secs: i64) {
    let ts = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            cstr(p).as_ptr(),
            [ts, ts].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        rc,
        0,
        "utimensat {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let cn = CString::new(name).unwrap();
    let rc = unsafe {
        libc::lsetxattr(
            cstr(p).as_ptr(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether `dir`'s filesystem takes user.* xattrs.
pub fn user_xattrs_supported(dir: &Path) -> bool {
    let probe = dir.join(".xattr-probe");
    fs::write(&probe, b"").unwrap();
    let ok = set_xattr(&probe, "user.forge.probe", b"1").is_ok();
    fs::remove_file(&probe).unwrap();
    ok
}

/// Lists the entries of a (possibly compressed) tar with GNU tar, `-tv` style names only.
pub fn tar_names(blob: &[u8]) -> Vec<String> {
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut forge_oci::decompress(blob).unwrap(), &mut plain).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("l.tar");
    fs::write(&f, &plain).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "GNU tar could not list the layer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}
