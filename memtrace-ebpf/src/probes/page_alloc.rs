//! `kmem:mm_page_alloc`: record the allocation's pages in the page table with its stack.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::{tracing::StackIdContext, BtfTracePointContext, TracePointContext},
};
use memtrace_common::{
    calib,
    page_table::{self as pt, Entry, OWNER_OTHER},
    sampled, Config, Counter, StackCache, MIGRATE_MOVABLE,
};

use super::{owner, page_table};
use crate::maps::{
    atomic_add, config, count, stack_slot, CALIB, STACK_AGG, STACK_CACHE, STACK_GFP,
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
        pfn,
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
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(calib) = CALIB.get_ptr_mut(0) else {
        return 0;
    };
    let calib = calib as *mut u64;
    let pfn = if page == 0 {
        u64::MAX
    } else {
        match page_to_pfn(cfg, page, calib) {
            Some(pfn) => pfn,
            None => {
                count(Counter::Uncalibrated);
                return 0;
            }
        }
    };
    on_alloc(&ctx, cfg, pfn, order, gfp as u32, migratetype, pid_tgid);
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
#[inline(always)]
fn on_alloc<C: StackIdContext>(
    ctx: &C,
    cfg: &Config,
    pfn: u64,
    order: u32,
    gfp: u32,
    migratetype: i32,
    pid_tgid: u64,
) {
    count(Counter::AllocsSeen);
    let tgid = (pid_tgid >> 32) as u32;
    if pfn == u64::MAX {
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

    // Page kind = block 0 of STACK_AGG: the slot is the stack id itself.
    let stack_id = if migratetype == MIGRATE_MOVABLE && cfg.movable_stack_every > 1 {
        movable_stack(ctx, cfg, tgid, gfp)
    } else {
        stack_slot(ctx, cfg)
    };
    let bytes = n * cfg.page_size;

    // The allocated side of the aggregate counts every allocation, recorded or not.
    let Some(agg) = STACK_AGG.get_ptr_mut(stack_id) else {
        count(Counter::AggMissing);
        return;
    };
    // SAFETY: valid pointer into the STACK_AGG value for `stack_id`.
    unsafe {
        atomic_add(&raw mut (*agg).allocated_bytes, bytes);
        atomic_add(&raw mut (*agg).allocated_count, 1);
    }
    if order > pt::MAX_ORDER || n > page_table::MAX_RANGE || first + n > cfg.table_indices {
        // Beyond the table (memory added after the start).
        count(Counter::OutstandingFull);
        return;
    }

    let owner = owner::intern(cfg, pid_tgid);
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
    // Classification hints: the first allocation of each stack.
    if let Some(g) = STACK_GFP.get_ptr_mut(stack_id) {
        // SAFETY: valid pointer into STACK_GFP; written once per stack (a race writes one of
        // two equally valid first values).
        unsafe {
            if *g == 0 {
                *g = pt::gfp_value(gfp, migratetype);
            }
        }
    }
    count(Counter::AllocsTracked);
    // SAFETY: valid pointer into the STACK_AGG value for `stack_id`.
    unsafe {
        atomic_add(&raw mut (*agg).outstanding_bytes, bytes);
        atomic_add(&raw mut (*agg).outstanding_count, 1);
    }
}

/// The stack of a movable page allocation: the one captured for the previous allocation of
/// the same task and gfp flags on this CPU, until it has served `movable_stack_every`
/// allocations; then a fresh capture. User pages come from a handful of fault and read/write
/// paths, and unwinding the kernel stack is the most expensive step of an allocation.
#[inline(always)]
fn movable_stack<C: StackIdContext>(ctx: &C, cfg: &Config, tgid: u32, gfp: u32) -> u32 {
    let Some(cache) = STACK_CACHE.get_ptr_mut(0) else {
        return stack_slot(ctx, cfg);
    };
    // SAFETY: per-CPU map value; a BPF program is not re-entered on the same CPU (and the
    // worst a nested run could do is make this one reuse or recapture a stack).
    unsafe {
        let c = &mut *cache;
        if c.tgid == tgid
            && c.gfp_flags == gfp
            && c.uses < cfg.movable_stack_every
            && c.stack_id != cfg.stack_none_id
        {
            c.uses += 1;
            count(Counter::StackReused);
            return c.stack_id;
        }
        let id = stack_slot(ctx, cfg);
        *c = StackCache {
            tgid,
            gfp_flags: gfp,
            stack_id: id,
            uses: 1,
        };
        id
    }
}
