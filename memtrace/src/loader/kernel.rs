//! The oldest kernel memtrace accepts, and the kernel's BTF loaded once per start.

use aya::Btf;

use super::SetupError;
use crate::kernel::btf::KernelBtf;

/// The oldest release memtrace's programs can load on: BPF atomic fetch instructions
/// (`atomic_fetch_add`, used to release split pages) came in 5.12; tp_btf and
/// `bpf_probe_read_kernel` in 5.5. The kernel matrix tests 6.1 and 6.12 (and the CI host).
pub const MIN_RELEASE: (u32, u32) = (5, 12);

/// Environment variable that makes memtrace take another string as the kernel release (for
/// tests of the refusal below [`MIN_RELEASE`]).
pub const RELEASE_ENV: &str = "MEMTRACE_KERNEL_RELEASE";

/// `(major, minor)` of a release string such as `6.1.0-57-amd64` or `6.18.44-fc-v1300`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-', '+', '_']);
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// Refuses a kernel older than [`MIN_RELEASE`] with a one-line error (exit code 4). A release
/// that cannot be parsed is let through: the load itself will say what is missing.
pub fn check_release() -> Result<(), SetupError> {
    let release = match std::env::var(RELEASE_ENV) {
        Ok(r) if !r.is_empty() => r,
        _ => crate::sysinfo::kernel_release(),
    };
    match parse_release(&release) {
        Some(v) if v < MIN_RELEASE => Err(SetupError::OldKernel {
            release,
            min: format!("{}.{}", MIN_RELEASE.0, MIN_RELEASE.1),
        }),
        _ => Ok(()),
    }
}

/// The kernel's BTF, parsed once: memtrace's own reader and aya's, or why there is none.
pub struct KernelBtfs {
    parsed: Result<(KernelBtf, Btf), String>,
}

impl KernelBtfs {
    /// Reads [`crate::kernel::btf::vmlinux_path`].
    pub fn load() -> Self {
        let path = crate::kernel::btf::vmlinux_path();
        let parsed = KernelBtf::from_file(&path)
            .map_err(|e| format!("no kernel BTF: {e}"))
            .and_then(|own| {
                Btf::parse_file(&path, aya::Endianness::default())
                    .map(|aya| (own, aya))
                    .map_err(|e| format!("no kernel BTF: {}: {e}", path.display()))
            });
        KernelBtfs { parsed }
    }

    /// memtrace's reader, or why there is no BTF.
    pub fn kernel(&self) -> Result<&KernelBtf, String> {
        self.parsed.as_ref().map(|(k, _)| k).map_err(Clone::clone)
    }

    /// aya's, for loading tp_btf and fentry programs.
    pub fn aya(&self) -> Option<&Btf> {
        self.parsed.as_ref().ok().map(|(_, a)| a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases() {
        assert_eq!(parse_release("6.1.0-57-amd64"), Some((6, 1)));
        assert_eq!(parse_release("6.12.118+deb12-amd64"), Some((6, 12)));
        assert_eq!(parse_release("6.18.44-fc-v1300\n"), Some((6, 18)));
        assert_eq!(parse_release("5.10.0"), Some((5, 10)));
        assert_eq!(parse_release("4.19"), Some((4, 19)));
        assert_eq!(parse_release("5.4rc1"), Some((5, 4)));
        assert_eq!(parse_release("unknown"), None);
        assert!((5, 10) < MIN_RELEASE && (5, 12) >= MIN_RELEASE && (6, 1) > MIN_RELEASE);
    }
}
