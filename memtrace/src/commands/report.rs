//! `memtrace report`: re-renders a saved session (the JSON of `trace --save`) without
//! privileges or a kernel.

use std::path::PathBuf;

use clap::Args;

use super::{parse_classes, OutputArgs};
use crate::{model::Class, progress::Progress, schema, session};

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

/// Runs `memtrace report`.
pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let mut report = schema::load(&args.session)?;
    if let Some(classes) = &args.class {
        let recorded = report
            .class_filter
            .as_ref()
            .map(|cs| cs.iter().map(|c| c.name()).collect::<Vec<_>>().join(","));
        let missing = crate::model::narrow(&mut report, classes);
        if let (false, Some(recorded)) = (missing.is_empty(), recorded) {
            eprintln!(
                "memtrace: warning: the saved session was recorded with --class {recorded}: it has no {} stacks",
                missing.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
            );
        }
    }
    session::publish(&report, &args.output.options(), None, &Progress::silent())
}
