//! A long session's stack tables rotate: `memtrace serve` with a small stack table
//! (`--max-stacks 32`) and this process's allocations only. A mix of system calls (files,
//! pipes, sockets of several families, eventfd, memfd, anonymous memory) fills the table with
//! stacks that then go idle; 8 MiB held in a loopback TCP receive queue stay outstanding the
//! whole time. The snapshots must retire idle stacks (the report and /metrics say how many),
//! the allocated totals and every `memtrace_allocated_bytes_total` series must never go down
//! across snapshots (retired stacks keep their totals), and the held queue must still be
//! counted in full (its stack is never retired: it has memory outstanding). Once with the
//! default classes, once with every page tracked (`--class all`).

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::SocketAddr,
    os::fd::{FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use memtrace_tests::{http_get, log, mib, run_scenario, tcp_hold, Serve, MIB};

const HOLD: u64 = 8 * MIB;
const DEADLINE: Duration = Duration::from_secs(90);

#[test]
fn idle_stacks_rotate_and_totals_never_go_down() {
    run_scenario(|| scenario(&[]));
}

/// The same with every page tracked: this process's user pages, page cache and shmem go
/// through the per-CPU movable stack caches, whose pending counts every snapshot adds (held
/// still while it reads) and whose stacks rotation retires (a new cache generation).
#[test]
fn idle_stacks_rotate_with_movable_pages_tracked() {
    run_scenario(|| scenario(&["--class", "all"]));
}

fn scenario(extra: &[&str]) -> Result<()> {
    let me = std::process::id().to_string();
    let mut args = vec![
        "--interval",
        "1s",
        "--pid",
        &me,
        "--max-stacks",
        "128",
        "--kind",
        "page,slab",
    ];
    args.extend_from_slice(extra);
    let mut serve = Serve::start(&args)?;
    let addr = serve.addr();
    let hold = tcp_hold(HOLD)?;
    let truth = hold.held_bytes();

    let mut watch = Watch::default();
    let started = Instant::now();
    let mut rounds = 0;
    let mut retired_at_round = None;
    loop {
        ensure!(
            started.elapsed() < DEADLINE,
            "no stack was retired within {DEADLINE:?} ({rounds} rounds); last report session: \
             {}",
            watch.last_session
        );
        syscall_mix(Duration::from_millis(1500))?;
        // Idle long enough for two snapshots to see the same counts, checking each.
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(1000));
            watch.check(addr)?;
        }
        rounds += 1;
        if watch.retired > 0 && retired_at_round.is_none() {
            retired_at_round = Some(rounds);
        }
        // Once retired, one more round: the recycled buckets take stacks again.
        if retired_at_round.is_some_and(|r| rounds > r) {
            break;
        }
    }

    let network = watch.network_bytes;
    log(&format!(
        "rotation: {} stacks retired in {} rotations after {rounds} rounds ({} races); {} \
         snapshots checked, allocated never went down; network-class outstanding {} vs {} \
         queued ({:+.1} %); {} stacks in the last report, collisions \
         (eexist, enomem, second map) {:?}",
        watch.retired,
        watch.rotations,
        watch.races,
        watch.checked,
        mib(network),
        mib(truth),
        (network as f64 - truth as f64) * 100.0 / truth as f64,
        watch.stacks,
        watch.collisions
    ));
    ensure!(
        (network as f64 - truth as f64).abs() <= truth as f64 * 0.1,
        "network-class outstanding bytes {network} are not within 10 % of the {truth} bytes \
         queued after the rotations"
    );
    let metrics = http_get(addr, "/metrics", Duration::from_secs(10))?;
    let text = String::from_utf8_lossy(&metrics.body);
    let retired_metric = sample(&text, "memtrace_stacks_retired_total")
        .context("no memtrace_stacks_retired_total in /metrics")?;
    ensure!(
        retired_metric > 0.0,
        "memtrace_stacks_retired_total is {retired_metric}"
    );
    drop(hold);
    let status = serve.stop()?;
    ensure!(
        status.code() == Some(0),
        "memtrace serve ended with {status:?}; stderr:\n{}",
        serve.stderr()
    );
    Ok(())
}

/// What the snapshots said so far.
#[derive(Default)]
struct Watch {
    /// Allocated bytes of the report's totals at the previous check.
    allocated: u64,
    /// `memtrace_allocated_bytes_total` per label set at the previous check.
    series: HashMap<String, f64>,
    retired: u64,
    rotations: u64,
    races: u64,
    network_bytes: u64,
    checked: usize,
    last_session: String,
    /// Stacks in the latest report.
    stacks: usize,
    /// stack_id_eexist, stack_id_enomem, stack_id_second_map.
    collisions: Vec<u64>,
}

impl Watch {
    /// Reads /report.json and /metrics; fails when a total went down.
    fn check(&mut self, addr: SocketAddr) -> Result<()> {
        let reply = http_get(addr, "/report.json", Duration::from_secs(10))?;
        ensure!(reply.status == 200, "/report.json: {}", reply.status);
        let report: serde_json::Value =
            serde_json::from_slice(&reply.body).context("/report.json is not JSON")?;
        let allocated = report["totals"]["allocated_bytes"]
            .as_u64()
            .context("no totals.allocated_bytes")?;
        ensure!(
            allocated >= self.allocated,
            "allocated bytes went down from {} to {allocated}",
            self.allocated
        );
        self.allocated = allocated;
        let rotation = &report["session"]["stack_rotation"];
        self.retired = rotation["stacks_retired"].as_u64().unwrap_or(0);
        self.rotations = rotation["rotations"].as_u64().unwrap_or(0);
        self.races = rotation["races"].as_u64().unwrap_or(0);
        ensure!(
            rotation["failures"].as_u64().unwrap_or(0) == 0,
            "a rotation failed: {rotation}"
        );
        self.last_session = report["session"].to_string();
        self.stacks = report["stacks"].as_array().map_or(0, Vec::len);
        self.collisions = ["stack_id_eexist", "stack_id_enomem", "stack_id_second_map"]
            .iter()
            .map(|c| report["counters"][c].as_u64().unwrap_or(0))
            .collect();
        self.network_bytes = report["classes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["class"] == "network")
            .filter_map(|c| c["bytes"].as_u64())
            .sum();

        let metrics = http_get(addr, "/metrics", Duration::from_secs(10))?;
        ensure!(metrics.status == 200, "/metrics: {}", metrics.status);
        let text = String::from_utf8_lossy(&metrics.body);
        for line in text
            .lines()
            .filter(|l| l.starts_with("memtrace_allocated_bytes_total{"))
        {
            let (labels, value) = line.rsplit_once(' ').context("a sample without value")?;
            let value: f64 = value.parse().context("a sample's value")?;
            if let Some(before) = self.series.insert(labels.to_string(), value) {
                ensure!(
                    value >= before,
                    "{labels} went down from {before} to {value} (a counter must not)"
                );
            }
        }
        self.checked += 1;
        Ok(())
    }
}

/// The value of an unlabelled sample in a Prometheus exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// System calls that allocate kernel memory along many different kernel stacks, for `duration`.
fn syscall_mix(duration: Duration) -> Result<()> {
    let end = Instant::now() + duration;
    let dir = tempfile::tempdir().context("temp dir")?;
    let mut i = 0u64;
    while Instant::now() < end {
        i += 1;
        // Files: create, write (page cache), read back, stat, remove.
        let path = dir.path().join(format!("f{}", i % 8));
        std::fs::write(&path, vec![b'x'; 16 << 10]).context("writing a file")?;
        let mut back = Vec::new();
        std::fs::File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut back))
            .context("reading a file back")?;
        std::fs::metadata(&path).context("stat")?;
        std::fs::remove_file(&path).context("removing a file")?;
        for proc_file in ["/proc/self/status", "/proc/meminfo", "/proc/self/maps"] {
            let _ = std::fs::read(proc_file);
        }
        // A pipe carrying a few pages.
        let (mut r, mut w) = std::io::pipe().context("pipe")?;
        w.write_all(&[7u8; 12 << 10]).context("pipe write")?;
        drop(w);
        let mut sink = Vec::new();
        r.read_to_end(&mut sink).context("pipe read")?;
        // Sockets of several families, and a datagram through a UNIX socket pair.
        for (domain, ty) in [
            (libc::AF_INET, libc::SOCK_DGRAM),
            (libc::AF_INET6, libc::SOCK_STREAM),
            (libc::AF_NETLINK, libc::SOCK_RAW),
        ] {
            // SAFETY: socket(2) has no memory effects on this process; the fd is owned below.
            let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) };
            if fd >= 0 {
                // SAFETY: fd is a fresh descriptor nobody else owns.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        let (a, b) = std::os::unix::net::UnixDatagram::pair().context("socketpair")?;
        a.send(&[1u8; 2048]).context("unix send")?;
        let mut buf = [0u8; 4096];
        b.recv(&mut buf).context("unix recv")?;
        // eventfd, memfd with data, anonymous memory touched and unmapped.
        // SAFETY: eventfd(2) returns a new descriptor or -1.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd >= 0 {
            // SAFETY: a fresh descriptor nobody else owns.
            drop(unsafe { OwnedFd::from_raw_fd(efd) });
        }
        // SAFETY: memfd_create(2) with a NUL-terminated name returns a new descriptor or -1.
        let mfd = unsafe { libc::memfd_create(c"memtrace-rotation".as_ptr(), libc::MFD_CLOEXEC) };
        if mfd >= 0 {
            // SAFETY: a fresh descriptor nobody else owns; the File closes it.
            let mut f = unsafe { std::fs::File::from_raw_fd(mfd) };
            f.write_all(&[3u8; 8 << 10]).context("memfd write")?;
        }
        let anon = vec![1u8; 1 << 20];
        std::hint::black_box(&anon);
    }
    Ok(())
}
