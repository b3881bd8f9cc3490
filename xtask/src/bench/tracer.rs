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
    os::{
        fd::{AsRawFd as _, FromRawFd as _},
        unix::process::CommandExt as _,
    },
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
    /// Entries of the report on stdout to count (bpftrace's map printed at exit).
    pub count_entries: Option<EntryMatch>,
    /// Send SIGINT again while the tracer neither exits nor prints (bpftrace sometimes loses
    /// a SIGINT that arrives early, and a second one only asks it again to print and exit;
    /// memtrace takes a second one while reporting as "stop now").
    pub resend_sigint: bool,
}

/// How long a tracer that [`Spec::resend_sigint`] may neither exit nor print before SIGINT is
/// sent again.
const RESEND_AFTER: Duration = Duration::from_secs(5);

/// Which entries of a map printed on stdout to count: an entry starts with a line beginning
/// with `start`, and counts when one of its lines contains `frame` and none contains
/// `exclude`.
#[derive(Clone, Copy, Debug)]
pub struct EntryMatch {
    pub start: &'static str,
    pub frame: &'static str,
    pub exclude: &'static str,
}

/// One BPF program of the tracer, from its fdinfo (run statistics need
/// `kernel.bpf_stats_enabled=1`).
#[derive(Clone, Debug, Default)]
pub struct ProgInfo {
    /// The program's name (`bpf_prog_info.name`), or its tag when it cannot be read.
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
    pub recursion_misses: u64,
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
    /// Every program.
    pub programs: Vec<ProgInfo>,
}

/// How the tracer ended.
#[derive(Clone, Debug)]
pub struct Stopped {
    /// From sending SIGINT to the tracer's exit (polled every millisecond); when it hung, until
    /// it was killed.
    pub time_to_report: Duration,
    /// It did not exit within [`STOP_TIMEOUT`] of SIGINT and was killed: no report.
    pub hung: bool,
    /// Peak RSS including the report: the last `VmHWM` read before the exit (read every
    /// 5 ms while it reports).
    pub peak_rss_bytes: u64,
    /// Bytes the tracer printed on stdout (its report).
    pub stdout_bytes: u64,
    /// Entries of its stdout report that matched [`Spec::count_entries`].
    pub entries_matched: u64,
}

/// How long the report may take after SIGINT before the tracer is killed (and the session
/// recorded as hung).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(120);

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
    stdout: Arc<Mutex<StdoutStats>>,
    readers: Vec<JoinHandle<()>>,
    resend_sigint: bool,
    /// SIGINT was sent again while waiting for the exit ([`Spec::resend_sigint`]).
    resent: bool,
}

/// What the stdout reader saw.
#[derive(Default)]
struct StdoutStats {
    bytes: u64,
    matched: u64,
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
        // A harness started in the background (no job control) ignores SIGINT, and ignored
        // signals stay ignored across exec: the tracer gets the default disposition back, so
        // the SIGINT that stops it is never lost (bpftrace installs its handler only after it
        // says its probes are attached).
        // SAFETY: runs in the forked child before exec; signal() is async-signal-safe and
        // touches nothing but the child's own signal disposition.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
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
            stdout: Arc::new(Mutex::new(StdoutStats::default())),
            readers: Vec::new(),
            resend_sigint: spec.resend_sigint,
            resent: false,
        };
        let stdout = stdout.context("child stdout was not piped")?;
        let stderr = stderr.context("child stderr was not piped")?;
        tracer.readers.push(count_stdout(
            stdout,
            Arc::clone(&tracer.stdout),
            spec.count_entries,
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

    /// SIGINT, then waits for the exit (the report written): [`Tracer::stop_with`].
    pub fn stop(self) -> Result<Stopped> {
        self.stop_with(libc::SIGINT, STOP_TIMEOUT)
    }

    /// `signal`, then waits up to `timeout` for the exit; fails unless it exited with 0. A
    /// tracer that does not exit in time is killed and recorded as hung (not an error: the
    /// bench goes on; the soak fails on it). A tracer that had already exited is not
    /// signalled: its own status counts.
    pub fn stop_with(mut self, signal: libc::c_int, timeout: Duration) -> Result<Stopped> {
        let mut peak_rss_bytes = vm_hwm(self.pid).unwrap_or(0);
        let sent = Instant::now();
        let status = match self.exit_status {
            Some(status) => Some(status),
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
        // A tracer that neither exited nor printed was sent SIGINT again: if that one ended
        // it (bpftrace leaves SIGINT at its default then), it wrote no report either.
        let interrupted = self.resent
            && status.is_some_and(|st| libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGINT);
        let status = if interrupted { None } else { status };
        let hung = status.is_none();
        if hung {
            eprintln!(
                "[xtask] {} (pid {}) did not exit within {timeout:?} of {}: killed, recorded \
                 as hung; its stderr:\n{}",
                self.label,
                self.pid,
                signal_name(signal),
                self.stderr.text()
            );
        }
        if let Some(status) = status {
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
        }
        let out = lock(&self.stdout);
        Ok(Stopped {
            time_to_report,
            hung,
            peak_rss_bytes,
            stdout_bytes: out.bytes,
            entries_matched: out.matched,
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

    /// Polls `waitpid` until the child exited (its status) or `deadline` passed (then SIGKILL,
    /// reaped, `None`), raising `peak_rss` to the child's `VmHWM` now and then.
    fn wait_exit(&mut self, deadline: Instant, peak_rss: &mut u64) -> Result<Option<libc::c_int>> {
        let mut last_sent = Instant::now();
        let mut printed = lock(&self.stdout).bytes;
        for polls in 0u32.. {
            if let Some(status) = self.try_reap()? {
                return Ok(Some(status));
            }
            if self.resend_sigint && last_sent.elapsed() >= RESEND_AFTER {
                let now_printed = lock(&self.stdout).bytes;
                if now_printed == printed {
                    eprintln!(
                        "[bench] {} (pid {}) neither exits nor prints: SIGINT again",
                        self.label, self.pid
                    );
                    self.signal(libc::SIGINT)?;
                    self.resent = true;
                }
                printed = now_printed;
                last_sent = Instant::now();
            }
            if polls % HWM_EVERY == 0 {
                // Gone once the exiting process released its memory: keep the last value.
                if let Some(hwm) = vm_hwm(self.pid) {
                    *peak_rss = (*peak_rss).max(hwm);
                }
            }
            if Instant::now() >= deadline {
                self.kill_and_reap();
                return Ok(None);
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

fn count_stdout(
    pipe: impl Read + Send + 'static,
    stats: Arc<Mutex<StdoutStats>>,
    entries: Option<EntryMatch>,
    name: String,
) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut reader = BufReader::with_capacity(64 << 10, pipe);
            let mut line = Vec::new();
            // The entry being read: (has the frame, has the excluded frame).
            let mut entry: Option<(bool, bool)> = None;
            let mut matched = 0u64;
            let mut finish = |entry: &mut Option<(bool, bool)>| {
                if let Some((true, false)) = entry.take() {
                    matched += 1;
                }
            };
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) => break,
                    Ok(n) => {
                        lock(&stats).bytes += n as u64;
                        let Some(m) = entries else { continue };
                        let text = String::from_utf8_lossy(&line);
                        if text.starts_with(m.start) {
                            finish(&mut entry);
                            entry = Some((false, false));
                        }
                        if let Some((has, excluded)) = entry.as_mut() {
                            *has |= text.contains(m.frame);
                            *excluded |= text.contains(m.exclude);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            finish(&mut entry);
            lock(&stats).matched = matched;
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
        programs: programs(pid, &fd_dir)?,
    })
}

/// The BPF programs `pid` holds, from the fdinfo of its `bpf-prog` fds.
fn programs(pid: libc::pid_t, fd_dir: &str) -> Result<Vec<ProgInfo>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(fd_dir).with_context(|| format!("listing {fd_dir}"))? {
        let entry = entry.with_context(|| format!("listing {fd_dir}"))?;
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        if target.as_os_str() != "anon_inode:bpf-prog" {
            continue;
        }
        let fd_name = entry.file_name().to_string_lossy().into_owned();
        let Ok(info) = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd_name}")) else {
            continue;
        };
        let field = |key: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .map(str::trim)
        };
        let number = |key: &str| field(key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let name = fd_name
            .parse::<libc::c_int>()
            .ok()
            .and_then(|fd| prog_name(pid, fd))
            .unwrap_or_else(|| format!("tag {}", field("prog_tag").unwrap_or("?")));
        out.push(ProgInfo {
            name,
            run_time_ns: number("run_time_ns"),
            run_cnt: number("run_cnt"),
            recursion_misses: number("recursion_misses"),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The leading fields of `struct bpf_prog_info` up to `name` (the kernel fills what fits).
#[repr(C)]
#[derive(Default)]
struct ProgInfoPrefix {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The name of program fd `fd` of process `pid`: the fd is duplicated with `pidfd_getfd`
/// (root), its `bpf_prog_info` read, and the duplicate closed.
fn prog_name(pid: libc::pid_t, fd: libc::c_int) -> Option<String> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // SAFETY: pidfd_open takes no pointers.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return None;
    }
    // SAFETY: the pidfd was just returned to us and nothing else owns it.
    let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(pidfd as libc::c_int) };
    // SAFETY: pidfd_getfd takes no pointers; it returns a new fd of ours or fails.
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if dup < 0 {
        return None;
    }
    // SAFETY: the duplicate was just returned to us and nothing else owns it.
    let dup = unsafe { std::os::fd::OwnedFd::from_raw_fd(dup as libc::c_int) };
    let mut info = ProgInfoPrefix::default();
    let mut attr = InfoAttr {
        bpf_fd: dup.as_raw_fd() as u32,
        info_len: std::mem::size_of::<ProgInfoPrefix>() as u32,
        info: &mut info as *mut ProgInfoPrefix as u64,
    };
    // SAFETY: `attr` is a valid bpf_attr prefix for this command and points at `info`, which
    // lives across the call and is as large as `info_len` says.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return None;
    }
    let len = info
        .name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(info.name.len());
    (len > 0).then(|| String::from_utf8_lossy(&info.name[..len]).into_owned())
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
