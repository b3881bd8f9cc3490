//! Running external commands: every command is echoed to stderr before it runs.

use std::{ffi::OsStr, process::Command};

use anyhow::{bail, Context as _, Result};

/// Quotes `s` for display in a POSIX shell.
fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./=:,+@%^".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.into_owned()
    } else if s.chars().any(|c| c.is_ascii_control()) {
        let mut out = String::from("$'");
        for c in s.chars() {
            match c {
                '\'' => out.push_str("\\'"),
                '\\' => out.push_str("\\\\"),
                c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command as a shell line: explicitly set variables, program, arguments.
pub fn display(cmd: &Command) -> String {
    let mut parts = Vec::new();
    if let Some(dir) = cmd.get_current_dir() {
        parts.push(format!("cd {} &&", quote(dir.as_os_str())));
    }
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            parts.push(format!("{}={}", key.to_string_lossy(), quote(value)));
        }
    }
    parts.push(quote(cmd.get_program()));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

/// Program and leading non-option arguments, e.g. "cargo +nightly build": names a failure.
pub fn short(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(
        cmd.get_args()
            .take(2)
            .map(|a| a.to_string_lossy().into_owned())
            .take_while(|a| !a.starts_with('-') || a == "-Z"),
    );
    parts.join(" ")
}

pub fn echo(cmd: &Command) {
    eprintln!("[xtask] $ {}", display(cmd));
}

/// Runs `cmd` with inherited stdio; on failure the error names the command and `fix`.
pub fn run(cmd: &mut Command, fix: &str) -> Result<()> {
    echo(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}` ({fix})", short(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status}); {fix}", short(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; on failure the error carries its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    echo(cmd);
    output_quiet(cmd)
}

/// [`output`] without echoing the command (for frequent, uninteresting queries).
pub fn output_quiet(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start `{}`", short(cmd)))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        bail!(
            "`{}` failed ({}): {}",
            short(cmd),
            out.status,
            last.unwrap_or("no output").trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", short(cmd)))
}
