//! Per-CPU allocations: `percpu:percpu_alloc_percpu` / `percpu_free_percpu`.

use memtrace_common::Kind;

use super::objects;
use crate::maps::config;

tracepoint_program!(
    percpu_alloc_percpu,
    "tracepoint/percpu/percpu_alloc_percpu",
    |ctx| objects::alloc(ctx, &config().percpu_alloc, Kind::Percpu)
);

tracepoint_program!(
    percpu_free_percpu,
    "tracepoint/percpu/percpu_free_percpu",
    |ctx| objects::free(ctx, &config().percpu_free, Kind::Percpu)
);
