//! `memtrace overview`.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{ensure, Context as _};
use clap::Args;

use super::parse_size;
use crate::overview::{self, OverviewOptions};

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

pub fn run(args: &OverviewArgs) -> anyhow::Result<()> {
    ensure!(
        args.unexplained_warn_percent.is_finite() && args.unexplained_warn_percent >= 0.0,
        "--unexplained-warn-percent must be a percentage ≥ 0 (got {})",
        args.unexplained_warn_percent
    );
    let overview = overview::collect(&OverviewOptions {
        cgroups: args.cgroups,
        unexplained_warn: args.unexplained_warn,
        unexplained_warn_percent: args.unexplained_warn_percent,
    })?;
    let to_stdout = args.json.as_deref() == Some(Path::new("-"));
    if let Some(path) = &args.json {
        let mut json = overview::render::to_json(&overview)?;
        json.push('\n');
        if to_stdout {
            write_stdout(&json)?;
            // The table is not printed: say what is wrong where a person sees it.
            let mut err = std::io::stderr().lock();
            for w in &overview.warnings {
                let _ = writeln!(err, "WARNING: {}", w.message);
                for cmd in &w.next {
                    let _ = writeln!(err, "  next: {cmd}");
                }
            }
        } else {
            crate::fsutil::write_atomic(path, json.as_bytes())
                .with_context(|| format!("writing the overview JSON to {}", path.display()))?;
        }
    }
    if !to_stdout {
        let top = usize::try_from(args.top).unwrap_or(usize::MAX);
        write_stdout(&overview::render::render_table(&overview, top))?;
    }
    Ok(())
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}
