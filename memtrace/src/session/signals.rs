//! SIGINT/SIGTERM end a session with a full report: they are blocked from the start and
//! waited for, never handled asynchronously.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::EndedBy;

/// SIGINT and SIGTERM, blocked so they can be waited for with `sigtimedwait` (no handler, no
/// async-signal-safety concerns). Must be created before any thread is spawned.
pub struct StopSignals {
    set: libc::sigset_t,
}

impl StopSignals {
    pub fn block() -> anyhow::Result<Self> {
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it; pthread_sigmask
        // only changes this thread's mask (threads spawned later inherit it).
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc))
                    .context("blocking SIGINT/SIGTERM");
            }
            Ok(StopSignals { set })
        }
    }

    /// Waits until `deadline` (forever when `None`) or until SIGINT/SIGTERM arrives.
    pub fn wait_until(&self, deadline: Option<Instant>) -> EndedBy {
        /// Longest single wait; the loop waits again until the deadline.
        const FOREVER: Duration = Duration::from_secs(3600);
        loop {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => FOREVER,
            };
            if left.is_zero() {
                return EndedBy::Duration;
            }
            let ts = libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            };
            // SAFETY: `self.set` is an initialised sigset; `ts` lives across the call; a null
            // siginfo pointer is allowed.
            let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
            if sig > 0 {
                return EndedBy::Signal(sig);
            }
            // EAGAIN: timed out (loop re-checks the deadline); EINTR: other signal, wait again.
        }
    }
}

impl StopSignals {
    /// Takes SIGINT/SIGTERM that arrived while they were blocked (a second one during
    /// reporting), so that unblocking them afterwards does not end memtrace after its work
    /// is done.
    pub fn discard_pending(&self) {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            // SAFETY: as in `wait_until`: an initialised sigset, a live timespec, null siginfo.
            let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &zero) };
            if sig <= 0 {
                break;
            }
        }
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        // SAFETY: restores the default mask for these two signals; a second Ctrl-C after the
        // session (while reporting) then terminates as usual. Reports are written atomically.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.set, std::ptr::null_mut()) };
    }
}
