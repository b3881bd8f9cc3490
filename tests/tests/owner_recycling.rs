//! A long session recycles its owner table: `memtrace serve` with an owner table of 32 owners
//! (`MEMTRACE_OWNER_CAP`) and this process's page allocations only. Three hundred short-lived
//! threads each put 64 KiB in a pipe of their own, close it and exit: every thread is an owner
//! (thread, name, cgroup), ten times what the table holds. Then one more thread, `mt-late`,
//! fills a 1 MiB pipe and leaves it open.
//!
//! Without recycling the table would have been full since the 32nd thread, and `mt-late`'s
//! pages would be counted under `[other owners]`. With it, the owners of the exited threads
//! (no page outstanding) are forgotten and their indices handed to new owners: the report must
//! attribute the 1 MiB pipe to `mt-late` by its thread id and name, and say how many indices
//! were recycled and reused, with no failure.

use std::{
    fs::File,
    io::Write as _,
    net::SocketAddr,
    os::fd::{FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use memtrace_tests::{http_get, log, run_scenario, Serve, MIB};

const OWNER_CAP: &str = "32";
const THREADS: usize = 300;
const LATE_PIPE: u64 = MIB;
const DEADLINE: Duration = Duration::from_secs(90);

#[test]
fn owners_of_exited_threads_are_recycled_for_new_ones() {
    run_scenario(scenario);
}

fn scenario() -> Result<()> {
    let me = std::process::id().to_string();
    let mut serve = Serve::start_env(
        &["--interval", "1s", "--pid", &me, "--kind", "page"],
        &[("MEMTRACE_OWNER_CAP", OWNER_CAP)],
    )?;
    let addr = serve.addr();

    // Thirty threads a second for ten seconds, each an owner of its own.
    let churn_started = Instant::now();
    for batch in 0..THREADS / 30 {
        let threads: Vec<_> = (0..30)
            .map(|i| {
                std::thread::Builder::new()
                    .name(format!("mt-churn-{batch}-{i}"))
                    .spawn(|| fill_pipe(64 << 10).map(drop))
            })
            .collect::<std::io::Result<_>>()
            .context("spawning a churn thread")?;
        for t in threads {
            t.join()
                .map_err(|_| anyhow::anyhow!("a churn thread panicked"))??;
        }
        std::thread::sleep(
            Duration::from_millis(1000).saturating_sub(Duration::from_millis(
                (churn_started.elapsed().as_millis() % 1000) as u64,
            )),
        );
    }
    // Recycling has caught up: indices wait in the ring.
    let started = Instant::now();
    let recycled = loop {
        let session = session(addr)?;
        let recycled = session["owner_recycling"]["recycled"].as_u64().unwrap_or(0);
        let quarantined = session["owner_recycling"]["quarantined"]
            .as_u64()
            .unwrap_or(0);
        if recycled > 0 && quarantined == 0 {
            break recycled;
        }
        if started.elapsed() > DEADLINE {
            bail!("no owner recycled within {DEADLINE:?}: session {session}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };

    // A new owner after the churn: its pipe stays open.
    let late = std::thread::Builder::new()
        .name("mt-late".into())
        .spawn(|| -> Result<(u32, (OwnedFd, OwnedFd))> {
            // SAFETY: gettid has no arguments and cannot fail.
            let tid = unsafe { libc::gettid() } as u32;
            Ok((tid, fill_pipe(LATE_PIPE)?))
        })
        .context("spawning mt-late")?
        .join()
        .map_err(|_| anyhow::anyhow!("mt-late panicked"))??;
    let (late_tid, _pipe) = late;
    // Two snapshots after the late thread's pages.
    std::thread::sleep(Duration::from_millis(2500));
    let reply = http_get(addr, "/report.json", Duration::from_secs(10))?;
    ensure!(reply.status == 200, "/report.json: {}", reply.status);
    let report: serde_json::Value =
        serde_json::from_slice(&reply.body).context("/report.json is not JSON")?;
    let recycling = &report["session"]["owner_recycling"];
    let (mut late_bytes, mut other_bytes) = (0u64, 0u64);
    for stack in report["stacks"].as_array().into_iter().flatten() {
        for owner in stack["owners"].as_array().into_iter().flatten() {
            let bytes = owner["bytes"].as_u64().unwrap_or(0);
            let comm = owner["comm"].as_str().unwrap_or("");
            if owner["pid"].as_u64() == Some(u64::from(late_tid)) && comm == "mt-late" {
                late_bytes += bytes;
            } else if comm == "[other owners]" {
                other_bytes += bytes;
            }
        }
    }
    let counters = &report["counters"];
    log(&format!(
        "owners: {THREADS} threads in {:.1} s with an owner table of {OWNER_CAP}; recycled {} \
         before mt-late; mt-late (tid {late_tid}) holds {late_bytes} bytes of its {LATE_PIPE} \
         byte pipe; [other owners] {other_bytes} bytes; owner_table_full {}; recycling {}",
        churn_started.elapsed().as_secs_f64(),
        recycled,
        counters["owner_table_full"],
        recycling
    ));
    serve.stop()?;

    ensure!(
        recycling["failures"].as_u64() == Some(0),
        "owner recycling failed: {recycling}"
    );
    ensure!(
        recycling["reused"].as_u64().unwrap_or(0) > 0,
        "no recycled index was reused: {recycling}"
    );
    ensure!(
        counters["owner_table_full"].as_u64().unwrap_or(0) > 0,
        "{THREADS} owners never filled a table of {OWNER_CAP}: the scenario did not test \
         recycling"
    );
    ensure!(
        late_bytes >= LATE_PIPE,
        "mt-late's {LATE_PIPE} byte pipe is attributed to it for only {late_bytes} bytes \
         ([other owners]: {other_bytes})"
    );
    Ok(())
}

/// The `session` object of /report.json.
fn session(addr: SocketAddr) -> Result<serde_json::Value> {
    let reply = http_get(addr, "/report.json", Duration::from_secs(10))?;
    ensure!(reply.status == 200, "/report.json: {}", reply.status);
    let mut report: serde_json::Value =
        serde_json::from_slice(&reply.body).context("/report.json is not JSON")?;
    Ok(report["session"].take())
}

/// A pipe as large as `bytes`, filled with them: pipe buffer pages allocated by this thread.
fn fill_pipe(bytes: u64) -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the valid array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let size = libc::c_int::try_from(bytes).context("pipe size")?;
    // SAFETY: fcntl on a valid fd; F_SETPIPE_SZ takes an int.
    if unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, size) } < 0 {
        return Err(std::io::Error::last_os_error()).context("F_SETPIPE_SZ");
    }
    let mut file = File::from(write.try_clone().context("dup")?);
    let chunk = vec![0x5a_u8; 64 << 10];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n]).context("filling the pipe")?;
        left -= n as u64;
    }
    Ok((read, write))
}
