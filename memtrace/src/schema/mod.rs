//! The JSON report, versioned: the saved session that `trace --json` / `--save` writes and
//! `memtrace report` reads back into a [`Report`] to re-render it (text, folded, SVG, pprof)
//! without privileges or a kernel. It holds everything the renderers use: symbolized frames,
//! counters, owners and snapshots. [`v1`] is schema 1 as Rust types with conversions to and
//! from the model; `memtrace sockets --json` has its own small document ([`sockets`]).

pub mod sockets;
pub mod v1;

use std::path::Path;

use serde_json::Value;

use crate::model::Report;
pub use v1::{to_string_pretty, to_vec_compact, VERSION as JSON_SCHEMA_VERSION};

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
    let saved: v1::ReportV1 = serde_json::from_value(value).map_err(|e| SavedError::Corrupt {
        path: origin.to_string(),
        detail: e.to_string(),
    })?;
    Report::try_from(saved).map_err(|detail| SavedError::Corrupt {
        path: origin.to_string(),
        detail,
    })
}

#[cfg(test)]
mod json_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testkit::{mixed_report, sample_report};
    use crate::model::{growth::Growth, narrow, Class};
    use crate::render::{text::render_text, RenderOptions};
    use memtrace_common::Counter;

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
