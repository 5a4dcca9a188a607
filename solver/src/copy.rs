//! COPY and ADD: choosing the source entries, keying them by content, and materializing them
//! into a layer directory.
//!
//! A copy is planned as a flat list of [`CopyItem`]s (one per file, directory or symlink that
//! lands in the image), then keyed by what the items contain, then written into an empty
//! staging directory that becomes both the layer tar and the overlay snapshot.

use std::borrow::Cow;
use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use crate::config::clean_abs;
use crate::context::{Context, Kind};
use crate::error::{Location, SolveError};
use crate::glob;
use crate::layered::{Entry, LayeredView};
use forge_parser::dockerignore::PatternMatcher;

/// One filesystem object a COPY writes into the image. A plan holds one per file, so it is
/// kept small: boxed strings, and no host path of its own for context files.
#[derive(Clone, Debug)]
pub struct CopyItem {
    /// Absolute, cleaned path inside the image.
    pub dest: Box<str>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: u64,
    /// Where the bytes are read from (files).
    pub origin: Origin,
    pub link: Option<Box<str>>,
    /// blake3 of the content, filled in by [`hash_items`].
    pub hash: Option<[u8; 32]>,
    /// The source path as the user wrote or matched it, for messages and `--explain`; for
    /// context sources, the path relative to the context root.
    pub label: Box<str>,
    /// True for a source the user named (or a wildcard matched), false for entries found
    /// inside a source directory. ADD only unpacks top-level archives.
    pub top: bool,
}

/// Where a [`CopyItem`]'s bytes come from.
#[derive(Clone, Debug)]
pub enum Origin {
    /// The item's label under this directory: a build context (shared by the whole plan).
    Under(Arc<Path>),
    /// This host path: a snapshot file, a temporary file, or nothing (made, not copied).
    Path(Box<Path>),
}

impl CopyItem {
    /// The host path the bytes are read from.
    pub fn host(&self) -> Cow<'_, Path> {
        match &self.origin {
            Origin::Under(root) => Cow::Owned(root.join(&*self.label)),
            Origin::Path(p) => Cow::Borrowed(p),
        }
    }

    /// The path relative to the context root, for items from a context.
    pub fn context_rel(&self) -> Option<&str> {
        matches!(self.origin, Origin::Under(_)).then_some(&*self.label)
    }
}

/// Permission bits of build-context files that depend on the checkout's umask rather than on
/// the project (group and other write). COPY from the context clears them, as a checkout under
/// umask 022 would have; `--chmod` replaces the source mode entirely.
pub const CHECKOUT_NOISE_BITS: u32 = 0o022;

/// The flags that shape a copy.
#[derive(Clone, Debug, Default)]
pub struct CopyFlags {
    pub chown: Option<(u32, u32)>,
    pub chmod: Option<u32>,
    pub parents: bool,
    pub exclude: Vec<String>,
}

/// Where COPY reads from.
pub enum SourceSide<'a> {
    Context(&'a Context),
    Image(&'a LayeredView),
}

fn not_found(loc: &Location, src: &str, excluded: bool) -> SolveError {
    let mut message = format!("source {src:?} not found in the build context");
    let help = if excluded {
        message = format!("source {src:?} is excluded by .dockerignore");
        Some("remove or narrow the .dockerignore pattern that matches it".to_string())
    } else {
        Some("paths are relative to the build context; check the spelling and the context directory".to_string())
    };
    SolveError::Step { location: loc.clone(), message, help }
}

/// Cleans a COPY source to a context-relative path (`./a/../b/` → `b`, `/x` → `x`).
pub fn clean_rel(src: &str) -> String {
    let c = clean_abs(&format!("/{src}"));
    c.trim_start_matches('/').to_string()
}

/// Resolves symlinks in the directory components of an absolute image path, so that a COPY to
/// `/bin/x` lands in `/usr/bin/x` when `/bin` is a symlink to `usr/bin`.
pub fn resolve_dest_dirs(view: &LayeredView, dest: &str) -> String {
    let comps: Vec<&str> = dest.split('/').filter(|c| !c.is_empty()).collect();
    if comps.is_empty() {
        return "/".into();
    }
    let mut cur = String::from("/");
    for (i, c) in comps.iter().enumerate() {
        let next = clean_abs(&format!("{cur}/{c}"));
        if i + 1 == comps.len() {
            return next;
        }
        match view.lookup(&next, false) {
            Some(e) if e.meta.file_type().is_symlink() => {
                // Resolve through the view, which keeps the result inside the image root.
                cur = match std::fs::read_link(&e.host) {
                    Ok(t) => {
                        let t = t.to_string_lossy().to_string();
                        let joined = if t.starts_with('/') { t } else { format!("{cur}/{t}") };
                        resolve_dest_dirs(view, &format!("{}/", clean_abs(&joined)))
                            .trim_end_matches('/')
                            .to_string()
                    }
                    Err(_) => next,
                };
                if cur.is_empty() {
                    cur = "/".into();
                }
            }
            _ => cur = next,
        }
    }
    cur
}

struct Selected {
    /// Path relative to the source root (context or image root).
    rel: String,
    kind: Kind,
}

fn select_context(ctx: &Context, src: &str, loc: &Location) -> Result<Vec<Selected>, SolveError> {
    let rel = clean_rel(src);
    if glob::has_meta(&rel) {
        let out: Vec<Selected> = ctx
            .entries()
            .filter(|(k, _)| !k.is_empty() && glob::matches(&rel, k))
            .map(|(k, e)| Selected { rel: k.to_string(), kind: e.kind })
            .collect();
        if out.is_empty() {
            return Err(not_found(loc, src, false));
        }
        return Ok(out);
    }
    match ctx.get(&rel) {
        Some(e) => Ok(vec![Selected { rel, kind: e.kind }]),
        None => {
            let on_disk = std::fs::symlink_metadata(ctx.root().join(&rel)).is_ok();
            Err(not_found(loc, src, on_disk && ctx.ignore().excluded(&rel)))
        }
    }
}

/// The metadata a copy needs of a source entry.
#[derive(Clone, Copy, Debug)]
struct SrcMeta {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    /// The content hash, when the source already knows it (the context index).
    hash: Option<[u8; 32]>,
}

impl SrcMeta {
    fn of(m: &std::fs::Metadata) -> SrcMeta {
        let (kind, mode, uid, gid, mtime, size) = meta_of(m);
        SrcMeta { kind, mode, uid, gid, mtime, size, hash: None }
    }
}

fn meta_of(m: &std::fs::Metadata) -> (Kind, u32, u32, u32, (i64, i64), u64) {
    (Kind::of(m), m.permissions().mode() & 0o7777, m.uid(), m.gid(), (m.mtime(), m.mtime_nsec()), m.len())
}

/// Plans a COPY/ADD of `sources` to `dest` (already expanded; `dest` absolute or relative to
/// `workdir`). `dest_view` is the image being copied into. The items of a single context tree
/// are not listed (see [`CopyPlan`]).
#[allow(clippy::too_many_arguments)]
pub fn plan<'a>(
    side: &SourceSide<'a>,
    sources: &[String],
    dest: &str,
    workdir: &str,
    flags: &CopyFlags,
    dest_view: &LayeredView,
    loc: &Location,
) -> Result<CopyPlan<'a>, SolveError> {
    let dest_abs = if dest.starts_with('/') { dest.to_string() } else { format!("{}/{}", workdir, dest) };
    let dest_is_dir_hint = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
    let mut dest_clean = resolve_dest_dirs(dest_view, &clean_abs(&dest_abs));
    // A destination that is itself a symlink is followed too, as BuildKit resolves the whole
    // path in the image root: `COPY f /link/` writes into the link's target directory, and
    // `COPY f /bin/ls` (a link to busybox) replaces the link's target, not the link. (A file
    // copied into a directory, `COPY ls /bin/`, replaces a link of that name: see `target`.)
    let is_link = dest_view.lookup(&dest_clean, false).is_some_and(|e| e.meta.file_type().is_symlink());
    if is_link {
        let probe = resolve_dest_dirs(dest_view, &format!("{}/-", dest_clean.trim_end_matches('/')));
        if let Some(real) = probe.strip_suffix("/-") {
            dest_clean = if real.is_empty() { "/".to_string() } else { real.to_string() };
        }
    }

    let exclude = if flags.exclude.is_empty() {
        None
    } else {
        Some(forge_parser::dockerignore::PatternMatcher::new(&flags.exclude).map_err(|e| {
            SolveError::step(loc, format!("invalid --exclude pattern: {e}"))
        })?)
    };

    // Gather the top-level matches of every source.
    let mut matches: Vec<(String, Selected)> = Vec::new();
    for src in sources {
        let sel = match side {
            SourceSide::Context(ctx) => select_context(ctx, src, loc)?,
            SourceSide::Image(view) => select_image(view, src, loc)?,
        };
        for s in sel {
            if !is_excluded(exclude.as_ref(), &s.rel) {
                matches.push((src.clone(), s));
            }
        }
    }
    let multiple = matches.len() > 1 || sources.iter().any(|s| glob::has_meta(s)) && matches.len() > 1;
    let dest_exists_as_dir = dest_view.lookup(&dest_clean, true).map(|e| e.is_dir()).unwrap_or(false);
    if multiple && !dest_is_dir_hint && !dest_exists_as_dir {
        return Err(SolveError::Step {
            location: loc.clone(),
            message: "when copying more than one source, the destination must be a directory and end with a /".into(),
            help: Some(format!("write the destination as {dest}/")),
        });
    }
    let dest_is_dir = dest_is_dir_hint || dest_exists_as_dir || multiple;

    let mut segments = Vec::new();
    for (_src, sel) in matches {
        let base_name = sel.rel.rsplit('/').next().unwrap_or("").to_string();
        let target = if flags.parents {
            clean_abs(&format!("{dest_clean}/{}", sel.rel))
        } else if sel.kind == Kind::Dir {
            dest_clean.clone()
        } else if dest_is_dir {
            clean_abs(&format!("{dest_clean}/{base_name}"))
        } else {
            dest_clean.clone()
        };
        // A top-level symlink source is followed.
        let root_rel = if sel.kind == Kind::Symlink && !flags.parents { follow_side(side, &sel.rel, loc)?.1 } else { sel.rel };
        // A directory source's contents are copied, not the directory itself: like BuildKit's
        // MkdirAll, a missing destination directory is made 0755 and owned by root or the
        // --chown owner (never --chmod), and an existing one keeps its own metadata.
        let top_dir = match dest_view.lookup(&target, true) {
            Some(e) if e.is_dir() => (e.meta.permissions().mode() & 0o7777, e.meta.uid(), e.meta.gid()),
            _ => {
                let (uid, gid) = flags.chown.unwrap_or((0, 0));
                (0o755, uid, gid)
            }
        };
        segments.push(Segment { root_rel, target, top_dir });
    }
    let finish = Finish {
        context: matches!(side, SourceSide::Context(_)),
        chown: flags.chown,
        chmod: flags.chmod,
        parents: flags.parents,
    };
    // One context tree is visited from the index whenever needed, never listed.
    if let (SourceSide::Context(ctx), [_]) = (side, segments.as_slice()) {
        let seg = segments.pop().expect("one segment");
        return Ok(CopyPlan { kind: PlanKind::Tree { ctx, seg, finish, exclude } });
    }
    let mut items = Vec::new();
    for seg in &segments {
        visit_segment(side, seg, exclude.as_ref(), &finish, &mut |it| {
            items.push(it);
            Ok(())
        })?;
    }
    // Usually already in order (one directory source, walked in path order); a stable sort
    // otherwise, so the last source wins among equal destinations.
    if !items.is_sorted_by(|a, b| a.dest <= b.dest) {
        items.sort_by(|a, b| a.dest.cmp(&b.dest));
    }
    items.dedup_by(|b, a| a.dest == b.dest && { *a = b.clone(); true });
    Ok(CopyPlan::from_items(items))
}

/// True when `COPY --exclude` patterns leave out `rel` (a source path, or one below a source).
fn is_excluded(exclude: Option<&PatternMatcher>, rel: &str) -> bool {
    exclude.is_some_and(|m| m.matches_or_parent_matches(rel).unwrap_or(false))
}

/// One top-level source of a copy: the tree at `root_rel` lands at `target`.
struct Segment {
    root_rel: String,
    target: String,
    /// Mode and owner of the destination directory a directory source's contents go into.
    top_dir: (u32, u32, u32),
}

/// The metadata rules applied to every item of a copy.
struct Finish {
    /// Files from the build context belong to root unless --chown says otherwise, and their
    /// group/other write bits are checkout noise (umask 002 vs 022): cleared in the key and in
    /// the layer alike, so a cache made on one machine hits on another.
    context: bool,
    chown: Option<(u32, u32)>,
    chmod: Option<u32>,
    parents: bool,
}

impl Finish {
    fn apply(&self, it: &mut CopyItem, seg: &Segment) {
        if self.context {
            it.uid = 0;
            it.gid = 0;
            if it.kind != Kind::Symlink {
                it.mode &= !CHECKOUT_NOISE_BITS;
            }
        }
        if let Some((u, g)) = self.chown {
            it.uid = u;
            it.gid = g;
        }
        if let Some(m) = self.chmod {
            if it.kind != Kind::Symlink {
                it.mode = m;
            }
        }
        if !self.parents && it.top && it.kind == Kind::Dir {
            (it.mode, it.uid, it.gid) = seg.top_dir;
        }
    }
}

/// Produces a segment's items in path order, finished.
fn visit_segment(
    side: &SourceSide<'_>,
    seg: &Segment,
    exclude: Option<&PatternMatcher>,
    finish: &Finish,
    f: &mut dyn FnMut(CopyItem) -> Result<(), SolveError>,
) -> Result<(), SolveError> {
    let Segment { root_rel, target, .. } = seg;
    let mut failed = Ok(());
    walk_side(side, root_rel, &mut |rel_under: &str, origin: Origin, m: SrcMeta, link: Option<Box<str>>| {
        if failed.is_err() {
            return;
        }
        let full_rel = if rel_under.is_empty() {
            root_rel.to_string()
        } else if root_rel.is_empty() {
            rel_under.to_string()
        } else {
            format!("{root_rel}/{rel_under}")
        };
        if !rel_under.is_empty() && is_excluded(exclude, &full_rel) {
            return;
        }
        let SrcMeta { kind, mode, uid, gid, mtime, size, hash } = m;
        let d = if rel_under.is_empty() { target.to_string() } else { clean_abs(&format!("{target}/{rel_under}")) };
        let mut it = CopyItem {
            dest: d.into(),
            kind,
            mode,
            uid,
            gid,
            mtime,
            size,
            origin,
            link,
            hash,
            label: full_rel.into(),
            top: rel_under.is_empty(),
        };
        finish.apply(&mut it, seg);
        failed = f(it);
    })?;
    failed
}

/// A planned copy, in destination order.
///
/// A copy of one context tree (`COPY . .`, `COPY src/ /app/`) is not listed: its items are
/// made from the context index each time they are visited, with the content hashes the index
/// keeps, so the memory a copy needs does not grow with its number of files. Any other copy
/// is a sorted list.
pub struct CopyPlan<'a> {
    kind: PlanKind<'a>,
}

enum PlanKind<'a> {
    Listed(Vec<CopyItem>),
    Tree { ctx: &'a Context, seg: Segment, finish: Finish, exclude: Option<PatternMatcher> },
}

impl<'a> CopyPlan<'a> {
    pub fn from_items(items: Vec<CopyItem>) -> CopyPlan<'a> {
        CopyPlan { kind: PlanKind::Listed(items) }
    }

    /// Visits every item in destination order.
    pub fn for_each(&self, f: &mut dyn FnMut(&CopyItem) -> Result<(), SolveError>) -> Result<(), SolveError> {
        match &self.kind {
            PlanKind::Listed(items) => items.iter().try_for_each(f),
            PlanKind::Tree { ctx, seg, finish, exclude } => {
                visit_segment(&SourceSide::Context(ctx), seg, exclude.as_ref(), finish, &mut |it| f(&it))
            }
        }
    }

    /// Visits the items in batches of at most `n` (slices of the list, or of a reused buffer).
    fn for_each_batch(&self, n: usize, f: &mut dyn FnMut(&[CopyItem]) -> Result<(), SolveError>) -> Result<(), SolveError> {
        match &self.kind {
            PlanKind::Listed(items) => items.chunks(n).try_for_each(f),
            PlanKind::Tree { .. } => {
                let mut batch = Vec::with_capacity(n);
                self.for_each(&mut |it| {
                    batch.push(it.clone());
                    if batch.len() == n {
                        f(&batch)?;
                        batch.clear();
                    }
                    Ok(())
                })?;
                if batch.is_empty() {
                    Ok(())
                } else {
                    f(&batch)
                }
            }
        }
    }

    /// Fills in the files' content hashes, in parallel. Context files use the stat cache.
    pub fn hash(&mut self, ctx: Option<&Context>) -> Result<(), SolveError> {
        match &mut self.kind {
            PlanKind::Listed(items) => hash_items(items, ctx),
            // The index keeps the hashes; visits read them from there.
            PlanKind::Tree { ctx, seg, exclude, .. } => {
                let (own, below) = ctx.subtree_parts(&seg.root_rel);
                if let Some(e) = own.filter(|e| e.kind == Kind::File) {
                    ctx.file_hash(&seg.root_rel, e)?;
                }
                below
                    .par_iter()
                    .filter(|e| e.kind == Kind::File && !is_excluded(exclude.as_ref(), ctx.name_of(e)))
                    .try_for_each(|e| ctx.file_hash(ctx.name_of(e), e).map(|_| ()))
            }
        }
    }

    /// The digest of everything the copy writes (see [`items_digest`]), of the items `keep`
    /// keeps.
    pub fn digest(&self, keep: &dyn Fn(&CopyItem) -> bool) -> Result<[u8; 32], SolveError> {
        let mut d = ItemsDigest::new();
        self.for_each(&mut |it| {
            if keep(it) {
                d.add(it);
            }
            Ok(())
        })?;
        Ok(d.finish())
    }

    /// Every item, listed.
    pub fn into_items(self) -> Result<Vec<CopyItem>, SolveError> {
        match self.kind {
            PlanKind::Listed(items) => Ok(items),
            PlanKind::Tree { .. } => {
                let mut out = Vec::new();
                self.for_each(&mut |it| {
                    out.push(it.clone());
                    Ok(())
                })?;
                Ok(out)
            }
        }
    }
}

fn select_image(view: &LayeredView, src: &str, loc: &Location) -> Result<Vec<Selected>, SolveError> {
    let abs = clean_abs(&format!("/{src}"));
    if glob::has_meta(&abs) {
        // Match the last component within its (literal) parent directory.
        let (parent, pat) = abs.rsplit_once('/').unwrap_or(("", &abs));
        let parent = if parent.is_empty() { "/" } else { parent };
        let mut out = Vec::new();
        if let Some(dir) = view.lookup(parent, true) {
            if dir.is_dir() {
                for (name, e) in view.read_dir(&dir).map_err(|e| SolveError::io(&dir.host, e))? {
                    let name = name.to_string_lossy().to_string();
                    if glob::matches(pat, &name) {
                        let (kind, ..) = meta_of(&e.meta);
                        out.push(Selected { rel: clean_rel(&format!("{parent}/{name}")), kind });
                    }
                }
            }
        }
        if out.is_empty() {
            return Err(SolveError::step(loc, format!("no source files were found matching {src:?}")));
        }
        return Ok(out);
    }
    match view.lookup(&abs, false) {
        Some(e) => {
            let (kind, ..) = meta_of(&e.meta);
            Ok(vec![Selected { rel: clean_rel(&abs), kind }])
        }
        None => Err(SolveError::step(loc, format!("source {src:?} not found in the source image or stage"))),
    }
}

/// Follows a top-level symlink source; the result stays inside the source root.
fn follow_side(side: &SourceSide<'_>, rel: &str, loc: &Location) -> Result<(Kind, String), SolveError> {
    match side {
        SourceSide::Image(view) => {
            let e = view.lookup(&format!("/{rel}"), true).ok_or_else(|| SolveError::step(loc, format!("source {rel:?} is a dangling symlink")))?;
            let (kind, ..) = meta_of(&e.meta);
            // Find the resolved path by walking symlink targets inside the view.
            let mut cur = format!("/{rel}");
            for _ in 0..40 {
                match view.lookup(&cur, false) {
                    Some(x) if x.meta.file_type().is_symlink() => {
                        let t = std::fs::read_link(&x.host).map_err(|err| SolveError::io(&x.host, err))?;
                        let t = t.to_string_lossy().to_string();
                        let parent = cur.rsplit_once('/').map(|p| p.0).unwrap_or("");
                        cur = if t.starts_with('/') { clean_abs(&t) } else { clean_abs(&format!("{parent}/{t}")) };
                    }
                    _ => break,
                }
            }
            Ok((kind, clean_rel(&cur)))
        }
        SourceSide::Context(ctx) => {
            let mut cur = rel.to_string();
            for _ in 0..40 {
                match ctx.get(&cur) {
                    Some(e) if e.kind == Kind::Symlink => {
                        let t = ctx.link(e).unwrap_or_default().to_string();
                        let parent = cur.rsplit_once('/').map(|p| p.0).unwrap_or("");
                        cur = if t.starts_with('/') { clean_rel(&t) } else { clean_rel(&format!("{parent}/{t}")) };
                    }
                    Some(e) => return Ok((e.kind, cur)),
                    None => {
                        return Err(SolveError::step(
                            loc,
                            format!("source {rel:?} is a symlink to {cur:?}, which is not in the build context"),
                        ))
                    }
                }
            }
            Err(SolveError::step(loc, format!("source {rel:?}: too many levels of symbolic links")))
        }
    }
}

type Visit<'v> = dyn FnMut(&str, Origin, SrcMeta, Option<Box<str>>) + 'v;

/// Visits `root_rel` and everything below it on one source side, parents before children.
fn walk_side(side: &SourceSide<'_>, root_rel: &str, f: &mut Visit<'_>) -> Result<(), SolveError> {
    match side {
        SourceSide::Context(ctx) => {
            let prefix_len = if root_rel.is_empty() { 0 } else { root_rel.len() + 1 };
            let root = ctx.root_shared();
            // The walk already stat()ed every entry: no second stat per file.
            for (rel, e) in ctx.subtree(root_rel) {
                let under = if rel.len() >= prefix_len { &rel[prefix_len..] } else { "" };
                let m = SrcMeta { kind: e.kind, mode: e.mode, uid: 0, gid: 0, mtime: e.mtime, size: e.size, hash: e.known_hash() };
                f(under, Origin::Under(root.clone()), m, ctx.link(e).map(Box::from));
            }
            Ok(())
        }
        SourceSide::Image(view) => {
            let Some(top) = view.lookup(&format!("/{root_rel}"), false) else { return Ok(()) };
            fn rec(view: &LayeredView, e: &Entry, under: &str, f: &mut Visit<'_>) -> Result<(), SolveError> {
                let link = if e.meta.file_type().is_symlink() {
                    std::fs::read_link(&e.host).ok().map(|p| p.to_string_lossy().into())
                } else {
                    None
                };
                f(under, Origin::Path(e.host.clone().into()), SrcMeta::of(&e.meta), link);
                if e.is_dir() {
                    for (name, child) in view.read_dir(e).map_err(|err| SolveError::io(&e.host, err))? {
                        let n = name.to_string_lossy();
                        let u = if under.is_empty() { n.to_string() } else { format!("{under}/{n}") };
                        rec(view, &child, &u, f)?;
                    }
                }
                Ok(())
            }
            rec(view, &top, "", f)
        }
    }
}

/// Fills in content hashes, in parallel. Context files use the stat cache.
pub fn hash_items(items: &mut [CopyItem], ctx: Option<&Context>) -> Result<(), SolveError> {
    items.par_iter_mut().try_for_each(|it| -> Result<(), SolveError> {
        if it.kind != Kind::File {
            return Ok(());
        }
        let h = match (ctx, it.context_rel()) {
            (Some(c), Some(rel)) => match c.get(rel) {
                Some(e) => c.file_hash(rel, e)?,
                None => crate::context::hash_file(&it.host())?,
            },
            _ => crate::context::hash_file(&it.host())?,
        };
        it.hash = Some(h);
        Ok(())
    })
}

/// The digest of everything a copy writes: paths, types, modes, owners, sizes, contents and
/// link targets. Never mtimes.
pub fn items_digest<'i>(items: impl IntoIterator<Item = &'i CopyItem>) -> [u8; 32] {
    let mut d = ItemsDigest::new();
    for it in items {
        d.add(it);
    }
    d.finish()
}

/// [`items_digest`], fed one item at a time.
struct ItemsDigest(blake3::Hasher);

impl ItemsDigest {
    fn new() -> ItemsDigest {
        let mut h = blake3::Hasher::new();
        h.update(b"forge-copy-items-v1");
        ItemsDigest(h)
    }

    fn add(&mut self, it: &CopyItem) {
        let h = &mut self.0;
        h.update(&(it.dest.len() as u64).to_le_bytes());
        h.update(it.dest.as_bytes());
        h.update(&[it.kind as u8]);
        h.update(&it.mode.to_le_bytes());
        h.update(&it.uid.to_le_bytes());
        h.update(&it.gid.to_le_bytes());
        if it.kind == Kind::File {
            h.update(&it.size.to_le_bytes());
            h.update(&it.hash.unwrap_or([0; 32]));
        }
        if let Some(l) = &it.link {
            h.update(&(l.len() as u64).to_le_bytes());
            h.update(l.as_bytes());
        }
    }

    fn finish(self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn lchown(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(p)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets a path's mtime (and atime) without following symlinks.
pub fn set_mtime(p: &Path, t: (i64, i64)) -> io::Result<()> {
    let c = cstr(p)?;
    let ts = [
        libc::timespec { tv_sec: t.0 as libc::time_t, tv_nsec: t.1 as _ },
        libc::timespec { tv_sec: t.0 as libc::time_t, tv_nsec: t.1 as _ },
    ];
    // SAFETY: valid path and a two-element timespec array.
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates the parents of `dest` in `staging`, giving each the metadata it has in the image
/// (or 0755 and `owner` when the image lacks it).
pub(crate) fn ensure_parents(staging: &Path, dest: &str, view: &LayeredView, owner: (u32, u32), made: &mut Vec<(PathBuf, (i64, i64))>) -> io::Result<()> {
    ensure_parents_known(staging, dest, view, owner, made, &mut HashSet::new())
}

/// [`ensure_parents`], skipping the directories in `known` (already there) and adding the ones
/// it finds or makes: a COPY of 20,000 files checks each parent once, not once per file.
fn ensure_parents_known(
    staging: &Path,
    dest: &str,
    view: &LayeredView,
    owner: (u32, u32),
    made: &mut Vec<(PathBuf, (i64, i64))>,
    known: &mut HashSet<String>,
) -> io::Result<()> {
    let mut cur = String::new();
    let comps: Vec<&str> = dest.split('/').filter(|c| !c.is_empty()).collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        cur.push('/');
        cur.push_str(c);
        if known.contains(&cur) {
            continue;
        }
        known.insert(cur.clone());
        let host = staging.join(&cur[1..]);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => continue,
            // A symlink or file an earlier source put where this path needs a directory: the
            // staging tree is on the host, so never write through it.
            Ok(_) => std::fs::remove_file(&host)?,
            Err(_) => {}
        }
        std::fs::create_dir(&host)?;
        match view.lookup(&cur, true) {
            Some(e) if e.is_dir() => {
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(e.meta.permissions().mode() & 0o7777))?;
                lchown(&host, e.meta.uid(), e.meta.gid())?;
                made.push((host, (e.meta.mtime(), e.meta.mtime_nsec())));
            }
            _ => {
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755))?;
                lchown(&host, owner.0, owner.1)?;
            }
        }
    }
    Ok(())
}

/// The result of an earlier run of the same COPY: its snapshot and what each source hashed to.
/// Files that did not change are hard-linked from it instead of copied (snapshots are
/// immutable, so sharing inodes between them is safe).
pub struct Reuse {
    pub snapshot: PathBuf,
    pub files: FileTags,
}

/// Source label → content tag (as [`content_tag`] makes it), both kept as 128-bit hashes so a
/// large copy's memory stays small. Deserializes from the `files` map of a step's memory.
#[derive(Default)]
pub struct FileTags(std::collections::HashMap<u128, u128>);

fn h128(s: &str) -> u128 {
    u128::from_le_bytes(blake3::hash(s.as_bytes()).as_bytes()[..16].try_into().expect("16 bytes"))
}

impl FileTags {
    pub fn insert(&mut self, label: &str, tag: &str) {
        self.0.insert(h128(label), h128(tag));
    }

    /// True when `label` was remembered with exactly `tag`.
    pub fn has(&self, label: &str, tag: &str) -> bool {
        self.0.get(&h128(label)) == Some(&h128(tag))
    }

}

impl<'de> serde::Deserialize<'de> for FileTags {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FileTags;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of file labels to content tags")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<FileTags, A::Error> {
                let mut out = FileTags::default();
                while let Some((k, v)) = m.next_entry::<Cow<'de, str>, Cow<'de, str>>()? {
                    out.insert(&k, &v);
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// The `files` map of a step's memory, written straight from the plan (never assembled).
pub struct FilesOf<'a>(pub Option<&'a CopyPlan<'a>>);

impl serde::Serialize for FilesOf<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        let mut map = s.serialize_map(None)?;
        if let Some(plan) = self.0 {
            let mut failed = None;
            let visited = plan.for_each(&mut |it| {
                map.serialize_entry(&*it.label, &content_tag(it)).map_err(|e| {
                    failed = Some(e);
                    SolveError::Cancelled
                })
            });
            if let Some(e) = failed {
                return Err(e);
            }
            visited.map_err(S::Error::custom)?;
        }
        map.end()
    }
}

/// The per-file content tag remembered for `--explain` and for [`Reuse`]: 128 bits of the
/// blake3 hash for files, the type and mode otherwise.
pub fn content_tag(it: &CopyItem) -> String {
    match it.hash {
        Some(h) => crate::key::hex32(&h)[..32].to_string(),
        None => format!("{:?}:{:o}", it.kind, it.mode),
    }
}

/// A file of the previous snapshot that is identical, metadata included, to what `it` would
/// write.
fn reusable(reuse: Option<&Reuse>, it: &CopyItem) -> Option<PathBuf> {
    let r = reuse?;
    if !r.files.has(&it.label, &content_tag(it)) {
        return None;
    }
    let prev = r.snapshot.join(it.dest.trim_start_matches('/'));
    let m = std::fs::symlink_metadata(&prev).ok()?;
    let same = m.is_file()
        && m.len() == it.size
        && m.permissions().mode() & 0o7777 == it.mode
        && m.uid() == it.uid
        && m.gid() == it.gid
        && (m.mtime(), m.mtime_nsec()) == it.mtime;
    same.then_some(prev)
}

/// Writes the items into `staging` (an empty directory that becomes the layer).
pub fn materialize(plan: &CopyPlan<'_>, staging: &Path, view: &LayeredView, owner: (u32, u32)) -> Result<(), SolveError> {
    materialize_reusing(plan, staging, view, owner, None, &|_| true)
}

/// [`materialize`] of the items `wanted` keeps, hard-linking unchanged files from an earlier
/// snapshot of the same step.
pub fn materialize_reusing(
    plan: &CopyPlan<'_>,
    staging: &Path,
    view: &LayeredView,
    owner: (u32, u32),
    reuse: Option<&Reuse>,
    wanted: &(dyn Fn(&CopyItem) -> bool + Sync),
) -> Result<(), SolveError> {
    let mut dir_times = Vec::new();
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |e: io::Error| SolveError::io(&p, e)
    };
    // Parents and directories first, sequentially; then files in parallel.
    let mut known = HashSet::new();
    plan.for_each(&mut |it| {
        if !wanted(it) {
            return Ok(());
        }
        let host = staging.join(it.dest.trim_start_matches('/'));
        ensure_parents_known(staging, &it.dest, view, owner, &mut dir_times, &mut known).map_err(io_err(&host))?;
        match it.kind {
            Kind::Dir => {
                if &*it.dest == "/" {
                    return Ok(());
                }
                match std::fs::symlink_metadata(&host) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        std::fs::remove_file(&host).map_err(io_err(&host))?;
                        std::fs::create_dir(&host).map_err(io_err(&host))?;
                    }
                    Err(_) => std::fs::create_dir(&host).map_err(io_err(&host))?,
                }
                known.insert(it.dest.to_string());
                std::fs::set_permissions(&host, std::fs::Permissions::from_mode(it.mode)).map_err(io_err(&host))?;
                lchown(&host, it.uid, it.gid).map_err(io_err(&host))?;
                dir_times.push((host, it.mtime));
            }
            Kind::Symlink => {
                // A symlink may replace a directory a parent check saw.
                known.remove(&*it.dest);
                let _ = std::fs::remove_file(&host);
                std::os::unix::fs::symlink(it.link.as_deref().unwrap_or(""), &host).map_err(io_err(&host))?;
                lchown(&host, it.uid, it.gid).map_err(io_err(&host))?;
                set_mtime(&host, it.mtime).map_err(io_err(&host))?;
            }
            Kind::File | Kind::Other => {}
        }
        Ok(())
    })?;
    // Files in batches, so a plan that is not listed stays unlisted.
    plan.for_each_batch(4096, &mut |batch| batch.par_iter().filter(|it| it.kind == Kind::File && wanted(it)).try_for_each(|it| -> Result<(), SolveError> {
        let host = staging.join(it.dest.trim_start_matches('/'));
        let clear = |host: &Path| -> Result<(), SolveError> {
            if let Ok(m) = std::fs::symlink_metadata(host) {
                if m.is_dir() {
                    std::fs::remove_dir_all(host).map_err(io_err(host))?;
                } else {
                    std::fs::remove_file(host).map_err(io_err(host))?;
                }
            }
            Ok(())
        };
        if let Some(prev) = reusable(reuse, it) {
            // Linking fails on an existing name: only then is there something to clear.
            match std::fs::hard_link(&prev, &host) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    clear(&host)?;
                    if std::fs::hard_link(&prev, &host).is_ok() {
                        return Ok(());
                    }
                }
                Err(_) => {}
            }
        }
        clear(&host)?;
        let src = it.host();
        std::fs::copy(&src, &host).map_err(io_err(&src))?;
        lchown(&host, it.uid, it.gid).map_err(io_err(&host))?;
        // chmod after chown: chown clears setuid bits.
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(it.mode)).map_err(io_err(&host))?;
        set_mtime(&host, it.mtime).map_err(io_err(&host))?;
        Ok(())
    }))?;
    for (p, t) in dir_times.iter().rev() {
        set_mtime(p, *t).map_err(io_err(p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Ignore;

    fn loc() -> Location {
        Location { instruction: "COPY".into(), span: Default::default() }
    }

    fn ctx_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Context) {
        let t = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let path = t.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        }
        let ctx = Context::walk(t.path(), Ignore::none()).unwrap();
        (t, ctx)
    }

    fn dests(items: &[CopyItem]) -> Vec<String> {
        items.iter().map(|i| i.dest.to_string()).collect()
    }

    #[test]
    fn directory_sources_copy_their_contents() {
        let (_t, ctx) = ctx_with(&[("src/a.txt", "a"), ("src/sub/b.txt", "b")]);
        let view = LayeredView::new(vec![]);
        let items = plan(&SourceSide::Context(&ctx), &["src".into()], "/app", "/", &CopyFlags::default(), &view, &loc()).and_then(CopyPlan::into_items).unwrap();
        assert_eq!(dests(&items), vec!["/app", "/app/a.txt", "/app/sub", "/app/sub/b.txt"]);
    }

    #[test]
    fn an_unlisted_tree_plan_visits_what_a_listed_one_holds() {
        let (t, ctx) = ctx_with(&[("src/a.txt", "a"), ("src/sub/b.txt", "b"), ("src/sub/skip.log", "x"), ("src-x", "y")]);
        let view = LayeredView::new(vec![]);
        let flags = CopyFlags { chmod: Some(0o640), exclude: vec!["**/*.log".into()], ..Default::default() };
        let mut tree = plan(&SourceSide::Context(&ctx), &["src".into()], "/app/", "/", &flags, &view, &loc()).unwrap();
        assert!(matches!(tree.kind, PlanKind::Tree { .. }), "one context source is not listed");
        tree.hash(Some(&ctx)).unwrap();
        // The same items, listed: two sources (the second names a file already in the first).
        let mut listed = plan(&SourceSide::Context(&ctx), &["src".into(), "src/a.txt".into()], "/app/", "/", &flags, &view, &loc()).and_then(CopyPlan::into_items).unwrap();
        hash_items(&mut listed, Some(&ctx)).unwrap();
        // `src/a.txt` named again lands on /app/a.txt: the later source wins, same content.
        assert_eq!(dests(&listed), vec!["/app", "/app/a.txt", "/app/sub", "/app/sub/b.txt"]);
        let mut visited = Vec::new();
        tree.for_each(&mut |it| {
            visited.push((it.dest.to_string(), it.mode, it.hash));
            Ok(())
        })
        .unwrap();
        let want: Vec<_> = listed.iter().map(|it| (it.dest.to_string(), it.mode, it.hash)).collect();
        assert_eq!(visited, want);
        assert!(visited.iter().all(|(d, m, h)| d == "/app" || d == "/app/sub" || (*m == 0o640 && h.is_some())));
        assert_eq!(tree.digest(&|_| true).unwrap(), items_digest(&listed));
        // Materializing the unlisted plan writes the same tree.
        let out = tempfile::tempdir().unwrap();
        materialize(&tree, out.path(), &view, (0, 0)).unwrap();
        assert_eq!(std::fs::read_to_string(out.path().join("app/sub/b.txt")).unwrap(), "b");
        assert!(!out.path().join("app/sub/skip.log").exists());
        drop(t);
    }

    #[test]
    fn destination_of_directory_contents_is_made_like_mkdir_all() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("src/sub")).unwrap();
        std::fs::write(t.path().join("src/a.txt"), "a").unwrap();
        std::fs::set_permissions(t.path().join("src"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let ctx = Context::walk(t.path(), Ignore::none()).unwrap();
        let src = SourceSide::Context(&ctx);
        let meta = |items: &[CopyItem], d: &str| items.iter().find(|i| &*i.dest == d).map(|i| (i.mode, i.uid, i.gid)).unwrap();

        // A new destination: 0755 and root, whatever the source directory's own mode.
        let empty = LayeredView::new(vec![]);
        let items = plan(&src, &["src".into()], "/app", "/", &CopyFlags::default(), &empty, &loc()).and_then(CopyPlan::into_items).unwrap();
        assert_eq!(meta(&items, "/app"), (0o755, 0, 0));
        // --chown owns it, --chmod does not reach it.
        let f = CopyFlags { chown: Some((7, 8)), chmod: Some(0o700), ..Default::default() };
        let items = plan(&src, &["src".into()], "/app", "/", &f, &empty, &loc()).and_then(CopyPlan::into_items).unwrap();
        assert_eq!(meta(&items, "/app"), (0o755, 7, 8));
        assert_eq!(meta(&items, "/app/sub"), (0o700, 7, 8));

        // An existing destination keeps its own metadata.
        let lower = tempfile::tempdir().unwrap();
        std::fs::create_dir(lower.path().join("tmp")).unwrap();
        std::fs::set_permissions(lower.path().join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let view = LayeredView::new(vec![lower.path().to_path_buf()]);
        let items = plan(&src, &["src".into()], "/tmp", "/", &f, &view, &loc()).and_then(CopyPlan::into_items).unwrap();
        let uid = std::fs::metadata(lower.path().join("tmp")).unwrap().uid();
        assert_eq!(meta(&items, "/tmp").0, 0o1777);
        assert_eq!(meta(&items, "/tmp").1, uid);
    }

    #[test]
    fn symlinked_destination_directory_is_followed() {
        let (_t, ctx) = ctx_with(&[("f.txt", "x"), ("d/a", "a")]);
        let lower = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(lower.path().join("opt/real")).unwrap();
        std::os::unix::fs::symlink("/opt/real", lower.path().join("opt/link")).unwrap();
        std::os::unix::fs::symlink("real", lower.path().join("opt/rel")).unwrap();
        let view = LayeredView::new(vec![lower.path().to_path_buf()]);
        let f = CopyFlags::default();
        let src = SourceSide::Context(&ctx);
        for dest in ["/opt/link/", "/opt/link", "/opt/rel/"] {
            let items = plan(&src, &["f.txt".into()], dest, "/", &f, &view, &loc()).and_then(CopyPlan::into_items).unwrap();
            assert_eq!(dests(&items), vec!["/opt/real/f.txt"], "COPY f.txt {dest}");
        }
        let items = plan(&src, &["d".into()], "/opt/link/sub", "/", &f, &view, &loc()).and_then(CopyPlan::into_items).unwrap();
        assert_eq!(dests(&items), vec!["/opt/real/sub", "/opt/real/sub/a"]);
        let items = plan(&src, &["d".into()], "/opt/link", "/", &f, &view, &loc()).and_then(CopyPlan::into_items).unwrap();
        assert_eq!(dests(&items), vec!["/opt/real", "/opt/real/a"]);
        // A file copied onto a symlink to a file lands on the link's target.
        std::fs::write(lower.path().join("opt/real/bin"), "x").unwrap();
        std::os::unix::fs::symlink("real/bin", lower.path().join("opt/tool")).unwrap();
        let items = plan(&src, &["f.txt".into()], "/opt/tool", "/", &f, &view, &loc()).and_then(CopyPlan::into_items).unwrap();
        assert_eq!(dests(&items), vec!["/opt/real/bin"]);
        // Into a directory, a link of the same name is replaced instead.
        std::os::unix::fs::symlink("real/bin", lower.path().join("opt/f.txt")).unwrap();
        let items = plan(&src, &["f.txt".into()], "/opt/", "/", &f, &view, &loc()).and_then(CopyPlan::into_items).unwrap();
        assert_eq!(dests(&items), vec!["/opt/f.txt"]);
    }

    #[test]
    fn file_to_dir_and_to_file() {
        let (_t, ctx) = ctx_with(&[("req.txt", "x")]);
        let view = LayeredView::new(vec![]);
        let f = CopyFlags::default();
        let a = plan(&SourceSide::Context(&ctx), &["req.txt".into()], ".", "/app", &f, &view, &loc()).and_then(CopyPlan::into_items).unwrap();
        assert_eq!(dests(&a), vec!["/app/req.txt"]);
        let b = plan(&SourceSide::Context(&ctx), &["req.txt".into()], "/x/renamed", "/", &f, &view, &loc()).and_then(CopyPlan::into_items).unwrap();
        assert_eq!(dests(&b), vec!["/x/renamed"]);
    }

    #[test]
    fn wildcards_and_multiple_sources_need_a_dir() {
        let (_t, ctx) = ctx_with(&[("a.py", "1"), ("b.py", "2"), ("c.txt", "3")]);
        let view = LayeredView::new(vec![]);
        let f = CopyFlags::default();
        let items = plan(&SourceSide::Context(&ctx), &["*.py".into()], "/app/", "/", &f, &view, &loc()).and_then(CopyPlan::into_items).unwrap();
        assert_eq!(dests(&items), vec!["/app/a.py", "/app/b.py"]);
        let err = plan(&SourceSide::Context(&ctx), &["*.py".into()], "/app", "/", &f, &view, &loc()).and_then(CopyPlan::into_items).unwrap_err();
        assert!(err.to_string().contains("must be a directory"), "{err}");
    }

    #[test]
    fn missing_source_is_named() {
        let (_t, ctx) = ctx_with(&[("a", "1")]);
        let view = LayeredView::new(vec![]);
        let err = plan(&SourceSide::Context(&ctx), &["nope.txt".into()], "/", "/", &CopyFlags::default(), &view, &loc()).and_then(CopyPlan::into_items).unwrap_err();
        assert!(err.to_string().contains("\"nope.txt\" not found"), "{err}");
    }

    #[test]
    fn checkout_umask_does_not_change_the_digest() {
        use std::os::unix::fs::PermissionsExt;
        let (t, _ctx) = ctx_with(&[("d/f", "same"), ("d/x", "exec")]);
        let set = |p: &str, m: u32| std::fs::set_permissions(t.path().join(p), std::fs::Permissions::from_mode(m)).unwrap();
        let view = LayeredView::new(vec![]);
        let f = CopyFlags::default();
        let digest_of = |ctx: &Context| {
            let mut items = plan(&SourceSide::Context(ctx), &["d".into()], "/d", "/", &f, &view, &loc()).and_then(CopyPlan::into_items).unwrap();
            hash_items(&mut items, Some(ctx)).unwrap();
            (items_digest(&items), items.iter().map(|i| i.mode).collect::<Vec<_>>())
        };
        // umask 022 checkout
        set("d", 0o755);
        set("d/f", 0o644);
        set("d/x", 0o755);
        let c022 = Context::walk(t.path(), Ignore::none()).unwrap();
        let a = digest_of(&c022);
        // umask 002 checkout of the same files
        set("d", 0o775);
        set("d/f", 0o664);
        set("d/x", 0o775);
        let c002 = Context::walk(t.path(), Ignore::none()).unwrap();
        let b = digest_of(&c002);
        assert_eq!(a, b, "group/other write bits are checkout noise");
        assert_eq!(a.1, vec![0o755, 0o644, 0o755]);
        // The executable bit is real content: it changes the digest.
        set("d/f", 0o775);
        let c = digest_of(&Context::walk(t.path(), Ignore::none()).unwrap());
        assert_ne!(a.0, c.0);
        // With --chmod the source mode never matters.
        let chmod = CopyFlags { chmod: Some(0o600), ..CopyFlags::default() };
        let with = |ctx: &Context| {
            let mut items = plan(&SourceSide::Context(ctx), &["d/f".into()], "/f", "/", &chmod, &view, &loc()).and_then(CopyPlan::into_items).unwrap();
            hash_items(&mut items, Some(ctx)).unwrap();
            items_digest(&items)
        };
        let before = with(&Context::walk(t.path(), Ignore::none()).unwrap());
        set("d/f", 0o640);
        let after = with(&Context::walk(t.path(), Ignore::none()).unwrap());
        assert_eq!(before, after);
    }

    #[test]
    fn digest_ignores_mtime_but_sees_content_and_mode() {
        let (t, ctx) = ctx_with(&[("f", "one")]);
        let view = LayeredView::new(vec![]);
        let f = CopyFlags::default();
        let mut a = plan(&SourceSide::Context(&ctx), &["f".into()], "/f", "/", &f, &view, &loc()).and_then(CopyPlan::into_items).unwrap();
        hash_items(&mut a, Some(&ctx)).unwrap();
        let mut b = a.clone();
        b[0].mtime = (1, 0);
        assert_eq!(items_digest(&a), items_digest(&b));
        b[0].mode = 0o755;
        assert_ne!(items_digest(&a), items_digest(&b));
        std::fs::write(t.path().join("f"), "two").unwrap();
        let ctx2 = Context::walk(t.path(), Ignore::none()).unwrap();
        let mut c = plan(&SourceSide::Context(&ctx2), &["f".into()], "/f", "/", &f, &view, &loc()).and_then(CopyPlan::into_items).unwrap();
        hash_items(&mut c, Some(&ctx2)).unwrap();
        assert_ne!(items_digest(&a), items_digest(&c));
    }
}
