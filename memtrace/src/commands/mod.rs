//! The command line: the only code that knows clap. One file per subcommand turns its
//! arguments into the plain options of the library it drives (`session`, `overview`,
//! `sockets`, ...); this file holds the top-level parser, the dispatch and the exit codes.

mod args;
pub mod exit;
pub mod generate;
pub mod overview;
pub mod report;
pub mod serve;
pub mod sockets;
pub mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use args::{
    parse_classes, parse_duration, parse_kinds, parse_size, OutputArgs, TracingArgs,
    DEFAULT_MAX_OBJECTS,
};
use generate::GenerateArgs;
use overview::OverviewArgs;
use report::ReportArgs;
use serve::ServeArgs;
use sockets::SocketsArgs;
use trace::TraceArgs;

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
    /// Trace without end and serve the latest snapshot over HTTP: Prometheus metrics
    /// (/metrics), a pprof profile for Parca / Pyroscope (/debug/pprof/heap), the report
    /// (/report.json), /healthz.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(Box<ServeArgs>),
    /// Write the man pages and shell completions (used by `cargo xtask man`).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

pub(crate) const TRACE_EXAMPLES: &str = "Examples:
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

const SERVE_EXAMPLES: &str = "Examples:
  # Serve on loopback, a snapshot every minute:
  memtrace serve
  # In a DaemonSet behind a NetworkPolicy, every 30 s:
  memtrace serve --listen 0.0.0.0:9465 --interval 30s
  # Look at it:
  curl -s localhost:9465/metrics | grep memtrace_outstanding_bytes
  go tool pprof -top http://localhost:9465/debug/pprof/heap";

const SOCKETS_EXAMPLES: &str = "Examples:
  memtrace sockets                       # every socket holding at least 1 MiB, largest first
  memtrace sockets --min-bytes 0 --top 0 --json sockets.json";

/// `memtrace overview`.
/// Parses the command line, runs the subcommand, prints an error and maps it to its exit code.
pub fn main() -> ExitCode {
    // Usage errors exit with 2 (clap's convention), --help/--version with 0.
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Trace(args) => trace::run(args),
        Command::Report(args) => report::run(args),
        Command::Overview(args) => overview::run(args),
        Command::Sockets(args) => sockets::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Generate(args) => generate::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("memtrace: error: {err:#}");
            ExitCode::from(exit::code_for(&err))
        }
    }
}

#[cfg(test)]
mod tests;
