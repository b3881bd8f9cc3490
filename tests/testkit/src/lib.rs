//! Harness for the privileged memtrace scenario tests (`tests/tests/*.rs`).
//!
//! The scenarios run the real `memtrace` binary (env `MEMTRACE_BIN`, default
//! `<workspace>/target/release/memtrace`) against real kernel workloads and check its reports
//! against independently measured truth. Everything needed by more than one scenario lives here:
//!
//! - [`require_bpf`]: whether the privileged tests can run here (skip loudly, or fail when
//!   `MEMTRACE_REQUIRE_BPF=1`).
//! - [`Tracer`] / [`run_memtrace`]: spawning memtrace, waiting for its ready line, stopping it
//!   with a signal, collecting stdout / stderr / report files; a drop guard kills what is left.
//! - [`Report`] and the stack matchers ([`find_stacks`], [`sum_bytes`], ...): the JSON report.
//! - [`assert_no_memtrace_programs_loaded`]: no `mm_page_alloc` / `mm_page_free` program of ours
//!   stays loaded after a test.
//! - [`ChildWorkload`]: the `memtrace-workload` child process (holds in its own process,
//!   cgroup or network namespace) and its protocol.
//! - Workloads: [`tcp_hold`] (pages held in a loopback TCP receive queue) and [`churn`]
//!   (anonymous memory faulted in and unmapped again); for the kinds and classes
//!   [`unix_dgram_hold`] (skb slab objects), [`percpu_array_maps`] (percpu),
//!   [`vmalloc_array_map`] (vmalloc), [`shmem_hold`], [`file_hold`], [`anon_hold`].
//! - [`Prometheus`]: a real Prometheus server scraping given targets (`memtrace serve`), queried
//!   through its HTTP API; [`http_get`] for memtrace's own endpoints.
//! - The kernel's own accounting to compare with: [`SlabInfo`] (`/proc/slabinfo`),
//!   [`vmalloc_areas`] (`/proc/vmallocinfo`), [`meminfo`], [`possible_cpus`].

mod bpf_maps;
mod child;
mod env;
mod holds;
mod process;
mod procfs;
mod programs;
mod prometheus;
mod report;
mod workload;

pub use bpf_maps::{
    percpu_array_maps, vmalloc_array_map, BpfMap, PercpuMaps, VmallocMap, BPF_MAP_TYPE_ARRAY,
    BPF_MAP_TYPE_PERCPU_ARRAY, MAX_PERCPU_VALUE,
};
pub use child::{child_value, child_values, ChildWorkload, CHILD_MARK};
pub use env::{bpf_unavailable_reason, memtrace_bin, require_bpf, workspace_root};
pub use holds::{
    anon_hold, file_hold, shmem_hold, unix_dgram_hold, unix_page_hold, AnonHold, FileHold,
    ShmemHold, UnixDgramHold, UnixPageHold, UNIX_PAGE_WRITE,
};
pub use process::{
    run_memtrace, run_memtrace_env, run_memtrace_unprivileged, Finished, Serve, Tracer,
    READY_PREFIX, SERVING_PREFIX,
};
pub use procfs::{
    memcg_kmem_accounting, meminfo, meminfo_field, parse_cpu_list, parse_meminfo,
    parse_vmallocinfo, percpu_bytes_alloc, possible_cpus, vmalloc_areas, SlabCache, SlabGrowth,
    SlabInfo, VmallocArea,
};
pub use programs::{
    assert_no_memtrace_programs_loaded, check_no_memtrace_programs_loaded,
    is_memtrace_program_name, loaded_memtrace_programs, LoadedProgram, PROGRAM_NAMES,
};
pub use prometheus::{
    http_get, prometheus_bin, require_prometheus, url_encode, HttpReply, Prometheus,
    PrometheusConfig, QuerySample, TargetHealth, PROMETHEUS_ENV,
};
pub use report::{
    backed_kind, find_kind_stacks, find_stacks, find_stacks_with_all, folded_bytes,
    is_tracer_symbol, owner_bytes_upper_bound, parse_folded, stack_has_function, stacks_where,
    sum_allocated_bytes, sum_allocated_count, sum_allocations, sum_bytes, sum_owned_by,
    symbol_matches, Caller, CgroupOwner, ClassSummary, Frame, KindStatus, Owner, OwnerSummary,
    ProcessOwner, ProgramStats, Report, Stack, Totals, CLASSES, KERNEL_CLASSES, KINDS,
    OBJ_COUNTERS, REQUIRED_COUNTERS,
};
pub use workload::{
    churn, drain_lru_batches, flush_deferred_skb_frees, tcp_hold, wait_for_page_tables, ChurnStats,
    TcpHold,
};

/// One mebibyte.
pub const MIB: u64 = 1 << 20;

/// Writes `msg` and a newline straight to the process's stderr, so it shows up in the CI log
/// even for a passing test (the test harness captures `eprintln!` output of passing tests).
/// For the figures a scenario measured; chatter goes through `eprintln!`.
pub fn log(msg: &str) {
    use std::io::Write as _;
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{msg}");
}

/// `bytes` as MiB with two decimals, for log lines.
pub fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / MIB as f64)
}

/// Runs a privileged scenario: skips it loudly where BPF cannot be used (fails instead with
/// `MEMTRACE_REQUIRE_BPF=1`), runs it, checks that no program of memtrace's stayed loaded, and
/// panics with the whole error chain if it failed.
pub fn run_scenario(run: impl FnOnce() -> anyhow::Result<()>) {
    if !require_bpf() {
        return;
    }
    let result = run();
    assert_no_memtrace_programs_loaded();
    if let Err(e) = result {
        panic!("{e:#}");
    }
}
