//! vmap areas: `vmalloc:alloc_vmap_area` / `vmalloc:free_vmap_area_noflush` (the area is
//! released logically at `free_vmap_area_noflush`; its lazy purge comes later).

use core::ffi::c_void;

use aya_ebpf::programs::TracePointContext;
use memtrace_common::{Counter, Kind};

use super::{objects, KEEP_EVENT};
use crate::maps::{config, count};

#[unsafe(no_mangle)]
#[unsafe(link_section = "tracepoint/vmalloc/alloc_vmap_area")]
pub fn alloc_vmap_area(ctx: *mut c_void) -> u32 {
    let ctx = TracePointContext::new(ctx);
    if objects::alloc(&ctx, &config().vmalloc_alloc, Kind::Vmalloc).is_err() {
        count(Counter::ReadErrors);
    }
    KEEP_EVENT
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "tracepoint/vmalloc/free_vmap_area_noflush")]
pub fn free_vmap_area_noflush(ctx: *mut c_void) -> u32 {
    let ctx = TracePointContext::new(ctx);
    if objects::free(&ctx, &config().vmalloc_free, Kind::Vmalloc).is_err() {
        count(Counter::ReadErrors);
    }
    KEEP_EVENT
}
