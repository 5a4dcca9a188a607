//! Layer writing through `forge_oci::write_layer` (deterministic tar → sha256 diff_id →
//! compressor → sha256 digest) next to the shell pipelines on the same tree:
//! `tar -cf - . | gzip -1`, `| gzip -6`, `| zstd -3`, and `tar` alone. The tree is about
//! 36 MB: 2,000 text files of 1–19 KiB and a 16 MiB incompressible blob (big-context's mix at
//! a tenth of its size). Output goes to a sink / `/dev/null`; the page cache is warm.
//! The counter is the tree's file bytes, so the MB/s columns compare directly.

use divan::counter::BytesCount;
use divan::Bencher;
use forge_benches::{fixture, have, shell, Tree, TreeSpec};
use forge_oci::{write_layer, Compression, LayerOptions, SourceKind};

fn main() {
    divan::main();
}

fn tree() -> Tree {
    let t = fixture(&TreeSpec::layer_mix()).expect("fixture");
    // Warm the page cache once for every contender.
    shell(&format!(
        "tar -cf - -C '{}' . | cat > /dev/null",
        t.root.display()
    ))
    .expect("tar");
    t
}

fn forge(bencher: Bencher, c: Compression) {
    let t = tree();
    let opts = LayerOptions {
        compression: c,
        source_date_epoch: Some(0),
        kind: SourceKind::Tree,
    };
    bencher.counter(BytesCount::new(t.bytes)).bench(|| {
        write_layer(&t.root, &opts, std::io::sink())
            .expect("write_layer")
            .0
    });
}

fn pipeline(bencher: Bencher, tool: &str, compressor: &str) {
    if !have(tool) {
        eprintln!("SKIPPED: {tool} not found (baseline `tar | {compressor}` not measured)");
        return;
    }
    let t = tree();
    let cmd = format!(
        "tar -cf - -C '{}' . | {compressor} > /dev/null",
        t.root.display()
    );
    bencher
        .counter(BytesCount::new(t.bytes))
        .bench(|| shell(&cmd).expect("pipeline"));
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn forge_tar_only(b: Bencher) {
    forge(b, Compression::None)
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn forge_gzip_1(b: Bencher) {
    forge(b, Compression::Gzip { level: 1 })
}

#[divan::bench(sample_count = 3, sample_size = 1)]
fn forge_gzip_6(b: Bencher) {
    forge(b, Compression::Gzip { level: 6 })
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn forge_zstd_3(b: Bencher) {
    forge(b, Compression::Zstd { level: 3 })
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn shell_tar_only(b: Bencher) {
    pipeline(b, "tar", "cat")
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn shell_tar_gzip_1(b: Bencher) {
    pipeline(b, "gzip", "gzip -1")
}

#[divan::bench(sample_count = 3, sample_size = 1)]
fn shell_tar_gzip_6(b: Bencher) {
    pipeline(b, "gzip", "gzip -6")
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn shell_tar_zstd_3(b: Bencher) {
    pipeline(b, "zstd", "zstd -3 -q -c")
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn shell_tar_zstd_3_t2(b: Bencher) {
    pipeline(b, "zstd", "zstd -3 -T2 -q -c")
}
