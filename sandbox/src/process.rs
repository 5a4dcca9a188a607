//! The last steps before `execve`: user, working directory, environment, stdin, privileges.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::caps;
use crate::error::{Context, HResult, HelperError};
use crate::paths::clean_abs;
use crate::spec::RunSpec;
use crate::syscall::{cstring, Syscall};
use crate::user::{self, Identity};

/// `PATH` when the image and the step set none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Reads the rootfs's `/etc/passwd` and `/etc/group` (we are inside it) and resolves `USER`.
pub(crate) fn resolve_identity(user_spec: Option<&str>) -> HResult<Identity> {
    let read = |p: &str| match std::fs::read_to_string(p) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HelperError::sys(format!("reading {p}"), e)),
    };
    let passwd = read("/etc/passwd")?;
    let group = read("/etc/group")?;
    user::resolve(user_spec, passwd.as_deref(), group.as_deref()).map_err(|reason| {
        HelperError::User {
            user: user_spec.unwrap_or("root").to_string(),
            reason,
        }
    })
}

/// Creates the working directory and its missing parents (mode 0755, owned by the user, as
/// BuildKit does), then enters it.
pub(crate) fn enter_cwd(sys: &dyn Syscall, cwd: &str, id: &Identity) -> HResult<()> {
    let cwd = clean_abs(cwd);
    let mut path = PathBuf::from("/");
    for part in cwd.components().skip(1) {
        path.push(part);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(HelperError::Spec(format!(
                    "working directory {}: {} is not a directory",
                    cwd.display(),
                    path.display()
                )))
            }
            Err(_) => {
                sys.mkdir(&path, 0o755)
                    .ctx(|| format!("creating working directory {}", path.display()))?;
                sys.lchown(&path, id.uid, id.gid)
                    .ctx(|| format!("chown of working directory {}", path.display()))?;
            }
        }
    }
    sys.chdir(&cwd)
        .ctx(|| format!("entering working directory {}", cwd.display()))
}

/// The command's environment: the spec's, plus `PATH` and `HOME` when unset.
pub(crate) fn build_env(env: &[String], home: Option<&str>) -> Vec<String> {
    let has = |key: &str| {
        env.iter()
            .any(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == key)
    };
    let mut out = env.to_vec();
    if !has("PATH") {
        out.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has("HOME") {
        out.push(format!("HOME={}", home.unwrap_or("/")));
    }
    out
}

fn env_value<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter().rev().find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// Finds `program` like `execvp` does, but in the container's `PATH`.
pub(crate) fn find_program(program: &str, env: &[String]) -> HResult<PathBuf> {
    if program.is_empty() {
        return Err(HelperError::Spec("empty command".into()));
    }
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = env_value(env, "PATH").unwrap_or(DEFAULT_PATH);
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(program);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(HelperError::Exec {
        program: program.to_string(),
        reason: "executable file not found in $PATH".into(),
    })
}

/// Drops to the sandbox's privileges: bounding set, groups, gid, uid, then the capability sets
/// (effective = permitted = the allowed set, inheritable and ambient empty). `allowed: None`
/// (insecure) keeps every capability. On `execve` a non-root user loses them all, exactly as
/// under runc.
pub(crate) fn drop_privileges(
    sys: &dyn Syscall,
    id: &Identity,
    allowed: Option<u64>,
    last_cap: u32,
) -> HResult<()> {
    if let Some(mask) = allowed {
        for cap in 0..=last_cap.min(63) {
            if mask & (1 << cap) == 0 {
                sys.drop_bounding_cap(cap)
                    .ctx(|| format!("dropping capability {cap} from the bounding set"))?;
            }
        }
    }
    sys.set_keepcaps(true).ctx(|| "PR_SET_KEEPCAPS".into())?;
    if let Err(e) = sys.setgroups(&id.groups) {
        // With a single-id user namespace map, setgroups is denied; that only matters when
        // there are groups to set beyond the primary one.
        let only_primary = id.groups.iter().all(|g| *g == id.gid);
        if !(only_primary && e.raw_os_error() == Some(libc::EPERM)) {
            return Err(HelperError::sys(format!("setgroups {:?}", id.groups), e));
        }
    }
    sys.setresgid(id.gid)
        .ctx(|| format!("setting gid {}", id.gid))?;
    sys.setresuid(id.uid)
        .ctx(|| format!("setting uid {}", id.uid))?;
    sys.set_keepcaps(false).ctx(|| "PR_SET_KEEPCAPS".into())?;
    if let Some(mask) = allowed {
        sys.capset(mask, mask, 0).ctx(|| "capset".into())?;
        sys.clear_ambient_caps()
            .ctx(|| "clearing ambient capabilities".into())?;
    }
    // Changing credentials cleared the parent-death signal.
    sys.set_pdeathsig(libc::SIGKILL)
        .ctx(|| "PR_SET_PDEATHSIG".into())?;
    Ok(())
}

/// Installs the seccomp filter unless the run is insecure. Runs before the uid switch, while
/// `CAP_SYS_ADMIN` still allows it without `no_new_privs`.
pub(crate) fn confine(sys: &dyn Syscall, spec: &RunSpec) -> HResult<()> {
    if spec.insecure {
        return Ok(());
    }
    sys.seccomp(&crate::seccomp::default_filter())
        .ctx(|| "installing the seccomp filter".into())
}

/// The capability mask for a spec: Docker's default set, or `None` (all kept) when insecure.
pub(crate) fn allowed_caps(spec: &RunSpec) -> Option<u64> {
    if spec.insecure {
        None
    } else {
        Some(caps::mask(caps::DEFAULT_CAPABILITIES))
    }
}

/// Puts the spec's stdin on fd 0: a memfd holding the bytes, or `/dev/null`.
pub(crate) fn setup_stdin(data: Option<&[u8]>) -> HResult<()> {
    let fd = match data {
        Some(data) => {
            let name = cstring("forge-stdin").expect("static name");
            let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
            if fd < 0 {
                return Err(HelperError::sys(
                    "memfd_create",
                    std::io::Error::last_os_error(),
                ));
            }
            let mut written = 0;
            while written < data.len() {
                let n = unsafe {
                    libc::write(fd, data[written..].as_ptr().cast(), data.len() - written)
                };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(HelperError::sys("writing stdin", e));
                }
                written += n as usize;
            }
            if unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } < 0 {
                return Err(HelperError::sys(
                    "rewinding stdin",
                    std::io::Error::last_os_error(),
                ));
            }
            fd
        }
        None => {
            let path = cstring("/dev/null").expect("static path");
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(HelperError::sys(
                    "opening /dev/null",
                    std::io::Error::last_os_error(),
                ));
            }
            fd
        }
    };
    if unsafe { libc::dup2(fd, 0) } < 0 {
        return Err(HelperError::sys(
            "dup2 stdin",
            std::io::Error::last_os_error(),
        ));
    }
    unsafe { libc::close(fd) };
    Ok(())
}

/// Restores default signal handling (the Rust runtime ignores SIGPIPE, and ignored signals
/// survive execve) and marks every fd above 2 close-on-exec.
pub(crate) fn reset_process_state() {
    unsafe {
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
            // Kernels before 5.11: do it by hand.
            if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
                let fds: Vec<i32> = dir
                    .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect();
                for fd in fds.into_iter().filter(|fd| *fd > 2) {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
        }
    }
}

/// `execve`; returns only on failure.
pub(crate) fn exec(program: &Path, args: &[String], env: &[String]) -> HelperError {
    let to_c = |items: &[String]| -> Result<Vec<CString>, HelperError> {
        items
            .iter()
            .map(|s| {
                CString::new(s.as_bytes())
                    .map_err(|_| HelperError::Spec(format!("{s:?} contains a NUL byte")))
            })
            .collect()
    };
    let (argv, envp) = match (to_c(args), to_c(env)) {
        (Ok(a), Ok(e)) => (a, e),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let Ok(path) = CString::new(program.as_os_str().as_bytes()) else {
        return HelperError::Spec("program path contains a NUL byte".into());
    };
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    unsafe { libc::execve(path.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
    let err = std::io::Error::last_os_error();
    HelperError::Exec {
        program: args.first().cloned().unwrap_or_default(),
        reason: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::testing::{Call, RecordingSyscall};

    #[test]
    fn env_defaults() {
        let env = build_env(&["FOO=bar".into()], Some("/home/alice"));
        assert_eq!(
            env,
            vec![
                "FOO=bar".to_string(),
                format!("PATH={DEFAULT_PATH}"),
                "HOME=/home/alice".to_string()
            ]
        );
        let env = build_env(&["PATH=/x".into(), "HOME=/h".into()], None);
        assert_eq!(env, vec!["PATH=/x".to_string(), "HOME=/h".to_string()]);
        assert_eq!(build_env(&[], None)[1], "HOME=/");
    }

    #[test]
    fn find_program_uses_container_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(bin.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(bin.join("data"), "").unwrap();
        let env = vec![format!("PATH=/nonexistent:{}", bin.display())];
        assert_eq!(find_program("tool", &env).unwrap(), bin.join("tool"));
        assert!(matches!(
            find_program("data", &env),
            Err(HelperError::Exec { .. })
        ));
        assert_eq!(find_program("./x", &env).unwrap(), PathBuf::from("./x"));
    }

    fn alice() -> Identity {
        Identity {
            uid: 1000,
            gid: 1000,
            groups: vec![10, 29],
            home: None,
        }
    }

    #[test]
    fn privileges_are_dropped_in_runc_order() {
        let sys = RecordingSyscall::new();
        let mask = caps::mask(caps::DEFAULT_CAPABILITIES);
        drop_privileges(&sys, &alice(), Some(mask), 40).unwrap();
        let calls = sys.calls();
        let dropped: Vec<u32> = calls
            .iter()
            .filter_map(|c| match c {
                Call::DropBoundingCap(cap) => Some(*cap),
                _ => None,
            })
            .collect();
        let kept: Vec<u32> = (0..=40).filter(|c| !dropped.contains(c)).collect();
        let mut want = caps::DEFAULT_CAPABILITIES.to_vec();
        want.sort();
        assert_eq!(kept, want);
        assert!(dropped.contains(&caps::cap::SYS_ADMIN));
        assert!(dropped.contains(&caps::cap::SYS_MODULE));
        let rest: Vec<Call> = calls
            .into_iter()
            .filter(|c| !matches!(c, Call::DropBoundingCap(_)))
            .collect();
        assert_eq!(
            rest,
            vec![
                Call::SetKeepcaps(true),
                Call::Setgroups(vec![10, 29]),
                Call::Setresgid(1000),
                Call::Setresuid(1000),
                Call::SetKeepcaps(false),
                Call::Capset(mask, mask, 0),
                Call::ClearAmbientCaps,
                Call::SetPdeathsig(libc::SIGKILL),
            ]
        );
    }

    #[test]
    fn insecure_keeps_capabilities() {
        let sys = RecordingSyscall::new();
        drop_privileges(&sys, &alice(), None, 40).unwrap();
        assert!(!sys
            .calls()
            .iter()
            .any(|c| matches!(c, Call::DropBoundingCap(_) | Call::Capset(..))));
    }

    #[test]
    fn denied_setgroups_is_fatal_only_with_groups() {
        let sys = RecordingSyscall::new();
        sys.fail_when(|c| matches!(c, Call::Setgroups(_)).then_some(libc::EPERM));
        let root = Identity {
            uid: 0,
            gid: 0,
            groups: vec![0],
            home: None,
        };
        drop_privileges(&sys, &root, None, 40).unwrap();
        let err = drop_privileges(&sys, &alice(), None, 40).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EPERM));
    }
}
