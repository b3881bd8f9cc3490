//! Cgroups: where the hierarchies are mounted, which path a cgroup id stands for, and what a
//! cgroup path says about the workload in it (Kubernetes pod and QoS class, container id and
//! runtime, or the systemd unit).
//!
//! The cgroup id that `bpf_get_current_cgroup_id()` returns is the inode number of the
//! cgroup's directory in the cgroup2 hierarchy, so [`CgroupIndex::scan`] walks that hierarchy
//! and records `inode → path`. [`parse_path`] then recognises the path shapes written by the
//! kubelet (cgroupfs and systemd drivers, also nested in kind or docker-in-docker), containerd,
//! CRI-O, Docker and Podman.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;

/// Where the mount table of this process is.
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// How deep below the cgroup2 root [`CgroupIndex::scan`] goes.
const MAX_SCAN_DEPTH: usize = 64;

/// Where the cgroup hierarchies are mounted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mounts {
    /// The (first) cgroup2 mount, e.g. `/sys/fs/cgroup` or `/sys/fs/cgroup/unified`.
    pub v2: Option<PathBuf>,
    /// The (first) cgroup v1 hierarchy with the `memory` controller, e.g.
    /// `/sys/fs/cgroup/memory`.
    pub v1_memory: Option<PathBuf>,
}

/// Finds the cgroup mounts in a `/proc/<pid>/mountinfo` text.
///
/// The file system type is the first field after the ` - ` separator and the super options
/// the third: `cgroup2` is the v2 hierarchy, `cgroup` whose super options list `memory` is the
/// v1 memory hierarchy. Octal escapes in the mount point (`\040` for a space) are decoded. If
/// there are several mounts of a kind, the first one wins. Malformed lines are ignored.
pub fn parse_mountinfo(text: &str) -> Mounts {
    let mut mounts = Mounts::default();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        // id parent major:minor root mount-point options [optional...] - fstype source super
        let Some(mount_point) = fields.get(4) else {
            continue;
        };
        let Some(sep) = fields.iter().skip(6).position(|f| *f == "-").map(|i| i + 6) else {
            continue;
        };
        let Some(fstype) = fields.get(sep + 1) else {
            continue;
        };
        let super_options = fields.get(sep + 3).copied().unwrap_or("");
        match *fstype {
            "cgroup2" if mounts.v2.is_none() => mounts.v2 = Some(unescape_mount_path(mount_point)),
            "cgroup"
                if mounts.v1_memory.is_none()
                    && super_options.split(',').any(|o| o == "memory") =>
            {
                mounts.v1_memory = Some(unescape_mount_path(mount_point));
            }
            _ => {}
        }
    }
    mounts
}

/// Decodes the `\ooo` octal escapes the kernel writes for space, tab, newline and backslash in
/// mountinfo paths. Anything that is not a valid three-digit escape is kept as it is.
fn unescape_mount_path(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(digits) = bytes.get(i + 1..i + 4) {
                if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                    let value = digits
                        .iter()
                        .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                    if let Ok(byte) = u8::try_from(value) {
                        out.push(byte);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

/// The cgroup mounts of this process, from `/proc/self/mountinfo`.
pub fn mounts() -> anyhow::Result<Mounts> {
    let text = fs::read_to_string(MOUNTINFO)
        .with_context(|| format!("reading {MOUNTINFO} to find the cgroup mounts"))?;
    Ok(parse_mountinfo(&text))
}

/// What a cgroup path says about the workload in it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Workload {
    /// Kubernetes pod UID with dashes (systemd driver paths spell it with underscores).
    pub pod_uid: Option<String>,
    /// "guaranteed", "burstable" or "besteffort" (Kubernetes QoS class from the path).
    pub qos: Option<String>,
    /// Full container id (usually 64 hex digits).
    pub container_id: Option<String>,
    /// "containerd", "cri-o", "docker", "podman" when the path says so.
    pub runtime: Option<String>,
    /// systemd unit (last `.service` / `.scope` segment) when not a container, e.g. "sshd.service".
    pub unit: Option<String>,
}

/// Reads the workload out of a cgroup path relative to the hierarchy root (`/kubepods/...`).
///
/// Recognised:
/// - Kubernetes pods: a segment `pod<uid>` (cgroupfs driver, below a `kubepods` segment) or
///   `kubepods[-<qos>]-pod<uid>.slice` (systemd driver, also with a `kubelet-` prefix as in
///   kind), where `<uid>` is a UUID spelt with dashes or underscores. The QoS class comes from
///   the parent segment (cgroupfs) or the slice name (systemd); a pod directly below
///   `kubepods` is "guaranteed".
/// - Containers: `cri-containerd-<id>`, `crio-<id>`, `crio-conmon-<id>`, `docker-<id>`,
///   `libpod-<id>`, `libpod-conmon-<id>` (optionally with `.scope`), where `<id>` is 12 to 64
///   lowercase hex digits; a bare hex id directly below a pod or a `docker` segment (runtime
///   docker there, unknown below a pod); and a bare 64-hex-digit id anywhere.
/// - Nested hierarchies (docker-in-docker, kind): the innermost pod and container win, and a
///   container above the innermost pod is not reported.
/// - Otherwise, the last `.service` / `.scope` segment is the systemd unit.
///
/// A trailing ` (deleted)` (written by the kernel for removed cgroups) is ignored.
pub fn parse_path(path: &str) -> Workload {
    parse_segments(path).workload
}

/// [`Workload`] plus where in the path the pod was found.
struct Parsed {
    workload: Workload,
    /// Index of the innermost pod segment.
    pod_segment: Option<usize>,
    /// How many segments the path has.
    segments: usize,
}

fn parse_segments(path: &str) -> Parsed {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut workload = Workload::default();
    let mut pod_segment = None;
    let mut unit = None;
    for (i, segment) in segments.iter().enumerate() {
        let parent = i.checked_sub(1).and_then(|p| segments.get(p)).copied();
        let below_kubepods = segments[..i].iter().any(|s| s.contains("kubepods"));
        if let Some(pod) = pod_of(segment, parent, below_kubepods) {
            workload.pod_uid = Some(pod.uid);
            workload.qos = pod.qos.map(str::to_owned);
            // A container seen above the (innermost) pod is an outer one (docker-in-docker).
            workload.container_id = None;
            workload.runtime = None;
            pod_segment = Some(i);
            continue;
        }
        let parent_is_pod = pod_segment.is_some_and(|p| p + 1 == i);
        if let Some(container) = container_of(segment, parent, parent_is_pod) {
            workload.container_id = Some(container.id.to_owned());
            workload.runtime = container.runtime.map(str::to_owned);
            continue;
        }
        if is_unit(segment) {
            unit = Some(*segment);
        }
    }
    if workload.container_id.is_none() && workload.pod_uid.is_none() {
        workload.unit = unit.map(str::to_owned);
    }
    Parsed {
        workload,
        pod_segment,
        segments: segments.len(),
    }
}

/// A pod segment: its UID (dashes, lowercase) and the QoS class the path gives it.
struct Pod {
    uid: String,
    qos: Option<&'static str>,
}

const QOS_CLASSES: [&str; 2] = ["burstable", "besteffort"];

fn qos_class(word: &str) -> Option<&'static str> {
    QOS_CLASSES.iter().copied().find(|q| *q == word)
}

/// `pod<uid>` (cgroupfs, only below a `kubepods` segment) or
/// `[<anything>-]kubepods[-<qos>]-pod<uid>.slice` (systemd).
fn pod_of(segment: &str, parent: Option<&str>, below_kubepods: bool) -> Option<Pod> {
    const UUID_LEN: usize = 36;
    let (name, is_slice) = match segment.strip_suffix(".slice") {
        Some(name) => (name, true),
        None => (segment, false),
    };
    let split = name.len().checked_sub(UUID_LEN)?;
    if !name.is_char_boundary(split) {
        return None;
    }
    let (before, uuid) = name.split_at(split);
    let uid = normalize_uuid(uuid)?;
    let prefix = before.strip_suffix("pod")?;
    if is_slice {
        // systemd: "kubepods-", "kubepods-burstable-", "kubelet-kubepods-besteffort-", ...
        let words: Vec<&str> = prefix.strip_suffix('-')?.split('-').collect();
        let at = words.iter().rposition(|w| *w == "kubepods")?;
        let qos = match &words[at + 1..] {
            [] => Some("guaranteed"),
            [q] => Some(qos_class(q)?),
            _ => return None,
        };
        Some(Pod { uid, qos })
    } else {
        if !prefix.is_empty() || !below_kubepods {
            return None;
        }
        let qos = match parent {
            Some(p) => qos_class(p).or(p.contains("kubepods").then_some("guaranteed")),
            None => None,
        };
        Some(Pod { uid, qos })
    }
}

/// An 8-4-4-4-12 hex UUID with `-` or `_` separators, returned with dashes and lowercase.
fn normalize_uuid(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let mut out = String::with_capacity(36);
    for (i, &b) in bytes.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b != b'-' && b != b'_' {
                return None;
            }
            out.push('-');
        } else if b.is_ascii_hexdigit() {
            out.push(char::from(b.to_ascii_lowercase()));
        } else {
            return None;
        }
    }
    Some(out)
}

/// A container segment: the id and the runtime the path names.
struct Container<'a> {
    id: &'a str,
    runtime: Option<&'static str>,
}

/// Container segment prefixes and their runtimes, longest first where one is a prefix of another.
const CONTAINER_PREFIXES: [(&str, &str); 6] = [
    ("cri-containerd-", "containerd"),
    ("crio-conmon-", "cri-o"),
    ("crio-", "cri-o"),
    ("docker-", "docker"),
    ("libpod-conmon-", "podman"),
    ("libpod-", "podman"),
];

fn container_of<'a>(
    segment: &'a str,
    parent: Option<&str>,
    parent_is_pod: bool,
) -> Option<Container<'a>> {
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    for (prefix, runtime) in CONTAINER_PREFIXES {
        if let Some(id) = name.strip_prefix(prefix) {
            if is_container_id(id) {
                return Some(Container {
                    id,
                    runtime: Some(runtime),
                });
            }
        }
    }
    // A bare id: only where the layout puts one, or when it is a full 64-digit id.
    if name.len() != segment.len() || !is_container_id(name) {
        return None;
    }
    if parent == Some("docker") {
        return Some(Container {
            id: name,
            runtime: Some("docker"),
        });
    }
    if parent_is_pod || name.len() == 64 {
        return Some(Container {
            id: name,
            runtime: None,
        });
    }
    None
}

/// 12 to 64 lowercase hex digits.
fn is_container_id(text: &str) -> bool {
    (12..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_unit(segment: &str) -> bool {
    [".service", ".scope"]
        .iter()
        .any(|suffix| segment.strip_suffix(suffix).is_some_and(|n| !n.is_empty()))
}

/// Cgroup id (the cgroup2 directory's inode number, which is what bpf_get_current_cgroup_id returns) → path relative to the mount.
#[derive(Clone, Debug, Default)]
pub struct CgroupIndex {
    paths: HashMap<u64, String>,
}

impl CgroupIndex {
    /// Walks the cgroup2 hierarchy mounted at `mount` (directories only, symlinks not
    /// followed, at most 64 levels deep) and records each directory's inode number with its
    /// path relative to the mount: `/` for the mount itself, `/a/b` below it. Subdirectories
    /// that cannot be read (permissions, removed while walking) are skipped; only an unreadable
    /// `mount` is an error.
    pub fn scan(mount: &Path) -> anyhow::Result<CgroupIndex> {
        let root = fs::metadata(mount)
            .with_context(|| format!("reading the cgroup2 hierarchy root {}", mount.display()))?;
        anyhow::ensure!(
            root.is_dir(),
            "the cgroup2 hierarchy root {} is not a directory",
            mount.display()
        );
        let mut paths = HashMap::new();
        paths.insert(root.ino(), "/".to_owned());
        let entries = fs::read_dir(mount)
            .with_context(|| format!("listing the cgroup2 hierarchy root {}", mount.display()))?;
        let mut pending: Vec<(fs::ReadDir, String, usize)> = vec![(entries, String::new(), 0)];
        while let Some((entries, rel, depth)) = pending.pop() {
            for entry in entries {
                let Ok(entry) = entry else {
                    continue;
                };
                // file_type() does not follow symlinks.
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                let child = format!("{rel}/{}", entry.file_name().to_string_lossy());
                if depth + 1 < MAX_SCAN_DEPTH {
                    if let Ok(sub) = fs::read_dir(entry.path()) {
                        pending.push((sub, child.clone(), depth + 1));
                    }
                }
                paths.insert(meta.ino(), child);
            }
        }
        Ok(CgroupIndex { paths })
    }

    /// Adds the entries of `other` whose id is not known yet. Existing entries are kept, so a
    /// cgroup that has been deleted since an earlier scan is still named.
    pub fn merge(&mut self, other: CgroupIndex) {
        for (id, path) in other.paths {
            self.paths.entry(id).or_insert(path);
        }
    }

    /// Keeps only the cgroups for which `keep` says so; returns how many were dropped.
    pub fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) -> usize {
        let before = self.paths.len();
        self.paths.retain(|id, _| keep(*id));
        before - self.paths.len()
    }

    /// Every cgroup id known.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.paths.keys().copied()
    }

    /// The path (relative to the mount, starting with `/`) of cgroup `id`.
    pub fn path(&self, id: u64) -> Option<&str> {
        self.paths.get(&id).map(String::as_str)
    }

    #[cfg(test)]
    /// How many cgroups are known.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    #[cfg(test)]
    /// Whether no cgroup is known.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    #[cfg(test)]
    /// Every `(id, path)`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &str)> + '_ {
        self.paths.iter().map(|(id, path)| (*id, path.as_str()))
    }

    /// Every (id, path) whose path has a pod segment whose UID starts with `uid_prefix` (dashes or underscores accepted in the prefix), at the pod level only (not the containers below), sorted by path.
    ///
    /// The comparison ignores ASCII case; an empty prefix matches every pod.
    pub fn pod_cgroups(&self, uid_prefix: &str) -> Vec<(u64, String)> {
        let prefix = uid_prefix.replace('_', "-").to_ascii_lowercase();
        let mut found: Vec<(u64, String)> = self
            .paths
            .iter()
            .filter(|(_, path)| {
                let parsed = parse_segments(path);
                parsed.pod_segment.is_some_and(|i| i + 1 == parsed.segments)
                    && parsed
                        .workload
                        .pod_uid
                        .is_some_and(|uid| uid.starts_with(&prefix))
            })
            .map(|(id, path)| (*id, path.clone()))
            .collect();
        found.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        found
    }

    #[cfg(test)]
    /// Every (id, path) — for constructing in tests.
    pub fn from_entries(entries: impl IntoIterator<Item = (u64, String)>) -> CgroupIndex {
        CgroupIndex {
            paths: entries.into_iter().collect(),
        }
    }
}

/// The cgroup id (inode) and level (depth below the root: "/" = 0, "/a" = 1, "/a/b" = 2) of a cgroup directory given as an absolute path under `mount` or as a path relative to the mount (leading "/" optional). Errors name the path and say it must be a directory in the cgroup2 hierarchy mounted at `mount`.
///
/// Also returns the path relative to the mount, starting with `/`. `..` is refused, so the
/// result cannot leave the hierarchy.
pub fn id_and_level(mount: &Path, path: &str) -> anyhow::Result<(u64, u32, String)> {
    let requirement = || {
        format!(
            "cgroup {path:?} must be a directory in the cgroup2 hierarchy mounted at {}",
            mount.display()
        )
    };
    let given = Path::new(path);
    let relative = given.strip_prefix(mount).unwrap_or(given);
    let mut parts: Vec<String> = Vec::new();
    for component in relative.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => parts.push(name.to_string_lossy().into_owned()),
            Component::ParentDir | Component::Prefix(_) => {
                anyhow::bail!("{} (`..` is not allowed)", requirement())
            }
        }
    }
    let full = parts
        .iter()
        .fold(mount.to_path_buf(), |p, part| p.join(part));
    let meta = fs::metadata(&full)
        .with_context(|| format!("{} ({} cannot be read)", requirement(), full.display()))?;
    anyhow::ensure!(
        meta.is_dir(),
        "{} ({} is not a directory)",
        requirement(),
        full.display()
    );
    let level = u32::try_from(parts.len()).with_context(requirement)?;
    Ok((meta.ino(), level, format!("/{}", parts.join("/"))))
}

/// One process's cgroups from /proc/<pid>/cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcCgroups {
    /// The cgroup2 path (the `0::<path>` line).
    pub v2: Option<String>,
    /// The path in the v1 hierarchy with the `memory` controller.
    pub v1_memory: Option<String>,
}

/// Parses `/proc/<pid>/cgroup`: lines `hierarchy-id:controllers:path`. `0::<path>` is the v2
/// cgroup; a line whose comma-separated controller list contains `memory` is the v1 memory
/// cgroup. Malformed lines are ignored; the first line of each kind wins.
pub fn parse_proc_cgroup(text: &str) -> ProcCgroups {
    let mut cgroups = ProcCgroups::default();
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if hierarchy == "0" && controllers.is_empty() {
            cgroups.v2.get_or_insert_with(|| path.to_owned());
        } else if controllers.split(',').any(|c| c == "memory") {
            cgroups.v1_memory.get_or_insert_with(|| path.to_owned());
        }
    }
    cgroups
}

/// The cgroups of process `pid`, from `/proc/<pid>/cgroup`.
pub fn proc_cgroups(pid: u32) -> anyhow::Result<ProcCgroups> {
    let file = format!("/proc/{pid}/cgroup");
    let text = fs::read_to_string(&file)
        .with_context(|| format!("reading {file} (the cgroups of process {pid})"))?;
    Ok(parse_proc_cgroup(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f5b9d3e-7a1c-4e2b-9c8d-1a2b3c4d5e6f";
    const UID_: &str = "0f5b9d3e_7a1c_4e2b_9c8d_1a2b3c4d5e6f";
    const CID: &str = "3b6f1c0e2d4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c";
    const CID2: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

    fn s(text: &str) -> Option<String> {
        Some(text.to_owned())
    }

    fn k8s(qos: &str, cid: Option<&str>, runtime: Option<&str>) -> Workload {
        Workload {
            pod_uid: s(UID),
            qos: s(qos),
            container_id: cid.map(str::to_owned),
            runtime: runtime.map(str::to_owned),
            unit: None,
        }
    }

    fn container(cid: &str, runtime: Option<&str>) -> Workload {
        Workload {
            container_id: s(cid),
            runtime: runtime.map(str::to_owned),
            ..Workload::default()
        }
    }

    fn unit(name: &str) -> Workload {
        Workload {
            unit: s(name),
            ..Workload::default()
        }
    }

    #[track_caller]
    fn check(path: &str, expected: Workload) {
        assert_eq!(parse_path(path), expected, "path {path}");
    }

    #[test]
    fn cgroupfs_driver() {
        check(
            &format!("/kubepods/burstable/pod{UID}/{CID}"),
            k8s("burstable", Some(CID), None),
        );
        check(
            &format!("/kubepods/besteffort/pod{UID}/{CID}"),
            k8s("besteffort", Some(CID), None),
        );
        check(
            &format!("/kubepods/pod{UID}/{CID}"),
            k8s("guaranteed", Some(CID), None),
        );
        check(
            &format!("/kubepods/burstable/pod{UID}"),
            k8s("burstable", None, None),
        );
        // Short ids are accepted directly below a pod.
        check(
            &format!("/kubepods/pod{UID}/{}", &CID[..12]),
            k8s("guaranteed", Some(&CID[..12]), None),
        );
    }

    #[test]
    fn systemd_driver() {
        let pod =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        check(
            &format!("{pod}/cri-containerd-{CID}.scope"),
            k8s("burstable", Some(CID), Some("containerd")),
        );
        check(
            &format!("{pod}/docker-{CID}.scope"),
            k8s("burstable", Some(CID), Some("docker")),
        );
        check(
            &format!("{pod}/crio-{CID}.scope"),
            k8s("burstable", Some(CID), Some("cri-o")),
        );
        check(
            &format!("{pod}/crio-conmon-{CID}.scope"),
            k8s("burstable", Some(CID), Some("cri-o")),
        );
        // Newer CRI-O puts the processes in a `container` child of the scope.
        check(
            &format!("{pod}/crio-{CID}.scope/container"),
            k8s("burstable", Some(CID), Some("cri-o")),
        );
        check(&pod, k8s("burstable", None, None));
        check(
            &format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope"),
            k8s("guaranteed", Some(CID), Some("containerd")),
        );
        check(
            &format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/\
                 cri-containerd-{CID}.scope"
            ),
            k8s("besteffort", Some(CID), Some("containerd")),
        );
    }

    #[test]
    fn nested() {
        check(
            &format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/\
                 kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope"
            ),
            k8s("besteffort", Some(CID), Some("containerd")),
        );
        check(
            &format!("/docker/{CID}/kubepods/burstable/pod{UID}/{CID2}"),
            k8s("burstable", Some(CID2), None),
        );
        // The outer docker container is not the pod's container.
        check(
            &format!("/docker/{CID}/kubepods/burstable/pod{UID}"),
            k8s("burstable", None, None),
        );
        // kind node under the systemd driver of the host.
        check(
            &format!(
                "/system.slice/docker-{CID}.scope/kubelet.slice/kubelet-kubepods.slice/\
                 kubelet-kubepods-pod{UID_}.slice/cri-containerd-{CID2}.scope"
            ),
            k8s("guaranteed", Some(CID2), Some("containerd")),
        );
    }

    #[test]
    fn crio_cgroupfs() {
        check(
            &format!("/kubepods/burstable/pod{UID}/crio-{CID}"),
            k8s("burstable", Some(CID), Some("cri-o")),
        );
    }

    #[test]
    fn docker_and_podman() {
        check(
            &format!("/system.slice/docker-{CID}.scope"),
            container(CID, Some("docker")),
        );
        check(&format!("/docker/{CID}"), container(CID, Some("docker")));
        check(
            &format!("/machine.slice/libpod-{CID}.scope"),
            container(CID, Some("podman")),
        );
        check(
            &format!("/machine.slice/libpod-conmon-{CID}.scope"),
            container(CID, Some("podman")),
        );
        check(
            &format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope"),
            container(CID, Some("podman")),
        );
        // A bare full id elsewhere (e.g. ECS: /ecs/<task>/<container>).
        check(
            &format!("/ecs/0123456789abcdef0123456789abcdef/{CID}"),
            container(CID, None),
        );
    }

    #[test]
    fn units_and_root() {
        check(
            "/system.slice/containerd.service",
            unit("containerd.service"),
        );
        check("/system.slice/sshd.service", unit("sshd.service"));
        check(
            "/user.slice/user-1000.slice/session-3.scope",
            unit("session-3.scope"),
        );
        check("/system.slice/sshd.service (deleted)", unit("sshd.service"));
        check(
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope/sub",
            unit("app-foo.scope"),
        );
        check("/", Workload::default());
        check("", Workload::default());
    }

    #[test]
    fn random_names_are_not_misread() {
        for path in [
            // A 32-hex-digit name that is no container.
            "/process_api/614e048d24573ee2c33cac7e9394870b",
            "/kubepods.slice",
            "/kubepods.slice/kubepods-burstable.slice",
            "/kubepods/burstable",
            "/docker",
            "/docker/not-a-container",
            "/system.slice/docker-compose.slice",
            "/pods/podcast",
            "/kubepods/burstable/pod1234",
            // A pod-looking name outside any kubepods hierarchy.
            &format!("/apps/pod{UID}"),
            // Not a UUID (wrong grouping).
            "/kubepods/burstable/pod0f5b9d3e7-a1c-4e2b-9c8d-1a2b3c4d5e6f",
            // Uppercase hex is no container id; too short is neither.
            &format!("/docker/{}", CID.to_ascii_uppercase()),
            "/docker/abcdef12345",
            &format!("/foo-pod{UID}.slice"),
            &format!("/kubepods.slice/kubepods-weird-pod{UID_}.slice"),
        ] {
            check(path, Workload::default());
        }
        // Only the unit remains of these.
        check(
            "/system.slice/docker-compose.scope",
            unit("docker-compose.scope"),
        );
        check(
            "/system.slice/docker-0123456789xyz.scope",
            unit("docker-0123456789xyz.scope"),
        );
    }

    #[test]
    fn serializes_fields() {
        let json = serde_json::to_value(parse_path(&format!("/docker/{CID}"))).unwrap();
        assert_eq!(json["container_id"], CID);
        assert_eq!(json["runtime"], "docker");
        assert!(json["pod_uid"].is_null());
    }

    const HYBRID_MOUNTINFO: &str = "\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 28 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=4023588k,nr_inodes=1005897,mode=755
28 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro
31 22 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
36 31 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
37 31 0:32 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,net_cls,net_prio
38 31 0:33 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,memory
39 31 0:34 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,pids
";

    const V2_MOUNTINFO: &str = "\
24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
29 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
34 24 0:29 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
35 24 0:30 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:10 - pstore pstore rw
1234 1200 0:29 / /run/other/cgroup rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_hybrid() {
        assert_eq!(
            parse_mountinfo(HYBRID_MOUNTINFO),
            Mounts {
                v2: Some(PathBuf::from("/sys/fs/cgroup/unified")),
                v1_memory: Some(PathBuf::from("/sys/fs/cgroup/memory")),
            }
        );
    }

    #[test]
    fn mountinfo_pure_v2() {
        // memory_recursiveprot is no `memory` controller, and the first cgroup2 mount wins.
        assert_eq!(
            parse_mountinfo(V2_MOUNTINFO),
            Mounts {
                v2: Some(PathBuf::from("/sys/fs/cgroup")),
                v1_memory: None,
            }
        );
    }

    #[test]
    fn mountinfo_escapes_and_junk() {
        let text = "\
garbage
1 2 3
40 31 0:38 / /mnt/my\\040cgroups\\011x\\134y rw,relatime - cgroup2 cgroup2 rw
41 31 0:39 / /mnt/v1\\040mem rw,relatime shared:3 master:1 - cgroup cgroup rw,memory,hugetlb
";
        assert_eq!(
            parse_mountinfo(text),
            Mounts {
                v2: Some(PathBuf::from("/mnt/my cgroups\tx\\y")),
                v1_memory: Some(PathBuf::from("/mnt/v1 mem")),
            }
        );
        assert_eq!(parse_mountinfo(""), Mounts::default());
        assert_eq!(unescape_mount_path("/a\\0"), PathBuf::from("/a\\0"));
        assert_eq!(unescape_mount_path("/a\\777b"), PathBuf::from("/a\\777b"));
    }

    #[test]
    fn proc_cgroup_hybrid() {
        let text = format!(
            "12:pids:/system.slice/sshd.service
11:cpu,cpuacct:/
10:memory:/kubepods/burstable/pod{UID}/{CID}
1:name=systemd:/kubepods/burstable/pod{UID}/{CID}
0::/kubepods/burstable/pod{UID}/{CID}
"
        );
        assert_eq!(
            parse_proc_cgroup(&text),
            ProcCgroups {
                v2: Some(format!("/kubepods/burstable/pod{UID}/{CID}")),
                v1_memory: Some(format!("/kubepods/burstable/pod{UID}/{CID}")),
            }
        );
        // A v1 memory hierarchy co-mounted with other controllers; a path with a colon.
        assert_eq!(
            parse_proc_cgroup("3:cpu,memory:/a:b\n0::/\nbad line\n"),
            ProcCgroups {
                v2: s("/"),
                v1_memory: s("/a:b"),
            }
        );
    }

    #[test]
    fn proc_cgroup_pure_v2() {
        assert_eq!(
            parse_proc_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n"),
            ProcCgroups {
                v2: s("/user.slice/user-1000.slice/session-3.scope"),
                v1_memory: None,
            }
        );
        assert_eq!(parse_proc_cgroup(""), ProcCgroups::default());
    }

    #[test]
    fn proc_cgroups_of_self() {
        let mine = proc_cgroups(std::process::id()).unwrap();
        assert!(mine.v2.is_some() || mine.v1_memory.is_some(), "{mine:?}");
        let err = proc_cgroups(u32::MAX).unwrap_err();
        assert!(format!("{err:#}").contains(&format!("/proc/{}/cgroup", u32::MAX)));
    }

    fn ino(path: &Path) -> u64 {
        fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn scan_tempdir() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let pod = format!("kubepods/burstable/pod{UID}");
        fs::create_dir_all(root.join(&pod).join(CID)).unwrap();
        fs::create_dir_all(root.join("system.slice/sshd.service")).unwrap();
        fs::write(root.join("cgroup.procs"), "1\n").unwrap();
        fs::write(root.join("system.slice/memory.current"), "0\n").unwrap();
        // Symlinks are not followed (there are none in cgroupfs, but a loop must not hang).
        std::os::unix::fs::symlink(root.join("kubepods"), root.join("system.slice/link")).unwrap();

        let index = CgroupIndex::scan(root).unwrap();
        let mut expected = vec![
            (ino(root), "/".to_owned()),
            (ino(&root.join("kubepods")), "/kubepods".to_owned()),
            (
                ino(&root.join("kubepods/burstable")),
                "/kubepods/burstable".to_owned(),
            ),
            (ino(&root.join(&pod)), format!("/{pod}")),
            (ino(&root.join(&pod).join(CID)), format!("/{pod}/{CID}")),
            (ino(&root.join("system.slice")), "/system.slice".to_owned()),
            (
                ino(&root.join("system.slice/sshd.service")),
                "/system.slice/sshd.service".to_owned(),
            ),
        ];
        let mut got: Vec<(u64, String)> = index.iter().map(|(i, p)| (i, p.to_owned())).collect();
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
        assert_eq!(index.len(), 7);
        assert!(!index.is_empty());
        assert_eq!(index.path(ino(root)), Some("/"));

        // A cgroup removed and a new one created: merging keeps the old name.
        // (Created before the removal: tmpfs would hand the freed inode number out again.)
        let gone = ino(&root.join("system.slice/sshd.service"));
        fs::create_dir(root.join("system.slice/cron.service")).unwrap();
        fs::remove_dir(root.join("system.slice/sshd.service")).unwrap();
        let mut merged = index.clone();
        merged.merge(CgroupIndex::scan(root).unwrap());
        assert_eq!(merged.path(gone), Some("/system.slice/sshd.service"));
        assert_eq!(
            merged.path(ino(&root.join("system.slice/cron.service"))),
            Some("/system.slice/cron.service")
        );
        // Existing entries win over the other index's.
        let mut first = CgroupIndex::from_entries([(1, "/old".to_owned())]);
        first.merge(CgroupIndex::from_entries([
            (1, "/new".to_owned()),
            (2, "/b".to_owned()),
        ]));
        assert_eq!(first.path(1), Some("/old"));
        assert_eq!(first.path(2), Some("/b"));
        assert_eq!(first.path(3), None);
    }

    #[test]
    fn scan_skips_unreadable_and_errors_on_missing_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("locked/inner")).unwrap();
        fs::create_dir(root.join("open")).unwrap();
        let locked = root.join("locked");
        fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        let readable = fs::read_dir(&locked).is_ok(); // root reads it anyway
        let index = CgroupIndex::scan(root);
        fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let index = index.unwrap();
        assert_eq!(index.path(ino(&root.join("open"))), Some("/open"));
        assert_eq!(index.path(ino(&locked)), Some("/locked"));
        if !readable {
            assert_eq!(index.len(), 3);
        }

        let err = CgroupIndex::scan(&root.join("missing")).unwrap_err();
        assert!(format!("{err:#}").contains("missing"), "{err:#}");
    }

    #[test]
    fn scan_depth_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let deep: PathBuf =
            (0..MAX_SCAN_DEPTH + 5).fold(dir.path().to_path_buf(), |p, _| p.join("d"));
        fs::create_dir_all(&deep).unwrap();
        let index = CgroupIndex::scan(dir.path()).unwrap();
        // The root plus MAX_SCAN_DEPTH levels.
        assert_eq!(index.len(), MAX_SCAN_DEPTH + 1);
    }

    #[test]
    fn pod_cgroups_both_spellings() {
        let other = "99999999-8888-7777-6666-555555555555";
        let systemd_pod = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"
        );
        let index = CgroupIndex::from_entries([
            (1, "/".to_owned()),
            (2, "/kubepods".to_owned()),
            (3, "/kubepods/burstable".to_owned()),
            (4, format!("/kubepods/burstable/pod{UID}")),
            (5, format!("/kubepods/burstable/pod{UID}/{CID}")),
            (6, format!("/kubepods/pod{other}")),
            (7, systemd_pod.clone()),
            (8, format!("{systemd_pod}/cri-containerd-{CID}.scope")),
            (9, format!("/apps/pod{UID}")),
        ]);
        // Sorted by path: "/kubepods." < "/kubepods/".
        let expected = vec![
            (7, systemd_pod),
            (4, format!("/kubepods/burstable/pod{UID}")),
        ];
        assert_eq!(index.pod_cgroups("0f5b9d3e-7a1c"), expected);
        assert_eq!(index.pod_cgroups("0f5b9d3e_7a1c"), expected);
        assert_eq!(index.pod_cgroups("0F5B9D3E"), expected);
        assert_eq!(index.pod_cgroups(UID), expected);
        assert_eq!(index.pod_cgroups(UID_), expected);
        assert_eq!(
            index.pod_cgroups("9999"),
            vec![(6, format!("/kubepods/pod{other}"))]
        );
        assert_eq!(index.pod_cgroups("").len(), 3);
        assert!(index.pod_cgroups("abc").is_empty());
    }

    #[test]
    fn id_and_level_paths() {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path();
        fs::create_dir_all(mount.join("a/b")).unwrap();
        fs::write(mount.join("a/file"), "").unwrap();
        let ab = ino(&mount.join("a/b"));

        let absolute = mount.join("a/b");
        let absolute = absolute.to_str().unwrap();
        assert_eq!(
            id_and_level(mount, absolute).unwrap(),
            (ab, 2, "/a/b".to_owned())
        );
        assert_eq!(
            id_and_level(mount, &format!("{absolute}/")).unwrap(),
            (ab, 2, "/a/b".to_owned())
        );
        assert_eq!(
            id_and_level(mount, "/a/b").unwrap(),
            (ab, 2, "/a/b".to_owned())
        );
        assert_eq!(
            id_and_level(mount, "a/b").unwrap(),
            (ab, 2, "/a/b".to_owned())
        );
        assert_eq!(
            id_and_level(mount, "a").unwrap(),
            (ino(&mount.join("a")), 1, "/a".to_owned())
        );
        assert_eq!(
            id_and_level(mount, "/").unwrap(),
            (ino(mount), 0, "/".to_owned())
        );
        assert_eq!(
            id_and_level(mount, "").unwrap(),
            (ino(mount), 0, "/".to_owned())
        );
        assert_eq!(
            id_and_level(mount, mount.to_str().unwrap()).unwrap(),
            (ino(mount), 0, "/".to_owned())
        );

        for bad in ["/a/missing", "a/file", "../a"] {
            let err = format!("{:#}", id_and_level(mount, bad).unwrap_err());
            assert!(err.contains(bad), "{err}");
            assert!(
                err.contains(&format!(
                    "must be a directory in the cgroup2 hierarchy mounted at {}",
                    mount.display()
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn real_cgroup2_mount() {
        let Ok(Mounts {
            v2: Some(mount), ..
        }) = mounts()
        else {
            return;
        };
        if !mount.is_dir() {
            return;
        }
        let index = CgroupIndex::scan(&mount).unwrap();
        assert_eq!(index.path(ino(&mount)), Some("/"));
        let (id, level, rel) = id_and_level(&mount, "/").unwrap();
        assert_eq!((id, level, rel.as_str()), (ino(&mount), 0, "/"));
        if let Ok(ProcCgroups { v2: Some(mine), .. }) = proc_cgroups(std::process::id()) {
            if let Ok((id, _, _)) = id_and_level(&mount, &mine) {
                assert_eq!(index.path(id), Some(mine.as_str()));
            }
        }
    }
}
