//! Schema 1 of the JSON report, as Rust types that serialize and deserialize, with conversions
//! to and from the model. Every conversion destructures its source, so a field added to the
//! model fails to compile here until the schema says what becomes of it. Within schema 1
//! fields are only added (read with `#[serde(default)]` where earlier files lack them), never
//! renamed, removed or retyped. `docs/json-schema.md` documents every field; a test keeps it
//! complete.

use std::collections::BTreeMap;

use memtrace_common::{Counter, Kind};
use serde::{Deserialize, Serialize};

use crate::model::{
    growth::{Growth, Snapshot, SnapshotStack},
    CallerSummary, CgroupOwner, Class, ClassSummary, ExecContext, Frame, KindStatus, Owner,
    OwnerRecyclingStats, OwnerSummary, PodOwner, ProcessOwner, ProgramStats, RateChange, Report,
    SessionInfo, Socket, SocketOwner, StackReport, StackRotationStats, Totals,
};

pub const VERSION: u64 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReportV1 {
    pub schema: u64,
    pub session: SessionV1,
    /// Counter name → value (a name this build does not know is kept as read).
    pub counters: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub failure_counters: Vec<String>,
    pub programs: Vec<ProgramV1>,
    pub totals: TotalsV1,
    pub classes: Vec<ClassV1>,
    pub class_filter: Option<Vec<ClassName>>,
    pub callers: Vec<CallerV1>,
    pub stacks: Vec<StackV1>,
    pub owners: OwnersV1,
    pub snapshots: Vec<SnapshotV1>,
    // Added within schema 1: absent in files of earlier builds.
    #[serde(default)]
    pub sockets: Vec<SocketV1>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionV1 {
    pub hostname: String,
    pub kernel: String,
    pub started_at_unix: f64,
    pub duration_secs: f64,
    pub requested_duration_secs: f64,
    pub ended_by: String,
    pub min_age_secs: f64,
    pub page_size: u64,
    pub max_allocations: u32,
    pub max_objects: u32,
    pub map_memory_bytes: u64,
    pub max_stacks: u32,
    pub sample_every: u32,
    /// Derived: `sample_every > 1` (written, ignored when read).
    #[serde(default)]
    pub estimated: bool,
    pub grace_secs: f64,
    pub grace_note: Option<String>,
    pub interval_secs: f64,
    pub filters: Vec<String>,
    pub sort: String,
    pub cgroups_note: Option<String>,
    pub hooks: Vec<String>,
    pub kinds: Vec<KindStatusV1>,
    /// Stack table rotation (long sessions; absent when nothing was rotated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_rotation: Option<StackRotationV1>,
    /// Removed cgroups the index forgot during the session (absent when none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cgroups_expired: u64,
    /// Owner table recycling (long sessions; absent when nothing was recycled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_recycling: Option<OwnerRecyclingV1>,
    // Added within schema 1: absent in files of earlier builds (slab then shared
    // `sample_every`).
    #[serde(default)]
    pub slab_sample_every: Option<u32>,
    #[serde(default)]
    pub slab_sample_start: Option<u32>,
    #[serde(default)]
    pub slab_rate_changes: Vec<RateChangeV1>,
    /// Derived: `slab_sample_every > 1` (written, ignored when read).
    #[serde(default)]
    pub slab_estimated: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What rotating the stack tables did (`memtrace serve`, `--interval` sessions).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StackRotationV1 {
    /// Snapshots that retired stacks.
    pub rotations: u64,
    /// Idle stack slots deleted from the kernel's stack maps (their totals kept).
    pub stacks_retired: u64,
    /// Retired slots an allocation reached between the snapshot and the deletion.
    pub races: u64,
    /// Retired stacks kept with their frames.
    pub retired_kept: u64,
    /// Retirements past the bound, folded into one frameless entry per kind.
    pub folded: u64,
    /// Rotations that failed.
    pub failures: u64,
    pub last_error: Option<String>,
}

/// What recycling the owner table did (`memtrace serve`, `--output-dir` sessions).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OwnerRecyclingV1 {
    /// Highest owner index.
    pub capacity: u64,
    /// Indices holding an owner (or waiting to be recycled) at the last snapshot.
    pub in_use: u64,
    /// Owners forgotten, their indices waiting for a second snapshot.
    pub quarantined: u64,
    /// Indices put back for new owners.
    pub recycled: u64,
    /// Recycled indices given to new owners.
    pub reused: u64,
    /// Recycling steps that failed.
    pub failures: u64,
    pub last_error: Option<String>,
}

impl From<&OwnerRecyclingStats> for OwnerRecyclingV1 {
    fn from(o: &OwnerRecyclingStats) -> Self {
        let OwnerRecyclingStats {
            capacity,
            in_use,
            quarantined,
            recycled,
            reused,
            failures,
            last_error,
        } = o.clone();
        OwnerRecyclingV1 {
            capacity,
            in_use,
            quarantined,
            recycled,
            reused,
            failures,
            last_error,
        }
    }
}

impl From<OwnerRecyclingV1> for OwnerRecyclingStats {
    fn from(o: OwnerRecyclingV1) -> Self {
        let OwnerRecyclingV1 {
            capacity,
            in_use,
            quarantined,
            recycled,
            reused,
            failures,
            last_error,
        } = o;
        OwnerRecyclingStats {
            capacity,
            in_use,
            quarantined,
            recycled,
            reused,
            failures,
            last_error,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RateChangeV1 {
    pub at_secs: f64,
    pub every: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KindStatusV1 {
    pub kind: String,
    pub traced: bool,
    pub hooks: Vec<String>,
    pub note: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProgramV1 {
    pub name: String,
    pub recursion_misses: u64,
    pub run_count: u64,
    pub run_time_ns: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TotalsV1 {
    pub bytes: u64,
    pub allocations: u64,
    pub allocated_bytes: u64,
    pub allocated_count: u64,
}

/// A class by its kebab-case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassName(pub Class);

impl Serialize for ClassName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for ClassName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Class::from_name(&name)
            .map(ClassName)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown class `{name}`")))
    }
}

/// A kind by its name (`page`, `slab`, `percpu`, `vmalloc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindName(pub Kind);

impl Serialize for KindName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for KindName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .map(KindName)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown kind `{name}` (valid: page, slab, percpu, vmalloc)"
                ))
            })
    }
}

/// An execution context by its name (`task`, `softirq`, `hardirq`, `nmi`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContextName {
    Task,
    Softirq,
    Hardirq,
    Nmi,
}

impl From<ExecContext> for ContextName {
    fn from(c: ExecContext) -> Self {
        match c {
            ExecContext::Task => ContextName::Task,
            ExecContext::Softirq => ContextName::Softirq,
            ExecContext::Hardirq => ContextName::Hardirq,
            ExecContext::Nmi => ContextName::Nmi,
        }
    }
}

impl From<ContextName> for ExecContext {
    fn from(c: ContextName) -> Self {
        match c {
            ContextName::Task => ExecContext::Task,
            ContextName::Softirq => ExecContext::Softirq,
            ContextName::Hardirq => ExecContext::Hardirq,
            ContextName::Nmi => ExecContext::Nmi,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassV1 {
    pub class: ClassName,
    pub bytes: u64,
    pub allocations: u64,
    pub stacks: u64,
    pub in_total: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallerV1 {
    pub function: String,
    pub bytes: u64,
    pub allocations: u64,
    pub allocated_bytes: u64,
    pub stacks: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OwnerV1 {
    pub tgid: u32,
    pub pid: u32,
    pub comm: String,
    pub bytes: u64,
    pub allocations: u64,
    pub context: ContextName,
    pub cgroup_id: u64,
    pub cgroup: Option<String>,
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OwnersV1 {
    pub attributed_bytes: u64,
    pub processes: Vec<ProcessOwnerV1>,
    pub cgroups: Vec<CgroupOwnerV1>,
    pub pods: Vec<PodOwnerV1>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcessOwnerV1 {
    pub context: ContextName,
    pub tgid: u32,
    pub comm: String,
    pub cmdline: Option<String>,
    pub alive: bool,
    pub cgroup_id: u64,
    pub cgroup: Option<String>,
    pub memory_cgroup: Option<String>,
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
    pub bytes: u64,
    pub allocations: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CgroupOwnerV1 {
    pub cgroup_id: u64,
    pub path: Option<String>,
    pub pod_uid: Option<String>,
    pub qos: Option<String>,
    pub container_id: Option<String>,
    pub runtime: Option<String>,
    pub unit: Option<String>,
    pub bytes: u64,
    pub allocations: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodOwnerV1 {
    pub pod_uid: String,
    pub qos: Option<String>,
    pub containers: Vec<String>,
    pub bytes: u64,
    pub allocations: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GrowthV1 {
    pub series: Vec<u64>,
    pub at_secs: Vec<f64>,
    pub growing: bool,
    pub bytes_per_sec: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotV1 {
    pub at_secs: f64,
    pub totals: TotalsV1,
    pub stacks: Vec<SnapshotStackV1>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotStackV1 {
    pub kind: KindName,
    pub stack_id: Option<u32>,
    pub caller: String,
    pub class: ClassName,
    pub bytes: u64,
    pub allocations: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FrameV1 {
    /// `0x…` hex.
    pub address: String,
    pub symbol: Option<String>,
    pub module: Option<String>,
    pub offset: Option<u64>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub inlined: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackV1 {
    pub kind: KindName,
    pub class: ClassName,
    /// Derived from the class and frames (written, ignored when read).
    #[serde(default)]
    pub class_detail: Option<String>,
    pub cache: Option<String>,
    // Added within schema 1: absent in files of earlier builds.
    #[serde(default)]
    pub cache_merged: Vec<String>,
    pub bytes_req: Option<u64>,
    pub stack_id: Option<u32>,
    pub bytes: u64,
    pub allocations: u64,
    pub allocated_bytes: u64,
    pub allocated_count: u64,
    pub orders: Vec<u8>,
    pub oldest_age_secs: Option<f64>,
    pub caller: String,
    pub owners: Vec<OwnerV1>,
    /// Derived: `growth.growing` (written, ignored when read).
    #[serde(default)]
    pub growing: Option<bool>,
    pub growth: Option<GrowthV1>,
    pub frames: Vec<FrameV1>,
}

/// A process with the socket open (also the shape of `memtrace sockets --json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SocketOwnerV1 {
    pub pid: u32,
    pub comm: String,
    pub cmdline: Option<String>,
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
    pub cgroup: Option<String>,
}

/// One socket (also the shape of `memtrace sockets --json`, whose fields keep this order).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SocketV1 {
    pub netns: u64,
    pub family: String,
    pub socket_type: String,
    pub state: String,
    pub local: String,
    pub remote: String,
    pub inode: u64,
    pub recv_queue: u64,
    pub send_queue: u64,
    #[serde(default)]
    pub accept_queue: Option<u64>,
    pub rmem_alloc: u64,
    pub rcvbuf: u64,
    pub wmem_alloc: u64,
    pub wmem_queued: u64,
    pub sndbuf: u64,
    pub fwd_alloc: u64,
    pub optmem: u64,
    pub backlog: u64,
    pub drops: u64,
    pub held_bytes: u64,
    #[serde(default)]
    pub listener: Option<u64>,
    pub owners: Vec<SocketOwnerV1>,
}

// ---------------------------------------------------------------------------------------------
// Model → schema
// ---------------------------------------------------------------------------------------------

impl From<&Report> for ReportV1 {
    fn from(r: &Report) -> Self {
        let Report {
            session,
            counters,
            failure_counters,
            programs,
            totals,
            classes,
            class_filter,
            callers,
            stacks,
            owners,
            snapshots,
            sockets,
        } = r;
        ReportV1 {
            schema: VERSION,
            session: session.into(),
            counters: counters
                .iter()
                .map(|(n, v)| ((*n).to_string(), serde_json::Value::from(*v)))
                .collect(),
            failure_counters: failure_counters.iter().map(|c| (*c).to_string()).collect(),
            programs: programs.iter().map(Into::into).collect(),
            totals: totals.into(),
            classes: classes.iter().map(Into::into).collect(),
            class_filter: class_filter
                .as_ref()
                .map(|cs| cs.iter().copied().map(ClassName).collect()),
            callers: callers.iter().map(Into::into).collect(),
            stacks: stacks.iter().map(Into::into).collect(),
            owners: owners.into(),
            snapshots: snapshots.iter().map(Into::into).collect(),
            sockets: sockets.iter().map(Into::into).collect(),
        }
    }
}

impl From<&SessionInfo> for SessionV1 {
    fn from(s: &SessionInfo) -> Self {
        let SessionInfo {
            hostname,
            kernel,
            started_at_unix,
            duration_secs,
            requested_duration_secs,
            ended_by,
            min_age_secs,
            page_size,
            max_allocations,
            max_objects,
            map_memory_bytes,
            max_stacks,
            sample_every,
            grace_secs,
            grace_note,
            interval_secs,
            filters,
            sort,
            cgroups_note,
            hooks,
            kinds,
            stack_rotation,
            owner_recycling,
            cgroups_expired,
            slab_sample_every,
            slab_sample_start,
            slab_rate_changes,
        } = s;
        SessionV1 {
            hostname: hostname.clone(),
            kernel: kernel.clone(),
            started_at_unix: *started_at_unix,
            duration_secs: *duration_secs,
            requested_duration_secs: *requested_duration_secs,
            ended_by: ended_by.clone(),
            min_age_secs: *min_age_secs,
            page_size: *page_size,
            max_allocations: *max_allocations,
            max_objects: *max_objects,
            map_memory_bytes: *map_memory_bytes,
            max_stacks: *max_stacks,
            sample_every: *sample_every,
            estimated: s.estimated(),
            grace_secs: *grace_secs,
            grace_note: grace_note.clone(),
            interval_secs: *interval_secs,
            filters: filters.clone(),
            sort: sort.clone(),
            cgroups_note: cgroups_note.clone(),
            hooks: hooks.clone(),
            kinds: kinds.iter().map(Into::into).collect(),
            stack_rotation: (!stack_rotation.is_empty()).then(|| {
                let StackRotationStats {
                    rotations,
                    stacks_retired,
                    races,
                    retired_kept,
                    folded,
                    failures,
                    last_error,
                } = stack_rotation.clone();
                StackRotationV1 {
                    rotations,
                    stacks_retired,
                    races,
                    retired_kept,
                    folded,
                    failures,
                    last_error,
                }
            }),
            cgroups_expired: *cgroups_expired,
            owner_recycling: (!owner_recycling.is_empty()).then(|| owner_recycling.into()),
            slab_sample_every: Some(*slab_sample_every),
            slab_sample_start: Some(*slab_sample_start),
            slab_rate_changes: slab_rate_changes
                .iter()
                .map(|c| RateChangeV1 {
                    at_secs: c.at_secs,
                    every: c.every,
                })
                .collect(),
            slab_estimated: *slab_sample_every > 1,
        }
    }
}

impl From<&KindStatus> for KindStatusV1 {
    fn from(k: &KindStatus) -> Self {
        let KindStatus {
            kind,
            traced,
            hooks,
            note,
        } = k;
        KindStatusV1 {
            kind: kind.clone(),
            traced: *traced,
            hooks: hooks.clone(),
            note: note.clone(),
        }
    }
}

impl From<&ProgramStats> for ProgramV1 {
    fn from(p: &ProgramStats) -> Self {
        let ProgramStats {
            name,
            recursion_misses,
            run_count,
            run_time_ns,
        } = p;
        ProgramV1 {
            name: name.clone(),
            recursion_misses: *recursion_misses,
            run_count: *run_count,
            run_time_ns: *run_time_ns,
        }
    }
}

impl From<&Totals> for TotalsV1 {
    fn from(t: &Totals) -> Self {
        let Totals {
            bytes,
            allocations,
            allocated_bytes,
            allocated_count,
        } = t;
        TotalsV1 {
            bytes: *bytes,
            allocations: *allocations,
            allocated_bytes: *allocated_bytes,
            allocated_count: *allocated_count,
        }
    }
}

impl From<&ClassSummary> for ClassV1 {
    fn from(c: &ClassSummary) -> Self {
        let ClassSummary {
            class,
            bytes,
            allocations,
            stacks,
            in_total,
        } = c;
        ClassV1 {
            class: ClassName(*class),
            bytes: *bytes,
            allocations: *allocations,
            stacks: *stacks,
            in_total: *in_total,
        }
    }
}

impl From<&CallerSummary> for CallerV1 {
    fn from(c: &CallerSummary) -> Self {
        let CallerSummary {
            function,
            bytes,
            allocations,
            allocated_bytes,
            stacks,
        } = c;
        CallerV1 {
            function: function.clone(),
            bytes: *bytes,
            allocations: *allocations,
            allocated_bytes: *allocated_bytes,
            stacks: *stacks,
        }
    }
}

impl From<&Owner> for OwnerV1 {
    fn from(o: &Owner) -> Self {
        let Owner {
            tgid,
            pid,
            comm,
            bytes,
            allocations,
            context,
            cgroup_id,
            cgroup,
            pod_uid,
            container_id,
        } = o;
        OwnerV1 {
            tgid: *tgid,
            pid: *pid,
            comm: comm.clone(),
            bytes: *bytes,
            allocations: *allocations,
            context: (*context).into(),
            cgroup_id: *cgroup_id,
            cgroup: cgroup.clone(),
            pod_uid: pod_uid.clone(),
            container_id: container_id.clone(),
        }
    }
}

impl From<&OwnerSummary> for OwnersV1 {
    fn from(o: &OwnerSummary) -> Self {
        let OwnerSummary {
            attributed_bytes,
            processes,
            cgroups,
            pods,
        } = o;
        OwnersV1 {
            attributed_bytes: *attributed_bytes,
            processes: processes.iter().map(Into::into).collect(),
            cgroups: cgroups.iter().map(Into::into).collect(),
            pods: pods.iter().map(Into::into).collect(),
        }
    }
}

impl From<&ProcessOwner> for ProcessOwnerV1 {
    fn from(p: &ProcessOwner) -> Self {
        let ProcessOwner {
            context,
            tgid,
            comm,
            cmdline,
            alive,
            cgroup_id,
            cgroup,
            memory_cgroup,
            pod_uid,
            container_id,
            bytes,
            allocations,
        } = p;
        ProcessOwnerV1 {
            context: (*context).into(),
            tgid: *tgid,
            comm: comm.clone(),
            cmdline: cmdline.clone(),
            alive: *alive,
            cgroup_id: *cgroup_id,
            cgroup: cgroup.clone(),
            memory_cgroup: memory_cgroup.clone(),
            pod_uid: pod_uid.clone(),
            container_id: container_id.clone(),
            bytes: *bytes,
            allocations: *allocations,
        }
    }
}

impl From<&CgroupOwner> for CgroupOwnerV1 {
    fn from(c: &CgroupOwner) -> Self {
        let CgroupOwner {
            cgroup_id,
            path,
            pod_uid,
            qos,
            container_id,
            runtime,
            unit,
            bytes,
            allocations,
        } = c;
        CgroupOwnerV1 {
            cgroup_id: *cgroup_id,
            path: path.clone(),
            pod_uid: pod_uid.clone(),
            qos: qos.clone(),
            container_id: container_id.clone(),
            runtime: runtime.clone(),
            unit: unit.clone(),
            bytes: *bytes,
            allocations: *allocations,
        }
    }
}

impl From<&PodOwner> for PodOwnerV1 {
    fn from(p: &PodOwner) -> Self {
        let PodOwner {
            pod_uid,
            qos,
            containers,
            bytes,
            allocations,
        } = p;
        PodOwnerV1 {
            pod_uid: pod_uid.clone(),
            qos: qos.clone(),
            containers: containers.clone(),
            bytes: *bytes,
            allocations: *allocations,
        }
    }
}

impl From<&Growth> for GrowthV1 {
    fn from(g: &Growth) -> Self {
        let Growth {
            series,
            at_secs,
            growing,
            bytes_per_sec,
        } = g;
        GrowthV1 {
            series: series.clone(),
            at_secs: at_secs.clone(),
            growing: *growing,
            bytes_per_sec: *bytes_per_sec,
        }
    }
}

impl From<&Snapshot> for SnapshotV1 {
    fn from(s: &Snapshot) -> Self {
        let Snapshot {
            at_secs,
            totals,
            stacks,
        } = s;
        SnapshotV1 {
            at_secs: *at_secs,
            totals: totals.into(),
            stacks: stacks.iter().map(Into::into).collect(),
        }
    }
}

impl From<&SnapshotStack> for SnapshotStackV1 {
    fn from(s: &SnapshotStack) -> Self {
        let SnapshotStack {
            kind,
            stack_id,
            caller,
            class,
            bytes,
            allocations,
        } = s;
        SnapshotStackV1 {
            kind: KindName(*kind),
            stack_id: *stack_id,
            caller: caller.clone(),
            class: ClassName(*class),
            bytes: *bytes,
            allocations: *allocations,
        }
    }
}

impl From<&Frame> for FrameV1 {
    fn from(f: &Frame) -> Self {
        let Frame {
            address,
            symbol,
            module,
            offset,
            file,
            line,
            inlined,
        } = f;
        FrameV1 {
            address: format!("{address:#x}"),
            symbol: symbol.clone(),
            module: module.clone(),
            offset: *offset,
            file: file.clone(),
            line: *line,
            inlined: inlined.clone(),
        }
    }
}

impl From<&StackReport> for StackV1 {
    fn from(s: &StackReport) -> Self {
        let StackReport {
            kind,
            class,
            cache,
            cache_merged,
            bytes_req,
            stack_id,
            bytes,
            allocations,
            allocated_bytes,
            allocated_count,
            orders,
            oldest_age_secs,
            caller,
            owners,
            frames,
            growth,
        } = s;
        StackV1 {
            kind: KindName(*kind),
            class: ClassName(*class),
            class_detail: s.class_detail().map(str::to_owned),
            cache: cache.clone(),
            cache_merged: cache_merged.clone(),
            bytes_req: *bytes_req,
            stack_id: *stack_id,
            bytes: *bytes,
            allocations: *allocations,
            allocated_bytes: *allocated_bytes,
            allocated_count: *allocated_count,
            orders: orders.clone(),
            oldest_age_secs: *oldest_age_secs,
            caller: caller.clone(),
            owners: owners.iter().map(Into::into).collect(),
            growing: growth.as_ref().map(|g| g.growing),
            growth: growth.as_ref().map(Into::into),
            frames: frames.iter().map(Into::into).collect(),
        }
    }
}

impl From<&SocketOwner> for SocketOwnerV1 {
    fn from(o: &SocketOwner) -> Self {
        let SocketOwner {
            pid,
            comm,
            cmdline,
            pod_uid,
            container_id,
            cgroup,
        } = o;
        SocketOwnerV1 {
            pid: *pid,
            comm: comm.clone(),
            cmdline: cmdline.clone(),
            pod_uid: pod_uid.clone(),
            container_id: container_id.clone(),
            cgroup: cgroup.clone(),
        }
    }
}

impl From<&Socket> for SocketV1 {
    fn from(s: &Socket) -> Self {
        let Socket {
            netns,
            family,
            socket_type,
            state,
            local,
            remote,
            inode,
            recv_queue,
            send_queue,
            accept_queue,
            rmem_alloc,
            rcvbuf,
            wmem_alloc,
            wmem_queued,
            sndbuf,
            fwd_alloc,
            optmem,
            backlog,
            drops,
            held_bytes,
            listener,
            owners,
        } = s;
        SocketV1 {
            netns: *netns,
            family: family.clone(),
            socket_type: socket_type.clone(),
            state: state.clone(),
            local: local.clone(),
            remote: remote.clone(),
            inode: *inode,
            recv_queue: *recv_queue,
            send_queue: *send_queue,
            accept_queue: *accept_queue,
            rmem_alloc: *rmem_alloc,
            rcvbuf: *rcvbuf,
            wmem_alloc: *wmem_alloc,
            wmem_queued: *wmem_queued,
            sndbuf: *sndbuf,
            fwd_alloc: *fwd_alloc,
            optmem: *optmem,
            backlog: *backlog,
            drops: *drops,
            held_bytes: *held_bytes,
            listener: *listener,
            owners: owners.iter().map(Into::into).collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Schema → model
// ---------------------------------------------------------------------------------------------

impl TryFrom<ReportV1> for Report {
    type Error = String;

    fn try_from(r: ReportV1) -> Result<Self, String> {
        let ReportV1 {
            schema: _,
            session,
            counters: saved_counters,
            failure_counters: _,
            programs,
            totals,
            classes,
            class_filter,
            callers,
            stacks,
            owners,
            snapshots,
            sockets,
        } = r;
        // Counters in `Counter::ALL` order, by name; a saved session from a build with fewer
        // counters shows the missing ones as 0; a name this build does not know (a newer
        // memtrace added it, within the same schema) is left out.
        let mut counters: Vec<(&'static str, u64)> =
            Counter::ALL.iter().map(|c| (c.name(), 0)).collect();
        for (name, value) in &saved_counters {
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
        Ok(Report {
            session: session.into(),
            counters,
            failure_counters,
            programs: programs.into_iter().map(Into::into).collect(),
            totals: totals.into(),
            classes: classes.into_iter().map(Into::into).collect(),
            class_filter: class_filter.map(|cs| cs.into_iter().map(|c| c.0).collect()),
            callers: callers.into_iter().map(Into::into).collect(),
            stacks: stacks
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            owners: owners.into(),
            snapshots: snapshots.into_iter().map(Into::into).collect(),
            sockets: sockets.into_iter().map(Into::into).collect(),
        })
    }
}

impl From<SessionV1> for SessionInfo {
    fn from(s: SessionV1) -> Self {
        let SessionV1 {
            hostname,
            kernel,
            started_at_unix,
            duration_secs,
            requested_duration_secs,
            ended_by,
            min_age_secs,
            page_size,
            max_allocations,
            max_objects,
            map_memory_bytes,
            max_stacks,
            sample_every,
            estimated: _,
            grace_secs,
            grace_note,
            interval_secs,
            filters,
            sort,
            cgroups_note,
            hooks,
            kinds,
            stack_rotation,
            cgroups_expired,
            owner_recycling,
            slab_sample_every,
            slab_sample_start,
            slab_rate_changes,
            slab_estimated: _,
        } = s;
        let slab_sample_every = slab_sample_every.unwrap_or(sample_every);
        SessionInfo {
            hostname,
            kernel,
            started_at_unix,
            duration_secs,
            requested_duration_secs,
            ended_by,
            min_age_secs,
            page_size,
            max_allocations,
            max_objects,
            map_memory_bytes,
            max_stacks,
            sample_every,
            grace_secs,
            grace_note,
            interval_secs,
            filters,
            sort,
            cgroups_note,
            hooks,
            kinds: kinds.into_iter().map(Into::into).collect(),
            stack_rotation: stack_rotation
                .map(|r| {
                    let StackRotationV1 {
                        rotations,
                        stacks_retired,
                        races,
                        retired_kept,
                        folded,
                        failures,
                        last_error,
                    } = r;
                    StackRotationStats {
                        rotations,
                        stacks_retired,
                        races,
                        retired_kept,
                        folded,
                        failures,
                        last_error,
                    }
                })
                .unwrap_or_default(),
            owner_recycling: owner_recycling.map(Into::into).unwrap_or_default(),
            cgroups_expired,
            slab_sample_every,
            slab_sample_start: slab_sample_start.unwrap_or(slab_sample_every),
            slab_rate_changes: slab_rate_changes
                .into_iter()
                .map(|c| RateChange {
                    at_secs: c.at_secs,
                    every: c.every,
                })
                .collect(),
        }
    }
}

impl From<KindStatusV1> for KindStatus {
    fn from(k: KindStatusV1) -> Self {
        let KindStatusV1 {
            kind,
            traced,
            hooks,
            note,
        } = k;
        KindStatus {
            kind,
            traced,
            hooks,
            note,
        }
    }
}

impl From<ProgramV1> for ProgramStats {
    fn from(p: ProgramV1) -> Self {
        let ProgramV1 {
            name,
            recursion_misses,
            run_count,
            run_time_ns,
        } = p;
        ProgramStats {
            name,
            recursion_misses,
            run_count,
            run_time_ns,
        }
    }
}

impl From<TotalsV1> for Totals {
    fn from(t: TotalsV1) -> Self {
        let TotalsV1 {
            bytes,
            allocations,
            allocated_bytes,
            allocated_count,
        } = t;
        Totals {
            bytes,
            allocations,
            allocated_bytes,
            allocated_count,
        }
    }
}

impl From<ClassV1> for ClassSummary {
    fn from(c: ClassV1) -> Self {
        let ClassV1 {
            class,
            bytes,
            allocations,
            stacks,
            in_total,
        } = c;
        ClassSummary {
            class: class.0,
            bytes,
            allocations,
            stacks,
            in_total,
        }
    }
}

impl From<CallerV1> for CallerSummary {
    fn from(c: CallerV1) -> Self {
        let CallerV1 {
            function,
            bytes,
            allocations,
            allocated_bytes,
            stacks,
        } = c;
        CallerSummary {
            function,
            bytes,
            allocations,
            allocated_bytes,
            stacks,
        }
    }
}

impl From<OwnerV1> for Owner {
    fn from(o: OwnerV1) -> Self {
        let OwnerV1 {
            tgid,
            pid,
            comm,
            bytes,
            allocations,
            context,
            cgroup_id,
            cgroup,
            pod_uid,
            container_id,
        } = o;
        Owner {
            tgid,
            pid,
            comm,
            bytes,
            allocations,
            context: context.into(),
            cgroup_id,
            cgroup,
            pod_uid,
            container_id,
        }
    }
}

impl From<OwnersV1> for OwnerSummary {
    fn from(o: OwnersV1) -> Self {
        let OwnersV1 {
            attributed_bytes,
            processes,
            cgroups,
            pods,
        } = o;
        OwnerSummary {
            attributed_bytes,
            processes: processes.into_iter().map(Into::into).collect(),
            cgroups: cgroups.into_iter().map(Into::into).collect(),
            pods: pods.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<ProcessOwnerV1> for ProcessOwner {
    fn from(p: ProcessOwnerV1) -> Self {
        let ProcessOwnerV1 {
            context,
            tgid,
            comm,
            cmdline,
            alive,
            cgroup_id,
            cgroup,
            memory_cgroup,
            pod_uid,
            container_id,
            bytes,
            allocations,
        } = p;
        ProcessOwner {
            context: context.into(),
            tgid,
            comm,
            cmdline,
            alive,
            cgroup_id,
            cgroup,
            memory_cgroup,
            pod_uid,
            container_id,
            bytes,
            allocations,
        }
    }
}

impl From<CgroupOwnerV1> for CgroupOwner {
    fn from(c: CgroupOwnerV1) -> Self {
        let CgroupOwnerV1 {
            cgroup_id,
            path,
            pod_uid,
            qos,
            container_id,
            runtime,
            unit,
            bytes,
            allocations,
        } = c;
        CgroupOwner {
            cgroup_id,
            path,
            pod_uid,
            qos,
            container_id,
            runtime,
            unit,
            bytes,
            allocations,
        }
    }
}

impl From<PodOwnerV1> for PodOwner {
    fn from(p: PodOwnerV1) -> Self {
        let PodOwnerV1 {
            pod_uid,
            qos,
            containers,
            bytes,
            allocations,
        } = p;
        PodOwner {
            pod_uid,
            qos,
            containers,
            bytes,
            allocations,
        }
    }
}

impl From<GrowthV1> for Growth {
    fn from(g: GrowthV1) -> Self {
        let GrowthV1 {
            series,
            at_secs,
            growing,
            bytes_per_sec,
        } = g;
        Growth {
            series,
            at_secs,
            growing,
            bytes_per_sec,
        }
    }
}

impl From<SnapshotV1> for Snapshot {
    fn from(s: SnapshotV1) -> Self {
        let SnapshotV1 {
            at_secs,
            totals,
            stacks,
        } = s;
        Snapshot {
            at_secs,
            totals: totals.into(),
            stacks: stacks.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<SnapshotStackV1> for SnapshotStack {
    fn from(s: SnapshotStackV1) -> Self {
        let SnapshotStackV1 {
            kind,
            stack_id,
            caller,
            class,
            bytes,
            allocations,
        } = s;
        SnapshotStack {
            kind: kind.0,
            stack_id,
            caller,
            class: class.0,
            bytes,
            allocations,
        }
    }
}

impl TryFrom<FrameV1> for Frame {
    type Error = String;

    fn try_from(f: FrameV1) -> Result<Self, String> {
        let FrameV1 {
            address,
            symbol,
            module,
            offset,
            file,
            line,
            inlined,
        } = f;
        let hex = address
            .strip_prefix("0x")
            .ok_or_else(|| format!("frame address `{address}` is not 0x-prefixed hex"))?;
        let address =
            u64::from_str_radix(hex, 16).map_err(|e| format!("frame address `{address}`: {e}"))?;
        Ok(Frame {
            address,
            symbol,
            module,
            offset,
            file,
            line,
            inlined,
        })
    }
}

impl TryFrom<StackV1> for StackReport {
    type Error = String;

    fn try_from(s: StackV1) -> Result<Self, String> {
        let StackV1 {
            kind,
            class,
            class_detail: _,
            cache,
            cache_merged,
            bytes_req,
            stack_id,
            bytes,
            allocations,
            allocated_bytes,
            allocated_count,
            orders,
            oldest_age_secs,
            caller,
            owners,
            growing: _,
            growth,
            frames,
        } = s;
        Ok(StackReport {
            kind: kind.0,
            class: class.0,
            cache,
            cache_merged,
            bytes_req,
            stack_id,
            bytes,
            allocations,
            allocated_bytes,
            allocated_count,
            orders,
            oldest_age_secs,
            caller,
            owners: owners.into_iter().map(Into::into).collect(),
            frames: frames
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            growth: growth.map(Into::into),
        })
    }
}

impl From<SocketOwnerV1> for SocketOwner {
    fn from(o: SocketOwnerV1) -> Self {
        let SocketOwnerV1 {
            pid,
            comm,
            cmdline,
            pod_uid,
            container_id,
            cgroup,
        } = o;
        SocketOwner {
            pid,
            comm,
            cmdline,
            pod_uid,
            container_id,
            cgroup,
        }
    }
}

impl From<SocketV1> for Socket {
    fn from(s: SocketV1) -> Self {
        let SocketV1 {
            netns,
            family,
            socket_type,
            state,
            local,
            remote,
            inode,
            recv_queue,
            send_queue,
            accept_queue,
            rmem_alloc,
            rcvbuf,
            wmem_alloc,
            wmem_queued,
            sndbuf,
            fwd_alloc,
            optmem,
            backlog,
            drops,
            held_bytes,
            listener,
            owners,
        } = s;
        Socket {
            netns,
            family,
            socket_type,
            state,
            local,
            remote,
            inode,
            recv_queue,
            send_queue,
            accept_queue,
            rmem_alloc,
            rcvbuf,
            wmem_alloc,
            wmem_queued,
            sndbuf,
            fwd_alloc,
            optmem,
            backlog,
            drops,
            held_bytes,
            listener,
            owners: owners.into_iter().map(Into::into).collect(),
        }
    }
}

/// The report as compact JSON (sorted keys, no indentation, a trailing newline): what
/// `memtrace serve` answers on `/report.json`.
pub fn to_vec_compact(report: &Report) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context as _;
    let value =
        serde_json::to_value(ReportV1::from(report)).context("serializing the JSON report")?;
    let mut v = serde_json::to_vec(&value).context("serializing the JSON report")?;
    v.push(b'\n');
    Ok(v)
}

/// The report as JSON: sorted keys, two-space indent, a trailing newline.
pub fn to_string_pretty(report: &Report) -> anyhow::Result<String> {
    use anyhow::Context as _;
    // Through a `Value`: its maps sort keys, the order every file has had.
    let value =
        serde_json::to_value(ReportV1::from(report)).context("serializing the JSON report")?;
    let mut s = serde_json::to_string_pretty(&value).context("serializing the JSON report")?;
    s.push('\n');
    Ok(s)
}
