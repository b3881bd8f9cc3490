//! Start-up calibration. These programs are attached only while the session starts, before
//! any tracing program, and only ever act on memtrace's own process; user space then turns
//! what they stored in `CALIB` into the constants the tracing programs use
//! (`memtrace/src/loader/calibrate.rs`):
//!
//! - `calib_page_alloc` (tp_btf `mm_page_alloc`): the `struct page *` and order of memtrace's
//!   own page allocations. With the pfn of a page it faulted in (`/proc/self/pagemap`), user
//!   space learns where `struct page` of pfn 0 lives (the tp_btf page programs' pfn).
//! - `calib_kmalloc` (`kmem:kmalloc`, and `kmem:kmalloc_node` before 6.1): memtrace's own
//!   kmalloc larger than any cache, which is one buddy allocation whose page allocation fired
//!   just before. Its address and that `struct page *` give the `struct page` of any
//!   direct-map address, so a slab program can read an object's `slab_cache`.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, programs::BtfTracePointContext};
use memtrace_common::calib;

use super::page_alloc::page_scalar;
use crate::maps::{config, CALIB};

#[inline(always)]
fn is_self() -> bool {
    (bpf_get_current_pid_tgid() >> 32) as u32 == config().self_tgid
}

/// `tp_btf/mm_page_alloc`: `(struct page *page, unsigned int order, gfp_t, int)`.
#[unsafe(no_mangle)]
#[unsafe(link_section = "tp_btf/mm_page_alloc")]
pub fn calib_page_alloc(ctx: *mut core::ffi::c_void) -> i32 {
    if !is_self() {
        return 0;
    }
    let ctx = BtfTracePointContext::new(ctx);
    let Some(slots) = CALIB.get_ptr_mut(0) else {
        return 0;
    };
    let slots = slots as *mut u64;
    let page: u64 = ctx.arg(0);
    let order: u32 = ctx.arg(1);
    // SAFETY: `slots` points to the CALIB array value (calib::COUNT u64 slots); plain stores.
    // Storing the pointer itself is allowed for CAP_PERFMON programs (memtrace needs it).
    unsafe {
        *slots.add(calib::SELF_PAGE as usize) = page_scalar(page, slots);
        *slots.add(calib::SELF_PAGE_ABS as usize) = page;
        *slots.add(calib::SELF_PAGE_ORDER as usize) = order as u64;
    }
    0
}

tracepoint_program!(calib_kmalloc, "tracepoint/kmem/kmalloc", |ctx| {
    if !is_self() {
        return Ok(());
    }
    let cfg = config();
    // SAFETY: offsets come from the tracepoint's format file; bpf_probe_read_kernel checks the
    // address and returns an error instead of faulting.
    let bytes: u64 = unsafe { ctx.read_at(cfg.kmalloc.bytes_offset as usize)? };
    if bytes <= cfg.slab_names.kmalloc_max_size as u64 {
        return Ok(());
    }
    // SAFETY: as above.
    let ptr: u64 = unsafe { ctx.read_at(cfg.kmalloc.ptr_offset as usize)? };
    let Some(slots) = CALIB.get_ptr_mut(0) else {
        return Ok(());
    };
    let slots = slots as *mut u64;
    // SAFETY: `slots` points to the CALIB array value (calib::COUNT u64 slots).
    unsafe {
        *slots.add(calib::LARGE_PAGE_ABS as usize) = *slots.add(calib::SELF_PAGE_ABS as usize);
        *slots.add(calib::LARGE_PAGE_ORDER as usize) = *slots.add(calib::SELF_PAGE_ORDER as usize);
        *slots.add(calib::LARGE_PTR as usize) = ptr;
        *slots.add(calib::LARGE_BYTES as usize) = bytes;
    }
    Ok(())
});
