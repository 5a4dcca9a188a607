//! The helper process (`<exe> __forge-sandbox`) and the sandbox's init process it forks.
//!
//! The caller is a threaded program, so it does nothing itself between `fork` and `exec`: it
//! starts the helper, a fresh single-threaded copy of the same executable, which is free to
//! `unshare` and `fork`. The helper:
//!
//! 1. reads the [`Request`] from fd 0 (a unix socket to the caller), sets `PR_SET_PDEATHSIG`;
//! 2. unshares the pid, uts, ipc (and, for `Network::None`, net) namespaces;
//! 3. forks the init process, pid 1 of the new pid namespace, which unshares the mount
//!    namespace, builds the rootfs ([`crate::setup`]) and forks the command, which drops
//!    privileges and execs; init reaps zombies and reports the command's exit status;
//! 4. waits for it, killing it when the caller asks (or goes away), removes the mount-point
//!    stubs from the writable layer, and sends the [`Reply`].
//!
//! The command's stdout and stderr are the helper's own, which are pipes to the caller.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use crate::caps;
use crate::error::{HResult, HelperError};
use crate::process;
use crate::proto::{ChildReport, Reply, Request};
use crate::setup::{self, OverlayFeatures, SetupContext};
use crate::spec::{ExitStatus, Network, Rootfs, RunSpec};
use crate::stubs::{self, Stub};
use crate::syscall::{LinuxSyscall, Syscall};

/// Entry point of the helper; returns the helper's exit code.
pub(crate) fn helper_main() -> i32 {
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return 2;
    }
    let sock = unsafe { UnixStream::from_raw_fd(fd) };
    let Ok(read_half) = sock.try_clone() else {
        return 2;
    };
    let mut reader = BufReader::new(read_half);
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line).is_err() || line.is_empty() {
        // The caller went away before sending anything.
        return 2;
    }
    let reply = match serde_json::from_slice::<Request>(&line) {
        Ok(request) => {
            let already_cancelled = !reader.buffer().is_empty();
            match run(&request, sock.as_raw_fd(), already_cancelled) {
                Ok(status) => Reply::Exited(status),
                Err(e) => Reply::Failed(e),
            }
        }
        Err(e) => Reply::Failed(HelperError::Spec(format!("malformed request: {e}"))),
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    let mut sock = sock;
    let _ = sock.write_all(&out);
    0
}

/// True when this process runs in a user namespace other than the initial one.
pub(crate) fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

fn namespace_flags(spec: &RunSpec) -> libc::c_int {
    let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if spec.network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    flags
}

fn run(request: &Request, control: RawFd, already_cancelled: bool) -> HResult<ExitStatus> {
    let sys = LinuxSyscall;
    let spec = &request.spec;
    let ctx = SetupContext {
        staging: request.staging.clone(),
        userns: in_user_namespace(),
        host_resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        overlay: OverlayFeatures::detect(),
    };
    let last_cap = caps::last_cap();
    sys.unshare(namespace_flags(spec))
        .map_err(|e| HelperError::sys("unsharing pid/uts/ipc/net namespaces", e))?;

    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(HelperError::sys("pipe2", std::io::Error::last_os_error()));
    }
    let (report_rd, report_wr) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(HelperError::sys("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(report_rd);
        init_main(&sys, spec, &ctx, last_cap, report_wr);
    }
    drop(report_wr);

    let outcome = supervise(pid, report_rd, control, already_cancelled);
    let (status, reports) = outcome?;
    let mut stubs: Vec<Stub> = Vec::new();
    let mut failure = None;
    // Without a report (init was killed), init's own status stands in.
    let mut command_status = status;
    for report in reports {
        match report {
            ChildReport::Stubs(s) => stubs.extend(s),
            ChildReport::Failed(e) => failure = failure.or(Some(e)),
            ChildReport::Exited(s) => command_status = s,
        }
    }
    let (base, lowers): (PathBuf, Vec<PathBuf>) = match &spec.rootfs {
        Rootfs::Overlay { upper, lower, .. } => (upper.clone(), lower.clone()),
        Rootfs::Dir(dir) => (dir.clone(), Vec::new()),
    };
    let cleanup = stubs::remove_stubs(&base, &lowers, &stubs)
        .map_err(|e| HelperError::sys(format!("removing mount points from {}", base.display()), e));
    if let Some(failure) = failure {
        return Err(failure);
    }
    cleanup?;
    Ok(command_status)
}

/// Waits for the init process while watching the control socket; returns its status and reports.
fn supervise(
    pid: libc::pid_t,
    report: OwnedFd,
    control: RawFd,
    already_cancelled: bool,
) -> HResult<(ExitStatus, Vec<ChildReport>)> {
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
    if pidfd < 0 {
        let e = std::io::Error::last_os_error();
        unsafe { libc::kill(pid, libc::SIGKILL) };
        reap(pid);
        return Err(HelperError::sys("pidfd_open", e));
    }
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    if already_cancelled {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut report_file = std::fs::File::from(report);
    let mut report_bytes = Vec::new();
    let mut report_open = true;
    let mut control_open = true;
    let mut exited = false;
    while !exited || report_open {
        let mut pfds = Vec::with_capacity(3);
        if !exited {
            pfds.push(libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if report_open {
            pfds.push(libc::pollfd {
                fd: report_file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if control_open {
            pfds.push(libc::pollfd {
                fd: control,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            unsafe { libc::kill(pid, libc::SIGKILL) };
            reap(pid);
            return Err(HelperError::sys("poll", e));
        }
        for p in &pfds {
            if p.revents == 0 {
                continue;
            }
            if p.fd == pidfd.as_raw_fd() {
                exited = true;
            } else if p.fd == control {
                // Any byte is "cancel"; end-of-file means the caller is gone. Both kill.
                let mut buf = [0u8; 64];
                let _ = unsafe { libc::read(control, buf.as_mut_ptr().cast(), buf.len()) };
                control_open = false;
                unsafe { libc::kill(pid, libc::SIGKILL) };
            } else {
                let mut buf = [0u8; 8192];
                match report_file.read(&mut buf) {
                    Ok(0) | Err(_) => report_open = false,
                    Ok(n) => report_bytes.extend_from_slice(&buf[..n]),
                }
            }
        }
    }
    let status = reap(pid);
    let reports = report_bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l).map_err(|e| HelperError::Sys {
                context: format!("malformed report from the sandbox's init: {e}"),
                errno: libc::EPROTO,
            })
        })
        .collect::<HResult<Vec<ChildReport>>>()?;
    Ok((status, reports))
}

fn reap(pid: libc::pid_t) -> ExitStatus {
    let mut status = 0;
    loop {
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return ExitStatus::from_wait_status(status);
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return ExitStatus {
                code: None,
                signal: None,
            };
        }
    }
}

fn send(fd: &OwnedFd, report: &ChildReport) {
    let mut line = serde_json::to_vec(report).unwrap_or_default();
    line.push(b'\n');
    let mut written = 0;
    while written < line.len() {
        let n = unsafe {
            libc::write(
                fd.as_raw_fd(),
                line[written..].as_ptr().cast(),
                line.len() - written,
            )
        };
        if n <= 0 {
            return;
        }
        written += n as usize;
    }
}

/// The sandbox's init process (pid 1): builds the rootfs, starts the command as its child,
/// reaps zombies, and reports the command's status. Never returns.
///
/// The command is not pid 1 itself: the kernel shields pid 1 from signals it has no handler
/// for, so `kill $$` in a RUN would silently do nothing, and orphans would never be reaped.
fn init_main(
    sys: &dyn Syscall,
    spec: &RunSpec,
    ctx: &SetupContext,
    last_cap: u32,
    report: OwnedFd,
) -> ! {
    let _ = sys.set_pdeathsig(libc::SIGKILL);
    // A new session: no controlling terminal from the host.
    unsafe { libc::setsid() };
    let mut stubs = Vec::new();
    let result = setup::setup_rootfs(sys, spec, ctx, &mut stubs);
    send(&report, &ChildReport::Stubs(stubs));
    let prepared = result.and_then(|()| prepare_command(sys, spec));
    let command = match prepared {
        Ok(command) => command,
        Err(e) => {
            send(&report, &ChildReport::Failed(e));
            unsafe { libc::_exit(127) }
        }
    };
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        send(
            &report,
            &ChildReport::Failed(HelperError::sys("fork", std::io::Error::last_os_error())),
        );
        unsafe { libc::_exit(127) }
    }
    if pid == 0 {
        let err = match exec_command(sys, spec, &command, last_cap) {
            Err(e) => e,
            Ok(never) => match never {},
        };
        send(&report, &ChildReport::Failed(err));
        unsafe { libc::_exit(127) }
    }
    loop {
        let mut status = 0;
        let reaped = unsafe { libc::waitpid(-1, &mut status, 0) };
        if reaped == pid {
            send(
                &report,
                &ChildReport::Exited(ExitStatus::from_wait_status(status)),
            );
            // Exiting kills whatever the command left running in the pid namespace.
            unsafe { libc::_exit(0) }
        }
        if reaped < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            unsafe { libc::_exit(127) }
        }
    }
}

/// What init works out before starting the command.
struct Command {
    id: crate::user::Identity,
    env: Vec<String>,
    program: PathBuf,
}

fn prepare_command(sys: &dyn Syscall, spec: &RunSpec) -> HResult<Command> {
    let id = process::resolve_identity(spec.user.as_deref())?;
    process::enter_cwd(sys, &spec.cwd, &id).map_err(|e| explain_unmapped(e, spec))?;
    let env = process::build_env(&spec.env, id.home.as_deref());
    let program = process::find_program(&spec.args[0], &env)?;
    Ok(Command { id, env, program })
}

fn exec_command(
    sys: &dyn Syscall,
    spec: &RunSpec,
    command: &Command,
    last_cap: u32,
) -> HResult<std::convert::Infallible> {
    unsafe { libc::setsid() };
    process::setup_stdin(spec.stdin.as_deref())?;
    process::confine(sys, spec)?;
    process::drop_privileges(sys, &command.id, process::allowed_caps(spec), last_cap)
        .map_err(|e| explain_unmapped(e, spec))?;
    process::reset_process_state();
    Err(process::exec(&command.program, &spec.args, &command.env))
}

/// In a user namespace, `EINVAL` from `chown`/`setresuid`/`setgroups` means the id has no
/// mapping, and `EPERM` from `setgroups` means the namespace was set up without `newgidmap`
/// (setgroups is denied): a problem with `USER` or the host's subordinate ids, not the sandbox.
fn explain_unmapped(e: HelperError, spec: &RunSpec) -> HelperError {
    match e {
        HelperError::Sys { context, errno }
            if in_user_namespace()
                && (errno == libc::EINVAL
                    || (errno == libc::EPERM && context.starts_with("setgroups"))) =>
        {
            HelperError::User {
                user: spec.user.clone().unwrap_or_else(|| "root".into()),
                reason: format!(
                    "{context}: the id is not mapped in forge's user namespace (rootless mode \
                     maps only the caller's id and its ranges in /etc/subuid and /etc/subgid)"
                ),
            }
        }
        e => e,
    }
}
