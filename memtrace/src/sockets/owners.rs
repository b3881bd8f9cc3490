//! Who holds a socket: the processes with a file descriptor on it (`/proc/PID/fd/N` →
//! `socket:[INODE]`), with their command line, cgroup, Kubernetes pod and container.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

use crate::attribution::annotate::cmdline_text;
use crate::attribution::cgroup::{self, ProcCgroups};

use super::SocketOwner;

/// Socket inode → the pids that have it open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerIndex {
    pub by_inode: HashMap<u64, BTreeSet<u32>>,
    /// Processes whose open files could not be read (permission), by pid.
    pub unreadable: Vec<u32>,
}

/// `socket:[12345]` → 12345.
pub fn parse_socket_link(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Reads every `proc_root/PID/fd/*` link and records the processes holding the sockets in
/// `wanted`. Processes that exit meanwhile are skipped; unreadable ones are counted.
pub fn scan_fds(proc_root: &Path, wanted: &HashSet<u64>) -> io::Result<OwnerIndex> {
    let mut index = OwnerIndex::default();
    if wanted.is_empty() {
        return Ok(index);
    }
    for entry in fs::read_dir(proc_root)?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let fds = match fs::read_dir(entry.path().join("fd")) {
            Ok(fds) => fds,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                index.unreadable.push(pid);
                continue;
            }
            Err(_) => continue,
        };
        let mut denied = false;
        for fd in fds.flatten() {
            let target = match fs::read_link(fd.path()) {
                Ok(t) => t,
                Err(e) => {
                    denied |= e.kind() == io::ErrorKind::PermissionDenied;
                    continue;
                }
            };
            let Some(inode) = target.to_str().and_then(parse_socket_link) else {
                continue;
            };
            if wanted.contains(&inode) {
                index.by_inode.entry(inode).or_default().insert(pid);
            }
        }
        if denied {
            index.unreadable.push(pid);
        }
    }
    index.unreadable.sort_unstable();
    Ok(index)
}

/// The cgroup path to show and what it says about the workload: the v2 path when it names a
/// pod or container; otherwise the v1 memory path when that one does (hybrid hosts, where the
/// container runtime's cgroups may live only in the v1 hierarchies, as in
/// `attribution::annotate`); otherwise the v2 path unless it is the root `/` and a v1 memory
/// path exists.
pub fn workload_of(c: &ProcCgroups) -> (Option<String>, cgroup::Workload) {
    let names = |w: &cgroup::Workload| w.pod_uid.is_some() || w.container_id.is_some();
    let w2 = c.v2.as_deref().map(cgroup::parse_path).unwrap_or_default();
    if names(&w2) {
        return (c.v2.clone(), w2);
    }
    if let Some(v1) = &c.v1_memory {
        let w1 = cgroup::parse_path(v1);
        if names(&w1) || c.v2.as_deref().is_none_or(|p| p == "/") {
            return (Some(v1.clone()), w1);
        }
    }
    (c.v2.clone(), w2)
}

/// Process `pid` under `proc_root`: name, command line, cgroup, pod and container. A process
/// that has exited meanwhile keeps its pid, with comm `[exited]`.
pub fn describe(proc_root: &Path, pid: u32) -> SocketOwner {
    let dir = proc_root.join(pid.to_string());
    let comm = fs::read_to_string(dir.join("comm"))
        .map(|c| c.trim_end_matches('\n').to_string())
        .unwrap_or_else(|_| "[exited]".to_string());
    let cmdline = fs::read(dir.join("cmdline"))
        .ok()
        .and_then(|raw| cmdline_text(&raw));
    let cgroups = fs::read_to_string(dir.join("cgroup"))
        .map(|t| cgroup::parse_proc_cgroup(&t))
        .unwrap_or_default();
    let (cgroup, w) = workload_of(&cgroups);
    SocketOwner {
        pid,
        comm,
        cmdline,
        pod_uid: w.pod_uid,
        container_id: w.container_id,
        cgroup,
    }
}

/// Describes each pid once.
#[derive(Debug)]
pub struct Describer<'a> {
    proc_root: &'a Path,
    cache: HashMap<u32, SocketOwner>,
}

impl<'a> Describer<'a> {
    pub fn new(proc_root: &'a Path) -> Self {
        Describer {
            proc_root,
            cache: HashMap::new(),
        }
    }

    pub fn owner(&mut self, pid: u32) -> SocketOwner {
        self.cache
            .entry(pid)
            .or_insert_with(|| describe(self.proc_root, pid))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const UID: &str = "0f5b9d3e-7a1c-4e2b-9c8d-1a2b3c4d5e6f";
    const CID: &str = "3b6f1c0e2d4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c";

    /// A fake /proc: pid 10 (a pod's container, cgroup v2) holds sockets 111 and 222, pid 20
    /// (hybrid host: v2 root, v1 memory path names a docker container) holds 222 and a pipe,
    /// pid 30 holds only unwanted sockets, pid 40's fd directory is missing (exited).
    fn fake_proc() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let proc_ = |pid: u32, comm: &str, cmdline: &[u8], cgroup: &str, fds: &[(u32, &str)]| {
            let p = root.join(pid.to_string());
            fs::create_dir_all(p.join("fd")).unwrap();
            fs::write(p.join("comm"), format!("{comm}\n")).unwrap();
            fs::write(p.join("cmdline"), cmdline).unwrap();
            fs::write(p.join("cgroup"), cgroup).unwrap();
            for (n, target) in fds {
                symlink(target, p.join("fd").join(n.to_string())).unwrap();
            }
        };
        proc_(
            10,
            "nginx",
            b"nginx: worker process\0",
            &format!("0::/kubepods/burstable/pod{UID}/{CID}\n"),
            &[(0, "/dev/null"), (3, "socket:[111]"), (4, "socket:[222]")],
        );
        proc_(
            20,
            "app",
            b"/usr/bin/app\0--flag\0",
            &format!("4:memory:/docker/{CID}\n0::/\n"),
            &[(5, "socket:[222]"), (6, "pipe:[333]"), (7, "socket:[222]")],
        );
        proc_(
            30,
            "other",
            b"",
            "0::/system.slice/x.service\n",
            &[(3, "socket:[999]")],
        );
        fs::create_dir_all(root.join("40")).unwrap();
        fs::create_dir_all(root.join("self")).unwrap();
        dir
    }

    #[test]
    fn maps_inodes_to_processes() {
        let dir = fake_proc();
        let wanted: HashSet<u64> = [111, 222, 444].into_iter().collect();
        let index = scan_fds(dir.path(), &wanted).unwrap();
        assert!(index.unreadable.is_empty());
        assert_eq!(index.by_inode.len(), 2);
        assert_eq!(index.by_inode[&111], BTreeSet::from([10]));
        assert_eq!(index.by_inode[&222], BTreeSet::from([10, 20]));
        assert!(scan_fds(dir.path(), &HashSet::new())
            .unwrap()
            .by_inode
            .is_empty());
        assert!(scan_fds(&dir.path().join("missing"), &wanted).is_err());
    }

    #[test]
    fn describes_processes() {
        let dir = fake_proc();
        let root = dir.path();
        let nginx = describe(root, 10);
        assert_eq!(
            nginx,
            SocketOwner {
                pid: 10,
                comm: "nginx".into(),
                cmdline: Some("nginx: worker process".into()),
                pod_uid: Some(UID.into()),
                container_id: Some(CID.into()),
                cgroup: Some(format!("/kubepods/burstable/pod{UID}/{CID}")),
            }
        );
        let app = describe(root, 20);
        assert_eq!(app.cmdline.as_deref(), Some("/usr/bin/app --flag"));
        assert_eq!(app.pod_uid, None);
        assert_eq!(app.container_id.as_deref(), Some(CID));
        assert_eq!(app.cgroup, Some(format!("/docker/{CID}")));
        let other = describe(root, 30);
        assert_eq!(other.cmdline, None);
        assert_eq!(other.cgroup.as_deref(), Some("/system.slice/x.service"));
        let gone = describe(root, 50);
        assert_eq!(gone.comm, "[exited]");
        assert_eq!((gone.cmdline, gone.cgroup), (None, None));

        let mut d = Describer::new(root);
        assert_eq!(d.owner(10), nginx);
        assert_eq!(d.owner(10), nginx);
    }

    #[test]
    fn workload_choice() {
        let c = |v2: Option<&str>, v1: Option<&str>| ProcCgroups {
            v2: v2.map(str::to_owned),
            v1_memory: v1.map(str::to_owned),
        };
        // This machine's shape: v2 root, v1 memory names a non-container group.
        let (path, w) = workload_of(&c(Some("/"), Some("/process_api/3a49ab15")));
        assert_eq!(path.as_deref(), Some("/process_api/3a49ab15"));
        assert_eq!(w.pod_uid, None);
        // v2 meaningful but no container: v2 wins over a v1 path without one.
        let (path, _) = workload_of(&c(Some("/user.slice/x.scope"), Some("/user.slice")));
        assert_eq!(path.as_deref(), Some("/user.slice/x.scope"));
        let (path, w) = workload_of(&c(None, None));
        assert_eq!((path, w), (None, cgroup::Workload::default()));
    }

    #[test]
    fn socket_links() {
        assert_eq!(parse_socket_link("socket:[28842917]"), Some(28842917));
        assert_eq!(parse_socket_link("pipe:[1]"), None);
        assert_eq!(parse_socket_link("socket:[]"), None);
    }
}
