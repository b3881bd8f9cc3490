//! `memtrace trace`: the command line of a tracing session.

use std::{path::PathBuf, time::Duration};

use clap::Args;
use memtrace_common::Kind;

use super::{parse_classes, parse_duration, parse_kinds, OutputArgs};
use crate::{
    loader::LoadOptions,
    model::Class,
    session::{FilterSpec, Session, SessionOptions},
};

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// How long to trace (e.g. 30s, 10m, 1h). Ctrl-C or SIGTERM ends early and still reports.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Only allocations at least this old at the end of the session count as outstanding.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub min_age: Duration,

    #[command(flatten)]
    pub output: OutputArgs,

    /// Write every output into this directory (created if missing) as
    /// `memtrace-<host>-<start>.{txt,json,svg,folded}`, atomically; with --interval, each
    /// snapshot too (`...-<start>.snap-<NNNN>-at-<seconds>s.*`), and `latest.*` links to the
    /// newest whole set.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    /// No progress display and no informational messages on stderr (warnings and errors
    /// are still shown). Without a terminal, progress is a log line now and then.
    #[arg(long, short)]
    pub quiet: bool,

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

    /// Capacity of the in-kernel table of outstanding page allocations, one entry per
    /// allocation of any order (about 120 bytes of kernel memory each, allocated at start).
    #[arg(long, default_value_t = DEFAULT_MAX_ALLOCATIONS, value_parser = clap::value_parser!(u32).range(1..=(1 << 26)))]
    pub max_allocations: u32,

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

    /// Stop recording new allocations for this last part of the session, but keep matching
    /// frees, so that short-lived allocations made just before the end are not reported as
    /// held [default: 20 % of --duration, at most 1 minute; 0 disables]. Only sessions that
    /// reach their --duration have one.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub grace: Option<Duration>,

    /// Print a compact report every interval (at least 1s; kept in the JSON as `snapshots`); stacks
    /// whose outstanding bytes grow steadily across the snapshots are marked `growing`.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Option<Duration>,

    /// Order of the stacks: `bytes` (outstanding bytes) or `growth` (growing stacks first,
    /// fastest first; needs --interval).
    #[arg(long, value_enum, default_value_t = SortBy::Bytes)]
    pub sort: SortBy,
}

/// `--sort`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    Bytes,
    Growth,
}

/// Default grace period: this share of `--duration`...
pub const DEFAULT_GRACE_SHARE: f64 = 0.2;
/// ...but no more than this.
pub const MAX_DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// Default `--max-allocations` (pages) and `--max-objects`: with the default kinds, the page
/// and object tables, the stack table and the rest fit in 128 MiB of kernel memory (about
/// 60 + 34 + 16 + 3 MiB on x86_64).
pub const DEFAULT_MAX_ALLOCATIONS: u32 = 1 << 19;
pub const DEFAULT_MAX_OBJECTS: u32 = 1 << 18;

/// Default slab sampling rate at the start of a session (one object in this many).
pub const DEFAULT_SLAB_SAMPLE: u32 = 16;
/// Default `--slab-stack-every`.
pub const DEFAULT_SLAB_STACK_EVERY: u32 = 32;

impl TraceArgs {
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

    /// The grace period at the end of the session (`--grace`, or the default).
    pub fn grace(&self) -> Duration {
        let grace = self.grace.unwrap_or_else(|| {
            self.duration
                .mul_f64(DEFAULT_GRACE_SHARE)
                .min(MAX_DEFAULT_GRACE)
        });
        grace.min(self.duration)
    }
}

impl TraceArgs {
    /// The session these arguments ask for.
    pub fn session_options(&self) -> SessionOptions {
        SessionOptions {
            duration: self.duration,
            min_age: self.min_age,
            grace: self.grace(),
            interval: self.interval,
            sort_growth: self.sort == SortBy::Growth,
            quiet: self.quiet,
            classes: self.classes(),
            load: LoadOptions {
                max_allocations: self.max_allocations,
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
            },
            filters: FilterSpec {
                pids: self.pid.clone(),
                comms: self.comm.clone(),
                cgroups: self.cgroup.clone(),
                pods: self.pod.clone(),
            },
            outputs: self.output.options(),
            output_dir: self.output_dir.clone(),
        }
    }
}

/// Runs `memtrace trace`.
pub fn run(args: &TraceArgs) -> anyhow::Result<()> {
    let mut session = Session::start(args.session_options())?;
    let ended_by = session.run()?;
    session.finish(ended_by)?.publish()
}
