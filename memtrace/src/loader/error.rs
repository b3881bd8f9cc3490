//! Why loading and attaching failed.

/// Why memtrace cannot trace here: each a one-line message naming the fix (the command line
/// maps them to exit codes 3 and 4).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "memtrace needs privileges to load and attach eBPF programs: run it as root, or grant \
         CAP_BPF, CAP_PERFMON, CAP_SYSLOG (kernel symbol addresses) and CAP_DAC_READ_SEARCH \
         (tracefs format files), plus CAP_SYS_ADMIN if tracefs must be mounted (missing: {missing})"
    )]
    NotPrivileged { missing: String },

    #[error(transparent)]
    Tracefs(#[from] crate::kernel::tracefs::TracefsError),

    #[error(
        "this memtrace binary was built without its eBPF object: build it with `cargo xtask build` \
         (or run `cargo xtask run -- ...`)"
    )]
    NoEbpfObject,

    #[error("the kernel rejected memtrace's eBPF programs ({what}): {reason}")]
    BpfLoad { what: String, reason: String },

    #[error("none of the requested kinds can be traced on this kernel ({reasons})")]
    NoKind { reasons: String },

    #[error("attaching to tracepoint {event} failed: {reason}")]
    Attach { event: String, reason: String },

    #[error(
        "memtrace needs Linux {min} or newer (BPF atomic fetch instructions); this kernel is \
         {release}: run it on a newer kernel"
    )]
    OldKernel { release: String, min: String },
}

impl SetupError {
    /// Whether more privileges would fix it (else the kernel or the build lacks something).
    pub fn needs_privilege(&self) -> bool {
        match self {
            SetupError::NotPrivileged { .. } => true,
            SetupError::Tracefs(e) => e.needs_privilege(),
            _ => false,
        }
    }
}

/// Fails with [`SetupError::NotPrivileged`] when the process cannot load tracing programs.
pub fn check_privileges() -> Result<(), SetupError> {
    // If /proc is unreadable, let the kernel decide (the load error will say why).
    let Some(cap_eff) = crate::privileges::effective() else {
        return Ok(());
    };
    let missing = crate::privileges::missing_capabilities(cap_eff);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SetupError::NotPrivileged {
            missing: missing.join(", "),
        })
    }
}
