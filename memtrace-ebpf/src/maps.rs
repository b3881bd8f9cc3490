//! Maps, the configuration global and the small helpers every probe uses.

use core::intrinsics::{atomic_cxchg, atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray, StackTrace},
    programs::tracing::StackIdContext,
};
use memtrace_common::{
    calib, control, owner_next, page_table::Chunk, slab_sampling, Config, Counter, FreeClaims,
    ObjKey, ObjRecord, OwnerCache, OwnerRecord, SlabStackCache, StackAgg, StackCache,
};

/// Filled in by the loader (`.rodata`, frozen before the programs are verified, so the verifier
/// sees the values as constants).
#[unsafe(no_mangle)]
static CONFIG: Config = Config::zeroed();

#[inline(always)]
pub fn config() -> &'static Config {
    // SAFETY: CONFIG is a plain static that lives for the whole program. Loading its address
    // through a volatile read hides the compile-time zero value from the optimiser, so the
    // fields are loaded from .rodata (the loader's values); unlike copying the whole struct,
    // only the fields a probe uses are loaded.
    unsafe { &*core::ptr::read_volatile(&(&raw const CONFIG)) }
}

/// `BPF_F_MMAPABLE`: user space maps the array's values instead of looking them up.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// The page table (see `memtrace_common::page_table`): 64 entries per value, sized by the
/// loader from the highest pfn.
#[map]
pub static PAGE_TABLE: Array<Chunk> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// One bit per value of `PAGE_TABLE` that ever held an entry (`memtrace_common::maps::
/// TABLE_SUMMARY`); sized by the loader.
#[map]
pub static TABLE_SUMMARY: Array<u64> = Array::with_max_entries(1, 0);

/// Interned owners, by index (0: "other owners"); sized by the loader.
#[map]
pub static OWNERS: Array<OwnerRecord> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Owner (thread, name, cgroup) → owner index.
#[map]
pub static OWNER_IDS: HashMap<OwnerRecord, u32> = HashMap::with_max_entries(1, 0);

/// Fresh owner indices handed out so far, and the ends of the recycled ring
/// (`memtrace_common::owner_next`).
#[map]
pub static OWNER_NEXT: Array<u64> = Array::with_max_entries(owner_next::COUNT, 0);

/// Recycled owner indices (a ring as long as `OWNERS`); sized by the loader.
#[map]
pub static OWNER_FREE: Array<u32> = Array::with_max_entries(1, 0);

/// Per CPU: the owner of the last page allocation.
#[map]
pub static OWNER_CACHE: PerCpuArray<OwnerCache> = PerCpuArray::with_max_entries(1, 0);

/// Per page stack slot: gfp flags and migrate type of its first allocation.
#[map]
pub static STACK_GFP: Array<u64> = Array::with_max_entries(1, 0);

/// Outstanding slab objects, percpu allocations and vmap areas.
#[map]
pub static OBJECTS: HashMap<ObjKey, ObjRecord> = HashMap::with_max_entries(1 << 20, 0);

/// Slab cache name per stack id (written once, on the first kmem_cache_alloc from a stack).
#[map]
pub static CACHE_NAMES: Array<[u8; 32]> = Array::with_max_entries(1 << 14, 0);

/// Kernel stacks. Flags 0: never `BPF_F_REUSE_STACKID` (it silently re-labels old stacks).
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(1 << 14, 0);

/// Stacks whose bucket in `STACKS` holds another stack, innermost frame skipped (see
/// `memtrace_common::maps::STACKS_ALT`).
#[map]
pub static STACKS_ALT: StackTrace = StackTrace::with_max_entries(1 << 12, 0);

/// `bpf_get_stackid` flags for `STACKS_ALT`: skip one frame (`BPF_F_SKIP_FIELD_MASK` bits).
const ALT_SKIP_FRAMES: u64 = 1;

/// Per-stack aggregates: one block of `Config::agg_stride` slots per kind, indexed by
/// `kind * agg_stride + stack_id`; the last slot of a block is `Config::stack_none_id`.
#[map]
pub static STACK_AGG: Array<StackAgg> = Array::with_max_entries(4 * ((1 << 14) + 1), 0);

/// Per CPU: the stack last captured for a movable page allocation (`Config::movable_stack_every`).
#[map]
pub static STACK_CACHE: PerCpuArray<StackCache> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// One value of `calib::COUNT` slots (see `memtrace_common::calib`); one value, so a program
/// reaches every slot from one lookup.
#[map]
pub static CALIB: Array<[u64; calib::COUNT as usize]> = Array::with_max_entries(1, 0);

/// Switches user space flips during the session (see `memtrace_common::control`).
#[map]
pub static CONTROL: Array<u64> = Array::with_max_entries(control::COUNT, 0);

/// The adaptive slab sampling rate (see `memtrace_common::slab_sampling`).
#[map]
pub static SLAB_SAMPLING: Array<u64> = Array::with_max_entries(slab_sampling::COUNT, 0);

/// Per CPU: the stacks last captured for slab allocations (`Config::slab_stack_every`).
#[map]
pub static SLAB_STACK_CACHE: PerCpuArray<SlabStackCache> = PerCpuArray::with_max_entries(1, 0);

/// Per CPU: the free events the twin slab free programs took (see `memtrace_common::FreeClaims`).
#[map]
pub static SLAB_FREE_CLAIMS: PerCpuArray<FreeClaims> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot of a map value. A program is not re-entered on its CPU, but a
        // run of another program nested in it (an interrupt) may add to the same counter
        // between this load and store, and that increment is then lost: event statistics
        // tolerate it; `count_atomic` is for the counters that must not.
        unsafe { *p += 1 };
    }
}

/// [`count`] with an atomic add: for counters a run of another program nested in this one
/// (an interrupt on the same CPU) also adds to, where a lost increment matters (the twin slab
/// free programs' claims, from which the frees neither saw are computed).
#[inline(always)]
pub fn count_atomic(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        atomic_add(p, 1);
    }
}

#[inline(always)]
pub fn count_n(c: Counter, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: as in `count`.
        unsafe { *p += n };
    }
}

#[inline(always)]
pub fn atomic_add(p: *mut u64, v: u64) {
    // SAFETY: `p` points into a map value that lives as long as the map; the kernel's map
    // memory is 8-byte aligned and these fields are only ever modified atomically.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

/// Atomically adds `v` and returns the previous value.
///
/// Not `Relaxed`: LLVM 22's BPF backend lowers a relaxed fetch-add whose result is used to a
/// plain `lock xadd` that returns nothing, silently leaving the addend where the old value
/// should be (llvm/llvm-project#210280). `AcqRel` emits `atomic_fetch_add`.
#[inline(always)]
pub fn atomic_fetch_add(p: *mut u64, v: u64) -> u64 {
    // SAFETY: as for `atomic_add`.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::AcqRel }>(p, v) }
}

/// Atomically replaces `old` by `new` at `p`; whether it did (another CPU changed it first).
#[inline(always)]
pub fn compare_and_swap(p: *mut u64, old: u64, new: u64) -> bool {
    // SAFETY: as for `atomic_add`.
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::AcqRel }, { AtomicOrdering::Acquire }>(p, old, new).1
    }
}

/// Index in `STACK_AGG` of a kind's stack slot.
#[inline(always)]
pub fn agg_index(cfg: &Config, kind: u32, stack_slot: u32) -> u32 {
    kind * cfg.agg_stride + stack_slot
}

/// The stack slot of the current event: its id in `STACKS`; when that bucket holds another
/// stack, `Config::stack_alt_base` + its id in `STACKS_ALT` (counted); otherwise
/// `Config::stack_none_id` (counted). A stack keeps its slot for the whole session: stack
/// map entries are never deleted, so the stack occupying its `STACKS` bucket stays there.
#[inline(always)]
pub fn stack_slot<C: StackIdContext>(ctx: &C, cfg: &Config) -> u32 {
    let err = match ctx.get_stackid(&STACKS, 0) {
        Ok(id) => return id as u32,
        Err(EEXIST) => match ctx.get_stackid(&STACKS_ALT, ALT_SKIP_FRAMES) {
            Ok(id) => {
                count(Counter::StackIdSecondMap);
                return cfg.stack_alt_base.wrapping_add(id as u32);
            }
            Err(e) => e,
        },
        Err(e) => e,
    };
    count(match err {
        EEXIST => Counter::StackIdEexist,
        ENOMEM => Counter::StackIdEnomem,
        _ => Counter::StackIdOther,
    });
    cfg.stack_none_id
}

pub const BPF_ANY: u64 = 0;
pub const BPF_NOEXIST: u64 = 1;
pub const EEXIST: i32 = -17;
pub const ENOMEM: i32 = -12;

/// Adds `count` allocations of `bytes` in all to the allocated side of an aggregate (every
/// allocation, recorded or not).
#[inline(always)]
pub fn add_allocated(agg: *mut StackAgg, bytes: u64, count: u64) {
    // SAFETY: `agg` is a valid pointer into a STACK_AGG value (from a lookup).
    let (b, c) = unsafe {
        (
            &raw mut (*agg).allocated_bytes,
            &raw mut (*agg).allocated_count,
        )
    };
    atomic_add(b, bytes);
    atomic_add(c, count);
}

/// Adds `count` recorded allocations of `bytes` in all to both sides of an aggregate.
#[inline(always)]
pub fn add_recorded(agg: *mut StackAgg, bytes: u64, count: u64) {
    add_allocated(agg, bytes, count);
    // SAFETY: as above.
    let (b, c) = unsafe {
        (
            &raw mut (*agg).outstanding_bytes,
            &raw mut (*agg).outstanding_count,
        )
    };
    atomic_add(b, bytes);
    atomic_add(c, count);
}

/// Adds `(bytes, count)` to the outstanding side of an aggregate slot (negative via wrapping).
#[inline(always)]
pub fn agg_outstanding(slot: u32, bytes: u64, count_delta: u64) {
    match STACK_AGG.get_ptr_mut(slot) {
        Some(a) => {
            // SAFETY: `a` is a valid pointer into the STACK_AGG array value for `slot`.
            let (b, c) = unsafe {
                (
                    &raw mut (*a).outstanding_bytes,
                    &raw mut (*a).outstanding_count,
                )
            };
            atomic_add(b, bytes);
            if count_delta != 0 {
                atomic_add(c, count_delta);
            }
        }
        None => count(Counter::AggMissing),
    }
}

/// Subtracts a finished or stale allocation's remaining bytes from its aggregate slot.
#[inline(always)]
pub fn agg_release(slot: u32, bytes: u64, completed: bool) {
    agg_outstanding(
        slot,
        bytes.wrapping_neg(),
        if completed { u64::MAX } else { 0 },
    );
}
