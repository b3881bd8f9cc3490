//! What a running session shows on stderr: a progress bar on a terminal (elapsed/remaining,
//! events per second, bytes held so far), a log line now and then otherwise (sidecars, Jobs,
//! CI logs), nothing with `--quiet`.

use std::{
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{
    model::LiveStats,
    units::{format_bytes, format_duration},
};

/// How often the bar is refreshed.
const BAR_EVERY: Duration = Duration::from_secs(1);
/// Log lines: about ten per session, but no more than one per 10 s and at least one a minute.
const LINE_MIN: Duration = Duration::from_secs(10);
const LINE_MAX: Duration = Duration::from_secs(60);

enum Mode {
    Bar(ProgressBar),
    Lines,
    Quiet,
}

/// The progress display of one session.
pub struct Progress {
    mode: Mode,
    started: Instant,
    duration: Duration,
    /// The previous sample, for the event rate.
    last: Option<(Instant, u64)>,
}

impl Progress {
    /// No progress and no informational messages; warnings still show (`memtrace report`).
    pub fn silent() -> Self {
        Progress::new(true, Instant::now(), Duration::ZERO)
    }

    /// A bar when stderr is a terminal, log lines otherwise, nothing when `quiet`.
    pub fn new(quiet: bool, started: Instant, duration: Duration) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(
                Some(duration.as_millis().min(u128::from(u64::MAX)) as u64),
                ProgressDrawTarget::stderr(),
            );
            // The template is a constant: it parses (tested below); fall back to the default.
            if let Ok(style) = ProgressStyle::with_template(BAR_TEMPLATE) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(format!("0s of {}", format_duration(duration.as_secs_f64())));
            Mode::Bar(bar)
        } else {
            Mode::Lines
        };
        Progress {
            mode,
            started,
            duration,
            last: None,
        }
    }

    /// How often [`Progress::update`] wants to be called (`None`: never).
    pub fn every(&self) -> Option<Duration> {
        match self.mode {
            Mode::Bar(_) => Some(BAR_EVERY),
            Mode::Lines => Some(line_every(self.duration)),
            Mode::Quiet => None,
        }
    }

    /// Shows `stats` as read at `now`.
    pub fn update(&mut self, stats: LiveStats, now: Instant) {
        let rate = match self.last {
            Some((t, events)) if now > t => {
                stats.events.saturating_sub(events) as f64 / (now - t).as_secs_f64()
            }
            _ => {
                let secs = (now - self.started).as_secs_f64();
                if secs > 0.0 {
                    stats.events as f64 / secs
                } else {
                    0.0
                }
            }
        };
        self.last = Some((now, stats.events));
        let elapsed = now.saturating_duration_since(self.started);
        match &self.mode {
            Mode::Bar(bar) => {
                bar.set_position(elapsed.as_millis().min(u128::from(u64::MAX)) as u64);
                bar.set_message(bar_message(elapsed, self.duration, rate, &stats));
            }
            Mode::Lines => eprintln!(
                "memtrace: {}",
                status_line(elapsed, self.duration, rate, &stats)
            ),
            Mode::Quiet => {}
        }
    }

    /// Runs `f` (which prints to stdout or stderr) with the bar hidden.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.mode {
            Mode::Bar(bar) => bar.suspend(f),
            _ => f(),
        }
    }

    /// Informational message (hidden by `--quiet`).
    pub fn info(&self, msg: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Bar(bar) => bar.suspend(|| eprintln!("memtrace: {msg}")),
            Mode::Lines => eprintln!("memtrace: {msg}"),
        }
    }

    /// A warning (shown even with `--quiet`, without disturbing the bar).
    pub fn warn(&self, msg: &str) {
        self.suspend(|| eprintln!("memtrace: warning: {msg}"));
    }

    /// Removes the bar (the session is over).
    pub fn finish(&self) {
        if let Mode::Bar(bar) = &self.mode {
            bar.finish_and_clear();
        }
    }
}

const BAR_TEMPLATE: &str = "{spinner} [{bar:30}] {msg}";

fn bar_message(elapsed: Duration, duration: Duration, rate: f64, s: &LiveStats) -> String {
    let mut m = format!(
        "{} of {} · {} events/s · {} held",
        format_duration(elapsed.as_secs_f64()),
        format_duration(duration.as_secs_f64()),
        si(rate),
        format_bytes(s.outstanding_bytes)
    );
    if s.failures > 0 {
        m.push_str(&format!(" · {} lost/approximate", s.failures));
    }
    m
}

/// The log line of a session without a terminal.
pub fn status_line(elapsed: Duration, duration: Duration, rate: f64, s: &LiveStats) -> String {
    let remaining = duration.saturating_sub(elapsed);
    let mut line = format!(
        "tracing: {} elapsed, {} left; {} events/s; {} held by tracked allocations",
        format_duration(elapsed.as_secs_f64()),
        format_duration(remaining.as_secs_f64()),
        si(rate),
        format_bytes(s.outstanding_bytes)
    );
    if s.failures > 0 {
        line.push_str(&format!(
            "; {} events lost or approximate (see the report's counters)",
            s.failures
        ));
    }
    line
}

/// Interval of the log lines for a session of `duration`.
pub fn line_every(duration: Duration) -> Duration {
    (duration / 10).clamp(LINE_MIN, LINE_MAX)
}

/// `950`, `12.3k`, `4.5M`.
fn si(v: f64) -> String {
    if !v.is_finite() || v < 0.0 {
        return "?".into();
    }
    if v < 1000.0 {
        format!("{v:.0}")
    } else if v < 1e6 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{:.1}M", v / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_rates() {
        let s = LiveStats {
            events: 10,
            failures: 0,
            outstanding_bytes: 3 << 20,
        };
        assert_eq!(
            status_line(Duration::from_secs(65), Duration::from_secs(600), 12_345.0, &s),
            "tracing: 1m05s elapsed, 8m55s left; 12.3k events/s; 3.0 MiB held by tracked allocations"
        );
        let lost = LiveStats { failures: 7, ..s };
        assert!(
            status_line(Duration::ZERO, Duration::from_secs(1), 0.0, &lost)
                .ends_with("; 7 events lost or approximate (see the report's counters)")
        );
        assert_eq!(si(950.0), "950");
        assert_eq!(si(4_500_000.0), "4.5M");
        assert_eq!(si(f64::NAN), "?");
        assert_eq!(line_every(Duration::from_secs(30)), LINE_MIN);
        assert_eq!(
            line_every(Duration::from_secs(300)),
            Duration::from_secs(30)
        );
        assert_eq!(line_every(Duration::from_secs(3600)), LINE_MAX);
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
        assert_eq!(
            bar_message(
                Duration::from_secs(5),
                Duration::from_secs(600),
                950.0,
                &lost
            ),
            "5.0s of 10m00s · 950 events/s · 3.0 MiB held · 7 lost/approximate"
        );
    }

    #[test]
    fn quiet_shows_nothing_and_needs_no_updates() {
        let p = Progress::new(true, Instant::now(), Duration::from_secs(10));
        assert_eq!(p.every(), None);
        assert_eq!(p.suspend(|| 5), 5);
    }
}
