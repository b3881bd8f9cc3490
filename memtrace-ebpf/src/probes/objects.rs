//! Shared logic of the object kinds (slab, percpu, vmalloc): an allocation event records the
//! object under (address, kind) with its stack; a free event takes it out again. The percpu
//! and vmalloc events come through [`alloc`] and [`free`]; slab has its own front end
//! (`slab.rs`: tp_btf programs, adaptive sampling, stack reuse) and shares the record keeping
//! ([`record`], [`free_ptr`]) and the cache lookup ([`object_cache`]).

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
    },
    programs::TracePointContext,
    EbpfContext,
};
use memtrace_common::{
    calib, context, sampled, Counter, Kind, ObjAllocLayout, ObjFreeLayout, ObjKey, ObjRecord,
    SlabNameLayout, StackAgg, NO_FIELD,
};

use super::owner;
use crate::maps::{
    add_allocated, agg_index, agg_release, atomic_add, config, count, stack_slot, BPF_ANY,
    BPF_NOEXIST, CALIB, EEXIST, OBJECTS, STACK_AGG,
};

/// `ZERO_SIZE_PTR`: what kmalloc(0) returns; nothing to track.
pub const ZERO_SIZE_PTR: u64 = 16;

#[inline(always)]
pub fn read_u64(ctx: &TracePointContext, offset: u32) -> Result<u64, i32> {
    // SAFETY: offsets come from the tracepoint's format file; bpf_probe_read_kernel checks the
    // address and returns an error instead of faulting.
    unsafe { ctx.read_at::<u64>(offset as usize) }
}

#[inline(always)]
pub fn read_u32(ctx: &TracePointContext, offset: u32) -> Result<u32, i32> {
    // SAFETY: as above.
    unsafe { ctx.read_at::<u32>(offset as usize) }
}

/// Records a percpu or vmalloc allocation event described by `layout`.
#[inline(always)]
pub fn alloc(ctx: &TracePointContext, layout: &ObjAllocLayout, kind: Kind) -> Result<(), i32> {
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
    // A sampled page table (very large hosts, `pfn_shift` > 0) samples objects as much, so
    // one scale applies to every kind.
    if !sampled(ptr, cfg.sample_every << cfg.pfn_shift) {
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
    add_allocated(agg, bytes, 1);
    record(
        kind,
        agg,
        ptr,
        Fresh {
            bytes,
            bytes_req,
            gfp_flags,
            stack_id,
            pid_tgid,
        },
    );
    Ok(())
}

/// What an allocation event gives a new record.
pub struct Fresh {
    pub bytes: u64,
    pub bytes_req: u64,
    pub gfp_flags: u32,
    pub stack_id: u32,
    pub pid_tgid: u64,
}

/// What became of a [`record`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Yes,
    /// `OBJECTS` was full (counted).
    Full,
}

/// Puts the object at `ptr` in `OBJECTS` (replacing a stale record whose free was missed:
/// counted, its bytes taken off its stack) and adds it to the outstanding side of `agg`.
#[inline(always)]
pub fn record(kind: Kind, agg: *mut StackAgg, ptr: u64, fresh: Fresh) -> Recorded {
    let cfg = config();
    let key = ObjKey {
        addr: ptr,
        kind: kind as u32,
        _pad: 0,
    };
    let record = ObjRecord {
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        bytes: fresh.bytes,
        bytes_req: fresh.bytes_req,
        stack_id: fresh.stack_id,
        tgid: (fresh.pid_tgid >> 32) as u32,
        pid: fresh.pid_tgid as u32,
        gfp_flags: fresh.gfp_flags,
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
                return Recorded::Full;
            }
        }
        Err(_) => {
            count(Counter::ObjectsFull);
            return Recorded::Full;
        }
    }
    count(Counter::ObjAllocsTracked);
    // SAFETY: valid pointer into the STACK_AGG value.
    unsafe {
        atomic_add(&raw mut (*agg).outstanding_bytes, fresh.bytes);
        atomic_add(&raw mut (*agg).outstanding_count, 1);
    }
    Recorded::Yes
}

/// How the cache of a slab object was looked up.
pub enum CacheLookup {
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
pub fn object_cache(names: &SlabNameLayout, ptr: u64, bytes: u64) -> CacheLookup {
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

/// Copies the `name` of the `struct kmem_cache` at `cache` (its `name` pointer at byte
/// `name_offset`) into `slot`; whether it did.
#[inline(always)]
pub fn copy_cache_name(cache: u64, name_offset: u32, slot: &mut [u8; 32]) -> bool {
    let field = cache.wrapping_add(name_offset as u64) as *const u64;
    // SAFETY: bpf_probe_read_kernel checks the address.
    let Ok(name) = (unsafe { bpf_probe_read_kernel(field) }) else {
        return false;
    };
    // SAFETY: bpf_probe_read_kernel_str checks the source address and bounds the copy by the
    // destination's length.
    unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, slot) }.is_ok_and(|s| !s.is_empty())
}

/// Copies the event's `__data_loc char[] name` into `slot`; whether it did.
#[inline(always)]
pub fn copy_name_field(ctx: &TracePointContext, name_offset: u32, slot: &mut [u8; 32]) -> bool {
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
    if owner::stopped() {
        return Ok(());
    }
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
        // Removed concurrently by another free of the same object, or by user space thinning
        // the slab sample: whoever removed it took its bytes off its stack.
        count(Counter::ObjUnmatchedFrees);
    }
}
