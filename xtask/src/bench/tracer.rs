//! A tracer process (memtrace or bpftrace) during a benchmark session: start it and wait until
//! its probes are attached, read its footprint, stop it with SIGINT and time the report.
//!
//! The harness reaps the child itself with `waitpid`, so the PID stays ours until then; a drop
//! guard interrupts, then kills, and always reaps a tracer that a failed session leaves running.
//!
//! The peak RSS including the report is `VmHWM` polled while the tracer reports, not
//! `ru_maxrss`: Linux carries the pre-exec high-water mark (the forked harness's, which faults
//! in 64 MiB itself) over `execve` into `ru_maxrss`.

use std::{
    ffi::OsString,
    fs,
    io::{BufRead as _, BufReader, Read},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::cmd;

/// How long attaching may take (memtrace preallocates large maps; bpftrace compiles).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the report may take after SIGINT before the tracer is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// The drop guard's grace period between SIGINT and SIGKILL.
const GUARD_GRACE: Duration = Duration::from_secs(10);
/// Polling interval while waiting for exit: the resolution of "time to report".
const POLL: Duration = Duration::from_millis(1);
/// Every this many polls, `VmHWM` is read again (its last value before the exit is the peak).
const HWM_EVERY: u32 = 5;
/// Stderr lines kept for error messages.
const STDERR_KEEP: usize = 200;

/// What to run and how to recognise that it is attached.
pub struct Spec {
    pub label: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    /// A stderr line starting with this means every probe is attached.
    pub ready_prefix: &'static str,
}

/// One BPF map of the tracer, from its fdinfo.
#[derive(Clone, Debug, Default)]
pub struct MapInfo {
    pub map_id: u64,
    pub map_type: u64,
    pub key_size: u64,
    pub value_size: u64,
    pub max_entries: u64,
    pub memlock: u64,
}

/// Memory the tracer holds while tracing.
#[derive(Clone, Debug, Default)]
pub struct Footprint {
    /// `VmHWM` (peak resident set so far) from /proc/<pid>/status.
    pub vm_hwm_bytes: u64,
    /// `VmRSS` now.
    pub vm_rss_bytes: u64,
    /// Sum of `memlock:` over the fdinfo of its BPF map fds: kernel memory of its maps.
    pub map_memlock_bytes: u64,
    pub maps: u32,
    /// Every map, largest first.
    pub map_details: Vec<MapInfo>,
}

/// How the tracer ended.
#[derive(Clone, Debug)]
pub struct Stopped {
    /// From sending SIGINT to the tracer's exit (polled every millisecond).
    pub time_to_report: Duration,
    /// Peak RSS including the report: the last `VmHWM` read before the exit (read every
    /// 5 ms while it reports).
    pub peak_rss_bytes: u64,
    /// Bytes the tracer printed on stdout (its report).
    pub stdout_bytes: u64,
}

#[derive(Default)]
struct LinesState {
    lines: Vec<String>,
    dropped: usize,
    /// The first line that started with the ready prefix (kept however many lines follow).
    ready: Option<String>,
    eof: bool,
}

/// Stderr lines of the child, filled by a reader thread.
#[derive(Default)]
struct Lines {
    state: Mutex<LinesState>,
    cond: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Lines {
    fn text(&self) -> String {
        let state = lock(&self.state);
        let mut text = String::new();
        if state.dropped > 0 {
            text.push_str(&format!("[{} earlier lines not kept]\n", state.dropped));
        }
        for line in &state.lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Waits until the ready line arrived (true), or EOF or the deadline (false).
    fn wait_ready(&self, deadline: Instant) -> bool {
        let mut state = lock(&self.state);
        loop {
            if state.ready.is_some() {
                return true;
            }
            let now = Instant::now();
            if state.eof || now >= deadline {
                return false;
            }
            state = self
                .cond
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

/// A running tracer; see the module documentation for its life cycle.
pub struct Tracer {
    label: String,
    pid: libc::pid_t,
    /// Set once `wait4` returned the child: from then on the PID is not ours any more.
    reaped: bool,
    /// The wait status of a child found exited by [`Tracer::running`].
    exit_status: Option<libc::c_int>,
    stderr: Arc<Lines>,
    stdout_bytes: Arc<Mutex<u64>>,
    readers: Vec<JoinHandle<()>>,
}

impl Tracer {
    /// Spawns the tracer and waits until its probes are attached.
    pub fn start(spec: &Spec) -> Result<Tracer> {
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}: {}", spec.label, cmd::display(&command)))?;
        let pid = libc::pid_t::try_from(child.id()).context("child pid out of range")?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        // `Child` neither kills nor waits on drop: from here the guard below owns the PID.
        drop(child);
        let mut tracer = Tracer {
            label: spec.label.clone(),
            pid,
            reaped: false,
            exit_status: None,
            stderr: Arc::new(Lines::default()),
            stdout_bytes: Arc::new(Mutex::new(0)),
            readers: Vec::new(),
        };
        let stdout = stdout.context("child stdout was not piped")?;
        let stderr = stderr.context("child stderr was not piped")?;
        tracer.readers.push(count_bytes(
            stdout,
            Arc::clone(&tracer.stdout_bytes),
            format!("{}-stdout", spec.label),
        )?);
        tracer.readers.push(collect_lines(
            stderr,
            Arc::clone(&tracer.stderr),
            spec.ready_prefix,
            format!("{}-stderr", spec.label),
        )?);

        let started = Instant::now();
        if !tracer.stderr.wait_ready(started + READY_TIMEOUT) {
            bail!(
                "{} (pid {pid}) never printed a line starting with {:?} (waited {:.1?}); its \
                 stderr:\n{}",
                spec.label,
                spec.ready_prefix,
                started.elapsed(),
                tracer.stderr.text()
            );
        }
        Ok(tracer)
    }

    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// The stderr line that said the tracer is ready (e.g. memtrace serve's address).
    pub fn ready_line(&self) -> Option<String> {
        lock(&self.stderr.state).ready.clone()
    }

    /// The last stderr lines (at most 200), for error messages.
    pub fn stderr_text(&self) -> String {
        self.stderr.text()
    }

    /// How the tracer ended, once [`Tracer::running`] found it exited.
    pub fn exit_description(&self) -> Option<String> {
        self.exit_status.map(describe)
    }

    /// Whether the tracer is still running (not exited). An exited tracer is reaped here and
    /// its wait status kept for [`Tracer::stop_with`].
    pub fn running(&mut self) -> Result<bool> {
        if self.exit_status.is_none() && !self.reaped {
            self.exit_status = self.try_reap()?;
        }
        Ok(self.exit_status.is_none())
    }

    /// Peak RSS so far and the kernel memory of its BPF maps.
    pub fn footprint(&self) -> Result<Footprint> {
        footprint(self.pid).with_context(|| format!("reading the footprint of {}", self.label))
    }

    /// SIGINT, then waits for the exit (the report written); fails unless it exited with 0.
    pub fn stop(self) -> Result<Stopped> {
        self.stop_with(libc::SIGINT, STOP_TIMEOUT)
    }

    /// `signal`, then waits up to `timeout` for the exit (killed after it); fails unless it
    /// exited with 0. A tracer that had already exited is not signalled: its own status counts.
    pub fn stop_with(mut self, signal: libc::c_int, timeout: Duration) -> Result<Stopped> {
        let mut peak_rss_bytes = vm_hwm(self.pid).unwrap_or(0);
        let sent = Instant::now();
        let status = match self.exit_status {
            Some(status) => status,
            None => {
                self.signal(signal)?;
                self.wait_exit(sent + timeout, &mut peak_rss_bytes)?
            }
        };
        let time_to_report = sent.elapsed();
        for reader in self.readers.drain(..) {
            // A reader ends at EOF, which follows the exit (memtrace starts no children).
            let _ = reader.join();
        }
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            bail!(
                "{} (pid {}) ended with {} after {}; its stderr:\n{}",
                self.label,
                self.pid,
                describe(status),
                signal_name(signal),
                self.stderr.text()
            );
        }
        let stdout_bytes = *lock(&self.stdout_bytes);
        Ok(Stopped {
            time_to_report,
            peak_rss_bytes,
            stdout_bytes,
        })
    }

    fn signal(&self, signal: libc::c_int) -> Result<()> {
        if self.reaped {
            bail!("{} (pid {}) was already reaped", self.label, self.pid);
        }
        // SAFETY: kill() has no memory-safety preconditions. `pid` is our child and has not
        // been reaped (checked above), so the PID cannot belong to another process.
        if unsafe { libc::kill(self.pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("kill({}, {signal}) for {}", self.pid, self.label));
        }
        Ok(())
    }

    /// Polls `waitpid` until the child exited or `deadline` passed (then SIGKILL and fail),
    /// raising `peak_rss` to the child's `VmHWM` now and then.
    fn wait_exit(&mut self, deadline: Instant, peak_rss: &mut u64) -> Result<libc::c_int> {
        let started = Instant::now();
        for polls in 0u32.. {
            if let Some(status) = self.try_reap()? {
                return Ok(status);
            }
            if polls % HWM_EVERY == 0 {
                // Gone once the exiting process released its memory: keep the last value.
                if let Some(hwm) = vm_hwm(self.pid) {
                    *peak_rss = (*peak_rss).max(hwm);
                }
            }
            if Instant::now() >= deadline {
                self.kill_and_reap();
                bail!(
                    "{} (pid {}) did not exit within {:?} of the signal; killed it. Its \
                     stderr:\n{}",
                    self.label,
                    self.pid,
                    deadline.saturating_duration_since(started),
                    self.stderr.text()
                );
            }
            std::thread::sleep(POLL);
        }
        unreachable!("the poll loop only ends by returning")
    }

    /// One non-blocking `waitpid`: the wait status once the child exited.
    fn try_reap(&mut self) -> Result<Option<libc::c_int>> {
        if self.reaped {
            bail!("{} (pid {}) was already reaped", self.label, self.pid);
        }
        let mut status: libc::c_int = 0;
        loop {
            // SAFETY: `status` is a live local that waitpid fills in.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if rc == self.pid {
                self.reaped = true;
                return Ok(Some(status));
            }
            if rc == 0 {
                return Ok(None);
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err)
                    .with_context(|| format!("waitpid({}) for {}", self.pid, self.label));
            }
        }
    }

    fn kill_and_reap(&mut self) {
        if self.reaped {
            return;
        }
        let _ = self.signal(libc::SIGKILL);
        let mut status: libc::c_int = 0;
        loop {
            // SAFETY: `status` is a live local; a blocking wait for our own unreaped child.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if rc == self.pid
                || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                break;
            }
        }
        self.reaped = true;
    }
}

impl Drop for Tracer {
    /// A tracer left running by a failed session: SIGINT (memtrace detaches and reports), then
    /// SIGKILL after a grace period; reaped either way. Closing its fds detaches its programs.
    fn drop(&mut self) {
        if !self.reaped {
            eprintln!(
                "[xtask] stopping {} (pid {}) left running",
                self.label, self.pid
            );
            if self.signal(libc::SIGINT).is_ok() {
                let _ = self.wait_exit(Instant::now() + GUARD_GRACE, &mut 0);
            }
            self.kill_and_reap();
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

fn count_bytes(
    mut pipe: impl Read + Send + 'static,
    total: Arc<Mutex<u64>>,
    name: String,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => *lock(&total) += n as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        })
        .context("spawning an output reader thread")
}

fn collect_lines(
    pipe: impl Read + Send + 'static,
    lines: Arc<Lines>,
    ready_prefix: &'static str,
    name: String,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']);
                        let mut state = lock(&lines.state);
                        if state.ready.is_none() && line.starts_with(ready_prefix) {
                            state.ready = Some(line.to_string());
                        }
                        if state.lines.len() >= STDERR_KEEP {
                            state.lines.remove(0);
                            state.dropped += 1;
                        }
                        state.lines.push(line.to_string());
                        drop(state);
                        lines.cond.notify_all();
                    }
                }
            }
            lock(&lines.state).eof = true;
            lines.cond.notify_all();
        })
        .context("spawning an output reader thread")
}

fn signal_name(signal: libc::c_int) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGKILL => "SIGKILL".into(),
        other => format!("signal {other}"),
    }
}

fn describe(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

/// A `VmXXX:   1234 kB` line of /proc/<pid>/status, in bytes.
pub(crate) fn status_kib(status: &str, key: &str) -> Option<u64> {
    let rest = status.lines().find_map(|l| l.strip_prefix(key))?;
    let kib = rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    Some(kib * 1024)
}

fn vm_hwm(pid: libc::pid_t) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&status, "VmHWM:")
}

fn footprint(pid: libc::pid_t) -> Result<Footprint> {
    let status_path = format!("/proc/{pid}/status");
    let status =
        fs::read_to_string(&status_path).with_context(|| format!("reading {status_path}"))?;
    let vm_hwm_bytes = status_kib(&status, "VmHWM:").context("no VmHWM line")?;
    let vm_rss_bytes = status_kib(&status, "VmRSS:").context("no VmRSS line")?;

    let fd_dir = format!("/proc/{pid}/fd");
    let mut map_details = Vec::new();
    for entry in fs::read_dir(&fd_dir).with_context(|| format!("listing {fd_dir}"))? {
        let entry = entry.with_context(|| format!("listing {fd_dir}"))?;
        // An fd closed since the listing is simply skipped.
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        if target.as_os_str() != "anon_inode:bpf-map" {
            continue;
        }
        let fdinfo = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        let Ok(info) = fs::read_to_string(&fdinfo) else {
            continue;
        };
        let field = |key: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        map_details.push(MapInfo {
            map_id: field("map_id").unwrap_or(0),
            map_type: field("map_type").unwrap_or(0),
            key_size: field("key_size").unwrap_or(0),
            value_size: field("value_size").unwrap_or(0),
            max_entries: field("max_entries").unwrap_or(0),
            memlock: field("memlock").with_context(|| format!("{fdinfo} has no memlock line"))?,
        });
    }
    map_details.sort_by_key(|m| std::cmp::Reverse(m.memlock));
    Ok(Footprint {
        vm_hwm_bytes,
        vm_rss_bytes,
        map_memlock_bytes: map_details.iter().map(|m| m.memlock).sum(),
        maps: u32::try_from(map_details.len()).unwrap_or(u32::MAX),
        map_details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        let status = "Name:\tmemtrace\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(20480 * 1024));
        assert_eq!(status_kib(status, "VmRSS:"), Some(10240 * 1024));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn own_footprint_is_readable() {
        // SAFETY: getpid() has no preconditions.
        let me = unsafe { libc::getpid() };
        let fp = footprint(me).expect("footprint of this process");
        assert!(fp.vm_rss_bytes > 0);
        assert!(fp.vm_hwm_bytes >= fp.vm_rss_bytes);
    }
}
