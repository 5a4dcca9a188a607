//! Layer compression: which codec a layer blob uses, its media types, and reproducible encoders.
//!
//! Every encoder forge builds is byte-reproducible for a given input and level: gzip headers carry
//! mtime 0, no file name and a fixed OS byte; zstd runs with a fixed worker count (single-threaded
//! by default, so the frame layout never depends on the machine's core count).

use std::io::{self, Write};

use crate::image::media;

/// zstd worker threads used for every layer. Fixed (not the core count) so that blobs are
/// byte-identical on every machine.
pub const ZSTD_WORKERS: u32 = 2;

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar (`…layer.v1.tar`).
    None,
    /// gzip (`…tar+gzip`); `level` is 0..=9.
    Gzip { level: u32 },
    /// zstd (`…tar+zstd`); `level` is 1..=22 (negative levels are zstd's "fast" levels).
    Zstd { level: i32 },
}

impl Default for Compression {
    /// gzip level 1: every registry and runtime reads gzip (zstd layers still confuse older
    /// Docker engines), and level 1 makes layer writing 3–4× faster than level 6 for blobs that are
    /// typically only 10–20% larger. Pick `Zstd` for speed *and* size when consumers support it.
    fn default() -> Self {
        Compression::Gzip { level: 1 }
    }
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn media_type_oci(&self) -> &'static str {
        match self {
            Compression::None => media::OCI_LAYER_TAR,
            Compression::Gzip { .. } => media::OCI_LAYER_GZIP,
            Compression::Zstd { .. } => media::OCI_LAYER_ZSTD,
        }
    }

    /// The Docker v2 schema 2 layer media type. Docker has no zstd media type of its own, so the
    /// OCI one is returned for zstd (which is what Docker itself does).
    pub fn media_type_docker(&self) -> &'static str {
        match self {
            Compression::None => media::DOCKER_LAYER_TAR,
            Compression::Gzip { .. } => media::DOCKER_LAYER_GZIP,
            Compression::Zstd { .. } => media::OCI_LAYER_ZSTD,
        }
    }

    /// The compression a layer media type implies, if it names a layer.
    pub fn from_media_type(mt: &str) -> Option<Compression> {
        if !media::is_layer(mt) {
            return None;
        }
        if mt.ends_with("+gzip") || mt.ends_with(".gzip") {
            Some(Compression::Gzip { level: 6 })
        } else if mt.ends_with("+zstd") || mt.ends_with(".zstd") {
            Some(Compression::Zstd { level: 3 })
        } else {
            Some(Compression::None)
        }
    }

    /// Checks the level range; called by every encoder constructor.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Compression::None => Ok(()),
            Compression::Gzip { level } if level <= 9 => Ok(()),
            Compression::Gzip { level } => Err(format!("gzip level {level} is out of range 0..=9")),
            Compression::Zstd { level } if (-7..=22).contains(&level) && level != 0 => Ok(()),
            Compression::Zstd { level } => Err(format!(
                "zstd level {level} is out of range -7..=22 (0 excluded)"
            )),
        }
    }

    /// Wraps `out` in a reproducible encoder for this compression.
    pub fn encoder<W: Write>(&self, out: W) -> io::Result<Encoder<W>> {
        Encoder::new(*self, out)
    }
}

/// A zstd encoder with `workers` threads. zstd's multi-threaded output depends only on its
/// parameters, never on scheduling or on the number of workers (any N >= 1 gives the same bytes;
/// see the test below), so blobs are reproducible. Multi-threaded mode also compresses from
/// contiguous job buffers, avoiding the slower ring-buffer ("extDict") match finder that
/// single-threaded streaming falls into, which made it ~40% slower here.
fn zstd_encoder<W: Write>(
    out: W,
    level: i32,
    workers: u32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut z = zstd::stream::write::Encoder::new(out, level)?;
    z.multithread(workers)?;
    z.include_checksum(true)?;
    z.include_contentsize(false)?;
    Ok(z)
}

/// A streaming, reproducible compressor over `W`; `finish` writes the codec trailer and
/// returns `W`.
pub struct Encoder<W: Write>(Inner<W>);

enum Inner<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub fn new(c: Compression, out: W) -> io::Result<Encoder<W>> {
        c.validate()
            .map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
        Ok(Encoder(match c {
            Compression::None => Inner::Plain(out),
            Compression::Gzip { level } => {
                // mtime 0, no name, no comment, OS byte fixed at 255 ("unknown"): the header never
                // depends on when or where the layer was written.
                let gz = flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(out, flate2::Compression::new(level));
                Inner::Gzip(gz)
            }
            Compression::Zstd { level } => Inner::Zstd(zstd_encoder(out, level, ZSTD_WORKERS)?),
        }))
    }

    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        match &mut self.0 {
            Inner::Plain(w) => w,
            Inner::Gzip(g) => g.get_mut(),
            Inner::Zstd(z) => z.get_mut(),
        }
    }

    /// Writes the codec trailer and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self.0 {
            Inner::Plain(w) => Ok(w),
            Inner::Gzip(g) => g.finish(),
            Inner::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.0 {
            Inner::Plain(w) => w.write(buf),
            Inner::Gzip(g) => g.write(buf),
            Inner::Zstd(z) => z.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Inner::Plain(w) => w.flush(),
            Inner::Gzip(g) => g.flush(),
            Inner::Zstd(z) => z.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut x: u64 = 1;
        (0..6_000_000u32)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if i % 7 == 0 {
                    (x >> 60) as u8
                } else {
                    b"layer data "[i as usize % 11]
                }
            })
            .collect()
    }

    #[test]
    fn zstd_output_does_not_depend_on_worker_count() {
        let data = sample();
        let run = |workers| {
            let mut z = zstd_encoder(Vec::new(), 3, workers).unwrap();
            for chunk in data.chunks(100_000) {
                z.write_all(chunk).unwrap();
            }
            z.finish().unwrap()
        };
        let one = run(1);
        assert!(
            one == run(2) && one == run(3),
            "zstd multi-threaded output varies with workers"
        );
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), data);
    }

    #[test]
    fn gzip_is_reproducible_and_levels_are_checked() {
        let data = sample();
        let run = || {
            let mut e = Encoder::new(Compression::Gzip { level: 6 }, Vec::new()).unwrap();
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        assert!(run() == run());
        assert!(Encoder::new(Compression::Gzip { level: 10 }, Vec::new()).is_err());
        assert!(Encoder::new(Compression::Zstd { level: 0 }, Vec::new()).is_err());
        assert!(Encoder::new(Compression::Zstd { level: 23 }, Vec::new()).is_err());
    }

    #[test]
    fn media_types() {
        assert_eq!(
            Compression::Gzip { level: 1 }.media_type_oci(),
            media::OCI_LAYER_GZIP
        );
        assert_eq!(
            Compression::None.media_type_docker(),
            media::DOCKER_LAYER_TAR
        );
        assert_eq!(
            Compression::from_media_type(media::DOCKER_LAYER_GZIP),
            Some(Compression::Gzip { level: 6 })
        );
        assert_eq!(
            Compression::from_media_type(media::OCI_LAYER_ZSTD),
            Some(Compression::Zstd { level: 3 })
        );
        assert_eq!(Compression::from_media_type(media::OCI_CONFIG), None);
    }
}
