//! Command line (clap derive).

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

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

    /// Capacity of the in-kernel table of outstanding allocations (one entry per allocation).
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u32).range(1..=(1 << 26)))]
    pub max_allocations: u32,

    /// Capacity of the in-kernel stack table (rounded up to a power of two).
    #[arg(long, default_value_t = 1 << 14, value_parser = clap::value_parser!(u32).range(1..=(1 << 20)))]
    pub max_stacks: u32,
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
        assert_eq!(t.max_allocations, 1 << 20);
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
        assert!(Cli::try_parse_from(["memtrace", "trace", "--top", "0"]).is_err());
    }
}
