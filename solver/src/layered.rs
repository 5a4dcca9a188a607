//! A read-only merged view over a stack of layer snapshots, resolved in user space.
//!
//! Snapshots are overlayfs-format layer directories (whiteouts are 0:0 character devices,
//! opaque directories carry an `overlay.opaque` xattr). The view answers the questions COPY,
//! WORKDIR and USER lookups ask of an image without mounting anything: does a path exist, what
//! is its metadata, what does a directory contain.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::ffi::OsString;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// Layers, top-most first.
#[derive(Clone, Debug, Default)]
pub struct LayeredView {
    layers: Vec<PathBuf>,
    opaque: OpaqueMemo,
}

/// What was learnt about snapshot paths (their metadata, whether a directory is opaque),
/// remembered: snapshots never change, and a build asks about the same paths of the same layers
/// at every COPY, WORKDIR and USER step.
#[derive(Clone, Debug, Default)]
pub struct OpaqueMemo(Arc<Mutex<Memo>>);

#[derive(Debug, Default)]
struct Memo {
    opaque: HashMap<PathBuf, bool>,
    meta: HashMap<PathBuf, Option<Metadata>>,
}

impl OpaqueMemo {
    fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_opaque(&self, dir: &Path) -> bool {
        if let Some(&o) = self.memo().opaque.get(dir) {
            return o;
        }
        let o = is_opaque(dir);
        self.memo().opaque.insert(dir.to_path_buf(), o);
        o
    }

    fn symlink_metadata(&self, p: &Path) -> Option<Metadata> {
        if let Some(m) = self.memo().meta.get(p) {
            return m.clone();
        }
        let m = std::fs::symlink_metadata(p).ok();
        self.memo().meta.insert(p.to_path_buf(), m.clone());
        m
    }
}

/// A resolved entry: the host path of its top-most copy and its metadata.
#[derive(Debug)]
pub struct Entry {
    pub host: PathBuf,
    pub meta: Metadata,
    /// For directories: every layer directory that contributes to the merged listing, top-most first.
    dirs: Vec<PathBuf>,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.meta.is_dir()
    }
}

fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    // One call answers for the common case, a directory without extended attributes.
    if !has_xattrs(dir) {
        return false;
    }
    for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        if let Ok(v) = xattr_get(dir, name) {
            if v.as_deref() == Some(b"y".as_slice()) {
                return true;
            }
        }
    }
    false
}

/// False only when `path` certainly has no extended attributes (errors answer true, so the
/// caller still asks for the ones it needs).
fn has_xattrs(path: &Path) -> bool {
    let Ok(cpath) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return true };
    // SAFETY: a valid NUL-terminated path; a null buffer of size 0 asks only for the size.
    let n = unsafe { libc::llistxattr(cpath.as_ptr(), std::ptr::null_mut(), 0) };
    n != 0
}

fn xattr_get(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let cname = std::ffi::CString::new(name)?;
    let mut buf = vec![0u8; 64];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let n = unsafe {
        libc::lgetxattr(cpath.as_ptr(), cname.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    };
    if n < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
            _ => Err(err),
        };
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

const MAX_SYMLINKS: usize = 40;

impl LayeredView {
    /// A view over `layers`, top-most first.
    pub fn new(layers: Vec<PathBuf>) -> LayeredView {
        LayeredView { layers, opaque: OpaqueMemo::default() }
    }

    /// A view over immutable snapshots sharing `memo` with other views of the same build.
    pub fn with_memo(layers: Vec<PathBuf>, memo: OpaqueMemo) -> LayeredView {
        LayeredView { layers, opaque: memo }
    }

    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    fn root(&self) -> Option<Entry> {
        let top = self.layers.first()?;
        let meta = std::fs::symlink_metadata(top).ok()?;
        let mut dirs = Vec::new();
        for l in &self.layers {
            dirs.push(l.clone());
            if self.opaque.is_opaque(l) {
                break;
            }
        }
        Some(Entry { host: top.clone(), meta, dirs })
    }

    /// Looks up `name` inside the merged directory `dir`.
    fn child(&self, dir: &Entry, name: &std::ffi::OsStr) -> Option<Entry> {
        let mut found: Option<Entry> = None;
        for d in &dir.dirs {
            let p = d.join(name);
            let Some(meta) = self.opaque.symlink_metadata(&p) else { continue };
            match &mut found {
                None => {
                    if is_whiteout(&meta) {
                        return None;
                    }
                    let is_dir = meta.is_dir();
                    let opaque = is_dir && self.opaque.is_opaque(&p);
                    found = Some(Entry { host: p.clone(), meta, dirs: if is_dir { vec![p] } else { vec![] } });
                    if !is_dir || opaque {
                        break;
                    }
                }
                Some(e) => {
                    // Lower layers contribute only while they also hold a directory here.
                    if !meta.is_dir() {
                        break;
                    }
                    let opaque = self.opaque.is_opaque(&p);
                    e.dirs.push(p);
                    if opaque {
                        break;
                    }
                }
            }
        }
        found
    }

    /// Resolves an absolute or root-relative path inside the image, following symlinks in
    /// intermediate components (and in the last one when `follow` is set) without ever leaving
    /// the image root.
    pub fn lookup(&self, path: &str, follow: bool) -> Option<Entry> {
        let mut stack: Vec<Entry> = vec![self.root()?];
        let mut pending: Vec<OsString> = components(path).into_iter().rev().collect();
        let mut links = 0;
        while let Some(name) = pending.pop() {
            if name == ".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let cur = stack.last()?;
            if !cur.is_dir() {
                return None;
            }
            let next = self.child(cur, &name)?;
            let last = pending.is_empty();
            if next.meta.file_type().is_symlink() && (!last || follow) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return None;
                }
                let target = std::fs::read_link(&next.host).ok()?;
                let tstr = target.to_string_lossy().to_string();
                if tstr.starts_with('/') {
                    stack.truncate(1);
                }
                for c in components(&tstr).into_iter().rev() {
                    pending.push(c);
                }
                continue;
            }
            stack.push(next);
        }
        stack.pop()
    }

    /// The merged listing of a directory entry, names sorted, whiteouts applied.
    pub fn read_dir(&self, dir: &Entry) -> io::Result<Vec<(OsString, Entry)>> {
        let mut names: BTreeMap<OsString, ()> = BTreeMap::new();
        for d in &dir.dirs {
            for e in std::fs::read_dir(d)? {
                names.insert(e?.file_name(), ());
            }
        }
        let mut out = Vec::new();
        for (name, ()) in names {
            if let Some(e) = self.child(dir, &name) {
                out.push((name, e));
            }
        }
        Ok(out)
    }

    /// Reads a whole file from the image, following symlinks.
    pub fn read_file(&self, path: &str) -> Option<Vec<u8>> {
        let e = self.lookup(path, true)?;
        if !e.meta.is_file() {
            return None;
        }
        std::fs::read(&e.host).ok()
    }
}

/// Splits a path into normal components, dropping `.` and the root.
pub fn components(path: &str) -> Vec<OsString> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mkfile(p: &Path, s: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    }

    fn whiteout(p: &Path) -> bool {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path; creating a 0:0 char device needs CAP_MKNOD.
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o000, 0) == 0 }
    }

    #[test]
    fn upper_layers_win_and_symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let (low, up) = (t.path().join("low"), t.path().join("up"));
        mkfile(&low.join("etc/passwd"), "low");
        mkfile(&low.join("usr/bin/tool"), "tool");
        std::fs::create_dir_all(&up).unwrap();
        symlink("usr/bin", low.join("bin")).unwrap();
        mkfile(&up.join("etc/passwd"), "up");
        symlink("/../../etc/passwd", up.join("escape")).unwrap();
        let v = LayeredView::new(vec![up.clone(), low.clone()]);
        assert_eq!(v.read_file("/etc/passwd").unwrap(), b"up");
        assert_eq!(v.read_file("bin/tool").unwrap(), b"tool");
        // `..` past the root stays at the root.
        assert_eq!(v.read_file("/escape").unwrap(), b"up");
        let etc = v.lookup("/etc", true).unwrap();
        let names: Vec<_> = v.read_dir(&etc).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec![OsString::from("passwd")]);
        assert!(v.lookup("/missing", true).is_none());
    }

    #[test]
    fn whiteouts_hide_lower_entries() {
        let t = tempfile::tempdir().unwrap();
        let (low, up) = (t.path().join("low"), t.path().join("up"));
        mkfile(&low.join("a/x"), "x");
        mkfile(&low.join("a/y"), "y");
        std::fs::create_dir_all(up.join("a")).unwrap();
        if !whiteout(&up.join("a/x")) {
            eprintln!("SKIPPED: whiteouts_hide_lower_entries needs CAP_MKNOD");
            return;
        }
        let v = LayeredView::new(vec![up, low]);
        assert!(v.lookup("/a/x", true).is_none());
        let a = v.lookup("/a", true).unwrap();
        let names: Vec<_> = v.read_dir(&a).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec![OsString::from("y")]);
    }
}
