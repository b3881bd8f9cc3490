//! BPF maps as a source of percpu and vmalloc allocations with a known size.
//!
//! - [`percpu_array_maps`]: `BPF_MAP_TYPE_PERCPU_ARRAY` maps allocate one percpu area per
//!   entry (`array_map_alloc` → `bpf_map_alloc_percpu` → `pcpu_alloc`). Truth: maps × entries
//!   allocations of `pcpu_obj_full_size(round_up(value_size, 8))` bytes each.
//! - [`vmalloc_array_map`]: a large `BPF_MAP_TYPE_ARRAY` is one vmalloc area
//!   (`array_map_alloc` → `bpf_map_area_alloc` → `__vmalloc_node_range`). Truth: the new areas
//!   `/proc/vmallocinfo` lists for the map (their size and backing pages).
//!
//! Closing a map's last fd frees it asynchronously (a workqueue, possibly after an RCU grace
//! period).

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::{ensure, Context, Result};

use crate::procfs::{memcg_kmem_accounting, percpu_bytes_alloc, possible_cpus, vmalloc_areas};
use crate::{mib, VmallocArea};

pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_CREATE: libc::c_long = 0;
/// The largest value a percpu map takes (`PCPU_MIN_UNIT_SIZE`).
pub const MAX_PERCPU_VALUE: u32 = 32 << 10;

/// The `BPF_MAP_CREATE` part of `union bpf_attr`, zero-padded (the kernel requires every byte
/// past the fields it knows to be zero).
#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
    rest: [u8; 84],
}

/// A BPF map, closed on drop.
#[derive(Debug)]
pub struct BpfMap {
    fd: OwnedFd,
    pub map_type: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

impl BpfMap {
    /// Creates a map with 4-byte keys. `name`: up to 15 characters of `[A-Za-z0-9_.]`.
    pub fn create(map_type: u32, value_size: u32, max_entries: u32, name: &str) -> Result<BpfMap> {
        ensure!(
            name.len() < 16
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.'),
            "bad BPF map name {name:?}"
        );
        let mut map_name = [0u8; 16];
        map_name[..name.len()].copy_from_slice(name.as_bytes());
        let attr = MapCreateAttr {
            map_type,
            key_size: 4,
            value_size,
            max_entries,
            map_flags: 0,
            inner_map_fd: 0,
            numa_node: 0,
            map_name,
            rest: [0; 84],
        };
        // SAFETY: `attr` is a valid, zero-padded BPF_MAP_CREATE attribute that lives for the
        // duration of the call, and the size passed is its size.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_CREATE,
                &attr as *const MapCreateAttr,
                std::mem::size_of::<MapCreateAttr>() as u32,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| {
                format!(
                    "BPF_MAP_CREATE(type {map_type}, value_size {value_size}, max_entries \
                     {max_entries})"
                )
            });
        }
        let fd = i32::try_from(fd).context("fd out of range")?;
        // SAFETY: the kernel just returned this new fd; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(BpfMap {
            fd,
            map_type,
            value_size,
            max_entries,
        })
    }

    /// Closes the map's fd (the kernel frees the map asynchronously).
    pub fn close(self) {
        drop(self.fd);
    }
}

/// `BPF_MAP_TYPE_PERCPU_ARRAY` maps and what they take.
#[derive(Debug)]
pub struct PercpuMaps {
    pub maps: Vec<BpfMap>,
    /// Percpu allocations they made: maps × entries.
    pub allocations: u64,
    /// Bytes of one allocation as the kernel accounts it (the event's `bytes_alloc`): the
    /// 8-byte-aligned value on every possible CPU, plus memcg's per-object pointers.
    pub bytes_per_allocation: u64,
    pub possible_cpus: u64,
    pub memcg_kmem: bool,
}

impl PercpuMaps {
    /// Bytes the maps' percpu allocations take: the truth for the `percpu` kind.
    pub fn bytes(&self) -> u64 {
        self.allocations * self.bytes_per_allocation
    }

    /// Closes every map (freed asynchronously).
    pub fn close(self) {
        for map in self.maps {
            map.close();
        }
    }
}

/// Creates `count` percpu array maps of `entries` entries of `value_size` bytes.
pub fn percpu_array_maps(count: u32, value_size: u32, entries: u32) -> Result<PercpuMaps> {
    ensure!(
        value_size > 0 && value_size <= MAX_PERCPU_VALUE,
        "a percpu map value takes 1..={MAX_PERCPU_VALUE} bytes"
    );
    let possible_cpus = possible_cpus()?;
    let memcg_kmem = memcg_kmem_accounting()?;
    let elem = u64::from(value_size).next_multiple_of(8);
    let maps = (0..count)
        .map(|i| {
            BpfMap::create(
                BPF_MAP_TYPE_PERCPU_ARRAY,
                value_size,
                entries,
                &format!("mt_pcpu_{i}"),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let maps = PercpuMaps {
        maps,
        allocations: u64::from(count) * u64::from(entries),
        bytes_per_allocation: percpu_bytes_alloc(elem, possible_cpus, memcg_kmem),
        possible_cpus,
        memcg_kmem,
    };
    eprintln!(
        "percpu maps: {count} maps x {entries} entries x {value_size} bytes = {} allocations of \
         {} bytes ({possible_cpus} possible CPUs, memcg kmem accounting {memcg_kmem}): {}",
        maps.allocations,
        maps.bytes_per_allocation,
        mib(maps.bytes())
    );
    Ok(maps)
}

/// One large `BPF_MAP_TYPE_ARRAY` and the vmap areas it got.
#[derive(Debug)]
pub struct VmallocMap {
    pub map: BpfMap,
    /// Areas `/proc/vmallocinfo` lists for the array map code after creating the map and not
    /// before: the array itself and, for a large one, its `pages[]` array.
    pub areas: Vec<VmallocArea>,
}

impl VmallocMap {
    /// The areas' sizes (virtual, guard pages included): the truth for the `vmalloc` kind.
    pub fn area_bytes(&self) -> u64 {
        self.areas.iter().map(|a| a.size).sum()
    }

    /// Bytes of the pages backing the areas: the truth for their `vmalloc-backing` pages.
    pub fn page_bytes(&self) -> u64 {
        self.areas.iter().map(|a| a.pages * 4096).sum()
    }

    /// Value bytes the map holds (`value_size × max_entries`).
    pub fn value_bytes(&self) -> u64 {
        u64::from(self.map.value_size) * u64::from(self.map.max_entries)
    }
}

/// Whether an area was made for an array map. `/proc/vmallocinfo` names the caller that
/// `__vmalloc_node_range` was given: `__bpf_map_area_alloc` passes its own return address, so
/// that is `array_map_alloc` (older kernels may show the `bpf_map_area_alloc` helpers).
fn bpf_map_area(area: &VmallocArea) -> bool {
    [
        "array_map_alloc",
        "__bpf_map_area_alloc",
        "bpf_map_area_alloc",
    ]
    .iter()
    .any(|f| area.caller_is(f))
}

/// Creates an array map of `entries` × `value_size` bytes (vmalloc'ed when large) and finds
/// its areas in `/proc/vmallocinfo`.
pub fn vmalloc_array_map(value_size: u32, entries: u32) -> Result<VmallocMap> {
    type AreaKey = (u64, String, u64);
    let count = |areas: Vec<VmallocArea>| {
        let mut counts: BTreeMap<AreaKey, u64> = BTreeMap::new();
        for a in areas.into_iter().filter(bpf_map_area) {
            *counts.entry((a.size, a.caller, a.pages)).or_default() += 1;
        }
        counts
    };
    let before = count(vmalloc_areas()?);
    let map = BpfMap::create(BPF_MAP_TYPE_ARRAY, value_size, entries, "mt_vmalloc")?;
    let after = count(vmalloc_areas()?);
    let mut areas = Vec::new();
    for ((size, caller, pages), n) in after {
        let was = before
            .get(&(size, caller.clone(), pages))
            .copied()
            .unwrap_or(0);
        for _ in was..n {
            areas.push(VmallocArea {
                size,
                caller: caller.clone(),
                pages,
            });
        }
    }
    let map = VmallocMap { map, areas };
    eprintln!(
        "vmalloc map: array of {entries} x {value_size} bytes ({}); its new vmap areas take \
         {} with {} of pages: {:?}",
        mib(map.value_bytes()),
        mib(map.area_bytes()),
        mib(map.page_bytes()),
        map.areas
    );
    ensure!(
        map.area_bytes() >= map.value_bytes(),
        "/proc/vmallocinfo shows only {} bytes of new array_map_alloc areas for a {}-byte array \
         map (not vmalloc'ed?)",
        map.area_bytes(),
        map.value_bytes()
    );
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn percpu_maps_are_created_and_closed() -> Result<()> {
        if !root() {
            eprintln!("SKIPPED: creating BPF maps needs root");
            return Ok(());
        }
        let maps = percpu_array_maps(3, 4096, 4)?;
        assert_eq!(maps.maps.len(), 3);
        assert_eq!(maps.allocations, 12);
        assert!(maps.bytes_per_allocation >= 4096 * maps.possible_cpus);
        assert!(percpu_array_maps(1, MAX_PERCPU_VALUE + 1, 1).is_err());
        maps.close();
        Ok(())
    }

    #[test]
    fn large_array_map_is_vmalloced() -> Result<()> {
        if !root() {
            eprintln!("SKIPPED: creating BPF maps needs root");
            return Ok(());
        }
        let map = vmalloc_array_map(4096, 1024)?;
        assert_eq!(map.value_bytes(), 4 << 20);
        assert!(
            map.area_bytes() < map.value_bytes() + (1 << 20),
            "{:?}",
            map.areas
        );
        assert!(map.page_bytes() >= map.value_bytes(), "{:?}", map.areas);
        assert!(BpfMap::create(BPF_MAP_TYPE_ARRAY, 4, 1, "bad-name").is_err());
        Ok(())
    }
}
