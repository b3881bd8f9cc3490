//! The page programs' side of the page table (layout and index math in
//! `memtrace_common::page_table`): an allocation stores its entry in every entry it covers,
//! a free clears the entries it covers and takes their pages off their stacks. One lookup
//! reaches 64 entries; no insert, no delete, never full.

use memtrace_common::{
    page_table::{self as pt, Chunk, CHUNK, CHUNK_SHIFT},
    Config, Counter,
};

use crate::maps::{agg_outstanding, config, count, PAGE_TABLE};

/// Most chunks one range spans: 4096 entries (order 12), the loops' constant bound.
const MAX_CHUNKS: u64 = 64;

/// Most entries one allocation or free may cover (larger ones are not recorded: counted).
pub const MAX_RANGE: u64 = MAX_CHUNKS << CHUNK_SHIFT;

#[inline(always)]
fn chunk(index: u64) -> Option<*mut Chunk> {
    PAGE_TABLE.get_ptr_mut((index >> CHUNK_SHIFT) as u32)
}

/// Takes one entry `v` found at `index` off its stack: a stale entry an allocation overwrites
/// (its free was missed), or an entry of another allocation inside a freed range. A global BPF
/// function: the verifier checks it once, not once per loop iteration.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn memtrace_release_entry(v: u64, index: u64) -> u32 {
    let cfg = config();
    let first = pt::is_first_index(index, pt::entry_order(v), cfg.pfn_shift);
    agg_outstanding(
        pt::entry_stack(v, cfg.entry_stack_bits),
        cfg.page_size.wrapping_neg(),
        if first { u64::MAX } else { 0 },
    );
    0
}

/// Visits the `n` entries from `first` in one chunk (`n` ≤ 64, `first..first + n` within
/// that chunk) with `f(entry, index)`.
#[inline(always)]
fn for_chunk(first: u64, n: u64, mut f: impl FnMut(&mut u64, u64)) {
    let Some(c) = chunk(first) else {
        return;
    };
    let base = first as usize & (CHUNK - 1);
    for j in 0..CHUNK {
        if j as u64 >= n {
            break;
        }
        // SAFETY: `c` points to a live chunk of the array; the slot is masked below 64.
        let slot = unsafe { &mut (*c)[(base + j) & (CHUNK - 1)] };
        f(slot, first + j as u64);
    }
}

/// [`set_range`] within one chunk; returns 1 if any entry was still set. A global function:
/// the verifier checks its loop once, instead of once per chunk of a large allocation (whose
/// branches would exceed the verifier's limit of pending states).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn memtrace_set_chunk(first: u64, n: u64, entry: u64) -> u32 {
    let mut stale = 0;
    for_chunk(first, n, |slot, index| {
        let old = *slot;
        if old != 0 {
            memtrace_release_entry(old, index);
            stale = 1;
        }
        *slot = entry;
    });
    stale
}

/// [`release_range`] within one chunk, for the entries equal to `e` (whose allocation spans
/// `span_mask + 1` indices); other entries in use are taken off their own stacks. Returns the
/// entries equal to `e` and, in the upper half, how many of them were first entries. A global
/// function, like [`memtrace_set_chunk`].
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn memtrace_clear_chunk(first: u64, n: u64, e: u64, span_mask: u64) -> u64 {
    let (mut pages, mut firsts) = (0u64, 0u64);
    for_chunk(first, n, |slot, index| {
        let v = *slot;
        if v == e {
            pages += 1;
            if index & span_mask == 0 {
                firsts += 1;
            }
        } else if v != 0 {
            memtrace_release_entry(v, index);
        }
        *slot = 0;
    });
    pages | (firsts << 32)
}

/// Calls `f(first, count)` for each chunk's part of the `n` entries from `first` (`n` a power
/// of two up to [`MAX_RANGE`], `first` aligned to `n`).
#[inline(always)]
fn by_chunk(first: u64, n: u64, mut f: impl FnMut(u64, u64)) {
    if n <= CHUNK as u64 {
        f(first, n);
        return;
    }
    for k in 0..MAX_CHUNKS {
        if k >= n >> CHUNK_SHIFT {
            break;
        }
        f(first + (k << CHUNK_SHIFT), CHUNK as u64);
    }
}

/// Stores `entry` in the `n` entries from `first`. Returns whether any of them was still set
/// (its free was missed): those entries were taken off their stacks first.
#[inline(always)]
pub fn set_range(first: u64, n: u64, entry: u64) -> bool {
    if n == 1 {
        let Some(c) = chunk(first) else {
            return false;
        };
        // SAFETY: `c` points to a live chunk; the slot is masked below 64.
        let slot = unsafe { &mut (*c)[first as usize & (CHUNK - 1)] };
        let old = *slot;
        *slot = entry;
        if old != 0 {
            memtrace_release_entry(old, first);
            return true;
        }
        return false;
    }
    let mut stale = 0;
    by_chunk(first, n, |f, count| {
        stale |= memtrace_set_chunk(f, count, entry)
    });
    stale != 0
}

/// Clears the `n` entries from `first` that a free of `2^order` pages covers and takes their
/// pages off their stacks; an allocation's count goes down with its first entry (its head).
/// Counts the free as matched (and partial when it releases part of an allocation); returns
/// `false` when the first entry is unused (the free is unmatched).
#[inline(always)]
pub fn release_range(cfg: &Config, first: u64, n: u64, order: u32) -> bool {
    let Some(c) = chunk(first) else {
        return false;
    };
    // SAFETY: `c` points to a live chunk; the slot is masked below 64.
    let head = unsafe { &mut (*c)[first as usize & (CHUNK - 1)] };
    let e = *head;
    if e == 0 {
        return false;
    }
    let e_order = pt::entry_order(e);
    let span_mask = pt::index_span(e_order, cfg.pfn_shift) - 1;
    let (pages, firsts) = if n == 1 {
        *head = 0;
        (1, u64::from(first & span_mask == 0))
    } else {
        let mut packed = 0u64;
        by_chunk(first, n, |f, count| {
            packed += memtrace_clear_chunk(f, count, e, span_mask);
        });
        (packed & 0xffff_ffff, packed >> 32)
    };
    agg_outstanding(
        pt::entry_stack(e, cfg.entry_stack_bits),
        (pages * cfg.page_size).wrapping_neg(),
        firsts.wrapping_neg(),
    );
    count(Counter::FreesMatched);
    if order < e_order {
        count(Counter::PartialFrees);
    }
    true
}
