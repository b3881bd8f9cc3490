//! memtrace's eBPF programs.
//!
//! Data path: `probes::page_alloc` records every traced page allocation in `OUTSTANDING`
//! (keyed by head pfn) with its kernel stack and adds it to that stack's aggregate;
//! `probes::page_free` finds the allocation a free releases (by head pfn, or by searching the
//! heads of higher-order allocations that cover the pfn) and takes it out again. User space reads
//! the maps once the programs are detached.
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
