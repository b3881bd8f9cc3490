//! The `hooks-only` tracer of the bench (`xtask bench-hooks`, run by the bench as a child
//! process like memtrace and bpftrace): the empty programs of memtrace's eBPF object
//! (`memtrace-ebpf/src/probes/floor.rs`) attached to the events memtrace traces, as many per
//! event as the default session. What it costs is the floor under any BPF tracer of those
//! events: the kernel's dispatch of each event to each program, before a program does anything.

use std::path::Path;

use anyhow::{Context as _, Result};
use aya::{programs::RawTracePoint, EbpfLoader};

/// (program, raw tracepoint): the floor programs, frees first as memtrace attaches them.
const FLOOR: [(&str, &str); 8] = [
    ("fl_page_free", "mm_page_free"),
    ("fl_kfree", "kfree"),
    ("fl_kfree_twin", "kfree"),
    ("fl_cache_free", "kmem_cache_free"),
    ("fl_cache_free2", "kmem_cache_free"),
    ("fl_page_alloc", "mm_page_alloc"),
    ("fl_kmalloc", "kmalloc"),
    ("fl_cache_alloc", "kmem_cache_alloc"),
];

/// Printed on stderr once every program is attached (the bench waits for it).
pub const READY: &str = "xtask: hooks attached";

/// Attaches the floor programs of `object`, says so, waits for SIGINT or SIGTERM, detaches.
pub fn run(object: &Path) -> Result<()> {
    // Signals blocked before anything is attached: they are taken by sigwait below.
    let signals = blocked_stop_signals()?;
    let mut ebpf = EbpfLoader::new()
        .load_file(object)
        .with_context(|| format!("loading {}", object.display()))?;
    let mut links = Vec::new();
    for (name, event) in FLOOR {
        let prog: &mut RawTracePoint = ebpf
            .program_mut(name)
            .with_context(|| format!("{} has no program {name}", object.display()))?
            .try_into()
            .with_context(|| format!("{name} is not a raw tracepoint program"))?;
        prog.load().with_context(|| format!("loading {name}"))?;
        links.push(
            prog.attach(event)
                .with_context(|| format!("attaching {name} to {event}"))?,
        );
    }
    eprintln!("{READY}: {} programs", links.len());
    let mut sig = 0;
    // SAFETY: sigwait reads the valid, initialised set and writes the signal to `sig`.
    let rc = unsafe { libc::sigwait(&signals, &mut sig) };
    anyhow::ensure!(rc == 0, "sigwait failed: {rc}");
    // Dropping `ebpf` detaches and unloads everything.
    drop(ebpf);
    Ok(())
}

/// Blocks SIGINT and SIGTERM in this (single-threaded) process; returns the set.
fn blocked_stop_signals() -> Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    let rc = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    anyhow::ensure!(rc == 0, "blocking SIGINT and SIGTERM failed: {rc}");
    Ok(set)
}
