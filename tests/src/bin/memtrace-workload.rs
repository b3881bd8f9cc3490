//! A workload process for the scenario tests (`tests/tests/attribution.rs`), so that the
//! memory it holds belongs to a process of its own (its own pid, in a cgroup of the test's
//! choosing).
//!
//! `memtrace-workload hold BYTES`: after `go` on stdin, makes a TCP receive-queue hold of that
//! size and prints `@memtrace-child held N`.
//! `memtrace-workload grow BYTES STEPS MS`: after `go`, makes STEPS holds of BYTES each, MS
//! apart, printing `@memtrace-child held N` after each.
//! Then prints `@memtrace-child done`, keeps everything until stdin closes, drains and exits.
//! Errors are printed as `@memtrace-child error ...` (exit code 1).

use std::{
    io::{BufRead as _, Write as _},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use memtrace_tests::tcp_hold;

const MARK: &str = "@memtrace-child";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        println!("{MARK} error {e:#}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<()> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let go = lines.next().context("stdin closed before go")??;
    ensure!(go.trim() == "go", "expected go, got {go:?}");
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut holds = Vec::new();
    let mut out = std::io::stdout();
    match words.as_slice() {
        ["hold", bytes] => {
            let h = tcp_hold(bytes.parse().context("BYTES")?)?;
            writeln!(out, "{MARK} held {}", h.held_bytes())?;
            out.flush()?;
            holds.push(h);
        }
        ["grow", bytes, steps, ms] => {
            let bytes: u64 = bytes.parse().context("BYTES")?;
            let steps: u32 = steps.parse().context("STEPS")?;
            let ms: u64 = ms.parse().context("MS")?;
            for _ in 0..steps {
                let started = Instant::now();
                let h = tcp_hold(bytes)?;
                writeln!(out, "{MARK} held {}", h.held_bytes())?;
                out.flush()?;
                holds.push(h);
                std::thread::sleep(Duration::from_millis(ms).saturating_sub(started.elapsed()));
            }
        }
        _ => bail!("usage: memtrace-workload hold BYTES | grow BYTES STEPS MS (got {args:?})"),
    }
    writeln!(out, "{MARK} done")?;
    out.flush()?;
    // Hold until the parent closes stdin.
    for _ in lines {}
    for h in holds {
        h.drain()?;
    }
    Ok(())
}
