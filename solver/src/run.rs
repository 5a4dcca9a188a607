//! RUN: turning the instruction into an argv and mounts, running it in the sandbox on an
//! overlay of the stage's snapshots, and committing the upperdir as the new layer.

use std::collections::VecDeque;
use std::path::PathBuf;

use forge_oci::layer::SourceKind;
use forge_parser::{CacheSharing, CmdForm, MountKind as PMount, MountSpec, NetworkMode};
use forge_sandbox::{Mount, MountKind, Network, OutputStream, Rootfs, RunSpec};

use crate::build::{Build, Layer};
use crate::error::{Location, SolveError};
use crate::event::LogStream;
use crate::context::Kind;
use crate::copy::{self, CopyFlags, SourceSide};

/// The argv a RUN executes, and what it reads on stdin. A shell-form command with heredocs is
/// handed to the shell with the heredoc bodies appended, so the shell itself feeds them; a RUN
/// whose whole command is one heredoc runs that heredoc as the script (with the interpreter its
/// `#!` line names, reading the script from stdin).
pub fn command(run: &forge_parser::Run, shell: &[String]) -> (Vec<String>, Option<Vec<u8>>) {
    match &run.command {
        CmdForm::Shell(cmd) if run.heredocs.len() == 1 && is_heredoc_only(cmd) => {
            let h = &run.heredocs[0];
            match h.content.strip_prefix("#!") {
                Some(rest) => {
                    let line = rest.lines().next().unwrap_or("");
                    let mut v: Vec<String> = line.split_whitespace().map(str::to_string).collect();
                    v.push("/dev/stdin".into());
                    (v, Some(h.content.clone().into_bytes()))
                }
                None => {
                    let mut v = shell.to_vec();
                    v.push(h.content.clone());
                    (v, None)
                }
            }
        }
        _ => (argv(run, shell), None),
    }
}

/// The argv of a RUN without script heredocs (see [`command`]).
pub fn argv(run: &forge_parser::Run, shell: &[String]) -> Vec<String> {
    match &run.command {
        CmdForm::Exec(v) => v.clone(),
        CmdForm::Shell(cmd) => {
            let mut text = cmd.clone();
            for h in &run.heredocs {
                text.push('\n');
                text.push_str(&h.content);
                if !h.content.ends_with('\n') && !h.content.is_empty() {
                    text.push('\n');
                }
                text.push_str(&h.name);
            }
            let mut v = shell.to_vec();
            v.push(text);
            v
        }
    }
}

fn is_heredoc_only(cmd: &str) -> bool {
    let c = cmd.trim();
    let rest = c.strip_prefix("<<").map(|r| r.strip_prefix('-').unwrap_or(r));
    match rest {
        Some(r) => !r.is_empty() && !r.trim().contains(char::is_whitespace),
        None => false,
    }
}

/// The part of the mounts that belongs in the cache key (never secret contents).
pub fn mounts_key(mounts: &[MountSpec]) -> Vec<String> {
    mounts
        .iter()
        .map(|m| {
            format!(
                "{:?} target={:?} id={:?} from={:?} source={:?} ro={} sharing={:?} required={} env={:?}",
                m.kind, m.target, m.id, m.from, m.source, m.readonly, m.sharing, m.required, m.env
            )
        })
        .collect()
}

pub struct RunRequest<'a> {
    pub loc: &'a Location,
    pub id: usize,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: Option<String>,
    pub network: NetworkMode,
    pub insecure: bool,
    pub mounts: &'a [MountSpec],
    pub lower: Vec<PathBuf>,
    pub stdin: Option<Vec<u8>>,
}

/// Splits streamed output into lines and forwards them as events, keeping the last few.
struct LineSplitter<'b, 'a> {
    build: &'b Build<'a>,
    id: usize,
    partial: [Vec<u8>; 2],
    tail: VecDeque<String>,
}

impl LineSplitter<'_, '_> {
    fn push(&mut self, stream: OutputStream, bytes: &[u8]) {
        let i = usize::from(stream == OutputStream::Stderr);
        self.partial[i].extend_from_slice(bytes);
        while let Some(pos) = self.partial[i].iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial[i].drain(..=pos).collect();
            self.emit(i, &line[..line.len() - 1]);
        }
    }

    fn emit(&mut self, i: usize, line: &[u8]) {
        let text = String::from_utf8_lossy(line).trim_end_matches('\r').to_string();
        self.tail.push_back(text.clone());
        if self.tail.len() > 10 {
            self.tail.pop_front();
        }
        let stream = if i == 1 { LogStream::Stderr } else { LogStream::Stdout };
        self.build.log(self.id, stream, text);
    }

    fn finish(&mut self) {
        for i in 0..2 {
            if !self.partial[i].is_empty() {
                let line = std::mem::take(&mut self.partial[i]);
                self.emit(i, &line);
            }
        }
    }
}

/// Runs the command and returns the layer it produced.
pub fn execute(b: &Build<'_>, req: &RunRequest<'_>) -> Result<Layer, SolveError> {
    let store = b.store();
    let tmp = store.temp_dir("run")?;
    let upper = tmp.path().join("upper");
    let work = tmp.path().join("work");
    for d in [&upper, &work] {
        std::fs::create_dir(d).map_err(|e| SolveError::io(d, e))?;
    }
    let mut env = req.env.clone();
    let mut mounts = Vec::new();
    let mut _locks = Vec::new();
    let mut _scratch = Vec::new();
    let mut ssh_index = 0;
    for m in req.mounts {
        match m.kind {
            PMount::Cache => {
                let target = m.target.clone().ok_or_else(|| SolveError::step(req.loc, "a cache mount needs a target"))?;
                let id = m.id.clone().unwrap_or_else(|| target.clone());
                let dir = store.cache_mount_dir(&id)?;
                match m.sharing {
                    CacheSharing::Locked => _locks.push(store.lock_cache_mount(&id, true)?),
                    CacheSharing::Shared | CacheSharing::Private => _locks.push(store.lock_cache_mount(&id, false)?),
                }
                prepare_cache_dir(&dir, m)?;
                mounts.push(Mount { target, kind: MountKind::Bind { source: dir, readonly: m.readonly } });
            }
            PMount::Tmpfs => {
                let target = m.target.clone().ok_or_else(|| SolveError::step(req.loc, "a tmpfs mount needs a target"))?;
                mounts.push(Mount { target, kind: MountKind::Tmpfs { size: m.size } });
            }
            PMount::Secret => {
                let id = m
                    .id
                    .clone()
                    .or_else(|| m.target.as_deref().and_then(|t| t.rsplit('/').next()).map(str::to_string))
                    .ok_or_else(|| SolveError::step(req.loc, "a secret mount needs an id or a target"))?;
                let Some(secret) = b.options().secrets.get(&id) else {
                    if m.required {
                        return Err(SolveError::Step {
                            location: req.loc.clone(),
                            message: format!("secret {id:?} is required but was not provided"),
                            help: Some(format!("pass --secret id={id},src=PATH")),
                        });
                    }
                    continue;
                };
                if let Some(var) = &m.env {
                    env.push(format!("{var}={}", String::from_utf8_lossy(&secret.0)));
                }
                if m.env.is_none() || m.target.is_some() {
                    let target = m.target.clone().unwrap_or_else(|| format!("/run/secrets/{id}"));
                    mounts.push(Mount {
                        target,
                        kind: MountKind::SecretFile {
                            data: secret.0.clone(),
                            mode: m.mode.unwrap_or(0o400),
                            uid: m.uid.unwrap_or(0),
                            gid: m.gid.unwrap_or(0),
                        },
                    });
                }
            }
            PMount::Ssh => {
                let id = m.id.clone().unwrap_or_else(|| "default".into());
                let Some(sock) = b.options().ssh.get(&id) else {
                    if m.required {
                        return Err(SolveError::Step {
                            location: req.loc.clone(),
                            message: format!("ssh agent {id:?} is required but was not provided"),
                            help: Some("pass --ssh default=$SSH_AUTH_SOCK".into()),
                        });
                    }
                    continue;
                };
                let target = m.target.clone().unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{ssh_index}"));
                ssh_index += 1;
                if !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                    env.push(format!("SSH_AUTH_SOCK={target}"));
                }
                mounts.push(Mount { target, kind: MountKind::Socket { source: sock.clone() } });
            }
            PMount::Bind => {
                let target = m.target.clone().ok_or_else(|| SolveError::step(req.loc, "a bind mount needs a target"))?;
                let (source, scratch) = bind_source(b, m, req.loc)?;
                if let Some(s) = scratch {
                    _scratch.push(s);
                }
                mounts.push(Mount { target, kind: MountKind::Bind { source, readonly: m.readonly } });
            }
        }
    }
    let spec = RunSpec {
        rootfs: Rootfs::Overlay { lower: req.lower.clone(), upper: upper.clone(), work },
        args: req.argv.clone(),
        env,
        cwd: req.cwd.clone(),
        user: req.user.clone(),
        hostname: "forge".to_string(),
        network: match req.network {
            NetworkMode::None => Network::None,
            NetworkMode::Default | NetworkMode::Host => Network::Host,
        },
        mounts,
        insecure: req.insecure,
        stdin: req.stdin.clone(),
    };
    let mut lines = LineSplitter { build: b, id: req.id, partial: [Vec::new(), Vec::new()], tail: VecDeque::new() };
    let status = b.sandbox().run(&spec, &mut |s, bytes| lines.push(s, bytes), b.cancel_token())?;
    lines.finish();
    if b.cancel_token().is_cancelled() {
        return Err(SolveError::Cancelled);
    }
    if !status.success() {
        let status = match (status.code, status.signal) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(s)) => format!("was killed by signal {s}"),
            _ => "ended abnormally".to_string(),
        };
        return Err(SolveError::RunFailed { location: req.loc.clone(), status, last_output: lines.tail.into_iter().collect() });
    }
    crate::layers::commit_tree(store, &upper, SourceKind::OverlayUpper, &b.layer_options(SourceKind::OverlayUpper))
}

/// The host path a `RUN --mount=type=bind` mounts. Read-only context sources are bound in
/// place; anything from a stage or image, and anything writable, is copied into a scratch
/// directory first (so writes are discarded and layered sources are merged).
fn bind_source(b: &Build<'_>, m: &MountSpec, loc: &Location) -> Result<(PathBuf, Option<forge_cache::TempDir>), SolveError> {
    let src = m.source.clone().unwrap_or_else(|| "/".into());
    if m.from.is_none() && m.readonly {
        let ctx = b.build_context()?;
        let rel = copy::clean_rel(&src);
        let e = ctx.get(&rel).ok_or_else(|| SolveError::step(loc, format!("bind mount source {src:?} not found in the build context")))?;
        if e.kind == Kind::Symlink {
            return Err(SolveError::step(loc, format!("bind mount source {src:?} is a symlink")));
        }
        return Ok((ctx.root().join(rel), None));
    }
    let scratch = b.store().temp_dir("bind")?;
    let dir = scratch.path().join("src");
    std::fs::create_dir(&dir).map_err(|e| SolveError::io(&dir, e))?;
    let empty = crate::layered::LayeredView::new(vec![]);
    let flags = CopyFlags::default();
    let items = match &m.from {
        None => {
            let ctx = b.build_context()?;
            copy::plan(&SourceSide::Context(&ctx), std::slice::from_ref(&src), "/", "/", &flags, &empty, loc)?.into_items()?
        }
        Some(f) => {
            let view = b.view_of(f, loc)?;
            copy::plan(&SourceSide::Image(&view), std::slice::from_ref(&src), "/", "/", &flags, &empty, loc)?.into_items()?
        }
    };
    // A single file is bound as that file.
    let single_file = match items.as_slice() {
        [it] if it.kind == Kind::File => Some(dir.join(it.dest.trim_start_matches('/'))),
        _ => None,
    };
    copy::materialize(&copy::CopyPlan::from_items(items), &dir, &empty, (0, 0))?;
    Ok((single_file.unwrap_or(dir), Some(scratch)))
}

fn prepare_cache_dir(dir: &std::path::Path, m: &MountSpec) -> Result<(), SolveError> {
    use std::os::unix::fs::PermissionsExt;
    let empty = std::fs::read_dir(dir).map(|mut r| r.next().is_none()).unwrap_or(false);
    if empty {
        if let Some(mode) = m.mode {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|e| SolveError::io(dir, e))?;
        }
        if m.uid.is_some() || m.gid.is_some() {
            std::os::unix::fs::chown(dir, m.uid, m.gid).map_err(|e| SolveError::io(dir, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use forge_parser::{Heredoc, Run};

    fn run(cmd: CmdForm, heredocs: Vec<Heredoc>) -> Run {
        Run { command: cmd, heredocs, mounts: vec![], network: None, security: None, raw_mounts: vec![] }
    }

    fn sh() -> Vec<String> {
        vec!["/bin/sh".into(), "-c".into()]
    }

    #[test]
    fn shell_and_exec_forms() {
        assert_eq!(argv(&run(CmdForm::Shell("echo hi".into()), vec![]), &sh()), vec!["/bin/sh", "-c", "echo hi"]);
        assert_eq!(argv(&run(CmdForm::Exec(vec!["ls".into(), "-l".into()]), vec![]), &sh()), vec!["ls", "-l"]);
    }

    #[test]
    fn heredoc_script_and_inline_heredoc() {
        let h = Heredoc { name: "EOF".into(), content: "echo a\necho b\n".into(), expand: true, chomp: false };
        assert_eq!(command(&run(CmdForm::Shell("<<EOF".into()), vec![h.clone()]), &sh()).0, vec!["/bin/sh", "-c", "echo a\necho b\n"]);
        let py = Heredoc { name: "P".into(), content: "#!/usr/bin/env python3\nprint(1)\n".into(), expand: true, chomp: false };
        let (v, stdin) = command(&run(CmdForm::Shell("<<P".into()), vec![py]), &sh());
        assert_eq!(v, vec!["/usr/bin/env", "python3", "/dev/stdin"]);
        assert!(stdin.unwrap().starts_with(b"#!"));
        let inline = argv(&run(CmdForm::Shell("cat <<EOF > /f".into()), vec![h]), &sh());
        assert_eq!(inline[2], "cat <<EOF > /f\necho a\necho b\nEOF");
    }
}
