//! Value parsers and options shared by several subcommands.

use std::{path::PathBuf, time::Duration};

use clap::Args;
use memtrace_common::Kind;

use crate::loader::LoadOptions;
use crate::model::classify::{parse_class_list, Class};
use crate::output::OutputOptions;
use crate::render::FlameBy;
use crate::session::FilterSpec;

/// Output files and the text report, shared by `trace` and `report`.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Stacks and calling functions shown in the text report (0: all).
    #[arg(long, default_value_t = 10)]
    pub top: u64,

    /// Write the report as JSON to this file: the saved session that `memtrace report`
    /// re-renders (schema: docs/json-schema.md).
    #[arg(long, visible_alias = "save", value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write folded stacks (`outer;...;inner bytes`) for flamegraph.pl / inferno.
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,

    /// Write a flame graph (SVG) of the outstanding bytes, coloured by class.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// What the flame graph's widths measure: `outstanding` bytes (still held) or all
    /// `allocated` bytes (freed or not).
    #[arg(long, value_enum, default_value_t = FlameByArg::Outstanding)]
    pub flame_by: FlameByArg,

    /// Write a gzipped pprof profile (inuse_space/inuse_objects, alloc_space/alloc_objects)
    /// for go tool pprof, Pyroscope, Parca.
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,
}

impl OutputArgs {
    /// The options of the output layer.
    pub fn options(&self) -> OutputOptions {
        OutputOptions {
            top: self.top,
            json: self.json.clone(),
            folded: self.folded.clone(),
            svg: self.svg.clone(),
            flame_by: self.flame_by.into(),
            pprof: self.pprof.clone(),
        }
    }
}

/// `--flame-by`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FlameByArg {
    /// Bytes still held at the end of the session.
    #[default]
    Outstanding,
    /// Bytes allocated during the session, freed or not.
    Allocated,
}

impl From<FlameByArg> for FlameBy {
    fn from(f: FlameByArg) -> Self {
        match f {
            FlameByArg::Outstanding => FlameBy::Outstanding,
            FlameByArg::Allocated => FlameBy::Allocated,
        }
    }
}

/// Parses `page,slab`, `all`, ... into a de-duplicated list in canonical order.
pub fn parse_kinds(s: &str) -> Result<Vec<Kind>, String> {
    let mut kinds = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "all" {
            kinds.extend(Kind::ALL);
            continue;
        }
        match Kind::ALL.iter().find(|k| k.name() == part) {
            Some(k) => kinds.push(*k),
            None => {
                return Err(format!(
                    "unknown kind `{part}` (valid: page, slab, percpu, vmalloc, all)"
                ))
            }
        }
    }
    if kinds.is_empty() {
        return Err("no kind given (valid: page, slab, percpu, vmalloc, all)".into());
    }
    kinds.sort();
    kinds.dedup();
    Ok(kinds)
}

pub fn parse_classes(s: &str) -> Result<Vec<Class>, String> {
    parse_class_list(s)
}

/// Parses a size: bytes (`4096`), or with a binary unit (`64K`, `64KiB`, `512M`, `1GiB`, `2T`;
/// `K`/`KB`/`KiB` all mean 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (examples: 4096, 64K, 512MiB, 1GiB)"
            ))
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 4096, 64K, 512MiB, 1GiB)"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(bytes.round() as u64)
}

/// Parses `30s`, `10m`, `1h30m`, `500ms`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 10m, 1h30m, 500ms)"))
}

/// What to trace and how: shared by `trace` and `serve`.
#[derive(Debug, Clone, Args)]
pub struct TracingArgs {
    /// Kinds of kernel memory to trace: any of page, slab, percpu, vmalloc (comma-separated),
    /// or `all`. A kind whose events this kernel lacks is skipped with a warning.
    #[arg(long, default_value = "page,slab", value_parser = parse_kinds, value_name = "KINDS")]
    pub kind: std::vec::Vec<Kind>,

    /// Classes of memory to trace and report (comma-separated): user-anon, page-cache, shmem,
    /// network, slab-backing, vmalloc-backing, percpu-backing, page-tables, kernel-stack,
    /// other-kernel; `all`; or `kernel` = memory no process accounts for (all but user-anon,
    /// page-cache and shmem) [default: kernel]. Unless user-anon, page-cache or shmem is
    /// selected, movable pages (what those are made of) are skipped in the kernel before any
    /// stack is captured, which makes the session much cheaper.
    #[arg(long, value_parser = parse_classes, value_name = "CLASSES")]
    pub class: Option<std::vec::Vec<Class>>,

    /// Record one allocation in N, chosen by a hash of its pfn (pages) or address (objects),
    /// so its free is matched too; the report scales bytes and counts by N and marks them as
    /// estimates.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=(1 << 20)))]
    pub sample: u32,

    /// Slab objects: record one in N at the start, chosen by a hash of the object's address (so
    /// its free is matched too); every slab figure is scaled by N and marked as an estimate.
    /// Whenever the object table nears full the rate doubles (records outside the smaller
    /// sample are dropped and their bytes taken off their stacks), so a growing workload turns
    /// into a coarser estimate instead of missing memory [default: --sample when given, else
    /// 16].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=(1 << 20)))]
    pub slab_sample: Option<u32>,

    /// Record every slab object (same as --slab-sample 1): exact figures while the object
    /// table holds them all, at a higher cost per allocation (see the README).
    #[arg(long, conflicts_with = "slab_sample")]
    pub slab_exact: bool,

    /// Slab allocations: capture a fresh kernel stack once per N allocations from the same call
    /// site and cache on the same kernel stack (a task's own, or an interrupt stack) of a CPU,
    /// and attribute the others to it. 1 = always capture.
    #[arg(long, default_value_t = DEFAULT_SLAB_STACK_EVERY, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=(1 << 20)))]
    pub slab_stack_every: u32,

    /// Movable pages (user-anon, page-cache, shmem; traced only when selected by --class):
    /// capture a fresh kernel stack once per N allocations by the same task with the same gfp
    /// flags on a CPU, and attribute the others to it. Their stacks are a handful of fault and
    /// read/write paths, and unwinding is the most expensive step. 1 = always capture.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=(1 << 20)))]
    pub movable_stack_every: u32,

    /// Attach the page programs to the classic tracepoints even where tp_btf programs work
    /// (they are slower; for comparison and for kernels with a broken BTF).
    #[arg(long)]
    pub classic_tracepoints: bool,

    /// Capacity of the in-kernel table of outstanding slab, percpu and vmalloc allocations,
    /// one entry per object (about 136 bytes of kernel memory each, allocated at start).
    #[arg(long, default_value_t = DEFAULT_MAX_OBJECTS, value_parser = clap::value_parser!(u32).range(1..=(1 << 26)))]
    pub max_objects: u32,

    /// Deprecated, ignored: pages are tracked in a table with one 8-byte entry per page of RAM
    /// (sized from the machine, never full), so nothing needs sizing. Accepted so that
    /// existing command lines keep working.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=(1 << 26)))]
    pub max_allocations: Option<u32>,

    /// Capacity of the in-kernel stack table (rounded up to a power of two).
    #[arg(long, default_value_t = 1 << 14, value_parser = clap::value_parser!(u32).range(1..=(1 << 20)))]
    pub max_stacks: u32,

    /// Only allocations made by these processes (comma-separated tgids, or repeat the flag; at
    /// most 16), in process context. Applied in the kernel.
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    pub pid: Vec<u32>,

    /// Only allocations made by threads with this name (`/proc/PID/task/TID/comm`, at most 15
    /// bytes; comma-separated or repeated, at most 4), in process context. Applied in the
    /// kernel.
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub comm: Vec<String>,

    /// Only allocations made by tasks in this cgroup or below it: a cgroup v2 directory
    /// (absolute, or relative to the cgroup2 mount), or a cgroup v1 memory directory (then:
    /// the processes in it when the session starts). Repeatable, at most 8. Applied in the
    /// kernel.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Vec<String>,

    /// Only allocations made by the Kubernetes pod whose UID starts with this prefix (found
    /// in the cgroup tree). Repeatable.
    #[arg(long, value_name = "UID")]
    pub pod: Vec<String>,
}

/// Default `--max-objects`: the object table takes about 34 MiB of kernel memory on x86_64
/// (the page table takes 8 bytes per page of RAM, the stack table about 16 MiB).
pub const DEFAULT_MAX_OBJECTS: u32 = 1 << 18;

/// Default slab sampling rate at the start of a session (one object in this many).
pub const DEFAULT_SLAB_SAMPLE: u32 = 16;
/// Default `--slab-stack-every`.
pub const DEFAULT_SLAB_STACK_EVERY: u32 = 32;

impl TracingArgs {
    /// The classes the session traces and reports (`--class`, or `kernel`).
    pub fn classes(&self) -> Vec<Class> {
        self.class
            .clone()
            .unwrap_or_else(|| crate::model::classify::KERNEL_CLASSES.to_vec())
    }

    /// Whether movable pages can be left out in the kernel: no selected class is made of them.
    pub fn skip_movable(&self) -> bool {
        !self.classes().iter().any(|c| c.is_movable())
    }

    /// The slab sampling rate the session starts with (`--slab-exact`, `--slab-sample`,
    /// `--sample`, or the default).
    pub fn slab_sample(&self) -> u32 {
        if self.slab_exact {
            1
        } else if let Some(n) = self.slab_sample {
            n
        } else if self.sample > 1 {
            self.sample
        } else {
            DEFAULT_SLAB_SAMPLE
        }
    }

    /// The kernel side of the session.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            max_objects: self.max_objects,
            max_stacks: self.max_stacks,
            kinds: self.kind.clone(),
            skip_movable: self.skip_movable(),
            sample_every: self.sample,
            movable_stack_every: self.movable_stack_every,
            classic_tracepoints: self.classic_tracepoints,
            filters: memtrace_common::Filters::none(),
            slab_sample_every: self.slab_sample(),
            slab_stack_every: self.slab_stack_every,
        }
    }

    /// What to warn about once the session has started (deprecated options).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.max_allocations.is_some() {
            w.push(
                "--max-allocations is deprecated and ignored: the page table has one entry per \
                 page of RAM and is never full"
                    .to_string(),
            );
        }
        w
    }

    /// The owner filters asked for.
    pub fn filters(&self) -> FilterSpec {
        FilterSpec {
            pids: self.pid.clone(),
            comms: self.comm.clone(),
            cgroups: self.cgroup.clone(),
            pods: self.pod.clone(),
        }
    }
}
