//! Probing whether overlayfs works where the snapshots live.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::helper::in_user_namespace;
use crate::setup::{overlay_data, OverlayFeatures};

/// True when an overlay mount with forge's options works on the filesystem of `probe_dir` and
/// deleting a lower file produces a whiteout in the upper directory. When it returns false,
/// callers fall back to copying the parent snapshot and running on [`crate::Rootfs::Dir`].
///
/// The probe mounts inside a forked child's private mount namespace, so nothing is left
/// mounted; the probe's scratch directory (created inside `probe_dir`) is removed. It needs
/// root, or a user namespace entered with [`crate::enter_rootless_namespace_if_needed`].
pub fn overlay_supported(probe_dir: &Path) -> bool {
    let Some(scratch) = make_scratch(probe_dir) else {
        return false;
    };
    let ok = probe(&scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    ok
}

fn make_scratch(probe_dir: &Path) -> Option<PathBuf> {
    let template = probe_dir.join(".forge-overlay-probe-XXXXXX");
    let mut bytes = CString::new(template.as_os_str().as_bytes())
        .ok()?
        .into_bytes_with_nul();
    if unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) }.is_null() {
        return None;
    }
    bytes.pop();
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)))
}

fn probe(scratch: &Path) -> bool {
    let (l1, l2, upper, work, merged) = (
        scratch.join("l1"),
        scratch.join("l2"),
        scratch.join("u"),
        scratch.join("w"),
        scratch.join("m"),
    );
    for d in [&l1, &l2, &upper, &work, &merged] {
        if std::fs::create_dir(d).is_err() {
            return false;
        }
    }
    if std::fs::write(l2.join("gone"), b"x").is_err() {
        return false;
    }
    let extras = OverlayFeatures::detect().option_sets(in_user_namespace());
    // Everything the child needs is prepared before fork: the caller may be multi-threaded,
    // so the child makes raw system calls only.
    let lowers = [l1.clone(), l2.clone()];
    let Ok(datas) = extras
        .iter()
        .map(|e| {
            overlay_data(&lowers, &upper, &work, e)
                .map_err(|_| ())
                .and_then(|d| CString::new(d).map_err(|_| ()))
        })
        .collect::<Result<Vec<CString>, ()>>()
    else {
        return false;
    };
    let (Ok(c_merged), Ok(c_gone)) = (
        CString::new(merged.as_os_str().as_bytes()),
        CString::new(merged.join("gone").as_os_str().as_bytes()),
    ) else {
        return false;
    };
    let overlay = c"overlay";
    let root = c"/";
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return false;
    }
    if pid == 0 {
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                libc::_exit(10);
            }
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                libc::_exit(11);
            }
            let mut mounted = false;
            for data in &datas {
                if libc::mount(
                    overlay.as_ptr(),
                    c_merged.as_ptr(),
                    overlay.as_ptr(),
                    0,
                    data.as_ptr().cast(),
                ) == 0
                {
                    mounted = true;
                    break;
                }
            }
            if !mounted {
                libc::_exit(12);
            }
            if libc::unlink(c_gone.as_ptr()) != 0 {
                libc::_exit(13);
            }
            libc::_exit(0);
        }
    }
    let mut status = 0;
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return false;
    }
    match std::fs::symlink_metadata(upper.join("gone")) {
        Ok(m) => m.file_type().is_char_device() && m.rdev() == 0,
        Err(_) => false,
    }
}
