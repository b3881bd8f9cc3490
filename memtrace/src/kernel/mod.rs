//! Facts about the running kernel, read at run time: tracefs (where it is, event record
//! layouts), BTF (structure offsets, tracepoint prototypes), and memory-management figures.
//! Leaf modules: nothing here depends on the rest of the crate.

pub mod btf;
pub mod mm;
pub mod tracefs;
