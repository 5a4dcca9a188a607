//! [`Sandbox::run`]: the caller's side of a run.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cancel::CancelToken;
use crate::error::SandboxError;
use crate::paths::clean_abs;
use crate::proto::{Reply, Request, CANCEL};
use crate::spec::{ExitStatus, OutputStream, Rootfs, RunSpec};
use crate::HELPER_ARG;

/// How long the helper gets to report after a cancel before it is killed outright.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Runs commands in sandboxes. Cheap to create; one `Sandbox` may run many specs, also from
/// several threads at once.
#[derive(Debug, Clone)]
pub struct Sandbox {
    helper: PathBuf,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

impl Sandbox {
    /// Uses the running executable as the helper: its `main` must call
    /// [`crate::maybe_run_helper`] first.
    pub fn new() -> Sandbox {
        Sandbox {
            helper: PathBuf::from("/proc/self/exe"),
        }
    }

    /// Uses another executable as the helper (one whose `main` calls
    /// [`crate::maybe_run_helper`]).
    pub fn with_helper(exe: PathBuf) -> Sandbox {
        Sandbox { helper: exe }
    }

    /// The helper executable.
    pub fn helper(&self) -> &Path {
        &self.helper
    }

    /// Runs `spec` and waits for it. Output is passed to `output` as it arrives, in the order
    /// each stream produced it. Returns how the command ended; a command that fails is `Ok`
    /// with a non-zero [`ExitStatus`], while errors mean it could not run (or was cancelled).
    ///
    /// Any number of runs may proceed at once from different threads. The helper dies with the
    /// thread that started it (`PR_SET_PDEATHSIG`), which is this call's thread: it blocks until
    /// the run is over, so that only matters if the thread is killed.
    pub fn run(
        &self,
        spec: &RunSpec,
        output: &mut dyn FnMut(OutputStream, &[u8]),
        cancel: &CancelToken,
    ) -> Result<ExitStatus, SandboxError> {
        validate(spec)?;
        if cancel.is_cancelled() {
            return Err(SandboxError::Cancelled);
        }
        let staging = StagingDir::create()?;
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| SandboxError::io("creating control socket", e))?;
        let mut child = Command::new(&self.helper)
            .arg0("forge-sandbox")
            .arg(HELPER_ARG)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| SandboxError::Spawn {
                exe: self.helper.clone(),
                source,
            })?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");

        let request = Request {
            spec: spec.clone(),
            staging: staging.path.clone(),
        };
        let mut line = serde_json::to_vec(&request)
            .map_err(|e| SandboxError::Helper(format!("encoding request: {e}")))?;
        line.push(b'\n');
        if let Err(e) = (&ours).write_all(&line) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SandboxError::io("sending the spec to the helper", e));
        }

        let (wake_rd, wake_wr) = pipe()?;
        let _registration = cancel.register(wake_wr);

        let mut streams = [
            Some((OutputStream::Stdout, OwnedFd::from(stdout))),
            Some((OutputStream::Stderr, OwnedFd::from(stderr))),
        ];
        let mut reply_bytes = Vec::new();
        let mut control_open = true;
        let mut cancelled = false;
        let mut kill_at: Option<Instant> = None;
        let mut buf = vec![0u8; 64 * 1024];
        while streams.iter().any(Option::is_some) || control_open {
            let mut pfds = Vec::with_capacity(4);
            for (_, fd) in streams.iter().flatten() {
                pfds.push(pollfd(fd.as_raw_fd()));
            }
            if control_open {
                pfds.push(pollfd(ours.as_raw_fd()));
            }
            if !cancelled {
                pfds.push(pollfd(wake_rd.as_raw_fd()));
            }
            let timeout = match kill_at {
                Some(at) => at.saturating_duration_since(Instant::now()).as_millis() as i32,
                None => -1,
            };
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(SandboxError::io("poll", e));
            }
            if n == 0 {
                // The helper did not finish after a cancel: kill it; init follows through its
                // parent-death signal, and the rest of the pid namespace with init.
                let _ = child.kill();
                kill_at = None;
                continue;
            }
            for p in &pfds {
                if p.revents == 0 {
                    continue;
                }
                if p.fd == wake_rd.as_raw_fd() {
                    cancelled = true;
                    let _ = (&ours).write_all(CANCEL);
                    kill_at = Some(Instant::now() + CANCEL_GRACE);
                } else if p.fd == ours.as_raw_fd() {
                    match read(p.fd, &mut buf) {
                        Ok(0) | Err(_) => control_open = false,
                        Ok(n) => reply_bytes.extend_from_slice(&buf[..n]),
                    }
                } else {
                    let slot = streams
                        .iter_mut()
                        .find(|s| s.as_ref().is_some_and(|(_, fd)| fd.as_raw_fd() == p.fd))
                        .expect("polled stream is open");
                    let kind = slot.as_ref().expect("open").0;
                    match read(p.fd, &mut buf) {
                        Ok(0) => *slot = None,
                        Ok(n) => output(kind, &buf[..n]),
                        Err(e) => {
                            let _ = child.kill();
                            let _ = child.wait();
                            return Err(SandboxError::io("reading command output", e));
                        }
                    }
                }
            }
        }
        let helper_status = child
            .wait()
            .map_err(|e| SandboxError::io("waiting for the helper", e))?;
        if cancelled {
            return Err(SandboxError::Cancelled);
        }
        let line = reply_bytes.split(|b| *b == b'\n').find(|l| !l.is_empty());
        match line.map(serde_json::from_slice::<Reply>) {
            Some(Ok(Reply::Exited(status))) => Ok(status),
            Some(Ok(Reply::Failed(e))) => Err(e.into()),
            Some(Err(e)) => Err(SandboxError::Helper(format!("malformed reply: {e}"))),
            None => Err(SandboxError::Helper(format!(
                "{} exited ({helper_status}) without reporting; does its main() call \
                 forge_sandbox::maybe_run_helper() first?",
                self.helper.display()
            ))),
        }
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn read(fd: RawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(SandboxError::io("pipe2", std::io::Error::last_os_error()));
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// An empty host directory the sandbox mounts its private tmpfs on; removed when dropped.
struct StagingDir {
    path: PathBuf,
}

impl StagingDir {
    fn create() -> Result<StagingDir, SandboxError> {
        let template = std::env::temp_dir().join("forge-sandbox-XXXXXX");
        let mut bytes = CString::new(template.as_os_str().as_bytes())
            .map_err(|_| SandboxError::InvalidSpec("TMPDIR contains a NUL byte".into()))?
            .into_bytes_with_nul();
        let p = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
        if p.is_null() {
            return Err(SandboxError::io(
                format!("creating {}", template.display()),
                std::io::Error::last_os_error(),
            ));
        }
        bytes.pop();
        Ok(StagingDir {
            path: PathBuf::from(std::ffi::OsString::from(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&bytes),
            )),
        })
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Checks what can be checked before starting anything.
pub(crate) fn validate(spec: &RunSpec) -> Result<(), SandboxError> {
    let bad = |msg: String| Err(SandboxError::InvalidSpec(msg));
    if spec.args.is_empty() || spec.args[0].is_empty() {
        return bad("empty command".into());
    }
    if !spec.cwd.starts_with('/') {
        return bad(format!("working directory {:?} is not absolute", spec.cwd));
    }
    if spec.hostname.is_empty() || spec.hostname.len() > 64 || spec.hostname.contains('\0') {
        return bad(format!("invalid hostname {:?}", spec.hostname));
    }
    if let Some(kv) = spec
        .env
        .iter()
        .find(|kv| !kv.contains('=') || kv.starts_with('='))
    {
        return bad(format!("environment entry {kv:?} is not KEY=VALUE"));
    }
    for m in &spec.mounts {
        if !m.target.starts_with('/') || clean_abs(&m.target) == Path::new("/") {
            return bad(format!(
                "mount target {:?} must be an absolute path below /",
                m.target
            ));
        }
    }
    match &spec.rootfs {
        Rootfs::Overlay { lower, upper, work } => {
            if lower.is_empty() {
                return bad("overlay rootfs needs at least one lower directory".into());
            }
            for p in lower.iter().chain([upper, work]) {
                if !p.is_absolute() {
                    return bad(format!("overlay path {} is not absolute", p.display()));
                }
            }
        }
        Rootfs::Dir(dir) => {
            if !dir.is_absolute() {
                return bad(format!("rootfs {} is not absolute", dir.display()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Mount, MountKind};

    fn spec() -> RunSpec {
        RunSpec::new(Rootfs::Dir("/r".into()), vec!["true".into()])
    }

    #[test]
    fn validation_rejects_bad_specs() {
        assert!(validate(&spec()).is_ok());
        let cases: Vec<(RunSpec, &str)> = vec![
            (
                RunSpec {
                    args: vec![],
                    ..spec()
                },
                "empty command",
            ),
            (
                RunSpec {
                    cwd: "rel".into(),
                    ..spec()
                },
                "not absolute",
            ),
            (
                RunSpec {
                    hostname: "".into(),
                    ..spec()
                },
                "hostname",
            ),
            (
                RunSpec {
                    env: vec!["NOEQUALS".into()],
                    ..spec()
                },
                "KEY=VALUE",
            ),
            (
                RunSpec {
                    mounts: vec![Mount {
                        target: "/..".into(),
                        kind: MountKind::Tmpfs { size: None },
                    }],
                    ..spec()
                },
                "below /",
            ),
            (
                RunSpec {
                    rootfs: Rootfs::Overlay {
                        lower: vec![],
                        upper: "/u".into(),
                        work: "/w".into(),
                    },
                    ..spec()
                },
                "lower",
            ),
        ];
        for (spec, needle) in cases {
            let err = validate(&spec).unwrap_err();
            assert!(err.is_user_error());
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
    }
}
