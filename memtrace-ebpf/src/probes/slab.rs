//! Slab objects: `kmalloc`, `kmem_cache_alloc`, `kfree` and `kmem_cache_free` as raw
//! tracepoint programs where the kernel's prototypes are the 6.1+ ones (the loader checks them
//! in BTF),
//! else as classic tracepoint programs (their `_node` twins on kernels before 6.1 use the
//! same programs); plus an fentry program on `kmem_cache_free_bulk`, which has no tracepoint.
//!
//! Per allocation, cheapest test first: the address hash against the slab sampling rate
//! (`SLAB_SAMPLING`; in a sampled session most allocations end here, before anything else is
//! read), memtrace's own, the grace period, the owner filters; then the stack (reused for the
//! next allocations from the same call site and cache on the same kernel stack of the CPU,
//! `Config::slab_stack_every`), the cache name once per stack, the record. The allocated side
//! of the stack's aggregate is weighted by the rate in force (an estimate of every allocation);
//! the outstanding side counts the records (user space scales it by the rate at the end, which
//! every remaining record is sampled at).
//!
//! Per free: the address hash (an address outside the sample has no record), then the table.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_func_arg, bpf_probe_read_kernel},
    macros::fentry,
    programs::{tracing::StackIdContext, FEntryContext, RawTracePointContext, TracePointContext},
    EbpfContext,
};
use memtrace_common::{
    page_table::mix64, sampled, slab_sampling, Config, Counter, Kind, ObjAllocLayout,
    ObjFreeLayout, SlabStackCache, SlabStackWay, CACHE_NAME_UNRESOLVED, FREE_CLAIM_SLOTS, NO_FIELD,
    SLAB_STACK_WAYS,
};

use super::objects::{
    copy_cache_name, copy_name_field, free_ptr, object_cache, read_u32, read_u64, record,
    CacheLookup, Fresh, Recorded, ZERO_SIZE_PTR,
};
use super::owner;
use crate::maps::{
    add_allocated, agg_index, config, count, count_atomic, count_n, stack_slot, CACHE_NAMES,
    SLAB_FREE_CLAIMS, SLAB_SAMPLING, SLAB_STACK_CACHE, STACK_AGG,
};

/// The highest slab sampling rate the programs raise the rate to themselves.
const MAX_EVERY: u32 = 1 << 20;

// ---- classic tracepoints --------------------------------------------------------------------

tracepoint_program!(kmalloc, "tracepoint/kmem/kmalloc", |ctx| {
    let layout = &config().kmalloc;
    let ptr = read_u64(ctx, layout.ptr_offset)?;
    alloc(
        ctx,
        ptr,
        &Source::Classic {
            ctx,
            layout,
            naming: Naming::Kmalloc,
        },
    )
});

tracepoint_program!(
    kmem_cache_alloc,
    "tracepoint/kmem/kmem_cache_alloc",
    |ctx| {
        let layout = &config().kmem_cache_alloc;
        let ptr = read_u64(ctx, layout.ptr_offset)?;
        alloc(
            ctx,
            ptr,
            &Source::Classic {
                ctx,
                layout,
                naming: Naming::Cache,
            },
        )
    }
);

tracepoint_program!(kfree, "tracepoint/kmem/kfree", |ctx| classic_free(
    ctx,
    &config().kfree
));

tracepoint_program!(kmem_cache_free, "tracepoint/kmem/kmem_cache_free", |ctx| {
    classic_free(ctx, &config().kmem_cache_free)
});

#[inline(always)]
fn classic_free(ctx: &TracePointContext, layout: &ObjFreeLayout) -> Result<(), i32> {
    free(read_u64(ctx, layout.ptr_offset)?);
    Ok(())
}

// ---- raw tracepoints -------------------------------------------------------------------------

// The slab events as raw tracepoints: the same entry as tp_btf (the kernel runs both through
// `bpf_trace_run`, a recursion guard per program), but the arguments are plain u64 values a
// program reads straight from its context on every kernel. tp_btf types them from BTF, and the
// 6.1 and 6.12 verifiers reject a direct load of a `const void *` argument ("invalid bpf_context
// access"): reading the object pointer through `bpf_probe_read_kernel` instead cost 10-15 ns per
// event. The loader checks the prototypes in the kernel's BTF before attaching these (a raw
// tracepoint's arguments are not checked by the kernel).

/// `kmalloc`: `(unsigned long call_site, const void *ptr, size_t bytes_req, size_t bytes_alloc,
/// gfp_t gfp_flags, int node)` (6.1+).
#[unsafe(no_mangle)]
#[unsafe(link_section = "raw_tp/kmalloc")]
pub fn kmalloc_raw(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = RawTracePointContext::new(ctx);
    let _ = alloc(&ctx, ctx.arg(1), &Source::RawKmalloc(&ctx));
    0
}

/// `kmem_cache_alloc`: `(unsigned long call_site, const void *ptr, struct kmem_cache *s,
/// gfp_t gfp_flags, int node)` (6.1+).
#[unsafe(no_mangle)]
#[unsafe(link_section = "raw_tp/kmem_cache_alloc")]
pub fn cache_alloc_raw(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = RawTracePointContext::new(ctx);
    let _ = alloc(&ctx, ctx.arg(1), &Source::RawCache(&ctx));
    0
}

/// `kfree`: `(unsigned long call_site, const void *ptr)`.
#[unsafe(no_mangle)]
#[unsafe(link_section = "raw_tp/kfree")]
pub fn kfree_raw(ctx: *mut core::ffi::c_void) -> i32 {
    free_once(ctx);
    0
}

/// The twin of [`kfree_raw`] (see `memtrace_common::FreeClaims`).
#[unsafe(no_mangle)]
#[unsafe(link_section = "raw_tp/kfree")]
pub fn kfree_raw_twin(ctx: *mut core::ffi::c_void) -> i32 {
    free_once(ctx);
    0
}

/// `kmem_cache_free`: `(unsigned long call_site, const void *ptr, const struct kmem_cache *s)`
/// (6.1+).
#[unsafe(no_mangle)]
#[unsafe(link_section = "raw_tp/kmem_cache_free")]
pub fn cache_free_raw(ctx: *mut core::ffi::c_void) -> i32 {
    free_once(ctx);
    0
}

/// The twin of [`cache_free_raw`].
#[unsafe(no_mangle)]
#[unsafe(link_section = "raw_tp/kmem_cache_free")]
pub fn cache_free_twin(ctx: *mut core::ffi::c_void) -> i32 {
    free_once(ctx);
    0
}

/// A slab free, handled by whichever twin program runs first for it: it claims the event (its
/// slot, by the address of the argument array, which is the same for both programs of one
/// event) and frees; the other finds the claim, clears it and returns. When the event
/// interrupted one of the two on this CPU, the kernel skips that one and the other, finding
/// no claim, handles it.
#[inline(always)]
fn free_once(ctx: *mut core::ffi::c_void) {
    let ctx = RawTracePointContext::new(ctx);
    let ptr: u64 = ctx.arg(1);
    let Some(claims) = SLAB_FREE_CLAIMS.get_ptr_mut(0) else {
        free(ptr);
        return;
    };
    let at = relative(ctx.as_ptr() as u64, claims as u64);
    let slot = ((at >> 3) ^ (at >> 11)) as usize & (FREE_CLAIM_SLOTS - 1);
    // SAFETY: `claims` points to this CPU's map value and `slot` is below its length; the
    // twins of one event run one after the other on this CPU.
    unsafe {
        let c = &mut (*claims).slots[slot];
        if c.ctx == at && c.ptr == ptr {
            c.ctx = 0;
            count_atomic(Counter::ObjFreeClaimsTaken);
            return;
        }
        c.ctx = at;
        c.ptr = ptr;
    }
    count_atomic(Counter::ObjFreeClaims);
    free(ptr);
}

/// `p - base` for two pointers, as a number (a privileged program may subtract pointers; the
/// volatile read keeps LLVM from folding the result back into pointer arithmetic).
#[inline(always)]
fn relative(p: u64, base: u64) -> u64 {
    let v = p.wrapping_sub(base);
    // SAFETY: reads the local just written.
    unsafe { core::ptr::read_volatile(&v) }
}

// ---- allocation -----------------------------------------------------------------------------

/// Whether and how an allocation event's objects get a slab cache name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `kmalloc`: a kmalloc cache, or, when larger than the largest one, buddy pages.
    Kmalloc,
    /// `kmem_cache_alloc`: a dedicated cache (objects may be larger than any kmalloc cache).
    Cache,
}

/// Where an allocation event's details come from.
enum Source<'a> {
    /// A classic tracepoint record, at the offsets of its format.
    Classic {
        ctx: &'a TracePointContext,
        layout: &'a ObjAllocLayout,
        naming: Naming,
    },
    /// Raw `kmalloc`: the sizes and flags are arguments.
    RawKmalloc(&'a RawTracePointContext),
    /// Raw `kmem_cache_alloc`: the cache is an argument; sizes and name are read from it.
    RawCache(&'a RawTracePointContext),
}

/// What is read once an allocation is sampled.
struct Details {
    call_site: u64,
    bytes: u64,
    bytes_req: u64,
    gfp_flags: u32,
    /// The `struct kmem_cache *` (raw `kmem_cache_alloc`), else 0.
    cache: u64,
}

impl Source<'_> {
    #[inline(always)]
    fn details(&self, cfg: &Config) -> Result<Details, i32> {
        match self {
            Source::Classic { ctx, layout, .. } => Ok(Details {
                call_site: if layout.call_site_offset != NO_FIELD {
                    read_u64(ctx, layout.call_site_offset)?
                } else {
                    0
                },
                bytes: read_u64(ctx, layout.bytes_offset)?,
                bytes_req: if layout.bytes_req_offset != NO_FIELD {
                    read_u64(ctx, layout.bytes_req_offset)?
                } else {
                    0
                },
                gfp_flags: if layout.gfp_offset != NO_FIELD {
                    read_u32(ctx, layout.gfp_offset)?
                } else {
                    0
                },
                cache: 0,
            }),
            Source::RawKmalloc(ctx) => Ok(Details {
                call_site: ctx.arg(0),
                bytes_req: ctx.arg(2),
                bytes: ctx.arg(3),
                gfp_flags: ctx.arg::<u64>(4) as u32,
                cache: 0,
            }),
            Source::RawCache(ctx) => {
                let cache: u64 = ctx.arg(2);
                let read = |offset: u32| -> Result<u64, i32> {
                    // SAFETY: bpf_probe_read_kernel checks the address; `unsigned int` fields.
                    unsafe {
                        bpf_probe_read_kernel(cache.wrapping_add(offset as u64) as *const u32)
                    }
                    .map(u64::from)
                };
                Ok(Details {
                    call_site: ctx.arg(0),
                    bytes: read(cfg.slab_btf.cache_size)?,
                    bytes_req: read(cfg.slab_btf.cache_object_size)?,
                    gfp_flags: ctx.arg::<u64>(3) as u32,
                    cache,
                })
            }
        }
    }

    /// Names the slab cache of a stack once: the first time an object is recorded from it, its
    /// cache's `name` is copied into `CACHE_NAMES[stack_id]`. Raw `kmem_cache_alloc`
    /// receives the cache; otherwise it is read through the object's slab where user space
    /// calibrated that (any kernel with BTF), else taken from the event's `__data_loc char[]
    /// name` field (classic `kmem_cache_alloc` on 6.18+). Large kmalloc (more than the largest
    /// kmalloc cache: buddy pages, no cache) is left unnamed.
    #[inline(always)]
    fn remember_cache_name(&self, cfg: &Config, ptr: u64, d: &Details, stack_id: u32) {
        let Some(slot) = CACHE_NAMES.get_ptr_mut(stack_id) else {
            return;
        };
        // SAFETY: valid pointer to the map value (a [u8; 32]).
        let slot = unsafe { &mut *slot };
        if slot[0] != 0 {
            return;
        }
        let names = &cfg.slab_names;
        let (naming, name_field) = match self {
            Source::Classic {
                ctx,
                layout,
                naming,
            } => (
                *naming,
                Some((*ctx, layout.name_offset)).filter(|(_, o)| *o != NO_FIELD),
            ),
            Source::RawKmalloc(_) => (Naming::Kmalloc, None),
            Source::RawCache(_) => {
                if !copy_cache_name(d.cache, cfg.slab_btf.cache_name, slot) {
                    unresolved(slot, None);
                }
                return;
            }
        };
        if naming == Naming::Kmalloc && d.bytes > names.kmalloc_max_size as u64 {
            return;
        }
        match object_cache(names, ptr, d.bytes) {
            CacheLookup::Found(cache) => {
                if !copy_cache_name(cache, names.cache_name, slot) {
                    unresolved(slot, name_field);
                }
            }
            CacheLookup::Mismatch => unresolved(slot, name_field),
            CacheLookup::Uncalibrated => {
                if let Some((ctx, offset)) = name_field {
                    copy_name_field(ctx, offset, slot);
                }
            }
        }
    }
}

/// Marks a stack whose cache could not be read (counted once: the slot is not empty any more),
/// falling back to the event's name field where it has one.
#[inline(always)]
fn unresolved(slot: &mut [u8; 32], name_field: Option<(&TracePointContext, u32)>) {
    count(Counter::CacheNamesUnresolved);
    let named = match name_field {
        Some((ctx, offset)) => copy_name_field(ctx, offset, slot),
        None => false,
    };
    if !named {
        slot[0] = CACHE_NAME_UNRESOLVED;
    }
}

/// The slab sampling rate in force: one address in this many is recorded.
#[inline(always)]
fn slab_every() -> u32 {
    match SLAB_SAMPLING.get_ptr(slab_sampling::EVERY) {
        // SAFETY: valid pointer into the array; user space raises the value while programs
        // run, and an event that reads the old value is settled by the final thinning pass.
        Some(p) => (unsafe { core::ptr::read_volatile(p) } as u32).max(1),
        None => 1,
    }
}

/// The object table is full: halve the slab sample (user space thins the records that are not
/// in it any more). Only the first program to see the rate `every` full doubles it.
#[inline(always)]
fn raise_every(every: u32) {
    if every >= MAX_EVERY {
        return;
    }
    if let Some(p) = SLAB_SAMPLING.get_ptr_mut(slab_sampling::EVERY) {
        // SAFETY: valid pointer into the array; two CPUs racing here both write `every * 2`.
        unsafe {
            if core::ptr::read_volatile(p) as u32 <= every {
                core::ptr::write_volatile(p, u64::from(every) * 2);
            }
        }
    }
}

/// Records a slab allocation of the object at `ptr`.
#[inline(always)]
fn alloc<C: StackIdContext>(ctx: &C, ptr: u64, src: &Source) -> Result<(), i32> {
    count(Counter::ObjAllocsSeen);
    if ptr <= ZERO_SIZE_PTR {
        count(Counter::ObjFailedAllocs);
        return Ok(());
    }
    let every = slab_every();
    if !sampled(ptr, every) {
        count(Counter::ObjSampledOut);
        return Ok(());
    }
    let cfg = config();
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == cfg.self_tgid {
        count(Counter::SelfAllocs);
        return Ok(());
    }
    if owner::grace_active() {
        count(Counter::ObjGraceSkipped);
        return Ok(());
    }
    if !owner::passes(&cfg.filters, tgid) {
        count(Counter::ObjFilteredOut);
        return Ok(());
    }
    let Some(scratch) = SLAB_STACK_CACHE.get_ptr_mut(0) else {
        return Ok(());
    };
    let d = src.details(cfg)?;
    let cache_key = if d.cache != 0 {
        d.cache
    } else {
        d.bytes | (u64::from(d.gfp_flags) << 32)
    };
    let stack_id = slab_stack(ctx, cfg, scratch, d.call_site, cache_key);
    let Some(agg) = STACK_AGG.get_ptr_mut(agg_index(cfg, Kind::Slab as u32, stack_id)) else {
        count(Counter::AggMissing);
        return Ok(());
    };
    // The allocated side estimates every allocation: weighted by the rate in force.
    add_allocated(agg, d.bytes * u64::from(every), u64::from(every));
    src.remember_cache_name(cfg, ptr, &d, stack_id);
    let fresh = Fresh {
        bytes: d.bytes,
        bytes_req: d.bytes_req,
        gfp_flags: d.gfp_flags,
        stack_id,
        pid_tgid,
    };
    if record(Kind::Slab, agg, ptr, fresh) == Recorded::Full {
        raise_every(every);
    }
    Ok(())
}

/// `p` (a pointer the verifier would not let the program hash or compare) as a number: its
/// distance from this CPU's scratch value plus that value's own address (stored into it as a
/// pointer and loaded back as a number).
#[inline(always)]
fn as_number(scratch: *mut SlabStackCache, p: u64) -> u64 {
    // SAFETY: `scratch` points to this CPU's map value; a privileged program may store a
    // pointer into a map, and what it loads from one is a number. Every run stores the same
    // value, so a nested run cannot change what this one loads.
    let base = unsafe {
        core::ptr::write_volatile(&raw mut (*scratch).self_addr, scratch as u64);
        core::ptr::read_volatile(&raw const (*scratch).self_addr)
    };
    relative(p, scratch as u64).wrapping_add(base)
}

/// The stack of a slab allocation: the one captured for an earlier allocation from the same
/// call site and cache on the same kernel stack (the task's own, or this CPU's interrupt
/// stack) of this CPU, until it has served `slab_stack_every` allocations; then a fresh
/// capture. Unwinding the kernel stack is the most expensive step of an allocation, and a
/// busy call site repeats the same path. A key lives in one of two ways chosen by its hash
/// (the ways of the other keys of a socket's creation no longer evict it).
#[inline(always)]
fn slab_stack<C: StackIdContext>(
    ctx: &C,
    cfg: &Config,
    scratch: *mut SlabStackCache,
    call_site: u64,
    cache: u64,
) -> u32 {
    if cfg.slab_stack_every <= 1 {
        return stack_slot(ctx, cfg);
    }
    let marker = 0u64;
    // The stack this program runs on is the kernel stack of the allocation: 16 KiB-aligned
    // task stacks (THREAD_SIZE) are one region each, interrupt stacks others.
    let region = as_number(scratch, &marker as *const u64 as u64) >> 14;
    let h = mix64(call_site ^ cache.rotate_left(17) ^ region.rotate_left(41));
    // Two candidate ways; the second differs from the first.
    let first = (h as usize) & (SLAB_STACK_WAYS - 1);
    let second = (first + 1 + ((h >> 32) as usize % (SLAB_STACK_WAYS - 1))) & (SLAB_STACK_WAYS - 1);
    // SAFETY: `scratch` points to this CPU's map value and both indices are below the array's
    // length; a program is not re-entered on its CPU (a nested run of another slab program
    // could at worst make this one reuse or recapture a stack).
    unsafe {
        let ways = &mut (*scratch).ways;
        let (a, b) = (ways[way(first)], ways[way(second)]);
        let hit = |w: &SlabStackWay| {
            w.call_site == call_site
                && w.cache == cache
                && w.region == region
                && w.uses < cfg.slab_stack_every
                && w.stack_id != cfg.stack_none_id
        };
        let way_index = if hit(&a) {
            Some(first)
        } else if hit(&b) {
            Some(second)
        } else {
            None
        };
        if let Some(i) = way_index {
            let way = &mut ways[way(i)];
            way.uses += 1;
            count(Counter::ObjStacksReused);
            return way.stack_id;
        }
        // Replace an empty way, else the one nearer its next capture.
        let victim = if a.call_site == 0 || (b.call_site != 0 && a.uses >= b.uses) {
            first
        } else {
            second
        };
        let id = stack_slot(ctx, cfg);
        ways[way(victim)] = SlabStackWay {
            call_site,
            cache,
            region,
            stack_id: id,
            uses: 1,
        };
        id
    }
}

/// `i` masked to a way index in a way LLVM cannot drop (it would, knowing the value in range,
/// and older verifiers, 6.1, lose the bound of a value computed from two bounded ones).
#[inline(always)]
fn way(i: usize) -> usize {
    // SAFETY: a volatile read of a live local.
    unsafe { core::ptr::read_volatile(&i) & (SLAB_STACK_WAYS - 1) }
}

// ---- free -----------------------------------------------------------------------------------

/// Takes a freed slab object out of `OBJECTS`, unless its address is not in the sample.
#[inline(always)]
fn free(ptr: u64) {
    // The session has ended: user space is reading the table.
    if owner::stopped() {
        return;
    }
    count(Counter::ObjFreesSeen);
    if ptr <= ZERO_SIZE_PTR {
        // kfree(NULL) and friends: nothing was allocated.
        return;
    }
    if !sampled(ptr, slab_every()) {
        count(Counter::ObjFreesNotSampled);
        return;
    }
    free_ptr(ptr, Kind::Slab);
}

/// Objects one run walks. Bulk frees come in batches of up to a page of pointers (`kfree_rcu`
/// batches: 508 on 4 KiB pages); the rest are counted as truncated.
const BULK_MAX: usize = 512;

/// `void kmem_cache_free_bulk(struct kmem_cache *s, size_t size, void **p)`: slab objects freed
/// in bulk (maple tree nodes, `kfree_rcu` batches, the network stack's per-CPU skb cache) fire
/// no `kmem_cache_free`/`kfree` event; without this they would stay listed as false leaks.
#[fentry(function = "kmem_cache_free_bulk")]
pub fn kmem_cache_free_bulk(ctx: FEntryContext) -> u32 {
    if owner::stopped() {
        return 0;
    }
    let size: u64 = ctx.arg(1);
    // `void **p` through bpf_get_func_arg: a direct context read of a pointer-to-pointer
    // argument is rejected by the verifier before 6.x ("arg2 type PTR is not a struct").
    let mut p: u64 = 0;
    // SAFETY: the helper writes one u64 to the valid local `p` and checks the index.
    if unsafe { bpf_get_func_arg(ctx.as_ptr(), 2, &mut p) } != 0 {
        count(Counter::ReadErrors);
        return 0;
    }
    let p = p as *const u64;
    let n = (size as usize).min(BULK_MAX);
    for i in 0..BULK_MAX {
        if i >= n {
            break;
        }
        // SAFETY: bpf_probe_read_kernel checks the address; `p` has `size` entries.
        let Ok(ptr) = (unsafe { bpf_probe_read_kernel(p.wrapping_add(i)) }) else {
            count(Counter::ReadErrors);
            break;
        };
        count(Counter::ObjBulkFrees);
        bulk_free_one(ptr);
    }
    if size as usize > BULK_MAX {
        count_n(Counter::ObjBulkTruncated, size - BULK_MAX as u64);
    }
    0
}

/// One object of a bulk free, as a global BPF function: the verifier checks its body once
/// instead of once per loop iteration (a 512-iteration loop with the body inlined took over a
/// minute to verify under emulation).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn memtrace_bulk_free_one(ptr: u64) -> u32 {
    if ptr > ZERO_SIZE_PTR && sampled(ptr, slab_every()) {
        free_ptr(ptr, Kind::Slab);
    }
    0
}

#[inline(always)]
fn bulk_free_one(ptr: u64) {
    memtrace_bulk_free_one(ptr);
}
