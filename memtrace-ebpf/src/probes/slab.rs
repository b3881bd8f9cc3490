//! Slab objects: `kmem:kmalloc`, `kmem:kmem_cache_alloc` (their `_node` twins on kernels before
//! 6.1 use the same programs), `kmem:kfree`, `kmem:kmem_cache_free`.

use core::ffi::c_void;

use aya_ebpf::programs::TracePointContext;
use memtrace_common::{Counter, Kind};

use super::{objects, KEEP_EVENT};
use crate::maps::{config, count};

#[unsafe(no_mangle)]
#[unsafe(link_section = "tracepoint/kmem/kmalloc")]
pub fn kmalloc(ctx: *mut c_void) -> u32 {
    let ctx = TracePointContext::new(ctx);
    if objects::alloc(&ctx, &config().kmalloc, Kind::Slab).is_err() {
        count(Counter::ReadErrors);
    }
    KEEP_EVENT
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "tracepoint/kmem/kmem_cache_alloc")]
pub fn kmem_cache_alloc(ctx: *mut c_void) -> u32 {
    let ctx = TracePointContext::new(ctx);
    if objects::alloc(&ctx, &config().kmem_cache_alloc, Kind::Slab).is_err() {
        count(Counter::ReadErrors);
    }
    KEEP_EVENT
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "tracepoint/kmem/kfree")]
pub fn kfree(ctx: *mut c_void) -> u32 {
    let ctx = TracePointContext::new(ctx);
    if objects::free(&ctx, &config().kfree, Kind::Slab).is_err() {
        count(Counter::ReadErrors);
    }
    KEEP_EVENT
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "tracepoint/kmem/kmem_cache_free")]
pub fn kmem_cache_free(ctx: *mut c_void) -> u32 {
    let ctx = TracePointContext::new(ctx);
    if objects::free(&ctx, &config().kmem_cache_free, Kind::Slab).is_err() {
        count(Counter::ReadErrors);
    }
    KEEP_EVENT
}
