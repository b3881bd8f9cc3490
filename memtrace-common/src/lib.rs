//! Records shared by the eBPF programs (`memtrace-ebpf`, `no_std`) and user space (`memtrace`).
//!
//! Everything here is `#[repr(C)]` plain data with explicit padding, so both sides agree on the
//! layout byte for byte. Build with the `user` feature in user space to get `aya::Pod` impls.
#![no_std]

/// Name of the global the loader fills with a [`Config`] before the programs are loaded.
pub const CONFIG_GLOBAL: &str = "CONFIG";

/// Map names (the `#[map]` statics in memtrace-ebpf).
pub mod maps {
    /// `pfn` → [`super::PageRecord`]: every traced page allocation still outstanding.
    pub const OUTSTANDING: &str = "OUTSTANDING";
    /// Kernel stacks (`BPF_MAP_TYPE_STACK_TRACE`, flags 0).
    pub const STACKS: &str = "STACKS";
    /// Array indexed by stack id → [`super::StackAgg`]; the last slot collects allocations whose
    /// stack could not be captured ([`super::Config::stack_none_id`]).
    pub const STACK_AGG: &str = "STACK_AGG";
    /// One `u64`: records currently kept under a [`super::DETACHED_KEY_BIT`] key.
    pub const DETACHED_LIVE: &str = "DETACHED_LIVE";
    /// Per-CPU `u64` counters indexed by [`super::Counter`].
    pub const COUNTERS: &str = "COUNTERS";
}

/// Program names (the function names in memtrace-ebpf).
pub mod programs {
    pub const PAGE_ALLOC: &str = "mm_page_alloc";
    pub const PAGE_FREE: &str = "mm_page_free";
}

/// Set in a [`PageRecord`] key when the record was moved aside because its head pfn was freed
/// and re-allocated while tail pages of the original allocation were still outstanding.
pub const DETACHED_KEY_BIT: u64 = 1 << 63;

/// Where the fields of `kmem:mm_page_alloc` live in the classic tracepoint record.
/// Filled from `/sys/kernel/tracing/events/kmem/mm_page_alloc/format` at run time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageAllocLayout {
    pub pfn_offset: u32,
    pub order_offset: u32,
    pub gfp_offset: u32,
    /// 4 (older kernels, `gfp_t` printed as unsigned int) or 8 (`unsigned long`).
    pub gfp_size: u32,
    pub migratetype_offset: u32,
    pub _pad: u32,
}

/// Where the fields of `kmem:mm_page_free` live.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageFreeLayout {
    pub pfn_offset: u32,
    pub order_offset: u32,
}

/// Read-only configuration the loader writes into `.rodata` before loading.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub page_alloc: PageAllocLayout,
    pub page_free: PageFreeLayout,
    /// Bytes per page (`getpagesize()`).
    pub page_size: u64,
    /// memtrace's own tgid: its allocations are not recorded.
    pub self_tgid: u32,
    /// Highest buddy order on this kernel (10 on x86_64): bounds the partial-free search.
    pub max_order: u32,
    /// Index in `STACK_AGG` used for allocations whose stack id could not be obtained.
    pub stack_none_id: u32,
    pub _pad: u32,
}

impl Config {
    /// All zero: the value compiled into the object before the loader overrides it.
    pub const fn zeroed() -> Self {
        Config {
            page_alloc: PageAllocLayout {
                pfn_offset: 0,
                order_offset: 0,
                gfp_offset: 0,
                gfp_size: 0,
                migratetype_offset: 0,
                _pad: 0,
            },
            page_free: PageFreeLayout {
                pfn_offset: 0,
                order_offset: 0,
            },
            page_size: 0,
            self_tgid: 0,
            max_order: 0,
            stack_none_id: 0,
            _pad: 0,
        }
    }
}

/// One outstanding page allocation (value of `OUTSTANDING`, keyed by head pfn).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageRecord {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at allocation.
    pub ts_ns: u64,
    /// Index into `STACK_AGG` (a stack id, or `Config::stack_none_id`).
    pub stack_id: u32,
    pub tgid: u32,
    pub pid: u32,
    /// Low 32 bits of the allocation's gfp flags (every `__GFP_*` bit fits in them).
    pub gfp_flags: u32,
    /// Pages of this allocation not yet freed (starts at `1 << order`; partial frees of split
    /// pages decrement it; updated atomically).
    pub remaining_pages: u32,
    pub order: u8,
    /// Migrate type as the tracepoint reports it (-1 → 255).
    pub migratetype: u8,
    /// [`record_flags`] bits.
    pub flags: u8,
    pub _pad: u8,
    pub comm: [u8; 16],
}

pub mod record_flags {
    /// The head page itself was freed (partial free) while tail pages are still outstanding.
    pub const HEAD_FREED: u8 = 1;
}

/// Per-stack aggregate, maintained with atomic adds by the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackAgg {
    /// Bytes allocated from this stack and not yet freed (two's complement: may transiently
    /// read as slightly negative while programs race; user space clamps).
    pub outstanding_bytes: u64,
    /// Allocations from this stack that still have at least one page outstanding.
    pub outstanding_count: u64,
    /// Bytes allocated from this stack during the session, freed or not.
    pub allocated_bytes: u64,
    /// Allocations from this stack during the session, freed or not.
    pub allocated_count: u64,
}

/// Indexes of the per-CPU counters in `COUNTERS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// `mm_page_alloc` events seen (including failed and filtered ones).
    AllocsSeen = 0,
    /// Allocations recorded in `OUTSTANDING`.
    AllocsTracked,
    /// `mm_page_alloc` with `pfn == -1` (the allocation failed): ignored.
    FailedAllocs,
    /// Allocations made by memtrace itself: not recorded.
    SelfAllocs,
    /// `mm_page_free` events seen.
    FreesSeen,
    /// Frees that found the allocation they release (by head pfn, or by searching the heads of
    /// higher-order allocations that cover the freed pfn).
    FreesMatched,
    /// Of the matched frees: those that released only part of an allocation (split pages).
    PartialFrees,
    /// Frees of pages with no record (allocated before the session, or not traced).
    UnmatchedFrees,
    /// `OUTSTANDING` was full: the allocation was counted but not recorded.
    OutstandingFull,
    /// An allocation hit a pfn that still had a record: its free was missed; the stale record
    /// was replaced and its bytes removed from its stack.
    StaleReplaced,
    /// Records moved aside (see [`DETACHED_KEY_BIT`]).
    Detached,
    /// `bpf_get_stackid` failed with -EEXIST (hash bucket taken by another stack).
    StackIdEexist,
    /// `bpf_get_stackid` failed with -ENOMEM (stack map full).
    StackIdEnomem,
    /// `bpf_get_stackid` failed otherwise.
    StackIdOther,
    /// A record named a stack slot outside `STACK_AGG` (should never happen).
    AggMissing,
    /// Reading a tracepoint field failed (should never happen): the event was dropped.
    ReadErrors,
}

impl Counter {
    pub const COUNT: u32 = Counter::ReadErrors as u32 + 1;

    pub const ALL: [Counter; Counter::COUNT as usize] = [
        Counter::AllocsSeen,
        Counter::AllocsTracked,
        Counter::FailedAllocs,
        Counter::SelfAllocs,
        Counter::FreesSeen,
        Counter::FreesMatched,
        Counter::PartialFrees,
        Counter::UnmatchedFrees,
        Counter::OutstandingFull,
        Counter::StaleReplaced,
        Counter::Detached,
        Counter::StackIdEexist,
        Counter::StackIdEnomem,
        Counter::StackIdOther,
        Counter::AggMissing,
        Counter::ReadErrors,
    ];

    /// Stable snake_case name used in the text and JSON reports.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::AllocsSeen => "allocs_seen",
            Counter::AllocsTracked => "allocs_tracked",
            Counter::FailedAllocs => "failed_allocs",
            Counter::SelfAllocs => "self_allocs",
            Counter::FreesSeen => "frees_seen",
            Counter::FreesMatched => "frees_matched",
            Counter::PartialFrees => "partial_frees",
            Counter::UnmatchedFrees => "unmatched_frees",
            Counter::OutstandingFull => "outstanding_map_full",
            Counter::StaleReplaced => "stale_records_replaced",
            Counter::Detached => "records_detached",
            Counter::StackIdEexist => "stack_id_eexist",
            Counter::StackIdEnomem => "stack_id_enomem",
            Counter::StackIdOther => "stack_id_other",
            Counter::AggMissing => "agg_missing",
            Counter::ReadErrors => "read_errors",
        }
    }

    /// Counters whose non-zero value means information was lost or is approximate.
    pub const fn is_failure(self) -> bool {
        matches!(
            self,
            Counter::OutstandingFull
                | Counter::StaleReplaced
                | Counter::StackIdEexist
                | Counter::StackIdEnomem
                | Counter::StackIdOther
                | Counter::AggMissing
                | Counter::ReadErrors
        )
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)] structs of integers with explicit padding fields, so
    // every byte pattern is a valid value and there are no implicit padding bytes.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PageRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StackAgg {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<PageAllocLayout>(), 24);
        assert_eq!(size_of::<PageFreeLayout>(), 8);
        assert_eq!(size_of::<Config>(), 24 + 8 + 8 + 16);
        assert_eq!(size_of::<PageRecord>(), 8 + 4 * 5 + 4 + 16);
        assert_eq!(size_of::<StackAgg>(), 32);
    }

    #[test]
    fn counters_are_dense_and_named_uniquely() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        let mut names: std::vec::Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::COUNT as usize);
    }
}
