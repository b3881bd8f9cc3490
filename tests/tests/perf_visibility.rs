//! memtrace must not blind other tools: a classic tracepoint BPF program that returns 0 drops
//! the event for every perf consumer of that tracepoint (`perf record`, `perf stat`). A perf
//! counter on `kmem:mm_page_alloc`, opened on this process while memtrace is attached, must
//! still count the page faults this process makes.

use std::{fs, ptr};

use anyhow::{bail, ensure, Context as _, Result};
use memtrace_tests::{log, run_scenario, Tracer, MIB};

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PAGES: usize = 4096;

/// `struct perf_event_attr` up to `config1` (PERF_ATTR_SIZE_VER0 = 64 bytes).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

#[test]
fn perf_still_sees_page_alloc_events() {
    // Both attachments of the page programs: the classic tracepoint programs (whose return
    // value matters) and the default tp_btf ones.
    run_scenario(|| scenario(&["--classic-tracepoints"]).and_then(|()| scenario(&[])));
}

fn tracepoint_id() -> Result<u64> {
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let p = format!("{root}/events/kmem/mm_page_alloc/id");
        if let Ok(s) = fs::read_to_string(&p) {
            return s.trim().parse().with_context(|| format!("parsing {p}"));
        }
    }
    bail!("kmem:mm_page_alloc id not found under tracefs")
}

/// Faults in `PAGES` fresh anonymous pages and unmaps them.
fn fault_pages() -> Result<()> {
    let len = PAGES * 4096;
    // SAFETY: anonymous private mapping, checked for MAP_FAILED, unmapped below.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        bail!("mmap: {}", std::io::Error::last_os_error());
    }
    // SAFETY: inside the mapping; MADV_NOHUGEPAGE keeps every fault an order-0 allocation.
    unsafe { libc::madvise(p, len, libc::MADV_NOHUGEPAGE) };
    for off in (0..len).step_by(4096) {
        // SAFETY: inside the mapping.
        unsafe { ptr::write_volatile((p as *mut u8).add(off), 1) };
    }
    // SAFETY: unmaps exactly the mapping created above.
    unsafe { libc::munmap(p, len) };
    Ok(())
}

fn scenario(extra: &[&str]) -> Result<()> {
    let id = tracepoint_id()?;
    let mut args = vec!["--duration", "10m", "--class", "all"];
    args.extend_from_slice(extra);
    let mut tracer = Tracer::start("perf", &args)?;
    let attr = PerfEventAttr {
        type_: PERF_TYPE_TRACEPOINT,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: id,
        ..Default::default()
    };
    // SAFETY: perf_event_open with a valid attr; counts this process (pid 0) on any CPU.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            0,
            -1,
            -1,
            0u64,
        )
    };
    if fd < 0 {
        bail!(
            "perf_event_open(kmem:mm_page_alloc): {}",
            std::io::Error::last_os_error()
        );
    }
    let fd = fd as i32;
    let faulted = fault_pages();
    let mut count = 0u64;
    // SAFETY: reads the 8-byte counter value into `count`.
    let n = unsafe { libc::read(fd, (&mut count as *mut u64).cast(), 8) };
    // SAFETY: closes the fd opened above.
    unsafe { libc::close(fd) };
    faulted?;
    ensure!(
        n == 8,
        "reading the perf counter: {}",
        std::io::Error::last_os_error()
    );
    let report = tracer.stop_and_report()?;
    log(&format!(
        "perf ({extra:?}): counted {count} kmem:mm_page_alloc events for {PAGES} faulted pages ({} MiB) while \
         memtrace was attached (memtrace saw allocs_seen={})",
        (PAGES * 4096) as u64 / MIB,
        report.counter("allocs_seen")?
    ));
    ensure!(
        count as usize >= PAGES * 9 / 10,
        "perf counted only {count} page allocations for {PAGES} page faults while memtrace was \
         attached: memtrace's programs hide the tracepoint from perf"
    );
    Ok(())
}
