//! Errors that end a run, and the exit code each maps to (documented in the README).

use std::process::ExitCode;

/// Exit codes (listed in `--help`, the man page and the README): 0 ok, 1 other failure, 2 usage
/// (clap), 3 not privileged, 4 environment, 5 unreadable saved session (`memtrace report`).
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const PRIVILEGE: u8 = 3;
    pub const ENVIRONMENT: u8 = 4;
    pub const INPUT: u8 = 5;
}

/// Failures that have their own exit code and a one-line message naming the fix.
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
    pub fn exit_code(&self) -> u8 {
        match self {
            SetupError::NotPrivileged { .. } => exit::PRIVILEGE,
            SetupError::Tracefs(e) if e.needs_privilege() => exit::PRIVILEGE,
            _ => exit::ENVIRONMENT,
        }
    }
}

/// Maps any error that ends the program to its exit code.
pub fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    ExitCode::from(exit_code_number(err))
}

/// [`exit_code_for`] as a number.
pub fn exit_code_number(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| {
            e.downcast_ref::<SetupError>()
                .map(SetupError::exit_code)
                .or_else(|| {
                    e.downcast_ref::<crate::saved::SavedError>()
                        .map(|_| exit::INPUT)
                })
        })
        .unwrap_or(exit::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let e = anyhow::Error::from(SetupError::NotPrivileged {
            missing: "CAP_BPF".into(),
        });
        assert_eq!(exit_code_number(&e), exit::PRIVILEGE);
        let e = anyhow::Error::from(SetupError::NoEbpfObject).context("loading");
        assert_eq!(exit_code_number(&e), exit::ENVIRONMENT);
        let e = anyhow::Error::from(crate::saved::SavedError::NotAReport { path: "x".into() });
        assert_eq!(exit_code_number(&e), exit::INPUT);
        assert_eq!(
            exit_code_number(&anyhow::anyhow!("disk full")),
            exit::FAILURE
        );
        // The help text lists every code.
        for code in 0..=exit::INPUT {
            assert!(
                crate::cli::EXIT_CODES_HELP.contains(&format!("  {code}  ")),
                "{code}"
            );
        }
    }
}
