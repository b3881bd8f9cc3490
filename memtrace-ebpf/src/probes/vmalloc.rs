//! vmap areas: `vmalloc:alloc_vmap_area` / `vmalloc:free_vmap_area_noflush` (the area is
//! released logically at `free_vmap_area_noflush`; its lazy purge comes later).

use memtrace_common::Kind;

use super::objects;
use crate::maps::config;

tracepoint_program!(
    alloc_vmap_area,
    "tracepoint/vmalloc/alloc_vmap_area",
    |ctx| objects::alloc(ctx, &config().vmalloc_alloc, Kind::Vmalloc)
);

tracepoint_program!(
    free_vmap_area_noflush,
    "tracepoint/vmalloc/free_vmap_area_noflush",
    |ctx| objects::free(ctx, &config().vmalloc_free, Kind::Vmalloc)
);
