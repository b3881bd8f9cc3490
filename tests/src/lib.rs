//! memtrace's privileged scenario tests (`tests/*.rs`) and their child workload binary
//! (`src/bin/memtrace-workload.rs`). Everything they share — workloads, the kernel's own
//! figures, the memtrace process handle, the independent report reader, the scenario runner —
//! is the `memtrace-testkit` crate (`tests/testkit/`), which the benchmarks use too.

pub use memtrace_testkit::*;
