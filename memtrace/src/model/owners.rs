//! Who holds a stack's memory: the outstanding allocations walked per (kind, stack), their
//! owners (process, thread, cgroup, execution context) aggregated per stack, and the owner
//! summary by process and by cgroup.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::frames::context_from_frames;
use super::{
    CgroupOwner, ExecContext, Frame, Owner, OwnerSummary, PodOwner, ProcessOwner, StackReport,
};

/// Owners listed per stack when `BuildOptions::max_owners` is 0.
pub const DEFAULT_MAX_OWNERS: usize = 5;

/// `comm` up to its first NUL, zero-padded: a hashable owner name without an allocation per
/// record (turned into a string once per owner, [`comm_string`]).
fn comm_key(comm: &[u8]) -> [u8; 16] {
    let mut key = [0u8; 16];
    for (k, &c) in key.iter_mut().zip(comm).take_while(|(_, c)| **c != 0) {
        *k = c;
    }
    key
}

/// `comm` up to its first NUL.
pub(crate) fn comm_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// One outstanding allocation, page or object, as the walk sees it (or several identical
/// ones: `allocations`).
pub(crate) struct Alloc<'a> {
    pub(crate) bytes: u64,
    pub(crate) allocations: u64,
    pub(crate) age_ns: u64,
    pub(crate) tgid: u32,
    pub(crate) pid: u32,
    pub(crate) comm: &'a [u8],
    /// `None`: the program could not tell (decided from the stack later).
    pub(crate) context: Option<ExecContext>,
    pub(crate) cgroup_id: u64,
    /// Pages only.
    pub(crate) order: Option<u8>,
    /// Objects only; 0 when the event has no `bytes_req`.
    pub(crate) bytes_req: u64,
}

/// What the walk over the outstanding records found for one (kind, slot), respecting
/// `--min-age`.
#[derive(Default)]
pub(crate) struct WalkAcc {
    pub(crate) bytes: u64,
    pub(crate) count: u64,
    pub(crate) orders: BTreeSet<u8>,
    pub(crate) oldest_age_ns: Option<u64>,
    /// Every owner, untruncated (the context is settled once the frames are known).
    pub(crate) owners: HashMap<OwnerKey, (u64, u64)>,
    pub(crate) bytes_req: u64,
    /// Some record carried a requested size.
    pub(crate) req_seen: bool,
}

impl WalkAcc {
    pub(crate) fn add(&mut self, a: &Alloc<'_>) {
        self.bytes = self.bytes.saturating_add(a.bytes);
        self.count = self.count.saturating_add(a.allocations);
        if let Some(order) = a.order {
            self.orders.insert(order);
        }
        if a.bytes_req > 0 {
            self.req_seen = true;
            self.bytes_req = self.bytes_req.saturating_add(a.bytes_req);
        }
        self.oldest_age_ns = Some(self.oldest_age_ns.map_or(a.age_ns, |o| o.max(a.age_ns)));
        let owner = self
            .owners
            .entry(OwnerKey {
                context: a.context,
                tgid: a.tgid,
                pid: a.pid,
                comm: comm_key(a.comm),
                cgroup_id: a.cgroup_id,
            })
            .or_default();
        owner.0 = owner.0.saturating_add(a.bytes);
        owner.1 = owner.1.saturating_add(a.allocations);
    }

    /// Every owner, unsorted; contexts not known yet are `Task` (see [`settle_owners`]).
    pub(crate) fn all_owners(&self) -> Vec<(Option<ExecContext>, Owner)> {
        self.owners
            .iter()
            .map(|(k, (bytes, allocations))| {
                (
                    k.context,
                    Owner {
                        tgid: k.tgid,
                        pid: k.pid,
                        comm: comm_string(&k.comm),
                        bytes: *bytes,
                        allocations: *allocations,
                        context: k.context.unwrap_or_default(),
                        cgroup_id: k.cgroup_id,
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    /// Requested bytes of a slab stack whose outstanding bytes are `bytes`. When the records
    /// hold less than the aggregate (a full table), the walk's requested/allocated ratio is
    /// applied to `bytes`. `None` when nothing says what was requested.
    pub(crate) fn bytes_req(&self, bytes: u64) -> Option<u64> {
        if !self.req_seen {
            return (bytes == 0).then_some(0);
        }
        let req = if self.bytes == 0 || self.bytes == bytes {
            self.bytes_req
        } else {
            let scaled = u128::from(self.bytes_req) * u128::from(bytes) / u128::from(self.bytes);
            u64::try_from(scaled).unwrap_or(u64::MAX)
        };
        Some(req.min(bytes))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct OwnerKey {
    context: Option<ExecContext>,
    tgid: u32,
    pid: u32,
    comm: [u8; 16],
    cgroup_id: u64,
}

/// Copies the resolved details (command lines, cgroup paths, pods) of `old` onto the rebuilt
/// `new` summary, matching processes by (tgid, cgroup id) and cgroups by id, and sums the
/// pods again from the processes.
pub(crate) fn merge_owner_details(mut new: OwnerSummary, old: &OwnerSummary) -> OwnerSummary {
    for p in &mut new.processes {
        if let Some(o) = old
            .processes
            .iter()
            .find(|o| o.tgid == p.tgid && o.cgroup_id == p.cgroup_id && o.context == p.context)
        {
            let (bytes, allocations) = (p.bytes, p.allocations);
            *p = o.clone();
            p.bytes = bytes;
            p.allocations = allocations;
        }
    }
    for c in &mut new.cgroups {
        if let Some(o) = old.cgroups.iter().find(|o| o.cgroup_id == c.cgroup_id) {
            let (bytes, allocations) = (c.bytes, c.allocations);
            *c = o.clone();
            c.bytes = bytes;
            c.allocations = allocations;
        }
    }
    let mut pods: BTreeMap<String, PodOwner> = BTreeMap::new();
    for p in &new.processes {
        let Some(uid) = &p.pod_uid else { continue };
        let pod = pods.entry(uid.clone()).or_insert_with(|| PodOwner {
            pod_uid: uid.clone(),
            qos: old
                .pods
                .iter()
                .find(|o| &o.pod_uid == uid)
                .and_then(|o| o.qos.clone()),
            ..Default::default()
        });
        pod.bytes = pod.bytes.saturating_add(p.bytes);
        pod.allocations = pod.allocations.saturating_add(p.allocations);
        if let Some(c) = &p.container_id {
            if !pod.containers.contains(c) {
                pod.containers.push(c.clone());
            }
        }
    }
    new.pods = pods.into_values().collect();
    new.pods
        .sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.pod_uid.cmp(&b.pod_uid)));
    new
}

/// Settles the context of every owner (the program's, else the stack's), folds interrupt
/// contexts into one owner each (the interrupted task is a bystander), and sorts by bytes.
pub(crate) fn settle_owners(
    list: Vec<(Option<ExecContext>, Owner)>,
    frames: &[Frame],
) -> Vec<Owner> {
    let stack_context = context_from_frames(frames);
    let mut merged: HashMap<(ExecContext, u32, u32, String, u64), Owner> = HashMap::new();
    for (ctx, mut o) in list {
        o.context = ctx.unwrap_or(stack_context);
        if o.context.is_interrupt() {
            o.tgid = 0;
            o.pid = 0;
            o.cgroup_id = 0;
            o.comm = o.context.label().to_string();
        }
        let e = merged
            .entry((o.context, o.tgid, o.pid, o.comm.clone(), o.cgroup_id))
            .or_insert_with(|| Owner {
                bytes: 0,
                allocations: 0,
                ..o.clone()
            });
        e.bytes = e.bytes.saturating_add(o.bytes);
        e.allocations = e.allocations.saturating_add(o.allocations);
    }
    let mut owners: Vec<Owner> = merged.into_values().collect();
    owners.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(b.allocations.cmp(&a.allocations))
            .then(a.context.cmp(&b.context))
            .then(a.tgid.cmp(&b.tgid))
            .then(a.pid.cmp(&b.pid))
            .then(a.comm.cmp(&b.comm))
            .then(a.cgroup_id.cmp(&b.cgroup_id))
    });
    owners
}

/// By process (all threads; per cgroup) and by cgroup, over `stacks` (their untruncated
/// owners). Names, pods and command lines are filled in later (`attribution::annotate`).
pub(crate) fn summarize_owners<'a>(stacks: impl Iterator<Item = &'a StackReport>) -> OwnerSummary {
    // (context, tgid, cgroup) → (bytes, allocations, comm → bytes)
    type ProcKey = (ExecContext, u32, u64);
    type ProcAcc = (u64, u64, HashMap<String, u64>);
    let mut procs: HashMap<ProcKey, ProcAcc> = HashMap::new();
    let mut cgroups: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut attributed = 0u64;
    for s in stacks {
        for o in &s.owners {
            attributed = attributed.saturating_add(o.bytes);
            let p = procs.entry((o.context, o.tgid, o.cgroup_id)).or_default();
            p.0 = p.0.saturating_add(o.bytes);
            p.1 = p.1.saturating_add(o.allocations);
            *p.2.entry(o.comm.clone()).or_default() += o.bytes;
            if !o.context.is_interrupt() {
                let c = cgroups.entry(o.cgroup_id).or_default();
                c.0 = c.0.saturating_add(o.bytes);
                c.1 = c.1.saturating_add(o.allocations);
            }
        }
    }
    let mut processes: Vec<ProcessOwner> = procs
        .into_iter()
        .map(
            |((context, tgid, cgroup_id), (bytes, allocations, comms))| {
                let comm = comms
                    .into_iter()
                    .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                    .map(|(c, _)| c)
                    .unwrap_or_default();
                ProcessOwner {
                    context,
                    tgid,
                    comm,
                    cgroup_id,
                    bytes,
                    allocations,
                    ..Default::default()
                }
            },
        )
        .collect();
    processes.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(a.context.cmp(&b.context))
            .then(a.tgid.cmp(&b.tgid))
            .then(a.cgroup_id.cmp(&b.cgroup_id))
    });
    let mut cgroups: Vec<CgroupOwner> = cgroups
        .into_iter()
        .map(|(cgroup_id, (bytes, allocations))| CgroupOwner {
            cgroup_id,
            bytes,
            allocations,
            ..Default::default()
        })
        .collect();
    cgroups.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.cgroup_id.cmp(&b.cgroup_id)));
    OwnerSummary {
        attributed_bytes: attributed,
        processes,
        cgroups,
        pods: Vec::new(),
    }
}
