//! `ADD <git repository>`: a repository served by a real `git daemon` on 127.0.0.1 is checked
//! out at a branch, a tag or a commit, optionally one subdirectory of it, with or without
//! `.git`; the same commit gives the same layer, a new commit reruns the step.

mod common;
use common::*;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A git repository under a `git daemon --export-all` on 127.0.0.1; killed on drop.
struct GitServer {
    child: Child,
    port: u16,
    base: TempDir,
    git: PathBuf,
}

impl GitServer {
    fn start() -> Option<GitServer> {
        let git = tool("git")?;
        let base = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&git)
            .args(["daemon", "--export-all", "--reuseaddr", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.path().display()))
            .arg(base.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start git daemon");
        let s = GitServer { child, port, base, git };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "git daemon did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(s)
    }

    fn repo(&self) -> PathBuf {
        self.base.path().join("app.git")
    }

    fn url(&self) -> String {
        format!("git://127.0.0.1:{}/app.git", self.port)
    }

    /// Runs git in the repository; returns stdout.
    fn git(&self, args: &[&str]) -> String {
        let o = Command::new(&self.git)
            .current_dir(self.repo())
            .args(["-c", "user.name=forge", "-c", "user.email=forge@example.com", "-c", "init.defaultBranch=main"])
            .args(args)
            .env("GIT_COMMITTER_DATE", "2024-01-02T03:04:05Z")
            .env("GIT_AUTHOR_DATE", "2024-01-02T03:04:05Z")
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn commit_files(&self, files: &[(&str, &str)], msg: &str) -> String {
        write_files(&self.repo(), files);
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", msg]);
        self.git(&["rev-parse", "HEAD"])
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn setup() -> Option<(Forge, GitServer)> {
    let f = Forge::with_base()?;
    let g = GitServer::start()?;
    std::fs::create_dir_all(g.repo()).unwrap();
    g.git(&["init", "-q"]);
    Some((f, g))
}

fn mtime(p: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).unwrap().mtime()
}

#[test]
fn add_git_checks_out_refs_subdirs_and_caches_by_content() {
    let Some((f, g)) = setup() else { return };
    let first = g.commit_files(&[("README", "v1 readme\n"), ("src/main.sh", "echo one\n"), ("docs/a.md", "# a\n")], "one");
    g.git(&["tag", "v1"]);
    let second = g.commit_files(&[("src/main.sh", "echo two\n")], "two");
    assert_ne!(first, second);

    let df = format!(
        "FROM busybox:local\nADD {url}#v1 /v1\nADD {url}#{first}:src /first-src\nADD {url} /app\nADD --keep-git-dir {url}#main /withgit\n",
        url = g.url()
    );
    let ctx = context(&[("Dockerfile", &df)]);
    let (b, root) = build_rootfs(&f, ctx.path(), &["-t", "git:1"]);
    assert_eq!(b.progress.ran().len(), 4, "{}", b.out.stderr);
    // HEAD of the default branch, whole tree, without .git.
    assert_eq!(read(&root, "app/src/main.sh"), "echo two\n");
    assert_eq!(read(&root, "app/README"), "v1 readme\n");
    assert!(!root.join("app/.git").exists(), ".git must be left out by default");
    // A tag.
    assert_eq!(read(&root, "v1/src/main.sh"), "echo one\n");
    // A commit and a subdirectory: the directory's contents land in the destination.
    assert_eq!(read(&root, "first-src/main.sh"), "echo one\n");
    assert!(!root.join("first-src/README").exists());
    // --keep-git-dir keeps a repository at that commit.
    assert!(root.join("withgit/.git").is_dir());
    let head = Command::new(&g.git).arg("-C").arg(root.join("withgit")).args(["rev-parse", "HEAD"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&head.stdout).trim(), second);
    // Files carry the commit time, not the checkout time.
    assert_eq!(mtime(&root.join("app/src/main.sh")), 1704164645);

    // Nothing changed in the repository: everything is cached, the image is the same.
    let again = f.build(ctx.path(), &["-t", "git:2"]);
    assert!(again.progress.ran().is_empty(), "{}", again.out.stderr);
    assert_eq!(f.inspect("git:1")["Id"], f.inspect("git:2")["Id"]);

    // A new commit on main reruns the steps that follow main; the pinned ones before them
    // stay cached.
    g.commit_files(&[("README", "v3 readme\n")], "three");
    let third = f.build(ctx.path(), &["-t", "git:3"]);
    let ran = third.progress.ran();
    assert!(ran.iter().any(|s| s.contains(&format!("ADD {} /app", g.url()))), "{ran:?}");
    assert!(!ran.iter().any(|s| s.contains("#v1 /v1") || s.contains(":src /first-src")), "pinned refs stay cached: {ran:?}");
    assert_eq!(ran.len(), 2, "{ran:?}");
}

#[test]
fn add_git_errors_name_the_repository_and_the_step() {
    let Some((f, g)) = setup() else { return };
    g.commit_files(&[("a", "a\n")], "one");
    let df = format!("FROM busybox:local\nADD {}#no-such-branch /x\n", g.url());
    let ctx = context(&[("Dockerfile", &df)]);
    let b = f.try_build::<&str>(ctx.path(), &[]);
    assert_ne!(b.out.code, 0);
    assert!(b.out.stderr.contains("Dockerfile:2"), "{}", b.out.stderr);
    assert!(b.out.stderr.contains(&g.url()), "{}", b.out.stderr);

    let df = format!("FROM busybox:local\nADD {}#main:missing /x\n", g.url());
    let ctx = context(&[("Dockerfile", &df)]);
    let b = f.try_build::<&str>(ctx.path(), &[]);
    assert_ne!(b.out.code, 0);
    assert!(b.out.stderr.contains("no directory \"missing\""), "{}", b.out.stderr);

    let df = format!("FROM busybox:local\nADD {}#--upload-pack=touch$IFS/tmp/pwned /x\n", g.url());
    let ctx = context(&[("Dockerfile", &df)]);
    let b = f.try_build::<&str>(ctx.path(), &[]);
    assert_ne!(b.out.code, 0);
    assert!(b.out.stderr.contains("invalid git ref"), "{}", b.out.stderr);
}
