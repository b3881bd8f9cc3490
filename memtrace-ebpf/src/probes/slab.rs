//! Slab objects: `kmem:kmalloc`, `kmem:kmem_cache_alloc` (their `_node` twins on kernels before
//! 6.1 use the same programs), `kmem:kfree`, `kmem:kmem_cache_free`, and an fentry program on
//! `kmem_cache_free_bulk`, which has no tracepoint.

use aya_ebpf::{
    helpers::{bpf_get_func_arg, bpf_probe_read_kernel},
    macros::fentry,
    programs::FEntryContext,
    EbpfContext,
};
use memtrace_common::{Counter, Kind};

use super::objects;
use crate::maps::{config, count, count_n};

tracepoint_program!(kmalloc, "tracepoint/kmem/kmalloc", |ctx| objects::alloc(
    ctx,
    &config().kmalloc,
    Kind::Slab,
    objects::Naming::Kmalloc
));

tracepoint_program!(
    kmem_cache_alloc,
    "tracepoint/kmem/kmem_cache_alloc",
    |ctx| objects::alloc(
        ctx,
        &config().kmem_cache_alloc,
        Kind::Slab,
        objects::Naming::Cache
    )
);

tracepoint_program!(kfree, "tracepoint/kmem/kfree", |ctx| objects::free(
    ctx,
    &config().kfree,
    Kind::Slab
));

tracepoint_program!(kmem_cache_free, "tracepoint/kmem/kmem_cache_free", |ctx| {
    objects::free(ctx, &config().kmem_cache_free, Kind::Slab)
});

/// Objects one run walks. Bulk frees come in batches of up to a page of pointers (`kfree_rcu`
/// batches: 508 on 4 KiB pages); the rest are counted as truncated.
const BULK_MAX: usize = 512;

/// `void kmem_cache_free_bulk(struct kmem_cache *s, size_t size, void **p)`: slab objects freed
/// in bulk (maple tree nodes, `kfree_rcu` batches, the network stack's per-CPU skb cache) fire
/// no `kmem_cache_free`/`kfree` event; without this they would stay listed as false leaks.
#[fentry(function = "kmem_cache_free_bulk")]
pub fn kmem_cache_free_bulk(ctx: FEntryContext) -> u32 {
    let size: u64 = ctx.arg(1);
    // `void **p` through bpf_get_func_arg: a direct context read of a pointer-to-pointer
    // argument is rejected by the verifier before 6.x ("arg2 type PTR is not a struct").
    let mut p: u64 = 0;
    // SAFETY: the helper writes one u64 to the valid local `p` and checks the index.
    if unsafe { bpf_get_func_arg(ctx.as_ptr(), 2, &mut p) } != 0 {
        count(Counter::ReadErrors);
        return 0;
    }
    let p = p as *const u64;
    let n = (size as usize).min(BULK_MAX);
    for i in 0..BULK_MAX {
        if i >= n {
            break;
        }
        // SAFETY: bpf_probe_read_kernel checks the address; `p` has `size` entries.
        let Ok(ptr) = (unsafe { bpf_probe_read_kernel(p.wrapping_add(i)) }) else {
            count(Counter::ReadErrors);
            break;
        };
        count(Counter::ObjBulkFrees);
        bulk_free_one(ptr);
    }
    if size as usize > BULK_MAX {
        count_n(Counter::ObjBulkTruncated, size - BULK_MAX as u64);
    }
    0
}

/// One object of a bulk free, as a global BPF function: the verifier checks its body once
/// instead of once per loop iteration (a 512-iteration loop with the body inlined took over a
/// minute to verify under emulation).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn memtrace_bulk_free_one(ptr: u64) -> u32 {
    objects::free_ptr(ptr, Kind::Slab);
    0
}

#[inline(always)]
fn bulk_free_one(ptr: u64) {
    memtrace_bulk_free_one(ptr);
}
