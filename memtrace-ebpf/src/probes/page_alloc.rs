//! `kmem:mm_page_alloc`: record the allocation's pages in the page table with its stack.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::{tracing::StackIdContext, BtfTracePointContext, TracePointContext},
};
use memtrace_common::{
    calib, control,
    page_table::{self as pt, Entry, OWNER_OTHER},
    sampled, Config, Counter, StackAgg, StackCache, MIGRATE_MOVABLE,
};

use super::{owner, page_table};
use crate::maps::{
    add_allocated, add_recorded, config, count, stack_slot, CALIB, CONTROL, STACK_AGG, STACK_CACHE,
    STACK_GFP,
};

tracepoint_program!(mm_page_alloc, "tracepoint/kmem/mm_page_alloc", handle);

#[inline(always)]
fn handle(ctx: &TracePointContext) -> Result<(), i32> {
    let cfg = config();
    let layout = cfg.page_alloc;
    // SAFETY: offsets come from the tracepoint's format file; bpf_probe_read_kernel checks the
    // address and returns an error instead of faulting.
    let pfn: u64 = unsafe { ctx.read_at(layout.pfn_offset as usize)? };
    // SAFETY: as above.
    let order: u32 = unsafe { ctx.read_at(layout.order_offset as usize)? };
    // SAFETY: as above. gfp_flags is 4 or 8 bytes; on little-endian BPF the first 4 bytes are
    // the low 32 bits either way, and every __GFP_* bit lives there.
    let gfp: u32 = unsafe { ctx.read_at(layout.gfp_offset as usize)? };
    // SAFETY: as above.
    let migratetype: i32 = unsafe { ctx.read_at(layout.migratetype_offset as usize)? };
    on_alloc(
        ctx,
        cfg,
        pfn == u64::MAX,
        || Some(pfn),
        order,
        gfp,
        migratetype,
        bpf_get_current_pid_tgid(),
    );
    Ok(())
}

/// `tp_btf/mm_page_alloc`: `(struct page *page, unsigned int order, gfp_t gfp_flags,
/// int migratetype)`, checked against the kernel's BTF by the verifier. Cheaper to enter than
/// the classic tracepoint (no trace record is built) and guarded per program against
/// recursion, so this program running never makes the free program miss an event.
#[unsafe(no_mangle)]
#[unsafe(link_section = "tp_btf/mm_page_alloc")]
pub fn mm_page_alloc_btf(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = BtfTracePointContext::new(ctx);
    let cfg = config();
    let page: u64 = ctx.arg(0);
    let order: u32 = ctx.arg(1);
    let gfp: u64 = ctx.arg(2);
    let migratetype: i32 = ctx.arg(3);
    // The pfn is computed only once the cheaper filters let the event through (the default
    // session skips most page events, movable ones, before it).
    let pfn = || {
        let calib = CALIB.get_ptr_mut(0)? as *mut u64;
        page_to_pfn(cfg, page, calib)
    };
    on_alloc(
        &ctx,
        cfg,
        page == 0,
        pfn,
        order,
        gfp as u32,
        migratetype,
        bpf_get_current_pid_tgid(),
    );
    0
}

/// The address of a `struct page`, as a number relative to the CALIB array: the verifier types
/// a tp_btf `struct page *` argument as a trusted pointer and forbids shifting or dividing it,
/// but subtracting another pointer (allowed for CAP_PERFMON programs) yields a plain number.
/// The offset is the same for every page during a session, and the calibration absorbs it.
#[inline(always)]
pub fn page_scalar(page: u64, calib: *mut u64) -> u64 {
    let v = page.wrapping_sub(calib as u64);
    // SAFETY: reads the local just written. The volatile read is an optimisation barrier:
    // without it LLVM folds later subtractions into `calib + x`, pointer arithmetic with an
    // unbounded number, which the verifier rejects.
    unsafe { core::ptr::read_volatile(&v) }
}

/// The pfn of a `struct page *` once user space has calibrated the vmemmap base
/// (`calib` points to the CALIB array value).
#[inline(always)]
pub fn page_to_pfn(cfg: &Config, page: u64, calib: *mut u64) -> Option<u64> {
    // SAFETY: `calib` points to the CALIB array value of COUNT slots.
    let base = unsafe { *calib.add(calib::VMEMMAP_PLUS_ONE as usize) };
    if base == 0 {
        return None;
    }
    let off = page_scalar(page, calib).wrapping_sub(base - 1);
    Some(if cfg.page_struct_shift != 0 {
        off >> cfg.page_struct_shift
    } else {
        off / cfg.page_struct_size.max(1) as u64
    })
}

/// Everything after reading the event: filters first (cheapest first), the stack last.
/// `failed`: no page was allocated; `pfn`: the allocation's pfn, computed when a filter needs
/// it (`None` before the tp_btf calibration is done).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn on_alloc<C: StackIdContext>(
    ctx: &C,
    cfg: &Config,
    failed: bool,
    pfn: impl FnOnce() -> Option<u64>,
    order: u32,
    gfp: u32,
    migratetype: i32,
    pid_tgid: u64,
) {
    count(Counter::AllocsSeen);
    let tgid = (pid_tgid >> 32) as u32;
    if failed {
        count(Counter::FailedAllocs);
        return;
    }
    if tgid == cfg.self_tgid {
        count(Counter::SelfAllocs);
        return;
    }
    if cfg.skip_movable != 0 && migratetype == MIGRATE_MOVABLE {
        count(Counter::MovableSkipped);
        return;
    }
    let Some(pfn) = pfn() else {
        count(Counter::Uncalibrated);
        return;
    };
    if owner::grace_active() {
        count(Counter::GraceSkipped);
        return;
    }
    if !owner::passes(&cfg.filters, tgid) {
        count(Counter::FilteredOut);
        return;
    }
    if !sampled(pfn, cfg.sample_every) {
        count(Counter::SampledOut);
        return;
    }

    let order = order & 31;
    // The entries this allocation covers: every page (one sampled page per block on very
    // large hosts, where it may cover none).
    let (first, n) = pt::index_range(pfn, order, cfg.pfn_shift);
    if n == 0 {
        count(Counter::SampledOut);
        return;
    }

    // Page kind = block 0 of STACK_AGG: the slot is the stack id itself. `cached`: the stack
    // of this task's previous movable allocation on this CPU, reused; its owner and gfp hint
    // are recorded already, and the aggregate is added to in the CPU's cache.
    let (stack_id, cached) = if migratetype == MIGRATE_MOVABLE && cfg.movable_stack_every > 1 {
        movable_stack(ctx, cfg, tgid, gfp)
    } else {
        (stack_slot(ctx, cfg), None)
    };
    let bytes = n * cfg.page_size;

    if order > pt::MAX_ORDER || n > page_table::MAX_RANGE || first + n > cfg.table_indices {
        // Beyond the table (memory added after the start): allocated, not recorded.
        agg_allocated(stack_id, bytes);
        count(Counter::OutstandingFull);
        return;
    }
    // Where the allocation is added: the CPU's cache, or the aggregate of a stack just
    // captured, looked up before anything is recorded under it.
    let adds = match cached {
        Some(c) => Adds::Cache(c),
        None => match STACK_AGG.get_ptr_mut(stack_id) {
            Some(agg) => Adds::Agg(agg),
            None => {
                count(Counter::AggMissing);
                return;
            }
        },
    };

    let owner = owner::intern(cfg, pid_tgid, cached.is_some());
    if owner == OWNER_OTHER {
        count(Counter::OwnersFull);
    }
    let entry = pt::encode(
        &Entry {
            order,
            owner,
            stack: stack_id,
            // SAFETY: helper without preconditions.
            time: pt::time_units(
                unsafe { bpf_ktime_get_ns() },
                cfg.start_ns,
                cfg.entry_stack_bits,
            ),
        },
        cfg.entry_stack_bits,
    );
    if page_table::set_range(first, n, entry) {
        // Entries still set: their frees were missed (BPF recursion protection skips some
        // IRQ-time frees); they were taken off their stacks.
        count(Counter::StaleReplaced);
    }
    count(Counter::AllocsTracked);
    match adds {
        Adds::Cache(c) => {
            // SAFETY: this CPU's STACK_CACHE value (see `movable_stack`).
            unsafe {
                (*c).pending_bytes += bytes;
                (*c).pending_count += 1;
            }
        }
        Adds::Agg(agg) => {
            // Classification hints: the first allocation of each stack.
            if let Some(g) = STACK_GFP.get_ptr_mut(stack_id) {
                // SAFETY: valid pointer into STACK_GFP; written once per stack (a race writes
                // one of two equally valid first values).
                unsafe {
                    if *g == 0 {
                        *g = pt::gfp_value(gfp, migratetype);
                    }
                }
            }
            add_recorded(agg, bytes, 1);
        }
    }
}

/// Where a recorded allocation is added: the pending counts of the CPU's movable stack cache,
/// or its stack's aggregate.
enum Adds {
    Cache(*mut StackCache),
    Agg(*mut StackAgg),
}

/// Adds an allocation to the allocated side of its stack's aggregate only (not recorded).
#[inline(always)]
fn agg_allocated(stack_id: u32, bytes: u64) {
    match STACK_AGG.get_ptr_mut(stack_id) {
        Some(agg) => add_allocated(agg, bytes, 1),
        None => count(Counter::AggMissing),
    }
}

/// Adds what a movable stack cache recorded under its stack to the stack's aggregate.
#[inline(always)]
fn flush_pending(c: &StackCache) {
    if c.pending_count == 0 {
        return;
    }
    match STACK_AGG.get_ptr_mut(c.stack_id) {
        Some(agg) => add_recorded(agg, c.pending_bytes, c.pending_count),
        None => count(Counter::AggMissing),
    }
}

/// The stack of a movable page allocation: the one captured for the previous allocation of
/// the same task and gfp flags on this CPU, until it has served `movable_stack_every`
/// allocations or stack rotation retired stacks (a new generation); then a fresh capture.
/// User pages come from a handful of fault and read/write paths, and unwinding the kernel
/// stack is the most expensive step of an allocation. Returns the stack and, when it was
/// reused, this CPU's cache, whose pending counts the caller adds the allocation to.
#[inline(always)]
fn movable_stack<C: StackIdContext>(
    ctx: &C,
    cfg: &Config,
    tgid: u32,
    gfp: u32,
) -> (u32, Option<*mut StackCache>) {
    let Some(cache) = STACK_CACHE.get_ptr_mut(0) else {
        return (stack_slot(ctx, cfg), None);
    };
    let control = |slot: u32| match CONTROL.get_ptr(slot) {
        // SAFETY: valid pointer into the CONTROL array; user space changes it between events.
        Some(v) => unsafe { core::ptr::read_volatile(v) },
        None => 0,
    };
    let generation = control(control::PAGE_STACK_GENERATION) as u32;
    // SAFETY: this CPU's value of a per-CPU map, used by this program only, which does not
    // run nested on one CPU: the read-modify-writes below are not interleaved with another.
    unsafe {
        let c = &mut *cache;
        if c.tgid == tgid
            && c.gfp_flags == gfp
            && c.uses < cfg.movable_stack_every
            && c.stack_id != cfg.stack_none_id
            && c.generation == generation
        {
            c.uses += 1;
            count(Counter::StackReused);
            return (c.stack_id, Some(cache));
        }
        if control(control::PAGE_STACK_HOLD) != 0 {
            // User space is reading the caches and STACK_AGG: this allocation goes to
            // STACK_AGG directly, the cache stays as it is.
            return (stack_slot(ctx, cfg), None);
        }
        flush_pending(c);
        let id = stack_slot(ctx, cfg);
        *c = StackCache {
            tgid,
            gfp_flags: gfp,
            stack_id: id,
            uses: 1,
            generation,
            ..StackCache::default()
        };
        (id, None)
    }
}
