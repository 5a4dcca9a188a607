//! The build context: the directory `forge build` is pointed at, filtered by `.dockerignore`.
//!
//! The context is walked once per build into an index of entries (path, type, mode, size,
//! timestamps). COPY and ADD select from that index, and their cache keys are computed from the
//! selected entries' contents. Content hashes come from a persisted stat cache keyed by
//! (path, size, mtime, ctime, inode), so an unchanged file is never read twice across builds.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use forge_parser::dockerignore::PatternMatcher;

use crate::error::SolveError;

/// What kind of filesystem object an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One entry of the context index.
#[derive(Clone, Debug)]
pub struct CtxEntry {
    pub kind: Kind,
    pub mode: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub ino: u64,
    pub link: Option<String>,
}

/// The `.dockerignore` rules of a context.
pub struct Ignore {
    matcher: Option<PatternMatcher>,
    patterns: Vec<String>,
}

impl Ignore {
    pub fn none() -> Ignore {
        Ignore { matcher: None, patterns: Vec::new() }
    }

    /// Reads `<dockerfile>.dockerignore` beside the Dockerfile, else `<context>/.dockerignore`.
    pub fn load(context: &Path, dockerfile: Option<&Path>) -> Result<Ignore, SolveError> {
        let mut candidates = Vec::new();
        if let Some(df) = dockerfile {
            if let Some(name) = df.file_name() {
                let mut n = name.to_os_string();
                n.push(".dockerignore");
                candidates.push(df.with_file_name(n));
            }
        }
        candidates.push(context.join(".dockerignore"));
        for path in candidates {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let patterns = forge_parser::dockerignore::read_patterns(&text);
                    let matcher = PatternMatcher::new(&patterns).map_err(|e| SolveError::Context {
                        path: path.clone(),
                        message: format!("invalid pattern: {e}"),
                    })?;
                    return Ok(Ignore { matcher: Some(matcher), patterns });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(SolveError::io(&path, e)),
            }
        }
        Ok(Ignore::none())
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// True when `rel` (slash-separated, relative to the context root) is excluded.
    pub fn excluded(&self, rel: &str) -> bool {
        match &self.matcher {
            Some(m) => m.matches_or_parent_matches(rel).unwrap_or(false),
            None => false,
        }
    }
}

/// The walked context.
pub struct Context {
    root: PathBuf,
    /// Relative paths (no leading `/`, `""` is the root) → entries, sorted.
    entries: BTreeMap<String, CtxEntry>,
    ignore: Ignore,
    stat_cache: RwLock<StatCache>,
}

fn ts(sec: i64, nsec: i64) -> (i64, i64) {
    (sec, nsec)
}

impl Kind {
    /// The kind of a file from its (lstat) metadata.
    pub fn of(meta: &std::fs::Metadata) -> Kind {
        let ft = meta.file_type();
        if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        }
    }
}

fn entry_of(path: &Path, meta: &std::fs::Metadata) -> CtxEntry {
    let kind = Kind::of(meta);
    let link = if kind == Kind::Symlink {
        std::fs::read_link(path).ok().map(|p| p.to_string_lossy().into_owned())
    } else {
        None
    };
    CtxEntry {
        kind,
        mode: meta.permissions().mode() & 0o7777,
        size: meta.len(),
        mtime: ts(meta.mtime(), meta.mtime_nsec()),
        ctime: ts(meta.ctime(), meta.ctime_nsec()),
        ino: meta.ino(),
        link,
    }
}

impl Context {
    /// Walks `root`, leaving out what `ignore` excludes. Directories are read in parallel, and
    /// entries are stat'ed relative to their open directory (no path lookup per file).
    pub fn walk(root: &Path, ignore: Ignore, stat_cache: StatCache) -> Result<Context, SolveError> {
        let meta = std::fs::metadata(root).map_err(|e| SolveError::io(root, e))?;
        if !meta.is_dir() {
            return Err(SolveError::Context {
                path: root.to_path_buf(),
                message: "the build context must be a directory".into(),
            });
        }
        // An excluded directory is still entered when an exception may re-include something
        // below it.
        let reenter = ignore.patterns.iter().any(|p| p.starts_with('!'));
        let mut list = walk_dir(root.to_path_buf(), String::new(), &ignore, reenter)?;
        list.push((String::new(), entry_of(root, &meta)));
        let mut entries: BTreeMap<String, CtxEntry> = list.into_iter().collect();
        // Directories that are themselves excluded but hold re-included files are kept as parents.
        if reenter {
            let missing: Vec<String> =
                entries.keys().flat_map(|k| parents(k)).filter(|p| !entries.contains_key(p)).collect();
            for p in missing {
                let host = root.join(&p);
                if let Ok(meta) = std::fs::symlink_metadata(&host) {
                    entries.insert(p, entry_of(&host, &meta));
                }
            }
        }
        Ok(Context { root: root.to_path_buf(), entries, ignore, stat_cache: RwLock::new(stat_cache) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn entries(&self) -> &BTreeMap<String, CtxEntry> {
        &self.entries
    }

    pub fn ignore(&self) -> &Ignore {
        &self.ignore
    }

    pub fn get(&self, rel: &str) -> Option<&CtxEntry> {
        self.entries.get(rel)
    }

    /// The entries at and below `rel`, in path order.
    pub fn subtree<'a>(&'a self, rel: &'a str) -> Box<dyn Iterator<Item = (&'a String, &'a CtxEntry)> + 'a> {
        if rel.is_empty() {
            return Box::new(self.entries.iter());
        }
        // Children sort between "rel/" and "rel0" ('0' follows '/').
        let own = self.entries.get_key_value(rel);
        let below = self.entries.range(format!("{rel}/")..format!("{rel}0"));
        Box::new(own.into_iter().chain(below))
    }

    /// The content hash of a regular file, from the stat cache when its stat matches.
    pub fn file_hash(&self, rel: &str, e: &CtxEntry) -> Result<[u8; 32], SolveError> {
        let stamp = Stamp { size: e.size, mtime: e.mtime, ctime: e.ctime, ino: e.ino };
        if let Some(h) = self.stat_cache.read().unwrap_or_else(|p| p.into_inner()).get(rel, &stamp) {
            return Ok(h);
        }
        let path = self.root.join(rel);
        let h = hash_file(&path)?;
        self.stat_cache.write().unwrap_or_else(|p| p.into_inner()).put(rel, stamp, h);
        Ok(h)
    }

    /// The context with `sc` as its stat cache.
    pub fn with_stat_cache(self, sc: StatCache) -> Context {
        Context { stat_cache: RwLock::new(sc), ..self }
    }

    pub fn into_stat_cache(self) -> StatCache {
        self.stat_cache.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stat_cache(&self) -> std::sync::RwLockWriteGuard<'_, StatCache> {
        self.stat_cache.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// One directory of the walk: its kept entries, then (in parallel) its subdirectories'.
fn walk_dir(dir: PathBuf, rel: String, ignore: &Ignore, reenter: bool) -> Result<Vec<(String, CtxEntry)>, SolveError> {
    use rayon::prelude::*;
    let mut out = Vec::new();
    let mut subdirs = Vec::new();
    let rd = std::fs::read_dir(&dir).map_err(|e| SolveError::io(&dir, e))?;
    for item in rd {
        let item = item.map_err(|e| SolveError::io(&dir, e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else {
            return Err(SolveError::Context {
                path: item.path(),
                message: "file names in the context must be valid UTF-8".into(),
            });
        };
        let child_rel = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
        // fstatat on the directory's descriptor, without following symlinks.
        let meta = item.metadata().map_err(|e| SolveError::io(&item.path(), e))?;
        let excluded = ignore.excluded(&child_rel);
        if meta.is_dir() && (!excluded || reenter) {
            subdirs.push((item.path(), child_rel.clone()));
        }
        if !excluded {
            let e = if meta.file_type().is_symlink() { entry_of(&item.path(), &meta) } else { entry_of(Path::new(""), &meta) };
            out.push((child_rel, e));
        }
    }
    let nested: Vec<Result<Vec<(String, CtxEntry)>, SolveError>> =
        subdirs.into_par_iter().map(|(p, r)| walk_dir(p, r, ignore, reenter)).collect();
    for n in nested {
        out.extend(n?);
    }
    Ok(out)
}

/// The proper parent prefixes of a relative path (`a/b/c` → `a`, `a/b`).
fn parents(rel: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut idx = 0;
    while let Some(pos) = rel[idx..].find('/') {
        out.push(rel[..idx + pos].to_string());
        idx += pos + 1;
    }
    out
}

/// blake3 of a file's bytes.
pub fn hash_file(path: &Path) -> Result<[u8; 32], SolveError> {
    thread_local! {
        // One read buffer per thread: allocating (and zeroing) one per file cost as much as
        // the hashing on trees of small files.
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 256 * 1024]);
    }
    let mut f = std::fs::File::open(path).map_err(|e| SolveError::io(path, e))?;
    let mut h = blake3::Hasher::new();
    BUF.with(|buf| -> Result<(), SolveError> {
        let mut buf = buf.borrow_mut();
        loop {
            let n = f.read(&mut buf).map_err(|e| SolveError::io(path, e))?;
            if n == 0 {
                return Ok(());
            }
            h.update(&buf[..n]);
        }
    })?;
    Ok(*h.finalize().as_bytes())
}

/// What must be unchanged for a cached content hash to be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub ino: u64,
}

/// Persisted map of context path → (stamp, content hash).
#[derive(Default)]
pub struct StatCache {
    map: HashMap<String, (Stamp, [u8; 32])>,
    dirty: bool,
}

const STAT_CACHE_MAGIC: &[u8; 8] = b"fgstat01";

impl StatCache {
    pub fn get(&self, rel: &str, stamp: &Stamp) -> Option<[u8; 32]> {
        match self.map.get(rel) {
            Some((s, h)) if s == stamp => Some(*h),
            _ => None,
        }
    }

    pub fn put(&mut self, rel: &str, stamp: Stamp, hash: [u8; 32]) {
        self.map.insert(rel.to_string(), (stamp, hash));
        self.dirty = true;
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Drops entries for paths that are no longer in the context.
    pub fn retain_paths(&mut self, keep: impl Fn(&str) -> bool) {
        let before = self.map.len();
        self.map.retain(|k, _| keep(k));
        if self.map.len() != before {
            self.dirty = true;
        }
    }

    /// Decodes the persisted form; anything malformed yields an empty cache.
    pub fn decode(bytes: &[u8]) -> StatCache {
        let mut c = StatCache::default();
        if bytes.len() < 8 || &bytes[..8] != STAT_CACHE_MAGIC {
            return c;
        }
        let mut r = &bytes[8..];
        fn take<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            if r.len() < n {
                return None;
            }
            let (a, b) = r.split_at(n);
            *r = b;
            Some(a)
        }
        fn u64_(r: &mut &[u8]) -> Option<u64> {
            Some(u64::from_le_bytes(take(r, 8)?.try_into().ok()?))
        }
        fn i64_(r: &mut &[u8]) -> Option<i64> {
            Some(i64::from_le_bytes(take(r, 8)?.try_into().ok()?))
        }
        let mut parse = || -> Option<()> {
            while !r.is_empty() {
                let len = u64_(&mut r)? as usize;
                let name = std::str::from_utf8(take(&mut r, len)?).ok()?.to_string();
                let stamp = Stamp {
                    size: u64_(&mut r)?,
                    mtime: (i64_(&mut r)?, i64_(&mut r)?),
                    ctime: (i64_(&mut r)?, i64_(&mut r)?),
                    ino: u64_(&mut r)?,
                };
                let hash: [u8; 32] = take(&mut r, 32)?.try_into().ok()?;
                c.map.insert(name, (stamp, hash));
            }
            Some(())
        };
        if parse().is_none() {
            return StatCache::default();
        }
        c
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.map.len() * 96);
        out.extend_from_slice(STAT_CACHE_MAGIC);
        for (name, (s, h)) in &self.map {
            out.extend_from_slice(&(name.len() as u64).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&s.size.to_le_bytes());
            for v in [s.mtime.0, s.mtime.1, s.ctime.0, s.ctime.1] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&s.ino.to_le_bytes());
            out.extend_from_slice(h);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cache_round_trips_and_rejects_garbage() {
        let mut c = StatCache::default();
        let s = Stamp { size: 3, mtime: (1, 2), ctime: (3, 4), ino: 5 };
        c.put("a/b", s, [7; 32]);
        let d = StatCache::decode(&c.encode());
        assert_eq!(d.get("a/b", &s), Some([7; 32]));
        assert_eq!(d.get("a/b", &Stamp { size: 4, ..s }), None);
        let mut bad = c.encode();
        bad.truncate(bad.len() - 3);
        assert!(StatCache::decode(&bad).get("a/b", &s).is_none());
    }

    #[test]
    fn parents_of_paths() {
        assert_eq!(parents("a/b/c"), vec!["a".to_string(), "a/b".to_string()]);
        assert!(parents("a").is_empty());
    }

    #[test]
    fn subtree_is_bounded() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        std::fs::write(t.path().join("a/b/f"), "x").unwrap();
        std::fs::write(t.path().join("a.txt"), "x").unwrap();
        std::fs::write(t.path().join("ab"), "x").unwrap();
        let ctx = Context::walk(t.path(), Ignore::none(), StatCache::default()).unwrap();
        let sub: Vec<_> = ctx.subtree("a").map(|(k, _)| k.clone()).collect();
        assert_eq!(sub, vec!["a", "a/b", "a/b/f"]);
        assert_eq!(ctx.subtree("").count(), 6);
    }
}
