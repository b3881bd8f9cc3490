//! Facts about the running kernel, read at run time: tracefs (where it is, event record
//! layouts), BTF (structure offsets, tracepoint prototypes), and memory-management figures.
//! Leaf modules: nothing here depends on the rest of the crate.

pub mod btf;
pub mod mm;
pub mod tracefs;

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns` (page table times count from a
/// reading of it at start).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass and has no other effect.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
