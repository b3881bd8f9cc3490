//! The last step of `trace` and the whole of `report`: render a report once into every format
//! asked for, write each file atomically, and print the text.

use std::io::Write as _;

use anyhow::Context as _;

use crate::{
    model::Report,
    output::{self, Formats, OutputDir, OutputOptions, Rendered},
    progress::Progress,
};

/// Renders `report`, writes the files `outputs` names and, with an output directory, its
/// whole set; then prints the text on stdout. Every output is attempted even if one fails (a
/// full disk must not cost the text); the first failure is returned.
pub fn publish(
    report: &Report,
    outputs: &OutputOptions,
    output_dir: Option<&OutputDir>,
    progress: &Progress,
) -> anyhow::Result<()> {
    let extra = if output_dir.is_some() {
        Formats::OUTPUT_DIR
    } else {
        Formats::default()
    };
    let rendered = Rendered::new(report, outputs, Formats::of(outputs, extra))?;
    let mut written = output::write_named(outputs, &rendered);
    if let Some(dir) = output_dir {
        match dir.write_final(&rendered) {
            Ok(files) => {
                if let Some(txt) = files.last() {
                    progress.info(&format!("report written to {}", txt.display()));
                }
            }
            Err(e) => written = written.and(Err(e)),
        }
    }
    let printed = {
        let mut out = std::io::stdout().lock();
        out.write_all(rendered.text.as_bytes())
            .and_then(|()| out.flush())
            .context("writing the report to stdout")
    };
    written.and(printed)
}
