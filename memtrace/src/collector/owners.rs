//! Owner table recycling, for sessions that run for weeks (`memtrace serve`).
//!
//! The page programs intern each owner of page allocations (thread, name, cgroup) once and
//! store its index in every page-table entry ([`memtrace_common::page_table`]). On a node
//! where processes come and go the table (65 535 owners) would fill, and every later owner
//! would be counted under "other owners". So once half of the fresh indices are handed out,
//! each snapshot that walks the page table recycles the owners no page refers to any more:
//!
//! 1. **Forget** (snapshot *k*): an owner that no page-table entry and no CPU's cache of its
//!    last owner (`OWNER_CACHE`) refers to has its `OWNER_IDS` entry deleted, so no program
//!    finds it any more, and every CPU's cache is emptied. Its index goes into quarantine: a
//!    program that looked the owner up just before the deletion may still store the index.
//! 2. **Recycle** (snapshot *k + 1*, or later): a quarantined index that neither the caches,
//!    read before the walk, nor any entry of the walk refer to is free — nothing can hand it
//!    out any more — and is pushed into the ring `OWNER_FREE`, where the programs take
//!    indices once the fresh ones run out. The owner table is read after the walk, so a
//!    recycled index in use again names its new owner.
//!
//! An owner forgotten while its thread lives is interned again at its next page allocation,
//! under a new index: its pages are never mixed with another's.

use std::collections::{BTreeSet, VecDeque};

use anyhow::Context as _;
use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use memtrace_common::{maps, owner_next, OwnerCache, OwnerRecord};

use super::{map, map_mut, page_table, rotate::edit_per_cpu};
use crate::{
    loader::Tracer,
    model::{OwnerRecyclingStats, OwnerUse},
};

/// What one snapshot's recycling does ([`plan`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RecyclePlan {
    /// Quarantined indices nothing refers to any more: into the ring, ascending.
    pub recycle: Vec<u32>,
    /// Indices whose owners are forgotten now (into quarantine), ascending.
    pub forget: Vec<u32>,
}

/// The recycling for one walk: quarantined indices nothing refers to are recycled; while at
/// least half of the fresh indices are handed out, every other index (handed out, not
/// quarantined, not waiting in the ring) that nothing refers to is forgotten.
pub fn plan(use_: &OwnerUse, quarantine: &BTreeSet<u32>, in_ring: &BTreeSet<u32>) -> RecyclePlan {
    let referenced =
        |i: &u32| use_.referenced.binary_search(i).is_ok() || use_.cached.binary_search(i).is_ok();
    let recycle = quarantine
        .iter()
        .copied()
        .filter(|i| !referenced(i))
        .collect();
    let forget = if u64::from(use_.handed_out) * 2 >= u64::from(use_.capacity) {
        (1..=use_.handed_out)
            .filter(|i| !referenced(i) && !quarantine.contains(i) && !in_ring.contains(i))
            .collect()
    } else {
        Vec::new()
    };
    RecyclePlan { recycle, forget }
}

/// Owner recycling across the snapshots of a session.
#[derive(Debug, Default)]
pub struct OwnerRecycling {
    /// Forgotten owners' indices, waiting for a walk that confirms nothing refers to them.
    quarantine: BTreeSet<u32>,
    /// Indices pushed into the ring that the programs have not taken yet, oldest first.
    ring: VecDeque<u32>,
    /// `owner_next::POPPED` as last read.
    popped: u64,
    /// `owner_next::PUSHED` as last written.
    pushed: u64,
    stats: OwnerRecyclingStats,
}

impl OwnerRecycling {
    pub fn stats(&self) -> OwnerRecyclingStats {
        self.stats.clone()
    }

    /// Recycles after a snapshot whose page-table walk left `raw.owner_use` (nothing without
    /// one). Failures are counted and shown; the tables stay consistent (an owner forgotten
    /// but not recycled only waits longer).
    pub fn process(&mut self, use_: Option<&OwnerUse>, tracer: &mut Tracer) {
        let Some(use_) = use_ else {
            return;
        };
        if let Err(e) = self.step(use_, tracer) {
            self.stats.failures += 1;
            self.stats.last_error = Some(format!("{e:#}"));
        }
    }

    fn step(&mut self, use_: &OwnerUse, tracer: &mut Tracer) -> anyhow::Result<()> {
        let ring_len = u64::from(use_.capacity) + 1;
        // The indices the programs took since the last snapshot.
        let popped = {
            let next: Array<&MapData, u64> =
                Array::try_from(map(&tracer.ebpf, maps::OWNER_NEXT)?).context("OWNER_NEXT")?;
            next.get(&owner_next::POPPED, 0)
                .context("reading OWNER_NEXT")?
        };
        let taken = popped.saturating_sub(self.popped);
        for _ in 0..taken {
            self.ring.pop_front();
        }
        self.stats.reused += taken;
        self.popped = popped;
        let in_ring: BTreeSet<u32> = self.ring.iter().copied().collect();
        let p = plan(use_, &self.quarantine, &in_ring);

        if !p.forget.is_empty() {
            let owners: Vec<OwnerRecord> = page_table::read_mapped(
                page_table::map_fd(map(&tracer.ebpf, maps::OWNERS)?).context("OWNERS")?,
                use_.capacity as usize + 1,
            )
            .context("reading the owner table")?;
            let mut ids: BpfHashMap<&mut MapData, OwnerRecord, u32> =
                BpfHashMap::try_from(map_mut(&mut tracer.ebpf, maps::OWNER_IDS)?)
                    .context("OWNER_IDS")?;
            for &index in &p.forget {
                let Some(owner) = owners.get(index as usize) else {
                    continue;
                };
                // An index another CPU's insert lost (the owner kept its first index) has no
                // entry of its own: nothing to delete, recycled all the same.
                if ids.get(owner, 0).ok() == Some(index) {
                    match ids.remove(owner) {
                        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                        Err(e) => return Err(e).context("deleting from OWNER_IDS"),
                    }
                }
                self.quarantine.insert(index);
            }
        }
        // Empty every CPU's cache of its last owner: a forgotten owner's index can then only
        // come back through a program that looked it up before the deletion (microseconds),
        // which the next walk's read of the caches sees. Again whenever a cache still holds a
        // quarantined index (such a program's, or one taken from the ring just before its
        // owner was forgotten): that index waits until no cache holds it.
        let stale_cache = use_.cached.iter().any(|i| self.quarantine.contains(i));
        if !p.forget.is_empty() || stale_cache {
            edit_per_cpu(tracer, maps::OWNER_CACHE, |c: &mut OwnerCache| {
                let cached = c.index_plus_one != 0;
                *c = OwnerCache::default();
                cached
            })?;
        }
        if !p.recycle.is_empty() {
            let mut ring: Array<&mut MapData, u32> =
                Array::try_from(map_mut(&mut tracer.ebpf, maps::OWNER_FREE)?)
                    .context("OWNER_FREE")?;
            for (k, &index) in p.recycle.iter().enumerate() {
                let slot = (self.pushed + k as u64) % ring_len;
                ring.set(slot as u32, index, 0)
                    .context("writing OWNER_FREE")?;
            }
            let pushed = self.pushed + p.recycle.len() as u64;
            let mut next: Array<&mut MapData, u64> =
                Array::try_from(map_mut(&mut tracer.ebpf, maps::OWNER_NEXT)?)
                    .context("OWNER_NEXT")?;
            // Published after the slots: a program reads PUSHED, then the slot below it.
            next.set(owner_next::PUSHED, pushed, 0)
                .context("writing OWNER_NEXT")?;
            self.pushed = pushed;
            for &index in &p.recycle {
                self.quarantine.remove(&index);
                self.ring.push_back(index);
            }
            self.stats.recycled += p.recycle.len() as u64;
        }
        self.stats.capacity = u64::from(use_.capacity);
        self.stats.quarantined = self.quarantine.len() as u64;
        self.stats.in_use = u64::from(use_.handed_out).saturating_sub(self.ring.len() as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn use_of(handed_out: u32, capacity: u32, referenced: &[u32], cached: &[u32]) -> OwnerUse {
        OwnerUse {
            handed_out,
            capacity,
            referenced: referenced.to_vec(),
            cached: cached.to_vec(),
        }
    }

    fn set(v: &[u32]) -> BTreeSet<u32> {
        v.iter().copied().collect()
    }

    #[test]
    fn nothing_is_forgotten_while_most_fresh_indices_are_left() {
        let p = plan(&use_of(4, 10, &[1], &[]), &set(&[]), &set(&[]));
        assert_eq!(p, RecyclePlan::default());
    }

    #[test]
    fn unreferenced_owners_are_forgotten_then_recycled_a_walk_later() {
        // Half handed out: 2 and 4 have pages, 3 is some CPU's cached owner, 0 is "other".
        let use1 = use_of(5, 10, &[0, 2, 4], &[3]);
        let p = plan(&use1, &set(&[]), &set(&[]));
        assert_eq!(p.forget, vec![1, 5]);
        assert!(
            p.recycle.is_empty(),
            "nothing is recycled on the walk that forgets"
        );
        // Next walk: 5 got a page meanwhile (a program looked it up before the deletion):
        // stays quarantined; 1 is free.
        let use2 = use_of(5, 10, &[0, 2, 4, 5], &[]);
        let p = plan(&use2, &set(&[1, 5]), &set(&[]));
        assert_eq!(p.recycle, vec![1]);
        // 3 left the caches: forgotten now; quarantined 1 and 5 are not forgotten twice.
        assert_eq!(p.forget, vec![3]);
    }

    #[test]
    fn a_cached_index_stays_quarantined() {
        let p = plan(&use_of(6, 10, &[], &[2]), &set(&[2]), &set(&[]));
        assert!(p.recycle.is_empty());
    }

    #[test]
    fn indices_waiting_in_the_ring_are_left_alone() {
        let p = plan(&use_of(6, 10, &[1], &[]), &set(&[]), &set(&[2, 3]));
        assert_eq!(p.forget, vec![4, 5, 6]);
    }

    #[test]
    fn a_full_table_forgets_all_but_the_referenced() {
        let p = plan(&use_of(65_535, 65_535, &[7], &[9]), &set(&[]), &set(&[]));
        assert_eq!(p.forget.len(), 65_533);
        assert!(!p.forget.contains(&0) && !p.forget.contains(&7) && !p.forget.contains(&9));
    }
}
