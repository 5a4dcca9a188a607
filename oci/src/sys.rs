//! Thin, safe wrappers over the few Linux calls std does not offer: xattrs that never follow
//! symlinks, device nodes, FIFOs, ownership and timestamps of symlinks themselves.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn xattrs_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::ENOSYS))
}

/// All extended attributes of `path` (not following a final symlink), sorted by name. An empty
/// list when the filesystem has no xattr support. Names that are not UTF-8 are skipped.
pub(crate) fn list_xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let c = cpath(path)?;
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: `names` is a valid writable buffer of the given length; `c` is NUL-terminated.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if xattrs_unsupported(&e) {
            return Ok(Vec::new());
        }
        if e.raw_os_error() == Some(libc::ERANGE) {
            // SAFETY: a NULL buffer with size 0 asks for the needed size.
            let need = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
            if need < 0 {
                return Err(io::Error::last_os_error());
            }
            names.resize(need as usize + 64, 0);
            continue;
        }
        return Err(e);
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Ok(s) = std::str::from_utf8(name) else {
            continue;
        };
        match get_xattr(path, s)? {
            Some(v) => out.push((s.to_string(), v)),
            None => continue, // removed meanwhile
        }
    }
    out.sort();
    Ok(out)
}

/// One xattr value, `None` when absent.
pub(crate) fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let c = cpath(path)?;
    let cn = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: valid buffers and NUL-terminated strings.
        let n =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) => return Ok(None),
            Some(libc::ENOTSUP) | Some(libc::ENOSYS) => return Ok(None),
            Some(libc::ERANGE) => {
                // SAFETY: size query.
                let need =
                    unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), std::ptr::null_mut(), 0) };
                if need < 0 {
                    return Err(io::Error::last_os_error());
                }
                buf.resize(need as usize + 16, 0);
            }
            _ => return Err(e),
        }
    }
}

/// Sets an xattr on `path` itself (never through a symlink).
pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = cpath(path)?;
    let cn = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    // SAFETY: valid pointers for the given lengths.
    check(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Creates a device node, FIFO or (with mode S_IFCHR and dev 0) an overlay whiteout.
pub(crate) fn mknod(path: &Path, mode: u32, major: u64, minor: u64) -> io::Result<()> {
    let c = cpath(path)?;
    let dev = libc::makedev(major as u32, minor as u32);
    // SAFETY: c is NUL-terminated.
    check(unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev) })
}

/// `lchown`: ownership of the entry itself.
pub(crate) fn lchown(path: &Path, uid: u64, gid: u64) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: c is NUL-terminated.
    check(unsafe { libc::lchown(c.as_ptr(), uid as libc::uid_t, gid as libc::gid_t) })
}

/// Sets atime and mtime (seconds, nanoseconds) of the entry itself.
pub(crate) fn set_times(path: &Path, mtime: i64, nsec: u32) -> io::Result<()> {
    let c = cpath(path)?;
    let ts = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: nsec as _,
    };
    let times = [ts, ts];
    // SAFETY: `times` has two elements as utimensat requires.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Major and minor numbers of a `st_rdev`.
pub(crate) fn dev_split(rdev: u64) -> (u64, u64) {
    (
        libc::major(rdev as libc::dev_t) as u64,
        libc::minor(rdev as libc::dev_t) as u64,
    )
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub(crate) fn os_bytes(s: &OsStr) -> &[u8] {
    s.as_bytes()
}
