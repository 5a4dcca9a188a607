//! Compression on the way out.
//!
//! Layers a build makes are stored as plain tars: compressing is the most expensive part of
//! writing a layer, and an image that only ever runs from this store never needs it. When an
//! image leaves the store (a push, an OCI layout, an archive, a remote cache) its plain layers are
//! compressed here, once per layer and codec: the result is remembered in a state file, so a
//! second push of the same layer, or another image sharing it, reuses the compressed blob.

use std::io::{self, BufReader, Read};

use forge_oci::image::{media, to_canonical_json};
use forge_oci::{Compression, Descriptor, Digest, Manifest};
use serde_json::Value;

use crate::{Store, StoreError};

/// Whether a layer descriptor names an uncompressed tar.
pub fn is_plain_layer(d: &Descriptor) -> bool {
    matches!(Compression::from_media_type(&d.media_type), Some(Compression::None))
}

fn codec_name(c: Compression) -> String {
    match c {
        Compression::None => "none".into(),
        Compression::Gzip { level } => format!("gzip{level}"),
        Compression::Zstd { level } => format!("zstd{level}"),
    }
}

impl Store {
    /// `layer` (a blob in this store) as a blob compressed with `c` (same diff_id);
    /// `docker_types` picks Docker's media type instead of OCI's. A layer already in `c`'s codec
    /// (levels aside), and a blob that is not a layer, come back unchanged. A plain tar is
    /// checked against its digest while it is compressed; another codec is decoded first. The
    /// result is remembered per source blob and codec.
    pub fn compressed_layer(&self, layer: &Descriptor, c: Compression, docker_types: bool) -> Result<Descriptor, StoreError> {
        let Some(have) = Compression::from_media_type(&layer.media_type) else {
            return Ok(layer.clone());
        };
        if std::mem::discriminant(&have) == std::mem::discriminant(&c) {
            return Ok(layer.clone());
        }
        let media_type = if docker_types { c.media_type_docker() } else { c.media_type_oci() };
        let memo = format!("compressed-v1-{}-{}", layer.digest.hex(), codec_name(c));
        if let Some(bytes) = self.read_state(&memo)? {
            if let Ok(d) = serde_json::from_slice::<Descriptor>(&bytes) {
                if self.has_blob(&d.digest) {
                    return Ok(Descriptor::new(media_type, d.digest, d.size));
                }
            }
        }
        let src = BufReader::with_capacity(1 << 20, self.open_blob(&layer.digest)?);
        let path = self.blob_path(&layer.digest);
        let w = self.blob_writer()?;
        let mut enc = c.encoder(w).map_err(StoreError::io("compress", &path))?;
        match have {
            Compression::None => copy_verified(src, &mut enc, &layer.digest),
            _ => forge_oci::decompress(src)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
                .and_then(|mut r| io::copy(&mut r, &mut enc).map(|_| ())),
        }
        .map_err(StoreError::io("compress", &path))?;
        let w = enc.finish().map_err(StoreError::io("compress", &path))?;
        let (digest, size) = w.commit(None)?;
        let d = Descriptor::new(media_type, digest, size);
        // Only a shortcut: losing it costs a recompression, never a wrong answer.
        let _ = self.write_state(&memo, &serde_json::to_vec(&d).expect("descriptor is JSON"));
        Ok(d)
    }

    /// The image `manifest` ready to leave the store: every plain-tar layer compressed with `c`
    /// (in parallel, one layer per thread), under a new manifest with the same config. Returns
    /// the manifest's descriptor; when nothing needed compressing (or `manifest` is an index, or
    /// `c` is `None`) that is `manifest` itself.
    pub fn export_image(&self, manifest: &Digest, c: Compression) -> Result<Descriptor, StoreError> {
        let bytes = self.read_blob(manifest)?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|source| StoreError::BadJson {
            digest: manifest.clone(),
            what: "manifest",
            source,
        })?;
        let mt = value.get("mediaType").and_then(Value::as_str).unwrap_or(media::OCI_MANIFEST).to_string();
        let unchanged = Descriptor::new(mt.clone(), manifest.clone(), bytes.len() as u64);
        if c == Compression::None || !value.get("layers").is_some_and(Value::is_array) {
            return Ok(unchanged);
        }
        let mut m: Manifest = serde_json::from_value(value).map_err(|source| StoreError::BadJson {
            digest: manifest.clone(),
            what: "manifest",
            source,
        })?;
        let plain: Vec<usize> = (0..m.layers.len()).filter(|&i| is_plain_layer(&m.layers[i])).collect();
        if plain.is_empty() {
            return Ok(unchanged);
        }
        let docker_types = mt == media::DOCKER_MANIFEST;
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).min(plain.len());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<Vec<(usize, Result<Descriptor, StoreError>)>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(&i) = plain.get(n) else { break };
                            done.push((i, self.compressed_layer(&m.layers[i], c, docker_types)));
                        }
                        done
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("compression worker panicked")).collect()
        });
        for (i, r) in results.into_iter().flatten() {
            let mut d = r?;
            d.annotations = m.layers[i].annotations.take();
            m.layers[i] = d;
        }
        let out = to_canonical_json(&m);
        let digest = self.put_blob_bytes(&out)?;
        Ok(Descriptor::new(mt, digest, out.len() as u64))
    }
}

/// Copies `r` into `w`, checking that what was read hashes to `expected` (a plain layer's
/// digest is its content's sha256), so a corrupt blob is never compressed into a valid-looking
/// one.
fn copy_verified(mut r: impl Read, w: &mut impl io::Write, expected: &Digest) -> io::Result<()> {
    let mut h = forge_oci::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        w.write_all(&buf[..n])?;
    }
    let got = h.finish();
    if &got != expected {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("blob {expected} is corrupt: its content hashes to {got}"),
        ));
    }
    Ok(())
}
