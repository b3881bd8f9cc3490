//! Who is allocating: the owner filters (`--pid`, `--comm`, `--cgroup`, `--pod`), the grace
//! switch (`--grace`), shared by the page and object programs; and the owner table of the page
//! programs (an owner is a thread with its name in a cgroup, interned once).

use aya_ebpf::helpers::{
    bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_comm,
};
use memtrace_common::{
    control, owner_next, page_table::OWNER_OTHER, Config, Filters, OwnerCache, OwnerRecord,
    MAX_FILTER_CGROUPS, MAX_FILTER_COMMS, MAX_FILTER_TGIDS,
};

use crate::maps::{
    atomic_fetch_add, compare_and_swap, BPF_NOEXIST, CONTROL, OWNERS, OWNER_CACHE, OWNER_FREE,
    OWNER_IDS, OWNER_NEXT,
};

/// The owner index of the current task (thread, name, cgroup): the per-CPU cache of the last
/// owner first (one compare in the common case), then the owner table, then a new index;
/// [`OWNER_OTHER`] when the table is full. The name is read every time: it changes at
/// `execve` and when a thread names itself, without the thread changing.
///
/// With `same_run` (the caller knows this thread allocated on this CPU moments ago: a movable
/// page allocation reusing the stack captured for the task's previous ones), a cached owner of
/// the same thread is taken without reading its name and cgroup again: a rename or a cgroup
/// move shows from the next capture, the same window as the stack's own
/// (`Config::movable_stack_every` allocations).
#[inline(always)]
pub fn intern(cfg: &Config, pid_tgid: u64, same_run: bool) -> u32 {
    let cache = OWNER_CACHE.get_ptr_mut(0);
    if same_run {
        if let Some(c) = cache {
            // SAFETY: this CPU's value of a per-CPU map; only the page allocation program
            // uses it, and a program does not run nested on one CPU.
            let c = unsafe { &*c };
            if c.index_plus_one != 0
                && c.owner.pid == pid_tgid as u32
                && c.owner.tgid == (pid_tgid >> 32) as u32
            {
                return c.index_plus_one - 1;
            }
        }
    }
    let owner = OwnerRecord {
        // SAFETY: helper without memory arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    if let Some(c) = cache {
        // SAFETY: as above.
        let c = unsafe { &*c };
        if c.index_plus_one != 0 && same_owner(&c.owner, &owner) {
            return c.index_plus_one - 1;
        }
    }
    let index = lookup_or_add(cfg, &owner);
    if let Some(c) = cache {
        // SAFETY: as above.
        unsafe {
            *c = OwnerCache {
                owner,
                index_plus_one: index + 1,
                _pad: 0,
            }
        };
    }
    index
}

/// Compares two owners as four words (the name as two).
#[inline(always)]
fn same_owner(a: &OwnerRecord, b: &OwnerRecord) -> bool {
    let words = |o: &OwnerRecord| {
        (
            u64::from_le_bytes([
                o.comm[0], o.comm[1], o.comm[2], o.comm[3], o.comm[4], o.comm[5], o.comm[6],
                o.comm[7],
            ]),
            u64::from_le_bytes([
                o.comm[8], o.comm[9], o.comm[10], o.comm[11], o.comm[12], o.comm[13], o.comm[14],
                o.comm[15],
            ]),
        )
    };
    a.cgroup_id == b.cgroup_id && a.pid == b.pid && a.tgid == b.tgid && words(a) == words(b)
}

#[inline(always)]
fn lookup_or_add(cfg: &Config, owner: &OwnerRecord) -> u32 {
    // SAFETY: the value is copied out at once. User space deletes the entries of owners it
    // recycles, and keeps their indices out of use until no page and no CPU's OWNER_CACHE
    // refers to them (collector::owners), so an index read just before a deletion stays valid.
    if let Some(index) = unsafe { OWNER_IDS.get(owner) } {
        return *index;
    }
    let Some(index) = fresh_index(cfg).or_else(|| recycled_index(cfg)) else {
        return OWNER_OTHER;
    };
    // The record is complete before its index is published in OWNER_IDS.
    if let Some(rec) = OWNERS.get_ptr_mut(index) {
        // SAFETY: valid pointer to the OWNERS value of an index nobody else holds (fresh, or
        // recycled: nothing refers to it).
        unsafe { *rec = *owner };
    }
    match OWNER_IDS.insert(owner, index, BPF_NOEXIST) {
        Ok(()) => index,
        // Another CPU interned the same owner meanwhile: its index (this one stays unused
        // until user space recycles it).
        // SAFETY: as for the first lookup.
        Err(_) => unsafe { OWNER_IDS.get(owner) }
            .copied()
            .unwrap_or(OWNER_OTHER),
    }
}

/// A never used owner index, while there are some.
#[inline(always)]
fn fresh_index(cfg: &Config) -> Option<u32> {
    let next = OWNER_NEXT.get_ptr_mut(owner_next::NEXT)?;
    // SAFETY: valid pointer to the u64 slot; a stale read only lets one more CPU try the
    // fetch-add below, which checks again.
    if unsafe { core::ptr::read_volatile(next) } >= cfg.owner_cap as u64 {
        return None;
    }
    let index = atomic_fetch_add(next, 1) + 1;
    (index <= cfg.owner_cap as u64).then_some(index as u32)
}

/// An owner index user space recycled (no page referenced it any more), taken from the ring
/// `OWNER_FREE`: the slot at `POPPED`, claimed by advancing `POPPED` with a compare-and-swap
/// while it is behind `PUSHED`. A few tries, then "other owners" (counted as the table full).
#[inline(always)]
fn recycled_index(cfg: &Config) -> Option<u32> {
    let popped = OWNER_NEXT.get_ptr_mut(owner_next::POPPED)?;
    let pushed = OWNER_NEXT.get_ptr(owner_next::PUSHED)?;
    let ring = u64::from(cfg.owner_cap) + 1;
    for _ in 0..4 {
        // SAFETY: valid pointers to u64 slots of OWNER_NEXT; user space only raises PUSHED,
        // after writing the slots below it.
        let (taken, given) = unsafe {
            (
                core::ptr::read_volatile(popped),
                core::ptr::read_volatile(pushed),
            )
        };
        if taken >= given {
            return None;
        }
        if compare_and_swap(popped, taken, taken + 1) {
            let index = OWNER_FREE.get((taken % ring) as u32).copied()?;
            return (index != OWNER_OTHER && index <= cfg.owner_cap).then_some(index);
        }
    }
    None
}

/// The session's phase (`memtrace_common::control`): user space flips it once or twice, and a
/// stale read only records or matches one event more at the boundary.
#[inline(always)]
fn phase() -> u64 {
    match CONTROL.get_ptr(control::GRACE) {
        // SAFETY: valid pointer into the CONTROL array.
        Some(p) => unsafe { core::ptr::read_volatile(p) },
        None => control::RUNNING,
    }
}

/// Whether new allocations are no longer recorded (grace period, or stopped).
#[inline(always)]
pub fn grace_active() -> bool {
    phase() != control::RUNNING
}

/// Whether the session has stopped: frees are not matched any more either.
#[inline(always)]
pub fn stopped() -> bool {
    phase() >= control::STOPPED
}

/// Whether an allocation by `tgid` passes the owner filters. (An interrupt that hit a
/// matching task passes too: the programs cannot tell; user space names it from its stack.)
#[inline(always)]
pub fn passes(f: &Filters, tgid: u32) -> bool {
    if f.active == 0 {
        return true;
    }
    if f.tgid_count != 0 && !tgid_matches(f, tgid) {
        return false;
    }
    if f.comm_count != 0 && !comm_matches(f) {
        return false;
    }
    if f.cgroup_count != 0 && !cgroup_matches(f) {
        return false;
    }
    true
}

#[inline(always)]
fn tgid_matches(f: &Filters, tgid: u32) -> bool {
    for i in 0..MAX_FILTER_TGIDS {
        if i as u32 >= f.tgid_count {
            break;
        }
        if f.tgids[i] == tgid {
            return true;
        }
    }
    false
}

#[inline(always)]
fn comm_matches(f: &Filters) -> bool {
    let Ok(comm) = bpf_get_current_comm() else {
        return false;
    };
    let lo = u64::from_le_bytes([
        comm[0], comm[1], comm[2], comm[3], comm[4], comm[5], comm[6], comm[7],
    ]);
    let hi = u64::from_le_bytes([
        comm[8], comm[9], comm[10], comm[11], comm[12], comm[13], comm[14], comm[15],
    ]);
    for i in 0..MAX_FILTER_COMMS {
        if i as u32 >= f.comm_count {
            break;
        }
        let c = &f.comms[i];
        let clo = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let chi = u64::from_le_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]);
        if clo == lo && chi == hi {
            return true;
        }
    }
    false
}

#[inline(always)]
fn cgroup_matches(f: &Filters) -> bool {
    for i in 0..MAX_FILTER_CGROUPS {
        if i as u32 >= f.cgroup_count {
            break;
        }
        let want = &f.cgroups[i];
        // SAFETY: helper without memory arguments; returns 0 when the task is not that deep.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(want.level as i32) };
        if id == want.id {
            return true;
        }
    }
    false
}
