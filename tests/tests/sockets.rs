//! `memtrace sockets` against real receive-queue holds:
//!
//! - `receive_queue_socket_is_listed_first`: a child process holds 32 MiB in the receive queue
//!   of a loopback TCP socket it never reads; `memtrace sockets --json -` lists that socket
//!   first, owned by the child, with `recv_queue` within ±10 % of what the kernel reports
//!   queued (SIOCINQ) and `rmem_alloc` at least that.
//! - `receive_queue_in_another_netns`: the same inside a network namespace the child creates
//!   (`memtrace-workload netns-hold`); memtrace enters it and reports its inode (read from
//!   `/proc/<child>/ns/net`, not ours). After the child exits, nothing of it is listed.
//!
//! The children are `memtrace-workload` processes of this package, killed by pid if a check
//! fails. The two scenarios run one after the other (each expects its socket to be first).

use std::{
    io::Read as _,
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use memtrace_tests::{child_value, log, memtrace_bin, mib, require_bpf, ChildWorkload, MIB};

/// The child workload binary of this package.
const WORKLOAD: &str = env!("CARGO_BIN_EXE_memtrace-workload");
use serde_json::Value;

const HOLD: u64 = 32 * MIB;
const TOLERANCE: f64 = 0.10;
const MEMTRACE_TIMEOUT: Duration = Duration::from_secs(60);

/// The scenarios each expect their socket to be the largest: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The network namespace inode of `pid` (`self` for ours).
fn netns_of(pid: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/ns/net");
    let link = std::fs::read_link(&path).with_context(|| format!("reading {path}"))?;
    let text = link.to_string_lossy();
    text.strip_prefix("net:[")
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse().ok())
        .with_context(|| format!("{path} points to {text:?}"))
}

/// Runs `memtrace sockets --json - --min-bytes 1MiB` and returns its document.
fn memtrace_sockets() -> Result<Value> {
    let bin = memtrace_bin();
    let mut child = Command::new(&bin)
        .args(["sockets", "--json", "-", "--min-bytes", "1MiB"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", bin.display()))?;
    let mut stdout = child.stdout.take().context("memtrace stdout")?;
    let mut stderr = child.stderr.take().context("memtrace stderr")?;
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for memtrace")? {
            break status;
        }
        if started.elapsed() > MEMTRACE_TIMEOUT {
            // Ours, by pid.
            let _ = child.kill();
            let _ = child.wait();
            bail!("memtrace sockets did not finish within {MEMTRACE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out
        .join()
        .map_err(|_| anyhow::anyhow!("stdout reader panicked"))?
        .context("reading memtrace's stdout")?;
    let stderr = err
        .join()
        .map_err(|_| anyhow::anyhow!("stderr reader panicked"))?
        .context("reading memtrace's stderr")?;
    if !stderr.trim().is_empty() {
        log(&format!("memtrace sockets stderr:\n{}", stderr.trim_end()));
    }
    ensure!(
        status.success(),
        "memtrace sockets failed ({status}):\n{stderr}"
    );
    let doc: Value = serde_json::from_str(&stdout)
        .with_context(|| format!("memtrace sockets printed no JSON:\n{stdout}"))?;
    ensure!(
        doc["schema"] == "memtrace-sockets/1",
        "unexpected schema {}",
        doc["schema"]
    );
    Ok(doc)
}

fn u64_field(v: &Value, key: &str) -> Result<u64> {
    v[key]
        .as_u64()
        .with_context(|| format!("socket field {key} missing or not a number: {v}"))
}

/// One line per socket for failure messages and the log.
fn describe(s: &Value) -> String {
    let owners: Vec<String> = s["owners"]
        .as_array()
        .map(|o| {
            o.iter()
                .map(|o| format!("{}[{}]", o["comm"].as_str().unwrap_or("?"), o["pid"]))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{} {} {} -> {} netns {} held {} rmem_alloc {} recv_queue {} owners {}",
        s["family"].as_str().unwrap_or("?"),
        s["state"].as_str().unwrap_or("?"),
        s["local"].as_str().unwrap_or("?"),
        s["remote"].as_str().unwrap_or("?"),
        s["netns"],
        s["held_bytes"],
        s["rmem_alloc"],
        s["recv_queue"],
        owners.join(", ")
    )
}

/// The first socket is the child's receiver: TCP over IPv4 loopback, established, owned by
/// `pid`, in namespace `netns`, with `queued` bytes (±10 %) and at least that much charged.
fn check_first(doc: &Value, pid: u32, queued: u64, netns: u64) -> Result<()> {
    let sockets = doc["sockets"].as_array().context("no sockets array")?;
    let listing: Vec<String> = sockets.iter().take(5).map(describe).collect();
    let top = sockets
        .first()
        .context("memtrace sockets listed no socket of at least 1 MiB")?;
    log(&format!(
        "memtrace sockets: {} namespaces, {} sockets of at least 1 MiB; first: {}",
        doc["namespaces"],
        sockets.len(),
        describe(top)
    ));
    let owners: Vec<u64> = top["owners"]
        .as_array()
        .map(|o| o.iter().filter_map(|o| o["pid"].as_u64()).collect())
        .unwrap_or_default();
    ensure!(
        owners.contains(&u64::from(pid)),
        "the first socket is not owned by the child {pid}; the first ones:\n  {}",
        listing.join("\n  ")
    );
    ensure!(
        top["family"] == "tcp" && top["state"] == "ESTAB",
        "the first socket is not an established TCP socket: {}",
        describe(top)
    );
    ensure!(
        top["local"]
            .as_str()
            .is_some_and(|l| l.starts_with("127.0.0.1:")),
        "the first socket is not on loopback: {}",
        describe(top)
    );
    let recv_queue = u64_field(top, "recv_queue")?;
    let rmem_alloc = u64_field(top, "rmem_alloc")?;
    ensure!(
        (recv_queue as f64 - queued as f64).abs() <= queued as f64 * TOLERANCE,
        "recv_queue {} is not within ±10 % of the {} the child has queued (SIOCINQ)",
        mib(recv_queue),
        mib(queued)
    );
    ensure!(
        rmem_alloc >= recv_queue,
        "rmem_alloc {} is less than recv_queue {}",
        mib(rmem_alloc),
        mib(recv_queue)
    );
    ensure!(
        u64_field(top, "held_bytes")? >= rmem_alloc,
        "held_bytes below rmem_alloc: {}",
        describe(top)
    );
    let got_netns = u64_field(top, "netns")?;
    ensure!(
        got_netns == netns,
        "the first socket is in network namespace {got_netns}, the child's is {netns}"
    );
    log(&format!(
        "socket of child {pid}: recv_queue {} (SIOCINQ {}), rmem_alloc {} ({:.3}x)",
        mib(recv_queue),
        mib(queued),
        mib(rmem_alloc),
        rmem_alloc as f64 / recv_queue.max(1) as f64
    ));
    Ok(())
}

fn run(scenario: fn() -> Result<()>) {
    if !require_bpf() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = scenario() {
        panic!("{e:#}");
    }
}

#[test]
fn receive_queue_socket_is_listed_first() {
    run(|| {
        let mut child = ChildWorkload::spawn(WORKLOAD, &["hold", &HOLD.to_string()])?;
        let values = child.go_and_wait()?;
        // `held` = queued at the receiver + unsent at the sender; as root the buffers are
        // forced large enough that everything is queued.
        let held = child_value(&values, "held")?;
        let doc = memtrace_sockets()?;
        check_first(&doc, child.pid(), held, netns_of("self")?)?;
        child.finish()
    });
}

#[test]
fn receive_queue_in_another_netns() {
    run(|| {
        let ours = netns_of("self")?;
        let mut child = ChildWorkload::spawn(WORKLOAD, &["netns-hold", &HOLD.to_string()])?;
        let values = child.go_and_wait()?;
        let queued = child_value(&values, "queued")?;
        let pid = child.pid();
        let theirs = netns_of(&pid.to_string())?;
        ensure!(
            theirs != ours,
            "the child did not get a network namespace of its own ({theirs})"
        );
        let doc = memtrace_sockets()?;
        ensure!(
            doc["namespaces"].as_u64().is_some_and(|n| n >= 2),
            "memtrace listed {} network namespaces, expected ours and the child's",
            doc["namespaces"]
        );
        check_first(&doc, pid, queued, theirs)?;
        child.finish()?;

        // The child's namespace went away with it: nothing of it is listed any more.
        let after = memtrace_sockets()?;
        let left: Vec<String> = after["sockets"]
            .as_array()
            .context("no sockets array")?
            .iter()
            .filter(|s| s["netns"].as_u64() == Some(theirs))
            .map(describe)
            .collect();
        ensure!(
            left.is_empty(),
            "sockets of the child's namespace {theirs} still listed after it exited:\n  {}",
            left.join("\n  ")
        );
        Ok(())
    });
}
