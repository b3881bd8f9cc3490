//! tracefs: where it is, what the classic tracepoint records look like on this kernel, and a
//! few facts about the page allocator (`page_size`, `max_order`).
//!
//! The record layout of `kmem:mm_page_alloc` / `kmem:mm_page_free` differs between kernels
//! (e.g. `gfp_flags` is a 4-byte `gfp_t` on 4.x and an 8-byte `unsigned long` on 6.x, and
//! 3.x kernels had a 4-byte `common_padding` in the common header), so the offsets are read
//! from the event's `format` file at run time and handed to the eBPF programs. The same goes
//! for the slab (`kmem:kmalloc`, ...), percpu and vmalloc events, whose fields moved around
//! between 4.x and 6.x (see `tests/fixtures/README.md` for the history).
//!
//! Files: this one finds (or mounts) tracefs and reads event formats; [`format`] parses a
//! `format` file; [`layouts`] turns one into the offsets the eBPF programs read.

pub mod format;
pub mod layouts;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

pub use format::{EventFormat, Field};
pub use layouts::*;

/// Where tracefs is mounted on current kernels.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Where debugfs exposes (an automount of) tracefs.
pub const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

const MOUNT_HINT: &str = "mount -t tracefs nodev /sys/kernel/tracing";

/// Errors finding tracefs and making sense of its format files.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// tracefs is not mounted and we lack the privilege (EPERM/EACCES) to mount it.
    #[error(
        "tracefs is not mounted; mount it with `mount -t tracefs nodev /sys/kernel/tracing` (as root)"
    )]
    NotMounted,

    /// We had the privilege to mount tracefs but the mount failed for another reason.
    #[error(
        "tracefs is not mounted and mounting it at {path} failed: {source}; mount it by hand with \
         `{hint}` and check that the kernel has CONFIG_TRACING=y",
        path = .path.display(),
        hint = MOUNT_HINT
    )]
    MountFailed {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// tracefs is there, but without `events/`.
    #[error(
        "tracefs at {} has no events/ directory; use a kernel built with CONFIG_EVENT_TRACING=y \
         (tracepoints)",
        .root.display()
    )]
    NoEvents { root: PathBuf },

    /// The tracepoint does not exist on this kernel.
    #[error(
        "tracepoint {category}:{event} does not exist ({} is missing): this kernel lacks it; \
         memtrace needs a kernel that provides {category}:{event}",
        .path.display()
    )]
    EventMissing {
        category: String,
        event: String,
        path: PathBuf,
    },

    /// Reading a file failed (other than "not found").
    #[error("cannot read {}: {source}; run memtrace as root", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The format text does not follow the tracefs conventions.
    #[error(
        "malformed tracefs format of {origin} at line {line}: {reason}; check `cat` of the format \
         file and report it as a memtrace bug"
    )]
    Parse {
        origin: String,
        line: usize,
        reason: String,
    },

    /// A field memtrace needs is not in the event record.
    #[error(
        "{event} tracepoint has no `{field}` field; this kernel's {event} layout is not supported \
         (see events/*/{event}/format in tracefs)"
    )]
    MissingField { event: String, field: String },

    /// A field has a C type memtrace cannot read (e.g. a string that is not `__data_loc`).
    #[error(
        "{event} tracepoint field `{field}` is `{type_name}` (size {size}), expected {expected}; \
         this kernel's {event} layout is not supported"
    )]
    BadFieldType {
        event: String,
        field: String,
        type_name: String,
        size: u32,
        expected: &'static str,
    },

    /// A field has a size memtrace cannot read.
    #[error(
        "{event} tracepoint field `{field}` has size {size}, expected {expected}; this kernel's \
         {event} layout is not supported (64-bit kernels only)"
    )]
    BadFieldSize {
        event: String,
        field: String,
        size: u32,
        expected: &'static str,
    },

    /// The kernel's tracepoint is too old to be usable at all.
    #[error("{reason}")]
    Unsupported { reason: String },
}

impl TracefsError {
    /// True when running with more privilege would fix it (maps to the "not privileged" exit code).
    pub fn needs_privilege(&self) -> bool {
        match self {
            TracefsError::NotMounted => true,
            TracefsError::Io { source, .. } => source.kind() == io::ErrorKind::PermissionDenied,
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Locating tracefs
// ---------------------------------------------------------------------------------------------

/// Returns the tracefs root (the directory that has `events/`): `/sys/kernel/tracing`, else
/// `/sys/kernel/debug/tracing`; else mounts tracefs at `/sys/kernel/tracing` when privileged.
pub fn locate() -> Result<PathBuf, TracefsError> {
    locate_with(
        Path::new(TRACEFS),
        Path::new(DEBUGFS_TRACING),
        mount_tracefs,
    )
}

/// [`locate`] with the two candidate roots and the mount operation injected (for tests).
fn locate_with(
    primary: &Path,
    fallback: &Path,
    mount: impl FnOnce(&Path) -> io::Result<()>,
) -> Result<PathBuf, TracefsError> {
    for root in [primary, fallback] {
        if root.join("events").is_dir() {
            return Ok(root.to_path_buf());
        }
    }
    // tracefs mounted but without events/: mounting it again would not help.
    if is_populated_tracefs(primary) {
        return Err(TracefsError::NoEvents {
            root: primary.to_path_buf(),
        });
    }
    match mount(primary) {
        Ok(()) => {
            if primary.join("events").is_dir() {
                Ok(primary.to_path_buf())
            } else {
                Err(TracefsError::NoEvents {
                    root: primary.to_path_buf(),
                })
            }
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
            Err(TracefsError::NotMounted)
        }
        Err(source) => Err(TracefsError::MountFailed {
            path: primary.to_path_buf(),
            source,
        }),
    }
}

/// A mounted tracefs always has these control files, events or not.
fn is_populated_tracefs(root: &Path) -> bool {
    root.join("trace").exists() || root.join("available_tracers").exists()
}

/// `mount -t tracefs nodev <target>`.
fn mount_tracefs(target: &Path) -> io::Result<()> {
    let target = CString::new(target.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let source = c"nodev";
    let fstype = c"tracefs";
    // SAFETY: all three strings are valid NUL-terminated C strings that outlive the call, and
    // `data` may be null for tracefs (no mount options).
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// ---------------------------------------------------------------------------------------------
// Format files
// ---------------------------------------------------------------------------------------------

/// Reads and parses `<root>/events/<category>/<event>/format`.
pub fn read_format(root: &Path, category: &str, event: &str) -> Result<EventFormat, TracefsError> {
    let path = root
        .join("events")
        .join(category)
        .join(event)
        .join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            TracefsError::EventMissing {
                category: category.to_string(),
                event: event.to_string(),
                path: path.clone(),
            }
        } else {
            TracefsError::Io {
                path: path.clone(),
                source,
            }
        }
    })?;
    format::parse_format_from(&text, &path.display().to_string())
}

/// Whether `<root>/events/<category>/<event>/format` exists. Unreadable (permission denied)
/// counts as missing, so call it after [`locate`] / [`read_format`] have proven access.
pub fn event_exists(root: &Path, category: &str, event: &str) -> bool {
    root.join("events")
        .join(category)
        .join(event)
        .join("format")
        .exists()
}

#[cfg(test)]
mod tests;
