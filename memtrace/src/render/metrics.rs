//! Prometheus exposition of a report (text format 0.0.4, encoded by `prometheus-client`), for
//! `memtrace serve`'s `/metrics`. Every metric, its labels and the bound on the number of
//! series are documented in `docs/metrics.md`, which `tests::every_metric_is_documented` keeps
//! complete.
//!
//! Conventions:
//!
//! - names start with `memtrace_` and carry their unit (`_bytes`, `_seconds`);
//! - counters (monotonic within a session, and across the snapshots of `memtrace serve`) end in
//!   `_total`; outstanding memory and everything else that can go down are gauges;
//! - bytes and allocations are the report's: with `--sample N` already multiplied by N
//!   (`memtrace_sample_every` says so); event counters are never scaled;
//! - the series are bounded: per-caller, per-pod, per-cgroup and per-growing-stack metrics
//!   list the top N by outstanding bytes (growth rate for the growing stacks) and sum the rest
//!   under the label value [`OTHER`], so sums over a metric stay exact ([`series_bound`]);
//! - the output is deterministic: families and series in a fixed order.

use std::collections::HashMap;

use prometheus_client::{
    collector::Collector,
    encoding::{prometheus_text, DescriptorEncoder, EncodeMetric as _},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};

use crate::model::{summaries::class_in_total, Class, Report};

/// `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Label value under which everything beyond the top N is summed (brackets: no kernel symbol,
/// pod UID or cgroup path looks like it).
pub const OTHER: &str = "[other]";

/// Kinds a session can trace (`memtrace_kind_traced`, and the `kind` label).
#[cfg(test)]
const KINDS: usize = 4;
/// The three tables whose capacity (and fill) is exported.
#[cfg(test)]
const TABLES: usize = 3;
/// Series of the families without a per-item label: info, start time, snapshot time, sample
/// rate, BPF map memory, the growing-stack count and bytes, and the eight housekeeping series
/// (stacks retired, rotation races and failures, retired stacks kept and folded, cgroups
/// expired, owners recycled, owner table used).
#[cfg(test)]
const SINGLE_SERIES: usize = 17;

/// What the metrics renderer needs beyond the report.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsOptions {
    /// Calling functions listed by `memtrace_caller_outstanding_bytes` (the rest: [`OTHER`]).
    pub top_callers: usize,
    /// Pods listed by `memtrace_pod_outstanding_bytes`.
    pub top_pods: usize,
    /// cgroups listed by `memtrace_cgroup_outstanding_bytes`.
    pub top_cgroups: usize,
    /// Growing stacks listed by the `memtrace_growing_stack_*` metrics (fastest first).
    pub top_growing: usize,
    /// Kernel memory of the BPF maps, when measured again (else `session.map_memory_bytes`).
    pub bpf_map_bytes: Option<u64>,
    /// The sampling rate, when the report does not carry it (else `session.sample_every`).
    pub sample_every: Option<u32>,
    /// Entries in the kernel tables at the snapshot (`memtrace_table_entries`; not exported
    /// when `None`).
    pub table_entries: Option<TableEntries>,
    /// When the snapshot was taken, unix seconds (else `started_at_unix + duration_secs`).
    pub snapshot_unix: Option<f64>,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions {
            top_callers: 10,
            top_pods: 10,
            top_cgroups: 10,
            top_growing: 10,
            bpf_map_bytes: None,
            sample_every: None,
            table_entries: None,
            snapshot_unix: None,
        }
    }
}

/// Entries in use in the in-kernel tables at a snapshot (what the collector read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableEntries {
    /// Page table entries set (outstanding traced pages), out of the page table's entries
    /// (`session.max_allocations`).
    pub allocations: u64,
    /// Slab/percpu/vmalloc object records (`OBJECTS`), out of `--max-objects`.
    pub objects: u64,
    /// Stacks (`STACKS` and its second table), out of `--max-stacks` (plus a quarter).
    pub stacks: u64,
}

/// The most series [`render_metrics`] emits with these options, for a report with `counters`
/// event counters (`Counter::COUNT`) and `programs` loaded programs (`docs/metrics.md`):
///
/// `7 + K + 2·T + 4·K·C + B + (Nc+1) + (Np+1) + (Ng+1) + 2·Ns + counters + 3·programs`
///
/// with K = 4 kinds, T = 3 tables, C = 10 classes, B = 3 backing classes and the N the top
/// sizes of the options.
#[cfg(test)]
pub fn series_bound(opts: &MetricsOptions, counters: usize, programs: usize) -> usize {
    let backing = Class::ALL.iter().filter(|c| c.backs().is_some()).count();
    SINGLE_SERIES
        + KINDS
        + 2 * TABLES
        + 4 * KINDS * Class::ALL.len()
        + backing
        + (opts.top_callers + 1)
        + (opts.top_pods + 1)
        + (opts.top_cgroups + 1)
        + 2 * opts.top_growing
        + counters
        + 3 * programs
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Value {
    Int(u64),
    Float(f64),
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: descriptor and series, in output order.
#[derive(Clone, Debug)]
struct Family {
    /// The name without the `_total` that the encoder appends to counters.
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    series: Vec<(Labels, Value)>,
}

impl Family {
    fn gauge(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind: MetricType::Gauge,
            series: Vec::new(),
        }
    }

    fn counter(name: &'static str, help: &'static str) -> Self {
        debug_assert!(!name.ends_with("_total"), "the encoder appends _total");
        Family {
            name,
            help,
            kind: MetricType::Counter,
            series: Vec::new(),
        }
    }

    fn push(&mut self, labels: Labels, value: Value) {
        self.series.push((labels, value));
    }

    fn with(mut self, labels: Labels, value: Value) -> Self {
        self.push(labels, value);
        self
    }
}

/// The report's metrics as the Prometheus text format (version 0.0.4).
pub fn render_metrics(report: &Report, opts: &MetricsOptions) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Families(families(report, opts))));
    let mut out = String::new();
    prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct Families(Vec<Family>);

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in self.0.iter().filter(|f| !f.series.is_empty()) {
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            for (labels, value) in &family.series {
                let series = metric.encode_family(labels)?;
                match (family.kind, *value) {
                    (MetricType::Counter, Value::Int(v)) => ConstCounter::new(v).encode(series)?,
                    (MetricType::Counter, Value::Float(v)) => {
                        ConstCounter::new(v).encode(series)?
                    }
                    (_, Value::Int(v)) => ConstGauge::new(v).encode(series)?,
                    (_, Value::Float(v)) => ConstGauge::new(v).encode(series)?,
                }
            }
        }
        Ok(())
    }
}

fn int(v: u64) -> Value {
    Value::Int(v)
}

/// The top `n` of `(label, bytes)` by bytes (ties by label), items with 0 bytes never listed,
/// equal labels merged first; then [`OTHER`] with the sum of the rest (always present).
fn top_with_other(items: impl IntoIterator<Item = (String, u64)>, n: usize) -> Vec<(String, u64)> {
    let mut merged: HashMap<String, u64> = HashMap::new();
    for (label, bytes) in items {
        let slot = merged.entry(label).or_default();
        *slot = slot.saturating_add(bytes);
    }
    let mut sorted: Vec<(String, u64)> = merged.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let listed = sorted.iter().take(n).take_while(|(_, b)| *b > 0).count();
    let other: u64 = sorted[listed..]
        .iter()
        .fold(0u64, |sum, (_, b)| sum.saturating_add(*b));
    sorted.truncate(listed);
    sorted.push((OTHER.to_string(), other));
    sorted
}

fn families(report: &Report, opts: &MetricsOptions) -> Vec<Family> {
    let s = &report.session;
    let snapshot_unix = opts
        .snapshot_unix
        .unwrap_or(s.started_at_unix + s.duration_secs);
    let sample_every = u64::from(opts.sample_every.unwrap_or(s.sample_every).max(1));
    let mut out =
        vec![
        Family::gauge(
            "memtrace_info",
            "Always 1: the memtrace version, the kernel release and the host name the session \
             runs on.",
        )
        .with(
            vec![
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("kernel", s.kernel.clone()),
                ("host", s.hostname.clone()),
            ],
            int(1),
        ),
        Family::gauge(
            "memtrace_session_start_time_seconds",
            "When the tracing session started, unix time.",
        )
        .with(vec![], Value::Float(s.started_at_unix)),
        Family::gauge(
            "memtrace_snapshot_timestamp_seconds",
            "When the kernel tables behind these figures were read, unix time.",
        )
        .with(vec![], Value::Float(snapshot_unix)),
        Family::gauge(
            "memtrace_sample_every",
            "One allocation in N is recorded; byte and allocation figures are already multiplied \
             by N (estimates when N > 1).",
        )
        .with(vec![], int(sample_every)),
        Family::gauge(
            "memtrace_slab_sample_every",
            "Slab objects: one in N is recorded (by address hash) and the slab figures are \
             already multiplied by N. Starts at --slab-sample and doubles whenever the object \
             table nears full.",
        )
        .with(vec![], int(u64::from(s.slab_sample_every.max(1)))),
        Family::counter(
            "memtrace_slab_rate_changes",
            "Times the slab sampling rate doubled because the object table neared full.",
        )
        .with(vec![], int(s.slab_rate_changes.len() as u64)),
        Family::gauge(
            "memtrace_bpf_map_memory_bytes",
            "Kernel memory taken by memtrace's own BPF maps (their memlock).",
        )
        .with(vec![], int(opts.bpf_map_bytes.unwrap_or(s.map_memory_bytes))),
    ];
    let mut capacity = Family::gauge(
        "memtrace_table_capacity",
        "Capacity of the in-kernel tables: allocations (page table entries, one per page of \
         RAM; never full), objects (--max-objects), stacks (--max-stacks as applied).",
    );
    for (table, v) in [
        ("allocations", u64::from(s.max_allocations)),
        ("objects", u64::from(s.max_objects)),
        ("stacks", u64::from(s.max_stacks)),
    ] {
        capacity.push(vec![("table", table.to_string())], int(v));
    }
    out.push(capacity);
    let mut entries = Family::gauge(
        "memtrace_table_entries",
        "Entries in use in the in-kernel tables when the snapshot was read.",
    );
    if let Some(t) = opts.table_entries {
        for (table, v) in [
            ("allocations", t.allocations),
            ("objects", t.objects),
            ("stacks", t.stacks),
        ] {
            entries.push(vec![("table", table.to_string())], int(v));
        }
    }
    out.push(entries);
    let mut traced = Family::gauge(
        "memtrace_kind_traced",
        "1 when the kind of allocation (page, slab, percpu, vmalloc) is traced, 0 when it was \
         asked for but skipped (the report's session.kinds[].note says why).",
    );
    for k in &s.kinds {
        traced.push(vec![("kind", k.kind.clone())], int(u64::from(k.traced)));
    }
    out.push(traced);

    out.extend(kind_class_families(report));
    out.push(caller_family(report, opts.top_callers));
    out.push(pod_family(report, opts.top_pods));
    out.push(cgroup_family(report, opts.top_cgroups));
    out.extend(growing_families(report, opts.top_growing));
    out.extend(counter_families(report));
    out
}

/// Outstanding and allocated memory by kind and class (over the stacks the totals count), and
/// the backing pages left out of them.
fn kind_class_families(report: &Report) -> Vec<Family> {
    #[derive(Default, Clone, Copy)]
    struct Sums {
        bytes: u64,
        allocations: u64,
        allocated_bytes: u64,
        allocated_count: u64,
    }
    let mut counted: Vec<((usize, Class), Sums)> = Vec::new();
    let mut backing: Vec<(Class, u64)> = Vec::new();
    for st in &report.stacks {
        if class_in_total(&report.classes, st.class) {
            let key = (st.kind as usize, st.class);
            let at = match counted.iter().position(|(k, _)| *k == key) {
                Some(at) => at,
                None => {
                    counted.push((key, Sums::default()));
                    counted.len() - 1
                }
            };
            let sums = &mut counted[at].1;
            sums.bytes = sums.bytes.saturating_add(st.bytes);
            sums.allocations = sums.allocations.saturating_add(st.allocations);
            sums.allocated_bytes = sums.allocated_bytes.saturating_add(st.allocated_bytes);
            sums.allocated_count = sums.allocated_count.saturating_add(st.allocated_count);
        } else {
            match backing.iter_mut().find(|(c, _)| *c == st.class) {
                Some((_, b)) => *b = b.saturating_add(st.bytes),
                None => backing.push((st.class, st.bytes)),
            }
        }
    }
    counted.sort_by_key(|((kind, class), _)| (*kind, *class));
    backing.sort_by_key(|(c, _)| *c);
    let kind_name = |k: usize| {
        memtrace_common::Kind::ALL
            .get(k)
            .map_or("unknown", |k| k.name())
    };
    let labels = |(kind, class): (usize, Class)| -> Labels {
        vec![
            ("kind", kind_name(kind).to_string()),
            ("class", class.name().to_string()),
        ]
    };
    let mut outstanding = Family::gauge(
        "memtrace_outstanding_bytes",
        "Bytes allocated during the session and still not freed, by allocator kind and class \
         (only classes counted in the totals: the sum over all series is the report's total).",
    );
    let mut outstanding_n = Family::gauge(
        "memtrace_outstanding_allocations",
        "Allocations made during the session and still not freed, by kind and class.",
    );
    let mut allocated = Family::counter(
        "memtrace_allocated_bytes",
        "Bytes allocated since the session started, freed or not, by kind and class.",
    );
    let mut allocated_n = Family::counter(
        "memtrace_allocations",
        "Allocations made since the session started, freed or not, by kind and class.",
    );
    for (key, sums) in counted {
        outstanding.push(labels(key), int(sums.bytes));
        outstanding_n.push(labels(key), int(sums.allocations));
        allocated.push(labels(key), int(sums.allocated_bytes));
        allocated_n.push(labels(key), int(sums.allocated_count));
    }
    let mut backing_family = Family::gauge(
        "memtrace_backing_outstanding_bytes",
        "Outstanding pages that back slab, vmalloc or percpu allocations whose own kind is \
         traced too: already counted as those objects in memtrace_outstanding_bytes, shown \
         for the page-level overhead.",
    );
    for (class, bytes) in backing {
        backing_family.push(vec![("class", class.name().to_string())], int(bytes));
    }
    vec![
        outstanding,
        outstanding_n,
        allocated,
        allocated_n,
        backing_family,
    ]
}

fn caller_family(report: &Report, top: usize) -> Family {
    let mut f = Family::gauge(
        "memtrace_caller_outstanding_bytes",
        "Outstanding bytes by calling function (first frame that is not an allocator internal), \
         the top N; caller=\"[other]\" sums the rest.",
    );
    for (caller, bytes) in top_with_other(
        report.callers.iter().map(|c| (c.function.clone(), c.bytes)),
        top,
    ) {
        f.push(vec![("caller", caller)], int(bytes));
    }
    f
}

fn pod_family(report: &Report, top: usize) -> Family {
    let mut f = Family::gauge(
        "memtrace_pod_outstanding_bytes",
        "Outstanding bytes allocated by the processes of a Kubernetes pod (by pod UID), the top \
         N; uid=\"[other]\" sums the other pods.",
    );
    for (uid, bytes) in top_with_other(
        report
            .owners
            .pods
            .iter()
            .map(|p| (p.pod_uid.clone(), p.bytes)),
        top,
    ) {
        f.push(vec![("uid", uid)], int(bytes));
    }
    f
}

fn cgroup_family(report: &Report, top: usize) -> Family {
    let mut f = Family::gauge(
        "memtrace_cgroup_outstanding_bytes",
        "Outstanding bytes allocated by the tasks of a cgroup v2 (its path; [id N] when it \
         could not be resolved), the top N; cgroup=\"[other]\" sums the other cgroups.",
    );
    for (cgroup, bytes) in top_with_other(
        report.owners.cgroups.iter().map(|c| {
            let label = c
                .path
                .clone()
                .unwrap_or_else(|| format!("[id {}]", c.cgroup_id));
            (label, c.bytes)
        }),
        top,
    ) {
        f.push(vec![("cgroup", cgroup)], int(bytes));
    }
    f
}

fn growing_families(report: &Report, top: usize) -> Vec<Family> {
    // Over the stacks the totals count (a growing slab's backing pages would count it twice).
    let mut growing: Vec<(&crate::model::StackReport, f64)> = report
        .stacks
        .iter()
        .filter(|s| class_in_total(&report.classes, s.class))
        .filter_map(|s| {
            s.growth
                .as_ref()
                .filter(|g| g.growing)
                .map(|g| (s, g.bytes_per_sec))
        })
        .collect();
    let count = Family::gauge(
        "memtrace_growing_stacks",
        "Stacks whose outstanding bytes grew steadily across the snapshots (the leak signal), \
         among the stacks counted in the totals.",
    )
    .with(vec![], int(growing.len() as u64));
    let bytes = Family::gauge(
        "memtrace_growing_outstanding_bytes",
        "Outstanding bytes held by the growing stacks.",
    )
    .with(
        vec![],
        int(growing
            .iter()
            .fold(0u64, |sum, (s, _)| sum.saturating_add(s.bytes))),
    );
    growing.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then_with(|| b.0.bytes.cmp(&a.0.bytes))
            .then_with(|| (a.0.kind as usize, a.0.stack_id).cmp(&(b.0.kind as usize, b.0.stack_id)))
    });
    let mut held = Family::gauge(
        "memtrace_growing_stack_outstanding_bytes",
        "Outstanding bytes of a growing stack, the N growing fastest (stack_id is valid within \
         the session: look it up in /report.json).",
    );
    let mut rate = Family::gauge(
        "memtrace_growing_stack_growth_bytes_per_second",
        "Growth rate of a growing stack's outstanding bytes (least-squares slope across the \
         snapshots), the N growing fastest.",
    );
    for (s, slope) in growing.into_iter().take(top) {
        let labels = vec![
            ("kind", s.kind.name().to_string()),
            (
                "stack_id",
                s.stack_id
                    .map_or_else(|| "none".to_string(), |id| id.to_string()),
            ),
            ("caller", s.caller.clone()),
        ];
        held.push(labels.clone(), int(s.bytes));
        rate.push(labels, Value::Float(slope));
    }
    vec![count, bytes, held, rate]
}

fn counter_families(report: &Report) -> Vec<Family> {
    let mut events = Family::counter(
        "memtrace_events",
        "Every event counter of the session, summed over CPUs, never scaled by sampling \
         (names and meanings: docs/json-schema.md, counters); failure=\"true\" for the \
         counters whose non-zero value means lost or approximate information.",
    );
    for (name, value) in &report.counters {
        let failure = report.failure_counters.contains(name);
        events.push(
            vec![
                ("counter", (*name).to_string()),
                ("failure", failure.to_string()),
            ],
            int(*value),
        );
    }
    let rot = &report.session.stack_rotation;
    let housekeeping = [
        Family::counter(
            "memtrace_stacks_retired",
            "Idle stack slots deleted from the kernel's stack maps so that new stacks fit (long \
             sessions; their allocated totals are kept under their frames).",
        )
        .with(vec![], int(rot.stacks_retired)),
        Family::counter(
            "memtrace_stack_rotation_races",
            "Retired stack slots an allocation reached between the snapshot and the deletion: \
             that allocation may be shown under the next stack of its bucket.",
        )
        .with(vec![], int(rot.races)),
        Family::counter(
            "memtrace_stack_rotation_failures",
            "Stack table rotations that failed (the maps were left as they were).",
        )
        .with(vec![], int(rot.failures)),
        Family::gauge(
            "memtrace_retired_stacks",
            "Retired stacks whose allocated totals are kept with their frames (bounded).",
        )
        .with(vec![], int(rot.retired_kept)),
        Family::counter(
            "memtrace_retired_stacks_folded",
            "Retirements past the bound on retired stacks, folded into one frameless stack per \
             kind.",
        )
        .with(vec![], int(rot.folded)),
        Family::counter(
            "memtrace_cgroups_expired",
            "Removed cgroups the cgroup index forgot (nothing of theirs outstanding).",
        )
        .with(vec![], int(report.session.cgroups_expired)),
        Family::counter(
            "memtrace_owners_recycled",
            "Owner table indices (an owner: thread, name and cgroup of page allocations) given \
             back for new owners once no page referred to them.",
        )
        .with(vec![], int(report.session.owner_recycling.recycled)),
        Family::gauge(
            "memtrace_owner_table_used",
            "Owner table indices holding an owner (of 65535 by default); near that, new owners \
             are counted under [other owners] (owner_table_full).",
        )
        .with(vec![], int(report.session.owner_recycling.in_use)),
    ];
    let mut misses = Family::counter(
        "memtrace_program_recursion_misses",
        "Runs of a BPF program that did not happen because another BPF program was running on \
         that CPU: lost events (a missed free leaves a false leak until healed).",
    );
    let mut runs = Family::counter(
        "memtrace_program_runs",
        "Runs of a BPF program (only counted with kernel.bpf_stats_enabled=1).",
    );
    let mut time = Family::counter(
        "memtrace_program_run_time_seconds",
        "Time spent in a BPF program (only counted with kernel.bpf_stats_enabled=1).",
    );
    // One series per program name (a name loaded twice is summed).
    let mut programs: Vec<(&str, u64, u64, u64)> = Vec::new();
    for p in &report.programs {
        match programs.iter_mut().find(|(name, ..)| *name == p.name) {
            Some((_, m, r, t)) => {
                *m = m.saturating_add(p.recursion_misses);
                *r = r.saturating_add(p.run_count);
                *t = t.saturating_add(p.run_time_ns);
            }
            None => programs.push((&p.name, p.recursion_misses, p.run_count, p.run_time_ns)),
        }
    }
    for (name, recursion_misses, run_count, run_time_ns) in programs {
        let labels = vec![("program", name.to_string())];
        misses.push(labels.clone(), int(recursion_misses));
        runs.push(labels.clone(), int(run_count));
        time.push(labels, Value::Float(run_time_ns as f64 / 1e9));
    }
    let mut out = vec![events];
    out.extend(housekeeping);
    out.extend([misses, runs, time]);
    out
}

#[cfg(test)]
mod tests;
