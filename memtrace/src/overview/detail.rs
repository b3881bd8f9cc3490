//! Optional detail for the node overview, and the [`Facts`] the breakdown needs that the
//! counters do not give: the largest slab caches (`/proc/slabinfo`, root only), the largest
//! vmalloc callers (`/proc/vmallocinfo`, root only), whether kernel stacks are vmalloc'ed
//! (kernel config), whether balloon pages are inside MemTotal (virtio-balloon features), the
//! kernel version (what `VmallocUsed` means) and the huge page pools of every size (sysfs).
//!
//! Nothing here is required: an unreadable file gives a note, not an error.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::Path;

use anyhow::{bail, Context as _};

use super::breakdown::Facts;

pub const SLABINFO: &str = "/proc/slabinfo";
pub const VMALLOCINFO: &str = "/proc/vmallocinfo";

/// How many slab caches / vmalloc callers the overview lists.
pub const TOP_DETAIL: usize = 5;

/// One slab cache from `/proc/slabinfo`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SlabCache {
    pub name: String,
    pub active_objs: u64,
    pub num_objs: u64,
    pub objsize: u64,
    /// Pages the cache's slabs take: `num_slabs × pagesperslab × page size`.
    pub bytes: u64,
    /// Counted in `SReclaimable` (`/sys/kernel/slab/<name>/reclaim_account`, SLUB); `None`
    /// when unknown.
    pub reclaimable: Option<bool>,
}

/// Parses `/proc/slabinfo` (version 2.x): `name active_objs num_objs objsize objperslab
/// pagesperslab : tunables … : slabdata active_slabs num_slabs sharedavail`.
/// Returns every cache, largest first.
pub fn parse_slabinfo(text: &str, page_size: u64) -> anyhow::Result<Vec<SlabCache>> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    if !header.starts_with("slabinfo - version: 2") {
        bail!("not a slabinfo 2.x file (first line {header:?})");
    }
    let mut out = Vec::new();
    for line in lines {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("bad slabinfo line {line:?}");
        let num = |i: usize| -> anyhow::Result<u64> {
            words.get(i).and_then(|w| w.parse().ok()).with_context(bad)
        };
        let slabdata = words
            .iter()
            .position(|w| *w == "slabdata")
            .with_context(bad)?;
        let name = words.first().with_context(bad)?.to_string();
        let bytes = num(slabdata + 2)?
            .saturating_mul(num(5)?)
            .saturating_mul(page_size);
        out.push(SlabCache {
            name,
            active_objs: num(1)?,
            num_objs: num(2)?,
            objsize: num(3)?,
            bytes,
            reclaimable: None,
        });
    }
    out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

/// Where SLUB says whether a cache's pages count as reclaimable.
pub const SYS_KERNEL_SLAB: &str = "/sys/kernel/slab";

/// Whether the cache's pages count as reclaimable: `<dir>/<name>/reclaim_account` (`1`/`0`);
/// `None` when unknown (no SLUB sysfs, or no such cache there).
pub fn reclaim_account(dir: &Path, name: &str) -> Option<bool> {
    std::fs::read_to_string(dir.join(name).join("reclaim_account"))
        .ok()
        .and_then(|t| match t.trim() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        })
}

/// The slab detail the overview shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlabDetail {
    /// The [`TOP_DETAIL`] largest caches, each marked reclaimable or not.
    pub top: Vec<SlabCache>,
    /// The largest cache known to be unreclaimable, wherever it ranks.
    pub largest_unreclaimable: Option<SlabCache>,
}

/// The largest caches of a `/proc/slabinfo` text, and the largest unreclaimable one (looked
/// for past the top too: in size order until one is found), marked from `sys_slab`
/// ([`SYS_KERNEL_SLAB`]).
pub fn slab_detail(text: &str, page_size: u64, sys_slab: &Path) -> anyhow::Result<SlabDetail> {
    let mut caches = parse_slabinfo(text, page_size)?;
    let mut largest_unreclaimable = None;
    for (i, c) in caches.iter_mut().enumerate() {
        if i >= TOP_DETAIL && largest_unreclaimable.is_some() {
            break;
        }
        c.reclaimable = reclaim_account(sys_slab, &c.name);
        if largest_unreclaimable.is_none() && c.reclaimable == Some(false) {
            largest_unreclaimable = Some(c.clone());
        }
    }
    caches.truncate(TOP_DETAIL);
    Ok(SlabDetail {
        top: caches,
        largest_unreclaimable,
    })
}

/// Bytes of vmalloc'ed pages per calling function, from `/proc/vmallocinfo`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VmallocCaller {
    /// The caller without its offset (`htab_map_alloc`), or `unknown`.
    pub caller: String,
    /// Σ `pages=` × page size of its areas.
    pub bytes: u64,
    pub areas: u64,
}

/// What `/proc/vmallocinfo` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmallocInfo {
    /// Σ `pages=` × page size over the `vmalloc` areas (what `VmallocUsed` counts).
    pub bytes: u64,
    /// Per caller, largest first.
    pub callers: Vec<VmallocCaller>,
    /// Some area was allocated by the thread-stack code (`alloc_thread_stack_node`, or the
    /// function it is inlined into): kernel stacks are vmalloc'ed.
    pub has_stacks: bool,
}

/// Functions whose vmalloc areas are kernel stacks (`alloc_thread_stack_node` is often
/// inlined into its callers, which then show as the caller).
const STACK_CALLERS: [&str; 4] = [
    "alloc_thread_stack_node",
    "dup_task_struct",
    "copy_process",
    "kernel_clone",
];

/// Parses `/proc/vmallocinfo`: `start-end size caller [pages=N] [phys=…] flags… [N0=…]`.
/// Only areas with a `pages=` count and the `vmalloc` flag hold pages vmalloc allocated;
/// `ioremap`, `vmap`, `vm_area` (percpu chunks, …) are left out. Malformed lines are skipped.
pub fn parse_vmallocinfo(text: &str, page_size: u64) -> VmallocInfo {
    let mut by_caller: HashMap<String, (u64, u64)> = HashMap::new();
    let mut info = VmallocInfo::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if !words.contains(&"vmalloc") {
            continue;
        }
        let Some(pages) = words
            .iter()
            .find_map(|w| w.strip_prefix("pages="))
            .and_then(|p| p.parse::<u64>().ok())
        else {
            continue;
        };
        let caller = words
            .get(2)
            .filter(|w| !w.starts_with("pages=") && !w.contains('='))
            .map(|w| w.split('+').next().unwrap_or(w).to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let bytes = pages.saturating_mul(page_size);
        info.bytes = info.bytes.saturating_add(bytes);
        if STACK_CALLERS.contains(&caller.as_str()) {
            info.has_stacks = true;
        }
        let e = by_caller.entry(caller).or_default();
        e.0 = e.0.saturating_add(bytes);
        e.1 += 1;
    }
    info.callers = by_caller
        .into_iter()
        .map(|(caller, (bytes, areas))| VmallocCaller {
            caller,
            bytes,
            areas,
        })
        .collect();
    info.callers
        .sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.caller.cmp(&b.caller)));
    info
}

/// Reads a root-only proc file; when it cannot be read, the note to show instead.
pub fn read_optional(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            format!("{path} is readable by root only: run as root for this detail")
        } else {
            format!("{path} could not be read: {e}")
        }
    })
}

/// `CONFIG_VMAP_STACK` from a kernel config text: `Some(true)` for `=y`, `Some(false)` for
/// `# CONFIG_VMAP_STACK is not set` or no such line in a config that has
/// `CONFIG_HAVE_ARCH_VMAP_STACK` lines at all; `None` when the text says nothing.
pub fn config_vmap_stack(config: &str) -> Option<bool> {
    let mut seen_arch = false;
    for line in config.lines() {
        let line = line.trim();
        if line == "CONFIG_VMAP_STACK=y" {
            return Some(true);
        }
        if line == "# CONFIG_VMAP_STACK is not set" {
            return Some(false);
        }
        if line.starts_with("CONFIG_HAVE_ARCH_VMAP_STACK") || line.starts_with("CONFIG_64BIT=") {
            seen_arch = true;
        }
    }
    // A whole config without the option: the architecture cannot have it.
    seen_arch.then_some(false)
}

/// The running kernel's config: `/proc/config.gz` (gzip), else `/boot/config-<release>`.
/// Returns the text and where it came from.
fn kernel_config(release: &str) -> Option<(String, String)> {
    if let Ok(file) = std::fs::File::open("/proc/config.gz") {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .is_ok()
        {
            return Some((text, "/proc/config.gz".into()));
        }
    }
    let boot = format!("/boot/config-{release}");
    std::fs::read_to_string(&boot).ok().map(|t| (t, boot))
}

/// Decides whether kernel stacks are vmalloc'ed: the kernel config, else `/proc/vmallocinfo`
/// areas of the thread-stack code, else the architecture's default (x86_64 and arm64 have
/// `VMAP_STACK=y` by default since 4.9 / 4.14).
pub fn vmap_stack(release: &str, vmallocinfo: Option<&VmallocInfo>) -> (bool, String) {
    if let Some((config, source)) = kernel_config(release) {
        if let Some(yes) = config_vmap_stack(&config) {
            return (yes, source);
        }
    }
    if let Some(info) = vmallocinfo {
        if info.has_stacks {
            return (
                true,
                "/proc/vmallocinfo (thread stacks are vmalloc areas)".into(),
            );
        }
    }
    let arch = std::env::consts::ARCH;
    let default = matches!(arch, "x86_64" | "aarch64");
    (
        default,
        format!("assumed ({arch} default; no kernel config found)"),
    )
}

/// Whether virtio balloon pages stay in MemTotal: a virtio-balloon device that negotiated
/// `VIRTIO_BALLOON_F_DEFLATE_ON_OOM` (feature bit 2) leaves them in (the driver calls
/// `adjust_managed_page_count` only without it). `None` when there is no virtio balloon.
pub fn balloon_in_memtotal(driver_dir: &Path) -> Option<bool> {
    let entries = std::fs::read_dir(driver_dir).ok()?;
    let mut found = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("virtio") {
            continue;
        }
        let Ok(features) = std::fs::read_to_string(entry.path().join("features")) else {
            continue;
        };
        let deflate_on_oom = features.trim().as_bytes().get(2) == Some(&b'1');
        found = Some(found.unwrap_or(false) || deflate_on_oom);
    }
    found
}

/// Where virtio balloon devices are listed.
pub const VIRTIO_BALLOON_DRIVER: &str = "/sys/bus/virtio/drivers/virtio_balloon";

/// `(major, minor)` of a kernel release (`6.18.44-fc-v657`, `3.10.0-1160.el7.x86_64`);
/// `None` when it does not start with two numbers.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-', '+', '_']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The huge page pools of every size.
pub const SYS_HUGEPAGES: &str = "/sys/kernel/mm/hugepages";

/// Σ `nr_hugepages` × size over `<dir>/hugepages-<size>kB/` (every pool size, not only the
/// default one meminfo's `HugePages_*` describe). `None` when the directory or any pool in it
/// cannot be read (a partial sum would mislead).
pub fn hugepage_pools(dir: &Path) -> Option<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name();
        let Some(kb) = name
            .to_str()
            .and_then(|n| n.strip_prefix("hugepages-"))
            .and_then(|n| n.strip_suffix("kB"))
        else {
            continue;
        };
        let kb: u64 = kb.parse().ok()?;
        let pages: u64 = std::fs::read_to_string(entry.path().join("nr_hugepages"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        total = total.saturating_add(pages.saturating_mul(kb).saturating_mul(1024));
    }
    Some(total)
}

/// The [`Facts`] for this machine; `pcp_free_bytes` from `/proc/zoneinfo` (read by the
/// caller with the other counters).
pub fn facts(
    page_size: u64,
    release: &str,
    vmallocinfo: Option<&VmallocInfo>,
    pcp_free_bytes: Option<u64>,
) -> Facts {
    let (vmap_stack, vmap_stack_source) = vmap_stack(release, vmallocinfo);
    Facts {
        page_size,
        vmap_stack,
        vmap_stack_source,
        vmallocinfo_bytes: vmallocinfo.map(|v| v.bytes),
        balloon_in_memtotal: balloon_in_memtotal(Path::new(VIRTIO_BALLOON_DRIVER)),
        kernel_version: kernel_version(release),
        pcp_free_bytes,
        hugepage_pools_bytes: hugepage_pools(Path::new(SYS_HUGEPAGES)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLABINFO_HEAD: &str =
        include_str!("../../tests/fixtures/overview/slabinfo-6.18-head.txt");
    const VMALLOCINFO: &str =
        include_str!("../../tests/fixtures/overview/vmallocinfo-6.18-sample.txt");

    #[test]
    fn slabinfo() {
        let caches = parse_slabinfo(SLABINFO_HEAD, 4096).unwrap();
        assert!(caches.len() >= 20, "{}", caches.len());
        assert!(caches.windows(2).all(|w| w[0].bytes >= w[1].bytes));
        let text = "slabinfo - version: 2.1\n\
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n\
kmalloc-1k          1000   1024   1024   32    8 : tunables    0    0    0 : slabdata     32     32      0\n\
dentry             21000  21021    192   21    1 : tunables    0    0    0 : slabdata   1001   1001      0\n";
        let caches = parse_slabinfo(text, 4096).unwrap();
        assert_eq!(
            caches,
            vec![
                SlabCache {
                    name: "dentry".into(),
                    active_objs: 21000,
                    num_objs: 21021,
                    objsize: 192,
                    bytes: 1001 * 4096,
                    reclaimable: None,
                },
                SlabCache {
                    name: "kmalloc-1k".into(),
                    active_objs: 1000,
                    num_objs: 1024,
                    objsize: 1024,
                    bytes: 32 * 8 * 4096,
                    reclaimable: None,
                },
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("dentry")).unwrap();
        std::fs::write(dir.path().join("dentry/reclaim_account"), "1\n").unwrap();
        let d = slab_detail(text, 4096, dir.path()).unwrap();
        assert_eq!(d.top[0].reclaimable, Some(true));
        assert_eq!(d.top[1].reclaimable, None);
        assert_eq!(d.largest_unreclaimable, None);
        assert!(parse_slabinfo("hello\n", 4096).is_err());
        assert!(parse_slabinfo("slabinfo - version: 2.1\nx 1 2\n", 4096).is_err());
    }

    #[test]
    fn largest_unreclaimable_cache_past_the_top() {
        // Eight caches, 8 slabs down to 1; only the 7th largest is unreclaimable.
        let mut text = String::from("slabinfo - version: 2.1\n");
        for (i, name) in ["a", "b", "c", "d", "e", "f", "kmalloc-2k", "h"]
            .iter()
            .enumerate()
        {
            let slabs = 8 - i;
            text.push_str(&format!(
                "{name} 10 10 100 10 1 : tunables 0 0 0 : slabdata {slabs} {slabs} 0\n"
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b", "c", "d", "e", "f", "kmalloc-2k", "h"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            let reclaim = if name == "kmalloc-2k" { "0" } else { "1" };
            std::fs::write(dir.path().join(name).join("reclaim_account"), reclaim).unwrap();
        }
        let d = slab_detail(&text, 4096, dir.path()).unwrap();
        assert_eq!(d.top.len(), TOP_DETAIL);
        assert!(d.top.iter().all(|c| c.reclaimable == Some(true)));
        let u = d.largest_unreclaimable.unwrap();
        assert_eq!((u.name.as_str(), u.bytes), ("kmalloc-2k", 2 * 4096));
        assert_eq!(u.reclaimable, Some(false));
        // In the top it is found there.
        std::fs::write(dir.path().join("b/reclaim_account"), "0").unwrap();
        let d = slab_detail(&text, 4096, dir.path()).unwrap();
        assert_eq!(d.largest_unreclaimable.unwrap().name, "b");
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(kernel_version("3.10.0-1160.el7.x86_64"), Some((3, 10)));
        assert_eq!(kernel_version("5.3-rc1"), Some((5, 3)));
        assert_eq!(kernel_version("4.4\n"), Some((4, 4)));
        assert_eq!(kernel_version("unknown"), None);
        assert_eq!(kernel_version("6"), None);
    }

    #[test]
    fn hugepage_pools_of_every_size() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(hugepage_pools(&dir.path().join("missing")), None);
        assert_eq!(hugepage_pools(dir.path()), Some(0));
        for (size, n) in [("2048kB", "256\n"), ("1048576kB", "2\n")] {
            let pool = dir.path().join(format!("hugepages-{size}"));
            std::fs::create_dir(&pool).unwrap();
            std::fs::write(pool.join("nr_hugepages"), n).unwrap();
        }
        assert_eq!(
            hugepage_pools(dir.path()),
            Some(256 * (2 << 20) + 2 * (1 << 30))
        );
        // A pool that cannot be read: no partial sum.
        std::fs::create_dir(dir.path().join("hugepages-64kB")).unwrap();
        assert_eq!(hugepage_pools(dir.path()), None);
    }

    #[test]
    fn vmallocinfo() {
        let info = parse_vmallocinfo(VMALLOCINFO, 4096);
        // kernel_clone 5 × 4 pages, bpf_prog_alloc_no_stats 3 × 1, htab_map_alloc 2 + 128,
        // pcpu_create_chunk 2 + 8; ioremap, vmap, vm_area and page-less vmalloc areas left out.
        assert_eq!(info.bytes, (20 + 3 + 130 + 10) * 4096);
        assert!(info.has_stacks);
        assert_eq!(
            info.callers[0],
            VmallocCaller {
                caller: "htab_map_alloc".into(),
                bytes: 130 * 4096,
                areas: 2
            }
        );
        assert_eq!(info.callers[1].caller, "kernel_clone");
        assert_eq!(info.callers.len(), 4);
        assert_eq!(parse_vmallocinfo("", 4096), VmallocInfo::default());
        // No stack areas: not taken as evidence either way.
        let info = parse_vmallocinfo(
            "0x1-0x2 8192 module_alloc+0x1/0x2 pages=1 vmalloc N0=1\n",
            4096,
        );
        assert!(!info.has_stacks);
        assert_eq!(info.bytes, 4096);
    }

    #[test]
    fn vmap_stack_from_config() {
        assert_eq!(
            config_vmap_stack("CONFIG_64BIT=y\nCONFIG_VMAP_STACK=y\n"),
            Some(true)
        );
        assert_eq!(
            config_vmap_stack("CONFIG_HAVE_ARCH_VMAP_STACK=y\n# CONFIG_VMAP_STACK is not set\n"),
            Some(false)
        );
        assert_eq!(
            config_vmap_stack("CONFIG_64BIT=y\nCONFIG_SMP=y\n"),
            Some(false)
        );
        assert_eq!(config_vmap_stack(""), None);
        // This machine: whatever the source, the answer comes with where it came from.
        let (_, source) = vmap_stack("no-such-release", None);
        assert!(!source.is_empty());
    }

    #[test]
    fn balloon_features() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(balloon_in_memtotal(&dir.path().join("missing")), None);
        assert_eq!(balloon_in_memtotal(dir.path()), None);
        std::fs::create_dir(dir.path().join("virtio3")).unwrap();
        std::fs::write(
            dir.path().join("virtio3/features"),
            "1100000000000000000000000000000010000000000000000000000000000000\n",
        )
        .unwrap();
        assert_eq!(balloon_in_memtotal(dir.path()), Some(false));
        std::fs::write(
            dir.path().join("virtio3/features"),
            "1110000000000000000000000000000010000000000000000000000000000000\n",
        )
        .unwrap();
        assert_eq!(balloon_in_memtotal(dir.path()), Some(true));
    }

    #[test]
    fn unreadable_is_a_note() {
        let err = read_optional("/nonexistent/slabinfo").unwrap_err();
        assert!(err.contains("/nonexistent/slabinfo"), "{err}");
    }
}
