//! The soak's checks over its samples, its text table and its JSON.

use std::{fmt::Write as _, time::Duration};

use serde_json::{json, Value};

use super::{
    load::CgroupChurn,
    verdict::{self, Allowance, Check, Unit},
    Run, Sample, SoakOpts, REPORT_EVERY,
};
use crate::bench::{read_trimmed, report::utc};

const MIB: f64 = (1u64 << 20) as f64;
/// The table shows at most about this many rows (every k-th sample and the last); the JSON has
/// them all.
const TABLE_ROWS: usize = 30;

/// Every check of the verdict (the rule: [`verdict`]).
pub fn checks(samples: &[Sample], warmup: Duration) -> Vec<Check> {
    let warm = warmup.as_secs_f64();
    let points = |f: &dyn Fn(&Sample) -> u64| -> Vec<(f64, f64)> {
        samples.iter().map(|s| (s.t_seconds, f(s) as f64)).collect()
    };
    let series: Vec<(u64, u64)> = samples
        .iter()
        .filter_map(|s| Some((s.series?, s.series_bound?)))
        .collect();
    let metrics_ok: Vec<bool> = samples
        .iter()
        .map(|s| s.metrics_status == Some(200) && s.series.is_some())
        .collect();
    let healthz_ok: Vec<bool> = samples.iter().map(|s| s.healthz_ok).collect();
    vec![
        verdict::growth_check(
            "RSS",
            Unit::Bytes,
            &points(&|s| s.rss_bytes),
            warm,
            Allowance::RSS,
        ),
        verdict::growth_check(
            "BPF map memory",
            Unit::Bytes,
            &points(&|s| s.map_memlock_bytes),
            warm,
            Allowance::MAP_MEMORY,
        ),
        verdict::growth_check(
            "open fds",
            Unit::Count,
            &points(&|s| s.fds),
            warm,
            Allowance::FDS,
        ),
        verdict::growth_check(
            "threads",
            Unit::Count,
            &points(&|s| s.threads),
            warm,
            Allowance::THREADS,
        ),
        verdict::series_check(&series),
        verdict::availability_check("/metrics", &metrics_ok, true),
        verdict::availability_check("/healthz", &healthz_ok, true),
    ]
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / MIB)
}

fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// One stderr line per sample while the soak runs.
pub fn progress_line(s: &Sample) -> String {
    let mut line = format!(
        "{} RSS {} MiB, maps {} MiB, {} series, {} fds, {} threads, /metrics {} ms, healthz {}",
        clock(s.t_seconds),
        mib(s.rss_bytes),
        mib(s.map_memlock_bytes),
        opt(s.series),
        s.fds,
        s.threads,
        opt(s.metrics_latency_ms.map(|l| format!("{l:.0}"))),
        if s.healthz_ok { "ok" } else { "NOT ok" },
    );
    if let Some(w) = s.workload {
        let _ = write!(line, " [{w}]");
    }
    for e in &s.errors {
        let _ = write!(line, "; {e}");
    }
    line
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// The samples shown in the table: every k-th and the last; k a multiple of the /report.json
/// period when larger, so that the rows show the report's stacks.
fn table_rows(samples: &[Sample]) -> Vec<&Sample> {
    let mut step = samples.len().div_ceil(TABLE_ROWS).max(1);
    if step > REPORT_EVERY {
        step = step.div_ceil(REPORT_EVERY) * REPORT_EVERY;
    }
    let mut rows: Vec<&Sample> = samples.iter().step_by(step).collect();
    if let Some(last) = samples.last() {
        if !rows.last().is_some_and(|r| std::ptr::eq(*r, last)) {
            rows.push(last);
        }
    }
    rows
}

pub fn text(run: &Run, opts: &SoakOpts, warmup: Duration, checks: &[Check]) -> String {
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(
        o,
        "\nmemtrace soak, {}: host {}, kernel {}, {} CPUs; {} min, snapshot every {:?}, \
         sample every {:?}, warm-up {:.0} s; wall time {:.0} s",
        utc(run.started_unix),
        read_trimmed("/proc/sys/kernel/hostname"),
        read_trimmed("/proc/sys/kernel/osrelease"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        opts.minutes,
        opts.interval,
        opts.sample_every,
        warmup.as_secs_f64(),
        run.wall.as_secs_f64()
    );
    let _ = writeln!(o, "command: {}", run.command.join(" "));
    let _ = writeln!(o, "load: {}", load_summary(run));

    let rows = table_rows(&run.samples);
    let _ = writeln!(
        o,
        "\n{:>8} {:>9} {:>9} {:>7} {:>5} {:>8} {:>10} {:>8} {:>7}  WORKLOAD",
        "TIME", "RSS MiB", "MAPS MiB", "SERIES", "FDS", "THREADS", "/metrics", "HEALTHZ", "STACKS",
    );
    for s in &rows {
        let _ = writeln!(
            o,
            "{:>8} {:>9} {:>9} {:>7} {:>5} {:>8} {:>10} {:>8} {:>7}  {}",
            clock(s.t_seconds),
            mib(s.rss_bytes),
            mib(s.map_memlock_bytes),
            opt(s.series),
            s.fds,
            s.threads,
            opt(s.metrics_latency_ms.map(|l| format!("{l:.0} ms"))),
            if s.healthz_ok { "ok" } else { "NOT ok" },
            opt(s.report_stacks),
            s.workload.unwrap_or("-")
        );
    }
    if rows.len() < run.samples.len() {
        let _ = writeln!(
            o,
            "({} of {} samples shown; all of them in the JSON)",
            rows.len(),
            run.samples.len()
        );
    }

    let latencies: Vec<f64> = run
        .samples
        .iter()
        .filter_map(|s| s.metrics_latency_ms)
        .collect();
    if let (Some(med), Some(max)) = (
        median(latencies.clone()),
        latencies.iter().copied().reduce(f64::max),
    ) {
        let _ = writeln!(o, "\n/metrics latency: median {med:.0} ms, max {max:.0} ms");
    }
    if let (Some(first), Some(last)) = (run.samples.first(), run.samples.last()) {
        let grown: Vec<String> = last
            .failure_counters
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| {
                let before = first.failure_counters.get(k).copied().unwrap_or(0);
                format!("{k}={v} (first sample {before})")
            })
            .collect();
        let _ = writeln!(
            o,
            "failure counters at the end: {}; recursion misses {}",
            if grown.is_empty() {
                "all 0".to_string()
            } else {
                grown.join(", ")
            },
            opt(last.recursion_misses)
        );
        let tables: Vec<String> = last
            .table_entries
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        if !tables.is_empty() {
            let _ = writeln!(o, "table entries at the end: {}", tables.join(", "));
        }
        let housekeeping: Vec<String> = last
            .housekeeping
            .iter()
            .map(|(k, v)| format!("{} {v}", k.trim_start_matches("memtrace_")))
            .collect();
        if !housekeeping.is_empty() {
            let _ = writeln!(o, "housekeeping at the end: {}", housekeeping.join(", "));
        }
    }
    if let Some(secs) = run.stop_seconds {
        let _ = writeln!(
            o,
            "SIGTERM: exit 0 after {secs:.1} s; its {} BPF programs and {} maps are gone",
            run.bpf_programs, run.bpf_maps
        );
    }
    if let Some(r) = run.samples.iter().rev().find(|s| s.report_stacks.is_some()) {
        let full: Vec<String> = r
            .report_full_counters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            o,
            "last /report.json ({}): {} stacks, {} outstanding allocations, {} snapshots, {:.1} \
             MiB; {}",
            clock(r.t_seconds),
            opt(r.report_stacks),
            opt(r.report_allocations),
            opt(r.report_snapshots),
            r.report_json_bytes.unwrap_or(0) as f64 / MIB,
            full.join(" ")
        );
    }
    let _ = writeln!(o, "\nchecks:");
    for c in checks {
        let _ = writeln!(o, "  {} {}", if c.pass { "PASS" } else { "FAIL" }, c.detail);
    }
    out
}

fn load_summary(run: &Run) -> String {
    let Some(opts) = run.load else {
        return "none (--no-load)".into();
    };
    let mut parts = vec![format!(
        "bench workloads in turn, {:?} each",
        opts.workload_period
    )];
    for (name, secs, work, unit) in &run.workload_totals {
        if *secs > 0.0 {
            parts.push(format!(
                "{name} {:.0} s at {:.3e} {unit}",
                secs,
                work / secs
            ));
        }
    }
    parts.push(format!(
        "{} short-lived processes (one every {:?})",
        run.processes, opts.process_every
    ));
    match &run.cgroups {
        Some(CgroupChurn::On(parent)) => parts.push(format!(
            "{} cgroups created and {} removed under {}",
            run.cgroups_created,
            run.cgroups_removed,
            parent.display()
        )),
        Some(CgroupChurn::Off(why)) => parts.push(format!("no cgroup churn: {why}")),
        None => {}
    }
    parts.join("; ")
}

fn check_json(c: &Check) -> Value {
    let mut v = json!({"name": c.name, "pass": c.pass, "detail": c.detail});
    if let Some(g) = c.growth {
        v["baseline"] = json!(g.baseline);
        v["end"] = json!(g.end);
        v["allowance"] = json!(g.allowance);
        v["slope_per_hour"] = json!(g.slope_per_second * 3600.0);
        v["r2"] = json!(g.r2);
        v["trend_rise"] = json!(g.trend_rise);
        v["samples"] = json!(g.samples);
    }
    v
}

pub fn json(
    run: &Run,
    opts: &SoakOpts,
    warmup: Duration,
    checks: &[Check],
    error: Option<&str>,
) -> Value {
    let pass = error.is_none() && checks.iter().all(|c| c.pass);
    let load = run.load.map(|l| {
        json!({
            "workload_period_seconds": l.workload_period.as_secs_f64(),
            "process_every_seconds": l.process_every.as_secs_f64(),
            "cgroup_every_seconds": l.cgroup_every.as_secs_f64(),
            "cgroups_alive": l.cgroups_alive,
            "workloads": run.workload_totals.iter().map(|(name, secs, work, unit)| json!({
                "name": name, "seconds": secs, "work": work, "unit": unit,
            })).collect::<Vec<_>>(),
            "processes": run.processes,
            "cgroups": match &run.cgroups {
                Some(CgroupChurn::On(parent)) => json!({
                    "parent": parent, "created": run.cgroups_created,
                    "removed": run.cgroups_removed,
                }),
                Some(CgroupChurn::Off(why)) => json!({"off": why}),
                None => Value::Null,
            },
        })
    });
    json!({
        "kind": "memtrace-soak",
        "schema": 1,
        "started_unix": run.started_unix,
        "started": utc(run.started_unix),
        "host": read_trimmed("/proc/sys/kernel/hostname"),
        "kernel": read_trimmed("/proc/sys/kernel/osrelease"),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "minutes": opts.minutes,
        "interval_seconds": opts.interval.as_secs_f64(),
        "sample_every_seconds": opts.sample_every.as_secs_f64(),
        "warmup_seconds": warmup.as_secs_f64(),
        "wall_seconds": run.wall.as_secs_f64(),
        "command": run.command,
        "pid": run.pid,
        "addr": run.addr.map(|a| a.to_string()),
        "load": load,
        "stop": {
            "signal": "SIGTERM",
            "seconds": run.stop_seconds,
            "bpf_programs_gone": run.stop_seconds.map(|_| run.bpf_programs),
            "bpf_maps_gone": run.stop_seconds.map(|_| run.bpf_maps),
        },
        "verdict": {
            "pass": pass,
            "checks": checks.iter().map(check_json).collect::<Vec<_>>(),
        },
        "error": error,
        "samples": run.samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, rss_mib: u64) -> Sample {
        Sample {
            t_seconds: t,
            rss_bytes: rss_mib << 20,
            threads: 6,
            fds: 30,
            map_memlock_bytes: 114 << 20,
            metrics_status: Some(200),
            series: Some(120),
            series_bound: Some(300),
            healthz_ok: true,
            ..Sample::default()
        }
    }

    #[test]
    fn a_flat_run_passes_every_check() {
        let samples: Vec<Sample> = (0..=18).map(|i| sample(i as f64 * 10.0, 40)).collect();
        let checks = checks(&samples, Duration::from_secs(60));
        assert_eq!(checks.len(), 7);
        for c in &checks {
            assert!(c.pass, "{}", c.detail);
        }
    }

    #[test]
    fn a_leaking_run_fails_rss_only() {
        let samples: Vec<Sample> = (0..=18)
            .map(|i| sample(i as f64 * 10.0, 40 + 2 * i))
            .collect();
        let checks = checks(&samples, Duration::from_secs(60));
        let failed: Vec<&str> = checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(failed, ["RSS"]);
    }

    #[test]
    fn table_shows_every_kth_sample_and_the_last() {
        let samples: Vec<Sample> = (0..=360).map(|i| sample(i as f64 * 10.0, 40)).collect();
        let rows = table_rows(&samples);
        assert!(rows.len() <= TABLE_ROWS + 1, "{}", rows.len());
        // Every row is a sample that fetched /report.json (every 6th), but the last.
        assert!(rows[..rows.len() - 1]
            .iter()
            .all(|r| ((r.t_seconds / 10.0) as usize).is_multiple_of(REPORT_EVERY)));
        assert_eq!(rows[0].t_seconds, 0.0);
        assert_eq!(rows.last().map(|r| r.t_seconds), Some(3600.0));
        let few: Vec<Sample> = (0..5).map(|i| sample(i as f64, 40)).collect();
        assert_eq!(table_rows(&few).len(), 5);
        assert_eq!(clock(3725.0), "1:02:05");
    }
}
