//! Facts about this machine's memory management the loader needs: page size, highest buddy
//! order, possible CPUs.

/// Number of possible CPUs (`num_possible_cpus()`, what percpu allocations are sized by),
/// from `/sys/devices/system/cpu/possible`; 1 if that cannot be read or parsed.
pub fn possible_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|text| parse_cpu_list(&text))
        .unwrap_or(1)
}

/// Counts the CPUs in a kernel CPU list (`0`, `0-3`, `0-3,8-11`, with a trailing newline as
/// sysfs prints it). Ranges must be ascending and disjoint, as the kernel prints them; any
/// other text gives `None`.
pub fn parse_cpu_list(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut count = 0u32;
    let mut next_free = 0u32; // lowest CPU number the next range may start at
    for part in text.split(',') {
        let part = part.trim();
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?),
            None => {
                let cpu = part.parse::<u32>().ok()?;
                (cpu, cpu)
            }
        };
        if first > last || (count > 0 && first < next_free) {
            return None;
        }
        count = count.checked_add((last - first).checked_add(1)?)?;
        next_free = last.checked_add(1)?;
    }
    Some(count)
}

// ---------------------------------------------------------------------------------------------
// Page allocator facts
// ---------------------------------------------------------------------------------------------

/// Bytes per page (`sysconf(_SC_PAGESIZE)`), 4096 if that fails.
pub fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// Highest order the buddy allocator hands out (10 on x86_64), from `/proc/buddyinfo`; 10 if
/// that cannot be read.
pub fn max_order() -> u32 {
    std::fs::read_to_string("/proc/buddyinfo")
        .ok()
        .and_then(|text| parse_buddyinfo_max_order(&text))
        .unwrap_or(10)
}

/// `/proc/buddyinfo` has one column of free-block counts per order (`Node 0, zone Normal
/// 413 57 ...`): the highest order is the number of columns minus one.
pub fn parse_buddyinfo_max_order(text: &str) -> Option<u32> {
    text.lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("zone")?;
            let mut words = rest.split_whitespace();
            words.next()?; // zone name
            let mut columns = 0u32;
            for w in words {
                w.parse::<u64>().ok()?;
                columns += 1;
            }
            columns.checked_sub(1)
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0\n"), Some(1));
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(8));
        assert_eq!(parse_cpu_list("0-3,5,7-8\n"), Some(7));
        assert_eq!(parse_cpu_list("0-8191"), Some(8192));
        assert_eq!(parse_cpu_list(" 2-3 "), Some(2));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("\n"), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("0-3,2-5"), None);
        assert_eq!(parse_cpu_list("4,2"), None);
        assert_eq!(parse_cpu_list("0,,1"), None);
        assert_eq!(parse_cpu_list("0-"), None);
        assert_eq!(parse_cpu_list("a-b"), None);
        assert_eq!(parse_cpu_list("0-7:2/4"), None);
        assert_eq!(parse_cpu_list("0-4294967295"), None);
        let cpus = possible_cpus();
        assert!(cpus >= 1, "{cpus}");
        if let Ok(text) = std::fs::read_to_string("/sys/devices/system/cpu/possible") {
            assert_eq!(Some(cpus), parse_cpu_list(&text), "{text:?}");
        }
    }

    #[test]
    fn buddyinfo_max_order() {
        assert_eq!(
            parse_buddyinfo_max_order(&fixture("buddyinfo/6.18-x86_64.txt")),
            Some(10)
        );
        assert_eq!(
            parse_buddyinfo_max_order(&fixture("buddyinfo/4.19-x86_64-numa.txt")),
            Some(10)
        );
        assert_eq!(
            parse_buddyinfo_max_order(&fixture("buddyinfo/arm64-64k-pages.txt")),
            Some(13)
        );
        assert_eq!(parse_buddyinfo_max_order(""), None);
        assert_eq!(parse_buddyinfo_max_order("Node 0, zone Normal\n"), None);
        assert_eq!(parse_buddyinfo_max_order("garbage\n"), None);
    }

    #[test]
    fn page_size_and_max_order_are_sane() {
        let size = page_size();
        assert!(size >= 4096 && size.is_power_of_two(), "{size}");
        let order = max_order();
        assert!((1..=20).contains(&order), "{order}");
    }
}
