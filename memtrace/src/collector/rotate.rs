//! Stack table rotation, for sessions that run for weeks (`memtrace serve`).
//!
//! The kernel never deletes a stack map entry by itself, and `bpf_get_stackid` (flags 0, never
//! `BPF_F_REUSE_STACKID`) refuses a stack whose bucket holds another one: over weeks the
//! buckets fill with stacks that stopped allocating long ago, and new stacks go to the second
//! map, then under "stack unavailable". So when a snapshot finds either map a quarter full,
//! every *idle* slot (nothing outstanding of any kind, no allocation since the previous
//! snapshot) is retired: its slab cache name and its stack are deleted, and the bucket takes
//! the next stack that hashes there.
//!
//! Nothing the user saw goes away. A retired slot's allocated totals are kept under its frames
//! ([`StackRotation`]'s book) and added to the live slot holding the same stack, or shown under
//! a stable id of their own above the kernel's slots, so `allocated` counters never go down.
//! The aggregate slot itself is never written (the programs add to it concurrently): its
//! totals at retirement become a baseline subtracted from every later read.
//!
//! The aggregates are read again right before the deletions (a slot that allocated since the
//! snapshot is kept). One race remains, and is counted: an allocation from the retired stack
//! between that check and the deletion is counted in the slot's next epoch, under whichever
//! stack takes the bucket next.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use aya::maps::{Array, PerCpuArray, PerCpuValues, StackTraceMap};
use memtrace_common::{control, maps, Config, Kind, SlabStackCache, SlabStackWay, StackAgg};

use super::{locate_slot, map_mut, read_stack_aggs, StackSlot};
use crate::{
    loader::Tracer,
    model::{RawSession, StackRotationStats},
};

/// Retired stacks kept with their frames at most; past as many as the stack table holds (up
/// to this), retirements are folded into one frameless entry per kind (counted). Each kept
/// one is a stack of every report: memtrace's memory follows their number, so it is bounded
/// by the table's size, not by how long the session runs.
pub const MAX_RETIRED: usize = 16_384;

/// Rotate when a map's occupied buckets reach 1/`PRESSURE` of its size: a new stack then
/// collides with probability 1/`PRESSURE` or more.
const PRESSURE: u64 = 4;

/// What identifies a retired stack.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RetiredKey {
    kind: Kind,
    /// Instruction pointers, innermost first (empty: the folded entry).
    ips: Vec<u64>,
    cache: Option<String>,
}

/// Allocated totals of a retired stack and the id it is shown under when no live slot holds it.
#[derive(Clone, Copy, Debug, Default)]
struct RetiredTotals {
    id: u32,
    bytes: u64,
    count: u64,
}

/// Which slots a rotation retires.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RotationPlan {
    /// Idle slots to retire, ascending.
    pub retire: Vec<u32>,
}

/// Per stack slot: allocations of every kind in the slot's epoch, and whether anything is
/// outstanding.
fn slot_states(aggs: &[(Kind, u32, StackAgg)], none: u32) -> HashMap<u32, (u64, bool)> {
    let mut states: HashMap<u32, (u64, bool)> = HashMap::new();
    for (_, slot, agg) in aggs.iter().filter(|(_, s, _)| *s < none) {
        let e = states.entry(*slot).or_default();
        e.0 = e.0.saturating_add(agg.allocated_count);
        e.1 |= agg.outstanding_bytes != 0 || agg.outstanding_count != 0;
    }
    states
}

/// The rotation for one snapshot: nothing while both maps are below a quarter full; otherwise
/// every slot with nothing outstanding whose allocation count has not moved since `previous`
/// (a slot first seen now is not idle yet).
pub fn plan(
    aggs: &[(Kind, u32, StackAgg)],
    previous: &HashMap<u32, u64>,
    config: &Config,
) -> RotationPlan {
    let states = slot_states(aggs, config.stack_none_id);
    let main = states
        .keys()
        .filter(|s| **s < config.stack_alt_base)
        .count() as u64;
    let alt = states.len() as u64 - main;
    let alt_size = u64::from(config.stack_none_id - config.stack_alt_base);
    let pressed = main * PRESSURE >= u64::from(config.stack_alt_base).max(1)
        || (alt_size > 0 && alt * PRESSURE >= alt_size);
    if !pressed {
        return RotationPlan::default();
    }
    let mut retire: Vec<u32> = states
        .iter()
        .filter(|(slot, (count, busy))| !busy && previous.get(slot) == Some(count))
        .map(|(slot, _)| *slot)
        .collect();
    retire.sort_unstable();
    RotationPlan { retire }
}

/// The rotation state of a session: baselines of recycled slots, the retired stacks' book,
/// and what was done.
#[derive(Debug)]
pub struct StackRotation {
    /// Whether slots are retired at all (sessions that take snapshots).
    enabled: bool,
    /// (kind, slot) → allocated (bytes, count) of the slot's earlier epochs.
    baselines: HashMap<(Kind, u32), (u64, u64)>,
    /// Slot → allocations of every kind in its epoch, at the previous snapshot.
    previous: HashMap<u32, u64>,
    retired: HashMap<RetiredKey, RetiredTotals>,
    /// Retired stacks kept with their frames at most (the stack table's size, at most
    /// [`MAX_RETIRED`]).
    max_retired: usize,
    /// Next id for a retired stack shown on its own.
    next_id: u32,
    stats: StackRotationStats,
}

impl StackRotation {
    /// Rotation for a tracer configured as `config`; `enabled` false only rebases nothing and
    /// keeps nothing (a session without snapshots never rotates).
    pub fn new(config: &Config, enabled: bool) -> StackRotation {
        StackRotation {
            enabled,
            baselines: HashMap::new(),
            previous: HashMap::new(),
            retired: HashMap::new(),
            max_retired: (config.stack_alt_base as usize).clamp(1, MAX_RETIRED),
            next_id: config.stack_none_id.saturating_add(1),
            stats: StackRotationStats::default(),
        }
    }

    /// What rotation did so far.
    pub fn stats(&self) -> StackRotationStats {
        StackRotationStats {
            retired_kept: self.retired.len() as u64,
            ..self.stats.clone()
        }
    }

    /// Brings a freshly collected session to the slots' current epochs (earlier epochs'
    /// allocated totals subtracted), retires idle slots when the maps fill up (with `tracer`
    /// still attached), and adds the retired stacks' totals back under their frames.
    pub fn process(&mut self, raw: &mut RawSession, tracer: Option<&mut Tracer>) {
        self.rebase(raw);
        if let Some(tracer) = tracer.filter(|_| self.enabled) {
            if let Err(e) = self.retire(raw, tracer) {
                // A rotation that fails leaves the maps as they were: counted, not fatal.
                self.stats.failures += 1;
                self.stats.last_error = Some(format!("{e:#}"));
            }
        }
        self.fold(raw);
    }

    fn rebase(&self, raw: &mut RawSession) {
        if self.baselines.is_empty() {
            return;
        }
        for (kind, slot, agg) in &mut raw.aggs {
            if let Some((bytes, count)) = self.baselines.get(&(*kind, *slot)) {
                agg.allocated_bytes = agg.allocated_bytes.saturating_sub(*bytes);
                agg.allocated_count = agg.allocated_count.saturating_sub(*count);
            }
        }
        raw.aggs.retain(|(_, _, a)| {
            a.allocated_count != 0 || a.outstanding_count != 0 || a.outstanding_bytes != 0
        });
    }

    fn retire(&mut self, raw: &mut RawSession, tracer: &mut Tracer) -> anyhow::Result<()> {
        let config = tracer.config;
        let mut plan = plan(&raw.aggs, &self.previous, &config);
        let states = slot_states(&raw.aggs, config.stack_none_id);
        self.previous = states.iter().map(|(s, (n, _))| (*s, *n)).collect();
        if plan.retire.is_empty() {
            return Ok(());
        }
        // The maps were read a while ago (records, stacks): a slot that allocated since then
        // is not idle. Read the aggregates again right before deleting (a few ms for every
        // slot) so that the window for a race is the deletion loop only.
        let expected: HashMap<(Kind, u32), u64> = raw
            .aggs
            .iter()
            .map(|(k, s, a)| {
                let base = self.baselines.get(&(*k, *s)).map_or(0, |b| b.1);
                ((*k, *s), base.saturating_add(a.allocated_count))
            })
            .collect();
        let stride = config.agg_stride.max(1);
        let mut woke = HashSet::new();
        for (index, agg) in read_stack_aggs(tracer, true)? {
            let slot = index % stride;
            let Some(kind) = Kind::from_u32(index / stride) else {
                continue;
            };
            let busy = agg.outstanding_bytes != 0 || agg.outstanding_count != 0;
            let moved = agg.allocated_count != expected.get(&(kind, slot)).copied().unwrap_or(0);
            if busy || moved {
                woke.insert(slot);
            }
        }
        plan.retire.retain(|s| !woke.contains(s));
        if plan.retire.is_empty() {
            return Ok(());
        }
        self.stats.rotations += 1;
        let retire: HashSet<u32> = plan.retire.iter().copied().collect();

        // The cache name first: a stack that takes the bucket after the deletion must not
        // inherit it (the programs name a slot only while its name is empty).
        if tracer.traces(Kind::Slab) {
            let m = map_mut(&mut tracer.ebpf, maps::CACHE_NAMES)?;
            let mut names: Array<_, [u8; 32]> = Array::try_from(m).context("CACHE_NAMES map")?;
            let len = names.len();
            for slot in plan.retire.iter().filter(|s| **s < len) {
                names
                    .set(*slot, [0u8; 32], 0)
                    .with_context(|| format!("clearing CACHE_NAMES[{slot}]"))?;
            }
            // The per-call-site stack cache of each CPU (--slab-stack-every) reuses a stack id
            // without capturing it again: a way naming a retired slot would put later
            // allocations under a deleted stack, or under the next stack of its bucket.
            forget_cached_stacks(tracer, &retire)?;
        }
        // Pages: the page table stores stack slots, but a retired slot has no live entry (its
        // outstanding bytes are 0: every entry of a slot is a page in its aggregate). What
        // still names the slot: the gfp flags of its first allocation (the next stack in the
        // slot must not be classified by them) and each CPU's movable stack cache.
        if tracer.traces(Kind::Page) {
            clear_stack_gfp(tracer, &plan.retire)?;
            forget_cached_page_stacks(tracer)?;
        }
        for (name, alt) in [(maps::STACKS, false), (maps::STACKS_ALT, true)] {
            let m = map_mut(&mut tracer.ebpf, name)?;
            let mut stacks = StackTraceMap::try_from(m).with_context(|| format!("{name} map"))?;
            for slot in &plan.retire {
                let id = match (locate_slot(*slot, &config), alt) {
                    (Some(StackSlot::Main(id)), false) | (Some(StackSlot::Alt(id)), true) => id,
                    _ => continue,
                };
                // Already gone (never stored, or removed) is as good as removed.
                let _ = stacks.remove(&id);
            }
        }

        // The retired epochs move into the book and the baselines.
        let mut kept = Vec::new();
        for (kind, slot, agg) in std::mem::take(&mut raw.aggs) {
            if !retire.contains(&slot) {
                kept.push((kind, slot, agg));
                continue;
            }
            let b = self.baselines.entry((kind, slot)).or_default();
            b.0 = b.0.saturating_add(agg.allocated_bytes);
            b.1 = b.1.saturating_add(agg.allocated_count);
            let key = RetiredKey {
                kind,
                ips: raw.stacks.get(&slot).cloned().unwrap_or_default(),
                cache: raw.cache_names.get(&slot).cloned(),
            };
            self.book(key, agg.allocated_bytes, agg.allocated_count);
        }
        raw.aggs = kept;
        for slot in &plan.retire {
            raw.stacks.remove(slot);
            raw.cache_names.remove(slot);
            self.previous.remove(slot);
        }
        self.stats.stacks_retired += plan.retire.len() as u64;

        // An allocation between the check and the deletion: its slot's count moved.
        let now = read_stack_aggs(tracer, true)?;
        let mut raced = HashSet::new();
        for (index, agg) in now {
            let slot = index % stride;
            if !retire.contains(&slot) {
                continue;
            }
            let Some(kind) = Kind::from_u32(index / stride) else {
                continue;
            };
            let base = self.baselines.get(&(kind, slot)).map_or(0, |b| b.1);
            if agg.allocated_count != base {
                raced.insert(slot);
            }
        }
        self.stats.races += raced.len() as u64;
        Ok(())
    }

    fn book(&mut self, key: RetiredKey, bytes: u64, count: u64) {
        if bytes == 0 && count == 0 {
            return;
        }
        let key = if self.retired.contains_key(&key) || self.retired.len() < self.max_retired {
            key
        } else {
            self.stats.folded += 1;
            RetiredKey {
                kind: key.kind,
                ips: Vec::new(),
                cache: None,
            }
        };
        let next_id = &mut self.next_id;
        let t = self.retired.entry(key).or_insert_with(|| {
            let id = *next_id;
            *next_id = next_id.saturating_add(1);
            RetiredTotals {
                id,
                ..Default::default()
            }
        });
        t.bytes = t.bytes.saturating_add(bytes);
        t.count = t.count.saturating_add(count);
    }

    /// Adds every retired stack's totals to the live slot with the same kind, frames and cache,
    /// or under the retired stack's own id.
    fn fold(&self, raw: &mut RawSession) {
        if self.retired.is_empty() {
            return;
        }
        let mut live: HashMap<(Kind, &[u64], Option<&str>), usize> = HashMap::new();
        for (i, (kind, slot, _)) in raw.aggs.iter().enumerate() {
            if *slot >= raw.stack_none_id {
                continue;
            }
            if let Some(ips) = raw.stacks.get(slot) {
                live.insert(
                    (
                        *kind,
                        ips.as_slice(),
                        raw.cache_names.get(slot).map(String::as_str),
                    ),
                    i,
                );
            }
        }
        let mut merged = Vec::new();
        let mut own = Vec::new();
        for (key, t) in &self.retired {
            match live.get(&(key.kind, key.ips.as_slice(), key.cache.as_deref())) {
                Some(i) if !key.ips.is_empty() => merged.push((*i, t.bytes, t.count)),
                _ => own.push((key, *t)),
            }
        }
        for (i, bytes, count) in merged {
            let agg = &mut raw.aggs[i].2;
            agg.allocated_bytes = agg.allocated_bytes.saturating_add(bytes);
            agg.allocated_count = agg.allocated_count.saturating_add(count);
        }
        own.sort_by_key(|(_, t)| t.id);
        for (key, t) in own {
            raw.aggs.push((
                key.kind,
                t.id,
                StackAgg {
                    allocated_bytes: t.bytes,
                    allocated_count: t.count,
                    ..Default::default()
                },
            ));
            raw.stacks.insert(t.id, key.ips.clone());
            if let Some(cache) = &key.cache {
                raw.cache_names.insert(t.id, cache.clone());
            }
        }
    }
}

/// Empties the ways of every CPU's slab stack cache (`SLAB_STACK_CACHE`) that hold a retired
/// slot, so that the next allocation from their call site captures its stack again.
fn forget_cached_stacks(tracer: &mut Tracer, retire: &HashSet<u32>) -> anyhow::Result<()> {
    edit_per_cpu(
        tracer,
        maps::SLAB_STACK_CACHE,
        |cpu: &mut SlabStackCache| {
            let mut changed = false;
            for way in &mut cpu.ways {
                if way.call_site != 0 && retire.contains(&way.stack_id) {
                    *way = SlabStackWay::default();
                    changed = true;
                }
            }
            changed
        },
    )
}

/// Clears the `STACK_GFP` slots of retired stack slots: the programs store the gfp flags of a
/// slot's first allocation only while its value is 0.
fn clear_stack_gfp(tracer: &mut Tracer, retire: &[u32]) -> anyhow::Result<()> {
    let Some(m) = tracer.ebpf.map_mut(maps::STACK_GFP) else {
        return Ok(());
    };
    let mut gfp: Array<_, u64> = Array::try_from(m).context("STACK_GFP map")?;
    let len = gfp.len();
    for slot in retire.iter().filter(|s| **s < len) {
        gfp.set(*slot, 0, 0)
            .with_context(|| format!("clearing STACK_GFP[{slot}]"))?;
    }
    Ok(())
}

/// Makes every CPU's movable page stack cache (`STACK_CACHE`) capture its stack again: the
/// programs reuse a cached stack only while its generation is the current one
/// (`control::PAGE_STACK_GENERATION`, raised here), and add its pending counts to its slot
/// first. The caches are not written from here: a program adding to a cache's pending
/// counts between a read and a write back would lose them.
fn forget_cached_page_stacks(tracer: &mut Tracer) -> anyhow::Result<()> {
    let Some(m) = tracer.ebpf.map_mut(maps::CONTROL) else {
        return Ok(());
    };
    let mut control: Array<_, u64> = Array::try_from(m).context("CONTROL map")?;
    let generation = control
        .get(&control::PAGE_STACK_GENERATION, 0)
        .context("reading CONTROL")?;
    control
        .set(
            control::PAGE_STACK_GENERATION,
            u64::from((generation as u32).wrapping_add(1)),
            0,
        )
        .context("writing CONTROL")?;
    Ok(())
}

/// Reads every CPU's value of the one-entry per-CPU map `name`, lets `edit` change it (true
/// when it did) and writes them back if any changed; nothing when the object has no such map.
/// A value a program changes between the read and the write is put back as it was read: the
/// caches edited here then hold a stack id still live (or cleared here), never a retired one.
pub(super) fn edit_per_cpu<T: aya::Pod>(
    tracer: &mut Tracer,
    name: &str,
    mut edit: impl FnMut(&mut T) -> bool,
) -> anyhow::Result<()> {
    let Some(m) = tracer.ebpf.map_mut(name) else {
        return Ok(());
    };
    let mut map: PerCpuArray<_, T> =
        PerCpuArray::try_from(m).with_context(|| format!("{name} map"))?;
    let mut values: Vec<T> = map
        .get(&0, 0)
        .with_context(|| format!("reading {name}"))?
        .iter()
        .copied()
        .collect();
    let mut changed = false;
    for v in &mut values {
        changed |= edit(v);
    }
    if changed {
        let values = PerCpuValues::try_from(values).with_context(|| format!("{name} values"))?;
        map.set(0, values, 0)
            .with_context(|| format!("writing {name}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            stack_alt_base: 8,
            stack_none_id: 12,
            agg_stride: 13,
            ..Config::zeroed()
        }
    }

    fn agg(out_bytes: u64, out_count: u64, bytes: u64, count: u64) -> StackAgg {
        StackAgg {
            outstanding_bytes: out_bytes,
            outstanding_count: out_count,
            allocated_bytes: bytes,
            allocated_count: count,
        }
    }

    #[test]
    fn no_rotation_below_a_quarter() {
        let aggs = vec![(Kind::Page, 0, agg(0, 0, 4096, 1))];
        let previous = HashMap::from([(0, 1)]);
        assert_eq!(plan(&aggs, &previous, &config()), RotationPlan::default());
    }

    #[test]
    fn idle_slots_retire_under_pressure() {
        let aggs = vec![
            // Idle: nothing outstanding, same count as before.
            (Kind::Page, 0, agg(0, 0, 4096, 1)),
            // Busy: outstanding bytes in another kind.
            (Kind::Page, 1, agg(0, 0, 4096, 1)),
            (Kind::Slab, 1, agg(64, 1, 64, 1)),
            // Allocated since the previous snapshot.
            (Kind::Page, 3, agg(0, 0, 8192, 2)),
            // First seen now.
            (Kind::Page, 4, agg(0, 0, 4096, 1)),
            // "Stack unavailable" is never retired.
            (Kind::Page, 12, agg(0, 0, 4096, 1)),
        ];
        let previous = HashMap::from([(0, 1), (1, 2), (3, 1), (12, 1)]);
        // 4 of 8 main buckets: pressed.
        assert_eq!(plan(&aggs, &previous, &config()).retire, vec![0]);
        // A quarter of the second map (1 of 4) is pressure too.
        let alt = vec![
            (Kind::Page, 9, agg(0, 0, 4096, 1)),
            (Kind::Page, 0, agg(0, 0, 4096, 1)),
        ];
        let previous = HashMap::from([(9, 1), (0, 1)]);
        assert_eq!(plan(&alt, &previous, &config()).retire, vec![0, 9]);
    }

    fn raw(aggs: Vec<(Kind, u32, StackAgg)>) -> RawSession {
        let mut raw = RawSession {
            stack_none_id: 12,
            aggs,
            ..Default::default()
        };
        for s in 0..12 {
            raw.stacks.insert(s, vec![0x1000 + u64::from(s), 0x2000]);
        }
        raw
    }

    /// Retires without kernel maps: what `retire` does after the deletions.
    fn retire_offline(rot: &mut StackRotation, raw: &mut RawSession, slots: &[u32]) {
        let retire: HashSet<u32> = slots.iter().copied().collect();
        let mut kept = Vec::new();
        for (kind, slot, agg) in std::mem::take(&mut raw.aggs) {
            if retire.contains(&slot) {
                let b = rot.baselines.entry((kind, slot)).or_default();
                b.0 += agg.allocated_bytes;
                b.1 += agg.allocated_count;
                let key = RetiredKey {
                    kind,
                    ips: raw.stacks[&slot].clone(),
                    cache: raw.cache_names.get(&slot).cloned(),
                };
                rot.book(key, agg.allocated_bytes, agg.allocated_count);
            } else {
                kept.push((kind, slot, agg));
            }
        }
        raw.aggs = kept;
        for s in slots {
            raw.stacks.remove(s);
        }
    }

    #[test]
    fn retired_totals_stay_and_the_slot_starts_over() {
        let mut rot = StackRotation::new(&config(), true);
        let mut first = raw(vec![(Kind::Page, 2, agg(0, 0, 3 * 4096, 3))]);
        rot.rebase(&mut first);
        retire_offline(&mut rot, &mut first, &[2]);
        rot.fold(&mut first);
        // Shown under a retired id above the kernel's slots, with its frames.
        let id = 13;
        assert_eq!(first.aggs, vec![(Kind::Page, id, agg(0, 0, 3 * 4096, 3))]);
        assert_eq!(first.stacks[&id], vec![0x1002, 0x2000]);

        // Slot 2 now holds another stack: the kernel's totals go on from the old ones.
        let mut second = raw(vec![(Kind::Page, 2, agg(4096, 1, 4 * 4096, 4))]);
        second.stacks.insert(2, vec![0x9999]);
        rot.rebase(&mut second);
        rot.fold(&mut second);
        assert!(second
            .aggs
            .contains(&(Kind::Page, 2, agg(4096, 1, 4096, 1))));
        assert!(second
            .aggs
            .contains(&(Kind::Page, id, agg(0, 0, 3 * 4096, 3))));

        // The old stack comes back in slot 5: its retired totals join it.
        let mut third = raw(vec![(Kind::Page, 5, agg(4096, 1, 4096, 1))]);
        third.stacks.insert(5, vec![0x1002, 0x2000]);
        rot.rebase(&mut third);
        rot.fold(&mut third);
        assert_eq!(third.aggs, vec![(Kind::Page, 5, agg(4096, 1, 4 * 4096, 4))]);
        assert_eq!(rot.stats().retired_kept, 1);
    }

    #[test]
    fn the_book_is_bounded_by_the_stack_table() {
        let mut rot = StackRotation::new(&config(), true);
        // The test tracer's stack table holds 8 stacks.
        let max = 8u64;
        assert_eq!(rot.max_retired as u64, max);
        for i in 0..max + 10 {
            let key = RetiredKey {
                kind: Kind::Slab,
                ips: vec![i],
                cache: None,
            };
            rot.book(key, 64, 1);
        }
        let s = rot.stats();
        assert_eq!(s.retired_kept, max + 1);
        assert_eq!(s.folded, 10);
        let folded = rot
            .retired
            .iter()
            .find(|(k, _)| k.ips.is_empty())
            .map(|(_, t)| t.bytes);
        assert_eq!(folded, Some(640));
        // Nothing is lost: every byte is in the book.
        let total: u64 = rot.retired.values().map(|t| t.bytes).sum();
        assert_eq!(total, 64 * (max + 10));
        // The default table (16 384 stacks) keeps as many; larger ones no more.
        let big = Config {
            stack_alt_base: 1 << 20,
            ..config()
        };
        assert_eq!(StackRotation::new(&big, true).max_retired, MAX_RETIRED);
    }
}
