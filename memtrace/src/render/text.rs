//! The human report: header, totals, counters and warnings, classes table, callers table,
//! top stacks.

use std::fmt::Write as _;

use memtrace_common::{programs, Counter, Kind};

use super::RenderOptions;
use crate::model::growth::Snapshot;
use crate::model::summaries::{class_in_total, excluded_from_totals, stack_class_detail};
use crate::model::{
    Class, Frame, Owner, OwnerRecyclingStats, ProgramStats, Report, SessionInfo, StackReport,
    StackRotationStats,
};
use crate::units::{format_bytes, format_duration, format_unix_utc};

/// `writeln!` into a `String` (which cannot fail).
macro_rules! line {
    ($out:expr) => {{
        $out.push('\n');
    }};
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

/// Width the counters line is wrapped at.
const COUNTERS_WIDTH: usize = 96;

/// Renders the whole text report. `opts.top` bounds the callers table and the detailed stacks
/// (0 means no bound).
pub fn render_text(report: &Report, opts: &RenderOptions) -> String {
    let top = if opts.top == 0 { usize::MAX } else { opts.top };
    let mut out = String::new();
    header(&mut out, report);
    line!(out);
    totals(&mut out, report);
    line!(out);
    counters(&mut out, report);
    programs(&mut out, &report.programs);
    if !report.classes.is_empty() {
        line!(out);
        classes(&mut out, report);
    }
    if !report.callers.is_empty() {
        line!(out);
        callers(&mut out, report, top);
    }
    owner_tables(&mut out, report, top);
    stacks(&mut out, report, top);
    sockets(&mut out, report);
    out
}

/// The sockets holding receive-queue memory at the end, when network stacks hold memory: the
/// usual place such memory sits (a process that stopped reading).
fn sockets(out: &mut String, r: &Report) {
    if r.sockets.is_empty() {
        return;
    }
    let network: u64 = r
        .stacks
        .iter()
        .filter(|s| s.class == crate::model::Class::Network)
        .map(|s| s.bytes)
        .sum();
    line!(out);
    line!(
        out,
        "Network stacks hold {}. Sockets with the most receive-queue memory at the end (rmem_alloc; all sockets: `memtrace sockets`):",
        format_bytes(network)
    );
    out.push_str(&super::sockets::render_table(&r.sockets, 0));
}

/// A compact report taken while the session runs (`--interval`).
pub fn render_snapshot(s: &Snapshot) -> String {
    let mut out = String::new();
    line!(
        out,
        "[{}] snapshot: {} outstanding in {}",
        format_duration(s.at_secs),
        format_bytes(s.totals.bytes),
        allocs(s.totals.allocations)
    );
    let rows: Vec<Vec<String>> = s
        .stacks
        .iter()
        .map(|st| {
            vec![
                format_bytes(st.bytes),
                st.allocations.to_string(),
                st.kind.name().to_string(),
                st.class.name().to_string(),
                st.stack_id.map_or("-".into(), |i| i.to_string()),
                st.caller.clone(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        table(
            &mut out,
            &["BYTES", "ALLOCS", "KIND", "CLASS", "STACK", "CALLER"],
            &rows,
        );
    }
    out
}

/// `comm/pid (tgid)`, or `[softirq]` for an interrupt context, with cgroup/pod when known.
fn owner_text(o: &Owner) -> String {
    if o.context.is_interrupt() {
        return format!(
            "{} (allocated in interrupt context: charged to whichever task ran)",
            o.context.label()
        );
    }
    let mut t = format!("{}/{} ({})", o.comm, o.pid, o.tgid);
    if let Some(pod) = &o.pod_uid {
        let _ = write!(t, " pod {pod}");
        if let Some(c) = &o.container_id {
            let _ = write!(t, " container {}", short_id(c));
        }
    } else if let Some(cg) = &o.cgroup {
        let _ = write!(t, " cgroup {cg}");
    } else if o.cgroup_id != 0 {
        let _ = write!(t, " cgroup id {}", o.cgroup_id);
    }
    t
}

/// The first 12 characters of a container id, as `docker ps` / `crictl ps` show it.
fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Who holds the memory: by pod, by cgroup, by process.
fn owner_tables(out: &mut String, r: &Report, top: usize) {
    let o = &r.owners;
    if o.processes.is_empty() {
        return;
    }
    if !o.pods.is_empty() {
        line!(out);
        line!(
            out,
            "Outstanding by Kubernetes pod (top {} of {}):",
            o.pods.len().min(top),
            o.pods.len()
        );
        let rows: Vec<Vec<String>> = o
            .pods
            .iter()
            .take(top)
            .map(|p| {
                vec![
                    format_bytes(p.bytes),
                    p.allocations.to_string(),
                    p.qos.clone().unwrap_or_else(|| "-".into()),
                    p.containers
                        .iter()
                        .map(|c| short_id(c))
                        .collect::<Vec<_>>()
                        .join(","),
                    p.pod_uid.clone(),
                ]
            })
            .collect();
        table(
            out,
            &["BYTES", "ALLOCS", "QOS", "CONTAINERS", "POD UID"],
            &rows,
        );
    }
    let cgroups: Vec<_> = o.cgroups.iter().filter(|c| c.bytes > 0).collect();
    if !cgroups.is_empty() {
        line!(out);
        line!(
            out,
            "Outstanding by cgroup (top {} of {}):",
            cgroups.len().min(top),
            cgroups.len()
        );
        let rows: Vec<Vec<String>> = cgroups
            .iter()
            .take(top)
            .map(|c| {
                vec![
                    format_bytes(c.bytes),
                    c.allocations.to_string(),
                    c.path
                        .clone()
                        .unwrap_or_else(|| format!("[id {} gone]", c.cgroup_id)),
                ]
            })
            .collect();
        table(out, &["BYTES", "ALLOCS", "CGROUP"], &rows);
    }
    let procs: Vec<_> = o.processes.iter().filter(|p| p.bytes > 0).collect();
    if procs.is_empty() {
        return;
    }
    line!(out);
    line!(
        out,
        "Outstanding by process (top {} of {}):",
        procs.len().min(top),
        procs.len()
    );
    let rows: Vec<Vec<String>> = procs
        .iter()
        .take(top)
        .map(|p| {
            let who = if p.context.is_interrupt() {
                format!("{} interrupt context", p.context.label())
            } else {
                let mut w = format!("{} ({})", p.comm, p.tgid);
                match (&p.cmdline, p.alive) {
                    (Some(c), _) => {
                        let c: String = c.chars().take(60).collect();
                        let _ = write!(w, " `{c}`");
                    }
                    (None, false) => w.push_str(" [exited]"),
                    (None, true) => {}
                }
                if let Some(pod) = &p.pod_uid {
                    let _ = write!(w, " pod {pod}");
                } else if let Some(cg) = p.cgroup.as_deref().or(p.memory_cgroup.as_deref()) {
                    let _ = write!(w, " cgroup {cg}");
                }
                w
            };
            vec![format_bytes(p.bytes), p.allocations.to_string(), who]
        })
        .collect();
    table(out, &["BYTES", "ALLOCS", "PROCESS"], &rows);
    if o.attributed_bytes < r.totals.bytes {
        line!(
            out,
            "  owners account for {} of {} outstanding (records lost or not yet old enough)",
            format_bytes(o.attributed_bytes),
            format_bytes(r.totals.bytes)
        );
    }
}

/// Whether the session traced pages only (or does not say: reports of page-only sessions).
fn pages_only(s: &SessionInfo) -> bool {
    s.kinds
        .iter()
        .filter(|k| k.traced)
        .all(|k| k.kind == Kind::Page.name())
}

/// What the session traced, for sentences: `page allocations` or `allocations`.
fn allocations_noun(s: &SessionInfo) -> &'static str {
    if pages_only(s) {
        "page allocations"
    } else {
        "allocations"
    }
}

/// How a backing class's kind names what it counts, for "counted as slab objects".
fn counted_as(class: Class) -> &'static str {
    match class.backs() {
        Some(Kind::Slab) => "counted as slab objects",
        Some(Kind::Vmalloc) => "counted as vmalloc areas",
        Some(Kind::Percpu) => "counted as percpu allocations",
        Some(Kind::Page) | None => "counted elsewhere",
    }
}

fn class_names(classes: &[Class]) -> String {
    classes
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn header(out: &mut String, r: &Report) {
    let s = &r.session;
    line!(out, "memtrace — outstanding kernel {}", allocations_noun(s));
    line!(out, "  host:       {}", s.hostname);
    line!(out, "  kernel:     {}", s.kernel);
    let started = if s.started_at_unix > 0.0 {
        format_unix_utc(s.started_at_unix)
    } else {
        "?".to_string()
    };
    line!(out, "  started:    {started}");
    let mut duration = format_duration(s.duration_secs);
    let mut notes = Vec::new();
    if s.requested_duration_secs > 0.0 {
        notes.push(format!(
            "requested {}",
            format_duration(s.requested_duration_secs)
        ));
    } else {
        notes.push("no time limit".to_string());
    }
    if s.ended_by == "running" {
        notes.push("still running: a snapshot".to_string());
    } else if !s.ended_by.is_empty() {
        notes.push(format!("ended by {}", s.ended_by));
    }
    let _ = write!(duration, " ({})", notes.join(", "));
    line!(out, "  duration:   {duration}");
    if s.min_age_secs > 0.0 {
        line!(
            out,
            "  min age:    {} (only allocations at least this old count as outstanding)",
            format_duration(s.min_age_secs)
        );
    }
    if s.kinds.is_empty() {
        if !s.hooks.is_empty() {
            line!(out, "  hooks:      {}", s.hooks.join(", "));
        }
    } else {
        line!(out, "  kinds:");
        let width = s
            .kinds
            .iter()
            .map(|k| k.kind.chars().count())
            .max()
            .unwrap_or(0);
        for k in &s.kinds {
            let mut text = if k.traced {
                let mut t = "traced".to_string();
                if !k.hooks.is_empty() {
                    let _ = write!(t, " ({})", k.hooks.join(", "));
                }
                if let Some(note) = &k.note {
                    let _ = write!(t, "; {note}");
                }
                t
            } else {
                match &k.note {
                    Some(note) => format!("skipped: {note}"),
                    None => "skipped".to_string(),
                }
            };
            text.insert_str(0, &format!("    {:<width$}  ", k.kind));
            line!(out, "{text}");
        }
    }
    if let Some(selected) = &r.class_filter {
        line!(
            out,
            "  classes:    {} (--class: totals, callers and stacks cover only these)",
            class_names(selected)
        );
    }
    line!(out, "  page size:  {} bytes", s.page_size);
    if s.map_memory_bytes > 0 {
        line!(
            out,
            "  tables:     {} page table entries, {} objects, {} stacks; kernel maps {:.1} MiB",
            s.max_allocations,
            s.max_objects,
            s.max_stacks,
            s.map_memory_bytes as f64 / (1024.0 * 1024.0)
        );
    }
    if !s.stack_rotation.is_empty() {
        line!(out, "  rotation:   {}", rotation_line(&s.stack_rotation));
    }
    if !s.owner_recycling.is_empty() {
        line!(out, "  owners:     {}", owners_line(&s.owner_recycling));
    }
    if s.cgroups_expired > 0 {
        line!(
            out,
            "  expired:    {} removed cgroups forgotten (nothing of theirs outstanding)",
            s.cgroups_expired
        );
    }
    if s.grace_secs > 0.0 {
        line!(
            out,
            "  grace:      {} at the end: frees matched, new allocations not recorded",
            format_duration(s.grace_secs)
        );
    }
    if let Some(note) = &s.grace_note {
        line!(out, "  grace:      {note}");
    }
    if s.interval_secs > 0.0 {
        line!(
            out,
            "  snapshots:  every {} ({} taken); GROWING = outstanding bytes grew steadily",
            format_duration(s.interval_secs),
            r.snapshots.len()
        );
    }
    if !s.filters.is_empty() {
        line!(
            out,
            "  only:       {} (process context only)",
            s.filters.join(", ")
        );
    }
    if let Some(note) = &s.cgroups_note {
        line!(out, "  cgroups:    {note}");
    }
    let slab_traced = s.kinds.iter().any(|k| k.traced && k.kind == "slab");
    let slab_own_rate = slab_traced && s.slab_sample_every.max(1) != s.sample_every.max(1);
    if s.sample_every > 1 {
        let what = if slab_own_rate {
            "page, percpu and vmalloc allocations: 1 in"
        } else {
            "1 allocation in"
        };
        line!(
            out,
            "  sampling:   {what} {n} recorded (by pfn / address hash); every byte and count \
             below is an ESTIMATE (recorded x {n})",
            n = s.sample_every
        );
    }
    if slab_own_rate && s.slab_sample_every > 1 {
        let changes = if s.slab_rate_changes.is_empty() {
            String::new()
        } else {
            let at: Vec<String> = s
                .slab_rate_changes
                .iter()
                .map(|c| format!("1 in {} at {}", c.every, format_duration(c.at_secs)))
                .collect();
            format!(
                "; started at 1 in {}, raised as the object table filled ({})",
                s.slab_sample_start.max(1),
                at.join(", ")
            )
        };
        line!(
            out,
            "  slab:       1 object in {n} recorded (by address hash){changes}; slab bytes and \
             counts are ESTIMATES (recorded x {n})",
            n = s.slab_sample_every
        );
    }
}

fn totals(out: &mut String, r: &Report) {
    let t = &r.totals;
    let older = if r.session.min_age_secs > 0.0 {
        format!(" older than {}", format_duration(r.session.min_age_secs))
    } else {
        String::new()
    };
    line!(
        out,
        "Outstanding{older}: {} ({} bytes) in {}",
        format_bytes(t.bytes),
        t.bytes,
        allocs(t.allocations)
    );
    let held = if t.allocated_bytes > 0 {
        format!(
            " — {} ({:.1}%) still held",
            format_bytes(t.bytes),
            t.bytes as f64 * 100.0 / t.allocated_bytes as f64
        )
    } else {
        String::new()
    };
    line!(
        out,
        "Allocated during session: {} ({} bytes) in {}{held}",
        format_bytes(t.allocated_bytes),
        t.allocated_bytes,
        allocs(t.allocated_count)
    );
    let excluded = excluded_from_totals(r);
    if !excluded.is_empty() {
        let items: Vec<String> = excluded
            .iter()
            .map(|c| {
                format!(
                    "{} {} ({})",
                    c.class.name(),
                    format_bytes(c.bytes),
                    counted_as(c.class)
                )
            })
            .collect();
        line!(
            out,
            "  Not in the totals, to count nothing twice: {}.",
            items.join(", ")
        );
    }
}

fn classes(out: &mut String, r: &Report) {
    let filtered = if r.class_filter.is_some() {
        " (before --class)"
    } else {
        ""
    };
    line!(out, "Outstanding by class{filtered}:");
    let rows: Vec<Vec<String>> = r
        .classes
        .iter()
        .map(|c| {
            let mut name = c.class.name().to_string();
            if !c.in_total {
                let _ = write!(name, " (not in total: {})", counted_as(c.class));
            }
            if r.class_filter
                .as_ref()
                .is_some_and(|sel| !sel.contains(&c.class))
            {
                name.push_str(" (not selected)");
            }
            vec![
                format_bytes(c.bytes),
                c.bytes.to_string(),
                c.allocations.to_string(),
                c.stacks.to_string(),
                name,
            ]
        })
        .collect();
    table(out, &["BYTES", "EXACT", "ALLOCS", "STACKS", "CLASS"], &rows);
}

fn counters(out: &mut String, r: &Report) {
    line!(out, "Counters:");
    let mut row = String::new();
    for (name, value) in &r.counters {
        let item = format!("{name}={value}");
        if !row.is_empty() && row.len() + 1 + item.len() > COUNTERS_WIDTH {
            line!(out, "  {row}");
            row.clear();
        }
        if !row.is_empty() {
            row.push(' ');
        }
        row.push_str(&item);
    }
    if !row.is_empty() {
        line!(out, "  {row}");
    }
    for (name, value) in &r.counters {
        if *value != 0 && r.failure_counters.contains(name) {
            line!(
                out,
                "WARNING: {name}={value}: {}",
                failure_explanation(name, *value, &r.session)
            );
        }
    }
}

/// What stack table rotation did, one line.
fn owners_line(o: &OwnerRecyclingStats) -> String {
    let mut line = format!(
        "{} owner indices recycled (owners with no page outstanding forgotten), {} reused; \
         {} of {} in use, {} waiting for a second snapshot",
        o.recycled, o.reused, o.in_use, o.capacity, o.quarantined
    );
    if o.failures > 0 {
        line.push_str(&format!(
            "; {} recycling steps failed ({})",
            o.failures,
            o.last_error.as_deref().unwrap_or("no error text")
        ));
    }
    line
}

fn rotation_line(r: &StackRotationStats) -> String {
    let mut line = format!(
        "{} idle stacks deleted from the stack maps in {} snapshots so that new stacks fit; \
         their allocated totals are kept ({} retired stacks)",
        r.stacks_retired, r.rotations, r.retired_kept
    );
    if r.folded > 0 {
        line.push_str(&format!(
            "; {} retirements past the bound folded into one frameless stack per kind",
            r.folded
        ));
    }
    if r.races > 0 {
        line.push_str(&format!(
            "; {} allocations raced a deletion and may be shown under the next stack of their \
             bucket",
            r.races
        ));
    }
    if r.failures > 0 {
        line.push_str(&format!(
            "; {} rotations failed ({})",
            r.failures,
            r.last_error.as_deref().unwrap_or("no error text")
        ));
    }
    line
}

/// What a non-zero failure counter means and what to do about it.
pub fn failure_explanation(name: &str, n: u64, s: &SessionInfo) -> String {
    let Some(counter) = Counter::ALL.iter().copied().find(|c| c.name() == name) else {
        return format!("{n} events lost information; the report is approximate");
    };
    match counter {
        Counter::OutstandingFull => format!(
            "{n} allocations were not recorded because their pages lie beyond the page table \
             ({} entries, sized from the memory present at the start: memory added since); \
             they are missing from the outstanding numbers (counted only as allocated).",
            s.max_allocations
        ),
        Counter::StaleReplaced => format!(
            "{n} frees were missed (BPF recursion protection or lost events) and their pages \
             were allocated again; the stale records were replaced and their bytes removed from \
             their stacks."
        ),
        Counter::StackIdEexist => format!(
            "{n} allocations' stacks collided with another stack in the stack map and were \
             counted under [stack unavailable]. Raise --max-stacks (currently {}).",
            s.max_stacks
        ),
        Counter::StackIdEnomem => format!(
            "{n} allocations' stacks did not fit in the full stack map and were counted under \
             [stack unavailable]. Raise --max-stacks (currently {}).",
            s.max_stacks
        ),
        Counter::StackIdOther => format!(
            "capturing the stack failed {n} times; those allocations were counted under \
             [stack unavailable]."
        ),
        Counter::AggMissing => format!(
            "{n} events named a stack slot outside the aggregate table (internal error); their \
             bytes are missing from the per-stack numbers. Please report this."
        ),
        Counter::ReadErrors => format!(
            "reading a tracepoint field failed {n} times (internal error); those allocations or \
             frees were dropped, so the report is approximate. Please report this."
        ),
        Counter::ObjectsFull => format!(
            "{n} slab/percpu/vmalloc allocations were not recorded because the object table was \
             full; they are missing from the outstanding numbers (counted only as allocated). \
             Raise --max-objects (currently {}).",
            s.max_objects
        ),
        Counter::ObjStaleReplaced => format!(
            "{n} object frees were missed (BPF recursion protection, lost events, or bulk frees \
             where this kernel does not let memtrace trace them: see the slab kind's note) and \
             their addresses were allocated again; the stale records were replaced and their \
             bytes removed from their stacks."
        ),
        Counter::ObjBulkTruncated => format!(
            "{n} objects freed in bulk batches too large for one eBPF run were not matched; they \
             stay listed until their addresses are allocated again."
        ),
        Counter::ObjFreesMissed => format!(
            "{n} slab frees were seen by neither of the twin free programs (each was skipped by \
             the kernel: the free interrupted both on their CPU); those objects stay listed \
             until their address is allocated again (obj_stale_records_replaced)."
        ),
        Counter::CacheNamesUnresolved => format!(
            "the slab cache of {n} stacks could not be read through their objects' slabs; those \
             stacks show no cache name (or the event's own name field where it has one)."
        ),
        Counter::OwnersFull => format!(
            "{n} page allocations were made by owners (thread, name, cgroup) beyond the owner \
             table's capacity; their bytes are right, but they are listed under [other owners]."
        ),
        _ => format!("{n} events lost information; the report is approximate."),
    }
}

fn programs(out: &mut String, programs: &[ProgramStats]) {
    if programs.is_empty() {
        return;
    }
    let items: Vec<String> = programs
        .iter()
        .map(|p| {
            let mut s = format!("{} recursion_misses={}", p.name, p.recursion_misses);
            if p.run_count > 0 {
                let _ = write!(
                    s,
                    " runs={} avg={}ns",
                    p.run_count,
                    p.run_time_ns / p.run_count
                );
            }
            s
        })
        .collect();
    line!(out, "Programs: {}", items.join(", "));
    for p in programs {
        if p.recursion_misses == 0 {
            continue;
        }
        let n = p.recursion_misses;
        if is_twin_free_program(&p.name) {
            line!(
                out,
                "note: program {} missed {n} runs (frees that interrupted it on its CPU), seen by \
                 its twin instead; frees neither twin saw: obj_frees_missed",
                p.name
            );
            continue;
        }
        let what = if p.name.contains("free") {
            let what = if p.name.contains("page") {
                "pages stay listed as outstanding until they are allocated again"
            } else {
                "allocations stay listed as outstanding until their address is allocated again"
            };
            format!(
                "{n} frees were not seen because another BPF program was running on that CPU; \
                 those {what}."
            )
        } else if p.name.contains("alloc") {
            format!(
                "{n} allocations were not seen because another BPF program was running on that \
                 CPU; they are missing from this report."
            )
        } else {
            format!("{n} events were not seen because another BPF program was running on that CPU.")
        };
        line!(out, "WARNING: program {} missed {n} runs: {what}", p.name);
    }
}

/// The raw tracepoint slab free programs, which run in pairs (a miss of one is seen by the other).
fn is_twin_free_program(name: &str) -> bool {
    [
        programs::KFREE_RAW,
        programs::KFREE_RAW_TWIN,
        programs::KMEM_CACHE_FREE_RAW,
        programs::KMEM_CACHE_FREE_RAW_TWIN,
    ]
    .contains(&name)
}

/// A right-aligned table with a left-aligned last column.
fn table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    let cols = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let fmt_row = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from(" ");
        for (i, cell) in cells.enumerate() {
            if i + 1 == cols {
                let _ = write!(s, "  {cell}");
            } else {
                let _ = write!(s, "  {cell:>w$}", w = widths[i]);
            }
        }
        s
    };
    line!(out, "{}", fmt_row(&mut headers.iter().copied()));
    for row in rows {
        line!(out, "{}", fmt_row(&mut row.iter().map(String::as_str)));
    }
}

fn callers(out: &mut String, r: &Report, top: usize) {
    let shown = r.callers.len().min(top);
    line!(
        out,
        "Outstanding by calling function (top {shown} of {}):",
        r.callers.len()
    );
    let rows: Vec<Vec<String>> = r
        .callers
        .iter()
        .take(shown)
        .map(|c| {
            vec![
                format_bytes(c.bytes),
                c.bytes.to_string(),
                c.allocations.to_string(),
                format_bytes(c.allocated_bytes),
                c.stacks.to_string(),
                c.function.clone(),
            ]
        })
        .collect();
    table(
        out,
        &[
            "BYTES",
            "EXACT",
            "ALLOCS",
            "ALLOCATED",
            "STACKS",
            "FUNCTION",
        ],
        &rows,
    );
    let rest = &r.callers[shown..];
    if !rest.is_empty() {
        let bytes: u64 = rest.iter().map(|c| c.bytes).sum();
        line!(
            out,
            "  ... {} more functions holding {}",
            rest.len(),
            format_bytes(bytes)
        );
    }
}

fn stacks(out: &mut String, r: &Report, top: usize) {
    line!(out);
    let holding: Vec<&StackReport> = r.stacks.iter().filter(|s| s.bytes > 0).collect();
    if holding.is_empty() {
        let older = if r.session.min_age_secs > 0.0 {
            format!(" older than {}", format_duration(r.session.min_age_secs))
        } else {
            String::new()
        };
        let noun = allocations_noun(&r.session);
        let of_classes = if r.class_filter.is_some() {
            " of the selected classes"
        } else {
            ""
        };
        let allocated: u64 = r.stacks.iter().map(|s| s.allocated_count).sum();
        if allocated == 0 {
            line!(
                out,
                "Nothing outstanding: no {noun}{of_classes} were traced."
            );
        } else {
            line!(
                out,
                "Nothing outstanding{older}: none of the {allocated} {noun}{of_classes} traced \
                 during the session is still held."
            );
        }
        return;
    }
    let shown = holding.len().min(top);
    line!(
        out,
        "Top {shown} stacks by outstanding bytes (of {} holding memory):",
        holding.len()
    );
    for (i, s) in holding.iter().take(shown).enumerate() {
        line!(out);
        stack(out, i + 1, s, r);
    }
    let rest = &holding[shown..];
    if !rest.is_empty() {
        let bytes: u64 = rest.iter().map(|s| s.bytes).sum();
        line!(out);
        line!(
            out,
            "... {} more stacks holding {} (the JSON output lists every stack)",
            rest.len(),
            format_bytes(bytes)
        );
    }
}

fn stack(out: &mut String, rank: usize, s: &StackReport, r: &Report) {
    line!(
        out,
        "#{rank}  {} ({} bytes) in {}",
        format_bytes(s.bytes),
        s.bytes,
        allocs(s.allocations)
    );
    let mut what = format!("    kind: {}, class: {}", s.kind.name(), s.class.name());
    if let Some(detail) = stack_class_detail(s) {
        let _ = write!(what, " ({detail})");
    }
    if !class_in_total(&r.classes, s.class) {
        let _ = write!(what, " (not in total: {})", counted_as(s.class));
    }
    if let Some(cache) = &s.cache {
        let _ = write!(what, ", cache: {cache}");
        if !s.cache_merged.is_empty() {
            let _ = write!(what, " (merged with {})", s.cache_merged.join(", "));
        }
    }
    line!(out, "{what}");
    line!(out, "    caller: {}", s.caller);
    if let Some(g) = &s.growth {
        let series: Vec<String> = g.series.iter().map(|b| format_bytes(*b)).collect();
        line!(
            out,
            "    {}: {} ({}/s)",
            if g.growing { "GROWING" } else { "growth" },
            series.join(" → "),
            format_bytes(g.bytes_per_sec.max(0.0) as u64)
        );
    }
    line!(
        out,
        "    allocated during session: {} in {}",
        format_bytes(s.allocated_bytes),
        allocs(s.allocated_count)
    );
    let mut facts = Vec::new();
    if s.kind == Kind::Page {
        facts.push(match s.orders.as_slice() {
            [] => "order unknown".to_string(),
            [o] => format!("order {o}"),
            os => format!(
                "orders {}",
                os.iter().map(u8::to_string).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    if let Some(req) = s.bytes_req {
        facts.push(format!(
            "requested {} (slack {})",
            format_bytes(req),
            format_bytes(s.bytes.saturating_sub(req))
        ));
    }
    if let Some(age) = s.oldest_age_secs {
        facts.push(format!("oldest {}", format_duration(age)));
    }
    facts.push(match s.stack_id {
        Some(id) => format!("stack id {id}"),
        None => "stack unavailable".to_string(),
    });
    line!(out, "    {}", facts.join(", "));
    if s.owners.is_empty() {
        line!(out, "    owners: not recorded");
    } else {
        line!(out, "    owners (task running at allocation time):");
        for o in &s.owners {
            line!(
                out,
                "      {} {} in {}",
                owner_text(o),
                format_bytes(o.bytes),
                allocs(o.allocations)
            );
        }
    }
    if s.frames.is_empty() {
        let why = if s.stack_id.is_none() {
            "the kernel stack could not be captured (see the stack_id_* counters)"
        } else {
            "the stack was not found in the stack map"
        };
        line!(out, "    frames: none — {why}");
        return;
    }
    line!(out, "    frames (innermost first):");
    for f in &s.frames {
        line!(out, "      {}", frame_text(f));
        // Inlined functions are stored outermost first; list them innermost first, like the
        // frames themselves.
        for name in f.inlined.iter().rev() {
            line!(out, "        [inlined] {name}");
        }
    }
}

/// `1 allocation`, `2 allocations`.
fn allocs(n: u64) -> String {
    if n == 1 {
        "1 allocation".to_string()
    } else {
        format!("{n} allocations")
    }
}

/// `symbol+0xoff [module] (file:line)`, or the hex address when unresolved.
fn frame_text(f: &Frame) -> String {
    let mut s = match f.symbol.as_deref() {
        Some(sym) if !sym.is_empty() => match f.offset {
            Some(off) => format!("{sym}+{off:#x}"),
            None => sym.to_string(),
        },
        _ => format!("{:#x}", f.address),
    };
    if let Some(m) = &f.module {
        let _ = write!(s, " [{m}]");
    }
    if let Some(file) = &f.file {
        match f.line {
            Some(l) => {
                let _ = write!(s, " ({file}:{l})");
            }
            None => {
                let _ = write!(s, " ({file})");
            }
        }
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {

    use super::*;
    use crate::model::testkit::{mixed_report, sample_report};

    use crate::model::frames::STACK_UNAVAILABLE;
    use crate::model::ProgramStats;

    #[test]
    fn full_layout() {
        let r = sample_report(&[(Counter::AllocsSeen, 500_000)], 0);
        let t = render_text(&r, &RenderOptions { top: 10 });
        println!("{t}");
        assert!(t.starts_with("memtrace — outstanding kernel page allocations\n"));
        assert!(t.contains("  host:       web-1\n"));
        assert!(t.contains("  started:    2023-11-14 22:13:20 UTC\n"));
        assert!(t.contains("  duration:   30s (requested 30s, ended by duration)\n"));
        assert!(!t.contains("min age"));
        assert!(t.contains("Outstanding: 300.0 MiB (314593280 bytes) in 9605 allocations\n"));
        assert!(t.contains(
            "Allocated during session: 6.0 GiB (6442721280 bytes) in 426050 allocations — \
             300.0 MiB (4.9%) still held\n"
        ));
        assert!(t.contains("allocs_seen=500000 allocs_tracked=0"));
        assert!(!t.contains("WARNING"));
        // Callers table, sorted by bytes.
        let callers_at = t
            .find("Outstanding by calling function (top 4 of 4):")
            .expect("table");
        let rows: Vec<&str> = t[callers_at..].lines().skip(1).take(5).collect();
        assert!(rows[0].contains("BYTES") && rows[0].ends_with("FUNCTION"));
        assert!(rows[1].ends_with("  skb_page_frag_refill"));
        assert!(rows[1].contains(" 300.0 MiB ") && rows[1].contains(" 314572800 "));
        assert!(rows[2].ends_with("  do_anonymous_page"));
        assert!(rows[3].ends_with(&format!("  {STACK_UNAVAILABLE}")));
        assert!(rows[4].contains("  0 B  ") && rows[4].ends_with("  my func;with odd chars"));
        // Stacks: only the three holding memory.
        assert!(t.contains("Top 3 stacks by outstanding bytes (of 3 holding memory):"));
        assert!(t.contains(
            "#1  300.0 MiB (314572800 bytes) in 9600 allocations\n    kind: page, class: network\n    \
             caller: skb_page_frag_refill\n    \
             allocated during session: 5.0 GiB in 163840 allocations\n    order 3, oldest 4m12s, \
             stack id 1\n    owners (task running at allocation time):\n      nginx/1235 (1234) \
             64.0 KiB in 2 allocations\n      swapper/3/0 (0) 32.0 KiB in 1 allocation\n    frames"
        ));
        assert!(t.contains(
            "    frames (innermost first):\n      __alloc_pages_noprof+0x10\n      \
             alloc_pages_mpol+0x20\n"
        ));
        assert!(t.contains(
            "      tcp_sendmsg_locked+0x60 (net/ipv4/tcp.c:1234)\n        [inlined] inner_inl\n        \
             [inlined] outer_inl\n      tcp_sendmsg+0x70 [tcp_mod]\n"
        ));
        assert!(t.contains("      0xffffffffdeadbeef\n"));
        assert!(
            t.contains("#3  4.0 KiB (4096 bytes) in 1 allocation\n    kind: page, class: other-kernel\n    caller: [stack unavailable]")
        );
        assert!(t.contains("order unknown, stack unavailable\n    owners: not recorded\n"));
        assert!(t.contains("    kind: page, class: user-anon\n    caller: do_anonymous_page\n"));
        // Classes table: page-only session, everything counts.
        let classes_at = t.find("Outstanding by class:\n").expect("classes table");
        let rows: Vec<&str> = t[classes_at..].lines().skip(1).take(4).collect();
        assert!(rows[0].contains("BYTES") && rows[0].ends_with("CLASS"));
        assert!(rows[1].contains(" 314572800 ") && rows[1].ends_with("  network"));
        assert!(rows[2].ends_with("  user-anon"));
        assert!(rows[3].contains(" 4096 ") && rows[3].ends_with("  other-kernel"));
        assert!(!t.contains("not in total") && !t.contains("Not in the totals"));
        assert!(!t.contains("kinds:") && !t.contains("classes:"));
        assert!(!t.contains("#4"));
        assert!(!t.contains("more stacks"));
    }

    #[test]
    fn failure_counters_warn_only_when_non_zero() {
        let r = sample_report(
            &[
                (Counter::OutstandingFull, 12),
                (Counter::StackIdEnomem, 3),
                (Counter::UnmatchedFrees, 99), // not a failure counter
            ],
            5,
        );
        let t = render_text(&r, &RenderOptions { top: 10 });
        let warnings: Vec<&str> = t.lines().filter(|l| l.starts_with("WARNING:")).collect();
        assert_eq!(warnings.len(), 3, "{warnings:#?}");
        assert!(warnings[0].starts_with("WARNING: outstanding_map_full=12: "));
        assert!(warnings[0].contains("beyond the page table (65536 entries"));
        assert!(warnings[1].starts_with("WARNING: stack_id_enomem=3: "));
        assert!(warnings[1].contains("--max-stacks (currently 16384)"));
        assert!(warnings[2].starts_with("WARNING: program mm_page_free missed 5 runs: 5 frees"));
        assert!(warnings[2].contains("another BPF program was running on that CPU"));
        for zero in ["stale_records_replaced", "stack_id_eexist", "agg_missing"] {
            assert!(!warnings.iter().any(|w| w.contains(zero)), "{zero} warned");
            assert!(t.contains(&format!("{zero}=0")), "{zero} not listed");
        }
        assert!(t.contains("unmatched_frees=99"));
        assert!(t.contains("mm_page_free recursion_misses=5 runs=10 avg=100ns"));
    }

    #[test]
    fn every_failure_counter_has_an_explanation() {
        let s = SessionInfo::default();
        for c in Counter::ALL.iter().filter(|c| c.is_failure()) {
            let e = failure_explanation(c.name(), 7, &s);
            assert!(e.contains('7'), "{}: {e}", c.name());
            assert!(
                !e.contains("lost information"),
                "{} has no explanation",
                c.name()
            );
        }
    }

    #[test]
    fn top_limits_and_more_lines() {
        let r = sample_report(&[], 0);
        let t = render_text(&r, &RenderOptions { top: 1 });
        assert!(t.contains("Outstanding by calling function (top 1 of 4):"));
        assert!(t.contains("  ... 3 more functions holding 20.0 KiB\n"));
        assert!(t.contains("Top 1 stacks by outstanding bytes (of 3 holding memory):"));
        assert!(t.contains("... 2 more stacks holding 20.0 KiB"));
        assert!(!t.contains("#2"));
        let all = render_text(&r, &RenderOptions { top: 0 });
        assert!(all.contains("#3") && !all.contains("more stacks"));
    }

    #[test]
    fn nothing_outstanding() {
        let mut r = sample_report(&[], 0);
        for s in &mut r.stacks {
            s.bytes = 0;
            s.allocations = 0;
        }
        r.totals.bytes = 0;
        r.totals.allocations = 0;
        r.session.min_age_secs = 60.0;
        let t = render_text(&r, &RenderOptions { top: 10 });
        assert!(t.contains("  min age:    1m00s (only allocations"));
        assert!(t.contains("Outstanding older than 1m00s: 0 B (0 bytes) in 0 allocations\n"));
        assert!(t.contains(
            "Nothing outstanding older than 1m00s: none of the 426050 page allocations traced"
        ));
        assert!(!t.contains("#1"));

        let empty = render_text(&Report::default(), &RenderOptions { top: 10 });
        assert!(empty.contains("Outstanding: 0 B (0 bytes) in 0 allocations\n"));
        assert!(!empty.contains("calling function"));
        assert!(empty.contains("Nothing outstanding: no page allocations were traced.\n"));
    }

    #[test]
    fn mixed_kinds_layout() {
        let r = mixed_report(None);
        let t = render_text(&r, &RenderOptions { top: 0 });
        println!("{t}");
        assert!(t.starts_with("memtrace — outstanding kernel allocations\n"));
        assert!(t.contains(
            "  kinds:\n    page     traced (kmem:mm_page_alloc, kmem:mm_page_free)\n    \
             slab     traced (kmem:kmalloc, kmem:kmem_cache_alloc, kmem:kfree, \
             kmem:kmem_cache_free)\n    percpu   skipped: percpu:percpu_alloc_percpu not found \
             in tracefs\n    vmalloc  traced (vmalloc:alloc_vmap_area, \
             vmalloc:free_vmap_area_noflush); sizes include the guard page\n"
        ));
        assert!(!t.contains("hooks:"));
        // Totals say what they leave out.
        assert!(t.contains(&format!(
            "Outstanding: {} ({} bytes) in 14 allocations\n",
            format_bytes(r.totals.bytes),
            r.totals.bytes
        )));
        assert!(t.contains(
            "  Not in the totals, to count nothing twice: vmalloc-backing 64.0 KiB (counted as \
             vmalloc areas), slab-backing 16.0 KiB (counted as slab objects).\n"
        ));
        // Classes table, with the excluded rows marked.
        let at = t.find("Outstanding by class:\n").expect("classes table");
        let rows: Vec<&str> = t[at..].lines().skip(2).take(6).collect();
        assert!(rows[0].ends_with("  other-kernel"), "{rows:#?}");
        assert!(rows[1].contains(" 65536 ") && rows[1].contains(" 16 "));
        assert!(rows[1].ends_with("  vmalloc-backing (not in total: counted as vmalloc areas)"));
        assert!(rows[3].ends_with("  slab-backing (not in total: counted as slab objects)"));
        assert!(rows[5].ends_with("  percpu-backing"));
        // Stacks: kind, class, cache, requested/slack; no orders for objects.
        assert!(t.contains(
            "    kind: slab, class: other-kernel, cache: kmalloc-512\n    caller: kernfs_fop_open\n    \
             allocated during session: 1.2 KiB in 3 allocations\n    requested 800 B (slack 480 B), \
             oldest 15m00s, stack id 12\n"
        ));
        assert!(t.contains("    kind: slab, class: network, cache: skbuff_head_cache\n"));
        assert!(t.contains("requested 696 B (slack 72 B), oldest 10s, stack id 11\n"));
        assert!(t.contains(
            "    kind: page, class: slab-backing (not in total: counted as slab objects)\n    \
             caller: allocate_slab\n"
        ));
        assert!(t.contains(
            "    kind: vmalloc, class: other-kernel\n    caller: __bpf_map_area_alloc\n    \
             allocated during session: 68.0 KiB in 1 allocation\n    oldest 3m20s, stack id 13\n"
        ));
        assert!(!t.contains("order unknown, oldest 3m20s"));
    }

    #[test]
    fn class_filter_in_header_and_empty_selection() {
        let r = mixed_report(Some(vec![Class::Network, Class::Shmem]));
        let t = render_text(&r, &RenderOptions { top: 10 });
        assert!(t.contains(
            "  classes:    network, shmem (--class: totals, callers and stacks cover only these)\n"
        ));
        assert!(t.contains("Outstanding by class (before --class):\n"));
        assert!(t.contains("  user-anon (not selected)\n"));
        assert!(!t.contains("  network (not selected)"));
        assert!(t.contains("Top 2 stacks by outstanding bytes (of 2 holding memory):"));
        assert!(!t.contains("Not in the totals"));

        // Only classes left out of the totals: the stacks are listed, the totals say why 0.
        let r = mixed_report(Some(vec![Class::SlabBacking]));
        let t = render_text(&r, &RenderOptions { top: 10 });
        assert!(t.contains("Outstanding: 0 B (0 bytes) in 0 allocations\n"));
        assert!(t.contains("Not in the totals, to count nothing twice: slab-backing 16.0 KiB"));
        assert!(t.contains("#1  16.0 KiB (16384 bytes) in 2 allocations\n"));
        assert!(!t.contains("calling function"));

        // Nothing of the selected classes.
        let r = mixed_report(Some(vec![Class::PageCache]));
        let t = render_text(&r, &RenderOptions { top: 10 });
        assert!(t.contains(
            "Nothing outstanding: no allocations of the selected classes were traced.\n"
        ));
    }

    #[test]
    fn page_cache_dirty_detail_and_object_failures() {
        let mut r = mixed_report(None);
        let s = r
            .stacks
            .iter_mut()
            .find(|s| s.stack_id == Some(2))
            .expect("stack 2");
        s.class = Class::PageCache;
        s.frames[5].inlined = vec!["generic_perform_write".into()];
        let t = render_text(&r, &RenderOptions { top: 0 });
        assert!(t.contains("    kind: page, class: page-cache (dirty)\n"));

        r.counters = vec![
            (Counter::ObjectsFull.name(), 4),
            (Counter::ObjStaleReplaced.name(), 2),
        ];
        r.failure_counters = vec![
            Counter::ObjectsFull.name(),
            Counter::ObjStaleReplaced.name(),
        ];
        r.programs = vec![ProgramStats {
            name: "kfree".into(),
            recursion_misses: 3,
            ..Default::default()
        }];
        let t = render_text(&r, &RenderOptions { top: 0 });
        assert!(t.contains("WARNING: objects_map_full=4: 4 slab/percpu/vmalloc allocations"));
        assert!(t.contains("WARNING: obj_stale_records_replaced=2: 2 object frees were missed"));
        assert!(t.contains(
            "WARNING: program kfree missed 3 runs: 3 frees were not seen because another BPF \
             program was running on that CPU; those allocations stay listed"
        ));
    }
}
