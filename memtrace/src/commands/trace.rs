//! `memtrace trace`: the command line of a tracing session.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::{parse_duration, OutputArgs, TracingArgs};
use crate::session::{Session, SessionOptions};

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

    #[command(flatten)]
    pub tracing: TracingArgs,

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

impl TraceArgs {
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
            duration: Some(self.duration),
            min_age: self.min_age,
            grace: self.grace(),
            interval: self.interval,
            sort_growth: self.sort == SortBy::Growth,
            quiet: self.quiet,
            classes: self.tracing.classes(),
            load: self.tracing.load_options(),
            filters: self.tracing.filters(),
            outputs: self.output.options(),
            output_dir: self.output_dir.clone(),
            print_snapshots: true,
            snapshot_window: 0,
            first_snapshot_after: None,
            hostname: None,
            warnings: self.tracing.warnings(),
        }
    }
}

/// Runs `memtrace trace`.
pub fn run(args: &TraceArgs) -> anyhow::Result<()> {
    let mut session = Session::start(args.session_options())?;
    let ended_by = session.run()?;
    session.finish(ended_by)?.publish()
}
