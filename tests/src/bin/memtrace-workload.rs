//! A workload process for the scenario tests (`tests/tests/attribution.rs`), so that the
//! memory it holds belongs to a process of its own (its own pid, in a cgroup of the test's
//! choosing).
//!
//! `memtrace-workload hold BYTES`: after `go` on stdin, makes a TCP receive-queue hold of that
//! size and prints `@memtrace-child held N`.
//! `memtrace-workload grow BYTES STEPS MS`: after `go`, makes STEPS holds of BYTES each, MS
//! apart, printing `@memtrace-child held N` after each.
//! `memtrace-workload netns-hold BYTES`: after `go`, moves into a new network namespace
//! (`unshare(CLONE_NEWNET)`, `lo` brought up), makes a TCP receive-queue hold there and prints
//! `@memtrace-child queued N` (SIOCINQ of the receiver) and `@memtrace-child held N`.
//! `memtrace-workload shmem BYTES` / `file BYTES`: after `go`, writes BYTES (whole MiB) into a
//! memfd (shmem) / a new file on a disk-backed filesystem (dirty page cache), keeps it and
//! prints `@memtrace-child held N`.
//! Then prints `@memtrace-child done`, keeps everything until stdin closes, drains and exits.
//! Errors are printed as `@memtrace-child error ...` (exit code 1).

use std::{
    io::{BufRead as _, Write as _},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use memtrace_tests::{tcp_hold, CHILD_MARK as MARK};

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
    // Holds of other kinds, dropped (released) at the end.
    let mut kept: Vec<Box<dyn std::any::Any>> = Vec::new();
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
        ["netns-hold", bytes] => {
            enter_new_netns()?;
            let h = tcp_hold(bytes.parse().context("BYTES")?)?;
            writeln!(out, "{MARK} queued {}", h.queued)?;
            writeln!(out, "{MARK} held {}", h.held_bytes())?;
            out.flush()?;
            holds.push(h);
        }
        ["shmem", bytes] => {
            let h = memtrace_tests::shmem_hold(bytes.parse().context("BYTES")?)?;
            writeln!(out, "{MARK} held {}", h.bytes)?;
            out.flush()?;
            kept.push(Box::new(h));
        }
        ["file", bytes] => {
            let h = memtrace_tests::file_hold(bytes.parse().context("BYTES")?)?;
            writeln!(out, "{MARK} held {}", h.bytes)?;
            out.flush()?;
            kept.push(Box::new(h));
        }
        _ => bail!(
            "usage: memtrace-workload hold BYTES | grow BYTES STEPS MS | netns-hold BYTES \
             | shmem BYTES | file BYTES (got {args:?})"
        ),
    }
    writeln!(out, "{MARK} done")?;
    out.flush()?;
    // Hold until the parent closes stdin.
    for _ in lines {}
    drop(kept);
    for h in holds {
        h.drain()?;
    }
    Ok(())
}

/// Moves this process into a new network namespace and brings its loopback interface up
/// (`SIOCGIFFLAGS` / `SIOCSIFFLAGS` with `IFF_UP`, no external tool).
fn enter_new_netns() -> Result<()> {
    // SAFETY: unshare has no memory-safety preconditions; only this process changes.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        bail!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
    }
    // SAFETY: socket() has no memory-safety preconditions.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!(
            "socket for SIOCSIFFLAGS: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: `fd` was just returned by socket() and nothing else owns it.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    // SAFETY: ifreq is plain data (a name and a union of integers and pointers) for which
    // all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes ifru_flags of the live `req`.
    if unsafe { libc::ioctl(raw, libc::SIOCGIFFLAGS as libc::Ioctl, &mut req) } != 0 {
        bail!(
            "ioctl(SIOCGIFFLAGS, lo): {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: SIOCGIFFLAGS filled ifru_flags, the union member read here.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the name and ifru_flags of the live `req`.
    if unsafe { libc::ioctl(raw, libc::SIOCSIFFLAGS as libc::Ioctl, &mut req) } != 0 {
        bail!(
            "ioctl(SIOCSIFFLAGS, lo up): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
