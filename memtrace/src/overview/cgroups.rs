//! Memory per cgroup: `memory.stat` of every memory cgroup, cgroup v2 and v1, with the
//! columns that explain the field cases — anonymous memory, page cache, shmem, the write cache
//! that cannot be reclaimed before it is written (dirty + writeback), kernel memory (slab,
//! stacks, page tables…) and socket buffers — the limit, and the Kubernetes pod / container /
//! systemd unit the path names ([`crate::attribution::cgroup::parse_path`]).
//!
//! | column | cgroup v2 (`memory.stat`, hierarchical) | cgroup v1 (`total_*` keys: hierarchical) |
//! |---|---|---|
//! | usage | `memory.current` | `memory.usage_in_bytes` |
//! | limit | `memory.max`, the smallest on the way up | `hierarchical_memory_limit` (else `memory.limit_in_bytes`) |
//! | anon | `anon` | `total_rss` |
//! | file | `file − shmem − swapcached` | `total_cache − total_shmem − total_swapcached` |
//! | shmem | `shmem` | `total_shmem` |
//! | dirty, writeback | `file_dirty`, `file_writeback` | `total_dirty`, `total_writeback` |
//! | kernel | `kernel` (else Σ `kernel_stack`, `pagetables`, `sec_pagetables`, `percpu`, slab, `vmalloc`) | `memory.kmem.usage_in_bytes` |
//! | slab | `slab_reclaimable + slab_unreclaimable` | — (v1 has no slab total) |
//! | sock | `sock` | `memory.kmem.tcp.usage_in_bytes`, only where `memory.kmem.tcp.limit_in_bytes` is set (v1 charges TCP buffers only then) |
//!
//! In both hierarchies `file`/`cache` is the memcg's `NR_FILE_PAGES`, which contains shmem
//! and the swap cache: they are taken out so that anon + file + shmem + kernel (+ sock in
//! v2) ≈ usage. The root cgroup is left out (it is the node: see the breakdown).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::attribution::cgroup::{parse_path, Mounts, Workload};

/// A cgroup whose usage is at least this share of its limit is "near its limit".
pub const NEAR_LIMIT_PERCENT: f64 = 90.0;

/// v1 limits at or above this are "unlimited": the kernel prints `PAGE_COUNTER_MAX` pages,
/// 9223372036854771712 with 4 KiB pages.
const V1_UNLIMITED_FLOOR: u64 = 1 << 62;

/// How deep below a hierarchy's root the walk goes.
const MAX_DEPTH: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Hierarchy {
    #[serde(rename = "v1")]
    V1,
    #[serde(rename = "v2")]
    V2,
}

impl Hierarchy {
    pub fn name(self) -> &'static str {
        match self {
            Hierarchy::V1 => "v1",
            Hierarchy::V2 => "v2",
        }
    }
}

/// `memory.stat`: `key value` per line.
pub fn parse_memory_stat(text: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(key), Some(value), None) = (words.next(), words.next(), words.next()) else {
            bail!("line {} of memory.stat is not `key value`: {line:?}", i + 1);
        };
        let value: u64 = value
            .parse()
            .with_context(|| format!("line {} of memory.stat: bad number in {line:?}", i + 1))?;
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}

/// A single number (`memory.current`, `memory.usage_in_bytes`, …).
pub fn parse_number(text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    t.parse().with_context(|| format!("not a number: {t:?}"))
}

/// A limit: `max` (v2) or a v1 value of `PAGE_COUNTER_MAX` pages → `None` (no limit).
pub fn parse_limit(text: &str) -> anyhow::Result<Option<u64>> {
    let t = text.trim();
    if t == "max" {
        return Ok(None);
    }
    let n = parse_number(t)?;
    Ok((n < V1_UNLIMITED_FLOOR).then_some(n))
}

/// One memory cgroup.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CgroupMemory {
    pub hierarchy: Hierarchy,
    /// Relative to the hierarchy's mount, starting with `/`.
    pub path: String,
    /// Absolute directory (what `memtrace trace --cgroup` takes).
    pub dir: PathBuf,
    pub usage_bytes: u64,
    /// The limit in force: its own or a smaller one above it; `None`: none.
    pub limit_bytes: Option<u64>,
    pub anon_bytes: u64,
    /// Page cache without shmem and swap cache.
    pub file_bytes: u64,
    pub shmem_bytes: u64,
    pub dirty_bytes: u64,
    pub writeback_bytes: u64,
    /// Kernel memory charged to the cgroup; `None` when this kernel/hierarchy does not say.
    pub kernel_bytes: Option<u64>,
    pub slab_bytes: Option<u64>,
    pub sock_bytes: Option<u64>,
    /// Pod, container, unit named by the path.
    pub workload: Workload,
}

/// The v1 files besides `memory.stat`, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct V1Extra {
    /// `memory.limit_in_bytes` (used when `memory.stat` has no `hierarchical_memory_limit`).
    pub limit: Option<u64>,
    /// `memory.kmem.usage_in_bytes`.
    pub kmem_usage: Option<u64>,
    /// `memory.kmem.tcp.usage_in_bytes` and whether `memory.kmem.tcp.limit_in_bytes` is set.
    pub tcp_usage: Option<u64>,
    pub tcp_limited: bool,
}

impl CgroupMemory {
    /// A v2 cgroup from `memory.current`, `memory.stat` and its limit in force.
    pub fn from_v2(
        path: &str,
        dir: &Path,
        current: u64,
        stat: &BTreeMap<String, u64>,
        limit: Option<u64>,
    ) -> CgroupMemory {
        let get = |k: &str| stat.get(k).copied();
        let or0 = |k: &str| get(k).unwrap_or(0);
        let shmem = or0("shmem");
        let slab = match (
            get("slab_reclaimable"),
            get("slab_unreclaimable"),
            get("slab"),
        ) {
            (Some(r), Some(u), _) => Some(r + u),
            (_, _, s) => s,
        };
        let kernel = get("kernel").or_else(|| {
            let parts = [
                "kernel_stack",
                "pagetables",
                "sec_pagetables",
                "percpu",
                "vmalloc",
            ];
            let known = parts.iter().any(|k| stat.contains_key(*k)) || slab.is_some();
            known.then(|| parts.iter().map(|k| or0(k)).sum::<u64>() + slab.unwrap_or(0))
        });
        CgroupMemory {
            hierarchy: Hierarchy::V2,
            path: path.to_owned(),
            dir: dir.to_owned(),
            usage_bytes: current,
            limit_bytes: limit,
            anon_bytes: or0("anon"),
            file_bytes: or0("file").saturating_sub(shmem + or0("swapcached")),
            shmem_bytes: shmem,
            dirty_bytes: or0("file_dirty"),
            writeback_bytes: or0("file_writeback"),
            kernel_bytes: kernel,
            slab_bytes: slab,
            sock_bytes: get("sock"),
            workload: parse_path(path),
        }
    }

    /// A v1 cgroup from `memory.usage_in_bytes`, `memory.stat` (its `total_*` keys, else the
    /// local ones on kernels that lack them) and the other files.
    pub fn from_v1(
        path: &str,
        dir: &Path,
        usage: u64,
        stat: &BTreeMap<String, u64>,
        extra: &V1Extra,
    ) -> CgroupMemory {
        let get = |k: &str| {
            stat.get(&format!("total_{k}"))
                .or_else(|| stat.get(k))
                .copied()
                .unwrap_or(0)
        };
        let shmem = get("shmem");
        let limit = match stat.get("hierarchical_memory_limit") {
            Some(&l) => (l < V1_UNLIMITED_FLOOR).then_some(l),
            None => extra.limit,
        };
        CgroupMemory {
            hierarchy: Hierarchy::V1,
            path: path.to_owned(),
            dir: dir.to_owned(),
            usage_bytes: usage,
            limit_bytes: limit,
            anon_bytes: get("rss"),
            file_bytes: get("cache").saturating_sub(shmem + get("swapcached")),
            shmem_bytes: shmem,
            dirty_bytes: get("dirty"),
            writeback_bytes: get("writeback"),
            kernel_bytes: extra.kmem_usage,
            slab_bytes: None,
            sock_bytes: if extra.tcp_limited {
                extra.tcp_usage
            } else {
                None
            },
            workload: parse_path(path),
        }
    }

    /// Usage as a percentage of the limit in force.
    pub fn limit_percent(&self) -> Option<f64> {
        self.limit_bytes
            .map(|l| super::breakdown::percent(self.usage_bytes, l.max(1)))
    }

    /// Usage ≥ [`NEAR_LIMIT_PERCENT`] of the limit.
    pub fn near_limit(&self) -> bool {
        self.limit_percent()
            .is_some_and(|p| p >= NEAR_LIMIT_PERCENT)
    }

    /// Dirty + writeback: write cache that cannot be reclaimed until it is written.
    pub fn write_cache_bytes(&self) -> u64 {
        self.dirty_bytes + self.writeback_bytes
    }

    /// The workload in a few words: `pod <uid> (<qos>) <runtime> <id12>`, a unit, or "".
    pub fn workload_name(&self) -> String {
        let w = &self.workload;
        let mut parts = Vec::new();
        if let Some(uid) = &w.pod_uid {
            match &w.qos {
                Some(q) => parts.push(format!("pod {uid} ({q})")),
                None => parts.push(format!("pod {uid}")),
            }
        }
        if let Some(id) = &w.container_id {
            let short: String = id.chars().take(12).collect();
            parts.push(format!(
                "{} {short}",
                w.runtime.as_deref().unwrap_or("container")
            ));
        }
        if let Some(unit) = &w.unit {
            parts.push(unit.clone());
        }
        parts.join(" ")
    }
}

/// What was found in one hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HierarchyScan {
    pub hierarchy: Hierarchy,
    pub mount: PathBuf,
    /// Memory cgroups listed (the root excluded).
    pub cgroups: usize,
    /// Why none, or what was skipped.
    pub note: Option<String>,
}

/// Every memory cgroup of the machine, largest usage first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupScan {
    pub hierarchies: Vec<HierarchyScan>,
    pub cgroups: Vec<CgroupMemory>,
    pub notes: Vec<String>,
}

/// Walks the cgroup v2 hierarchy (where the memory controller is enabled) and the v1 memory
/// hierarchy, whichever are mounted.
pub fn scan(mounts: &Mounts) -> CgroupScan {
    let mut out = CgroupScan::default();
    if let Some(mount) = &mounts.v2 {
        let (cgroups, note) = scan_v2(mount);
        out.hierarchies.push(HierarchyScan {
            hierarchy: Hierarchy::V2,
            mount: mount.clone(),
            cgroups: cgroups.len(),
            note,
        });
        out.cgroups.extend(cgroups);
    }
    if let Some(mount) = &mounts.v1_memory {
        let (cgroups, note) = scan_v1(mount);
        out.hierarchies.push(HierarchyScan {
            hierarchy: Hierarchy::V1,
            mount: mount.clone(),
            cgroups: cgroups.len(),
            note,
        });
        out.cgroups.extend(cgroups);
    }
    if mounts.v2.is_none() && mounts.v1_memory.is_none() {
        out.notes
            .push("no cgroup2 and no cgroup v1 memory hierarchy is mounted".into());
    }
    sort(&mut out.cgroups);
    out
}

/// Largest usage first, then by hierarchy and path.
pub fn sort(cgroups: &mut [CgroupMemory]) {
    cgroups.sort_by(|a, b| {
        b.usage_bytes
            .cmp(&a.usage_bytes)
            .then_with(|| a.hierarchy.cmp(&b.hierarchy))
            .then_with(|| a.path.cmp(&b.path))
    });
}

fn read(dir: &Path, file: &str) -> anyhow::Result<String> {
    let path = dir.join(file);
    fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Subdirectories of `dir` (symlinks not followed), with their names.
fn subdirs(dir: &Path) -> Vec<(PathBuf, String)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, String)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| (e.path(), e.file_name().to_string_lossy().into_owned()))
        .collect();
    out.sort();
    out
}

/// Counts what the walk skipped, for one note.
#[derive(Default)]
struct Skipped {
    count: usize,
    first: Option<String>,
}

impl Skipped {
    fn add(&mut self, err: anyhow::Error) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(format!("{err:#}"));
        }
    }

    fn note(self) -> Option<String> {
        self.first.map(|first| {
            format!(
                "{} cgroup(s) skipped (removed while reading, or unreadable), e.g. {first}",
                self.count
            )
        })
    }
}

fn rel_path(parent: &str, name: &str) -> String {
    format!("{parent}/{name}")
}

/// cgroup v2: every directory that has `memory.current` (the memory controller is enabled
/// for it); the limit in force is the smallest `memory.max` from the root down.
pub fn scan_v2(mount: &Path) -> (Vec<CgroupMemory>, Option<String>) {
    let controllers = read(mount, "cgroup.controllers").unwrap_or_default();
    if !controllers.split_whitespace().any(|c| c == "memory") {
        return (
            Vec::new(),
            Some(format!(
                "the memory controller is not available on the cgroup2 hierarchy at {} \
                 (bound to cgroup v1 on this machine)",
                mount.display()
            )),
        );
    }
    let mut out = Vec::new();
    let mut skipped = Skipped::default();
    // (dir, relative path, depth, limit in force above it)
    let mut pending: Vec<(PathBuf, String, usize, Option<u64>)> = subdirs(mount)
        .into_iter()
        .map(|(dir, name)| (dir, rel_path("", &name), 1, None))
        .collect();
    while let Some((dir, rel, depth, above)) = pending.pop() {
        if !dir.join("memory.current").exists() {
            // The controller is not enabled here, so not below either.
            continue;
        }
        let cg = (|| -> anyhow::Result<CgroupMemory> {
            let current = parse_number(&read(&dir, "memory.current")?)
                .with_context(|| format!("{}/memory.current", dir.display()))?;
            let stat = parse_memory_stat(&read(&dir, "memory.stat")?)
                .with_context(|| format!("{}/memory.stat", dir.display()))?;
            let own = match read(&dir, "memory.max") {
                Ok(t) => {
                    parse_limit(&t).with_context(|| format!("{}/memory.max", dir.display()))?
                }
                Err(_) => None,
            };
            let limit = min_limit(above, own);
            Ok(CgroupMemory::from_v2(&rel, &dir, current, &stat, limit))
        })();
        match cg {
            Ok(cg) => {
                let limit = cg.limit_bytes;
                if depth < MAX_DEPTH {
                    for (sub, name) in subdirs(&dir) {
                        pending.push((sub, rel_path(&rel, &name), depth + 1, limit));
                    }
                }
                out.push(cg);
            }
            Err(e) => skipped.add(e),
        }
    }
    (out, skipped.note())
}

/// The smaller of two limits (`None` = no limit).
fn min_limit(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// cgroup v1 memory: every directory below the root.
pub fn scan_v1(mount: &Path) -> (Vec<CgroupMemory>, Option<String>) {
    let mut out = Vec::new();
    let mut skipped = Skipped::default();
    let mut pending: Vec<(PathBuf, String, usize)> = subdirs(mount)
        .into_iter()
        .map(|(dir, name)| (dir, rel_path("", &name), 1))
        .collect();
    while let Some((dir, rel, depth)) = pending.pop() {
        let cg = (|| -> anyhow::Result<CgroupMemory> {
            let usage = parse_number(&read(&dir, "memory.usage_in_bytes")?)
                .with_context(|| format!("{}/memory.usage_in_bytes", dir.display()))?;
            let stat = parse_memory_stat(&read(&dir, "memory.stat")?)
                .with_context(|| format!("{}/memory.stat", dir.display()))?;
            let number = |file: &str| read(&dir, file).ok().and_then(|t| parse_number(&t).ok());
            let extra = V1Extra {
                limit: read(&dir, "memory.limit_in_bytes")
                    .ok()
                    .and_then(|t| parse_limit(&t).ok().flatten()),
                kmem_usage: number("memory.kmem.usage_in_bytes"),
                tcp_usage: number("memory.kmem.tcp.usage_in_bytes"),
                tcp_limited: read(&dir, "memory.kmem.tcp.limit_in_bytes")
                    .ok()
                    .and_then(|t| parse_limit(&t).ok().flatten())
                    .is_some(),
            };
            Ok(CgroupMemory::from_v1(&rel, &dir, usage, &stat, &extra))
        })();
        match cg {
            Ok(cg) => {
                if depth < MAX_DEPTH {
                    for (sub, name) in subdirs(&dir) {
                        pending.push((sub, rel_path(&rel, &name), depth + 1));
                    }
                }
                out.push(cg);
            }
            Err(e) => skipped.add(e),
        }
    }
    (out, skipped.note())
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2_STAT: &str = include_str!("../../tests/fixtures/overview/v2-memory.stat-6.x.txt");
    const V1_STAT_REAL: &str =
        include_str!("../../tests/fixtures/overview/v1-memory.stat-6.18.txt");
    const V1_STAT_LIMITED: &str =
        include_str!("../../tests/fixtures/overview/v1-memory.stat-limited.txt");
    const UID: &str = "0f5b9d3e-7a1c-4e2b-9c8d-1a2b3c4d5e6f";
    const CID: &str = "4f7c9a1be2d34c5f8a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f";
    const MIB: u64 = 1 << 20;

    #[test]
    fn memory_stat_parsing() {
        let s = parse_memory_stat(V2_STAT).unwrap();
        assert_eq!(s["anon"], 24_117_248);
        assert_eq!(s["sec_pagetables"], 0);
        assert_eq!(s["slab"], 10_747_904);
        let err = parse_memory_stat("anon 1\nfile\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        let err = parse_memory_stat("anon -1\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
        assert!(parse_memory_stat("").unwrap().is_empty());
    }

    #[test]
    fn limits() {
        assert_eq!(parse_limit("max\n").unwrap(), None);
        assert_eq!(parse_limit("629145600\n").unwrap(), Some(629_145_600));
        // v1 "unlimited" with 4 KiB and 64 KiB pages.
        assert_eq!(parse_limit("9223372036854771712\n").unwrap(), None);
        assert_eq!(parse_limit("9223372036854710272").unwrap(), None);
        assert_eq!(parse_limit("0").unwrap(), Some(0));
        assert!(parse_limit("lots").is_err());
        assert!(parse_limit("").is_err());
        assert_eq!(min_limit(None, Some(5)), Some(5));
        assert_eq!(min_limit(Some(3), Some(5)), Some(3));
        assert_eq!(min_limit(Some(3), None), Some(3));
        assert_eq!(min_limit(None, None), None);
    }

    #[test]
    fn v2_columns() {
        let stat = parse_memory_stat(V2_STAT).unwrap();
        let path = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CID}.scope", UID.replace('-', "_"));
        let cg = CgroupMemory::from_v2(
            &path,
            Path::new("/sys/fs/cgroup/x"),
            621_809_664,
            &stat,
            Some(600 * MIB),
        );
        assert_eq!(cg.hierarchy, Hierarchy::V2);
        assert_eq!(cg.anon_bytes, 24_117_248);
        assert_eq!(cg.shmem_bytes, MIB);
        assert_eq!(cg.file_bytes, 585_105_408 - MIB);
        assert_eq!(cg.dirty_bytes, 300 * MIB);
        assert_eq!(cg.writeback_bytes, 50 * MIB);
        assert_eq!(cg.write_cache_bytes(), 350 * MIB);
        assert_eq!(cg.kernel_bytes, Some(12 * MIB));
        assert_eq!(cg.slab_bytes, Some(10_747_904));
        assert_eq!(cg.sock_bytes, Some(4096));
        assert!(cg.near_limit());
        assert!((cg.limit_percent().unwrap() - 98.84).abs() < 0.01);
        assert_eq!(cg.workload.pod_uid.as_deref(), Some(UID));
        assert_eq!(cg.workload.qos.as_deref(), Some("burstable"));
        assert_eq!(cg.workload.container_id.as_deref(), Some(CID));
        assert_eq!(
            cg.workload_name(),
            format!("pod {UID} (burstable) containerd 4f7c9a1be2d3")
        );
        // Older v2 kernels: no `kernel` key, kernel memory summed from its parts.
        let mut old = stat.clone();
        old.remove("kernel");
        let cg = CgroupMemory::from_v2("/a", Path::new("/a"), 1, &old, None);
        assert_eq!(
            cg.kernel_bytes,
            Some(393_216 + 1_179_648 + 241_920 + 16_384 + 10_747_904)
        );
        assert!(!cg.near_limit());
        assert_eq!(cg.limit_percent(), None);
        // Nothing known at all.
        let cg = CgroupMemory::from_v2("/a", Path::new("/a"), 1, &BTreeMap::new(), None);
        assert_eq!(
            (cg.kernel_bytes, cg.slab_bytes, cg.sock_bytes),
            (None, None, None)
        );
    }

    #[test]
    fn v1_columns_real_unlimited() {
        let stat = parse_memory_stat(V1_STAT_REAL).unwrap();
        let extra = V1Extra {
            limit: parse_limit("9223372036854771712").unwrap(),
            kmem_usage: Some(159_121_408),
            tcp_usage: Some(0),
            tcp_limited: false,
        };
        let cg = CgroupMemory::from_v1(
            "/process_api",
            Path::new("/sys/fs/cgroup/memory/process_api"),
            4_226_248_704,
            &stat,
            &extra,
        );
        assert_eq!(cg.hierarchy, Hierarchy::V1);
        // The total_* keys, not the local ones (all 0 in this fixture).
        assert_eq!(cg.anon_bytes, 302_407_680);
        assert_eq!(cg.file_bytes, 4_333_015_040);
        assert_eq!(cg.shmem_bytes, 0);
        assert_eq!(cg.dirty_bytes, 279_470_080);
        assert_eq!(cg.limit_bytes, None);
        assert_eq!(cg.kernel_bytes, Some(159_121_408));
        assert_eq!(
            cg.sock_bytes, None,
            "TCP accounting is off without a tcp limit"
        );
        assert_eq!(cg.slab_bytes, None);
        assert!(!cg.near_limit());
        assert_eq!(cg.workload_name(), "");
    }

    #[test]
    fn v1_columns_limited_pod() {
        let stat = parse_memory_stat(V1_STAT_LIMITED).unwrap();
        let extra = V1Extra {
            // The hierarchical limit in memory.stat wins over the cgroup's own.
            limit: None,
            kmem_usage: Some(8 * MIB),
            tcp_usage: Some(3 * MIB),
            tcp_limited: true,
        };
        let path = format!("/kubepods/burstable/pod{UID}/{CID}");
        let cg = CgroupMemory::from_v1(&path, Path::new("/x"), 620 * MIB, &stat, &extra);
        assert_eq!(cg.limit_bytes, Some(600 * MIB));
        assert!(cg.near_limit());
        assert_eq!(cg.shmem_bytes, 64 * MIB);
        assert_eq!(cg.file_bytes, 597_688_320 - 64 * MIB);
        assert_eq!(cg.write_cache_bytes(), 256 * MIB + 40 * MIB);
        assert_eq!(cg.sock_bytes, Some(3 * MIB));
        assert_eq!(cg.workload.pod_uid.as_deref(), Some(UID));
        assert_eq!(cg.workload.qos.as_deref(), Some("burstable"));
        assert_eq!(
            cg.workload_name(),
            format!("pod {UID} (burstable) container 4f7c9a1be2d3")
        );
        // Without hierarchical_memory_limit (old kernels), the cgroup's own limit.
        let mut s = stat.clone();
        s.remove("hierarchical_memory_limit");
        let own = V1Extra {
            limit: Some(700 * MIB),
            ..extra
        };
        let cg = CgroupMemory::from_v1(&path, Path::new("/x"), 620 * MIB, &s, &own);
        assert_eq!(cg.limit_bytes, Some(700 * MIB));
        assert!(!cg.near_limit(), "620 of 700 MiB is 88.6 %");
        // Kernels without the total_* keys: the local ones.
        let local = parse_memory_stat("cache 100\nrss 50\nshmem 10\ndirty 5\n").unwrap();
        let cg = CgroupMemory::from_v1("/a", Path::new("/a"), 160, &local, &V1Extra::default());
        assert_eq!(
            (cg.anon_bytes, cg.file_bytes, cg.shmem_bytes, cg.dirty_bytes),
            (50, 90, 10, 5)
        );
    }

    #[test]
    fn sorted_by_usage() {
        let mk = |path: &str, usage| {
            CgroupMemory::from_v2(path, Path::new(path), usage, &BTreeMap::new(), None)
        };
        let mut v = vec![mk("/b", 1), mk("/c", 3), mk("/a", 1)];
        sort(&mut v);
        let paths: Vec<&str> = v.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["/c", "/a", "/b"]);
    }

    fn write(dir: &Path, file: &str, text: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(file), text).unwrap();
    }

    #[test]
    fn walk_v2_tree() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "cgroup.controllers", "cpuset cpu io memory pids\n");
        let parent = r.join("kubepods");
        write(&parent, "memory.current", "300\n");
        write(&parent, "memory.stat", "anon 100\nfile 200\nshmem 50\n");
        write(&parent, "memory.max", "1000\n");
        let child = parent.join(format!("pod{UID}"));
        write(&child, "memory.current", "290\n");
        write(&child, "memory.stat", "anon 90\nfile 200\nshmem 50\n");
        write(&child, "memory.max", "max\n");
        // No memory controller here: skipped with what is below it.
        fs::create_dir_all(r.join("init.scope/sub")).unwrap();
        // Broken: skipped with a note.
        let broken = r.join("broken");
        write(&broken, "memory.current", "lots\n");
        let (cgroups, note) = scan_v2(r);
        assert_eq!(cgroups.len(), 2, "{cgroups:?}");
        let c = cgroups
            .iter()
            .find(|c| c.path.starts_with("/kubepods/pod"))
            .unwrap();
        // The parent's limit is in force for the child.
        assert_eq!(c.limit_bytes, Some(1000));
        assert_eq!(c.workload.pod_uid.as_deref(), Some(UID));
        assert_eq!(c.dir, child);
        let note = note.unwrap();
        assert!(
            note.contains("1 cgroup(s) skipped") && note.contains("broken"),
            "{note}"
        );

        // Without the memory controller on the hierarchy: a note, no rows.
        write(r, "cgroup.controllers", "cpu io pids\n");
        let (cgroups, note) = scan_v2(r);
        assert!(cgroups.is_empty());
        assert!(note.unwrap().contains("not available"));
    }

    #[test]
    fn walk_v1_tree() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "memory.usage_in_bytes", "999999\n");
        let a = r.join("a");
        write(&a, "memory.usage_in_bytes", "5000\n");
        write(&a, "memory.stat", V1_STAT_LIMITED);
        write(&a, "memory.limit_in_bytes", "9223372036854771712\n");
        write(&a, "memory.kmem.usage_in_bytes", "123\n");
        write(&a, "memory.kmem.tcp.usage_in_bytes", "7\n");
        write(
            &a,
            "memory.kmem.tcp.limit_in_bytes",
            "9223372036854771712\n",
        );
        let b = a.join("b");
        write(&b, "memory.usage_in_bytes", "4000\n");
        write(&b, "memory.stat", "total_cache 10\ntotal_rss 20\n");
        write(&b, "memory.limit_in_bytes", "8192\n");
        write(&b, "memory.kmem.tcp.usage_in_bytes", "7\n");
        write(&b, "memory.kmem.tcp.limit_in_bytes", "1048576\n");
        let (mut cgroups, note) = scan_v1(r);
        assert_eq!(note, None);
        sort(&mut cgroups);
        let paths: Vec<&str> = cgroups.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["/a", "/a/b"], "the root is left out");
        assert_eq!(cgroups[0].kernel_bytes, Some(123));
        assert_eq!(cgroups[0].sock_bytes, None);
        assert_eq!(cgroups[1].limit_bytes, Some(8192));
        assert_eq!(cgroups[1].sock_bytes, Some(7));
        assert_eq!(cgroups[1].kernel_bytes, None);
    }

    #[test]
    fn scan_reports_each_hierarchy() {
        let v1 = tempfile::tempdir().unwrap();
        let v2 = tempfile::tempdir().unwrap();
        write(v2.path(), "cgroup.controllers", "cpu\n");
        let s = scan(&Mounts {
            v2: Some(v2.path().to_owned()),
            v1_memory: Some(v1.path().to_owned()),
        });
        assert_eq!(s.hierarchies.len(), 2);
        assert!(s.hierarchies[0].note.is_some());
        assert_eq!(s.hierarchies[1].cgroups, 0);
        let s = scan(&Mounts::default());
        assert!(s.notes[0].contains("no cgroup2"));
    }
}
