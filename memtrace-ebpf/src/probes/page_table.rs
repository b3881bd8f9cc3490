//! The page programs' side of the page table (layout and index math in
//! `memtrace_common::page_table`): an allocation stores its entry in every entry it covers,
//! a free clears the entries it covers and takes their pages off their stacks. One lookup
//! reaches 64 entries; no insert, no delete, never full.

use memtrace_common::{
    page_table::{self as pt, Chunk, CHUNK, CHUNK_SHIFT},
    Config, Counter,
};

use core::intrinsics::{atomic_or, AtomicOrdering};

use crate::maps::{agg_outstanding, config, count, PAGE_TABLE, TABLE_SUMMARY};

/// Most chunks one range spans: 4096 entries (order 12), the loops' constant bound.
const MAX_CHUNKS: u64 = 64;

/// Most entries one allocation or free may cover (larger ones are not recorded: counted).
pub const MAX_RANGE: u64 = MAX_CHUNKS << CHUNK_SHIFT;

#[inline(always)]
fn chunk(index: u64) -> Option<*mut Chunk> {
    PAGE_TABLE.get_ptr_mut((index >> CHUNK_SHIFT) as u32)
}

/// Whether the chunk of `index` may hold entries (its summary bit is set).
#[inline(always)]
fn maybe_set(index: u64) -> bool {
    let chunk = index >> CHUNK_SHIFT;
    match TABLE_SUMMARY.get((chunk >> 6) as u32) {
        Some(w) => *w & (1u64 << (chunk & 63)) != 0,
        // Beyond the summary (never, for indices inside the table): look at the table.
        None => true,
    }
}

/// Sets the summary bits of the chunks the `n` entries from `first` (aligned to `n`) cover.
#[inline(always)]
fn mark_summary(first: u64, n: u64) {
    let chunk = first >> CHUNK_SHIFT;
    let chunks = n.div_ceil(CHUNK as u64);
    // Aligned ranges of up to 4096 entries never cross a summary word.
    let mask = if chunks >= 64 {
        u64::MAX
    } else {
        ((1u64 << chunks) - 1) << (chunk & 63)
    };
    let Some(w) = TABLE_SUMMARY.get_ptr_mut((chunk >> 6) as u32) else {
        return;
    };
    // SAFETY: valid pointer to an aligned u64 of the array; read first, so the atomic (other
    // CPUs set other bits of the word) is only paid the first time a chunk is used.
    unsafe {
        if *w & mask != mask {
            atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(w, mask);
        }
    }
}

/// Takes one entry `v` found at `index` off its stack: a stale entry an allocation overwrites
/// (its free was missed), or an entry of another allocation inside a freed range.
#[inline(always)]
fn release_entry(cfg: &Config, v: u64, index: u64) {
    let first = pt::is_first_index(index, pt::entry_order(v), cfg.pfn_shift);
    agg_outstanding(
        pt::entry_stack(v, cfg.entry_stack_bits),
        cfg.page_size.wrapping_neg(),
        if first { u64::MAX } else { 0 },
    );
}

// Ranges of more than one entry are walked by loops whose bodies are calls of the two global
// BPF functions below and additions, nothing else: every branch on an entry's value is inside
// a function the verifier checks once. (With the branches inlined in the loops, older
// verifiers explore every combination of them: a million instructions on 6.1.)

/// Stores `entry` at `index`; returns 1 if the entry there was still set (its free was
/// missed: it is taken off its stack first), else 0.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn memtrace_set_entry(index: u64, entry: u64) -> u64 {
    let Some(c) = chunk(index) else {
        return 0;
    };
    // SAFETY: `c` points to a live chunk of the array; the slot is masked below 64.
    let slot = unsafe { &mut (*c)[index as usize & (CHUNK - 1)] };
    let old = *slot;
    *slot = entry;
    if old == 0 {
        return 0;
    }
    release_entry(config(), old, index);
    1
}

/// Clears the entry at `index` of a freed range whose first entry is `e` (an allocation
/// spanning `span_mask + 1` entries). Returns, for an entry equal to `e`, 1 plus (in the upper
/// half) 1 if it is the allocation's first entry; another entry in use is taken off its own
/// stack and counts 0.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn memtrace_clear_entry(index: u64, e: u64, span_mask: u64) -> u64 {
    let Some(c) = chunk(index) else {
        return 0;
    };
    // SAFETY: `c` points to a live chunk of the array; the slot is masked below 64.
    let slot = unsafe { &mut (*c)[index as usize & (CHUNK - 1)] };
    let v = *slot;
    *slot = 0;
    if v == e {
        return 1 | (u64::from(index & span_mask == 0) << 32);
    }
    if v != 0 {
        release_entry(config(), v, index);
    }
    0
}

/// `n`, loaded again where it is used: LLVM can no longer turn a loop bounded by a constant
/// with an early exit at `n` into a loop bounded by `n` (which it knows to be small, and the
/// verifier of older kernels, 6.1, does not: it explores such a loop until its instruction
/// limit and rejects the program).
#[inline(always)]
fn opaque(n: u64) -> u64 {
    // SAFETY: a volatile read of a live local.
    unsafe { core::ptr::read_volatile(&n) }
}

/// Sums `f(index)` over the `n` entries from `first` (`n` a power of two up to
/// [`MAX_RANGE`], `first` aligned to `n`): up to 64 iterations that may end early, or up to 64
/// chunks of exactly 64.
#[inline(always)]
fn sum_range(first: u64, n: u64, f: impl Fn(u64) -> u64) -> u64 {
    let mut sum = 0u64;
    if n <= CHUNK as u64 {
        for j in 0..CHUNK as u64 {
            if j >= opaque(n) {
                break;
            }
            sum += f(first + j);
        }
        return sum;
    }
    for k in 0..MAX_CHUNKS {
        if k >= opaque(n) >> CHUNK_SHIFT {
            break;
        }
        let start = first + (k << CHUNK_SHIFT);
        for j in 0..CHUNK as u64 {
            sum += f(start + j);
        }
    }
    sum
}

/// Stores `entry` in the `n` entries from `first`. Returns whether any of them was still set
/// (its free was missed): those entries were taken off their stacks first.
#[inline(always)]
pub fn set_range(first: u64, n: u64, entry: u64) -> bool {
    mark_summary(first, n);
    if n == 1 {
        let Some(c) = chunk(first) else {
            return false;
        };
        // SAFETY: `c` points to a live chunk; the slot is masked below 64.
        let slot = unsafe { &mut (*c)[first as usize & (CHUNK - 1)] };
        let old = *slot;
        *slot = entry;
        if old != 0 {
            release_entry(config(), old, first);
            return true;
        }
        return false;
    }
    sum_range(first, n, |index| memtrace_set_entry(index, entry)) != 0
}

/// Clears the `n` entries from `first` that a free of `2^order` pages covers and takes their
/// pages off their stacks; an allocation's count goes down with its first entry (its head).
/// Counts the free as matched (and partial when it releases part of an allocation); returns
/// `false` when the first entry is unused (the free is unmatched).
#[inline(always)]
pub fn release_range(cfg: &Config, first: u64, n: u64, order: u32) -> bool {
    if !maybe_set(first) {
        return false;
    }
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
        let packed = sum_range(first, n, |index| memtrace_clear_entry(index, e, span_mask));
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
