//! Who an allocation belongs to: cgroup paths, Kubernetes pods and containers, processes.
//!
//! `cgroup` reads the hierarchies and recognises container paths, `filters` turns `--pid`,
//! `--comm`, `--cgroup` and `--pod` into the in-kernel filters, and `annotate` fills names into
//! a built report.

pub mod annotate;
pub mod cgroup;
pub mod filters;
