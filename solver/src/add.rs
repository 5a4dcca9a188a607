//! ADD's extra over COPY: local archives (tar, optionally gzip, bzip2, xz or zstd compressed)
//! are unpacked into the destination instead of copied.

use std::io::Read;
use std::path::Path;

use forge_oci::apply::{apply_layer, ApplyMode, ApplyOptions};

use crate::context::Kind;
use crate::copy::{self, CopyItem, CopyPlan};
use crate::error::{Location, SolveError};
use crate::layered::LayeredView;

/// The compression an archive uses, by its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveKind {
    Tar,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// Recognizes a local archive: its compression by the first bytes, then whether what is inside
/// really is a tar. As in BuildKit, a compressed file that does not hold a tar (a `.gz` of a text
/// file) is no archive: ADD copies it as it is.
pub fn detect(path: &Path) -> Option<ArchiveKind> {
    let kind = compression_of(path)?;
    let mut r = forge_oci::decompress(open_archive(path, kind).ok()?).ok()?;
    let mut block = [0u8; 512];
    let mut n = 0;
    while n < block.len() {
        match r.read(&mut block[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    (n == block.len() && is_tar_header(&block)).then_some(kind)
}

/// The compression by magic bytes; `Tar` stands for "none" here.
fn compression_of(path: &Path) -> Option<ArchiveKind> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 6];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    let h = &head[..n];
    Some(if h.starts_with(&[0x1f, 0x8b]) {
        ArchiveKind::Gzip
    } else if h.starts_with(b"BZh") {
        ArchiveKind::Bzip2
    } else if h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        ArchiveKind::Xz
    } else if h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        ArchiveKind::Zstd
    } else {
        ArchiveKind::Tar
    })
}

/// A tar header block: not all zeros, and its checksum (the bytes summed with the checksum field
/// read as spaces, unsigned or signed as old writers did) matches the octal number stored in it.
/// This accepts ustar, GNU and old V7 headers alike, as Go's archive/tar does.
fn is_tar_header(block: &[u8; 512]) -> bool {
    if block.iter().all(|&b| b == 0) {
        return false;
    }
    let field = &block[148..156];
    let digits: String = field.iter().map(|&b| b as char).filter(|c| !matches!(c, ' ' | '\0')).collect();
    let Ok(stored) = i64::from_str_radix(&digits, 8) else { return false };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || stored == signed
}

fn open_archive(path: &Path, kind: ArchiveKind) -> std::io::Result<Box<dyn Read>> {
    let f = std::io::BufReader::new(std::fs::File::open(path)?);
    Ok(match kind {
        // gzip, zstd and plain tars are recognized by the layer applier itself.
        ArchiveKind::Tar | ArchiveKind::Gzip | ArchiveKind::Zstd => Box::new(f),
        ArchiveKind::Bzip2 => Box::new(bzip2::read::BzDecoder::new(f)),
        ArchiveKind::Xz => Box::new(xz2::read::XzDecoder::new(f)),
    })
}

/// Like [`copy::materialize`], but top-level archive files are unpacked into their destination
/// directory.
pub fn materialize_with_unpack(
    plan: &CopyPlan<'_>,
    staging: &Path,
    view: &LayeredView,
    owner: (u32, u32),
    loc: &Location,
) -> Result<(), SolveError> {
    let mut archives = Vec::new();
    plan.for_each(&mut |it| {
        if it.top && it.kind == Kind::File && detect(&it.host()).is_some() {
            archives.push(it.clone());
        }
        Ok(())
    })?;
    let is_archive = |it: &CopyItem| it.top && archives.iter().any(|a| a.dest == it.dest && a.label == it.label);
    copy::materialize_reusing(plan, staging, view, owner, None, &|it| !is_archive(it))?;
    for it in &archives {
        let host = it.host();
        let kind = detect(&host).ok_or_else(|| SolveError::step(loc, "archive vanished while building"))?;
        // `ADD a.tar.gz /dir/` unpacks into /dir; `ADD a.tar /x` unpacks into /x.
        let base = host.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let dest_dir = match it.dest.rsplit_once('/') {
            Some((parent, name)) if name == base => if parent.is_empty() { "/".to_string() } else { parent.to_string() },
            _ => it.dest.to_string(),
        };
        let target = staging.join(dest_dir.trim_start_matches('/'));
        // The destination and its missing parents are made as BuildKit's MkdirAll does: 0755
        // and the --chown owner when new, with the image's own metadata when they exist.
        let mut made = Vec::new();
        let probe = format!("{}/-", dest_dir.trim_end_matches('/'));
        copy::ensure_parents(staging, &probe, view, owner, &mut made).map_err(|e| SolveError::io(&target, e))?;
        let r = open_archive(&host, kind).map_err(|e| SolveError::io(&host, e))?;
        apply_layer(r, &target, &ApplyOptions::new(ApplyMode::Merged)).map_err(|e| SolveError::Step {
            location: loc.clone(),
            message: format!("cannot unpack {}: {e}", it.label),
            help: None,
        })?;
        for (p, t) in made.iter().rev() {
            copy::set_mtime(p, *t).map_err(|e| SolveError::io(p, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-entry tar holding `name`.
    fn tar_bytes(name: &str) -> Vec<u8> {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(b"00000000000");
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = b'0';
        h[257..262].copy_from_slice(b"ustar");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let mut v = h.to_vec();
        v.extend_from_slice(&[0u8; 1024]);
        v
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn detects_by_content_not_by_name() {
        let t = tempfile::tempdir().unwrap();
        let write = |name: &str, data: &[u8]| {
            let p = t.path().join(name);
            std::fs::write(&p, data).unwrap();
            p
        };
        assert_eq!(detect(&write("a.bin", &gzip(&tar_bytes("f")))), Some(ArchiveKind::Gzip));
        assert_eq!(detect(&write("c", &tar_bytes("f"))), Some(ArchiveKind::Tar));
        assert_eq!(detect(&write("b.tar.gz", b"not an archive")), None);
        // Compressed, but not a tar: copied as is (BuildKit's rule).
        assert_eq!(detect(&write("notes.txt.gz", &gzip(b"plain text, long enough to fill a block? no."))), None);
        assert_eq!(detect(&write("big.txt.gz", &gzip(&[b'x'; 2048]))), None);
        // A corrupted checksum is no tar.
        let mut bad = tar_bytes("f");
        bad[0] = b'g';
        assert_eq!(detect(&write("bad.tar", &bad)), None);
        assert_eq!(detect(&write("zeros.tar", &[0u8; 1024])), None);
    }
}
