//! ADD's extra over COPY: local archives (tar, optionally gzip, bzip2, xz or zstd compressed)
//! are unpacked into the destination instead of copied.

use std::io::Read;
use std::path::Path;

use forge_oci::apply::{apply_layer, ApplyMode, ApplyOptions};

use crate::context::Kind;
use crate::copy::{self, CopyItem};
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

/// Recognizes a local archive by its first bytes (a tar has `ustar` at offset 257).
pub fn detect(path: &Path) -> Option<ArchiveKind> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 262];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    let h = &head[..n];
    if h.starts_with(&[0x1f, 0x8b]) {
        Some(ArchiveKind::Gzip)
    } else if h.starts_with(b"BZh") {
        Some(ArchiveKind::Bzip2)
    } else if h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(ArchiveKind::Xz)
    } else if h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(ArchiveKind::Zstd)
    } else if n >= 262 && &h[257..262] == b"ustar" {
        Some(ArchiveKind::Tar)
    } else {
        None
    }
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
    items: &[CopyItem],
    staging: &Path,
    view: &LayeredView,
    owner: (u32, u32),
    loc: &Location,
) -> Result<(), SolveError> {
    let (archives, plain): (Vec<&CopyItem>, Vec<&CopyItem>) =
        items.iter().partition(|it| it.top && it.kind == Kind::File && detect(&it.host).is_some());
    let plain: Vec<CopyItem> = plain.into_iter().cloned().collect();
    copy::materialize(&plain, staging, view, owner)?;
    for it in archives {
        let kind = detect(&it.host).ok_or_else(|| SolveError::step(loc, "archive vanished while building"))?;
        // `ADD a.tar.gz /dir/` unpacks into /dir; `ADD a.tar /x` unpacks into /x.
        let base = it.host.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let dest_dir = match it.dest.rsplit_once('/') {
            Some((parent, name)) if name == base => if parent.is_empty() { "/".to_string() } else { parent.to_string() },
            _ => it.dest.clone(),
        };
        let target = staging.join(dest_dir.trim_start_matches('/'));
        std::fs::create_dir_all(&target).map_err(|e| SolveError::io(&target, e))?;
        let r = open_archive(&it.host, kind).map_err(|e| SolveError::io(&it.host, e))?;
        apply_layer(r, &target, &ApplyOptions::new(ApplyMode::Merged)).map_err(|e| SolveError::Step {
            location: loc.clone(),
            message: format!("cannot unpack {}: {e}", it.label),
            help: None,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_magic_not_by_name() {
        let t = tempfile::tempdir().unwrap();
        let gz = t.path().join("a.bin");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0]).unwrap();
        assert_eq!(detect(&gz), Some(ArchiveKind::Gzip));
        let txt = t.path().join("b.tar.gz");
        std::fs::write(&txt, "not an archive").unwrap();
        assert_eq!(detect(&txt), None);
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        let tp = t.path().join("c");
        std::fs::write(&tp, &tar).unwrap();
        assert_eq!(detect(&tp), Some(ArchiveKind::Tar));
    }
}
