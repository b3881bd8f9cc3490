//! Booting a guest: QEMU (TCG, one thread) with the kernel, our initramfs, the host's `/`
//! read-only over virtio-9p and a writable 9p share of the run's results directory; the
//! console read line by line (to `console.log`, to the terminal, and for the guest's
//! `@@xtask-guest` markers); a wall-clock timeout; and QEMU killed on every way out: a drop
//! guard, SIGINT/SIGTERM/SIGHUP (a signal thread kills every running QEMU before xtask exits)
//! and PR_SET_PDEATHSIG should xtask itself be killed.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Mutex, Once},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _, Result};

use super::{
    fetch::{HostTools, Kernel},
    runner::{self, Plan, Results, MARKER, PLAN_FILE, RESULTS_FILE},
};

/// The run directories kept under `<cache>/runs` (older ones are removed).
const RUNS_KEPT: usize = 20;
/// The file the guest's /init sources (variables for it), in the results share.
const GUEST_ENV: &str = "guest.env";
/// The exit status of the runner, written by /init.
const EXIT_STATUS: &str = "exit-status";
pub const CONSOLE_LOG: &str = "console.log";
const QEMU_LOG: &str = "qemu.log";

/// PIDs of the QEMUs running now, for the signal thread.
static RUNNING: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());
static SIGNALS: Once = Once::new();

fn running() -> std::sync::MutexGuard<'static, Vec<libc::pid_t>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread it starts later)
/// and starts a thread that waits for them: it kills every running QEMU, then exits xtask
/// with 128 + the signal. Call it from the main thread before any other thread exists.
pub fn install_signal_handler() {
    SIGNALS.call_once(|| {
        // SAFETY: `set` is a local sigset_t initialised by sigemptyset before use; the calls
        // only read and write it and the thread's signal mask.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, sig);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            set
        };
        // Children get an empty mask from std's spawn, so they still see these signals.
        let spawned = std::thread::Builder::new()
            .name("xtask-signals".into())
            .spawn(move || loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` is a valid, initialised sigset_t owned by this closure and
                // `sig` a valid out pointer.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                let pids = running();
                for &pid in pids.iter() {
                    // SAFETY: kill() has no memory-safety preconditions; the PIDs are QEMUs
                    // we started and have not reaped (they leave the list before reaping).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    eprintln!("\n[xtask] signal {sig}: killed QEMU (pid {pid})");
                }
                std::process::exit(128 + sig);
            });
        if let Err(e) = spawned {
            eprintln!("[xtask] warning: no signal thread ({e}): Ctrl-C may leave QEMU running");
        }
    });
}

/// A running QEMU: killed and reaped when dropped, unless it was reaped before.
struct QemuGuard {
    child: Child,
    pid: libc::pid_t,
    reaped: Option<ExitStatus>,
}

impl QemuGuard {
    fn spawn(command: &mut Command) -> Result<Self> {
        let mut list = running();
        let child = command.spawn().context("cannot start qemu-system-x86_64")?;
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        list.push(pid);
        Ok(Self {
            child,
            pid,
            reaped: None,
        })
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.reaped.is_none() {
            // Leave the signal thread's list before reaping, so it never kills a reused PID.
            let mut list = running();
            if let Some(status) = self.child.try_wait().context("waitpid on QEMU failed")? {
                list.retain(|&p| p != self.pid);
                self.reaped = Some(status);
            }
        }
        Ok(self.reaped)
    }

    fn kill_and_wait(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            let mut list = running();
            let _ = self.child.kill();
            let status = self.child.wait().ok();
            list.retain(|&p| p != self.pid);
            self.reaped =
                Some(status.unwrap_or_else(|| {
                    std::os::unix::process::ExitStatusExt::from_raw(libc::SIGKILL)
                }));
        }
        self.reaped
    }
}

impl Drop for QemuGuard {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            eprintln!("[xtask] killing QEMU (pid {})", self.pid);
            self.kill_and_wait();
        }
    }
}

/// A fresh directory for one guest's results: `<cache>/runs/<unix time>-<pid>-<label>`; the
/// oldest beyond `RUNS_KEPT` go.
pub fn new_run_dir(cache: &Path, label: &str) -> Result<PathBuf> {
    let runs = cache.join("runs");
    fs::create_dir_all(&runs).with_context(|| format!("cannot create {}", runs.display()))?;
    let mut old: Vec<(u64, PathBuf)> = fs::read_dir(&runs)
        .with_context(|| format!("cannot read {}", runs.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let secs = name.split('-').next()?.parse().ok()?;
            Some((secs, e.path()))
        })
        .collect();
    old.sort();
    let excess = (old.len() + 1).saturating_sub(RUNS_KEPT);
    for (_, path) in old.into_iter().take(excess) {
        let _ = fs::remove_dir_all(path);
    }
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = runs.join(format!("{secs}-{}-{label}", std::process::id()));
    fs::create_dir_all(dir.join("tests"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    check_plain_path(&dir)?;
    Ok(dir)
}

/// The paths that go into QEMU options and the kernel command line must be plain.
pub fn check_plain_path(path: &Path) -> Result<()> {
    let s = path.to_string_lossy();
    if s.chars()
        .any(|c| c == ',' || c == '\'' || c == '"' || c == '\\' || c.is_whitespace())
    {
        bail!(
            "{s} has a comma, quote, backslash or space, which QEMU options and the guest's \
             kernel command line cannot carry: use a plain path (e.g. set CARGO_TARGET_DIR)"
        );
    }
    Ok(())
}

/// `'value'` for a POSIX shell.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The variables the guest's /init reads (see init.sh).
pub struct GuestEnv<'a> {
    pub runner: &'a Path,
    pub modprobe: &'a Path,
    pub kernel: &'a Kernel,
    /// Modules to load before the runner starts.
    pub modules: &'a [&'a str],
    /// sysctl name and value (words separated by whitespace, as /proc/sys shows them).
    pub sysctls: &'a [(String, String)],
    /// A scratch disk is attached (mounted on /var/tmp).
    pub scratch: bool,
    /// Host directories under /tmp or /var/tmp (which the guest mounts afresh) that must stay
    /// visible at the same path: the workspace and its target directory when a clone lives
    /// there.
    pub keep: &'a [PathBuf],
}

impl GuestEnv<'_> {
    pub fn render(&self) -> String {
        let sysctls: Vec<String> = self
            .sysctls
            .iter()
            .map(|(name, value)| {
                format!(
                    "{name}={}",
                    value.split_whitespace().collect::<Vec<_>>().join(",")
                )
            })
            .collect();
        let vars = [
            ("MT_RUNNER", self.runner.to_string_lossy().into_owned()),
            ("MT_MODPROBE", self.modprobe.to_string_lossy().into_owned()),
            ("MT_TREE", self.kernel.tree.to_string_lossy().into_owned()),
            ("MT_RELEASE", self.kernel.release.clone()),
            ("MT_MODULES", self.modules.join(" ")),
            ("MT_SYSCTLS", sysctls.join("\n")),
            ("MT_SCRATCH", if self.scratch { "1" } else { "" }.to_owned()),
            (
                "MT_KEEP",
                self.keep
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        ];
        vars.iter()
            .map(|(k, v)| format!("{k}={}\n", shell_quote(v)))
            .collect()
    }
}

/// A marker line the guest printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Marker {
    /// /init is done setting up; the runner starts.
    Ready,
    /// /init failed: the guest powers off.
    Fail(String),
    /// The runner's hooks probe started.
    HooksProbe,
    /// The command starts (its output follows).
    Start,
    TestStart {
        index: usize,
        id: String,
    },
    TestEnd {
        index: usize,
        status: String,
        millis: u64,
        detail: String,
    },
    /// The runner exited with this status; the guest powers off.
    Exit(i32),
}

/// Parses a console line (trailing CR removed) as a marker.
pub fn parse_marker(line: &str) -> Option<Marker> {
    // Anywhere in the line: the firmware's terminal resets or a kernel message may come first.
    let at = line.find(MARKER)?;
    let rest = line[at + MARKER.len()..].strip_prefix(' ')?;
    let (word, args) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut fields = args.splitn(4, ' ');
    Some(match word {
        "ready" => Marker::Ready,
        "fail" => Marker::Fail(args.to_owned()),
        "hooks-probe" => Marker::HooksProbe,
        "start" => Marker::Start,
        "test-start" => Marker::TestStart {
            index: fields.next()?.parse().ok()?,
            id: fields.next()?.to_owned(),
        },
        "test-end" => Marker::TestEnd {
            index: fields.next()?.parse().ok()?,
            status: fields.next()?.to_owned(),
            millis: fields.next()?.parse().ok()?,
            detail: fields.next().unwrap_or("").to_owned(),
        },
        "exit" => Marker::Exit(args.trim().parse().ok()?),
        _ => return None,
    })
}

/// `line` without terminal escape sequences (the firmware resets the terminal) and other
/// control characters but tabs.
pub fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ parameters... final byte in @..~; otherwise ESC + one character.
                if chars.next_if_eq(&'[').is_some() {
                    while chars.next().is_some_and(|c| !('@'..='~').contains(&c)) {}
                } else {
                    chars.next();
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// What happens to the console's lines on the terminal.
#[derive(Clone, Debug)]
pub enum Console {
    /// `cargo xtask guest`: the command's output on stdout, the guest's setup messages on
    /// stderr, boot messages only in the log (and shown on failure).
    Stream,
    /// The matrix: one progress line per test on stderr, prefixed with the label; console
    /// lines after boot (kernel warnings) prefixed too.
    Progress { label: String, tests: usize },
}

enum Event {
    Marker(Marker, Instant),
    Eof,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Phase {
    Boot,
    Setup,
    Command,
    Done,
}

/// Reads the console until EOF: every line to `log`, some to the terminal, markers to `tx`.
fn read_console(
    stdout: impl std::io::Read,
    mut log: fs::File,
    console: Console,
    tx: mpsc::Sender<Event>,
) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    let mut phase = Phase::Boot;
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text.trim_end_matches(['\n', '\r']);
        let _ = writeln!(log, "{}", strip_escapes(line));
        if let Some(marker) = parse_marker(line) {
            phase = match (&marker, phase) {
                (Marker::Ready, _) => Phase::Setup,
                (Marker::Start, _) => Phase::Command,
                (Marker::Exit(_) | Marker::Fail(_), _) => Phase::Done,
                (_, p) => p,
            };
            let _ = tx.send(Event::Marker(marker, Instant::now()));
            continue;
        }
        match (&console, phase) {
            (_, Phase::Boot | Phase::Done) => {}
            (Console::Stream, Phase::Command) => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            (Console::Stream, Phase::Setup) => eprintln!("[guest] {line}"),
            (Console::Progress { label, .. }, _) => eprintln!("[{label}] | {line}"),
        }
    }
    let _ = tx.send(Event::Eof);
}

/// One guest to boot.
pub struct Boot<'a> {
    pub tools: &'a HostTools,
    pub kernel: &'a Kernel,
    pub initramfs: &'a Path,
    pub run_dir: &'a Path,
    pub env: GuestEnv<'a>,
    pub plan: &'a Plan,
    pub timeout: Duration,
    pub console: Console,
    /// Size of the scratch disk (ext4 on virtio-blk, mounted on /var/tmp), made for this
    /// guest and removed after it; `None`: /var/tmp is tmpfs.
    pub scratch_bytes: Option<u64>,
    /// `mkfs.ext4`.
    pub mkfs: &'a Path,
}

/// How a guest ended.
#[derive(Debug)]
pub struct Outcome {
    pub wall: Duration,
    /// From QEMU's start to /init's `ready`.
    pub boot: Option<Duration>,
    /// Why QEMU was killed: the guest's timeout, or no progress (a hung guest).
    pub killed: Option<String>,
    /// /init's `fail` message.
    pub setup_failure: Option<String>,
    /// The command started (its output, and the console after it, were on the terminal).
    pub command_started: bool,
    /// The runner's exit status (/init wrote it).
    pub exit_status: Option<i32>,
    pub results: Option<Results>,
    pub console_log: PathBuf,
    pub qemu_status: Option<ExitStatus>,
}

impl Outcome {
    /// What went wrong with the guest itself (not with what it ran), if anything.
    pub fn problem(&self) -> Option<String> {
        if let Some(why) = &self.killed {
            Some(format!(
                "{why}: QEMU killed after {:.0} s",
                self.wall.as_secs_f64()
            ))
        } else if let Some(fail) = &self.setup_failure {
            Some(format!("guest setup failed: {fail}"))
        } else if self.exit_status.is_none() {
            Some(format!(
                "the guest stopped without the runner's exit status (QEMU {}; kernel panic or \
                 crash?)",
                self.qemu_status
                    .map_or("status unknown".to_owned(), |s| s.to_string())
            ))
        } else {
            None
        }
    }

    /// The last `lines` lines of the console log.
    pub fn console_tail(&self, lines: usize) -> String {
        tail(&self.console_log, lines)
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A sparse raw image with an empty ext4 (no journal, few inodes, tables written now so the
/// guest does no lazy init).
fn make_scratch(mkfs: &Path, image: &Path, bytes: u64) -> Result<()> {
    let file =
        fs::File::create(image).with_context(|| format!("cannot create {}", image.display()))?;
    file.set_len(bytes)
        .with_context(|| format!("cannot size {}", image.display()))?;
    drop(file);
    crate::cmd::output_quiet(
        Command::new(mkfs)
            .args([
                "-q",
                "-F",
                "-L",
                "scratch",
                "-O",
                "^has_journal",
                "-N",
                "16384",
            ])
            .args(["-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(image),
    )
    .map(drop)
    .context("cannot make the guest's scratch file system")
}

/// Removes the scratch image when the guest is over.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn qemu_command(boot: &Boot, scratch: Option<&Path>) -> Command {
    let mut c = Command::new(&boot.tools.qemu);
    let run_dir = boot.run_dir.display();
    c.args([
        "-accel",
        "tcg,thread=single",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "4G",
    ])
    .args([
        "-nographic",
        "-nodefaults",
        "-no-reboot",
        "-serial",
        "stdio",
    ])
    .arg("-kernel")
    .arg(&boot.kernel.boot_image)
    .arg("-initrd")
    .arg(boot.initramfs)
    .arg("-append")
    .arg(format!(
        "console=ttyS0 panic=-1 quiet loglevel=4 MT_RESULTS={run_dir}"
    ))
    .args([
        "-fsdev",
        "local,id=r,path=/,security_model=passthrough,readonly=on,multidevs=remap",
        "-device",
        "virtio-9p-pci,fsdev=r,mount_tag=r",
        "-fsdev",
    ])
    .arg(format!(
        "local,id=o,path={run_dir},security_model=passthrough,multidevs=remap"
    ))
    .args(["-device", "virtio-9p-pci,fsdev=o,mount_tag=results"]);
    if let Some(image) = scratch {
        c.arg("-drive").arg(format!(
            "file={},format=raw,if=virtio,cache=unsafe",
            image.display()
        ));
    }
    c
}

/// Boots the guest, waits for it to power off (or kills it at the timeout) and collects what
/// it left in the results directory.
pub fn boot(boot: &Boot) -> Result<Outcome> {
    check_plain_path(boot.run_dir)?;
    fs::write(boot.run_dir.join(GUEST_ENV), boot.env.render())
        .with_context(|| format!("cannot write {}", boot.run_dir.display()))?;
    runner::write_json(&boot.run_dir.join(PLAN_FILE), boot.plan)?;
    let console_log = boot.run_dir.join(CONSOLE_LOG);
    let log = fs::File::create(&console_log)
        .with_context(|| format!("cannot create {}", console_log.display()))?;
    let qemu_log = fs::File::create(boot.run_dir.join(QEMU_LOG))
        .with_context(|| format!("cannot create {}", boot.run_dir.display()))?;

    let scratch = match boot.scratch_bytes {
        Some(bytes) => {
            let image = boot.run_dir.join("scratch.img");
            make_scratch(boot.mkfs, &image, bytes)?;
            Some(Scratch(image))
        }
        None => None,
    };
    let mut command = qemu_command(boot, scratch.as_ref().map(|s| s.0.as_path()));
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(qemu_log)
        // Its own process group: a terminal's Ctrl-C reaches xtask, which kills it.
        .process_group(0);
    let parent = libc::pid_t::try_from(std::process::id()).context("pid out of range")?;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (prctl, getppid) on no shared state.
    unsafe {
        command.pre_exec(move || {
            // Killed when xtask (the spawning thread) dies, however it dies.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::other("xtask exited before QEMU started"));
            }
            Ok(())
        });
    }
    crate::cmd::echo(&command);
    let started = Instant::now();
    let mut qemu = QemuGuard::spawn(&mut command)?;
    let stdout = qemu
        .child
        .stdout
        .take()
        .context("QEMU's stdout is not piped")?;
    let (tx, rx) = mpsc::channel();
    let console = boot.console.clone();
    let reader = std::thread::Builder::new()
        .name("qemu-console".into())
        .spawn(move || read_console(stdout, log, console, tx))
        .context("cannot start the console reader thread")?;

    let deadline = started + boot.timeout;
    let mut watchdog = Watchdog::new(boot.plan, started);
    let mut boot_time = None;
    let mut setup_failure = None;
    let mut command_started = false;
    let mut killed = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            killed = Some(format!(
                "the guest did not finish within its timeout ({} s)",
                boot.timeout.as_secs()
            ));
            break;
        }
        if now >= watchdog.deadline {
            killed = Some(watchdog.waiting_for.clone());
            break;
        }
        let wait = deadline.min(watchdog.deadline) - now;
        match rx.recv_timeout(wait.min(Duration::from_millis(500))) {
            Ok(Event::Marker(marker, at)) => {
                match &marker {
                    Marker::Ready => boot_time = Some(at - started),
                    Marker::Fail(msg) => setup_failure = Some(msg.clone()),
                    Marker::Start => command_started = true,
                    _ => {}
                }
                watchdog.saw(&marker, at);
                progress(&boot.console, &marker, at - started);
            }
            Ok(Event::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // QEMU gone while something else keeps its stdout open? Not expected; the
                // EOF ends the loop normally.
                if qemu.try_wait()?.is_some() {
                    // Let the reader drain what is left.
                    if let Ok(Event::Eof) = rx.recv_timeout(Duration::from_secs(2)) {}
                    break;
                }
            }
        }
    }
    let qemu_status = if killed.is_some() {
        qemu.kill_and_wait()
    } else {
        // EOF: QEMU is exiting; give it a moment, then make sure.
        let wait_until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = qemu.try_wait()? {
                break Some(status);
            }
            if Instant::now() >= wait_until {
                break qemu.kill_and_wait();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let wall = started.elapsed();
    let _ = reader.join();
    let exit_status = fs::read_to_string(boot.run_dir.join(EXIT_STATUS))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let results = runner::read_json(&boot.run_dir.join(RESULTS_FILE)).ok();
    Ok(Outcome {
        wall,
        boot: boot_time,
        killed,
        setup_failure,
        command_started,
        exit_status,
        results,
        console_log,
        qemu_status,
    })
}

/// Kills a guest that stops making progress long before its overall timeout: no `ready` within
/// `BOOT_ALLOWANCE`, a test not ending within its timeout (which the runner enforces) plus
/// `STEP_GRACE`, nothing between the steps of the runner for `STEP_GRACE`.
struct Watchdog {
    deadline: Instant,
    waiting_for: String,
    /// Per planned test: id and timeout (empty for a command).
    tests: Vec<(String, Duration)>,
    command: bool,
}

/// Boot and /init's setup.
const BOOT_ALLOWANCE: Duration = Duration::from_secs(180);
/// Slack on top of every step's own limit (the runner's kill, writing results, the next start).
const STEP_GRACE: Duration = Duration::from_secs(60);
/// The hooks probe (its own limit is 120 s in the runner).
const PROBE_ALLOWANCE: Duration = Duration::from_secs(180);

impl Watchdog {
    fn new(plan: &Plan, started: Instant) -> Self {
        let (tests, command) = match &plan.work {
            runner::Work::Tests { tests } => (
                tests
                    .iter()
                    .map(|t| (t.id(), Duration::from_secs(t.timeout_secs)))
                    .collect(),
                false,
            ),
            runner::Work::Command { .. } => (Vec::new(), true),
        };
        Self {
            deadline: started + BOOT_ALLOWANCE,
            waiting_for: format!(
                "the guest did not finish booting and setting up within {} s",
                BOOT_ALLOWANCE.as_secs()
            ),
            tests,
            command,
        }
    }

    fn saw(&mut self, marker: &Marker, at: Instant) {
        let far = at + Duration::from_secs(365 * 24 * 3600);
        let (deadline, waiting_for) = match marker {
            Marker::HooksProbe => (
                at + PROBE_ALLOWANCE,
                "the hooks probe did not end (the guest hangs?)".to_owned(),
            ),
            Marker::TestStart { index, id } => {
                let timeout = self
                    .tests
                    .get(*index)
                    .map_or(Duration::ZERO, |(_, timeout)| *timeout);
                (
                    at + timeout + STEP_GRACE,
                    format!(
                        "{id} did not end within its {} s timeout + {} s (the guest hangs?)",
                        timeout.as_secs(),
                        STEP_GRACE.as_secs()
                    ),
                )
            }
            // The command runs as long as the overall timeout allows.
            Marker::Start if self.command => (far, String::new()),
            Marker::Exit(_) | Marker::Fail(_) => {
                (at + STEP_GRACE, "the guest did not power off".to_owned())
            }
            Marker::Ready | Marker::Start | Marker::TestEnd { .. } => (
                at + STEP_GRACE,
                "the guest runner stalled between steps".to_owned(),
            ),
        };
        self.deadline = deadline;
        self.waiting_for = waiting_for;
    }
}

fn progress(console: &Console, marker: &Marker, elapsed: Duration) {
    let Console::Progress { label, tests } = console else {
        if let (Console::Stream, Marker::Ready) = (console, marker) {
            eprintln!("[xtask] guest booted in {:.1} s", elapsed.as_secs_f64());
        }
        return;
    };
    match marker {
        Marker::Ready => eprintln!("[{label}] booted in {:.1} s", elapsed.as_secs_f64()),
        Marker::HooksProbe => eprintln!("[{label}] probing memtrace's hooks (1 s trace)"),
        Marker::TestStart { index, id } => {
            eprintln!("[{label}] ({}/{tests}) {id} ...", index + 1)
        }
        Marker::TestEnd {
            index,
            status,
            millis,
            detail,
        } => eprintln!(
            "[{label}] ({}/{tests}) {status} in {:.1} s{}",
            index + 1,
            *millis as f64 / 1000.0,
            if detail.is_empty() {
                String::new()
            } else {
                format!(" ({detail})")
            }
        ),
        Marker::Fail(msg) => eprintln!("[{label}] guest setup failed: {msg}"),
        Marker::Start | Marker::Exit(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_markers() {
        assert_eq!(parse_marker("@@xtask-guest ready"), Some(Marker::Ready));
        assert_eq!(
            parse_marker("@@xtask-guest exit 101"),
            Some(Marker::Exit(101))
        );
        assert_eq!(
            parse_marker("@@xtask-guest fail cannot mount the host root over 9p"),
            Some(Marker::Fail("cannot mount the host root over 9p".into()))
        );
        assert_eq!(
            parse_marker("@@xtask-guest test-start 2 kinds::all_kinds_in_one_session"),
            Some(Marker::TestStart {
                index: 2,
                id: "kinds::all_kinds_in_one_session".into()
            })
        );
        assert_eq!(
            parse_marker("@@xtask-guest test-end 2 TIMEOUT 300012 killed after 300 s"),
            Some(Marker::TestEnd {
                index: 2,
                status: "TIMEOUT".into(),
                millis: 300_012,
                detail: "killed after 300 s".into()
            })
        );
        assert_eq!(
            parse_marker("@@xtask-guest test-end 0 pass 1200 "),
            Some(Marker::TestEnd {
                index: 0,
                status: "pass".into(),
                millis: 1200,
                detail: String::new()
            })
        );
        assert_eq!(
            parse_marker("Booting from ROM..\x1bc\x1b[?7l\x1b[2J@@xtask-guest ready"),
            Some(Marker::Ready)
        );
        assert_eq!(parse_marker("@@xtask-guestready"), None);
        assert_eq!(parse_marker("@@xtask-guest exit"), None);
        assert_eq!(parse_marker("@@xtask-guest bogus"), None);
    }

    #[test]
    fn watchdog_follows_the_steps() {
        let plan = Plan {
            kernel: "k".into(),
            results_dir: "/r".into(),
            cwd: "/".into(),
            env: vec![],
            hooks_probe: None,
            work: runner::Work::Tests {
                tests: vec![runner::PlannedTest {
                    target: "churn".into(),
                    name: "churns".into(),
                    exe: "/x".into(),
                    timeout_secs: 100,
                }],
            },
        };
        let t0 = Instant::now();
        let mut dog = Watchdog::new(&plan, t0);
        assert_eq!(dog.deadline, t0 + BOOT_ALLOWANCE);
        let t1 = t0 + Duration::from_secs(5);
        dog.saw(&Marker::Ready, t1);
        assert_eq!(dog.deadline, t1 + STEP_GRACE);
        dog.saw(
            &Marker::TestStart {
                index: 0,
                id: "churn::churns".into(),
            },
            t1,
        );
        assert_eq!(dog.deadline, t1 + Duration::from_secs(100) + STEP_GRACE);
        assert!(dog
            .waiting_for
            .starts_with("churn::churns did not end within its 100 s"));

        let command = Plan {
            work: runner::Work::Command {
                argv: vec!["/bin/true".into()],
            },
            ..plan
        };
        let mut dog = Watchdog::new(&command, t0);
        dog.saw(&Marker::Start, t1);
        assert!(dog.deadline > t1 + Duration::from_secs(100 * 24 * 3600));
    }

    #[test]
    fn strips_terminal_escapes() {
        assert_eq!(
            strip_escapes("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2)\r"),
            "SeaBIOS (version 1.16.2)"
        );
        assert_eq!(strip_escapes("a\tb \x1b[1;31mred\x1b[0m"), "a\tb red");
    }

    #[test]
    fn guest_env_is_shell_quoted() {
        let kernel = Kernel {
            release: "6.1.0-57-amd64".into(),
            package: "linux-image-6.1.0-57-amd64".into(),
            tree: "/t/kernels/trees/6.1.0-57-amd64".into(),
            vmlinuz: "/t/kernels/trees/6.1.0-57-amd64/boot/vmlinuz-6.1.0-57-amd64".into(),
            boot_image: "/t/kernels/trees/6.1.0-57-amd64/boot/vmlinux-6.1.0-57-amd64".into(),
        };
        let env = GuestEnv {
            runner: Path::new("/w/target/debug/xtask"),
            modprobe: Path::new("/usr/sbin/modprobe"),
            kernel: &kernel,
            modules: &["inet_diag", "tcp_diag"],
            sysctls: &[
                ("net.core.rmem_max".into(), "4194304".into()),
                ("net.ipv4.tcp_rmem".into(), "4096\t131072\t33554432".into()),
            ],
            scratch: true,
            keep: &[
                PathBuf::from("/tmp/ci.1/target"),
                PathBuf::from("/tmp/ci.1"),
            ],
        }
        .render();
        assert!(env.contains("MT_KEEP='/tmp/ci.1/target\n/tmp/ci.1'\n"));
        assert!(env.contains("MT_RUNNER='/w/target/debug/xtask'\n"));
        assert!(env.contains("MT_MODULES='inet_diag tcp_diag'\n"));
        assert!(env.contains("MT_SCRATCH='1'\n"));
        assert!(env.contains(
            "MT_SYSCTLS='net.core.rmem_max=4194304\nnet.ipv4.tcp_rmem=4096,131072,33554432'\n"
        ));
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn plain_paths_only() {
        assert!(check_plain_path(Path::new("/w/target/kernels/runs/1-2-6.1.0-57-amd64")).is_ok());
        assert!(check_plain_path(Path::new("/w/my target")).is_err());
        assert!(check_plain_path(Path::new("/w/a,b")).is_err());
    }
}
