//! Layer-writing throughput against `tar | gzip -6` and `tar | zstd -3` on the same tree.
//!
//! ```text
//! cargo run --release -p forge-oci --example layer_bench -- [DIR] [--size-mb N] [--gzip-level L]
//! ```
//! Without DIR, a deterministic tree of mixed files (text, binary-ish, random; many small files
//! and a few large ones) of about `--size-mb` (default 300) MB is generated under /tmp.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use forge_oci::{write_layer, Compression, LayerOptions, SourceKind};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn content(rng: &mut Rng, kind: u64, size: usize, words: &[String]) -> Vec<u8> {
    let mut v = Vec::with_capacity(size + 64);
    match kind {
        // Text: source-code-like lines from a vocabulary.
        0..=4 => {
            while v.len() < size {
                let indent = rng.below(4) as usize * 4;
                v.extend(std::iter::repeat_n(b' ', indent));
                for _ in 0..rng.below(10) + 1 {
                    v.extend_from_slice(words[rng.below(words.len() as u64) as usize].as_bytes());
                    v.push(if rng.below(5) == 0 { b'(' } else { b' ' });
                }
                v.push(b'\n');
            }
        }
        // Binary-ish: small integers, repeated structs, zero runs (like object code).
        5..=7 => {
            while v.len() < size {
                match rng.below(4) {
                    0 => v.extend_from_slice(&[0u8; 16][..rng.below(16) as usize]),
                    1 => v.extend_from_slice(&(rng.below(4096) as u32).to_le_bytes()),
                    2 => v.extend_from_slice(&[0x48, 0x89, 0xe5, 0x41, 0x57, rng.below(256) as u8]),
                    _ => v.extend_from_slice(&rng.next().to_le_bytes()[..rng.below(8) as usize]),
                }
            }
        }
        // Random: already compressed data (images, archives).
        _ => {
            while v.len() < size {
                v.extend_from_slice(&rng.next().to_le_bytes());
            }
        }
    }
    v.truncate(size);
    v
}

fn generate(dir: &Path, total: u64) -> io::Result<()> {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let words: Vec<String> = (0..600)
        .map(|_| {
            let n = 2 + rng.below(9) as usize;
            (0..n)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect()
        })
        .collect();
    let mut written = 0u64;
    let mut i = 0u64;
    while written < total {
        let d = dir.join(format!("d{:02}/s{:02}", i % 40, (i / 40) % 25));
        fs::create_dir_all(&d)?;
        // 2% large files (1–8 MB), the rest small (100 B – 32 KB).
        let size = if rng.below(50) == 0 {
            1_000_000 + rng.below(7_000_000) as usize
        } else {
            100 + rng.below(32_000) as usize
        };
        let kind = rng.below(10);
        fs::write(
            d.join(format!("f{i}.dat")),
            content(&mut rng, kind, size, &words),
        )?;
        written += size as u64;
        i += 1;
    }
    Ok(())
}

fn du(dir: &Path) -> u64 {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        n += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    n
}

/// CPU seconds (user + system) used so far by this process (`RUSAGE_SELF`, all threads) or by
/// its waited-for children (`RUSAGE_CHILDREN`).
fn cpu(who: libc::c_int) -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Wall and CPU seconds of a shell pipeline.
fn shell(cmd: &str) -> (f64, f64) {
    let c0 = cpu(libc::RUSAGE_CHILDREN);
    let t = Instant::now();
    let st = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdout(Stdio::null())
        .status()
        .expect("sh");
    assert!(st.success(), "{cmd} failed");
    (t.elapsed().as_secs_f64(), cpu(libc::RUSAGE_CHILDREN) - c0)
}

/// One measured run: write (or apply) a layer of `dir`.
fn child(dir: &Path, kind: &str, level: i64) {
    let compression = match kind {
        "gzip" => Compression::Gzip {
            level: level as u32,
        },
        "none" => Compression::None,
        _ => Compression::Zstd {
            level: level as i32,
        },
    };
    let opts = LayerOptions {
        compression,
        source_date_epoch: Some(0),
        kind: SourceKind::Tree,
    };
    let blob = std::env::temp_dir().join("forge-layer-bench.tar.zst");
    match kind {
        "prepare" => {
            write_layer(
                dir,
                &opts,
                io::BufWriter::new(fs::File::create(&blob).unwrap()),
            )
            .unwrap();
            return;
        }
        "apply" => {}
        _ => {
            write_layer(dir, &opts, io::sink()).expect("write_layer");
            return;
        }
    }
    // Applying: the zstd layer written by "prepare", from a file, into an empty directory.
    let target = std::env::temp_dir().join("forge-layer-bench-apply");
    let _ = fs::remove_dir_all(&target);
    fs::create_dir(&target).unwrap();
    forge_oci::apply_layer(
        fs::File::open(&blob).unwrap(),
        &target,
        &forge_oci::ApplyOptions::default(),
    )
    .unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(
            Path::new(&args[0]),
            &args[i + 1],
            args[i + 2].parse().unwrap(),
        );
        return;
    }
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let size_mb: u64 = flag("--size-mb").map(|s| s.parse().unwrap()).unwrap_or(300);
    let gz_level: u32 = flag("--gzip-level")
        .map(|s| s.parse().unwrap())
        .unwrap_or(1);
    let dir = match args.first().filter(|a| !a.starts_with("--")) {
        Some(d) => PathBuf::from(d),
        None => {
            let d = PathBuf::from(format!("/tmp/forge-layer-bench-{size_mb}"));
            if !d.join(".complete").exists() {
                let _ = fs::remove_dir_all(&d);
                eprintln!("generating {size_mb} MB tree in {}", d.display());
                generate(&d, size_mb * 1_000_000).expect("generate tree");
                fs::write(d.join(".complete"), b"").unwrap();
            }
            d
        }
    };
    let bytes = du(&dir) as f64;
    let mb = bytes / 1e6;
    println!("tree: {} ({:.0} MB)", dir.display(), mb);
    // Warm the page cache so every contender reads from memory.
    shell(&format!("tar -cf - -C {} . > /dev/null", dir.display()));

    // Every contender runs as a fresh child process, forge included (this binary re-invoked
    // with --child), so the scheduler treats them alike on a busy machine. Rounds alternate the
    // contenders, each round starting elsewhere; the best wall time of each is reported. On a
    // shared machine, CPU seconds (user + system, all threads and processes) are the steadier
    // measure.
    let me = std::env::current_exe().expect("current exe");
    let d = dir.display().to_string();
    let forge = |kind: &str, level: i64| format!("{} {d} --child {kind} {level}", me.display());
    let only = flag("--only");
    let want = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let contenders: Vec<(String, String)> = vec![
        (
            format!("forge gzip -{gz_level}"),
            forge("gzip", gz_level as i64),
        ),
        ("forge gzip -6".into(), forge("gzip", 6)),
        ("forge zstd -3".into(), forge("zstd", 3)),
        ("forge tar only".into(), forge("none", 0)),
        ("forge apply zstd".into(), forge("apply", 3)),
        (
            "tar | gzip -6".into(),
            format!("tar -cf - -C {d} . | gzip -6 > /dev/null"),
        ),
        (
            "tar | zstd -3".into(),
            format!("tar -cf - -C {d} . | zstd -q -3 > /dev/null"),
        ),
    ]
    .into_iter()
    .filter(|(n, _)| want(n))
    .collect();
    if want("forge apply") {
        shell(&forge("prepare", 3));
    }
    let rounds: usize = flag("--rounds").map(|r| r.parse().unwrap()).unwrap_or(1);
    let mut best: Vec<Option<(f64, f64)>> = vec![None; contenders.len()];
    for round in 0..rounds {
        // Each round starts at a different contender, so none always runs last.
        let n = contenders.len();
        for i in (0..n).map(|k| (k + round) % n) {
            let cmd = &contenders[i].1;
            let (wall, cpu) = shell(cmd);
            if best[i].is_none_or(|(w, _)| wall < w) {
                best[i] = Some((wall, cpu));
            }
        }
    }
    let rows: Vec<(String, (f64, f64), Option<u64>)> = contenders
        .iter()
        .zip(best)
        .map(|((name, _), b)| (name.clone(), b.expect("ran"), None))
        .collect();
    let _ = fs::remove_file(std::env::temp_dir().join("forge-layer-bench.tar.zst"));
    let _ = fs::remove_dir_all(std::env::temp_dir().join("forge-layer-bench-apply"));
    let out = io::stdout();
    let mut o = out.lock();
    writeln!(
        o,
        "{:<16} {:>8} {:>10} {:>8} {:>12} {:>9}",
        "", "wall s", "MB/s", "cpu s", "MB/cpu-s", "blob"
    )
    .unwrap();
    for (name, (wall, cpu), size) in rows {
        let size = size
            .map(|n| format!("{:.1} MB", n as f64 / 1e6))
            .unwrap_or_default();
        writeln!(
            o,
            "{name:<16} {wall:8.2} {:10.1} {cpu:8.2} {:12.1} {size:>9}",
            mb / wall,
            mb / cpu
        )
        .unwrap();
    }
}
