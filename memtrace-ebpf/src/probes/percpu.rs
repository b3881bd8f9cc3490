//! Per-CPU allocations: `percpu:percpu_alloc_percpu` / `percpu_free_percpu`.

use core::ffi::c_void;

use aya_ebpf::programs::TracePointContext;
use memtrace_common::{Counter, Kind};

use super::{objects, KEEP_EVENT};
use crate::maps::{config, count};

#[unsafe(no_mangle)]
#[unsafe(link_section = "tracepoint/percpu/percpu_alloc_percpu")]
pub fn percpu_alloc_percpu(ctx: *mut c_void) -> u32 {
    let ctx = TracePointContext::new(ctx);
    if objects::alloc(&ctx, &config().percpu_alloc, Kind::Percpu).is_err() {
        count(Counter::ReadErrors);
    }
    KEEP_EVENT
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "tracepoint/percpu/percpu_free_percpu")]
pub fn percpu_free_percpu(ctx: *mut c_void) -> u32 {
    let ctx = TracePointContext::new(ctx);
    if objects::free(&ctx, &config().percpu_free, Kind::Percpu).is_err() {
        count(Counter::ReadErrors);
    }
    KEEP_EVENT
}
