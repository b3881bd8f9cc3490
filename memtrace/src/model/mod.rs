//! The model: what a session found, independent of how it is shown.
//!
//! `RawSession` is what the collector read from the kernel maps (after the programs were
//! detached, so it is a consistent snapshot). `build::build_report` turns it into a `Report`
//! (symbolized, grouped, sorted), which the renderers print.

pub mod build;
pub mod classify;
pub mod frames;
pub mod growth;
pub mod owners;
pub mod socket;
pub mod summaries;
#[cfg(test)]
pub(crate) mod testkit;

use std::collections::HashMap;

use memtrace_common::{Counter, Kind, ObjKey, ObjRecord, PageRecord, StackAgg};

pub use classify::Class;
pub use socket::{Socket, SocketOwner, SocketScan};

/// Per-program statistics read from `bpf_prog_info`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramStats {
    pub name: String,
    /// Times the program did not run because another BPF program was already running on that
    /// CPU (its events are lost: a missed free leaves a false leak until healed).
    pub recursion_misses: u64,
    /// Only non-zero when `kernel.bpf_stats_enabled=1`.
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// Everything the collector read, before symbolization.
#[derive(Clone, Debug, Default)]
pub struct RawSession {
    pub page_size: u64,
    /// Counter values summed over CPUs, indexed by `Counter as usize`.
    pub counters: Vec<u64>,
    pub programs: Vec<ProgramStats>,
    /// (kind, stack slot within the kind's block, aggregate); only slots that saw allocations.
    /// The slot equals the stack id, or `stack_none_id` for "stack unavailable".
    pub aggs: Vec<(Kind, u32, StackAgg)>,
    /// Page kind: one record per outstanding allocation, keyed by its head pfn (older
    /// sessions: possibly with `DETACHED_KEY_BIT`).
    pub records: Vec<(u64, PageRecord)>,
    /// Slab, percpu and vmalloc kinds: `OBJECTS` entries (`key.kind` says which).
    pub objects: Vec<(ObjKey, ObjRecord)>,
    /// Stack id → slab cache name, for stacks that allocated from a named kmem_cache.
    pub cache_names: HashMap<u32, String>,
    /// Slab cache name → the other caches the kernel merged into it (SLUB shares one cache
    /// between compatible ones; `/proc/slabinfo` lists only the first name).
    pub cache_merged: HashMap<String, Vec<String>>,
    /// Stack id → instruction pointers, innermost first.
    pub stacks: HashMap<u32, Vec<u64>>,
    /// Slot used for "stack unavailable".
    pub stack_none_id: u32,
    /// CLOCK_MONOTONIC ns when the maps were read (ages are computed against it).
    pub now_ns: u64,
    /// Page stack slot → (gfp flags, migrate type) of its first allocation: what classifies a
    /// page stack when no record says (snapshots read no records).
    pub page_gfp: HashMap<u32, (u32, u8)>,
    /// How the page table used the owner table when it was walked (`None`: not walked).
    pub owner_use: Option<OwnerUse>,
}

/// What a walk of the page table saw of the owner table: what owner recycling decides from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerUse {
    /// Fresh owner indices handed out (at most the table's capacity).
    pub handed_out: u32,
    /// The table's capacity (highest index).
    pub capacity: u32,
    /// Indices some page-table entry referred to, ascending.
    pub referenced: Vec<u32>,
    /// Indices some CPU's cache of its last owner held before the walk.
    pub cached: Vec<u32>,
}

impl RawSession {
    pub fn counter(&self, c: Counter) -> u64 {
        self.counters.get(c as usize).copied().unwrap_or(0)
    }
}

/// Facts about the session shown in the report header.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionInfo {
    pub hostname: String,
    /// `uname -r`.
    pub kernel: String,
    /// Unix time (seconds) when tracing started.
    pub started_at_unix: f64,
    pub duration_secs: f64,
    pub requested_duration_secs: f64,
    /// "duration", "signal" (SIGINT/SIGTERM), or "running" (a snapshot written while the
    /// session runs, `--output-dir` with `--interval`).
    pub ended_by: String,
    pub min_age_secs: f64,
    pub page_size: u64,
    pub max_allocations: u32,
    /// `--max-objects`.
    pub max_objects: u32,
    /// Kernel memory taken by the maps (memlock of the map fds), measured at start.
    pub map_memory_bytes: u64,
    pub max_stacks: u32,
    /// `--sample N`: one allocation in N was recorded (by pfn / address hash) and every byte
    /// and count in the report is scaled by N (an estimate); 1 = exact.
    pub sample_every: u32,
    /// `--grace` as applied: new allocations were not recorded for this many seconds at the end
    /// of the session (0: none).
    pub grace_secs: f64,
    /// Why the grace period did not run as asked, if it did not.
    pub grace_note: Option<String>,
    /// `--interval` in seconds (0: no snapshots).
    pub interval_secs: f64,
    /// The owner filters applied in the kernel, e.g. `pid 1234`, `cgroup /a/b (id 42)`.
    pub filters: Vec<String>,
    /// `--sort`: `bytes` or `growth`.
    pub sort: String,
    /// How the cgroups of owners were resolved (which hierarchies), one line.
    pub cgroups_note: Option<String>,
    /// How the events were attached, e.g. "tracepoint kmem:mm_page_alloc".
    pub hooks: Vec<String>,
    /// Every kind that was asked for, traced or skipped.
    pub kinds: Vec<KindStatus>,
    /// What stack table rotation did (sessions that take snapshots).
    pub stack_rotation: StackRotationStats,
    /// What owner table recycling did (sessions whose snapshots walk the page table).
    pub owner_recycling: OwnerRecyclingStats,
    /// Removed cgroups forgotten by the cgroup index (nothing of theirs outstanding).
    pub cgroups_expired: u64,
    /// Slab objects: one in this many was recorded (by address hash) when the maps were read,
    /// and every outstanding slab figure is scaled by it (an estimate when > 1); the allocated
    /// slab figures were scaled in the kernel by the rate in force at each allocation.
    pub slab_sample_every: u32,
    /// The slab rate the session started with (`--slab-sample`).
    pub slab_sample_start: u32,
    /// When the slab rate doubled because the object table neared full.
    pub slab_rate_changes: Vec<RateChange>,
}

/// The slab sampling rate doubled.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RateChange {
    /// Seconds since the start of the session.
    pub at_secs: f64,
    /// The new rate: one object in this many recorded.
    pub every: u32,
}

impl SessionInfo {
    /// Whether any figure of the report is an estimate (pages or slab sampled).
    pub fn estimated(&self) -> bool {
        self.sample_every > 1 || self.slab_sample_every > 1
    }

    /// How stacks of `kind` were sampled: one allocation in this many.
    pub fn sample_every_of(&self, kind: Kind) -> u32 {
        match kind {
            Kind::Slab => self.slab_sample_every.max(1),
            _ => self.sample_every.max(1),
        }
    }
}

/// Owner table recycling in a long session: owners of page allocations (thread, name, cgroup)
/// with no page outstanding any more are forgotten, and their indices given to new owners.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OwnerRecyclingStats {
    /// Highest owner index (the table holds this many owners).
    pub capacity: u64,
    /// Indices holding an owner (or waiting to be recycled) at the last snapshot.
    pub in_use: u64,
    /// Owners forgotten (no page referred to them), whose indices wait for a second snapshot
    /// confirming nothing refers to them.
    pub quarantined: u64,
    /// Indices put back for new owners.
    pub recycled: u64,
    /// Recycled indices the programs gave to new owners.
    pub reused: u64,
    /// Recycling steps that failed (the tables were left as they were).
    pub failures: u64,
    pub last_error: Option<String>,
}

impl OwnerRecyclingStats {
    /// Whether anything happened worth a line in the report.
    pub fn is_empty(&self) -> bool {
        self.recycled == 0 && self.quarantined == 0 && self.failures == 0
    }
}

/// Stack table rotation in a long session: idle stacks deleted from the kernel's stack maps so
/// that their buckets take new stacks, their allocated totals kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackRotationStats {
    /// Snapshots that retired stacks (the maps were a quarter full).
    pub rotations: u64,
    /// Stack slots retired (deleted from the maps, totals kept).
    pub stacks_retired: u64,
    /// Retired slots that an allocation reached between the snapshot and the deletion: that
    /// allocation may be shown under the next stack of its bucket.
    pub races: u64,
    /// Retired stacks kept with their frames (bounded).
    pub retired_kept: u64,
    /// Retirements past the bound, folded into one frameless entry per kind.
    pub folded: u64,
    /// Rotations that failed (the maps were left as they were).
    pub failures: u64,
    pub last_error: Option<String>,
}

impl StackRotationStats {
    /// Whether anything happened worth a line in the report.
    pub fn is_empty(&self) -> bool {
        *self == StackRotationStats::default()
    }
}

/// Whether a kind of memory was traced in this session, and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KindStatus {
    /// `page`, `slab`, `percpu`, `vmalloc`.
    pub kind: String,
    pub traced: bool,
    /// Tracepoints attached for it, e.g. `kmem:kmalloc`.
    pub hooks: Vec<String>,
    /// Why it was skipped, or what is approximate about it (one line).
    pub note: Option<String>,
}

/// A symbolized frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub address: u64,
    /// Function name, `None` when it could not be resolved.
    pub symbol: Option<String>,
    /// Kernel module the address belongs to (`None` for the core kernel image).
    pub module: Option<String>,
    /// Offset of `address` from the function start.
    pub offset: Option<u64>,
    /// Source location when debug info was found.
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Functions inlined at this address, outermost first (from debug info, when available).
    pub inlined: Vec<String>,
}

impl Frame {
    pub fn unresolved(address: u64) -> Self {
        Frame {
            address,
            ..Default::default()
        }
    }
}

/// Where an allocation ran: in a task, or in an interrupt that was charged to whichever task
/// it interrupted (then the task is a bystander and is not named).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExecContext {
    #[default]
    Task,
    Softirq,
    Hardirq,
    Nmi,
}

impl ExecContext {
    /// From a record's `context` byte; `None` for "unknown" (tp_btf programs).
    pub fn from_raw(v: u8) -> Option<ExecContext> {
        use memtrace_common::context;
        match v {
            context::TASK => Some(ExecContext::Task),
            context::SOFTIRQ => Some(ExecContext::Softirq),
            context::HARDIRQ => Some(ExecContext::Hardirq),
            context::NMI => Some(ExecContext::Nmi),
            _ => None,
        }
    }

    /// How an owner in this context is shown instead of a task name.
    pub fn label(self) -> &'static str {
        match self {
            ExecContext::Task => "[task]",
            ExecContext::Softirq => "[softirq]",
            ExecContext::Hardirq => "[irq]",
            ExecContext::Nmi => "[nmi]",
        }
    }

    pub fn is_interrupt(self) -> bool {
        self != ExecContext::Task
    }
}

/// Who holds outstanding memory from a stack: a thread of a process in a cgroup, or an
/// interrupt context (then `tgid`, `pid` and `cgroup_id` are 0 and `comm` is `[softirq]`,
/// `[irq]` or `[nmi]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub tgid: u32,
    pub pid: u32,
    pub comm: String,
    pub bytes: u64,
    pub allocations: u64,
    pub context: ExecContext,
    /// cgroup v2 id of the allocating task (0: interrupt context).
    pub cgroup_id: u64,
    /// cgroup v2 path (relative to the cgroup2 mount), when resolved.
    pub cgroup: Option<String>,
    /// Kubernetes pod UID and container id, when the cgroup path names them.
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
}

/// Outstanding memory by process (and interrupt context), cgroup and pod: who holds it,
/// over the reported stacks without double counting (the same stacks as the totals).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OwnerSummary {
    /// Bytes the walk over the outstanding records attributed (scaled when sampled). Less than
    /// the totals when records were lost (table full) or with `--min-age`.
    pub attributed_bytes: u64,
    pub processes: Vec<ProcessOwner>,
    pub cgroups: Vec<CgroupOwner>,
    pub pods: Vec<PodOwner>,
}

/// A process (all its threads) in one cgroup, or an interrupt context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessOwner {
    pub context: ExecContext,
    pub tgid: u32,
    /// Thread name of the allocations holding the most bytes (or the context label).
    pub comm: String,
    /// `/proc/<tgid>/cmdline` when the process still exists at the end of the session.
    pub cmdline: Option<String>,
    /// Whether the process still existed at the end of the session.
    pub alive: bool,
    pub cgroup_id: u64,
    pub cgroup: Option<String>,
    /// cgroup v1 memory controller path (hybrid and v1 hosts), when the process still exists.
    pub memory_cgroup: Option<String>,
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
    pub bytes: u64,
    pub allocations: u64,
}

/// A cgroup v2 (by id).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupOwner {
    pub cgroup_id: u64,
    /// Path relative to the cgroup2 mount; `None` when the cgroup is gone and was not seen at
    /// the start either.
    pub path: Option<String>,
    pub pod_uid: Option<String>,
    pub qos: Option<String>,
    pub container_id: Option<String>,
    pub runtime: Option<String>,
    /// systemd unit (`sshd.service`, `session-3.scope`) for cgroups that are not containers.
    pub unit: Option<String>,
    pub bytes: u64,
    pub allocations: u64,
}

/// A Kubernetes pod (its containers' cgroups summed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodOwner {
    pub pod_uid: String,
    pub qos: Option<String>,
    /// Container ids seen holding memory.
    pub containers: Vec<String>,
    pub bytes: u64,
    pub allocations: u64,
}

/// One kernel stack and the memory allocated from it.
#[derive(Clone, Debug, PartialEq)]
pub struct StackReport {
    /// Which allocator the memory came from.
    pub kind: Kind,
    /// What the memory is used for (see `classify`).
    pub class: Class,
    /// Slab cache, as `/proc/slabinfo` names it (`None`: not a slab stack, large kmalloc, or
    /// unknown).
    pub cache: Option<String>,
    /// Other caches the kernel merged into `cache` (their objects are counted under it).
    pub cache_merged: Vec<String>,
    /// Outstanding bytes the callers asked for (slab only; `bytes` minus this is slack).
    pub bytes_req: Option<u64>,
    /// `None` for the "stack unavailable" bucket.
    pub stack_id: Option<u32>,
    /// Outstanding bytes (respecting `--min-age`).
    pub bytes: u64,
    /// Outstanding allocations (respecting `--min-age`).
    pub allocations: u64,
    /// Bytes allocated from this stack during the session, freed or not.
    pub allocated_bytes: u64,
    pub allocated_count: u64,
    /// Orders of the outstanding allocations, ascending, de-duplicated.
    pub orders: Vec<u8>,
    /// Age of the oldest outstanding allocation, seconds.
    pub oldest_age_secs: Option<f64>,
    /// The calling function: first frame that is not a page-allocator internal.
    pub caller: String,
    /// Top owners by bytes, descending.
    pub owners: Vec<Owner>,
    /// Innermost first.
    pub frames: Vec<Frame>,
    /// Outstanding bytes across the `--interval` snapshots (`None` without snapshots).
    pub growth: Option<growth::Growth>,
}

/// Outstanding memory summed by class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassSummary {
    pub class: Class,
    pub bytes: u64,
    pub allocations: u64,
    pub stacks: u64,
    /// False for backing pages whose owning kind was traced too (`slab-backing` when slab is
    /// traced, ...): shown, but left out of the totals so nothing is counted twice.
    pub in_total: bool,
}

/// Outstanding memory summed by calling function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallerSummary {
    pub function: String,
    pub bytes: u64,
    pub allocations: u64,
    pub allocated_bytes: u64,
    pub stacks: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Outstanding bytes over all stacks (respecting `--min-age`).
    pub bytes: u64,
    pub allocations: u64,
    pub allocated_bytes: u64,
    pub allocated_count: u64,
}

/// The whole report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub session: SessionInfo,
    /// (name, value) for every counter, in `Counter::ALL` order.
    pub counters: Vec<(&'static str, u64)>,
    /// Names of the counters whose non-zero value means lost or approximate information.
    pub failure_counters: Vec<&'static str>,
    pub programs: Vec<ProgramStats>,
    /// Sums over the stacks of the selected classes, without double counting (see
    /// `ClassSummary::in_total`).
    pub totals: Totals,
    /// Every class that holds or allocated memory (before `--class` filtering), by bytes.
    pub classes: Vec<ClassSummary>,
    /// The `--class` selection the stacks, callers and totals were restricted to (`None`:
    /// every class).
    pub class_filter: Option<Vec<Class>>,
    /// Sorted by outstanding bytes, descending.
    pub callers: Vec<CallerSummary>,
    /// Every stack that allocated during the session, sorted by outstanding bytes descending,
    /// then allocated bytes descending (`--sort growth`: growing stacks first).
    pub stacks: Vec<StackReport>,
    /// Who holds the memory: by process, cgroup and pod.
    pub owners: OwnerSummary,
    /// Compact reports taken every `--interval` (empty without it).
    pub snapshots: Vec<growth::Snapshot>,
    /// When network-class stacks hold memory at the end: the sockets with the most receive-
    /// queue memory (`rmem_alloc`) then, with their owners (see `memtrace sockets`).
    pub sockets: Vec<Socket>,
}

/// Turns kernel addresses into frames. One call per report with every address de-duplicated.
pub trait Symbolize {
    /// Returns exactly one frame per input address, in the same order.
    fn symbolize(&self, addresses: &[u64]) -> Vec<Frame>;
}

/// Options that change what counts as outstanding.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// Only allocations at least this old (at collection time) count as outstanding.
    pub min_age_ns: u64,
    /// Owners listed per stack.
    pub max_owners: usize,
    /// Only stacks of these classes are reported (`None`: all).
    pub classes: Option<Vec<Class>>,
}

/// Narrows a loaded report to `classes` (`memtrace report --class`): stacks, callers, totals
/// and owners are recomputed over the remaining stacks. Returns the requested classes the
/// saved session did not report (it was recorded with a narrower `--class`).
pub fn narrow(report: &mut Report, classes: &[Class]) -> Vec<Class> {
    let missing = match &report.class_filter {
        Some(saved) => classes
            .iter()
            .copied()
            .filter(|c| !saved.contains(c))
            .collect(),
        None => Vec::new(),
    };
    summaries::restrict_classes(report, classes);
    missing
}

/// What a running session has seen so far (for the progress display): cheap enough to read
/// every second (the counters and the per-stack aggregates, no records, no stacks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// Allocation and free events seen, all kinds.
    pub events: u64,
    /// Failure counters (lost or approximate information) summed.
    pub failures: u64,
    /// Outstanding bytes summed over every tracked stack, all kinds (backing pages of traced
    /// slabs count too, unlike the report's totals).
    pub outstanding_bytes: u64,
}

impl StackReport {
    /// `dirty` for page-cache pages allocated on the write path.
    pub fn class_detail(&self) -> Option<&'static str> {
        summaries::stack_class_detail(self)
    }
}
