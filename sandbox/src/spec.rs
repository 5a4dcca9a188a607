//! What to run: the [`RunSpec`] a caller hands to [`crate::Sandbox::run`], and what comes back.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The root filesystem of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rootfs {
    /// An overlay mount assembled inside the sandbox. Every change the command makes lands in
    /// `upper` (whiteouts as 0:0 character devices, opaque directories as
    /// `trusted.overlay.opaque`/`user.overlay.opaque` xattrs), which is what the layer writer diffs.
    Overlay {
        /// Read-only layers, top-most first (the order of overlay's `lowerdir=`).
        lower: Vec<PathBuf>,
        /// Writable layer that collects the changes.
        upper: PathBuf,
        /// Overlay's scratch directory: empty, on the same filesystem as `upper`.
        work: PathBuf,
    },
    /// An already-merged writable tree, modified in place (the copy fallback when overlayfs is
    /// unavailable, and `forge run`).
    Dir(PathBuf),
}

/// The network the command sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Network {
    /// The host's network namespace (BuildKit's default for RUN).
    #[default]
    Host,
    /// A fresh network namespace holding only a loopback interface, brought up.
    None,
}

/// An extra mount placed into the rootfs for the duration of the run. Nothing a mount adds is
/// left in the rootfs afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the container.
    pub target: String,
    /// What is mounted there.
    pub kind: MountKind,
}

/// The kinds of [`Mount`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A host file or directory, bind-mounted (recursively).
    Bind {
        /// Host path.
        source: PathBuf,
        /// Mount it read-only.
        readonly: bool,
    },
    /// A fresh tmpfs (mode 1777, `nosuid,nodev`).
    Tmpfs {
        /// Size limit in bytes; `None` keeps the kernel's default (half of RAM).
        size: Option<u64>,
    },
    /// A read-only file with these bytes. It lives on a tmpfs private to the sandbox: it never
    /// touches the host's disk and is never written into the rootfs.
    SecretFile {
        /// File contents.
        data: Vec<u8>,
        /// Permission bits (e.g. `0o400`).
        mode: u32,
        /// Owner inside the container.
        uid: u32,
        /// Group inside the container.
        gid: u32,
    },
    /// A host unix socket (an ssh agent), bind-mounted as a file.
    Socket {
        /// Host path of the socket.
        source: PathBuf,
    },
}

impl std::fmt::Debug for MountKind {
    // Hand-written so that secret bytes never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MountKind::Bind { source, readonly } => f
                .debug_struct("Bind")
                .field("source", source)
                .field("readonly", readonly)
                .finish(),
            MountKind::Tmpfs { size } => f.debug_struct("Tmpfs").field("size", size).finish(),
            MountKind::SecretFile {
                data,
                mode,
                uid,
                gid,
            } => f
                .debug_struct("SecretFile")
                .field("data", &format_args!("<{} bytes>", data.len()))
                .field("mode", &format_args!("{mode:#o}"))
                .field("uid", uid)
                .field("gid", gid)
                .finish(),
            MountKind::Socket { source } => {
                f.debug_struct("Socket").field("source", source).finish()
            }
        }
    }
}

/// Everything needed to run one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The root filesystem.
    pub rootfs: Rootfs,
    /// argv, already shell-wrapped by the caller (`["/bin/sh", "-c", "..."]`). `args[0]` is
    /// looked up in the container's `PATH` when it has no `/`.
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs. `PATH` and `HOME` get defaults when absent.
    pub env: Vec<String>,
    /// Working directory inside the container; created (owned by the user) when missing.
    pub cwd: String,
    /// `name`, `uid`, `name:group`, `uid:gid`; `None` means root. Names are resolved through the
    /// rootfs's `/etc/passwd` and `/etc/group`.
    pub user: Option<String>,
    /// Hostname inside the sandbox (also written to `/etc/hostname` and `/etc/hosts`).
    pub hostname: String,
    /// Network mode.
    pub network: Network,
    /// Extra mounts, applied in order of target depth.
    pub mounts: Vec<Mount>,
    /// `RUN --security=insecure`: keep every capability, skip the masked/read-only paths.
    pub insecure: bool,
    /// Bytes fed to the command's stdin; `None` gives it `/dev/null`.
    pub stdin: Option<Vec<u8>>,
}

impl RunSpec {
    /// A spec with forge's defaults: root user, `/` as cwd, host network, hostname
    /// `forge-sandbox`, no mounts.
    pub fn new(rootfs: Rootfs, args: Vec<String>) -> RunSpec {
        RunSpec {
            rootfs,
            args,
            env: Vec::new(),
            cwd: "/".to_string(),
            user: None,
            hostname: "forge-sandbox".to_string(),
            network: Network::Host,
            mounts: Vec::new(),
            insecure: false,
            stdin: None,
        }
    }
}

/// Which output stream a chunk of bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// The command's fd 1.
    Stdout,
    /// The command's fd 2.
    Stderr,
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, when the command exited.
    pub code: Option<i32>,
    /// The signal number, when a signal killed it.
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Decodes a `waitpid` status word.
    pub(crate) fn from_wait_status(status: i32) -> ExitStatus {
        if libc::WIFEXITED(status) {
            ExitStatus {
                code: Some(libc::WEXITSTATUS(status)),
                signal: None,
            }
        } else if libc::WIFSIGNALED(status) {
            ExitStatus {
                code: None,
                signal: Some(libc::WTERMSIG(status)),
            }
        } else {
            ExitStatus {
                code: None,
                signal: None,
            }
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(sig)) => write!(f, "killed by signal {sig}"),
            (None, None) => write!(f, "unknown exit status"),
        }
    }
}
