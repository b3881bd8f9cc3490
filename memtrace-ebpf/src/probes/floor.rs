//! Empty programs on the events memtrace traces, for `cargo xtask bench`'s `hooks-only`
//! configuration: what attaching a BPF program to those events costs before it does anything
//! (the kernel's tracepoint dispatch, `bpf_trace_run`, the recursion guard), the floor under
//! every tracer's per-event cost. memtrace itself never loads them. The same events and as
//! many programs per event as the default session (two on each slab free: the twins), as raw
//! tracepoints (the entry of tp_btf and raw tracepoint programs is the same).

macro_rules! floor_program {
    ($name:ident, $section:literal) => {
        #[unsafe(no_mangle)]
        #[unsafe(link_section = $section)]
        pub fn $name(_ctx: *mut core::ffi::c_void) -> i32 {
            0
        }
    };
}

floor_program!(fl_page_alloc, "raw_tp/mm_page_alloc");
floor_program!(fl_page_free, "raw_tp/mm_page_free");
floor_program!(fl_kmalloc, "raw_tp/kmalloc");
floor_program!(fl_cache_alloc, "raw_tp/kmem_cache_alloc");
floor_program!(fl_kfree, "raw_tp/kfree");
floor_program!(fl_kfree_twin, "raw_tp/kfree");
floor_program!(fl_cache_free, "raw_tp/kmem_cache_free");
floor_program!(fl_cache_free2, "raw_tp/kmem_cache_free");
