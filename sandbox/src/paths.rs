//! Resolving container paths inside a rootfs on the host, the way the kernel would after
//! `chroot`: symlinks are followed, but `..` and absolute link targets never leave the root.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

const MAX_SYMLINKS: usize = 255;

/// Resolves `path` (absolute or relative to `/` of the container) inside `root` and returns it
/// relative to `root`, with every existing symlink followed and clamped to the root. Components
/// that do not exist are kept as written.
pub(crate) fn resolve_in_root(root: &Path, path: &str) -> io::Result<PathBuf> {
    let mut pending: VecDeque<OsString> = components(Path::new(path));
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let meta = match std::fs::symlink_metadata(root.join(&candidate)) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                resolved = candidate;
                continue;
            }
            // ENOTDIR: a prefix is a file; keep going lexically, the caller's mkdir reports it.
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                resolved = candidate;
                continue;
            }
            Err(e) => return Err(e),
        };
        if !meta.file_type().is_symlink() {
            resolved = candidate;
            continue;
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        let target = std::fs::read_link(root.join(&candidate))?;
        if target.is_absolute() {
            resolved = PathBuf::new();
        }
        let mut expanded = components(&target);
        expanded.extend(pending.drain(..));
        pending = expanded;
    }
    Ok(resolved)
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Lexically normalises an absolute container path: `/a/./b/../c` → `/a/c`.
pub(crate) fn clean_abs(path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::fs::write(r.join("etc/passwd"), "").unwrap();
        symlink("/usr/lib", r.join("lib")).unwrap();
        symlink("../../../../etc", r.join("usr/escape")).unwrap();
        symlink("/../../etc/passwd", r.join("abs-escape")).unwrap();
        symlink("loop2", r.join("loop1")).unwrap();
        symlink("loop1", r.join("loop2")).unwrap();
        symlink("../run/missing/file", r.join("etc/dangling")).unwrap();
        dir
    }

    macro_rules! resolves {
        ($($name:ident: $input:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                let dir = root();
                assert_eq!(resolve_in_root(dir.path(), $input).unwrap(), PathBuf::from($want));
            }
        )*};
    }

    resolves! {
        plain: "/etc/passwd" => "etc/passwd";
        relative_input: "etc/passwd" => "etc/passwd";
        dot_and_dotdot: "/etc/./../etc/passwd" => "etc/passwd";
        dotdot_above_root: "/../../etc" => "etc";
        absolute_link: "/lib/x" => "usr/lib/x";
        relative_link_escape_clamped: "/usr/escape/passwd" => "etc/passwd";
        absolute_link_escape_clamped: "/abs-escape" => "etc/passwd";
        missing_kept: "/no/such/dir" => "no/such/dir";
        dangling_link_followed: "/etc/dangling" => "run/missing/file";
        root_itself: "/" => "";
    }

    #[test]
    fn symlink_loop_is_eloop() {
        let dir = root();
        let err = resolve_in_root(dir.path(), "/loop1").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
    }

    #[test]
    fn clean_abs_normalises() {
        assert_eq!(clean_abs("/a/./b/../c/"), PathBuf::from("/a/c"));
        assert_eq!(clean_abs("/../x"), PathBuf::from("/x"));
        assert_eq!(clean_abs("/"), PathBuf::from("/"));
    }
}
