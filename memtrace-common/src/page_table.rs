//! The page table: one `u64` entry per pfn (per sampled pfn on very large hosts) for every page
//! of every outstanding page allocation, in a `BPF_F_MMAPABLE` array that user space reads with
//! `mmap`. Everything here is pure arithmetic shared by the eBPF programs and user space: the
//! bit layout of an entry, which entries an allocation or a free covers, and which pfn an entry
//! stands for.
//!
//! # Entry layout
//!
//! ```text
//!  63 ........ 21+S | 21+S-1 .. 21 | 20 ...... 5 | 4 .. 1 |  0
//!  time (43-S bits) | stack (S)    | owner (16)  | order  | valid
//! ```
//!
//! - `valid`: set in every entry in use (an all-zero entry is a page nobody recorded);
//! - `order`: the order of the allocation the page belongs to (0-15); an allocation covers the
//!   `2^order` pfns from its head, which is aligned to `2^order`, so the head of any page and
//!   the extent of its allocation follow from its pfn and this field;
//! - `owner`: index into the owner table (0: "other owners", the table was full);
//! - `stack`: stack slot (index into the page block of `STACK_AGG`), `S` bits: as many as the
//!   session's stack slots need (`Config::entry_stack_bits`, 15 with the default
//!   `--max-stacks`, 21 at most);
//! - `time`: allocation time in units of `2^TIME_UNIT_SHIFT` ns (67.1 ms) since the session
//!   started, saturating (`43 - S` bits: 208 days with the default stack bits, 78 hours at
//!   the most stack bits).
//!
//! # Indices and sampling
//!
//! The table has one entry per pfn (`pfn_shift` 0): exact. A host whose highest pfn exceeds
//! the table's hard cap gets `pfn_shift = s > 0`: entry `i` stands for one pfn of the block of
//! `2^s` pfns `[i << s, (i + 1) << s)`, chosen by a hash of `i` ([`sampled_pfn`]). An
//! allocation sets the entries of the sampled pfns it covers; every sampled page stands for
//! `2^s` pages (user space scales and marks the figures as estimates).
//!
//! In index space every allocation and every free covers an aligned, contiguous range of
//! [`index_span`] indices (or none), which is what the programs loop over.

/// Entries per value of the page table array (one lookup reaches 64 entries, so every range
/// of up to 64 aligned entries is within one value).
pub const CHUNK: usize = 64;
/// log2 of [`CHUNK`].
pub const CHUNK_SHIFT: u32 = 6;
/// One value of the page table array.
pub type Chunk = [u64; CHUNK];

/// Set in every entry in use.
pub const VALID: u64 = 1;
pub const ORDER_SHIFT: u32 = 1;
pub const ORDER_BITS: u32 = 4;
pub const OWNER_SHIFT: u32 = ORDER_SHIFT + ORDER_BITS;
pub const OWNER_BITS: u32 = 16;
/// First bit of the stack slot; the time follows the stack slot's `stack_bits`.
pub const STACK_SHIFT: u32 = OWNER_SHIFT + OWNER_BITS;
/// Most bits a stack slot may take (`--max-stacks` 2^20: 2^20 + 2^18 + 1 slots).
pub const MAX_STACK_BITS: u32 = 21;
/// Fewest bits the time keeps.
pub const MIN_TIME_BITS: u32 = 64 - STACK_SHIFT - MAX_STACK_BITS;
/// Entry times count units of `2^TIME_UNIT_SHIFT` ns (67.1 ms).
pub const TIME_UNIT_SHIFT: u32 = 26;

/// Owner index of allocations whose owner did not fit in the owner table.
pub const OWNER_OTHER: u32 = 0;
/// Highest owner index an entry can hold (owners are numbered from 1).
pub const MAX_OWNER_INDEX: u32 = (1 << OWNER_BITS) - 1;

/// Highest allocation order an entry can hold.
pub const MAX_ORDER: u32 = (1 << ORDER_BITS) - 1;

/// What one entry says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Entry {
    pub order: u32,
    pub owner: u32,
    pub stack: u32,
    /// Units of `2^TIME_UNIT_SHIFT` ns since the session started (saturated).
    pub time: u64,
}

/// Bits of the stack slot for `slots` stack slots (slot values `0..slots`), at least 1.
pub const fn stack_bits(slots: u32) -> u32 {
    let need = 32 - slots.saturating_sub(1).leading_zeros();
    if need == 0 {
        1
    } else {
        need
    }
}

/// Bits left for the time with `stack_bits` bits of stack slot.
pub const fn time_bits(stack_bits: u32) -> u32 {
    64 - STACK_SHIFT - stack_bits
}

/// The largest time an entry holds with `stack_bits` bits of stack slot.
pub const fn time_max(stack_bits: u32) -> u64 {
    (1u64 << time_bits(stack_bits)) - 1
}

/// The time field for `now_ns` in a session that started at `start_ns` (saturating).
#[inline(always)]
pub const fn time_units(now_ns: u64, start_ns: u64, stack_bits: u32) -> u64 {
    let units = now_ns.saturating_sub(start_ns) >> TIME_UNIT_SHIFT;
    let max = time_max(stack_bits);
    if units > max {
        max
    } else {
        units
    }
}

/// The entry for `e` (fields wider than their bits are truncated: the callers pass an order
/// below 16, an owner index from the owner table and a stack slot below `2^stack_bits`).
#[inline(always)]
pub const fn encode(e: &Entry, stack_bits: u32) -> u64 {
    let stack_mask = (1u64 << stack_bits) - 1;
    VALID
        | ((e.order as u64 & MAX_ORDER as u64) << ORDER_SHIFT)
        | ((e.owner as u64 & MAX_OWNER_INDEX as u64) << OWNER_SHIFT)
        | ((e.stack as u64 & stack_mask) << STACK_SHIFT)
        | ((e.time & time_max(stack_bits)) << (STACK_SHIFT + stack_bits))
}

/// The order of an entry in use.
#[inline(always)]
pub const fn entry_order(v: u64) -> u32 {
    ((v >> ORDER_SHIFT) & MAX_ORDER as u64) as u32
}

/// The stack slot of an entry in use.
#[inline(always)]
pub const fn entry_stack(v: u64, stack_bits: u32) -> u32 {
    ((v >> STACK_SHIFT) & ((1u64 << stack_bits) - 1)) as u32
}

/// What entry `v` says; `None` for an unused entry.
pub const fn decode(v: u64, stack_bits: u32) -> Option<Entry> {
    if v & VALID == 0 {
        return None;
    }
    Some(Entry {
        order: entry_order(v),
        owner: ((v >> OWNER_SHIFT) & MAX_OWNER_INDEX as u64) as u32,
        stack: entry_stack(v, stack_bits),
        time: v >> (STACK_SHIFT + stack_bits),
    })
}

/// MurmurHash3's 64-bit finalizer (see [`crate::sampled`]).
#[inline(always)]
pub const fn mix64(key: u64) -> u64 {
    let mut h = key;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Offset within its block of the pfn entry `index` stands for (`pfn_shift` > 0).
#[inline(always)]
pub const fn sampled_offset(index: u64, pfn_shift: u32) -> u64 {
    if pfn_shift == 0 {
        0
    } else {
        mix64(index) & ((1u64 << pfn_shift) - 1)
    }
}

/// The pfn entry `index` stands for.
pub const fn sampled_pfn(index: u64, pfn_shift: u32) -> u64 {
    (index << pfn_shift) + sampled_offset(index, pfn_shift)
}

/// Indices an allocation of `order` spans when it covers any (1 when it is smaller than a
/// block).
#[inline(always)]
pub const fn index_span(order: u32, pfn_shift: u32) -> u64 {
    1u64 << order.saturating_sub(pfn_shift)
}

/// Whether entry `index` of an allocation of `order` is its first (its head, or with sampling
/// the first sampled page it covers): allocations are counted down when it goes.
#[inline(always)]
pub const fn is_first_index(index: u64, order: u32, pfn_shift: u32) -> bool {
    index & (index_span(order, pfn_shift) - 1) == 0
}

/// The entries `2^order` pages from `pfn` (aligned to `2^order`) cover: `(first, count)`;
/// `count` is 0 when they cover no sampled pfn.
#[inline(always)]
pub const fn index_range(pfn: u64, order: u32, pfn_shift: u32) -> (u64, u64) {
    if order >= pfn_shift {
        return (pfn >> pfn_shift, 1u64 << (order - pfn_shift));
    }
    // Smaller than a block: covers the block's sampled pfn or not.
    let index = pfn >> pfn_shift;
    let block_mask = (1u64 << pfn_shift) - 1;
    if (sampled_offset(index, pfn_shift) >> order) == ((pfn & block_mask) >> order) {
        (index, 1)
    } else {
        (index, 0)
    }
}

/// Value of `STACK_GFP` for an allocation's gfp flags and migrate type (never 0).
#[inline(always)]
pub const fn gfp_value(gfp: u32, migratetype: i32) -> u64 {
    (1u64 << 63) | ((migratetype as u8 as u64) << 32) | gfp as u64
}

/// `(gfp flags, migrate type)` of a `STACK_GFP` value; `None` when nothing was stored.
pub const fn gfp_decode(v: u64) -> Option<(u32, u8)> {
    if v >> 63 == 0 {
        None
    } else {
        Some((v as u32, (v >> 32) as u8))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn entries_round_trip_at_every_width() {
        for bits in 1..=MAX_STACK_BITS {
            let e = Entry {
                order: 9,
                owner: MAX_OWNER_INDEX,
                stack: (1 << bits) - 1,
                time: time_max(bits),
            };
            let v = encode(&e, bits);
            assert_eq!(decode(v, bits), Some(e), "stack bits {bits}");
            assert_eq!(entry_order(v), 9);
            assert_eq!(entry_stack(v, bits), (1 << bits) - 1);
            let zero = Entry::default();
            assert_eq!(decode(encode(&zero, bits), bits), Some(zero));
            assert_ne!(encode(&zero, bits), 0, "an entry in use is never 0");
        }
        assert_eq!(decode(0, 15), None);
        assert!(time_bits(MAX_STACK_BITS) >= MIN_TIME_BITS);
    }

    #[test]
    fn stack_bits_cover_the_slots() {
        assert_eq!(stack_bits(0), 1);
        assert_eq!(stack_bits(1), 1);
        assert_eq!(stack_bits(2), 1);
        assert_eq!(stack_bits(3), 2);
        // Default --max-stacks: 16384 + 4096 slots + "stack unavailable".
        assert_eq!(stack_bits(16384 + 4096 + 1), 15);
        // Largest --max-stacks.
        assert_eq!(stack_bits((1 << 20) + (1 << 18) + 1), MAX_STACK_BITS);
        // 208 days with the default, 78 hours at the most.
        let unit = (1u64 << TIME_UNIT_SHIFT) as f64 / 1e9;
        assert!(time_max(15) as f64 * unit > 200.0 * 86400.0);
        assert!(time_max(21) as f64 * unit > 78.0 * 3600.0);
    }

    #[test]
    fn times_saturate() {
        let start = 1_000_000_000_000;
        assert_eq!(time_units(start - 5, start, 15), 0);
        assert_eq!(time_units(start + (3 << TIME_UNIT_SHIFT) + 7, start, 15), 3);
        assert_eq!(time_units(u64::MAX, start, 21), time_max(21));
    }

    #[test]
    fn exact_table_covers_every_page() {
        assert_eq!(index_range(0x1234, 0, 0), (0x1234, 1));
        assert_eq!(index_range(0x1200, 9, 0), (0x1200, 512));
        assert_eq!(index_span(3, 0), 8);
        assert!(is_first_index(0x1238, 3, 0));
        assert!(!is_first_index(0x1239, 3, 0));
        assert!(is_first_index(0x1239, 0, 0));
        assert_eq!(sampled_pfn(77, 0), 77);
    }

    #[test]
    fn sampled_table_covers_one_pfn_per_block() {
        let s = 3;
        for index in 0..10_000u64 {
            let q = sampled_pfn(index, s);
            assert_eq!(q >> s, index);
            // Order-0 allocations: only the sampled pfn of the block is covered.
            for off in 0..8 {
                let pfn = (index << s) + off;
                let (i, n) = index_range(pfn, 0, s);
                assert_eq!(i, index);
                assert_eq!(n, u64::from(pfn == q), "index {index} off {off}");
            }
            // Order 2: the half of the block holding the sampled pfn.
            for half in 0..2 {
                let pfn = (index << s) + half * 4;
                let covers = q >= pfn && q < pfn + 4;
                assert_eq!(index_range(pfn, 2, s), (index, u64::from(covers)));
            }
        }
        // Whole blocks: every entry of the range.
        assert_eq!(index_range(0x1200, 9, 3), (0x1200 >> 3, 64));
        assert_eq!(index_span(9, 3), 64);
        assert_eq!(index_span(1, 3), 1);
        assert!(is_first_index(0x240, 9, 3));
        assert!(!is_first_index(0x241, 9, 3));
        assert!(is_first_index(0x241, 2, 3));
    }

    #[test]
    fn sampled_pfns_spread_over_their_blocks() {
        // Every offset of a block is chosen about equally often.
        let s = 4;
        let mut seen = [0u32; 16];
        for index in 0..160_000u64 {
            seen[sampled_offset(index, s) as usize] += 1;
        }
        for n in seen {
            assert!((9_000..11_000).contains(&n), "{seen:?}");
        }
    }

    #[test]
    fn gfp_values() {
        assert_eq!(gfp_decode(0), None);
        assert_eq!(gfp_decode(gfp_value(0xcc0, 1)), Some((0xcc0, 1)));
        assert_eq!(gfp_decode(gfp_value(0, -1)), Some((0, 255)));
    }
}
