//! Rough throughput numbers for the store: `cargo run --release -p forge-cache --example
//! store_bench [DIR]`. Prints a small table; measures, asserts nothing.

use std::io::Write;
use std::time::Instant;

use forge_cache::{OpenOptions, PruneOptions, Store};
use forge_oci::Digest;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = match std::env::args().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("forge-store-bench-{}", std::process::id())),
    };
    for durable in [true, false] {
        let root = base.join(if durable { "durable" } else { "fast" });
        let store = Store::open_with(&root, &OpenOptions { durable })?;
        println!("durable={durable}");

        let n = 500;
        let t = Instant::now();
        for i in 0..n {
            store.put_blob_bytes(format!("{{\"small\":{i}}}").as_bytes())?;
        }
        let el = t.elapsed();
        println!(
            "  put {n} small blobs: {:.1} ms ({:.0} µs each)",
            el.as_secs_f64() * 1e3,
            el.as_secs_f64() * 1e6 / n as f64
        );

        let mb = 256usize;
        let chunk: Vec<u8> = (0..1 << 20)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let t = Instant::now();
        let mut w = store.blob_writer()?;
        for i in 0..mb {
            let mut c = chunk.clone();
            c[0] = i as u8;
            w.write_all(&c)?;
        }
        w.commit(None)?;
        let el = t.elapsed();
        println!(
            "  stream {mb} MiB blob: {:.0} MiB/s",
            mb as f64 / el.as_secs_f64()
        );

        let snaps = 100;
        let t = Instant::now();
        for i in 0..snaps {
            store.create_snapshot(&Digest::of(format!("snap {i}").as_bytes()), |d| {
                for f in 0..20 {
                    std::fs::write(d.join(format!("f{f}")), [b'x'; 512])?;
                }
                Ok::<(), std::io::Error>(())
            })?;
        }
        let el = t.elapsed();
        println!(
            "  create {snaps} snapshots (20 files each): {:.1} ms each",
            el.as_secs_f64() * 1e3 / snaps as f64
        );

        let t = Instant::now();
        let report = store.check(false)?;
        let el = t.elapsed();
        println!(
            "  check: {} blobs, {} snapshots in {:.0} ms",
            report.blobs_checked,
            report.snapshots_checked,
            el.as_secs_f64() * 1e3
        );

        let t = Instant::now();
        let r = store.prune(&PruneOptions::default())?;
        println!(
            "  prune: {} blobs + {} snapshots, {} MiB freed in {:.0} ms",
            r.blobs_removed,
            r.snapshots_removed,
            r.bytes_freed >> 20,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    std::fs::remove_dir_all(&base)?;
    Ok(())
}
