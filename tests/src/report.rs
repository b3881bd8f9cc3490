//! The `--json` report (schema 1) and helpers to find stacks by the functions in them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use serde::Deserialize;

/// Counters every schema-1 report must carry (it may carry more).
pub const REQUIRED_COUNTERS: [&str; 15] = [
    "allocs_seen",
    "allocs_tracked",
    "failed_allocs",
    "self_allocs",
    "frees_seen",
    "frees_matched",
    "partial_frees",
    "unmatched_frees",
    "outstanding_map_full",
    "stale_records_replaced",
    "records_detached",
    "stack_id_eexist",
    "stack_id_enomem",
    "stack_id_other",
    "agg_missing",
];

#[derive(Clone, Debug, Deserialize)]
pub struct Report {
    pub schema: u64,
    pub session: serde_json::Value,
    pub counters: BTreeMap<String, u64>,
    pub programs: Vec<ProgramStats>,
    pub totals: Totals,
    pub callers: Vec<Caller>,
    /// Every stack that allocated during the session, by outstanding bytes descending.
    pub stacks: Vec<Stack>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ProgramStats {
    pub name: String,
    pub recursion_misses: u64,
    pub run_count: u64,
    pub run_time_ns: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Totals {
    pub bytes: u64,
    pub allocations: u64,
    pub allocated_bytes: u64,
    pub allocated_count: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Caller {
    pub function: String,
    pub bytes: u64,
    pub allocations: u64,
    pub allocated_bytes: u64,
    pub stacks: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Stack {
    pub stack_id: Option<u32>,
    /// Outstanding bytes.
    pub bytes: u64,
    /// Outstanding allocations.
    pub allocations: u64,
    /// Bytes allocated from this stack during the session, freed or not.
    pub allocated_bytes: u64,
    pub allocated_count: u64,
    pub orders: Vec<u8>,
    pub oldest_age_secs: Option<f64>,
    pub caller: String,
    pub owners: Vec<Owner>,
    /// Innermost first.
    pub frames: Vec<Frame>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Owner {
    pub tgid: u32,
    pub pid: u32,
    pub comm: String,
    pub bytes: u64,
    pub allocations: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Frame {
    pub address: String,
    pub symbol: Option<String>,
    pub module: Option<String>,
    pub offset: Option<u64>,
    pub file: Option<String>,
    pub line: Option<u32>,
    #[serde(default)]
    pub inlined: Vec<String>,
}

impl Report {
    /// Parses and validates ([`Report::validate`]) a JSON report. Does not run
    /// [`Report::check_consistency`]: scenarios do, after logging what they measured.
    pub fn from_json_str(text: &str) -> Result<Report> {
        let report: Report =
            serde_json::from_str(text).context("the JSON report does not match schema 1")?;
        report.validate()?;
        Ok(report)
    }

    pub fn from_json_file(path: &Path) -> Result<Report> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the JSON report {}", path.display()))?;
        Report::from_json_str(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Checks the parts of the contract serde cannot: schema version, counter names, order.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.schema == 1, "schema is {}, expected 1", self.schema);
        let missing: Vec<_> = REQUIRED_COUNTERS
            .iter()
            .filter(|c| !self.counters.contains_key(**c))
            .collect();
        ensure!(missing.is_empty(), "counters missing: {missing:?}");
        for (i, pair) in self.stacks.windows(2).enumerate() {
            ensure!(
                pair[0].bytes >= pair[1].bytes,
                "stacks are not sorted by outstanding bytes: stacks[{i}] has {} bytes, \
                 stacks[{}] has {}",
                pair[0].bytes,
                i + 1,
                pair[1].bytes
            );
        }
        for (i, stack) in self.stacks.iter().enumerate() {
            for frame in &stack.frames {
                ensure!(
                    frame.address.starts_with("0x"),
                    "stacks[{i}] has a frame address {:?} not written as 0x...",
                    frame.address
                );
            }
        }
        Ok(())
    }

    /// Invariants of the figures: what is outstanding at the end was allocated during the
    /// session, owners share a stack's outstanding memory, totals are the sums over stacks.
    pub fn check_consistency(&self) -> Result<()> {
        let mut problems = Vec::new();
        for (i, s) in self.stacks.iter().enumerate() {
            if s.bytes > s.allocated_bytes || s.allocations > s.allocated_count {
                problems.push(format!(
                    "stacks[{i}] has more outstanding ({} bytes, {} allocations) than it \
                     allocated during the session ({} bytes, {} allocations): {}",
                    s.bytes,
                    s.allocations,
                    s.allocated_bytes,
                    s.allocated_count,
                    s.describe()
                ));
            }
            let owner_bytes: u64 = s.owners.iter().map(|o| o.bytes).sum();
            let owner_allocs: u64 = s.owners.iter().map(|o| o.allocations).sum();
            if owner_bytes > s.bytes || owner_allocs > s.allocations {
                problems.push(format!(
                    "stacks[{i}]'s owners hold {owner_bytes} bytes in {owner_allocs} \
                     allocations, more than the stack's outstanding {} bytes in {} \
                     allocations; owners {:?}; {}",
                    s.bytes,
                    s.allocations,
                    s.owners
                        .iter()
                        .map(|o| (o.comm.as_str(), o.tgid, o.bytes, o.allocations))
                        .collect::<Vec<_>>(),
                    s.describe()
                ));
            }
        }
        let sum = |f: fn(&Stack) -> u64| self.stacks.iter().map(f).sum::<u64>();
        let t = &self.totals;
        let sums = (
            sum(|s| s.bytes),
            sum(|s| s.allocations),
            sum(|s| s.allocated_bytes),
            sum(|s| s.allocated_count),
        );
        if (t.bytes, t.allocations, t.allocated_bytes, t.allocated_count) != sums {
            problems.push(format!(
                "totals {t:?} are not the sums over the stacks (bytes, allocations, \
                 allocated_bytes, allocated_count) = {sums:?}"
            ));
        }
        ensure!(
            problems.is_empty(),
            "the report is inconsistent ({} problems):\n{}",
            problems.len(),
            problems
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        Ok(())
    }

    pub fn counter(&self, name: &str) -> Result<u64> {
        self.counters
            .get(name)
            .copied()
            .with_context(|| format!("counter {name:?} missing from the report"))
    }

    /// One line per counter, for logs.
    pub fn counters_line(&self) -> String {
        self.counters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Stack {
    /// Frame symbols innermost first (`?` for unresolved), for logs.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self
            .frames
            .iter()
            .map(|f| f.symbol.as_deref().unwrap_or("?"))
            .collect();
        format!(
            "stack_id={:?} bytes={} allocated_bytes={} caller={} frames=[{}]",
            self.stack_id,
            self.bytes,
            self.allocated_bytes,
            self.caller,
            names.join(" <- ")
        )
    }
}

/// Whether a frame symbol names function `name`: equal, or `name` followed by a compiler
/// suffix such as `.cold`, `.isra.0`, `.constprop.0`.
pub fn symbol_matches(symbol: &str, name: &str) -> bool {
    symbol == name
        || symbol
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Whether any frame of `stack` is function `name` (as its symbol or as a function inlined at
/// that address).
pub fn stack_has_function(stack: &Stack, name: &str) -> bool {
    stack.frames.iter().any(|f| {
        f.symbol.as_deref().is_some_and(|s| symbol_matches(s, name))
            || f.inlined.iter().any(|s| symbol_matches(s, name))
    })
}

/// Stacks that, for every group in `required`, contain at least one of the group's functions.
/// E.g. `&[&["tcp_sendmsg", "tcp_sendmsg_locked"], &["skb_page_frag_refill"]]`.
pub fn find_stacks<'a>(report: &'a Report, required: &[&[&str]]) -> Vec<&'a Stack> {
    report
        .stacks
        .iter()
        .filter(|s| {
            required
                .iter()
                .all(|group| group.iter().any(|name| stack_has_function(s, name)))
        })
        .collect()
}

/// Stacks containing all of `names`.
pub fn find_stacks_with_all<'a>(report: &'a Report, names: &[&str]) -> Vec<&'a Stack> {
    report
        .stacks
        .iter()
        .filter(|s| names.iter().all(|name| stack_has_function(s, name)))
        .collect()
}

/// An upper bound of the outstanding bytes that processes with thread-group id `tgid` hold in
/// `stack`, from its (possibly truncated, largest-first) owners list: their own entry if
/// listed; otherwise no more than the smallest listed owner nor than what the listed owners
/// leave of the stack's bytes.
pub fn owner_bytes_upper_bound(stack: &Stack, tgid: u32) -> u64 {
    let listed: u64 = stack
        .owners
        .iter()
        .filter(|o| o.tgid == tgid)
        .map(|o| o.bytes)
        .sum();
    let others: Vec<u64> = stack
        .owners
        .iter()
        .filter(|o| o.tgid != tgid)
        .map(|o| o.bytes)
        .collect();
    let unlisted_rest = stack
        .bytes
        .saturating_sub(listed + others.iter().sum::<u64>());
    let unlisted = match others.iter().min() {
        // A truncated list may leave out smaller entries of `tgid` (other threads' pids).
        Some(&smallest) => unlisted_rest.min(smallest),
        None if listed == 0 => stack.bytes,
        None => unlisted_rest,
    };
    listed + unlisted
}

/// Outstanding bytes summed over `stacks`.
pub fn sum_bytes(stacks: &[&Stack]) -> u64 {
    stacks.iter().map(|s| s.bytes).sum()
}

/// Bytes allocated during the session, summed over `stacks`.
pub fn sum_allocated_bytes(stacks: &[&Stack]) -> u64 {
    stacks.iter().map(|s| s.allocated_bytes).sum()
}

/// Parses `--folded` output (`outer;...;inner <bytes>` per line) into (frames outermost
/// first, bytes).
pub fn parse_folded(text: &str) -> Result<Vec<(Vec<String>, u64)>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (frames, bytes) = line
                .rsplit_once(' ')
                .with_context(|| format!("folded line without ` <bytes>`: {line:?}"))?;
            let bytes = bytes
                .parse::<u64>()
                .with_context(|| format!("folded line with a bad byte count: {line:?}"))?;
            Ok((frames.split(';').map(str::to_string).collect(), bytes))
        })
        .collect()
}

/// Bytes of the folded lines that, for every group in `required`, contain one of its
/// functions (like [`find_stacks`]).
pub fn folded_bytes(text: &str, required: &[&[&str]]) -> Result<u64> {
    Ok(parse_folded(text)?
        .into_iter()
        .filter(|(frames, _)| {
            required.iter().all(|group| {
                group
                    .iter()
                    .any(|n| frames.iter().any(|f| symbol_matches(f, n)))
            })
        })
        .map(|(_, bytes)| bytes)
        .sum())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const SAMPLE: &str = r#"{
      "schema": 1,
      "session": {"kernel": "6.18"},
      "counters": {"allocs_seen": 10, "allocs_tracked": 9, "failed_allocs": 0,
        "self_allocs": 1, "frees_seen": 5, "frees_matched": 4, "partial_frees": 0,
        "unmatched_frees": 1, "outstanding_map_full": 0, "stale_records_replaced": 0,
        "records_detached": 0, "stack_id_eexist": 0, "stack_id_enomem": 0,
        "stack_id_other": 0, "agg_missing": 0, "read_errors": 0},
      "programs": [{"name": "mm_page_alloc", "recursion_misses": 0, "run_count": 0,
        "run_time_ns": 0}],
      "totals": {"bytes": 36864, "allocations": 2, "allocated_bytes": 45056,
        "allocated_count": 4},
      "callers": [{"function": "tcp_sendmsg_locked", "bytes": 32768, "allocations": 1,
        "allocated_bytes": 32768, "stacks": 1}],
      "stacks": [
        {"stack_id": 7, "bytes": 32768, "allocations": 1, "allocated_bytes": 32768,
         "allocated_count": 1, "orders": [3], "oldest_age_secs": 1.5,
         "caller": "skb_page_frag_refill",
         "owners": [{"tgid": 42, "pid": 43, "comm": "t", "bytes": 32768, "allocations": 1}],
         "frames": [
           {"address": "0xffffffff81000000", "symbol": "__alloc_pages_noprof",
            "module": null, "offset": 16, "file": null, "line": null, "inlined": []},
           {"address": "0xffffffff81000100", "symbol": "skb_page_frag_refill",
            "module": null, "offset": 32, "file": null, "line": null, "inlined": []},
           {"address": "0xffffffff81000200", "symbol": "tcp_sendmsg_locked.cold",
            "module": null, "offset": 8, "file": null, "line": null, "inlined": []}]},
        {"stack_id": null, "bytes": 4096, "allocations": 1, "allocated_bytes": 8192,
         "allocated_count": 2, "orders": [0], "oldest_age_secs": null, "caller": "?",
         "owners": [], "frames": []},
        {"stack_id": 9, "bytes": 0, "allocations": 0, "allocated_bytes": 4096,
         "allocated_count": 1, "orders": [], "oldest_age_secs": null, "caller": "x",
         "owners": [], "frames": [
           {"address": "0x1", "symbol": null, "module": "m", "offset": null, "file": null,
            "line": null, "inlined": ["tcp_sendmsg_fastopen"]}]}
      ]
    }"#;

    #[test]
    fn symbol_suffixes() {
        assert!(symbol_matches("tcp_sendmsg", "tcp_sendmsg"));
        assert!(symbol_matches("tcp_sendmsg.cold", "tcp_sendmsg"));
        assert!(symbol_matches("tcp_sendmsg.isra.0", "tcp_sendmsg"));
        assert!(!symbol_matches("tcp_sendmsg_locked", "tcp_sendmsg"));
        assert!(!symbol_matches("tcp_sendms", "tcp_sendmsg"));
    }

    #[test]
    fn parse_and_match() -> Result<()> {
        let report = Report::from_json_str(SAMPLE)?;
        assert_eq!(report.counter("frees_seen")?, 5);
        let tcp = find_stacks(
            &report,
            &[
                &["tcp_sendmsg", "tcp_sendmsg_locked"],
                &["skb_page_frag_refill"],
            ],
        );
        assert_eq!(tcp.len(), 1);
        assert_eq!(sum_bytes(&tcp), 32768);
        assert_eq!(sum_allocated_bytes(&tcp), 32768);
        assert!(find_stacks_with_all(&report, &["tcp_sendmsg", "skb_page_frag_refill"]).is_empty());
        assert_eq!(
            find_stacks_with_all(&report, &["tcp_sendmsg_fastopen"]).len(),
            1,
            "inlined functions count"
        );
        Ok(())
    }

    #[test]
    fn owner_bounds() -> Result<()> {
        let report = Report::from_json_str(SAMPLE)?;
        let tcp = &report.stacks[0];
        assert_eq!(owner_bytes_upper_bound(tcp, 42), 32768, "listed");
        assert_eq!(
            owner_bytes_upper_bound(tcp, 7),
            0,
            "the only owner holds it all"
        );
        let unknown = &report.stacks[1];
        assert_eq!(
            owner_bytes_upper_bound(unknown, 7),
            4096,
            "no owners listed"
        );
        let mut partial = tcp.clone();
        partial.bytes = 40960;
        assert_eq!(
            owner_bytes_upper_bound(&partial, 7),
            8192,
            "what the list leaves"
        );
        Ok(())
    }

    #[test]
    fn folded_lines() -> Result<()> {
        let text = "a;tcp_sendmsg;skb_page_frag_refill 32768\nb;c 4096\n";
        assert_eq!(
            folded_bytes(text, &[&["tcp_sendmsg"], &["skb_page_frag_refill"]])?,
            32768
        );
        assert_eq!(folded_bytes(text, &[])?, 36864);
        assert!(parse_folded("a;b 12x").is_err());
        Ok(())
    }

    #[test]
    fn validation_rejects_contract_breaks() {
        let bad_schema = SAMPLE.replacen("\"schema\": 1", "\"schema\": 2", 1);
        assert!(Report::from_json_str(&bad_schema).is_err());
        let no_counter = SAMPLE.replacen("\"agg_missing\": 0,", "", 1);
        assert!(Report::from_json_str(&no_counter).is_err());
        let greedy_owner = SAMPLE.replacen(
            "\"bytes\": 32768, \"allocations\": 1}]",
            "\"bytes\": 17592186040320, \"allocations\": 1}]",
            1,
        );
        assert!(Report::from_json_str(&greedy_owner)
            .unwrap()
            .check_consistency()
            .is_err());
        let bad_totals = SAMPLE.replacen("\"bytes\": 36864", "\"bytes\": 36865", 1);
        assert!(Report::from_json_str(&bad_totals)
            .unwrap()
            .check_consistency()
            .is_err());
        Report::from_json_str(SAMPLE)
            .unwrap()
            .check_consistency()
            .unwrap();
        let unsorted = SAMPLE.replacen(
            "\"bytes\": 4096, \"allocations\": 1",
            "\"bytes\": 99999, \"allocations\": 1",
            1,
        );
        assert!(Report::from_json_str(&unsorted).is_err());
    }
}
