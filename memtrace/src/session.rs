//! A time-boxed tracing session: load, wait for the duration or a signal, detach, collect,
//! report.

use std::{
    io::Write as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    attribution::{annotate, annotate::Resolver, filters},
    cli::{SortBy, TraceArgs},
    collector,
    loader::{self, LoadOptions},
    model::{
        build::build_report,
        growth::{self, SeriesBook},
        BuildOptions, Class, SessionInfo,
    },
    output::{self, Formats, OutputDir, Rendered},
    progress::Progress,
    render,
    symbolize::KernelSymbolizer,
    sysinfo,
};

/// Shortest `--interval`: every snapshot reads all the kernel maps.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Sockets listed at the end of a report whose network stacks hold memory.
const TOP_SOCKETS: usize = 5;

/// How the session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndedBy {
    Duration,
    Signal(i32),
}

impl EndedBy {
    fn as_str(self) -> &'static str {
        match self {
            EndedBy::Duration => "duration",
            EndedBy::Signal(_) => "signal",
        }
    }
}

/// SIGINT and SIGTERM, blocked so they can be waited for with `sigtimedwait` (no handler, no
/// async-signal-safety concerns). Must be created before any thread is spawned.
struct StopSignals {
    set: libc::sigset_t,
}

impl StopSignals {
    fn block() -> anyhow::Result<Self> {
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it; pthread_sigmask
        // only changes this thread's mask (threads spawned later inherit it).
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc))
                    .context("blocking SIGINT/SIGTERM");
            }
            Ok(StopSignals { set })
        }
    }

    /// Waits until `deadline` or until SIGINT/SIGTERM arrives.
    fn wait_until(&self, deadline: Instant) -> EndedBy {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return EndedBy::Duration;
            }
            let ts = libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: left.subsec_nanos() as libc::c_long,
            };
            // SAFETY: `self.set` is an initialised sigset; `ts` lives across the call; a null
            // siginfo pointer is allowed.
            let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
            if sig > 0 {
                return EndedBy::Signal(sig);
            }
            // EAGAIN: timed out (loop re-checks the deadline); EINTR: other signal, wait again.
        }
    }
}

impl StopSignals {
    /// Takes SIGINT/SIGTERM that arrived while they were blocked (a second one during
    /// reporting), so that unblocking them afterwards does not end memtrace after its work
    /// is done.
    fn discard_pending(&self) {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            // SAFETY: as in `wait_until`: an initialised sigset, a live timespec, null siginfo.
            let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &zero) };
            if sig <= 0 {
                break;
            }
        }
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        // SAFETY: restores the default mask for these two signals; a second Ctrl-C after the
        // session (while reporting) then terminates as usual. Reports are written atomically.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.set, std::ptr::null_mut()) };
    }
}

/// Runs `memtrace trace`.
pub fn run_trace(args: &TraceArgs) -> anyhow::Result<()> {
    if args.sort == SortBy::Growth && args.interval.is_none() {
        anyhow::bail!("--sort growth needs --interval (growth is measured across snapshots)");
    }
    if args.interval.is_some_and(|i| i < MIN_INTERVAL) {
        anyhow::bail!("--interval must be at least 1s (e.g. --interval 30s): every snapshot reads all the kernel maps");
    }
    // First: a SIGTERM from now on ends the session with a report instead of killing it.
    let signals = StopSignals::block()?;
    // Output files that can't be written fail now, not after the session.
    for path in [
        &args.output.json,
        &args.output.folded,
        &args.output.svg,
        &args.output.pprof,
    ]
    .into_iter()
    .flatten()
    {
        crate::fsutil::check_parent_dir(path)?;
    }
    let hostname = sysinfo::host_name();
    // Before anything is loaded: an output directory that can't be written fails fast.
    let output_dir = args
        .output_dir
        .as_deref()
        .map(|dir| OutputDir::create(dir, &hostname, sysinfo::unix_now()))
        .transpose()?;
    let mut resolver = Resolver::scan();
    let resolved = filters::resolve(
        &filters::FilterArgs {
            pids: &args.pid,
            comms: &args.comm,
            cgroups: &args.cgroup,
            pods: &args.pod,
        },
        &resolver.mounts,
        &resolver.index,
    )?;
    let mut tracer = loader::load(LoadOptions {
        max_allocations: args.max_allocations,
        max_objects: args.max_objects,
        max_stacks: args.max_stacks,
        kinds: args.kind.clone(),
        skip_movable: args.skip_movable(),
        sample_every: args.sample,
        movable_stack_every: args.movable_stack_every,
        classic_tracepoints: args.classic_tracepoints,
        filters: resolved.filters,
    })?;
    let grace = args.grace();
    let started = Instant::now();
    let started_unix = sysinfo::unix_now();
    let mut progress = Progress::new(args.quiet, started, args.duration);
    for k in tracer.kinds.iter().filter(|k| !k.traced) {
        progress.warn(&format!(
            "not tracing {}: {}",
            k.kind,
            k.note.as_deref().unwrap_or("unavailable")
        ));
    }
    {
        let mut extras = Vec::new();
        if args.sample > 1 {
            extras.push(format!("sampling 1 in {}", args.sample));
        }
        if !grace.is_zero() {
            extras.push(format!(
                "grace {} (frees only at the end)",
                humantime::format_duration(grace)
            ));
        }
        if let Some(i) = args.interval {
            extras.push(format!("snapshots every {}", humantime::format_duration(i)));
        }
        if !resolved.descriptions.is_empty() {
            extras.push(format!("only {}", resolved.descriptions.join(", ")));
        }
        if let Some(dir) = &output_dir {
            extras.push(format!(
                "writing {}/{}.*",
                args.output_dir
                    .as_deref()
                    .unwrap_or(std::path::Path::new("."))
                    .display(),
                dir.prefix()
            ));
        }
        progress.info(&format!(
            "tracing {} allocations for {} ({}; up to {} page allocations, {} objects, {} stacks; kernel maps {:.1} MiB{}); Ctrl-C ends early and still reports",
            tracer
                .kinds
                .iter()
                .filter(|k| k.traced)
                .map(|k| k.kind.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            humantime::format_duration(args.duration),
            tracer.hooks.join(", "),
            args.max_allocations,
            args.max_objects,
            tracer.stack_slots,
            tracer.map_memory_bytes as f64 / (1024.0 * 1024.0),
            extras.iter().map(|e| format!("; {e}")).collect::<String>(),
        ));
    }

    // What every report of this session (snapshots and the final one) says about it.
    let base_info = SessionInfo {
        hostname,
        kernel: sysinfo::kernel_release(),
        started_at_unix: started_unix,
        requested_duration_secs: round_ms(args.duration),
        min_age_secs: round_ms(args.min_age),
        page_size: tracer.config.page_size,
        max_allocations: args.max_allocations,
        max_objects: args.max_objects,
        map_memory_bytes: tracer.map_memory_bytes,
        max_stacks: tracer.stack_slots,
        sample_every: args.sample,
        interval_secs: args.interval.map_or(0.0, round_ms),
        filters: resolved.descriptions.clone(),
        sort: args.sort.name().to_string(),
        hooks: tracer.hooks.clone(),
        kinds: tracer.kinds.clone(),
        ..Default::default()
    };
    let build_opts = BuildOptions {
        min_age_ns: args.min_age.as_nanos().min(u64::MAX as u128) as u64,
        max_owners: 5,
        classes: Some(args.classes()),
    };
    let top = match usize::try_from(args.output.top).unwrap_or(usize::MAX) {
        0 => usize::MAX,
        n => n,
    };
    let end = started + args.duration;
    let grace_at = (!grace.is_zero()).then(|| end - grace);
    let mut grace_begun: Option<Instant> = None;
    let mut next_snapshot = args.interval.map(|i| started + i);
    let mut book = SeriesBook::default();
    let mut snapshots = Vec::new();
    let mut symbolizer: Option<KernelSymbolizer> = None;
    let mut next_progress = progress.every().map(|e| started + e);
    let ended_by = loop {
        let mut wake = end;
        if let Some(p) = next_progress {
            wake = wake.min(p);
        }
        if grace_begun.is_none() {
            if let Some(g) = grace_at {
                wake = wake.min(g);
            }
        }
        if let Some(n) = next_snapshot {
            wake = wake.min(n);
        }
        if let EndedBy::Signal(sig) = signals.wait_until(wake) {
            break EndedBy::Signal(sig);
        }
        let now = Instant::now();
        if now >= end {
            break EndedBy::Duration;
        }
        if grace_begun.is_none() && grace_at.is_some_and(|g| now >= g) {
            tracer.begin_grace().context("starting the grace period")?;
            grace_begun = Some(now);
        }
        if let Some(p) = next_progress.filter(|p| now >= *p) {
            // A display problem must not end the session: show what could be read. Reading
            // costs more with a large --max-stacks: never spend more than a tenth of the time
            // on it.
            let read_started = Instant::now();
            if let Ok(stats) = collector::live_stats(&tracer, args.sample) {
                progress.update(stats, now);
            }
            let backoff = read_started.elapsed() * 10;
            next_progress = progress.every().map(|e| p.max(now) + e.max(backoff));
        }
        if let Some(n) = next_snapshot.filter(|n| now >= *n) {
            let at_secs = round_ms(now - started);
            let sym = symbolizer.get_or_insert_with(KernelSymbolizer::new);
            // A snapshot that fails (disk full, stdout closed) is a warning: the session and
            // its final report go on.
            let taken = (|| -> anyhow::Result<()> {
                let raw =
                    collector::collect(&tracer).context("reading the kernel maps (snapshot)")?;
                let info = SessionInfo {
                    duration_secs: at_secs,
                    ended_by: "running".into(),
                    ..base_info.clone()
                };
                let mut report = build_report(&raw, info, sym, &build_opts);
                let snap = book.record(&report, at_secs, top);
                let printed = progress.suspend(|| -> anyhow::Result<()> {
                    let mut out = std::io::stdout().lock();
                    out.write_all(render::text::render_snapshot(&snap).as_bytes())
                        .and_then(|()| out.flush())
                        .context("writing a snapshot to stdout")
                });
                snapshots.push(snap);
                if let Some(dir) = &output_dir {
                    // The snapshot files are whole reports of the session so far.
                    report.snapshots = snapshots.clone();
                    resolver.rescan();
                    annotate::annotate(&mut report, &resolver, &annotate::ProcFs);
                    let rendered = Rendered::new(&report, &args.output, Formats::OUTPUT_DIR)?;
                    dir.write_snapshot(snapshots.len(), at_secs, &rendered)
                        .context("writing a snapshot into the output directory")?;
                }
                printed
            })();
            if let Err(e) = taken {
                progress.warn(&format!("snapshot at {at_secs:.1}s: {e:#}"));
            }
            let interval = args.interval.unwrap_or(Duration::from_secs(1));
            let mut next = n + interval;
            while next <= now {
                next += interval;
            }
            next_snapshot = Some(next);
        }
    };
    let elapsed = started.elapsed();
    progress.finish();
    if let EndedBy::Signal(sig) = ended_by {
        progress.info(&format!(
            "signal {sig} received after {:.1}s: reporting",
            elapsed.as_secs_f64()
        ));
    }
    let timing = Timing::from_env();
    tracer.detach().context("detaching the programs")?;
    timing.mark("detach");
    let raw = collector::collect(&tracer).context("reading the kernel maps")?;
    timing.mark("collect");
    // Unload before the (comparatively slow) symbolization: nothing stays in the kernel.
    drop(tracer);
    // Only the text on stdout: a second Ctrl-C while reporting ends memtrace as usual. With
    // files to write (--output-dir, --json, ...): SIGINT/SIGTERM stay blocked until every file
    // and the text are written, so a second SIGTERM can't cost the report.
    let writes_files =
        output_dir.is_some() || Formats::of(&args.output, Formats::default()) != Formats::default();
    let signals = if writes_files {
        Some(signals)
    } else {
        drop(signals);
        None
    };
    timing.mark("unload");
    resolver.rescan();

    let (grace_secs, grace_note) = match (grace_begun, grace_at) {
        (Some(g), _) => (round_ms(started + elapsed - g), None),
        (None, Some(_)) => (
            0.0,
            Some(format!(
                "grace period of {} not reached: the session ended early",
                humantime::format_duration(grace)
            )),
        ),
        (None, None) => (0.0, None),
    };
    let info = SessionInfo {
        duration_secs: round_ms(elapsed),
        ended_by: ended_by.as_str().to_string(),
        grace_secs,
        grace_note,
        cgroups_note: Some(resolver.note()),
        ..base_info
    };
    let symbolizer = symbolizer.unwrap_or_default();
    timing.mark("symbolizer");
    let mut report = build_report(&raw, info, &symbolizer, &build_opts);
    book.apply(&mut report, round_ms(elapsed), raw.page_size);
    if args.sort == SortBy::Growth {
        growth::sort_growing_first(&mut report);
    }
    report.snapshots = snapshots;
    annotate::annotate(&mut report, &resolver, &annotate::ProcFs);
    timing.mark("build");
    // Network memory held at the end usually sits in socket queues: name the sockets.
    let network_held = report
        .stacks
        .iter()
        .any(|s| s.class == Class::Network && s.bytes > 0);
    if network_held {
        // The top ones are chosen first: owners are looked up only for them.
        match crate::sockets::collect_top_by_rmem_alloc(TOP_SOCKETS) {
            Ok(scan) => {
                report.sockets = scan.sockets;
                for note in scan.notes {
                    progress.info(&format!("sockets: {note}"));
                }
            }
            Err(e) => progress.warn(&format!("listing the sockets failed: {e:#}")),
        }
        timing.mark("sockets");
    }
    for w in symbolizer.warnings() {
        progress.warn(&w);
    }

    let extra = if output_dir.is_some() {
        Formats::OUTPUT_DIR
    } else {
        Formats::default()
    };
    let rendered = Rendered::new(&report, &args.output, Formats::of(&args.output, extra))?;
    // Every output is attempted even if one fails (a full disk must not cost the text).
    let mut written = output::write_named(&args.output, &rendered);
    if let Some(dir) = &output_dir {
        match dir.write_final(&rendered) {
            Ok(files) => {
                if let Some(txt) = files.last() {
                    progress.info(&format!("report written to {}", txt.display()));
                }
            }
            Err(e) => written = written.and(Err(e)),
        }
    }
    timing.mark("render");
    let printed = {
        let mut out = std::io::stdout().lock();
        out.write_all(rendered.text.as_bytes())
            .and_then(|()| out.flush())
            .context("writing the report to stdout")
    };
    if let Some(signals) = signals {
        signals.discard_pending();
    }
    written.and(printed)
}

/// `MEMTRACE_TIMING=1`: how long each step after the session takes, on stderr.
struct Timing {
    last: Option<std::cell::Cell<Instant>>,
}

impl Timing {
    fn from_env() -> Self {
        Timing {
            last: std::env::var_os("MEMTRACE_TIMING").map(|_| std::cell::Cell::new(Instant::now())),
        }
    }

    fn mark(&self, step: &str) {
        if let Some(last) = &self.last {
            let now = Instant::now();
            eprintln!(
                "memtrace: timing: {step} {:.3} s",
                (now - last.get()).as_secs_f64()
            );
            last.set(now);
        }
    }
}

fn round_ms(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}
