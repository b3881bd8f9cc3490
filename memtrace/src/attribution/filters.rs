//! `--pid`, `--comm`, `--cgroup`, `--pod` → the in-kernel [`Filters`].

use std::path::Path;

use anyhow::{bail, Context as _};
use memtrace_common::{
    CgroupFilter, Filters, MAX_FILTER_CGROUPS, MAX_FILTER_COMMS, MAX_FILTER_TGIDS,
};

use super::cgroup::{self, CgroupIndex, Mounts};

/// What the command line asked to filter on.
#[derive(Clone, Debug, Default)]
pub struct FilterArgs<'a> {
    pub pids: &'a [u32],
    pub comms: &'a [String],
    pub cgroups: &'a [String],
    pub pods: &'a [String],
}

/// The resolved filters and a one-line description of each (for the report header).
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    pub filters: Filters,
    pub descriptions: Vec<String>,
}

/// Resolves the filters against this host's cgroup hierarchies (`index`: the cgroup2 tree).
pub fn resolve(
    args: &FilterArgs<'_>,
    mounts: &Mounts,
    index: &CgroupIndex,
) -> anyhow::Result<Resolved> {
    let mut f = Filters::none();
    let mut descriptions = Vec::new();
    let mut tgids: Vec<u32> = Vec::new();
    for &pid in args.pids {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            bail!("--pid {pid}: no such process (give the pid of a running process)");
        }
        tgids.push(pid);
        descriptions.push(format!("pid {pid}"));
    }
    for name in args.comms {
        let c = comm_bytes(name)?;
        if f.comm_count as usize >= MAX_FILTER_COMMS {
            bail!("--comm: at most {MAX_FILTER_COMMS} names");
        }
        f.comms[f.comm_count as usize] = c;
        f.comm_count += 1;
        descriptions.push(format!("comm {name}"));
    }
    let mut cgroups: Vec<(u64, u32, String)> = Vec::new();
    for path in args.cgroups {
        if let Some(v1) = mounts
            .v1_memory
            .as_deref()
            .filter(|m| Path::new(path).starts_with(m))
        {
            // cgroup v1: the ids the programs see are cgroup2 ids; filter on the processes
            // in the memory cgroup (and below) now.
            let procs = v1_processes(Path::new(path)).with_context(|| {
                format!("--cgroup {path}: reading the processes of a cgroup v1 memory directory")
            })?;
            if procs.is_empty() {
                bail!("--cgroup {path}: no process in this cgroup v1 directory (cgroup v1 filters on the processes in it when the session starts)");
            }
            descriptions.push(format!(
                "cgroup v1 {} ({} processes at start)",
                path.strip_prefix(&*v1.to_string_lossy()).unwrap_or(path),
                procs.len()
            ));
            tgids.extend(procs);
            continue;
        }
        let Some(v2) = mounts.v2.as_deref() else {
            bail!("--cgroup {path}: no cgroup2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup), and the path is not under a cgroup v1 memory mount");
        };
        let (id, level, rel) =
            cgroup::id_and_level(v2, path).with_context(|| format!("--cgroup {path}"))?;
        descriptions.push(format!("cgroup {rel} (id {id})"));
        cgroups.push((id, level, rel));
    }
    for prefix in args.pods {
        let pods = index.pod_cgroups(prefix);
        if pods.is_empty() {
            bail!("--pod {prefix}: no pod cgroup with this UID prefix under the cgroup2 hierarchy (give the pod's UID, `kubectl get pod NAME -o jsonpath='{{.metadata.uid}}'`)");
        }
        let v2 = mounts
            .v2
            .as_deref()
            .context("--pod needs the cgroup2 hierarchy")?;
        for (id, path) in pods {
            let (_, level, rel) = cgroup::id_and_level(v2, &path)
                .with_context(|| format!("--pod {prefix}: cgroup {path}"))?;
            descriptions.push(format!("pod {prefix}: cgroup {rel} (id {id})"));
            cgroups.push((id, level, rel));
        }
    }
    tgids.sort_unstable();
    tgids.dedup();
    if tgids.len() > MAX_FILTER_TGIDS {
        bail!(
            "--pid/--cgroup: {} processes, at most {MAX_FILTER_TGIDS} can be filtered on (filter on a cgroup v2 directory instead)",
            tgids.len()
        );
    }
    for (i, t) in tgids.iter().enumerate() {
        f.tgids[i] = *t;
    }
    f.tgid_count = tgids.len() as u32;
    if cgroups.len() > MAX_FILTER_CGROUPS {
        bail!(
            "--cgroup/--pod: {} cgroups, at most {MAX_FILTER_CGROUPS}",
            cgroups.len()
        );
    }
    for (i, (id, level, _)) in cgroups.iter().enumerate() {
        f.cgroups[i] = CgroupFilter {
            id: *id,
            level: *level,
            _pad: 0,
        };
    }
    f.cgroup_count = cgroups.len() as u32;
    f.active = u32::from(f.tgid_count + f.comm_count + f.cgroup_count > 0);
    Ok(Resolved {
        filters: f,
        descriptions,
    })
}

/// A thread name as the kernel stores it: at most 15 bytes and a NUL.
pub fn comm_bytes(name: &str) -> anyhow::Result<[u8; 16]> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > 15 {
        bail!("--comm {name:?}: a thread name has 1 to 15 bytes (the kernel truncates longer names; give the first 15)");
    }
    let mut c = [0u8; 16];
    c[..b.len()].copy_from_slice(b);
    Ok(c)
}

/// Tgids of the processes in a cgroup v1 directory and below.
fn v1_processes(dir: &Path) -> anyhow::Result<Vec<u32>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0u32)];
    while let Some((d, depth)) = stack.pop() {
        let procs = std::fs::read_to_string(d.join("cgroup.procs"))
            .with_context(|| format!("reading {}", d.join("cgroup.procs").display()))?;
        out.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        if depth >= 64 {
            continue;
        }
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let e = e.with_context(|| format!("listing {}", d.display()))?;
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_names() {
        assert_eq!(&comm_bytes("nginx").unwrap()[..6], b"nginx\0");
        assert!(comm_bytes("").is_err());
        assert!(comm_bytes("a-very-long-thread-name").is_err());
        assert_eq!(comm_bytes("exactly15bytes!").unwrap()[15], 0);
    }

    #[test]
    fn pids_comms_and_pods() {
        let me = std::process::id();
        let index = CgroupIndex::from_entries([
            (1, "/".to_string()),
            (
                77,
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b5c1f2a_1111_2222_3333_444455556666.slice".to_string(),
            ),
        ]);
        let comms = vec!["nginx".to_string()];
        let r = resolve(
            &FilterArgs {
                pids: &[me, me],
                comms: &comms,
                ..Default::default()
            },
            &Mounts::default(),
            &index,
        )
        .unwrap();
        assert_eq!(r.filters.tgid_count, 1);
        assert_eq!(r.filters.tgids[0], me);
        assert_eq!(r.filters.comm_count, 1);
        assert_eq!(r.filters.active, 1);
        assert_eq!(
            r.descriptions,
            vec![
                format!("pid {me}"),
                format!("pid {me}"),
                "comm nginx".into()
            ]
        );

        let none = resolve(&FilterArgs::default(), &Mounts::default(), &index).unwrap();
        assert_eq!(none.filters.active, 0);

        let err = resolve(
            &FilterArgs {
                pids: &[u32::MAX - 1],
                ..Default::default()
            },
            &Mounts::default(),
            &index,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no such process"), "{err}");

        let pods = vec!["ffff".to_string()];
        let err = resolve(
            &FilterArgs {
                pods: &pods,
                ..Default::default()
            },
            &Mounts::default(),
            &index,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no pod cgroup"), "{err}");

        let cg = vec!["/x".to_string()];
        let err = resolve(
            &FilterArgs {
                cgroups: &cg,
                ..Default::default()
            },
            &Mounts::default(),
            &index,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no cgroup2 hierarchy"), "{err}");
    }

    #[test]
    fn cgroup_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        let mounts = Mounts {
            v2: Some(dir.path().to_path_buf()),
            v1_memory: None,
        };
        let cg = vec!["/a/b".to_string()];
        let r = resolve(
            &FilterArgs {
                cgroups: &cg,
                ..Default::default()
            },
            &mounts,
            &CgroupIndex::default(),
        )
        .unwrap();
        assert_eq!(r.filters.cgroup_count, 1);
        assert_eq!(r.filters.cgroups[0].level, 2);
        use std::os::unix::fs::MetadataExt as _;
        let ino = std::fs::metadata(dir.path().join("a/b")).unwrap().ino();
        assert_eq!(r.filters.cgroups[0].id, ino);
        assert!(
            r.descriptions[0].starts_with("cgroup /a/b (id "),
            "{:?}",
            r.descriptions
        );

        // A v1 memory directory: the processes in it (and below) at start.
        let v1 = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(v1.path().join("g/sub")).unwrap();
        std::fs::write(v1.path().join("g/cgroup.procs"), "10\n11\n").unwrap();
        std::fs::write(v1.path().join("g/sub/cgroup.procs"), "12\n10\n").unwrap();
        let mounts = Mounts {
            v2: None,
            v1_memory: Some(v1.path().to_path_buf()),
        };
        let cg = vec![v1.path().join("g").to_string_lossy().into_owned()];
        let r = resolve(
            &FilterArgs {
                cgroups: &cg,
                ..Default::default()
            },
            &mounts,
            &CgroupIndex::default(),
        )
        .unwrap();
        assert_eq!(&r.filters.tgids[..3], &[10, 11, 12]);
        assert_eq!(r.filters.tgid_count, 3);
        assert_eq!(
            r.descriptions,
            vec!["cgroup v1 /g (3 processes at start)".to_string()]
        );
    }
}
