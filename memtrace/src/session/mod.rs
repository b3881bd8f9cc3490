//! A tracing session: start (signals, filters, load and attach), run (wait for the end or a
//! signal; grace period, progress, snapshots on the [`Schedule`]), finish (detach, collect,
//! build the report, name owners and sockets), then [`publish`] the report (render and write
//! every output, print the text) — the step `memtrace report` reuses.

mod publish;
mod schedule;
mod signals;

use std::{
    io::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;

pub use publish::publish;
pub use schedule::{Due, Schedule};
pub use signals::StopSignals;

use crate::{
    attribution::{annotate, annotate::Resolver, filters},
    collector::{
        self,
        slab_rate::{RateState, SlabRate},
        Extras, OwnerRecycling, StackRotation, TwinCounts,
    },
    loader::{self, Detaching, LoadOptions, Tracer},
    model::{
        build::build_report,
        growth::{self, SeriesBook, Snapshot},
        BuildOptions, Class, Report, SessionInfo,
    },
    output::{Formats, OutputDir, OutputOptions, Rendered},
    progress::Progress,
    render,
    symbolize::KernelSymbolizer,
    sysinfo,
};

/// Shortest `--interval`: every snapshot reads all the kernel maps.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

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

/// The owner filters asked for (resolved against the cgroup tree at start).
#[derive(Clone, Debug, Default)]
pub struct FilterSpec {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub cgroups: Vec<String>,
    pub pods: Vec<String>,
}

/// Everything a session needs, decided by the command line.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// `None`: until SIGINT/SIGTERM (`memtrace serve`).
    pub duration: Option<Duration>,
    /// Only allocations at least this old at the end count as outstanding.
    pub min_age: Duration,
    /// The last part of the session that records no new allocations (zero: none).
    pub grace: Duration,
    /// Snapshots every interval.
    pub interval: Option<Duration>,
    /// Growing stacks first (`--sort growth`).
    pub sort_growth: bool,
    pub quiet: bool,
    /// Classes traced and reported.
    pub classes: Vec<Class>,
    /// Kernel side: kinds, tables, sampling (its `filters` are set from [`Self::filters`]).
    pub load: LoadOptions,
    pub filters: FilterSpec,
    pub outputs: OutputOptions,
    pub output_dir: Option<PathBuf>,
    /// Print each snapshot's compact form on stdout (`trace --interval`).
    pub print_snapshots: bool,
    /// Keep only the last this many snapshots (0: all): a session that does not end must
    /// not grow.
    pub snapshot_window: usize,
    /// The first snapshot this long after the start (`None`: one interval).
    pub first_snapshot_after: Option<Duration>,
    /// The host name reports carry (`None`: the kernel's).
    pub hostname: Option<String>,
    /// Said once the session has started (deprecated options, ...).
    pub warnings: Vec<String>,
}

impl SessionOptions {
    /// Stacks shown in the text and snapshots (`top` 0: all).
    fn top(&self) -> usize {
        match usize::try_from(self.outputs.top).unwrap_or(usize::MAX) {
            0 => usize::MAX,
            n => n,
        }
    }
}

/// A running session.
pub struct Session {
    opts: SessionOptions,
    signals: StopSignals,
    tracer: Tracer,
    resolver: Resolver,
    output_dir: Option<OutputDir>,
    progress: Progress,
    base_info: SessionInfo,
    build_opts: BuildOptions,
    schedule: Schedule,
    book: SeriesBook,
    snapshots: Vec<Snapshot>,
    symbolizer: Option<KernelSymbolizer>,
    rotation: StackRotation,
    /// Owner table recycling (snapshots that walk the page table).
    owners: OwnerRecycling,
    /// The adaptive slab sample (when slab is traced).
    slab_rate: Option<SlabRate>,
    /// The twin slab free programs' counts once everything was attached.
    twins_at_start: Option<TwinCounts>,
    /// Pages, percpu and vmalloc: one allocation in this many is recorded (`--sample` times
    /// the pages each page table entry stands for: a sampled table samples them all alike).
    sample_every: u32,
}

impl Session {
    /// Blocks SIGINT/SIGTERM, checks the outputs can be written, resolves the filters, loads
    /// and attaches the programs, and says what is traced.
    pub fn start(mut opts: SessionOptions) -> anyhow::Result<Session> {
        if opts.sort_growth && opts.interval.is_none() {
            anyhow::bail!("--sort growth needs --interval (growth is measured across snapshots)");
        }
        if opts.interval.is_some_and(|i| i < MIN_INTERVAL) {
            anyhow::bail!("--interval must be at least 1s (e.g. --interval 30s): every snapshot reads all the kernel maps");
        }
        // First: a SIGTERM from now on ends the session with a report instead of killing it.
        let signals = StopSignals::block()?;
        // Output files that can't be written fail now, not after the session.
        opts.outputs.check_dirs()?;
        let hostname = opts.hostname.clone().unwrap_or_else(sysinfo::host_name);
        // Before anything is loaded: an output directory that can't be written fails fast.
        let output_dir = opts
            .output_dir
            .as_deref()
            .map(|dir| OutputDir::create(dir, &hostname, sysinfo::unix_now()))
            .transpose()?;
        let resolver = Resolver::scan();
        let resolved = filters::resolve(
            &filters::FilterArgs {
                pids: &opts.filters.pids,
                comms: &opts.filters.comms,
                cgroups: &opts.filters.cgroups,
                pods: &opts.filters.pods,
            },
            &resolver.mounts,
            &resolver.index,
        )?;
        opts.load.filters = resolved.filters;
        let tracer = loader::load(opts.load.clone())?;
        let started = Instant::now();
        let sample_every = opts
            .load
            .sample_every
            .max(1)
            .saturating_mul(tracer.page_table.map_or(1, |t| t.pages_per_entry()));
        let twins_at_start =
            collector::twin_counts(&tracer).context("reading the slab free programs' counts")?;
        let slab_rate = if tracer.traces(memtrace_common::Kind::Slab) {
            Some(SlabRate::start(&tracer, started)?)
        } else {
            None
        };
        let started_unix = sysinfo::unix_now();
        let progress = Progress::new(
            opts.quiet || opts.duration.is_none(),
            started,
            opts.duration.unwrap_or_default(),
        );
        for k in tracer.kinds.iter().filter(|k| !k.traced) {
            progress.warn(&format!(
                "not tracing {}: {}",
                k.kind,
                k.note.as_deref().unwrap_or("unavailable")
            ));
        }
        for w in &opts.warnings {
            progress.warn(w);
        }
        progress.info(&start_line(
            &opts,
            sample_every,
            &tracer,
            &resolved.descriptions,
            output_dir.as_ref(),
        ));
        // What every report of this session (snapshots and the final one) says about it.
        let base_info = SessionInfo {
            hostname,
            kernel: sysinfo::kernel_release(),
            started_at_unix: started_unix,
            requested_duration_secs: opts.duration.map_or(0.0, round_ms),
            min_age_secs: round_ms(opts.min_age),
            page_size: tracer.config.page_size,
            // The page table's entries (pages it can hold; it is never full).
            max_allocations: tracer
                .page_table
                .map_or(0, |t| u32::try_from(t.geometry.indices).unwrap_or(u32::MAX)),
            max_objects: opts.load.max_objects,
            map_memory_bytes: tracer.map_memory_bytes,
            max_stacks: tracer.stack_slots,
            sample_every,
            interval_secs: opts.interval.map_or(0.0, round_ms),
            filters: resolved.descriptions,
            sort: if opts.sort_growth { "growth" } else { "bytes" }.to_string(),
            hooks: tracer.hooks.clone(),
            kinds: tracer.kinds.clone(),
            slab_sample_every: tracer.slab_sample_start,
            slab_sample_start: tracer.slab_sample_start,
            ..Default::default()
        };
        let build_opts = BuildOptions {
            min_age_ns: opts.min_age.as_nanos().min(u64::MAX as u128) as u64,
            max_owners: 5,
            classes: Some(opts.classes.clone()),
        };
        let mut schedule = Schedule::new(
            started,
            opts.duration,
            opts.grace,
            opts.interval,
            progress.every(),
        );
        if let Some(delay) = opts.first_snapshot_after {
            schedule = schedule.first_snapshot_after(delay);
        }
        let book = SeriesBook::with_window(opts.snapshot_window);
        // Only a session that reads the maps while it runs can rotate its stack tables.
        let rotation = StackRotation::new(&tracer.config, opts.interval.is_some());
        Ok(Session {
            opts,
            signals,
            tracer,
            resolver,
            output_dir,
            progress,
            base_info,
            build_opts,
            schedule,
            book,
            snapshots: Vec::new(),
            symbolizer: None,
            rotation,
            owners: OwnerRecycling::default(),
            slab_rate,
            twins_at_start,
            sample_every,
        })
    }

    /// The slab sample now (a fixed rate when slab is not traced).
    fn slab_state(&self) -> RateState {
        match &self.slab_rate {
            Some(r) => r.state(),
            None => RateState::fixed(self.tracer.slab_sample_start),
        }
    }

    /// Runs until the duration is over or SIGINT/SIGTERM arrives, starting the grace period,
    /// updating the progress display and taking snapshots on the way.
    pub fn run(&mut self) -> anyhow::Result<EndedBy> {
        self.run_inner(None::<&mut fn(&Report) -> anyhow::Result<()>>)
    }

    /// [`Session::run`], handing every snapshot's whole report (owners named) to
    /// `on_snapshot` (`memtrace serve` publishes it).
    pub fn run_with(
        &mut self,
        mut on_snapshot: impl FnMut(&Report) -> anyhow::Result<()>,
    ) -> anyhow::Result<EndedBy> {
        self.run_inner(Some(&mut on_snapshot))
    }

    fn run_inner<F: FnMut(&Report) -> anyhow::Result<()>>(
        &mut self,
        mut on_snapshot: Option<&mut F>,
    ) -> anyhow::Result<EndedBy> {
        loop {
            if let EndedBy::Signal(sig) = self.signals.wait_until(self.schedule.wake()) {
                return Ok(EndedBy::Signal(sig));
            }
            let now = Instant::now();
            for due in self.schedule.due(now) {
                match due {
                    Due::End => return Ok(EndedBy::Duration),
                    Due::Grace => {
                        self.tracer
                            .begin_grace()
                            .context("starting the grace period")?;
                        self.schedule.grace_started(now);
                    }
                    Due::Progress(at) => {
                        // A display problem must not end the session: show what could be read.
                        let read_started = Instant::now();
                        let slab = self.slab_state();
                        if let Ok(stats) =
                            collector::live_stats(&self.tracer, self.sample_every, &slab)
                        {
                            self.progress.update(stats, now);
                        }
                        self.schedule.progress_done(at, now, read_started.elapsed());
                    }
                    Due::Snapshot(at) => {
                        let at_secs = round_ms(now - self.schedule.started());
                        // A snapshot that fails (disk full, stdout closed) is a warning: the
                        // session and its final report go on.
                        if let Err(e) = self.snapshot(at_secs, on_snapshot.as_deref_mut()) {
                            self.progress
                                .warn(&format!("snapshot at {at_secs:.1}s: {e:#}"));
                        }
                        self.schedule.snapshot_done(at, now);
                    }
                }
            }
        }
    }

    /// Reads the maps while the programs run: the compact snapshot (printed with
    /// `print_snapshots`, kept for the final report), with `--output-dir` a whole report set of
    /// the session so far, and the whole report for `on_snapshot`.
    fn snapshot<F: FnMut(&Report) -> anyhow::Result<()>>(
        &mut self,
        at_secs: f64,
        on_snapshot: Option<&mut F>,
    ) -> anyhow::Result<()> {
        let slab = self.slab_state();
        let frees_missed = match (self.twins_at_start, collector::twin_counts(&self.tracer)?) {
            (Some(start), Some(now)) => start.missed_until(&now),
            _ => 0,
        };
        let (slab_every, slab_changes) = (slab.every, slab.changes.clone());
        let extras = Extras { slab, frees_missed };
        // The page table is walked only when the snapshot needs what only it knows: ages
        // (--min-age), or page owners, orders and counts in a whole report (snapshot files,
        // memtrace serve's pods and cgroups). A printed snapshot reads the aggregates.
        let walk_pages =
            !self.opts.min_age.is_zero() || self.output_dir.is_some() || on_snapshot.is_some();
        let mut raw = if walk_pages {
            collector::collect(&self.tracer, &extras)
        } else {
            collector::collect_snapshot(&self.tracer, &extras)
        }
        .context("reading the kernel maps (snapshot)")?;
        self.rotation.process(&mut raw, Some(&mut self.tracer));
        self.owners
            .process(raw.owner_use.as_ref(), &mut self.tracer);
        let info = SessionInfo {
            duration_secs: at_secs,
            ended_by: "running".into(),
            stack_rotation: self.rotation.stats(),
            owner_recycling: self.owners.stats(),
            slab_sample_every: slab_every,
            slab_rate_changes: slab_changes,
            ..self.base_info.clone()
        };
        let sym = self.symbolizer.get_or_insert_with(KernelSymbolizer::new);
        let mut report = build_report(&raw, info, sym, &self.build_opts);
        let snap = self.book.record(&report, at_secs, self.opts.top());
        let printed = if self.opts.print_snapshots {
            self.progress.suspend(|| -> anyhow::Result<()> {
                let mut out = std::io::stdout().lock();
                out.write_all(render::text::render_snapshot(&snap).as_bytes())
                    .and_then(|()| out.flush())
                    .context("writing a snapshot to stdout")
            })
        } else {
            Ok(())
        };
        self.snapshots.push(snap);
        let window = self.opts.snapshot_window;
        if window > 0 && self.snapshots.len() > window {
            let excess = self.snapshots.len() - window;
            self.snapshots.drain(..excess);
        }
        if self.output_dir.is_none() && on_snapshot.is_none() {
            return printed;
        }
        // The snapshot files and the observer get whole reports of the session so far.
        report.snapshots = self.snapshots.clone();
        self.resolver.rescan();
        annotate::annotate(&mut report, &self.resolver, &annotate::ProcFs);
        self.resolver.expire(&report);
        report.session.cgroups_expired = self.resolver.expired;
        if let Some(dir) = &self.output_dir {
            let rendered = Rendered::new(&report, &self.opts.outputs, Formats::OUTPUT_DIR)?;
            dir.write_snapshot(self.snapshots.len(), at_secs, &rendered)
                .context("writing a snapshot into the output directory")?;
        }
        if let Some(observer) = on_snapshot {
            self.book.apply(&mut report, at_secs, raw.page_size);
            observer(&report)?;
        }
        printed
    }

    /// Detaches, reads the maps, unloads, and builds the final report (owners named, sockets
    /// listed when network memory is held). With files to write, SIGINT/SIGTERM stay blocked
    /// until [`publish`] is done (the returned [`Finished`] holds them).
    pub fn finish(self, ended_by: EndedBy) -> anyhow::Result<Finished> {
        let Session {
            opts,
            signals,
            mut tracer,
            mut resolver,
            output_dir,
            progress,
            base_info,
            build_opts,
            schedule,
            book,
            snapshots,
            symbolizer,
            mut rotation,
            owners,
            slab_rate,
            twins_at_start,
            sample_every: _,
        } = self;
        let elapsed = schedule.started().elapsed();
        progress.finish();
        if let EndedBy::Signal(sig) = ended_by {
            progress.info(&format!(
                "signal {sig} received after {:.1}s: reporting",
                elapsed.as_secs_f64()
            ));
        }
        let timing = Timing::from_env();
        // The free programs' counts just before they are detached: detaching them one by one
        // would leave one twin alone for a moment.
        let twins_at_end =
            collector::twin_counts(&tracer).context("reading the slab free programs' counts")?;
        // The programs stop recording and matching; they are detached in the background while
        // the maps are read and the report is built (joined once it is published).
        let detaching = tracer.stop().context("stopping the programs")?;
        timing.mark("stop");
        let slab = match slab_rate {
            Some(r) => r.stop(),
            None => RateState::fixed(tracer.slab_sample_start),
        };
        if let Some(problem) = &slab.problem {
            progress.warn(&format!("slab sampling: {problem}"));
        }
        let frees_missed = match (twins_at_start, twins_at_end) {
            (Some(start), Some(end)) => start.missed_until(&end),
            _ => 0,
        };
        let slab_info = (slab.every, slab.changes.clone());
        let mut raw = collector::collect(&tracer, &Extras { slab, frees_missed })
            .context("reading the kernel maps")?;
        rotation.process(&mut raw, None);
        timing.mark("collect");
        // Unload: nothing stays in the kernel once the links are gone.
        drop(tracer);
        // Only the text on stdout: a second Ctrl-C while reporting ends memtrace as usual.
        // With files to write (--output-dir, --json, ...): SIGINT/SIGTERM stay blocked until
        // every file and the text are written, so a second SIGTERM can't cost the report.
        let writes_files = output_dir.is_some()
            || Formats::of(&opts.outputs, Formats::default()) != Formats::default();
        let signals = if writes_files {
            Some(signals)
        } else {
            drop(signals);
            None
        };
        timing.mark("unload");
        resolver.rescan();

        let started = schedule.started();
        let (grace_secs, grace_note) = match schedule.grace_begun() {
            Some(g) => (round_ms(started + elapsed - g), None),
            None if schedule.has_grace() => (
                0.0,
                Some(format!(
                    "grace period of {} not reached: the session ended early",
                    humantime::format_duration(opts.grace)
                )),
            ),
            None => (0.0, None),
        };
        let info = SessionInfo {
            duration_secs: round_ms(elapsed),
            ended_by: ended_by.as_str().to_string(),
            grace_secs,
            grace_note,
            cgroups_note: Some(resolver.note()),
            stack_rotation: rotation.stats(),
            owner_recycling: owners.stats(),
            cgroups_expired: resolver.expired,
            slab_sample_every: slab_info.0,
            slab_rate_changes: slab_info.1,
            ..base_info
        };
        let symbolizer = symbolizer.unwrap_or_default();
        timing.mark("symbolizer");
        let mut report = build_report(&raw, info, &symbolizer, &build_opts);
        book.apply(&mut report, round_ms(elapsed), raw.page_size);
        if opts.sort_growth {
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
        Ok(Finished {
            report,
            outputs: opts.outputs,
            output_dir,
            progress,
            signals,
            timing,
            detaching: Some(detaching),
        })
    }
}

/// A finished session's report, ready to be published.
pub struct Finished {
    pub report: Report,
    outputs: OutputOptions,
    output_dir: Option<OutputDir>,
    progress: Progress,
    /// Held (blocked) until the outputs are written.
    signals: Option<StopSignals>,
    timing: Timing,
    /// The programs being detached (joined after publishing, or when dropped).
    detaching: Option<Detaching>,
}

impl Finished {
    /// Renders and writes every output and prints the text ([`publish`]).
    pub fn publish(self) -> anyhow::Result<()> {
        let result = publish(
            &self.report,
            &self.outputs,
            self.output_dir.as_ref(),
            &self.progress,
        );
        self.timing.mark("render");
        if let Some(signals) = self.signals {
            signals.discard_pending();
        }
        if let Some(detaching) = self.detaching {
            detaching.join();
            self.timing.mark("detached");
        }
        result
    }
}

/// The line that says what is being traced.
fn start_line(
    opts: &SessionOptions,
    sample_every: u32,
    tracer: &Tracer,
    filters: &[String],
    output_dir: Option<&OutputDir>,
) -> String {
    let mut extras = Vec::new();
    if sample_every > 1 {
        extras.push(format!("sampling 1 in {sample_every}"));
    }
    if tracer.traces(memtrace_common::Kind::Slab) {
        extras.push(match tracer.slab_sample_start {
            1 => "every slab object".to_string(),
            n => format!("slab objects sampled 1 in {n}"),
        });
    }
    if !opts.grace.is_zero() {
        extras.push(format!(
            "grace {} (frees only at the end)",
            humantime::format_duration(opts.grace)
        ));
    }
    if let Some(i) = opts.interval {
        extras.push(format!("snapshots every {}", humantime::format_duration(i)));
    }
    if !filters.is_empty() {
        extras.push(format!("only {}", filters.join(", ")));
    }
    if let Some(dir) = output_dir {
        extras.push(format!(
            "writing {}/{}.*",
            opts.output_dir
                .as_deref()
                .unwrap_or(std::path::Path::new("."))
                .display(),
            dir.prefix()
        ));
    }
    let pages = tracer
        .page_table
        .map(|t| format!("{}; ", t.describe(tracer.config.page_size)))
        .unwrap_or_default();
    format!(
        "tracing {} allocations for {} ({}; {pages}up to {} objects, {} stacks; kernel maps {:.1} MiB{}); Ctrl-C ends early and still reports",
        tracer
            .kinds
            .iter()
            .filter(|k| k.traced)
            .map(|k| k.kind.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        opts.duration.map_or_else(
            || "as long as it runs".to_string(),
            |d| humantime::format_duration(d).to_string()
        ),
        tracer.hooks.join(", "),
        opts.load.max_objects,
        tracer.stack_slots,
        tracer.map_memory_bytes as f64 / (1024.0 * 1024.0),
        extras.iter().map(|e| format!("; {e}")).collect::<String>(),
    )
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

pub(crate) fn round_ms(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}
