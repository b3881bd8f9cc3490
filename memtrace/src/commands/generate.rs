//! Man pages and shell completions from the clap definitions (`memtrace generate`, run by
//! `cargo xtask man`).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

use super::Cli;

/// `memtrace generate` (hidden).
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Directory for `man/*.1` and `completions/*`.
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
}

/// Runs the hidden `memtrace generate`: prints the files written.
pub fn run(args: &GenerateArgs) -> anyhow::Result<()> {
    for f in generate(&args.out_dir)? {
        println!("{}", f.display());
    }
    Ok(())
}

/// Writes `man/memtrace.1`, one page per subcommand (`memtrace-trace.1`, ...) and
/// `completions/` for bash, zsh, fish, elvish and PowerShell under `out_dir`. Returns the
/// files written.
pub fn generate(out_dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let man_dir = out_dir.join("man");
    let comp_dir = out_dir.join("completions");
    for d in [&man_dir, &comp_dir] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut written = Vec::new();
    let cmd = Cli::command();
    let mut pages = vec![(cmd.get_name().to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{}-{}", cmd.get_name(), sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    for (name, page) in pages {
        let mut buf = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut buf)
            .with_context(|| format!("rendering the man page of {name}"))?;
        let path = man_dir.join(format!("{name}.1"));
        crate::fsutil::write_atomic(&path, &buf)?;
        written.push(path);
    }
    for shell in [
        Shell::Bash,
        Shell::Zsh,
        Shell::Fish,
        Shell::Elvish,
        Shell::PowerShell,
    ] {
        let mut cmd = Cli::command();
        let path = clap_complete::generate_to(shell, &mut cmd, "memtrace", &comp_dir)
            .with_context(|| format!("writing {shell} completions into {}", comp_dir.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_completions() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate(dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "memtrace.1",
            "memtrace-trace.1",
            "memtrace-report.1",
            "memtrace.bash",
            "_memtrace",
            "memtrace.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("generate")), "{names:?}");
        let trace = fs::read_to_string(dir.path().join("man/memtrace-trace.1")).unwrap();
        assert!(
            trace.contains("output\\-dir"),
            "the trace page lists --output-dir"
        );
        assert!(trace.contains("Examples"), "with examples");
        let top = fs::read_to_string(dir.path().join("man/memtrace.1")).unwrap();
        assert!(
            top.contains("Exit codes"),
            "the main page lists the exit codes"
        );
        let bash = fs::read_to_string(dir.path().join("completions/memtrace.bash")).unwrap();
        assert!(bash.contains("--flame-by") && bash.contains("--output-dir"));
    }
}
