//! `memtrace report`: re-renders a saved session (the JSON of `trace --save`) without
//! privileges or a kernel.

use std::io::Write as _;

use anyhow::Context as _;

use crate::{
    cli::ReportArgs,
    output::{self, Formats, Rendered},
    saved,
};

/// Runs `memtrace report`.
pub fn run_report(args: &ReportArgs) -> anyhow::Result<()> {
    let mut report = saved::load(&args.session)?;
    if let Some(classes) = &args.class {
        let recorded = report
            .class_filter
            .as_ref()
            .map(|cs| cs.iter().map(|c| c.name()).collect::<Vec<_>>().join(","));
        let missing = saved::narrow(&mut report, classes);
        if let (false, Some(recorded)) = (missing.is_empty(), recorded) {
            eprintln!(
                "memtrace: warning: the saved session was recorded with --class {recorded}: it has no {} stacks",
                missing.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
            );
        }
    }
    let rendered = Rendered::new(
        &report,
        &args.output,
        Formats::of(&args.output, Formats::default()),
    )?;
    output::write_named(&args.output, &rendered)?;
    let mut out = std::io::stdout().lock();
    out.write_all(rendered.text.as_bytes())
        .context("writing the report to stdout")?;
    out.flush().context("writing the report to stdout")
}
