//! Command line (clap derive).

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use memtrace_common::Kind;

use crate::model::classify::{parse_class_list, Class};
use crate::render::FlameBy;

#[derive(Debug, Parser)]
#[command(
    name = "memtrace",
    version,
    about = "Find kernel memory that is allocated and still held, by kernel stack",
    long_about = "memtrace traces kernel memory allocations (pages, slab objects, per-CPU and vmalloc \
                  areas) with eBPF for a time-boxed session, keeps every allocation that is still \
                  outstanding with its kernel stack, and reports who holds the memory: by stack, by \
                  calling function, by process, cgroup and pod. Reports: text, JSON (a saved session \
                  that `memtrace report` re-renders), folded stacks, a flame graph SVG and pprof.",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Shown under every `--help`.
pub const EXIT_CODES_HELP: &str = "Exit codes:\n  0  the report was written\n  1  failure while \
     running or writing the report\n  2  usage error (bad option or value)\n  3  not privileged \
     enough to load eBPF programs\n  4  environment: tracefs, BTF or the kernel cannot do what is \
     needed\n  5  `memtrace report`: the saved session is unreadable, damaged or of another \
     schema version";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace kernel memory allocations for a while and report what is still held at the end.
    #[command(after_help = TRACE_EXAMPLES)]
    Trace(Box<TraceArgs>),
    /// Re-render a saved session (`trace --save FILE.json`) without privileges: text, folded
    /// stacks, flame graph SVG, pprof.
    #[command(after_help = REPORT_EXAMPLES)]
    Report(ReportArgs),
    /// Where the node's memory is: a breakdown of MemTotal (meminfo, vmstat, slabinfo,
    /// vmallocinfo) down to the buddy-allocator pages no counter explains; per memory cgroup
    /// with --cgroups.
    #[command(after_help = OVERVIEW_EXAMPLES)]
    Overview(OverviewArgs),
    /// Sockets whose queues hold memory, in every network namespace (sock_diag), with their
    /// processes and pods.
    #[command(after_help = SOCKETS_EXAMPLES)]
    Sockets(SocketsArgs),
    /// Write the man pages and shell completions (used by `cargo xtask man`).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

const TRACE_EXAMPLES: &str = "Examples:
  # Ten minutes, the 20 largest stacks, all outputs for later:
  memtrace trace --duration 10m --top 20 --save s.json --svg s.svg --pprof s.pb.gz
  # Only what pod 0f3c... allocates, with a snapshot every minute and growing stacks first:
  memtrace trace --duration 30m --pod 0f3c --interval 1m --sort growth
  # Unattended (sidecar, Job): every output and snapshot into a directory, no progress bar:
  memtrace trace --duration 1h --interval 5m --output-dir /var/lib/memtrace --quiet
  # Network memory only (skb, page frags, page_pool), at least 30 s old:
  memtrace trace --duration 5m --class network --min-age 30s";

const REPORT_EXAMPLES: &str = "Examples:
  memtrace report s.json --top 50
  memtrace report s.json --class network --svg net.svg
  memtrace report s.json --pprof s.pb.gz   # go tool pprof -sample_index=inuse_space s.pb.gz
  memtrace report s.json --flame-by allocated --svg churn.svg";

const OVERVIEW_EXAMPLES: &str = "Examples:
  memtrace overview
  memtrace overview --cgroups --json overview.json
  memtrace overview --unexplained-warn 512MiB --unexplained-warn-percent 3";

const SOCKETS_EXAMPLES: &str = "Examples:
  memtrace sockets                       # every socket holding at least 1 MiB, largest first
  memtrace sockets --min-bytes 0 --top 0 --json sockets.json";

/// `memtrace overview`.
#[derive(Debug, Clone, Args)]
pub struct OverviewArgs {
    /// Also break memory down per memory cgroup (memory.stat, cgroup v2 and v1), largest first,
    /// with Kubernetes pods and containers named.
    #[arg(long)]
    pub cgroups: bool,

    /// Cgroups listed in the table with --cgroups (0: all; the JSON has all).
    #[arg(long, default_value_t = 20)]
    pub top: u64,

    /// Write the overview as JSON to this file (`-` for stdout instead of the table).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Flag the unexplained remainder (buddy pages no counter accounts for) when it is at
    /// least this large (e.g. 1GiB, 512M, bytes)...
    #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "SIZE")]
    pub unexplained_warn: u64,

    /// ...or at least this share of MemTotal, in percent.
    #[arg(long, default_value_t = 5.0, value_name = "PERCENT")]
    pub unexplained_warn_percent: f64,
}

/// `memtrace sockets`.
#[derive(Debug, Clone, Args)]
pub struct SocketsArgs {
    /// Only sockets holding at least this much memory (receive + send + other buffers as the
    /// kernel charges them; e.g. 1MiB, 64K, 0 for all).
    #[arg(long, default_value = "1MiB", value_parser = parse_size, value_name = "SIZE")]
    pub min_bytes: u64,

    /// Sockets listed in the table (0: all; the JSON has all that pass --min-bytes).
    #[arg(long, default_value_t = 20)]
    pub top: u64,

    /// Write the sockets as JSON to this file (`-` for stdout instead of the table).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

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
    #[arg(long, value_enum, default_value_t = FlameBy::Outstanding)]
    pub flame_by: FlameBy,

    /// Write a gzipped pprof profile (inuse_space/inuse_objects, alloc_space/alloc_objects)
    /// for go tool pprof, Pyroscope, Parca.
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,
}

/// `memtrace report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The saved session: a JSON report written by `memtrace trace --save` (or `--json`).
    #[arg(value_name = "SESSION.json")]
    pub session: PathBuf,

    #[command(flatten)]
    pub output: OutputArgs,

    /// Only these classes (as for `trace --class`): stacks, callers, totals and owners are
    /// recomputed over them.
    #[arg(long, value_parser = parse_classes, value_name = "CLASSES")]
    pub class: Option<std::vec::Vec<Class>>,
}

/// `memtrace generate` (hidden).
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Directory for `man/*.1` and `completions/*`.
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::classify::KERNEL_CLASSES;

    fn trace(cli: Cli) -> TraceArgs {
        match cli.command {
            Command::Trace(t) => *t,
            other => panic!("not trace: {other:?}"),
        }
    }

    #[test]
    fn outputs_report_and_generate() {
        let t = trace(
            Cli::try_parse_from([
                "memtrace",
                "trace",
                "--save",
                "s.json",
                "--svg",
                "s.svg",
                "--flame-by",
                "allocated",
                "--pprof",
                "s.pb.gz",
                "--output-dir",
                "/out",
                "-q",
                "--top",
                "0",
            ])
            .unwrap(),
        );
        assert_eq!(t.output.json, Some(PathBuf::from("s.json")));
        assert_eq!(t.output.svg, Some(PathBuf::from("s.svg")));
        assert_eq!(t.output.pprof, Some(PathBuf::from("s.pb.gz")));
        assert_eq!(t.output.flame_by, FlameBy::Allocated);
        assert_eq!(t.output_dir, Some(PathBuf::from("/out")));
        assert!(t.quiet);
        assert_eq!(t.output.top, 0);
        let cli = Cli::try_parse_from([
            "memtrace", "report", "s.json", "--top", "3", "--class", "network", "--folded", "f",
        ])
        .unwrap();
        let Command::Report(r) = cli.command else {
            panic!("not report")
        };
        assert_eq!(r.session, PathBuf::from("s.json"));
        assert_eq!(r.output.top, 3);
        assert_eq!(r.class, Some(vec![Class::Network]));
        assert_eq!(r.output.folded, Some(PathBuf::from("f")));
        // report needs its file; it has no tracing options.
        assert!(Cli::try_parse_from(["memtrace", "report"]).is_err());
        assert!(Cli::try_parse_from(["memtrace", "report", "s.json", "--duration", "1s"]).is_err());
        assert!(Cli::try_parse_from(["memtrace", "trace", "--flame-by", "x"]).is_err());
        // generate is hidden from --help.
        let mut help = Vec::new();
        <Cli as clap::CommandFactory>::command()
            .write_long_help(&mut help)
            .unwrap();
        let help = String::from_utf8(help).unwrap();
        assert!(
            help.contains("report") && !help.contains("generate"),
            "{help}"
        );
        assert!(help.contains("Exit codes"));
    }

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
        let t = trace(cli);
        assert_eq!(t.duration, Duration::from_secs(30));
        assert_eq!(t.output.top, 10);
        assert!(!t.quiet && t.output_dir.is_none());
        assert_eq!(t.output.flame_by, FlameBy::Outstanding);
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
            let t = trace(Cli::try_parse_from(argv).unwrap());
            assert_eq!(t.grace(), Duration::from_secs(grace), "{args:?}");
        }
        // The default session is kernel memory: movable pages are skipped in the kernel.
        assert_eq!(t.classes(), KERNEL_CLASSES.to_vec());
        assert!(t.skip_movable());
        for (classes, skip) in [("all", false), ("network,shmem", false), ("kernel", true)] {
            let cli = Cli::try_parse_from(["memtrace", "trace", "--class", classes]).unwrap();
            let t = trace(cli);
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
        let t = trace(cli);
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
        let t = trace(cli);
        assert_eq!(t.pid, vec![1, 2, 3]);
        assert_eq!(t.comm, vec!["nginx".to_string()]);
        assert_eq!(t.cgroup, vec!["/a".to_string(), "b/c".to_string()]);
        assert_eq!(t.pod, vec!["1234".to_string()]);
        assert_eq!(t.interval, Some(Duration::from_secs(10)));
        assert_eq!(t.sort, SortBy::Growth);
        assert!(Cli::try_parse_from(["memtrace", "trace", "--sort", "age"]).is_err());
    }

    #[test]
    fn sizes_and_views() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
        let cli = Cli::try_parse_from(["memtrace", "overview", "--cgroups"]).unwrap();
        let Command::Overview(o) = cli.command else {
            panic!("not overview")
        };
        assert!(o.cgroups && o.json.is_none());
        assert_eq!(
            (o.unexplained_warn, o.unexplained_warn_percent),
            (1 << 30, 5.0)
        );
        let cli = Cli::try_parse_from(["memtrace", "sockets", "--min-bytes", "0", "--json", "-"])
            .unwrap();
        let Command::Sockets(s) = cli.command else {
            panic!("not sockets")
        };
        assert_eq!(s.min_bytes, 0);
        assert_eq!(s.json, Some(PathBuf::from("-")));
        assert_eq!(s.top, 20);
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
        let t = trace(cli);
        assert_eq!(t.kind, vec![Kind::Page, Kind::Slab]);
        assert_eq!(t.class, None);
        let cli = Cli::try_parse_from(["memtrace", "trace", "--kind", "all", "--class", "kernel"])
            .unwrap();
        let t = trace(cli);
        assert_eq!(t.kind.len(), 4);
        let classes = t.class.unwrap();
        assert!(!classes.contains(&Class::UserAnon) && !classes.contains(&Class::PageCache));
        assert!(classes.contains(&Class::Network));
    }
}
