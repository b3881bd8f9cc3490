//! The soak's verdict: pure functions over the samples, unit-tested.
//!
//! **Warm-up.** The first third of a run shorter than 6 minutes; otherwise the first 25 % or
//! 2 minutes, whichever is longer. Caches fill, the allocator finds its working set, the
//! tables fill with the load's stacks; nothing before its end is judged (except the series
//! bound, /metrics and /healthz, which hold at every sample).
//!
//! **A figure that must not grow** (RSS, kernel map memory, open fds, threads) is judged over
//! the samples after the warm-up (at least [`MIN_SAMPLES`]):
//!
//! - *baseline* = median of the first 3 of them, *end* = median of the last 3 (a median of three
//!   ignores one odd sample at either end: a snapshot being rendered, a request being answered);
//! - **grew**: fail when `end − baseline` exceeds the allowance — for RSS `max(10 % of the
//!   baseline, 8 MiB)`, for map memory `max(1 %, 1 MiB)`, for fds 4 and threads 2;
//! - **climbing** (RSS and map memory): fail when the least-squares line through all those
//!   samples rises by more than half the allowance across them *and* explains at least 80 % of
//!   their variance (R² ≥ 0.8). Noise around a plateau has a slope near 0 and a low R²; a
//!   single step (a buffer that grew once) has an R² of at most about 0.75 when it lands in the
//!   middle and less elsewhere, and is judged by *grew*; a steady leak is a straight line: R²
//!   near 1, caught at half the size *grew* needs.
//!
//! **Series**: every sample's /metrics has at most 287 + 3·P series (P = loaded programs;
//! docs/metrics.md). **/metrics** answers 200 and **/healthz** `ok` at every sample from the
//! first one that did (before the first snapshot both are 503 by design).

use std::time::Duration;

/// Fewer samples after the warm-up than this: the growth checks cannot judge (a failure: run
/// longer or sample more often).
pub const MIN_SAMPLES: usize = 6;
/// Samples whose median is the baseline (the first ones after the warm-up) and the end.
const EDGE: usize = 3;
/// R² from which a rising least-squares line counts as a steady climb.
pub const CLIMB_R2: f64 = 0.8;
const MIB: f64 = (1u64 << 20) as f64;

/// The warm-up of a run of `run` (see the module documentation).
pub fn warmup(run: Duration) -> Duration {
    if run < Duration::from_secs(6 * 60) {
        run / 3
    } else {
        (run / 4).max(Duration::from_secs(2 * 60))
    }
}

/// How much a figure may grow after the warm-up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Allowance {
    /// A fraction of the baseline (0.10 = 10 %).
    pub fraction: f64,
    /// An absolute amount, in the figure's unit; the larger of the two applies.
    pub absolute: f64,
    /// Whether the steady-climb (least-squares) check applies too.
    pub climb: bool,
}

impl Allowance {
    /// RSS: max(10 %, 8 MiB), and the steady-climb check.
    pub const RSS: Allowance = Allowance {
        fraction: 0.10,
        absolute: 8.0 * MIB,
        climb: true,
    };
    /// Kernel map memory (preallocated tables: should be constant): max(1 %, 1 MiB), and the
    /// steady-climb check.
    pub const MAP_MEMORY: Allowance = Allowance {
        fraction: 0.01,
        absolute: MIB,
        climb: true,
    };
    /// Open fds: 4.
    pub const FDS: Allowance = Allowance {
        fraction: 0.0,
        absolute: 4.0,
        climb: false,
    };
    /// Threads: 2.
    pub const THREADS: Allowance = Allowance {
        fraction: 0.0,
        absolute: 2.0,
        climb: false,
    };

    pub fn of(&self, baseline: f64) -> f64 {
        (baseline * self.fraction).max(self.absolute)
    }
}

/// A least-squares line through points.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fit {
    /// Units per second.
    pub slope: f64,
    /// Fraction of the variance the line explains (0 when the values are all equal).
    pub r2: f64,
}

/// Least-squares fit of `(t seconds, value)`; `None` with fewer than 2 distinct times.
pub fn fit(points: &[(f64, f64)]) -> Option<Fit> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_v = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut stt, mut stv, mut svv) = (0.0, 0.0, 0.0);
    for &(t, v) in points {
        stt += (t - mean_t) * (t - mean_t);
        stv += (t - mean_t) * (v - mean_v);
        svv += (v - mean_v) * (v - mean_v);
    }
    if stt <= 0.0 {
        return None;
    }
    let slope = stv / stt;
    let r2 = if svv > 0.0 {
        (stv * stv) / (stt * svv)
    } else {
        0.0
    };
    Some(Fit { slope, r2 })
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// How a growth figure is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Count,
}

impl Unit {
    pub fn show(self, v: f64) -> String {
        match self {
            Unit::Bytes => format!("{:.1} MiB", v / MIB),
            Unit::Count => format!("{v:.0}"),
        }
    }

    fn rate(self, per_second: f64) -> String {
        match self {
            Unit::Bytes => format!("{:.2} MiB/h", per_second * 3600.0 / MIB),
            Unit::Count => format!("{:.1}/h", per_second * 3600.0),
        }
    }
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub name: String,
    pub pass: bool,
    /// One line with the numbers.
    pub detail: String,
    /// For growth checks: baseline, end, allowance, least-squares slope (per second), R².
    pub growth: Option<Growth>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Growth {
    pub baseline: f64,
    pub end: f64,
    pub allowance: f64,
    pub slope_per_second: f64,
    pub r2: f64,
    /// Rise of the least-squares line across the judged samples.
    pub trend_rise: f64,
    pub samples: usize,
}

/// Judges a figure that must not grow: `points` are `(seconds since start, value)` of every
/// sample; those at or after `warmup_end` are judged.
pub fn growth_check(
    name: &str,
    unit: Unit,
    points: &[(f64, f64)],
    warmup_end: f64,
    allowance: Allowance,
) -> Check {
    let judged: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|p| p.0 >= warmup_end)
        .collect();
    if judged.len() < MIN_SAMPLES {
        return Check {
            name: name.to_string(),
            pass: false,
            detail: format!(
                "{name}: only {} samples after the {warmup_end:.0} s warm-up (at least \
                 {MIN_SAMPLES} needed: run longer or sample more often)",
                judged.len()
            ),
            growth: None,
        };
    }
    let values: Vec<f64> = judged.iter().map(|p| p.1).collect();
    let baseline = median(&values[..EDGE]);
    let end = median(&values[values.len() - EDGE..]);
    let allowed = allowance.of(baseline);
    let line = fit(&judged).unwrap_or(Fit {
        slope: 0.0,
        r2: 0.0,
    });
    let span = judged[judged.len() - 1].0 - judged[0].0;
    let rise = line.slope * span;
    let grew = end - baseline > allowed;
    let climbing = allowance.climb && rise > allowed / 2.0 && line.r2 >= CLIMB_R2;
    let numbers = format!(
        "{} → {} ({}{}, allowance {}), trend {} (R² {:.2}) over {} samples after the {:.0} s \
         warm-up",
        unit.show(baseline),
        unit.show(end),
        if end >= baseline { "+" } else { "−" },
        unit.show((end - baseline).abs()),
        unit.show(allowed),
        unit.rate(line.slope),
        line.r2,
        judged.len(),
        warmup_end
    );
    let detail = if grew {
        format!("{name} grew: {numbers}")
    } else if climbing {
        format!(
            "{name} climbs steadily: the least-squares line rises {} (more than half the \
             allowance); {numbers}",
            unit.show(rise)
        )
    } else {
        format!("{name} stable: {numbers}")
    };
    Check {
        name: name.to_string(),
        pass: !grew && !climbing,
        detail,
        growth: Some(Growth {
            baseline,
            end,
            allowance: allowed,
            slope_per_second: line.slope,
            r2: line.r2,
            trend_rise: rise,
            samples: judged.len(),
        }),
    }
}

/// Every sample's series count at most its bound: `(series, bound)` per sample.
pub fn series_check(samples: &[(u64, u64)]) -> Check {
    let over: Vec<&(u64, u64)> = samples.iter().filter(|(s, b)| s > b).collect();
    let max = samples.iter().max_by_key(|(s, _)| *s);
    let detail = match (over.first(), max) {
        (Some((s, b)), _) => format!(
            "series over the documented bound in {} of {} samples (e.g. {s} > {b})",
            over.len(),
            samples.len()
        ),
        (None, Some((s, b))) => format!(
            "series bounded: at most {s} (bound {b}) over {} samples",
            samples.len()
        ),
        (None, None) => "series: no /metrics sample".to_string(),
    };
    Check {
        name: "series".into(),
        pass: over.is_empty() && max.is_some(),
        detail,
        growth: None,
    }
}

/// Every sample answered ok (from the first ok on, with `from_first_ok`).
pub fn availability_check(name: &str, oks: &[bool], from_first_ok: bool) -> Check {
    let start = if from_first_ok {
        oks.iter().position(|ok| *ok).unwrap_or(oks.len())
    } else {
        0
    };
    let judged = &oks[start..];
    let failed = judged.iter().filter(|ok| !**ok).count();
    let never = from_first_ok && start == oks.len();
    let detail = if never {
        format!("{name} never answered ok in {} samples", oks.len())
    } else if failed > 0 {
        format!(
            "{name} failed in {failed} of {} samples{}",
            judged.len(),
            if from_first_ok {
                " after its first ok"
            } else {
                ""
            }
        )
    } else {
        format!("{name} ok in all {} samples", judged.len())
    };
    Check {
        name: name.to_string(),
        pass: !never && failed == 0 && !oks.is_empty(),
        detail,
        growth: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random generator (xorshift) for noise in [-1, 1].
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % 2_000_001) as f64 / 1_000_000.0 - 1.0
        }
    }

    /// `minutes` of samples every 10 s: `value(t)` plus noise of `jitter` (uniform ±).
    fn series(minutes: u64, jitter: f64, seed: u64, value: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        let mut noise = Noise(seed);
        (0..=minutes * 6)
            .map(|i| {
                let t = i as f64 * 10.0;
                (t, value(t) + jitter * noise.next())
            })
            .collect()
    }

    fn rss_check(points: &[(f64, f64)], minutes: u64) -> Check {
        let warm = warmup(Duration::from_secs(minutes * 60)).as_secs_f64();
        growth_check("RSS", Unit::Bytes, points, warm, Allowance::RSS)
    }

    #[test]
    fn warmup_rule() {
        let m = |x: u64| Duration::from_secs(x * 60);
        assert_eq!(warmup(m(3)), m(1));
        assert_eq!(warmup(Duration::from_secs(90)), Duration::from_secs(30));
        assert_eq!(warmup(m(6)), m(2));
        assert_eq!(warmup(m(8)), m(2));
        assert_eq!(warmup(m(60)), m(15));
        // Continuous at 6 minutes: a third of 6 is 2, as is the 2-minute floor.
        assert_eq!(
            warmup(Duration::from_secs(359)),
            Duration::from_secs(359) / 3
        );
        assert!(warmup(m(6)) - warmup(Duration::from_secs(359)) < Duration::from_secs(1));
    }

    #[test]
    fn fit_of_a_line_and_of_a_constant() {
        let line: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 1.0)).collect();
        let f = fit(&line).unwrap();
        assert!((f.slope - 3.0).abs() < 1e-9);
        assert!((f.r2 - 1.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 5.0)).collect();
        assert_eq!(
            fit(&flat).unwrap(),
            Fit {
                slope: 0.0,
                r2: 0.0
            }
        );
        assert!(fit(&[(1.0, 2.0)]).is_none());
        assert!(fit(&[(1.0, 2.0), (1.0, 3.0)]).is_none());
    }

    #[test]
    fn noise_around_a_plateau_passes() {
        // 40 MiB with ±3 MiB of jitter, many seeds, short and long runs: never a failure.
        for seed in 1..200 {
            for minutes in [3, 10, 60] {
                let points = series(minutes, 3.0 * MIB, seed, |_| 40.0 * MIB);
                let check = rss_check(&points, minutes);
                assert!(check.pass, "seed {seed}, {minutes} min: {}", check.detail);
            }
        }
    }

    #[test]
    fn a_warm_up_ramp_then_a_plateau_passes() {
        // Grows by 30 MiB during the first minutes, then stays (with jitter).
        for minutes in [3, 60] {
            let ramp = warmup(Duration::from_secs(minutes * 60)).as_secs_f64();
            let points = series(minutes, 1.0 * MIB, 7, |t| {
                40.0 * MIB + 30.0 * MIB * (t / ramp).min(1.0)
            });
            let check = rss_check(&points, minutes);
            assert!(check.pass, "{minutes} min: {}", check.detail);
        }
    }

    #[test]
    fn a_single_step_below_the_allowance_passes() {
        // One buffer grows once by 6 MiB in the middle of the judged window.
        let points = series(60, 0.5 * MIB, 3, |t| {
            40.0 * MIB + if t > 37.5 * 60.0 { 6.0 * MIB } else { 0.0 }
        });
        let check = rss_check(&points, 60);
        assert!(check.pass, "{}", check.detail);
    }

    #[test]
    fn a_steady_leak_is_caught_by_the_end_against_the_baseline() {
        // 20 MiB/h over the hour: 15 MiB after the warm-up, above 8 MiB.
        let points = series(60, 1.0 * MIB, 11, |t| 40.0 * MIB + 20.0 * MIB * t / 3600.0);
        let check = rss_check(&points, 60);
        assert!(!check.pass);
        assert!(check.detail.starts_with("RSS grew"), "{}", check.detail);
        // In 3 minutes a fast leak (4 MiB/min) is caught as well.
        let points = series(3, 1.0 * MIB, 11, |t| 40.0 * MIB + 4.0 * MIB * t / 60.0);
        assert!(!rss_check(&points, 3).pass);
    }

    #[test]
    fn a_slower_steady_leak_is_caught_by_the_slope() {
        // 7 MiB/h: 5.2 MiB over the 45 judged minutes, below the 8 MiB of "grew" but a clean
        // straight line.
        let points = series(60, 0.3 * MIB, 5, |t| 40.0 * MIB + 7.0 * MIB * t / 3600.0);
        let check = rss_check(&points, 60);
        assert!(!check.pass, "{}", check.detail);
        assert!(check.detail.contains("climbs steadily"), "{}", check.detail);
        let g = check.growth.unwrap();
        assert!(
            (g.slope_per_second * 3600.0 / MIB - 7.0).abs() < 0.5,
            "{g:?}"
        );
    }

    #[test]
    fn too_few_samples_cannot_pass() {
        let points = series(1, 0.0, 1, |_| MIB);
        let check = growth_check("RSS", Unit::Bytes, &points[..4], 0.0, Allowance::RSS);
        assert!(!check.pass);
        assert!(check.detail.contains("only 4 samples"), "{}", check.detail);
    }

    #[test]
    fn counts_have_a_small_slack() {
        let steady: Vec<(f64, f64)> = (0..20)
            .map(|i| (i as f64 * 10.0, if i % 5 == 0 { 9.0 } else { 7.0 }))
            .collect();
        let c = growth_check("threads", Unit::Count, &steady, 0.0, Allowance::THREADS);
        assert!(c.pass, "{}", c.detail);
        // One more fd every other sample: 10 more at the end.
        let leak: Vec<(f64, f64)> = (0..20)
            .map(|i| (i as f64 * 10.0, 20.0 + (i / 2) as f64))
            .collect();
        let c = growth_check("open fds", Unit::Count, &leak, 0.0, Allowance::FDS);
        assert!(!c.pass);
        assert!(c.detail.contains("20 → 29"), "{}", c.detail);
    }

    #[test]
    fn series_bound_holds_at_every_sample() {
        assert!(series_check(&[(100, 300), (120, 300)]).pass);
        let c = series_check(&[(100, 300), (301, 300)]);
        assert!(!c.pass);
        assert!(c.detail.contains("301 > 300"), "{}", c.detail);
        assert!(!series_check(&[]).pass);
    }

    #[test]
    fn availability() {
        assert!(availability_check("/healthz", &[false, true, true], true).pass);
        assert!(!availability_check("/healthz", &[false, true, false], true).pass);
        assert!(!availability_check("/healthz", &[false, false], true).pass);
        assert!(!availability_check("/metrics", &[false, true], false).pass);
        assert!(availability_check("/metrics", &[true, true], false).pass);
    }
}
