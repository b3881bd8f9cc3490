//! `kmem:mm_page_alloc`: record the allocation with its stack.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::TracePointContext,
};
use memtrace_common::{record_flags, Counter, PageRecord, DETACHED_KEY_BIT};

use crate::maps::{
    agg_release, atomic_add, config, count, detached_live_add, stack_slot, BPF_ANY, BPF_NOEXIST,
    EEXIST, OUTSTANDING, STACK_AGG,
};

tracepoint_program!(mm_page_alloc, "tracepoint/kmem/mm_page_alloc", handle);

#[inline(always)]
fn handle(ctx: &TracePointContext) -> Result<(), i32> {
    count(Counter::AllocsSeen);
    let cfg = config();
    let layout = cfg.page_alloc;
    // SAFETY: offsets come from the tracepoint's format file; bpf_probe_read_kernel checks the
    // address and returns an error instead of faulting.
    let pfn: u64 = unsafe { ctx.read_at(layout.pfn_offset as usize)? };
    if pfn == u64::MAX {
        count(Counter::FailedAllocs);
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == cfg.self_tgid {
        count(Counter::SelfAllocs);
        return Ok(());
    }
    // SAFETY: as above.
    let order: u32 = unsafe { ctx.read_at(layout.order_offset as usize)? };
    // SAFETY: as above. gfp_flags is 4 or 8 bytes; on little-endian BPF the first 4 bytes are
    // the low 32 bits either way, and every __GFP_* bit lives there.
    let gfp: u32 = unsafe { ctx.read_at(layout.gfp_offset as usize)? };
    // SAFETY: as above.
    let migratetype: i32 = unsafe { ctx.read_at(layout.migratetype_offset as usize)? };

    // Page kind = block 0 of STACK_AGG: the slot is the stack id itself.
    let stack_id = stack_slot(ctx, cfg);

    let order = order & 31;
    let pages = 1u32 << order;
    let bytes = (pages as u64) * cfg.page_size;

    // The allocated side of the aggregate counts every allocation, recorded or not.
    let Some(agg) = STACK_AGG.get_ptr_mut(stack_id) else {
        count(Counter::AggMissing);
        return Ok(());
    };
    // SAFETY: valid pointer into the STACK_AGG value for `stack_id`.
    unsafe {
        atomic_add(&raw mut (*agg).allocated_bytes, bytes);
        atomic_add(&raw mut (*agg).allocated_count, 1);
    }

    let record = PageRecord {
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        stack_id,
        tgid,
        pid: pid_tgid as u32,
        gfp_flags: gfp,
        remaining_pages: pages,
        order: order as u8,
        migratetype: migratetype as u8,
        flags: 0,
        _pad: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    match OUTSTANDING.insert(pfn, record, BPF_NOEXIST) {
        Ok(()) => {}
        Err(EEXIST) => {
            // A record still present for this pfn: its free was not seen (BPF recursion
            // protection skips some IRQ-time frees), or the head page of a split allocation was
            // freed and reused while its tail pages are still out.
            replace_existing(pfn, cfg.page_size);
            if OUTSTANDING.insert(pfn, record, BPF_ANY).is_err() {
                count(Counter::OutstandingFull);
                return Ok(());
            }
        }
        Err(_) => {
            count(Counter::OutstandingFull);
            return Ok(());
        }
    }
    count(Counter::AllocsTracked);
    // SAFETY: valid pointer into the STACK_AGG value for `stack_id`.
    unsafe {
        atomic_add(&raw mut (*agg).outstanding_bytes, bytes);
        atomic_add(&raw mut (*agg).outstanding_count, 1);
    }
    Ok(())
}

/// Moves a split allocation whose tail pages are still out aside (detached key), or drops a
/// stale record and takes its bytes off its stack.
#[inline(always)]
fn replace_existing(pfn: u64, page_size: u64) {
    let Some(old) = OUTSTANDING.get_ptr_mut(pfn) else {
        return;
    };
    // SAFETY: valid pointer to the map value for `pfn`; copied out before it is overwritten.
    let old = unsafe { *old };
    let tails_out = old.flags & record_flags::HEAD_FREED != 0 && old.remaining_pages > 0;
    if tails_out
        && OUTSTANDING
            .insert(pfn | DETACHED_KEY_BIT, old, BPF_ANY)
            .is_ok()
    {
        count(Counter::Detached);
        detached_live_add(1);
    } else {
        count(Counter::StaleReplaced);
        agg_release(old.stack_id, old.remaining_pages as u64 * page_size, true);
    }
}
