//! When a session wakes up, and for what: its end, the start of the grace period, a progress
//! update, a snapshot. Pure (no clock of its own, no I/O): the session asks it when to wake,
//! what is due at the time it woke, and tells it what it did.

use std::time::{Duration, Instant};

/// Something due at a wake-up, in the order the session handles them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// The requested duration is over.
    End,
    /// The grace period starts: new allocations are no longer recorded.
    Grace,
    /// Time for a progress update (scheduled at this instant).
    Progress(Instant),
    /// Time for a snapshot (scheduled at this instant).
    Snapshot(Instant),
}

/// The timers of one session.
#[derive(Clone, Debug)]
pub struct Schedule {
    started: Instant,
    /// `None`: runs until a signal.
    end: Option<Instant>,
    grace_at: Option<Instant>,
    grace_begun: Option<Instant>,
    interval: Option<Duration>,
    next_snapshot: Option<Instant>,
    progress_every: Option<Duration>,
    next_progress: Option<Instant>,
}

impl Schedule {
    /// A session started at `started` that lasts `duration` (`None`: until a signal), whose
    /// last `grace` records no new allocations (zero: none), with a snapshot every `interval`
    /// and a progress update every `progress_every`.
    pub fn new(
        started: Instant,
        duration: Option<Duration>,
        grace: Duration,
        interval: Option<Duration>,
        progress_every: Option<Duration>,
    ) -> Self {
        let end = duration.map(|d| started + d);
        Schedule {
            started,
            end,
            grace_at: end.filter(|_| !grace.is_zero()).map(|e| e - grace),
            grace_begun: None,
            interval,
            next_snapshot: interval.map(|i| started + i),
            progress_every,
            next_progress: progress_every.map(|e| started + e),
        }
    }

    /// The earliest pending event; `None`: nothing but a signal can wake the session.
    pub fn wake(&self) -> Option<Instant> {
        let grace = self.grace_at.filter(|_| self.grace_begun.is_none());
        [self.end, grace, self.next_progress, self.next_snapshot]
            .into_iter()
            .flatten()
            .min()
    }

    /// What is due at `now`: [`Due::End`] alone once the session is over, else the grace
    /// start, a progress update and a snapshot, each if its time has come.
    pub fn due(&self, now: Instant) -> Vec<Due> {
        if self.end.is_some_and(|e| now >= e) {
            return vec![Due::End];
        }
        let mut due = Vec::new();
        if self.grace_begun.is_none() && self.grace_at.is_some_and(|g| now >= g) {
            due.push(Due::Grace);
        }
        if let Some(p) = self.next_progress.filter(|p| now >= *p) {
            due.push(Due::Progress(p));
        }
        if let Some(n) = self.next_snapshot.filter(|n| now >= *n) {
            due.push(Due::Snapshot(n));
        }
        due
    }

    /// The first snapshot comes `delay` after the start instead of one interval after it
    /// (`memtrace serve` publishes one right away).
    pub fn first_snapshot_after(mut self, delay: Duration) -> Self {
        if self.interval.is_some() {
            self.next_snapshot = Some(self.started + delay);
        }
        self
    }

    /// The grace period started at `now`.
    pub fn grace_started(&mut self, now: Instant) {
        self.grace_begun = Some(now);
    }

    /// A progress update scheduled at `at` was shown at `now`, after reading the maps took
    /// `read_time`: the next one comes one period later, and never sooner than ten times the
    /// read time (reading costs more with a large stack table: at most a tenth of the time goes
    /// to it).
    pub fn progress_done(&mut self, at: Instant, now: Instant, read_time: Duration) {
        self.next_progress = self
            .progress_every
            .map(|e| at.max(now) + e.max(read_time * 10));
    }

    /// The snapshot scheduled at `at` was taken at `now`: the next is one interval later; a
    /// snapshot that took longer than an interval skips the ones it overran (no catch-up
    /// burst).
    pub fn snapshot_done(&mut self, at: Instant, now: Instant) {
        let Some(interval) = self.interval.filter(|i| !i.is_zero()) else {
            self.next_snapshot = None;
            return;
        };
        let mut next = at + interval;
        while next <= now {
            next += interval;
        }
        self.next_snapshot = Some(next);
    }

    /// When the grace period began, if it did.
    pub fn grace_begun(&self) -> Option<Instant> {
        self.grace_begun
    }

    /// Whether the session was to have a grace period.
    pub fn has_grace(&self) -> bool {
        self.grace_at.is_some()
    }

    pub fn started(&self) -> Instant {
        self.started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_plain_session_wakes_only_at_its_end() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, Some(30 * S), Duration::ZERO, None, None);
        assert_eq!(s.wake(), Some(t0 + 30 * S));
        assert!(s.due(t0 + 29 * S).is_empty());
        assert_eq!(s.due(t0 + 30 * S), vec![Due::End]);
        assert!(!s.has_grace());
    }

    #[test]
    fn grace_progress_and_snapshots_interleave() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, Some(30 * S), 6 * S, Some(10 * S), Some(3 * S));
        // Progress first (3 s), then ... the snapshot at 10 s, grace at 24 s, end at 30 s.
        assert_eq!(s.wake(), Some(t0 + 3 * S));
        assert_eq!(s.due(t0 + 3 * S), vec![Due::Progress(t0 + 3 * S)]);
        s.progress_done(t0 + 3 * S, t0 + 3 * S, Duration::from_millis(1));
        assert_eq!(s.wake(), Some(t0 + 6 * S));
        // Woken late at 10.5 s: progress (due at 9 s) and the snapshot, in that order.
        let t = t0 + Duration::from_millis(10_500);
        s.progress_done(t0 + 6 * S, t0 + 6 * S, Duration::ZERO);
        assert_eq!(
            s.due(t),
            vec![Due::Progress(t0 + 9 * S), Due::Snapshot(t0 + 10 * S)]
        );
        s.progress_done(t0 + 9 * S, t, Duration::ZERO);
        s.snapshot_done(t0 + 10 * S, t);
        assert_eq!(s.wake(), Some(t0 + Duration::from_millis(13_500)));
        // Grace at 24 s, once.
        assert_eq!(s.due(t0 + 24 * S).first(), Some(&Due::Grace));
        s.grace_started(t0 + 24 * S);
        assert!(!s.due(t0 + 24 * S).contains(&Due::Grace));
        assert_eq!(s.grace_begun(), Some(t0 + 24 * S));
        // The end wins over everything else.
        assert_eq!(s.due(t0 + 31 * S), vec![Due::End]);
    }

    #[test]
    fn slow_snapshots_skip_what_they_overran() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, Some(600 * S), Duration::ZERO, Some(2 * S), None);
        // The snapshot due at 2 s took until 7.5 s: the next is at 8 s, not 4 s and 6 s.
        s.snapshot_done(t0 + 2 * S, t0 + Duration::from_millis(7_500));
        assert_eq!(s.wake(), Some(t0 + 8 * S));
        // Exactly on time: one interval later.
        s.snapshot_done(t0 + 8 * S, t0 + 8 * S);
        assert_eq!(s.wake(), Some(t0 + 10 * S));
    }

    #[test]
    fn slow_progress_reads_back_off() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, Some(600 * S), Duration::ZERO, None, Some(S));
        // Reading the maps took 400 ms: the next update is 4 s later, not 1 s.
        s.progress_done(t0 + S, t0 + S, Duration::from_millis(400));
        assert_eq!(s.wake(), Some(t0 + 5 * S));
        // Fast again: back to every second.
        s.progress_done(t0 + 5 * S, t0 + 5 * S, Duration::from_millis(1));
        assert_eq!(s.wake(), Some(t0 + 6 * S));
    }

    #[test]
    fn a_session_without_end_waits_for_a_signal_or_its_snapshots() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, None, 6 * S, None, None);
        // No end: no grace either, nothing to wake for.
        assert_eq!(s.wake(), None);
        assert!(s.due(t0 + 10_000 * S).is_empty());
        let s = Schedule::new(t0, None, Duration::ZERO, Some(60 * S), None);
        assert_eq!(s.wake(), Some(t0 + 60 * S));
    }

    #[test]
    fn a_first_snapshot_right_away() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, None, Duration::ZERO, Some(60 * S), None)
            .first_snapshot_after(Duration::ZERO);
        assert_eq!(s.due(t0), vec![Due::Snapshot(t0)]);
        s.snapshot_done(t0, t0 + Duration::from_millis(300));
        assert_eq!(s.wake(), Some(t0 + 60 * S));
        // Without snapshots there is nothing to bring forward.
        let s = Schedule::new(t0, None, Duration::ZERO, None, None)
            .first_snapshot_after(Duration::ZERO);
        assert_eq!(s.wake(), None);
    }

    #[test]
    fn grace_as_long_as_the_session_starts_at_once() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, Some(10 * S), 10 * S, None, None);
        assert_eq!(s.wake(), Some(t0));
        assert_eq!(s.due(t0), vec![Due::Grace]);
    }
}
