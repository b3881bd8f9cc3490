//! Small facts about the running system that several commands record in their output.

use std::time::{SystemTime, UNIX_EPOCH};

/// The trimmed contents of a small text file (`/proc/sys/kernel/hostname`, `osrelease`), or
/// `"unknown"` when it cannot be read.
pub(crate) fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The host name (`/proc/sys/kernel/hostname`), `"unknown"` when unreadable.
pub(crate) fn host_name() -> String {
    read_trimmed("/proc/sys/kernel/hostname")
}

/// The kernel release (`/proc/sys/kernel/osrelease`), `"unknown"` when unreadable.
pub(crate) fn kernel_release() -> String {
    read_trimmed("/proc/sys/kernel/osrelease")
}

/// Seconds since the Unix epoch, now (0 if the clock is before it).
pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_trimmed_or_unknown() {
        assert_eq!(read_trimmed("/nonexistent/osrelease"), "unknown");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "  6.18.1\n").unwrap();
        assert_eq!(read_trimmed(path.to_str().unwrap()), "6.18.1");
        assert!(unix_now() > 1.0e9);
    }
}
