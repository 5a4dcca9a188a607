//! Every kernel call that sets up a sandbox goes through the [`Syscall`] trait.
//!
//! The helper uses [`LinuxSyscall`]; unit tests use a recorder (`syscall::testing`) that logs the
//! calls and can be told to fail one, so the setup sequence (mount order, fallbacks, privilege
//! dropping) is checked without root and without touching the host.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Mount flags, as `mount(2)` takes them.
pub type MsFlags = libc::c_ulong;

/// The kernel calls used to build a sandbox.
pub trait Syscall {
    /// `unshare(2)` with `CLONE_NEW*` flags.
    fn unshare(&self, flags: libc::c_int) -> io::Result<()>;
    /// `mount(2)`.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// `umount2(2)`.
    fn umount2(&self, target: &Path, flags: libc::c_int) -> io::Result<()>;
    /// Makes a bind mount (and, with `recursive`, every mount below it) read-only, keeping the
    /// flags the kernel locks in a user namespace (`nosuid`, `nodev`, ...).
    fn make_readonly(&self, target: &Path, recursive: bool) -> io::Result<()>;
    /// `pivot_root(2)`.
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    /// `chdir(2)`.
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// `sethostname(2)`.
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// `mkdir(2)` (one level).
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Creates an empty regular file; fails if it exists.
    fn create_file(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Creates (or truncates) a file with the given contents and permission bits.
    fn write_file(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()>;
    /// `symlink(2)`: `link` points at `target`.
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    /// `lchown(2)`.
    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    /// Brings the loopback interface of the current network namespace up.
    fn loopback_up(&self) -> io::Result<()>;
    /// `prctl(PR_CAPBSET_DROP, cap)`.
    fn drop_bounding_cap(&self, cap: u32) -> io::Result<()>;
    /// `prctl(PR_SET_KEEPCAPS, on)`.
    fn set_keepcaps(&self, on: bool) -> io::Result<()>;
    /// `capset(2)` for the calling thread; bit N is capability N.
    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> io::Result<()>;
    /// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)`.
    fn clear_ambient_caps(&self) -> io::Result<()>;
    /// `setgroups(2)`.
    fn setgroups(&self, groups: &[u32]) -> io::Result<()>;
    /// `setresgid(gid, gid, gid)`.
    fn setresgid(&self, gid: u32) -> io::Result<()>;
    /// `setresuid(uid, uid, uid)`.
    fn setresuid(&self, uid: u32) -> io::Result<()>;
    /// `prctl(PR_SET_PDEATHSIG, sig)`.
    fn set_pdeathsig(&self, sig: libc::c_int) -> io::Result<()>;
    /// Installs a seccomp filter for the calling thread.
    fn seccomp(&self, program: &[libc::sock_filter]) -> io::Result<()>;
}

pub(crate) fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

pub(crate) fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains a NUL byte"))
}

pub(crate) fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub(crate) fn check_long(ret: libc::c_long) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The real thing.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
const AT_RECURSIVE: libc::c_uint = 0x8000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

impl Syscall for LinuxSyscall {
    fn unshare(&self, flags: libc::c_int) -> io::Result<()> {
        check(unsafe { libc::unshare(flags) })
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        let source = source.map(cstr).transpose()?;
        let target = cstr(target)?;
        let fstype = fstype.map(cstring).transpose()?;
        let data = data.map(cstring).transpose()?;
        check(unsafe {
            libc::mount(
                source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                target.as_ptr(),
                fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
                flags,
                data.as_ref()
                    .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
            )
        })
    }

    fn umount2(&self, target: &Path, flags: libc::c_int) -> io::Result<()> {
        let target = cstr(target)?;
        check(unsafe { libc::umount2(target.as_ptr(), flags) })
    }

    fn make_readonly(&self, target: &Path, recursive: bool) -> io::Result<()> {
        let c_target = cstr(target)?;
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        let flags = if recursive { AT_RECURSIVE } else { 0 };
        let ret = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                c_target.as_ptr(),
                flags,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if ret == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENOSYS) {
            return Err(err);
        }
        // Kernels before 5.12: remount the top mount read-only, repeating the flags the kernel
        // locks in a user namespace (a remount that drops them fails with EPERM).
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        check(unsafe { libc::statvfs(c_target.as_ptr(), &mut st) })?;
        let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        for (vfs, ms) in [
            (libc::ST_NOSUID, libc::MS_NOSUID),
            (libc::ST_NODEV, libc::MS_NODEV),
            (libc::ST_NOEXEC, libc::MS_NOEXEC),
            (libc::ST_NOATIME, libc::MS_NOATIME),
            (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
            (libc::ST_RELATIME, libc::MS_RELATIME),
        ] {
            if st.f_flag & vfs != 0 {
                flags |= ms;
            }
        }
        check(unsafe {
            libc::mount(
                std::ptr::null(),
                c_target.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            )
        })
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        let new_root = cstr(new_root)?;
        let put_old = cstr(put_old)?;
        check_long(unsafe {
            libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr())
        })
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        let path = cstr(path)?;
        check(unsafe { libc::chdir(path.as_ptr()) })
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
    }

    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        let path = cstr(path)?;
        check(unsafe { libc::mkdir(path.as_ptr(), mode) })
    }

    fn create_file(&self, path: &Path, mode: u32) -> io::Result<()> {
        let path = cstr(path)?;
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                mode,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        unsafe { libc::close(fd) };
        Ok(())
    }

    fn write_file(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        f.write_all(data)?;
        // The umask may have narrowed the mode given to open().
        f.set_permissions(std::fs::Permissions::from_mode(mode))
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        let path = cstr(path)?;
        check(unsafe { libc::lchown(path.as_ptr(), uid, gid) })
    }

    fn loopback_up(&self) -> io::Result<()> {
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if sock < 0 {
            return Err(io::Error::last_os_error());
        }
        let result = (|| {
            let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
            for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
                *dst = *src as libc::c_char;
            }
            check(unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut req) })?;
            unsafe {
                req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            }
            check(unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &req) })
        })();
        unsafe { libc::close(sock) };
        result
    }

    fn drop_bounding_cap(&self, cap: u32) -> io::Result<()> {
        check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) })
    }

    fn set_keepcaps(&self, on: bool) -> io::Result<()> {
        check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, on as libc::c_ulong, 0, 0, 0) })
    }

    fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [
            CapData {
                effective: effective as u32,
                permitted: permitted as u32,
                inheritable: inheritable as u32,
            },
            CapData {
                effective: (effective >> 32) as u32,
                permitted: (permitted >> 32) as u32,
                inheritable: (inheritable >> 32) as u32,
            },
        ];
        check_long(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) })
    }

    fn clear_ambient_caps(&self) -> io::Result<()> {
        check(unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        })
    }

    fn setgroups(&self, groups: &[u32]) -> io::Result<()> {
        check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })
    }

    fn setresgid(&self, gid: u32) -> io::Result<()> {
        // The raw syscall sets only this thread's credentials; the helper child is single-threaded.
        check_long(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })
    }

    fn setresuid(&self, uid: u32) -> io::Result<()> {
        check_long(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })
    }

    fn set_pdeathsig(&self, sig: libc::c_int) -> io::Result<()> {
        check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) })
    }

    fn seccomp(&self, program: &[libc::sock_filter]) -> io::Result<()> {
        crate::seccomp::install(program)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A [`Syscall`] that records calls instead of making them.

    use super::*;
    use std::cell::RefCell;
    use std::path::PathBuf;

    /// One recorded call, with its arguments.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Call {
        Unshare(libc::c_int),
        Mount {
            source: Option<PathBuf>,
            target: PathBuf,
            fstype: Option<String>,
            flags: MsFlags,
            data: Option<String>,
        },
        Umount2(PathBuf, libc::c_int),
        MakeReadonly(PathBuf, bool),
        PivotRoot(PathBuf, PathBuf),
        Chdir(PathBuf),
        Sethostname(String),
        Mkdir(PathBuf, u32),
        CreateFile(PathBuf, u32),
        WriteFile(PathBuf, Vec<u8>, u32),
        Symlink(PathBuf, PathBuf),
        Lchown(PathBuf, u32, u32),
        LoopbackUp,
        DropBoundingCap(u32),
        SetKeepcaps(bool),
        Capset(u64, u64, u64),
        ClearAmbientCaps,
        Setgroups(Vec<u32>),
        Setresgid(u32),
        Setresuid(u32),
        SetPdeathsig(libc::c_int),
        Seccomp(usize),
    }

    type FailRule = Box<dyn Fn(&Call) -> Option<i32>>;

    /// Records calls; `fail_when` makes matching calls fail with an errno.
    #[derive(Default)]
    pub(crate) struct RecordingSyscall {
        calls: RefCell<Vec<Call>>,
        rules: RefCell<Vec<FailRule>>,
    }

    impl RecordingSyscall {
        pub(crate) fn new() -> RecordingSyscall {
            RecordingSyscall::default()
        }

        pub(crate) fn fail_when(&self, rule: impl Fn(&Call) -> Option<i32> + 'static) {
            self.rules.borrow_mut().push(Box::new(rule));
        }

        pub(crate) fn calls(&self) -> Vec<Call> {
            self.calls.borrow().clone()
        }

        fn record(&self, call: Call) -> io::Result<()> {
            let errno = self.rules.borrow().iter().find_map(|rule| rule(&call));
            self.calls.borrow_mut().push(call);
            match errno {
                Some(errno) => Err(io::Error::from_raw_os_error(errno)),
                None => Ok(()),
            }
        }
    }

    impl Syscall for RecordingSyscall {
        fn unshare(&self, flags: libc::c_int) -> io::Result<()> {
            self.record(Call::Unshare(flags))
        }
        fn mount(
            &self,
            source: Option<&Path>,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> io::Result<()> {
            self.record(Call::Mount {
                source: source.map(Path::to_path_buf),
                target: target.to_path_buf(),
                fstype: fstype.map(str::to_string),
                flags,
                data: data.map(str::to_string),
            })
        }
        fn umount2(&self, target: &Path, flags: libc::c_int) -> io::Result<()> {
            self.record(Call::Umount2(target.to_path_buf(), flags))
        }
        fn make_readonly(&self, target: &Path, recursive: bool) -> io::Result<()> {
            self.record(Call::MakeReadonly(target.to_path_buf(), recursive))
        }
        fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
            self.record(Call::PivotRoot(
                new_root.to_path_buf(),
                put_old.to_path_buf(),
            ))
        }
        fn chdir(&self, path: &Path) -> io::Result<()> {
            self.record(Call::Chdir(path.to_path_buf()))
        }
        fn sethostname(&self, name: &str) -> io::Result<()> {
            self.record(Call::Sethostname(name.to_string()))
        }
        fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
            self.record(Call::Mkdir(path.to_path_buf(), mode))
        }
        fn create_file(&self, path: &Path, mode: u32) -> io::Result<()> {
            self.record(Call::CreateFile(path.to_path_buf(), mode))
        }
        fn write_file(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
            self.record(Call::WriteFile(path.to_path_buf(), data.to_vec(), mode))
        }
        fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
            self.record(Call::Symlink(target.to_path_buf(), link.to_path_buf()))
        }
        fn lchown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
            self.record(Call::Lchown(path.to_path_buf(), uid, gid))
        }
        fn loopback_up(&self) -> io::Result<()> {
            self.record(Call::LoopbackUp)
        }
        fn drop_bounding_cap(&self, cap: u32) -> io::Result<()> {
            self.record(Call::DropBoundingCap(cap))
        }
        fn set_keepcaps(&self, on: bool) -> io::Result<()> {
            self.record(Call::SetKeepcaps(on))
        }
        fn capset(&self, effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
            self.record(Call::Capset(effective, permitted, inheritable))
        }
        fn clear_ambient_caps(&self) -> io::Result<()> {
            self.record(Call::ClearAmbientCaps)
        }
        fn setgroups(&self, groups: &[u32]) -> io::Result<()> {
            self.record(Call::Setgroups(groups.to_vec()))
        }
        fn setresgid(&self, gid: u32) -> io::Result<()> {
            self.record(Call::Setresgid(gid))
        }
        fn setresuid(&self, uid: u32) -> io::Result<()> {
            self.record(Call::Setresuid(uid))
        }
        fn set_pdeathsig(&self, sig: libc::c_int) -> io::Result<()> {
            self.record(Call::SetPdeathsig(sig))
        }
        fn seccomp(&self, program: &[libc::sock_filter]) -> io::Result<()> {
            self.record(Call::Seccomp(program.len()))
        }
    }
}
