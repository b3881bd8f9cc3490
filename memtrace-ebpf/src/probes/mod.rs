//! One probe per file. Classic tracepoint programs return 1: returning 0 would drop the event
//! for `perf record` and every other perf consumer of the same tracepoint on the node.

mod objects;
pub mod page_alloc;
pub mod page_free;
pub mod percpu;
pub mod slab;
pub mod vmalloc;

/// Keep the event for other perf consumers of this tracepoint.
pub const KEEP_EVENT: u32 = 1;
