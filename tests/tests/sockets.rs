//! `memtrace sockets` against real receive-queue holds:
//!
//! - `receive_queue_socket_is_listed_first`: a child process holds 32 MiB in the receive queue
//!   of a loopback TCP socket it never reads; `memtrace sockets --json -` lists that socket
//!   first, owned by the child, with `recv_queue` within ±10 % of what the kernel reports
//!   queued (SIOCINQ) and `rmem_alloc` at least that.
//! - `receive_queue_in_another_netns`: the same inside a network namespace the child creates
//!   (`memtrace-workload netns-hold`); memtrace enters it and reports its inode (read from
//!   `/proc/<child>/ns/net`, not ours).
//! - `leftover_file_in_run_netns_is_not_a_namespace`: a plain file in `/run/netns` (what a
//!   failed `ip netns add` leaves) is not taken for a namespace: no note says entering it
//!   failed.
//!
//! The children are `memtrace-workload` processes of this package, killed by pid if a check
//! fails. The two scenarios run one after the other (each expects its socket to be first).

use std::{path::PathBuf, sync::Mutex, time::Duration};

use anyhow::{ensure, Context as _, Result};
use memtrace_tests::{child_value, log, mib, run_memtrace, run_scenario, ChildWorkload, MIB};

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
    let run = run_memtrace(
        &["sockets", "--json", "-", "--min-bytes", "1MiB"],
        MEMTRACE_TIMEOUT,
    )?;
    if !run.stderr.trim().is_empty() {
        log(&format!(
            "memtrace sockets stderr:\n{}",
            run.stderr.trim_end()
        ));
    }
    ensure!(
        run.status.success(),
        "memtrace sockets failed ({}):\n{}",
        run.status,
        run.stderr
    );
    let doc: Value = serde_json::from_str(&run.stdout)
        .with_context(|| format!("memtrace sockets printed no JSON:\n{}", run.stdout))?;
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

/// One socket scenario at a time (they share network namespaces).
fn run(scenario: fn() -> Result<()>) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    run_scenario(scenario);
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
        child.finish()
    });
}

/// A plain file in `/run/netns`, removed on drop (with the directory if it made it).
struct Leftover {
    file: PathBuf,
    made_dir: bool,
}

impl Leftover {
    fn create() -> Result<Leftover> {
        let dir = PathBuf::from("/run/netns");
        let made_dir = !dir.exists();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dir.join(format!("memtrace-test-leftover-{}", std::process::id()));
        let guard = Leftover { file, made_dir };
        std::fs::write(&guard.file, b"")
            .with_context(|| format!("creating {}", guard.file.display()))?;
        Ok(guard)
    }
}

impl Drop for Leftover {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        if self.made_dir {
            // Only if empty: someone may have added a namespace meanwhile.
            if let Some(dir) = self.file.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

#[test]
fn leftover_file_in_run_netns_is_not_a_namespace() {
    run(|| {
        use std::os::unix::fs::MetadataExt as _;
        let leftover = Leftover::create()?;
        let inode = std::fs::metadata(&leftover.file)?.ino().to_string();
        let doc = memtrace_sockets()?;
        let notes: Vec<&str> = doc["notes"]
            .as_array()
            .context("no notes array")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        log(&format!(
            "notes with {}: {notes:?}",
            leftover.file.display()
        ));
        // Entering it would fail (setns: EINVAL) and say so in a note naming its inode.
        let about_it: Vec<&&str> = notes
            .iter()
            .filter(|n| {
                n.contains("Invalid argument")
                    || n.split(|c: char| !c.is_ascii_digit()).any(|w| w == inode)
            })
            .collect();
        ensure!(
            about_it.is_empty(),
            "the plain file {} (inode {inode}) was taken for a network namespace: {about_it:?}",
            leftover.file.display()
        );
        Ok(())
    });
}
