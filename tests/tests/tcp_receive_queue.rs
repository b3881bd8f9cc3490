//! Pages held in a loopback TCP receive queue are attributed to the sender's
//! `tcp_sendmsg` → `skb_page_frag_refill` stack while held, and seen freed once read.
//!
//! Two tracers run over the same workload: A (only this process) is stopped while the data is
//! still queued (its outstanding bytes must match the kernel's own SIOCINQ figure), B (the
//! whole machine) after the receiver read everything (outstanding near zero, but the
//! allocations must have been seen).

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use memtrace_tests::{
    find_stacks, folded_bytes, log, mib, run_scenario, sum_allocated_bytes, sum_bytes, tcp_hold,
    Report, Stack, Tracer, MIB,
};

const PAYLOAD: u64 = 64 * MIB;
/// The sender's page-fragment allocations, reached from either entry point.
const TCP_FRAG: &[&[&str]] = &[
    &["tcp_sendmsg", "tcp_sendmsg_locked"],
    &["skb_page_frag_refill"],
];

fn tcp_stacks(report: &Report) -> Vec<&Stack> {
    find_stacks(report, TCP_FRAG)
}

fn log_top(label: &str, report: &Report) {
    eprintln!("{label}: counters {}", report.counters_line());
    for (i, stack) in report.stacks.iter().take(5).enumerate() {
        eprintln!("{label}: stacks[{i}] {}", stack.describe());
    }
}

#[test]
fn tcp_receive_queue_is_attributed_then_freed() {
    run_scenario(scenario);
}

fn scenario() -> Result<()> {
    // B traces the whole machine. A only this process (the sender, whose tcp_sendmsg allocates
    // the queued pages): the receive queue must be the top of its report whatever else runs,
    // such as another tracer creating its maps (a tracer records the kernel memory of another
    // tracer's maps, tens of MiB vmalloc'ed at load, like any other kernel allocation).
    let me = std::process::id().to_string();
    let mut b = Tracer::start("B", &["--duration", "10m"])?;
    let mut a = Tracer::start("A", &["--duration", "10m", "--pid", &me])?;

    let hold = tcp_hold(PAYLOAD)?;
    let truth = hold.held_bytes();

    // A: stopped while the receiver still holds everything.
    let report_a = a.stop_and_report()?;
    log_top("A", &report_a);
    let stacks_a = tcp_stacks(&report_a);
    let bytes_a = sum_bytes(&stacks_a);
    log(&format!(
        "A: truth (SIOCINQ + unsent) {} ({truth} bytes); tcp_sendmsg/skb_page_frag_refill stacks: \
         {} outstanding ({bytes_a} bytes) in {} stacks, {:+.1} % off",
        mib(truth),
        mib(bytes_a),
        stacks_a.len(),
        (bytes_a as f64 - truth as f64) * 100.0 / truth as f64
    ));

    // The report names the socket that holds it: the receiver, ours, with its queue.
    let json_a = a.json()?;
    let top = &json_a["sockets"][0];
    let recv_queue = top["recv_queue"].as_u64().unwrap_or(0);
    let owner_pid = top["owners"][0]["pid"].as_u64().unwrap_or(0);
    log(&format!(
        "A: top socket {} -> {} recv_queue {} rmem_alloc {} owner pid {owner_pid}",
        top["local"],
        top["remote"],
        mib(recv_queue),
        mib(top["rmem_alloc"].as_u64().unwrap_or(0))
    ));
    ensure!(
        owner_pid == u64::from(std::process::id())
            && (recv_queue as f64 - hold.queued as f64).abs() <= 0.10 * hold.queued as f64,
        "A: the report's top socket should be our receiver holding {} (SIOCINQ): {top}",
        mib(hold.queued)
    );
    ensure!(
        a.stdout()
            .contains("Sockets with the most receive-queue memory at the end"),
        "A: the text report should end with the sockets"
    );

    // B: stopped after the receiver read everything and the sockets were closed.
    let drained = hold.drain()?;
    std::thread::sleep(Duration::from_millis(500));
    let report_b = b.stop_and_report()?;
    log_top("B", &report_b);
    let stacks_b = tcp_stacks(&report_b);
    let bytes_b = sum_bytes(&stacks_b);
    let allocated_b = sum_allocated_bytes(&stacks_b);
    log(&format!(
        "B: drained {}; tcp stacks outstanding {} ({bytes_b} bytes), allocated during the \
         session {} ({allocated_b} bytes) in {} stacks",
        mib(drained),
        mib(bytes_b),
        mib(allocated_b),
        stacks_b.len()
    ));

    report_a.check_consistency().context("A's report")?;
    report_b.check_consistency().context("B's report")?;
    ensure!(
        !stacks_a.is_empty(),
        "A found no stack containing (tcp_sendmsg | tcp_sendmsg_locked) and skb_page_frag_refill"
    );
    let tolerance = truth / 10;
    ensure!(
        bytes_a.abs_diff(truth) <= tolerance,
        "A attributes {bytes_a} bytes to tcp_sendmsg/skb_page_frag_refill, the receive queue holds \
         {truth} (allowed ±10 %: {tolerance})"
    );
    let top = report_a
        .stacks
        .first()
        .map(Stack::describe)
        .unwrap_or_default();
    ensure!(
        report_a
            .stacks
            .first()
            .is_some_and(|first| stacks_a.iter().any(|s| std::ptr::eq(*s, first))),
        "the top stack of A's report is not a tcp_sendmsg/skb_page_frag_refill stack: {top}"
    );
    let stdout_a = a.stdout();
    ensure!(
        stdout_a.contains("skb_page_frag_refill"),
        "A's text report does not mention skb_page_frag_refill:\n{stdout_a}"
    );
    // The folded output carries the same figure.
    let folded_a = a.folded()?;
    let folded_tcp = folded_bytes(&folded_a, TCP_FRAG)?;
    log(&format!(
        "A: folded tcp lines hold {} ({folded_tcp} bytes)",
        mib(folded_tcp)
    ));
    ensure!(
        folded_tcp.abs_diff(truth) <= tolerance,
        "A's folded output attributes {folded_tcp} bytes to tcp_sendmsg/skb_page_frag_refill, \
         the receive queue holds {truth} (allowed ±10 %: {tolerance})"
    );

    ensure!(
        bytes_b < truth / 10,
        "after draining, B still attributes {bytes_b} outstanding bytes to the tcp stacks \
         (truth was {truth}; must be < 10 %)"
    );
    ensure!(
        allocated_b * 10 >= truth * 9,
        "B saw only {allocated_b} bytes allocated by the tcp stacks during its session; \
         at least 90 % of {truth} were"
    );
    Ok(())
}
