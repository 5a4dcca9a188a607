//! `ADD <git repository> <dest>`: a checkout of one ref, copied like a directory.
//!
//! The source is `URL[#REF][:SUBDIR]` where URL is `git://…`, `git@host:path`, `ssh://…`, or
//! `http(s)://…` ending in `.git`. REF is a branch, tag or commit (default: the remote's
//! HEAD); SUBDIR selects a directory of the checkout. The checkout is made with the `git`
//! program. `.git` is left out unless `--keep-git-dir` is given. Every file's mtime is the
//! commit's time, so the same commit gives the same layer on any machine and at any time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use forge_cache::{Store, TempDir};

use crate::context::{Context, Ignore};
use crate::error::{Location, SolveError};

/// Whether an ADD source names a git repository, by BuildKit's rules.
pub fn is_git_source(s: &str) -> bool {
    let base = s.split('#').next().unwrap_or("");
    s.starts_with("git://")
        || s.starts_with("git@")
        || s.starts_with("ssh://")
        || ((s.starts_with("http://") || s.starts_with("https://")) && base.ends_with(".git"))
}

/// A parsed git source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitSource {
    pub url: String,
    pub reference: Option<String>,
    pub subdir: Option<String>,
}

impl GitSource {
    pub fn parse(s: &str) -> Result<GitSource, String> {
        let (url, frag) = match s.split_once('#') {
            Some((u, f)) => (u, Some(f)),
            None => (s, None),
        };
        let (reference, subdir) = match frag {
            None | Some("") => (None, None),
            Some(f) => match f.split_once(':') {
                Some((r, d)) => ((!r.is_empty()).then(|| r.to_string()), (!d.is_empty()).then(|| d.to_string())),
                None => (Some(f.to_string()), None),
            },
        };
        if let Some(r) = &reference {
            // Never let a ref become an option of `git`.
            if r.starts_with('-') || r.contains("..") || r.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("invalid git ref {r:?}"));
            }
        }
        if let Some(d) = &subdir {
            if Path::new(d).components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                return Err(format!("the subdirectory {d:?} leaves the repository"));
            }
        }
        Ok(GitSource { url: url.to_string(), reference, subdir })
    }
}

/// A checkout, as a context of its own, with the commit it is at.
pub struct Checkout {
    _dir: TempDir,
    pub context: Arc<Context>,
    pub commit: String,
}

fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        // Only network and local protocols: no `ext::` command execution from a URL.
        .env("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null());
    c
}

fn run(mut c: Command, what: &str) -> Result<String, String> {
    let out = c.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "ADD of a git repository needs the `git` program on PATH".to_string(),
        _ => format!("cannot run git: {e}"),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        return Err(format!("{what} failed: {}", last.iter().rev().take(3).rev().cloned().collect::<Vec<_>>().join("; ")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Clones `src` at its ref into a store temp dir and returns the tree to copy.
pub fn checkout(src: &GitSource, keep_git_dir: bool, store: &Store, loc: &Location) -> Result<Checkout, SolveError> {
    let fail = |m: String| SolveError::Step { location: loc.clone(), message: format!("ADD {}: {m}", src.url), help: None };
    let dir = store.temp_dir("add-git")?;
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).map_err(|e| SolveError::io(&repo, e))?;
    let mut c = git(&repo);
    c.args(["init", "-q"]);
    run(c, "git init").map_err(fail)?;
    let mut c = git(&repo);
    c.args(["remote", "add", "origin", "--", &src.url]);
    run(c, "git remote add").map_err(fail)?;
    // Fetch the ref (or the remote's HEAD) and its tags; then check out what was fetched.
    let want = src.reference.clone().unwrap_or_else(|| "HEAD".to_string());
    let mut c = git(&repo);
    c.args(["fetch", "-q", "--depth", "1", "--no-tags", "origin", "--", &want]);
    if let Err(shallow) = run(c, "git fetch") {
        // Servers that refuse shallow fetches of a commit id: fetch everything and resolve it.
        let mut c = git(&repo);
        c.args(["fetch", "-q", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*"]);
        run(c, "git fetch").map_err(|e| fail(format!("{shallow}; {e}")))?;
        let mut c = git(&repo);
        c.args(["rev-parse", "--verify", "-q", &format!("{want}^{{commit}}")]);
        let commit = run(c, "git rev-parse").map_err(|_| fail(format!("no branch, tag or commit {want:?} in the repository")))?;
        let mut c = git(&repo);
        c.args(["update-ref", "FETCH_HEAD", &commit]);
        run(c, "git update-ref").map_err(fail)?;
    }
    let mut c = git(&repo);
    c.args(["-c", "advice.detachedHead=false", "checkout", "-q", "--detach", "FETCH_HEAD"]);
    run(c, "git checkout").map_err(fail)?;
    if repo.join(".gitmodules").exists() {
        let mut c = git(&repo);
        c.args(["submodule", "update", "-q", "--init", "--recursive", "--depth", "1"]);
        run(c, "git submodule update").map_err(fail)?;
    }
    let mut c = git(&repo);
    c.args(["rev-parse", "HEAD"]);
    let commit = run(c, "git rev-parse").map_err(fail)?;
    let mut c = git(&repo);
    c.args(["log", "-1", "--format=%ct"]);
    let when: i64 = run(c, "git log").map_err(fail)?.parse().unwrap_or(0);
    if !keep_git_dir {
        let g = repo.join(".git");
        std::fs::remove_dir_all(&g).map_err(|e| SolveError::io(&g, e))?;
    }
    let root: PathBuf = match &src.subdir {
        Some(d) => {
            let p = repo.join(d.trim_start_matches('/'));
            let meta = std::fs::symlink_metadata(&p).map_err(|_| fail(format!("no directory {d:?} in the repository")))?;
            if !meta.is_dir() {
                return Err(fail(format!("{d:?} is not a directory in the repository")));
            }
            p
        }
        None => repo,
    };
    set_mtimes(&root, when)?;
    let context = Arc::new(Context::walk(&root, Ignore::none())?);
    Ok(Checkout { _dir: dir, context, commit })
}

/// Sets every entry's mtime (not following symlinks) to `t`, children before parents.
fn set_mtimes(dir: &Path, t: i64) -> Result<(), SolveError> {
    for item in std::fs::read_dir(dir).map_err(|e| SolveError::io(dir, e))? {
        let item = item.map_err(|e| SolveError::io(dir, e))?;
        let p = item.path();
        if item.file_type().map_err(|e| SolveError::io(&p, e))?.is_dir() {
            set_mtimes(&p, t)?;
        }
        crate::copy::set_mtime(&p, (t, 0)).map_err(|e| SolveError::io(&p, e))?;
    }
    crate::copy::set_mtime(dir, (t, 0)).map_err(|e| SolveError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_sources_by_buildkit_rules() {
        assert!(is_git_source("git://host/r.git"));
        assert!(is_git_source("git@github.com:o/r.git#main"));
        assert!(is_git_source("https://host/o/r.git#v1:sub"));
        assert!(is_git_source("ssh://git@host/r"));
        assert!(!is_git_source("https://host/file.tar.gz"));
        assert!(!is_git_source("https://host/x.git.tar"));
        assert!(!is_git_source("local.git"));
    }

    #[test]
    fn fragments_name_ref_and_subdir() {
        let p = GitSource::parse("https://h/r.git#v1.2:docs/api").unwrap();
        assert_eq!((p.url.as_str(), p.reference.as_deref(), p.subdir.as_deref()), ("https://h/r.git", Some("v1.2"), Some("docs/api")));
        let p = GitSource::parse("git://h/r.git#:sub").unwrap();
        assert_eq!((p.reference, p.subdir.as_deref()), (None, Some("sub")));
        let p = GitSource::parse("git://h/r.git").unwrap();
        assert_eq!((p.reference, p.subdir), (None, None));
        assert!(GitSource::parse("git://h/r.git#--upload-pack=x").is_err());
        assert!(GitSource::parse("git://h/r.git#main:../../etc").is_err());
    }
}
