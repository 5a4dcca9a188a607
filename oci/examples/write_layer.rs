//! Writes a directory as a layer blob and prints its description.
//!
//! `cargo run -p forge-oci --example write_layer -- DIR OUT [gzip|zstd|none] [LEVEL] [--upper]`

use std::path::PathBuf;

use forge_oci::{write_layer, Compression, LayerOptions, SourceKind};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: write_layer DIR OUT [gzip|zstd|none] [LEVEL] [--upper]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&args[0]);
    let out = std::fs::File::create(&args[1])?;
    let level = args
        .get(3)
        .filter(|a| !a.starts_with("--"))
        .map(|l| l.parse::<i64>())
        .transpose()?;
    let compression = match args.get(2).map(String::as_str) {
        Some("zstd") => Compression::Zstd {
            level: level.unwrap_or(3) as i32,
        },
        Some("none") => Compression::None,
        _ => Compression::Gzip {
            level: level.unwrap_or(1) as u32,
        },
    };
    let kind = if args.iter().any(|a| a == "--upper") {
        SourceKind::OverlayUpper
    } else {
        SourceKind::Tree
    };
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok());
    let opts = LayerOptions {
        compression,
        source_date_epoch: epoch,
        kind,
    };
    let t = std::time::Instant::now();
    let (info, _) = write_layer(&dir, &opts, std::io::BufWriter::new(out))?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "diff_id {}\ndigest  {}\nsize    {}\ntar     {}\ntype    {}",
        info.diff_id, info.digest, info.size, info.uncompressed_size, info.media_type
    );
    println!(
        "{:.1} MB/s of tar",
        info.uncompressed_size as f64 / secs / 1e6
    );
    Ok(())
}
