//! `cargo xtask bench`: memtrace's overhead on three workloads, its footprint, its time to
//! report, and its accuracy on one known hold, next to bare runs and (when installed) a
//! bpftrace script doing the same page tracking; the per-event cost of every program (BPF run
//! statistics); and, at scale, gigabytes of order-0 pages held in socket queues: accuracy,
//! kernel memory, tracer memory and time to report. It measures and reports ratios; it asserts
//! nothing about them.
//!
//! Runs are interleaved (bare, default, page, all, bpftrace, bare, default, …) so that drift
//! of the machine hits every configuration alike; each tracer session is a fresh process that
//! is started and attached before the workload starts and stopped (SIGINT) after it ended.

mod cost;
pub(crate) mod hooks;
pub(crate) mod report;
pub(crate) mod tracer;
pub(crate) mod workload;

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::{build, cmd, is_root, mount_tracefs, Ctx};
use cost::{CostSample, StatsEnabled};
use tracer::{EntryMatch, Footprint, Spec, Stopped, Tracer};
use workload::{Hold, UnixHold, Workload};

/// Bytes held in the unread loopback receiver of the accuracy check.
const HOLD_BYTES: u64 = 64 << 20;
/// The frame that marks the receive queue's page frags in memtrace's stacks.
const HOLD_FRAME: &str = "skb_page_frag_refill";
/// Pause before every measured run, so that memory the previous tracer freed (its maps are
/// freed after it exits, partly deferred) is not reclaimed during the next run.
const SETTLE: Duration = Duration::from_millis(300);
/// bpftrace's map capacity: 1 Mi outstanding pages (what memtrace's page table held when the
/// bench was written). bpftrace reads it from `BPFTRACE_MAX_MAP_KEYS` since 0.18 and from
/// `BPFTRACE_MAP_KEYS_MAX` before (0.17, Debian 12's): both are set, else an older bpftrace
/// keeps 4096 pages.
const BPFTRACE_MAX_MAP_KEYS: &str = "1048576";
/// The bpftrace peer: outstanding pages keyed by pfn with their kernel stacks.
const BPFTRACE_SCRIPT: &str = "\
// Outstanding page allocations with their kernel stacks: the bpftrace peer of
// `memtrace trace --kind page` (written by `cargo xtask bench`).
tracepoint:kmem:mm_page_alloc { @[args->pfn] = kstack; }
tracepoint:kmem:mm_page_free { delete(@[args->pfn]); }
";
/// The bpftrace peer of memtrace's default session: kernel pages (movable ones skipped, as
/// memtrace's default does) and kmalloc / kmem_cache objects keyed by address, each with its
/// kernel stack.
const BPFTRACE_SLAB_SCRIPT: &str = "\
// Outstanding kernel pages and slab objects with their kernel stacks: the bpftrace peer of
// the default `memtrace trace` (written by `cargo xtask bench`).
tracepoint:kmem:mm_page_alloc /args->migratetype != 1/ { @pages[args->pfn] = kstack; }
tracepoint:kmem:mm_page_free { delete(@pages[args->pfn]); }
tracepoint:kmem:kmalloc { @objects[args->ptr] = kstack; }
tracepoint:kmem:kmem_cache_alloc { @objects[args->ptr] = kstack; }
tracepoint:kmem:kfree { delete(@objects[args->ptr]); }
tracepoint:kmem:kmem_cache_free { delete(@objects[args->ptr]); }
";
/// bpftrace prints this on stderr once every probe is attached (its test-suite hook), when
/// the variable of the same name is set.
const BPFTRACE_READY: &str = "__BPFTRACE_NOTIFY_PROBES_ATTACHED";
const MEMTRACE_READY: &str = "memtrace: tracing";
/// `memtrace serve` prints this (then its address) once it serves.
const SERVE_READY: &str = "memtrace: serving http://";
/// The frame of the scale holds' pages (`unix_stream_sendmsg` → `sock_alloc_send_pskb` →
/// `alloc_skb_with_frags` → the page allocator), and of the slab pages of their heads, which
/// do not count.
const SCALE_FRAME: &str = "alloc_skb_with_frags";
const SCALE_EXCLUDE: &str = "allocate_slab";
/// Sizes of the scale holds by default (GiB).
const SCALE_GIB: [u32; 3] = [1, 4, 8];
/// The memtrace configurations of the scale experiment (and bpftrace).
const SCALE_CONFIGS: [&str; 2] = ["default", "every-page"];
/// Memory a scale hold needs besides its pages: the skbs (about a quarter of the pages) and
/// room for everything else.
const SCALE_OVERHEAD: f64 = 0.35;
const SCALE_SPARE: u64 = 1 << 30;

#[derive(Args)]
pub struct BenchOpts {
    /// Measured runs per workload and configuration, interleaved [default: 5, 3 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    runs: Option<u32>,
    /// Smoke check: 3 runs and 1 s workloads.
    #[arg(long)]
    quick: bool,
    /// Seconds each throughput workload runs [default: 3, 1 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    seconds: Option<u32>,
    /// Where to write the results as JSON [default: target/bench/bench-<unix time>.json].
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Leave out the bpftrace comparison even when bpftrace is installed.
    #[arg(long)]
    no_bpftrace: bool,
    /// Leave out the per-program cost runs (`kernel.bpf_stats_enabled=1`).
    #[arg(long)]
    no_cost: bool,
    /// Sizes of the scale holds in GiB, comma-separated [default: 1,4,8; 1 with --quick].
    #[arg(long, value_delimiter = ',', value_name = "GIB")]
    scale_gib: Vec<u32>,
    /// Leave out the scale experiment.
    #[arg(long)]
    no_scale: bool,
    /// Only these configurations (comma-separated names, e.g. `default,hooks-only`; `bare` is
    /// always run) [default: all].
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    configs: Vec<String>,
    /// Only these workloads (`page-fault-churn`, `tcp-stream`, `slab-unix-dgram`) [default:
    /// all].
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    workloads: Vec<String>,
    /// Use this memtrace binary instead of building one.
    #[arg(long, value_name = "FILE")]
    memtrace_bin: Option<PathBuf>,
    /// Another memtrace build (e.g. before a change) to run as `default-before`,
    /// `every-page-before` and `slab-exact-before`, interleaved with the others in every
    /// experiment.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
}

/// A way to run a workload: bare, or under one tracer.
#[derive(Clone, Debug)]
pub enum Config {
    Bare,
    Memtrace {
        name: &'static str,
        args: &'static [&'static str],
    },
    Bpftrace {
        name: &'static str,
        bin: PathBuf,
        script: PathBuf,
    },
    /// Empty programs on memtrace's events (`xtask bench-hooks`): the floor under every
    /// tracer's per-event cost.
    Hooks {
        name: &'static str,
        xtask: PathBuf,
        object: PathBuf,
    },
    /// A memtrace configuration run with another build (`--baseline`): before and after in
    /// the same interleaved runs.
    Baseline {
        name: &'static str,
        args: &'static [&'static str],
        bin: PathBuf,
    },
}

/// The configurations `--baseline` runs with the other build: (name, the current build's
/// configuration of the same arguments).
const BASELINE_CONFIGS: [(&str, &str); 3] = [
    ("default-before", "default"),
    ("every-page-before", "every-page"),
    ("slab-exact-before", "slab-exact"),
];

/// The memtrace configurations: the default session (kernel memory; movable pages skipped in
/// the kernel; slab objects sampled), the same sampled, every page tracked (tp_btf and classic
/// tracepoints), every kind and class, the default session with every slab object recorded,
/// and `memtrace serve` at its defaults (the always-on fleet mode; its snapshot every 60 s
/// falls outside a run of a few seconds: what it adds is the tracing alone).
const MEMTRACE_CONFIGS: [Config; 7] = [
    Config::Memtrace {
        name: "default",
        args: &[],
    },
    Config::Memtrace {
        name: "sampled",
        args: &["--sample", "4"],
    },
    Config::Memtrace {
        name: "every-page",
        args: &["--kind", "page", "--class", "all"],
    },
    Config::Memtrace {
        name: "classic",
        args: &["--kind", "page", "--class", "all", "--classic-tracepoints"],
    },
    Config::Memtrace {
        name: "all",
        args: &["--kind", "all", "--class", "all"],
    },
    Config::Memtrace {
        name: "slab-exact",
        args: &["--slab-exact"],
    },
    Config::Memtrace {
        name: "serve",
        args: &["serve", "--listen", "127.0.0.1:0"],
    },
];

impl Config {
    pub fn name(&self) -> &'static str {
        match self {
            Config::Bare => "bare",
            Config::Memtrace { name, .. } | Config::Baseline { name, .. } => name,
            Config::Bpftrace { name, .. } | Config::Hooks { name, .. } => name,
        }
    }

    fn is_memtrace(&self) -> bool {
        matches!(self, Config::Memtrace { .. } | Config::Baseline { .. })
    }

    /// The `--baseline` twin of a current configuration.
    fn baseline(name: &str, bin: &Path) -> Option<Config> {
        let (before, current) = BASELINE_CONFIGS.iter().find(|(_, c)| *c == name)?;
        match MEMTRACE_CONFIGS.iter().find(|c| c.name() == *current)? {
            Config::Memtrace { args, .. } => Some(Config::Baseline {
                name: before,
                args,
                bin: bin.to_path_buf(),
            }),
            _ => None,
        }
    }

    /// `memtrace serve` (no report file: left out of the accuracy runs).
    fn is_serve(&self) -> bool {
        matches!(self, Config::Memtrace { args, .. } if args.first() == Some(&"serve"))
    }

    /// The tracer to start, with an extra `--json FILE` for memtrace when given.
    fn spec(&self, memtrace: &Path, json: Option<&Path>) -> Option<Spec> {
        match self {
            Config::Bare => None,
            Config::Memtrace { name, args } if self.is_serve() => Some(Spec {
                label: format!("memtrace ({name})"),
                program: memtrace.to_path_buf(),
                args: args.iter().map(OsString::from).collect(),
                env: Vec::new(),
                ready_prefix: SERVE_READY,
                count_entries: None,
                resend_sigint: false,
            }),
            Config::Memtrace { name, args } | Config::Baseline { name, args, .. } => {
                let program = match self {
                    Config::Baseline { bin, .. } => bin.clone(),
                    _ => memtrace.to_path_buf(),
                };
                let mut all: Vec<OsString> = ["trace", "--duration", "10m"]
                    .iter()
                    .chain(args.iter())
                    .map(OsString::from)
                    .collect();
                if let Some(json) = json {
                    all.push("--json".into());
                    all.push(json.into());
                }
                Some(Spec {
                    label: format!("memtrace ({name})"),
                    program,
                    args: all,
                    env: Vec::new(),
                    ready_prefix: MEMTRACE_READY,
                    count_entries: None,
                    resend_sigint: false,
                })
            }
            Config::Hooks {
                name,
                xtask,
                object,
            } => Some(Spec {
                label: (*name).into(),
                program: xtask.clone(),
                args: vec!["bench-hooks".into(), "--object".into(), object.into()],
                env: Vec::new(),
                ready_prefix: hooks::READY,
                count_entries: None,
                resend_sigint: false,
            }),
            Config::Bpftrace { name, bin, script } => Some(Spec {
                label: (*name).into(),
                program: bin.clone(),
                args: vec![script.into()],
                env: vec![
                    ("BPFTRACE_MAX_MAP_KEYS".into(), BPFTRACE_MAX_MAP_KEYS.into()),
                    ("BPFTRACE_MAP_KEYS_MAX".into(), BPFTRACE_MAX_MAP_KEYS.into()),
                    (BPFTRACE_READY.into(), "1".into()),
                ],
                ready_prefix: BPFTRACE_READY,
                // Its map, printed at exit: the pages of the scale holds.
                count_entries: Some(EntryMatch {
                    // The pages map: `@[pfn]` in the pages-only script, `@pages[pfn]` in
                    // the one with slab objects.
                    start: if *name == "bpftrace-slab" {
                        "@pages["
                    } else {
                        "@["
                    },
                    frame: SCALE_FRAME,
                    exclude: SCALE_EXCLUDE,
                }),
                resend_sigint: true,
            }),
        }
    }

    /// The command line, for the report.
    fn command_line(&self) -> String {
        match self {
            Config::Bare => "(no tracer)".into(),
            Config::Memtrace { args, .. } | Config::Baseline { args, .. } => {
                let mut line = match self {
                    Config::Baseline { bin, .. } => {
                        format!("{} trace --duration 10m", bin.display())
                    }
                    _ => "memtrace trace --duration 10m".to_string(),
                };
                for arg in *args {
                    line.push(' ');
                    line.push_str(arg);
                }
                line
            }
            Config::Bpftrace { script, .. } => format!(
                "BPFTRACE_MAX_MAP_KEYS={BPFTRACE_MAX_MAP_KEYS} \
                 BPFTRACE_MAP_KEYS_MAX={BPFTRACE_MAX_MAP_KEYS} bpftrace {}",
                script.display()
            ),
            Config::Hooks { object, .. } => format!(
                "xtask bench-hooks --object {}: empty raw tracepoint programs on mm_page_alloc, \
                 mm_page_free, kmalloc, kmem_cache_alloc, kfree (2), kmem_cache_free (2)",
                object.display()
            ),
        }
    }
}

/// A tracer's measurements over one session.
#[derive(Clone, Debug)]
pub struct TracerSample {
    pub pid: i32,
    /// Footprint read just before SIGINT.
    pub footprint: Footprint,
    pub stopped: Stopped,
}

/// One measured run of a throughput workload.
#[derive(Clone, Debug)]
pub struct RunSample {
    pub workload: Workload,
    pub config: &'static str,
    pub run: u32,
    pub work: f64,
    pub elapsed: Duration,
    pub throughput: f64,
    pub tracer: Option<TracerSample>,
}

/// One hold accuracy check.
#[derive(Clone, Debug)]
pub struct HoldSample {
    pub config: &'static str,
    pub run: u32,
    pub sent: u64,
    /// SIOCINQ of the receiver: the truth.
    pub queued: u64,
    pub unsent: u64,
    /// Outstanding bytes of the stacks containing `skb_page_frag_refill`.
    pub traced: u64,
    pub traced_stacks: u64,
    /// Whether the top stack of the report is one of them.
    pub top_stack_matches: bool,
    pub tracer: TracerSample,
}

impl HoldSample {
    pub fn error_pct(&self) -> f64 {
        (self.traced as f64 - self.queued as f64) * 100.0 / self.queued as f64
    }
}

/// One scale hold under one tracer.
#[derive(Clone, Debug)]
pub struct ScaleSample {
    pub config: &'static str,
    pub gib: u32,
    pub sent: u64,
    /// `SIOCINQ` of the receivers: the truth.
    pub queued: u64,
    /// Bytes the tracer attributes to the hold's pages; `None` when it hung (no report).
    pub traced: Option<u64>,
    /// How long writing the hold took under the tracer.
    pub fill: Duration,
    pub tracer: TracerSample,
}

impl ScaleSample {
    pub fn error_pct(&self) -> Option<f64> {
        self.traced
            .map(|t| (t as f64 - self.queued as f64) * 100.0 / self.queued.max(1) as f64)
    }
}

/// Everything one bench invocation measured.
pub struct Results {
    pub started_unix: u64,
    pub hostname: String,
    pub kernel: String,
    pub cpus: usize,
    pub runs: u32,
    pub quick: bool,
    pub seconds: u32,
    pub memtrace_bin: PathBuf,
    pub bpftrace: Option<String>,
    pub configs: Vec<Config>,
    pub samples: Vec<RunSample>,
    pub holds: Vec<HoldSample>,
    /// Per-program costs (`kernel.bpf_stats_enabled=1` runs).
    pub costs: Vec<CostSample>,
    pub scale: Vec<ScaleSample>,
    pub notes: Vec<String>,
    pub wall: Duration,
}

pub(crate) fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// `bpftrace` on PATH; when missing, one `apt-get install -y bpftrace`.
fn find_bpftrace(notes: &mut Vec<String>) -> Option<PathBuf> {
    let on_path = |name: &str| {
        env::split_paths(&env::var_os("PATH").unwrap_or_default())
            .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    };
    if let Some(bin) = on_path("bpftrace") {
        return Some(bin);
    }
    eprintln!("[bench] bpftrace is not installed; trying apt-get once");
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "bpftrace"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    match cmd::run(&mut install, "continuing without the bpftrace comparison") {
        Ok(()) => on_path("bpftrace"),
        Err(e) => {
            eprintln!("[bench] warning: {e:#}");
            notes.push(format!(
                "bpftrace not installed and `apt-get install -y bpftrace` failed ({e:#}); no \
                 bpftrace comparison"
            ));
            None
        }
    }
}

/// Sets up the bpftrace configurations (pages only, and pages + slab objects, the peer of the
/// default session): writes the scripts and checks that bpftrace attaches and stops cleanly on
/// this kernel. Those that do not are left out with a note.
fn bpftrace_configs(dir: &Path, notes: &mut Vec<String>) -> Option<(Vec<Config>, String)> {
    let bin = find_bpftrace(notes)?;
    let version = Command::new(&bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "bpftrace (version unknown)".into());
    let mut configs = Vec::new();
    for (name, file, text) in [
        ("bpftrace", "outstanding-pages.bt", BPFTRACE_SCRIPT),
        (
            "bpftrace-slab",
            "outstanding-pages-slab.bt",
            BPFTRACE_SLAB_SCRIPT,
        ),
    ] {
        let script = dir.join(file);
        if let Err(e) = fs::create_dir_all(dir).and_then(|()| fs::write(&script, text)) {
            notes.push(format!(
                "cannot write {}: {e}; no {name} comparison",
                script.display()
            ));
            continue;
        }
        let config = Config::Bpftrace {
            name,
            bin: bin.clone(),
            script,
        };
        let Some(spec) = config.spec(Path::new(""), None) else {
            continue;
        };
        eprintln!("[bench] checking that {version} attaches {name} on this kernel");
        let check = Tracer::start(&spec).and_then(|tracer| {
            // As in a measured run, not a SIGINT the moment the probes are attached: bpftrace
            // installs its SIGINT handler after saying so.
            std::thread::sleep(SETTLE);
            tracer.stop()
        });
        match check.and_then(|s| {
            if s.hung {
                bail!("it did not exit after SIGINT")
            }
            Ok(s)
        }) {
            Ok(_) => configs.push(config),
            Err(e) => {
                eprintln!("[bench] warning: {name} does not work here: {e:#}");
                notes.push(format!(
                    "{version} failed its {name} check run ({e:#}); no {name} comparison"
                ));
            }
        }
    }
    (!configs.is_empty()).then_some((configs, version))
}

/// Starts the configuration's tracer (if any), attached before this returns.
fn start_tracer(config: &Config, memtrace: &Path, json: Option<&Path>) -> Result<Option<Tracer>> {
    config
        .spec(memtrace, json)
        .map(|spec| Tracer::start(&spec))
        .transpose()
}

fn stop_tracer(tracer: Tracer) -> Result<TracerSample> {
    let pid = tracer.pid();
    let footprint = tracer.footprint()?;
    let stopped = tracer.stop()?;
    Ok(TracerSample {
        pid,
        footprint,
        stopped,
    })
}

fn run_once(
    workload: Workload,
    config: &Config,
    run: u32,
    duration: Duration,
    memtrace: &Path,
) -> Result<RunSample> {
    std::thread::sleep(SETTLE);
    let tracer = start_tracer(config, memtrace, None)?;
    let measured = workload.run(duration)?;
    let tracer = tracer.map(stop_tracer).transpose()?;
    Ok(RunSample {
        workload,
        config: config.name(),
        run,
        work: measured.work,
        elapsed: measured.elapsed,
        throughput: measured.throughput(),
        tracer,
    })
}

/// One cost run: the workload under the tracer with `kernel.bpf_stats_enabled=1`, and the
/// statistics of every program the tracer holds, read just before it is stopped.
fn cost_once(
    workload: Workload,
    config: &Config,
    duration: Duration,
    memtrace: &Path,
) -> Result<CostSample> {
    std::thread::sleep(SETTLE);
    let tracer =
        start_tracer(config, memtrace, None)?.context("a cost run needs a tracer configuration")?;
    let before = cost::programs_of(tracer.pid())?;
    let measured = workload.run(duration)?;
    let after = cost::programs_of(tracer.pid())?;
    stop_tracer(tracer)?;
    // What the programs did during the workload (not while the tracer started).
    let programs = after
        .into_iter()
        .map(|mut p| {
            if let Some(b) = before.iter().find(|b| b.id == p.id) {
                p.run_cnt = p.run_cnt.saturating_sub(b.run_cnt);
                p.run_time_ns = p.run_time_ns.saturating_sub(b.run_time_ns);
                p.recursion_misses = p.recursion_misses.saturating_sub(b.recursion_misses);
            }
            p
        })
        .filter(|p| p.run_cnt > 0)
        .collect();
    Ok(CostSample {
        workload,
        config: config.name(),
        elapsed: measured.elapsed,
        work: measured.work,
        programs,
    })
}

/// Bytes of the stacks in memtrace's JSON report that contain `frame`, how many such stacks,
/// and whether the first (largest) stack is one of them.
fn stacks_with_frame(report: &serde_json::Value, frame: &str) -> Result<(u64, u64, bool)> {
    let stacks = report["stacks"]
        .as_array()
        .context("the JSON report has no stacks[]")?;
    let has_frame = |stack: &serde_json::Value| {
        stack["frames"].as_array().is_some_and(|frames| {
            frames
                .iter()
                .any(|f| f["symbol"].as_str().is_some_and(|s| s == frame))
        })
    };
    let mut bytes = 0;
    let mut count = 0;
    for stack in stacks.iter().filter(|s| has_frame(s)) {
        bytes += stack["bytes"].as_u64().context("a stack without bytes")?;
        count += 1;
    }
    let top = stacks.first().is_some_and(has_frame);
    Ok((bytes, count, top))
}

/// One TCP hold check; `None` when the tracer hung at exit (no report to read).
fn hold_once(config: &Config, run: u32, memtrace: &Path, dir: &Path) -> Result<Option<HoldSample>> {
    std::thread::sleep(SETTLE);
    let json = dir.join(format!("hold-{}-{run}.json", config.name()));
    let tracer = start_tracer(config, memtrace, Some(&json))?
        .context("the hold check needs a memtrace configuration")?;
    let hold = Hold::establish(HOLD_BYTES)?;
    let tracer = stop_tracer(tracer)?;
    let (sent, queued, unsent) = (hold.sent, hold.queued, hold.unsent);
    hold.release();
    if tracer.stopped.hung {
        return Ok(None);
    }
    let text = fs::read_to_string(&json).with_context(|| format!("reading {}", json.display()))?;
    let report: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", json.display()))?;
    let (traced, traced_stacks, top_stack_matches) = stacks_with_frame(&report, HOLD_FRAME)?;
    fs::remove_file(&json).with_context(|| format!("removing {}", json.display()))?;
    if queued == 0 {
        bail!("nothing was queued at the receiver (sent {sent} bytes of {HOLD_BYTES})");
    }
    Ok(Some(HoldSample {
        config: config.name(),
        run,
        sent,
        queued,
        unsent,
        traced,
        traced_stacks,
        top_stack_matches,
        tracer,
    }))
}

/// Page bytes of the stacks in memtrace's JSON report that contain `frame` and not `exclude`.
fn page_stacks_with(report: &serde_json::Value, frame: &str, exclude: &str) -> Result<u64> {
    let stacks = report["stacks"]
        .as_array()
        .context("the JSON report has no stacks[]")?;
    let has = |stack: &serde_json::Value, name: &str| {
        stack["frames"].as_array().is_some_and(|frames| {
            frames
                .iter()
                .any(|f| f["symbol"].as_str().is_some_and(|s| s == name))
        })
    };
    let mut bytes = 0;
    for stack in stacks {
        if stack["kind"].as_str().unwrap_or("page") == "page"
            && has(stack, frame)
            && !has(stack, exclude)
        {
            bytes += stack["bytes"].as_u64().context("a stack without bytes")?;
        }
    }
    Ok(bytes)
}

/// Bytes of memory available now (`MemAvailable`).
fn mem_available() -> Result<u64> {
    let text = fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .context("no MemAvailable in /proc/meminfo")
}

fn scale_once(config: &Config, gib: u32, memtrace: &Path, dir: &Path) -> Result<ScaleSample> {
    std::thread::sleep(SETTLE);
    let json = dir.join(format!("scale-{}-{gib}.json", config.name()));
    let memtrace_json = config.is_memtrace().then_some(json.as_path());
    let tracer = start_tracer(config, memtrace, memtrace_json)?
        .context("the scale experiment needs a tracer")?;
    let hold = UnixHold::establish(u64::from(gib) << 30)?;
    let tracer = stop_tracer(tracer)?;
    let (sent, queued, fill) = (hold.sent, hold.queued, hold.fill);
    hold.release();
    let traced = if tracer.stopped.hung {
        None
    } else if config.is_memtrace() {
        let text =
            fs::read_to_string(&json).with_context(|| format!("reading {}", json.display()))?;
        let report: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", json.display()))?;
        Some(page_stacks_with(&report, SCALE_FRAME, SCALE_EXCLUDE)?)
    } else {
        Some(tracer.stopped.entries_matched * 4096)
    };
    let _ = fs::remove_file(&json);
    Ok(ScaleSample {
        config: config.name(),
        gib,
        sent,
        queued,
        traced,
        fill,
        tracer,
    })
}

fn progress(done: usize, total: usize, what: &str) {
    eprintln!("[bench] {done:>3}/{total} {what}");
}

pub fn bench(ctx: &Ctx, opts: BenchOpts) -> Result<()> {
    let runs = opts.runs.unwrap_or(if opts.quick { 3 } else { 5 });
    let seconds = opts.seconds.unwrap_or(if opts.quick { 1 } else { 3 });
    let duration = Duration::from_secs(seconds.into());
    if !is_root() {
        bail!(
            "`cargo xtask bench` needs root: memtrace and bpftrace load BPF programs, and the hold \
             check forces socket buffer sizes (run it as root)"
        );
    }
    let (memtrace, object) = match &opts.memtrace_bin {
        Some(bin) => (
            bin.canonicalize()
                .with_context(|| format!("--memtrace-bin {}", bin.display()))?,
            ctx.ebpf_object(false),
        ),
        None => (ctx.memtrace_bin(), build(ctx, false)?),
    };
    mount_tracefs();
    let scale_gib: Vec<u32> = if opts.no_scale {
        Vec::new()
    } else if !opts.scale_gib.is_empty() {
        opts.scale_gib.clone()
    } else if opts.quick {
        vec![1]
    } else {
        SCALE_GIB.to_vec()
    };

    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let bench_dir = ctx.target_dir.join("bench");
    let work_dir = bench_dir.join(format!("work-{}", std::process::id()));
    fs::create_dir_all(&work_dir).with_context(|| format!("creating {}", work_dir.display()))?;
    let json_path = opts
        .json
        .unwrap_or_else(|| bench_dir.join(format!("bench-{started_unix}.json")));

    let mut notes = Vec::new();
    let mut configs = vec![Config::Bare];
    configs.extend(MEMTRACE_CONFIGS.iter().cloned());
    match std::env::current_exe() {
        Ok(xtask) if object.exists() => configs.push(Config::Hooks {
            name: "hooks-only",
            xtask,
            object: object.clone(),
        }),
        Ok(_) => notes.push(format!(
            "no eBPF object at {}: no hooks-only configuration",
            object.display()
        )),
        Err(e) => notes.push(format!("no hooks-only configuration: {e}")),
    }
    if let Some(bin) = &opts.baseline {
        let bin = bin
            .canonicalize()
            .with_context(|| format!("--baseline {}", bin.display()))?;
        configs.extend(
            BASELINE_CONFIGS
                .iter()
                .filter_map(|(_, current)| Config::baseline(current, &bin)),
        );
    }
    let mut bpftrace = None;
    if opts.no_bpftrace {
        notes.push("bpftrace comparison left out (--no-bpftrace)".into());
    } else if let Some((found, version)) = bpftrace_configs(&bench_dir, &mut notes) {
        configs.extend(found);
        bpftrace = Some(version);
    }
    if !opts.configs.is_empty() {
        let known: Vec<&str> = configs.iter().map(Config::name).collect();
        if let Some(unknown) = opts.configs.iter().find(|n| !known.contains(&n.as_str())) {
            bail!(
                "--configs: no configuration {unknown:?} (there are: {})",
                known.join(", ")
            );
        }
        configs.retain(|c| matches!(c, Config::Bare) || opts.configs.iter().any(|n| n == c.name()));
        notes.push(format!(
            "only the configurations {}",
            opts.configs.join(", ")
        ));
    }
    let workloads: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|w| opts.workloads.is_empty() || opts.workloads.iter().any(|n| n == w.name()))
        .collect();
    if workloads.is_empty() {
        bail!(
            "--workloads: none of {:?} is a workload (page-fault-churn, tcp-stream, \
             slab-unix-dgram)",
            opts.workloads
        );
    }
    if runs < 5 {
        notes.push(format!(
            "{runs} runs per configuration: a smoke check, not a measurement (use 5 or more)"
        ));
    }

    let wall = Instant::now();
    // The accuracy runs read a report file, which memtrace serve does not write.
    let memtrace_configs: Vec<&Config> = configs
        .iter()
        .filter(|c| c.is_memtrace() && !c.is_serve())
        .collect();
    let tracer_configs: Vec<&Config> = configs
        .iter()
        .filter(|c| c.spec(Path::new(""), None).is_some())
        .collect();
    let scale_configs: Vec<&Config> = configs
        .iter()
        .filter(|c| {
            SCALE_CONFIGS.contains(&c.name())
                || c.name() == BASELINE_CONFIGS[0].0
                || matches!(c, Config::Bpftrace { .. })
        })
        .collect();
    let cost_runs = if opts.no_cost {
        0
    } else {
        workloads.len() * tracer_configs.len()
    };
    let total = workloads.len() * (runs as usize) * configs.len()
        + (runs as usize) * memtrace_configs.len()
        + cost_runs
        + scale_gib.len() * scale_configs.len();
    let mut done = 0;
    let mut samples = Vec::new();
    for &workload in &workloads {
        // One unmeasured bare run first: warm caches, fault in the harness's own buffers.
        eprintln!("[bench] {}: warm-up run (not counted)", workload.name());
        workload.run(duration.min(Duration::from_secs(1)))?;
        for run in 1..=runs {
            for config in &configs {
                let sample =
                    run_once(workload, config, run, duration, &memtrace).with_context(|| {
                        format!(
                            "{} under {} (run {run} of {runs})",
                            workload.name(),
                            config.name()
                        )
                    })?;
                done += 1;
                progress(done, total, &report::describe_run(&sample));
                samples.push(sample);
            }
        }
    }
    let mut costs = Vec::new();
    if opts.no_cost {
        notes.push("per-program cost runs left out (--no-cost)".into());
    } else {
        // bpf_stats cost time themselves: only for these runs, never for the ratios.
        let _stats = StatsEnabled::on().context("switching on kernel.bpf_stats_enabled")?;
        for &workload in &workloads {
            for config in &tracer_configs {
                let sample =
                    cost_once(workload, config, duration, &memtrace).with_context(|| {
                        format!("{} under {} (cost run)", workload.name(), config.name())
                    })?;
                done += 1;
                progress(done, total, &report::describe_cost(&sample));
                costs.push(sample);
            }
        }
    }
    let mut holds = Vec::new();
    for run in 1..=runs {
        for config in &memtrace_configs {
            let sample = hold_once(config, run, &memtrace, &work_dir).with_context(|| {
                format!(
                    "TCP hold accuracy under {} (run {run} of {runs})",
                    config.name()
                )
            })?;
            done += 1;
            match sample {
                Some(sample) => {
                    progress(done, total, &report::describe_hold(&sample));
                    holds.push(sample);
                }
                None => {
                    let note = format!(
                        "TCP hold run {run} under {}: the tracer did not exit within {:?} of \
                         SIGINT (killed; no report)",
                        config.name(),
                        tracer::STOP_TIMEOUT
                    );
                    progress(done, total, &note);
                    notes.push(note);
                }
            }
        }
    }
    // Scale: gigabytes of order-0 pages held in socket queues.
    let mut scale = Vec::new();
    for &gib in &scale_gib {
        let need = ((f64::from(gib) * (1.0 + SCALE_OVERHEAD)) as u64) << 30;
        let available = mem_available()?;
        if available < need + SCALE_SPARE {
            notes.push(format!(
                "scale hold of {gib} GiB left out: {:.1} GiB available, it needs about {:.1}",
                available as f64 / f64::from(1u32 << 30),
                (need + SCALE_SPARE) as f64 / f64::from(1u32 << 30)
            ));
            done += scale_configs.len();
            continue;
        }
        for config in &scale_configs {
            let sample = scale_once(config, gib, &memtrace, &work_dir)
                .with_context(|| format!("{gib} GiB scale hold under {}", config.name()))?;
            done += 1;
            progress(done, total, &report::describe_scale(&sample));
            scale.push(sample);
        }
    }
    let _ = fs::remove_dir_all(&work_dir);

    let results = Results {
        started_unix,
        hostname: read_trimmed("/proc/sys/kernel/hostname"),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        runs,
        quick: opts.quick,
        seconds,
        memtrace_bin: memtrace,
        bpftrace,
        configs,
        samples,
        holds,
        costs,
        scale,
        notes,
        wall: wall.elapsed(),
    };
    print!("{}", report::text(&results));
    if let Some(parent) = json_path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let json =
        serde_json::to_string_pretty(&report::json(&results)).context("serializing the results")?;
    fs::write(&json_path, json + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    eprintln!("[bench] results written to {}", json_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hold_stacks_by_frame_symbol() {
        let report = serde_json::json!({
            "stacks": [
                {"bytes": 100, "frames": [{"symbol": "alloc_pages_noprof"},
                                          {"symbol": "skb_page_frag_refill"}]},
                {"bytes": 7, "frames": [{"symbol": "do_anonymous_page"}]},
                {"bytes": 5, "frames": [{"symbol": null}, {"symbol": "skb_page_frag_refill"}]}
            ]
        });
        assert_eq!(
            stacks_with_frame(&report, HOLD_FRAME).unwrap(),
            (105, 2, true)
        );
    }

    #[test]
    fn scale_pages_are_the_page_stacks_of_the_frame_without_slab_pages() {
        let report = serde_json::json!({
            "stacks": [
                {"kind": "page", "bytes": 4096, "frames": [{"symbol": "alloc_pages_noprof"},
                    {"symbol": "alloc_skb_with_frags"}, {"symbol": "unix_stream_sendmsg"}]},
                {"kind": "page", "bytes": 32768, "frames": [{"symbol": "allocate_slab"},
                    {"symbol": "kmalloc_reserve"}, {"symbol": "alloc_skb_with_frags"}]},
                {"kind": "slab", "bytes": 512, "frames": [{"symbol": "alloc_skb_with_frags"}]},
                {"bytes": 8192, "frames": [{"symbol": "alloc_skb_with_frags"}]}
            ]
        });
        assert_eq!(
            page_stacks_with(&report, SCALE_FRAME, SCALE_EXCLUDE).unwrap(),
            4096 + 8192
        );
    }

    #[test]
    fn memtrace_configs_have_their_kinds() {
        let spec = MEMTRACE_CONFIGS[2]
            .spec(Path::new("/bin/memtrace"), Some(Path::new("/tmp/r.json")))
            .unwrap();
        let args: Vec<_> = spec.args.iter().map(|a| a.to_string_lossy()).collect();
        assert_eq!(
            args,
            [
                "trace",
                "--duration",
                "10m",
                "--kind",
                "page",
                "--class",
                "all",
                "--json",
                "/tmp/r.json"
            ]
        );
        assert!(Config::Bare.spec(Path::new("x"), None).is_none());
        // memtrace serve: its own arguments and ready line, no report file.
        let serve = MEMTRACE_CONFIGS.iter().find(|c| c.is_serve()).unwrap();
        let spec = serve
            .spec(Path::new("/bin/memtrace"), Some(Path::new("/tmp/r.json")))
            .unwrap();
        let args: Vec<_> = spec.args.iter().map(|a| a.to_string_lossy()).collect();
        assert_eq!(args, ["serve", "--listen", "127.0.0.1:0"]);
        assert_eq!(spec.ready_prefix, SERVE_READY);
        assert!(!MEMTRACE_CONFIGS[0].is_serve());
    }
}
