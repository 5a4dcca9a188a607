//! Writing layers: a directory tree (or an overlayfs upper directory) becomes a deterministic tar,
//! hashed and compressed in one streaming pass.
//!
//! ```text
//! entries ─▶ tar bytes ─▶ sha256 (diff_id) ─▶ compressor ─▶ sha256 (digest) ─▶ out
//! ```
//!
//! Determinism: entries come in path order (component-wise, i.e. directory pre-order with names
//! sorted bytewise), headers carry no user/group names, atimes or ctimes, xattrs are sorted, and
//! mtimes are clamped to `source_date_epoch` when one is set. The same tree therefore always gives
//! the same diff_id, and — since the encoders are reproducible too — the same blob digest.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use crate::compression::Compression;
use crate::error::LayerError;
use crate::pipe::CompressPipe;
use crate::sys;
use crate::tar_write::{Header, Kind, TarWriter};
use crate::{Digest, Hasher};

/// What kind of directory `write_layer` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SourceKind {
    /// A plain tree: every entry is archived as it is.
    #[default]
    Tree,
    /// An overlayfs upper directory: 0:0 character devices become `.wh.NAME` whiteouts and
    /// opaque directories (`trusted.overlay.opaque=y` or `user.overlay.opaque=y`) get a
    /// `.wh..wh..opq` entry.
    OverlayUpper,
}

/// How to write a layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerOptions {
    pub compression: Compression,
    /// When set, every mtime is clamped: `mtime = min(mtime, epoch)` (reproducible builds).
    pub source_date_epoch: Option<i64>,
    pub kind: SourceKind,
}

/// What a written layer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar (goes into the image config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// sha256 of the blob as written (goes into the manifest).
    pub digest: Digest,
    /// Size of the blob as written.
    pub size: u64,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// The OCI media type of the blob.
    pub media_type: String,
}

/// Explicit metadata of one layer entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryMeta {
    /// Permission bits (including setuid, setgid, sticky); type bits are ignored.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Extended attributes by full name (`user.foo`, `security.capability`).
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl EntryMeta {
    /// Root-owned, mtime 0, no xattrs.
    pub fn new(mode: u32) -> EntryMeta {
        EntryMeta {
            mode,
            ..EntryMeta::default()
        }
    }

    /// Mode, owner and mtime of a file on the host (xattrs are not read).
    pub fn from_metadata(m: &Metadata) -> EntryMeta {
        EntryMeta {
            mode: m.mode() & 0o7777,
            uid: m.uid() as u64,
            gid: m.gid() as u64,
            mtime: m.mtime(),
            xattrs: BTreeMap::new(),
        }
    }
}

/// Device node kinds for [`LayerBuilder::append_device`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    Block,
}

/// Whether an xattr is overlayfs bookkeeping that never belongs in a layer.
pub(crate) fn is_overlay_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}

/// Overlay xattrs that mean the upper entry is not self-contained.
fn is_overlay_rewrite(name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix("trusted.overlay.")
        .or_else(|| name.strip_prefix("user.overlay."))
    else {
        return false;
    };
    rest == "redirect" || rest == "metacopy"
}

/// Writes the tree at `root` as one layer into `out` and returns what was written. The root
/// directory itself is not an entry.
pub fn write_layer<W: Write>(
    root: &Path,
    opts: &LayerOptions,
    out: W,
) -> Result<(LayerInfo, W), LayerError> {
    let mut b = LayerBuilder::new(out, opts)?;
    b.append_tree(Path::new(""), root, opts.kind)?;
    b.finish()
}

/// The tar stream's sink: counts it and hashes it into the diff_id, except for plain layers,
/// where the pipe's worker thread hashes the bytes it passes through (the same bytes), so the
/// caller's thread only reads files and builds headers.
struct Sink<W: Write> {
    /// The compressor (or, for plain layers, the hashing pass-through) on its worker thread.
    inner: BufWriter<CompressPipe<W>>,
    hasher: Option<Hasher>,
    written: u64,
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Builds a layer entry by entry, for layers assembled from pieces (COPY results, WORKDIR
/// directories, whiteouts). The caller appends entries in the order they should appear;
/// parents should come before their children. Paths are relative to the layer root (a leading
/// `/` or `./` is accepted and dropped; `..` is refused).
pub struct LayerBuilder<W: Write> {
    tar: TarWriter<Sink<W>>,
    compression: Compression,
    epoch: Option<i64>,
    /// First path seen for every multiply-linked inode archived from the host.
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
}

fn clean_path(p: &Path) -> Result<Vec<u8>, LayerError> {
    let mut out: Vec<u8> = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(sys::os_bytes(s));
            }
            Component::ParentDir => {
                return Err(LayerError::InvalidPath {
                    path: p.display().to_string(),
                    reason: "`..` components are not allowed",
                })
            }
            Component::Prefix(_) => {
                return Err(LayerError::InvalidPath {
                    path: p.display().to_string(),
                    reason: "path prefixes are not allowed",
                })
            }
        }
    }
    Ok(out)
}

fn non_empty(p: &Path) -> Result<Vec<u8>, LayerError> {
    let c = clean_path(p)?;
    if c.is_empty() {
        return Err(LayerError::InvalidPath {
            path: p.display().to_string(),
            reason: "the layer root cannot be an entry",
        });
    }
    Ok(c)
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = prefix.to_vec();
    if !v.is_empty() {
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

impl<W: Write> LayerBuilder<W> {
    pub fn new(out: W, opts: &LayerOptions) -> Result<LayerBuilder<W>, LayerError> {
        opts.compression
            .validate()
            .map_err(LayerError::Compression)?;
        // Plain layers go through the pipe too: its worker hashes what it passes on.
        let blob = CompressPipe::new(opts.compression, out).map_err(LayerError::Stream)?;
        let hasher = (opts.compression != Compression::None).then(Hasher::new);
        let sink = Sink { inner: BufWriter::with_capacity(256 * 1024, blob), hasher, written: 0 };
        Ok(LayerBuilder {
            tar: TarWriter::new(sink),
            compression: opts.compression,
            epoch: opts.source_date_epoch,
            links: HashMap::new(),
            buf: vec![0u8; 1024 * 1024],
        })
    }

    fn mtime(&self, t: i64) -> i64 {
        match self.epoch {
            Some(e) => t.min(e),
            None => t,
        }
    }

    fn header(
        &mut self,
        path: &[u8],
        kind: Kind,
        meta: &EntryMeta,
        size: u64,
        link: &[u8],
        dev: (u64, u64),
    ) -> Result<(), LayerError> {
        let xattrs: Vec<(String, Vec<u8>)> = meta
            .xattrs
            .iter()
            .filter(|(k, _)| !is_overlay_xattr(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let h = Header {
            path,
            kind,
            mode: meta.mode & 0o7777,
            uid: meta.uid,
            gid: meta.gid,
            size,
            mtime: self.mtime(meta.mtime),
            link,
            dev_major: dev.0,
            dev_minor: dev.1,
            xattrs: &xattrs,
        };
        self.tar.header(&h).map_err(LayerError::Stream)
    }

    pub fn append_dir(&mut self, path: &Path, meta: &EntryMeta) -> Result<(), LayerError> {
        let p = non_empty(path)?;
        self.header(&p, Kind::Dir, meta, 0, b"", (0, 0))
    }

    /// Appends a regular file whose `size` bytes are read from `data`.
    pub fn append_file(
        &mut self,
        path: &Path,
        meta: &EntryMeta,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), LayerError> {
        let p = non_empty(path)?;
        self.header(&p, Kind::Regular, meta, size, b"", (0, 0))?;
        self.copy_data(data, path)
    }

    /// Appends a regular file read from the host. The file is opened without following a
    /// symlink; it is an error if it is not a regular file or changes size while it is read.
    pub fn append_file_from_host(
        &mut self,
        path: &Path,
        meta: &EntryMeta,
        host: &Path,
    ) -> Result<(), LayerError> {
        let p = non_empty(path)?;
        let f = open_nofollow(host)?;
        let m = f.metadata().map_err(|e| LayerError::io(host, e))?;
        if !m.is_file() {
            return Err(LayerError::io(host, io::Error::other("not a regular file")));
        }
        self.header(&p, Kind::Regular, meta, m.len(), b"", (0, 0))?;
        self.copy_file(f, host)
    }

    pub fn append_symlink(
        &mut self,
        path: &Path,
        target: &Path,
        meta: &EntryMeta,
    ) -> Result<(), LayerError> {
        let p = non_empty(path)?;
        let t = sys::os_bytes(target.as_os_str()).to_vec();
        self.header(&p, Kind::Symlink, meta, 0, &t, (0, 0))
    }

    /// Appends a hard link to `target`, an entry earlier in this layer (or in a lower layer).
    pub fn append_hardlink(
        &mut self,
        path: &Path,
        target: &Path,
        meta: &EntryMeta,
    ) -> Result<(), LayerError> {
        let p = non_empty(path)?;
        let t = non_empty(target)?;
        self.header(&p, Kind::HardLink, meta, 0, &t, (0, 0))
    }

    pub fn append_fifo(&mut self, path: &Path, meta: &EntryMeta) -> Result<(), LayerError> {
        let p = non_empty(path)?;
        self.header(&p, Kind::Fifo, meta, 0, b"", (0, 0))
    }

    pub fn append_device(
        &mut self,
        path: &Path,
        kind: DeviceKind,
        major: u64,
        minor: u64,
        meta: &EntryMeta,
    ) -> Result<(), LayerError> {
        let p = non_empty(path)?;
        let k = match kind {
            DeviceKind::Char => Kind::Char,
            DeviceKind::Block => Kind::Block,
        };
        self.header(&p, k, meta, 0, b"", (major, minor))
    }

    /// Appends an OCI whiteout for `path`: the entry `dir/.wh.NAME`, which deletes `dir/NAME`
    /// from the layers below.
    pub fn append_whiteout(&mut self, path: &Path, meta: &EntryMeta) -> Result<(), LayerError> {
        let p = non_empty(path)?;
        let (dir, name) = split_parent(&p);
        let mut wh = b".wh.".to_vec();
        wh.extend_from_slice(name);
        let full = join(dir, &wh);
        self.header(&full, Kind::Regular, meta, 0, b"", (0, 0))
    }

    /// Appends the opaque marker `dir/.wh..wh..opq`: the directory hides everything below it
    /// in lower layers. Append it right after the directory's own entry.
    pub fn append_opaque(&mut self, dir: &Path, meta: &EntryMeta) -> Result<(), LayerError> {
        let d = clean_path(dir)?;
        let full = join(&d, b".wh..wh..opq");
        self.header(&full, Kind::Regular, meta, 0, b"", (0, 0))
    }

    /// Archives the host tree at `host` under `prefix` in the layer (the host root itself is not
    /// an entry). Symlinks are archived, never followed.
    pub fn append_tree(
        &mut self,
        prefix: &Path,
        host: &Path,
        kind: SourceKind,
    ) -> Result<(), LayerError> {
        self.append_tree_with(prefix, host, kind, &mut |_, _| {})
    }

    /// Like [`append_tree`](Self::append_tree), calling `edit` with each entry's layer path and
    /// metadata before it is written (for `COPY --chown`/`--chmod`).
    pub fn append_tree_with(
        &mut self,
        prefix: &Path,
        host: &Path,
        kind: SourceKind,
        edit: &mut dyn FnMut(&Path, &mut EntryMeta),
    ) -> Result<(), LayerError> {
        let prefix = clean_path(prefix)?;
        let m = fs::symlink_metadata(host).map_err(|e| LayerError::io(host, e))?;
        if !m.is_dir() {
            return Err(LayerError::io(host, io::Error::other("not a directory")));
        }
        self.walk(host, &prefix, kind, edit)
    }

    fn walk(
        &mut self,
        host_dir: &Path,
        layer_dir: &[u8],
        kind: SourceKind,
        edit: &mut dyn FnMut(&Path, &mut EntryMeta),
    ) -> Result<(), LayerError> {
        let mut names: Vec<OsString> = Vec::new();
        for ent in fs::read_dir(host_dir).map_err(|e| LayerError::io(host_dir, e))? {
            names.push(ent.map_err(|e| LayerError::io(host_dir, e))?.file_name());
        }
        names.sort_by(|a, b| sys::os_bytes(a).cmp(sys::os_bytes(b)));
        for name in names {
            let host = host_dir.join(&name);
            let lpath = join(layer_dir, sys::os_bytes(&name));
            self.entry(&host, &lpath, kind, edit)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        host: &Path,
        lpath: &[u8],
        kind: SourceKind,
        edit: &mut dyn FnMut(&Path, &mut EntryMeta),
    ) -> Result<(), LayerError> {
        let m = match fs::symlink_metadata(host) {
            Ok(m) => m,
            // Removed between readdir and lstat: it is simply not part of the layer.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(LayerError::io(host, e)),
        };
        let ft = m.file_type();
        let mut meta = EntryMeta::from_metadata(&m);
        let lpath_os = PathBuf::from(OsStr::from_bytes(lpath));

        if kind == SourceKind::OverlayUpper && ft.is_char_device() && m.rdev() == 0 {
            edit(&lpath_os, &mut meta);
            meta.xattrs.clear();
            return self.append_whiteout(&lpath_os, &meta);
        }

        for (k, v) in sys::list_xattrs(host).map_err(|e| LayerError::io(host, e))? {
            if kind == SourceKind::OverlayUpper && is_overlay_rewrite(&k) {
                // A renamed directory or a metadata-only copy-up: the upper dir alone no longer
                // describes the change, and archiving it would silently lose content.
                return Err(LayerError::Unsupported {
                    entry: String::from_utf8_lossy(lpath).into_owned(),
                    what: format!(
                        "overlay xattr {k} (mount the overlay with redirect_dir=off,metacopy=off)"
                    ),
                });
            }
            if !is_overlay_xattr(&k) {
                meta.xattrs.insert(k, v);
            }
        }
        edit(&lpath_os, &mut meta);

        if ft.is_dir() {
            self.header(lpath, Kind::Dir, &meta, 0, b"", (0, 0))?;
            if kind == SourceKind::OverlayUpper && is_opaque(host)? {
                let wh = EntryMeta {
                    xattrs: BTreeMap::new(),
                    ..meta.clone()
                };
                self.append_opaque(&lpath_os, &wh)?;
            }
            return self.walk(host, lpath, kind, edit);
        }
        if ft.is_socket() {
            // Sockets cannot be archived (Docker and BuildKit skip them too).
            return Ok(());
        }
        if m.nlink() > 1 {
            let key = (m.dev(), m.ino());
            if let Some(first) = self.links.get(&key).cloned() {
                return self.header(lpath, Kind::HardLink, &meta, 0, &first, (0, 0));
            }
            self.links.insert(key, lpath.to_vec());
        }
        if ft.is_file() {
            let f = open_nofollow(host)?;
            let fm = f.metadata().map_err(|e| LayerError::io(host, e))?;
            if fm.ino() != m.ino() || fm.dev() != m.dev() || fm.len() != m.len() {
                return Err(LayerError::Changed {
                    path: host.to_path_buf(),
                });
            }
            self.header(lpath, Kind::Regular, &meta, m.len(), b"", (0, 0))?;
            self.copy_file(f, host)
        } else if ft.is_symlink() {
            let t = fs::read_link(host).map_err(|e| LayerError::io(host, e))?;
            self.header(
                lpath,
                Kind::Symlink,
                &meta,
                0,
                sys::os_bytes(t.as_os_str()),
                (0, 0),
            )
        } else if ft.is_fifo() {
            self.header(lpath, Kind::Fifo, &meta, 0, b"", (0, 0))
        } else if ft.is_char_device() || ft.is_block_device() {
            let k = if ft.is_char_device() {
                Kind::Char
            } else {
                Kind::Block
            };
            self.header(lpath, k, &meta, 0, b"", sys::dev_split(m.rdev()))
        } else {
            Err(LayerError::io(host, io::Error::other("unknown file type")))
        }
    }

    fn copy_file(&mut self, mut f: File, host: &Path) -> Result<(), LayerError> {
        loop {
            let want = (self.tar.pending() as usize).min(self.buf.len());
            if want == 0 {
                break;
            }
            let n = match f.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(LayerError::Changed {
                        path: host.to_path_buf(),
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LayerError::io(host, e)),
            };
            self.tar
                .write_data(&self.buf[..n])
                .map_err(LayerError::Stream)?;
        }
        // One more byte would mean the file grew while being read.
        let mut one = [0u8; 1];
        match f.read(&mut one) {
            Ok(0) => {}
            Ok(_) => {
                return Err(LayerError::Changed {
                    path: host.to_path_buf(),
                })
            }
            Err(e) => return Err(LayerError::io(host, e)),
        }
        self.tar.end_entry().map_err(LayerError::Stream)
    }

    fn copy_data(&mut self, data: &mut dyn Read, path: &Path) -> Result<(), LayerError> {
        loop {
            let want = (self.tar.pending() as usize).min(self.buf.len());
            if want == 0 {
                break;
            }
            let n = match data.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(LayerError::io(
                        path,
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "reader ended before the announced size",
                        ),
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LayerError::io(path, e)),
            };
            self.tar
                .write_data(&self.buf[..n])
                .map_err(LayerError::Stream)?;
        }
        self.tar.end_entry().map_err(LayerError::Stream)
    }

    /// Ends the archive, flushes the compressor and returns the layer's description and `out`.
    pub fn finish(self) -> Result<(LayerInfo, W), LayerError> {
        let sink = self.tar.finish().map_err(LayerError::Stream)?;
        let (hasher, uncompressed_size) = (sink.hasher, sink.written);
        let blob = sink
            .inner
            .into_inner()
            .map_err(|e| LayerError::Stream(e.into_error()))?;
        let (digest, size, mut out) = blob.finish().map_err(LayerError::Stream)?;
        // Without compression the blob is the tar: its digest is the diff_id.
        let diff_id = match hasher {
            Some(h) => h.finish(),
            None => digest.clone(),
        };
        out.flush().map_err(LayerError::Stream)?;
        let media_type = self.compression.media_type_oci().to_string();
        Ok((
            LayerInfo {
                diff_id,
                digest,
                size,
                uncompressed_size,
                media_type,
            },
            out,
        ))
    }
}

fn open_nofollow(host: &Path) -> Result<File, LayerError> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(host)
        .map_err(|e| LayerError::io(host, e))
}

fn is_opaque(dir: &Path) -> Result<bool, LayerError> {
    for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        if let Some(v) = sys::get_xattr(dir, name).map_err(|e| LayerError::io(dir, e))? {
            if v == b"y" {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The layer path of an entry as a host-independent `PathBuf` (for callers building paths).
pub fn layer_path(p: &Path) -> Result<PathBuf, LayerError> {
    let c = clean_path(p)?;
    Ok(PathBuf::from(OsStr::from_bytes(&c)))
}
