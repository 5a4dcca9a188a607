//! Mount-point stubs: files and directories the sandbox had to create in the rootfs so that
//! something could be mounted on them (`/proc`, `/etc/hosts`, a secret's target, ...).
//!
//! They are recorded while the sandbox is set up and removed from the writable layer after the
//! run, so none of them leaks into the layer: a stub is removed only if it is still what was
//! created (an empty file or an empty directory), the mtime of its parent is restored, and a
//! directory that overlayfs copied up only to hold the stub is removed from the upper directory
//! again when it is still empty and unchanged.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context, HResult};
use crate::syscall::Syscall;

/// What kind of stub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StubKind {
    Dir,
    File,
}

/// One created mount point, relative to the rootfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stub {
    pub path: PathBuf,
    pub kind: StubKind,
    /// atime and mtime (seconds, nanoseconds) of the parent before the stub was created.
    pub parent_times: Option<[i64; 4]>,
    /// Ancestors (nearest first) that were only in a lower layer when the stub was created: the
    /// stub made overlayfs copy them up.
    pub copied_up: Vec<PathBuf>,
}

/// Creates stubs under a mounted rootfs and remembers them.
pub(crate) struct StubTracker<'a> {
    root: PathBuf,
    /// `(upper, lowers)` for an overlay rootfs.
    overlay: Option<(PathBuf, Vec<PathBuf>)>,
    stubs: &'a mut Vec<Stub>,
}

impl<'a> StubTracker<'a> {
    pub(crate) fn new(
        root: &Path,
        overlay: Option<(PathBuf, Vec<PathBuf>)>,
        stubs: &'a mut Vec<Stub>,
    ) -> StubTracker<'a> {
        StubTracker {
            root: root.to_path_buf(),
            overlay,
            stubs,
        }
    }

    /// Makes sure `rel` (a resolved path relative to the root) exists, creating it as `kind`
    /// and any missing parent directories; returns the absolute path under the root.
    pub(crate) fn ensure(
        &mut self,
        sys: &dyn Syscall,
        rel: &Path,
        kind: StubKind,
    ) -> HResult<PathBuf> {
        let mut prefix = PathBuf::new();
        let parts: Vec<_> = rel.components().collect();
        for (i, part) in parts.iter().enumerate() {
            prefix.push(part);
            let last = i + 1 == parts.len();
            if std::fs::symlink_metadata(self.root.join(&prefix)).is_ok() {
                continue;
            }
            let this_kind = if last { kind } else { StubKind::Dir };
            self.create(sys, &prefix, this_kind)?;
        }
        Ok(self.root.join(rel))
    }

    fn create(&mut self, sys: &dyn Syscall, rel: &Path, kind: StubKind) -> HResult<()> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let parent_times = std::fs::symlink_metadata(self.root.join(parent))
            .ok()
            .map(|m| [m.atime(), m.atime_nsec(), m.mtime(), m.mtime_nsec()]);
        let mut copied_up = Vec::new();
        if let Some((upper, lowers)) = &self.overlay {
            for ancestor in rel.ancestors().skip(1) {
                if ancestor.as_os_str().is_empty()
                    || std::fs::symlink_metadata(upper.join(ancestor)).is_ok()
                {
                    break;
                }
                if lowers
                    .iter()
                    .any(|l| std::fs::symlink_metadata(l.join(ancestor)).is_ok())
                {
                    copied_up.push(ancestor.to_path_buf());
                }
            }
        }
        let abs = self.root.join(rel);
        match kind {
            StubKind::Dir => sys.mkdir(&abs, 0o755),
            StubKind::File => sys.create_file(&abs, 0o644),
        }
        .ctx(|| format!("creating mount point {}", abs.display()))?;
        self.stubs.push(Stub {
            path: rel.to_path_buf(),
            kind,
            parent_times,
            copied_up,
        });
        Ok(())
    }
}

/// Removes stubs from the tree that received the changes (`base`: the upper directory, or the
/// rootfs directory itself). `lowers` are the overlay's lower directories (empty for a plain
/// directory). Runs after the sandbox's mount namespace is gone.
pub(crate) fn remove_stubs(base: &Path, lowers: &[PathBuf], stubs: &[Stub]) -> io::Result<()> {
    for stub in stubs.iter().rev() {
        let path = base.join(&stub.path);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let removed = match stub.kind {
            StubKind::File if meta.file_type().is_file() && meta.len() == 0 => {
                std::fs::remove_file(&path)?;
                true
            }
            StubKind::Dir if meta.file_type().is_dir() => match std::fs::remove_dir(&path) {
                Ok(()) => true,
                // The command put something in it: it is part of the layer now.
                Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => false,
                Err(e) => return Err(e),
            },
            _ => false,
        };
        if !removed {
            continue;
        }
        let parent = stub.path.parent().unwrap_or(Path::new(""));
        if let Some(times) = stub.parent_times {
            if base.join(parent).exists() {
                set_times(&base.join(parent), times)?;
            }
        }
        for ancestor in &stub.copied_up {
            if !undo_copy_up(base, lowers, ancestor)? {
                break;
            }
        }
    }
    Ok(())
}

/// Removes `rel` from the upper directory when it is an empty, non-opaque directory with the
/// same owner and mode as in the top-most lower layer that has it: the merged view is the same
/// without it.
fn undo_copy_up(upper: &Path, lowers: &[PathBuf], rel: &Path) -> io::Result<bool> {
    let up = upper.join(rel);
    let Ok(meta) = std::fs::symlink_metadata(&up) else {
        return Ok(false);
    };
    if !meta.is_dir() || std::fs::read_dir(&up)?.next().is_some() || is_opaque(&up) {
        return Ok(false);
    }
    let Some(lower) = lowers
        .iter()
        .find_map(|l| std::fs::symlink_metadata(l.join(rel)).ok())
    else {
        return Ok(false);
    };
    if !lower.is_dir()
        || lower.mode() != meta.mode()
        || lower.uid() != meta.uid()
        || lower.gid() != meta.gid()
    {
        return Ok(false);
    }
    std::fs::remove_dir(&up)?;
    Ok(true)
}

fn is_opaque(dir: &Path) -> bool {
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| {
            let name = CString::new(*name).expect("static xattr name");
            let mut buf = [0u8; 4];
            let n = unsafe {
                libc::lgetxattr(
                    path.as_ptr(),
                    name.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            n > 0
        })
}

fn set_times(path: &Path, t: [i64; 4]) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let times = [
        libc::timespec {
            tv_sec: t[0],
            tv_nsec: t[1],
        },
        libc::timespec {
            tv_sec: t[2],
            tv_nsec: t[3],
        },
    ];
    crate::syscall::check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::LinuxSyscall;

    #[test]
    fn stubs_are_created_recorded_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "x").unwrap();
        let before = std::fs::metadata(root.join("etc")).unwrap().mtime_nsec();
        let mtime_before = std::fs::metadata(root.join("etc")).unwrap().mtime();
        let mut stubs = Vec::new();
        let mut tracker = StubTracker::new(root, None, &mut stubs);
        tracker
            .ensure(&LinuxSyscall, Path::new("etc/hosts"), StubKind::File)
            .unwrap();
        tracker
            .ensure(
                &LinuxSyscall,
                Path::new("run/secrets/token"),
                StubKind::File,
            )
            .unwrap();
        // Existing paths are not stubs.
        tracker
            .ensure(&LinuxSyscall, Path::new("etc/passwd"), StubKind::File)
            .unwrap();
        let paths: Vec<_> = stubs.iter().map(|s| s.path.clone()).collect();
        assert_eq!(
            paths,
            ["etc/hosts", "run", "run/secrets", "run/secrets/token"].map(PathBuf::from)
        );
        // The command wrote something next to a stub: that stays.
        std::fs::write(root.join("run/keep"), "data").unwrap();
        remove_stubs(root, &[], &stubs).unwrap();
        assert!(!root.join("etc/hosts").exists());
        assert!(!root.join("run/secrets").exists());
        assert!(root.join("run/keep").exists());
        assert!(root.join("etc/passwd").exists());
        let after = std::fs::metadata(root.join("etc")).unwrap();
        assert_eq!((after.mtime(), after.mtime_nsec()), (mtime_before, before));
    }

    #[test]
    fn a_stub_the_command_filled_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut stubs = Vec::new();
        StubTracker::new(dir.path(), None, &mut stubs)
            .ensure(&LinuxSyscall, Path::new("data"), StubKind::File)
            .unwrap();
        std::fs::write(dir.path().join("data"), "written").unwrap();
        remove_stubs(dir.path(), &[], &stubs).unwrap();
        assert_eq!(std::fs::read(dir.path().join("data")).unwrap(), b"written");
    }

    #[test]
    fn copied_up_parent_is_removed_from_upper() {
        // Simulate overlay: the stub's parent exists in the lower layer only; creating the stub
        // "copied it up" (here: the test creates it in upper like overlayfs would).
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper, merged) = (
            dir.path().join("lower"),
            dir.path().join("upper"),
            dir.path().join("merged"),
        );
        for d in [&lower, &upper, &merged] {
            std::fs::create_dir_all(d.join("etc")).unwrap();
        }
        std::fs::remove_dir(upper.join("etc")).unwrap();
        let mut stubs = Vec::new();
        StubTracker::new(
            &merged,
            Some((upper.clone(), vec![lower.clone()])),
            &mut stubs,
        )
        .ensure(&LinuxSyscall, Path::new("etc/hosts"), StubKind::File)
        .unwrap();
        assert_eq!(stubs[0].copied_up, vec![PathBuf::from("etc")]);
        std::fs::create_dir(upper.join("etc")).unwrap();
        std::fs::write(upper.join("etc/hosts"), "").unwrap();
        remove_stubs(&upper, &[lower], &stubs).unwrap();
        assert!(!upper.join("etc").exists());
    }
}
