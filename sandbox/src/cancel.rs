//! [`CancelToken`]: a cloneable flag that also wakes the runs waiting on it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Cancels one or more runs. Clone it freely; cancelling any clone cancels them all.
///
/// A run notices cancellation at once (each run registers a wake-up pipe with the token), kills
/// its whole process tree and returns [`crate::SandboxError::Cancelled`].
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    next_id: AtomicU64,
    wakers: Mutex<Vec<(u64, OwnedFd)>>,
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Cancels every run using this token (now and in the future).
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        let wakers = self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner());
        for (_, fd) in wakers.iter() {
            // A full pipe already wakes the reader; errors are irrelevant here.
            unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        }
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Registers the write end of a pipe that gets a byte on cancellation.
    pub(crate) fn register(&self, fd: OwnedFd) -> Registration {
        let id = self.inner.next_id.fetch_add(1, Ordering::SeqCst);
        self.inner
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, fd));
        if self.is_cancelled() {
            // cancel() may have run before the push: wake ourselves.
            self.cancel();
        }
        Registration {
            token: self.clone(),
            id,
        }
    }
}

/// Unregisters a wake-up pipe when dropped.
pub(crate) struct Registration {
    token: CancelToken,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.token
            .inner
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _)| *id != self.id);
    }
}
