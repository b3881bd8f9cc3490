//! memtrace's eBPF programs, one probe per file in `probes/` (maps and shared helpers in
//! `maps.rs`):
//!
//! - `page_alloc` / `page_free` (tp_btf, or classic `kmem:` tracepoints): every page of a traced
//!   page allocation gets an entry (order, stack slot, owner, time) in the page table, an array
//!   indexed by pfn (`page_table`), and the allocation is added to its stack's aggregate; a free
//!   finds the freed pages' entries with one load, clears them and takes the pages off their
//!   stacks (also part of a split allocation);
//! - `slab`, `percpu`, `vmalloc` (classic tracepoints, plus fentry on `kmem_cache_free_bulk`),
//!   with their shared object logic in `objects`, kept in a hash table by address; the slab
//!   cache of a stack is read through its first object's slab;
//! - `owner`: the in-kernel owner filters, the grace period and the stop flag, and the owner
//!   table page allocations are interned in;
//! - `calib`: start-up-only programs that watch memtrace's own allocations so user space can
//!   calibrate `struct page *` → pfn and object → `struct page`.
//!
//! User space reads the maps while the programs run (progress, snapshots, stack rotation) and
//! once they are stopped (the report; the page table through mmap).
#![no_std]
#![no_main]
// Atomic read-modify-write: the bpf target has no `Atomic*::fetch_add` in core, but LLVM lowers
// the intrinsics to BPF atomic instructions (fetch variants need cpu v3, set by xtask).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod maps;
mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: eBPF programs cannot panic at run time (the verifier rejects any path that could
    // reach here); this only satisfies the compiler.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
