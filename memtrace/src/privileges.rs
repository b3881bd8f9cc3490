//! This process's capabilities (`CapEff` of `/proc/self/status`): what loading BPF programs
//! needs and what `memtrace sockets` may read. A leaf module.

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability mask from the text of `/proc/self/status`.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Names of the capabilities that loading and attaching need but `cap_eff` lacks.
/// CAP_SYS_ADMIN stands in for both on kernels before 5.8 (and still works on newer ones).
pub fn missing_capabilities(cap_eff: u64) -> Vec<&'static str> {
    let has = |c: u32| cap_eff & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// This process's effective capabilities; `None` when `/proc/self/status` cannot be read.
pub fn effective() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| parse_cap_eff(&status))
}

/// Whether this process has capability `bit` in its effective set (`false` when unknown).
pub fn has(bit: u32) -> bool {
    effective().is_some_and(|caps| caps & (1u64 << bit) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_everything() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let eff = parse_cap_eff(status).unwrap();
        assert!(missing_capabilities(eff).is_empty());
    }

    #[test]
    fn nobody_misses_bpf_and_perfmon() {
        let eff = parse_cap_eff("CapEff:\t0000000000000000\n").unwrap();
        assert_eq!(missing_capabilities(eff), vec!["CAP_BPF", "CAP_PERFMON"]);
    }

    #[test]
    fn bpf_without_perfmon() {
        let eff = 1u64 << CAP_BPF;
        assert_eq!(missing_capabilities(eff), vec!["CAP_PERFMON"]);
        assert!(missing_capabilities(eff | 1 << CAP_PERFMON).is_empty());
    }

    #[test]
    fn unparsable_status_is_none() {
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }
}
