use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use memtrace_common::Counter;

use super::*;
use crate::model::testkit::{mixed_report, sample_report};
use crate::model::{growth::Growth, CgroupOwner, PodOwner, ProgramStats};

/// The mixed-kind fixture with everything the renderer can show: pods and cgroups (more than
/// the top N, an unresolved cgroup, two cgroups with the same path), growing stacks, failure
/// counters, a program loaded twice, odd characters in a caller's name.
fn full_report() -> Report {
    let mut r = mixed_report(None);
    r.counters = Counter::ALL
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name(), i as u64 * 3))
        .collect();
    r.failure_counters = Counter::ALL
        .iter()
        .filter(|c| c.is_failure())
        .map(|c| c.name())
        .collect();
    r.programs = vec![
        ProgramStats {
            name: "mm_page_alloc".into(),
            recursion_misses: 0,
            run_count: 100,
            run_time_ns: 2_500_000,
        },
        ProgramStats {
            name: "kfree".into(),
            recursion_misses: 7,
            ..Default::default()
        },
        ProgramStats {
            name: "kfree".into(),
            recursion_misses: 1,
            ..Default::default()
        },
    ];
    r.owners.pods = (0..12u64)
        .map(|i| PodOwner {
            pod_uid: format!("0000000{i:x}-aaaa-bbbb-cccc-dddddddddddd"),
            qos: Some("burstable".into()),
            containers: vec![],
            bytes: (12 - i) * 4096,
            allocations: 12 - i,
        })
        .collect();
    r.owners.cgroups = vec![
        CgroupOwner {
            cgroup_id: 10,
            path: Some("/system.slice/sshd.service".into()),
            bytes: 8192,
            allocations: 2,
            ..Default::default()
        },
        CgroupOwner {
            cgroup_id: 11,
            path: None,
            bytes: 4096,
            allocations: 1,
            ..Default::default()
        },
        // The same path under another id (the cgroup was removed and made again): one series.
        CgroupOwner {
            cgroup_id: 12,
            path: Some("/system.slice/sshd.service".into()),
            bytes: 4096,
            allocations: 1,
            ..Default::default()
        },
    ];
    let growth = |growing: bool, rate: f64| {
        Some(Growth {
            series: vec![0, 4096, 8192],
            at_secs: vec![1.0, 2.0, 3.0],
            growing,
            bytes_per_sec: rate,
        })
    };
    // Two growing stacks counted in the totals, one that is not growing, and a growing one of
    // backing pages (left out: its objects are counted).
    let counted: Vec<usize> = (0..r.stacks.len())
        .filter(|&i| class_in_total(&r.classes, r.stacks[i].class))
        .collect();
    r.stacks[counted[0]].growth = growth(true, 4096.0);
    r.stacks[counted[1]].growth = growth(true, 8192.5);
    r.stacks[counted[2]].growth = growth(false, 100.0);
    let backing = (0..r.stacks.len())
        .find(|&i| !class_in_total(&r.classes, r.stacks[i].class))
        .expect("the fixture has backing pages");
    r.stacks[backing].growth = growth(true, 1e9);
    r.callers[0].function = "odd \"name\" with \\ and\nnewline".into();
    r
}

fn full_options() -> MetricsOptions {
    MetricsOptions {
        top_pods: 5,
        top_callers: 2,
        top_growing: 1,
        table_entries: Some(TableEntries {
            allocations: 12,
            objects: 34,
            stacks: 56,
        }),
        bpf_map_bytes: Some(114 << 20),
        snapshot_unix: Some(1_700_000_060.5),
        ..MetricsOptions::default()
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Metric families of an exposition: name → type.
type Families = BTreeMap<String, String>;

/// Families (name → type) and samples of a text exposition (format 0.0.4), checked
/// against the format's rules: every sample follows the TYPE line of its family, HELP and TYPE
/// at most once per family, valid metric and label names, escaped label values, float
/// values, no duplicate series and no duplicate label in a series.
fn parse_exposition(text: &str) -> Result<(Families, Vec<Sample>), String> {
    fn valid_metric_name(n: &str) -> bool {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    fn valid_label_name(n: &str) -> bool {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !n.starts_with("__")
    }
    let mut families = Families::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut samples = Vec::new();
    let mut seen: BTreeSet<(String, Vec<(String, String)>)> = BTreeSet::new();
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    for (i, line) in text.lines().enumerate() {
        let at = |msg: &str| format!("line {}: {msg}: {line:?}", i + 1);
        if line.is_empty() {
            return Err(at("empty line"));
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest
                .split_once(' ')
                .ok_or_else(|| at("HELP without text"))?;
            if !helps.insert(name.to_string()) {
                return Err(at("second HELP"));
            }
            if help.contains('\n') {
                return Err(at("raw newline in HELP"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without type"))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty) {
                return Err(at("unknown type"));
            }
            if !valid_metric_name(name) {
                return Err(at("invalid metric name"));
            }
            if families.contains_key(name) {
                return Err(at("second TYPE"));
            }
            if !helps.contains(name) {
                return Err(at("TYPE without HELP before it"));
            }
            families.insert(name.to_string(), ty.to_string());
            current = Some(name.to_string());
            continue;
        }
        if line.starts_with('#') {
            return Err(at("unexpected comment"));
        }
        // name{label="value",...} value
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("sample without value"))?;
        let name = &line[..name_end];
        if current.as_deref() != Some(name) {
            return Err(at("sample outside its family (no TYPE just before)"));
        }
        let chars: Vec<char> = line[name_end..].chars().collect();
        let mut i = 0;
        let mut labels = Vec::new();
        if chars.first() == Some(&'{') {
            i = 1;
            while chars.get(i) != Some(&'}') {
                let key_start = i;
                while chars.get(i).is_some_and(|&c| c != '=') {
                    i += 1;
                }
                let key: String = chars[key_start..i.min(chars.len())].iter().collect();
                if !valid_label_name(&key) {
                    return Err(at("invalid label name"));
                }
                if chars.get(i + 1) != Some(&'"') {
                    return Err(at("label value not quoted"));
                }
                i += 2;
                let mut value = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err(at("unterminated label value")),
                        Some('"') => break,
                        Some('\\') => {
                            match chars.get(i + 1) {
                                Some('\\') => value.push('\\'),
                                Some('"') => value.push('"'),
                                Some('n') => value.push('\n'),
                                _ => return Err(at("invalid escape")),
                            }
                            i += 1;
                        }
                        Some(&c) => value.push(c),
                    }
                    i += 1;
                }
                i += 1;
                if labels.iter().any(|(k, _): &(String, String)| *k == key) {
                    return Err(at("duplicate label"));
                }
                labels.push((key, value));
                match chars.get(i) {
                    Some(',') => i += 1,
                    Some('}') => {}
                    _ => return Err(at("expected , or }")),
                }
            }
            i += 1;
        }
        let rest: String = chars[i.min(chars.len())..].iter().collect();
        let value = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| at("value is not a float"))?,
        };
        let mut key_labels = labels.clone();
        key_labels.sort();
        if !seen.insert((name.to_string(), key_labels)) {
            return Err(at("duplicate series"));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok((families, samples))
}

fn render(report: &Report, opts: &MetricsOptions) -> String {
    render_metrics(report, opts).expect("render")
}

fn parsed(report: &Report, opts: &MetricsOptions) -> (Families, Vec<Sample>) {
    let text = render(report, opts);
    parse_exposition(&text).unwrap_or_else(|e| panic!("invalid exposition: {e}\n{text}"))
}

fn sum(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

fn series<'a>(samples: &'a [Sample], name: &str) -> Vec<&'a Sample> {
    samples.iter().filter(|s| s.name == name).collect()
}

/// The documented metrics: name → (type, label names), from the tables of docs/metrics.md
/// (rows starting with a backticked `memtrace_` name).
fn documented() -> BTreeMap<String, (String, BTreeSet<String>)> {
    const DOC: &str = include_str!("../../../../docs/metrics.md");
    let mut out = BTreeMap::new();
    for line in DOC.lines() {
        let Some(row) = line.strip_prefix("| `memtrace_") else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(cells.len() >= 4, "docs/metrics.md: short row {line:?}");
        let name = format!("memtrace_{}", cells[0].trim_end_matches('`'));
        let labels: BTreeSet<String> = cells[2]
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        let previous = out.insert(name.clone(), (cells[1].to_string(), labels));
        assert!(previous.is_none(), "docs/metrics.md lists {name} twice");
    }
    out
}

/// docs/metrics.md documents every metric the renderer emits, with its type and exactly its
/// labels, and nothing it does not emit (the full fixture emits every family).
#[test]
fn every_metric_is_documented() {
    let (families, samples) = parsed(&full_report(), &full_options());
    let mut emitted: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for (name, ty) in &families {
        let labels: BTreeSet<String> = series(&samples, name)
            .iter()
            .flat_map(|s| s.labels.iter().map(|(k, _)| k.clone()))
            .collect();
        for s in series(&samples, name) {
            let names: BTreeSet<String> = s.labels.iter().map(|(k, _)| k.clone()).collect();
            assert_eq!(names, labels, "{name}: every series has the same labels");
        }
        emitted.insert(name.clone(), (ty.clone(), labels));
    }
    let documented = documented();
    let mut problems = Vec::new();
    for (name, (ty, labels)) in &emitted {
        match documented.get(name) {
            None => problems.push(format!(
                "{name} ({ty}, labels {labels:?}) is not documented"
            )),
            Some((doc_ty, doc_labels)) => {
                if doc_ty != ty {
                    problems.push(format!("{name}: documented as {doc_ty}, emitted as {ty}"));
                }
                if doc_labels != labels {
                    problems.push(format!(
                        "{name}: documented labels {doc_labels:?}, emitted {labels:?}"
                    ));
                }
            }
        }
    }
    for name in documented.keys() {
        if !emitted.contains_key(name) {
            problems.push(format!("{name} is documented but never emitted"));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/metrics.md is out of date with the metrics renderer:\n  {}",
        problems.join("\n  ")
    );
    // The documented bound is the one the code computes.
    const DOC: &str = include_str!("../../../../docs/metrics.md");
    let defaults = series_bound(&MetricsOptions::default(), Counter::COUNT as usize, 0);
    assert!(
        DOC.contains(&format!("{defaults} + 3·P")),
        "docs/metrics.md must state the bound at the defaults, {defaults} + 3·P"
    );
}

#[test]
fn output_is_valid_exposition_within_the_bound() {
    let mut fuzzed = full_report();
    for (i, c) in fuzzed.callers.iter_mut().enumerate() {
        c.function = format!("f{i}{{\"}}=,\\n\t😀");
    }
    let cases = [
        ("full", full_report(), full_options()),
        ("full, defaults", full_report(), MetricsOptions::default()),
        (
            "sample",
            sample_report(&[(Counter::AllocsSeen, 5)], 3),
            MetricsOptions::default(),
        ),
        ("empty", Report::default(), MetricsOptions::default()),
        (
            "top 0",
            full_report(),
            MetricsOptions {
                top_callers: 0,
                top_pods: 0,
                top_cgroups: 0,
                top_growing: 0,
                ..MetricsOptions::default()
            },
        ),
        ("odd labels", fuzzed, full_options()),
    ];
    for (what, report, opts) in cases {
        let (_, samples) = parsed(&report, &opts);
        let bound = series_bound(&opts, report.counters.len(), report.programs.len());
        assert!(
            samples.len() <= bound,
            "{what}: {} series, bound {bound}",
            samples.len()
        );
        assert!(samples.iter().all(|s| s.value.is_finite()), "{what}");
        assert!(
            samples.iter().all(|s| s.name.starts_with("memtrace_")),
            "{what}"
        );
    }
}

#[test]
fn sums_stay_exact_and_top_lists_are_bounded() {
    let r = full_report();
    let opts = full_options();
    let (_, samples) = parsed(&r, &opts);
    assert_eq!(
        sum(&samples, "memtrace_outstanding_bytes") as u64,
        r.totals.bytes
    );
    assert_eq!(
        sum(&samples, "memtrace_outstanding_allocations") as u64,
        r.totals.allocations
    );
    assert_eq!(
        sum(&samples, "memtrace_allocated_bytes_total") as u64,
        r.totals.allocated_bytes
    );
    assert_eq!(
        sum(&samples, "memtrace_allocations_total") as u64,
        r.totals.allocated_count
    );
    // The backing pages are outside the totals, and listed on their own.
    let backing = series(&samples, "memtrace_backing_outstanding_bytes");
    let classes: BTreeSet<&str> = backing.iter().filter_map(|s| s.label("class")).collect();
    assert_eq!(classes, BTreeSet::from(["slab-backing", "vmalloc-backing"]));
    assert!(series(&samples, "memtrace_outstanding_bytes")
        .iter()
        .all(|s| !s
            .label("class")
            .is_some_and(|c| c.ends_with("-backing") && c != "percpu-backing")));

    let callers = series(&samples, "memtrace_caller_outstanding_bytes");
    assert_eq!(callers.len(), opts.top_callers + 1);
    assert_eq!(callers.last().and_then(|s| s.label("caller")), Some(OTHER));
    let caller_total: u64 = r.callers.iter().map(|c| c.bytes).sum();
    assert_eq!(
        sum(&samples, "memtrace_caller_outstanding_bytes") as u64,
        caller_total
    );
    // The odd name survived escaping.
    assert!(callers
        .iter()
        .any(|s| s.label("caller") == Some("odd \"name\" with \\ and\nnewline")));

    let pods = series(&samples, "memtrace_pod_outstanding_bytes");
    assert_eq!(pods.len(), opts.top_pods + 1);
    assert_eq!(
        pods[0].label("uid"),
        Some("00000000-aaaa-bbbb-cccc-dddddddddddd")
    );
    assert_eq!(pods[0].value as u64, 12 * 4096);
    let other = pods.last().expect("other");
    assert_eq!(other.label("uid"), Some(OTHER));
    assert_eq!(other.value as u64, (1..=7).sum::<u64>() * 4096);
    assert_eq!(
        sum(&samples, "memtrace_pod_outstanding_bytes") as u64,
        r.owners.pods.iter().map(|p| p.bytes).sum::<u64>()
    );

    let cgroups = series(&samples, "memtrace_cgroup_outstanding_bytes");
    let by_label: BTreeMap<&str, u64> = cgroups
        .iter()
        .map(|s| (s.label("cgroup").unwrap_or_default(), s.value as u64))
        .collect();
    assert_eq!(
        by_label,
        BTreeMap::from([
            ("/system.slice/sshd.service", 12288),
            ("[id 11]", 4096),
            (OTHER, 0)
        ])
    );

    assert_eq!(sum(&samples, "memtrace_growing_stacks"), 2.0);
    let growing = series(&samples, "memtrace_growing_stack_growth_bytes_per_second");
    assert_eq!(growing.len(), 1, "top_growing 1");
    assert_eq!(growing[0].value, 8192.5);
    let fastest = r
        .stacks
        .iter()
        .find(|s| s.growth.as_ref().is_some_and(|g| g.bytes_per_sec == 8192.5))
        .expect("fastest counted stack");
    assert_eq!(
        growing[0].label("stack_id"),
        fastest.stack_id.map(|id| id.to_string()).as_deref()
    );
    let growing_bytes: u64 = r
        .stacks
        .iter()
        .filter(|s| s.growth.as_ref().is_some_and(|g| g.growing))
        .filter(|s| class_in_total(&r.classes, s.class))
        .map(|s| s.bytes)
        .sum();
    assert_eq!(
        sum(&samples, "memtrace_growing_outstanding_bytes") as u64,
        growing_bytes
    );

    // Every counter, with the failure flag of the report.
    let events = series(&samples, "memtrace_events_total");
    assert_eq!(events.len(), Counter::COUNT as usize);
    for c in Counter::ALL {
        let s = events
            .iter()
            .find(|s| s.label("counter") == Some(c.name()))
            .unwrap_or_else(|| panic!("{} missing", c.name()));
        assert_eq!(
            s.label("failure"),
            Some(if c.is_failure() { "true" } else { "false" })
        );
        assert_eq!(s.value as u64, c as u64 * 3);
    }
    let misses = series(&samples, "memtrace_program_recursion_misses_total");
    assert_eq!(misses.len(), 2, "kfree loaded twice is one series");
    assert!(misses
        .iter()
        .any(|s| s.label("program") == Some("kfree") && s.value == 8.0));
    assert_eq!(
        series(&samples, "memtrace_program_run_time_seconds_total")[0].value,
        0.0025
    );

    let single = |name: &str| {
        let s = series(&samples, name);
        assert_eq!(s.len(), 1, "{name}");
        s[0].value
    };
    assert_eq!(
        single("memtrace_bpf_map_memory_bytes"),
        (114u64 << 20) as f64
    );
    assert_eq!(
        single("memtrace_snapshot_timestamp_seconds"),
        1_700_000_060.5
    );
    assert_eq!(single("memtrace_sample_every"), 1.0);
    let info = series(&samples, "memtrace_info");
    assert_eq!(info[0].label("version"), Some(env!("CARGO_PKG_VERSION")));
    let traced: BTreeMap<&str, f64> = series(&samples, "memtrace_kind_traced")
        .iter()
        .map(|s| (s.label("kind").unwrap_or_default(), s.value))
        .collect();
    assert_eq!(
        traced,
        BTreeMap::from([
            ("page", 1.0),
            ("percpu", 0.0),
            ("slab", 1.0),
            ("vmalloc", 1.0)
        ])
    );
    let entries = series(&samples, "memtrace_table_entries");
    assert_eq!(entries.len(), 3);
}

#[test]
fn optional_families_and_empty_reports() {
    let (families, samples) = parsed(&Report::default(), &MetricsOptions::default());
    // No table fill given, nothing growing, no kinds: those families are left out; the top
    // lists still carry their [other] series, so a sum over them is always defined.
    assert!(!families.contains_key("memtrace_table_entries"));
    assert!(!families.contains_key("memtrace_growing_stack_outstanding_bytes"));
    assert!(!families.contains_key("memtrace_kind_traced"));
    for name in [
        "memtrace_caller_outstanding_bytes",
        "memtrace_pod_outstanding_bytes",
        "memtrace_cgroup_outstanding_bytes",
    ] {
        let s = series(&samples, name);
        assert_eq!(s.len(), 1, "{name}");
        assert_eq!(s[0].value, 0.0);
    }
    assert_eq!(sum(&samples, "memtrace_growing_stacks"), 0.0);
    // Sampling: the rate is exported; the figures are the report's (already scaled).
    let mut r = sample_report(&[], 0);
    r.session.sample_every = 8;
    let (_, samples) = parsed(&r, &MetricsOptions::default());
    assert_eq!(sum(&samples, "memtrace_sample_every"), 8.0);
    assert_eq!(
        sum(&samples, "memtrace_outstanding_bytes") as u64,
        r.totals.bytes
    );
    let (_, samples) = parsed(
        &r,
        &MetricsOptions {
            sample_every: Some(4),
            ..MetricsOptions::default()
        },
    );
    assert_eq!(sum(&samples, "memtrace_sample_every"), 4.0);
}

#[test]
fn output_is_deterministic() {
    let a = render(&full_report(), &full_options());
    let b = render(&full_report(), &full_options());
    assert_eq!(a, b);
    assert!(a.contains("# TYPE memtrace_events_total counter\n"), "{a}");
    assert!(a.contains("# TYPE memtrace_outstanding_bytes gauge\n"));
}

#[test]
fn top_lists() {
    let items = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(l, b)| (l.to_string(), *b)).collect()
    };
    assert_eq!(
        top_with_other(
            items(&[("b", 5), ("a", 5), ("c", 9), ("d", 0), ("b", 1)]),
            2
        ),
        items(&[("c", 9), ("b", 6), (OTHER, 5)])
    );
    assert_eq!(
        top_with_other(items(&[("a", 0), ("b", 0)]), 10),
        items(&[(OTHER, 0)])
    );
    assert_eq!(top_with_other(items(&[("a", 3)]), 0), items(&[(OTHER, 3)]));
    assert_eq!(
        top_with_other(items(&[("a", u64::MAX), ("b", 2), ("c", 3)]), 1),
        items(&[("a", u64::MAX), (OTHER, 5)])
    );
}

/// `promtool check metrics` (Prometheus's own parser and linter) accepts the output.
#[test]
fn promtool_accepts_the_output() {
    let promtool = std::env::var_os("MEMTRACE_PROMTOOL")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|d| d.join("promtool"))
                .find(|p| p.is_file())
        });
    let Some(promtool) = promtool else {
        eprintln!(
            "\n==================================================================\n\
             SKIPPED promtool_accepts_the_output: promtool not found (MEMTRACE_PROMTOOL unset, \
             none in PATH), so the metrics were NOT checked by Prometheus's own parser and \
             linter. `cargo xtask test` installs Debian's prometheus package and sets \
             MEMTRACE_PROMTOOL.\n\
             ==================================================================\n"
        );
        return;
    };
    for (what, report, opts) in [
        ("full", full_report(), full_options()),
        ("empty", Report::default(), MetricsOptions::default()),
    ] {
        let text = render(&report, &opts);
        let mut child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write to promtool");
        let out = child.wait_with_output().expect("promtool output");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "promtool check metrics rejected the {what} output ({}):\n{said}\n{text}",
            out.status
        );
    }
}
