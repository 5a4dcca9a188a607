//! Rootless mode: re-executing the whole program inside a user namespace where it is root.
//!
//! Like `buildah unshare`, forge does not juggle privileges per operation. A non-root forge
//! process calls [`enter_rootless_namespace_if_needed`] at startup; it starts itself again with
//! the same arguments, and that copy unshares a user and a mount namespace. The original maps
//! the caller's uid and gid to 0 there (plus the caller's `/etc/subuid` and `/etc/subgid` ranges
//! from 1 upwards, through the setuid `newuidmap`/`newgidmap` helpers, when available; otherwise
//! just the single id), then waits and exits with the copy's exit status.
//!
//! Inside, store writes, layer extraction and overlay mounts (with `userxattr`) all happen as
//! mapped root; files owned by "root" in the image are owned by the caller on the host, files of
//! uid N > 0 by `subuid_start + N - 1`. Without subordinate ids, only uid/gid 0 exist inside,
//! and `chown` to any other id fails (`EINVAL`), as does `USER` with another id.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;

use crate::error::SandboxError;

/// Environment variable marking the re-executed copy; holds the sync socket's fd number.
pub const ROOTLESS_ENV: &str = "_FORGE_SANDBOX_ROOTLESS_FD";

/// Call near the top of `main()`, after [`crate::maybe_run_helper`], before starting threads.
///
/// * As root (or already inside forge's user namespace): returns `Ok(())` at once.
/// * As any other user: starts this program again inside a new user + mount namespace and
///   **never returns**: the process exits with the copy's exit code (or 128 + its signal).
///   The copy returns `Ok(())` from this call, running as uid 0 of the namespace.
pub fn enter_rootless_namespace_if_needed() -> Result<(), SandboxError> {
    if let Some(fd) = std::env::var_os(ROOTLESS_ENV) {
        std::env::remove_var(ROOTLESS_ENV);
        let fd: i32 = fd
            .to_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| SandboxError::Rootless(format!("bad {ROOTLESS_ENV}")))?;
        return become_namespace_root(fd);
    }
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let code = spawn_in_namespace()?;
    std::process::exit(code);
}

/// The copy: unshare, let the parent write the id maps, continue as root.
fn become_namespace_root(fd: i32) -> Result<(), SandboxError> {
    let mut sock = unsafe { UnixStream::from_raw_fd(fd) };
    unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
        let e = std::io::Error::last_os_error();
        let _ = sock.write_all(b"E");
        return Err(SandboxError::Rootless(format!(
            "unshare(CLONE_NEWUSER|CLONE_NEWNS): {e} (are unprivileged user namespaces enabled?)"
        )));
    }
    sock.write_all(b"U")
        .map_err(|e| SandboxError::Rootless(format!("sync with parent: {e}")))?;
    let mut answer = Vec::new();
    sock.read_to_end(&mut answer)
        .map_err(|e| SandboxError::Rootless(format!("sync with parent: {e}")))?;
    if answer != b"OK" {
        return Err(SandboxError::Rootless(format!(
            "mapping ids failed: {}",
            String::from_utf8_lossy(&answer)
        )));
    }
    // The uid that created the namespace is mapped to 0 now; make every id say so.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
            return Err(SandboxError::Rootless(format!(
                "becoming root in the user namespace: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// The original: start the copy, map it, wait for it.
fn spawn_in_namespace() -> Result<i32, SandboxError> {
    let (mut ours, theirs) =
        UnixStream::pair().map_err(|e| SandboxError::Rootless(format!("socketpair: {e}")))?;
    let theirs_fd = theirs.into_raw_fd();
    // Inherited by the copy (this runs before the program starts threads).
    unsafe { libc::fcntl(theirs_fd, libc::F_SETFD, 0) };
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let mut child = Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .env(ROOTLESS_ENV, theirs_fd.to_string())
        .spawn()
        .map_err(|e| SandboxError::Rootless(format!("re-executing /proc/self/exe: {e}")))?;
    unsafe { libc::close(theirs_fd) };

    let mut ready = [0u8; 1];
    let got = ours.read(&mut ready);
    if !matches!(got, Ok(1)) || ready[0] != b'U' {
        let status = child.wait().ok();
        return Err(SandboxError::Rootless(format!(
            "the re-executed process could not create a user namespace ({})",
            status.map_or("no status".into(), |s| s.to_string())
        )));
    }
    let pid = child.id();
    let result = write_id_maps(pid);
    let _ = match &result {
        Ok(()) => ours.write_all(b"OK"),
        Err(e) => ours.write_all(e.as_bytes()),
    };
    drop(ours);
    // Terminal signals reach the copy directly (same process group); the original only waits.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let status = child
        .wait()
        .map_err(|e| SandboxError::Rootless(format!("waiting for the namespaced copy: {e}")))?;
    if let Err(e) = result {
        return Err(SandboxError::Rootless(e));
    }
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// A range of subordinate ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubIdRange {
    pub start: u64,
    pub count: u64,
}

/// The first range for `name` or `id` in an `/etc/subuid`-format file.
pub(crate) fn find_subid_range(text: &str, name: Option<&str>, id: u32) -> Option<SubIdRange> {
    let id = id.to_string();
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let owner = f.next()?;
        if owner != id && Some(owner) != name {
            return None;
        }
        let start = f.next()?.trim().parse().ok()?;
        let count: u64 = f.next()?.trim().parse().ok()?;
        (count > 0).then_some(SubIdRange { start, count })
    })
}

fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result = std::ptr::null_mut();
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

fn write_id_maps(pid: u32) -> Result<(), String> {
    let uid = unsafe { libc::getuid() };
    let gid = unsafe { libc::getgid() };
    let name = user_name(uid);
    let subuid = std::fs::read_to_string("/etc/subuid")
        .ok()
        .and_then(|t| find_subid_range(&t, name.as_deref(), uid));
    let subgid = std::fs::read_to_string("/etc/subgid")
        .ok()
        .and_then(|t| find_subid_range(&t, name.as_deref(), uid));

    let mapped_uid = subuid.is_some_and(|r| run_map_tool("newuidmap", pid, uid, r));
    if !mapped_uid {
        std::fs::write(format!("/proc/{pid}/uid_map"), format!("0 {uid} 1\n"))
            .map_err(|e| format!("writing uid_map: {e}"))?;
    }
    let mapped_gid = subgid.is_some_and(|r| run_map_tool("newgidmap", pid, gid, r));
    if !mapped_gid {
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny")
            .map_err(|e| format!("writing setgroups: {e}"))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), format!("0 {gid} 1\n"))
            .map_err(|e| format!("writing gid_map: {e}"))?;
    }
    Ok(())
}

fn run_map_tool(tool: &str, pid: u32, own: u32, range: SubIdRange) -> bool {
    Command::new(tool)
        .args([
            pid.to_string(),
            "0".into(),
            own.to_string(),
            "1".into(),
            "1".into(),
            range.start.to_string(),
            range.count.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_lookup_by_name_or_id() {
        let text = "alice:100000:65536\n1001:200000:1000\nbob:300000:0\n";
        assert_eq!(
            find_subid_range(text, Some("alice"), 1000),
            Some(SubIdRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            find_subid_range(text, Some("carol"), 1001),
            Some(SubIdRange {
                start: 200000,
                count: 1000
            })
        );
        assert_eq!(find_subid_range(text, Some("bob"), 1002), None);
        assert_eq!(find_subid_range(text, None, 7), None);
    }
}
