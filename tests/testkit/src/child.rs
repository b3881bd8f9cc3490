//! The child workload (`tests/src/bin/memtrace-workload.rs`) driven from a scenario: spawned
//! with a mode (`hold BYTES`, `grow ...`, `shmem BYTES`, `file BYTES`, `netns-hold BYTES`), told
//! `go` on stdin, it prints protocol lines `@memtrace-child KEY N` (what it holds) and
//! `@memtrace-child done`; closing stdin makes it release everything and exit.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use anyhow::{bail, ensure, Context as _, Result};

/// Prefix of the child's protocol lines on stdout.
pub const CHILD_MARK: &str = "@memtrace-child";

/// A running child workload; killed (by its pid) on drop if still running.
pub struct ChildWorkload {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl ChildWorkload {
    /// Spawns `bin args...` (a scenario passes `env!("CARGO_BIN_EXE_memtrace-workload")`).
    pub fn spawn(bin: impl AsRef<Path>, args: &[&str]) -> Result<ChildWorkload> {
        let bin = bin.as_ref();
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawning the child workload {}", bin.display()))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("child stdout")?);
        Ok(ChildWorkload {
            child,
            stdin,
            stdout,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Tells the child to start.
    pub fn go(&mut self) -> Result<()> {
        let stdin = self.stdin.as_mut().context("child stdin closed")?;
        writeln!(stdin, "go")
            .and_then(|()| stdin.flush())
            .context("telling the child to go")
    }

    /// Reads the child's protocol lines up to `done`: every `KEY N` line as (KEY, N).
    pub fn wait_done(&mut self) -> Result<Vec<(String, u64)>> {
        let mut values = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if self
                .stdout
                .read_line(&mut line)
                .context("reading the child")?
                == 0
            {
                bail!("the child workload exited early (see its stderr above)");
            }
            let Some(at) = line.find(CHILD_MARK) else {
                continue;
            };
            let l = line[at + CHILD_MARK.len()..].trim();
            if l == "done" {
                return Ok(values);
            }
            if let Some(e) = l.strip_prefix("error ") {
                bail!("child workload: {e}");
            }
            if let Some((key, n)) = l.split_once(' ') {
                let n = n
                    .parse()
                    .with_context(|| format!("child line `{l}`: not KEY N"))?;
                values.push((key.to_string(), n));
            }
        }
    }

    /// [`ChildWorkload::go`] then [`ChildWorkload::wait_done`].
    pub fn go_and_wait(&mut self) -> Result<Vec<(String, u64)>> {
        self.go()?;
        self.wait_done()
    }

    /// Closes stdin (the child releases what it holds and exits) and waits for it.
    pub fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait().context("waiting for the child")?;
        ensure!(status.success(), "child workload failed: {status}");
        Ok(())
    }
}

impl Drop for ChildWorkload {
    fn drop(&mut self) {
        drop(self.stdin.take());
        // Ours, by pid: stop it if it is still running (a failed scenario).
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every value the child reported under `key`, in order.
pub fn child_values(values: &[(String, u64)], key: &str) -> Vec<u64> {
    values
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, n)| *n)
        .collect()
}

/// The first value the child reported under `key`.
pub fn child_value(values: &[(String, u64)], key: &str) -> Result<u64> {
    child_values(values, key)
        .first()
        .copied()
        .with_context(|| format!("the child reported no `{key}` (got {values:?})"))
}
