//! The node breakdown: MemTotal split into rows that each count pages once, and the remainder —
//! pages taken from the buddy allocator that no counter explains (SysAK's "allocPage").
//!
//! [`breakdown`] is a pure function of the parsed `/proc/meminfo`, `/proc/vmstat` and a few
//! [`Facts`]. Every row is ≥ 0 and the rows (the remainder last) add up to `MemTotal` exactly;
//! when the counters overlap so that they explain more than `MemTotal`, the remainder is 0 and
//! the excess is reported as `overlap` (then Σ rows = MemTotal + overlap), never hidden.
//!
//! # The formula (all in bytes; meminfo fields by name, vmstat fields × page size)
//!
//! ```text
//! LRU        = Active(anon) + Inactive(anon) + Active(file) + Inactive(file) + Unevictable
//!            + nr_isolated_anon + nr_isolated_file
//! free       = MemFree
//! free (per-CPU lists) = Σ count of the pagesets in /proc/zoneinfo × page size
//! user anon  = LRU − Cached − Buffers − SwapCached
//! page cache = Cached − Shmem
//! buffers    = Buffers
//! shmem      = Shmem
//! swap cache = SwapCached
//! slab       = SReclaimable, SUnreclaim
//! other reclaimable kernel = KReclaimable − SReclaimable
//! kernel stacks = KernelStack + ShadowCallStack
//! page tables   = PageTables;  secondary page tables = SecPageTables
//! percpu     = Percpu
//! vmalloc    = VmallocUsed − kernel stacks        (CONFIG_VMAP_STACK; else VmallocUsed)
//!              (before 5.3: Σ pages= of /proc/vmallocinfo instead of VmallocUsed)
//! hugetlb    = Hugetlb                            (else Σ nr_hugepages × size of
//!              /sys/kernel/mm/hugepages/*, else HugePages_Total × Hugepagesize)
//! compressed = max(nr_zspages, Zswap)             (zsmalloc pools of zram / zswap)
//! bounce, writeback tmp, hardware corrupted = Bounce, WritebackTmp, HardwareCorrupted
//! memmap     = nr_memmap_pages                    (struct pages allocated after boot)
//! balloon    = Balloon                            (only when the balloon stays in MemTotal)
//! unexplained = MemTotal − Σ(rows above)
//! ```
//!
//! # Why these and not others
//!
//! - **Free pages on the per-CPU lists are not in `MemFree`.** The page allocator moves free
//!   pages from the buddy lists to per-CPU lists (PCP) in batches and subtracts them from
//!   `NR_FREE_PAGES` then; they are still free. Only `/proc/zoneinfo` (world-readable) counts
//!   them (`pagesets` → `count:` per zone and CPU): tens to hundreds of MiB on a machine with a
//!   few CPUs, more with many. Without the row they would be in the remainder.
//! - **User memory is taken from the LRU lists, as SysAK does.** Every anonymous, page-cache,
//!   shmem and swap-cache page sits on exactly one LRU list (or is isolated from it for
//!   reclaim/migration: `nr_isolated_*`), so their sum counts each page once. `Cached` (page
//!   cache without `Buffers` and swap cache) already contains `Shmem`, and `SwapCached` pages
//!   are often also mapped (`AnonPages`), so `AnonPages + Cached + SwapCached` would count
//!   swapped-in pages twice; and `AnonPages` misses anonymous pages that are not mapped any
//!   more (MADV_FREE'd pages waiting for reclaim are on the file LRU, still anon). So
//!   `user anon` is the LRU pages that are not page cache or swap cache; `AnonPages` is shown
//!   beside it. `Unevictable` (mlocked, ramfs, SHM_LOCK) is inside the LRU sum; `Mlocked` is a
//!   subset of it (SysAK adds `Mlocked` on top of the LRU lists, counting it twice).
//! - `Cached = NR_FILE_PAGES − SwapCached − Buffers` in the kernel (fs/proc/meminfo.c), and
//!   `Shmem` is a subset of it: page cache proper is `Cached − Shmem`. `Dirty` and `Writeback`
//!   are subsets shown under it (`Writeback` also counts swap-out I/O).
//! - `Slab = SReclaimable + SUnreclaim`: the two rows, not `Slab` too. `KReclaimable` is
//!   `SReclaimable` plus other reclaimable kernel memory (`nr_kernel_misc_reclaimable`, e.g.
//!   GPU driver pools): only the difference is a row.
//! - **Kernel stacks vs vmalloc.** With `CONFIG_VMAP_STACK` (default on x86_64 and arm64) each
//!   stack is a vmalloc area, so its pages are in `VmallocUsed` (`nr_vmalloc_pages`) *and* in
//!   `KernelStack`: the vmalloc row leaves them out (the per-CPU cached free stacks stay in it).
//!   Where that cannot be decided (no kernel config) it is assumed on x86_64/aarch64, with a
//!   note.
//! - **`VmallocUsed` is pages only from 5.3 on** (`nr_vmalloc_pages`). Kernels 4.4–5.2 print
//!   0, and before 4.4 it is the size of every vmap area — `ioremap`, `vmap()` and the guard
//!   page of each area included — not pages. Before 5.3 the `pages=` of the vmalloc areas in
//!   `/proc/vmallocinfo` (root) are summed instead, as SysAK does; without them the vmalloc row
//!   is unknown (0, with a note) and the remainder includes the vmalloc pages. The kernel
//!   version comes from `/proc/sys/kernel/osrelease` ([`Facts::kernel_version`]).
//! - `VmallocUsed` counts only pages vmalloc allocated itself: percpu chunks map pages the
//!   percpu allocator allocates (`Percpu`), `vmap()`/`ioremap` map pages or I/O memory of others
//!   — no overlap.
//! - `Percpu` is every populated percpu page, including the first chunk that was allocated
//!   at boot from memblock and is *not* part of MemTotal (the kernel log's `percpu: Embedded N
//!   pages/cpu`, about 200 KiB per CPU): the remainder is understated by that much.
//! - `Hugetlb` (kernels ≥ 5.x) counts pool pages of every huge page size, free or in use;
//!   older kernels only have `HugePages_Total × Hugepagesize` of the default size, so there
//!   the pools of every size are summed from `/sys/kernel/mm/hugepages/hugepages-<size>kB/
//!   nr_hugepages` when readable. Pool pages reserved at boot are added to MemTotal when the
//!   pool is set up, so they are inside it.
//! - zram and zswap store compressed pages in zsmalloc pages (`nr_zspages`), which no meminfo
//!   line but `Zswap` (zswap's pool only) shows.
//! - `Bounce`, `WritebackTmp` (FUSE), `HardwareCorrupted` (poisoned pages taken out of use) and
//!   `nr_memmap_pages` (struct page arrays allocated after boot, e.g. for hotplugged memory)
//!   are pages from the buddy allocator with a counter of their own: rows, shown when non-zero.
//! - `Balloon`: a virtio balloon without `DEFLATE_ON_OOM` (and the Xen, Hyper-V balloons)
//!   take their pages out of MemTotal, a virtio balloon with it leaves them in: a row only then.
//! - Subsets that are not rows: `AnonPages`, `AnonHugePages`, `Mapped`, `Mlocked`,
//!   `ShmemHugePages`, `FileHugePages`, `CmaFree` and `Unaccepted` (both inside `MemFree`).
//!   `AnonPages` (mapped anon, swap-cache pages that are mapped included) and `Mapped` (mapped
//!   page cache *and* shmem) straddle rows, so they are shown as parts of the user rows
//!   together (`within: "user"`), not of `user anon` / `page cache`.
//!   `nr_iommu_pages` is inside `SecPageTables`. `Committed_AS`, `VmallocTotal`, `DirectMap*`
//!   are not memory in use.
//! - Left in the remainder, by design: pages drivers and subsystems take with `alloc_pages()`
//!   / `__get_free_pages()` and keep — network page frags and page_pool pages (skb data in
//!   socket queues), GPU/DMA buffers, `vmap()`ed driver pages, kernel page tables of vmalloc
//!   space, BPF ring buffers, CMA allocations. That is what `memtrace trace --kind page`
//!   attributes to stacks.
//!
//! The counters are per-CPU-batched and read one after the other, so on a busy machine the
//! sum drifts by a few MiB; this is the reason for the overlap report rather than a panic.

use super::meminfo::{Meminfo, Vmstat};

/// What the counters alone cannot tell, found elsewhere (kernel config, `/proc/vmallocinfo`,
/// sysfs). See [`super::detail`] for how each is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// Bytes per page (vmstat counts pages).
    pub page_size: u64,
    /// Kernel stacks are vmalloc areas (`CONFIG_VMAP_STACK`), so `KernelStack` is inside
    /// `VmallocUsed`.
    pub vmap_stack: bool,
    /// How [`Facts::vmap_stack`] was decided: `/proc/config.gz`, `/boot/config-…`,
    /// `/proc/vmallocinfo`, or "assumed (…)".
    pub vmap_stack_source: String,
    /// Σ `pages=` × page size of the `vmalloc` areas in `/proc/vmallocinfo`, when readable.
    pub vmallocinfo_bytes: Option<u64>,
    /// Whether `Balloon` pages are part of MemTotal (virtio-balloon with `DEFLATE_ON_OOM`);
    /// `None` when no virtio balloon says so (then they are taken as outside it).
    pub balloon_in_memtotal: Option<bool>,
    /// The running kernel's `(major, minor)` from `/proc/sys/kernel/osrelease`; `None` when
    /// not known. Decides what meminfo's `VmallocUsed` means ([`vmalloc_used_meaning`]).
    pub kernel_version: Option<(u32, u32)>,
    /// Free pages on the per-CPU lists × page size (`/proc/zoneinfo`); `None` when unreadable.
    pub pcp_free_bytes: Option<u64>,
    /// Σ `nr_hugepages` × size over `/sys/kernel/mm/hugepages/hugepages-*` (every pool size);
    /// `None` when not readable. Used only when meminfo has no `Hugetlb`.
    pub hugepage_pools_bytes: Option<u64>,
}

impl Default for Facts {
    fn default() -> Self {
        Facts {
            page_size: 4096,
            vmap_stack: true,
            vmap_stack_source: "assumed".into(),
            vmallocinfo_bytes: None,
            balloon_in_memtotal: None,
            kernel_version: None,
            pcp_free_bytes: None,
            hugepage_pools_bytes: None,
        }
    }
}

/// What meminfo's `VmallocUsed` is on a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmallocUsed {
    /// 5.3 and later: pages vmalloc allocated (`nr_vmalloc_pages`).
    Pages,
    /// 4.4 to 5.2: always 0.
    Zero,
    /// Before 4.4: the size of every vmap area (`ioremap`, `vmap()`, guard pages included).
    AreaSizes,
    /// The kernel version is not known.
    Unknown,
}

/// What `VmallocUsed` means on kernel `version` (`(major, minor)`).
pub fn vmalloc_used_meaning(version: Option<(u32, u32)>) -> VmallocUsed {
    match version {
        None => VmallocUsed::Unknown,
        Some(v) if v >= (5, 3) => VmallocUsed::Pages,
        Some(v) if v >= (4, 4) => VmallocUsed::Zero,
        Some(_) => VmallocUsed::AreaSizes,
    }
}

/// Row keys (JSON `rows[].key`), in table order.
pub mod key {
    pub const FREE: &str = "free";
    pub const FREE_PER_CPU: &str = "free_per_cpu";
    pub const USER_ANON: &str = "user_anon";
    pub const PAGE_CACHE: &str = "page_cache";
    pub const BUFFERS: &str = "buffers";
    pub const SHMEM: &str = "shmem";
    pub const SWAP_CACHE: &str = "swap_cache";
    pub const SLAB_RECLAIMABLE: &str = "slab_reclaimable";
    pub const SLAB_UNRECLAIMABLE: &str = "slab_unreclaimable";
    pub const KERNEL_MISC_RECLAIMABLE: &str = "kernel_misc_reclaimable";
    pub const KERNEL_STACKS: &str = "kernel_stacks";
    pub const PAGE_TABLES: &str = "page_tables";
    pub const SECONDARY_PAGE_TABLES: &str = "secondary_page_tables";
    pub const PERCPU: &str = "percpu";
    pub const VMALLOC: &str = "vmalloc";
    pub const HUGETLB: &str = "hugetlb";
    pub const COMPRESSED: &str = "compressed";
    pub const BOUNCE: &str = "bounce";
    pub const WRITEBACK_TMP: &str = "writeback_tmp";
    pub const HARDWARE_CORRUPTED: &str = "hardware_corrupted";
    pub const MEMMAP: &str = "memmap";
    pub const BALLOON: &str = "balloon";
    pub const UNEXPLAINED: &str = "unexplained";
}

/// One part of MemTotal.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    /// Stable name ([`key`]).
    pub key: &'static str,
    /// What the table prints.
    pub label: &'static str,
    pub bytes: u64,
    /// The formula over meminfo (`Name`) and vmstat (`nr_*`) fields.
    pub source: String,
    /// Printed in the table only when non-zero (always in the JSON).
    pub minor: bool,
}

/// A figure inside a row (a subset), shown with it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Detail {
    pub key: &'static str,
    pub label: &'static str,
    pub bytes: u64,
    /// The row (key) it is part of; `user` for the user rows together.
    pub within: &'static str,
    /// The meminfo/vmstat field(s).
    pub source: &'static str,
}

/// The result of [`breakdown`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breakdown {
    pub mem_total: u64,
    /// Every row, the remainder ([`key::UNEXPLAINED`]) last. Σ bytes = mem_total + overlap.
    pub rows: Vec<Row>,
    /// Pages no counter explains (the last row).
    pub unexplained: u64,
    /// How much more than MemTotal the other rows explain (0 normally); the remainder is
    /// then 0.
    pub overlap: u64,
    pub details: Vec<Detail>,
    /// Anything this run's figures need said: missing fields, clamped rows, assumptions.
    pub notes: Vec<String>,
}

impl Breakdown {
    /// `unexplained` as a percentage of MemTotal.
    pub fn unexplained_percent(&self) -> f64 {
        percent(self.unexplained, self.mem_total)
    }
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Builds the rows (see the module documentation for the formula and why).
pub fn breakdown(m: &Meminfo, v: &Vmstat, f: &Facts) -> Breakdown {
    let mut b = Builder {
        m,
        notes: Vec::new(),
        rows: Vec::new(),
        missing: Vec::new(),
    };
    let page = |name: &str| v.or0(name).saturating_mul(f.page_size);

    // --- user memory: the LRU lists, split by what the page-cache counters say -------------
    let lru = b.sum(&[
        "Active(anon)",
        "Inactive(anon)",
        "Active(file)",
        "Inactive(file)",
        "Unevictable",
    ]) + page("nr_isolated_anon")
        + page("nr_isolated_file");
    let cached = b.field("Cached");
    let buffers = b.field("Buffers");
    let swap_cached = b.field("SwapCached");
    let shmem = b.field("Shmem");
    let file_pages = cached + buffers + swap_cached;

    let free = b.field("MemFree");
    b.push(key::FREE, "free", free, "MemFree", false);
    let pcp = match f.pcp_free_bytes {
        Some(bytes) => bytes,
        None => {
            b.notes.push(
                "/proc/zoneinfo could not be read or parsed: the free pages on the per-CPU lists are \
                 counted as 0 (they are not in MemFree, so they fall into the remainder)"
                    .into(),
            );
            0
        }
    };
    b.push(
        key::FREE_PER_CPU,
        "free (per-CPU lists)",
        pcp,
        "Σ pagesets count in /proc/zoneinfo",
        false,
    );
    let user_anon = b.clamped(
        "user anon",
        lru as i128 - file_pages as i128,
        "the LRU lists hold fewer pages than Cached + Buffers + SwapCached \
         (pages on their way to an LRU list)",
    );
    b.push(
        key::USER_ANON,
        "user anon",
        user_anon,
        "Active(anon) + Inactive(anon) + Active(file) + Inactive(file) + Unevictable \
         + nr_isolated_anon + nr_isolated_file − Cached − Buffers − SwapCached",
        false,
    );
    let page_cache = b.clamped(
        "page cache",
        cached as i128 - shmem as i128,
        "Shmem is larger than Cached",
    );
    b.push(
        key::PAGE_CACHE,
        "page cache",
        page_cache,
        "Cached − Shmem",
        false,
    );
    b.push(key::BUFFERS, "buffers", buffers, "Buffers", false);
    b.push(
        key::SHMEM,
        "shmem (tmpfs, shm, memfd)",
        shmem,
        "Shmem",
        false,
    );
    b.push(
        key::SWAP_CACHE,
        "swap cache",
        swap_cached,
        "SwapCached",
        false,
    );

    // --- slab --------------------------------------------------------------------------------
    let (s_recl, s_unrecl, s_src) = match (m.get("SReclaimable"), m.get("SUnreclaim")) {
        (Some(r), Some(u)) => (r, u, "SUnreclaim"),
        _ => {
            let slab = b.field("Slab");
            b.notes.push(
                "meminfo has no SReclaimable/SUnreclaim: all of Slab is shown as unreclaimable"
                    .into(),
            );
            (0, slab, "Slab")
        }
    };
    b.push(
        key::SLAB_RECLAIMABLE,
        "slab reclaimable",
        s_recl,
        "SReclaimable",
        false,
    );
    b.push(
        key::SLAB_UNRECLAIMABLE,
        "slab unreclaimable",
        s_unrecl,
        s_src,
        false,
    );
    let misc = match m.get("KReclaimable") {
        Some(k) => b.clamped(
            "other reclaimable kernel",
            k as i128 - s_recl as i128,
            "KReclaimable is smaller than SReclaimable",
        ),
        None => 0,
    };
    b.push(
        key::KERNEL_MISC_RECLAIMABLE,
        "other reclaimable kernel",
        misc,
        "KReclaimable − SReclaimable",
        true,
    );

    // --- other kernel counters ---------------------------------------------------------------
    let stacks = b.field("KernelStack") + m.or0("ShadowCallStack");
    b.push(
        key::KERNEL_STACKS,
        "kernel stacks",
        stacks,
        if m.get("ShadowCallStack").is_some() {
            "KernelStack + ShadowCallStack"
        } else {
            "KernelStack"
        },
        false,
    );
    let pt = b.field("PageTables");
    b.push(key::PAGE_TABLES, "page tables", pt, "PageTables", false);
    b.push(
        key::SECONDARY_PAGE_TABLES,
        "secondary page tables (KVM, IOMMU)",
        m.or0("SecPageTables"),
        "SecPageTables",
        true,
    );
    let pcpu = b.field("Percpu");
    b.push(key::PERCPU, "percpu", pcpu, "Percpu", false);

    let (vmalloc, vsrc) = match vmalloc_used(m, f, &mut b.notes) {
        None => (
            0,
            "unknown: VmallocUsed not usable, /proc/vmallocinfo not readable".into(),
        ),
        Some((used, mut vsrc)) if f.vmap_stack => {
            vsrc.push_str(" − kernel stacks (vmalloc'ed: CONFIG_VMAP_STACK)");
            if stacks > used {
                b.notes.push(format!(
                    "kernel stacks ({stacks} bytes) exceed VmallocUsed ({used} bytes) \
                     although stacks are taken to be vmalloc'ed ({}): vmalloc shown as 0",
                    f.vmap_stack_source
                ));
            }
            (used.saturating_sub(stacks), vsrc)
        }
        Some(used_src) => used_src,
    };
    if f.vmap_stack_source.starts_with("assumed") {
        b.notes.push(format!(
            "whether kernel stacks are vmalloc'ed (CONFIG_VMAP_STACK) is not known here: {} {}",
            if f.vmap_stack {
                "taken as yes"
            } else {
                "taken as no"
            },
            f.vmap_stack_source
        ));
    }
    b.push(key::VMALLOC, "vmalloc", vmalloc, &vsrc, false);

    let (hugetlb, hsrc) = match (m.get("Hugetlb"), f.hugepage_pools_bytes) {
        (Some(h), _) => (h, "Hugetlb"),
        (None, Some(pools)) => (
            pools,
            "Σ nr_hugepages × size of /sys/kernel/mm/hugepages/hugepages-*",
        ),
        (None, None) => (
            m.or0("HugePages_Total")
                .saturating_mul(m.or0("Hugepagesize")),
            "HugePages_Total × Hugepagesize",
        ),
    };
    b.push(key::HUGETLB, "hugetlb pool", hugetlb, hsrc, false);

    let zspages = page("nr_zspages");
    let zswap = m.or0("Zswap");
    b.push(
        key::COMPRESSED,
        "compressed (zram, zswap)",
        zspages.max(zswap),
        "max(nr_zspages, Zswap)",
        true,
    );
    b.push(
        key::BOUNCE,
        "bounce buffers",
        m.or0("Bounce"),
        "Bounce",
        true,
    );
    b.push(
        key::WRITEBACK_TMP,
        "FUSE writeback buffers",
        m.or0("WritebackTmp"),
        "WritebackTmp",
        true,
    );
    b.push(
        key::HARDWARE_CORRUPTED,
        "hardware corrupted",
        m.or0("HardwareCorrupted"),
        "HardwareCorrupted",
        true,
    );
    b.push(
        key::MEMMAP,
        "memmap allocated after boot",
        page("nr_memmap_pages"),
        "nr_memmap_pages",
        true,
    );
    let balloon = m.or0("Balloon");
    let balloon_row = match f.balloon_in_memtotal {
        Some(true) => balloon,
        _ => 0,
    };
    if balloon > 0 && f.balloon_in_memtotal.is_none() {
        b.notes.push(format!(
            "{balloon} bytes are in a memory balloon; no virtio balloon with deflate-on-OOM was \
             found, so they are taken as outside MemTotal (not a row)"
        ));
    }
    b.push(
        key::BALLOON,
        "balloon (inside MemTotal)",
        balloon_row,
        "Balloon",
        true,
    );

    // --- the remainder -----------------------------------------------------------------------
    let total = m.mem_total();
    let explained: u64 = b.rows.iter().map(|r| r.bytes).sum();
    let (unexplained, overlap) = if explained <= total {
        (total - explained, 0)
    } else {
        (0, explained - total)
    };
    if overlap > 0 {
        b.notes.push(format!(
            "the rows explain {overlap} bytes more than MemTotal: counters overlap or moved \
             between reads; the remainder is shown as 0 and the rows add up to MemTotal + \
             {overlap}"
        ));
    }
    b.push(
        key::UNEXPLAINED,
        "unexplained: buddy pages no counter explains",
        unexplained,
        "MemTotal − Σ rows above",
        false,
    );
    if !b.missing.is_empty() {
        let missing = std::mem::take(&mut b.missing);
        b.notes.push(format!(
            "meminfo of this kernel has no {}: counted as 0 (those pages fall into the \
             remainder)",
            missing.join(", ")
        ));
    }

    let details = details(m);
    let Builder { rows, notes, .. } = b;
    Breakdown {
        mem_total: total,
        rows,
        unexplained,
        overlap,
        details,
        notes,
    }
}

/// `VmallocUsed` in bytes as far as this kernel's meminfo can be trusted (see the module
/// documentation), else Σ `pages=` of `/proc/vmallocinfo`, else 0 with a note; and the
/// formula it came from.
/// `None`: not known (the note says so).
fn vmalloc_used(m: &Meminfo, f: &Facts, notes: &mut Vec<String>) -> Option<(u64, String)> {
    const FROM_INFO: &str = "Σ pages= of vmalloc areas in /proc/vmallocinfo";
    let meaning = vmalloc_used_meaning(f.kernel_version);
    let used = m.get("VmallocUsed").filter(|&u| u > 0);
    let why = match (meaning, used) {
        (VmallocUsed::Pages, Some(used)) => return Some((used, "VmallocUsed".into())),
        (VmallocUsed::Pages, None) => "meminfo's VmallocUsed is 0 or missing",
        (VmallocUsed::Zero, _) => "kernels 4.4–5.2 print VmallocUsed as 0",
        (VmallocUsed::AreaSizes, _) => {
            "before Linux 4.4 meminfo's VmallocUsed is the size of every vmap area (ioremap, \
             vmap() and guard pages included), not pages"
        }
        (VmallocUsed::Unknown, _) => "the kernel version is not known",
    };
    match (f.vmallocinfo_bytes, meaning, used) {
        (Some(info), _, _) => {
            if info > 0 || matches!(meaning, VmallocUsed::Zero | VmallocUsed::AreaSizes) {
                notes.push(format!(
                    "{why}: vmalloc is summed from /proc/vmallocinfo ({info} bytes)"
                ));
            }
            Some((info, FROM_INFO.into()))
        }
        (None, VmallocUsed::Unknown, Some(used)) => {
            notes.push(format!(
                "{why} and /proc/vmallocinfo is not readable (root only): meminfo's \
                 VmallocUsed is taken as pages (true from Linux 5.3 on)"
            ));
            Some((used, "VmallocUsed".into()))
        }
        (None, _, _) => {
            notes.push(format!(
                "{why}, and /proc/vmallocinfo is not readable (root only): the vmalloc row is \
                 unknown (shown as 0) and the remainder includes the vmalloc pages"
            ));
            None
        }
    }
}

struct Builder<'a> {
    m: &'a Meminfo,
    notes: Vec<String>,
    rows: Vec<Row>,
    missing: Vec<&'static str>,
}

impl Builder<'_> {
    /// A field the formula needs; remembered as missing (for one note) when absent.
    fn field(&mut self, name: &'static str) -> u64 {
        match self.m.get(name) {
            Some(v) => v,
            None => {
                if !self.missing.contains(&name) {
                    self.missing.push(name);
                }
                0
            }
        }
    }

    fn sum(&mut self, names: &[&'static str]) -> u64 {
        names.iter().map(|n| self.field(n)).sum()
    }

    /// `value` when ≥ 0, else 0 with a note (`why` the formula went negative).
    fn clamped(&mut self, label: &str, value: i128, why: &str) -> u64 {
        if value < 0 {
            self.notes.push(format!(
                "{label} would be {value} bytes ({why}): shown as 0"
            ));
            0
        } else {
            u64::try_from(value).unwrap_or(u64::MAX)
        }
    }

    fn push(
        &mut self,
        key: &'static str,
        label: &'static str,
        bytes: u64,
        source: &str,
        minor: bool,
    ) {
        self.rows.push(Row {
            key,
            label,
            bytes,
            source: source.to_owned(),
            minor,
        });
    }
}

/// The subsets shown beside the rows (only those this kernel has).
fn details(m: &Meminfo) -> Vec<Detail> {
    let mut out = Vec::new();
    let mut add = |key, label, field: &'static str, within| {
        if let Some(bytes) = m.get(field) {
            out.push(Detail {
                key,
                label,
                bytes,
                within,
                source: field,
            });
        }
    };
    add("dirty", "dirty", "Dirty", key::PAGE_CACHE);
    add(
        "writeback",
        "writeback (file and swap I/O in flight)",
        "Writeback",
        key::PAGE_CACHE,
    );
    add(
        "file_huge",
        "file huge pages",
        "FileHugePages",
        key::PAGE_CACHE,
    );
    // These straddle rows: AnonPages counts mapped swap-cache pages too (user anon + swap
    // cache), AnonHugePages is part of it, and Mapped counts mapped shmem too (page cache +
    // shmem). So they are parts of the user rows together, not of one of them.
    add(
        "anon_mapped",
        "mapped anon (AnonPages, incl. mapped swap cache)",
        "AnonPages",
        "user",
    );
    add(
        "anon_huge",
        "anon huge pages (AnonHugePages)",
        "AnonHugePages",
        "user",
    );
    add(
        "mapped",
        "mapped files and shmem (Mapped)",
        "Mapped",
        "user",
    );
    add("unevictable", "unevictable", "Unevictable", "user");
    add("mlocked", "mlocked", "Mlocked", "user");
    add(
        "shmem_huge",
        "shmem huge pages",
        "ShmemHugePages",
        key::SHMEM,
    );
    add("cma_free", "CMA free", "CmaFree", key::FREE);
    add(
        "unaccepted",
        "unaccepted (CoCo VM)",
        "Unaccepted",
        key::FREE,
    );
    if let (Some(free), Some(size)) = (m.get("HugePages_Free"), m.get("Hugepagesize")) {
        out.push(Detail {
            key: "hugetlb_free",
            label: "free huge pages (default size)",
            bytes: free.saturating_mul(size),
            within: key::HUGETLB,
            source: "HugePages_Free × Hugepagesize",
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL_MEMINFO: &str = include_str!("../../tests/fixtures/overview/meminfo-6.18-vm.txt");
    const REAL_VMSTAT: &str = include_str!("../../tests/fixtures/overview/vmstat-6.18-vm.txt");
    const OLD_MEMINFO: &str = include_str!("../../tests/fixtures/overview/meminfo-3.10.txt");

    const KIB: u64 = 1024;

    impl Breakdown {
        fn row(&self, key: &str) -> Option<&Row> {
            self.rows.iter().find(|r| r.key == key)
        }

        fn bytes(&self, key: &str) -> u64 {
            self.row(key).map_or(0, |r| r.bytes)
        }
    }

    /// A 6.18 kernel; the per-CPU lists empty (so the hand-computed remainders stay as they
    /// were computed from meminfo alone).
    fn facts(vmap_stack: bool) -> Facts {
        Facts {
            page_size: 4096,
            vmap_stack,
            vmap_stack_source: "/proc/config.gz".into(),
            vmallocinfo_bytes: None,
            balloon_in_memtotal: None,
            kernel_version: Some((6, 18)),
            pcp_free_bytes: Some(0),
            hugepage_pools_bytes: None,
        }
    }

    fn sum(b: &Breakdown) -> u64 {
        b.rows.iter().map(|r| r.bytes).sum()
    }

    /// The invariant every breakdown keeps.
    fn check_invariants(b: &Breakdown) {
        assert_eq!(sum(b), b.mem_total + b.overlap, "{b:#?}");
        let last = b.rows.last().unwrap();
        assert_eq!(last.key, key::UNEXPLAINED);
        assert_eq!(last.bytes, b.unexplained);
        assert!(b.overlap == 0 || b.unexplained == 0);
        let mut keys: Vec<&str> = b.rows.iter().map(|r| r.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), b.rows.len(), "duplicate row keys");
    }

    #[test]
    fn real_meminfo_adds_up_with_the_hand_computed_remainder() {
        let m = Meminfo::parse(REAL_MEMINFO).unwrap();
        let v = Vmstat::parse(REAL_VMSTAT).unwrap();
        let b = breakdown(&m, &v, &facts(true));
        check_invariants(&b);
        assert_eq!(b.mem_total, 24_684_092 * KIB);
        // By hand from the fixture (kB):
        //   user anon = 1488+295196+1660868+2571052+14272 − 4225916 − 14864 − 0 = 302096
        //   page cache = 4225916 − 8856 = 4217060; vmalloc = 16728 − 1840 = 14888
        //   rows = 19841812 + 302096 + 4217060 + 14864 + 8856 + 0 + 176976 + 35736 + 0
        //        + 1840 + 5920 + 0 + 1648 + 14888 + 0 = 24621696
        //   remainder = 24684092 − 24621696 = 62396
        assert_eq!(b.bytes(key::USER_ANON), 302_096 * KIB);
        assert_eq!(b.bytes(key::PAGE_CACHE), 4_217_060 * KIB);
        assert_eq!(b.bytes(key::VMALLOC), 14_888 * KIB);
        assert_eq!(b.bytes(key::KERNEL_STACKS), 1_840 * KIB);
        assert_eq!(b.bytes(key::SLAB_RECLAIMABLE), 176_976 * KIB);
        assert_eq!(b.unexplained, 62_396 * KIB);
        assert_eq!(b.overlap, 0);
        assert!(b.notes.is_empty(), "{:?}", b.notes);
        // The user rows together are the LRU lists.
        let user: u64 = [
            key::USER_ANON,
            key::PAGE_CACHE,
            key::BUFFERS,
            key::SHMEM,
            key::SWAP_CACHE,
        ]
        .iter()
        .map(|k| b.bytes(k))
        .sum();
        assert_eq!(
            user,
            (1488 + 295_196 + 1_660_868 + 2_571_052 + 14_272) * KIB
        );
        let dirty = b.details.iter().find(|d| d.key == "dirty").unwrap();
        assert_eq!(
            (dirty.bytes, dirty.within),
            (272_756 * KIB, key::PAGE_CACHE)
        );
        // The free pages on the per-CPU lists come right after MemFree.
        assert_eq!(b.rows[0].key, key::FREE);
        assert_eq!(b.rows[1].key, key::FREE_PER_CPU);

        // Without CONFIG_VMAP_STACK the stacks are not inside VmallocUsed: the vmalloc row
        // grows by them and the remainder shrinks by as much.
        let nv = breakdown(&m, &v, &facts(false));
        check_invariants(&nv);
        assert_eq!(nv.bytes(key::VMALLOC), 16_728 * KIB);
        assert_eq!(nv.unexplained, (62_396 - 1_840) * KIB);
    }

    /// A synthetic meminfo whose remainder is known: 1 GiB of pages nobody counts.
    fn synthetic(extra: &str) -> String {
        // MemTotal 8 GiB = 8388608 kB. Rows (kB):
        //   free 4194304, LRU 2097152 + 1024 isolated pages (4096 kB) of which
        //   Cached 1048576 (Shmem 131072), Buffers 16384, SwapCached 8192 → user anon
        //   = 2097152 + 4096 − 1073152 = 1028096; slab 262144 + 65536; KReclaimable 270336
        //   → misc 8192; stacks 16384 (vmalloc'ed) of VmallocUsed 49152 → vmalloc 32768;
        //   PageTables 32768; SecPageTables 4096; Percpu 8192; Hugetlb 524288 (256 × 2 MiB);
        //   zspages 1024 (4096 kB) > Zswap 2048; Bounce 0; HardwareCorrupted 4;
        //   memmap 16 pages (64 kB).
        format!(
            "MemTotal:        8388608 kB\nMemFree:         4194304 kB\nMemAvailable:    5000000 kB\n\
             Buffers:           16384 kB\nCached:          1048576 kB\nSwapCached:         8192 kB\n\
             Active(anon):     600000 kB\nInactive(anon):   500000 kB\nActive(file):     500000 kB\n\
             Inactive(file):   480000 kB\nUnevictable:       17152 kB\nMlocked:           10000 kB\n\
             Dirty:             20000 kB\nWriteback:          1000 kB\nAnonPages:       1000000 kB\n\
             Shmem:            131072 kB\nKReclaimable:     270336 kB\nSlab:             327680 kB\n\
             SReclaimable:     262144 kB\nSUnreclaim:        65536 kB\nKernelStack:       16384 kB\n\
             PageTables:        32768 kB\nSecPageTables:      4096 kB\nBounce:                0 kB\n\
             VmallocUsed:       49152 kB\nPercpu:             8192 kB\nHardwareCorrupted:     4 kB\n\
             Zswap:              2048 kB\nHugePages_Total:     256\nHugePages_Free:      128\n\
             Hugepagesize:       2048 kB\nHugetlb:          524288 kB\n{extra}"
        )
    }

    const SYNTH_VMSTAT: &str =
        "nr_isolated_anon 1000\nnr_isolated_file 24\nnr_zspages 1024\nnr_memmap_pages 16\n";

    #[test]
    fn synthetic_remainder_is_exact() {
        let m = Meminfo::parse(&synthetic("")).unwrap();
        let v = Vmstat::parse(SYNTH_VMSTAT).unwrap();
        let b = breakdown(&m, &v, &facts(true));
        check_invariants(&b);
        let kb = |k| b.bytes(k) / KIB;
        assert_eq!(kb(key::FREE), 4_194_304);
        assert_eq!(kb(key::USER_ANON), 2_097_152 + 4096 - 1_073_152);
        assert_eq!(kb(key::PAGE_CACHE), 1_048_576 - 131_072);
        assert_eq!(kb(key::SHMEM), 131_072);
        assert_eq!(kb(key::SWAP_CACHE), 8192);
        assert_eq!(kb(key::KERNEL_MISC_RECLAIMABLE), 8192);
        assert_eq!(kb(key::VMALLOC), 32_768);
        assert_eq!(kb(key::HUGETLB), 524_288);
        assert_eq!(kb(key::COMPRESSED), 4096);
        assert_eq!(kb(key::MEMMAP), 64);
        assert_eq!(kb(key::HARDWARE_CORRUPTED), 4);
        // Everything but the remainder:
        let explained = 4_194_304
            + 1_028_096
            + 917_504
            + 16_384
            + 131_072
            + 8192
            + 262_144
            + 65_536
            + 8192
            + 16_384
            + 32_768
            + 4096
            + 8192
            + 32_768
            + 524_288
            + 4096
            + 4
            + 64;
        assert_eq!(b.unexplained, (8_388_608 - explained) * KIB);
        // Which is a hair over 1 GiB of pages put there on purpose.
        assert_eq!(8_388_608 - explained, 1_134_524);
        let hfree = b.details.iter().find(|d| d.key == "hugetlb_free").unwrap();
        assert_eq!(hfree.bytes, 128 * 2048 * KIB);
    }

    #[test]
    fn hugetlb_without_the_hugetlb_field() {
        let text = synthetic("").replace("Hugetlb:          524288 kB\n", "");
        let m = Meminfo::parse(&text).unwrap();
        let b = breakdown(&m, &Vmstat::default(), &facts(true));
        check_invariants(&b);
        assert_eq!(b.bytes(key::HUGETLB), 256 * 2048 * KIB);
        assert_eq!(
            b.row(key::HUGETLB).unwrap().source,
            "HugePages_Total × Hugepagesize"
        );
        // A 1 GiB pool besides the 256 default-size (2 MiB) pages: only sysfs sees it.
        let mut f = facts(true);
        f.hugepage_pools_bytes = Some(256 * 2048 * KIB + (1 << 30));
        let pools = breakdown(&m, &Vmstat::default(), &f);
        check_invariants(&pools);
        assert_eq!(pools.bytes(key::HUGETLB), 256 * 2048 * KIB + (1 << 30));
        assert_eq!(pools.unexplained + (1 << 30), b.unexplained);
        assert!(pools
            .row(key::HUGETLB)
            .unwrap()
            .source
            .contains("nr_hugepages"));
        // meminfo's Hugetlb (every size already) wins over sysfs.
        let m = Meminfo::parse(&synthetic("")).unwrap();
        assert_eq!(
            breakdown(&m, &Vmstat::default(), &f).bytes(key::HUGETLB),
            524_288 * KIB
        );
    }

    #[test]
    fn free_pages_on_the_per_cpu_lists_are_a_row() {
        let m = Meminfo::parse(&synthetic("")).unwrap();
        let v = Vmstat::parse(SYNTH_VMSTAT).unwrap();
        let without = breakdown(&m, &v, &facts(true));
        let mut f = facts(true);
        f.pcp_free_bytes = Some(120 << 20);
        let b = breakdown(&m, &v, &f);
        check_invariants(&b);
        assert_eq!(b.rows[1].key, key::FREE_PER_CPU);
        assert_eq!(b.rows[1].label, "free (per-CPU lists)");
        assert_eq!(b.bytes(key::FREE_PER_CPU), 120 << 20);
        assert_eq!(b.unexplained + (120 << 20), without.unexplained);
        assert!(b.notes.is_empty(), "{:?}", b.notes);
        // /proc/zoneinfo unreadable: 0 and a note.
        f.pcp_free_bytes = None;
        let b = breakdown(&m, &v, &f);
        check_invariants(&b);
        assert_eq!(b.bytes(key::FREE_PER_CPU), 0);
        assert_eq!(b.unexplained, without.unexplained);
        assert!(
            b.notes.iter().any(|n| n.contains("/proc/zoneinfo")),
            "{:?}",
            b.notes
        );
    }

    #[test]
    fn straddling_subsets_are_parts_of_the_user_rows() {
        let m = Meminfo::parse(REAL_MEMINFO).unwrap();
        let b = breakdown(&m, &Vmstat::default(), &facts(true));
        for k in ["anon_mapped", "anon_huge", "mapped"] {
            let d = b.details.iter().find(|d| d.key == k).unwrap();
            assert_eq!(d.within, "user", "{d:?}");
        }
        let d = b.details.iter().find(|d| d.key == "anon_mapped").unwrap();
        assert!(d.label.contains("swap cache"), "{}", d.label);
        let d = b.details.iter().find(|d| d.key == "mapped").unwrap();
        assert!(d.label.contains("shmem"), "{}", d.label);
    }

    #[test]
    fn negative_remainder_is_reported_as_overlap() {
        // MemFree alone claims 9 GiB of an 8 GiB machine (as if the counters had overlapped).
        let text =
            synthetic("").replace("MemFree:         4194304 kB", "MemFree:         9437184 kB");
        let m = Meminfo::parse(&text).unwrap();
        let v = Vmstat::parse(SYNTH_VMSTAT).unwrap();
        let b = breakdown(&m, &v, &facts(true));
        check_invariants(&b);
        assert_eq!(b.unexplained, 0);
        let explained_before = 8_388_608 - 1_134_524;
        let expected_overlap = explained_before + (9_437_184 - 4_194_304) - 8_388_608;
        assert_eq!(b.overlap, expected_overlap * KIB);
        assert!(b.rows.iter().all(|r| r.bytes <= b.mem_total * 2));
        assert!(
            b.notes.iter().any(|n| n.contains("more than MemTotal")),
            "{:?}",
            b.notes
        );
    }

    #[test]
    fn negative_rows_are_clamped_with_a_note() {
        // Shmem > Cached and the LRU lists smaller than the page-cache counters.
        let text = synthetic("")
            .replace("Shmem:            131072 kB", "Shmem:           2000000 kB")
            .replace("Active(file):     500000 kB", "Active(file):          0 kB");
        let m = Meminfo::parse(&text).unwrap();
        let b = breakdown(&m, &Vmstat::default(), &facts(true));
        check_invariants(&b);
        assert_eq!(b.bytes(key::PAGE_CACHE), 0);
        assert!(b.notes.iter().any(|n| n.contains("page cache would be")));
        // The LRU lists (600000 + 17152 kB) smaller than Cached + Buffers + SwapCached
        // (1073152 kB):
        let text = text.replace("Inactive(file):   480000 kB", "Inactive(file):        0 kB");
        let text = text.replace("Inactive(anon):   500000 kB", "Inactive(anon):        0 kB");
        let m = Meminfo::parse(&text).unwrap();
        let b = breakdown(&m, &Vmstat::default(), &facts(true));
        check_invariants(&b);
        assert_eq!(b.bytes(key::USER_ANON), 0);
        assert!(
            b.notes.iter().any(|n| n.contains("user anon would be")),
            "{:?}",
            b.notes
        );
        assert!(b.rows.iter().all(|r| r.bytes < u64::MAX / 2));
    }

    #[test]
    fn stacks_larger_than_vmalloc_and_assumptions_are_noted() {
        let text =
            synthetic("").replace("VmallocUsed:       49152 kB", "VmallocUsed:        1000 kB");
        let m = Meminfo::parse(&text).unwrap();
        let mut f = facts(true);
        f.vmap_stack_source = "assumed (x86_64 default)".into();
        let b = breakdown(&m, &Vmstat::default(), &f);
        check_invariants(&b);
        assert_eq!(b.bytes(key::VMALLOC), 0);
        assert!(b.notes.iter().any(|n| n.contains("exceed VmallocUsed")));
        assert!(b.notes.iter().any(|n| n.contains("not known here")));
    }

    #[test]
    fn old_kernel_fixture() {
        // CentOS 7 (3.10) meminfo: no KReclaimable, Percpu, SecPageTables, Hugetlb, Zswap.
        // Its VmallocUsed (368456 kB) is the size of every vmap area (ioremap and guard pages
        // included), not pages: without /proc/vmallocinfo the vmalloc row is unknown (0) and
        // the remainder includes the vmalloc pages.
        let m = Meminfo::parse(OLD_MEMINFO).unwrap();
        let mut f = facts(false);
        f.kernel_version = Some((3, 10));
        let b = breakdown(&m, &Vmstat::default(), &f);
        check_invariants(&b);
        assert_eq!(b.bytes(key::VMALLOC), 0);
        assert!(
            b.notes
                .iter()
                .any(|n| n.contains("before Linux 4.4") && n.contains("remainder includes")),
            "{:?}",
            b.notes
        );
        assert_eq!(b.bytes(key::KERNEL_MISC_RECLAIMABLE), 0);
        assert_eq!(b.bytes(key::HUGETLB), 0);
        assert!(
            b.notes.iter().any(|n| n.contains("no Percpu")),
            "{:?}",
            b.notes
        );
        // MemTotal 16267652 kB; by hand (kB): free 1197272; LRU 3914388+1009620+4628888
        // +4321212+0 = 13874108; Cached 8739424 + Buffers 1052 + SwapCached 0 → user anon
        // 5133632; page cache 8739424 − 1066376 = 7673048; shmem 1066376; slab 555908 +
        // 103752; stacks 33392; page tables 62072; vmalloc unknown (0): remainder 441148.
        let explained = 1_197_272
            + 5_133_632
            + 7_673_048
            + 1052
            + 1_066_376
            + 555_908
            + 103_752
            + 33_392
            + 62_072;
        assert_eq!(b.unexplained, (16_267_652 - explained) * KIB);
        assert_eq!(b.unexplained, 441_148 * KIB);
        // As root, the pages= of /proc/vmallocinfo make the row.
        f.vmallocinfo_bytes = Some(100_000 * KIB);
        let b = breakdown(&m, &Vmstat::default(), &f);
        check_invariants(&b);
        assert_eq!(b.bytes(key::VMALLOC), 100_000 * KIB);
        assert_eq!(b.unexplained, 341_148 * KIB);
        assert!(b.row(key::VMALLOC).unwrap().source.contains("vmallocinfo"));
    }

    #[test]
    fn vmalloc_used_is_pages_from_5_3() {
        assert_eq!(vmalloc_used_meaning(Some((6, 18))), VmallocUsed::Pages);
        assert_eq!(vmalloc_used_meaning(Some((5, 3))), VmallocUsed::Pages);
        assert_eq!(vmalloc_used_meaning(Some((5, 2))), VmallocUsed::Zero);
        assert_eq!(vmalloc_used_meaning(Some((4, 4))), VmallocUsed::Zero);
        assert_eq!(vmalloc_used_meaning(Some((4, 3))), VmallocUsed::AreaSizes);
        assert_eq!(vmalloc_used_meaning(Some((3, 10))), VmallocUsed::AreaSizes);
        assert_eq!(vmalloc_used_meaning(None), VmallocUsed::Unknown);
        // A non-zero VmallocUsed on 4.4–5.2 (it cannot be pages there) is not used either.
        let m = Meminfo::parse(&synthetic("")).unwrap();
        let mut f = facts(false);
        f.kernel_version = Some((4, 19));
        let b = breakdown(&m, &Vmstat::default(), &f);
        assert_eq!(b.bytes(key::VMALLOC), 0);
        // Unknown version: /proc/vmallocinfo when readable, else VmallocUsed with a note.
        f.kernel_version = None;
        let b = breakdown(&m, &Vmstat::default(), &f);
        assert_eq!(b.bytes(key::VMALLOC), 49_152 * KIB);
        assert!(b.notes.iter().any(|n| n.contains("version is not known")));
        f.vmallocinfo_bytes = Some(30_000 * KIB);
        let b = breakdown(&m, &Vmstat::default(), &f);
        assert_eq!(b.bytes(key::VMALLOC), 30_000 * KIB);
    }

    #[test]
    fn vmalloc_from_vmallocinfo_when_meminfo_says_zero() {
        let text =
            synthetic("").replace("VmallocUsed:       49152 kB", "VmallocUsed:           0 kB");
        let m = Meminfo::parse(&text).unwrap();
        let mut f = facts(false);
        f.vmallocinfo_bytes = Some(40_000 * KIB);
        let b = breakdown(&m, &Vmstat::default(), &f);
        check_invariants(&b);
        assert_eq!(b.bytes(key::VMALLOC), 40_000 * KIB);
        assert!(b.notes.iter().any(|n| n.contains("/proc/vmallocinfo")));
        f.vmallocinfo_bytes = None;
        let b = breakdown(&m, &Vmstat::default(), &f);
        assert_eq!(b.bytes(key::VMALLOC), 0);
        assert!(b.notes.iter().any(|n| n.contains("not readable")));
    }

    #[test]
    fn balloon_counts_only_inside_memtotal() {
        let m = Meminfo::parse(&synthetic("Balloon:          262144 kB\n")).unwrap();
        let mut f = facts(true);
        let outside = breakdown(&m, &Vmstat::default(), &f);
        check_invariants(&outside);
        assert_eq!(outside.bytes(key::BALLOON), 0);
        assert!(outside.notes.iter().any(|n| n.contains("balloon")));
        f.balloon_in_memtotal = Some(true);
        let inside = breakdown(&m, &Vmstat::default(), &f);
        check_invariants(&inside);
        assert_eq!(inside.bytes(key::BALLOON), 262_144 * KIB);
        assert_eq!(inside.unexplained + 262_144 * KIB, outside.unexplained);
    }

    #[test]
    fn percent_of_zero() {
        assert_eq!(percent(1, 0), 0.0);
        assert_eq!(percent(1, 4), 25.0);
    }
}
