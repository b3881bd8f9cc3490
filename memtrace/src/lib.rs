//! memtrace: finds kernel memory that is allocated and still held, by kernel stack.
//!
//! Data path: `loader` (load + attach the eBPF programs from memtrace-ebpf, configured from
//! `tracefs` formats) → kernel maps of `memtrace_common` records → `collector` (reads them) →
//! `model` (symbolized, grouped report) → `render` (text, JSON, folded, SVG, pprof) →
//! `output` (atomic files, `--output-dir`) → `cli`/`session`. `saved` reads a JSON report back
//! for `memtrace report`.

pub mod attribution;
pub mod btf;
pub mod cli;
pub mod collector;
pub mod error;
pub mod generate;
pub mod loader;
pub mod model;
pub mod output;
pub mod overview;
pub mod progress;
pub mod render;
pub mod report;
pub mod saved;
pub mod serve;
pub mod session;
pub mod sockets;
pub mod symbolize;
pub(crate) mod sysinfo;
pub mod tracefs;
