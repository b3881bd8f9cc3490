//! Who holds the memory, and leak criteria:
//!
//! - `cgroup_pid_and_filters`: a TCP receive-queue hold made by a child process in a cgroup v2
//!   this test creates is attributed to that cgroup and that process; `--cgroup` and `--pid`
//!   keep the child's hold and drop the same hold made by another process (this one).
//! - `growing_stack_is_marked_and_churn_is_not`: a hold that grows step by step across
//!   `--interval` snapshots is `growing`; anonymous memory churned at the same time is not.
//! - `grace_leaves_out_the_tail`: a hold made during the grace period is not reported; one
//!   made before it is.
//!
//! The workloads that must be separate processes run as the `memtrace-workload` binary of
//! this package (`tests/src/bin/memtrace-workload.rs`).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use memtrace_tests::{
    child_value, child_values, churn, find_stacks, log, mib, run_scenario, sum_bytes, tcp_hold,
    ChildWorkload, Report, Stack, Tracer, MIB,
};

/// The child workload binary of this package.
const WORKLOAD: &str = env!("CARGO_BIN_EXE_memtrace-workload");

const TCP_FRAG: &[&[&str]] = &[
    &["tcp_sendmsg", "tcp_sendmsg_locked"],
    &["skb_page_frag_refill"],
];

fn tcp_stacks(report: &Report) -> Vec<&Stack> {
    find_stacks(report, TCP_FRAG)
}

/// Bytes of `stacks` owned by `tgid` (owners lists are complete for these few owners).
fn owned(stacks: &[&Stack], tgid: u32) -> u64 {
    stacks
        .iter()
        .flat_map(|s| s.owners.iter())
        .filter(|o| o.tgid == tgid)
        .map(|o| o.bytes)
        .sum()
}

fn within(actual: u64, truth: u64, tolerance: f64) -> bool {
    (actual as f64 - truth as f64).abs() <= truth as f64 * tolerance
}

// ------------------------------------------------------------------------------------------
// The child workload process
// ------------------------------------------------------------------------------------------

// ------------------------------------------------------------------------------------------
// A cgroup v2 directory of our own
// ------------------------------------------------------------------------------------------

/// The cgroup2 mount point, from /proc/self/mountinfo.
fn cgroup2_mount() -> Result<Option<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context("mountinfo")?;
    Ok(text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        Some(PathBuf::from(left.split_whitespace().nth(4)?))
    }))
}

/// A cgroup v2 directory removed on drop (after its processes have left).
struct TestCgroup {
    dir: PathBuf,
    /// Path relative to the mount, as memtrace reports it.
    rel: String,
}

impl TestCgroup {
    fn create(mount: &Path, name: &str) -> Result<TestCgroup> {
        let dir = mount.join(name);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TestCgroup {
            dir,
            rel: format!("/{name}"),
        })
    }

    fn add(&self, pid: u32) -> Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {pid} into {}", self.dir.display()))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // rmdir fails while the child is still in it; it exits before this in every path
        // that reaches here, retry briefly for the kernel to finish the exit.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

// ------------------------------------------------------------------------------------------
// Scenarios
// ------------------------------------------------------------------------------------------

#[test]
fn cgroup_pid_and_filters() {
    // Twice the unfiltered tracer of this scenario listed no TCP stack at all: the TCP stack's
    // bucket in the stack map held another stack (stack_id_eexist in the tens of thousands,
    // 80 MiB under "[stack unavailable]"). Such stacks now go to the second stack map
    // (tests/tests/stacks.rs). A second attempt stays, with the first failure and the
    // tracers' reports logged loudly; two failures in a row fail the test.
    run_scenario(|| match cgroup_scenario() {
        Ok(()) => Ok(()),
        Err(e) => {
            log(&format!(
                "RETRY cgroup_pid_and_filters: first attempt failed: {e:#}"
            ));
            cgroup_scenario()
        }
    });
}

fn log_report(label: &str, r: &Report) {
    log(&format!("{label}: counters {}", r.counters_line()));
    for (i, s) in r.stacks.iter().take(8).enumerate() {
        log(&format!("{label}: stacks[{i}] {}", s.describe()));
    }
}

fn cgroup_scenario() -> Result<()> {
    let Some(mount) = cgroup2_mount()? else {
        // Every kernel memtrace supports has cgroup2; a host without it mounted is a setup
        // problem, not a reason to pass silently.
        bail!("no cgroup2 hierarchy mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)");
    };
    let cg = TestCgroup::create(&mount, &format!("memtrace-test-{}", std::process::id()))?;
    let mut child = ChildWorkload::spawn(WORKLOAD, &["hold", &(48 * MIB).to_string()])?;
    cg.add(child.pid())?;
    let child_pid = child.pid().to_string();

    let mut all = Tracer::start("all", &["--duration", "10m"])?;
    let mut by_cgroup = Tracer::start("cgroup", &["--duration", "10m", "--cgroup", &cg.rel])?;
    let mut by_pid = Tracer::start("pid", &["--duration", "10m", "--pid", &child_pid])?;

    child.go()?;
    let child_held = child_value(&child.wait_done()?, "held")?;
    // The same hold from another process (this one), outside the cgroup.
    let own = tcp_hold(32 * MIB)?;
    let own_held = own.held_bytes();
    let me = std::process::id();

    let r_all = all.stop_and_report()?;
    let r_cg = by_cgroup.stop_and_report()?;
    let r_pid = by_pid.stop_and_report()?;
    own.drain()?;
    child.finish()?;

    let child_tgid: u32 = child_pid.parse()?;
    log(&format!(
        "attribution: child {child_tgid} held {}, parent {me} held {}",
        mib(child_held),
        mib(own_held)
    ));

    // Unfiltered: both holds, each attributed to its process; the child's to our cgroup.
    let tcp = tcp_stacks(&r_all);
    if tcp.is_empty() {
        log_report("all (no tcp stack)", &r_all);
    }
    let (by_child, by_me) = (owned(&tcp, child_tgid), owned(&tcp, me));
    log(&format!(
        "all: tcp stacks {} owned by child {}, by parent {}",
        mib(sum_bytes(&tcp)),
        mib(by_child),
        mib(by_me)
    ));
    ensure!(
        within(by_child, child_held, 0.10),
        "the child's hold ({}) is attributed {} to the child",
        mib(child_held),
        mib(by_child)
    );
    ensure!(
        within(by_me, own_held, 0.10),
        "this process's hold ({}) is attributed {} to it",
        mib(own_held),
        mib(by_me)
    );
    let child_owner = tcp
        .iter()
        .flat_map(|s| s.owners.iter())
        .find(|o| o.tgid == child_tgid)
        .context("no owner entry for the child")?;
    ensure!(
        child_owner.cgroup.as_deref() == Some(cg.rel.as_str()),
        "the child's owner entry names cgroup {:?}, expected {}",
        child_owner.cgroup,
        cg.rel
    );
    ensure!(
        child_owner.comm == "tcp-hold-send" && child_owner.context.as_deref() == Some("task"),
        "the child's owner entry: comm {:?} context {:?}",
        child_owner.comm,
        child_owner.context
    );
    let proc_row = r_all
        .owners
        .processes
        .iter()
        .find(|p| p.tgid == child_tgid)
        .context("no process summary row for the child")?;
    ensure!(
        proc_row.cgroup.as_deref() == Some(cg.rel.as_str()) && proc_row.context == "task",
        "process summary for the child: {proc_row:?}"
    );
    ensure!(
        proc_row.bytes >= by_child,
        "process summary {} < tcp bytes owned {}",
        proc_row.bytes,
        by_child
    );
    let cg_row = r_all
        .owners
        .cgroups
        .iter()
        .find(|c| c.path.as_deref() == Some(cg.rel.as_str()))
        .context("no cgroup summary row for our cgroup")?;
    ensure!(
        cg_row.bytes >= by_child,
        "cgroup summary {} < the child's tcp bytes {}",
        mib(cg_row.bytes),
        mib(by_child)
    );

    // Filtered: the child's hold only.
    for (label, r) in [("cgroup", &r_cg), ("pid", &r_pid)] {
        let tcp = tcp_stacks(r);
        let bytes = sum_bytes(&tcp);
        let others: u64 = tcp
            .iter()
            .flat_map(|s| s.owners.iter())
            .filter(|o| o.tgid != child_tgid && o.context.as_deref() == Some("task"))
            .map(|o| o.bytes)
            .sum();
        if tcp.is_empty() {
            log_report(&format!("{label} (no tcp stack)"), r);
        }
        log(&format!(
            "{label} filter: tcp stacks {} (child held {}), other tasks {}; filtered_out {}",
            mib(bytes),
            mib(child_held),
            mib(others),
            r.counters.get("filtered_out").copied().unwrap_or(0)
        ));
        ensure!(
            within(bytes, child_held, 0.10),
            "--{label}: tcp stacks hold {}, the child held {} (this process's {} must be left out)",
            mib(bytes),
            mib(child_held),
            mib(own_held)
        );
        ensure!(
            others == 0,
            "--{label}: other tasks own {} of the tcp stacks",
            mib(others)
        );
        ensure!(
            r.counters.get("filtered_out").copied().unwrap_or(0) > 0,
            "--{label}: nothing was filtered out"
        );
        ensure!(
            !r.session["filters"].as_array().is_none_or(|f| f.is_empty()),
            "--{label}: the session does not list the filter"
        );
    }
    Ok(())
}

#[test]
fn growing_stack_is_marked_and_churn_is_not() {
    run_scenario(growth_scenario);
}

fn growth_scenario() -> Result<()> {
    const STEPS: u32 = 6;
    let mut child = ChildWorkload::spawn(
        WORKLOAD,
        &["grow", &(8 * MIB).to_string(), &STEPS.to_string(), "1000"],
    )?;
    let mut tracer = Tracer::start(
        "growth",
        &[
            "--duration",
            "10m",
            "--interval",
            "1s",
            "--sort",
            "growth",
            "--class",
            "all",
        ],
    )?;
    child.go()?;
    // Churn anonymous memory in this process while the child's hold grows.
    let churner = std::thread::spawn(|| churn(60, 16 << 20));
    let held = child_values(&child.wait_done()?, "held");
    let churned = churner
        .join()
        .map_err(|_| anyhow::anyhow!("churn thread panicked"))??;
    // One more snapshot after the last step.
    std::thread::sleep(Duration::from_millis(1500));
    let report = tracer.stop_and_report()?;
    child.finish()?;

    let snapshots = report.session["interval_secs"].as_f64().unwrap_or(0.0);
    ensure!(snapshots == 1.0, "interval_secs {snapshots}");
    let tcp = tcp_stacks(&report);
    let growing_tcp: u64 = tcp
        .iter()
        .filter(|s| s.growing == Some(true))
        .map(|s| s.bytes)
        .sum();
    log(&format!(
        "growth: child held {:?} MiB; tcp stacks {} of which growing {}; churn pid {} touched {}",
        held.iter().map(|h| h / MIB).collect::<Vec<_>>(),
        mib(sum_bytes(&tcp)),
        mib(growing_tcp),
        churned.pid,
        mib(churned.touched_bytes)
    ));
    // Why a verdict went the way it did: each tcp stack's growth figures and the rotation.
    for s in &tcp {
        log(&format!(
            "growth: tcp stack {:?} {} growing {:?}: {}",
            s.stack_id,
            mib(s.bytes),
            s.growing,
            s.growth.as_ref().map(|g| g.to_string()).unwrap_or_default()
        ));
    }
    log(&format!(
        "growth: stack rotation {}",
        report.session["stack_rotation"]
    ));
    let total_held: u64 = held.iter().sum();
    ensure!(
        growing_tcp as f64 >= total_held as f64 * 0.8,
        "growing tcp stacks hold {} of the child's {}",
        mib(growing_tcp),
        mib(total_held)
    );
    // --sort growth: growing stacks come first.
    let first_not_growing = report
        .stacks
        .iter()
        .position(|s| s.growing != Some(true))
        .unwrap_or(report.stacks.len());
    ensure!(
        report.stacks[first_not_growing..]
            .iter()
            .all(|s| s.growing != Some(true)),
        "--sort growth did not put the growing stacks first"
    );
    // The churned anonymous memory (a forked child of this process): its stacks allocated a
    // lot and are not growing.
    let me = churned.pid;
    let churn_stacks: Vec<&Stack> = report
        .stacks
        .iter()
        .filter(|s| s.class.as_deref() == Some("user-anon") && s.allocated_bytes >= 8 * MIB)
        .filter(|s| s.owners.iter().all(|o| o.tgid == me) || s.owners.is_empty())
        .collect();
    ensure!(
        !churn_stacks.is_empty(),
        "no user-anon stack of the churn process allocated 8 MiB or more (churn not seen)"
    );
    for s in &churn_stacks {
        ensure!(
            s.growing == Some(false),
            "churn stack {} ({} outstanding, {} allocated) is marked growing {:?}",
            s.caller,
            mib(s.bytes),
            mib(s.allocated_bytes),
            s.growing
        );
    }
    Ok(())
}

#[test]
fn grace_leaves_out_the_tail() {
    run_scenario(grace_scenario);
}

fn grace_scenario() -> Result<()> {
    let mut tracer = Tracer::start("grace", &["--duration", "12s", "--grace", "6s"])?;
    let ready = Instant::now();
    let before = tcp_hold(16 * MIB)?;
    let before_held = before.held_bytes();
    // Well inside the grace period (it starts 6 s after the start).
    let wait = Duration::from_secs(8).saturating_sub(ready.elapsed());
    std::thread::sleep(wait);
    let tail = tcp_hold(48 * MIB)?;
    let tail_held = tail.held_bytes();
    let status = tracer.wait_exit(Duration::from_secs(60))?;
    ensure!(status.success(), "memtrace exited with {status}");
    let report = tracer.report()?;
    before.drain()?;
    tail.drain()?;

    let bytes = sum_bytes(&tcp_stacks(&report));
    let skipped = report.counters.get("grace_skipped").copied().unwrap_or(0);
    log(&format!(
        "grace: before {} tail {}; reported {}; grace_skipped {skipped}; grace_secs {}",
        mib(before_held),
        mib(tail_held),
        mib(bytes),
        report.session["grace_secs"]
    ));
    ensure!(
        within(bytes, before_held, 0.10),
        "the report holds {} under tcp stacks: expected the hold made before the grace period \
         ({}) without the one made during it ({})",
        mib(bytes),
        mib(before_held),
        mib(tail_held)
    );
    ensure!(skipped > 0, "grace_skipped is 0");
    let grace = report.session["grace_secs"].as_f64().unwrap_or(0.0);
    ensure!((5.0..=7.0).contains(&grace), "grace_secs {grace}");
    Ok(())
}
