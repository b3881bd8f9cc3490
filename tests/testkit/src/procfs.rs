//! The kernel's own accounting, read from procfs and sysfs: the truth the kind and class
//! scenarios compare memtrace's reports with.
//!
//! - `/proc/slabinfo` (root only), objects per slab cache: [`SlabInfo`].
//! - `/proc/vmallocinfo` (root only, else addresses are zeroed but sizes and callers stay),
//!   every vmap area with its size, caller and backing pages: [`vmalloc_areas`].
//! - `/proc/meminfo`: [`meminfo`].
//! - `/sys/devices/system/cpu/possible`: [`possible_cpus`].
//! - What the kernel's `percpu_alloc_percpu` event reports as `bytes_alloc` for one allocation:
//!   [`percpu_bytes_alloc`].

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};

/// One line of `/proc/slabinfo`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlabCache {
    pub active_objs: u64,
    pub num_objs: u64,
    /// Bytes each object takes (the cache's `size`, what `kmem_cache_alloc`/`kmalloc` events
    /// report as `bytes_alloc`).
    pub objsize: u64,
}

/// `/proc/slabinfo`: cache name → figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlabInfo {
    pub caches: BTreeMap<String, SlabCache>,
}

/// How a slab cache changed between two [`SlabInfo`] readings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlabGrowth {
    /// The name in `/proc/slabinfo`.
    pub name: String,
    pub objsize: u64,
    /// Change of `active_objs`.
    pub objects: i64,
}

impl SlabGrowth {
    /// The name memtrace gives a slab stack of this cache: the cache's own name, exactly as
    /// `/proc/slabinfo` lists it (`kmalloc-512`, `kmalloc-cg-1k`, `skbuff_head_cache`, ...).
    pub fn report_cache_name(&self) -> String {
        self.name.clone()
    }
}

impl SlabInfo {
    /// Reads `/proc/slabinfo` (needs root).
    pub fn read() -> Result<SlabInfo> {
        let text = std::fs::read_to_string("/proc/slabinfo")
            .context("reading /proc/slabinfo (root only)")?;
        SlabInfo::parse(&text)
    }

    /// Parses the text of `/proc/slabinfo` (version 2.1).
    pub fn parse(text: &str) -> Result<SlabInfo> {
        let mut lines = text.lines();
        let version = lines.next().context("/proc/slabinfo is empty")?;
        ensure!(
            version.starts_with("slabinfo - version: 2."),
            "unsupported /proc/slabinfo header {version:?}"
        );
        let mut caches = BTreeMap::new();
        for line in lines {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            ensure!(fields.len() >= 4, "short /proc/slabinfo line {line:?}");
            let num = |i: usize| -> Result<u64> {
                fields[i]
                    .parse()
                    .with_context(|| format!("field {i} of /proc/slabinfo line {line:?}"))
            };
            caches.insert(
                fields[0].to_string(),
                SlabCache {
                    active_objs: num(1)?,
                    num_objs: num(2)?,
                    objsize: num(3)?,
                },
            );
        }
        ensure!(!caches.is_empty(), "/proc/slabinfo lists no cache");
        Ok(SlabInfo { caches })
    }

    pub fn cache(&self, name: &str) -> Option<&SlabCache> {
        self.caches.get(name)
    }

    /// Caches whose active objects grew by at least `min_objects` from `before` to `self`,
    /// largest growth first.
    pub fn grown_since(&self, before: &SlabInfo, min_objects: u64) -> Vec<SlabGrowth> {
        let mut grown: Vec<SlabGrowth> = self
            .caches
            .iter()
            .map(|(name, now)| {
                let was = before.caches.get(name).map_or(0, |c| c.active_objs);
                SlabGrowth {
                    name: name.clone(),
                    objsize: now.objsize,
                    objects: now.active_objs as i64 - was as i64,
                }
            })
            .filter(|g| g.objects >= min_objects as i64)
            .collect();
        grown.sort_by(|a, b| b.objects.cmp(&a.objects).then(a.name.cmp(&b.name)));
        grown
    }
}

/// One line of `/proc/vmallocinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmallocArea {
    /// Size of the area, guard page included.
    pub size: u64,
    /// `function+0xoff/0xlen` as printed, or empty.
    pub caller: String,
    /// `pages=N`: pages backing it (vmalloc'ed areas only).
    pub pages: u64,
}

impl VmallocArea {
    /// Whether the caller is function `name` (`name+0x...`).
    pub fn caller_is(&self, name: &str) -> bool {
        self.caller
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('+') || rest.is_empty())
    }
}

/// Parses `/proc/vmallocinfo` text.
pub fn parse_vmallocinfo(text: &str) -> Result<Vec<VmallocArea>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut fields = line.split_whitespace();
            let _range = fields.next();
            let size = fields
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .with_context(|| format!("no size in /proc/vmallocinfo line {line:?}"))?;
            let rest: Vec<&str> = fields.collect();
            let caller = rest
                .first()
                .filter(|f| !f.contains('='))
                .map_or(String::new(), |f| f.to_string());
            let pages = rest
                .iter()
                .find_map(|f| f.strip_prefix("pages="))
                .map(|p| p.parse::<u64>())
                .transpose()
                .with_context(|| format!("bad pages= in /proc/vmallocinfo line {line:?}"))?
                .unwrap_or(0);
            Ok(VmallocArea {
                size,
                caller,
                pages,
            })
        })
        .collect()
}

/// Every vmap area in `/proc/vmallocinfo`.
pub fn vmalloc_areas() -> Result<Vec<VmallocArea>> {
    let text = std::fs::read_to_string("/proc/vmallocinfo").context("reading /proc/vmallocinfo")?;
    parse_vmallocinfo(&text)
}

/// `/proc/meminfo` in bytes (`kB` values × 1024; counts such as `HugePages_Total` as is).
pub fn parse_meminfo(text: &str) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("bad /proc/meminfo line {line:?}"))?;
        let mut parts = value.split_whitespace();
        let number: u64 = parts
            .next()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("bad /proc/meminfo value {line:?}"))?;
        let factor = match parts.next() {
            Some("kB") => 1024,
            None => 1,
            Some(unit) => bail!("unknown /proc/meminfo unit {unit:?} in {line:?}"),
        };
        out.insert(name.trim().to_string(), number * factor);
    }
    Ok(out)
}

/// `/proc/meminfo` in bytes.
pub fn meminfo() -> Result<BTreeMap<String, u64>> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?)
}

/// One `/proc/meminfo` figure in bytes.
pub fn meminfo_field(name: &str) -> Result<u64> {
    meminfo()?
        .get(name)
        .copied()
        .with_context(|| format!("{name} not in /proc/meminfo"))
}

/// Counts the CPUs of a sysfs CPU list such as `0-3,8,10-11`.
pub fn parse_cpu_list(text: &str) -> Result<u64> {
    let mut count = 0;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let lo: u64 = lo
            .parse()
            .with_context(|| format!("bad CPU list {text:?}"))?;
        let hi: u64 = hi
            .parse()
            .with_context(|| format!("bad CPU list {text:?}"))?;
        ensure!(hi >= lo, "bad CPU range {part:?}");
        count += hi - lo + 1;
    }
    ensure!(count > 0, "empty CPU list {text:?}");
    Ok(count)
}

/// `num_possible_cpus()`: what percpu allocations are multiplied by.
pub fn possible_cpus() -> Result<u64> {
    let path = "/sys/devices/system/cpu/possible";
    parse_cpu_list(&std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?)
}

/// Whether the kernel charges kernel memory to memory cgroups (`CONFIG_MEMCG` and not booted
/// with `cgroup.memory=nokmem`). Then every percpu allocation carries one `obj_cgroup` pointer
/// per 4 bytes of its size besides the per-CPU copies, and the `percpu_alloc_percpu` event's
/// `bytes_alloc` includes them.
pub fn memcg_kmem_accounting() -> Result<bool> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    if cmdline.split_whitespace().any(|arg| {
        arg.strip_prefix("cgroup.memory=")
            .is_some_and(|v| v.split(',').any(|o| o == "nokmem"))
    }) {
        return Ok(false);
    }
    // CONFIG_MEMCG: the memory controller exists (enabled or not), in v1 or v2 terms.
    let listed_v1 = std::fs::read_to_string("/proc/cgroups").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().next() == Some("memory"))
    });
    let listed_v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .is_ok_and(|t| t.split_whitespace().any(|c| c == "memory"));
    Ok(listed_v1 || listed_v2)
}

/// The kernel's `pcpu_obj_full_size()`: what one percpu allocation of `size` bytes takes, as the
/// `percpu_alloc_percpu` event reports it in `bytes_alloc`.
pub fn percpu_bytes_alloc(size: u64, possible_cpus: u64, memcg_kmem: bool) -> u64 {
    // PCPU_MIN_ALLOC_SIZE is 4 bytes; one `struct obj_cgroup *` per such unit.
    let memcg_extra = if memcg_kmem { size / 4 * 8 } else { 0 };
    size * possible_cpus + memcg_extra
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLABINFO: &str = "slabinfo - version: 2.1
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>
skbuff_head_cache    368    368    256   16    1 : tunables    0    0    0 : slabdata     23     23      0
kmalloc-cg-512       256    256    512   16    2 : tunables    0    0    0 : slabdata     16     16      0
kmalloc-1k           731    768   1024   16    4 : tunables    0    0    0 : slabdata     48     48      0
UDP                   24     24   1344   12    4 : tunables    0    0    0 : slabdata      2      2      0
";

    #[test]
    fn slabinfo_parses_and_diffs() -> Result<()> {
        let before = SlabInfo::parse(SLABINFO)?;
        assert_eq!(
            before.cache("skbuff_head_cache"),
            Some(&SlabCache {
                active_objs: 368,
                num_objs: 368,
                objsize: 256
            })
        );
        let after = SlabInfo::parse(
            &SLABINFO
                .replace(
                    "skbuff_head_cache    368    368",
                    "skbuff_head_cache  20368  20400",
                )
                .replace(
                    "kmalloc-cg-512       256    256",
                    "kmalloc-cg-512     20200  20224",
                )
                .replace("UDP                   24", "UDP                   12"),
        )?;
        let grown = after.grown_since(&before, 1000);
        assert_eq!(grown.len(), 2, "{grown:?}");
        assert_eq!(grown[0].name, "skbuff_head_cache");
        assert_eq!(grown[0].objects, 20000);
        assert_eq!(grown[0].report_cache_name(), "skbuff_head_cache");
        assert_eq!(grown[1].objects, 19944);
        // kmalloc caches keep their own names (not `kmalloc-<objsize>`).
        assert_eq!(grown[1].report_cache_name(), "kmalloc-cg-512");
        let k1 = SlabGrowth {
            name: "kmalloc-rcl-1k".into(),
            objsize: 1024,
            objects: 1,
        };
        assert_eq!(k1.report_cache_name(), "kmalloc-rcl-1k");
        assert!(SlabInfo::parse("slabinfo - version: 1.0\n").is_err());
        assert!(SlabInfo::parse("slabinfo - version: 2.1\nfoo 1 x 3\n").is_err());
        Ok(())
    }

    #[test]
    fn slabinfo_is_readable_as_root() -> Result<()> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: /proc/slabinfo is root only");
            return Ok(());
        }
        let info = SlabInfo::read()?;
        assert!(info.caches.len() > 10, "{info:?}");
        Ok(())
    }

    #[test]
    fn vmallocinfo_lines() -> Result<()> {
        let text = "\
0x000000007ca68d77-0x00000000183e89b8   20480 irq_init_percpu_irqstack+0xca/0x100 vmap
0x00000000183e89b8-0x00000000940c58b2    8192 acpi_os_map_iomem+0x1bc/0x1e0 phys=0x00000000000a0000 ioremap
0x0000000012345678-0x0000000087654321 67117056 __bpf_map_area_alloc+0x7d/0x90 pages=16385 vmalloc vpages N0=16385
0x0000000012345678-0x0000000087654321    8192 unpurged vm_area
";
        let areas = parse_vmallocinfo(text)?;
        assert_eq!(areas.len(), 4);
        assert_eq!(areas[2].size, 67117056);
        assert_eq!(areas[2].pages, 16385);
        assert!(areas[2].caller_is("__bpf_map_area_alloc"));
        assert!(!areas[2].caller_is("bpf_map_area_alloc"));
        assert_eq!(areas[1].pages, 0);
        assert_eq!(areas[3].caller, "unpurged");
        assert!(!vmalloc_areas()?.is_empty());
        Ok(())
    }

    #[test]
    fn meminfo_in_bytes() -> Result<()> {
        let m = parse_meminfo(
            "MemTotal:       24684092 kB\nShmem:  8856 kB\nHugePages_Total:       0\n",
        )?;
        assert_eq!(m["Shmem"], 8856 * 1024);
        assert_eq!(m["HugePages_Total"], 0);
        assert!(parse_meminfo("Shmem: x kB").is_err());
        assert!(meminfo_field("MemTotal")? > 0);
        Ok(())
    }

    #[test]
    fn cpu_lists() -> Result<()> {
        assert_eq!(parse_cpu_list("0-1\n")?, 2);
        assert_eq!(parse_cpu_list("0-3,8,10-11")?, 7);
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(possible_cpus()? >= 1);
        memcg_kmem_accounting()?;
        Ok(())
    }

    #[test]
    fn percpu_sizes() {
        assert_eq!(percpu_bytes_alloc(4096, 2, true), 16384);
        assert_eq!(percpu_bytes_alloc(4096, 2, false), 8192);
        assert_eq!(percpu_bytes_alloc(16, 2, true), 64);
    }
}
