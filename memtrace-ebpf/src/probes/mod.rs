//! One probe per file. Classic tracepoint programs return 1: returning 0 would drop the event
//! for `perf record` and every other perf consumer of the same tracepoint on the node. Every
//! tracepoint program is declared with [`tracepoint_program!`], which enforces that.

/// Keep the event for other perf consumers of this tracepoint.
pub const KEEP_EVENT: u32 = 1;

/// Declares a classic tracepoint program `$name` in section `tracepoint/$category/$event` that
/// runs `$handler(&TracePointContext) -> Result<(), i32>`, counts a failed field read, and
/// always returns [`KEEP_EVENT`].
macro_rules! tracepoint_program {
    ($name:ident, $section:literal, $handler:expr) => {
        #[unsafe(no_mangle)]
        #[unsafe(link_section = $section)]
        pub fn $name(ctx: *mut core::ffi::c_void) -> u32 {
            let ctx = aya_ebpf::programs::TracePointContext::new(ctx);
            let handler: fn(&aya_ebpf::programs::TracePointContext) -> Result<(), i32> = $handler;
            if handler(&ctx).is_err() {
                crate::maps::count(memtrace_common::Counter::ReadErrors);
            }
            $crate::probes::KEEP_EVENT
        }
    };
}

pub mod calib;
pub mod floor;
mod objects;
pub mod owner;
pub mod page_alloc;
pub mod page_free;
mod page_table;
pub mod percpu;
pub mod slab;
pub mod vmalloc;
