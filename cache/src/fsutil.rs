//! Small filesystem helpers: durable atomic writes, directory fsync, removal that never
//! crosses into a mount, process liveness.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A name for a new entry under `tmp/`: `p<pid>.<start>-<seq>-<nanos>-<label>`, where `start`
/// is the owner's start time (clock ticks since boot, from `/proc/self/stat`). Pid and start
/// time together let a later process decide whether the owner is gone even when pids are
/// reused (a builder that is pid 1 in a container every time); seq and nanos make it unique.
pub(crate) fn temp_name(label: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let pid = std::process::id();
    let start = own_start_time().unwrap_or(0);
    format!("p{pid}.{start}-{seq:x}-{nanos:08x}-{label}")
}

/// The owner encoded in a temp entry name: pid and start time (0 when unknown).
pub(crate) fn temp_owner(name: &str) -> Option<(i32, u64)> {
    let rest = name.strip_prefix('p')?;
    let owner = rest.split('-').next()?;
    let (pid, start) = match owner.split_once('.') {
        Some((p, s)) => (p.parse().ok()?, s.parse().ok()?),
        None => (owner.parse().ok()?, 0),
    };
    Some((pid, start))
}

/// True when the owner of a temp entry may still be running: a process with this pid exists
/// (in our pid namespace) and, when both are known, it started at the recorded time.
pub(crate) fn owner_alive((pid, start): (i32, u64)) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    if rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return false;
    }
    match (start, start_time(pid)) {
        (0, _) | (_, None) => true,
        (recorded, Some(actual)) => recorded == actual,
    }
}

fn own_start_time() -> Option<u64> {
    static START: OnceLock<Option<u64>> = OnceLock::new();
    *START.get_or_init(|| start_time(std::process::id() as i32))
}

/// Field 22 of `/proc/<pid>/stat`: the process start time in clock ticks since boot.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: skip past it.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// fsyncs a directory so that renames and creations inside it are durable.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flushes every dirty page of the filesystem holding `path` (one syscall instead of one fsync
/// per file of an unpacked layer).
pub(crate) fn syncfs(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open fd.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates a new file exclusively, with mode 0644.
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
}

/// Writes `bytes` to `dest` atomically: a temp file in `tmp_dir` (same filesystem), write,
/// fsync, rename over `dest`, fsync `dest`'s directory. Readers see the old or the new content,
/// never a mix; a crash leaves at most a temp file that the store cleans later.
pub(crate) fn atomic_write(
    tmp_dir: &Path,
    dest: &Path,
    bytes: &[u8],
    sync: bool,
) -> io::Result<()> {
    atomic_write_with(tmp_dir, dest, sync, &mut |f| f.write_all(bytes))
}

/// [`atomic_write`] of whatever `write` produces: a temp file renamed over `dest` once
/// complete, so readers see the old file or the whole new one.
pub(crate) fn atomic_write_with(
    tmp_dir: &Path,
    dest: &Path,
    sync: bool,
    write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = tmp_dir.join(temp_name("write"));
    let result = (|| {
        let mut f = create_new(&tmp)?;
        crate::lock::try_lock_file(&f, true)?;
        write(&mut f)?;
        if sync {
            f.sync_all()?;
        }
        fs::rename(&tmp, dest)?;
        if sync {
            if let Some(parent) = dest.parent() {
                fsync_dir(parent)?;
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes a file or directory tree, never descending into another filesystem (a mount left
/// inside a temp dir must not have its content deleted) and making read-only directories
/// writable when needed (unprivileged builds produce them). Missing paths are not an error.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return ignore_missing(fs::remove_file(path));
    }
    // Bind mounts of the same filesystem keep st_dev, so the mount table is consulted too.
    let mounts = mount_points_under(path);
    if mounts.iter().any(|m| m == path) {
        return Err(mounted_error(path));
    }
    remove_dir_on_dev(path, meta.dev(), &mounts)
}

fn mounted_error(p: &Path) -> io::Error {
    io::Error::other(format!(
        "refusing to remove {}: a filesystem is mounted there",
        p.display()
    ))
}

/// Mount points (in this mount namespace) at or below `path`, from `/proc/self/mountinfo`.
fn mount_points_under(path: &Path) -> Vec<std::path::PathBuf> {
    let Ok(canon) = fs::canonicalize(path) else {
        return Vec::new();
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in info.lines() {
        let Some(field) = line.split(' ').nth(4) else {
            continue;
        };
        let mp = std::path::PathBuf::from(unescape_mountinfo(field));
        if mp.starts_with(&canon) {
            // Report it under the caller's spelling of the path.
            out.push(path.join(mp.strip_prefix(&canon).unwrap_or(Path::new(""))));
        }
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn remove_dir_on_dev(dir: &Path, dev: u64, mounts: &[std::path::PathBuf]) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
            fs::read_dir(dir)?
        }
        Err(e) => return Err(e),
    };
    let mut made_writable = false;
    for entry in entries {
        let entry = entry?;
        let p = entry.path();
        let m = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if m.is_dir() {
            if m.dev() != dev || mounts.iter().any(|mp| mp == &p) {
                return Err(io::Error::other(format!(
                    "refusing to remove {}: a filesystem is mounted there",
                    p.display()
                )));
            }
            remove_dir_on_dev(&p, dev, mounts)?;
            continue;
        }
        match fs::remove_file(&p) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !made_writable => {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
                made_writable = true;
                ignore_missing(fs::remove_file(&p))?;
            }
            other => ignore_missing(other)?,
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            if let Some(parent) = dir.parent() {
                fs::set_permissions(parent, fs::Permissions::from_mode(0o700))?;
            }
            ignore_missing(fs::remove_dir(dir))
        }
        other => ignore_missing(other),
    }
}

/// Bytes used by the regular files and symlinks of a tree (apparent sizes; hard links counted
/// once per link). Errors count as zero: this is only for reports.
pub(crate) fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    let mut total = 0;
    if let Ok(entries) = fs::read_dir(path) {
        for e in entries.flatten() {
            total += tree_size(&e.path());
        }
    }
    total
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_carry_their_owner() {
        let n = temp_name("a b/c");
        let (pid, start) = temp_owner(&n).unwrap();
        assert_eq!(pid as u32, std::process::id());
        assert!(n.ends_with("-a_b_c"), "{n}");
        assert!(owner_alive((pid, start)));
        assert!(
            !owner_alive((pid, start + 1)),
            "same pid, other start time: another process"
        );
        assert_eq!(temp_owner("p12-0-0-x"), Some((12, 0)));
        assert_eq!(temp_owner("p12.345-0-0-x"), Some((12, 345)));
        assert_eq!(temp_owner("junk"), None);
        assert_eq!(temp_owner("pabc-0"), None);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/trailing\04"), r"/trailing\04");
    }
}

/// Sets the "top of directory hierarchy" inode flag (`chattr +T`) on `dir`, best effort: its
/// subdirectories are unrelated to each other, and ext4's allocator then places each in a block
/// group of its own choosing. Filesystems without the flag, and failures, are ignored.
pub fn hint_top_dir(dir: &Path) {
    const FS_TOPDIR_FL: libc::c_long = 0x0002_0000;
    use std::os::fd::AsRawFd;
    let Ok(f) = File::open(dir) else { return };
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS/SETFLAGS read and write one long through a valid pointer on an
    // open descriptor.
    unsafe {
        if libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) != 0 || flags & FS_TOPDIR_FL != 0 {
            return;
        }
        flags |= FS_TOPDIR_FL;
        libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags);
    }
}
