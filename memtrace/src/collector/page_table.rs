//! The page table as user space reads it: the array is mapped a few MiB at a time (no syscall
//! per entry, and never more than one window resident), its entries grouped into allocations
//! and turned into the model's page records, with owners from the owner table and gfp flags
//! from each stack's first allocation. Layout and index math: `memtrace_common::page_table`.
//!
//! An allocation is the entries equal to one another within the aligned range of indices its
//! order spans ([`page_table::index_span`]): a page freed from the middle of a split
//! allocation leaves the others one allocation, and a page of it re-allocated by someone else
//! has an entry of its own (another order, stack, owner or time). Allocations whose entries are
//! equal (same order, stack, owner and time unit) and that still hold their head or all lack
//! it are one record (`more_allocations`): the report cannot tell them apart, and a hold of
//! a million pages from one stack is then a few hundred records, not a million.

use std::{
    collections::HashMap,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use anyhow::{bail, Context as _};
use memtrace_common::{
    context,
    page_table::{self, Chunk, Entry, OWNER_OTHER, TIME_UNIT_SHIFT},
    record_flags, OwnerRecord, PageRecord,
};

/// Bytes mapped at once while scanning the table (a multiple of any page size up to 64 KiB).
const WINDOW: usize = 4 << 20;

/// What the records need besides the table and the owners.
pub struct Decode<'a> {
    pub pfn_shift: u32,
    pub stack_bits: u32,
    /// CLOCK_MONOTONIC ns the entry times count from.
    pub start_ns: u64,
    /// Page stack slot → `STACK_GFP` value.
    pub stack_gfp: &'a [u64],
}

/// Name of the owner of allocations the owner table had no room for.
pub const OTHER_OWNERS: &[u8; 16] = b"[other owners]\0\0";

/// Writes the owner `index` (into `owners`; 0, indices it does not hold and empty records of
/// indices not handed out yet: "other owners") into `r`.
fn set_owner(r: &mut PageRecord, index: u32, owners: &[OwnerRecord]) {
    let owner = match index {
        OWNER_OTHER => None,
        i => owners
            .get(i as usize)
            .filter(|o| **o != OwnerRecord::default()),
    };
    (r.tgid, r.pid, r.cgroup_id, r.comm) = match owner {
        Some(o) => (o.tgid, o.pid, o.cgroup_id, o.comm),
        None => (0, 0, 0, *OTHER_OWNERS),
    };
}

impl Decode<'_> {
    /// The model's record of an allocation whose range starts at `first_index`, keyed by its
    /// head pfn, with `pages` entries (`has_first`: the head's among them); no owner yet.
    fn record(
        &self,
        first_index: u64,
        e: &Entry,
        pages: u32,
        has_first: bool,
    ) -> (u64, PageRecord) {
        let (gfp_flags, migratetype) = self
            .stack_gfp
            .get(e.stack as usize)
            .and_then(|&v| page_table::gfp_decode(v))
            .unwrap_or((0, u8::MAX));
        let head_pfn =
            page_table::sampled_pfn(first_index, self.pfn_shift) & !((1u64 << e.order) - 1);
        let record = PageRecord {
            ts_ns: self
                .start_ns
                .saturating_add(e.time.saturating_mul(1 << TIME_UNIT_SHIFT)),
            stack_id: e.stack,
            tgid: 0,
            pid: 0,
            gfp_flags,
            remaining_pages: pages,
            order: e.order as u8,
            migratetype,
            flags: if has_first {
                0
            } else {
                record_flags::HEAD_FREED
            },
            context: context::UNKNOWN,
            comm: [0; 16],
            cgroup_id: 0,
            more_allocations: 0,
            _pad: 0,
        };
        (head_pfn, record)
    }
}

/// An allocation spanning several indices whose range the scan has not left yet.
struct Open {
    raw: u64,
    entry: Entry,
    first_index: u64,
    /// Index after its range.
    end: u64,
    pages: u32,
    has_first: bool,
}

/// Groups the entries of the table, visited in index order, into allocations, and identical
/// allocations into one record each.
pub struct Grouper<'a> {
    decode: Decode<'a>,
    /// A handful at most (nested orders).
    open: Vec<Open>,
    /// (raw entry, holds its head) → position in `records`.
    merged: HashMap<(u64, bool), usize>,
    /// The last of them: neighbouring pages often come from identical allocations.
    last: Option<((u64, bool), usize)>,
    records: Vec<(u64, PageRecord)>,
    /// The owner index of each record.
    owner_of: Vec<u32>,
}

/// The allocations of a scan ([`Grouper::finish`]).
pub struct Grouped {
    pub records: Vec<(u64, PageRecord)>,
    /// Owner indices some entry refers to, ascending (0, "other owners", included).
    pub owners_referenced: Vec<u32>,
}

impl<'a> Grouper<'a> {
    pub fn new(decode: Decode<'a>) -> Self {
        Grouper {
            decode,
            open: Vec::new(),
            merged: HashMap::new(),
            last: None,
            records: Vec::new(),
            owner_of: Vec::new(),
        }
    }

    /// Entry `v` (not 0) at `index`; indices must come in increasing order.
    pub fn push(&mut self, index: u64, v: u64) {
        let Some(entry) = page_table::decode(v, self.decode.stack_bits) else {
            return;
        };
        let span = page_table::index_span(entry.order, self.decode.pfn_shift);
        if span == 1 {
            self.add(index, v, &entry, 1, true);
            return;
        }
        self.close_before(index);
        let offset = index & (span - 1);
        let first_index = index - offset;
        if let Some(open) = self
            .open
            .iter_mut()
            .find(|o| o.raw == v && o.first_index == first_index)
        {
            open.pages = open.pages.saturating_add(1);
            open.has_first |= offset == 0;
            return;
        }
        self.open.push(Open {
            raw: v,
            entry,
            first_index,
            end: first_index + span,
            pages: 1,
            has_first: offset == 0,
        });
    }

    /// Records the allocations whose range ends at or before `index`.
    fn close_before(&mut self, index: u64) {
        let mut i = 0;
        while i < self.open.len() {
            if self.open[i].end <= index {
                let o = self.open.swap_remove(i);
                self.add(o.first_index, o.raw, &o.entry, o.pages, o.has_first);
            } else {
                i += 1;
            }
        }
    }

    /// One allocation: merged into the record of identical ones, or a new record.
    fn add(&mut self, first_index: u64, raw: u64, entry: &Entry, pages: u32, has_first: bool) {
        let key = (raw, has_first);
        let at = match self.last {
            Some((k, at)) if k == key => Some(at),
            _ => self.merged.get(&key).copied(),
        };
        if let Some(at) = at {
            let r = &mut self.records[at].1;
            r.remaining_pages = r.remaining_pages.saturating_add(pages);
            r.more_allocations = r.more_allocations.saturating_add(1);
            self.last = Some((key, at));
            return;
        }
        let at = self.records.len();
        let record = self.decode.record(first_index, entry, pages, has_first);
        self.records.push(record);
        self.owner_of.push(entry.owner);
        self.merged.insert(key, at);
        self.last = Some((key, at));
    }

    /// The allocations, their owners taken from `owners` (index → owner), read after the
    /// scan: an index recycled for a new owner during the scan then names that owner, whose
    /// pages the scan may have seen, never the one before it (it had no pages left).
    pub fn finish(mut self, owners: &[OwnerRecord]) -> Grouped {
        self.close_before(u64::MAX);
        for ((_, r), &index) in self.records.iter_mut().zip(&self.owner_of) {
            set_owner(r, index, owners);
        }
        let mut owners_referenced = self.owner_of;
        owners_referenced.sort_unstable();
        owners_referenced.dedup();
        Grouped {
            records: self.records,
            owners_referenced,
        }
    }
}

/// Outstanding allocations per stack slot (slots from `slots` on are not counted).
pub fn count_by_stack(records: &[(u64, PageRecord)], slots: u32) -> Vec<u64> {
    let mut counts = vec![0u64; slots as usize];
    for (_, r) in records {
        if let Some(c) = counts.get_mut(r.stack_id as usize) {
            *c += 1 + u64::from(r.more_allocations);
        }
    }
    counts
}

/// A read-only shared mapping of part of a `BPF_F_MMAPABLE` array map, unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of the map's values from byte `offset` (a multiple of the page size).
    fn new(fd: BorrowedFd<'_>, offset: usize, len: usize) -> anyhow::Result<Mapping> {
        let off = libc::off_t::try_from(offset).context("mmap offset out of range")?;
        // SAFETY: a new shared read-only mapping of a BPF map fd we hold; the kernel checks the
        // range against the map's size. Nothing else is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                off,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("mmap of {len} bytes at {offset} of a BPF map"));
        }
        Ok(Mapping { ptr, len })
    }

    /// The mapping as `len / size_of::<T>()` values.
    fn values<T: aya::Pod>(&self) -> &[T] {
        // SAFETY: the mapping is readable for `len` bytes, page-aligned (so aligned for any
        // T), lives as long as `self`, and T is plain data valid for any bytes. Only used for
        // the owner table, whose records are complete before their index is handed out and
        // never change afterwards.
        unsafe {
            std::slice::from_raw_parts(self.ptr.cast::<T>(), self.len / std::mem::size_of::<T>())
        }
    }
}

impl Mapping {
    /// The `i`-th `u64` of the mapping (0 beyond it), read once: while a snapshot reads the
    /// table (`--min-age`), the programs may be writing it.
    fn entry(&self, i: usize) -> u64 {
        if i >= self.len / 8 {
            return 0;
        }
        // SAFETY: in bounds (checked above) of a readable, page-aligned mapping that lives as
        // long as `self`; a volatile aligned u64 load is never torn, whatever writes it.
        unsafe { std::ptr::read_volatile(self.ptr.cast::<u64>().add(i)) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|&p| p > 0)
        .unwrap_or(4096)
}

/// Visits every entry in use of a page table of `chunks` values (`fd`: the PAGE_TABLE map),
/// in index order, mapping [`WINDOW`] bytes at a time.
pub fn scan(fd: BorrowedFd<'_>, chunks: u32, mut f: impl FnMut(u64, u64)) -> anyhow::Result<()> {
    let chunk_bytes = std::mem::size_of::<Chunk>();
    let total = usize::try_from(chunks)?
        .checked_mul(chunk_bytes)
        .context("page table size overflows")?;
    let window = WINDOW.max(page_size());
    let mut offset = 0usize;
    while offset < total {
        let len = (total - offset).min(window);
        let map_len = len.next_multiple_of(page_size());
        let mapping = Mapping::new(fd, offset, map_len)?;
        let base = (offset / 8) as u64;
        for i in 0..len / 8 {
            let v = mapping.entry(i);
            if v != 0 {
                f(base + i as u64, v);
            }
        }
        offset += len;
    }
    Ok(())
}

/// The first `count` values of a `BPF_F_MMAPABLE` array map of `T`.
pub fn read_mapped<T: aya::Pod>(fd: BorrowedFd<'_>, count: usize) -> anyhow::Result<Vec<T>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let size = std::mem::size_of::<T>();
    if !size.is_multiple_of(8) {
        bail!("values of {size} bytes are padded in the map; read them otherwise");
    }
    let len = (count * size).next_multiple_of(page_size());
    let mapping = Mapping::new(fd, 0, len)?;
    Ok(mapping.values::<T>()[..count].to_vec())
}

/// The fd of a map, for [`scan`] and [`read_mapped`].
pub fn map_fd(m: &aya::maps::Map) -> anyhow::Result<BorrowedFd<'_>> {
    match m {
        aya::maps::Map::Array(data) => Ok(data.fd().as_fd()),
        _ => bail!("not an array map"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BITS: u32 = 15;

    fn entry(order: u32, owner: u32, stack: u32, time: u64) -> u64 {
        page_table::encode(
            &Entry {
                order,
                owner,
                stack,
                time,
            },
            BITS,
        )
    }

    fn nginx() -> [u8; 16] {
        let mut comm = [0u8; 16];
        comm[..5].copy_from_slice(b"nginx");
        comm
    }

    fn owners() -> Vec<OwnerRecord> {
        vec![
            OwnerRecord::default(),
            OwnerRecord {
                cgroup_id: 42,
                tgid: 100,
                pid: 101,
                comm: nginx(),
            },
            OwnerRecord {
                cgroup_id: 43,
                tgid: 200,
                pid: 200,
                comm: nginx(),
            },
        ]
    }

    fn stack_gfp() -> Vec<u64> {
        let mut v = vec![0u64; 16];
        v[7] = page_table::gfp_value(0xcc0, 0);
        v
    }

    fn grouped(pfn_shift: u32, entries: &[(u64, u64)]) -> Grouped {
        let (owners, gfp) = (owners(), stack_gfp());
        let mut g = Grouper::new(Decode {
            pfn_shift,
            stack_bits: BITS,
            start_ns: 5_000_000_000,
            stack_gfp: &gfp,
        });
        for &(i, v) in entries {
            g.push(i, v);
        }
        g.finish(&owners)
    }

    fn group(pfn_shift: u32, entries: &[(u64, u64)]) -> Vec<(u64, PageRecord)> {
        grouped(pfn_shift, entries).records
    }

    #[test]
    fn owners_referenced_are_every_owner_index_of_an_entry() {
        // Owner 2 on an order-1 allocation and a single page, owner 1 once, owner 5 (beyond
        // the owner table: "other owners" in the records, still referenced), none of 3 or 4.
        let g = grouped(
            0,
            &[
                (2, entry(1, 2, 7, 1)),
                (3, entry(1, 2, 7, 1)),
                (9, entry(0, 1, 7, 1)),
                (10, entry(0, 2, 7, 1)),
                (20, entry(0, 5, 7, 1)),
                (21, entry(0, 0, 7, 1)),
            ],
        );
        assert_eq!(g.owners_referenced, vec![0, 1, 2, 5]);
        let comm_of = |key: u64| {
            g.records
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, r)| r.comm)
        };
        assert_eq!(comm_of(9), Some(nginx()));
        assert_eq!(comm_of(20), Some(*OTHER_OWNERS));
    }

    /// (key, stack, pages, allocations, holds the head) of each record.
    fn shape(records: &[(u64, PageRecord)]) -> Vec<(u64, u32, u32, u32, bool)> {
        records
            .iter()
            .map(|(k, r)| {
                (
                    *k,
                    r.stack_id,
                    r.remaining_pages,
                    1 + r.more_allocations,
                    r.flags & record_flags::HEAD_FREED == 0,
                )
            })
            .collect()
    }

    #[test]
    fn identical_order_zero_pages_are_one_record() {
        let a = entry(0, 1, 7, 3);
        let b = entry(0, 1, 7, 4);
        let r = group(0, &[(10, a), (11, a), (12, b), (13, a)]);
        assert_eq!(shape(&r), [(10, 7, 3, 3, true), (12, 7, 1, 1, true)]);
    }

    #[test]
    fn whole_and_split_allocations() {
        let big = entry(3, 1, 7, 3);
        // An order-3 allocation at 16 whose pages 17 and 19 were freed: one allocation of 6.
        let mut entries: Vec<(u64, u64)> = (16..24)
            .filter(|i| *i != 17 && *i != 19)
            .map(|i| (i, big))
            .collect();
        // Another, identical entry at 24 (the next block): another allocation.
        entries.extend((24..32).map(|i| (i, big)));
        // Both hold their heads: one record of two allocations, 14 pages.
        assert_eq!(shape(&group(0, &entries)), [(16, 7, 14, 2, true)]);
        // Without the head of the first: two records.
        entries.retain(|(i, _)| *i != 16);
        assert_eq!(
            shape(&group(0, &entries)),
            [(16, 7, 5, 1, false), (24, 7, 8, 1, true)]
        );
    }

    #[test]
    fn head_freed_and_pages_reused_inside_a_split_allocation() {
        let big = entry(2, 1, 7, 3);
        let other = entry(0, 2, 9, 5);
        // Order 2 at 8: head freed, page 9 re-allocated by another owner, 10 and 11 still out.
        let r = group(0, &[(9, other), (10, big), (11, big)]);
        assert_eq!(shape(&r), [(9, 9, 1, 1, true), (8, 7, 2, 1, false)]);
        // Pages of a split allocation around a re-allocated one stay one allocation.
        let r = group(0, &[(8, big), (9, other), (10, big)]);
        assert_eq!(shape(&r), [(9, 9, 1, 1, true), (8, 7, 2, 1, true)]);
    }

    #[test]
    fn sampled_tables_group_in_index_space() {
        // pfn_shift 3: an order-5 allocation spans 4 entries; order 1 one entry.
        let big = entry(5, 1, 7, 3);
        let small = entry(1, 1, 7, 3);
        let r = group(
            3,
            &[
                (4, big),
                (5, big),
                (6, big),
                (7, big),
                (8, small),
                (9, small),
            ],
        );
        // The two order-1 allocations are identical: one record of two.
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].1.remaining_pages, r[0].1.more_allocations), (2, 1));
        // One smaller than a block: its sampled pfn, aligned down to its order.
        assert_eq!(r[0].0, page_table::sampled_pfn(8, 3) & !1);
        // The head pfn of an allocation larger than a block.
        assert_eq!(shape(&r)[1], (32, 7, 4, 1, true));
    }

    #[test]
    fn records_carry_owner_stack_flags_and_time() {
        let r = group(
            0,
            &[(0x1201, entry(3, 1, 7, 10)), (0x1202, entry(3, 1, 7, 10))],
        );
        let (key, r) = r[0];
        assert_eq!(key, 0x1200);
        assert_eq!(
            (r.tgid, r.pid, r.cgroup_id, r.comm),
            (100, 101, 42, nginx())
        );
        assert_eq!((r.stack_id, r.order, r.remaining_pages), (7, 3, 2));
        assert_eq!((r.gfp_flags, r.migratetype), (0xcc0, 0));
        assert_eq!(r.flags, record_flags::HEAD_FREED);
        assert_eq!(r.ts_ns, 5_000_000_000 + (10 << TIME_UNIT_SHIFT));
        assert_eq!(r.context, context::UNKNOWN);
        // Owner table full, stack without flags.
        let (key, r) = group(0, &[(3, entry(0, OWNER_OTHER, 5, 0))])[0];
        assert_eq!(key, 3);
        assert_eq!((r.tgid, &r.comm), (0, OTHER_OWNERS));
        assert_eq!((r.gfp_flags, r.migratetype, r.flags), (0, u8::MAX, 0));
        // An owner index the owner table does not hold (not read): "other owners" too.
        let (_, r) = group(0, &[(3, entry(0, 77, 5, 0))])[0];
        assert_eq!(&r.comm, OTHER_OWNERS);
    }

    #[test]
    fn counts_by_stack() {
        let r = group(
            0,
            &[
                (1, entry(0, 1, 7, 0)),
                (2, entry(0, 1, 7, 0)),
                (3, entry(0, 1, 8, 0)),
            ],
        );
        assert_eq!(r.len(), 2);
        let c = count_by_stack(&r, 8);
        assert_eq!((c[7], c[6], c.len()), (2, 0, 8));
    }
}
