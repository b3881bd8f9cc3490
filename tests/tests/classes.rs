//! Classes: what held memory is for. This process holds anonymous memory (`user-anon`), a
//! memfd (`shmem`), a file written on a disk filesystem (`page-cache`) and a loopback TCP
//! receive queue (`network`), each of a known size, while two tracers with the default kinds
//! (page, slab) run: B traces every class (`--class all`), A the default session, kernel
//! memory only (everything but `user-anon`, `page-cache` and `shmem`, which are made of
//! movable pages that A skips in the kernel, before capturing a stack).
//!
//! B's per-class figures of this process must match what it holds; A must hold none of this
//! process's anonymous, shmem or file pages, must count at least that many pages as
//! `movable_skipped`, its totals must be smaller than B's by about what those hold, and the TCP
//! receive queue must be in both.
//!
//! B is started first and fully attached before A, so that A does not record B's map memory;
//! B does record A's (kernel memory), which only widens the gap A's filter must show.

use std::collections::BTreeSet;

use anyhow::{ensure, Context as _, Result};
use memtrace_tests::{
    anon_hold, file_hold, find_stacks, log, mib, run_memtrace, run_scenario, shmem_hold,
    stacks_where, sum_bytes, sum_owned_by, tcp_hold, Report, Stack, Tracer, KERNEL_CLASSES, MIB,
};

/// Anonymous memory held (large enough that the process's other faults stay within 10 %).
const ANON: u64 = 64 * MIB;
const SHMEM: u64 = 32 * MIB;
const FILE: u64 = 32 * MIB;
const TCP: u64 = 64 * MIB;
/// The sender's page-fragment allocations (as in the TCP scenario).
const TCP_FRAG: &[&[&str]] = &[
    &["tcp_sendmsg", "tcp_sendmsg_locked"],
    &["skb_page_frag_refill"],
];

fn me() -> u32 {
    std::process::id()
}

fn within_10_percent(part: u64, truth: u64) -> bool {
    part.abs_diff(truth) * 10 <= truth
}

fn percent_off(part: u64, truth: u64) -> f64 {
    (part as f64 - truth as f64) * 100.0 / truth.max(1) as f64
}

fn of_class<'a>(report: &'a Report, class: &str) -> Vec<&'a Stack> {
    stacks_where(report, |s| s.class() == class)
}

/// What the listed owner entries of this process hold in stacks of `class` (any kind).
fn owned_in_class(report: &Report, class: &str) -> u64 {
    sum_owned_by(&of_class(report, class), me()).0
}

/// What the listed owner entries of this process hold in page stacks of `class`: the held
/// pages, without the slab objects that go with them (inodes, xarray nodes, ...).
fn owned_pages_in_class(report: &Report, class: &str) -> u64 {
    let pages: Vec<&Stack> = of_class(report, class)
        .into_iter()
        .filter(|s| s.kind() == "page")
        .collect();
    sum_owned_by(&pages, me()).0
}

fn log_classes(label: &str, report: &Report) {
    eprintln!("{label}: counters {}", report.counters_line());
    eprintln!("{label}: session.kinds {}", report.session["kinds"]);
    for c in &report.classes {
        log(&format!(
            "{label}: class {:<16} {:>10} ({:>10} bytes) {:>8} allocations {:>5} stacks \
             in_total={}; this process {}",
            c.class,
            mib(c.bytes),
            c.bytes,
            c.allocations,
            c.stacks,
            c.in_total,
            mib(owned_in_class(report, &c.class))
        ));
    }
    log(&format!(
        "{label}: totals {} ({} bytes) in {} allocations; {} stacks",
        mib(report.totals.bytes),
        report.totals.bytes,
        report.totals.allocations,
        report.stacks.len()
    ));
    for (i, stack) in report.stacks.iter().take(5).enumerate() {
        eprintln!("{label}: stacks[{i}] {}", stack.describe());
    }
}

#[test]
fn held_memory_is_classed_and_kernel_filter_drops_process_memory() {
    run_scenario(scenario);
}

fn scenario() -> Result<()> {
    let mut b = Tracer::start("B-all", &["--class", "all", "--duration", "10m"])?;
    let mut a = Tracer::start("A-default", &["--duration", "10m"])?;

    let anon = anon_hold(ANON)?;
    let shmem = shmem_hold(SHMEM)?;
    let file = file_hold(FILE)?;
    let tcp = tcp_hold(TCP)?;
    let tcp_truth = tcp.held_bytes();

    let report_a = a.stop_and_report()?;
    let report_b = b.stop_and_report()?;
    log_classes("A (default: kernel memory)", &report_a);
    log_classes("B (--class all)", &report_b);

    let b_anon = owned_pages_in_class(&report_b, "user-anon");
    let b_shmem = owned_pages_in_class(&report_b, "shmem");
    let b_file = owned_pages_in_class(&report_b, "page-cache");
    let a_shmem = owned_pages_in_class(&report_a, "shmem");
    let a_mine: u64 = report_a
        .stacks
        .iter()
        .filter(|s| s.kind() == "page" && s.class() != "network")
        .map(|s| s.owned_by(me()).0)
        .sum();
    let a_movable_skipped = report_a.counter("movable_skipped")?;
    let file_details: BTreeSet<Option<&str>> = of_class(&report_b, "page-cache")
        .iter()
        .filter(|s| s.owned_by(me()).0 > 0)
        .map(|s| s.class_detail.as_deref())
        .collect();
    let tcp_b = find_stacks(&report_b, TCP_FRAG);
    let tcp_a = find_stacks(&report_a, TCP_FRAG);
    let tcp_classes: BTreeSet<&str> = tcp_b.iter().chain(&tcp_a).map(|s| s.class()).collect();
    let gap = report_b.totals.bytes.saturating_sub(report_a.totals.bytes);
    let process_classes = report_b.class_bytes("user-anon") + report_b.class_bytes("page-cache");
    log(&format!(
        "truth: anon {} shmem {} (meminfo Shmem {:+.2} MiB) file {} (meminfo Cached {:+.2} MiB, \
         Dirty {:+.2} MiB) tcp {}\n\
         B: this process's pages of class user-anon {} ({:+.1} %), shmem {} ({:+.1} %), \
         page-cache {} \
         ({:+.1} %, class_detail {file_details:?}); tcp_sendmsg/skb_page_frag_refill stacks {} \
         classed {tcp_classes:?}\n\
         A: this process's shmem pages {} ({:+.1} %); tcp stacks {}; totals A {} vs B {}: gap {} \
         (B's user-anon + page-cache classes hold {})",
        mib(ANON),
        mib(SHMEM),
        shmem.meminfo_growth() as f64 / MIB as f64,
        mib(FILE),
        file.cached_growth as f64 / MIB as f64,
        file.dirty_growth as f64 / MIB as f64,
        mib(tcp_truth),
        mib(b_anon),
        percent_off(b_anon, ANON),
        mib(b_shmem),
        percent_off(b_shmem, SHMEM),
        mib(b_file),
        percent_off(b_file, FILE),
        mib(sum_bytes(&tcp_b)),
        mib(a_shmem),
        percent_off(a_shmem, SHMEM),
        mib(sum_bytes(&tcp_a)),
        mib(report_a.totals.bytes),
        mib(report_b.totals.bytes),
        mib(gap),
        mib(process_classes),
    ));

    report_b.check_consistency().context("B's report")?;
    report_a
        .check_consistency_for_classes(&KERNEL_CLASSES)
        .context("A's report (default session)")?;
    let traced = report_b.traced_kinds()?;
    ensure!(
        traced == BTreeSet::from(["page".to_string(), "slab".to_string()]),
        "the default kinds should be page and slab, B traced {traced:?}"
    );

    // (a) shmem, (b) page cache, and the anonymous memory, in B.
    ensure!(
        within_10_percent(b_shmem, SHMEM),
        "B classes {b_shmem} bytes of this process's pages as shmem; the memfd holds {SHMEM} \
         (±10 %)"
    );
    ensure!(
        within_10_percent(b_file, FILE),
        "B classes {b_file} bytes of this process's pages as page-cache; the file written holds \
         {FILE} (±10 %)"
    );
    ensure!(
        within_10_percent(b_anon, ANON),
        "B classes {b_anon} bytes of this process's pages as user-anon; it faulted in {ANON} \
         (±10 %)"
    );
    // (c) the TCP receive queue is network memory, in both reports.
    ensure!(
        !tcp_b.is_empty() && !tcp_a.is_empty(),
        "a tcp_sendmsg/skb_page_frag_refill stack is missing (B: {}, A: {})",
        tcp_b.len(),
        tcp_a.len()
    );
    ensure!(
        tcp_classes == BTreeSet::from(["network"]),
        "the tcp_sendmsg/skb_page_frag_refill stacks are classed {tcp_classes:?}, not network"
    );
    ensure!(
        within_10_percent(sum_bytes(&tcp_b), tcp_truth),
        "B's tcp_sendmsg/skb_page_frag_refill stacks hold {} bytes; the receive queue holds \
         {tcp_truth} (±10 %)",
        sum_bytes(&tcp_b)
    );
    // (d) the default session: none of this process's movable pages recorded, all of them
    // counted as skipped, smaller totals. Apart from the TCP frags (network, checked above),
    // pages this process holds in A's report can only be kernel pages allocated on its behalf
    // (page tables): far below the holds.
    let movable_truth = ANON + SHMEM + FILE;
    ensure!(
        a_shmem == 0 && a_mine < movable_truth / 10,
        "A (default session) holds {a_mine} bytes of this process's non-network pages \
         ({a_shmem} of them shmem); it should skip its {movable_truth} bytes of anonymous, shmem and file pages"
    );
    // Allocations, not pages (transparent huge pages are one allocation each).
    ensure!(
        a_movable_skipped > 0,
        "A counted no movable allocation as skipped; this process alone allocated \
         {movable_truth} bytes of them"
    );
    ensure!(
        report_a.counter("allocs_tracked")? < report_b.counter("allocs_tracked")?,
        "A (default) recorded no fewer page allocations than B (--class all)"
    );
    ensure!(
        gap * 10 >= movable_truth * 8,
        "A's totals are only {gap} bytes below B's; this process alone holds {movable_truth} \
         bytes of user-anon, shmem and page-cache memory (need ≥ 80 %)"
    );

    tcp.drain()?;
    file.release()?;
    shmem.release();
    drop(anon);
    Ok(())
}

#[test]
fn unknown_class_is_a_usage_error() {
    run_scenario(|| {
        let run = run_memtrace(
            &["trace", "--class", "kernel,heap", "--duration", "5s"],
            std::time::Duration::from_secs(30),
        )?;
        log(&format!(
            "--class kernel,heap: {}\nstderr:\n{}",
            run.status, run.stderr
        ));
        ensure!(
            run.code() == Some(2),
            "`memtrace trace --class kernel,heap` ended with {:?}, expected exit code 2 (usage); \
             stderr:\n{}",
            run.status,
            run.stderr
        );
        ensure!(
            run.stderr.contains("--class") && run.stderr.contains("heap"),
            "the usage error names neither the flag --class nor the bad value `heap`:\n{}",
            run.stderr
        );
        Ok(())
    });
}
