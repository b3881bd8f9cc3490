//! Records shared by the eBPF programs (`memtrace-ebpf`, `no_std`) and user space (`memtrace`).
//!
//! Everything here is `#[repr(C)]` plain data with explicit padding, so both sides agree on the
//! layout byte for byte. Build with the `user` feature in user space to get `aya::Pod` impls.
#![no_std]

pub mod page_table;

/// Name of the global the loader fills with a [`Config`] before the programs are loaded.
pub const CONFIG_GLOBAL: &str = "CONFIG";

/// Map names (the `#[map]` statics in memtrace-ebpf).
pub mod maps {
    /// The page table (`BPF_F_MMAPABLE` array of [`super::page_table::Chunk`]): one `u64`
    /// entry per pfn (per sampled pfn with `Config::pfn_shift` > 0) for every page of every
    /// traced page allocation still outstanding (see [`super::page_table`]).
    pub const PAGE_TABLE: &str = "PAGE_TABLE";
    /// One bit per value (64 entries) of [`PAGE_TABLE`], `u64` words: set once an entry of that
    /// value was set, never cleared. The free path tests it before the table: a free of a
    /// page whose 64-pfn neighbourhood never held a traced page (most user pages in a
    /// kernel-memory session: movable pages come from pageblocks of their own) costs one load
    /// from a few KiB instead of one from the table.
    pub const TABLE_SUMMARY: &str = "TABLE_SUMMARY";
    /// Owner index → [`super::OwnerRecord`] (`BPF_F_MMAPABLE` array; index 0: "other owners").
    pub const OWNERS: &str = "OWNERS";
    /// [`super::OwnerRecord`] → owner index: the owners interned so far.
    pub const OWNER_IDS: &str = "OWNER_IDS";
    /// [`super::owner_next`] slots (`u64`): fresh owner indices handed out so far, and the
    /// two ends of the ring of recycled ones ([`OWNER_FREE`]).
    pub const OWNER_NEXT: &str = "OWNER_NEXT";
    /// Ring of recycled owner indices (`u32`, as many slots as `OWNERS`): user space pushes
    /// indices that no page references any more, the page programs take them when the fresh
    /// ones run out (long sessions with process churn: `memtrace serve`).
    pub const OWNER_FREE: &str = "OWNER_FREE";
    /// Per CPU: the last owner looked up ([`super::OwnerCache`]).
    pub const OWNER_CACHE: &str = "OWNER_CACHE";
    /// Array indexed by page stack slot: gfp flags and migrate type of the first allocation
    /// seen from that stack ([`super::page_table::gfp_value`]; 0: none yet).
    pub const STACK_GFP: &str = "STACK_GFP";
    /// `ObjKey` → [`super::ObjRecord`]: outstanding slab, percpu and vmalloc allocations.
    pub const OBJECTS: &str = "OBJECTS";
    /// Array indexed by stack id → slab cache name (NUL-padded), written on the first
    /// `kmem_cache_alloc` seen from that stack.
    pub const CACHE_NAMES: &str = "CACHE_NAMES";
    /// Kernel stacks (`BPF_MAP_TYPE_STACK_TRACE`, flags 0).
    pub const STACKS: &str = "STACKS";
    /// The second stack map: a stack whose bucket in [`STACKS`] holds another stack
    /// (`bpf_get_stackid` -EEXIST: the kernel hashes a stack to one bucket, with a fixed seed)
    /// is stored here with its innermost frame skipped, which hashes it to an unrelated
    /// bucket. Its ids are offset by `Config::stack_alt_base` in the stack slot space.
    pub const STACKS_ALT: &str = "STACKS_ALT";
    /// Array of [`super::StackAgg`], one block of `Config::agg_stride` slots per [`super::Kind`]:
    /// index = `kind * agg_stride + stack_id`; the last slot of a block (`stack_none_id`)
    /// collects allocations whose stack could not be captured.
    pub const STACK_AGG: &str = "STACK_AGG";
    /// Per-CPU `u64` counters indexed by [`super::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// `u64` slots for the `struct page *` → pfn calibration of the tp_btf programs, indexed
    /// by [`super::calib`].
    pub const CALIB: &str = "CALIB";
    /// `u64` switches user space flips while the programs run, indexed by [`super::control`].
    pub const CONTROL: &str = "CONTROL";
    /// `u64` slots of the adaptive slab sampling, indexed by [`super::slab_sampling`]: the rate
    /// the slab programs apply now (user space raises it when the object table nears full).
    pub const SLAB_SAMPLING: &str = "SLAB_SAMPLING";
    /// Per CPU, one [`super::SlabStackCache`]: the stacks last captured for slab allocations,
    /// by call site, cache and kernel stack (see `Config::slab_stack_every`).
    pub const SLAB_STACK_CACHE: &str = "SLAB_STACK_CACHE";
    /// Per CPU, one [`super::StackCache`]: the stack last captured for a movable page
    /// allocation (`Config::movable_stack_every`).
    pub const STACK_CACHE: &str = "STACK_CACHE";
    /// Per CPU, one [`super::FreeClaims`]: which free event each twin slab free program took.
    pub const SLAB_FREE_CLAIMS: &str = "SLAB_FREE_CLAIMS";
}

/// Slots of [`maps::SLAB_SAMPLING`].
pub mod slab_sampling {
    /// One slab object in this many is recorded, chosen by [`super::sampled`] on its address
    /// (0 reads as 1). Written by user space before the programs are attached and doubled by it
    /// when the object table nears full (records no longer sampled are then thinned out); the
    /// slab allocation program doubles it itself when an insert finds the table full.
    pub const EVERY: u32 = 0;
    pub const COUNT: u32 = 1;
}

/// Slots of [`FreeClaims`]; a power of two.
pub const FREE_CLAIM_SLOTS: usize = 256;

/// A free event taken by one of the twin slab free programs: where its arguments live (the
/// address of the tracepoint's argument array, relative to the claims value: the same for
/// every program the tracepoint runs for one event, another for an event nested in an
/// interrupt) and the freed address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FreeClaim {
    pub ctx: u64,
    pub ptr: u64,
}

/// Per-CPU value of [`maps::SLAB_FREE_CLAIMS`]. Each slab free tracepoint runs two identical
/// tp_btf programs (`*_btf` and `*_btf_twin`); the first to run for an event claims it (its
/// slot, by argument address) and handles it, the second finds the claim, clears it and does
/// nothing. The kernel skips a tp_btf program when its event interrupts that same program on
/// its CPU (a softirq freeing a batch of objects on the way out of an interrupt that hit the
/// program): then the twin, which is not running, handles those events.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreeClaims {
    pub slots: [FreeClaim; FREE_CLAIM_SLOTS],
}

/// Ways of the per-CPU slab stack cache ([`SlabStackCache`]); a power of two. A key may sit
/// in either of two ways chosen by its hash: creating a socket alone allocates from a dozen
/// call sites and caches, which a direct-mapped cache of 32 ways kept evicting from each other
/// (one allocation in six captured its stack again in the bench's slab loop).
pub const SLAB_STACK_WAYS: usize = 128;

/// One way of [`SlabStackCache`]: the stack captured for the last slab allocation that hashed
/// here, and what it was captured for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlabStackWay {
    /// The allocation's `call_site` (the return address into the allocator's caller).
    pub call_site: u64,
    /// The cache: `struct kmem_cache *` (tp_btf `kmem_cache_alloc`), else the object size and
    /// gfp flags (`kmalloc`, classic `kmem_cache_alloc`).
    pub cache: u64,
    /// The kernel stack the allocation ran on (stack pointer >> 14): each task has its own
    /// stack and interrupts run on per-CPU stacks, so a task's stack is never reused for an
    /// interrupt's allocation or another task's.
    pub region: u64,
    pub stack_id: u32,
    /// Allocations attributed to `stack_id` since it was captured.
    pub uses: u32,
}

/// Per-CPU value of [`maps::SLAB_STACK_CACHE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabStackCache {
    /// The address of this value itself: the program stores the pointer here and loads it
    /// back as a number (the verifier lets a privileged program store a pointer, subtract
    /// two, but not shift or hash one), to turn other pointers into numbers. The same on every
    /// run on a CPU, so a run nested in another cannot disturb it.
    pub self_addr: u64,
    pub _pad: u64,
    pub ways: [SlabStackWay; SLAB_STACK_WAYS],
}

/// Slots of [`maps::OWNER_NEXT`].
pub mod owner_next {
    /// Fresh owner indices handed out (may pass `Config::owner_cap`: those beyond are not
    /// used).
    pub const NEXT: u32 = 0;
    /// Recycled indices taken from [`super::maps::OWNER_FREE`] by the programs (slot
    /// `POPPED % OWNERS len`).
    pub const POPPED: u32 = 1;
    /// Recycled indices put in the ring by user space.
    pub const PUSHED: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// Slots of [`maps::CONTROL`].
pub mod control {
    /// The session's phase: [`RUNNING`], [`GRACE_PERIOD`], [`STOPPED`].
    pub const GRACE: u32 = 0;
    /// Generation of the movable page stack caches (`STACK_CACHE`): user space raises it when
    /// stack rotation retires stack slots, and a cache of an older generation is not reused
    /// (its pending counts are added to its stack first).
    pub const PAGE_STACK_GENERATION: u32 = 1;
    /// Non-zero while user space reads `STACK_AGG` with the stack caches' pending counts: a
    /// movable allocation that misses its CPU's cache then adds to `STACK_AGG` directly and
    /// leaves the cache (and its pending counts) as it is, so that no count moves from a cache
    /// to `STACK_AGG` during the read (it would be seen twice or not at all).
    pub const PAGE_STACK_HOLD: u32 = 2;
    pub const COUNT: u32 = 3;

    /// Values of the [`GRACE`] slot. Recording as usual.
    pub const RUNNING: u64 = 0;
    /// The grace period (`--grace`) has begun: new allocations are no longer recorded; frees
    /// are still matched, so short-lived allocations made just before the end of the session
    /// are not reported as held.
    pub const GRACE_PERIOD: u64 = 1;
    /// The session has ended: nothing is recorded and no free is matched any more, so the maps
    /// can be read while the programs are being detached.
    pub const STOPPED: u64 = 2;
}

/// Execution context of an allocation (`PageRecord::context`, `ObjRecord::context`).
pub mod context {
    /// Process context: the task that made the allocation owns it.
    pub const TASK: u8 = 0;
    /// Serving a softirq (network receive, timers, RCU): the current task was interrupted and
    /// does not own the memory.
    pub const SOFTIRQ: u8 = 1;
    /// Hard interrupt handler.
    pub const HARDIRQ: u8 = 2;
    pub const NMI: u8 = 3;
    /// The program could not tell: user space derives the context from the kernel stack
    /// (what the programs record today; see `memtrace::model::build::context_from_frames`).
    /// The `common_flags` byte of a classic tracepoint record cannot be used: for BPF
    /// programs the kernel overwrites the first 8 bytes of the record with a `pt_regs`
    /// pointer (`perf_trace_run_bpf_submit`).
    pub const UNKNOWN: u8 = 255;
}

/// Most processes (`--pid`), thread names (`--comm`) and cgroups (`--cgroup`, `--pod`) a
/// session can filter on in the kernel.
pub const MAX_FILTER_TGIDS: usize = 16;
pub const MAX_FILTER_COMMS: usize = 4;
pub const MAX_FILTER_CGROUPS: usize = 8;

/// A cgroup v2 subtree to keep: the allocating task's ancestor at `level` must be `id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupFilter {
    pub id: u64,
    pub level: u32,
    pub _pad: u32,
}

/// In-kernel owner filters (part of [`Config`]). An allocation is recorded when, for every
/// kind of filter given, it matches one of its entries. Interrupts that hit a matching task
/// match too (the programs cannot tell); reports show them as `[softirq]` / `[irq]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filters {
    pub tgids: [u32; MAX_FILTER_TGIDS],
    pub comms: [[u8; 16]; MAX_FILTER_COMMS],
    pub cgroups: [CgroupFilter; MAX_FILTER_CGROUPS],
    pub tgid_count: u32,
    pub comm_count: u32,
    pub cgroup_count: u32,
    /// Non-zero when any filter is set.
    pub active: u32,
}

impl Filters {
    pub const fn none() -> Self {
        Filters {
            tgids: [0; MAX_FILTER_TGIDS],
            comms: [[0; 16]; MAX_FILTER_COMMS],
            cgroups: [CgroupFilter {
                id: 0,
                level: 0,
                _pad: 0,
            }; MAX_FILTER_CGROUPS],
            tgid_count: 0,
            comm_count: 0,
            cgroup_count: 0,
            active: 0,
        }
    }
}

impl Default for Filters {
    fn default() -> Self {
        Self::none()
    }
}

/// Slots of [`maps::CALIB`], filled while the session starts (the calibration programs of
/// `memtrace-ebpf/src/probes/calib.rs` run only then). Page addresses in `SELF_PAGE` and
/// `VMEMMAP_PLUS_ONE` are relative to the address of the CALIB array value (the verifier only
/// lets a tp_btf program turn a trusted pointer into a number by subtracting another pointer);
/// the offset is constant for a session and cancels out. The `*_ABS` slots are plain kernel
/// addresses (the programs that read them only pass them to `bpf_probe_read_kernel`).
pub mod calib {
    /// The (relative) `struct page *` of the last page allocated by memtrace's own process
    /// (user space faults a page in to learn one).
    pub const SELF_PAGE: u32 = 0;
    /// Written by user space once calibrated: the (relative) address of the `struct page` of
    /// pfn 0, plus one, so that 0 means "not calibrated yet" (events are not tracked).
    pub const VMEMMAP_PLUS_ONE: u32 = 1;
    /// The absolute `struct page *` and the order of memtrace's own last page allocation.
    pub const SELF_PAGE_ABS: u32 = 2;
    pub const SELF_PAGE_ORDER: u32 = 3;
    /// Copied from `SELF_PAGE_ABS` / `SELF_PAGE_ORDER` when a `kmalloc` event of memtrace's
    /// own process larger than any kmalloc cache is seen: the pages that allocation came from
    /// (a large kmalloc is one buddy allocation, and its page allocation fires just before).
    pub const LARGE_PAGE_ABS: u32 = 4;
    pub const LARGE_PAGE_ORDER: u32 = 5;
    /// That large kmalloc's address (`page_address()` of those pages) and `bytes_alloc`.
    pub const LARGE_PTR: u32 = 6;
    pub const LARGE_BYTES: u32 = 7;
    /// Written by user space: the constant `K` with `struct page` of a direct-map address `v`
    /// at `K + (v >> page_shift) * sizeof(struct page)`; 0 = unknown (slab cache names are
    /// then not read through the object's slab).
    pub const OBJ_PAGE_BASE: u32 = 8;
    pub const COUNT: u32 = 9;
}

/// What the slab programs need to name the cache of an object from its address: `struct
/// page` of the address (via [`calib::OBJ_PAGE_BASE`]), its head page (`compound_head`), the
/// slab's `slab_cache`, and that cache's `size` and `name`. Byte offsets from the kernel's BTF;
/// `page_struct_size` 0 = not available on this kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlabNameLayout {
    /// `sizeof(struct page)`.
    pub page_struct_size: u32,
    /// log2 of the page size.
    pub page_shift: u32,
    /// `struct page`: `compound_head` (bit 0 set on tail pages: head page address + 1).
    pub compound_head: u32,
    /// `struct slab` (or, before 5.17, `struct page`): `slab_cache`.
    pub slab_cache: u32,
    /// `struct kmem_cache`: `size` (what the tracepoints report as `bytes_alloc`).
    pub cache_size: u32,
    /// `struct kmem_cache`: `name` (`const char *`).
    pub cache_name: u32,
    /// Largest kmalloc cache object (bytes): a larger kmalloc is a buddy allocation (no cache).
    pub kmalloc_max_size: u32,
    pub _pad: u32,
}

/// First byte of a `CACHE_NAMES` slot whose cache could not be read (counted once per stack in
/// `cache_names_unresolved`; the stack is not tried again).
pub const CACHE_NAME_UNRESOLVED: u8 = 0xff;

/// Program names (the function names in memtrace-ebpf).
pub mod programs {
    pub const PAGE_ALLOC: &str = "mm_page_alloc";
    pub const PAGE_FREE: &str = "mm_page_free";
    /// tp_btf twins of the page programs (cheaper entry; `struct page *` argument).
    pub const PAGE_ALLOC_BTF: &str = "mm_page_alloc_btf";
    pub const PAGE_FREE_BTF: &str = "mm_page_free_btf";
    /// Attached to `kmem:kmalloc` (and `kmem:kmalloc_node` on kernels before 6.1).
    pub const KMALLOC: &str = "kmalloc";
    /// Attached to `kmem:kmem_cache_alloc` (and `kmem:kmem_cache_alloc_node` before 6.1).
    pub const KMEM_CACHE_ALLOC: &str = "kmem_cache_alloc";
    pub const KFREE: &str = "kfree";
    pub const KMEM_CACHE_FREE: &str = "kmem_cache_free";
    /// Raw tracepoint versions of the slab programs (cheaper entry, a recursion guard of their
    /// own, arguments read straight from the context; the `kmem_cache_alloc` one receives the
    /// `struct kmem_cache *`). Names of at most 15 characters, the part of a program name the
    /// kernel keeps (`bpftool`, `/proc/kallsyms`).
    pub const KMALLOC_RAW: &str = "kmalloc_raw";
    pub const KMEM_CACHE_ALLOC_RAW: &str = "cache_alloc_raw";
    pub const KFREE_RAW: &str = "kfree_raw";
    pub const KMEM_CACHE_FREE_RAW: &str = "cache_free_raw";
    /// The twins of the raw slab free programs (see [`super::FreeClaims`]).
    pub const KFREE_RAW_TWIN: &str = "kfree_raw_twin";
    pub const KMEM_CACHE_FREE_RAW_TWIN: &str = "cache_free_twin";
    pub const PERCPU_ALLOC: &str = "percpu_alloc_percpu";
    pub const PERCPU_FREE: &str = "percpu_free_percpu";
    pub const VMALLOC_ALLOC: &str = "alloc_vmap_area";
    pub const VMALLOC_FREE: &str = "free_vmap_area_noflush";
    /// fentry on `kmem_cache_free_bulk` (also behind `kfree_bulk`), which has no tracepoint.
    pub const SLAB_FREE_BULK: &str = "kmem_cache_free_bulk";
    /// Start-up only: tp_btf `mm_page_alloc` storing memtrace's own page allocations in
    /// `CALIB`.
    pub const CALIB_PAGE_ALLOC: &str = "calib_page_alloc";
    /// Start-up only: `kmem:kmalloc` (and `kmem:kmalloc_node`) storing memtrace's own large
    /// kmalloc in `CALIB`.
    pub const CALIB_KMALLOC: &str = "calib_kmalloc";
}

/// What kind of kernel memory an allocation is.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Buddy allocator pages (`kmem:mm_page_alloc` / `mm_page_free`).
    Page = 0,
    /// Slab objects (`kmem:kmalloc`, `kmem:kmem_cache_alloc`, `kfree`, `kmem_cache_free`).
    Slab = 1,
    /// Per-CPU allocations (`percpu:percpu_alloc_percpu` / `percpu_free_percpu`).
    Percpu = 2,
    /// vmap areas (`vmalloc:alloc_vmap_area` / `free_vmap_area_noflush`).
    Vmalloc = 3,
}

impl Kind {
    pub const COUNT: u32 = 4;
    pub const ALL: [Kind; 4] = [Kind::Page, Kind::Slab, Kind::Percpu, Kind::Vmalloc];

    pub const fn name(self) -> &'static str {
        match self {
            Kind::Page => "page",
            Kind::Slab => "slab",
            Kind::Percpu => "percpu",
            Kind::Vmalloc => "vmalloc",
        }
    }

    pub fn from_u32(v: u32) -> Option<Kind> {
        Kind::ALL.get(v as usize).copied()
    }
}

/// Whether an allocation keyed by `key` (head pfn, or object address) is recorded when one in
/// `every` is sampled. A hash of the key, not a counter or a random draw: the free of the same
/// pfn or address makes the same choice, and so does every run. The hash is MurmurHash3's
/// 64-bit finalizer: pfns handed out by the buddy allocator come in strided runs, and a weaker
/// hash (a single multiply) keeps enough of that structure to bias a 1-in-8 sample by tens of
/// percent.
#[inline(always)]
pub const fn sampled(key: u64, every: u32) -> bool {
    if every <= 1 {
        return true;
    }
    let h = page_table::mix64(key);
    let every = every as u64;
    if every & (every - 1) == 0 {
        // A power of two (the adaptive slab rates): the same answer without a division.
        h & (every - 1) == 0
    } else {
        h.is_multiple_of(every)
    }
}

/// Migrate type of movable pages (`MIGRATE_MOVABLE`, stable since 2.6.24).
pub const MIGRATE_MOVABLE: i32 = 1;

/// Offset value meaning "the event has no such field".
pub const NO_FIELD: u32 = u32::MAX;

/// Where an object-allocation event (kmalloc, kmem_cache_alloc, percpu_alloc_percpu,
/// alloc_vmap_area) keeps the fields memtrace reads. Filled from the tracefs format at run
/// time; absent fields are [`NO_FIELD`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjAllocLayout {
    /// The object's address (`ptr`; `addr` for vmalloc), 8 bytes.
    pub ptr_offset: u32,
    /// Bytes the allocation really takes (`bytes_alloc`; percpu `bytes_alloc` or `size`;
    /// vmalloc `size`), 8 bytes.
    pub bytes_offset: u32,
    /// Multiplier applied to the value at `bytes_offset` (possible CPUs for percpu kernels
    /// whose event has no `bytes_alloc`, else 1).
    pub bytes_multiplier: u32,
    /// Bytes the caller asked for (`bytes_req`), 8 bytes, or NO_FIELD.
    pub bytes_req_offset: u32,
    /// `__data_loc char[] name` (slab cache name), 4 bytes, or NO_FIELD.
    pub name_offset: u32,
    /// `int failed` (vmalloc), or NO_FIELD.
    pub failed_offset: u32,
    /// `gfp_flags`, or NO_FIELD; 4 or 8 bytes (only the low 32 bits are read).
    pub gfp_offset: u32,
    /// `call_site` (the return address into the allocator's caller), 8 bytes, or NO_FIELD
    /// (read by the slab programs only).
    pub call_site_offset: u32,
}

impl ObjAllocLayout {
    pub const fn absent() -> Self {
        ObjAllocLayout {
            ptr_offset: NO_FIELD,
            bytes_offset: NO_FIELD,
            bytes_multiplier: 1,
            bytes_req_offset: NO_FIELD,
            name_offset: NO_FIELD,
            failed_offset: NO_FIELD,
            gfp_offset: NO_FIELD,
            call_site_offset: NO_FIELD,
        }
    }
}

impl Default for ObjAllocLayout {
    fn default() -> Self {
        Self::absent()
    }
}

/// Where an object-free event (kfree, kmem_cache_free, percpu_free_percpu,
/// free_vmap_area_noflush) keeps the freed address (`ptr`; `va_start` for vmalloc).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjFreeLayout {
    pub ptr_offset: u32,
    pub _pad: u32,
}

impl Default for ObjFreeLayout {
    fn default() -> Self {
        ObjFreeLayout {
            ptr_offset: NO_FIELD,
            _pad: 0,
        }
    }
}

/// Key of [`maps::OBJECTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ObjKey {
    pub addr: u64,
    /// [`Kind`] as u32 (slab objects and vmap areas could in principle share an address with
    /// a percpu pointer).
    pub kind: u32,
    pub _pad: u32,
}

/// One outstanding slab object, percpu allocation or vmap area.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjRecord {
    pub ts_ns: u64,
    /// Bytes it takes (`bytes_alloc`, percpu: over all possible CPUs, vmalloc: area size).
    pub bytes: u64,
    /// Bytes requested (`bytes_req`; 0 where the event has none).
    pub bytes_req: u64,
    /// Stack id (slot within the kind's block of `STACK_AGG`).
    pub stack_id: u32,
    pub tgid: u32,
    pub pid: u32,
    pub gfp_flags: u32,
    pub comm: [u8; 16],
    /// cgroup v2 id of the allocating task (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    /// [`context`] of the allocation.
    pub context: u8,
    pub _pad: [u8; 7],
}

/// Set in a [`PageRecord`] key when the record was moved aside because its head pfn was freed
/// and re-allocated while tail pages of the original allocation were still outstanding (the
/// hash table of page records before the per-pfn page table; no longer produced).
pub const DETACHED_KEY_BIT: u64 = 1 << 63;

/// Where the fields of `kmem:mm_page_alloc` live in the classic tracepoint record.
/// Filled from `/sys/kernel/tracing/events/kmem/mm_page_alloc/format` at run time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageAllocLayout {
    pub pfn_offset: u32,
    pub order_offset: u32,
    pub gfp_offset: u32,
    /// 4 (older kernels, `gfp_t` printed as unsigned int) or 8 (`unsigned long`).
    pub gfp_size: u32,
    pub migratetype_offset: u32,
    pub _pad: u32,
}

/// Where the fields of `kmem:mm_page_free` live.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageFreeLayout {
    pub pfn_offset: u32,
    pub order_offset: u32,
}

/// Read-only configuration the loader writes into `.rodata` before loading.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub page_alloc: PageAllocLayout,
    pub page_free: PageFreeLayout,
    /// Bytes per page (`getpagesize()`).
    pub page_size: u64,
    /// memtrace's own tgid: its allocations are not recorded.
    pub self_tgid: u32,
    /// Highest buddy order on this kernel (10 on x86_64): bounds the partial-free search.
    pub max_order: u32,
    /// Stack slot (within each kind's block of `STACK_AGG`) used for allocations whose stack id
    /// could not be obtained (= number of stack slots: `STACKS` then `STACKS_ALT` ids).
    pub stack_none_id: u32,
    /// Slots per kind in `STACK_AGG` (= stack slots + 1).
    pub agg_stride: u32,
    /// Stack slot of id 0 of `STACKS_ALT` (= buckets of `STACKS`).
    pub stack_alt_base: u32,
    pub _pad_stack: u32,
    /// Non-zero: page allocations of migrate type movable (user, page cache and shmem pages)
    /// are not recorded (the default, kernel-memory session).
    pub skip_movable: u32,
    /// Record an allocation only when `hash(pfn or address) % sample_every == 0` (1: every
    /// allocation). Hashing the address keeps an allocation and its free consistent.
    pub sample_every: u32,
    /// Bits of the stack slot in a page table entry (see [`page_table`]).
    pub entry_stack_bits: u32,
    /// `sizeof(struct page)` from BTF (tp_btf programs turn a `struct page *` into a pfn).
    pub page_struct_size: u32,
    /// log2 of `page_struct_size` when it is a power of two, else 0 (divide instead).
    pub page_struct_shift: u32,
    /// Movable page allocations (user, page cache, shmem: their stacks are a handful of fault
    /// and read/write paths) capture a fresh kernel stack once per this many allocations by the
    /// same task with the same gfp flags on a CPU, and reuse it in between (0 or 1: always
    /// capture).
    pub movable_stack_every: u32,
    /// Entries of the page table (its chunks hold this many, rounded up to a chunk); pfns whose
    /// index is beyond are counted in `outstanding_map_full`.
    pub table_indices: u64,
    /// CLOCK_MONOTONIC ns when the session was loaded: page table times count from here.
    pub start_ns: u64,
    /// log2 of the pfns one page table entry stands for (0: one entry per pfn, exact).
    pub pfn_shift: u32,
    /// Highest owner index (`OWNERS` has `owner_cap + 1` slots; 0 is "other owners").
    pub owner_cap: u32,
    pub filters: Filters,
    pub kmalloc: ObjAllocLayout,
    pub kmem_cache_alloc: ObjAllocLayout,
    pub kfree: ObjFreeLayout,
    pub kmem_cache_free: ObjFreeLayout,
    pub percpu_alloc: ObjAllocLayout,
    pub percpu_free: ObjFreeLayout,
    pub vmalloc_alloc: ObjAllocLayout,
    pub vmalloc_free: ObjFreeLayout,
    pub slab_names: SlabNameLayout,
    /// Slab allocations: the stack captured for an allocation is reused for the next
    /// allocations from the same call site and cache on the same kernel stack (task or
    /// interrupt stack) of a CPU, up to this many in all (0 or 1: always capture).
    pub slab_stack_every: u32,
    pub _pad_slab: u32,
    /// `struct kmem_cache` offsets for the tp_btf slab programs, which receive the cache.
    pub slab_btf: SlabBtfLayout,
}

/// Where the tp_btf `kmem_cache_alloc` program finds, in the `struct kmem_cache` it receives,
/// what the classic event reports: `size` (`bytes_alloc`), `object_size` (`bytes_req`) and
/// `name`. Byte offsets from the kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlabBtfLayout {
    pub cache_size: u32,
    pub cache_object_size: u32,
    pub cache_name: u32,
    pub _pad: u32,
}

impl Config {
    /// All zero: the value compiled into the object before the loader overrides it.
    pub const fn zeroed() -> Self {
        Config {
            page_alloc: PageAllocLayout {
                pfn_offset: 0,
                order_offset: 0,
                gfp_offset: 0,
                gfp_size: 0,
                migratetype_offset: 0,
                _pad: 0,
            },
            page_free: PageFreeLayout {
                pfn_offset: 0,
                order_offset: 0,
            },
            page_size: 0,
            self_tgid: 0,
            max_order: 0,
            stack_none_id: 0,
            agg_stride: 0,
            stack_alt_base: 0,
            _pad_stack: 0,
            skip_movable: 0,
            sample_every: 1,
            entry_stack_bits: 1,
            page_struct_size: 0,
            page_struct_shift: 0,
            movable_stack_every: 0,
            table_indices: 0,
            start_ns: 0,
            pfn_shift: 0,
            owner_cap: 0,
            filters: Filters::none(),
            kmalloc: ObjAllocLayout::absent(),
            kmem_cache_alloc: ObjAllocLayout::absent(),
            kfree: ObjFreeLayout {
                ptr_offset: NO_FIELD,
                _pad: 0,
            },
            kmem_cache_free: ObjFreeLayout {
                ptr_offset: NO_FIELD,
                _pad: 0,
            },
            percpu_alloc: ObjAllocLayout::absent(),
            percpu_free: ObjFreeLayout {
                ptr_offset: NO_FIELD,
                _pad: 0,
            },
            vmalloc_alloc: ObjAllocLayout::absent(),
            vmalloc_free: ObjFreeLayout {
                ptr_offset: NO_FIELD,
                _pad: 0,
            },
            slab_names: SlabNameLayout {
                page_struct_size: 0,
                page_shift: 0,
                compound_head: 0,
                slab_cache: 0,
                cache_size: 0,
                cache_name: 0,
                kmalloc_max_size: 0,
                _pad: 0,
            },
            slab_stack_every: 0,
            _pad_slab: 0,
            slab_btf: SlabBtfLayout {
                cache_size: 0,
                cache_object_size: 0,
                cache_name: 0,
                _pad: 0,
            },
        }
    }
}

/// One outstanding page allocation, as user space rebuilds it from the page table: the pages
/// of one allocation still set (see `memtrace::collector::page_table`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageRecord {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at allocation.
    pub ts_ns: u64,
    /// Index into `STACK_AGG` (a stack id, or `Config::stack_none_id`).
    pub stack_id: u32,
    pub tgid: u32,
    pub pid: u32,
    /// Low 32 bits of the allocation's gfp flags (every `__GFP_*` bit fits in them).
    pub gfp_flags: u32,
    /// Pages of this allocation not yet freed (starts at `1 << order`; partial frees of split
    /// pages decrement it; updated atomically).
    pub remaining_pages: u32,
    pub order: u8,
    /// Migrate type as the tracepoint reports it (-1 → 255).
    pub migratetype: u8,
    /// [`record_flags`] bits.
    pub flags: u8,
    /// [`context`] of the allocation.
    pub context: u8,
    pub comm: [u8; 16],
    /// cgroup v2 id of the allocating task (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    /// Allocations merged into this record besides the first: identical in everything the
    /// report shows (stack, owner, order, time, flags), their pages summed in
    /// `remaining_pages`. 0: the record is one allocation.
    pub more_allocations: u32,
    pub _pad: u32,
}

pub mod record_flags {
    /// The head page itself was freed (partial free) while tail pages are still outstanding.
    pub const HEAD_FREED: u8 = 1;
}

/// An owner of page allocations, as the page programs intern it (value of `OWNERS`, key of
/// `OWNER_IDS`): the thread, its name and its cgroup at allocation time, as page records
/// always carried them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OwnerRecord {
    /// cgroup v2 id (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    pub tgid: u32,
    pub pid: u32,
    pub comm: [u8; 16],
}

/// Per-CPU value of `OWNER_CACHE`: the owner of the last page allocation on this CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnerCache {
    pub owner: OwnerRecord,
    /// Owner index + 1 (0: nothing cached).
    pub index_plus_one: u32,
    pub _pad: u32,
}

/// Per-CPU value of `STACK_CACHE`: the last stack captured for a movable page allocation, and
/// the allocations recorded under it since that are not yet added to its `STACK_AGG` slot
/// (the page programs add them when the cache takes another stack: one shared write per
/// `Config::movable_stack_every` allocations instead of one per allocation). Readers of
/// `STACK_AGG` add `pending_*` of every CPU to the slot `stack_id` (page kind: block 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackCache {
    pub tgid: u32,
    pub gfp_flags: u32,
    pub stack_id: u32,
    /// Allocations attributed to `stack_id` since it was captured.
    pub uses: u32,
    /// `control::PAGE_STACK_GENERATION` when the stack was captured.
    pub generation: u32,
    pub _pad: u32,
    /// Bytes of the allocations recorded under `stack_id` not yet in its `STACK_AGG` slot:
    /// to be added to both its allocated and its outstanding bytes.
    pub pending_bytes: u64,
    /// Those allocations: to be added to both its allocated and its outstanding count.
    pub pending_count: u64,
}

/// Per-stack aggregate, maintained with atomic adds by the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackAgg {
    /// Bytes allocated from this stack and not yet freed (two's complement: may transiently
    /// read as slightly negative while programs race; user space clamps).
    pub outstanding_bytes: u64,
    /// Allocations from this stack that still have at least one page outstanding.
    pub outstanding_count: u64,
    /// Bytes allocated from this stack during the session, freed or not.
    pub allocated_bytes: u64,
    /// Allocations from this stack during the session, freed or not.
    pub allocated_count: u64,
}

/// Indexes of the per-CPU counters in `COUNTERS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// `mm_page_alloc` events seen (including failed and filtered ones).
    AllocsSeen = 0,
    /// Allocations recorded in the page table.
    AllocsTracked,
    /// `mm_page_alloc` with `pfn == -1` (the allocation failed): ignored.
    FailedAllocs,
    /// Allocations made by memtrace itself: not recorded.
    SelfAllocs,
    /// `mm_page_free` events seen.
    FreesSeen,
    /// Frees that found the allocation they release (the freed pfn's page table entry).
    FreesMatched,
    /// Of the matched frees: those that released only part of an allocation (split pages).
    PartialFrees,
    /// Frees of pages with no record (allocated before the session, or not traced).
    UnmatchedFrees,
    /// The allocation's pfn lies beyond the page table (memory added after the session
    /// started): counted as allocated but not recorded.
    OutstandingFull,
    /// An allocation hit pages whose entries were still set: their free was missed; the stale
    /// entries were replaced and their bytes removed from their stacks (one per allocation).
    StaleReplaced,
    /// Records moved aside (see [`DETACHED_KEY_BIT`]); always 0 since the per-pfn page table.
    Detached,
    /// `bpf_get_stackid` failed with -EEXIST in both stack maps (its buckets in `STACKS` and
    /// `STACKS_ALT` taken by other stacks): the stack was lost.
    StackIdEexist,
    /// `bpf_get_stackid` failed with -ENOMEM (stack map full).
    StackIdEnomem,
    /// `bpf_get_stackid` failed otherwise.
    StackIdOther,
    /// A record named a stack slot outside `STACK_AGG` (should never happen).
    AggMissing,
    /// Reading a tracepoint field failed (should never happen): the event was dropped.
    ReadErrors,
    /// Slab/percpu/vmalloc allocation events seen.
    ObjAllocsSeen,
    /// Of those, recorded in `OBJECTS`.
    ObjAllocsTracked,
    /// Failed object allocations (NULL pointer, vmalloc `failed`): ignored.
    ObjFailedAllocs,
    /// Object frees seen.
    ObjFreesSeen,
    /// Object frees that found their allocation.
    ObjFreesMatched,
    /// Object frees with no record (allocated before the session, or not traced).
    ObjUnmatchedFrees,
    /// `OBJECTS` was full: the allocation was counted but not recorded.
    ObjectsFull,
    /// An object allocation hit an address that still had a record (missed free): replaced.
    ObjStaleReplaced,
    /// Objects freed through `kmem_cache_free_bulk` / `kfree_bulk` (no tracepoint; fentry).
    ObjBulkFrees,
    /// Bulk-freed objects beyond what one fentry run can walk: not matched (their records are
    /// healed when the address is allocated again).
    ObjBulkTruncated,
    /// Movable page allocations (user, page cache, shmem) not recorded: the session traces
    /// kernel memory only.
    MovableSkipped,
    /// Page allocations left out by sampling.
    SampledOut,
    /// Object allocations left out by sampling.
    ObjSampledOut,
    /// tp_btf page events before the `struct page *` → pfn calibration finished (only while
    /// the session starts): not tracked.
    Uncalibrated,
    /// Movable page allocations attributed to the stack captured for the previous allocation
    /// of the same task and gfp flags on that CPU (see `Config::movable_stack_every`).
    StackReused,
    /// Page allocations left out by the owner filters (`--pid`, `--comm`, `--cgroup`, `--pod`).
    FilteredOut,
    /// Object allocations left out by the owner filters.
    ObjFilteredOut,
    /// Page allocations made during the grace period (`--grace`): not recorded.
    GraceSkipped,
    /// Object allocations made during the grace period: not recorded.
    ObjGraceSkipped,
    /// Allocations whose stack's bucket in `STACKS` held another stack: kept in `STACKS_ALT`
    /// (without the innermost frame) instead of being lost.
    StackIdSecondMap,
    /// Slab stacks whose cache could not be read through the object's slab (the cache name is
    /// then the event's `name` field where it has one, else unknown).
    CacheNamesUnresolved,
    /// Slab allocations attributed to the stack captured for an earlier allocation from the
    /// same call site and cache on the same kernel stack of that CPU
    /// (`Config::slab_stack_every`).
    ObjStacksReused,
    /// Slab frees whose address is not in the slab sample: settled by the address hash alone,
    /// before any table lookup (nothing was recorded at that address).
    ObjFreesNotSampled,
    /// Slab records taken out of the object table by user space when the slab sampling rate
    /// was raised (their address is not in the new, smaller sample), their bytes taken off
    /// their stacks. Counted by user space.
    ObjRecordsThinned,
    /// Runs of the twin slab free programs that handled their event (the first of the two to
    /// run for it).
    ObjFreeClaims,
    /// Runs of the twin slab free programs that found their event handled by the twin.
    ObjFreeClaimsTaken,
    /// Slab frees neither twin free program saw (each was skipped by the kernel: the event
    /// interrupted both on their CPU), derived by user space from the programs' recursion
    /// misses and the two counters above. Those objects stay listed until their address is
    /// allocated again (`obj_stale_records_replaced`).
    ObjFreesMissed,
    /// Page allocations whose owner (thread, name and cgroup) did not fit in the owner table:
    /// they are recorded under "other owners".
    OwnersFull,
}

impl Counter {
    pub const COUNT: u32 = Counter::OwnersFull as u32 + 1;

    pub const ALL: [Counter; Counter::COUNT as usize] = [
        Counter::AllocsSeen,
        Counter::AllocsTracked,
        Counter::FailedAllocs,
        Counter::SelfAllocs,
        Counter::FreesSeen,
        Counter::FreesMatched,
        Counter::PartialFrees,
        Counter::UnmatchedFrees,
        Counter::OutstandingFull,
        Counter::StaleReplaced,
        Counter::Detached,
        Counter::StackIdEexist,
        Counter::StackIdEnomem,
        Counter::StackIdOther,
        Counter::AggMissing,
        Counter::ReadErrors,
        Counter::ObjAllocsSeen,
        Counter::ObjAllocsTracked,
        Counter::ObjFailedAllocs,
        Counter::ObjFreesSeen,
        Counter::ObjFreesMatched,
        Counter::ObjUnmatchedFrees,
        Counter::ObjectsFull,
        Counter::ObjStaleReplaced,
        Counter::ObjBulkFrees,
        Counter::ObjBulkTruncated,
        Counter::MovableSkipped,
        Counter::SampledOut,
        Counter::ObjSampledOut,
        Counter::Uncalibrated,
        Counter::StackReused,
        Counter::FilteredOut,
        Counter::ObjFilteredOut,
        Counter::GraceSkipped,
        Counter::ObjGraceSkipped,
        Counter::StackIdSecondMap,
        Counter::CacheNamesUnresolved,
        Counter::ObjStacksReused,
        Counter::ObjFreesNotSampled,
        Counter::ObjRecordsThinned,
        Counter::ObjFreeClaims,
        Counter::ObjFreeClaimsTaken,
        Counter::ObjFreesMissed,
        Counter::OwnersFull,
    ];

    /// Stable snake_case name used in the text and JSON reports.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::AllocsSeen => "allocs_seen",
            Counter::AllocsTracked => "allocs_tracked",
            Counter::FailedAllocs => "failed_allocs",
            Counter::SelfAllocs => "self_allocs",
            Counter::FreesSeen => "frees_seen",
            Counter::FreesMatched => "frees_matched",
            Counter::PartialFrees => "partial_frees",
            Counter::UnmatchedFrees => "unmatched_frees",
            Counter::OutstandingFull => "outstanding_map_full",
            Counter::StaleReplaced => "stale_records_replaced",
            Counter::Detached => "records_detached",
            Counter::StackIdEexist => "stack_id_eexist",
            Counter::StackIdEnomem => "stack_id_enomem",
            Counter::StackIdOther => "stack_id_other",
            Counter::AggMissing => "agg_missing",
            Counter::ReadErrors => "read_errors",
            Counter::ObjAllocsSeen => "obj_allocs_seen",
            Counter::ObjAllocsTracked => "obj_allocs_tracked",
            Counter::ObjFailedAllocs => "obj_failed_allocs",
            Counter::ObjFreesSeen => "obj_frees_seen",
            Counter::ObjFreesMatched => "obj_frees_matched",
            Counter::ObjUnmatchedFrees => "obj_unmatched_frees",
            Counter::ObjectsFull => "objects_map_full",
            Counter::ObjStaleReplaced => "obj_stale_records_replaced",
            Counter::ObjBulkFrees => "obj_bulk_frees",
            Counter::ObjBulkTruncated => "obj_bulk_truncated",
            Counter::MovableSkipped => "movable_skipped",
            Counter::SampledOut => "sampled_out",
            Counter::ObjSampledOut => "obj_sampled_out",
            Counter::Uncalibrated => "uncalibrated_events",
            Counter::StackReused => "stacks_reused",
            Counter::FilteredOut => "filtered_out",
            Counter::ObjFilteredOut => "obj_filtered_out",
            Counter::GraceSkipped => "grace_skipped",
            Counter::ObjGraceSkipped => "obj_grace_skipped",
            Counter::StackIdSecondMap => "stack_id_second_map",
            Counter::CacheNamesUnresolved => "cache_names_unresolved",
            Counter::ObjStacksReused => "obj_stacks_reused",
            Counter::ObjFreesNotSampled => "obj_frees_not_sampled",
            Counter::ObjRecordsThinned => "obj_records_thinned",
            Counter::ObjFreeClaims => "obj_free_claims",
            Counter::ObjFreeClaimsTaken => "obj_free_claims_taken",
            Counter::ObjFreesMissed => "obj_frees_missed",
            Counter::OwnersFull => "owner_table_full",
        }
    }

    /// Counters whose non-zero value means information was lost or is approximate.
    pub const fn is_failure(self) -> bool {
        matches!(
            self,
            Counter::OutstandingFull
                | Counter::StaleReplaced
                | Counter::StackIdEexist
                | Counter::StackIdEnomem
                | Counter::StackIdOther
                | Counter::AggMissing
                | Counter::ReadErrors
                | Counter::ObjectsFull
                | Counter::ObjStaleReplaced
                | Counter::ObjBulkTruncated
                | Counter::CacheNamesUnresolved
                | Counter::ObjFreesMissed
                | Counter::OwnersFull
        )
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)] structs of integers with explicit padding fields, so
    // every byte pattern is a valid value and there are no implicit padding bytes.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OwnerRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StackAgg {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ObjKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ObjRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SlabStackCache {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StackCache {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FreeClaims {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OwnerCache {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<PageAllocLayout>(), 24);
        assert_eq!(size_of::<PageFreeLayout>(), 8);
        assert_eq!(size_of::<ObjAllocLayout>(), 32);
        assert_eq!(size_of::<ObjFreeLayout>(), 8);
        assert_eq!(size_of::<CgroupFilter>(), 16);
        assert_eq!(size_of::<Filters>(), 4 * 16 + 16 * 4 + 16 * 8 + 16);
        assert_eq!(
            size_of::<Config>(),
            24 + 8 + 8 + 16 + 8 + 24 + 24 + size_of::<Filters>() + 4 * 32 + 4 * 8 + 32 + 8 + 16
        );
        assert_eq!(size_of::<SlabBtfLayout>(), 16);
        assert_eq!(size_of::<SlabStackWay>(), 32);
        assert_eq!(size_of::<SlabStackCache>(), 16 + 32 * SLAB_STACK_WAYS);
        assert!(size_of::<SlabStackCache>() <= 32 << 10);
        assert_eq!(size_of::<FreeClaims>(), 16 * FREE_CLAIM_SLOTS);
        assert_eq!(size_of::<SlabNameLayout>(), 32);
        assert_eq!(size_of::<ObjKey>(), 16);
        assert_eq!(size_of::<ObjRecord>(), 8 * 3 + 4 * 4 + 16 + 16);
        assert_eq!(size_of::<PageRecord>(), 8 + 4 * 5 + 4 + 16 + 8 + 8);
        assert_eq!(size_of::<StackAgg>(), 32);
        assert_eq!(size_of::<StackCache>(), 40);
        assert_eq!(size_of::<OwnerRecord>(), 32);
        assert_eq!(size_of::<OwnerCache>(), 40);
    }

    #[test]
    fn sampling_keeps_about_one_in_n_of_aligned_keys() {
        assert!(sampled(12345, 1) && sampled(12345, 0));
        for every in [2u32, 10, 64] {
            // Order-3 head pfns (multiples of 8) and 64-byte aligned object addresses: the
            // low bits carry nothing, the hash must still spread them.
            for (base, step) in [(0x10_0000u64, 8u64), (0xffff_8880_0000_0000, 64)] {
                let n = 100_000u64;
                let kept = (0..n).filter(|i| sampled(base + i * step, every)).count() as f64;
                let expect = n as f64 / every as f64;
                assert!(
                    (kept - expect).abs() < expect * 0.05,
                    "every {every}, step {step}: kept {kept}, expected {expect}"
                );
            }
        }
    }

    #[test]
    fn sampling_is_unbiased_on_runs_of_buddy_blocks() {
        // 2048 order-3 blocks taken as 16 runs of 128 consecutive blocks (how a 64 MiB hold
        // comes out of order-10 blocks), at many starting points: every 1-in-8 sample must be
        // within 25 % of 256 (about 4 sigma for independent draws).
        for start in (0x10_0000u64..0x50_0000).step_by(0x3_1000) {
            let kept = (0..16u64)
                .flat_map(|run| (0..128u64).map(move |i| start + run * 0x4_0000 + i * 8))
                .filter(|&pfn| sampled(pfn, 8))
                .count() as f64;
            assert!(
                (kept - 256.0).abs() < 64.0,
                "start {start:#x}: kept {kept} of 2048"
            );
        }
    }

    #[test]
    fn counters_are_dense_and_named_uniquely() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        let mut names: std::vec::Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::COUNT as usize);
    }
}
