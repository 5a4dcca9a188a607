//! Where blobs come from and go to. The store in forge-cache implements both traits; so do the
//! small in-memory and directory-backed implementations here, used by tests and by tools that
//! read or write OCI layouts directly.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{Digest, Hasher};

/// A read-only source of content-addressed blobs.
pub trait BlobSource {
    /// Opens a blob for streaming. `NotFound` when the blob is absent.
    fn open_blob(&self, d: &Digest) -> io::Result<Box<dyn Read + Send>>;
    /// The size of a blob in bytes. `NotFound` when the blob is absent.
    fn blob_size(&self, d: &Digest) -> io::Result<u64>;
}

/// A writable blob store.
pub trait BlobSink {
    fn has_blob(&self, d: &Digest) -> bool;
    /// Streams `r` into a blob; verifies against `expected` when given; atomic.
    fn put_blob(&self, r: &mut dyn Read, expected: Option<&Digest>) -> io::Result<(Digest, u64)>;
}

/// Reads a whole blob into memory (for manifests, configs and indexes — never layers).
pub fn read_blob_bytes(src: &dyn BlobSource, d: &Digest) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    src.open_blob(d)?.read_to_end(&mut buf)?;
    let got = Digest::of(&buf);
    if &got != d {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("blob {d} has content with digest {got}"),
        ));
    }
    Ok(buf)
}

fn mismatch(expected: &Digest, got: &Digest) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("digest mismatch: expected {expected}, got {got}"),
    )
}

/// Blobs kept in memory. For tests and small tools.
#[derive(Default)]
pub struct MemoryBlobs {
    blobs: Mutex<HashMap<Digest, std::sync::Arc<Vec<u8>>>>,
}

impl MemoryBlobs {
    pub fn new() -> MemoryBlobs {
        MemoryBlobs::default()
    }
    /// Stores bytes and returns their digest.
    pub fn insert(&self, bytes: Vec<u8>) -> Digest {
        let d = Digest::of(&bytes);
        self.blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(d.clone(), bytes.into());
        d
    }
    pub fn get(&self, d: &Digest) -> Option<Vec<u8>> {
        self.blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(d)
            .map(|b| b.to_vec())
    }
    pub fn len(&self) -> usize {
        self.blobs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl BlobSource for MemoryBlobs {
    fn open_blob(&self, d: &Digest) -> io::Result<Box<dyn Read + Send>> {
        let b = self
            .blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(d)
            .cloned();
        match b {
            Some(b) => Ok(Box::new(io::Cursor::new(ArcBytes(b)))),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("blob {d} not found"),
            )),
        }
    }
    fn blob_size(&self, d: &Digest) -> io::Result<u64> {
        let b = self
            .blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(d)
            .map(|b| b.len());
        b.map(|n| n as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("blob {d} not found")))
    }
}

struct ArcBytes(std::sync::Arc<Vec<u8>>);
impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl BlobSink for MemoryBlobs {
    fn has_blob(&self, d: &Digest) -> bool {
        self.blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(d)
    }
    fn put_blob(&self, r: &mut dyn Read, expected: Option<&Digest>) -> io::Result<(Digest, u64)> {
        let mut buf = Vec::new();
        r.read_to_end(&mut buf)?;
        let d = Digest::of(&buf);
        if let Some(e) = expected {
            if e != &d {
                return Err(mismatch(e, &d));
            }
        }
        let n = buf.len() as u64;
        self.blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(d.clone(), buf.into());
        Ok((d, n))
    }
}

/// Blobs in a directory laid out as an OCI layout's `blobs/`: `<root>/sha256/<hex>`.
pub struct DirBlobs {
    root: PathBuf,
}

impl DirBlobs {
    /// `root` is the directory that holds `sha256/` (an OCI layout's `blobs` folder).
    pub fn new(root: impl Into<PathBuf>) -> DirBlobs {
        DirBlobs { root: root.into() }
    }
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join(d.algorithm()).join(d.hex())
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl BlobSource for DirBlobs {
    fn open_blob(&self, d: &Digest) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(std::fs::File::open(self.path(d))?))
    }
    fn blob_size(&self, d: &Digest) -> io::Result<u64> {
        Ok(std::fs::metadata(self.path(d))?.len())
    }
}

impl BlobSink for DirBlobs {
    fn has_blob(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }
    fn put_blob(&self, r: &mut dyn Read, expected: Option<&Digest>) -> io::Result<(Digest, u64)> {
        let dir = self.root.join("sha256");
        std::fs::create_dir_all(&dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        let mut hasher = Hasher::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let k = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..k]);
            tmp.write_all(&buf[..k])?;
            n += k as u64;
        }
        let d = hasher.finish();
        if let Some(e) = expected {
            if e != &d {
                return Err(mismatch(e, &d));
            }
        }
        tmp.as_file().sync_all()?;
        tmp.persist(self.path(&d)).map_err(|e| e.error)?;
        Ok((d, n))
    }
}
