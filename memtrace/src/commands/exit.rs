//! Exit codes (listed in `--help`, the man page and the README): 0 ok, 1 other failure, 2 usage
//! (clap), 3 not privileged, 4 environment, 5 unreadable saved session (`memtrace report`).

use crate::{loader::SetupError, schema::SavedError};

pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
pub const PRIVILEGE: u8 = 3;
pub const ENVIRONMENT: u8 = 4;
pub const INPUT: u8 = 5;

/// The exit code of an error that ended the program: the first error in its chain that has
/// one of its own decides.
pub fn code_for(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| {
            e.downcast_ref::<SetupError>()
                .map(|s| {
                    if s.needs_privilege() {
                        PRIVILEGE
                    } else {
                        ENVIRONMENT
                    }
                })
                .or_else(|| e.downcast_ref::<SavedError>().map(|_| INPUT))
        })
        .unwrap_or(FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let e = anyhow::Error::from(SetupError::NotPrivileged {
            missing: "CAP_BPF".into(),
        });
        assert_eq!(code_for(&e), PRIVILEGE);
        let e = anyhow::Error::from(SetupError::NoEbpfObject).context("loading");
        assert_eq!(code_for(&e), ENVIRONMENT);
        let e = anyhow::Error::from(SavedError::NotAReport { path: "x".into() });
        assert_eq!(code_for(&e), INPUT);
        assert_eq!(code_for(&anyhow::anyhow!("disk full")), FAILURE);
        // The help text lists every code.
        for code in 0..=INPUT {
            assert!(
                super::super::EXIT_CODES_HELP.contains(&format!("  {code}  ")),
                "{code}"
            );
        }
        assert_eq!(USAGE, 2, "clap's convention");
    }
}
