//! What memory is used for: one class per stack, from the allocator kind, the stack's frames,
//! the slab cache name, gfp flags and migrate type. The rules live in one table, [`RULES`].
//!
//! How the table is applied (first match wins at every step):
//!
//! 1. **Cache rules** (slab): the cache name alone decides (`skbuff_head_cache` is network
//!    whatever the stack).
//! 2. **Strong frame rules**: the frames are walked innermost first; the first frame that any
//!    strong rule of the stack's kind matches decides (rules are tried in table order for that
//!    frame). Innermost first is what makes precedence work: a page fault taken while
//!    `tcp_recvmsg` copies to user space is `user-anon` (`do_anonymous_page` is deeper than
//!    `tcp_recvmsg`); a slab page allocated under `kmalloc_reserve` is `slab-backing`
//!    (`allocate_slab` is deeper); a vmalloc'ed kernel stack's pages are `vmalloc-backing`.
//! 3. **Weak frame rules**, the same way: generic networking names (`*tcp_*`, `*sock*`, ...)
//!    and the page-fault entry points, which only say something when no specific function was
//!    found anywhere in the stack.
//! 4. **Fallback** (page kind): `user-anon` for movable allocations (`__GFP_MOVABLE`, migrate
//!    type movable) without file-ish frames; otherwise, and for the other kinds,
//!    `other-kernel`.
//!
//! Function names are compared without compiler suffixes (`.isra.0`, `.cold`, `.constprop.0`),
//! and inlined functions (from debug info) count as frames of their own.

use memtrace_common::Kind;

use super::frames::{base_symbol, is_allocator_internal, SymbolPattern};

/// The classes, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Anonymous memory faulted in by processes (counted in their RSS).
    UserAnon,
    /// File pages (counted by the page cache; `page-cache` in reports).
    PageCache,
    /// tmpfs / shared memory.
    Shmem,
    /// skb data, page frags, page_pool, socket buffers.
    Network,
    /// Pages that back slab caches (and large kmalloc).
    SlabBacking,
    /// Pages that back vmalloc areas.
    VmallocBacking,
    /// Pages that back per-CPU chunks.
    PercpuBacking,
    /// Page tables.
    PageTables,
    /// Kernel stacks.
    KernelStack,
    /// Everything else the kernel holds.
    OtherKernel,
}

impl Class {
    pub const ALL: [Class; 10] = [
        Class::UserAnon,
        Class::PageCache,
        Class::Shmem,
        Class::Network,
        Class::SlabBacking,
        Class::VmallocBacking,
        Class::PercpuBacking,
        Class::PageTables,
        Class::KernelStack,
        Class::OtherKernel,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Class::UserAnon => "user-anon",
            Class::PageCache => "page-cache",
            Class::Shmem => "shmem",
            Class::Network => "network",
            Class::SlabBacking => "slab-backing",
            Class::VmallocBacking => "vmalloc-backing",
            Class::PercpuBacking => "percpu-backing",
            Class::PageTables => "page-tables",
            Class::KernelStack => "kernel-stack",
            Class::OtherKernel => "other-kernel",
        }
    }

    /// The class named `name` (as [`Class::name`] prints it).
    pub fn from_name(name: &str) -> Option<Class> {
        Class::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// Whether the class is made of movable pages (`__GFP_MOVABLE`): a session that selects
    /// none of these classes skips movable pages in the kernel.
    pub const fn is_movable(self) -> bool {
        matches!(self, Class::UserAnon | Class::PageCache | Class::Shmem)
    }

    /// The kind whose own events already count these pages (so page-kind totals leave them
    /// out when that kind is traced too).
    pub const fn backs(self) -> Option<Kind> {
        match self {
            Class::SlabBacking => Some(Kind::Slab),
            Class::VmallocBacking => Some(Kind::Vmalloc),
            Class::PercpuBacking => Some(Kind::Percpu),
            _ => None,
        }
    }
}

/// Every class but the memory processes and the page cache account for (`user-anon`,
/// `page-cache`, `shmem`, all made of movable pages): what `--class kernel` selects, and the
/// default.
pub const KERNEL_CLASSES: [Class; 7] = [
    Class::Network,
    Class::SlabBacking,
    Class::VmallocBacking,
    Class::PercpuBacking,
    Class::PageTables,
    Class::KernelStack,
    Class::OtherKernel,
];

/// Parses `network,shmem`, `all`, `kernel` (every class but `user-anon`, `page-cache` and
/// `shmem`), or
/// a mix, into a de-duplicated list in report order.
pub fn parse_class_list(s: &str) -> Result<Vec<Class>, String> {
    let valid = || {
        let mut names: Vec<&str> = Class::ALL.iter().map(|c| c.name()).collect();
        names.extend(["all", "kernel"]);
        names.join(", ")
    };
    let mut classes = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "all" => classes.extend(Class::ALL),
            "kernel" => classes.extend(KERNEL_CLASSES),
            _ => match Class::from_name(part) {
                Some(c) => classes.push(c),
                None => return Err(format!("unknown class `{part}` (valid: {})", valid())),
            },
        }
    }
    if classes.is_empty() {
        return Err(format!("no class given (valid: {})", valid()));
    }
    classes.sort();
    classes.dedup();
    Ok(classes)
}

/// What the classifier looks at.
#[derive(Clone, Debug, Default)]
pub struct ClassifyInput<'a> {
    pub kind: Option<Kind>,
    /// Function names, innermost first (unresolved frames left out).
    pub frames: &'a [&'a str],
    /// Slab cache name, when known.
    pub cache: Option<&'a str>,
    /// gfp flags (low 32 bits) of an outstanding allocation of the stack, when any.
    pub gfp_flags: Option<u32>,
    /// Migrate type of an outstanding page allocation of the stack, when any.
    pub migratetype: Option<u8>,
}

/// What a rule tests.
#[derive(Clone, Copy, Debug)]
pub enum Test {
    /// The slab cache name matches one of the patterns (step 1).
    Cache(&'static [SymbolPattern]),
    /// Some frame matches one of the patterns (step 2).
    Frame(&'static [SymbolPattern]),
    /// The calling function (the first frame that is not an allocator internal) matches one
    /// of the patterns (step 2): for functions that allocate many things, of which only a
    /// direct allocation says what the memory is.
    Caller(&'static [SymbolPattern]),
    /// Some frame matches one of the patterns, tried only when no strong rule matched any
    /// frame (step 3).
    WeakFrame(&'static [SymbolPattern]),
}

/// One line of the table.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub class: Class,
    /// The kinds the rule applies to.
    pub kinds: &'static [Kind],
    pub test: Test,
}

use Kind::{Page, Percpu, Slab, Vmalloc};
use SymbolPattern::{Contains, Exact, Prefix, Suffix};

const PAGE: &[Kind] = &[Page];
const SLAB: &[Kind] = &[Slab];
const OBJECTS: &[Kind] = &[Slab, Percpu, Vmalloc];
const ALL_KINDS: &[Kind] = &[Page, Slab, Percpu, Vmalloc];
const PAGE_VMALLOC: &[Kind] = &[Page, Vmalloc];

/// Slab caches of the networking stack.
const NET_CACHES: &[SymbolPattern] = &[
    Prefix("skbuff_"), // skbuff_head_cache, skbuff_fclone_cache, skbuff_small_head, _ext_
    Prefix("TCP"),     // TCP, TCPv6
    Prefix("UDP"),     // UDP, UDPv6, UDP-Lite
    Prefix("RAW"),
    Prefix("UNIX"), // UNIX, UNIX-STREAM
    Prefix("PING"),
    Prefix("MPTCP"),
    Prefix("SCTP"),
    Exact("sock_inode_cache"),
    Prefix("request_sock_"),
    Prefix("tw_sock_"),
    Prefix("tcp_bind"), // tcp_bind_bucket, tcp_bind2_bucket
    Prefix("ip_dst_cache"),
    Prefix("ip6_dst_cache"),
    Prefix("inet_peer"),
    Prefix("ip_fib_"),
    Prefix("fib6_"),
    Prefix("nf_conntrack"),
    Prefix("xfrm_"),
];

/// Slab caches of file-system and page-cache metadata: kernel memory, not page cache.
const FS_METADATA_CACHES: &[SymbolPattern] = &[
    Exact("radix_tree_node"),
    Exact("buffer_head"),
    Prefix("ext4_"),
    Prefix("xfs_"),
    Prefix("btrfs_"),
    Prefix("jbd2_"),
    Prefix("nfs_"),
    Prefix("fuse_"),
    Suffix("inode_cache"), // after sock_inode_cache and shmem_inode_cache
];

/// Functions that allocate the pages of slabs (and large kmalloc, which the slab kind's
/// `kmalloc` event counts as well).
const SLAB_BACKING: &[SymbolPattern] = &[
    Exact("allocate_slab"),
    Exact("new_slab"),
    Exact("alloc_slab_page"),
    Contains("kmalloc_large"), // kmalloc_large, __kmalloc_large_node_noprof, ___kmalloc_large_node
    Prefix("kmalloc_order"),   // before 6.1
];

const VMALLOC_BACKING: &[SymbolPattern] = &[
    Prefix("__vmalloc"), // __vmalloc_node_range_noprof, __vmalloc_area_node, __vmalloc_noprof
    Prefix("vmalloc"),   // vmalloc, vmalloc_noprof, vmalloc_huge, vmalloc_user, ...
    Prefix("vzalloc"),
    Exact("vm_area_alloc_pages"),
];

const PERCPU_BACKING: &[SymbolPattern] = &[
    Exact("pcpu_alloc_pages"),
    Exact("pcpu_populate_chunk"),
    Exact("pcpu_create_chunk"),
];

const PAGE_TABLES: &[SymbolPattern] = &[
    Prefix("pte_alloc_one"), // pte_alloc_one, pte_alloc_one_kernel
    Prefix("__pte_alloc"),   // __pte_alloc, __pte_alloc_kernel, __pte_alloc_one
    Exact("__pmd_alloc"),
    Exact("__pud_alloc"),
    Exact("__p4d_alloc"),
    Prefix("pmd_alloc_one"),
    Prefix("pud_alloc_one"),
    Prefix("p4d_alloc_one"),
    Prefix("pgd_alloc"),
    Exact("_pgd_alloc"),
    Exact("__pgd_alloc"),
    Prefix("pagetable_alloc"),
];

/// Functions that allocate a kernel stack (`alloc_thread_stack_node` and `dup_task_struct`
/// are inlined into `copy_process` on many kernels: see [`KERNEL_STACK_CALLERS`]).
const KERNEL_STACK: &[SymbolPattern] = &[
    Exact("alloc_thread_stack_node"),
    Exact("dup_task_struct"),
    Exact("scs_alloc"),
];

/// `copy_process` allocates many things, but the only allocation it makes directly (with the
/// stack helpers inlined) is the thread stack.
const KERNEL_STACK_CALLERS: &[SymbolPattern] = &[Exact("copy_process")];

const SHMEM: &[SymbolPattern] = &[
    Exact("shmem_alloc_folio"),
    Exact("shmem_alloc_page"),
    Exact("shmem_alloc_and_add_folio"),
    Exact("shmem_alloc_and_acct_folio"),
    Prefix("shmem_get_folio"), // shmem_get_folio, shmem_get_folio_gfp
    Prefix("shmem_getpage"),   // before 6.0
    Prefix("shmem_swapin"),
    Prefix("shmem_read_folio"),
    Prefix("shmem_read_mapping_page"),
    Exact("shmem_fault"),
    Exact("shmem_write_begin"),
];

/// Functions that allocate network memory whatever the kind (page frags, page pools, skb
/// heads, sockets).
const NETWORK: &[SymbolPattern] = &[
    Exact("skb_page_frag_refill"),
    Prefix("page_frag_alloc"),
    Prefix("__page_frag_alloc"),
    Prefix("page_frag_cache_refill"),
    Prefix("__page_frag_cache_refill"),
    Prefix("page_pool_"),
    Prefix("__page_pool_"),
    Prefix("netdev_alloc_"),
    Prefix("__netdev_alloc_"),
    Prefix("napi_alloc_"),
    Prefix("__napi_alloc_"),
    Exact("alloc_skb_with_frags"),
    Prefix("skb_segment"),
    Exact("__alloc_skb"),
    Exact("kmalloc_reserve"),
    Exact("pskb_expand_head"),
    Exact("skb_clone"),
    Exact("sk_prot_alloc"),
    Exact("sk_alloc"),
];

const PAGE_CACHE: &[SymbolPattern] = &[
    Prefix("__filemap_get_folio"),
    Prefix("filemap_"), // filemap_alloc_folio, filemap_fault, filemap_read, ...
    Prefix("__filemap_"),
    Prefix("page_cache_ra_"), // page_cache_ra_unbounded, page_cache_ra_order
    Exact("page_cache_async_ra"),
    Exact("page_cache_sync_ra"),
    Exact("force_page_cache_ra"),
    Prefix("ra_"),
    Prefix("do_read_cache_"),
    Prefix("read_cache_"),
    Prefix("grab_cache_page"),
    Exact("read_pages"),
    Prefix("pagecache_get_page"),   // before 6.0
    Prefix("__page_cache_alloc"),   // before 6.0
    Prefix("page_cache_readahead"), // 5.x
    Prefix("__do_page_cache_readahead"),
    Exact("ondemand_readahead"),
];

const USER_ANON: &[SymbolPattern] = &[
    Exact("do_anonymous_page"),
    Exact("alloc_anon_folio"),
    Prefix("do_huge_pmd_anonymous_page"),
    Exact("__do_huge_pmd_anonymous_page"),
    Exact("vma_alloc_anon_folio_pmd"),
    Exact("do_huge_pmd_wp_page"),
    Exact("do_wp_page"),
    Exact("wp_page_copy"),
    Exact("do_cow_fault"),
    Exact("do_swap_page"),
    Exact("swapin_readahead"),
    Exact("swap_cluster_readahead"),
    Exact("swap_vma_readahead"),
    Prefix("__read_swap_cache_async"),
    Prefix("read_swap_cache_async"),
    // A fault that got here without a deeper match (filemap_fault, shmem_fault, __do_fault)
    // is the copy of a private file page (do_cow_fault, inlined).
    Exact("do_fault"),
];

/// A mapping's own fault handler (a driver, or a file system that does not use the page-cache
/// helpers) allocated the page: kernel memory.
const DRIVER_FAULT: &[SymbolPattern] = &[Exact("__do_fault")];

/// Page-fault entry points: a page allocated below them with no more specific frame is the
/// process's (e.g. `do_anonymous_page` inlined); an object allocated below them is kernel
/// metadata for the process's memory (VMAs, anon_vma), whatever called the faulting code.
const FAULT_ENTRY: &[SymbolPattern] = &[
    Exact("handle_pte_fault"),
    Exact("__handle_mm_fault"),
    Prefix("handle_mm_fault"),
    Exact("do_user_addr_fault"),
    Exact("exc_page_fault"),
    Prefix("do_page_fault"),
];

/// Generic networking names, deeper in the stack (a socket system call, the receive path).
const NETWORK_WEAK: &[SymbolPattern] = &[
    Contains("tcp_"),
    Contains("udp"),
    Contains("sock"),
    Contains("skb"),
    Prefix("inet"),
    Prefix("ip_"),
    Prefix("__ip_"),
    Prefix("ip6_"),
    Prefix("__ip6_"),
    Prefix("ipv6_"),
    Prefix("neigh_"),
    Prefix("netif_"),
    Prefix("__netif_"),
    Exact("net_rx_action"),
    Prefix("napi_"),
    Prefix("__napi_"),
    Prefix("netdev_"),
    Prefix("alloc_netdev"),
    Prefix("register_netdev"),
    Prefix("dev_queue_xmit"),
    Prefix("__dev_queue_xmit"),
    Prefix("dev_hard_start_xmit"),
    Prefix("unix_"),
    Prefix("netlink_"),
    Prefix("rtnl_"),
    Prefix("rtnetlink_"),
    Prefix("nf_"),
    Prefix("nft_"),
    Prefix("fib"),
    Prefix("xdp_"),
];

/// The rules, in the order they are tried (see the module documentation for the steps).
pub const RULES: &[Rule] = &[
    // 1. Cache names.
    Rule {
        class: Class::Network,
        kinds: SLAB,
        test: Test::Cache(NET_CACHES),
    },
    Rule {
        class: Class::Shmem,
        kinds: SLAB,
        test: Test::Cache(&[Exact("shmem_inode_cache")]),
    },
    Rule {
        class: Class::OtherKernel,
        kinds: SLAB,
        test: Test::Cache(FS_METADATA_CACHES),
    },
    // 2. Strong frames, innermost frame first.
    Rule {
        class: Class::SlabBacking,
        kinds: PAGE,
        test: Test::Frame(SLAB_BACKING),
    },
    Rule {
        class: Class::VmallocBacking,
        kinds: PAGE,
        test: Test::Frame(VMALLOC_BACKING),
    },
    Rule {
        class: Class::PercpuBacking,
        kinds: PAGE,
        test: Test::Frame(PERCPU_BACKING),
    },
    Rule {
        class: Class::PageTables,
        kinds: PAGE,
        test: Test::Frame(PAGE_TABLES),
    },
    Rule {
        class: Class::KernelStack,
        kinds: PAGE_VMALLOC,
        test: Test::Frame(KERNEL_STACK),
    },
    Rule {
        class: Class::KernelStack,
        kinds: PAGE_VMALLOC,
        test: Test::Caller(KERNEL_STACK_CALLERS),
    },
    Rule {
        class: Class::Shmem,
        kinds: PAGE,
        test: Test::Frame(SHMEM),
    },
    Rule {
        class: Class::Network,
        kinds: ALL_KINDS,
        test: Test::Frame(NETWORK),
    },
    Rule {
        class: Class::PageCache,
        kinds: PAGE,
        test: Test::Frame(PAGE_CACHE),
    },
    Rule {
        class: Class::UserAnon,
        kinds: PAGE,
        test: Test::Frame(USER_ANON),
    },
    Rule {
        class: Class::OtherKernel,
        kinds: PAGE,
        test: Test::Frame(DRIVER_FAULT),
    },
    // 3. Weak frames, innermost frame first.
    Rule {
        class: Class::UserAnon,
        kinds: PAGE,
        test: Test::WeakFrame(FAULT_ENTRY),
    },
    Rule {
        class: Class::OtherKernel,
        kinds: OBJECTS,
        test: Test::WeakFrame(FAULT_ENTRY),
    },
    Rule {
        class: Class::Network,
        kinds: ALL_KINDS,
        test: Test::WeakFrame(NETWORK_WEAK),
    },
];

/// `__GFP_MOVABLE`.
pub const GFP_MOVABLE: u32 = 0x08;
/// `MIGRATE_MOVABLE`.
pub const MIGRATE_MOVABLE: u8 = 1;
/// The tracepoint's `-1` ("no migrate type") as read into a `u8`.
const MIGRATE_NONE: u8 = 255;

/// Frames that mean file I/O: a movable page allocated under them is not taken for an
/// anonymous one by the fallback.
const FILE_HINTS: &[SymbolPattern] = &[
    Contains("file"),
    Contains("_read"), // not Contains("read"): kthread
    Contains("_write"),
    Contains("readahead"),
    Prefix("vfs_"),
    Prefix("ext4_"),
    Prefix("xfs_"),
    Prefix("btrfs_"),
    Prefix("nfs_"),
    Prefix("fuse_"),
];

/// Frames of the write path: page-cache pages allocated under them are about to be dirtied.
const WRITE_PATH: &[SymbolPattern] = &[
    Exact("generic_perform_write"),
    Contains("write_begin"), // ext4_da_write_begin, iomap_write_begin, block_write_begin, ...
    Prefix("iomap_file_buffered_write"),
    Prefix("iomap_write_iter"),
];

fn any_matches(patterns: &[SymbolPattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name))
}

/// The class of a stack.
pub fn classify(input: &ClassifyInput<'_>) -> Class {
    let kind = input.kind.unwrap_or(Kind::Page);
    let rules = || RULES.iter().filter(move |r| r.kinds.contains(&kind));
    let names: Vec<&str> = input
        .frames
        .iter()
        .map(|f| base_symbol(f))
        .filter(|f| !f.is_empty())
        .collect();

    if let Some(cache) = input.cache {
        for r in rules() {
            if let Test::Cache(p) = r.test {
                if any_matches(p, cache) {
                    return r.class;
                }
            }
        }
    }

    let caller = names.iter().position(|n| !is_allocator_internal(n));
    for (i, name) in names.iter().enumerate() {
        for r in rules() {
            let hit = match r.test {
                Test::Frame(p) => any_matches(p, name),
                Test::Caller(p) => caller == Some(i) && any_matches(p, name),
                Test::Cache(_) | Test::WeakFrame(_) => false,
            };
            if hit {
                return r.class;
            }
        }
    }
    for name in &names {
        for r in rules() {
            if let Test::WeakFrame(p) = r.test {
                if any_matches(p, name) {
                    return r.class;
                }
            }
        }
    }

    if kind == Kind::Page {
        let movable = match (input.gfp_flags, input.migratetype) {
            (Some(gfp), mt) => {
                gfp & GFP_MOVABLE != 0
                    && mt.is_none_or(|m| m == MIGRATE_MOVABLE || m == MIGRATE_NONE)
            }
            (None, Some(mt)) => mt == MIGRATE_MOVABLE,
            (None, None) => false,
        };
        let file_ish = names.iter().any(|n| any_matches(FILE_HINTS, n));
        if movable && !file_ish {
            return Class::UserAnon;
        }
    }
    Class::OtherKernel
}

/// `dirty` for a page-cache stack allocated on the write path (the page is about to be
/// written), else `None`.
pub fn page_cache_detail(frames: &[&str]) -> Option<&'static str> {
    frames
        .iter()
        .any(|f| any_matches(WRITE_PATH, base_symbol(f)))
        .then_some("dirty")
}

/// A detail of `class` for a stack with these frames (innermost first), shown as
/// `page-cache (dirty)`.
pub fn class_detail(class: Class, frames: &[&str]) -> Option<&'static str> {
    match class {
        Class::PageCache => page_cache_detail(frames),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tracepoint and BPF frames that sit on top of every captured stack.
    const TP: &[&str] = &[
        "bpf_prog_6deef7357e7b4530_mm_page_alloc",
        "bpf_trace_run4",
        "__traceiter_mm_page_alloc",
    ];

    fn input<'a>(kind: Kind, frames: &'a [&'a str]) -> ClassifyInput<'a> {
        ClassifyInput {
            kind: Some(kind),
            frames,
            ..Default::default()
        }
    }

    fn with_tp(frames: &[&'static str]) -> Vec<&'static str> {
        TP.iter().chain(frames).copied().collect()
    }

    /// (what, kind, cache, frames innermost first, expected class). Realistic stacks, mostly
    /// as memtrace printed them on 6.x kernels.
    #[allow(clippy::type_complexity)]
    const CASES: &[(&str, Kind, Option<&str>, &[&str], Class)] = &[
        (
            "anonymous fault",
            Page,
            None,
            &[
                "get_page_from_freelist",
                "__alloc_frozen_pages_noprof",
                "alloc_pages_mpol",
                "vma_alloc_folio_noprof",
                "do_anonymous_page",
                "__handle_mm_fault",
                "handle_mm_fault",
                "do_user_addr_fault",
                "exc_page_fault",
                "asm_exc_page_fault",
            ],
            Class::UserAnon,
        ),
        (
            "anonymous fault with do_anonymous_page inlined",
            Page,
            None,
            &[
                "__alloc_frozen_pages_noprof",
                "alloc_pages_mpol",
                "vma_alloc_folio_noprof",
                "__handle_mm_fault",
                "handle_mm_fault",
                "do_user_addr_fault",
            ],
            Class::UserAnon,
        ),
        (
            "THP fault",
            Page,
            None,
            &[
                "__alloc_frozen_pages_noprof",
                "alloc_pages_mpol",
                "folio_alloc_mpol_noprof",
                "vma_alloc_folio_noprof",
                "vma_alloc_anon_folio_pmd",
                "do_huge_pmd_anonymous_page",
                "__handle_mm_fault",
            ],
            Class::UserAnon,
        ),
        (
            "copy on write",
            Page,
            None,
            &[
                "alloc_pages_mpol",
                "vma_alloc_folio_noprof",
                "wp_page_copy",
                "do_wp_page",
                "__handle_mm_fault",
            ],
            Class::UserAnon,
        ),
        (
            "private file mapping written (do_cow_fault inlined into do_fault)",
            Page,
            None,
            &[
                "alloc_pages_mpol",
                "vma_alloc_folio_noprof",
                "do_fault",
                "__handle_mm_fault",
            ],
            Class::UserAnon,
        ),
        (
            "swap-in",
            Page,
            None,
            &[
                "alloc_pages_mpol",
                "folio_alloc_mpol_noprof",
                "__read_swap_cache_async",
                "swap_cluster_readahead",
                "swapin_readahead",
                "do_swap_page",
                "__handle_mm_fault",
            ],
            Class::UserAnon,
        ),
        (
            "buffered write",
            Page,
            None,
            &[
                "__alloc_frozen_pages_noprof",
                "alloc_pages_mpol",
                "folio_alloc_noprof",
                "__filemap_get_folio",
                "ext4_da_write_begin",
                "generic_perform_write",
                "ext4_buffered_write_iter",
                "vfs_write",
                "ksys_write",
            ],
            Class::PageCache,
        ),
        (
            "readahead",
            Page,
            None,
            &[
                "alloc_pages_mpol",
                "folio_alloc_noprof",
                "page_cache_ra_unbounded",
                "filemap_get_pages",
                "filemap_read",
                "vfs_read",
            ],
            Class::PageCache,
        ),
        (
            "file read fault",
            Page,
            None,
            &[
                "folio_alloc_noprof",
                "page_cache_ra_order",
                "filemap_fault",
                "__do_fault",
                "do_fault",
                "__handle_mm_fault",
            ],
            Class::PageCache,
        ),
        (
            "tmpfs write",
            Page,
            None,
            &[
                "alloc_pages_mpol",
                "folio_alloc_mpol_noprof",
                "shmem_alloc_folio",
                "shmem_alloc_and_add_folio",
                "shmem_get_folio_gfp",
                "shmem_write_begin",
                "generic_perform_write",
                "shmem_file_write_iter",
            ],
            Class::Shmem,
        ),
        (
            "shared memory fault",
            Page,
            None,
            &[
                "alloc_pages_mpol",
                "folio_alloc_mpol_noprof",
                "shmem_alloc_folio.isra.0",
                "shmem_alloc_and_add_folio",
                "shmem_get_folio_gfp",
                "shmem_fault",
                "__do_fault",
                "do_fault",
                "__handle_mm_fault",
            ],
            Class::Shmem,
        ),
        (
            "tcp send page frags",
            Page,
            None,
            &[
                "__alloc_frozen_pages_noprof",
                "alloc_pages_mpol",
                "alloc_pages_noprof",
                "skb_page_frag_refill",
                "sk_page_frag_refill",
                "tcp_sendmsg_locked",
                "tcp_sendmsg",
                "__sys_sendto",
            ],
            Class::Network,
        ),
        (
            "driver rx page pool",
            Page,
            None,
            &[
                "__alloc_pages_noprof",
                "__page_pool_alloc_netmems_slow",
                "page_pool_alloc_netmems",
                "mlx5e_post_rx_wqes",
                "mlx5e_napi_poll",
                "__napi_poll",
                "net_rx_action",
                "handle_softirqs",
            ],
            Class::Network,
        ),
        (
            "rx path, unknown driver function",
            Page,
            None,
            &[
                "__alloc_pages_noprof",
                "mydrv_refill_rx",
                "mydrv_poll",
                "__napi_poll",
                "net_rx_action",
            ],
            Class::Network,
        ),
        (
            "slab page",
            Page,
            None,
            &[
                "__alloc_frozen_pages_noprof",
                "alloc_pages_mpol",
                "allocate_slab",
                "___slab_alloc",
                "__slab_alloc.isra.0",
                "kmem_cache_alloc_noprof",
                "anon_vma_fork",
                "dup_mmap",
            ],
            Class::SlabBacking,
        ),
        (
            "large kmalloc pages",
            Page,
            None,
            &[
                "__alloc_frozen_pages_noprof",
                "___kmalloc_large_node",
                "__kmalloc_large_node_noprof",
                "__kmalloc_noprof",
                "seq_read_iter",
            ],
            Class::SlabBacking,
        ),
        (
            "vmalloc pages",
            Page,
            None,
            &[
                "alloc_pages_noprof",
                "alloc_pages_bulk_noprof",
                "__vmalloc_node_range_noprof",
                "__bpf_map_area_alloc",
                "array_map_alloc",
                "map_create",
            ],
            Class::VmallocBacking,
        ),
        (
            "percpu chunk pages",
            Page,
            None,
            &[
                "__alloc_pages_noprof",
                "pcpu_populate_chunk",
                "pcpu_balance_populated",
                "pcpu_balance_workfn",
                "process_one_work",
            ],
            Class::PercpuBacking,
        ),
        (
            "pte page",
            Page,
            None,
            &[
                "__alloc_pages_noprof",
                "alloc_pages_noprof",
                "pte_alloc_one",
                "__pte_alloc",
                "do_anonymous_page",
                "__handle_mm_fault",
            ],
            Class::PageTables,
        ),
        (
            "pmd page",
            Page,
            None,
            &["alloc_pages_noprof", "__pmd_alloc", "__handle_mm_fault"],
            Class::PageTables,
        ),
        (
            "pgd at exec",
            Page,
            None,
            &["__get_free_pages", "pgd_alloc", "mm_init", "bprm_execve"],
            Class::PageTables,
        ),
        (
            "kernel stack without VMAP_STACK",
            Page,
            None,
            &[
                "__alloc_pages_noprof",
                "alloc_thread_stack_node",
                "dup_task_struct",
                "copy_process",
                "kernel_clone",
            ],
            Class::KernelStack,
        ),
        (
            "kernel stack, helpers inlined into copy_process",
            Page,
            None,
            &["__alloc_pages_noprof", "copy_process", "kernel_clone"],
            Class::KernelStack,
        ),
        (
            "driver mmap fault handler",
            Page,
            None,
            &[
                "__alloc_pages_noprof",
                "ttm_pool_alloc",
                "ttm_bo_vm_fault",
                "__do_fault",
                "do_fault",
                "__handle_mm_fault",
            ],
            Class::OtherKernel,
        ),
        (
            "unremarkable kernel page",
            Page,
            None,
            &[
                "__get_free_pages",
                "get_zeroed_page_noprof",
                "some_driver_init",
            ],
            Class::OtherKernel,
        ),
        // Slab objects.
        (
            "skb head cache",
            Slab,
            Some("skbuff_head_cache"),
            &[
                "kmem_cache_alloc_node_noprof",
                "__alloc_skb",
                "tcp_stream_alloc_skb",
            ],
            Class::Network,
        ),
        (
            "skb data from kmalloc",
            Slab,
            Some("kmalloc-2k"),
            &[
                "__kmalloc_node_track_caller_noprof",
                "kmalloc_reserve",
                "__alloc_skb",
                "tcp_stream_alloc_skb",
            ],
            Class::Network,
        ),
        (
            "socket",
            Slab,
            Some("TCPv6"),
            &["kmem_cache_alloc_noprof", "sk_prot_alloc", "sk_alloc"],
            Class::Network,
        ),
        (
            "unix socket inode",
            Slab,
            Some("sock_inode_cache"),
            &[
                "kmem_cache_alloc_lru_noprof",
                "sock_alloc_inode",
                "new_inode_pseudo",
            ],
            Class::Network,
        ),
        (
            "tmpfs inode",
            Slab,
            Some("shmem_inode_cache"),
            &[
                "kmem_cache_alloc_lru_noprof",
                "shmem_alloc_inode",
                "alloc_inode",
            ],
            Class::Shmem,
        ),
        (
            "page cache xarray node: metadata",
            Slab,
            Some("radix_tree_node"),
            &[
                "kmem_cache_alloc_lru_noprof",
                "xas_alloc",
                "xas_create",
                "__filemap_add_folio",
                "filemap_add_folio",
                "page_cache_ra_unbounded",
            ],
            Class::OtherKernel,
        ),
        (
            "ext4 inode",
            Slab,
            Some("ext4_inode_cache"),
            &[
                "kmem_cache_alloc_lru_noprof",
                "ext4_alloc_inode",
                "alloc_inode",
            ],
            Class::OtherKernel,
        ),
        (
            "vma from a fault during a socket copy: metadata, not network",
            Slab,
            Some("anon_vma"),
            &[
                "kmem_cache_alloc_noprof",
                "__anon_vma_prepare",
                "do_anonymous_page",
                "__handle_mm_fault",
                "handle_mm_fault",
                "do_user_addr_fault",
                "exc_page_fault",
                "asm_exc_page_fault",
                "_copy_to_iter",
                "skb_copy_datagram_iter",
                "tcp_recvmsg_locked",
                "tcp_recvmsg",
            ],
            Class::OtherKernel,
        ),
        (
            "plain kmalloc",
            Slab,
            Some("kmalloc-64"),
            &[
                "__kmalloc_cache_noprof",
                "kernfs_fop_open",
                "do_dentry_open",
            ],
            Class::OtherKernel,
        ),
        // Per-CPU.
        (
            "netdev stats",
            Percpu,
            None,
            &[
                "pcpu_alloc_noprof",
                "netdev_init_one_queue",
                "register_netdevice",
            ],
            Class::Network,
        ),
        (
            "cgroup",
            Percpu,
            None,
            &[
                "pcpu_alloc_noprof",
                "mem_cgroup_alloc",
                "mem_cgroup_css_alloc",
            ],
            Class::OtherKernel,
        ),
        // vmalloc areas.
        (
            "kernel stack area",
            Vmalloc,
            None,
            &[
                "alloc_vmap_area",
                "__get_vm_area_node",
                "__vmalloc_node_range_noprof",
                "copy_process",
                "kernel_clone",
            ],
            Class::KernelStack,
        ),
        (
            "kernel stack area, helpers not inlined",
            Vmalloc,
            None,
            &[
                "alloc_vmap_area",
                "__get_vm_area_node",
                "__vmalloc_node_range_noprof",
                "alloc_thread_stack_node",
                "dup_task_struct",
                "copy_process",
            ],
            Class::KernelStack,
        ),
        (
            "big fd table at fork: not a kernel stack",
            Vmalloc,
            None,
            &[
                "alloc_vmap_area",
                "__get_vm_area_node",
                "__vmalloc_node_range_noprof",
                "__kvmalloc_node_noprof",
                "alloc_fdtable",
                "dup_fd",
                "copy_process",
            ],
            Class::OtherKernel,
        ),
        (
            "bpf map",
            Vmalloc,
            None,
            &[
                "alloc_vmap_area",
                "__get_vm_area_node",
                "__vmalloc_node_range_noprof",
                "__bpf_map_area_alloc",
                "array_map_alloc",
            ],
            Class::OtherKernel,
        ),
        (
            "socket hash table",
            Vmalloc,
            None,
            &[
                "alloc_vmap_area",
                "__vmalloc_node_range_noprof",
                "__kvmalloc_node_noprof",
                "inet_ehash_locks_alloc",
                "tcp_init",
            ],
            Class::Network,
        ),
    ];

    #[test]
    fn table_of_realistic_stacks() {
        let mut failures = Vec::new();
        for (what, kind, cache, frames, want) in CASES {
            for tp in [false, true] {
                let frames: Vec<&str> = if tp { with_tp(frames) } else { frames.to_vec() };
                let got = classify(&ClassifyInput {
                    kind: Some(*kind),
                    frames: &frames,
                    cache: *cache,
                    ..Default::default()
                });
                if got != *want {
                    failures.push(format!(
                        "{what} (tracing frames {tp}): {got:?}, want {want:?}"
                    ));
                }
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        // Every class is exercised.
        for c in Class::ALL {
            assert!(
                CASES.iter().any(|(_, _, _, _, want)| *want == c),
                "{c:?} has no case"
            );
        }
    }

    #[test]
    fn precedence() {
        // A page fault while tcp_recvmsg copies to user space: the process's page.
        let f = [
            "alloc_pages_mpol",
            "vma_alloc_folio_noprof",
            "do_anonymous_page",
            "__handle_mm_fault",
            "handle_mm_fault",
            "do_user_addr_fault",
            "exc_page_fault",
            "asm_exc_page_fault",
            "_copy_to_iter",
            "__skb_datagram_iter",
            "skb_copy_datagram_iter",
            "tcp_recvmsg_locked",
            "tcp_recvmsg",
            "inet_recvmsg",
            "sock_recvmsg",
        ];
        assert_eq!(classify(&input(Page, &f)), Class::UserAnon);
        // Same with do_anonymous_page inlined: the fault entry is still deeper than tcp.
        let f2: Vec<&str> = f
            .iter()
            .copied()
            .filter(|n| *n != "do_anonymous_page")
            .collect();
        assert_eq!(classify(&input(Page, &f2)), Class::UserAnon);

        // A shmem fault goes through __do_fault/do_fault: shmem, not page cache or anon.
        let f = [
            "folio_alloc_mpol_noprof",
            "shmem_alloc_folio",
            "shmem_get_folio_gfp",
            "shmem_fault",
            "__do_fault",
            "do_fault",
        ];
        assert_eq!(classify(&input(Page, &f)), Class::Shmem);

        // A slab page for an skb head: slab-backing, not network.
        let f = [
            "__alloc_frozen_pages_noprof",
            "alloc_pages_mpol",
            "allocate_slab",
            "___slab_alloc",
            "__kmalloc_node_track_caller_noprof",
            "kmalloc_reserve",
            "__alloc_skb",
            "tcp_stream_alloc_skb",
            "tcp_sendmsg_locked",
        ];
        assert_eq!(classify(&input(Page, &f)), Class::SlabBacking);
        // ... and a large kmalloc'ed skb head too.
        let f = [
            "__alloc_frozen_pages_noprof",
            "___kmalloc_large_node",
            "__kmalloc_large_node_noprof",
            "__kmalloc_node_track_caller_noprof",
            "kmalloc_reserve",
            "__alloc_skb",
        ];
        assert_eq!(classify(&input(Page, &f)), Class::SlabBacking);

        // A vmalloc'ed kernel stack: its pages are vmalloc-backing (the vmalloc kind's area is
        // the kernel stack).
        let f = [
            "__alloc_pages_noprof",
            "alloc_pages_bulk_noprof",
            "__vmalloc_node_range_noprof",
            "alloc_thread_stack_node",
            "dup_task_struct",
            "copy_process",
        ];
        assert_eq!(classify(&input(Page, &f)), Class::VmallocBacking);
        assert_eq!(classify(&input(Vmalloc, &f[2..])), Class::KernelStack);

        // A generic networking name never beats a specific function, even deeper in the
        // stack (network file systems, splice); nor does a fault entry point.
        let f = [
            "__alloc_pages_noprof",
            "xs_sock_recv_helper",
            "page_cache_ra_unbounded",
        ];
        assert_eq!(classify(&input(Page, &f)), Class::PageCache);
        let f = [
            "__alloc_pages_noprof",
            "handle_mm_fault",
            "skb_page_frag_refill",
        ];
        assert_eq!(classify(&input(Page, &f)), Class::Network);
        let f = ["kmem_cache_alloc_noprof", "tcp_helper", "sk_prot_alloc"];
        assert_eq!(classify(&input(Slab, &f)), Class::Network);
        let f = [
            "kmem_cache_alloc_noprof",
            "handle_mm_fault",
            "sk_prot_alloc",
        ];
        assert_eq!(classify(&input(Slab, &f)), Class::Network);

        // Page tables allocated in an anonymous fault.
        let f = [
            "alloc_pages_noprof",
            "pte_alloc_one",
            "__pte_alloc",
            "do_anonymous_page",
        ];
        assert_eq!(classify(&input(Page, &f)), Class::PageTables);

        // Slab never yields kernel-stack, percpu never page-side classes.
        let f = [
            "kmem_cache_alloc_node_noprof",
            "dup_task_struct",
            "copy_process",
        ];
        assert_eq!(classify(&input(Slab, &f)), Class::OtherKernel);
        let f = ["pcpu_alloc_noprof", "do_anonymous_page", "filemap_fault"];
        assert_eq!(classify(&input(Percpu, &f)), Class::OtherKernel);

        // The cache name beats the frames.
        let f = ["kmem_cache_alloc_noprof", "tcp_v4_rcv"];
        let got = classify(&ClassifyInput {
            kind: Some(Slab),
            frames: &f,
            cache: Some("radix_tree_node"),
            ..Default::default()
        });
        assert_eq!(got, Class::OtherKernel);
        // Without the cache name, the weak networking frame decides.
        assert_eq!(classify(&input(Slab, &f)), Class::Network);
    }

    #[test]
    fn compiler_suffixes_are_stripped() {
        let f = [
            "alloc_pages_mpol",
            "do_anonymous_page.isra.0",
            "__handle_mm_fault",
        ];
        assert_eq!(classify(&input(Page, &f)), Class::UserAnon);
        let f = ["alloc_pages_noprof", "skb_page_frag_refill.cold"];
        assert_eq!(classify(&input(Page, &f)), Class::Network);
        let f = ["__alloc_pages_noprof", "copy_process.constprop.0"];
        assert_eq!(classify(&input(Page, &f)), Class::KernelStack);
    }

    #[test]
    fn copy_process_counts_only_as_the_direct_caller() {
        // A slab page allocated somewhere below copy_process is not a kernel stack.
        let f = ["__alloc_pages_noprof", "some_helper", "copy_process"];
        assert_eq!(classify(&input(Page, &f)), Class::OtherKernel);
        let f = ["__alloc_pages_noprof", "copy_process"];
        assert_eq!(classify(&input(Page, &f)), Class::KernelStack);
    }

    #[test]
    fn gfp_fallback() {
        let movable = 0x100cca; // GFP_HIGHUSER_MOVABLE
        let kernel = 0xcc0; // GFP_KERNEL
        let page = |frames: &'static [&'static str], gfp, mt| {
            classify(&ClassifyInput {
                kind: Some(Page),
                frames,
                cache: None,
                gfp_flags: gfp,
                migratetype: mt,
            })
        };
        // No telling frame: movable → user-anon; unmovable → other-kernel.
        let unknown: &[&str] = &["__alloc_pages_noprof", "mystery_fn"];
        assert_eq!(page(unknown, Some(movable), Some(1)), Class::UserAnon);
        assert_eq!(page(unknown, Some(movable), None), Class::UserAnon);
        assert_eq!(page(unknown, Some(movable), Some(255)), Class::UserAnon);
        assert_eq!(page(unknown, None, Some(1)), Class::UserAnon);
        assert_eq!(page(unknown, Some(kernel), Some(0)), Class::OtherKernel);
        assert_eq!(page(unknown, Some(kernel), Some(1)), Class::OtherKernel);
        assert_eq!(page(unknown, Some(movable), Some(2)), Class::OtherKernel);
        assert_eq!(page(unknown, None, Some(0)), Class::OtherKernel);
        assert_eq!(page(unknown, None, None), Class::OtherKernel);
        // Stack unavailable: only the flags.
        assert_eq!(page(&[], Some(movable), Some(1)), Class::UserAnon);
        // File-ish frames: movable is not enough.
        let file: &[&str] = &["__alloc_pages_noprof", "fuse_do_readpage", "vfs_read"];
        assert_eq!(page(file, Some(movable), Some(1)), Class::OtherKernel);
        // Other kinds ignore the flags.
        let got = classify(&ClassifyInput {
            kind: Some(Slab),
            frames: unknown,
            gfp_flags: Some(movable),
            migratetype: Some(1),
            ..Default::default()
        });
        assert_eq!(got, Class::OtherKernel);
        // Frames beat the flags.
        let anon_kernel: &[&str] = &["alloc_pages_noprof", "pte_alloc_one"];
        assert_eq!(page(anon_kernel, Some(movable), Some(1)), Class::PageTables);
    }

    #[test]
    fn page_cache_dirty_detail() {
        let write = [
            "folio_alloc_noprof",
            "__filemap_get_folio",
            "ext4_da_write_begin",
            "generic_perform_write",
        ];
        assert_eq!(page_cache_detail(&write), Some("dirty"));
        let iomap = [
            "folio_alloc_noprof",
            "__filemap_get_folio",
            "iomap_write_begin.isra.0",
        ];
        assert_eq!(page_cache_detail(&iomap), Some("dirty"));
        let read = [
            "folio_alloc_noprof",
            "page_cache_ra_unbounded",
            "filemap_read",
        ];
        assert_eq!(page_cache_detail(&read), None);
        assert_eq!(class_detail(Class::PageCache, &write), Some("dirty"));
        assert_eq!(class_detail(Class::PageCache, &read), None);
        assert_eq!(class_detail(Class::Shmem, &write), None);
    }

    #[test]
    fn names_round_trip() {
        for c in Class::ALL {
            assert_eq!(Class::from_name(c.name()), Some(c));
        }
        assert_eq!(Class::from_name("network "), None);
        assert_eq!(Class::from_name("Network"), None);
        assert_eq!(Class::from_name("all"), None);
    }

    #[test]
    fn class_lists() {
        assert_eq!(parse_class_list("network"), Ok(vec![Class::Network]));
        assert_eq!(
            parse_class_list(" shmem, network,shmem ,"),
            Ok(vec![Class::Shmem, Class::Network])
        );
        assert_eq!(parse_class_list("all"), Ok(Class::ALL.to_vec()));
        assert_eq!(parse_class_list("kernel,all"), Ok(Class::ALL.to_vec()));
        let kernel = parse_class_list("kernel").expect("kernel");
        assert_eq!(kernel, KERNEL_CLASSES.to_vec());
        assert_eq!(kernel.len(), Class::ALL.len() - 3);
        // `kernel` is exactly the classes not made of movable pages.
        for c in Class::ALL {
            assert_eq!(kernel.contains(&c), !c.is_movable(), "{c:?}");
        }
        assert_eq!(
            parse_class_list("user-anon,kernel").map(|v| v.len()),
            Ok(Class::ALL.len() - 2)
        );
        let err = parse_class_list("network,sockets").expect_err("unknown");
        assert!(err.contains("`sockets`"), "{err}");
        for c in Class::ALL {
            assert!(err.contains(c.name()), "{err}");
        }
        assert!(err.contains("all") && err.contains("kernel"), "{err}");
        assert!(parse_class_list("").is_err());
        assert!(parse_class_list(" , ").is_err());
    }

    #[test]
    fn every_rule_pattern_is_reachable() {
        // A pattern shadowed by an earlier rule of the same kinds and pass would be dead: check
        // that every exact name classifies as its own rule says, for each of its kinds.
        for r in RULES {
            let (Test::Frame(p) | Test::WeakFrame(p)) = r.test else {
                continue;
            };
            for pat in p {
                let SymbolPattern::Exact(name) = pat else {
                    continue;
                };
                for kind in r.kinds {
                    let frames = ["__alloc_pages_noprof", *name];
                    assert_eq!(
                        classify(&input(*kind, &frames)),
                        r.class,
                        "{name} for {kind:?}"
                    );
                }
            }
        }
    }
}
