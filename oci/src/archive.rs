//! Image archives: OCI image layouts (a directory or a tar), docker-archives (`docker save`'s
//! `manifest.json` format) and the Combined format that `docker save` writes since Docker 25 —
//! an OCI layout whose `manifest.json` points at the same `blobs/sha256/<hex>` files.
//!
//! Writing streams every blob from a [`BlobSource`]; nothing larger than a manifest or config is
//! held in memory. Tars are deterministic: entries in a fixed order, mtime 0, root-owned.
//!
//! [`import`] detects which of the formats a path holds (directory or tar, the tar itself maybe
//! gzip- or zstd-compressed) and copies its blobs into a [`BlobSink`], verifying every digest.
//! Images that only a `manifest.json` describes get a synthesized Docker v2 schema 2 manifest;
//! their layers are kept as they are in the archive (plain tars keep the tar media type).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::apply::decompress;
use crate::blob::{read_blob_bytes, BlobSink, BlobSource, DirBlobs};
use crate::image::{media, to_canonical_json, Descriptor, ImageConfig, Index, Manifest, Platform};
use crate::tar_read::{EntryKind, ReadError, TarReader};
use crate::tar_write::{Header, Kind, TarWriter};
use crate::{Digest, Hasher};

/// The annotation OCI layouts use for an image's tag (`oci:DIR:tag`).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd (and Docker 25+) use for an image's full name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// One image to put in an archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageToExport {
    /// `repo:tag` references; may be empty.
    pub names: Vec<String>,
    /// The descriptor of the image's manifest (or index) blob.
    pub manifest: Descriptor,
}

/// Which archive to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ArchiveFormat {
    /// An OCI image layout in a tar.
    Oci,
    /// A docker-archive: `manifest.json`, `repositories`, `<config>.json`, uncompressed
    /// `<diff_id>.tar` layers.
    Docker,
    /// An OCI layout plus a docker `manifest.json` over the same blobs (what `docker save` writes
    /// since Docker 25). Readable by both OCI tools and every `docker load`.
    #[default]
    Combined,
}

/// An image found by [`import`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedImage {
    pub names: Vec<String>,
    pub manifest: Descriptor,
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Distinct blobs (or docker-archive files) written.
    pub blobs: usize,
    /// Their total size.
    pub bytes: u64,
}

/// Why an archive could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing the archive: {0}")]
    Write(#[source] io::Error),
    #[error("blob {digest}: {source}")]
    Blob {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("{what} is not valid JSON: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: expected digest {expected}, found {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{path}: not an OCI layout or docker-archive (no index.json or manifest.json)")]
    UnknownFormat { path: PathBuf },
    #[error("{path}: malformed archive tar: {reason}")]
    MalformedTar { path: PathBuf, reason: String },
    #[error("archive has no file {name:?} (referenced by {by})")]
    Missing { name: String, by: String },
    #[error("{0}")]
    Invalid(String),
    #[error("image {digest} has no manifest for {platform} in the source")]
    NoPlatform { digest: Digest, platform: String },
}

fn blob_err(d: &Digest) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Blob {
        digest: d.clone(),
        source,
    }
}

fn json<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, ArchiveError> {
    serde_json::from_slice(bytes).map_err(|source| ArchiveError::Json {
        what: what.to_string(),
        source,
    })
}

/// One `manifest.json` entry, as `docker save` writes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct OciLayoutFile {
    #[serde(rename = "imageLayoutVersion")]
    image_layout_version: String,
}

// ---------------------------------------------------------------------------------------------
// Names

/// Splits `repo[:tag][@digest]` into the repository and tag (`latest` when absent).
fn split_name(name: &str) -> (String, String) {
    let no_digest = name.split('@').next().unwrap_or(name);
    let last_slash = no_digest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match no_digest[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (no_digest[..at].to_string(), no_digest[at + 1..].to_string())
        }
        None => (no_digest.to_string(), "latest".to_string()),
    }
}

/// The full form of a name as Docker normalizes it: `busybox` → `docker.io/library/busybox:latest`.
fn full_name(name: &str) -> String {
    let (repo, tag) = split_name(name);
    let first = repo.split('/').next().unwrap_or("");
    let has_domain = repo.contains('/')
        && (first.contains('.')
            || first.contains(':')
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase()));
    let repo = if has_domain {
        repo
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    format!("{repo}:{tag}")
}

// ---------------------------------------------------------------------------------------------
// Resolving what to export

/// The blobs an export needs, in a stable order, and the docker view of each image.
struct Plan {
    /// Every blob for the OCI part, in first-use order: manifests before what they reference.
    blobs: Vec<Digest>,
    /// One single-platform manifest per image, for `manifest.json`.
    docker: Vec<(Vec<String>, Manifest, ImageConfig)>,
}

fn read_manifest(src: &dyn BlobSource, d: &Digest) -> Result<Manifest, ArchiveError> {
    json(
        &read_blob_bytes(src, d).map_err(blob_err(d))?,
        &format!("manifest {d}"),
    )
}

/// Collects the blobs below `desc` (a manifest or an index). Child manifests of an index that
/// the source does not have are left out, as `docker save` does for other platforms.
fn collect(
    src: &dyn BlobSource,
    desc: &Descriptor,
    out: &mut Vec<Digest>,
    seen: &mut BTreeSet<Digest>,
    top: bool,
) -> Result<bool, ArchiveError> {
    if !top && media::is_manifest(&desc.media_type) && src.blob_size(&desc.digest).is_err() {
        return Ok(false);
    }
    if !seen.insert(desc.digest.clone()) {
        return Ok(true);
    }
    out.push(desc.digest.clone());
    let bytes = read_blob_bytes(src, &desc.digest).map_err(blob_err(&desc.digest))?;
    if media::is_index(&desc.media_type) {
        let idx: Index = json(&bytes, &format!("index {}", desc.digest))?;
        let mut any = false;
        for m in &idx.manifests {
            any |= collect(src, m, out, seen, false)?;
        }
        if !any {
            return Err(ArchiveError::Invalid(format!(
                "index {} has none of its manifests in the source",
                desc.digest
            )));
        }
    } else if media::is_manifest(&desc.media_type) || desc.media_type.is_empty() {
        let m: Manifest = json(&bytes, &format!("manifest {}", desc.digest))?;
        for b in std::iter::once(&m.config).chain(m.layers.iter()) {
            if seen.insert(b.digest.clone()) {
                src.blob_size(&b.digest).map_err(blob_err(&b.digest))?;
                out.push(b.digest.clone());
            }
        }
    }
    Ok(true)
}

/// The single-platform manifest of an image for docker's `manifest.json`: the manifest itself,
/// or the host platform's entry of an index.
fn docker_view(
    src: &dyn BlobSource,
    desc: &Descriptor,
) -> Result<(Manifest, ImageConfig), ArchiveError> {
    let mut d = desc.clone();
    for _ in 0..4 {
        if media::is_index(&d.media_type) {
            let idx: Index = json(
                &read_blob_bytes(src, &d.digest).map_err(blob_err(&d.digest))?,
                &format!("index {}", d.digest),
            )?;
            let host = Platform::host();
            let pick = idx
                .manifests
                .iter()
                .filter(|m| src.blob_size(&m.digest).is_ok())
                .find(|m| {
                    m.platform
                        .as_ref()
                        .map(|p| host.matches(p))
                        .unwrap_or(false)
                })
                .cloned();
            d = pick.ok_or_else(|| ArchiveError::NoPlatform {
                digest: d.digest.clone(),
                platform: host.to_string(),
            })?;
            continue;
        }
        let m = read_manifest(src, &d.digest)?;
        let cfg: ImageConfig = json(
            &read_blob_bytes(src, &m.config.digest).map_err(blob_err(&m.config.digest))?,
            &format!("config {}", m.config.digest),
        )?;
        if cfg.rootfs.diff_ids.len() != m.layers.len() {
            return Err(ArchiveError::Invalid(format!(
                "manifest {} has {} layers but its config lists {} diff_ids",
                d.digest,
                m.layers.len(),
                cfg.rootfs.diff_ids.len()
            )));
        }
        return Ok((m, cfg));
    }
    Err(ArchiveError::Invalid(format!(
        "index {} nests too deeply",
        desc.digest
    )))
}

fn plan(
    src: &dyn BlobSource,
    images: &[ImageToExport],
    need_oci: bool,
    need_docker: bool,
) -> Result<Plan, ArchiveError> {
    let mut blobs = Vec::new();
    let mut seen = BTreeSet::new();
    let mut docker = Vec::new();
    for img in images {
        if need_oci {
            collect(src, &img.manifest, &mut blobs, &mut seen, true)?;
        }
        if need_docker {
            let (m, cfg) = docker_view(src, &img.manifest)?;
            if !need_oci {
                for b in std::iter::once(&m.config).chain(m.layers.iter()) {
                    src.blob_size(&b.digest).map_err(blob_err(&b.digest))?;
                }
            }
            docker.push((img.names.clone(), m, cfg));
        }
    }
    Ok(Plan { blobs, docker })
}

/// `index.json` entries: one per name (tag in `ref.name`, full name for containerd), or one
/// without annotations for an unnamed image.
fn index_entries(images: &[ImageToExport]) -> Vec<Descriptor> {
    let mut out = Vec::new();
    for img in images {
        if img.names.is_empty() {
            out.push(img.manifest.clone());
        }
        for n in &img.names {
            let mut d = img.manifest.clone();
            let mut ann = d.annotations.take().unwrap_or_default();
            ann.insert(ANNOTATION_CONTAINERD_NAME.to_string(), full_name(n));
            ann.insert(ANNOTATION_REF_NAME.to_string(), split_name(n).1);
            d.annotations = Some(ann);
            out.push(d);
        }
    }
    out
}

fn oci_index(entries: Vec<Descriptor>) -> Index {
    Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.to_string()),
        manifests: entries,
        annotations: None,
    }
}

fn layout_file() -> Vec<u8> {
    to_canonical_json(&OciLayoutFile {
        image_layout_version: "1.0.0".to_string(),
    })
}

/// `repositories`: `{"repo": {"tag": "<top layer id>"}}` (legacy; `docker load` reads
/// `manifest.json` first).
fn repositories(entries: &[(Vec<String>, String)]) -> Vec<u8> {
    let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (names, top) in entries {
        for n in names {
            let (repo, tag) = split_name(n);
            repos.entry(repo).or_default().insert(tag, top.clone());
        }
    }
    serde_json::to_vec(&repos).expect("maps of strings serialize")
}

// ---------------------------------------------------------------------------------------------
// Writing

/// Copies `len` bytes from `r` to `w`, hashing them; fails unless they hash to `expect`.
fn copy_verified(
    r: &mut dyn Read,
    w: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    expect: &Digest,
    len: u64,
) -> Result<(), ArchiveError> {
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).map_err(blob_err(expect))?;
        if k == 0 {
            break;
        }
        n += k as u64;
        if n > len {
            return Err(ArchiveError::Blob {
                digest: expect.clone(),
                source: io::Error::other("blob is larger than its recorded size"),
            });
        }
        h.update(&buf[..k]);
        w(&buf[..k]).map_err(ArchiveError::Write)?;
    }
    if n != len {
        return Err(ArchiveError::Blob {
            digest: expect.clone(),
            source: io::Error::other("blob is shorter than its recorded size"),
        });
    }
    let got = h.finish();
    if &got != expect {
        return Err(ArchiveError::DigestMismatch {
            what: format!("blob {expect}"),
            expected: expect.clone(),
            actual: got,
        });
    }
    Ok(())
}

struct TarOut<W: Write> {
    tar: TarWriter<W>,
    dirs: BTreeSet<String>,
    files: BTreeSet<String>,
    summary: ExportSummary,
}

impl<W: Write> TarOut<W> {
    fn header(&mut self, name: &str, kind: Kind, size: u64) -> Result<(), ArchiveError> {
        let h = Header {
            path: name.as_bytes(),
            kind,
            mode: if kind == Kind::Dir { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            size,
            mtime: 0,
            link: b"",
            dev_major: 0,
            dev_minor: 0,
            xattrs: &[],
        };
        self.tar.header(&h).map_err(ArchiveError::Write)
    }

    fn dir(&mut self, name: &str) -> Result<(), ArchiveError> {
        if self.dirs.insert(name.to_string()) {
            self.header(name, Kind::Dir, 0)?;
        }
        Ok(())
    }

    fn bytes(&mut self, name: &str, data: &[u8]) -> Result<(), ArchiveError> {
        self.header(name, Kind::Regular, data.len() as u64)?;
        self.tar.write_data(data).map_err(ArchiveError::Write)?;
        self.tar.end_entry().map_err(ArchiveError::Write)
    }

    /// Writes a blob from the source under `name`, once.
    fn blob(&mut self, src: &dyn BlobSource, d: &Digest, name: &str) -> Result<(), ArchiveError> {
        if !self.files.insert(name.to_string()) {
            return Ok(());
        }
        let len = src.blob_size(d).map_err(blob_err(d))?;
        let mut r = src.open_blob(d).map_err(blob_err(d))?;
        self.header(name, Kind::Regular, len)?;
        let tar = &mut self.tar;
        copy_verified(&mut r, &mut |b| tar.write_data(b), d, len)?;
        self.tar.end_entry().map_err(ArchiveError::Write)?;
        self.summary.blobs += 1;
        self.summary.bytes += len;
        Ok(())
    }

    /// Writes a layer uncompressed (docker-archive layers are plain tars). Reads the blob twice:
    /// once to learn the size and check the diff_id, once to write it.
    fn plain_layer(
        &mut self,
        src: &dyn BlobSource,
        layer: &Digest,
        diff_id: &Digest,
        name: &str,
    ) -> Result<(), ArchiveError> {
        if !self.files.insert(name.to_string()) {
            return Ok(());
        }
        let open = || -> Result<Box<dyn Read>, ArchiveError> {
            let r = src.open_blob(layer).map_err(blob_err(layer))?;
            decompress(r).map_err(|e| ArchiveError::Blob {
                digest: layer.clone(),
                source: io::Error::other(e.to_string()),
            })
        };
        let mut count = 0u64;
        let mut h = Hasher::new();
        let mut r = open()?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let k = r.read(&mut buf).map_err(blob_err(layer))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            count += k as u64;
        }
        let got = h.finish();
        if &got != diff_id {
            return Err(ArchiveError::DigestMismatch {
                what: format!("uncompressed layer {layer}"),
                expected: diff_id.clone(),
                actual: got,
            });
        }
        self.header(name, Kind::Regular, count)?;
        let tar = &mut self.tar;
        copy_verified(&mut open()?, &mut |b| tar.write_data(b), diff_id, count)?;
        self.tar.end_entry().map_err(ArchiveError::Write)?;
        self.summary.blobs += 1;
        self.summary.bytes += count;
        Ok(())
    }
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

/// Writes `images` as one archive tar in `format` to `out`.
pub fn write_archive(
    src: &dyn BlobSource,
    images: &[ImageToExport],
    format: ArchiveFormat,
    out: impl Write,
) -> Result<ExportSummary, ArchiveError> {
    let need_oci = format != ArchiveFormat::Docker;
    let need_docker = format != ArchiveFormat::Oci;
    let plan = plan(src, images, need_oci, need_docker)?;
    let mut t = TarOut {
        tar: TarWriter::new(out),
        dirs: BTreeSet::new(),
        files: BTreeSet::new(),
        summary: ExportSummary::default(),
    };

    if need_oci {
        t.dir("blobs")?;
        t.dir("blobs/sha256")?;
        for d in &plan.blobs {
            t.blob(src, d, &blob_path(d))?;
        }
        t.bytes(
            "index.json",
            &to_canonical_json(&oci_index(index_entries(images))),
        )?;
    }
    if need_docker {
        let mut entries = Vec::new();
        let mut repos = Vec::new();
        for (names, m, cfg) in &plan.docker {
            let (config, layers) = if format == ArchiveFormat::Combined {
                (
                    blob_path(&m.config.digest),
                    m.layers
                        .iter()
                        .map(|l| blob_path(&l.digest))
                        .collect::<Vec<_>>(),
                )
            } else {
                let cfg_name = format!("{}.json", m.config.digest.hex());
                t.blob(src, &m.config.digest, &cfg_name)?;
                let mut layers = Vec::new();
                for (l, diff) in m.layers.iter().zip(&cfg.rootfs.diff_ids) {
                    let name = format!("{}.tar", diff.hex());
                    if Compression::from_media_type(&l.media_type) == Some(Compression::None) {
                        // Already a plain tar: its digest is its diff_id.
                        t.blob(src, &l.digest, &name)?;
                    } else {
                        t.plain_layer(src, &l.digest, diff, &name)?;
                    }
                    layers.push(name);
                }
                (cfg_name, layers)
            };
            let top = layers
                .last()
                .map(|l| {
                    l.trim_end_matches(".tar")
                        .rsplit('/')
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
                .unwrap_or_default();
            repos.push((names.clone(), top));
            entries.push(DockerManifestEntry {
                config,
                repo_tags: Some(names.clone()),
                layers,
            });
        }
        t.bytes(
            "manifest.json",
            &serde_json::to_vec(&entries).expect("manifest.json serializes"),
        )?;
        if need_oci {
            t.bytes("oci-layout", &layout_file())?;
        }
        t.bytes("repositories", &repositories(&repos))?;
    } else {
        t.bytes("oci-layout", &layout_file())?;
    }
    let mut w = t.tar.finish().map_err(ArchiveError::Write)?;
    w.flush().map_err(ArchiveError::Write)?;
    Ok(t.summary)
}

use crate::compression::Compression;

/// Writes (or adds to) an OCI image layout directory. Existing blobs are kept; `index.json`
/// entries with the same `ref.name` as a new one are replaced.
pub fn write_oci_layout_dir(
    src: &dyn BlobSource,
    images: &[ImageToExport],
    dir: &Path,
) -> Result<ExportSummary, ArchiveError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ArchiveError::Io { path, source }
    };
    let plan = plan(src, images, true, false)?;
    fs::create_dir_all(dir.join("blobs/sha256")).map_err(io_err(dir))?;
    let blobs = DirBlobs::new(dir.join("blobs"));
    let mut summary = ExportSummary::default();
    for d in &plan.blobs {
        if blobs.has_blob(d) {
            continue;
        }
        let mut r = src.open_blob(d).map_err(blob_err(d))?;
        let (_, n) = blobs.put_blob(&mut r, Some(d)).map_err(blob_err(d))?;
        summary.blobs += 1;
        summary.bytes += n;
    }
    let index_path = dir.join("index.json");
    let mut entries: Vec<Descriptor> = match fs::read(&index_path) {
        Ok(b) => json::<Index>(&b, &index_path.display().to_string())?.manifests,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(&index_path)(e)),
    };
    let new = index_entries(images);
    let ref_of = |d: &Descriptor| {
        d.annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_REF_NAME).cloned())
    };
    let new_refs: BTreeSet<String> = new.iter().filter_map(ref_of).collect();
    entries.retain(|d| ref_of(d).map(|r| !new_refs.contains(&r)).unwrap_or(true));
    entries.extend(new);
    atomic_write(&index_path, &to_canonical_json(&oci_index(entries)))?;
    atomic_write(&dir.join("oci-layout"), &layout_file())?;
    Ok(summary)
}

fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), ArchiveError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let e = |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(e)?;
    tmp.write_all(bytes).map_err(e)?;
    tmp.persist(path).map_err(|p| e(p.error))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading

/// Files of an archive, whether a directory or a tar.
enum Files {
    Dir(PathBuf),
    Tar {
        file: File,
        path: PathBuf,
        entries: HashMap<String, TarFile>,
    },
}

#[derive(Clone)]
enum TarFile {
    Data { offset: u64, size: u64 },
    Link(String),
}

fn clean(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

struct Counting<R> {
    inner: R,
    pos: u64,
}
impl<R: Read> Read for Counting<R> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(b)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Files {
    fn open_path(path: &Path) -> Result<Files, ArchiveError> {
        let io_err = |source| ArchiveError::Io {
            path: path.to_path_buf(),
            source,
        };
        let m = fs::metadata(path).map_err(io_err)?;
        if m.is_dir() {
            return Ok(Files::Dir(path.to_path_buf()));
        }
        let mut file = File::open(path).map_err(io_err)?;
        let mut magic = [0u8; 4];
        let n = file.read(&mut magic).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        if n >= 2 && (magic[..2] == [0x1f, 0x8b] || magic == [0x28, 0xb5, 0x2f, 0xfd]) {
            // A compressed archive (`docker save | gzip`): unpack it to an anonymous temp file
            // so it can be read at random.
            let mut tmp = tempfile::tempfile().map_err(io_err)?;
            let mut r = decompress(file).map_err(|e| ArchiveError::Io {
                path: path.to_path_buf(),
                source: io::Error::other(e.to_string()),
            })?;
            io::copy(&mut r, &mut tmp).map_err(io_err)?;
            tmp.seek(SeekFrom::Start(0)).map_err(io_err)?;
            file = tmp;
        }
        let mut entries = HashMap::new();
        {
            let malformed = |e: ReadError| ArchiveError::MalformedTar {
                path: path.to_path_buf(),
                reason: match e {
                    ReadError::Io(e) => e.to_string(),
                    ReadError::Malformed(m) => m,
                },
            };
            let mut tar = TarReader::new(Counting {
                inner: io::BufReader::new(&mut file),
                pos: 0,
            });
            while let Some(e) = tar.next_entry().map_err(malformed)? {
                let name = clean(&String::from_utf8_lossy(&e.path));
                let entry = match e.kind {
                    EntryKind::Regular => TarFile::Data {
                        offset: tar.get_ref().pos,
                        size: e.size,
                    },
                    EntryKind::Symlink => {
                        let base = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                        let target = String::from_utf8_lossy(&e.link).into_owned();
                        TarFile::Link(if target.starts_with('/') {
                            clean(&target)
                        } else {
                            clean(&format!("{base}/{target}"))
                        })
                    }
                    EntryKind::HardLink => TarFile::Link(clean(&String::from_utf8_lossy(&e.link))),
                    _ => continue,
                };
                entries.insert(name, entry);
            }
        }
        Ok(Files::Tar {
            file,
            path: path.to_path_buf(),
            entries,
        })
    }

    fn resolve(entries: &HashMap<String, TarFile>, name: &str) -> Option<(u64, u64)> {
        let mut n = clean(name);
        for _ in 0..16 {
            match entries.get(&n)? {
                TarFile::Data { offset, size } => return Some((*offset, *size)),
                TarFile::Link(t) => n = t.clone(),
            }
        }
        None
    }

    fn exists(&self, name: &str) -> bool {
        match self {
            Files::Dir(d) => d.join(clean(name)).is_file(),
            Files::Tar { entries, .. } => Self::resolve(entries, name).is_some(),
        }
    }

    fn open(&self, name: &str, by: &str) -> Result<(Box<dyn Read + '_>, u64), ArchiveError> {
        let missing = || ArchiveError::Missing {
            name: name.to_string(),
            by: by.to_string(),
        };
        match self {
            Files::Dir(d) => {
                let p = d.join(clean(name));
                // Stay inside the directory: refuse names that resolve elsewhere.
                let canon = fs::canonicalize(&p).map_err(|_| missing())?;
                let root = fs::canonicalize(d).map_err(|source| ArchiveError::Io {
                    path: d.clone(),
                    source,
                })?;
                if !canon.starts_with(&root) {
                    return Err(missing());
                }
                let f = File::open(&canon).map_err(|_| missing())?;
                let len = f
                    .metadata()
                    .map_err(|source| ArchiveError::Io {
                        path: p.clone(),
                        source,
                    })?
                    .len();
                Ok((Box::new(f), len))
            }
            Files::Tar {
                file,
                path,
                entries,
            } => {
                let (offset, size) = Self::resolve(entries, name).ok_or_else(missing)?;
                let mut f = file.try_clone().map_err(|source| ArchiveError::Io {
                    path: path.clone(),
                    source,
                })?;
                f.seek(SeekFrom::Start(offset))
                    .map_err(|source| ArchiveError::Io {
                        path: path.clone(),
                        source,
                    })?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    fn read(&self, name: &str, by: &str) -> Result<Vec<u8>, ArchiveError> {
        let (mut r, len) = self.open(name, by)?;
        if len > 64 * 1024 * 1024 {
            return Err(ArchiveError::Invalid(format!(
                "{name} is too large for a metadata file"
            )));
        }
        let mut v = Vec::with_capacity(len as usize);
        r.read_to_end(&mut v).map_err(|source| ArchiveError::Io {
            path: PathBuf::from(name),
            source,
        })?;
        Ok(v)
    }
}

/// Copies a blob of the archive into the sink unless it is already there.
fn put(
    files: &Files,
    sink: &dyn BlobSink,
    name: &str,
    expect: Option<&Digest>,
    by: &str,
) -> Result<(Digest, u64), ArchiveError> {
    if let Some(d) = expect {
        if sink.has_blob(d) {
            let (_, len) = files.open(name, by)?;
            return Ok((d.clone(), len));
        }
    }
    let (mut r, _) = files.open(name, by)?;
    sink.put_blob(&mut r, expect)
        .map_err(|source| match expect {
            Some(d) if source.kind() == io::ErrorKind::InvalidData => {
                ArchiveError::Invalid(format!("{name} does not match its digest {d}: {source}"))
            }
            _ => ArchiveError::Io {
                path: PathBuf::from(name),
                source,
            },
        })
}

/// Copies `desc` and everything below it. Returns false when `desc` is a child manifest the
/// archive does not have (other platforms in a `docker save` of a multi-platform image).
fn import_tree(
    files: &Files,
    sink: &dyn BlobSink,
    desc: &Descriptor,
    top: bool,
) -> Result<bool, ArchiveError> {
    let name = blob_path(&desc.digest);
    if !top
        && !files.exists(&name)
        && (media::is_manifest(&desc.media_type) || media::is_index(&desc.media_type))
    {
        return Ok(false);
    }
    let by = format!("descriptor {}", desc.digest);
    let bytes = files.read(&name, &by)?;
    let got = Digest::of(&bytes);
    if got != desc.digest {
        return Err(ArchiveError::DigestMismatch {
            what: name,
            expected: desc.digest.clone(),
            actual: got,
        });
    }
    if bytes.len() as u64 != desc.size {
        return Err(ArchiveError::Invalid(format!(
            "{} is {} bytes, its descriptor says {}",
            desc.digest,
            bytes.len(),
            desc.size
        )));
    }
    if media::is_index(&desc.media_type) {
        let idx: Index = json(&bytes, &format!("index {}", desc.digest))?;
        let mut any = false;
        for m in &idx.manifests {
            any |= import_tree(files, sink, m, false)?;
        }
        if !any {
            return Err(ArchiveError::Invalid(format!(
                "index {} has none of its manifests in the archive",
                desc.digest
            )));
        }
    } else {
        let m: Manifest = json(&bytes, &format!("manifest {}", desc.digest))?;
        for b in std::iter::once(&m.config).chain(m.layers.iter()) {
            let (_, n) = put(files, sink, &blob_path(&b.digest), Some(&b.digest), &by)?;
            if n != b.size {
                return Err(ArchiveError::Invalid(format!(
                    "blob {} is {n} bytes, its descriptor says {}",
                    b.digest, b.size
                )));
            }
        }
        // An image config must be one: a manifest pointing its config at a layer (or any
        // other blob) is refused here rather than at the first build that uses it.
        if m.config.media_type == media::OCI_CONFIG || m.config.media_type == media::DOCKER_CONFIG {
            let cfg = files.read(&blob_path(&m.config.digest), &by)?;
            let _: ImageConfig = json(&cfg, &format!("image config {}", m.config.digest))?;
        }
    }
    sink.put_blob(&mut &bytes[..], Some(&desc.digest))
        .map_err(blob_err(&desc.digest))?;
    Ok(true)
}

/// For an index whose children are not all in the archive, the child for this host (the image
/// `docker save` actually saved); otherwise the descriptor itself.
fn usable_descriptor(files: &Files, desc: &Descriptor) -> Result<Descriptor, ArchiveError> {
    if !media::is_index(&desc.media_type) {
        return Ok(desc.clone());
    }
    let idx: Index = json(
        &files.read(&blob_path(&desc.digest), "index.json")?,
        &format!("index {}", desc.digest),
    )?;
    if idx
        .manifests
        .iter()
        .all(|m| files.exists(&blob_path(&m.digest)))
    {
        return Ok(desc.clone());
    }
    let host = Platform::host();
    let present: Vec<&Descriptor> = idx
        .manifests
        .iter()
        .filter(|m| files.exists(&blob_path(&m.digest)) && media::is_manifest(&m.media_type))
        .collect();
    present
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .map(|p| host.matches(p))
                .unwrap_or(false)
        })
        .or(present.first())
        .map(|m| (*m).clone())
        .ok_or_else(|| {
            ArchiveError::Invalid(format!(
                "index {} has none of its manifests in the archive",
                desc.digest
            ))
        })
}

/// Reads `manifest.json` if the archive has one.
fn docker_manifest(files: &Files) -> Result<Option<Vec<DockerManifestEntry>>, ArchiveError> {
    if !files.exists("manifest.json") {
        return Ok(None);
    }
    Ok(Some(json(
        &files.read("manifest.json", "archive")?,
        "manifest.json",
    )?))
}

/// Detects the format at `path` (OCI layout, docker-archive or Combined; directory or tar) and
/// copies its images into `sink`.
pub fn import(path: &Path, sink: &dyn BlobSink) -> Result<Vec<ImportedImage>, ArchiveError> {
    let files = Files::open_path(path)?;
    let docker = docker_manifest(&files)?;
    if files.exists("index.json") {
        let idx: Index = json(&files.read("index.json", "archive")?, "index.json")?;
        // Names from manifest.json, keyed by config path, for Combined archives.
        let mut repo_tags: HashMap<String, Vec<String>> = HashMap::new();
        for e in docker.iter().flatten() {
            repo_tags
                .entry(clean(&e.config))
                .or_default()
                .extend(e.repo_tags.clone().unwrap_or_default());
        }
        let mut out: Vec<ImportedImage> = Vec::new();
        for desc in &idx.manifests {
            import_tree(&files, sink, desc, true)?;
            let usable = usable_descriptor(&files, desc)?;
            let mut names = Vec::new();
            let ann = desc.annotations.clone().unwrap_or_default();
            if let Some(n) = ann.get(ANNOTATION_CONTAINERD_NAME) {
                names.push(n.clone());
            } else if let Some(r) = ann.get(ANNOTATION_REF_NAME) {
                // A bare tag names no repository; a full reference does.
                if r.contains('/') || r.contains(':') {
                    names.push(r.clone());
                }
            }
            if names.is_empty() && media::is_manifest(&usable.media_type) {
                let m: Manifest = json(
                    &files.read(&blob_path(&usable.digest), "index.json")?,
                    "manifest",
                )?;
                names.extend(
                    repo_tags
                        .get(&blob_path(&m.config.digest))
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            // index.json lists an image once per name: merge them.
            match out.iter_mut().find(|i| i.manifest.digest == usable.digest) {
                Some(i) => {
                    for n in names {
                        if !i.names.contains(&n) {
                            i.names.push(n);
                        }
                    }
                }
                None => {
                    let mut manifest = usable.clone();
                    manifest.annotations = None;
                    out.push(ImportedImage { names, manifest });
                }
            }
        }
        return Ok(out);
    }
    let Some(entries) = docker else {
        return Err(ArchiveError::UnknownFormat {
            path: path.to_path_buf(),
        });
    };
    let mut out = Vec::new();
    for e in entries {
        out.push(import_docker_entry(&files, sink, &e)?);
    }
    Ok(out)
}

/// Imports one `manifest.json` image: config and layers as they are, plus a synthesized Docker
/// v2 schema 2 manifest.
fn import_docker_entry(
    files: &Files,
    sink: &dyn BlobSink,
    e: &DockerManifestEntry,
) -> Result<ImportedImage, ArchiveError> {
    let cfg_bytes = files.read(&e.config, "manifest.json")?;
    let cfg: ImageConfig = json(&cfg_bytes, &e.config)?;
    if cfg.rootfs.diff_ids.len() != e.layers.len() {
        return Err(ArchiveError::Invalid(format!(
            "{}: config lists {} diff_ids but manifest.json lists {} layers",
            e.config,
            cfg.rootfs.diff_ids.len(),
            e.layers.len()
        )));
    }
    let (cfg_digest, cfg_size) =
        sink.put_blob(&mut &cfg_bytes[..], None)
            .map_err(|source| ArchiveError::Io {
                path: PathBuf::from(&e.config),
                source,
            })?;
    let mut layers = Vec::new();
    for (name, diff_id) in e.layers.iter().zip(&cfg.rootfs.diff_ids) {
        let (mut r, _) = files.open(name, "manifest.json")?;
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut r, &mut magic).map_err(|source| ArchiveError::Io {
            path: PathBuf::from(name),
            source,
        })?;
        drop(r);
        let mt = if n >= 2 && magic[..2] == [0x1f, 0x8b] {
            media::DOCKER_LAYER_GZIP
        } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
            media::OCI_LAYER_ZSTD
        } else {
            media::DOCKER_LAYER_TAR
        };
        let (digest, size) = if mt == media::DOCKER_LAYER_TAR {
            // A plain tar's digest is its diff_id: verified while it is stored.
            put(files, sink, name, Some(diff_id), "manifest.json")?
        } else {
            // A compressed layer: check its content against the diff_id before storing it.
            let (r, _) = files.open(name, "manifest.json")?;
            let mut plain =
                decompress(r).map_err(|err| ArchiveError::Invalid(format!("{name}: {err}")))?;
            let mut h = Hasher::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let k = plain.read(&mut buf).map_err(|source| ArchiveError::Io {
                    path: PathBuf::from(name),
                    source,
                })?;
                if k == 0 {
                    break;
                }
                h.update(&buf[..k]);
            }
            let got = h.finish();
            if &got != diff_id {
                return Err(ArchiveError::DigestMismatch {
                    what: format!("uncompressed {name}"),
                    expected: diff_id.clone(),
                    actual: got,
                });
            }
            put(files, sink, name, None, "manifest.json")?
        };
        layers.push(Descriptor::new(mt, digest, size));
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::DOCKER_MANIFEST.to_string()),
        artifact_type: None,
        config: Descriptor::new(media::DOCKER_CONFIG, cfg_digest, cfg_size),
        layers,
        annotations: None,
    };
    let bytes = to_canonical_json(&manifest);
    let (d, n) = sink
        .put_blob(&mut &bytes[..], None)
        .map_err(|source| ArchiveError::Io {
            path: PathBuf::from("manifest"),
            source,
        })?;
    let mut desc = Descriptor::new(media::DOCKER_MANIFEST, d, n);
    desc.platform = Some(cfg.platform());
    Ok(ImportedImage {
        names: e.repo_tags.clone().unwrap_or_default(),
        manifest: desc,
    })
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_and_normalize() {
        assert_eq!(split_name("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(
            split_name("localhost:5000/a/b:v1"),
            ("localhost:5000/a/b".into(), "v1".into())
        );
        assert_eq!(
            split_name("localhost:5000/a"),
            ("localhost:5000/a".into(), "latest".into())
        );
        assert_eq!(full_name("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(full_name("me/app:1"), "docker.io/me/app:1");
        assert_eq!(full_name("ghcr.io/x/y:2"), "ghcr.io/x/y:2");
        assert_eq!(full_name("localhost/y"), "localhost/y:latest");
    }

    #[test]
    fn tar_names_are_cleaned() {
        assert_eq!(clean("./blobs//sha256/x"), "blobs/sha256/x");
        assert_eq!(clean("a/../b"), "b");
    }
}
