//! Fills the names into a built report: cgroup paths, Kubernetes pods and containers, and the
//! command lines of the processes that still exist.

use std::collections::{BTreeMap, HashSet};

use super::cgroup::{self, CgroupIndex, Mounts, Workload};
use crate::model::{PodOwner, Report};

/// The cgroup hierarchies of this host and the cgroup2 tree (id → path), scanned at the start
/// of the session and again at each snapshot and at the end, so that cgroups removed during
/// the session are named.
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    pub mounts: Mounts,
    pub index: CgroupIndex,
    /// Why something could not be resolved, if anything.
    pub problems: Vec<String>,
    /// Cgroup ids present in the latest scan.
    live: HashSet<u64>,
    /// Removed cgroups forgotten by [`Resolver::expire`] so far.
    pub expired: u64,
}

impl Resolver {
    /// Reads the mounts and scans the cgroup2 tree; never fails (problems are kept).
    pub fn scan() -> Resolver {
        let mut r = Resolver::default();
        match cgroup::mounts() {
            Ok(m) => r.mounts = m,
            Err(e) => r.problems.push(format!("mounts unreadable: {e:#}")),
        }
        r.rescan();
        r
    }

    /// Scans the cgroup2 tree again, keeping what the earlier scans saw.
    pub fn rescan(&mut self) {
        if let Some(v2) = self.mounts.v2.clone() {
            match CgroupIndex::scan(&v2) {
                Ok(idx) => {
                    self.live = idx.ids().collect();
                    self.index.merge(idx);
                }
                Err(e) => {
                    let problem = format!("{}: {e:#}", v2.display());
                    // A session that runs for weeks reports a recurring problem once.
                    if !self.problems.contains(&problem) {
                        self.problems.push(problem);
                    }
                }
            }
        }
    }

    /// Forgets the cgroups that are gone from the hierarchy (at the latest scan) and that no
    /// owner of `report` names any more: in a session that runs for weeks, pods come and go,
    /// and the index must not keep every cgroup ever created. A removed cgroup that still
    /// owns memory (a deleted pod's memory still held) keeps its name. Returns how many were
    /// forgotten (also added to [`Resolver::expired`]).
    pub fn expire(&mut self, report: &Report) -> usize {
        let mut referenced: HashSet<u64> = report
            .stacks
            .iter()
            .flat_map(|s| s.owners.iter().map(|o| o.cgroup_id))
            .collect();
        referenced.extend(report.owners.cgroups.iter().map(|c| c.cgroup_id));
        referenced.extend(report.owners.processes.iter().map(|p| p.cgroup_id));
        let live = &self.live;
        let n = self
            .index
            .retain(|id| live.contains(&id) || referenced.contains(&id));
        self.expired += n as u64;
        n
    }

    /// One line for the report header: what the cgroup columns mean on this host.
    pub fn note(&self) -> String {
        let mut parts = Vec::new();
        match &self.mounts.v2 {
            Some(v2) => parts.push(format!(
                "cgroup v2 ids recorded at allocation, paths under {}",
                v2.display()
            )),
            None => parts.push("no cgroup2 hierarchy: cgroup ids are not resolved".to_string()),
        }
        if let Some(v1) = &self.mounts.v1_memory {
            parts.push(format!(
                "cgroup v1 memory paths (under {}) of processes still running at the end",
                v1.display()
            ));
        }
        parts.extend(self.problems.iter().cloned());
        parts.join("; ")
    }
}

/// What is known about a process at the end of the session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    pub cmdline: Option<String>,
    /// cgroup v1 memory controller path.
    pub v1_memory: Option<String>,
}

/// Looks processes up (`/proc` in a session; a table in tests).
pub trait ProcLookup {
    /// `None` when the process no longer exists.
    fn process(&self, tgid: u32) -> Option<ProcInfo>;
}

/// The text of a `/proc/PID/cmdline`: its NUL-separated arguments joined by spaces; `None` when
/// empty (kernel threads, zombies).
pub(crate) fn cmdline_text(raw: &[u8]) -> Option<String> {
    let text = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    (!text.is_empty()).then_some(text)
}

/// `/proc/<tgid>/cmdline` and `/proc/<tgid>/cgroup`.
pub struct ProcFs;

impl ProcLookup for ProcFs {
    fn process(&self, tgid: u32) -> Option<ProcInfo> {
        if tgid == 0 {
            return None;
        }
        let raw = std::fs::read(format!("/proc/{tgid}/cmdline")).ok()?;
        let v1_memory = cgroup::proc_cgroups(tgid).ok().and_then(|c| c.v1_memory);
        Some(ProcInfo {
            // Kernel threads have an empty command line.
            cmdline: cmdline_text(&raw),
            v1_memory,
        })
    }
}

/// Fills cgroup paths, pods, containers and command lines into the owners of every stack and
/// into the owner summary, and sums the pods.
pub fn annotate(report: &mut Report, resolver: &Resolver, procs: &dyn ProcLookup) {
    let workload = |id: u64| -> (Option<String>, Workload) {
        match resolver.index.path(id) {
            Some(p) => (Some(p.to_string()), cgroup::parse_path(p)),
            None => (None, Workload::default()),
        }
    };
    for s in &mut report.stacks {
        for o in &mut s.owners {
            if o.context.is_interrupt() {
                continue;
            }
            let (path, w) = workload(o.cgroup_id);
            o.cgroup = path;
            o.pod_uid = w.pod_uid;
            o.container_id = w.container_id;
        }
    }
    for c in &mut report.owners.cgroups {
        let (path, w) = workload(c.cgroup_id);
        c.path = path;
        c.pod_uid = w.pod_uid;
        c.qos = w.qos;
        c.container_id = w.container_id;
        c.runtime = w.runtime;
        c.unit = w.unit;
    }
    let mut pods: BTreeMap<String, PodOwner> = BTreeMap::new();
    for p in &mut report.owners.processes {
        if p.context.is_interrupt() {
            p.comm = p.context.label().to_string();
            continue;
        }
        let (path, mut w) = workload(p.cgroup_id);
        p.cgroup = path;
        if let Some(info) = procs.process(p.tgid) {
            p.alive = true;
            p.cmdline = info.cmdline;
            // On cgroup v1 (or hybrid) hosts the container runtime's cgroups may live only in
            // the v1 hierarchies.
            if w.pod_uid.is_none() && w.container_id.is_none() {
                if let Some(v1) = &info.v1_memory {
                    w = cgroup::parse_path(v1);
                }
            }
            p.memory_cgroup = info.v1_memory;
        }
        p.pod_uid = w.pod_uid.clone();
        p.container_id = w.container_id.clone();
        if let Some(uid) = w.pod_uid {
            let pod = pods.entry(uid.clone()).or_insert_with(|| PodOwner {
                pod_uid: uid,
                qos: w.qos.clone(),
                ..Default::default()
            });
            pod.bytes = pod.bytes.saturating_add(p.bytes);
            pod.allocations = pod.allocations.saturating_add(p.allocations);
            if let Some(c) = w.container_id {
                if !pod.containers.contains(&c) {
                    pod.containers.push(c);
                }
            }
        }
    }
    let mut pods: Vec<PodOwner> = pods.into_values().collect();
    pods.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.pod_uid.cmp(&b.pod_uid)));
    report.owners.pods = pods;
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::model::{CgroupOwner, ExecContext, Owner, OwnerSummary, ProcessOwner};

    struct FakeProcs(HashMap<u32, ProcInfo>);

    impl ProcLookup for FakeProcs {
        fn process(&self, tgid: u32) -> Option<ProcInfo> {
            self.0.get(&tgid).cloned()
        }
    }

    const UID: &str = "0b5c1f2a-1111-2222-3333-444455556666";
    const CID: &str = "4f7c9a1be2d34c5f8a9b0c1d2e3f40516273849a5b6c7d8e9f0a1b2c3d4e5f60";

    #[test]
    fn removed_cgroups_are_forgotten_once_nothing_refers_to_them() {
        let mut resolver = Resolver {
            index: CgroupIndex::from_entries([
                (1, "/".into()),
                (50, "/kubepods.slice/gone-but-holding".into()),
                (60, "/kubepods.slice/gone".into()),
                (70, "/system.slice/alive.service".into()),
            ]),
            live: HashSet::from([1, 70]),
            ..Default::default()
        };
        let mut report = Report::default();
        report.owners.cgroups.push(CgroupOwner {
            cgroup_id: 50,
            bytes: 4096,
            ..Default::default()
        });
        assert_eq!(resolver.expire(&report), 1);
        assert_eq!(resolver.index.path(60), None);
        assert_eq!(
            resolver.index.path(50),
            Some("/kubepods.slice/gone-but-holding")
        );
        assert_eq!(resolver.index.path(70), Some("/system.slice/alive.service"));
        // Once its memory is freed, the removed cgroup goes too; the count adds up.
        assert_eq!(resolver.expire(&Report::default()), 1);
        assert_eq!(resolver.expired, 2);
        assert_eq!(resolver.index.len(), 2);
    }

    #[test]
    fn names_pods_and_processes() {
        let pod_path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CID}.scope",
            UID.replace('-', "_")
        );
        let resolver = Resolver {
            index: CgroupIndex::from_entries([
                (50, pod_path.clone()),
                (7, "/system.slice/sshd.service".into()),
            ]),
            ..Default::default()
        };
        let mut report = Report::default();
        let mut s = crate::model::testkit::empty_stack();
        s.owners = vec![
            Owner {
                tgid: 10,
                pid: 11,
                comm: "nginx".into(),
                bytes: 300,
                allocations: 3,
                cgroup_id: 50,
                ..Default::default()
            },
            Owner {
                comm: "[softirq]".into(),
                bytes: 100,
                allocations: 1,
                context: ExecContext::Softirq,
                ..Default::default()
            },
        ];
        report.stacks.push(s);
        report.owners = OwnerSummary {
            attributed_bytes: 500,
            processes: vec![
                ProcessOwner {
                    tgid: 10,
                    comm: "nginx".into(),
                    cgroup_id: 50,
                    bytes: 300,
                    allocations: 3,
                    ..Default::default()
                },
                ProcessOwner {
                    tgid: 20,
                    comm: "sshd".into(),
                    cgroup_id: 7,
                    bytes: 100,
                    allocations: 1,
                    ..Default::default()
                },
                ProcessOwner {
                    context: ExecContext::Softirq,
                    comm: "x".into(),
                    bytes: 100,
                    allocations: 1,
                    ..Default::default()
                },
                // v1-only host: the v2 id is the root; the v1 memory path names the pod.
                ProcessOwner {
                    tgid: 30,
                    comm: "java".into(),
                    cgroup_id: 1,
                    bytes: 50,
                    allocations: 1,
                    ..Default::default()
                },
            ],
            cgroups: vec![CgroupOwner {
                cgroup_id: 50,
                bytes: 300,
                allocations: 3,
                ..Default::default()
            }],
            pods: Vec::new(),
        };
        let procs = FakeProcs(HashMap::from([
            (
                10,
                ProcInfo {
                    cmdline: Some("nginx: worker process".into()),
                    v1_memory: None,
                },
            ),
            (
                30,
                ProcInfo {
                    cmdline: Some("java -jar a.jar".into()),
                    v1_memory: Some(format!("/kubepods/besteffort/pod{UID}/{CID}")),
                },
            ),
        ]));
        annotate(&mut report, &resolver, &procs);

        let o = &report.stacks[0].owners[0];
        assert_eq!(o.cgroup.as_deref(), Some(pod_path.as_str()));
        assert_eq!(o.pod_uid.as_deref(), Some(UID));
        assert_eq!(o.container_id.as_deref(), Some(CID));
        assert_eq!(report.stacks[0].owners[1].cgroup, None);

        let p = &report.owners.processes;
        assert!(p[0].alive);
        assert_eq!(p[0].cmdline.as_deref(), Some("nginx: worker process"));
        assert_eq!(p[0].pod_uid.as_deref(), Some(UID));
        assert!(!p[1].alive, "sshd (20) is gone");
        assert_eq!(p[1].cgroup.as_deref(), Some("/system.slice/sshd.service"));
        assert_eq!(p[1].pod_uid, None);
        assert_eq!(p[2].comm, "[softirq]");
        assert_eq!(
            p[3].memory_cgroup.as_deref(),
            Some(format!("/kubepods/besteffort/pod{UID}/{CID}").as_str())
        );
        assert_eq!(p[3].pod_uid.as_deref(), Some(UID));

        let c = &report.owners.cgroups[0];
        assert_eq!(c.qos.as_deref(), Some("burstable"));
        assert_eq!(c.runtime.as_deref(), Some("containerd"));

        // One pod: nginx (300) and java (50), both containers are the same id here.
        assert_eq!(report.owners.pods.len(), 1);
        assert_eq!(report.owners.pods[0].pod_uid, UID);
        assert_eq!(report.owners.pods[0].bytes, 350);
        assert_eq!(report.owners.pods[0].containers, vec![CID.to_string()]);
    }

    #[test]
    fn note_names_the_hierarchies() {
        let r = Resolver {
            mounts: Mounts {
                v2: Some("/sys/fs/cgroup/unified".into()),
                v1_memory: Some("/sys/fs/cgroup/memory".into()),
            },
            ..Default::default()
        };
        let n = r.note();
        assert!(
            n.contains("/sys/fs/cgroup/unified") && n.contains("v1 memory"),
            "{n}"
        );
        assert!(Resolver::default().note().contains("no cgroup2"));
    }
}
