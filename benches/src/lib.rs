//! Fixtures for forge's micro-benchmarks.
//!
//! The benchmarks themselves live in `benches/*.rs` and run with divan:
//!
//! ```text
//! cargo bench -p forge-benches                      # everything
//! cargo bench -p forge-benches --bench cache_key    # one file
//! cargo bench -p forge-benches --bench layer -- zstd  # a filter
//! ```
//!
//! `cargo test` builds neither the benchmarks nor their fixtures. This library only makes the
//! data they measure: deterministic trees shaped like the big-context scenario of the
//! end-to-end comparison (`benches/compare.sh`), i.e. many 1–19 KiB text files of
//! source-code-like lines in nested directories, plus optional incompressible blobs. A tree is
//! generated once under [`fixture_root`] and reused by later runs (a `.complete` stamp marks a
//! finished tree; a tree whose generator version changed is made again).
//!
//! ```
//! let dir = tempfile_dir();
//! let spec = forge_benches::TreeSpec { files: 30, dirs: 3, blobs_mib: vec![1], seed: 7 };
//! let t = forge_benches::generate_tree(&dir.join("t"), &spec).unwrap();
//! assert_eq!(t.files, 32); // 30 text files, 1 blob and README.txt
//! assert!(t.bytes > 1 << 20);
//! # fn tempfile_dir() -> std::path::PathBuf {
//! #     let d = std::env::temp_dir().join(format!("forge-benches-doc-{}", std::process::id()));
//! #     let _ = std::fs::remove_dir_all(&d);
//! #     std::fs::create_dir_all(&d).unwrap();
//! #     d
//! # }
//! ```

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Bumped whenever the generated content changes, so stale fixtures are made again.
const GENERATOR_VERSION: u32 = 1;

/// What tree to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeSpec {
    /// Number of text files (1–19 KiB each).
    pub files: usize,
    /// Number of leaf directories the text files are spread over (two levels: `pkgNN/modNN`).
    pub dirs: usize,
    /// Sizes of incompressible blobs under `assets/`, in MiB.
    pub blobs_mib: Vec<u64>,
    /// Seed of the content generator.
    pub seed: u64,
}

impl TreeSpec {
    /// The shape of the big-context scenario's 20,000 text files (about 200 MB), without its
    /// 150 MiB of blobs: the tree used for the COPY cache-key and context-hashing benchmarks.
    pub fn big_context_text() -> TreeSpec {
        TreeSpec {
            files: 20_000,
            dirs: 200,
            blobs_mib: Vec::new(),
            seed: 20240501,
        }
    }

    /// A mixed tree of about 36 MB (2,000 text files and one 16 MiB incompressible blob), the
    /// same mix of compressible and incompressible data as big-context at a tenth of its size:
    /// the input of the layer-writing benchmarks.
    pub fn layer_mix() -> TreeSpec {
        TreeSpec {
            files: 2_000,
            dirs: 20,
            blobs_mib: vec![16],
            seed: 42,
        }
    }

    /// A name that identifies the spec (and the generator version) on disk.
    pub fn id(&self) -> String {
        let blobs: Vec<String> = self.blobs_mib.iter().map(|b| b.to_string()).collect();
        format!(
            "v{GENERATOR_VERSION}-f{}-d{}-b{}-s{}",
            self.files,
            self.dirs,
            blobs.join("_"),
            self.seed
        )
    }
}

/// What was generated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    pub root: PathBuf,
    /// Regular files in the tree.
    pub files: usize,
    /// Sum of the regular files' sizes.
    pub bytes: u64,
}

/// xorshift64: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
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

/// Where fixtures live: `$FORGE_BENCHES_DIR`, else `<tmp>/forge-benches`.
pub fn fixture_root() -> PathBuf {
    std::env::var_os("FORGE_BENCHES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("forge-benches"))
}

/// The tree for `spec` under [`fixture_root`], generated on first use.
pub fn fixture(spec: &TreeSpec) -> io::Result<Tree> {
    let root = fixture_root().join(spec.id());
    let stamp = root.join(".complete");
    if let Ok(text) = fs::read_to_string(&stamp) {
        let mut it = text.split_whitespace().map(|s| s.parse::<u64>());
        if let (Some(Ok(files)), Some(Ok(bytes))) = (it.next(), it.next()) {
            return Ok(Tree {
                root: root.join("tree"),
                files: files as usize,
                bytes,
            });
        }
    }
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root)?;
    eprintln!(
        "forge-benches: generating fixture {} (once)",
        root.display()
    );
    let t = generate_tree(&root.join("tree"), spec)?;
    fs::write(&stamp, format!("{} {}\n", t.files, t.bytes))?;
    Ok(t)
}

/// A single file of `size` bytes of text-like content under [`fixture_root`], made on first use.
pub fn fixture_file(size: usize) -> io::Result<PathBuf> {
    let dir = fixture_root().join(format!("v{GENERATOR_VERSION}-files"));
    fs::create_dir_all(&dir)?;
    let path = dir.join(format!("text-{size}"));
    if fs::metadata(&path)
        .map(|m| m.len() == size as u64)
        .unwrap_or(false)
    {
        return Ok(path);
    }
    let vocab = vocabulary(&mut Rng::new(size as u64));
    let data = text(&mut Rng::new(size as u64 + 1), &vocab, size);
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, &data)?;
    fs::rename(&tmp, &path)?;
    Ok(path)
}

fn vocabulary(rng: &mut Rng) -> Vec<String> {
    let mut words: Vec<String> = (0..5000)
        .map(|_| {
            let n = 2 + rng.below(9) as usize;
            (0..n)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect()
        })
        .collect();
    for w in [
        "def", "class", "return", "import", "self", "if", "else", "for", "in", "None", "=", "(",
        ")", ":", "#",
    ] {
        words.push(w.to_string());
    }
    words
}

/// Source-code-like lines: an indent and 3–14 words from the vocabulary.
fn text(rng: &mut Rng, vocab: &[String], size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size + 128);
    while v.len() < size {
        for _ in 0..rng.below(4) {
            v.extend_from_slice(b"    ");
        }
        let n = 3 + rng.below(12);
        for i in 0..n {
            if i > 0 {
                v.push(b' ');
            }
            v.extend_from_slice(vocab[rng.below(vocab.len() as u64) as usize].as_bytes());
        }
        v.push(b'\n');
    }
    v.truncate(size);
    v
}

/// Generates `spec` into `root` (which must not exist yet or be empty).
pub fn generate_tree(root: &Path, spec: &TreeSpec) -> io::Result<Tree> {
    if spec.dirs == 0 && spec.files > 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "files need at least one directory",
        ));
    }
    let mut rng = Rng::new(spec.seed);
    let vocab = vocabulary(&mut rng);
    let mut files = 0usize;
    let mut bytes = 0u64;
    let per_dir = spec.files.div_ceil(spec.dirs.max(1));
    for d in 0..spec.dirs {
        let dir = root
            .join("src")
            .join(format!("pkg{:02}", d / 10))
            .join(format!("mod{:02}", d % 10));
        fs::create_dir_all(&dir)?;
        for f in 0..per_dir {
            if files >= spec.files {
                break;
            }
            let size = 1024 + rng.below(18 * 1024) as usize;
            let data = text(&mut rng, &vocab, size);
            fs::write(dir.join(format!("file{f:03}.txt")), &data)?;
            files += 1;
            bytes += size as u64;
        }
    }
    if !spec.blobs_mib.is_empty() {
        let assets = root.join("assets");
        fs::create_dir_all(&assets)?;
        for &mib in &spec.blobs_mib {
            let mut brng = Rng::new(spec.seed ^ (mib << 32));
            let mut out =
                io::BufWriter::new(fs::File::create(assets.join(format!("blob-{mib}M.bin")))?);
            let mut chunk = vec![0u8; 1 << 20];
            for _ in 0..mib {
                for w in chunk.chunks_exact_mut(8) {
                    w.copy_from_slice(&brng.next().to_le_bytes());
                }
                out.write_all(&chunk)?;
            }
            out.flush()?;
            files += 1;
            bytes += mib << 20;
        }
    }
    fs::create_dir_all(root)?;
    fs::write(root.join("README.txt"), b"forge-benches fixture\n")?;
    files += 1;
    bytes += 22;
    Ok(Tree {
        root: root.to_path_buf(),
        files,
        bytes,
    })
}

/// Runs `bash -o pipefail -c cmd` with stdout discarded; errors unless every command of the
/// pipeline exits 0. For the shell pipelines the layer benchmarks compare against
/// (`tar -cf - . | zstd -3`).
pub fn shell(cmd: &str) -> io::Result<()> {
    let st = Command::new("bash")
        .args(["-o", "pipefail", "-c", cmd])
        .stdout(Stdio::null())
        .status()?;
    if st.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("`{cmd}` failed: {st}")))
    }
}

/// Whether a command is on PATH (the shell baselines are skipped, loudly, when it is not).
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("forge-benches-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn trees_are_deterministic_and_sized_as_asked() {
        let spec = TreeSpec {
            files: 25,
            dirs: 4,
            blobs_mib: vec![1],
            seed: 3,
        };
        let (a, b) = (tmp("a"), tmp("b"));
        let ta = generate_tree(&a, &spec).unwrap();
        let tb = generate_tree(&b, &spec).unwrap();
        assert_eq!(ta.files, 27);
        assert_eq!(ta.bytes, tb.bytes);
        let f = "src/pkg00/mod02/file004.txt";
        let (ca, cb) = (fs::read(a.join(f)).unwrap(), fs::read(b.join(f)).unwrap());
        assert_eq!(ca, cb);
        assert!(
            (1024..19 * 1024).contains(&ca.len()),
            "text file size {}",
            ca.len()
        );
        assert_eq!(
            fs::metadata(a.join("assets/blob-1M.bin")).unwrap().len(),
            1 << 20
        );
        let other = generate_tree(
            &tmp("c"),
            &TreeSpec {
                seed: 4,
                ..spec.clone()
            },
        )
        .unwrap();
        assert_ne!(
            fs::read(other.root.join(f)).unwrap(),
            ca,
            "the seed must change the content"
        );
        for d in [a, b, other.root] {
            fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn a_spec_without_directories_is_refused() {
        let e = generate_tree(
            &tmp("z"),
            &TreeSpec {
                files: 1,
                dirs: 0,
                blobs_mib: vec![],
                seed: 1,
            },
        )
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn shell_reports_failure() {
        assert!(shell("true").is_ok());
        assert!(shell("false").is_err());
        assert!(
            shell("false | cat").is_err(),
            "a failure inside a pipeline counts"
        );
        assert!(have("sh"));
        assert!(!have("no-such-tool-forge-benches"));
    }
}
