//! Saved sessions: a JSON report (`trace --json` / `--save`) read back into a [`Report`], so
//! `memtrace report` can re-render it (text, folded, SVG, pprof) without privileges or a
//! kernel. The JSON holds everything the renderers use: symbolized frames, counters, owners
//! and snapshots.

use std::path::Path;

use memtrace_common::Counter;
use serde::Deserialize;
use serde_json::Value;

use crate::model::{
    growth::{kind_from_name, Growth, Snapshot},
    CallerSummary, Class, ClassSummary, Frame, Owner, OwnerSummary, ProgramStats, Report,
    SessionInfo, StackReport, Totals,
};
use crate::render::JSON_SCHEMA_VERSION;

/// Why a saved session can't be read.
#[derive(Debug, thiserror::Error)]
pub enum SavedError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} is not valid JSON: is it a complete memtrace report (`trace --save`/`--json`)?"
    )]
    NotJson {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path} is not a memtrace report: it has no `schema` version (write one with `memtrace trace --save FILE`)")]
    NotAReport { path: String },
    #[error("{path} has report schema {found}, this memtrace reads schema {expected}: re-render it with the memtrace version that wrote it")]
    WrongVersion {
        path: String,
        found: String,
        expected: u64,
    },
    #[error("{path} is a damaged memtrace report: {detail}")]
    Corrupt { path: String, detail: String },
}

/// Reads a saved session from `path`.
pub fn load(path: &Path) -> Result<Report, SavedError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SavedError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text, &shown)
}

/// Parses a saved session (`origin` names it in errors).
pub fn parse(text: &str, origin: &str) -> Result<Report, SavedError> {
    let value: Value = serde_json::from_str(text).map_err(|source| SavedError::NotJson {
        path: origin.to_string(),
        source,
    })?;
    match value.get("schema") {
        None => {
            return Err(SavedError::NotAReport {
                path: origin.to_string(),
            })
        }
        Some(v) if v.as_u64() == Some(JSON_SCHEMA_VERSION) => {}
        Some(v) => {
            return Err(SavedError::WrongVersion {
                path: origin.to_string(),
                found: v.to_string(),
                expected: JSON_SCHEMA_VERSION,
            })
        }
    }
    let saved: SavedReport = serde_json::from_value(value).map_err(|e| SavedError::Corrupt {
        path: origin.to_string(),
        detail: e.to_string(),
    })?;
    saved.into_report().map_err(|detail| SavedError::Corrupt {
        path: origin.to_string(),
        detail,
    })
}

#[derive(Deserialize)]
struct SavedReport {
    session: SessionInfo,
    counters: serde_json::Map<String, Value>,
    programs: Vec<ProgramStats>,
    totals: Totals,
    classes: Vec<ClassSummary>,
    class_filter: Option<Vec<Class>>,
    callers: Vec<CallerSummary>,
    stacks: Vec<SavedStack>,
    owners: OwnerSummary,
    snapshots: Vec<Snapshot>,
    // Added within schema 1: absent in files of earlier builds.
    #[serde(default)]
    sockets: Vec<crate::sockets::Socket>,
}

#[derive(Deserialize)]
struct SavedStack {
    #[serde(deserialize_with = "kind_from_name")]
    kind: memtrace_common::Kind,
    class: Class,
    cache: Option<String>,
    // Added within schema 1: absent in files of earlier builds.
    #[serde(default)]
    cache_merged: Vec<String>,
    bytes_req: Option<u64>,
    stack_id: Option<u32>,
    bytes: u64,
    allocations: u64,
    allocated_bytes: u64,
    allocated_count: u64,
    orders: Vec<u8>,
    oldest_age_secs: Option<f64>,
    caller: String,
    owners: Vec<Owner>,
    growth: Option<Growth>,
    frames: Vec<SavedFrame>,
}

#[derive(Deserialize)]
struct SavedFrame {
    address: String,
    symbol: Option<String>,
    module: Option<String>,
    offset: Option<u64>,
    file: Option<String>,
    line: Option<u32>,
    inlined: Vec<String>,
}

impl SavedFrame {
    fn into_frame(self) -> Result<Frame, String> {
        let hex = self
            .address
            .strip_prefix("0x")
            .ok_or_else(|| format!("frame address `{}` is not 0x-prefixed hex", self.address))?;
        let address = u64::from_str_radix(hex, 16)
            .map_err(|e| format!("frame address `{}`: {e}", self.address))?;
        Ok(Frame {
            address,
            symbol: self.symbol,
            module: self.module,
            offset: self.offset,
            file: self.file,
            line: self.line,
            inlined: self.inlined,
        })
    }
}

impl SavedReport {
    fn into_report(self) -> Result<Report, String> {
        // Counters in `Counter::ALL` order, by name; a saved session from a build with fewer
        // counters shows the missing ones as 0; a name this build does not know (a newer
        // memtrace added it, within the same schema) is left out.
        let mut counters: Vec<(&'static str, u64)> =
            Counter::ALL.iter().map(|c| (c.name(), 0)).collect();
        for (name, value) in &self.counters {
            let Some(slot) = counters.iter_mut().find(|(n, _)| n == name) else {
                continue;
            };
            slot.1 = value
                .as_u64()
                .ok_or_else(|| format!("counter `{name}` is not a count: {value}"))?;
        }
        let failure_counters = Counter::ALL
            .iter()
            .filter(|c| c.is_failure())
            .map(|c| c.name())
            .collect();
        let stacks = self
            .stacks
            .into_iter()
            .map(|s| {
                Ok(StackReport {
                    kind: s.kind,
                    class: s.class,
                    cache: s.cache,
                    cache_merged: s.cache_merged,
                    bytes_req: s.bytes_req,
                    stack_id: s.stack_id,
                    bytes: s.bytes,
                    allocations: s.allocations,
                    allocated_bytes: s.allocated_bytes,
                    allocated_count: s.allocated_count,
                    orders: s.orders,
                    oldest_age_secs: s.oldest_age_secs,
                    caller: s.caller,
                    owners: s.owners,
                    frames: s
                        .frames
                        .into_iter()
                        .map(SavedFrame::into_frame)
                        .collect::<Result<_, _>>()?,
                    growth: s.growth,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Report {
            session: self.session,
            counters,
            failure_counters,
            programs: self.programs,
            totals: self.totals,
            classes: self.classes,
            class_filter: self.class_filter,
            callers: self.callers,
            stacks,
            owners: self.owners,
            snapshots: self.snapshots,
            sockets: self.sockets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::narrow;
    use crate::render::{
        json::to_string_pretty,
        text::render_text,
        text::tests::{mixed_report, sample_report},
        RenderOptions,
    };

    fn round_trip(r: &Report) -> Report {
        let json = to_string_pretty(r).expect("serialize");
        parse(&json, "test.json").expect("parse back")
    }

    #[test]
    fn a_saved_report_reads_back_equal() {
        let mut r = sample_report(&[(Counter::OutstandingFull, 3)], 2);
        r.session.grace_note = Some("grace period of 6s not reached".into());
        r.session.filters = vec!["pid 42".into()];
        let back = round_trip(&r);
        assert_eq!(back, r);
        for top in [0, 1, 10] {
            let opts = RenderOptions { top };
            assert_eq!(
                render_text(&back, &opts),
                render_text(&r, &opts),
                "top {top}"
            );
        }
        let mixed = mixed_report(Some(vec![Class::Network, Class::SlabBacking]));
        assert_eq!(round_trip(&mixed), mixed);
    }

    #[test]
    fn owners_growth_and_snapshots_survive() {
        use crate::model::{
            growth::{Snapshot, SnapshotStack},
            ExecContext, ProcessOwner,
        };
        let mut r = sample_report(&[], 0);
        r.stacks[0].owners[0].context = ExecContext::Softirq;
        r.stacks[0].owners[0].cgroup = Some("kubepods/pod1".into());
        r.stacks[0].growth = Some(Growth {
            series: vec![1, 2, 4096 * 3],
            at_secs: vec![1.0, 2.0, 3.25],
            growing: true,
            bytes_per_sec: 1234.5,
        });
        r.owners.processes.push(ProcessOwner {
            tgid: 7,
            comm: "x".into(),
            cmdline: Some("x --y".into()),
            alive: true,
            bytes: 10,
            allocations: 1,
            ..Default::default()
        });
        r.snapshots.push(Snapshot {
            at_secs: 1.5,
            totals: r.totals.clone(),
            stacks: vec![SnapshotStack {
                kind: memtrace_common::Kind::Slab,
                stack_id: None,
                caller: "kmalloc".into(),
                class: Class::Network,
                bytes: 3,
                allocations: 1,
            }],
        });
        r.sockets.push(crate::sockets::Socket {
            family: "tcp".into(),
            state: "ESTAB".into(),
            local: "127.0.0.1:1".into(),
            remote: "127.0.0.1:2".into(),
            recv_queue: 32 << 20,
            rmem_alloc: 33 << 20,
            held_bytes: 33 << 20,
            owners: vec![crate::sockets::SocketOwner {
                pid: 7,
                comm: "x".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(round_trip(&r), r);
        // The text report ends with them, after the network stacks' total.
        let text = render_text(&r, &RenderOptions::default());
        let tail = text
            .rsplit("Network stacks hold ")
            .next()
            .unwrap_or_default();
        assert!(
            tail.contains("127.0.0.1:1 -> 127.0.0.1:2") && tail.contains("x[7]"),
            "{tail}"
        );
        // A file of an earlier build has no `sockets`: still read.
        let mut v: serde_json::Value =
            serde_json::from_str(&to_string_pretty(&r).expect("serialize")).expect("json");
        v.as_object_mut().expect("object").remove("sockets");
        let back = parse(&v.to_string(), "old.json").expect("read without sockets");
        assert!(back.sockets.is_empty());
    }

    #[test]
    fn bad_files_have_clear_errors() {
        let r = sample_report(&[], 0);
        let json = to_string_pretty(&r).expect("serialize");
        // Truncated (a half-written file).
        let err = parse(&json[..json.len() / 2], "s.json").unwrap_err();
        assert!(matches!(err, SavedError::NotJson { .. }), "{err}");
        assert!(err.to_string().contains("s.json"));
        // Some other JSON.
        let err = parse(r#"{"a": 1}"#, "s.json").unwrap_err();
        assert!(err.to_string().contains("not a memtrace report"), "{err}");
        // Another schema version.
        let newer = json.replacen("\"schema\": 1", "\"schema\": 2", 1);
        let err = parse(&newer, "s.json").unwrap_err();
        assert!(
            matches!(err, SavedError::WrongVersion { ref found, .. } if found == "2"),
            "{err}"
        );
        // A damaged field.
        let bad = json.replacen("\"0xffffffff81000010\"", "\"ffff\"", 1);
        let err = parse(&bad, "s.json").unwrap_err();
        assert!(err.to_string().contains("0x-prefixed"), "{err}");
        let bad = json.replacen("\"kind\": \"page\"", "\"kind\": \"pages\"", 1);
        let err = parse(&bad, "s.json").unwrap_err();
        assert!(err.to_string().contains("unknown kind `pages`"), "{err}");
        let bad = json.replacen("\"stack_id_eexist\": 0", "\"stack_id_eexist\": -1", 1);
        let err = parse(&bad, "s.json").unwrap_err();
        assert!(err.to_string().contains("stack_id_eexist"), "{err}");
        // A counter this build does not know (a newer memtrace's) is left out.
        let newer = json.replacen("\"outstanding_map_full\"", "\"future_counter\"", 1);
        let r2 = parse(&newer, "s.json").expect("unknown counter ignored");
        assert_eq!(
            r2.counters
                .iter()
                .find(|c| c.0 == "outstanding_map_full")
                .map(|c| c.1),
            Some(0)
        );
        let err = load(Path::new("/nonexistent/s.json")).unwrap_err();
        assert!(err.to_string().contains("cannot read /nonexistent/s.json"));
    }

    #[test]
    fn narrowing_recomputes_totals_and_callers() {
        let mut r = mixed_report(None);
        let all_network: u64 = r
            .stacks
            .iter()
            .filter(|s| s.class == Class::Network)
            .map(|s| s.bytes)
            .sum();
        let missing = narrow(&mut r, &[Class::Network]);
        assert!(missing.is_empty());
        assert!(r.stacks.iter().all(|s| s.class == Class::Network));
        assert_eq!(r.totals.bytes, all_network);
        assert_eq!(
            r.callers.iter().map(|c| c.bytes).sum::<u64>(),
            r.totals.bytes
        );
        assert_eq!(r.class_filter, Some(vec![Class::Network]));
        // Asking for a class the saved session left out is reported back, and the report
        // does not claim to cover it.
        let missing = narrow(&mut r, &[Class::Network, Class::PageTables]);
        assert_eq!(missing, vec![Class::PageTables]);
        assert_eq!(r.class_filter, Some(vec![Class::Network]));
        // Sockets go with network memory.
        r.sockets.push(crate::sockets::Socket::default());
        narrow(&mut r, &[Class::Network]);
        assert_eq!(r.sockets.len(), 1);
        narrow(&mut r, &[Class::PageTables]);
        assert!(r.sockets.is_empty());
    }
}
