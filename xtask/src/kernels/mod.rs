//! Stock Debian kernels under QEMU (software emulation: this host has no usable KVM), for what
//! the host kernel cannot show (fentry attach, other verifiers, older tracepoint layouts):
//!
//! - `cargo xtask guest --kernel 6.1 [--timeout 600] [--env K=V]... -- CMD ARGS...` boots the
//!   newest stock 6.1 kernel and runs one command in it, as root, with the host's `/` as its
//!   (read-only) root and the current directory as its working directory; its output streams to
//!   the terminal and xtask exits with its status (`--kernel` also takes an exact release, e.g.
//!   `6.1.0-57-amd64`);
//! - `cargo xtask test [--kernels all|none|6.1,6.12]`, after the host tests, runs [`GUEST_TESTS`]
//!   in one guest per kernel series of [`SERIES`] and prints a table; `cargo xtask matrix` runs
//!   the matrix alone (`--guest-test SUBSTRING` picks tests, `--guest-test-timeout SECS`).
//!
//! In a guest: the host's `/` read-only (9p), tmpfs on /tmp and /run, an ext4 scratch disk on
//! /var/tmp (`--no-scratch`: tmpfs), proc, sysfs, devtmpfs, tracefs, debugfs, bpffs, cgroup2
//! (v2 only, unlike this host's hybrid), loopback up, the host's socket buffer limits, the
//! sock_diag modules loaded and module autoloading working (`modprobe -d` on the unpacked
//! kernel). Boot to the command takes 4–5 s.
//!
//! Files: `fetch` (apt: host tools, kernel packages, unpacked cache), `initramfs` (ours: busybox,
//! init.sh, the 9p modules), `guest` (QEMU, console, timeouts, cleanup), `runner` (the guest
//! side, `xtask guest-run`, and the plan/results JSON). Everything is cached under
//! `<target>/kernels/`: `trees/<release>/` (unpacked kernels), `initramfs/`, and `runs/` (one
//! directory per guest: plan.json, results.json, console.log, tests/*.log).

mod fetch;
mod guest;
mod initramfs;
pub mod runner;

use std::{
    collections::BTreeMap,
    env,
    ffi::OsString,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::{cmd, Ctx};
pub(crate) use fetch::{which, Apt};
use fetch::{HostTools, Kernel, KernelSpec};
use guest::{Boot, Console, GuestEnv, Outcome};
use runner::{KindHooks, Plan, PlannedTest, Status, Work};

/// The kernel series of the matrix: the newest stock Debian `linux-image-<series>.*-amd64` of
/// each, as apt has them at run time. (5.15 and 5.10 are not in Debian 12's suites.)
pub const SERIES: &[&str] = &["6.1", "6.12"];

/// One scenario test the matrix runs in every guest.
#[derive(Clone, Copy, Debug)]
pub struct GuestTest {
    /// The test target: `tests/tests/<target>.rs`.
    pub target: &'static str,
    /// The test function's exact name in it.
    pub name: &'static str,
    /// Killed (and failed) after this long in the guest.
    pub timeout_secs: u64,
}

impl GuestTest {
    const fn new(target: &'static str, name: &'static str) -> Self {
        Self {
            target,
            name,
            timeout_secs: DEFAULT_TEST_TIMEOUT_SECS,
        }
    }

    #[allow(dead_code)] // For entries that need more than the default.
    const fn timeout(self, timeout_secs: u64) -> Self {
        Self {
            timeout_secs,
            ..self
        }
    }

    pub fn id(&self) -> String {
        format!("{}::{}", self.target, self.name)
    }
}

/// Per-test timeout in the guest unless an entry says otherwise: about 5 times the slowest
/// test of the first list (churn, ~28 s in a guest; TCG emulation is several times slower
/// than the host, but a guest has much less else to do).
const DEFAULT_TEST_TIMEOUT_SECS: u64 = 150;

/// The scenario tests every guest of the matrix runs, in this order. Add a test here to run it
/// on every kernel of [`SERIES`].
pub const GUEST_TESTS: &[GuestTest] = &[
    GuestTest::new(
        "tcp_receive_queue",
        "tcp_receive_queue_is_attributed_then_freed",
    ),
    GuestTest::new("churn", "page_fault_churn_is_seen_and_freed"),
    GuestTest::new(
        "kinds",
        "slab_objects_of_a_unix_datagram_queue_are_held_then_freed",
    ),
    GuestTest::new("split_pages", "split_huge_pages_are_freed_piece_by_piece"),
    GuestTest::new("kinds", "all_kinds_in_one_session"),
    GuestTest::new("perf_visibility", "perf_still_sees_page_alloc_events"),
    GuestTest::new("kernel_support", "bulk_frees_are_traced_or_named"),
    GuestTest::new(
        "kernel_support",
        "without_btf_pages_use_classic_tracepoints_and_say_so",
    ),
];

/// Modules every guest loads before running anything: the sock_diag ones `memtrace sockets`
/// needs, loaded up front like on a node that has them (autoloading works in the guests too,
/// through /init's modprobe wrapper, but only when something asks).
const GUEST_MODULES: &[&str] = &["inet_diag", "tcp_diag", "udp_diag", "unix_diag"];
/// Socket limits copied from the host into every guest: the scenarios hold 16–64 MiB in a
/// loopback TCP receive queue, which the guest kernels' defaults cap at ~2.7 MB.
const HOST_SYSCTLS: &[&str] = &[
    "net.core.wmem_max",
    "net.core.rmem_max",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_rmem",
];
/// Boot, setup, the hooks probe and power-off, on top of the tests' timeouts. (A guest that
/// hangs is killed long before: see guest.rs's watchdog.)
const GUEST_OVERHEAD: Duration = Duration::from_secs(180);
/// The guests' scratch disk (ext4 on /var/tmp; sparse on the host).
const SCRATCH_BYTES: u64 = 4 << 30;
/// Where TMPDIR points in the matrix guests: the scratch disk, disk-backed like the host's
/// temp dir (the page-cache holds need that).
const GUEST_TMPDIR: &str = "/var/tmp";

/// Which kernels `--kernels` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelList {
    /// Every series of [`SERIES`].
    All,
    None,
    Series(Vec<String>),
}

impl KernelList {
    pub fn series(&self) -> Vec<String> {
        match self {
            Self::All => SERIES.iter().map(|s| (*s).to_owned()).collect(),
            Self::None => Vec::new(),
            Self::Series(list) => list.clone(),
        }
    }
}

/// `--kernels`: `all`, `none`, or a comma list of series (`6.1,6.12`).
pub fn parse_kernel_list(s: &str) -> Result<KernelList, String> {
    match s.trim() {
        "all" | "" => return Ok(KernelList::All),
        "none" => return Ok(KernelList::None),
        _ => {}
    }
    let mut list: Vec<String> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match KernelSpec::parse(part) {
            Ok(KernelSpec::Series(series)) => {
                if !list.contains(&series) {
                    list.push(series);
                }
            }
            _ => {
                return Err(format!(
                    "{part:?} is not a kernel series: use `all`, `none` or a comma list of \
                     series like {}",
                    SERIES.join(",")
                ))
            }
        }
    }
    if list.is_empty() {
        return Err("empty kernel list: use `all`, `none` or e.g. 6.1,6.12".to_owned());
    }
    Ok(KernelList::Series(list))
}

#[derive(Args)]
pub struct MatrixOpts {
    /// Kernels to run the guest scenario tests in: `all` (every series: 6.1, 6.12), `none`,
    /// or a comma list of series (the newest stock Debian kernel of each).
    #[arg(long, value_name = "LIST", default_value = "all", value_parser = parse_kernel_list)]
    pub kernels: KernelList,
    /// How many guests run at once (each takes one host core) [default: the number of cores,
    /// at most 4].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=8))]
    pub guest_jobs: Option<u32>,
    /// Only the guest tests whose `target::name` contains this (repeatable).
    #[arg(long = "guest-test", value_name = "SUBSTRING")]
    pub guest_test: Vec<String>,
    /// Per-test timeout in the guests for every test, instead of each one's own.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub guest_test_timeout: Option<u64>,
}

#[derive(Args)]
pub struct GuestOpts {
    /// Kernel: a series (6.1, 6.12: the newest stock Debian kernel of it) or an exact release
    /// (6.1.0-57-amd64).
    #[arg(long, value_name = "SERIES|RELEASE")]
    kernel: String,
    /// Seconds before the guest is killed (boot included).
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    timeout: u64,
    /// Environment variable for the command (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Attach no scratch disk: /var/tmp is tmpfs.
    #[arg(long)]
    no_scratch: bool,
    /// The command (a path on the host, relative to the current directory, or a name in
    /// PATH) and its arguments, after `--`.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<OsString>,
}

/// The host's values of `HOST_SYSCTLS`.
fn host_sysctls() -> Vec<(String, String)> {
    HOST_SYSCTLS
        .iter()
        .filter_map(|name| {
            let path = format!("/proc/sys/{}", name.replace('.', "/"));
            match fs::read_to_string(&path) {
                Ok(value) => Some(((*name).to_owned(), value.trim().to_owned())),
                Err(e) => {
                    eprintln!("[xtask] warning: cannot read {path} ({e}): not set in guests");
                    None
                }
            }
        })
        .collect()
}

/// What every guest needs on the host: tools, the cache directory, this binary.
struct Setup {
    apt: Apt,
    tools: HostTools,
    cache: PathBuf,
    runner: PathBuf,
    /// Host directories the guest must keep visible under its fresh /tmp or /var/tmp.
    keep: Vec<PathBuf>,
}

impl Setup {
    fn new(ctx: &Ctx) -> Result<Self> {
        guest::install_signal_handler();
        let cache = ctx.target_dir.join("kernels");
        guest::check_plain_path(&cache)?;
        let mut keep = Vec::new();
        for dir in [&ctx.workspace_root, &ctx.target_dir] {
            keep_visible(&mut keep, dir, "the workspace or its target directory")?;
        }
        let mut apt = Apt::default();
        let tools = fetch::ensure_host_tools(&mut apt)?;
        let runner = stable_runner(&cache)?;
        Ok(Self {
            apt,
            tools,
            cache,
            runner,
            keep,
        })
    }

    /// The kernel and its initramfs.
    fn kernel(&mut self, spec: &KernelSpec) -> Result<(Kernel, PathBuf)> {
        let kernel = fetch::prepare_kernel(&self.cache, &mut self.apt, &self.tools, spec)?;
        if let KernelSpec::Series(series) = spec {
            for old in fetch::prune_older(&self.cache, &kernel, series) {
                eprintln!("[xtask] removed the cached older kernel {old}");
            }
        }
        let initramfs = initramfs::ensure(&self.cache, &self.tools, &kernel)?;
        Ok((kernel, initramfs))
    }
}

/// A copy of this xtask binary for the guests to run as `guest-run`: cargo may rebuild
/// target/debug/xtask while a matrix runs (`cargo xtask test` builds the workspace), and the
/// guest must run the binary that wrote its plan. Read through /proc/self/exe, which works
/// even when the file was replaced; kept under `<cache>/runner/` by size and modification
/// time, so a run copies it at most once.
fn stable_runner(cache: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let exe = Path::new("/proc/self/exe");
    let meta = fs::metadata(exe).context("cannot stat /proc/self/exe")?;
    let dir = cache.join("runner");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = format!(
        "xtask-{}-{}.{}",
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    );
    let runner = dir.join(&name);
    if !runner.is_file() {
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        fs::copy(exe, &tmp).with_context(|| format!("cannot copy xtask to {}", tmp.display()))?;
        fs::rename(&tmp, &runner)
            .with_context(|| format!("cannot rename to {}", runner.display()))?;
    }
    // Older copies go after a day (a guest of another xtask may still be using a recent one).
    let day = Duration::from_secs(24 * 3600);
    for entry in fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
    {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > day));
        if old && entry.path() != runner {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(runner)
}

/// The command's program as a host path the guest sees the same way.
fn resolve_program(program: &Path, cwd: &Path) -> Result<PathBuf> {
    let path = if program.components().count() > 1 || program.is_absolute() {
        cwd.join(program)
    } else {
        fetch::which(&program.to_string_lossy()).with_context(|| {
            format!(
                "{} is not in PATH: give its path (relative to the current directory, or \
                 absolute)",
                program.display()
            )
        })?
    };
    let meta = fs::metadata(&path).with_context(|| format!("{} not found", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", path.display());
    }
    Ok(path)
}

/// Paths the guest has its own (empty) file systems on.
fn guest_private(path: &Path) -> Option<&'static str> {
    ["/tmp", "/run", "/var/tmp", "/dev", "/proc", "/sys"]
        .into_iter()
        .find(|dir| path.starts_with(dir))
}

/// Adds `dir` to the directories the guest keeps visible when it lies under /tmp or /var/tmp
/// (a fresh clone in a temp dir, as CI may make); under /run, /dev, /proc or /sys it cannot.
fn keep_visible(keep: &mut Vec<PathBuf>, dir: &Path, what: &str) -> Result<()> {
    match guest_private(dir) {
        None => Ok(()),
        Some("/tmp" | "/var/tmp") => {
            guest::check_plain_path(dir)?;
            if !keep.iter().any(|k| dir.starts_with(k)) {
                keep.retain(|k| !k.starts_with(dir));
                keep.push(dir.to_path_buf());
            }
            Ok(())
        }
        Some(private) => bail!(
            "{what} {} is under {private}, which the guest mounts afresh: use a directory \
             elsewhere",
            dir.display()
        ),
    }
}

fn utf8(s: &OsString, what: &str) -> Result<String> {
    s.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{what} {s:?} is not UTF-8"))
}

/// `cargo xtask guest`: returns the command's exit status.
pub fn guest(ctx: &Ctx, opts: GuestOpts) -> Result<u8> {
    let spec = KernelSpec::parse(&opts.kernel)?;
    let cwd = env::current_dir().context("cannot read the current directory")?;
    let (program, args) = opts
        .command
        .split_first()
        .context("no command given: cargo xtask guest --kernel 6.1 -- CMD ARGS...")?;
    let program = resolve_program(Path::new(program), &cwd)?;
    let mut argv = vec![utf8(&program.clone().into_os_string(), "the program path")?];
    for arg in args {
        argv.push(utf8(arg, "the argument")?);
    }
    let mut plan_env = Vec::new();
    for kv in &opts.env {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => plan_env.push((k.to_owned(), v.to_owned())),
            _ => bail!("--env {kv:?} is not K=V"),
        }
    }

    let mut setup = Setup::new(ctx)?;
    keep_visible(&mut setup.keep, &cwd, "the current directory")?;
    if let Some(dir) = program.parent() {
        keep_visible(&mut setup.keep, dir, "the program")?;
    }
    let (kernel, initramfs) = setup.kernel(&spec)?;
    let run_dir = guest::new_run_dir(&setup.cache, &kernel.release)?;
    let plan = Plan {
        kernel: kernel.release.clone(),
        results_dir: run_dir.clone(),
        cwd,
        env: plan_env,
        hooks_probe: None,
        work: Work::Command { argv },
    };
    let sysctls = host_sysctls();
    eprintln!(
        "[xtask] booting {} (timeout {} s; results in {})",
        kernel.release,
        opts.timeout,
        run_dir.display()
    );
    let outcome = guest::boot(&Boot {
        tools: &setup.tools,
        kernel: &kernel,
        initramfs: &initramfs,
        run_dir: &run_dir,
        env: GuestEnv {
            runner: &setup.runner,
            modprobe: &setup.tools.modprobe,
            kernel: &kernel,
            modules: GUEST_MODULES,
            sysctls: &sysctls,
            scratch: !opts.no_scratch,
            keep: &setup.keep,
        },
        plan: &plan,
        timeout: Duration::from_secs(opts.timeout),
        console: Console::Stream,
        scratch_bytes: (!opts.no_scratch).then_some(SCRATCH_BYTES),
        mkfs: &setup.tools.mkfs_ext4,
    })?;
    if let Some(problem) = outcome.problem() {
        // Once the command ran, the console was on the terminal already.
        if !outcome.command_started {
            eprintln!(
                "[xtask] last console lines ({}):\n{}",
                outcome.console_log.display(),
                outcome.console_tail(40)
            );
        }
        bail!("{problem} (console log: {})", outcome.console_log.display());
    }
    let results = outcome.results.as_ref();
    for error in results.map(|r| r.errors.as_slice()).unwrap_or_default() {
        eprintln!("[xtask] guest runner: {error}");
    }
    let code = results
        .and_then(|r| r.command.as_ref())
        .map(|c| c.exit_code)
        .or(outcome.exit_status)
        .unwrap_or(1);
    eprintln!(
        "[xtask] {}: exit status {code}; command {}, boot {}, guest {:.1} s wall; console log {}",
        kernel.release,
        results
            .and_then(|r| r.command.as_ref())
            .map_or("-".to_owned(), |c| format!(
                "{:.1} s",
                c.duration_ms as f64 / 1000.0
            )),
        outcome
            .boot
            .map_or("-".to_owned(), |b| format!("{:.1} s", b.as_secs_f64())),
        outcome.wall.as_secs_f64(),
        outcome.console_log.display()
    );
    Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// Test target name → executable, from `cargo test --no-run --message-format=json`.
pub fn parse_test_executables(json_lines: &str) -> BTreeMap<String, PathBuf> {
    let mut exes = BTreeMap::new();
    for line in json_lines.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let is_test = msg["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "test"));
        if let (true, Some(exe), Some(name)) = (
            is_test,
            msg["executable"].as_str(),
            msg["target"]["name"].as_str(),
        ) {
            exes.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    exes
}

/// The test names `EXE --list` prints (`name: test` lines).
pub fn parse_test_list(list: &str) -> Vec<String> {
    list.lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_owned)
        .collect()
}

/// What one kernel's guest did.
#[derive(Debug)]
pub struct KernelRun {
    pub release: String,
    pub boot: Option<Duration>,
    pub wall: Duration,
    pub hooks: Vec<KindHooks>,
    pub hooks_error: Option<String>,
    /// One per planned test, in plan order; `None` status: never ran.
    pub tests: Vec<TestRow>,
    /// What went wrong with the guest itself.
    pub problem: Option<String>,
    pub console_log: PathBuf,
}

#[derive(Debug)]
pub struct TestRow {
    pub id: String,
    pub status: Option<Status>,
    pub duration: Duration,
    pub detail: String,
    pub log: Option<PathBuf>,
}

impl KernelRun {
    fn from_outcome(release: &str, planned: &[PlannedTest], outcome: &Outcome) -> Self {
        let results = outcome.results.as_ref();
        let tests = planned
            .iter()
            .map(|p| {
                let done = results.and_then(|r| r.tests.iter().find(|t| t.id() == p.id()));
                TestRow {
                    id: p.id(),
                    status: done.map(|t| t.status),
                    duration: done.map_or(Duration::ZERO, |t| Duration::from_millis(t.duration_ms)),
                    detail: done.map_or_else(String::new, |t| t.detail.clone()),
                    log: done.map(|t| t.log.clone()),
                }
            })
            .collect();
        let mut problem = outcome.problem();
        if let Some(errors) = results.map(|r| &r.errors).filter(|e| !e.is_empty()) {
            let joined = errors.join("; ");
            problem = Some(problem.map_or(joined.clone(), |p| format!("{p}; {joined}")));
        }
        Self {
            release: release.to_owned(),
            boot: outcome.boot,
            wall: outcome.wall,
            hooks: results.map(|r| r.hooks.clone()).unwrap_or_default(),
            hooks_error: results.and_then(|r| r.hooks_error.clone()),
            tests,
            problem,
            console_log: outcome.console_log.clone(),
        }
    }

    fn failed(&self) -> usize {
        self.tests
            .iter()
            .filter(|t| t.status != Some(Status::Pass))
            .count()
    }
}

/// `tp_btf`, `raw_tp`, `fentry`, `tracepoint` (classic), from hooks like `tp_btf:mm_page_alloc`,
/// `fentry:kmem_cache_free_bulk`, `kmem:kmalloc`.
fn hook_summary(kind: &KindHooks) -> String {
    if !kind.traced {
        return "skipped".to_owned();
    }
    let mut types: Vec<&str> = Vec::new();
    for hook in &kind.hooks {
        let t = match hook.split_once(':').map(|(prefix, _)| prefix) {
            Some("tp_btf") => "tp_btf",
            Some("raw_tp") => "raw_tp",
            Some("fentry") => "fentry",
            Some("kprobe") => "kprobe",
            _ => "tracepoint",
        };
        if !types.contains(&t) {
            types.push(t);
        }
    }
    if types.is_empty() {
        "none".to_owned()
    } else {
        types.join("+")
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The per-kernel result table: one row per test, one column per kernel, then the hooks each
/// memtrace kind got, boot time and guest wall time; notes and guest problems below.
pub fn render_table(runs: &[KernelRun]) -> String {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut ids: Vec<&str> = Vec::new();
    for run in runs {
        for t in &run.tests {
            if !ids.contains(&t.id.as_str()) {
                ids.push(&t.id);
            }
        }
    }
    for id in &ids {
        let cells = runs
            .iter()
            .map(|run| match run.tests.iter().find(|t| t.id == *id) {
                Some(TestRow {
                    status: Some(status),
                    duration,
                    ..
                }) => format!("{:<7} {:>7}", status.label(), secs(*duration)),
                Some(_) => "not run".to_owned(),
                None => "-".to_owned(),
            })
            .collect();
        rows.push(((*id).to_owned(), cells));
    }
    let mut kinds: Vec<&str> = Vec::new();
    for run in runs {
        for k in &run.hooks {
            if !kinds.contains(&k.kind.as_str()) {
                kinds.push(&k.kind);
            }
        }
    }
    for kind in kinds {
        let cells = runs
            .iter()
            .map(|run| {
                run.hooks
                    .iter()
                    .find(|k| k.kind == kind)
                    .map_or("?".to_owned(), hook_summary)
            })
            .collect();
        rows.push((format!("hooks: {kind}"), cells));
    }
    rows.push((
        "boot".to_owned(),
        runs.iter()
            .map(|r| r.boot.map_or("-".to_owned(), secs))
            .collect(),
    ));
    rows.push((
        "guest wall time".to_owned(),
        runs.iter().map(|r| secs(r.wall)).collect(),
    ));

    let first = rows
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0)
        .max("kernel".len());
    let widths: Vec<usize> = runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            rows.iter()
                .map(|(_, cells)| cells[i].len())
                .chain([run.release.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut line = format!("{:<first$}", "kernel");
    for (run, w) in runs.iter().zip(&widths) {
        let _ = write!(line, "  {:<w$}", run.release);
    }
    out.push_str(line.trim_end());
    out.push('\n');
    for (label, cells) in &rows {
        let mut line = format!("{label:<first$}");
        for (cell, w) in cells.iter().zip(&widths) {
            let _ = write!(line, "  {cell:<w$}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for run in runs {
        // Only what a kernel lacks or refused (not the notes every kernel has).
        let notable = |k: &&KindHooks| {
            k.note
                .as_deref()
                .is_some_and(|n| !k.traced || n.contains("not traced") || n.contains("skipped"))
        };
        for k in run.hooks.iter().filter(notable) {
            let note = k.note.as_deref().unwrap_or("");
            let mut note: String = note.chars().take(200).collect();
            if note.len() < k.note.as_deref().map_or(0, str::len) {
                note.push('…');
            }
            let _ = writeln!(out, "note: {} {}: {note}", run.release, k.kind);
        }
        if let Some(e) = &run.hooks_error {
            let _ = writeln!(out, "note: {} hooks probe: {e}", run.release);
        }
        if let Some(p) = &run.problem {
            let _ = writeln!(out, "GUEST PROBLEM: {}: {p}", run.release);
        }
    }
    out
}

/// The lines that say why a test failed: from the first panic message on (a few lines), or
/// else the last lines of its output.
pub fn failure_excerpt(output: &str) -> Vec<String> {
    let lines: Vec<&str> = output.lines().collect();
    if let Some(start) = lines.iter().position(|l| l.contains("panicked at")) {
        return lines[start..]
            .iter()
            .take(12)
            .take_while(|l| !l.starts_with("note: run with `RUST_BACKTRACE"))
            .take_while(|l| !l.starts_with("stack backtrace:"))
            .map(|l| (*l).to_owned())
            .collect();
    }
    let nonempty: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.trim().is_empty())
        .collect();
    nonempty[nonempty.len().saturating_sub(10)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

/// Builds the scenario test executables (as the host run did, so nothing is rebuilt) and
/// returns them by test target.
fn build_test_executables(
    ctx: &Ctx,
    build_env: &[(&str, OsString)],
) -> Result<BTreeMap<String, PathBuf>> {
    let mut build = ctx.cargo();
    build
        .args([
            "test",
            "--release",
            "-p",
            "memtrace-tests",
            "--no-run",
            "--message-format=json",
        ])
        .envs(build_env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd::echo(&build);
    let out = build.output().context("cannot run cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the scenario tests failed (see above): fix the build errors");
    }
    Ok(parse_test_executables(&String::from_utf8_lossy(
        &out.stdout,
    )))
}

/// The planned tests: `GUEST_TESTS` (filtered), each checked against its executable's
/// `--list`, so a renamed test is an error here instead of a guest that runs nothing.
fn plan_tests(exes: &BTreeMap<String, PathBuf>, filters: &[String]) -> Result<Vec<PlannedTest>> {
    let mut listed: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut planned = Vec::new();
    for test in GUEST_TESTS {
        if !filters.is_empty() && !filters.iter().any(|f| test.id().contains(f.as_str())) {
            continue;
        }
        let exe = exes.get(test.target).with_context(|| {
            format!(
                "GUEST_TESTS names the test target {:?}, which the memtrace-tests package does \
                 not have (targets: {}): fix xtask/src/kernels/mod.rs",
                test.target,
                exes.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        if !listed.contains_key(test.target) {
            let list = cmd::output_quiet(Command::new(exe).arg("--list"))
                .with_context(|| format!("cannot list the tests of {}", exe.display()))?;
            listed.insert(test.target, parse_test_list(&list));
        }
        if !listed[test.target].iter().any(|n| n == test.name) {
            bail!(
                "GUEST_TESTS names {}, which {} does not have (its tests: {}): fix \
                 xtask/src/kernels/mod.rs",
                test.id(),
                test.target,
                listed[test.target].join(", ")
            );
        }
        planned.push(PlannedTest {
            target: test.target.to_owned(),
            name: test.name.to_owned(),
            exe: exe.clone(),
            timeout_secs: test.timeout_secs,
        });
    }
    if planned.is_empty() {
        bail!("no guest test matches --guest-test {filters:?}");
    }
    Ok(planned)
}

/// One kernel, ready to boot.
struct Prepared {
    kernel: Kernel,
    initramfs: PathBuf,
    run_dir: PathBuf,
    plan: Plan,
}

/// The kernel matrix: every requested kernel's guest runs the planned scenario tests; prints
/// the table; fails when a test failed or a guest did not finish. `build_env` is the
/// environment the host build and tests used (MEMTRACE_EBPF_OBJECT, ...), `memtrace` the
/// binary the tests run.
pub fn matrix(
    ctx: &Ctx,
    opts: &MatrixOpts,
    build_env: &[(&str, OsString)],
    memtrace: &Path,
) -> Result<()> {
    let series = opts.kernels.series();
    if series.is_empty() {
        eprintln!("[xtask] --kernels none: no guest tests");
        return Ok(());
    }
    let started = Instant::now();
    let mut setup = Setup::new(ctx)?;
    let mut kernels = Vec::new();
    for s in &series {
        kernels.push(setup.kernel(&KernelSpec::Series(s.clone()))?);
    }
    let prepared_at = started.elapsed();
    let exes = build_test_executables(ctx, build_env)?;
    let mut planned = plan_tests(&exes, &opts.guest_test)?;
    if let Some(secs) = opts.guest_test_timeout {
        for test in &mut planned {
            test.timeout_secs = secs;
        }
    }
    let cwd = ctx.workspace_root.join("tests");
    let sysctls = host_sysctls();
    let mut memtrace_env: Vec<(String, String)> = vec![
        (
            "MEMTRACE_BIN".into(),
            memtrace.to_string_lossy().into_owned(),
        ),
        ("MEMTRACE_REQUIRE_BPF".into(), "1".into()),
        ("TMPDIR".into(), GUEST_TMPDIR.into()),
        ("RUST_BACKTRACE".into(), "1".into()),
    ];
    if let Some(python) = build_env.iter().find(|(k, _)| *k == crate::PYTHON_ENV) {
        memtrace_env.push((python.0.to_owned(), python.1.to_string_lossy().into_owned()));
    }
    // Measured on 2 cores: both kernels' guests at once took 77 s, one after the other 129 s
    // (each guest is one TCG thread), with the same test durations.
    let jobs = opts.guest_jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        |n| usize::try_from(n).unwrap_or(1),
    );
    let timeout = GUEST_OVERHEAD
        + planned
            .iter()
            .map(|t| Duration::from_secs(t.timeout_secs))
            .sum::<Duration>();

    let mut prepared = Vec::new();
    for (kernel, initramfs) in kernels {
        let run_dir = guest::new_run_dir(&setup.cache, &kernel.release)?;
        let mut env = memtrace_env.clone();
        env.push(("MEMTRACE_GUEST_KERNEL".into(), kernel.release.clone()));
        let plan = Plan {
            kernel: kernel.release.clone(),
            results_dir: run_dir.clone(),
            cwd: cwd.clone(),
            env,
            hooks_probe: Some(memtrace.to_path_buf()),
            work: Work::Tests {
                tests: planned.clone(),
            },
        };
        prepared.push(Prepared {
            kernel,
            initramfs,
            run_dir,
            plan,
        });
    }
    eprintln!(
        "[xtask] guest matrix: {} test(s) on {} (kernels ready in {:.1} s; guest timeout {} s, \
         {} at once)",
        planned.len(),
        prepared
            .iter()
            .map(|p| p.kernel.release.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        prepared_at.as_secs_f64(),
        timeout.as_secs(),
        jobs
    );

    let setup = &setup;
    let sysctls = &sysctls;
    let run_one = |p: &Prepared| -> KernelRun {
        let label = p.kernel.release.clone();
        let boot = Boot {
            tools: &setup.tools,
            kernel: &p.kernel,
            initramfs: &p.initramfs,
            run_dir: &p.run_dir,
            env: GuestEnv {
                runner: &setup.runner,
                modprobe: &setup.tools.modprobe,
                kernel: &p.kernel,
                modules: GUEST_MODULES,
                sysctls,
                scratch: true,
                keep: &setup.keep,
            },
            plan: &p.plan,
            timeout,
            console: Console::Progress {
                label: label.clone(),
                tests: planned.len(),
            },
            scratch_bytes: Some(SCRATCH_BYTES),
            mkfs: &setup.tools.mkfs_ext4,
        };
        match guest::boot(&boot) {
            Ok(outcome) => KernelRun::from_outcome(&label, &planned, &outcome),
            Err(e) => KernelRun {
                release: label,
                boot: None,
                wall: Duration::ZERO,
                hooks: Vec::new(),
                hooks_error: None,
                tests: planned
                    .iter()
                    .map(|t| TestRow {
                        id: t.id(),
                        status: None,
                        duration: Duration::ZERO,
                        detail: String::new(),
                        log: None,
                    })
                    .collect(),
                problem: Some(format!("{e:#}")),
                console_log: p.run_dir.join(guest::CONSOLE_LOG),
            },
        }
    };
    let guests_started = Instant::now();
    let mut runs: Vec<KernelRun> = Vec::new();
    for chunk in prepared.chunks(jobs) {
        if chunk.len() == 1 {
            runs.push(run_one(&chunk[0]));
            continue;
        }
        let results: Vec<KernelRun> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk.iter().map(|p| scope.spawn(|| run_one(p))).collect();
            handles
                .into_iter()
                .zip(chunk)
                .map(|(h, p)| {
                    h.join().unwrap_or_else(|_| KernelRun {
                        release: p.kernel.release.clone(),
                        boot: None,
                        wall: Duration::ZERO,
                        hooks: Vec::new(),
                        hooks_error: None,
                        tests: Vec::new(),
                        problem: Some("the guest thread panicked".into()),
                        console_log: p.run_dir.join(guest::CONSOLE_LOG),
                    })
                })
                .collect()
        });
        runs.extend(results);
    }
    let guests_wall = guests_started.elapsed();

    // Why each failure failed, then the table last, where it is seen.
    for run in &runs {
        for t in run.tests.iter().filter(|t| t.status != Some(Status::Pass)) {
            let status = t.status.map_or("NOT RUN", Status::label);
            eprintln!(
                "\n[xtask] {} {}: {status}{}",
                run.release,
                t.id,
                if t.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", t.detail)
                }
            );
            if let Some(log) = &t.log {
                let output = fs::read_to_string(log).unwrap_or_default();
                for line in failure_excerpt(&output) {
                    eprintln!("    {line}");
                }
                eprintln!("    (whole output: {})", log.display());
            }
        }
        if run.problem.is_some() {
            eprintln!(
                "\n[xtask] {}: last console lines ({}):\n{}",
                run.release,
                run.console_log.display(),
                guest::tail(&run.console_log, 40)
            );
        }
    }
    eprintln!(
        "\n[xtask] guest matrix ({:.1} s in all: kernels and initramfs {:.1} s, guests {:.1} s):\n{}",
        started.elapsed().as_secs_f64(),
        prepared_at.as_secs_f64(),
        guests_wall.as_secs_f64(),
        render_table(&runs)
    );
    let failed: usize = runs.iter().map(KernelRun::failed).sum();
    let total: usize = runs.iter().map(|r| r.tests.len()).sum();
    let broken = runs.iter().filter(|r| r.problem.is_some()).count();
    if failed > 0 || broken > 0 {
        bail!(
            "guest matrix: {failed} of {total} guest tests did not pass{} (table above; logs \
             under {})",
            if broken > 0 {
                format!(", {broken} guest(s) had problems")
            } else {
                String::new()
            },
            setup.cache.join("runs").display()
        );
    }
    eprintln!("[xtask] guest matrix: all {total} guest tests passed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lists() {
        assert_eq!(parse_kernel_list("all"), Ok(KernelList::All));
        assert_eq!(parse_kernel_list("none"), Ok(KernelList::None));
        assert_eq!(
            parse_kernel_list("6.1, 6.12,6.1"),
            Ok(KernelList::Series(vec!["6.1".into(), "6.12".into()]))
        );
        assert_eq!(
            KernelList::All.series(),
            SERIES.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        );
        assert!(KernelList::None.series().is_empty());
        assert!(parse_kernel_list("6.1,latest").is_err());
        assert!(parse_kernel_list("6.1.0-57-amd64").is_err());
        assert!(parse_kernel_list(",").is_err());
    }

    #[test]
    fn guest_tests_are_unique_and_named_like_tests() {
        for (i, t) in GUEST_TESTS.iter().enumerate() {
            assert!(!t.target.is_empty() && !t.name.contains("::") && !t.name.contains(' '));
            assert!(t.timeout_secs > 0);
            assert!(
                GUEST_TESTS[..i].iter().all(|o| o.id() != t.id()),
                "{} twice",
                t.id()
            );
        }
    }

    #[test]
    fn finds_test_executables_in_cargo_messages() {
        let lines = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"memtrace_tests"},"executable":null}
{"reason":"compiler-artifact","target":{"kind":["test"],"name":"churn"},"profile":{"test":true},"executable":"/w/target/release/deps/churn-1a2b"}
{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"memtrace-workload"},"executable":"/w/target/release/memtrace-workload"}
{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"memtrace_tests"},"profile":{"test":true},"executable":"/w/target/release/deps/memtrace_tests-9"}
{"reason":"build-finished","success":true}
not json"#;
        let exes = parse_test_executables(lines);
        assert_eq!(exes.len(), 1);
        assert_eq!(
            exes["churn"],
            PathBuf::from("/w/target/release/deps/churn-1a2b")
        );
        assert_eq!(
            parse_test_list(
                "a_test: test\nmod::b: test\nsome_bench: benchmark\n\n2 tests, 0 benchmarks\n"
            ),
            vec!["a_test".to_owned(), "mod::b".to_owned()]
        );
    }

    fn run(release: &str, statuses: &[(&str, Option<Status>, u64)]) -> KernelRun {
        KernelRun {
            release: release.into(),
            boot: Some(Duration::from_millis(5200)),
            wall: Duration::from_millis(301_000),
            hooks: vec![
                KindHooks {
                    kind: "page".into(),
                    traced: true,
                    hooks: vec!["tp_btf:mm_page_free".into(), "tp_btf:mm_page_alloc".into()],
                    note: None,
                },
                KindHooks {
                    kind: "slab".into(),
                    traced: true,
                    hooks: vec!["kmem:kfree".into(), "fentry:kmem_cache_free_bulk".into()],
                    note: Some("bulk frees (kmem_cache_free_bulk) not traced: EPERM".into()),
                },
                KindHooks {
                    kind: "vmalloc".into(),
                    traced: false,
                    hooks: vec![],
                    note: None,
                },
            ],
            hooks_error: None,
            tests: statuses
                .iter()
                .map(|&(id, status, ms)| TestRow {
                    id: id.into(),
                    status,
                    duration: Duration::from_millis(ms),
                    detail: String::new(),
                    log: None,
                })
                .collect(),
            problem: None,
            console_log: "/c.log".into(),
        }
    }

    #[test]
    fn renders_the_table() {
        let runs = [
            run(
                "6.1.0-57-amd64",
                &[
                    ("churn::churns", Some(Status::Pass), 41_234),
                    ("kinds::all", Some(Status::Fail), 9_000),
                ],
            ),
            run(
                "6.12.118+deb12-amd64",
                &[
                    ("churn::churns", Some(Status::Timeout), 300_000),
                    ("kinds::all", None, 0),
                ],
            ),
        ];
        let table = render_table(&runs);
        let expected = "\
kernel           6.1.0-57-amd64     6.12.118+deb12-amd64
churn::churns    pass     41.2 s    TIMEOUT 300.0 s
kinds::all       FAIL      9.0 s    not run
hooks: page      tp_btf             tp_btf
hooks: slab      tracepoint+fentry  tracepoint+fentry
hooks: vmalloc   skipped            skipped
boot             5.2 s              5.2 s
guest wall time  301.0 s            301.0 s
note: 6.1.0-57-amd64 slab: bulk frees (kmem_cache_free_bulk) not traced: EPERM
note: 6.12.118+deb12-amd64 slab: bulk frees (kmem_cache_free_bulk) not traced: EPERM
";
        assert_eq!(table, expected, "\n{table}");
        assert_eq!(runs[0].failed(), 1);
        assert_eq!(runs[1].failed(), 2);
    }

    #[test]
    fn failure_excerpts() {
        let out = "running 1 test\nsome log\n\nthread 'x' panicked at tests/tests/churn.rs:40:9:\n\
                   churn: 12 MiB outstanding, expected at most 1 MiB\nnote: run with \
                   `RUST_BACKTRACE=1` environment variable to display a backtrace\ntest x ... FAILED\n";
        assert_eq!(
            failure_excerpt(out),
            vec![
                "thread 'x' panicked at tests/tests/churn.rs:40:9:".to_owned(),
                "churn: 12 MiB outstanding, expected at most 1 MiB".to_owned()
            ]
        );
        let no_panic: String = (0..20).map(|i| format!("line {i}\n")).collect();
        assert_eq!(failure_excerpt(&no_panic).len(), 10);
        assert_eq!(failure_excerpt(&no_panic)[9], "line 19");
    }
}
