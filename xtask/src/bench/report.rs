//! The bench results as a text table and as JSON.

use std::{fmt::Write as _, time::Duration};

use serde_json::{json, Value};

use super::{
    cost::CostSample, workload::Workload, HoldSample, Results, RunSample, ScaleSample,
    BPFTRACE_SCRIPT, BPFTRACE_SLAB_SCRIPT, HOLD_BYTES, HOLD_FRAME, SCALE_EXCLUDE, SCALE_FRAME,
};

const MIB: f64 = (1u64 << 20) as f64;

/// Median, minimum and maximum of a sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub fn stats(values: impl IntoIterator<Item = f64>) -> Option<Stats> {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stats {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

fn stats_json(s: Option<Stats>) -> Value {
    match s {
        Some(s) => json!({"median": s.median, "min": s.min, "max": s.max, "n": s.n}),
        None => Value::Null,
    }
}

/// [`stats_json`] of byte counts and other integers: whole numbers (a median rounded).
fn stats_json_int(s: Option<Stats>) -> Value {
    let int = |x: f64| x.round() as u64;
    match s {
        Some(s) => json!({"median": int(s.median), "min": int(s.min), "max": int(s.max), "n": s.n}),
        None => Value::Null,
    }
}

/// A throughput in the workload's unit, scaled for reading.
pub fn rate(workload: Workload, value: f64) -> String {
    match workload {
        Workload::TcpStream if value >= 1024.0 * MIB => {
            format!("{:.2} GiB/s", value / (1024.0 * MIB))
        }
        Workload::TcpStream => format!("{:.1} MiB/s", value / MIB),
        Workload::Churn | Workload::Slab => {
            let word = if workload == Workload::Churn {
                "pages/s"
            } else {
                "ops/s"
            };
            if value >= 1e6 {
                format!("{:.3} M {word}", value / 1e6)
            } else {
                format!("{:.1} k {word}", value / 1e3)
            }
        }
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / MIB)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Time to report, or that the tracer hung (killed after the stop timeout).
fn ttr(t: &super::TracerSample) -> String {
    if t.stopped.hung {
        format!("> {} (hung, killed)", secs(t.stopped.time_to_report))
    } else {
        secs(t.stopped.time_to_report)
    }
}

const GIB: f64 = (1u64 << 30) as f64;

fn gib(bytes: f64) -> String {
    format!("{:.3} GiB", bytes / GIB)
}

/// Days since 1970-01-01 to (year, month, day) (proleptic Gregorian, H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

pub fn utc(unix: u64) -> String {
    let secs = unix as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// One progress line for a finished run.
pub fn describe_run(s: &RunSample) -> String {
    let mut line = format!(
        "{} run {} {:<17} {}",
        s.workload.name(),
        s.run,
        s.config,
        rate(s.workload, s.throughput)
    );
    if let Some(t) = &s.tracer {
        let _ = write!(
            line,
            " (rss {}, maps {}, time to report {})",
            mib(t.footprint.vm_hwm_bytes as f64),
            mib(t.footprint.map_memlock_bytes as f64),
            ttr(t)
        );
    }
    line
}

pub fn describe_cost(c: &CostSample) -> String {
    format!(
        "{} cost run {:<17} {} programs, {:.1} % of a CPU, {:.0} ns of BPF per {}",
        c.workload.name(),
        c.config,
        c.programs.len(),
        c.total_cpu_percent(),
        c.total_ns_per_work(),
        work_unit(c.workload)
    )
}

/// The unit of work of a workload, for per-unit costs.
fn work_unit(w: Workload) -> &'static str {
    match w {
        Workload::Churn => "page",
        Workload::TcpStream => "byte",
        Workload::Slab => "op",
    }
}

fn cost_of<'a>(r: &'a Results, w: Workload, config: &str) -> Option<&'a CostSample> {
    r.costs
        .iter()
        .find(|c| c.workload == w && c.config == config)
}

pub fn describe_scale(s: &ScaleSample) -> String {
    format!(
        "scale {} GiB {:<17} SIOCINQ {} traced {} ({}), filled in {}, rss {}, maps {}, time to \
         report {}",
        s.gib,
        s.config,
        gib(s.queued as f64),
        s.traced.map_or("-".into(), |t| gib(t as f64)),
        s.error_pct().map_or("-".into(), |e| format!("{e:+.2} %")),
        secs(s.fill),
        mib(s.tracer.footprint.vm_hwm_bytes as f64),
        mib(s.tracer.footprint.map_memlock_bytes as f64),
        ttr(&s.tracer)
    )
}

pub fn describe_hold(h: &HoldSample) -> String {
    format!(
        "tcp-hold run {} {:<17} SIOCINQ {} traced {} ({:+.2} %), time to report {}",
        h.run,
        h.config,
        mib(h.queued as f64),
        mib(h.traced as f64),
        h.error_pct(),
        ttr(&h.tracer)
    )
}

fn throughput_stats(r: &Results, w: Workload, config: &str) -> Option<Stats> {
    stats(
        r.samples
            .iter()
            .filter(|s| s.workload == w && s.config == config)
            .map(|s| s.throughput),
    )
}

fn ratio(r: &Results, w: Workload, config: &str) -> Option<f64> {
    let bare = throughput_stats(r, w, "bare")?;
    let this = throughput_stats(r, w, config)?;
    (bare.median > 0.0).then(|| this.median / bare.median)
}

/// Every tracer session of a configuration: the throughput runs and the hold checks.
fn tracer_sessions<'a>(
    r: &'a Results,
    config: &'a str,
) -> impl Iterator<Item = (&'static str, &'a super::TracerSample)> + 'a {
    let runs = r
        .samples
        .iter()
        .filter(move |s| s.config == config)
        .filter_map(|s| s.tracer.as_ref().map(|t| (s.workload.name(), t)));
    let holds = r
        .holds
        .iter()
        .filter(move |h| h.config == config)
        .map(|h| ("tcp-hold", &h.tracer));
    runs.chain(holds)
}

struct TracerStats {
    sessions: usize,
    /// Sessions in which the tracer did not exit after SIGINT (killed; not in `ttr`).
    hung: usize,
    hwm: Option<Stats>,
    peak_rss: Option<Stats>,
    memlock: Option<Stats>,
    maps: Option<Stats>,
    ttr: Option<Stats>,
}

fn tracer_stats(r: &Results, config: &str) -> TracerStats {
    let all: Vec<_> = tracer_sessions(r, config).map(|(_, t)| t).collect();
    TracerStats {
        sessions: all.len(),
        hung: all.iter().filter(|t| t.stopped.hung).count(),
        hwm: stats(all.iter().map(|t| t.footprint.vm_hwm_bytes as f64)),
        peak_rss: stats(all.iter().map(|t| t.stopped.peak_rss_bytes as f64)),
        memlock: stats(all.iter().map(|t| t.footprint.map_memlock_bytes as f64)),
        maps: stats(all.iter().map(|t| f64::from(t.footprint.maps))),
        ttr: stats(
            all.iter()
                .filter(|t| !t.stopped.hung)
                .map(|t| t.stopped.time_to_report.as_secs_f64()),
        ),
    }
}

const WORKLOAD_KEYS: [&str; 4] = [
    "page-fault-churn",
    "tcp-stream",
    "slab-unix-dgram",
    "tcp-hold",
];

fn ttr_by_workload(r: &Results, config: &str, workload: &str) -> Option<Stats> {
    stats(
        tracer_sessions(r, config)
            .filter(|(w, t)| *w == workload && !t.stopped.hung)
            .map(|(_, t)| t.stopped.time_to_report.as_secs_f64()),
    )
}

fn mib_pair(s: Option<Stats>) -> String {
    s.map_or("-".into(), |s| {
        format!("{:.1} / {:.1} MiB", s.median / MIB, s.max / MIB)
    })
}

/// The text report (also what docs/benchmarks.md quotes).
pub fn text(r: &Results) -> String {
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(
        o,
        "\nmemtrace bench, {}: host {}, kernel {}, {} CPUs",
        utc(r.started_unix),
        r.hostname,
        r.kernel,
        r.cpus
    );
    let _ = writeln!(
        o,
        "{} runs per workload and configuration, interleaved; throughput workloads {} s each{}; \
         wall time {:.0} s",
        r.runs,
        r.seconds,
        if r.quick { " (--quick)" } else { "" },
        r.wall.as_secs_f64()
    );
    let _ = writeln!(o, "configurations:");
    for c in &r.configs {
        let _ = writeln!(o, "  {:<17} {}", c.name(), c.command_line());
    }
    if let Some(version) = &r.bpftrace {
        let _ = writeln!(o, "  (bpftrace: {version})");
    }

    let _ = writeln!(
        o,
        "\nThroughput: median of the runs; ratio = median under the tracer / median bare \
         (1.000 = no overhead, higher is better); range = (max - min) / median"
    );
    let _ = writeln!(
        o,
        "  BPF %CPU = the tracer's programs' run time in its cost run (kernel.bpf_stats_enabled=1, \
         a separate run), as a share of one CPU;\n  BPF NS/UNIT = that time per page (churn), \
         per byte (tcp-stream) or per op (slab loop)"
    );
    let _ = writeln!(
        o,
        "{:<17} {:<17} {:>20} {:>7} {:>7} {:>5} {:>9} {:>12}",
        "WORKLOAD",
        "CONFIG",
        "MEDIAN THROUGHPUT",
        "RATIO",
        "RANGE",
        "RUNS",
        "BPF %CPU",
        "BPF NS/UNIT"
    );
    for w in Workload::ALL {
        for c in &r.configs {
            let Some(s) = throughput_stats(r, w, c.name()) else {
                continue;
            };
            let ratio = ratio(r, w, c.name()).map_or("-".into(), |x| format!("{x:.3}"));
            let range = if s.median > 0.0 {
                format!("{:.1}%", (s.max - s.min) * 100.0 / s.median)
            } else {
                "-".into()
            };
            let cost = cost_of(r, w, c.name());
            let _ = writeln!(
                o,
                "{:<17} {:<17} {:>20} {:>7} {:>7} {:>5} {:>9} {:>12}",
                w.name(),
                c.name(),
                rate(w, s.median),
                ratio,
                range,
                s.n,
                cost.map_or("-".into(), |c| format!("{:.1}%", c.total_cpu_percent())),
                cost.map_or("-".into(), |c| format!("{:.1}", c.total_ns_per_work())),
            );
        }
    }

    if !r.costs.is_empty() {
        let _ = writeln!(
            o,
            "\nPer-event cost of each program (cost runs, kernel.bpf_stats_enabled=1, which adds \
             a few tens of ns per run itself):\n  RUNS/S = runs per second of the workload; \
             NS/RUN = run_time_ns / run_cnt; MISSES = runs the kernel skipped (recursion)"
        );
        let _ = writeln!(
            o,
            "{:<17} {:<17} {:<17} {:>10} {:>8} {:>8} {:>7}",
            "WORKLOAD", "CONFIG", "PROGRAM", "RUNS/S", "NS/RUN", "MISSES", "%CPU"
        );
        for c in &r.costs {
            for p in &c.programs {
                let per_sec = p.run_cnt as f64 / c.elapsed.as_secs_f64().max(1e-9);
                let _ = writeln!(
                    o,
                    "{:<17} {:<17} {:<17} {:>10} {:>8} {:>8} {:>6.2}%",
                    c.workload.name(),
                    c.config,
                    p.name,
                    if per_sec >= 1e6 {
                        format!("{:.2} M", per_sec / 1e6)
                    } else {
                        format!("{:.1} k", per_sec / 1e3)
                    },
                    p.ns_per_run().map_or("-".into(), |n| format!("{n:.1}")),
                    p.recursion_misses,
                    c.cpu_percent(p)
                );
            }
        }
    }

    let tracers: Vec<_> = r.configs.iter().filter(|c| c.name() != "bare").collect();
    let _ = writeln!(
        o,
        "\nTracer footprint, median / max over each configuration's sessions (throughput runs and \
         hold checks):\n  RSS = VmHWM just before SIGINT; PEAK = VmHWM last read before the exit \
         (includes building the report);\n  MAP MEMORY = sum of memlock over its BPF map fds; TIME TO \
         REPORT = SIGINT until the process exited"
    );
    let _ = writeln!(
        o,
        "{:<17} {:>8} {:>19} {:>19} {:>21} {:>5} {:>17} {:>5}",
        "CONFIG", "SESSIONS", "RSS", "PEAK", "MAP MEMORY", "MAPS", "TIME TO REPORT", "HUNG"
    );
    for c in &tracers {
        let t = tracer_stats(r, c.name());
        let _ = writeln!(
            o,
            "{:<17} {:>8} {:>19} {:>19} {:>21} {:>5} {:>17} {:>5}",
            c.name(),
            t.sessions,
            mib_pair(t.hwm),
            mib_pair(t.peak_rss),
            mib_pair(t.memlock),
            t.maps.map_or("-".into(), |s| format!("{:.0}", s.median)),
            t.ttr
                .map_or("-".into(), |s| format!("{:.3} / {:.3} s", s.median, s.max)),
            t.hung,
        );
    }
    let _ = writeln!(o, "\nTime to report by workload (median, seconds):");
    let _ = writeln!(
        o,
        "{:<17} {:>17} {:>17} {:>17} {:>17}",
        "CONFIG", WORKLOAD_KEYS[0], WORKLOAD_KEYS[1], WORKLOAD_KEYS[2], WORKLOAD_KEYS[3]
    );
    for c in &tracers {
        let cells: Vec<String> = WORKLOAD_KEYS
            .iter()
            .map(|w| {
                ttr_by_workload(r, c.name(), w).map_or("-".into(), |s| format!("{:.3}", s.median))
            })
            .collect();
        let _ = writeln!(
            o,
            "{:<17} {:>17} {:>17} {:>17} {:>17}",
            c.name(),
            cells[0],
            cells[1],
            cells[2],
            cells[3]
        );
    }

    let _ = writeln!(
        o,
        "\nTCP receive-queue hold accuracy: {} sent to an unread loopback receiver \
         (SO_RCVBUFFORCE);\n  truth = the receiver's SIOCINQ; traced = outstanding bytes of the \
         stacks containing {HOLD_FRAME};\n  error = traced / truth - 1; TOP = runs in which \
         that stack was the report's largest",
        mib(HOLD_BYTES as f64)
    );
    let _ = writeln!(
        o,
        "{:<17} {:>5} {:>12} {:>12} {:>13} {:>13} {:>5}",
        "CONFIG", "RUNS", "SIOCINQ", "TRACED", "ERROR MEDIAN", "ERROR WORST", "TOP"
    );
    for c in &tracers {
        let holds: Vec<&HoldSample> = r.holds.iter().filter(|h| h.config == c.name()).collect();
        if holds.is_empty() {
            continue;
        }
        let queued = stats(holds.iter().map(|h| h.queued as f64));
        let traced = stats(holds.iter().map(|h| h.traced as f64));
        let err = stats(holds.iter().map(|h| h.error_pct()));
        let worst = holds
            .iter()
            .map(|h| h.error_pct())
            .max_by(|a, b| a.abs().total_cmp(&b.abs()))
            .unwrap_or(0.0);
        let top = holds.iter().filter(|h| h.top_stack_matches).count();
        let _ = writeln!(
            o,
            "{:<17} {:>5} {:>12} {:>12} {:>13} {:>13} {:>5}",
            c.name(),
            holds.len(),
            queued.map_or("-".into(), |s| mib(s.median)),
            traced.map_or("-".into(), |s| mib(s.median)),
            err.map_or("-".into(), |s| format!("{:+.3}%", s.median)),
            format!("{worst:+.3}%"),
            format!("{top}/{}", holds.len())
        );
    }
    if !r.scale.is_empty() {
        let _ = writeln!(
            o,
            "\nScale: order-0 kernel pages held in AF_UNIX stream socket queues nobody reads (4 \
             KiB writes, one page each);\n  truth = SIOCINQ of the receivers; traced = \
             outstanding bytes of the page stacks containing {SCALE_FRAME} (not {SCALE_EXCLUDE});\n  \
             RSS = VmHWM before SIGINT, PEAK = VmHWM including the report; FILL = time to write \
             the hold under the tracer"
        );
        let _ = writeln!(
            o,
            "{:<17} {:>4} {:>11} {:>11} {:>9} {:>11} {:>10} {:>10} {:>8} {:>24}",
            "CONFIG",
            "GIB",
            "SIOCINQ",
            "TRACED",
            "ERROR",
            "MAP MEMORY",
            "RSS",
            "PEAK",
            "FILL",
            "TIME TO REPORT"
        );
        for sample in &r.scale {
            let _ = writeln!(
                o,
                "{:<17} {:>4} {:>11} {:>11} {:>9} {:>11} {:>10} {:>10} {:>8} {:>24}",
                sample.config,
                sample.gib,
                gib(sample.queued as f64),
                sample.traced.map_or("-".into(), |t| gib(t as f64)),
                sample
                    .error_pct()
                    .map_or("-".into(), |e| format!("{e:+.3}%")),
                mib(sample.tracer.footprint.map_memlock_bytes as f64),
                mib(sample.tracer.footprint.vm_hwm_bytes as f64),
                mib(sample.tracer.stopped.peak_rss_bytes as f64),
                format!("{:.1} s", sample.fill.as_secs_f64()),
                ttr(&sample.tracer),
            );
        }
    }
    if !r.notes.is_empty() {
        let _ = writeln!(o, "\nNotes:");
        for note in &r.notes {
            let _ = writeln!(o, "  - {note}");
        }
    }
    let _ = writeln!(
        o,
        "\nNothing above is asserted: these are measurements, compare them with the targets \
         yourself."
    );
    out
}

fn tracer_json(t: &super::TracerSample) -> Value {
    json!({
        "pid": t.pid,
        "vm_hwm_bytes": t.footprint.vm_hwm_bytes,
        "vm_rss_bytes": t.footprint.vm_rss_bytes,
        "peak_rss_bytes": t.stopped.peak_rss_bytes,
        "map_memlock_bytes": t.footprint.map_memlock_bytes,
        "maps": t.footprint.maps,
        "time_to_report_secs": t.stopped.time_to_report.as_secs_f64(),
        "hung": t.stopped.hung,
        "report_stdout_bytes": t.stopped.stdout_bytes,
        "programs": t.footprint.programs.iter().map(|p| json!({
            "name": p.name,
            "run_cnt": p.run_cnt,
            "run_time_ns": p.run_time_ns,
            "recursion_misses": p.recursion_misses,
        })).collect::<Vec<_>>(),
    })
}

/// The results as JSON (`"schema": 1`).
pub fn json(r: &Results) -> Value {
    let configs: Vec<Value> = r
        .configs
        .iter()
        .map(|c| json!({"name": c.name(), "command": c.command_line()}))
        .collect();
    let workloads: Vec<Value> = Workload::ALL
        .iter()
        .map(|w| json!({"name": w.name(), "unit": w.unit(), "description": w.description()}))
        .collect();
    let mut throughput = Vec::new();
    for w in Workload::ALL {
        for c in &r.configs {
            let Some(s) = throughput_stats(r, w, c.name()) else {
                continue;
            };
            throughput.push(json!({
                "workload": w.name(),
                "config": c.name(),
                "unit": w.unit(),
                "runs": s.n,
                "median": s.median,
                "min": s.min,
                "max": s.max,
                "ratio_vs_bare": ratio(r, w, c.name()),
            }));
        }
    }
    let tracers: Vec<Value> = r
        .configs
        .iter()
        .filter(|c| c.name() != "bare")
        .map(|c| {
            let t = tracer_stats(r, c.name());
            let by_workload: serde_json::Map<String, Value> = WORKLOAD_KEYS
                .iter()
                .map(|w| (w.to_string(), stats_json(ttr_by_workload(r, c.name(), w))))
                .collect();
            let maps: Vec<Value> = tracer_sessions(r, c.name())
                .next()
                .map(|(_, t)| {
                    t.footprint
                        .map_details
                        .iter()
                        .map(|m| {
                            json!({
                                "map_id": m.map_id,
                                "map_type": m.map_type,
                                "key_size": m.key_size,
                                "value_size": m.value_size,
                                "max_entries": m.max_entries,
                                "memlock": m.memlock,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "config": c.name(),
                "sessions": t.sessions,
                "hung": t.hung,
                "maps_of_first_session": maps,
                "vm_hwm_bytes": stats_json_int(t.hwm),
                "peak_rss_bytes": stats_json_int(t.peak_rss),
                "map_memlock_bytes": stats_json_int(t.memlock),
                "maps": stats_json_int(t.maps),
                "time_to_report_secs": stats_json(t.ttr),
                "time_to_report_secs_by_workload": by_workload,
            })
        })
        .collect();
    let hold_by_config: Vec<Value> = r
        .configs
        .iter()
        .filter_map(|c| {
            let holds: Vec<&HoldSample> = r.holds.iter().filter(|h| h.config == c.name()).collect();
            (!holds.is_empty()).then(|| {
                json!({
                    "config": c.name(),
                    "runs": holds.len(),
                    "queued_bytes": stats_json_int(stats(holds.iter().map(|h| h.queued as f64))),
                    "traced_bytes": stats_json_int(stats(holds.iter().map(|h| h.traced as f64))),
                    "error_pct": stats_json(stats(holds.iter().map(|h| h.error_pct()))),
                    "top_stack_matches": holds.iter().filter(|h| h.top_stack_matches).count(),
                })
            })
        })
        .collect();
    let hold_samples: Vec<Value> = r
        .holds
        .iter()
        .map(|h| {
            json!({
                "config": h.config,
                "run": h.run,
                "sent_bytes": h.sent,
                "queued_bytes": h.queued,
                "unsent_bytes": h.unsent,
                "traced_bytes": h.traced,
                "traced_stacks": h.traced_stacks,
                "top_stack_matches": h.top_stack_matches,
                "error_pct": h.error_pct(),
                "tracer": tracer_json(&h.tracer),
            })
        })
        .collect();
    let costs: Vec<Value> = r
        .costs
        .iter()
        .map(|c| {
            json!({
                "workload": c.workload.name(),
                "config": c.config,
                "elapsed_secs": c.elapsed.as_secs_f64(),
                "work": c.work,
                "unit": work_unit(c.workload),
                "bpf_cpu_percent": c.total_cpu_percent(),
                "bpf_ns_per_unit": c.total_ns_per_work(),
                "programs": c.programs.iter().map(|p| json!({
                    "name": p.name,
                    "run_cnt": p.run_cnt,
                    "run_time_ns": p.run_time_ns,
                    "ns_per_run": p.ns_per_run(),
                    "recursion_misses": p.recursion_misses,
                    "cpu_percent": c.cpu_percent(p),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let sessions: Vec<Value> = r
        .samples
        .iter()
        .map(|s| {
            json!({
                "workload": s.workload.name(),
                "config": s.config,
                "run": s.run,
                "work": s.work,
                "elapsed_secs": s.elapsed.as_secs_f64(),
                "throughput": s.throughput,
                "unit": s.workload.unit(),
                "tracer": s.tracer.as_ref().map(tracer_json),
            })
        })
        .collect();
    let scale: Vec<Value> = r
        .scale
        .iter()
        .map(|s| {
            json!({
                "config": s.config,
                "gib": s.gib,
                "sent_bytes": s.sent,
                "queued_bytes": s.queued,
                "traced_bytes": s.traced,
                "error_pct": s.error_pct(),
                "fill_secs": s.fill.as_secs_f64(),
                "tracer": tracer_json(&s.tracer),
            })
        })
        .collect();
    json!({
        "schema": 1,
        "started_at_unix": r.started_unix,
        "started_at": utc(r.started_unix),
        "wall_secs": r.wall.as_secs_f64(),
        "host": {"hostname": r.hostname, "kernel": r.kernel, "cpus": r.cpus},
        "options": {"runs": r.runs, "quick": r.quick, "workload_secs": r.seconds},
        "memtrace_bin": r.memtrace_bin.display().to_string(),
        "bpftrace": r.bpftrace,
        "bpftrace_script": r.bpftrace.as_ref().map(|_| BPFTRACE_SCRIPT),
        "bpftrace_slab_script": r.bpftrace.as_ref().map(|_| BPFTRACE_SLAB_SCRIPT),
        "costs": costs,
        "configs": configs,
        "workloads": workloads,
        "throughput": throughput,
        "tracers": tracers,
        "hold": {
            "requested_bytes": HOLD_BYTES,
            "frame": HOLD_FRAME,
            "by_config": hold_by_config,
            "samples": hold_samples,
        },
        "sessions": sessions,
        "scale": {"frame": SCALE_FRAME, "excluded": SCALE_EXCLUDE, "samples": scale},
        "notes": r.notes,
        "asserted": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_samples() {
        let s = stats([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(stats([4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(stats([]).is_none());
    }

    #[test]
    fn formats_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_795_350_000), "2026-11-22 12:20 UTC");
    }

    #[test]
    fn formats_rates() {
        assert_eq!(rate(Workload::Churn, 1_234_567.0), "1.235 M pages/s");
        assert_eq!(rate(Workload::Slab, 98_765.0), "98.8 k ops/s");
        assert_eq!(rate(Workload::TcpStream, 3.0 * 1024.0 * MIB), "3.00 GiB/s");
        assert_eq!(rate(Workload::TcpStream, 512.0 * MIB), "512.0 MiB/s");
    }
}
