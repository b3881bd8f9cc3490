//! Start-up calibration, before any tracing program is attached: the start-up programs of
//! `memtrace-ebpf/src/probes/calib.rs` watch memtrace's own allocations while this module makes
//! a few on purpose, then they are detached and unloaded again.
//!
//! - **vmemmap** (the tp_btf page programs turn a `struct page *` into a pfn): memtrace faults
//!   in pages of its own and reads their pfns from `/proc/self/pagemap` ([`super::pages`]).
//! - **object pages** (the slab programs read an object's cache through its slab): memtrace
//!   makes a kmalloc larger than any kmalloc cache (the value of an `fsetxattr(2)`, copied
//!   with `kvmalloc` before the filesystem is even asked), which is one buddy allocation: its
//!   address `v` and its `struct page *` `p` give `K = p - (v >> page_shift) * sizeof(struct
//!   page)`, the same for every direct-map address.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use aya::{
    maps::Array,
    programs::{BtfTracePoint, TracePoint},
    Btf, Ebpf,
};
use memtrace_common::{calib, maps, programs};

use super::attach::{detach_all, short_error, verifier_summary, Attached, Link};
use super::pages;

type Slots = [u64; calib::COUNT as usize];

/// What to calibrate.
pub struct Wanted {
    /// The vmemmap base for the tp_btf page programs.
    pub vmemmap: bool,
    /// The object → `struct page` constant for slab cache names; the `kmalloc` events to
    /// watch (`kmalloc`, plus `kmalloc_node` on kernels before 6.1).
    pub object_pages: Option<Vec<&'static str>>,
    pub page_struct_size: u32,
    pub page_size: u64,
    /// Largest kmalloc cache object: the calibration kmalloc must be larger.
    pub kmalloc_max_size: u32,
}

/// Outcomes (`Err`: why not, one line).
pub struct Calibration {
    pub vmemmap: Result<u64, String>,
    pub object_pages: Result<u64, String>,
}

/// Runs the calibrations `wanted` asks for and leaves their results in `CALIB` for the tracing
/// programs. The start-up programs are detached and unloaded on every path.
pub fn run(ebpf: &mut Ebpf, btf: Option<&Btf>, wanted: &Wanted) -> Calibration {
    let not_wanted = || Err("not needed".to_string());
    let mut out = Calibration {
        vmemmap: not_wanted(),
        object_pages: not_wanted(),
    };
    if !wanted.vmemmap && wanted.object_pages.is_none() {
        return out;
    }
    let Some(btf) = btf else {
        let e = Err("no kernel BTF".to_string());
        out.vmemmap = if wanted.vmemmap {
            e.clone()
        } else {
            out.vmemmap
        };
        out.object_pages = if wanted.object_pages.is_some() {
            e
        } else {
            out.object_pages
        };
        return out;
    };
    let mut attached = Vec::new();
    let mut loaded = Vec::new();
    let page_prog = attach_page_alloc(ebpf, btf, &mut attached, &mut loaded);
    if wanted.vmemmap {
        out.vmemmap = page_prog
            .clone()
            .and_then(|()| pages::calibrate(ebpf, wanted.page_struct_size, wanted.page_size));
    }
    if let Some(events) = &wanted.object_pages {
        out.object_pages = page_prog
            .and_then(|()| attach_kmalloc(ebpf, events, &mut attached, &mut loaded))
            .and_then(|()| object_pages(ebpf, wanted));
    }
    if let Err(e) = detach_all(ebpf, attached) {
        // Unlikely; the programs act on memtrace's own process only, so nothing is disturbed.
        eprintln!("memtrace: warning: detaching the calibration programs: {e:#}");
    }
    for program in loaded {
        unload(ebpf, program);
    }
    let mut slots: Slots = [0; calib::COUNT as usize];
    if let Ok(base) = out.vmemmap {
        slots[calib::VMEMMAP_PLUS_ONE as usize] = base.wrapping_add(1);
    }
    if let Ok(k) = out.object_pages {
        slots[calib::OBJ_PAGE_BASE as usize] = k;
    }
    if let Err(e) = write_slots(ebpf, slots) {
        let e = Err(e);
        out.vmemmap = out.vmemmap.and(e.clone());
        out.object_pages = out.object_pages.and(e);
    }
    out
}

fn attach_page_alloc(
    ebpf: &mut Ebpf,
    btf: &Btf,
    attached: &mut Vec<Attached>,
    loaded: &mut Vec<&'static str>,
) -> Result<(), String> {
    let program = programs::CALIB_PAGE_ALLOC;
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("the eBPF object has no program {program}"))?
        .try_into()
        .map_err(|e| format!("program {program}: {e}"))?;
    prog.load("mm_page_alloc", btf)
        .map_err(|e| verifier_summary(&e))?;
    loaded.push(program);
    let link = prog.attach().map_err(|e| short_error(&e))?;
    attached.push(Attached {
        program,
        link: Link::BtfTracePoint(link),
    });
    Ok(())
}

fn attach_kmalloc(
    ebpf: &mut Ebpf,
    events: &[&'static str],
    attached: &mut Vec<Attached>,
    loaded: &mut Vec<&'static str>,
) -> Result<(), String> {
    let program = programs::CALIB_KMALLOC;
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("the eBPF object has no program {program}"))?
        .try_into()
        .map_err(|e| format!("program {program}: {e}"))?;
    prog.load().map_err(|e| verifier_summary(&e))?;
    loaded.push(program);
    for event in events {
        let link = prog
            .attach("kmem", event)
            .map_err(|e| format!("kmem:{event}: {}", short_error(&e)))?;
        attached.push(Attached {
            program,
            link: Link::TracePoint(link),
        });
    }
    Ok(())
}

fn unload(ebpf: &mut Ebpf, program: &str) {
    let Some(prog) = ebpf.program_mut(program) else {
        return;
    };
    let result = match prog {
        aya::programs::Program::BtfTracePoint(p) => p.unload(),
        aya::programs::Program::TracePoint(p) => p.unload(),
        _ => Ok(()),
    };
    if let Err(e) = result {
        eprintln!(
            "memtrace: warning: unloading {program}: {}",
            short_error(&e)
        );
    }
}

fn calib_map(ebpf: &mut Ebpf) -> Result<Array<&mut aya::maps::MapData, Slots>, String> {
    Array::try_from(
        ebpf.map_mut(maps::CALIB)
            .ok_or_else(|| format!("the eBPF object has no map {}", maps::CALIB))?,
    )
    .map_err(|e| format!("map {}: {e}", maps::CALIB))
}

fn write_slots(ebpf: &mut Ebpf, slots: Slots) -> Result<(), String> {
    calib_map(ebpf)?
        .set(0, slots, 0)
        .map_err(|e| format!("writing {}: {e}", maps::CALIB))
}

fn read_slots(ebpf: &mut Ebpf) -> Result<Slots, String> {
    calib_map(ebpf)?
        .get(&0, 0)
        .map_err(|e| format!("reading {}: {e}", maps::CALIB))
}

/// Large kmallocs made on purpose; the first is not used (it may also fault in the buffer),
/// the others must agree.
const PROBES: usize = 4;
/// The kernel refuses larger extended attribute values (`XATTR_SIZE_MAX`) before copying.
const XATTR_SIZE_MAX: usize = 65536;

/// The object → `struct page` constant from memtrace's own large kmallocs.
fn object_pages(ebpf: &mut Ebpf, wanted: &Wanted) -> Result<u64, String> {
    let page_size = usize::try_from(wanted.page_size).map_err(|_| "page size too large")?;
    if !page_size.is_power_of_two() || wanted.page_struct_size == 0 {
        return Err(format!(
            "page size {page_size} / struct page size {} unusable",
            wanted.page_struct_size
        ));
    }
    // Larger than any kmalloc cache, so kvmalloc takes whole pages from the buddy allocator.
    let len = (4 * page_size)
        .max(2 * wanted.kmalloc_max_size as usize)
        .next_power_of_two();
    if len > XATTR_SIZE_MAX {
        return Err(format!(
            "the largest kmalloc cache ({} bytes) leaves no room for a larger extended attribute",
            wanted.kmalloc_max_size
        ));
    }
    // SAFETY: memfd_create with a NUL-terminated name; the fd is owned below.
    let fd = unsafe { libc::memfd_create(c"memtrace-calibration".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let value = vec![0x5au8; len];
    let mut found = Vec::new();
    for i in 0..PROBES {
        write_slots(ebpf, [0; calib::COUNT as usize])?;
        // SAFETY: a valid fd, a NUL-terminated name and a buffer of `len` bytes. The result
        // does not matter (shmem before 6.6 refuses user xattrs, after the value was copied).
        unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                c"user.memtrace-calibration".as_ptr(),
                value.as_ptr().cast(),
                len,
                0,
            )
        };
        let slots = read_slots(ebpf)?;
        let sample = LargeKmalloc {
            page: slots[calib::LARGE_PAGE_ABS as usize],
            order: slots[calib::LARGE_PAGE_ORDER as usize],
            ptr: slots[calib::LARGE_PTR as usize],
            bytes: slots[calib::LARGE_BYTES as usize],
        };
        if i > 0 {
            found.push(sample.page_base(wanted.page_size, wanted.page_struct_size));
        }
    }
    agreed(&found)
}

/// One large kmalloc of memtrace's own, as the start-up programs saw it.
#[derive(Clone, Copy, Debug)]
struct LargeKmalloc {
    page: u64,
    order: u64,
    ptr: u64,
    bytes: u64,
}

impl LargeKmalloc {
    /// `K` with `struct page` of `v` at `K + (v >> page_shift) * page_struct_size`, when the
    /// sample is consistent: a page-aligned address, and as many bytes as the pages' order.
    fn page_base(self, page_size: u64, page_struct_size: u32) -> Result<u64, String> {
        if self.ptr == 0 || self.page == 0 {
            return Err("no large kmalloc of memtrace's own was seen".into());
        }
        if self.order > 20 || self.bytes != page_size << self.order {
            return Err(format!(
                "the large kmalloc ({} bytes) does not match the pages seen before it (order {})",
                self.bytes, self.order
            ));
        }
        if !self.ptr.is_multiple_of(page_size) {
            return Err(format!(
                "the large kmalloc at {:#x} is not page-aligned",
                self.ptr
            ));
        }
        let shift = page_size.trailing_zeros();
        Ok(self
            .page
            .wrapping_sub((self.ptr >> shift).wrapping_mul(u64::from(page_struct_size))))
    }
}

/// The value at least two samples give and none contradicts.
fn agreed(found: &[Result<u64, String>]) -> Result<u64, String> {
    let ok: Vec<u64> = found
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    match ok.first() {
        Some(&k) if ok.len() >= 2 && ok.iter().all(|&x| x == k) => Ok(k),
        Some(_) => Err(format!("the samples disagree ({ok:#x?})")),
        None => Err(found
            .iter()
            .find_map(|r| r.as_ref().err().cloned())
            .unwrap_or_else(|| "no samples".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_base_from_a_large_kmalloc() {
        let vmemmap = 0xffd4_0000_0000_0000u64;
        let direct = 0xff11_0000_0000_0000u64;
        let pfn = 0x12_3450u64;
        let sample = LargeKmalloc {
            page: vmemmap + pfn * 64,
            order: 2,
            ptr: direct + pfn * 4096,
            bytes: 16384,
        };
        let k = sample.page_base(4096, 64).unwrap();
        // Any other direct-map address maps to its struct page.
        let other = direct + 0x777 * 4096 + 123;
        assert_eq!(k.wrapping_add((other >> 12) * 64), vmemmap + 0x777 * 64);
        // Sizes that do not match the order, unaligned addresses, nothing seen.
        assert!(LargeKmalloc {
            bytes: 8192,
            ..sample
        }
        .page_base(4096, 64)
        .is_err());
        assert!(LargeKmalloc {
            ptr: sample.ptr + 8,
            ..sample
        }
        .page_base(4096, 64)
        .is_err());
        assert!(LargeKmalloc { page: 0, ..sample }
            .page_base(4096, 64)
            .is_err());
    }

    #[test]
    fn samples_must_agree() {
        assert_eq!(agreed(&[Ok(5), Ok(5), Ok(5)]), Ok(5));
        assert_eq!(agreed(&[Err("x".into()), Ok(5), Ok(5)]), Ok(5));
        assert!(agreed(&[Ok(5), Ok(6), Ok(5)]).is_err());
        assert!(agreed(&[Ok(5)]).is_err());
        assert_eq!(agreed(&[Err("x".into())]), Err("x".into()));
    }
}
