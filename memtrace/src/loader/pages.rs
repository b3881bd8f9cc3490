//! What the page programs need to know about this machine's memory: the highest pfn (sizes the
//! page table) and, for the tp_btf programs, where `struct page` of pfn 0 lives (`vmemmap`),
//! learned by faulting in pages of our own and reading their pfns from `/proc/self/pagemap`
//! (see [`super::calibrate`]).

use std::{io::Read as _, os::unix::fs::FileExt as _};

use aya::{maps::Array, Ebpf};
use memtrace_common::{
    calib, maps,
    page_table::{CHUNK, CHUNK_SHIFT},
};

/// Most entries the page table may have: 256 Mi entries, 2 GiB of kernel memory, one per pfn
/// of 1 TiB of 4 KiB pages. A host with more pfns gets a sampled table.
pub const PAGE_TABLE_CAP: u64 = 1 << 28;

/// Test knob: a smaller cap than [`PAGE_TABLE_CAP`] (entries), to exercise pfn sampling on a
/// small machine.
pub const CAP_ENV: &str = "MEMTRACE_PAGE_TABLE_CAP";

/// Size and sampling of the page table for a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// The highest pfn plus one.
    pub max_pfn: u64,
    /// log2 of the pfns one entry stands for: 0 = one entry per pfn (exact).
    pub pfn_shift: u32,
    /// Entries (`max_pfn >> pfn_shift`, rounded up).
    pub indices: u64,
    /// Array values (64 entries each).
    pub chunks: u32,
}

impl Geometry {
    /// Kernel memory of the table's entries.
    pub fn bytes(&self) -> u64 {
        u64::from(self.chunks) * (CHUNK as u64) * 8
    }
}

/// Test knob: fewer owners than the default (to exercise "other owners").
pub const OWNER_CAP_ENV: &str = "MEMTRACE_OWNER_CAP";

/// The page table of a session that traces pages (see `memtrace_common::page_table`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageTable {
    pub geometry: Geometry,
    /// Where the highest pfn came from.
    pub max_pfn_source: &'static str,
    /// Owners the owner table holds (plus "other owners").
    pub owner_cap: u32,
}

impl PageTable {
    /// Pages each entry stands for (1: exact).
    pub fn pages_per_entry(&self) -> u32 {
        1u32.checked_shl(self.geometry.pfn_shift)
            .unwrap_or(u32::MAX)
    }

    /// One line for the start message and the page kind's note.
    pub fn describe(&self, page_size: u64) -> String {
        let g = &self.geometry;
        let mib = g.bytes() as f64 / (1024.0 * 1024.0);
        if g.pfn_shift == 0 {
            format!(
                "page table: one entry per pfn, {} entries ({mib:.1} MiB, {} of RAM)",
                g.indices,
                crate::units::format_bytes(g.max_pfn.saturating_mul(page_size))
            )
        } else {
            format!(
                "page table: one sampled pfn per {} ({} entries, {mib:.1} MiB, the cap): page \
                 figures are estimates",
                self.pages_per_entry(),
                g.indices
            )
        }
    }
}

/// The page table for pfns below `max_pfn` with at most `cap` entries: one entry per pfn when
/// they fit, else one sampled pfn per block of `2^s` pfns with the smallest `s` that fits
/// (`s = ceil(log2(max_pfn / cap))`).
pub fn geometry(max_pfn: u64, cap: u64) -> Geometry {
    let cap = cap.max(CHUNK as u64);
    let max_pfn = max_pfn.max(1);
    let mut pfn_shift = 0;
    while max_pfn.div_ceil(1u64 << pfn_shift) > cap {
        pfn_shift += 1;
    }
    let indices = max_pfn.div_ceil(1u64 << pfn_shift);
    Geometry {
        max_pfn,
        pfn_shift,
        indices,
        chunks: u32::try_from(indices.div_ceil(1 << CHUNK_SHIFT)).unwrap_or(u32::MAX),
    }
}

/// The end of the highest `System RAM` range of a `/proc/iomem` text, as a pfn (root sees the
/// real addresses; others see zeros, which give `None`).
pub fn max_pfn_from_iomem(text: &str, page_size: u64) -> Option<u64> {
    text.lines()
        .filter(|l| l.trim_end().ends_with(": System RAM"))
        .filter_map(|l| {
            let range = l.trim_start().split(' ').next()?;
            let (_, end) = range.split_once('-')?;
            u64::from_str_radix(end, 16).ok()
        })
        .max()
        .filter(|&end| end > 0)
        .map(|end| (end + 1).div_ceil(page_size.max(1)))
}

/// The highest pfn plus one and where it came from: `/proc/zoneinfo`, else `/proc/iomem`.
pub fn machine_max_pfn(page_size: u64) -> Result<(u64, &'static str), String> {
    if let Some(n) = max_pfn() {
        return Ok((n, "/proc/zoneinfo"));
    }
    std::fs::read_to_string("/proc/iomem")
        .ok()
        .and_then(|t| max_pfn_from_iomem(&t, page_size))
        .map(|n| (n, "/proc/iomem"))
        .ok_or_else(|| {
            "cannot tell the highest pfn (neither /proc/zoneinfo nor /proc/iomem say)".to_string()
        })
}

/// The end of the highest zone (`start_pfn + spanned`) in `/proc/zoneinfo`.
pub fn max_pfn_from_zoneinfo(text: &str) -> Option<u64> {
    let mut spanned = None;
    let mut max = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Node"), _) => spanned = None,
            (Some("spanned"), Some(v)) => spanned = v.parse::<u64>().ok(),
            (Some("start_pfn:"), Some(v)) => {
                if let (Ok(start), Some(span)) = (v.parse::<u64>(), spanned) {
                    max = max.max(Some(start + span));
                }
            }
            _ => {}
        }
    }
    max
}

/// The highest pfn of this machine plus one, if `/proc/zoneinfo` says.
pub fn max_pfn() -> Option<u64> {
    let mut text = String::new();
    std::fs::File::open("/proc/zoneinfo")
        .and_then(|mut f| f.read_to_string(&mut text))
        .ok()?;
    max_pfn_from_zoneinfo(&text)
}

/// The pfn in a `/proc/self/pagemap` entry: bits 0-54 when bit 63 (present) is set. Without
/// CAP_SYS_ADMIN the kernel reports pfn 0.
pub fn pagemap_pfn(entry: u64) -> Option<u64> {
    let pfn = entry & ((1 << 55) - 1);
    (entry & (1 << 63) != 0 && pfn != 0).then_some(pfn)
}

/// The vmemmap base one (page pointer, pfn) pair implies.
pub fn vmemmap_from(page: u64, pfn: u64, page_struct_size: u32) -> u64 {
    page.wrapping_sub(pfn.wrapping_mul(u64::from(page_struct_size)))
}

/// Pages faulted in to calibrate. The first fault may also allocate page tables, so only the
/// later ones are used, and they must all agree.
const PROBE_PAGES: usize = 4;

/// Learns the vmemmap base from pages faulted in by this process while the start-up program
/// `calib_page_alloc` is attached (it stores the `struct page *` of memtrace's own last
/// allocation in `CALIB`); [`super::calibrate::run`] hands it to the tracing programs.
pub fn calibrate(ebpf: &mut Ebpf, page_struct_size: u32, page_size: u64) -> Result<u64, String> {
    let mut calib_map: Array<_, [u64; calib::COUNT as usize]> = Array::try_from(
        ebpf.map_mut(maps::CALIB)
            .ok_or_else(|| format!("the eBPF object has no map {}", maps::CALIB))?,
    )
    .map_err(|e| format!("map {}: {e}", maps::CALIB))?;
    let pagemap = std::fs::File::open("/proc/self/pagemap")
        .map_err(|e| format!("cannot open /proc/self/pagemap: {e}"))?;
    let page_size = usize::try_from(page_size).map_err(|_| "page size too large".to_string())?;
    let len = page_size * PROBE_PAGES;
    // SAFETY: a fresh private anonymous mapping; no existing memory is affected. It is
    // unmapped below on every path.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    let result = (|| {
        // One small page per fault, also where transparent huge pages are on.
        // SAFETY: the range is the mapping created above.
        unsafe { libc::madvise(addr, len, libc::MADV_NOHUGEPAGE) };
        let mut bases = Vec::new();
        for i in 0..PROBE_PAGES {
            calib_map
                .set(0, [0; calib::COUNT as usize], 0)
                .map_err(|e| format!("writing {}: {e}", maps::CALIB))?;
            let p = (addr as usize + i * page_size) as *mut u8;
            // SAFETY: `p` is inside the mapping; the volatile write makes sure the page is
            // faulted in now, in this thread.
            unsafe { std::ptr::write_volatile(p, 1) };
            let page = calib_map
                .get(&0, 0)
                .map_err(|e| format!("reading {}: {e}", maps::CALIB))?[calib::SELF_PAGE as usize];
            let mut entry = [0u8; 8];
            pagemap
                .read_exact_at(&mut entry, (p as u64 / page_size as u64) * 8)
                .map_err(|e| format!("reading /proc/self/pagemap: {e}"))?;
            let Some(pfn) = pagemap_pfn(u64::from_le_bytes(entry)) else {
                return Err("/proc/self/pagemap shows no pfns (needs CAP_SYS_ADMIN)".into());
            };
            if i > 0 && page != 0 {
                bases.push(vmemmap_from(page, pfn, page_struct_size));
            }
        }
        agreed_base(&bases).ok_or_else(|| format!("page pointers and pfns disagree ({bases:x?})"))
    })();
    // SAFETY: unmapping exactly the mapping created above.
    unsafe { libc::munmap(addr, len) };
    result
}

/// The base all samples agree on (at least two).
fn agreed_base(bases: &[u64]) -> Option<u64> {
    let first = *bases.first()?;
    (bases.len() >= 2 && bases.iter().all(|&b| b == first)).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoneinfo_max_pfn_is_the_end_of_the_highest_zone() {
        let text = "\
Node 0, zone      DMA
  pages free     3840
        spanned  4095
        present  3998
  start_pfn:           1
Node 0, zone    DMA32
        spanned  1044480
  start_pfn:           4096
Node 0, zone   Normal
        spanned  5505024
  start_pfn:           1048576
Node 0, zone  Movable
  pages free     0
        spanned  0
Node 1, zone   Normal
        spanned  100
  start_pfn:           7000000
Node 1, zone  Movable
        spanned  0
";
        assert_eq!(max_pfn_from_zoneinfo(text), Some(7_000_100));
        assert_eq!(max_pfn_from_zoneinfo(""), None);
    }

    #[test]
    fn iomem_max_pfn_is_the_end_of_the_highest_ram() {
        let text = "\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
000f0000-000fffff : Reserved
00100000-bffdafff : System RAM
  01000000-01ffffff : Kernel code
100000000-63fffffff : System RAM
fee00000-fee00fff : Local APIC
";
        assert_eq!(max_pfn_from_iomem(text, 4096), Some(0x640000));
        // Without CAP_SYS_ADMIN every address reads as 0.
        let hidden = "00000000-00000000 : System RAM\n";
        assert_eq!(max_pfn_from_iomem(hidden, 4096), None);
        assert_eq!(max_pfn_from_iomem("", 4096), None);
    }

    #[test]
    fn page_table_is_exact_up_to_the_cap_then_sampled() {
        // This machine: 24 GiB, 6 553 600 pfns: exact, 50 MiB.
        let g = geometry(6_553_600, PAGE_TABLE_CAP);
        assert_eq!((g.pfn_shift, g.indices, g.chunks), (0, 6_553_600, 102_400));
        assert_eq!(g.bytes(), 6_553_600 * 8);
        // 1 TiB of pfns: exactly the cap, still exact.
        let g = geometry(1 << 28, PAGE_TABLE_CAP);
        assert_eq!((g.pfn_shift, g.indices), (0, 1 << 28));
        assert_eq!(g.bytes(), 2 << 30);
        // One pfn more: one entry per 2 pfns.
        let g = geometry((1 << 28) + 1, PAGE_TABLE_CAP);
        assert_eq!((g.pfn_shift, g.indices), (1, (1 << 27) + 1));
        // 6 TiB: 1 in 8, and never more than the cap.
        let g = geometry(6 << 28, PAGE_TABLE_CAP);
        assert_eq!((g.pfn_shift, g.indices), (3, 6 << 25));
        assert!(g.indices <= PAGE_TABLE_CAP);
        // A test cap on this machine.
        let g = geometry(6_553_600, 1 << 20);
        assert_eq!((g.pfn_shift, g.indices, g.chunks), (3, 819_200, 12_800));
        // Degenerate input still gives a usable table.
        let g = geometry(0, 0);
        assert_eq!((g.pfn_shift, g.indices, g.chunks), (0, 1, 1));
    }

    #[test]
    fn pagemap_entries_and_bases() {
        assert_eq!(pagemap_pfn((1 << 63) | 0x1234), Some(0x1234));
        // Present, but pfn hidden (no CAP_SYS_ADMIN).
        assert_eq!(pagemap_pfn(1 << 63), None);
        // Swapped or not present.
        assert_eq!(pagemap_pfn(0x1234), None);
        let base = 0xffd4_0000_0000_0000u64;
        assert_eq!(vmemmap_from(base + 0x1234 * 64, 0x1234, 64), base);
        assert_eq!(agreed_base(&[base, base, base]), Some(base));
        assert_eq!(agreed_base(&[base]), None);
        assert_eq!(agreed_base(&[base, base + 64]), None);
    }
}
