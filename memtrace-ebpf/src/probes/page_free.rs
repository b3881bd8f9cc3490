//! `kmem:mm_page_free`: take the freed pages out of the page table.

use aya_ebpf::programs::{BtfTracePointContext, TracePointContext};
use memtrace_common::{page_table as pt, Config, Counter};

use super::{owner, page_alloc::page_to_pfn, page_table};
use crate::maps::{config, count, CALIB};

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
    // The session has ended: user space is reading the table.
    if owner::stopped() {
        return;
    }
    count(Counter::FreesSeen);
    // The entries of the freed pages (with sampling: of the sampled pages among them). Most
    // freed pages were never recorded (allocated before the session, movable pages in a
    // kernel-memory session, sampled out): one load of their first entry settles them.
    let (first, n) = pt::index_range(pfn, order & 31, cfg.pfn_shift);
    if n == 0
        || n > page_table::MAX_RANGE
        || first + n > cfg.table_indices
        || !page_table::release_range(cfg, first, n, order & 31)
    {
        count(Counter::UnmatchedFrees);
    }
}
