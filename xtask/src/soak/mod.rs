//! `cargo xtask soak`: runs `memtrace serve` for a long time under a rotating load and checks
//! that it does not grow: its resident memory, the kernel memory of its BPF maps, its open
//! fds and threads, the series of /metrics; that /metrics and /healthz keep answering; and
//! that SIGTERM ends it cleanly (exit 0 within 60 s, none of its BPF programs or maps left).
//!
//! The load ([`load`]) is the bench's three workloads in turn plus process and cgroup churn.
//! Every `--sample-every` a sample ([`probe`]) reads memtrace's /proc figures and its
//! endpoints; at the end the samples go to JSON, a table is printed, and the verdict
//! ([`verdict`], the rule is documented there and in docs/reliability.md) decides the exit
//! status.

mod load;
mod probe;
mod report;
mod verdict;

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde::Serialize;

use crate::{
    bench::tracer::{Spec, Tracer},
    build, is_root, mount_tracefs, Ctx,
};
use load::{CgroupChurn, Load, LoadOptions};

/// memtrace serve prints this (then its address) once it serves.
const SERVING_PREFIX: &str = "memtrace: serving http://";
/// SIGTERM must end memtrace serve within this.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long its BPF programs and maps may take to be freed after it exited.
const UNLOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of one HTTP request to memtrace serve.
const HTTP_TIMEOUT: Duration = Duration::from_secs(20);
/// /report.json is fetched every this many samples (it is the largest answer).
const REPORT_EVERY: usize = 6;
/// Counters of the report that say an in-kernel table is full (kept per sample).
const FULL_COUNTERS: [&str; 4] = [
    "stack_id_enomem",
    "stack_id_eexist",
    "outstanding_map_full",
    "objects_map_full",
];
/// The CI soak of `cargo xtask test`.
pub const CI_MINUTES: u32 = 3;

#[derive(Args, Clone, Debug)]
pub struct SoakOpts {
    /// How long to run, in minutes (from the moment memtrace serves).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_080))]
    pub minutes: u32,
    /// memtrace serve's `--interval` (how often it takes a snapshot).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
    /// How often memtrace's figures are sampled.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub sample_every: Duration,
    /// Where to write the samples and the verdict as JSON [default:
    /// target/soak/soak-<unix time>.json].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Run memtrace serve on an otherwise idle machine: no workloads, no process or cgroup
    /// churn.
    #[arg(long)]
    pub no_load: bool,
    /// Run memtrace serve with its production table sizes. By default the soak scales its
    /// tables down (`SMALL_TABLES`) so that they fill during the warm-up: from then on the
    /// housekeeping (stack rotation, slab rate doubling, owner recycling) runs all the time,
    /// and memory that still grows is a leak, not tables filling (at production sizes they
    /// take hours to fill under this load, and memtrace's memory follows them).
    #[arg(long)]
    pub production_tables: bool,
}

/// The scaled-down tables of a soak (see `SoakOpts::production_tables`): an eighth of the
/// stack and object tables, 512 owners.
pub const SMALL_TABLES: [&str; 4] = ["--max-stacks", "2048", "--max-objects", "32768"];
/// The owner table of a soak's scaled-down tables (a test knob of memtrace's).
pub const SMALL_OWNER_CAP: (&str, &str) = ("MEMTRACE_OWNER_CAP", "512");

impl SoakOpts {
    /// The soak `cargo xtask test` runs.
    pub fn ci(minutes: u32) -> SoakOpts {
        SoakOpts {
            minutes,
            interval: Duration::from_secs(2),
            sample_every: Duration::from_secs(10),
            out: None,
            no_load: false,
            production_tables: false,
        }
    }
}

/// `2s`, `500ms`, `1m`, `1h`, `1m30s`; at least 1 ms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration {s:?} (e.g. 2s, 500ms, 1m)");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let number = u32::try_from(number).map_err(|_| bad())?;
        total += unit.checked_mul(number).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    if total < Duration::from_millis(1) {
        return Err(bad());
    }
    Ok(total)
}

/// A duration as memtrace's `--interval` takes it.
fn duration_arg(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

// ---- signals ---------------------------------------------------------------------------------

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// While alive, SIGINT and SIGTERM only raise [`INTERRUPTED`]: the soak then stops memtrace,
/// the load and its cgroups itself before it exits. The previous handlers come back on drop.
struct SignalGuard {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

impl SignalGuard {
    fn install() -> Result<SignalGuard> {
        INTERRUPTED.store(false, Ordering::SeqCst);
        let mut guard = SignalGuard {
            previous: Vec::new(),
        };
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: an all-zero sigaction is a valid value (no flags, empty handler) that
            // is filled in below.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            // SAFETY: `action.sa_mask` is a live sigset_t owned by this frame.
            unsafe { libc::sigemptyset(&mut action.sa_mask) };
            // SAFETY: as above: a zeroed sigaction, filled in by the kernel below.
            let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers point at live sigaction values; the handler only stores
            // to an atomic, which is async-signal-safe.
            if unsafe { libc::sigaction(signal, &action, &mut previous) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("installing a handler for signal {signal}"));
            }
            guard.previous.push((signal, previous));
        }
        Ok(guard)
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (signal, previous) in &self.previous {
            // SAFETY: `previous` is the sigaction the kernel gave back for this signal.
            unsafe { libc::sigaction(*signal, previous, std::ptr::null_mut()) };
        }
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Sleeps until `until`, waking early on SIGINT/SIGTERM.
fn sleep_until(until: Instant) {
    while !interrupted() {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(200)));
    }
}

// ---- samples ---------------------------------------------------------------------------------

/// One sample of memtrace serve.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    /// Seconds since memtrace serves.
    pub t_seconds: f64,
    pub unix_seconds: u64,
    /// The workload running (none without load).
    pub workload: Option<&'static str>,
    pub rss_bytes: u64,
    pub threads: u64,
    pub fds: u64,
    pub bpf_maps: u64,
    /// Sum of `memlock` over its BPF map fds.
    pub map_memlock_bytes: u64,
    pub metrics_status: Option<u16>,
    pub metrics_latency_ms: Option<f64>,
    pub metrics_bytes: Option<u64>,
    /// Sample lines of /metrics.
    pub series: Option<u64>,
    pub programs: Option<u64>,
    /// 270 + 3 per program.
    pub series_bound: Option<u64>,
    /// `memtrace_events_total{failure="true"}` by counter.
    pub failure_counters: BTreeMap<String, u64>,
    pub failures_total: Option<u64>,
    pub recursion_misses: Option<u64>,
    /// `memtrace_table_entries` by table.
    pub table_entries: BTreeMap<String, u64>,
    /// Stack rotation, owner recycling, cgroups expired, slab rate changes (by metric).
    pub housekeeping: BTreeMap<String, u64>,
    /// `memtrace_bpf_map_memory_bytes` (memtrace's own figure).
    pub map_memory_gauge_bytes: Option<u64>,
    /// Now minus `memtrace_snapshot_timestamp_seconds`.
    pub snapshot_age_seconds: Option<f64>,
    pub healthz_status: Option<u16>,
    pub healthz_ok: bool,
    pub pprof_status: Option<u16>,
    pub pprof_bytes: Option<u64>,
    pub pprof_latency_ms: Option<f64>,
    pub report_json_status: Option<u16>,
    pub report_json_bytes: Option<u64>,
    pub report_json_latency_ms: Option<f64>,
    /// Stacks in /report.json (what memtrace's memory grows with).
    pub report_stacks: Option<u64>,
    /// Outstanding allocations (page records and objects) in /report.json.
    pub report_allocations: Option<u64>,
    pub report_snapshots: Option<u64>,
    /// Counters of /report.json that say a table is full: `stack_id_enomem`,
    /// `stack_id_eexist`, `outstanding_map_full`, `objects_map_full`.
    pub report_full_counters: BTreeMap<String, u64>,
    /// Short-lived child processes started by the load so far.
    pub processes: u64,
    pub cgroups_created: u64,
    /// Requests that failed at this sample.
    pub errors: Vec<String>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Reads one sample: /proc first (no request of ours in flight), then the endpoints.
fn take_sample(
    pid: libc::pid_t,
    addr: SocketAddr,
    t: Duration,
    index: usize,
    load: Option<&Load>,
) -> Result<(Sample, probe::ProcFigures)> {
    let figures = probe::read_proc(pid).context("reading memtrace's /proc figures")?;
    let mut s = Sample {
        t_seconds: (t.as_secs_f64() * 10.0).round() / 10.0,
        unix_seconds: unix_now(),
        workload: load.and_then(|l| l.stats().phase()).map(|w| w.name()),
        rss_bytes: figures.rss_bytes,
        threads: figures.threads,
        fds: figures.fds,
        bpf_maps: figures.bpf_maps,
        map_memlock_bytes: figures.map_memlock_bytes,
        ..Sample::default()
    };
    if let Some(load) = load {
        s.processes = load.stats().processes.load(Ordering::Relaxed);
        s.cgroups_created = load.stats().cgroups_created.load(Ordering::Relaxed);
    }
    match probe::http_get(addr, "/metrics", HTTP_TIMEOUT) {
        Ok(reply) => {
            s.metrics_status = Some(reply.status);
            s.metrics_latency_ms = Some(ms(reply.latency));
            s.metrics_bytes = Some(reply.body.len() as u64);
            if reply.status == 200 {
                let text = String::from_utf8_lossy(&reply.body);
                match probe::parse_metrics(&text) {
                    Ok(m) => {
                        s.series = Some(m.series);
                        s.programs = Some(m.programs);
                        s.series_bound = Some(probe::series_bound(m.programs));
                        s.failures_total = Some(m.failures_total());
                        s.recursion_misses = Some(m.recursion_misses);
                        s.map_memory_gauge_bytes = m.map_memory_gauge;
                        s.snapshot_age_seconds = m
                            .snapshot_timestamp
                            .map(|ts| ((unix_now_f64() - ts) * 10.0).round() / 10.0);
                        s.failure_counters = m.failure_counters;
                        s.table_entries = m.table_entries;
                        s.housekeeping = m.housekeeping;
                    }
                    Err(e) => s.errors.push(format!("/metrics does not parse: {e:#}")),
                }
            }
        }
        Err(e) => s.errors.push(format!("/metrics: {e:#}")),
    }
    match probe::http_get(addr, "/healthz", HTTP_TIMEOUT) {
        Ok(reply) => {
            s.healthz_status = Some(reply.status);
            s.healthz_ok = reply.status == 200 && reply.body.starts_with(b"ok");
        }
        Err(e) => s.errors.push(format!("/healthz: {e:#}")),
    }
    match probe::http_get(addr, "/debug/pprof/heap", HTTP_TIMEOUT) {
        Ok(reply) => {
            s.pprof_status = Some(reply.status);
            s.pprof_bytes = Some(reply.body.len() as u64);
            s.pprof_latency_ms = Some(ms(reply.latency));
        }
        Err(e) => s.errors.push(format!("/debug/pprof/heap: {e:#}")),
    }
    if index.is_multiple_of(REPORT_EVERY) {
        match probe::http_get(addr, "/report.json", HTTP_TIMEOUT) {
            Ok(reply) => {
                s.report_json_status = Some(reply.status);
                s.report_json_bytes = Some(reply.body.len() as u64);
                s.report_json_latency_ms = Some(ms(reply.latency));
                if reply.status == 200 {
                    match probe::parse_report(&reply.body) {
                        Ok(r) => {
                            s.report_stacks = Some(r.stacks);
                            s.report_allocations = Some(r.totals.allocations);
                            s.report_snapshots = Some(r.snapshots);
                            s.report_full_counters = r
                                .counters
                                .into_iter()
                                .filter(|(k, _)| FULL_COUNTERS.contains(&k.as_str()))
                                .collect();
                        }
                        Err(e) => s.errors.push(format!("{e:#}")),
                    }
                }
            }
            Err(e) => s.errors.push(format!("/report.json: {e:#}")),
        }
    }
    Ok((s, figures))
}

// ---- the run ---------------------------------------------------------------------------------

/// What a soak observed; written as JSON whatever the outcome.
#[derive(Default)]
pub struct Run {
    pub started_unix: u64,
    pub command: Vec<String>,
    pub pid: Option<libc::pid_t>,
    pub addr: Option<SocketAddr>,
    pub load: Option<LoadOptions>,
    pub cgroups: Option<CgroupChurn>,
    pub samples: Vec<Sample>,
    /// Per workload: name, seconds run, work done, unit.
    pub workload_totals: Vec<(&'static str, f64, f64, &'static str)>,
    pub processes: u64,
    pub cgroups_created: u64,
    pub cgroups_removed: u64,
    /// From SIGTERM to the exit.
    pub stop_seconds: Option<f64>,
    pub bpf_programs: usize,
    pub bpf_maps: usize,
    pub wall: Duration,
}

fn record_load(run: &mut Run, load: &Load) {
    let stats = load.stats();
    run.workload_totals = stats
        .totals()
        .into_iter()
        .map(|(w, secs, work)| (w.name(), secs, work, w.unit()))
        .collect();
    run.processes = stats.processes.load(Ordering::Relaxed);
    run.cgroups_created = stats.cgroups_created.load(Ordering::Relaxed);
    run.cgroups_removed = stats.cgroups_removed.load(Ordering::Relaxed);
}

/// Starts memtrace serve and the load, samples until the end, stops both. Every early return
/// drops the load (threads joined, cgroups removed) and then the tracer (SIGINT, SIGKILL after
/// 10 s, reaped) by their drop guards.
fn drive(bin: &Path, opts: &SoakOpts, run: &mut Run) -> Result<()> {
    let interval = duration_arg(opts.interval);
    let mut args: Vec<OsString> = ["serve", "--listen", "127.0.0.1:0", "--interval", &interval]
        .iter()
        .map(OsString::from)
        .collect();
    let mut env: Vec<(String, String)> = Vec::new();
    if !opts.production_tables {
        args.extend(SMALL_TABLES.iter().map(OsString::from));
        env.push((SMALL_OWNER_CAP.0.into(), SMALL_OWNER_CAP.1.into()));
    }
    run.command = env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(std::iter::once(bin.display().to_string()))
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect();
    eprintln!("[soak] $ {}", run.command.join(" "));
    let spec = Spec {
        label: "memtrace serve".into(),
        program: bin.to_path_buf(),
        args,
        env,
        ready_prefix: SERVING_PREFIX,
        count_entries: None,
        resend_sigint: false,
    };
    let mut tracer = Tracer::start(&spec)?;
    let pid = tracer.pid();
    run.pid = Some(pid);
    let line = tracer
        .ready_line()
        .context("memtrace serve's serving line vanished")?;
    let addr: SocketAddr = line[SERVING_PREFIX.len()..]
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no address in memtrace serve's line {line:?}"))?;
    run.addr = Some(addr);
    eprintln!("[soak] memtrace serve (pid {pid}) serves http://{addr}/");

    let load = if opts.no_load {
        eprintln!("[soak] no load (--no-load)");
        None
    } else {
        let options = LoadOptions::default();
        let load = Load::start(options)?;
        run.load = Some(options);
        match &load.cgroups {
            CgroupChurn::On(parent) => {
                eprintln!("[soak] cgroup churn under {}", parent.display())
            }
            CgroupChurn::Off(why) => eprintln!("[soak] no cgroup churn: {why}"),
        }
        run.cgroups = Some(load.cgroups.clone());
        Some(load)
    };

    let start = Instant::now();
    let length = Duration::from_secs(u64::from(opts.minutes) * 60);
    let mut last_figures = None;
    for index in 0usize.. {
        if interrupted() {
            bail!(
                "interrupted (SIGINT or SIGTERM) after {:.0} s of {} minutes",
                start.elapsed().as_secs_f64(),
                opts.minutes
            );
        }
        if !tracer.running()? {
            bail!(
                "memtrace serve (pid {pid}) ended during the soak ({}), after {:.0} s; its \
                 stderr:\n{}",
                tracer.exit_description().unwrap_or_default(),
                start.elapsed().as_secs_f64(),
                tracer.stderr_text()
            );
        }
        if let Some(failure) = load.as_ref().and_then(|l| l.stats().failure()) {
            bail!("the load failed: {failure}");
        }
        let (sample, figures) = take_sample(pid, addr, start.elapsed(), index, load.as_ref())?;
        eprintln!("[soak] {}", report::progress_line(&sample));
        run.samples.push(sample);
        last_figures = Some(figures);
        if start.elapsed() >= length {
            break;
        }
        let next = opts
            .sample_every
            .checked_mul(u32::try_from(index + 1).unwrap_or(u32::MAX))
            .map_or(length, |d| d.min(length));
        sleep_until(start + next);
    }

    if let Some(mut load) = load {
        eprintln!("[soak] stopping the load");
        let stopped = load.stop();
        record_load(run, &load);
        stopped?;
    }
    let (progs, maps) = last_figures
        .map(|f| (f.prog_ids, f.map_ids))
        .unwrap_or((BTreeSet::new(), BTreeSet::new()));
    run.bpf_programs = progs.len();
    run.bpf_maps = maps.len();
    eprintln!("[soak] SIGTERM to memtrace serve (pid {pid})");
    let stopped = tracer
        .stop_with(libc::SIGTERM, STOP_TIMEOUT)
        .context("memtrace serve must exit with 0 within 60 s of SIGTERM")?;
    if stopped.hung {
        bail!("memtrace serve (pid {pid}) did not exit within {STOP_TIMEOUT:?} of SIGTERM: killed");
    }
    run.stop_seconds = Some(stopped.time_to_report.as_secs_f64());
    eprintln!(
        "[soak] memtrace serve exited with 0 {:.1} s after SIGTERM",
        stopped.time_to_report.as_secs_f64()
    );
    if let Some(left) = probe::wait_bpf_objects_gone(&progs, &maps, UNLOAD_TIMEOUT)? {
        bail!("memtrace serve left BPF objects behind: {left}");
    }
    Ok(())
}

/// `cargo xtask soak`: build, then [`run`].
pub fn soak(ctx: &Ctx, opts: &SoakOpts) -> Result<()> {
    if !is_root() {
        bail!(not_root());
    }
    build(ctx, false)?;
    run(ctx, opts)
}

fn not_root() -> String {
    "`cargo xtask soak` needs root: memtrace serve loads BPF programs and the soak creates \
     cgroups (run it as root)"
        .into()
}

/// The soak step of `cargo xtask test` (after the host tests): a short soak; without root a
/// loud skip, or a failure when `MEMTRACE_REQUIRE_BPF=1` (CI).
pub fn ci(ctx: &Ctx, minutes: u32) -> Result<()> {
    if minutes == 0 {
        eprintln!("[xtask] soak: SKIPPED (--soak-minutes 0)");
        return Ok(());
    }
    if !is_root() {
        if std::env::var_os("MEMTRACE_REQUIRE_BPF").is_some_and(|v| v == "1") {
            bail!("{} (MEMTRACE_REQUIRE_BPF=1)", not_root());
        }
        eprintln!("[xtask] soak: SKIPPED — not root (memtrace serve needs BPF)");
        return Ok(());
    }
    eprintln!("[xtask] soak: memtrace serve for {minutes} minutes under load");
    run(ctx, &SoakOpts::ci(minutes)).context("the soak of memtrace serve failed")
}

/// Runs the soak with an already built memtrace; writes the JSON and prints the table and
/// the verdict. Fails on a failed verdict (one line with the numbers) or any error.
pub fn run(ctx: &Ctx, opts: &SoakOpts) -> Result<()> {
    if !is_root() {
        bail!(not_root());
    }
    let bin = ctx.memtrace_bin();
    if !bin.is_file() {
        bail!(
            "{} is missing: run `cargo xtask build` first",
            bin.display()
        );
    }
    mount_tracefs();
    let mut run = Run {
        started_unix: unix_now(),
        ..Run::default()
    };
    let out = opts.out.clone().unwrap_or_else(|| {
        ctx.target_dir
            .join("soak")
            .join(format!("soak-{}.json", run.started_unix))
    });
    // A file that cannot be written fails now, not after the run.
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(&out, "{}\n").with_context(|| format!("cannot write {}", out.display()))?;

    let wall = Instant::now();
    let outcome = {
        let _signals = SignalGuard::install()?;
        drive(&bin, opts, &mut run)
    };
    run.wall = wall.elapsed();
    let length = Duration::from_secs(u64::from(opts.minutes) * 60);
    let warmup = verdict::warmup(length);
    let checks = report::checks(&run.samples, warmup);
    let error = outcome.as_ref().err().map(|e| format!("{e:#}"));
    let json = report::json(&run, opts, warmup, &checks, error.as_deref());
    let text = serde_json::to_string_pretty(&json).context("serializing the soak")?;
    fs::write(&out, text + "\n").with_context(|| format!("writing {}", out.display()))?;
    print!("{}", report::text(&run, opts, warmup, &checks));
    eprintln!("[soak] samples and verdict written to {}", out.display());
    outcome?;
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| !c.pass)
        .map(|c| c.detail.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("soak verdict FAIL: {}", failed.join("; "));
    }
    eprintln!("[soak] verdict: PASS");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "2", "s", "2x", "0s", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(duration_arg(Duration::from_secs(2)), "2s");
        assert_eq!(duration_arg(Duration::from_millis(1500)), "1500ms");
    }
}
