//! The build context: the directory `forge build` is pointed at, filtered by `.dockerignore`.
//!
//! The context is walked once per build into an index of entries (path, type, mode, size,
//! timestamps). COPY and ADD select from that index, and their cache keys are computed from the
//! selected entries' contents. Content hashes come from a persisted stat cache keyed by
//! (path, size, mtime, ctime, inode), so an unchanged file is never read twice across builds.
//!
//! The index is built for size: one arena holds every path, the entries are a sorted vector
//! searched by binary search, and each file's content hash lives in its entry. The persisted
//! stat cache is a file sorted like the index and merged into it as a stream, so neither side is
//! ever held as a map of strings.

use std::io::{BufRead, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

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

/// One entry of the context index. Its path and symlink target are kept by the [`Context`].
#[derive(Debug)]
pub struct CtxEntry {
    /// Offset and length of the path in the context's arena.
    name: (u32, u32),
    pub kind: Kind,
    pub mode: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub ino: u64,
    /// Index of the symlink target in the context's link table, or `NO_LINK`.
    link: u32,
    /// The content hash of a regular file, once known (from the stat cache or by reading it).
    hash: OnceLock<[u8; 32]>,
}

const NO_LINK: u32 = u32::MAX;

impl CtxEntry {
    /// The content hash, if already known.
    pub fn known_hash(&self) -> Option<[u8; 32]> {
        self.hash.get().copied()
    }

    fn stamp(&self) -> Stamp {
        Stamp { size: self.size, mtime: self.mtime, ctime: self.ctime, ino: self.ino }
    }
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
    root: Arc<Path>,
    /// Every entry's relative path (no leading `/`, `""` is the root), back to back.
    names: String,
    /// Sorted by path (byte order).
    entries: Vec<CtxEntry>,
    links: Vec<Box<str>>,
    ignore: Ignore,
    /// Set when a content hash was computed by reading a file: the stat cache needs rewriting.
    hashed: AtomicBool,
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

/// Entries walked from one directory down, with their own path arena and link table.
#[derive(Default)]
struct Part {
    names: String,
    entries: Vec<CtxEntry>,
    links: Vec<Box<str>>,
}

impl Part {
    fn push(&mut self, rel: &str, host: &Path, meta: &std::fs::Metadata) {
        let kind = Kind::of(meta);
        let mut link = NO_LINK;
        if kind == Kind::Symlink {
            if let Ok(t) = std::fs::read_link(host) {
                link = self.links.len() as u32;
                self.links.push(t.to_string_lossy().into());
            }
        }
        let name = (self.names.len() as u32, rel.len() as u32);
        self.names.push_str(rel);
        self.entries.push(CtxEntry {
            name,
            kind,
            mode: meta.permissions().mode() & 0o7777,
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            link,
            hash: OnceLock::new(),
        });
    }

    /// Moves `other`'s entries in, shifting their arena offsets and link indexes.
    fn append(&mut self, other: Part) {
        let base = self.names.len() as u32;
        let link_base = self.links.len() as u32;
        self.names.push_str(&other.names);
        self.links.extend(other.links);
        self.entries.extend(other.entries.into_iter().map(|mut e| {
            e.name.0 += base;
            if e.link != NO_LINK {
                e.link += link_base;
            }
            e
        }));
    }
}

fn too_big(root: &Path) -> SolveError {
    SolveError::Context { path: root.to_path_buf(), message: "the build context's paths add up to more than 4 GiB".into() }
}

impl Context {
    /// Walks `root`, leaving out what `ignore` excludes. Directories are read in parallel, and
    /// entries are stat'ed relative to their open directory (no path lookup per file).
    pub fn walk(root: &Path, ignore: Ignore) -> Result<Context, SolveError> {
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
        let mut top = Part::default();
        top.push("", root, &meta);
        // Every directory's entries move into one growing index as soon as the directory is
        // read: no per-directory lists held until the end, no second copy of the index.
        let all = std::sync::Mutex::new(top);
        walk_dir(root.to_path_buf(), String::new(), &ignore, reenter, &all)?;
        let mut all = all.into_inner().unwrap_or_else(|p| p.into_inner());
        // Directories that are themselves excluded but hold re-included files are kept as parents.
        if reenter {
            let have: std::collections::HashSet<&str> =
                all.entries.iter().map(|e| &all.names[e.name.0 as usize..(e.name.0 + e.name.1) as usize]).collect();
            let mut missing: Vec<String> = have.iter().flat_map(|k| parents(k)).filter(|p| !have.contains(p.as_str())).collect();
            missing.sort();
            missing.dedup();
            for p in missing {
                let host = root.join(&p);
                if let Ok(meta) = std::fs::symlink_metadata(&host) {
                    all.push(&p, &host, &meta);
                }
            }
        }
        if all.names.len() > u32::MAX as usize {
            return Err(too_big(root));
        }
        let Part { names, mut entries, mut links } = all;
        {
            let name = |e: &CtxEntry| &names[e.name.0 as usize..(e.name.0 + e.name.1) as usize];
            entries.sort_unstable_by(|a, b| name(a).cmp(name(b)));
        }
        entries.shrink_to_fit();
        let mut names = names;
        names.shrink_to_fit();
        links.shrink_to_fit();
        Ok(Context { root: root.into(), names, entries, links, ignore, hashed: AtomicBool::new(false) })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The root, shared (copy plans keep it instead of a host path per file).
    pub fn root_shared(&self) -> Arc<Path> {
        self.root.clone()
    }

    fn name(&self, e: &CtxEntry) -> &str {
        &self.names[e.name.0 as usize..(e.name.0 + e.name.1) as usize]
    }

    /// The relative path of an entry of this context.
    pub fn name_of(&self, e: &CtxEntry) -> &str {
        self.name(e)
    }

    /// Every entry with its relative path, in path order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &CtxEntry)> + '_ {
        self.entries.iter().map(move |e| (self.name(e), e))
    }

    pub fn ignore(&self) -> &Ignore {
        &self.ignore
    }

    /// The first index whose path is not less than `rel`.
    fn lower_bound(&self, rel: &str) -> usize {
        self.entries.partition_point(|e| self.name(e) < rel)
    }

    pub fn get(&self, rel: &str) -> Option<&CtxEntry> {
        let i = self.lower_bound(rel);
        self.entries.get(i).filter(|e| self.name(e) == rel)
    }

    /// A symlink entry's target.
    pub fn link(&self, e: &CtxEntry) -> Option<&str> {
        self.links.get(e.link as usize).map(|l| &**l)
    }

    /// The entry at `rel` (if any) and the contiguous run of entries below it.
    pub fn subtree_parts(&self, rel: &str) -> (Option<&CtxEntry>, &[CtxEntry]) {
        if rel.is_empty() {
            return (None, &self.entries);
        }
        // The children sort between "rel/" and "rel0" ('0' follows '/'), after names such as
        // "rel-x" that sort between the entry and them.
        let own = self.get(rel);
        (own, &self.entries[self.lower_bound(&format!("{rel}/"))..self.lower_bound(&format!("{rel}0"))])
    }

    /// The entries at and below `rel`, in path order.
    pub fn subtree<'a>(&'a self, rel: &str) -> impl Iterator<Item = (&'a str, &'a CtxEntry)> + 'a {
        let (own, below) = self.subtree_parts(rel);
        own.into_iter().chain(below).map(move |e| (self.name(e), e))
    }

    /// The content hash of a regular file: remembered in its entry, from the stat cache or from
    /// reading it once.
    pub fn file_hash(&self, rel: &str, e: &CtxEntry) -> Result<[u8; 32], SolveError> {
        if let Some(h) = e.hash.get() {
            return Ok(*h);
        }
        let h = hash_file(&self.root.join(rel))?;
        let _ = e.hash.set(h);
        self.hashed.store(true, Ordering::Relaxed);
        Ok(h)
    }

    /// Forgets a remembered content hash, so the file is read again when next asked for.
    pub fn forget_hash(&mut self, rel: &str) {
        let i = self.lower_bound(rel);
        if let Some(e) = self.entries.get_mut(i) {
            if &self.names[e.name.0 as usize..(e.name.0 + e.name.1) as usize] == rel {
                e.hash.take();
                self.hashed.store(true, Ordering::Relaxed);
            }
        }
    }

    /// True when a file was read for its hash since the stat cache was loaded.
    pub fn stat_cache_dirty(&self) -> bool {
        self.hashed.load(Ordering::Relaxed)
    }

    /// Takes the content hashes of a persisted stat cache (see [`Context::write_stat_cache`])
    /// for every file whose stamp is unchanged. The cache is read as a stream and merged with
    /// the sorted index; anything malformed leaves every hash unknown.
    pub fn load_stat_cache(&mut self, r: impl Read) -> bool {
        let mut r = std::io::BufReader::with_capacity(64 * 1024, r);
        let mut magic = [0u8; 8];
        if r.read_exact(&mut magic).is_err() || &magic != STAT_CACHE_MAGIC {
            return false;
        }
        let mut matched = 0usize;
        let ok = (|| -> std::io::Result<()> {
            let mut i = 0;
            let mut name = Vec::new();
            let mut rec = [0u8; RECORD_LEN];
            loop {
                if r.fill_buf()?.is_empty() {
                    return Ok(());
                }
                let mut len = [0u8; 4];
                r.read_exact(&mut len)?;
                // No path is longer than PATH_MAX: a larger length is damage, not a reason to
                // allocate gigabytes.
                let len = u32::from_le_bytes(len) as usize;
                if len > MAX_PATH_LEN {
                    return Err(std::io::ErrorKind::InvalidData.into());
                }
                name.resize(len, 0);
                r.read_exact(&mut name)?;
                r.read_exact(&mut rec)?;
                while i < self.entries.len() && self.name(&self.entries[i]).as_bytes() < name.as_slice() {
                    i += 1;
                }
                let Some(e) = self.entries.get(i) else { return Ok(()) };
                if self.name(e).as_bytes() != name.as_slice() || e.kind != Kind::File {
                    continue;
                }
                let (stamp, hash) = decode_record(&rec);
                if stamp == e.stamp() {
                    let _ = e.hash.set(hash);
                    matched += 1;
                }
            }
        })();
        if ok.is_err() {
            for e in &mut self.entries {
                e.hash.take();
            }
            return false;
        }
        matched > 0
    }

    /// Writes the stat cache: every file whose hash is known, in path order.
    pub fn write_stat_cache(&self, w: &mut dyn Write) -> std::io::Result<()> {
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, w);
        w.write_all(STAT_CACHE_MAGIC)?;
        for e in &self.entries {
            let Some(h) = e.hash.get() else { continue };
            let name = self.name(e);
            if name.len() > MAX_PATH_LEN {
                continue;
            }
            w.write_all(&(name.len() as u32).to_le_bytes())?;
            w.write_all(name.as_bytes())?;
            w.write_all(&encode_record(&e.stamp(), h))?;
        }
        w.flush()
    }

    /// The stat cache as bytes (see [`Context::write_stat_cache`]).
    pub fn stat_cache_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_stat_cache(&mut out).expect("writing to memory");
        out
    }
}

/// One directory of the walk: its kept entries go into `all`, then its subdirectories are
/// walked in parallel.
fn walk_dir(dir: PathBuf, rel: String, ignore: &Ignore, reenter: bool, all: &std::sync::Mutex<Part>) -> Result<(), SolveError> {
    use rayon::prelude::*;
    let mut out = Part::default();
    let mut subdirs = Vec::new();
    let rd = std::fs::read_dir(&dir).map_err(|e| SolveError::io(&dir, e))?;
    let mut child_rel = String::new();
    for item in rd {
        let item = item.map_err(|e| SolveError::io(&dir, e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else {
            return Err(SolveError::Context {
                path: item.path(),
                message: "file names in the context must be valid UTF-8".into(),
            });
        };
        child_rel.clear();
        if !rel.is_empty() {
            child_rel.push_str(&rel);
            child_rel.push('/');
        }
        child_rel.push_str(name);
        // fstatat on the directory's descriptor, without following symlinks.
        let meta = item.metadata().map_err(|e| SolveError::io(&item.path(), e))?;
        let excluded = ignore.excluded(&child_rel);
        if meta.is_dir() && (!excluded || reenter) {
            subdirs.push((item.path(), child_rel.clone()));
        }
        if !excluded {
            let host = if meta.file_type().is_symlink() { item.path() } else { PathBuf::new() };
            out.push(&child_rel, &host, &meta);
        }
    }
    all.lock().unwrap_or_else(|p| p.into_inner()).append(out);
    subdirs.into_par_iter().try_for_each(|(p, r)| walk_dir(p, r, ignore, reenter, all))
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
struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
}

/// The persisted stat cache: this magic, then per file in path order a little-endian u32 path
/// length, the path, and a fixed record (size, mtime s/ns, ctime s/ns, inode, blake3).
const STAT_CACHE_MAGIC: &[u8; 8] = b"fgstat02";
const RECORD_LEN: usize = 6 * 8 + 32;
/// The longest path a stat cache record may carry (Linux's PATH_MAX).
const MAX_PATH_LEN: usize = 4096;

fn encode_record(s: &Stamp, h: &[u8; 32]) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    let fields = [s.size as i64, s.mtime.0, s.mtime.1, s.ctime.0, s.ctime.1, s.ino as i64];
    for (i, v) in fields.iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    out[48..].copy_from_slice(h);
    out
}

fn decode_record(r: &[u8; RECORD_LEN]) -> (Stamp, [u8; 32]) {
    let f = |i: usize| i64::from_le_bytes(r[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let stamp = Stamp { size: f(0) as u64, mtime: (f(1), f(2)), ctime: (f(3), f(4)), ino: f(5) as u64 };
    (stamp, r[48..].try_into().expect("32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let p = t.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
        t
    }

    fn hash_of(ctx: &Context, rel: &str) -> [u8; 32] {
        ctx.file_hash(rel, ctx.get(rel).unwrap()).unwrap()
    }

    #[test]
    fn stat_cache_round_trips_and_sees_changes() {
        let t = tree(&[("a/b", "one"), ("a/c", "two"), ("z", "three")]);
        let ctx = Context::walk(t.path(), Ignore::none()).unwrap();
        let (b, z) = (hash_of(&ctx, "a/b"), hash_of(&ctx, "z"));
        assert!(ctx.stat_cache_dirty());
        let bytes = ctx.stat_cache_bytes();

        // An unchanged file's hash comes from the cache: prove it by planting a wrong one.
        let mut forged = bytes.clone();
        let at = forged.len() - 32;
        forged[at..].copy_from_slice(&[9; 32]);
        let mut ctx = Context::walk(t.path(), Ignore::none()).unwrap();
        assert!(ctx.load_stat_cache(&forged[..]));
        assert_eq!(hash_of(&ctx, "z"), [9; 32], "the last record is z's");
        assert_eq!(hash_of(&ctx, "a/b"), b);
        assert!(!ctx.stat_cache_dirty(), "nothing was read");
        assert!(ctx.get("a/c").unwrap().hash.get().is_none(), "a/c was never hashed, so not cached");

        // A changed stamp is not trusted.
        std::fs::write(t.path().join("z"), "changed!").unwrap();
        let mut ctx = Context::walk(t.path(), Ignore::none()).unwrap();
        ctx.load_stat_cache(&bytes[..]);
        assert_ne!(hash_of(&ctx, "z"), z);
        assert!(ctx.stat_cache_dirty());
    }

    #[test]
    fn malformed_stat_cache_is_ignored_whole() {
        let t = tree(&[("a", "1"), ("b", "2")]);
        let ctx = Context::walk(t.path(), Ignore::none()).unwrap();
        hash_of(&ctx, "a");
        hash_of(&ctx, "b");
        let mut bad = ctx.stat_cache_bytes();
        bad.truncate(bad.len() - 3);
        let mut ctx = Context::walk(t.path(), Ignore::none()).unwrap();
        assert!(!ctx.load_stat_cache(&bad[..]));
        assert!(ctx.get("a").unwrap().hash.get().is_none(), "a's complete record is dropped too");
        assert!(!ctx.load_stat_cache(&b"fgstat01junk"[..]));
        // A damaged length is refused without allocating what it claims.
        let mut huge = b"fgstat02".to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(!ctx.load_stat_cache(&huge[..]));
    }

    #[test]
    fn parents_of_paths() {
        assert_eq!(parents("a/b/c"), vec!["a".to_string(), "a/b".to_string()]);
        assert!(parents("a").is_empty());
    }

    #[test]
    fn subtree_is_bounded() {
        let t = tree(&[("a/b/f", "x"), ("a.txt", "x"), ("ab", "x"), ("a-1", "x")]);
        let ctx = Context::walk(t.path(), Ignore::none()).unwrap();
        let sub: Vec<_> = ctx.subtree("a").map(|(k, _)| k.to_string()).collect();
        assert_eq!(sub, vec!["a", "a/b", "a/b/f"]);
        assert_eq!(ctx.subtree("").count(), 7);
        assert_eq!(ctx.subtree("a/b/f").count(), 1);
        assert_eq!(ctx.subtree("nope").count(), 0);
    }

    #[test]
    fn index_is_sorted_with_links() {
        let t = tree(&[("b/x", "1"), ("a", "2")]);
        std::os::unix::fs::symlink("b/x", t.path().join("c")).unwrap();
        let ctx = Context::walk(t.path(), Ignore::none()).unwrap();
        let names: Vec<_> = ctx.entries().map(|(k, _)| k.to_string()).collect();
        assert_eq!(names, vec!["", "a", "b", "b/x", "c"]);
        let c = ctx.get("c").unwrap();
        assert_eq!((c.kind, ctx.link(c)), (Kind::Symlink, Some("b/x")));
        assert_eq!(ctx.link(ctx.get("a").unwrap()), None);
        assert!(ctx.get("b/").is_none() && ctx.get("d").is_none());
    }
}
