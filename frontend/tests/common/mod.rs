//! Shared support for forge's end-to-end tests: run the `forge` binary against a throw-away
//! store, make the busybox base image once per test binary, write small build contexts, and
//! read `--progress=plain` output back as per-step records.
//!
//! ```ignore
//! mod common;
//! use common::*;
//!
//! #[test]
//! fn builds() {
//!     let Some(f) = Forge::with_base() else { return }; // skips loudly without busybox
//!     let ctx = context(&[("Dockerfile", "FROM busybox:local\nRUN echo hi > /x\n")]);
//!     let b = f.build(ctx.path(), &["-t", "t:1"]);
//!     assert_eq!(b.progress.ran(), ["RUN echo hi > /x"]);
//! }
//! ```
//!
//! Tools: [`tool`] finds an external program. When it is missing the test prints
//! `SKIPPED: <tool> not found` and returns, except under `CI=true`, where it panics.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use tempfile::TempDir;

/// The image name the shared base is stored under (`FROM busybox:local`).
pub const BASE: &str = "busybox:local";

/// Where the busybox binary comes from (a static one is needed inside images).
pub const BUSYBOX: &str = "/usr/bin/busybox";

/// The forge binary under test.
pub fn forge_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_forge"))
}

/// True when running under CI (`CI=true`): missing tools fail instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Skips (loudly) or, under CI, fails: `what` is missing.
pub fn skip_or_fail(what: &str) {
    if in_ci() {
        panic!("{what} not found, and CI=true: the end-to-end tests need it");
    }
    eprintln!(
        "SKIPPED: {what} not found (the test did not run; set CI=true to make this a failure)"
    );
}

/// Finds an external tool: an absolute path that must exist, or a name looked up on PATH.
/// Prints `SKIPPED: <tool> not found` and returns None when missing; panics under CI=true.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = if name.contains('/') {
        Some(PathBuf::from(name)).filter(|p| p.is_file())
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    };
    if found.is_none() {
        skip_or_fail(name);
    }
    found
}

/// `/usr/bin/docker` with a running daemon (`docker info` succeeds); skips or fails like [`tool`].
pub fn docker() -> Option<PathBuf> {
    let d = tool("/usr/bin/docker")?;
    let ok = Command::new(&d)
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        skip_or_fail("a running docker daemon (`/usr/bin/docker info` failed)");
        return None;
    }
    Some(d)
}

/// A finished command: exit code and captured output.
#[derive(Debug, Clone)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn from(o: std::process::Output) -> Out {
        use std::os::unix::process::ExitStatusExt;
        let code = o
            .status
            .code()
            .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0));
        Out {
            code,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics (showing both streams) unless the exit code was 0.
    #[track_caller]
    pub fn ok(self) -> Out {
        assert_eq!(
            self.code, 0,
            "command failed\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the exit code was `code`.
    #[track_caller]
    pub fn code(self, code: i32) -> Out {
        assert_eq!(
            self.code, code,
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs any command, capturing output.
#[track_caller]
pub fn run_cmd(cmd: &mut Command) -> Out {
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    Out::from(o)
}

/// A forge store in a temporary directory; every command runs with `--root` pointing at it.
pub struct Forge {
    dir: TempDir,
}

impl Default for Forge {
    fn default() -> Self {
        Forge::new()
    }
}

impl Forge {
    /// An empty store.
    pub fn new() -> Forge {
        Forge {
            dir: tempfile::Builder::new()
                .prefix("forge-e2e-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    /// A store holding the shared busybox base as `busybox:local`. None (after a loud SKIPPED
    /// line) when busybox is missing; panics under CI.
    pub fn with_base() -> Option<Forge> {
        let tar = base_tar()?;
        let f = Forge::new();
        f.ok(&[OsStr::new("load"), OsStr::new("-i"), tar.as_os_str()]);
        Some(f)
    }

    /// The store directory (`--root`).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// A scratch directory beside the store, for outputs and contexts.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join("scratch").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        p
    }

    /// `forge --root ROOT` with a clean environment for the things forge reads.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(forge_bin());
        c.arg("--root").arg(self.root());
        c.env_remove("FORGE_ROOT")
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("RUST_LOG")
            // Help text wraps at the terminal width: pin it so snapshots do not depend on it.
            .env("COLUMNS", "100");
        c
    }

    /// Runs `forge --root ROOT ARGS…`, whatever its exit code.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Out {
        run_cmd(self.cmd().args(args))
    }

    /// Runs `forge --root ROOT ARGS…` and asserts success.
    #[track_caller]
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> Out {
        let o = self.run(args);
        assert_eq!(
            o.code,
            0,
            "forge {:?} failed\n--- stdout\n{}\n--- stderr\n{}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
            o.stdout,
            o.stderr
        );
        o
    }

    /// `forge build --progress=plain ARGS… CONTEXT`, whatever its exit code.
    pub fn try_build<S: AsRef<OsStr>>(&self, ctx: &Path, args: &[S]) -> Build {
        self.try_build_env(ctx, args, &[])
    }

    /// Like [`Forge::try_build`], with extra environment variables for forge.
    pub fn try_build_env<S: AsRef<OsStr>>(
        &self,
        ctx: &Path,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Build {
        let mut c = self.cmd();
        c.arg("build").arg("--progress=plain").args(args).arg(ctx);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = run_cmd(&mut c);
        let progress = Progress::parse(&out.stderr);
        Build { out, progress }
    }

    /// A build that must succeed.
    #[track_caller]
    pub fn build<S: AsRef<OsStr>>(&self, ctx: &Path, args: &[S]) -> Build {
        self.build_env(ctx, args, &[])
    }

    /// A build that must succeed, with extra environment variables.
    #[track_caller]
    pub fn build_env<S: AsRef<OsStr>>(
        &self,
        ctx: &Path,
        args: &[S],
        env: &[(&str, &str)],
    ) -> Build {
        let b = self.try_build_env(ctx, args, env);
        assert_eq!(
            b.out.code, 0,
            "forge build failed\n--- stdout\n{}\n--- stderr\n{}",
            b.out.stdout, b.out.stderr
        );
        b
    }

    /// `forge inspect NAME` → the first element of its JSON array.
    #[track_caller]
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let v = self.ok(&["inspect", name]).json();
        v.get(0)
            .cloned()
            .unwrap_or_else(|| panic!("forge inspect {name}: empty answer {v}"))
    }

    /// `forge images --format json`.
    #[track_caller]
    pub fn images(&self) -> Vec<serde_json::Value> {
        match self.ok(&["images", "--format", "json"]).json() {
            serde_json::Value::Array(a) => a,
            other => panic!("forge images --format json: not an array: {other}"),
        }
    }
}

/// A finished `forge build`: the process result and its parsed plain progress.
#[derive(Debug)]
pub struct Build {
    pub out: Out,
    pub progress: Progress,
}

impl Build {
    /// The manifest digest from the final `built sha256:… (…)` line.
    #[track_caller]
    pub fn digest(&self) -> String {
        self.progress
            .summary
            .as_ref()
            .map(|s| s.digest.clone())
            .unwrap_or_else(|| panic!("no `built …` line in:\n{}", self.out.stderr))
    }
}

/// One numbered step of plain progress output.
#[derive(Debug, Clone, Default)]
pub struct Step {
    pub id: usize,
    /// `[stage 2/5] RUN make`
    pub name: String,
    pub cached: bool,
    pub done: bool,
    pub error: Option<String>,
    pub explain: Vec<String>,
    pub logs: Vec<String>,
}

impl Step {
    /// The instruction text after the `[stage i/n] ` label.
    pub fn instruction(&self) -> &str {
        match self.name.split_once("] ") {
            Some((label, rest)) if label.starts_with('[') => rest,
            _ => &self.name,
        }
    }

    /// The stage label inside the brackets, without the `i/n` counter (empty for unnamed stages).
    pub fn stage(&self) -> &str {
        let label = self
            .name
            .strip_prefix('[')
            .and_then(|s| s.split_once(']'))
            .map(|(l, _)| l)
            .unwrap_or("");
        label.rsplit_once(' ').map(|(s, _)| s).unwrap_or("")
    }

    pub fn is_from(&self) -> bool {
        self.instruction().starts_with("FROM ")
    }

    /// The step did work (it finished and was not a cache hit).
    pub fn ran(&self) -> bool {
        self.done && !self.cached
    }
}

/// The final `built DIGEST (N steps ran, M cached)` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub digest: String,
    pub ran: usize,
    pub cached: usize,
}

/// Parsed `--progress=plain` output.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub steps: Vec<Step>,
    pub warnings: Vec<String>,
    pub summary: Option<Summary>,
}

fn is_log_time(s: &str) -> bool {
    let (a, b) = match s.split_once('.') {
        Some(x) => x,
        None => return false,
    };
    !a.is_empty()
        && a.bytes().all(|c| c.is_ascii_digit())
        && b.len() == 3
        && b.bytes().all(|c| c.is_ascii_digit())
}

impl Progress {
    pub fn parse(text: &str) -> Progress {
        let mut p = Progress::default();
        for line in text.lines() {
            if let Some(w) = line.strip_prefix("WARNING: ") {
                p.warnings.push(w.to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("built ") {
                // built sha256:… (N steps ran, M cached)[ as tags]
                let (digest, tail) = rest.split_once(" (").unwrap_or((rest, ""));
                let nums: Vec<usize> = tail
                    .split(|c: char| !c.is_ascii_digit())
                    .filter(|s| !s.is_empty())
                    .filter_map(|s| s.parse().ok())
                    .collect();
                if nums.len() >= 2 {
                    p.summary = Some(Summary {
                        digest: digest.to_string(),
                        ran: nums[0],
                        cached: nums[1],
                    });
                }
                continue;
            }
            let Some(rest) = line.strip_prefix('#') else {
                continue;
            };
            let Some((num, body)) = rest.split_once(' ') else {
                continue;
            };
            let Ok(id) = num.parse::<usize>() else {
                continue;
            };
            let idx = match p.steps.iter().position(|s| s.id == id) {
                Some(i) => i,
                None => {
                    p.steps.push(Step {
                        id,
                        ..Default::default()
                    });
                    p.steps.len() - 1
                }
            };
            let s = &mut p.steps[idx];
            if body == "CACHED" {
                s.cached = true;
                s.done = true;
            } else if let Some(t) = body.strip_prefix("DONE ") {
                if t.ends_with('s') {
                    s.done = true;
                }
            } else if let Some(e) = body.strip_prefix("ERROR: ") {
                s.error = Some(e.to_string());
            } else if let Some(r) = body.strip_prefix("cache miss: ") {
                s.explain.push(r.to_string());
            } else if body
                .split_once(' ')
                .map(|(t, _)| is_log_time(t))
                .unwrap_or(is_log_time(body))
            {
                s.logs.push(
                    body.split_once(' ')
                        .map(|(_, l)| l.to_string())
                        .unwrap_or_default(),
                );
            } else if s.name.is_empty() {
                s.name = body.to_string();
            }
        }
        p
    }

    /// Instructions (without the stage label) of the non-FROM steps that ran.
    pub fn ran(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|s| !s.is_from() && s.ran())
            .map(|s| s.instruction().to_string())
            .collect()
    }

    /// Instructions of the steps served from the cache.
    pub fn cached(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|s| s.cached)
            .map(|s| s.instruction().to_string())
            .collect()
    }

    /// The one step whose instruction contains `needle`; panics (listing the steps) otherwise.
    #[track_caller]
    pub fn step(&self, needle: &str) -> &Step {
        let hits: Vec<&Step> = self
            .steps
            .iter()
            .filter(|s| s.instruction().contains(needle))
            .collect();
        match hits.as_slice() {
            [one] => one,
            _ => panic!(
                "expected exactly one step containing {needle:?}, found {}; steps:\n{}",
                hits.len(),
                self.steps
                    .iter()
                    .map(|s| format!("  #{} {}", s.id, s.name))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }

    /// True when some step's instruction contains `needle`.
    pub fn has_step(&self, needle: &str) -> bool {
        self.steps.iter().any(|s| s.instruction().contains(needle))
    }
}

/// Writes `files` (path relative to `dir`, content) into `dir`, creating parent directories.
/// A path ending in `/` makes an empty directory.
pub fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = dir.join(path);
        if path.ends_with('/') {
            std::fs::create_dir_all(&p).unwrap();
            continue;
        }
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, content).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    }
}

/// A new temporary build context holding `files`.
pub fn context(files: &[(&str, &str)]) -> TempDir {
    let d = tempfile::Builder::new()
        .prefix("forge-ctx-")
        .tempdir()
        .expect("temp dir");
    write_files(d.path(), files);
    d
}

/// Sets a file's modification time to `secs` after the epoch (content untouched).
pub fn set_mtime(path: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .unwrap();
}

/// The shared base: an OCI layout tar holding `busybox:local`, made once per test binary with
/// `forge import` (as `fixtures/mkbase.sh` does): /bin/busybox with one symlink per applet,
/// /etc/passwd (root, app:1000, nobody), /etc/group, /tmp. None (loudly) without busybox.
pub fn base_tar() -> Option<&'static Path> {
    static BASE_TAR: OnceLock<Option<PathBuf>> = OnceLock::new();
    BASE_TAR.get_or_init(make_base).as_deref()
}

/// The root filesystem the base image is made from (a directory; read-only by convention).
pub fn base_rootfs() -> Option<PathBuf> {
    base_tar().map(|t| t.parent().unwrap().join("rootfs"))
}

fn make_base() -> Option<PathBuf> {
    let bb = tool(BUSYBOX)?;
    let list = run_cmd(Command::new(&bb).arg("--list"));
    if list.code != 0 || list.stdout.trim().is_empty() {
        skip_or_fail("a static busybox that lists its applets (/usr/bin/busybox --list failed)");
        return None;
    }
    // One directory per process under the target's temp dir; directories of processes that
    // are gone are removed first, so reruns do not pile up.
    let parent = Path::new(env!("CARGO_TARGET_TMPDIR")).join("forge-e2e-base");
    std::fs::create_dir_all(&parent).unwrap();
    if let Ok(entries) = std::fs::read_dir(&parent) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(pid) = name.parse::<u32>() {
                if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let dir = parent.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("rootfs");
    for d in [
        "bin", "sbin", "etc", "tmp", "root", "home/app", "usr/bin", "usr/sbin", "var/tmp", "proc",
        "dev", "sys", "run",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(&bb, root.join("bin/busybox")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for applet in list.stdout.split_whitespace().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\napp:x:1000:\nnogroup:x:65534:\n",
    )
    .unwrap();
    for t in ["tmp", "var/tmp"] {
        std::fs::set_permissions(root.join(t), std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    std::os::unix::fs::chown(root.join("home/app"), Some(1000), Some(1000)).ok();

    let store = dir.join("store");
    let forge = |args: &[&OsStr]| {
        let o = run_cmd(
            Command::new(forge_bin())
                .arg("--root")
                .arg(&store)
                .args(args)
                .env("SOURCE_DATE_EPOCH", "0"),
        );
        assert_eq!(
            o.code, 0,
            "making the base image: forge {args:?} failed\n{}\n{}",
            o.stdout, o.stderr
        );
    };
    forge(&[
        OsStr::new("import"),
        OsStr::new("--cmd"),
        OsStr::new("[\"/bin/sh\"]"),
        root.as_os_str(),
        OsStr::new(BASE),
    ]);
    let tar = dir.join("busybox.tar");
    forge(&[
        OsStr::new("save"),
        OsStr::new("--format"),
        OsStr::new("oci"),
        OsStr::new("-o"),
        tar.as_os_str(),
        OsStr::new(BASE),
    ]);
    let _ = std::fs::remove_dir_all(&store);
    Some(tar)
}

/// Builds with `-o type=local` and returns the root filesystem directory.
pub fn build_rootfs(f: &Forge, ctx: &Path, args: &[&str]) -> (Build, PathBuf) {
    let dest = f.scratch(&format!(
        "rootfs-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let out = format!("type=local,dest={}", dest.display());
    let mut all = args.to_vec();
    all.extend(["-o", &out]);
    let b = f.build(ctx, &all);
    (b, dest)
}

/// Reads a file of an unpacked root filesystem, naming it when that fails.
pub fn read(dir: &Path, p: &str) -> String {
    std::fs::read_to_string(dir.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// A `docker-registry` on 127.0.0.1 with its own config and storage; killed on drop.
pub struct Registry {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Registry {
    /// Starts one; `htpasswd` = Some((user, password)) turns on basic auth (needs `htpasswd`
    /// from apache2-utils). None after a loud skip when a tool is missing (a panic under CI).
    pub fn start(htpasswd: Option<(&str, &str)>) -> Option<Registry> {
        let bin = tool("/usr/bin/docker-registry")?;
        let dir = tempfile::tempdir().unwrap();
        let auth = match htpasswd {
            None => String::new(),
            Some((user, password)) => {
                let tool_path = tool("/usr/bin/htpasswd")?;
                let out = Command::new(tool_path).args(["-Bbn", user, password]).output().expect("run htpasswd");
                assert!(out.status.success(), "htpasswd failed");
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, &out.stdout).unwrap();
                format!("auth:\n  htpasswd:\n    realm: forge-test\n    path: {}\n", path.display())
            }
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: forge-test\n{auth}",
            dir.path().join("data").display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut r = Registry {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = r.child.try_wait().unwrap() {
                panic!("docker-registry exited with {status}");
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: x\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                    return Some(r);
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
