//! Leak signal across `--interval` snapshots: a stack whose outstanding bytes grow steadily is
//! `growing`; one that goes up and down (a working set, churn) or grew once and then stayed
//! flat is not.
//!
//! The rule, on the series of a stack's outstanding bytes at every snapshot and at the end of
//! the session (a stack absent from a snapshot counts as 0 there):
//! - at least [`MIN_POINTS`] points (two intervals and the end);
//! - it grew overall by at least `min_bytes` (one page by default);
//! - it went up in at least half of the steps (a stack that leaks every few intervals is still
//!   growing; one that grew once and stayed flat is not);
//! - what it gave back on the way down is at most [`MAX_GIVEBACK`] of what it took on the way
//!   up (near-monotonic: churn gives back about as much as it takes).

use std::collections::HashMap;

use memtrace_common::Kind;

use super::{Class, Report, Totals};

/// Fewest points (snapshots + the end) a series needs before it can be called growing.
pub const MIN_POINTS: usize = 3;

/// Largest share of the upward steps the downward steps may give back.
pub const MAX_GIVEBACK: f64 = 0.10;

/// Outstanding bytes of one stack across the snapshots and the end of the session.
#[derive(Clone, Debug, PartialEq)]
pub struct Growth {
    /// Outstanding bytes at each snapshot, then at the end.
    pub series: Vec<u64>,
    /// Seconds since the start of the session of each point of `series`.
    pub at_secs: Vec<f64>,
    /// Steady growth (see the module documentation).
    pub growing: bool,
    /// Least-squares slope of `series` over `at_secs`.
    pub bytes_per_sec: f64,
}

/// Whether `series` grows steadily (see the module documentation).
pub fn is_growing(series: &[u64], min_bytes: u64) -> bool {
    if series.len() < MIN_POINTS {
        return false;
    }
    let (first, last) = (series[0], series[series.len() - 1]);
    if last < first.saturating_add(min_bytes.max(1)) {
        return false;
    }
    let steps = series.len() - 1;
    let (mut ups, mut up_bytes, mut down_bytes) = (0usize, 0u128, 0u128);
    for w in series.windows(2) {
        if w[1] > w[0] {
            ups += 1;
            up_bytes += u128::from(w[1] - w[0]);
        } else {
            down_bytes += u128::from(w[0] - w[1]);
        }
    }
    ups * 2 >= steps && (down_bytes as f64) <= MAX_GIVEBACK * up_bytes as f64
}

/// Least-squares slope of `ys` over `xs` (0 when undefined).
pub fn slope(xs: &[f64], ys: &[u64]) -> f64 {
    let n = xs.len().min(ys.len());
    if n < 2 {
        return 0.0;
    }
    let mx = xs[..n].iter().sum::<f64>() / n as f64;
    let my = ys[..n].iter().map(|&y| y as f64).sum::<f64>() / n as f64;
    let (mut num, mut den) = (0.0, 0.0);
    for i in 0..n {
        let dx = xs[i] - mx;
        num += dx * (ys[i] as f64 - my);
        den += dx * dx;
    }
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// One stack in a compact snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotStack {
    pub kind: Kind,
    pub stack_id: Option<u32>,
    pub caller: String,
    pub class: Class,
    pub bytes: u64,
    pub allocations: u64,
}

/// A compact report taken while the session runs (`--interval`).
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Seconds since the start of the session.
    pub at_secs: f64,
    pub totals: Totals,
    /// The largest stacks (up to `--top`).
    pub stacks: Vec<SnapshotStack>,
}

/// A stack across reports: (kind, stack id; `None` for "stack unavailable").
type StackKey = (Kind, Option<u32>);

/// Outstanding bytes of every stack, per snapshot, kept for the growth verdict: every
/// snapshot of a session, or only the last `window` of a session that does not end.
#[derive(Clone, Debug, Default)]
pub struct SeriesBook {
    /// Seconds since the start of each snapshot kept.
    pub at_secs: Vec<f64>,
    /// (kind, stack id) → (snapshot number, bytes); numbers count from the first snapshot
    /// ever taken, `dropped` of them are gone.
    points: HashMap<StackKey, Vec<(usize, u64)>>,
    /// Snapshots dropped from the front (only with a window).
    dropped: usize,
    /// Most snapshots kept (0: all).
    window: usize,
}

impl SeriesBook {
    /// A book that keeps only the last `window` snapshots (memory bounded for sessions that
    /// run for weeks).
    pub fn with_window(window: usize) -> Self {
        SeriesBook {
            window,
            ..Default::default()
        }
    }

    /// Records every stack of a snapshot report taken `at_secs` into the session, and returns
    /// its compact form with the `top` largest stacks.
    pub fn record(&mut self, report: &Report, at_secs: f64, top: usize) -> Snapshot {
        let index = self.dropped + self.at_secs.len();
        self.at_secs.push(at_secs);
        for s in &report.stacks {
            self.points
                .entry((s.kind, s.stack_id))
                .or_default()
                .push((index, s.bytes));
        }
        if self.window > 0 && self.at_secs.len() > self.window {
            let excess = self.at_secs.len() - self.window;
            self.at_secs.drain(..excess);
            self.dropped += excess;
            let first = self.dropped;
            self.points.retain(|_, points| {
                points.retain(|&(i, _)| i >= first);
                !points.is_empty()
            });
        }
        Snapshot {
            at_secs,
            totals: report.totals.clone(),
            stacks: report
                .stacks
                .iter()
                .filter(|s| s.bytes > 0)
                .take(top)
                .map(|s| SnapshotStack {
                    kind: s.kind,
                    stack_id: s.stack_id,
                    caller: s.caller.clone(),
                    class: s.class,
                    bytes: s.bytes,
                    allocations: s.allocations,
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.at_secs.is_empty()
    }

    /// Fills `growth` of every stack of the final report (taken `end_secs` into the session)
    /// from the snapshots and its own bytes. No-op without snapshots.
    pub fn apply(&self, report: &mut Report, end_secs: f64, min_bytes: u64) {
        if self.is_empty() {
            return;
        }
        let mut at_secs = self.at_secs.clone();
        at_secs.push(end_secs);
        for s in &mut report.stacks {
            let mut series = vec![0u64; self.at_secs.len()];
            if let Some(points) = self.points.get(&(s.kind, s.stack_id)) {
                for &(i, bytes) in points {
                    if let Some(slot) = i.checked_sub(self.dropped).and_then(|i| series.get_mut(i))
                    {
                        *slot = bytes;
                    }
                }
            }
            series.push(s.bytes);
            s.growth = Some(Growth {
                growing: is_growing(&series, min_bytes),
                bytes_per_sec: slope(&at_secs, &series),
                series,
                at_secs: at_secs.clone(),
            });
        }
    }
}

/// `--sort growth`: growing stacks first (fastest growth first), then the rest as before
/// (by outstanding bytes). A stable sort: equal keys keep the byte order.
pub fn sort_growing_first(report: &mut Report) {
    report.stacks.sort_by(|a, b| {
        let ga = a.growth.as_ref().filter(|g| g.growing);
        let gb = b.growth.as_ref().filter(|g| g.growing);
        match (ga, gb) {
            (Some(x), Some(y)) => y
                .bytes_per_sec
                .partial_cmp(&x.bytes_per_sec)
                .unwrap_or(std::cmp::Ordering::Equal),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 4096;

    #[test]
    fn monotonic_staircase_grows() {
        let s: Vec<u64> = (0..6).map(|i| i * 512 * P).collect();
        assert!(is_growing(&s, P));
        // Starting from an existing working set, and leaking every other interval.
        assert!(is_growing(
            &[100 * P, 100 * P, 110 * P, 110 * P, 120 * P],
            P
        ));
        // Small noise on the way up is tolerated.
        assert!(is_growing(
            &[0, 100 * P, 99 * P, 200 * P, 300 * P, 298 * P, 400 * P],
            P
        ));
    }

    #[test]
    fn churn_and_working_sets_do_not_grow() {
        // Up and down around a constant: churn.
        assert!(!is_growing(
            &[50 * P, 80 * P, 40 * P, 90 * P, 60 * P, 85 * P],
            P
        ));
        // Sawtooth ending high: gives back as much as it takes.
        assert!(!is_growing(&[0, 100 * P, 0, 100 * P, 0, 110 * P], P));
        // Grew once, then flat: a working set that filled.
        assert!(!is_growing(&[0, 500 * P, 500 * P, 500 * P, 500 * P], P));
        // Flat, shrinking.
        assert!(!is_growing(&[7 * P; 5], P));
        assert!(!is_growing(&[9 * P, 8 * P, 7 * P, 6 * P], P));
        // Too few points to tell.
        assert!(!is_growing(&[0, 100 * P], P));
        // Growth below the minimum.
        assert!(!is_growing(&[0, 1, 2, 3], P));
    }

    #[test]
    fn a_window_keeps_the_last_snapshots_only() {
        use crate::model::testkit::empty_stack;
        let report = |bytes: u64| Report {
            stacks: vec![crate::model::StackReport {
                bytes,
                ..empty_stack()
            }],
            ..Default::default()
        };
        let mut book = SeriesBook::with_window(3);
        for (i, b) in [0u64, 100, 200, 300, 400].iter().enumerate() {
            book.record(&report(b * P), i as f64, 10);
        }
        assert_eq!(book.at_secs, [2.0, 3.0, 4.0]);
        let mut end = report(500 * P);
        book.apply(&mut end, 5.0, P);
        let g = end.stacks[0].growth.as_ref().expect("growth");
        assert_eq!(g.series, [200 * P, 300 * P, 400 * P, 500 * P]);
        assert!(g.growing);
        // A stack gone from the window is forgotten.
        let mut book = SeriesBook::with_window(2);
        book.record(&report(P), 0.0, 10);
        book.record(&Report::default(), 1.0, 10);
        book.record(&Report::default(), 2.0, 10);
        assert!(book.points.is_empty());
    }

    #[test]
    fn slope_of_a_line() {
        let xs = [0.0, 1.0, 2.0, 3.0];
        assert!((slope(&xs, &[10, 20, 30, 40]) - 10.0).abs() < 1e-9);
        assert_eq!(slope(&[1.0], &[5]), 0.0);
        assert_eq!(slope(&[2.0, 2.0], &[5, 9]), 0.0);
    }
}
