//! Build outputs (`-o/--output`): where the image or its root filesystem goes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use forge_cache::Store;
use forge_oci::apply::{apply_layer, ApplyMode, ApplyOptions};
use forge_oci::archive::{self, ArchiveFormat, ImageToExport};
use forge_oci::layer::{write_layer, LayerOptions, SourceKind};
use forge_oci::Compression;
use forge_solver::BuildOutput;

use crate::registry_images::RegistryImages;
use crate::Error;

/// One `--output`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// `type=image,name=REF[,push=true]`: tag in the store (and push).
    Image { name: String, push: bool, compression: Option<Compression> },
    /// `type=oci,dest=PATH[,tar=false]`: an OCI image layout, as a tar (default) or a directory.
    Oci { dest: PathBuf, tar: bool },
    /// `type=docker,dest=PATH`: a docker-archive for `docker load`.
    Docker { dest: PathBuf },
    /// `type=local,dest=DIR`: the final root filesystem.
    Local { dest: PathBuf },
    /// `type=tar,dest=PATH`: the final root filesystem as a tar.
    Tar { dest: PathBuf },
}

/// Splits `k=v,k=v` (values may not contain commas).
pub fn parse_kv(spec: &str) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("{spec:?}: expected key=value, found {part:?}")))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

fn parse_bool(k: &str, v: &str) -> Result<bool, Error> {
    match v {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(Error::Usage(format!("{k}={v}: expected true or false"))),
    }
}

/// Parses `compression=gzip|zstd|uncompressed` and `compression-level=N`.
fn parse_compression(kv: &BTreeMap<String, String>) -> Result<Option<Compression>, Error> {
    let level = match kv.get("compression-level") {
        Some(l) => Some(l.parse::<i32>().map_err(|_| Error::Usage(format!("compression-level={l}: expected a number")))?),
        None => None,
    };
    let c = match kv.get("compression").map(String::as_str) {
        None if level.is_none() => return Ok(None),
        None | Some("gzip") => Compression::Gzip { level: level.unwrap_or(1).clamp(0, 9) as u32 },
        Some("zstd") => Compression::Zstd { level: level.unwrap_or(3) },
        Some("uncompressed") => Compression::None,
        Some(other) => return Err(Error::Usage(format!("compression={other}: expected gzip, zstd or uncompressed"))),
    };
    c.validate().map_err(Error::Usage)?;
    Ok(Some(c))
}

impl Output {
    /// Parses a `--output` spec. A bare path means `type=local,dest=PATH`, as buildx does.
    pub fn parse(spec: &str) -> Result<Output, Error> {
        if !spec.contains('=') {
            return Ok(Output::Local { dest: PathBuf::from(spec) });
        }
        let kv = parse_kv(spec)?;
        let typ = kv.get("type").map(String::as_str).unwrap_or("local");
        let dest = || {
            kv.get("dest")
                .map(PathBuf::from)
                .ok_or_else(|| Error::Usage(format!("--output {spec:?}: type={typ} needs dest=PATH")))
        };
        let known: &[&str] = match typ {
            "image" | "registry" => &["type", "name", "push", "compression", "compression-level", "oci-mediatypes"],
            "oci" | "docker" => &["type", "dest", "tar", "name", "compression", "compression-level"],
            "local" | "tar" => &["type", "dest"],
            _ => {
                return Err(Error::Usage(format!(
                    "--output {spec:?}: unknown type {typ:?} (expected image, registry, oci, docker, local or tar)"
                )))
            }
        };
        if let Some(k) = kv.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(Error::Usage(format!("--output {spec:?}: unknown option {k:?} for type={typ}")));
        }
        Ok(match typ {
            "image" | "registry" => Output::Image {
                name: kv.get("name").cloned().ok_or_else(|| Error::Usage(format!("--output {spec:?}: type={typ} needs name=REF")))?,
                push: typ == "registry" || kv.get("push").map(|v| parse_bool("push", v)).transpose()?.unwrap_or(false),
                compression: parse_compression(&kv)?,
            },
            "oci" => Output::Oci { dest: dest()?, tar: kv.get("tar").map(|v| parse_bool("tar", v)).transpose()?.unwrap_or(true) },
            "docker" => Output::Docker { dest: dest()? },
            "local" => Output::Local { dest: dest()? },
            _ => Output::Tar { dest: dest()? },
        })
    }

    /// The layer compression a `--output` spec asks for (`compression=…`, `compression-level=…`),
    /// for any image output type: `type=oci` and `type=docker` carry no compression of their
    /// own, so the CLI applies this to the whole build ([`crate::Build::compression`]).
    pub fn spec_compression(spec: &str) -> Result<Option<Compression>, Error> {
        if !spec.contains('=') {
            return Ok(None);
        }
        parse_compression(&parse_kv(spec)?)
    }

    /// The layer compression this output asks for, if any.
    pub fn compression(&self) -> Option<Compression> {
        match self {
            Output::Image { compression, .. } => *compression,
            _ => None,
        }
    }
}

fn write_file_atomically(dest: &Path, f: impl FnOnce(&mut std::fs::File) -> Result<(), Error>) -> Result<(), Error> {
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = dest.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "output".into());
    let tmp = dir.join(format!(".{name}.forge-tmp-{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let r = f(&mut file).and_then(|_| file.sync_all().map_err(|e| Error::io(&tmp, e)));
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))
}

/// Applies the image's layers, bottom first, into `dir` (a merged root filesystem).
fn unpack_rootfs(store: &Store, out: &BuildOutput, dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for l in &out.manifest.layers {
        let blob = store.open_blob(&l.digest)?;
        apply_layer(std::io::BufReader::new(blob), dir, &ApplyOptions::new(ApplyMode::Merged))
            .map_err(|e| Error::Output { dest: dir.to_path_buf(), message: e.to_string() })?;
    }
    Ok(())
}

/// Writes one output. Returns the pushed reference, for pushing outputs.
pub fn write(
    o: &Output,
    store: &Store,
    images: &RegistryImages,
    compression: Compression,
    tags: &[String],
    out: &BuildOutput,
) -> Result<Option<String>, Error> {
    // Images leaving the store get their plain-tar layers compressed.
    let export = |names: Vec<String>| -> Result<Vec<ImageToExport>, Error> {
        let manifest = store.export_image(&out.manifest_digest, compression)?;
        Ok(vec![ImageToExport { names, manifest }])
    };
    let out_err = |dest: &Path| {
        let dest = dest.to_path_buf();
        move |e: archive::ArchiveError| Error::Output { dest: dest.clone(), message: e.to_string() }
    };
    match o {
        Output::Image { name, push, .. } => {
            let n = forge_cache::normalize_tag(name).map_err(|e| Error::Usage(format!("invalid image name {name:?}: {e}")))?;
            store.set_tag(&n, &out.manifest_digest)?;
            if *push {
                return Ok(Some(images.push(&out.manifest_digest, &n)?));
            }
            Ok(None)
        }
        Output::Oci { dest, tar } => {
            if *tar {
                write_file_atomically(dest, |f| archive::write_archive(store, &export(tags.to_vec())?, ArchiveFormat::Oci, f).map(|_| ()).map_err(out_err(dest)))?;
            } else {
                archive::write_oci_layout_dir(store, &export(tags.to_vec())?, dest).map_err(out_err(dest))?;
            }
            Ok(None)
        }
        Output::Docker { dest } => {
            write_file_atomically(dest, |f| archive::write_archive(store, &export(tags.to_vec())?, ArchiveFormat::Docker, f).map(|_| ()).map_err(out_err(dest)))?;
            Ok(None)
        }
        Output::Local { dest } => {
            unpack_rootfs(store, out, dest)?;
            Ok(None)
        }
        Output::Tar { dest } => {
            let tmp = store.temp_dir("rootfs")?;
            let dir = tmp.path().join("fs");
            unpack_rootfs(store, out, &dir)?;
            let opts = LayerOptions { compression: Compression::None, source_date_epoch: None, kind: SourceKind::Tree };
            write_file_atomically(dest, |f| {
                write_layer(&dir, &opts, f).map(|_| ()).map_err(|e| Error::Output { dest: dest.clone(), message: e.to_string() })
            })?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_output_specs() {
        assert_eq!(Output::parse("type=oci,dest=out.tar").unwrap(), Output::Oci { dest: "out.tar".into(), tar: true });
        assert_eq!(Output::parse("type=oci,dest=d,tar=false").unwrap(), Output::Oci { dest: "d".into(), tar: false });
        assert_eq!(Output::parse("./rootfs").unwrap(), Output::Local { dest: "./rootfs".into() });
        assert_eq!(
            Output::parse("type=image,name=app:1,push=true,compression=zstd").unwrap(),
            Output::Image { name: "app:1".into(), push: true, compression: Some(Compression::Zstd { level: 3 }) }
        );
        assert!(Output::parse("type=oci").unwrap_err().to_string().contains("needs dest"));
        assert!(Output::parse("type=bogus,dest=x").unwrap_err().to_string().contains("unknown type"));
        assert!(Output::parse("type=local,dest=x,tar=true").unwrap_err().to_string().contains("unknown option"));
        assert!(Output::parse("type=image,name=a,compression=lz4").is_err());
        assert_eq!(Output::spec_compression("type=oci,dest=x,compression=zstd").unwrap(), Some(Compression::Zstd { level: 3 }));
        assert_eq!(Output::spec_compression("type=docker,dest=x").unwrap(), None);
        assert_eq!(Output::spec_compression("./rootfs").unwrap(), None);
    }
}
