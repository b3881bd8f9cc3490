//! Who is allocating: the owner filters (`--pid`, `--comm`, `--cgroup`, `--pod`), the grace
//! switch (`--grace`), shared by the page and object programs.

use aya_ebpf::helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_comm};
use memtrace_common::{control, Filters, MAX_FILTER_CGROUPS, MAX_FILTER_COMMS, MAX_FILTER_TGIDS};

use crate::maps::CONTROL;

/// Whether the grace period has begun (new allocations are not recorded).
#[inline(always)]
pub fn grace_active() -> bool {
    match CONTROL.get_ptr(control::GRACE) {
        // SAFETY: valid pointer into the CONTROL array; user space flips the value once, and a
        // stale read only records one allocation more or less at the boundary.
        Some(p) => unsafe { core::ptr::read_volatile(p) != 0 },
        None => false,
    }
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
