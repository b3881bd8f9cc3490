//! Running the memtrace binary: spawn, wait for readiness, signal, collect output.
//!
//! Every child is killed (SIGKILL, by PID) and reaped by a drop guard if a test leaves it
//! running, e.g. because an assertion failed first.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tempfile::TempDir;

use crate::env::memtrace_bin;
use crate::report::Report;

/// memtrace prints a stderr line starting with this once its programs are attached.
pub const READY_PREFIX: &str = "memtrace: tracing";

const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Stopping includes reading the maps and symbolizing: be generous, it is not a benchmark.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// After the child exited, how long its output pipes may take to reach EOF.
const EOF_TIMEOUT: Duration = Duration::from_secs(10);
/// `nobody` / `nogroup`.
const UNPRIVILEGED_ID: u32 = 65534;

/// PIDs of every process this test binary spawned (for the loaded-programs check).
static SPAWNED: Mutex<Vec<u32>> = Mutex::new(Vec::new());

pub(crate) fn spawned_pids() -> Vec<u32> {
    lock(&SPAWNED).clone()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking reader thread must not hide the output gathered so far.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Lines read from one of the child's pipes, filled by a reader thread.
#[derive(Default)]
struct Stream {
    state: Mutex<StreamState>,
    cond: Condvar,
}

#[derive(Default)]
struct StreamState {
    lines: Vec<String>,
    eof: bool,
}

impl Stream {
    fn capture<R: Read + Send + 'static>(reader: R, name: String) -> Result<Arc<Stream>> {
        let stream = Arc::new(Stream::default());
        let filler = Arc::clone(&stream);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let mut reader = BufReader::new(reader);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&buf);
                            let line = line.trim_end_matches(['\n', '\r']).to_string();
                            lock(&filler.state).lines.push(line);
                            filler.cond.notify_all();
                        }
                    }
                }
                lock(&filler.state).eof = true;
                filler.cond.notify_all();
            })
            .context("spawning an output reader thread")?;
        Ok(stream)
    }

    fn lines(&self) -> Vec<String> {
        lock(&self.state).lines.clone()
    }

    fn text(&self) -> String {
        let state = lock(&self.state);
        let mut text = state.lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        text
    }

    /// Waits until `pred(lines)` holds or EOF or `deadline`; returns whether `pred` held.
    fn wait_for(&self, deadline: Instant, pred: impl Fn(&[String]) -> bool) -> bool {
        let mut state = lock(&self.state);
        loop {
            if pred(&state.lines) {
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

    fn wait_eof(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.state);
        while !state.eof {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .cond
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        true
    }
}

/// A spawned child with captured stdout/stderr; killed and reaped on drop if still running.
struct Process {
    label: String,
    child: Child,
    pid: u32,
    status: Option<ExitStatus>,
    stdout: Arc<Stream>,
    stderr: Arc<Stream>,
}

impl Process {
    fn spawn(label: &str, mut cmd: Command) -> Result<Process> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        crate::programs::note_spawn();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning memtrace {label}: {cmd:?}"))?;
        let pid = child.id();
        lock(&SPAWNED).push(pid);
        // From here on the drop guard owns the child, even if setting up the readers fails.
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut process = Process {
            label: label.to_string(),
            child,
            pid,
            status: None,
            stdout: Arc::new(Stream::default()),
            stderr: Arc::new(Stream::default()),
        };
        process.stdout = Stream::capture(
            stdout.context("child stdout was not piped")?,
            format!("{label}-stdout"),
        )?;
        process.stderr = Stream::capture(
            stderr.context("child stderr was not piped")?,
            format!("{label}-stderr"),
        )?;
        Ok(process)
    }

    fn poll_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().with_context(|| {
                format!("waiting for memtrace {} (pid {})", self.label, self.pid)
            })?;
        }
        Ok(self.status)
    }

    fn signal(&mut self, signal: libc::c_int) -> Result<()> {
        ensure!(
            self.poll_status()?.is_none(),
            "memtrace {} (pid {}) already exited ({}) before it could be signalled; stderr:\n{}",
            self.label,
            self.pid,
            describe(self.status),
            self.stderr.text()
        );
        let pid = libc::pid_t::try_from(self.pid).context("pid out of range")?;
        // SAFETY: kill() has no memory-safety preconditions; `pid` is our own child, which has
        // not been reaped yet (poll_status returned None), so the PID cannot have been reused.
        let rc = unsafe { libc::kill(pid, signal) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| {
                format!(
                    "sending signal {signal} to memtrace {} (pid {pid})",
                    self.label
                )
            });
        }
        Ok(())
    }

    /// Waits for the child to exit; on timeout kills it and fails.
    fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.poll_status()? {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "memtrace {} (pid {}) did not exit within {timeout:?}; killed it. stderr:\n{}",
                    self.label,
                    self.pid,
                    self.stderr.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout_done = self.stdout.wait_eof(EOF_TIMEOUT);
        let stderr_done = self.stderr.wait_eof(EOF_TIMEOUT);
        ensure!(
            stdout_done && stderr_done,
            "memtrace {} exited but its output pipes stayed open for {EOF_TIMEOUT:?} \
             (a leftover grandchild?)",
            self.label
        );
        eprintln!(
            "--- memtrace {} (pid {}) exited: {}; stderr:\n{}---",
            self.label,
            self.pid,
            describe(Some(status)),
            self.stderr.text()
        );
        Ok(status)
    }

    fn kill(&mut self) {
        if let Ok(None) = self.poll_status() {
            // Child::kill sends SIGKILL to this child's PID only.
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.status = Some(status);
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn describe(status: Option<ExitStatus>) -> String {
    match status {
        None => "still running".to_string(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => format!("{s}"),
        },
    }
}

/// A memtrace `trace` session writing `--json` and `--folded` files into its own temp dir.
pub struct Tracer {
    process: Process,
    json: PathBuf,
    folded: PathBuf,
    // Keeps the report files alive until the tracer handle is dropped.
    _dir: TempDir,
}

impl Tracer {
    /// Spawns `memtrace trace <args> --json <tmp> --folded <tmp>` without waiting for it.
    /// `label` names it in log lines and errors (e.g. "A").
    pub fn spawn(label: &str, args: &[&str]) -> Result<Tracer> {
        Tracer::spawn_bin(&memtrace_bin(), label, args)
    }

    /// [`Tracer::spawn`] with extra environment variables for memtrace.
    pub fn spawn_env(label: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Tracer> {
        Tracer::spawn_inner(&memtrace_bin(), label, args, env)
    }

    /// [`Tracer::spawn_env`] then [`Tracer::wait_ready`].
    pub fn start_env(label: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Tracer> {
        let mut tracer = Tracer::spawn_env(label, args, env)?;
        tracer.wait_ready()?;
        Ok(tracer)
    }

    /// [`Tracer::spawn`] of another binary (e.g. a stand-in for testing the harness).
    pub fn spawn_bin(bin: &Path, label: &str, args: &[&str]) -> Result<Tracer> {
        Tracer::spawn_inner(bin, label, args, &[])
    }

    fn spawn_inner(bin: &Path, label: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Tracer> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("memtrace-{label}-"))
            .tempdir()
            .context("creating a temp dir for the reports")?;
        let json = dir.path().join("report.json");
        let folded = dir.path().join("report.folded");
        let mut cmd = Command::new(bin);
        cmd.envs(env.iter().copied());
        cmd.arg("trace")
            .args(args)
            .arg("--json")
            .arg(&json)
            .arg("--folded")
            .arg(&folded);
        let process = Process::spawn(label, cmd)?;
        eprintln!(
            "memtrace {label}: started pid {} ({} trace {})",
            process.pid,
            bin.display(),
            args.join(" ")
        );
        Ok(Tracer {
            process,
            json,
            folded,
            _dir: dir,
        })
    }

    /// [`Tracer::spawn`] then [`Tracer::wait_ready`] with the default timeout (60 s).
    pub fn start(label: &str, args: &[&str]) -> Result<Tracer> {
        let mut tracer = Tracer::spawn(label, args)?;
        tracer.wait_ready()?;
        Ok(tracer)
    }

    /// Waits for the `memtrace: tracing` stderr line (60 s).
    pub fn wait_ready(&mut self) -> Result<()> {
        self.wait_ready_within(READY_TIMEOUT)
    }

    pub fn wait_ready_within(&mut self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let ready = self.process.stderr.wait_for(started + timeout, |lines| {
            lines.iter().any(|l| l.starts_with(READY_PREFIX))
        });
        if ready {
            eprintln!(
                "memtrace {}: ready after {:.1?}",
                self.process.label,
                started.elapsed()
            );
            return Ok(());
        }
        // Either stderr closed (it exited or is exiting: give it a moment to become
        // reapable) or the timeout passed.
        let reap_deadline = Instant::now() + Duration::from_secs(5);
        let mut status = self.process.poll_status()?;
        while status.is_none()
            && lock(&self.process.stderr.state).eof
            && Instant::now() < reap_deadline
        {
            std::thread::sleep(Duration::from_millis(20));
            status = self.process.poll_status()?;
        }
        bail!(
            "memtrace {} (pid {}) never printed {READY_PREFIX:?} (waited {:.1?}, {}); \
             stderr so far:\n{}",
            self.process.label,
            self.process.pid,
            started.elapsed(),
            describe(status),
            self.process.stderr.text()
        )
    }

    pub fn label(&self) -> &str {
        &self.process.label
    }

    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) without waiting.
    pub fn signal(&mut self, signal: libc::c_int) -> Result<()> {
        self.process.signal(signal)
    }

    /// Waits for exit (killing it and failing after `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.process.wait_exit(timeout)
    }

    /// SIGINT, then waits for exit (120 s). Does not check the exit code.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.stop_with(libc::SIGINT)
    }

    /// `signal`, then waits for exit (120 s). Does not check the exit code.
    pub fn stop_with(&mut self, signal: libc::c_int) -> Result<ExitStatus> {
        self.signal(signal)?;
        self.wait_exit(STOP_TIMEOUT)
    }

    /// SIGINT, requires exit code 0, parses the JSON report.
    pub fn stop_and_report(&mut self) -> Result<Report> {
        let status = self.stop()?;
        ensure!(
            status.code() == Some(0),
            "memtrace {} ended with {} instead of exit code 0; stderr:\n{}",
            self.label(),
            describe(Some(status)),
            self.stderr()
        );
        self.report()
    }

    /// The exit status, once it exited.
    pub fn status(&mut self) -> Result<Option<ExitStatus>> {
        self.process.poll_status()
    }

    /// Everything it printed on stdout so far (the text report once it exited).
    pub fn stdout(&self) -> String {
        self.process.stdout.text()
    }

    pub fn stderr(&self) -> String {
        self.process.stderr.text()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.process.stderr.lines()
    }

    pub fn json_path(&self) -> &Path {
        &self.json
    }

    pub fn folded_path(&self) -> &Path {
        &self.folded
    }

    /// The `--json` file as a generic value.
    pub fn json(&self) -> Result<serde_json::Value> {
        let text = std::fs::read_to_string(&self.json)
            .with_context(|| format!("reading {}", self.json.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", self.json.display()))
    }

    /// The `--json` file, typed and validated ([`Report::from_json_file`]).
    pub fn report(&self) -> Result<Report> {
        Report::from_json_file(&self.json)
    }

    /// The `--folded` file.
    pub fn folded(&self) -> Result<String> {
        std::fs::read_to_string(&self.folded)
            .with_context(|| format!("reading {}", self.folded.display()))
    }
}

/// A finished run of the binary.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs `memtrace <args>` to completion (killed and failing after `timeout`).
pub fn run_memtrace(args: &[&str], timeout: Duration) -> Result<Finished> {
    run_memtrace_env(args, &[], timeout)
}

/// [`run_memtrace`] with extra environment variables.
pub fn run_memtrace_env(
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<Finished> {
    let mut cmd = Command::new(memtrace_bin());
    cmd.args(args).envs(env.iter().copied());
    run(&args.join(" "), cmd, timeout)
}

/// Runs `memtrace <args>` as uid/gid 65534 with no supplementary groups (so without any
/// capability), to completion (killed and failing after `timeout`).
pub fn run_memtrace_unprivileged(args: &[&str], timeout: Duration) -> Result<Finished> {
    run_unprivileged(memtrace_bin(), args, timeout)
}

fn run_unprivileged(bin: PathBuf, args: &[&str], timeout: Duration) -> Result<Finished> {
    // `nobody` must be able to execute the binary; if a directory on the way is closed to
    // others, run a world-executable copy instead.
    let copy_dir;
    let bin = if executable_by_others(&bin)? {
        bin
    } else {
        copy_dir = tempfile::Builder::new()
            .prefix("memtrace-unpriv-")
            .tempdir()
            .context("creating a temp dir for a world-executable copy")?;
        std::fs::set_permissions(copy_dir.path(), std::fs::Permissions::from_mode(0o755))
            .context("chmod 755 on the temp dir")?;
        let copy = copy_dir.path().join("memtrace");
        std::fs::copy(&bin, &copy)
            .with_context(|| format!("copying {} to {}", bin.display(), copy.display()))?;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
            .context("chmod 755 on the copy")?;
        copy
    };
    let mut cmd = Command::new(&bin);
    cmd.args(args).current_dir("/");
    let id = UNPRIVILEGED_ID;
    // SAFETY: the closure runs in the forked child before exec; it only calls the
    // async-signal-safe setgroups/setgid/setuid and builds io::Error from errno, which does not
    // allocate. Dropping groups and then gid before uid is the order that can succeed; a uid
    // change away from 0 clears the permitted and effective capability sets.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(id) != 0
                || libc::setuid(id) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    run(&format!("(uid {id}) {}", args.join(" ")), cmd, timeout)
}

fn run(label: &str, cmd: Command, timeout: Duration) -> Result<Finished> {
    let mut process = Process::spawn(label, cmd)?;
    let status = process.wait_exit(timeout)?;
    Ok(Finished {
        status,
        stdout: process.stdout.text(),
        stderr: process.stderr.text(),
    })
}

fn executable_by_others(bin: &Path) -> Result<bool> {
    let bin = bin
        .canonicalize()
        .with_context(|| format!("resolving {}", bin.display()))?;
    // The file and every directory above it need the "others may execute/search" bit.
    for path in bin.ancestors() {
        let mode = std::fs::metadata(path)
            .with_context(|| format!("stat {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The line `memtrace serve` prints once it serves (`memtrace: serving http://ADDR/ ...`).
pub const SERVING_PREFIX: &str = "memtrace: serving http://";

/// A `memtrace serve` process on a free loopback port; killed on drop if still running.
pub struct Serve {
    process: Process,
    addr: std::net::SocketAddr,
}

impl Serve {
    /// Spawns `memtrace serve --listen 127.0.0.1:0 <args>` and waits (60 s) until it serves.
    pub fn start(args: &[&str]) -> Result<Serve> {
        Serve::start_env(args, &[])
    }

    /// [`Serve::start`] with extra environment variables (test knobs such as
    /// `MEMTRACE_OWNER_CAP`).
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Result<Serve> {
        let mut cmd = Command::new(memtrace_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied());
        let mut process = Process::spawn("serve", cmd)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let serving = |lines: &[String]| lines.iter().any(|l| l.starts_with(SERVING_PREFIX));
        if !process.stderr.wait_for(deadline, serving) {
            let status = process.poll_status()?;
            bail!(
                "memtrace serve (pid {}) never said it serves ({}); stderr:\n{}",
                process.pid,
                describe(status),
                process.stderr.text()
            );
        }
        let line = process
            .stderr
            .lines()
            .into_iter()
            .find(|l| l.starts_with(SERVING_PREFIX))
            .context("the serving line vanished")?;
        let addr = line[SERVING_PREFIX.len()..]
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("no address in {line:?}"))?;
        eprintln!("memtrace serve: pid {} serving {addr}", process.pid);
        Ok(Serve { process, addr })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> Result<bool> {
        Ok(self.process.poll_status()?.is_none())
    }

    /// SIGTERM, then waits (60 s) for it to exit.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.process.signal(libc::SIGTERM)?;
        self.process.wait_exit(Duration::from_secs(60))
    }

    pub fn stderr(&self) -> String {
        self.process.stderr.text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shell stand-in following memtrace's process contract, to test the harness itself.
    const FAKE: &str = r#"#!/bin/sh
json=""; folded=""; mode=""
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json=$2; shift ;;
    --folded) folded=$2; shift ;;
    --mode) mode=$2; shift ;;
    --duration) case "$2" in *s|*m) ;; *) echo "error: invalid value '$2' for '--duration <DURATION>'" >&2; exit 2 ;; esac; shift ;;
  esac
  shift
done
if [ "$(id -u)" != 0 ]; then
  echo "memtrace: not privileged: needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN / root)" >&2
  exit 3
fi
if [ "$mode" = die ]; then echo "memtrace: cannot load: boom" >&2; exit 4; fi
finish() { cat "$0.json" > "$json"; printf 'outer;inner 32768\n' > "$folded"; echo "report: skb_page_frag_refill"; exit 0; }
if [ "$mode" != stubborn ]; then trap finish INT TERM; else trap '' INT TERM; fi
echo "memtrace: starting" >&2
echo "memtrace: tracing page allocations" >&2
while :; do sleep 0.05; done
"#;

    fn fake() -> Result<(TempDir, PathBuf)> {
        let dir = tempfile::tempdir()?;
        let bin = dir.path().join("fake-memtrace");
        std::fs::write(&bin, FAKE)?;
        std::fs::write(
            dir.path().join("fake-memtrace.json"),
            crate::report::tests::SAMPLE,
        )?;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
        Ok((dir, bin))
    }

    fn alive(pid: u32) -> bool {
        // SAFETY: signal 0 only checks whether the process exists.
        unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
    }

    #[test]
    fn start_stop_and_read_the_reports() -> Result<()> {
        let (_dir, bin) = fake()?;
        let mut tracer = Tracer::spawn_bin(&bin, "fake", &["--duration", "10m"])?;
        tracer.wait_ready()?;
        let report = tracer.stop_and_report()?;
        assert_eq!(report.schema, 1);
        assert!(tracer.stdout().contains("skb_page_frag_refill"));
        assert_eq!(tracer.folded()?, "outer;inner 32768\n");
        assert_eq!(tracer.stderr_lines().len(), 2);
        Ok(())
    }

    #[test]
    fn early_exit_is_reported_with_its_stderr() -> Result<()> {
        let (_dir, bin) = fake()?;
        let mut tracer = Tracer::spawn_bin(&bin, "fake", &["--mode", "die"])?;
        let err = tracer.wait_ready().expect_err("it never gets ready");
        let msg = format!("{err:#}");
        assert!(msg.contains("boom"), "{msg}");
        assert!(msg.contains("exit code 4"), "{msg}");
        Ok(())
    }

    #[test]
    fn stop_times_out_and_drop_kills() -> Result<()> {
        let (_dir, bin) = fake()?;
        let mut tracer = Tracer::spawn_bin(&bin, "fake", &["--mode", "stubborn"])?;
        tracer.wait_ready()?;
        let pid = tracer.pid();
        tracer.signal(libc::SIGINT)?;
        assert!(tracer.wait_exit(Duration::from_millis(300)).is_err());
        assert!(
            tracer.status()?.is_some(),
            "killed and reaped after the timeout"
        );

        let mut tracer = Tracer::spawn_bin(&bin, "fake", &["--mode", "stubborn"])?;
        tracer.wait_ready()?;
        let pid2 = tracer.pid();
        assert!(alive(pid2));
        drop(tracer);
        assert!(!alive(pid2), "drop guard killed and reaped {pid2}");
        assert_ne!(pid, pid2);
        Ok(())
    }

    #[test]
    fn unprivileged_child_has_no_root() -> Result<()> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: dropping privileges needs root");
            return Ok(());
        }
        let (_dir, bin) = fake()?;
        let run = run_unprivileged(bin, &["trace"], Duration::from_secs(30))?;
        assert_eq!(run.code(), Some(3), "{run:?}");
        assert!(run.stderr.contains("CAP_PERFMON"));
        Ok(())
    }
}
