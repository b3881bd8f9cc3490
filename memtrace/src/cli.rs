//! Command line (clap derive).

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use memtrace_common::Kind;

use crate::model::classify::{parse_class_list, Class};

#[derive(Debug, Parser)]
#[command(
    name = "memtrace",
    version,
    about = "Find kernel memory that is allocated and still held, by kernel stack",
    long_about = "memtrace traces page allocations with eBPF for a time-boxed session, keeps every \
                  allocation that is still outstanding with its kernel stack, and reports who \
                  holds the memory: by stack, by calling function and by process."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace page allocations for a while and report what is still held at the end.
    #[command(after_help = "Examples:\n  memtrace trace --duration 10m --top 20\n  \
                            memtrace trace --duration 60s --min-age 30s --json out.json --folded out.folded")]
    Trace(TraceArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// How long to trace (e.g. 30s, 10m, 1h). Ctrl-C or SIGTERM ends early and still reports.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Stacks and calling functions shown in the text report.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub top: u64,

    /// Only allocations at least this old at the end of the session count as outstanding.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub min_age: Duration,

    /// Write the report as JSON to this file (schema in the README).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write folded stacks (`outer;...;inner bytes`) for flamegraph.pl / inferno.
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,

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

    /// Print a compact report every interval (and keep it in the JSON as `snapshots`); stacks
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

impl SortBy {
    pub fn name(self) -> &'static str {
        match self {
            SortBy::Bytes => "bytes",
            SortBy::Growth => "growth",
        }
    }
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

fn parse_classes(s: &str) -> Result<Vec<Class>, String> {
    parse_class_list(s)
}

/// Parses `30s`, `10m`, `1h30m`, `500ms`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 10m, 1h30m, 500ms)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::classify::KERNEL_CLASSES;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("nonsense").is_err());
    }

    #[test]
    fn defaults_and_flags() {
        let cli = Cli::try_parse_from(["memtrace", "trace"]).unwrap();
        let Command::Trace(t) = cli.command;
        assert_eq!(t.duration, Duration::from_secs(30));
        assert_eq!(t.top, 10);
        assert_eq!(t.max_allocations, DEFAULT_MAX_ALLOCATIONS);
        assert_eq!(t.max_objects, DEFAULT_MAX_OBJECTS);
        assert_eq!(t.sample, 1);
        assert_eq!(t.movable_stack_every, 64);
        assert!(!t.classic_tracepoints);
        // Default grace: 20 % of the duration (30 s → 6 s), at most a minute.
        assert_eq!(t.grace(), Duration::from_secs(6));
        assert_eq!(t.sort, SortBy::Bytes);
        assert!(t.pid.is_empty() && t.interval.is_none());
        for (args, grace) in [
            (&["--duration", "10m"][..], 60),
            (&["--duration", "10s"][..], 2),
            (&["--duration", "10m", "--grace", "0"][..], 0),
            (&["--duration", "10s", "--grace", "1m"][..], 10),
        ] {
            let mut argv = vec!["memtrace", "trace"];
            argv.extend_from_slice(args);
            let Command::Trace(t) = Cli::try_parse_from(argv).unwrap().command;
            assert_eq!(t.grace(), Duration::from_secs(grace), "{args:?}");
        }
        // The default session is kernel memory: movable pages are skipped in the kernel.
        assert_eq!(t.classes(), KERNEL_CLASSES.to_vec());
        assert!(t.skip_movable());
        for (classes, skip) in [("all", false), ("network,shmem", false), ("kernel", true)] {
            let cli = Cli::try_parse_from(["memtrace", "trace", "--class", classes]).unwrap();
            let Command::Trace(t) = cli.command;
            assert_eq!(t.skip_movable(), skip, "{classes}");
        }
        assert!(Cli::try_parse_from(["memtrace", "trace", "--sample", "0"]).is_err());
        let cli = Cli::try_parse_from([
            "memtrace",
            "trace",
            "--duration",
            "2m",
            "--top",
            "3",
            "--min-age",
            "5s",
            "--json",
            "a.json",
            "--folded",
            "a.folded",
            "--max-stacks",
            "100",
        ])
        .unwrap();
        let Command::Trace(t) = cli.command;
        assert_eq!(t.duration, Duration::from_secs(120));
        assert_eq!(t.min_age, Duration::from_secs(5));
        assert_eq!(t.max_stacks, 100);
        assert!(Cli::try_parse_from(["memtrace", "trace", "--duration", "x"]).is_err());
        // Owner filters, grace, interval, sort.
        let cli = Cli::try_parse_from([
            "memtrace",
            "trace",
            "--pid",
            "1,2",
            "--pid",
            "3",
            "--comm",
            "nginx",
            "--cgroup",
            "/a",
            "--cgroup",
            "b/c",
            "--pod",
            "1234",
            "--interval",
            "10s",
            "--sort",
            "growth",
        ])
        .unwrap();
        let Command::Trace(t) = cli.command;
        assert_eq!(t.pid, vec![1, 2, 3]);
        assert_eq!(t.comm, vec!["nginx".to_string()]);
        assert_eq!(t.cgroup, vec!["/a".to_string(), "b/c".to_string()]);
        assert_eq!(t.pod, vec!["1234".to_string()]);
        assert_eq!(t.interval, Some(Duration::from_secs(10)));
        assert_eq!(t.sort, SortBy::Growth);
        assert!(Cli::try_parse_from(["memtrace", "trace", "--sort", "age"]).is_err());
        assert!(Cli::try_parse_from(["memtrace", "trace", "--top", "0"]).is_err());
    }

    #[test]
    fn kinds() {
        assert_eq!(parse_kinds("page,slab"), Ok(vec![Kind::Page, Kind::Slab]));
        assert_eq!(
            parse_kinds("vmalloc, page,page"),
            Ok(vec![Kind::Page, Kind::Vmalloc])
        );
        assert_eq!(parse_kinds("all"), Ok(Kind::ALL.to_vec()));
        assert!(parse_kinds("pages").unwrap_err().contains("valid: page"));
        assert!(parse_kinds("").is_err());
        let cli = Cli::try_parse_from(["memtrace", "trace"]).unwrap();
        let Command::Trace(t) = cli.command;
        assert_eq!(t.kind, vec![Kind::Page, Kind::Slab]);
        assert_eq!(t.class, None);
        let cli = Cli::try_parse_from(["memtrace", "trace", "--kind", "all", "--class", "kernel"])
            .unwrap();
        let Command::Trace(t) = cli.command;
        assert_eq!(t.kind.len(), 4);
        let classes = t.class.unwrap();
        assert!(!classes.contains(&Class::UserAnon) && !classes.contains(&Class::PageCache));
        assert!(classes.contains(&Class::Network));
    }
}
