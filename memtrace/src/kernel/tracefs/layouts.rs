//! The offsets memtrace's eBPF programs read, from an event's parsed format.

use memtrace_common::{ObjAllocLayout, ObjFreeLayout, PageAllocLayout, PageFreeLayout, NO_FIELD};

use super::{EventFormat, Field, TracefsError};

// ---------------------------------------------------------------------------------------------
// Layouts for the eBPF programs
// ---------------------------------------------------------------------------------------------

fn required<'a>(f: &'a EventFormat, field: &str) -> Result<&'a Field, TracefsError> {
    f.field(field).ok_or_else(|| TracefsError::MissingField {
        event: f.name.clone(),
        field: field.to_string(),
    })
}

fn check_size(
    f: &EventFormat,
    field: &Field,
    ok: &[u32],
    expected: &'static str,
) -> Result<(), TracefsError> {
    if ok.contains(&field.size) {
        Ok(())
    } else {
        Err(TracefsError::BadFieldSize {
            event: f.name.clone(),
            field: field.name.clone(),
            size: field.size,
            expected,
        })
    }
}

/// Kernels before the pfn conversion recorded `struct page *page` instead of `pfn`.
fn pfn_field(f: &EventFormat) -> Result<&Field, TracefsError> {
    match f.field("pfn") {
        Some(pfn) => {
            check_size(f, pfn, &[8], "8 (unsigned long)")?;
            Ok(pfn)
        }
        None if f.field("page").is_some() => Err(TracefsError::Unsupported {
            reason: format!(
                "this kernel's {} tracepoint has no pfn field (it records `struct page *page`; \
                 kernel older than 4.3?); memtrace needs a newer kernel",
                f.name
            ),
        }),
        None => Err(TracefsError::MissingField {
            event: f.name.clone(),
            field: "pfn".to_string(),
        }),
    }
}

/// Offsets of `pfn`, `order`, `gfp_flags` (and its size) and `migratetype` in the
/// `kmem:mm_page_alloc` record.
pub fn page_alloc_layout(f: &EventFormat) -> Result<PageAllocLayout, TracefsError> {
    let pfn = pfn_field(f)?;
    let order = required(f, "order")?;
    check_size(f, order, &[4], "4 (unsigned int)")?;
    let gfp = required(f, "gfp_flags")?;
    check_size(f, gfp, &[4, 8], "4 (gfp_t) or 8 (unsigned long)")?;
    let migratetype = required(f, "migratetype")?;
    check_size(f, migratetype, &[4], "4 (int)")?;
    Ok(PageAllocLayout {
        pfn_offset: pfn.offset,
        order_offset: order.offset,
        gfp_offset: gfp.offset,
        gfp_size: gfp.size,
        migratetype_offset: migratetype.offset,
        _pad: 0,
    })
}

/// Offsets of `pfn` and `order` in the `kmem:mm_page_free` record.
pub fn page_free_layout(f: &EventFormat) -> Result<PageFreeLayout, TracefsError> {
    let pfn = pfn_field(f)?;
    let order = required(f, "order")?;
    check_size(f, order, &[4], "4 (unsigned int)")?;
    Ok(PageFreeLayout {
        pfn_offset: pfn.offset,
        order_offset: order.offset,
    })
}

// ---------------------------------------------------------------------------------------------
// Object allocators: slab, percpu, vmalloc
// ---------------------------------------------------------------------------------------------
//
// Field history (x86_64; details and sources in tests/fixtures/README.md):
// - kmem:kmalloc / kmem_cache_alloc: `ptr`, `bytes_req`, `bytes_alloc` (size_t) and
//   `gfp_flags` (4-byte `gfp_t` before 5.19, 8-byte `unsigned long` since) for as long as the
//   events exist; 6.1 folded `kmalloc_node` / `kmem_cache_alloc_node` into them (adding
//   `node`); 6.18 added `__data_loc char[] name` to kmem_cache_alloc, which shifts its
//   `bytes_req` and everything after it.
// - kmem:kfree / kmem_cache_free: `ptr` (kmem_cache_free has `name` after it since 5.12).
// - percpu:percpu_alloc_percpu (4.13+): `ptr`, `size` (per CPU); 5.19 added `call_site` in
//   front (shifting everything) and `bytes_alloc` (all CPUs) and `gfp_flags` at the end.
// - vmalloc:alloc_vmap_area / free_vmap_area_noflush (6.2+): `addr`, `size`, `failed`;
//   `va_start`.

const PTR_EXPECTED: &str = "8 (a 64-bit pointer)";
const SIZE_T_EXPECTED: &str = "8 (size_t / unsigned long)";
const GFP_EXPECTED: &str = "4 (gfp_t) or 8 (unsigned long)";

/// `field`, which must be there and have one of the sizes in `ok`.
fn required_sized<'a>(
    f: &'a EventFormat,
    field: &str,
    ok: &[u32],
    expected: &'static str,
) -> Result<&'a Field, TracefsError> {
    let found = required(f, field)?;
    check_size(f, found, ok, expected)?;
    Ok(found)
}

/// `field` if the event has it (then it must have one of the sizes in `ok`).
fn optional_sized<'a>(
    f: &'a EventFormat,
    field: &str,
    ok: &[u32],
    expected: &'static str,
) -> Result<Option<&'a Field>, TracefsError> {
    match f.field(field) {
        Some(found) => check_size(f, found, ok, expected).map(|()| Some(found)),
        None => Ok(None),
    }
}

/// A string field if the event has it; it must be a 4-byte `__data_loc char[]` (low 16 bits:
/// offset of the string from the record start, high 16 bits: its length), the only string
/// representation the eBPF side decodes.
fn optional_data_loc_string<'a>(
    f: &'a EventFormat,
    field: &str,
) -> Result<Option<&'a Field>, TracefsError> {
    let Some(found) = f.field(field) else {
        return Ok(None);
    };
    if found.type_name == "__data_loc char[]" && found.size == 4 {
        Ok(Some(found))
    } else {
        Err(TracefsError::BadFieldType {
            event: f.name.clone(),
            field: found.name.clone(),
            type_name: found.type_name.clone(),
            size: found.size,
            expected: "`__data_loc char[]` (size 4)",
        })
    }
}

fn offset_or_absent(field: Option<&Field>) -> u32 {
    field.map_or(NO_FIELD, |f| f.offset)
}

/// kmalloc / kmem_cache_alloc (and the pre-6.1 `*_node` variants).
fn slab_alloc_layout(f: &EventFormat, with_name: bool) -> Result<ObjAllocLayout, TracefsError> {
    let ptr = required_sized(f, "ptr", &[8], PTR_EXPECTED)?;
    let bytes_alloc = required_sized(f, "bytes_alloc", &[8], SIZE_T_EXPECTED)?;
    let bytes_req = required_sized(f, "bytes_req", &[8], SIZE_T_EXPECTED)?;
    let gfp = required_sized(f, "gfp_flags", &[4, 8], GFP_EXPECTED)?;
    let call_site = optional_sized(f, "call_site", &[8], SIZE_T_EXPECTED)?;
    let name = if with_name {
        optional_data_loc_string(f, "name")?
    } else {
        None
    };
    Ok(ObjAllocLayout {
        ptr_offset: ptr.offset,
        bytes_offset: bytes_alloc.offset,
        bytes_multiplier: 1,
        bytes_req_offset: bytes_req.offset,
        name_offset: offset_or_absent(name),
        failed_offset: NO_FIELD,
        gfp_offset: gfp.offset,
        call_site_offset: offset_or_absent(call_site),
    })
}

/// `kmem:kmalloc` (and `kmem:kmalloc_node` before 6.1): `ptr`, `bytes_alloc`, `bytes_req`,
/// `gfp_flags`; no name (kmalloc caches are not named in the event).
pub fn kmalloc_layout(f: &EventFormat) -> Result<ObjAllocLayout, TracefsError> {
    slab_alloc_layout(f, false)
}

/// `kmem:kmem_cache_alloc` (and `kmem:kmem_cache_alloc_node` before 6.1): as
/// [`kmalloc_layout`], plus the cache `name` on kernels whose event has it (6.18+), else
/// [`NO_FIELD`].
pub fn kmem_cache_alloc_layout(f: &EventFormat) -> Result<ObjAllocLayout, TracefsError> {
    slab_alloc_layout(f, true)
}

/// `kmem:kfree` and `kmem:kmem_cache_free`: `ptr`.
pub fn slab_free_layout(f: &EventFormat) -> Result<ObjFreeLayout, TracefsError> {
    let ptr = required_sized(f, "ptr", &[8], PTR_EXPECTED)?;
    Ok(ObjFreeLayout {
        ptr_offset: ptr.offset,
        _pad: 0,
    })
}

/// `percpu:percpu_alloc_percpu`: `ptr`; bytes from `bytes_alloc` (5.19+: already the size
/// over all possible CPUs plus memcg overhead, `pcpu_obj_full_size()`), else from the
/// per-CPU `size` times `possible_cpus` (0 counts as 1); `gfp_flags` when present (5.19+).
pub fn percpu_alloc_layout(
    f: &EventFormat,
    possible_cpus: u32,
) -> Result<ObjAllocLayout, TracefsError> {
    let ptr = required_sized(f, "ptr", &[8], PTR_EXPECTED)?;
    let (bytes, multiplier) = match optional_sized(f, "bytes_alloc", &[8], SIZE_T_EXPECTED)? {
        Some(bytes_alloc) => (bytes_alloc, 1),
        None => (
            required_sized(f, "size", &[8], SIZE_T_EXPECTED)?,
            possible_cpus.max(1),
        ),
    };
    let gfp = optional_sized(f, "gfp_flags", &[4, 8], GFP_EXPECTED)?;
    Ok(ObjAllocLayout {
        ptr_offset: ptr.offset,
        bytes_offset: bytes.offset,
        bytes_multiplier: multiplier,
        bytes_req_offset: NO_FIELD,
        name_offset: NO_FIELD,
        failed_offset: NO_FIELD,
        gfp_offset: offset_or_absent(gfp),
        call_site_offset: NO_FIELD,
    })
}

/// `percpu:percpu_free_percpu`: `ptr`.
pub fn percpu_free_layout(f: &EventFormat) -> Result<ObjFreeLayout, TracefsError> {
    slab_free_layout(f)
}

/// `vmalloc:alloc_vmap_area`: `addr` (as the pointer), `size` (of the area as allocated,
/// including the guard page where there is one) and `failed` (`addr` is an error value then).
pub fn vmalloc_alloc_layout(f: &EventFormat) -> Result<ObjAllocLayout, TracefsError> {
    let addr = required_sized(f, "addr", &[8], "8 (unsigned long)")?;
    let size = required_sized(f, "size", &[8], "8 (unsigned long)")?;
    let failed = required_sized(f, "failed", &[4], "4 (int)")?;
    Ok(ObjAllocLayout {
        ptr_offset: addr.offset,
        bytes_offset: size.offset,
        bytes_multiplier: 1,
        bytes_req_offset: NO_FIELD,
        name_offset: NO_FIELD,
        failed_offset: failed.offset,
        gfp_offset: NO_FIELD,
        call_site_offset: NO_FIELD,
    })
}

/// `vmalloc:free_vmap_area_noflush`: `va_start` (as the pointer).
pub fn vmalloc_free_layout(f: &EventFormat) -> Result<ObjFreeLayout, TracefsError> {
    let va_start = required_sized(f, "va_start", &[8], "8 (unsigned long)")?;
    Ok(ObjFreeLayout {
        ptr_offset: va_start.offset,
        _pad: 0,
    })
}
