//! [`copy_tree`]: the copy fallback's snapshot copy, for filesystems where overlayfs cannot run.
//!
//! Without overlayfs, a RUN step runs on a full writable copy of its parent snapshot
//! ([`crate::Rootfs::Dir`]), and the layer is the difference between the two trees. The copy
//! must therefore be faithful: anything it changed would show up as a spurious change.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::SandboxError;

/// Copies the tree at `src` to `dst` (which must not exist), preserving file types (regular
/// files, directories, symlinks, fifos, device nodes), permission bits including setuid/setgid/
/// sticky, owners, extended attributes (file capabilities, overlay and ACL xattrs), hard links,
/// and access/modification times (directories last, after their contents). Sockets are skipped:
/// they cannot be copied and mean nothing in a layer.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), SandboxError> {
    let mut links = HashMap::new();
    copy_entry(src, dst, &mut links)
        .map_err(|(path, e)| SandboxError::io(format!("copying {}", path.display()), e))
}

type CopyResult = Result<(), (PathBuf, io::Error)>;

fn copy_entry(src: &Path, dst: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> CopyResult {
    let at = |e: io::Error| (src.to_path_buf(), e);
    let meta = std::fs::symlink_metadata(src).map_err(at)?;
    let ft = meta.file_type();
    if !ft.is_dir() && meta.nlink() > 1 {
        let key = (meta.dev(), meta.ino());
        if let Some(first) = links.get(&key) {
            return std::fs::hard_link(first, dst).map_err(at);
        }
        links.insert(key, dst.to_path_buf());
    }
    if ft.is_dir() {
        std::fs::create_dir(dst).map_err(at)?;
        let mut entries: Vec<_> = std::fs::read_dir(src)
            .map_err(at)?
            .collect::<Result<_, _>>()
            .map_err(at)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            copy_entry(&entry.path(), &dst.join(entry.file_name()), links)?;
        }
    } else if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(at)?;
        std::os::unix::fs::symlink(target, dst).map_err(at)?;
    } else if ft.is_file() {
        std::fs::copy(src, dst).map_err(at)?;
    } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
        let c = cpath(dst).map_err(at)?;
        let rc = unsafe { libc::mknod(c.as_ptr(), meta.mode(), meta.rdev()) };
        if rc != 0 {
            return Err(at(io::Error::last_os_error()));
        }
    } else {
        return Ok(()); // socket
    }
    let c = cpath(dst).map_err(at)?;
    if unsafe { libc::lchown(c.as_ptr(), meta.uid(), meta.gid()) } != 0 {
        return Err(at(io::Error::last_os_error()));
    }
    copy_xattrs(src, dst).map_err(at)?;
    if !ft.is_symlink() {
        // After chown, which clears setuid/setgid bits.
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(at)?;
    }
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(at(io::Error::last_os_error()));
    }
    Ok(())
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn copy_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    let (s, d) = (cpath(src)?, cpath(dst)?);
    let size = unsafe { libc::llistxattr(s.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        let e = io::Error::last_os_error();
        // Filesystems without xattr support have nothing to copy.
        return if e.raw_os_error() == Some(libc::ENOTSUP) {
            Ok(())
        } else {
            Err(e)
        };
    }
    if size == 0 {
        return Ok(());
    }
    let mut names = vec![0u8; size as usize];
    let size = unsafe { libc::llistxattr(s.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    names.truncate(size as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let len = unsafe { libc::lgetxattr(s.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut value = vec![0u8; len as usize];
        let len = unsafe {
            libc::lgetxattr(
                s.as_ptr(),
                name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        let rc = unsafe {
            libc::lsetxattr(
                d.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                len as usize,
                0,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_preserves_metadata_links_and_times() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::fs::write(src.join("a/b/file"), "data").unwrap();
        std::fs::set_permissions(
            src.join("a/b/file"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        std::fs::hard_link(src.join("a/b/file"), src.join("hard")).unwrap();
        std::os::unix::fs::symlink("a/b/file", src.join("link")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", src.join("dangling")).unwrap();
        let fifo = cpath(&src.join("fifo")).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
        let is_root = unsafe { libc::geteuid() } == 0;
        if is_root {
            std::os::unix::fs::lchown(src.join("a"), Some(123), Some(456)).unwrap();
            let wh = cpath(&src.join("whiteout")).unwrap();
            assert_eq!(unsafe { libc::mknod(wh.as_ptr(), libc::S_IFCHR, 0) }, 0);
        }
        let name = c"user.forge.test";
        let target = cpath(&src.join("a/b/file")).unwrap();
        let xattr_ok =
            unsafe { libc::lsetxattr(target.as_ptr(), name.as_ptr(), b"v".as_ptr().cast(), 1, 0) }
                == 0;
        // Old times, set last, so the copy has to carry them over.
        for p in ["a/b/file", "a/b", "a", ""] {
            let c = cpath(&src.join(p)).unwrap();
            let t = [libc::timespec {
                tv_sec: 1_000_000,
                tv_nsec: 5,
            }; 2];
            assert_eq!(
                unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), t.as_ptr(), 0) },
                0
            );
        }

        let dst = dir.path().join("dst");
        copy_tree(&src, &dst).unwrap();

        let m = |p: &str| std::fs::symlink_metadata(dst.join(p)).unwrap();
        assert_eq!(std::fs::read(dst.join("a/b/file")).unwrap(), b"data");
        assert_eq!(m("a/b/file").mode() & 0o7777, 0o4755);
        assert_eq!(m("hard").ino(), m("a/b/file").ino());
        assert_eq!(
            std::fs::read_link(dst.join("link")).unwrap(),
            Path::new("a/b/file")
        );
        assert_eq!(
            std::fs::read_link(dst.join("dangling")).unwrap(),
            Path::new("/nonexistent")
        );
        assert!(m("fifo").file_type().is_fifo());
        assert_eq!(m("fifo").mode() & 0o777, 0o640);
        for p in ["a/b/file", "a/b", "a", ""] {
            assert_eq!((m(p).mtime(), m(p).mtime_nsec()), (1_000_000, 5), "{p}");
        }
        if is_root {
            assert_eq!((m("a").uid(), m("a").gid()), (123, 456));
            assert!(m("whiteout").file_type().is_char_device());
            assert_eq!(m("whiteout").rdev(), 0);
        }
        if xattr_ok {
            let d = cpath(&dst.join("a/b/file")).unwrap();
            let mut buf = [0u8; 4];
            let n = unsafe {
                libc::lgetxattr(
                    d.as_ptr(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            assert_eq!(&buf[..n as usize], b"v");
        }
        assert!(copy_tree(&src, &dst).is_err(), "destination exists");
    }
}
