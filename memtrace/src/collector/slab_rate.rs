//! The adaptive slab sample. Slab objects are recorded when a hash of their address falls in
//! the sample (`memtrace_common::sampled` with the rate in `SLAB_SAMPLING`). A thread watches
//! how full the object table is; when it passes [`HIGH_WATER`] (or the programs found it full
//! and doubled the rate themselves) the rate doubles: the addresses sampled at the new rate are
//! a subset of the old ones, so the records outside the new sample are taken out of the table
//! ("thinned") and their bytes off their stacks. Every remaining record is then in the sample
//! of the final rate, and the outstanding slab figures are the records scaled by it: an
//! estimate instead of memory lost to a full table.
//!
//! The programs add an allocation's bytes to its stack's outstanding total in the kernel; a
//! thinned record's bytes are kept here (by `STACK_AGG` slot) and taken off when the maps are
//! read (user space cannot update those totals atomically with the programs).

use std::{
    collections::HashMap,
    os::fd::{AsFd as _, AsRawFd as _},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, MapError, PerCpuArray};
use memtrace_common::{maps, sampled, slab_sampling, Counter, Kind, ObjKey, ObjRecord};

use super::syscalls;
use crate::{loader::Tracer, model::RateChange};

/// The object table counts as nearly full at this share of its entries (percent): the rate
/// doubles, and thinning leaves about half of them.
pub const HIGH_WATER_PERCENT: u64 = 50;
/// How often the thread looks at the table.
const POLL: Duration = Duration::from_millis(20);
/// After the rate is raised, programs that read the old rate may still be recording: wait this
/// long before thinning (the final read thins again anyway).
const SETTLE: Duration = Duration::from_millis(5);
/// The highest rate (the programs stop doubling there too).
pub const MAX_EVERY: u32 = 1 << 20;
/// Records removed between two merges of the thinned totals into the shared state.
const MERGE_EVERY: usize = 4096;

/// What the slab sample looks like now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RateState {
    /// The rate the session started with.
    pub start: u32,
    /// The rate every remaining record is sampled at.
    pub every: u32,
    /// When the rate doubled (seconds since the start of the session).
    pub changes: Vec<RateChange>,
    /// `STACK_AGG` index → (bytes, count) of the records thinned out.
    pub thinned: HashMap<u32, (u64, u64)>,
    /// Records thinned out.
    pub thinned_records: u64,
    /// The last thing that went wrong, if anything (the session goes on; the final read thins
    /// what is left).
    pub problem: Option<String>,
}

impl RateState {
    /// A state for a session that does not trace slab, or before anything changed.
    pub fn fixed(every: u32) -> RateState {
        RateState {
            start: every,
            every,
            ..RateState::default()
        }
    }

    fn add_thinned(&mut self, index: u32, bytes: u64) {
        let e = self.thinned.entry(index).or_default();
        e.0 = e.0.saturating_add(bytes);
        e.1 = e.1.saturating_add(1);
        self.thinned_records += 1;
    }
}

fn lock(m: &Mutex<RateState>) -> MutexGuard<'_, RateState> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The thread that keeps the slab sample within the object table.
pub struct SlabRate {
    shared: Arc<Mutex<RateState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SlabRate {
    /// Starts watching the object table of `tracer` (a session that started at `started`).
    pub fn start(tracer: &Tracer, started: Instant) -> anyhow::Result<SlabRate> {
        let shared = Arc::new(Mutex::new(RateState::fixed(tracer.slab_sample_start)));
        let stop = Arc::new(AtomicBool::new(false));
        let mut watcher = Watcher {
            objects: own_map(tracer, maps::OBJECTS)?,
            counters: own_map(tracer, maps::COUNTERS)?,
            sampling: own_map(tracer, maps::SLAB_SAMPLING)?,
            capacity: u64::from(tracer.object_capacity.max(1)),
            stride: tracer.config.agg_stride.max(1),
            started,
            shared: Arc::clone(&shared),
        };
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("slab-rate".into())
            .spawn(move || {
                while !stop_flag.load(Ordering::Relaxed) {
                    std::thread::sleep(POLL);
                    if let Err(e) = watcher.step() {
                        lock(&watcher.shared).problem = Some(format!("{e:#}"));
                        // Do not spin on a persistent error.
                        std::thread::sleep(POLL * 10);
                    }
                }
            })
            .context("starting the slab sampling thread")?;
        Ok(SlabRate {
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// The state now (for progress and snapshots).
    pub fn state(&self) -> RateState {
        lock(&self.shared).clone()
    }

    /// Stops the thread and returns the final state.
    pub fn stop(mut self) -> RateState {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // The thread only ends by seeing the flag; a panic there leaves the state usable.
            let _ = t.join();
        }
        lock(&self.shared).clone()
    }
}

impl Drop for SlabRate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A map of the tracer, opened again through a duplicate of its fd (the thread owns it).
fn own_map(tracer: &Tracer, name: &str) -> anyhow::Result<Map> {
    let map = tracer
        .ebpf
        .map(name)
        .with_context(|| format!("the eBPF object has no map {name}"))?;
    let data = match map {
        Map::Array(d) | Map::PerCpuArray(d) | Map::HashMap(d) => d,
        _ => anyhow::bail!("map {name} is not of the type the slab sampler expects"),
    };
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .with_context(|| format!("duplicating the fd of map {name}"))?;
    let data = MapData::from_fd(fd).with_context(|| format!("opening map {name} again"))?;
    Map::from_map_data(data).with_context(|| format!("opening map {name} again"))
}

struct Watcher {
    objects: Map,
    counters: Map,
    sampling: Map,
    capacity: u64,
    stride: u32,
    started: Instant,
    shared: Arc<Mutex<RateState>>,
}

impl Watcher {
    fn step(&mut self) -> anyhow::Result<()> {
        let kernel = {
            let sampling: Array<&MapData, u64> =
                Array::try_from(&self.sampling).context("SLAB_SAMPLING map")?;
            sampling
                .get(&slab_sampling::EVERY, 0)
                .context("reading SLAB_SAMPLING")?
        };
        let kernel = u32::try_from(kernel).unwrap_or(MAX_EVERY).max(1);
        let (current, thinned) = {
            let s = lock(&self.shared);
            (s.every.max(1), s.thinned_records)
        };
        let live = self.live_records(thinned)?;
        let mut target = kernel.max(current);
        if live * 100 >= self.capacity * HIGH_WATER_PERCENT {
            target = target.max(current.saturating_mul(2));
        }
        let target = target.min(MAX_EVERY);
        if target <= current {
            return Ok(());
        }
        if target > kernel {
            let mut sampling: Array<&mut MapData, u64> =
                Array::try_from(&mut self.sampling).context("SLAB_SAMPLING map")?;
            sampling
                .set(slab_sampling::EVERY, u64::from(target), 0)
                .context("raising the slab sampling rate (SLAB_SAMPLING)")?;
        }
        std::thread::sleep(SETTLE);
        let thin_result = self.thin(target);
        let mut s = lock(&self.shared);
        s.every = target;
        s.changes.push(RateChange {
            at_secs: (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            every: target,
        });
        thin_result
    }

    /// Records in the object table now, from the programs' counters and what was thinned.
    fn live_records(&self, thinned: u64) -> anyhow::Result<u64> {
        let counters: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(&self.counters).context("COUNTERS map")?;
        let sum = |c: Counter| -> anyhow::Result<u64> {
            Ok(counters
                .get(&(c as u32), 0)
                .with_context(|| format!("reading counter {}", c.name()))?
                .iter()
                .sum())
        };
        let tracked = sum(Counter::ObjAllocsTracked)?;
        let gone = sum(Counter::ObjFreesMatched)?
            .saturating_add(sum(Counter::ObjStaleReplaced)?)
            .saturating_add(thinned);
        Ok(tracked.saturating_sub(gone))
    }

    /// Takes the slab records outside the sample of rate `every` out of the table.
    fn thin(&mut self, every: u32) -> anyhow::Result<()> {
        let Map::HashMap(data) = &self.objects else {
            anyhow::bail!("OBJECTS is not a hash map");
        };
        let entries =
            syscalls::lookup_batch::<ObjKey, ObjRecord>(data.fd().as_fd().as_raw_fd(), 16_384)
                .context("reading OBJECTS to thin the slab sample")?;
        let shared = &self.shared;
        let stride = self.stride;
        let mut objects: BpfHashMap<&mut MapData, ObjKey, ObjRecord> =
            BpfHashMap::try_from(&mut self.objects).context("OBJECTS map")?;
        let mut removed: Vec<(u32, u64)> = Vec::new();
        for (key, rec) in entries {
            if key.kind != Kind::Slab as u32 || sampled(key.addr, every) {
                continue;
            }
            match objects.remove(&key) {
                Ok(()) => removed.push((Kind::Slab as u32 * stride + rec.stack_id, rec.bytes)),
                // Freed meanwhile: its free took its bytes off.
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => {
                    merge(shared, &mut removed);
                    return Err(e).context("removing a thinned slab record from OBJECTS");
                }
            }
            if removed.len() >= MERGE_EVERY {
                merge(shared, &mut removed);
            }
        }
        merge(shared, &mut removed);
        Ok(())
    }
}

/// Adds the thinned records (`STACK_AGG` index, bytes) to the shared state.
fn merge(shared: &Mutex<RateState>, removed: &mut Vec<(u32, u64)>) {
    let mut s = lock(shared);
    for (index, bytes) in removed.drain(..) {
        s.add_thinned(index, bytes);
    }
}

/// Takes the slab records outside the sample of rate `every` out of `objects` (as read from
/// the table after the programs were detached: records made by programs that read an older
/// rate) and their bytes off `aggs` (by `STACK_AGG` index); returns how many.
pub fn thin_records(
    objects: &mut Vec<(ObjKey, ObjRecord)>,
    every: u32,
    stride: u32,
    mut take_off: impl FnMut(u32, u64),
) -> u64 {
    let before = objects.len();
    objects.retain(|(key, rec)| {
        let keep = key.kind != Kind::Slab as u32 || sampled(key.addr, every);
        if !keep {
            take_off(Kind::Slab as u32 * stride + rec.stack_id, rec.bytes);
        }
        keep
    });
    (before - objects.len()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slab(addr: u64, stack_id: u32, bytes: u64) -> (ObjKey, ObjRecord) {
        (
            ObjKey {
                addr,
                kind: Kind::Slab as u32,
                _pad: 0,
            },
            ObjRecord {
                stack_id,
                bytes,
                ..ObjRecord::default()
            },
        )
    }

    #[test]
    fn thinning_keeps_the_subset_sampled_at_the_new_rate() {
        // Addresses sampled at 4: about half are still sampled at 8, all of those at 4.
        let base = 0xffff_8880_1234_0000u64;
        let mut objects: Vec<(ObjKey, ObjRecord)> = (0..40_000u64)
            .map(|i| base + i * 64)
            .filter(|a| sampled(*a, 4))
            .map(|a| slab(a, 3, 64))
            .collect();
        objects.push((
            ObjKey {
                addr: base + 8,
                kind: Kind::Percpu as u32,
                _pad: 0,
            },
            ObjRecord::default(),
        ));
        let before = objects.len() as u64;
        let mut taken: HashMap<u32, (u64, u64)> = HashMap::new();
        let n = thin_records(&mut objects, 8, 100, |i, b| {
            let e = taken.entry(i).or_default();
            e.0 += b;
            e.1 += 1;
        });
        assert_eq!(n + objects.len() as u64, before);
        assert!(objects
            .iter()
            .all(|(k, _)| k.kind != Kind::Slab as u32 || sampled(k.addr, 8)));
        // Percpu records are not slab's to thin.
        assert!(objects.iter().any(|(k, _)| k.kind == Kind::Percpu as u32));
        let half = (before - 1) as f64 / 2.0;
        assert!(
            (n as f64 - half).abs() < half * 0.1,
            "thinned {n} of {before}"
        );
        assert_eq!(taken.get(&(100 + 3)), Some(&(n * 64, n)));
    }

    #[test]
    fn rate_state_sums_what_was_thinned() {
        let mut s = RateState::fixed(16);
        s.add_thinned(7, 100);
        s.add_thinned(7, 28);
        s.add_thinned(9, 1);
        assert_eq!(s.thinned.get(&7), Some(&(128, 2)));
        assert_eq!(s.thinned_records, 3);
        assert_eq!((s.start, s.every), (16, 16));
    }
}
