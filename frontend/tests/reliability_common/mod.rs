//! Support for the reliability suites (`reliability_*.rs`): processes killed at random
//! moments, store health checks, and a byte search through stores and archives that looks
//! inside compressed blobs and tar members.
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Forge, Out};

/// A tiny deterministic PRNG (xorshift64*), seeded from the clock unless `FORGE_REL_SEED` is
/// set; the seed is printed so a failing run can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(label: &str) -> Rng {
        let seed = std::env::var("FORGE_REL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
        eprintln!("{label}: seed {seed} (set FORGE_REL_SEED={seed} to replay)");
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Deterministic pseudo-random bytes (incompressible enough to make layers real work).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Starts `forge --root ROOT ARGS…` in its own process group, stdout and stderr to `log`.
pub fn spawn(f: &Forge, args: &[&str], env: &[(&str, &str)], log: &Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    let mut c = f.cmd();
    c.args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .process_group(0);
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap_or_else(|e| panic!("spawning forge {args:?}: {e}"))
}

/// What happened to a process we meant to kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It finished on its own first, with this exit code.
    Exited(i32),
    /// SIGKILL hit it. `leftovers` counts processes of its group still alive a moment later
    /// (sandboxed children must die with their parent).
    Killed { leftovers: usize },
}

/// Waits `delay`, then SIGKILLs `child` (only that pid, as a crash would) unless it already
/// exited. Afterwards any process still in its group is counted and killed so the test
/// leaves nothing behind.
pub fn kill_after(mut child: Child, delay: Duration) -> Fate {
    let deadline = Instant::now() + delay;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Fate::Exited(st.code().unwrap_or(-1));
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5).min(deadline.saturating_duration_since(Instant::now())));
    }
    let pid = child.id() as i32;
    unsafe { libc_kill(pid, 9) };
    let _ = child.wait();
    // Give PDEATHSIG a moment, then count what is left of the group.
    let mut leftovers = 0;
    for _ in 0..40 {
        leftovers = group_members(pid);
        if leftovers == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    if leftovers > 0 {
        unsafe { libc_kill(-pid, 9) };
        std::thread::sleep(Duration::from_millis(50));
    }
    Fate::Killed { leftovers }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Live (non-zombie) processes whose process group is `pgid`.
pub fn group_members(pgid: i32) -> usize {
    let mut n = 0;
    let Ok(rd) = std::fs::read_dir("/proc") else { return 0 };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp …; comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2].parse::<i32>().ok() == Some(pgid) {
            n += 1;
        }
    }
    n
}

/// `forge check` must exit 0 and say "no problems found".
#[track_caller]
pub fn assert_store_clean(f: &Forge, when: &str) -> Out {
    let o = f.run(&["check"]);
    assert!(
        o.code == 0 && o.stdout.contains("no problems found"),
        "forge check after {when}: exit {}\n--- stdout\n{}\n--- stderr\n{}",
        o.code,
        o.stdout,
        o.stderr
    );
    o
}

/// Every place `needle` occurs under `root` (files, not following symlinks), looking inside
/// gzip/zstd streams and tar members, recursively. Each hit names the file and the chain of
/// members/decompressions that led to it.
pub fn find_bytes(root: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if meta.is_file() {
            if let Ok(data) = std::fs::read(&p) {
                search(&data, needle, &p.display().to_string(), 0, &mut hits);
            }
        } else if meta.file_type().is_symlink() {
            if let Ok(t) = std::fs::read_link(&p) {
                if contains(t.as_os_str().as_encoded_bytes(), needle) {
                    hits.push(format!("{} (symlink target)", p.display()));
                }
            }
        }
    }
    hits
}

/// Searches one byte string (and what it decompresses or unpacks to).
pub fn search(data: &[u8], needle: &[u8], name: &str, depth: usize, hits: &mut Vec<String>) {
    if contains(data, needle) {
        hits.push(name.to_string());
    }
    if depth > 4 {
        return;
    }
    let gz = data.starts_with(&[0x1f, 0x8b]);
    let zst = data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    if gz || zst {
        if let Ok(mut r) = forge_oci::decompress(data) {
            let mut out = Vec::new();
            if r.read_to_end(&mut out).is_ok() || !out.is_empty() {
                search(&out, needle, &format!("{name} (decompressed)"), depth + 1, hits);
            }
        }
        return;
    }
    if is_tar(data) {
        for (member, body) in tar_members(data) {
            search(body, needle, &format!("{name}!{member}"), depth + 1, hits);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn is_tar(data: &[u8]) -> bool {
    data.len() >= 512 && &data[257..262] == b"ustar"
}

/// The regular-file members of a tar (name, body); stops at the first malformed header.
pub fn tar_members(data: &[u8]) -> Vec<(String, &[u8])> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 512 <= data.len() {
        let h = &data[off..off + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let name_end = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&h[..name_end]).into_owned();
        let size_field = String::from_utf8_lossy(&h[124..136]).trim_matches(|c: char| c == '\0' || c == ' ').to_string();
        let Ok(size) = usize::from_str_radix(&size_field, 8) else { break };
        let body_start = off + 512;
        let body_end = body_start.saturating_add(size);
        if body_end > data.len() {
            break;
        }
        out.push((name, &data[body_start..body_end]));
        off = body_start + size.div_ceil(512) * 512;
    }
    out
}

/// Directories and files under `root`, as sorted relative paths (for before/after checks).
pub fn listing(root: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p != root {
            v.push(p.strip_prefix(root).unwrap().to_path_buf());
        }
        if std::fs::symlink_metadata(&p).map(|m| m.is_dir()).unwrap_or(false) {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    v.sort();
    v
}
