//! Shared logic of the object kinds (slab, percpu, vmalloc): an allocation event records the
//! object under (address, kind) with its stack; a free event takes it out again.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
    },
    programs::TracePointContext,
    EbpfContext,
};
use memtrace_common::{
    calib, context, sampled, Config, Counter, Kind, ObjAllocLayout, ObjFreeLayout, ObjKey,
    ObjRecord, SlabNameLayout, CACHE_NAME_UNRESOLVED, NO_FIELD,
};

use super::owner;
use crate::maps::{
    agg_index, agg_release, atomic_add, config, count, stack_slot, BPF_ANY, BPF_NOEXIST,
    CACHE_NAMES, CALIB, EEXIST, OBJECTS, STACK_AGG,
};

/// `ZERO_SIZE_PTR`: what kmalloc(0) returns; nothing to track.
const ZERO_SIZE_PTR: u64 = 16;

#[inline(always)]
fn read_u64(ctx: &TracePointContext, offset: u32) -> Result<u64, i32> {
    // SAFETY: offsets come from the tracepoint's format file; bpf_probe_read_kernel checks the
    // address and returns an error instead of faulting.
    unsafe { ctx.read_at::<u64>(offset as usize) }
}

#[inline(always)]
fn read_u32(ctx: &TracePointContext, offset: u32) -> Result<u32, i32> {
    // SAFETY: as above.
    unsafe { ctx.read_at::<u32>(offset as usize) }
}

/// Whether and how an allocation event's objects get a slab cache name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Not a slab event (percpu, vmalloc).
    None,
    /// `kmalloc`: a kmalloc cache, or, when larger than the largest one, buddy pages.
    Kmalloc,
    /// `kmem_cache_alloc`: a dedicated cache (objects may be larger than any kmalloc cache).
    Cache,
}

/// Records an allocation event of `kind` described by `layout`.
#[inline(always)]
pub fn alloc(
    ctx: &TracePointContext,
    layout: &ObjAllocLayout,
    kind: Kind,
    naming: Naming,
) -> Result<(), i32> {
    count(Counter::ObjAllocsSeen);
    let cfg = config();
    let ptr = read_u64(ctx, layout.ptr_offset)?;
    if layout.failed_offset != NO_FIELD && read_u32(ctx, layout.failed_offset)? != 0 {
        count(Counter::ObjFailedAllocs);
        return Ok(());
    }
    if ptr <= ZERO_SIZE_PTR {
        count(Counter::ObjFailedAllocs);
        return Ok(());
    }
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
    if !sampled(ptr, cfg.sample_every) {
        count(Counter::ObjSampledOut);
        return Ok(());
    }
    let bytes = read_u64(ctx, layout.bytes_offset)? * layout.bytes_multiplier as u64;
    let bytes_req = if layout.bytes_req_offset != NO_FIELD {
        read_u64(ctx, layout.bytes_req_offset)?
    } else {
        0
    };
    let gfp_flags = if layout.gfp_offset != NO_FIELD {
        read_u32(ctx, layout.gfp_offset)?
    } else {
        0
    };
    let stack_id = stack_slot(ctx, cfg);
    let Some(agg) = STACK_AGG.get_ptr_mut(agg_index(cfg, kind as u32, stack_id)) else {
        count(Counter::AggMissing);
        return Ok(());
    };
    // SAFETY: valid pointer into the STACK_AGG value.
    unsafe {
        atomic_add(&raw mut (*agg).allocated_bytes, bytes);
        atomic_add(&raw mut (*agg).allocated_count, 1);
    }
    if naming != Naming::None {
        remember_cache_name(ctx, cfg, layout, naming, ptr, bytes, stack_id);
    }

    let key = ObjKey {
        addr: ptr,
        kind: kind as u32,
        _pad: 0,
    };
    let record = ObjRecord {
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        bytes,
        bytes_req,
        stack_id,
        tgid,
        pid: pid_tgid as u32,
        gfp_flags,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        // SAFETY: helper without memory arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        // Interrupt or task: decided from the stack in user space.
        context: context::UNKNOWN,
        _pad: [0; 7],
    };
    match OBJECTS.insert(key, record, BPF_NOEXIST) {
        Ok(()) => {}
        Err(EEXIST) => {
            // Still recorded: its free was not seen. Drop the stale record's bytes.
            if let Some(old) = OBJECTS.get_ptr(key) {
                // SAFETY: valid pointer to the map value; copied before it is overwritten.
                let old = unsafe { *old };
                agg_release(agg_index(cfg, kind as u32, old.stack_id), old.bytes, true);
            }
            count(Counter::ObjStaleReplaced);
            if OBJECTS.insert(key, record, BPF_ANY).is_err() {
                count(Counter::ObjectsFull);
                return Ok(());
            }
        }
        Err(_) => {
            count(Counter::ObjectsFull);
            return Ok(());
        }
    }
    count(Counter::ObjAllocsTracked);
    // SAFETY: valid pointer into the STACK_AGG value.
    unsafe {
        atomic_add(&raw mut (*agg).outstanding_bytes, bytes);
        atomic_add(&raw mut (*agg).outstanding_count, 1);
    }
    Ok(())
}

/// Names the slab cache of a stack once: the first time an object is recorded from it, its
/// cache's `name` is copied into `CACHE_NAMES[stack_id]`. The cache is read through the
/// object's slab where user space calibrated that (any kernel with BTF), else taken from the
/// event's `__data_loc char[] name` field (`kmem_cache_alloc` on 6.18+). Large kmalloc (more
/// than the largest kmalloc cache: buddy pages, no cache) is left unnamed.
#[inline(always)]
fn remember_cache_name(
    ctx: &TracePointContext,
    cfg: &Config,
    layout: &ObjAllocLayout,
    naming: Naming,
    ptr: u64,
    bytes: u64,
    stack_id: u32,
) {
    let Some(slot) = CACHE_NAMES.get_ptr_mut(stack_id) else {
        return;
    };
    // SAFETY: valid pointer to the map value (a [u8; 32]).
    let slot = unsafe { &mut *slot };
    if slot[0] != 0 {
        return;
    }
    let names = &cfg.slab_names;
    if naming == Naming::Kmalloc && bytes > names.kmalloc_max_size as u64 {
        return;
    }
    match object_cache(names, ptr, bytes) {
        CacheLookup::Found(cache) => {
            let field = cache.wrapping_add(names.cache_name as u64) as *const u64;
            // SAFETY: bpf_probe_read_kernel checks the address.
            if let Ok(name) = unsafe { bpf_probe_read_kernel(field) } {
                // SAFETY: bpf_probe_read_kernel_str checks the source address and bounds the
                // copy by the destination's length.
                if unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, slot) }.is_ok() {
                    return;
                }
            }
            unresolved(ctx, layout, slot);
        }
        CacheLookup::Mismatch => unresolved(ctx, layout, slot),
        CacheLookup::Uncalibrated => {
            if layout.name_offset != NO_FIELD {
                copy_name_field(ctx, layout.name_offset, slot);
            }
        }
    }
}

enum CacheLookup {
    /// The object's `struct kmem_cache *`.
    Found(u64),
    /// Calibrated, but the object's slab does not lead to a cache of its size.
    Mismatch,
    /// No calibration (no BTF, or it failed): nothing to read through.
    Uncalibrated,
}

/// The cache of the slab object at `ptr` whose cache reports `bytes` per object: `struct page`
/// of `ptr`, its head page, the slab's `slab_cache`, checked by the cache's `size`.
#[inline(always)]
fn object_cache(names: &SlabNameLayout, ptr: u64, bytes: u64) -> CacheLookup {
    if names.page_struct_size == 0 {
        return CacheLookup::Uncalibrated;
    }
    let base = match CALIB.get(0) {
        Some(slots) => slots[calib::OBJ_PAGE_BASE as usize],
        None => 0,
    };
    if base == 0 {
        return CacheLookup::Uncalibrated;
    }
    let page = base
        .wrapping_add((ptr >> (names.page_shift & 63)).wrapping_mul(names.page_struct_size as u64));
    let read = |addr: u64| -> Option<u64> {
        // SAFETY: bpf_probe_read_kernel checks the address and fails instead of faulting.
        unsafe { bpf_probe_read_kernel(addr as *const u64) }.ok()
    };
    let Some(head_word) = read(page.wrapping_add(names.compound_head as u64)) else {
        return CacheLookup::Mismatch;
    };
    // A tail page of a compound (multi-page) slab points to its head page, plus one.
    let head = if head_word & 1 != 0 {
        head_word - 1
    } else {
        page
    };
    let Some(cache) = read(head.wrapping_add(names.slab_cache as u64)) else {
        return CacheLookup::Mismatch;
    };
    // SAFETY: as above.
    let size =
        unsafe { bpf_probe_read_kernel(cache.wrapping_add(names.cache_size as u64) as *const u32) };
    match size {
        Ok(size) if size as u64 == bytes => CacheLookup::Found(cache),
        _ => CacheLookup::Mismatch,
    }
}

/// Marks a stack whose cache could not be read (counted once: the slot is not empty any more),
/// falling back to the event's name field where it has one.
#[inline(always)]
fn unresolved(ctx: &TracePointContext, layout: &ObjAllocLayout, slot: &mut [u8; 32]) {
    count(Counter::CacheNamesUnresolved);
    if layout.name_offset == NO_FIELD || !copy_name_field(ctx, layout.name_offset, slot) {
        slot[0] = CACHE_NAME_UNRESOLVED;
    }
}

/// Copies the event's `__data_loc char[] name` into `slot`; whether it did.
#[inline(always)]
fn copy_name_field(ctx: &TracePointContext, name_offset: u32, slot: &mut [u8; 32]) -> bool {
    let Ok(loc) = read_u32(ctx, name_offset) else {
        return false;
    };
    // __data_loc: low 16 bits = offset of the string from the start of the record.
    let src = ctx
        .as_ptr()
        .cast::<u8>()
        .wrapping_add((loc & 0xffff) as usize);
    // SAFETY: bpf_probe_read_kernel_str checks the source address and bounds the copy by the
    // destination's length.
    unsafe { bpf_probe_read_kernel_str_bytes(src, slot) }.is_ok_and(|s| !s.is_empty())
}

/// Takes the freed object out of `OBJECTS`.
#[inline(always)]
pub fn free(ctx: &TracePointContext, layout: &ObjFreeLayout, kind: Kind) -> Result<(), i32> {
    count(Counter::ObjFreesSeen);
    let ptr = read_u64(ctx, layout.ptr_offset)?;
    free_ptr(ptr, kind);
    Ok(())
}

/// Takes the object at `ptr` out of `OBJECTS`.
#[inline(always)]
pub fn free_ptr(ptr: u64, kind: Kind) {
    if ptr <= ZERO_SIZE_PTR {
        // kfree(NULL) and friends: nothing was allocated.
        return;
    }
    let key = ObjKey {
        addr: ptr,
        kind: kind as u32,
        _pad: 0,
    };
    let Some(rec) = OBJECTS.get_ptr(key) else {
        count(Counter::ObjUnmatchedFrees);
        return;
    };
    // SAFETY: valid pointer to the map value; copied before the entry is removed.
    let rec = unsafe { *rec };
    if OBJECTS.remove(key).is_ok() {
        let cfg = config();
        agg_release(agg_index(cfg, kind as u32, rec.stack_id), rec.bytes, true);
        count(Counter::ObjFreesMatched);
    } else {
        // Removed concurrently by another free of the same object (should not happen).
        count(Counter::ObjUnmatchedFrees);
    }
}
