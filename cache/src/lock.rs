//! flock(2)-based locks.
//!
//! flock locks belong to an open file description, so two threads that each open the lock file
//! exclude each other exactly like two processes do, and the kernel drops a dead process's
//! locks. Lock files may be removed by `prune` while nobody holds them; to stay correct, a locker
//! re-checks after acquiring that the path still names the inode it locked, and retries if not.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A held flock; released when dropped.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
    path: PathBuf,
}

impl FileLock {
    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the lock on `path` (creating the file), exclusive or shared. With `wait == false`
    /// returns `Ok(None)` when someone else holds a conflicting lock.
    pub(crate) fn acquire(
        path: &Path,
        exclusive: bool,
        wait: bool,
    ) -> io::Result<Option<FileLock>> {
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)?;
            let ok = if wait {
                lock_file(&file, exclusive)?;
                true
            } else {
                try_lock_file_nb(&file, exclusive)?
            };
            if !ok {
                return Ok(None);
            }
            // The file may have been unlinked (by prune) between our open and our lock.
            let held = file.metadata()?;
            match fs::metadata(path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(Some(FileLock {
                        _file: file,
                        path: path.to_path_buf(),
                    }));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Removes the lock file if nobody holds or waits on it right now: takes it exclusively
    /// without waiting and unlinks it while holding it. Returns true when removed.
    pub(crate) fn remove_if_unused(path: &Path) -> io::Result<bool> {
        match FileLock::acquire(path, true, false)? {
            Some(lock) => {
                fs::remove_file(path)?;
                drop(lock);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

fn flock(file: &File, op: libc::c_int) -> io::Result<bool> {
    loop {
        // SAFETY: flock on an fd we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if op & libc::LOCK_NB != 0 => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// Blocks until the lock on `file` is held.
pub(crate) fn lock_file(file: &File, exclusive: bool) -> io::Result<()> {
    flock(
        file,
        if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        },
    )
    .map(|_| ())
}

/// Takes the lock without waiting; Ok(false) when it is held elsewhere.
pub(crate) fn try_lock_file_nb(file: &File, exclusive: bool) -> io::Result<bool> {
    flock(
        file,
        libc::LOCK_NB
            | if exclusive {
                libc::LOCK_EX
            } else {
                libc::LOCK_SH
            },
    )
}

/// Locks a freshly created file of our own; failing to get it would be a bug elsewhere.
pub(crate) fn try_lock_file(file: &File, exclusive: bool) -> io::Result<()> {
    if try_lock_file_nb(file, exclusive)? {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "a new temp file is locked by someone else",
        ))
    }
}
