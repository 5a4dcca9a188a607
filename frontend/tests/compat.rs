//! Against BuildKit: every case under `fixtures/compare/` is built by forge and by the Docker
//! engine's BuildKit, and the two images are compared.
//!
//! For each case directory (a Dockerfile and its build context) and each of its variants:
//!
//! 1. forge builds it into an OCI layout (`-o type=oci,tar=false`) and a root filesystem
//!    (`-o type=local`);
//! 2. `DOCKER_BUILDKIT=1 /usr/bin/docker build` builds it; `docker save` exports it, and
//!    `skopeo` + `umoci unpack` turn both images into root filesystems with tools that are not
//!    forge's own;
//! 3. the image configs are compared (the fields listed in [`CONFIG_FIELDS`], the layer count and
//!    the history's `created_by`/`empty_layer`/`comment`), and the unpacked filesystems are
//!    compared entry by entry: type, mode bits, owner, symlink target, device numbers, hard-link
//!    groups and file contents. Modification times are not compared.
//!
//! Normalizations that hold for every case (forge's `# forge` history suffix, the history text of
//! HEALTHCHECK, ...) are applied here and documented in `fixtures/compare/README.md`. A case's
//! own intended (or known, `BUG:`) differences are listed one per line in its `known-diffs` file,
//! as `VARIANT KEY` (a `*` at the end of KEY matches any suffix) followed by `# reason`. A known
//! difference that no longer occurs fails the test, so the list cannot go stale.
//!
//! Case files: `Dockerfile`; optional `Dockerfile.buildkit`, the Dockerfile docker builds instead
//! when the engine's built-in frontend lacks a syntax (heredocs, `COPY --parents`, ...);
//! optional `variants`, one `NAME: BUILD FLAGS` line per build (default: one build, no flags).
//!
//! `COMPAT_CASE=NAME` runs a single case. `COMPAT_KEEP=1` keeps the work directory.
//! Without `/usr/bin/docker`, a running daemon, `skopeo` or `umoci`, the test prints SKIPPED and
//! passes, except under `CI=true`, where it fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// The image name both builders know the shared busybox base by (`FROM compat-base`). A name of
/// its own keeps this test from retagging `busybox:local` in the docker daemon other tests use.
const BASE_NAME: &str = "compat-base:latest";

/// The config fields compared.
const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "StopSignal",
    "Healthcheck",
    "Shell",
    "OnBuild",
    "ArgsEscaped",
];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/compare")
}

/// One build of a case: a name and the flags both builders get.
#[derive(Debug, Clone)]
struct Variant {
    name: String,
    flags: Vec<String>,
}

/// A known difference: `variant key` with an optional trailing `*` on the key.
#[derive(Debug, Clone)]
struct Known {
    variant: String,
    key: String,
    line: usize,
}

impl Known {
    fn matches(&self, variant: &str, key: &str) -> bool {
        if self.variant != variant && self.variant != "*" {
            return false;
        }
        match self.key.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => key == self.key,
        }
    }
}

#[derive(Debug)]
struct Case {
    name: String,
    dir: PathBuf,
    variants: Vec<Variant>,
    known: Vec<Known>,
    docker_dockerfile: PathBuf,
}

fn load_cases() -> Vec<Case> {
    let mut names: Vec<String> = fs::read_dir(fixtures_dir())
        .expect("fixtures/compare exists")
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let only = std::env::var("COMPAT_CASE").ok();
    let mut cases = Vec::new();
    for name in names {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|x| x == name))
        {
            continue;
        }
        let dir = fixtures_dir().join(&name);
        assert!(dir.join("Dockerfile").is_file(), "{name}: no Dockerfile");
        let variants = match fs::read_to_string(dir.join("variants")) {
            Ok(text) => text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| {
                    let (n, flags) = l
                        .split_once(':')
                        .unwrap_or_else(|| panic!("{name}/variants: {l:?} is not `NAME: FLAGS`"));
                    Variant {
                        name: n.trim().to_string(),
                        flags: flags.split_whitespace().map(String::from).collect(),
                    }
                })
                .collect(),
            Err(_) => vec![Variant {
                name: "default".into(),
                flags: vec![],
            }],
        };
        let known = match fs::read_to_string(dir.join("known-diffs")) {
            Ok(text) => text
                .lines()
                .enumerate()
                .filter_map(|(i, l)| {
                    let l = l.split_once('#').map(|(a, _)| a).unwrap_or(l).trim();
                    let (v, k) = l.split_once(' ')?;
                    Some(Known {
                        variant: v.trim().to_string(),
                        key: k.trim().to_string(),
                        line: i + 1,
                    })
                })
                .collect(),
            Err(_) => vec![],
        };
        let alt = dir.join("Dockerfile.buildkit");
        let docker_dockerfile = if alt.is_file() {
            alt
        } else {
            dir.join("Dockerfile")
        };
        cases.push(Case {
            name,
            dir,
            variants,
            known,
            docker_dockerfile,
        });
    }
    cases
}

#[track_caller]
fn must(cmd: &mut Command) -> Out {
    let shown = format!("{cmd:?}");
    let o = run_cmd(cmd);
    assert_eq!(
        o.code, 0,
        "{shown} failed\n--- stdout\n{}\n--- stderr\n{}",
        o.stdout, o.stderr
    );
    o
}

fn docker_cmd(docker: &Path) -> Command {
    let mut c = Command::new(docker);
    c.env("DOCKER_BUILDKIT", "1");
    c
}

// ---------------------------------------------------------------------------------------------
// Configs

/// A JSON value with empty collections, empty strings and nulls dropped: Docker and BuildKit
/// write `"OnBuild": null` or `"Volumes": null` where forge leaves the field out; both mean
/// "not set".
fn present(v: Option<&Value>) -> Option<Value> {
    match v? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::Array(a) if a.is_empty() => None,
        Value::Object(o) if o.is_empty() => None,
        other => Some(other.clone()),
    }
}

/// Rewrites history text where the engine's BuildKit (v0.8, Docker 20.10) and current BuildKit,
/// which forge follows, print the same step differently. Each rule is in the README.
fn normalize_created_by(by: &str) -> String {
    let (word, rest) = by.split_once(' ').unwrap_or((by, ""));
    match word {
        // v0.8 prints `%q` of a pointer to the struct, current BuildKit `%+v` of the struct.
        // The values themselves are compared through config.Healthcheck.
        "HEALTHCHECK" => "HEALTHCHECK …".to_string(),
        // v0.8: `EXPOSE map[80/tcp:{} …]` (sorted); current: `EXPOSE [80/tcp …]` (in order).
        "EXPOSE" => {
            let inner = rest
                .trim_start_matches("map")
                .trim_start_matches('[')
                .trim_end_matches(']');
            let ports: BTreeSet<&str> = inner
                .split_whitespace()
                .map(|p| p.trim_end_matches(":{}"))
                .collect();
            format!("EXPOSE {}", ports.into_iter().collect::<Vec<_>>().join(" "))
        }
        // v0.8 prints the Dockerfile's own default; current BuildKit the value the ARG got.
        // Values are compared through the `|N K=V` prefix of RUN entries and the files.
        "ARG" => format!(
            "ARG {}",
            rest.split(' ')
                .map(|kv| kv.split('=').next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        // Current BuildKit records --parents, --chown and --chmod; v0.8 records no flags.
        "COPY" | "ADD" => {
            let kept: Vec<&str> = rest
                .split(' ')
                .filter(|w| {
                    !(w.starts_with("--chown=") || w.starts_with("--chmod=") || *w == "--parents")
                })
                .collect();
            format!("{word} {}", kept.join(" "))
        }
        _ => by.to_string(),
    }
}

/// One history entry as compared.
fn history_entry(h: &Value) -> String {
    let mut by = h
        .get("created_by")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(rest) = by.strip_suffix(" # forge") {
        by = format!("{rest} # buildkit");
    }
    by = normalize_created_by(&by);
    let comment = match h.get("comment").and_then(Value::as_str) {
        Some("forge.dockerfile.v0") | Some("buildkit.dockerfile.v0") => " (dockerfile)",
        Some(_) => " (other comment)",
        None => "",
    };
    let empty = if h
        .get("empty_layer")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        " [empty]"
    } else {
        ""
    };
    format!("{by:?}{empty}{comment}")
}

#[derive(Debug)]
struct Diff {
    key: String,
    detail: String,
}

fn compare_configs(forge: &Value, docker: &Value, diffs: &mut Vec<Diff>) {
    for f in ["architecture", "os", "author"] {
        let (a, b) = (present(forge.get(f)), present(docker.get(f)));
        if a != b {
            diffs.push(Diff {
                key: format!("config {f}"),
                detail: format!("forge={a:?} buildkit={b:?}"),
            });
        }
    }
    for f in CONFIG_FIELDS {
        let a = present(forge.get("config").and_then(|c| c.get(*f)));
        let b = present(docker.get("config").and_then(|c| c.get(*f)));
        if a != b {
            let show = |v: &Option<Value>| {
                v.as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "(unset)".into())
            };
            diffs.push(Diff {
                key: format!("config {f}"),
                detail: format!("forge={} buildkit={}", show(&a), show(&b)),
            });
        }
    }
    let layers = |v: &Value| {
        v.pointer("/rootfs/diff_ids")
            .and_then(Value::as_array)
            .map(Vec::len)
            .unwrap_or(0)
    };
    if layers(forge) != layers(docker) {
        diffs.push(Diff {
            key: "layers".into(),
            detail: format!(
                "forge has {} layers, buildkit {}",
                layers(forge),
                layers(docker)
            ),
        });
    }
    let hist = |v: &Value| -> Vec<String> {
        v.get("history")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(history_entry).collect())
            .unwrap_or_default()
    };
    let (hf, hd) = (hist(forge), hist(docker));
    for i in 0..hf.len().max(hd.len()) {
        let (a, b) = (hf.get(i), hd.get(i));
        if a != b {
            diffs.push(Diff {
                key: format!("history[{i}]"),
                detail: format!(
                    "forge={} buildkit={}",
                    a.map(String::as_str).unwrap_or("(none)"),
                    b.map(String::as_str).unwrap_or("(none)")
                ),
            });
        }
    }
}

/// The config of the single image in an OCI layout directory.
fn oci_layout_config(dir: &Path) -> Value {
    let read = |p: PathBuf| -> Value {
        let text = fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let blob = |d: &Value| -> PathBuf {
        let digest = d["digest"].as_str().expect("descriptor digest");
        let (alg, hex) = digest.split_once(':').expect("digest algorithm");
        dir.join("blobs").join(alg).join(hex)
    };
    let index = read(dir.join("index.json"));
    let manifest = read(blob(&index["manifests"][0]));
    read(blob(&manifest["config"]))
}

/// The config of the single image in an unpacked `docker save` archive.
fn docker_archive_config(dir: &Path) -> Value {
    let m: Value =
        serde_json::from_slice(&fs::read(dir.join("manifest.json")).expect("manifest.json"))
            .expect("manifest.json is JSON");
    let cfg = m[0]["Config"].as_str().expect("Config in manifest.json");
    serde_json::from_slice(&fs::read(dir.join(cfg)).expect("config file")).expect("config is JSON")
}

// ---------------------------------------------------------------------------------------------
// Filesystems

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink(PathBuf),
    Fifo,
    Socket,
    Char(u64),
    Block(u64),
}

#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    ino: (u64, u64),
    nlink: u64,
}

/// Every path under `root` (relative, starting with `/`), without following symlinks.
fn walk(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for e in rd {
            let e = e.expect("directory entry");
            let p = e.path();
            let md =
                fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
            let ft = md.file_type();
            let kind = if ft.is_symlink() {
                Kind::Symlink(fs::read_link(&p).expect("readlink"))
            } else if ft.is_dir() {
                stack.push(p.clone());
                Kind::Dir
            } else if ft.is_file() {
                Kind::File
            } else if ft.is_fifo() {
                Kind::Fifo
            } else if ft.is_socket() {
                Kind::Socket
            } else if ft.is_char_device() {
                Kind::Char(md.rdev())
            } else {
                Kind::Block(md.rdev())
            };
            let rel = format!("/{}", p.strip_prefix(root).unwrap().to_string_lossy());
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    ino: (md.dev(), md.ino()),
                    nlink: md.nlink(),
                },
            );
        }
    }
    out
}

/// For each regular file with more than one link: the other paths in the tree sharing its inode.
fn link_groups(tree: &BTreeMap<String, Entry>) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_ino: BTreeMap<(u64, u64), BTreeSet<String>> = BTreeMap::new();
    for (p, e) in tree {
        if e.kind == Kind::File && e.nlink > 1 {
            by_ino.entry(e.ino).or_default().insert(p.clone());
        }
    }
    let mut out = BTreeMap::new();
    for group in by_ino.values().filter(|g| g.len() > 1) {
        for p in group {
            out.insert(
                p.clone(),
                group.iter().filter(|q| *q != p).cloned().collect(),
            );
        }
    }
    out
}

fn same_content(a: &Path, b: &Path) -> bool {
    match (fs::read(a), fs::read(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Compares two root filesystems; `prefix` names the comparison in the diff keys.
fn compare_trees(
    prefix: &str,
    a_root: &Path,
    a_name: &str,
    b_root: &Path,
    b_name: &str,
    diffs: &mut Vec<Diff>,
) {
    let (a, b) = (walk(a_root), walk(b_root));
    let (la, lb) = (link_groups(&a), link_groups(&b));
    let paths: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for p in paths {
        let (ea, eb) = match (a.get(p), b.get(p)) {
            (Some(x), Some(y)) => (x, y),
            (Some(_), None) => {
                diffs.push(Diff {
                    key: format!("{prefix} {p}"),
                    detail: format!("only in {a_name}"),
                });
                continue;
            }
            (None, Some(_)) => {
                diffs.push(Diff {
                    key: format!("{prefix} {p}"),
                    detail: format!("only in {b_name}"),
                });
                continue;
            }
            (None, None) => unreachable!(),
        };
        if ea.kind != eb.kind {
            diffs.push(Diff {
                key: format!("{prefix} {p} type"),
                detail: format!("{a_name}={:?} {b_name}={:?}", ea.kind, eb.kind),
            });
            continue;
        }
        if ea.mode != eb.mode && !matches!(ea.kind, Kind::Symlink(_)) {
            diffs.push(Diff {
                key: format!("{prefix} {p} mode"),
                detail: format!("{a_name}={:04o} {b_name}={:04o}", ea.mode, eb.mode),
            });
        }
        if (ea.uid, ea.gid) != (eb.uid, eb.gid) {
            diffs.push(Diff {
                key: format!("{prefix} {p} owner"),
                detail: format!(
                    "{a_name}={}:{} {b_name}={}:{}",
                    ea.uid, ea.gid, eb.uid, eb.gid
                ),
            });
        }
        if ea.kind == Kind::File && !same_content(&a_root.join(&p[1..]), &b_root.join(&p[1..])) {
            diffs.push(Diff {
                key: format!("{prefix} {p} content"),
                detail: "contents differ".into(),
            });
        }
        if la.get(p) != lb.get(p) {
            diffs.push(Diff {
                key: format!("{prefix} {p} links"),
                detail: format!(
                    "{a_name} hard-links it with {:?}, {b_name} with {:?}",
                    la.get(p),
                    lb.get(p)
                ),
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The builds

struct Tools {
    docker: PathBuf,
    skopeo: PathBuf,
    umoci: PathBuf,
}

fn tools() -> Option<Tools> {
    let docker = docker()?;
    let skopeo = tool("skopeo")?;
    let umoci = tool("umoci")?;
    Some(Tools {
        docker,
        skopeo,
        umoci,
    })
}

/// Unpacks the image `layout:tag` with umoci; returns the root filesystem.
fn umoci_unpack(t: &Tools, layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    must(
        Command::new(&t.umoci)
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{tag}", layout.display()))
            .arg(bundle),
    );
    bundle.join("rootfs")
}

/// What one variant of one case produced: the differences not covered by `known-diffs`, and
/// every difference seen (for the stale-entry check).
struct Outcome {
    config_ok: bool,
    fs_ok: bool,
    unexpected: Vec<String>,
    seen: Vec<(String, String)>,
}

impl Outcome {
    /// A build that failed: a difference of its own (key `build forge` or `build buildkit`).
    fn failed(case: &Case, v: &Variant, key: &str, detail: String) -> Outcome {
        let seen = vec![(v.name.clone(), key.to_string())];
        if case.known.iter().any(|k| k.matches(&v.name, key)) {
            return Outcome {
                config_ok: true,
                fs_ok: true,
                unexpected: vec![],
                seen,
            };
        }
        Outcome {
            config_ok: false,
            fs_ok: false,
            unexpected: vec![format!("{}/{}: {key}: {detail}", case.name, v.name)],
            seen,
        }
    }
}

/// The end of a build log, where the error is.
fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n    ")
}

fn run_variant(t: &Tools, forge: &Forge, work: &Path, case: &Case, v: &Variant) -> Outcome {
    let dir = work.join(format!("{}--{}", case.name, v.name));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let tag = format!("{}-{}", case.name, v.name);

    // forge
    let local = dir.join("forge-local");
    let layout = dir.join("forge-oci");
    let mut args: Vec<String> = vec![
        "-f".into(),
        case.dir.join("Dockerfile").display().to_string(),
    ];
    args.extend(v.flags.iter().cloned());
    args.extend(["-t".into(), format!("compat/{tag}")]);
    args.extend(["-o".into(), format!("type=local,dest={}", local.display())]);
    args.extend([
        "-o".into(),
        format!("type=oci,dest={},tar=false", layout.display()),
    ]);
    let built = forge.try_build(&case.dir, &args);
    if built.out.code != 0 {
        return Outcome::failed(case, v, "build forge", last_lines(&built.out.stderr));
    }
    let forge_cfg = oci_layout_config(&layout);
    let forge_rootfs = umoci_unpack(t, &layout, "latest", &dir.join("forge-bundle"));

    // BuildKit, in the docker engine
    let image = format!("forge-compat/{tag}:latest");
    let mut b = docker_cmd(&t.docker);
    b.args(["build", "--network=host", "-q", "-f"])
        .arg(&case.docker_dockerfile)
        .args(&v.flags)
        .args(["-t", &image])
        .arg(&case.dir);
    let o = run_cmd(&mut b);
    if o.code != 0 {
        return Outcome::failed(case, v, "build buildkit", last_lines(&o.stderr));
    }
    let saved = dir.join("docker.tar");
    must(
        docker_cmd(&t.docker)
            .args(["save", "-o"])
            .arg(&saved)
            .arg(&image),
    );
    let unpacked = dir.join("docker-archive");
    fs::create_dir_all(&unpacked).unwrap();
    must(
        Command::new("tar")
            .arg("-xf")
            .arg(&saved)
            .arg("-C")
            .arg(&unpacked),
    );
    let docker_cfg = docker_archive_config(&unpacked);
    let docker_layout = dir.join("docker-oci");
    must(
        Command::new(&t.skopeo)
            .args(["copy", "--quiet"])
            .arg(format!("docker-archive:{}", saved.display()))
            .arg(format!("oci:{}:img", docker_layout.display())),
    );
    let docker_rootfs = umoci_unpack(t, &docker_layout, "img", &dir.join("docker-bundle"));
    let _ = run_cmd(docker_cmd(&t.docker).args(["rmi", "-f", &image]));

    let mut config_diffs = Vec::new();
    compare_configs(&forge_cfg, &docker_cfg, &mut config_diffs);
    let mut fs_diffs = Vec::new();
    compare_trees(
        "fs",
        &forge_rootfs,
        "forge",
        &docker_rootfs,
        "buildkit",
        &mut fs_diffs,
    );
    // forge's own local exporter must agree with the image it wrote, exactly.
    let mut local_diffs = Vec::new();
    compare_trees(
        "local-export",
        &local,
        "forge-local",
        &forge_rootfs,
        "forge-image",
        &mut local_diffs,
    );

    let mut out = Outcome {
        config_ok: true,
        fs_ok: true,
        unexpected: vec![],
        seen: vec![],
    };
    for (group, diffs) in [
        ("config", &config_diffs),
        ("fs", &fs_diffs),
        ("local", &local_diffs),
    ] {
        for d in diffs {
            out.seen.push((v.name.clone(), d.key.clone()));
            let known = group != "local" && case.known.iter().any(|k| k.matches(&v.name, &d.key));
            if !known {
                match group {
                    "config" => out.config_ok = false,
                    _ => out.fs_ok = false,
                }
                out.unexpected
                    .push(format!("{}/{}: {}: {}", case.name, v.name, d.key, d.detail));
            }
        }
    }
    if std::env::var_os("COMPAT_KEEP").is_none() {
        let _ = fs::remove_dir_all(&dir);
    }
    out
}

#[test]
fn forge_matches_buildkit() {
    let Some(t) = tools() else { return };
    let Some(forge) = Forge::with_base() else {
        return;
    };
    let cases = load_cases();
    assert!(
        !cases.is_empty(),
        "no cases under {}",
        fixtures_dir().display()
    );

    // The same base in both builders, under a name of its own.
    forge.ok(&["tag", BASE, BASE_NAME]);
    let base_tar = forge.scratch("compat-base.tar");
    forge.ok(&["save", "-o", &base_tar.display().to_string(), BASE_NAME]);
    must(Command::new(&t.docker).arg("load").arg("-i").arg(&base_tar));
    let forge_base = forge.inspect(BASE_NAME);
    let docker_base = must(Command::new(&t.docker).args(["image", "inspect", BASE_NAME])).json();
    assert_eq!(
        forge_base["Config"]["rootfs"]["diff_ids"], docker_base[0]["RootFS"]["Layers"],
        "docker and forge must start from the same base layer"
    );

    let work = forge.scratch("compat");
    let mut table = Vec::new();
    let mut failures = Vec::new();
    for case in &cases {
        let mut seen = Vec::new();
        for v in &case.variants {
            eprintln!("compat: {} / {}", case.name, v.name);
            let o = run_variant(&t, &forge, &work, case, v);
            let mark = |ok: bool| if ok { "same" } else { "DIFF" };
            table.push(format!(
                "{:<24} {:<12} config={:<5} fs={}",
                case.name,
                v.name,
                mark(o.config_ok),
                mark(o.fs_ok)
            ));
            failures.extend(o.unexpected);
            seen.extend(o.seen);
        }
        for k in &case.known {
            if !seen.iter().any(|(v, key)| k.matches(v, key)) {
                failures.push(format!(
                    "{}/known-diffs:{}: `{} {}` no longer occurs; remove it",
                    case.name, k.line, k.variant, k.key
                ));
            }
        }
    }
    eprintln!("compat results:\n{}", table.join("\n"));
    assert!(
        failures.is_empty(),
        "{} unexpected difference(s) between forge and BuildKit:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The comparator itself (no docker needed): it must see every kind of difference it claims to.

#[test]
fn tree_comparison_sees_each_kind_of_difference() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let make = |root: &Path| {
        fs::create_dir_all(root.join("d")).unwrap();
        fs::write(root.join("d/f"), "same").unwrap();
        fs::write(root.join("mode"), "m").unwrap();
        fs::write(root.join("content"), "one").unwrap();
        symlink("target-a", root.join("link")).unwrap();
        fs::write(root.join("h1"), "h").unwrap();
        fs::write(root.join("h2"), "h").unwrap();
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make(a.path());
    make(b.path());
    let mut none = Vec::new();
    compare_trees("fs", a.path(), "a", b.path(), "b", &mut none);
    assert!(none.is_empty(), "identical trees differ: {none:?}");

    fs::set_permissions(b.path().join("mode"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(b.path().join("content"), "two").unwrap();
    fs::remove_file(b.path().join("link")).unwrap();
    symlink("target-b", b.path().join("link")).unwrap();
    fs::remove_file(b.path().join("h2")).unwrap();
    fs::hard_link(b.path().join("h1"), b.path().join("h2")).unwrap();
    fs::write(b.path().join("extra"), "").unwrap();
    fs::remove_file(b.path().join("d/f")).unwrap();
    fs::create_dir(b.path().join("d/f")).unwrap();
    let mut diffs = Vec::new();
    compare_trees("fs", a.path(), "a", b.path(), "b", &mut diffs);
    let keys: BTreeSet<String> = diffs.iter().map(|d| d.key.clone()).collect();
    let want = [
        "fs /mode mode",
        "fs /content content",
        "fs /link type",
        "fs /h1 links",
        "fs /h2 links",
        "fs /extra",
        "fs /d/f type",
    ];
    for k in want {
        assert!(keys.contains(k), "missing {k:?} in {keys:?}");
    }
    assert_eq!(
        keys.len(),
        want.len(),
        "unexpected extra differences: {keys:?}"
    );
}

#[test]
fn history_normalization_maps_only_version_differences() {
    let n = normalize_created_by;
    assert_eq!(
        n("EXPOSE map[80/tcp:{} 53/udp:{}]"),
        n("EXPOSE [53/udp 80/tcp 80/tcp]")
    );
    assert_ne!(n("EXPOSE map[80/tcp:{}]"), n("EXPOSE [81/tcp]"));
    assert_eq!(n("ARG A=1 B"), n("ARG A=2 B=3"));
    assert_ne!(n("ARG A"), n("ARG B"));
    assert_eq!(n("COPY --chown=app --chmod=600 a /b"), n("COPY a /b"));
    assert_ne!(
        n("COPY --from=x a /b"),
        n("COPY a /b"),
        "--from must never appear in history"
    );
    assert_eq!(
        n("HEALTHCHECK &{[\"CMD\" \"x\"] \"1s\"}"),
        n("HEALTHCHECK {Test:[CMD x] Interval:1s}")
    );
    assert_eq!(n("RUN /bin/sh -c true"), "RUN /bin/sh -c true");
    let h = |by: &str, empty: bool| serde_json::json!({"created_by": by, "empty_layer": empty});
    assert_eq!(
        history_entry(&h("RUN x # forge", false)),
        history_entry(&h("RUN x # buildkit", false))
    );
    assert_ne!(
        history_entry(&h("ENV A=1", true)),
        history_entry(&h("ENV A=1", false))
    );
    assert_eq!(present(Some(&serde_json::json!(null))), None);
    assert_eq!(present(Some(&serde_json::json!({}))), None);
    assert_eq!(
        present(Some(&serde_json::json!(["x"]))),
        Some(serde_json::json!(["x"]))
    );
}
