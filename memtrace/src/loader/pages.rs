//! What the page programs need to know about this machine's memory: the highest pfn (sizes the
//! tracked-pfn bitmap) and, for the tp_btf programs, where `struct page` of pfn 0 lives
//! (`vmemmap`), learned by faulting in pages of our own and reading their pfns from
//! `/proc/self/pagemap` (see [`super::calibrate`]).

use std::{io::Read as _, os::unix::fs::FileExt as _};

use aya::{maps::Array, Ebpf};
use memtrace_common::{calib, maps};

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

/// `u64` words of the tracked-pfn bitmap for pfns below `max_pfn` (0: no bitmap).
pub fn bitmap_words(max_pfn: Option<u64>) -> u32 {
    match max_pfn {
        // 2^32 words = 2^38 pfns = 1 EiB of 4 KiB pages: more than any machine has.
        Some(n) => u32::try_from(n.div_ceil(64)).unwrap_or(u32::MAX),
        None => 0,
    }
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
        assert_eq!(bitmap_words(Some(6_553_600)), 102_400);
        assert_eq!(bitmap_words(Some(65)), 2);
        assert_eq!(bitmap_words(None), 0);
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
