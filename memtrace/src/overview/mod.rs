//! `memtrace overview`: where the node's memory is, without tracing anything.
//!
//! The data path, one file per step:
//! - [`meminfo`]: `/proc/meminfo`, `/proc/vmstat`, `/proc/zoneinfo` (free pages on the per-CPU
//!   lists), `/proc/net/sockstat` (world-readable);
//! - [`detail`]: what the counters do not say — largest slab caches and vmalloc callers
//!   (root-only files, optional), kernel stacks vmalloc'ed or not, balloon in MemTotal or not;
//! - [`breakdown`]: the formula — MemTotal in rows that each count pages once, the remainder
//!   (buddy pages no counter explains, SysAK's "allocPage") last;
//! - [`cgroups`]: `memory.stat` per memory cgroup, v2 and v1, with pods and containers named;
//! - [`advice`]: what is large, and which `memtrace` command to run next;
//! - [`render`]: the table and the JSON (`schema` 1).
//!
//! Needs no privileges: as an unprivileged user the root-only detail is replaced by a note.

pub mod advice;
pub mod breakdown;
pub mod cgroups;
pub mod detail;
pub mod meminfo;
pub mod render;

use std::path::Path;

use self::advice::{Thresholds, Warning};
use self::breakdown::{Detail, Row};
use self::cgroups::{CgroupMemory, HierarchyScan};
use self::detail::{SlabCache, VmallocCaller};
use self::meminfo::{Meminfo, Sockstat, Vmstat};

/// Version of the overview JSON; bump on any incompatible change.
pub const OVERVIEW_SCHEMA_VERSION: u32 = 1;

/// Everything `memtrace overview` found; serialized as is for `--json`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Overview {
    pub schema: u32,
    /// Always `"memtrace-overview"` (tells this file from a trace report).
    pub kind: &'static str,
    pub hostname: String,
    pub kernel: String,
    pub taken_at_unix: f64,
    pub page_size: u64,
    pub mem_total_bytes: u64,
    /// The breakdown, the remainder (`unexplained`) last; Σ bytes = mem_total + overlap.
    pub rows: Vec<Row>,
    pub unexplained_bytes: u64,
    pub unexplained_percent: f64,
    /// How much more than MemTotal the rows explain when counters overlap (else 0).
    pub overlap_bytes: u64,
    /// Subsets of the rows (dirty, writeback, AnonPages, …).
    pub details: Vec<Detail>,
    /// Socket buffers (TCP, UDP, IP fragments); inside slab and the remainder. `None` when
    /// `/proc/net/sockstat` could not be read.
    pub sockets: Option<SocketMemory>,
    /// The largest slab caches (empty when `/proc/slabinfo` is not readable: see the note).
    pub slab_top: Vec<SlabCache>,
    /// The largest cache known to be unreclaimable, in `slab_top` or not (`null`: none known).
    pub slab_largest_unreclaimable: Option<SlabCache>,
    pub slab_note: Option<String>,
    /// The largest vmalloc users by caller.
    pub vmalloc_top: Vec<VmallocCaller>,
    pub vmalloc_note: Option<String>,
    /// Kernel stacks are vmalloc'ed (so left out of the vmalloc row), and how that is known.
    pub vmap_stack: bool,
    pub vmap_stack_source: String,
    pub balloon_in_memtotal: Option<bool>,
    pub thresholds: Thresholds,
    pub notes: Vec<String>,
    /// What is large, each with the commands to run next.
    pub warnings: Vec<Warning>,
    /// With `--cgroups`.
    pub cgroups: Option<CgroupSection>,
}

/// Socket buffer memory, from `/proc/net/sockstat` (+ `sockstat6`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SocketMemory {
    pub tcp_bytes: u64,
    pub udp_bytes: u64,
    pub frag_bytes: u64,
    pub total_bytes: u64,
}

impl SocketMemory {
    pub fn from_sockstat(s: &Sockstat, page_size: u64) -> SocketMemory {
        SocketMemory {
            tcp_bytes: s.tcp_pages.saturating_mul(page_size),
            udp_bytes: s.udp_pages.saturating_mul(page_size),
            frag_bytes: s.frag_bytes,
            total_bytes: s.total_bytes(page_size),
        }
    }
}

/// The `--cgroups` part.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CgroupSection {
    pub hierarchies: Vec<HierarchyScan>,
    /// Every memory cgroup (the root excluded), largest usage first; the table shows `--top`.
    pub cgroups: Vec<CgroupEntry>,
    pub notes: Vec<String>,
}

/// One cgroup with what the overview says about it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CgroupEntry {
    #[serde(flatten)]
    pub memory: CgroupMemory,
    /// Usage as a percentage of the limit in force (`null`: no limit).
    pub limit_percent: Option<f64>,
    /// At least [`cgroups::NEAR_LIMIT_PERCENT`] of the limit.
    pub near_limit: bool,
    /// Pod, container or unit in a few words ("" when the path names none).
    pub name: String,
}

impl CgroupEntry {
    pub fn new(memory: CgroupMemory) -> CgroupEntry {
        CgroupEntry {
            limit_percent: memory.limit_percent(),
            near_limit: memory.near_limit(),
            name: memory.workload_name(),
            memory,
        }
    }
}

/// Runs `memtrace overview`.
/// Reads everything and builds the [`Overview`].
/// What to collect and flag.
#[derive(Clone, Debug, PartialEq)]
pub struct OverviewOptions {
    /// Also break memory down per memory cgroup.
    pub cgroups: bool,
    /// Flag the unexplained remainder from this many bytes...
    pub unexplained_warn: u64,
    /// ...or this share of MemTotal, in percent.
    pub unexplained_warn_percent: f64,
}

pub fn collect(args: &OverviewOptions) -> anyhow::Result<Overview> {
    let page_size = crate::kernel::mm::page_size();
    let kernel = crate::sysinfo::kernel_release();
    let mut notes = Vec::new();

    let meminfo = Meminfo::read(Path::new(meminfo::MEMINFO))?;
    let vmstat = match Vmstat::read(Path::new(meminfo::VMSTAT)) {
        Ok(v) => v,
        Err(e) => {
            notes.push(format!(
                "{e:#}: isolated, zsmalloc and memmap pages are counted as 0"
            ));
            Vmstat::default()
        }
    };
    let sockets = match Sockstat::read() {
        Ok(s) => Some(SocketMemory::from_sockstat(&s, page_size)),
        Err(e) => {
            notes.push(format!("{e:#}: socket buffer memory not shown"));
            None
        }
    };
    // Unreadable: the breakdown notes it (the row is 0).
    let pcp_free_bytes = meminfo::read_zoneinfo_pcp()
        .ok()
        .map(|pages| pages.saturating_mul(page_size));
    let (slab, slab_note) = match detail::read_optional(detail::SLABINFO) {
        Ok(text) => {
            match detail::slab_detail(&text, page_size, Path::new(detail::SYS_KERNEL_SLAB)) {
                Ok(slab) => (slab, None),
                Err(e) => (
                    detail::SlabDetail::default(),
                    Some(format!("{}: {e:#}", detail::SLABINFO)),
                ),
            }
        }
        Err(note) => (detail::SlabDetail::default(), Some(note)),
    };
    let (vmallocinfo, vmalloc_note) = match detail::read_optional(detail::VMALLOCINFO) {
        Ok(text) => (Some(detail::parse_vmallocinfo(&text, page_size)), None),
        Err(note) => (None, Some(note)),
    };
    let facts = detail::facts(page_size, &kernel, vmallocinfo.as_ref(), pcp_free_bytes);
    let b = breakdown::breakdown(&meminfo, &vmstat, &facts);
    notes.extend(b.notes.iter().cloned());

    let cgroups = if args.cgroups {
        let mut section_notes = Vec::new();
        let scan = match crate::attribution::cgroup::mounts() {
            Ok(m) => cgroups::scan(&m),
            Err(e) => {
                section_notes.push(format!("{e:#}"));
                cgroups::CgroupScan::default()
            }
        };
        section_notes.extend(scan.notes);
        Some(CgroupSection {
            hierarchies: scan.hierarchies,
            cgroups: scan.cgroups.into_iter().map(CgroupEntry::new).collect(),
            notes: section_notes,
        })
    } else {
        None
    };

    let thresholds = Thresholds::new(args.unexplained_warn, args.unexplained_warn_percent);
    let mut overview = Overview {
        schema: OVERVIEW_SCHEMA_VERSION,
        kind: "memtrace-overview",
        hostname: crate::sysinfo::host_name(),
        kernel,
        taken_at_unix: crate::sysinfo::unix_now(),
        page_size,
        mem_total_bytes: b.mem_total,
        unexplained_bytes: b.unexplained,
        unexplained_percent: b.unexplained_percent(),
        overlap_bytes: b.overlap,
        rows: b.rows,
        details: b.details,
        sockets,
        slab_top: slab.top,
        slab_largest_unreclaimable: slab.largest_unreclaimable,
        slab_note,
        vmalloc_top: vmallocinfo
            .map(|mut v| {
                v.callers.truncate(detail::TOP_DETAIL);
                v.callers
            })
            .unwrap_or_default(),
        vmalloc_note,
        vmap_stack: facts.vmap_stack,
        vmap_stack_source: facts.vmap_stack_source,
        balloon_in_memtotal: facts.balloon_in_memtotal,
        thresholds,
        notes,
        warnings: Vec::new(),
        cgroups,
    };
    overview.warnings = advice::assess(&overview);
    Ok(overview)
}
