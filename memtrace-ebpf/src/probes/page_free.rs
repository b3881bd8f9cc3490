//! `kmem:mm_page_free`: release the allocation the freed pages belong to.

use aya_ebpf::programs::{BtfTracePointContext, TracePointContext};
use memtrace_common::{record_flags, Config, Counter, PageRecord, DETACHED_KEY_BIT};

use super::page_alloc::page_to_pfn;
use crate::maps::{
    agg_release, atomic_sub_fetch_u32, config, count, detached_live, detached_live_add, pfn_bits,
    pfn_maybe_tracked, CALIB, OUTSTANDING,
};

/// Upper bound for the head search loop (the verifier needs a constant); `Config::max_order`
/// stops it earlier.
const MAX_ORDER_BOUND: u32 = 12;

tracepoint_program!(mm_page_free, "tracepoint/kmem/mm_page_free", handle);

#[inline(always)]
fn handle(ctx: &TracePointContext) -> Result<(), i32> {
    let cfg = config();
    // SAFETY: offsets come from the tracepoint's format file; bpf_probe_read_kernel checks the
    // address and returns an error instead of faulting.
    let pfn: u64 = unsafe { ctx.read_at(cfg.page_free.pfn_offset as usize)? };
    // SAFETY: as above.
    let order: u32 = unsafe { ctx.read_at(cfg.page_free.order_offset as usize)? };
    on_free(cfg, pfn, order);
    Ok(())
}

/// `tp_btf/mm_page_free`: `(struct page *page, unsigned int order)`.
#[unsafe(no_mangle)]
#[unsafe(link_section = "tp_btf/mm_page_free")]
pub fn mm_page_free_btf(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = BtfTracePointContext::new(ctx);
    let cfg = config();
    let page: u64 = ctx.arg(0);
    let order: u32 = ctx.arg(1);
    let Some(calib) = CALIB.get_ptr_mut(0) else {
        return 0;
    };
    let calib = calib as *mut u64;
    match page_to_pfn(cfg, page, calib) {
        Some(pfn) => on_free(cfg, pfn, order),
        // Nothing is recorded before calibration, so there is nothing to match either.
        None => count(Counter::Uncalibrated),
    }
    0
}

#[inline(always)]
fn on_free(cfg: &Config, pfn: u64, order: u32) {
    count(Counter::FreesSeen);
    // Most freed pages were never recorded (allocated before the session, movable pages in a
    // kernel-memory session, sampled out): one bitmap load settles them.
    if !pfn_maybe_tracked(cfg, pfn) {
        count(Counter::UnmatchedFrees);
        return;
    }
    let pages = 1u32 << (order & 31);

    if let Some(rec) = OUTSTANDING.get_ptr_mut(pfn) {
        release(cfg, pfn, rec, pfn, pages);
        return;
    }
    // Not a head we know: the pfn may be part of a higher-order allocation whose pages are
    // freed piece by piece (split pages). Its head is the pfn aligned down to that order.
    if search(cfg, pfn, pages, 0) {
        return;
    }
    if detached_live() != 0 && search(cfg, pfn, pages, DETACHED_KEY_BIT) {
        return;
    }
    count(Counter::UnmatchedFrees);
}

#[inline(always)]
fn search(cfg: &Config, pfn: u64, pages: u32, key_bit: u64) -> bool {
    for n in 1..MAX_ORDER_BOUND {
        if n > cfg.max_order {
            break;
        }
        let head = pfn & !((1u64 << n) - 1);
        if head == pfn {
            continue;
        }
        if let Some(rec) = OUTSTANDING.get_ptr_mut(head | key_bit) {
            // SAFETY: valid pointer to the map value.
            let order = unsafe { (*rec).order } as u32;
            if pfn < head + (1u64 << (order & 31)) {
                release(cfg, head | key_bit, rec, pfn, pages);
                return true;
            }
        }
    }
    false
}

/// Takes `pages` pages starting at `pfn` out of the record stored under `key`.
#[inline(always)]
fn release(cfg: &Config, key: u64, rec: *mut PageRecord, pfn: u64, pages: u32) {
    count(Counter::FreesMatched);
    // SAFETY: `rec` is a valid pointer to the map value under `key`.
    let (remaining, stack_id, order) = unsafe {
        (
            &raw mut (*rec).remaining_pages,
            (*rec).stack_id,
            (*rec).order,
        )
    };
    let old = atomic_sub_fetch_u32(remaining, pages);
    // These pages are no longer covered by this record.
    pfn_bits(cfg, pfn, pages, false);
    if pages < (1u32 << (order & 31)) {
        count(Counter::PartialFrees);
    }
    if old <= pages {
        // Last pages of the allocation: it is gone.
        agg_release(stack_id, old as u64 * cfg.page_size, true);
        let _ = OUTSTANDING.remove(key);
        if key & DETACHED_KEY_BIT != 0 {
            detached_live_add(u64::MAX);
        }
    } else {
        agg_release(stack_id, pages as u64 * cfg.page_size, false);
        if pfn == key & !DETACHED_KEY_BIT {
            // SAFETY: valid pointer to the map value; a plain byte store.
            unsafe { (*rec).flags |= record_flags::HEAD_FREED };
        }
    }
}
