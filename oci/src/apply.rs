//! Applying layers onto directories.
//!
//! [`apply_layer`] reads a layer blob (gzip, zstd or plain tar, detected by magic bytes), hashes
//! the uncompressed stream (the diff_id), and recreates its entries under a target directory:
//!
//! * [`ApplyMode::Merged`] applies onto a full tree: `.wh.NAME` deletes `NAME` from what is
//!   already there, `.wh..wh..opq` empties a directory of everything not written by this layer.
//! * [`ApplyMode::OverlaySnapshot`] fills an *empty* directory that will be used as one overlayfs
//!   lowerdir: whiteouts become 0:0 character devices and opaque markers become the
//!   `trusted.overlay.opaque=y` (or, with `userxattr`, `user.overlay.opaque=y`) xattr.
//!
//! The applier never writes outside the target. Entries with `..` components are refused;
//! absolute entry paths are taken relative to the target; no symlink already in the target is
//! followed when creating a path (every parent component must be a real directory); hard links
//! must name an existing, non-directory entry inside the target. Refusals are
//! [`LayerError::Escape`] errors naming the entry.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::LayerError;
use crate::layer::is_overlay_xattr;
use crate::sys;
use crate::tar_read::{Entry, EntryKind, ReadError, TarReader};
use crate::{Digest, HashingReader};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Wraps a layer blob in the decompressor its first bytes call for (gzip, zstd, or none).
pub fn decompress<'a>(r: impl Read + 'a) -> Result<Box<dyn Read + 'a>, LayerError> {
    let mut r = BufReader::with_capacity(256 * 1024, r);
    let mut head = [0u8; 4];
    let mut got = 0;
    // Peek without consuming: read into `head`, then chain it back in front.
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(LayerError::Stream(e)),
        }
    }
    let prefix = io::Cursor::new(head[..got].to_vec());
    let whole = prefix.chain(r);
    if got >= 2 && head[..2] == GZIP_MAGIC {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(
            BufReader::with_capacity(256 * 1024, whole),
        )))
    } else if got >= 4 && head == ZSTD_MAGIC {
        let d = zstd::stream::read::Decoder::new(whole).map_err(LayerError::Stream)?;
        Ok(Box::new(d))
    } else {
        Ok(Box::new(whole))
    }
}

/// How a layer is laid out on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ApplyMode {
    /// Apply onto a full tree; whiteouts delete.
    #[default]
    Merged,
    /// Fill an empty directory that becomes one overlayfs lowerdir; whiteouts become overlay
    /// whiteouts.
    OverlaySnapshot,
}

/// Options for [`apply_layer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyOptions {
    pub mode: ApplyMode,
    /// Restore uid/gid (and all xattrs). Defaults to "running as root".
    pub preserve_owner: bool,
    /// Write `user.overlay.opaque` instead of `trusted.overlay.opaque` (for overlay mounted with
    /// `userxattr`, as in user namespaces).
    pub userxattr: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            mode: ApplyMode::Merged,
            preserve_owner: sys::is_root(),
            userxattr: false,
        }
    }
}

impl ApplyOptions {
    pub fn new(mode: ApplyMode) -> ApplyOptions {
        ApplyOptions {
            mode,
            ..ApplyOptions::default()
        }
    }
}

/// What applying a layer did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyStats {
    /// sha256 of the uncompressed tar stream, including any trailing padding.
    pub diff_id: Digest,
    /// Size of the uncompressed tar stream.
    pub uncompressed_size: u64,
    /// Entries created or updated (whiteouts not included).
    pub entries: u64,
    /// Whiteout and opaque markers handled.
    pub whiteouts: u64,
    /// Entries or attributes that could not be created without privileges and were skipped
    /// (device nodes and xattrs when not root, as Docker does).
    pub skipped: u64,
}

fn entry_name(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn escape(entry: &[u8], reason: impl Into<String>) -> LayerError {
    LayerError::Escape {
        entry: entry_name(entry),
        reason: reason.into(),
    }
}

/// Splits an entry path into clean components: leading `/` and `./` dropped, empty and `.`
/// components skipped, `..` refused.
fn components<'a>(raw: &'a [u8], entry: &[u8]) -> Result<Vec<&'a [u8]>, LayerError> {
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(escape(entry, "path contains a `..` component")),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn from_read(e: ReadError) -> LayerError {
    match e {
        ReadError::Io(e) => LayerError::Stream(e),
        ReadError::Malformed(m) => LayerError::Malformed(m),
    }
}

struct Applier<'o> {
    root: PathBuf,
    opts: &'o ApplyOptions,
    /// Directories verified (or created) as real directories during this apply.
    known_dirs: HashSet<Vec<u8>>,
    /// Paths written by this layer (whiteouts only apply to lower layers).
    written: HashSet<Vec<u8>>,
    /// Directory metadata, applied last (children change mtimes; read-only modes block writes).
    dirs: Vec<(PathBuf, Entry)>,
    stats: ApplyStats,
    buf: Vec<u8>,
}

/// Applies one layer from `r` (compressed or not) to `target` and returns what it did,
/// including the diff_id it computed.
pub fn apply_layer(
    r: impl Read,
    target: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, LayerError> {
    let meta = fs::symlink_metadata(target).map_err(|e| LayerError::io(target, e))?;
    if !meta.is_dir() {
        return Err(LayerError::io(
            target,
            io::Error::other("apply target is not a directory"),
        ));
    }
    if opts.mode == ApplyMode::OverlaySnapshot {
        let mut it = fs::read_dir(target).map_err(|e| LayerError::io(target, e))?;
        if it.next().is_some() {
            return Err(LayerError::io(
                target,
                io::Error::other("an overlay snapshot must be applied to an empty directory"),
            ));
        }
    }
    let plain = decompress(r)?;
    let mut tar = TarReader::new(HashingReader::new(plain));
    let mut a = Applier {
        root: target.to_path_buf(),
        opts,
        known_dirs: HashSet::new(),
        written: HashSet::new(),
        dirs: Vec::new(),
        stats: ApplyStats {
            diff_id: Digest::of(b""),
            uncompressed_size: 0,
            entries: 0,
            whiteouts: 0,
            skipped: 0,
        },
        buf: vec![0u8; 1024 * 1024],
    };
    a.known_dirs.insert(Vec::new());
    while let Some(e) = tar.next_entry().map_err(from_read)? {
        a.entry(e, &mut tar)?;
    }
    a.finish_dirs()?;
    // Hash whatever follows the end-of-archive marker too: the diff_id covers the whole stream.
    let mut hashed = tar.into_inner();
    io::copy(&mut hashed, &mut io::sink()).map_err(LayerError::Stream)?;
    let (diff_id, n) = hashed.finish();
    a.stats.diff_id = diff_id;
    a.stats.uncompressed_size = n;
    Ok(a.stats)
}

fn join_bytes(parts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            v.push(b'/');
        }
        v.extend_from_slice(p);
    }
    v
}

fn is_enotsup_or_eperm(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTSUP) | Some(libc::EPERM) | Some(libc::EACCES)
    )
}

impl Applier<'_> {
    fn host(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        }
    }

    /// Makes sure every component of `parent` is a real directory inside the root, creating
    /// missing ones (mode 0755). A symlink or non-directory on the way is refused.
    fn ensure_parent(&mut self, parent: &[&[u8]], entry: &[u8]) -> Result<(), LayerError> {
        let full = join_bytes(parent);
        if self.known_dirs.contains(&full) {
            return Ok(());
        }
        for i in 1..=parent.len() {
            let rel = join_bytes(&parent[..i]);
            if self.known_dirs.contains(&rel) {
                continue;
            }
            let host = self.host(&rel);
            match fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(escape(
                        entry,
                        format!(
                            "parent {:?} is a symlink in the target; refusing to write through it",
                            entry_name(&rel)
                        ),
                    ))
                }
                Ok(_) => {
                    return Err(escape(
                        entry,
                        format!(
                            "parent {:?} exists and is not a directory",
                            entry_name(&rel)
                        ),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&host)
                        .map_err(|e| LayerError::io(&host, e))?;
                }
                Err(e) => return Err(LayerError::io(&host, e)),
            }
            self.known_dirs.insert(rel);
        }
        Ok(())
    }

    /// Removes whatever is at `host` (a file, link or whole directory), never following symlinks.
    fn remove_existing(&mut self, host: &Path, m: &fs::Metadata) -> Result<(), LayerError> {
        if m.is_dir() {
            self.known_dirs.clear();
            self.known_dirs.insert(Vec::new());
            fs::remove_dir_all(host).map_err(|e| LayerError::io(host, e))
        } else {
            fs::remove_file(host).map_err(|e| LayerError::io(host, e))
        }
    }

    fn entry<R: Read>(&mut self, e: Entry, tar: &mut TarReader<R>) -> Result<(), LayerError> {
        let raw = e.path.clone();
        let comps = components(&raw, &raw)?;
        if comps.is_empty() {
            // The layer root: only a directory makes sense; take its metadata.
            if e.kind == EntryKind::Dir {
                let root = self.root.clone();
                self.dirs.push((root, e));
                self.stats.entries += 1;
                return Ok(());
            }
            return Err(escape(
                &raw,
                "entry replaces the target root with a non-directory",
            ));
        }
        let (name, parent) = comps.split_last().expect("non-empty");
        let name: &[u8] = name;
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            return self.whiteout(&raw, parent, hidden);
        }
        self.ensure_parent(parent, &raw)?;
        let rel = join_bytes(&comps);
        let host = self.host(&rel);

        if let EntryKind::Other(flag) = e.kind {
            return Err(LayerError::Unsupported {
                entry: entry_name(&raw),
                what: format!("tar entry type {:?}", flag as char),
            });
        }

        // Whatever is there already goes, unless a directory is replaced by a directory.
        match fs::symlink_metadata(&host) {
            Ok(m) => {
                if !(m.is_dir() && e.kind == EntryKind::Dir) {
                    self.remove_existing(&host, &m)?;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(LayerError::io(&host, err)),
        }

        match e.kind {
            EntryKind::Dir => {
                match fs::DirBuilder::new().mode(0o755).create(&host) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(err) => return Err(LayerError::io(&host, err)),
                }
                self.known_dirs.insert(rel.clone());
                self.set_xattrs(&host, &e)?;
                self.written.insert(rel);
                self.dirs.push((host, e));
                self.stats.entries += 1;
                return Ok(());
            }
            EntryKind::Regular => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&host)
                    .map_err(|err| LayerError::io(&host, err))?;
                self.copy_data(tar, &mut f, &host)?;
            }
            EntryKind::Symlink => {
                std::os::unix::fs::symlink(OsStr::from_bytes(&e.link), &host)
                    .map_err(|err| LayerError::io(&host, err))?;
            }
            EntryKind::HardLink => {
                let target = self.link_target(&raw, &e.link)?;
                linkat_nofollow(&target, &host).map_err(|err| LayerError::io(&host, err))?;
                // A hard link shares the inode: its metadata is the target's.
                self.written.insert(rel);
                self.stats.entries += 1;
                return Ok(());
            }
            EntryKind::Fifo => {
                sys::mknod(&host, libc::S_IFIFO | 0o600, 0, 0)
                    .map_err(|err| LayerError::io(&host, err))?;
            }
            EntryKind::Char | EntryKind::Block => {
                let t = if e.kind == EntryKind::Char {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                if let Err(err) = sys::mknod(&host, t | 0o600, e.dev_major, e.dev_minor) {
                    if err.raw_os_error() == Some(libc::EPERM) && !sys::is_root() {
                        self.stats.skipped += 1;
                        return Ok(());
                    }
                    return Err(LayerError::io(&host, err));
                }
            }
            EntryKind::Other(_) => unreachable!("handled above"),
        }
        self.set_meta(&host, &e)?;
        self.written.insert(rel);
        self.stats.entries += 1;
        Ok(())
    }

    fn copy_data<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        f: &mut File,
        host: &Path,
    ) -> Result<(), LayerError> {
        loop {
            let n = tar.read_data(&mut self.buf).map_err(LayerError::Stream)?;
            if n == 0 {
                return Ok(());
            }
            f.write_all(&self.buf[..n])
                .map_err(|e| LayerError::io(host, e))?;
        }
    }

    /// Resolves a hard link's target inside the root, refusing anything that escapes or that
    /// goes through a symlink.
    fn link_target(&mut self, entry: &[u8], link: &[u8]) -> Result<PathBuf, LayerError> {
        let comps = components(link, entry)
            .map_err(|_| escape(entry, "hard link target contains a `..` component"))?;
        let Some((_, parent)) = comps.split_last() else {
            return Err(escape(entry, "hard link to the target root"));
        };
        // The target's parents must be real directories already in the tree.
        for i in 1..=parent.len() {
            let rel = join_bytes(&parent[..i]);
            if self.known_dirs.contains(&rel) {
                continue;
            }
            match fs::symlink_metadata(self.host(&rel)) {
                Ok(m) if m.is_dir() => {
                    self.known_dirs.insert(rel);
                }
                Ok(_) => {
                    return Err(escape(
                        entry,
                        format!(
                            "hard link target goes through {:?}, which is not a directory",
                            entry_name(&rel)
                        ),
                    ))
                }
                Err(_) => {
                    return Err(escape(
                        entry,
                        format!("hard link target {:?} does not exist", entry_name(link)),
                    ))
                }
            }
        }
        let host = self.host(&join_bytes(&comps));
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => Err(escape(entry, "hard link to a directory")),
            Ok(_) => Ok(host),
            Err(_) => Err(escape(
                entry,
                format!("hard link target {:?} does not exist", entry_name(link)),
            )),
        }
    }

    fn whiteout(&mut self, raw: &[u8], parent: &[&[u8]], hidden: &[u8]) -> Result<(), LayerError> {
        self.stats.whiteouts += 1;
        self.ensure_parent(parent, raw)?;
        let dir_rel = join_bytes(parent);
        let dir = self.host(&dir_rel);
        if hidden == b".wh..opq" {
            match self.opts.mode {
                ApplyMode::OverlaySnapshot => {
                    let name = if self.opts.userxattr {
                        "user.overlay.opaque"
                    } else {
                        "trusted.overlay.opaque"
                    };
                    sys::set_xattr(&dir, name, b"y").map_err(|e| LayerError::io(&dir, e))?;
                }
                ApplyMode::Merged => self.clear_dir(&dir, &dir_rel)?,
            }
            return Ok(());
        }
        if hidden.starts_with(b".wh.") {
            // Other AUFS metadata (`.wh..wh.plnk`, `.wh..wh.aufs`): nothing to apply.
            return Ok(());
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(escape(raw, "whiteout names no entry"));
        }
        let mut rel = dir_rel.clone();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(hidden);
        let host = self.host(&rel);
        match self.opts.mode {
            ApplyMode::OverlaySnapshot => {
                if let Ok(m) = fs::symlink_metadata(&host) {
                    self.remove_existing(&host, &m)?;
                }
                sys::mknod(&host, libc::S_IFCHR, 0, 0).map_err(|e| LayerError::io(&host, e))?;
            }
            ApplyMode::Merged => {
                if self.written.contains(&rel) {
                    // Whiteouts hide lower layers only.
                    return Ok(());
                }
                if let Ok(m) = fs::symlink_metadata(&host) {
                    self.remove_existing(&host, &m)?;
                }
            }
        }
        Ok(())
    }

    /// Removes everything under `dir` that this layer did not write.
    fn clear_dir(&mut self, dir: &Path, dir_rel: &[u8]) -> Result<(), LayerError> {
        let entries = fs::read_dir(dir).map_err(|e| LayerError::io(dir, e))?;
        for ent in entries {
            let ent = ent.map_err(|e| LayerError::io(dir, e))?;
            let name = ent.file_name();
            let mut rel = dir_rel.to_vec();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            let host = dir.join(&name);
            let m = fs::symlink_metadata(&host).map_err(|e| LayerError::io(&host, e))?;
            if self.written.contains(&rel) {
                if m.is_dir() {
                    self.clear_dir(&host, &rel)?;
                }
            } else {
                self.remove_existing(&host, &m)?;
            }
        }
        Ok(())
    }

    fn set_xattrs(&mut self, host: &Path, e: &Entry) -> Result<(), LayerError> {
        for (k, v) in &e.xattrs {
            if is_overlay_xattr(k) {
                // Overlay bookkeeping from a layer could redirect or hide lower content.
                continue;
            }
            if !self.opts.preserve_owner && !k.starts_with("user.") {
                self.stats.skipped += 1;
                continue;
            }
            if let Err(err) = sys::set_xattr(host, k, v) {
                if is_enotsup_or_eperm(&err) {
                    self.stats.skipped += 1;
                    continue;
                }
                return Err(LayerError::io(host, err));
            }
        }
        Ok(())
    }

    fn set_meta(&mut self, host: &Path, e: &Entry) -> Result<(), LayerError> {
        if self.opts.preserve_owner {
            sys::lchown(host, e.uid, e.gid).map_err(|err| LayerError::io(host, err))?;
        }
        self.set_xattrs(host, e)?;
        if e.kind != EntryKind::Symlink {
            // After chown, which clears setuid/setgid.
            fs::set_permissions(host, fs::Permissions::from_mode(e.mode & 0o7777))
                .map_err(|err| LayerError::io(host, err))?;
        }
        sys::set_times(host, e.mtime, e.mtime_nsec).map_err(|err| LayerError::io(host, err))
    }

    fn finish_dirs(&mut self) -> Result<(), LayerError> {
        // Deepest first, so a parent's mtime is set after its children are final.
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by(|a, b| b.0.cmp(&a.0));
        dirs.dedup_by(|a, b| a.0 == b.0);
        for (host, e) in dirs {
            // A later entry may have replaced the directory; only apply to what is there now.
            match fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => {}
                _ => continue,
            }
            if self.opts.preserve_owner {
                sys::lchown(&host, e.uid, e.gid).map_err(|err| LayerError::io(&host, err))?;
            }
            fs::set_permissions(&host, fs::Permissions::from_mode(e.mode & 0o7777))
                .map_err(|err| LayerError::io(&host, err))?;
            sys::set_times(&host, e.mtime, e.mtime_nsec)
                .map_err(|err| LayerError::io(&host, err))?;
        }
        Ok(())
    }
}

fn linkat_nofollow(target: &Path, link: &Path) -> io::Result<()> {
    let t = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let l = CString::new(link.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: both strings are NUL-terminated; flags 0 means a symlink target is linked itself.
    let rc = unsafe { libc::linkat(libc::AT_FDCWD, t.as_ptr(), libc::AT_FDCWD, l.as_ptr(), 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
