//! tracefs: where it is, what the classic tracepoint records look like on this kernel, and a
//! few facts about the page allocator (`page_size`, `max_order`).
//!
//! The record layout of `kmem:mm_page_alloc` / `kmem:mm_page_free` differs between kernels
//! (e.g. `gfp_flags` is a 4-byte `gfp_t` on 4.x and an 8-byte `unsigned long` on 6.x, and
//! 3.x kernels had a 4-byte `common_padding` in the common header), so the offsets are read
//! from the event's `format` file at run time and handed to the eBPF programs. The same goes
//! for the slab (`kmem:kmalloc`, ...), percpu and vmalloc events, whose fields moved around
//! between 4.x and 6.x (see `tests/fixtures/README.md` for the history).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use memtrace_common::{ObjAllocLayout, ObjFreeLayout, PageAllocLayout, PageFreeLayout, NO_FIELD};

/// Where tracefs is mounted on current kernels.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Where debugfs exposes (an automount of) tracefs.
pub const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

const MOUNT_HINT: &str = "mount -t tracefs nodev /sys/kernel/tracing";

/// Errors finding tracefs and making sense of its format files.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// tracefs is not mounted and we lack the privilege (EPERM/EACCES) to mount it.
    #[error(
        "tracefs is not mounted; mount it with `mount -t tracefs nodev /sys/kernel/tracing` (as root)"
    )]
    NotMounted,

    /// We had the privilege to mount tracefs but the mount failed for another reason.
    #[error(
        "tracefs is not mounted and mounting it at {path} failed: {source}; mount it by hand with \
         `{hint}` and check that the kernel has CONFIG_TRACING=y",
        path = .path.display(),
        hint = MOUNT_HINT
    )]
    MountFailed {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// tracefs is there, but without `events/`.
    #[error(
        "tracefs at {} has no events/ directory; use a kernel built with CONFIG_EVENT_TRACING=y \
         (tracepoints)",
        .root.display()
    )]
    NoEvents { root: PathBuf },

    /// The tracepoint does not exist on this kernel.
    #[error(
        "tracepoint {category}:{event} does not exist ({} is missing): this kernel lacks it; \
         memtrace needs a kernel that provides {category}:{event}",
        .path.display()
    )]
    EventMissing {
        category: String,
        event: String,
        path: PathBuf,
    },

    /// Reading a file failed (other than "not found").
    #[error("cannot read {}: {source}; run memtrace as root", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The format text does not follow the tracefs conventions.
    #[error(
        "malformed tracefs format of {origin} at line {line}: {reason}; check `cat` of the format \
         file and report it as a memtrace bug"
    )]
    Parse {
        origin: String,
        line: usize,
        reason: String,
    },

    /// A field memtrace needs is not in the event record.
    #[error(
        "{event} tracepoint has no `{field}` field; this kernel's {event} layout is not supported \
         (see events/*/{event}/format in tracefs)"
    )]
    MissingField { event: String, field: String },

    /// A field has a C type memtrace cannot read (e.g. a string that is not `__data_loc`).
    #[error(
        "{event} tracepoint field `{field}` is `{type_name}` (size {size}), expected {expected}; \
         this kernel's {event} layout is not supported"
    )]
    BadFieldType {
        event: String,
        field: String,
        type_name: String,
        size: u32,
        expected: &'static str,
    },

    /// A field has a size memtrace cannot read.
    #[error(
        "{event} tracepoint field `{field}` has size {size}, expected {expected}; this kernel's \
         {event} layout is not supported (64-bit kernels only)"
    )]
    BadFieldSize {
        event: String,
        field: String,
        size: u32,
        expected: &'static str,
    },

    /// The kernel's tracepoint is too old to be usable at all.
    #[error("{reason}")]
    Unsupported { reason: String },
}

impl TracefsError {
    /// True when running with more privilege would fix it (maps to the "not privileged" exit code).
    pub fn needs_privilege(&self) -> bool {
        match self {
            TracefsError::NotMounted => true,
            TracefsError::Io { source, .. } => source.kind() == io::ErrorKind::PermissionDenied,
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Locating tracefs
// ---------------------------------------------------------------------------------------------

/// Returns the tracefs root (the directory that has `events/`): `/sys/kernel/tracing`, else
/// `/sys/kernel/debug/tracing`; else mounts tracefs at `/sys/kernel/tracing` when privileged.
pub fn locate() -> Result<PathBuf, TracefsError> {
    locate_with(
        Path::new(TRACEFS),
        Path::new(DEBUGFS_TRACING),
        mount_tracefs,
    )
}

/// [`locate`] with the two candidate roots and the mount operation injected (for tests).
fn locate_with(
    primary: &Path,
    fallback: &Path,
    mount: impl FnOnce(&Path) -> io::Result<()>,
) -> Result<PathBuf, TracefsError> {
    for root in [primary, fallback] {
        if root.join("events").is_dir() {
            return Ok(root.to_path_buf());
        }
    }
    // tracefs mounted but without events/: mounting it again would not help.
    if is_populated_tracefs(primary) {
        return Err(TracefsError::NoEvents {
            root: primary.to_path_buf(),
        });
    }
    match mount(primary) {
        Ok(()) => {
            if primary.join("events").is_dir() {
                Ok(primary.to_path_buf())
            } else {
                Err(TracefsError::NoEvents {
                    root: primary.to_path_buf(),
                })
            }
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
            Err(TracefsError::NotMounted)
        }
        Err(source) => Err(TracefsError::MountFailed {
            path: primary.to_path_buf(),
            source,
        }),
    }
}

/// A mounted tracefs always has these control files, events or not.
fn is_populated_tracefs(root: &Path) -> bool {
    root.join("trace").exists() || root.join("available_tracers").exists()
}

/// `mount -t tracefs nodev <target>`.
fn mount_tracefs(target: &Path) -> io::Result<()> {
    let target = CString::new(target.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let source = c"nodev";
    let fstype = c"tracefs";
    // SAFETY: all three strings are valid NUL-terminated C strings that outlive the call, and
    // `data` may be null for tracefs (no mount options).
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// ---------------------------------------------------------------------------------------------
// Format files
// ---------------------------------------------------------------------------------------------

/// One field of a trace event record, as described by its `format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// C type as tracefs prints it: `unsigned long`, `gfp_t`, `struct page *`, `char[16]` (for
    /// `char comm[16]`), `__data_loc char[]`.
    pub type_name: String,
    /// Byte offset in the record (including the common header).
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

impl Field {
    /// `common_type`, `common_pid`, ...: the header every event record starts with.
    pub fn is_common(&self) -> bool {
        self.name.starts_with("common_")
    }
}

/// A parsed `events/<category>/<event>/format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFormat {
    pub name: String,
    pub id: Option<u32>,
    /// Every field in file order, common header fields included.
    pub fields: Vec<Field>,
}

impl EventFormat {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Parses the text of a tracefs `format` file.
pub fn parse_format(text: &str) -> Result<EventFormat, TracefsError> {
    parse_format_from(text, "format text")
}

fn parse_format_from(text: &str, origin: &str) -> Result<EventFormat, TracefsError> {
    let err = |line: usize, reason: String| TracefsError::Parse {
        origin: origin.to_string(),
        line,
        reason,
    };
    let mut name = None;
    let mut id = None;
    let mut fields = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        let line = raw.trim();
        if let Some(rest) = line.strip_prefix("name:") {
            name = Some(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("ID:") {
            let value = rest.trim();
            id = Some(
                value
                    .parse::<u32>()
                    .map_err(|_| err(lineno, format!("event ID `{value}` is not a number")))?,
            );
        } else if line.starts_with("field:") {
            fields.push(parse_field_line(line).map_err(|reason| err(lineno, reason))?);
        } else if line.starts_with("print fmt:") {
            // Nothing after the print format is part of the record description.
            break;
        }
        // `format:`, blank lines and unknown lines are ignored.
    }
    let name = name.ok_or_else(|| err(1, "no `name:` line".to_string()))?;
    if fields.is_empty() {
        return Err(err(1, format!("event {name} has no `field:` lines")));
    }
    Ok(EventFormat { name, id, fields })
}

/// Parses `field:unsigned long pfn;\toffset:8;\tsize:8;\tsigned:0;`.
fn parse_field_line(line: &str) -> Result<Field, String> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    let mut signed = false;
    for part in line.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (key, value) = part
            .split_once(':')
            .ok_or_else(|| format!("`{part}` is not `key:value`"))?;
        let value = value.trim();
        let number = || {
            value
                .parse::<u32>()
                .map_err(|_| format!("`{key}` value `{value}` is not a number"))
        };
        match key.trim() {
            "field" => decl = Some(value),
            "offset" => offset = Some(number()?),
            "size" => size = Some(number()?),
            "signed" => signed = number()? != 0,
            _ => {} // Future keys are ignored.
        }
    }
    let decl = decl.ok_or("no `field:` declaration")?;
    let (type_name, name) = split_declaration(decl)?;
    Ok(Field {
        name,
        type_name,
        offset: offset.ok_or_else(|| format!("field `{decl}` has no offset"))?,
        size: size.ok_or_else(|| format!("field `{decl}` has no size"))?,
        signed,
    })
}

/// Splits a C declaration as tracefs prints it (`"%s %s", type, name`) into (type, name).
/// `char comm[16]` becomes (`char[16]`, `comm`); `__data_loc char[] name` stays as is.
fn split_declaration(decl: &str) -> Result<(String, String), String> {
    let decl = decl.trim();
    let (ty, name) = decl
        .rsplit_once(char::is_whitespace)
        .ok_or_else(|| format!("field declaration `{decl}` has no type"))?;
    let ty = ty.trim();
    let (name, array) = match name.find('[') {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, ""),
    };
    // A pointer star glued to the name (`struct page *page`) belongs to the type.
    let stars = name.len() - name.trim_start_matches('*').len();
    let (name, ty) = if stars > 0 {
        (&name[stars..], format!("{ty} {}", &"*".repeat(stars)))
    } else {
        (name, ty.to_string())
    };
    if name.is_empty() || ty.is_empty() {
        return Err(format!("field declaration `{decl}` has no name"));
    }
    Ok((format!("{ty}{array}"), name.to_string()))
}

/// Reads and parses `<root>/events/<category>/<event>/format`.
pub fn read_format(root: &Path, category: &str, event: &str) -> Result<EventFormat, TracefsError> {
    let path = root
        .join("events")
        .join(category)
        .join(event)
        .join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            TracefsError::EventMissing {
                category: category.to_string(),
                event: event.to_string(),
                path: path.clone(),
            }
        } else {
            TracefsError::Io {
                path: path.clone(),
                source,
            }
        }
    })?;
    parse_format_from(&text, &path.display().to_string())
}

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
        _pad: 0,
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
        _pad: 0,
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
        _pad: 0,
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

/// True when every one of `fields` sits at the same offset with the same size in both events,
/// or is missing from both; e.g. `kmem:kmalloc_node` against `kmem:kmalloc` on pre-6.1
/// kernels before attaching the kmalloc program to both. (Comparing the layouts computed by
/// [`kmalloc_layout`] / [`kmem_cache_alloc_layout`] for the two events is equivalent for the
/// fields memtrace reads.)
pub fn same_layout_prefix(a: &EventFormat, b: &EventFormat, fields: &[&str]) -> bool {
    fields
        .iter()
        .all(|name| match (a.field(name), b.field(name)) {
            (Some(x), Some(y)) => x.offset == y.offset && x.size == y.size,
            (None, None) => true,
            _ => false,
        })
}

/// Whether `<root>/events/<category>/<event>/format` exists. Unreadable (permission denied)
/// counts as missing, so call it after [`locate`] / [`read_format`] have proven access.
pub fn event_exists(root: &Path, category: &str, event: &str) -> bool {
    root.join("events")
        .join(category)
        .join(event)
        .join("format")
        .exists()
}

/// Number of possible CPUs (`num_possible_cpus()`, what percpu allocations are sized by),
/// from `/sys/devices/system/cpu/possible`; 1 if that cannot be read or parsed.
pub fn possible_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|text| parse_cpu_list(&text))
        .unwrap_or(1)
}

/// Counts the CPUs in a kernel CPU list (`0`, `0-3`, `0-3,8-11`, with a trailing newline as
/// sysfs prints it). Ranges must be ascending and disjoint, as the kernel prints them; any
/// other text gives `None`.
pub fn parse_cpu_list(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut count = 0u32;
    let mut next_free = 0u32; // lowest CPU number the next range may start at
    for part in text.split(',') {
        let part = part.trim();
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?),
            None => {
                let cpu = part.parse::<u32>().ok()?;
                (cpu, cpu)
            }
        };
        if first > last || (count > 0 && first < next_free) {
            return None;
        }
        count = count.checked_add((last - first).checked_add(1)?)?;
        next_free = last.checked_add(1)?;
    }
    Some(count)
}

// ---------------------------------------------------------------------------------------------
// Page allocator facts
// ---------------------------------------------------------------------------------------------

/// Bytes per page (`sysconf(_SC_PAGESIZE)`), 4096 if that fails.
pub fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// Highest order the buddy allocator hands out (10 on x86_64), from `/proc/buddyinfo`; 10 if
/// that cannot be read.
pub fn max_order() -> u32 {
    std::fs::read_to_string("/proc/buddyinfo")
        .ok()
        .and_then(|text| parse_buddyinfo_max_order(&text))
        .unwrap_or(10)
}

/// `/proc/buddyinfo` has one column of free-block counts per order (`Node 0, zone Normal
/// 413 57 ...`): the highest order is the number of columns minus one.
pub fn parse_buddyinfo_max_order(text: &str) -> Option<u32> {
    text.lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("zone")?;
            let mut words = rest.split_whitespace();
            words.next()?; // zone name
            let mut columns = 0u32;
            for w in words {
                w.parse::<u64>().ok()?;
                columns += 1;
            }
            columns.checked_sub(1)
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn parse_fixture(rel: &str) -> EventFormat {
        parse_format(&fixture(rel)).unwrap()
    }

    fn assert_common_header(f: &EventFormat) {
        let expect = [
            ("common_type", "unsigned short", 0, 2, false),
            ("common_flags", "unsigned char", 2, 1, false),
            ("common_preempt_count", "unsigned char", 3, 1, false),
            ("common_pid", "int", 4, 4, true),
        ];
        for (name, ty, offset, size, signed) in expect {
            let field = f.field(name).unwrap();
            assert_eq!(
                (
                    field.type_name.as_str(),
                    field.offset,
                    field.size,
                    field.signed
                ),
                (ty, offset, size, signed),
                "{name}"
            );
            assert!(field.is_common());
        }
    }

    #[test]
    fn parses_6_18_page_alloc() {
        let f = parse_fixture("tracefs/6.18/mm_page_alloc.format");
        assert_eq!(f.name, "mm_page_alloc");
        assert_eq!(f.id, Some(653));
        assert_eq!(f.fields.len(), 8);
        assert_common_header(&f);
        let pfn = f.field("pfn").unwrap();
        assert_eq!(pfn.type_name, "unsigned long");
        assert_eq!((pfn.offset, pfn.size, pfn.signed), (8, 8, false));
        let gfp = f.field("gfp_flags").unwrap();
        assert_eq!(
            (gfp.type_name.as_str(), gfp.offset, gfp.size),
            ("unsigned long", 24, 8)
        );
        let mt = f.field("migratetype").unwrap();
        assert_eq!((mt.offset, mt.size, mt.signed), (32, 4, true));
        assert_eq!(
            page_alloc_layout(&f).unwrap(),
            PageAllocLayout {
                pfn_offset: 8,
                order_offset: 16,
                gfp_offset: 24,
                gfp_size: 8,
                migratetype_offset: 32,
                _pad: 0,
            }
        );
    }

    #[test]
    fn parses_6_18_page_free() {
        let f = parse_fixture("tracefs/6.18/mm_page_free.format");
        assert_eq!((f.name.as_str(), f.id), ("mm_page_free", Some(655)));
        assert_common_header(&f);
        assert_eq!(
            page_free_layout(&f).unwrap(),
            PageFreeLayout {
                pfn_offset: 8,
                order_offset: 16
            }
        );
    }

    #[test]
    fn parses_4_19_with_4_byte_gfp_t() {
        let f = parse_fixture("tracefs/4.19/mm_page_alloc.format");
        assert_common_header(&f);
        assert!(f.field("common_padding").is_none());
        let gfp = f.field("gfp_flags").unwrap();
        assert_eq!(
            (gfp.type_name.as_str(), gfp.size, gfp.signed),
            ("gfp_t", 4, false)
        );
        assert_eq!(
            page_alloc_layout(&f).unwrap(),
            PageAllocLayout {
                pfn_offset: 8,
                order_offset: 16,
                gfp_offset: 20,
                gfp_size: 4,
                migratetype_offset: 24,
                _pad: 0,
            }
        );
        let free = parse_fixture("tracefs/4.19/mm_page_free.format");
        assert_eq!(
            page_free_layout(&free).unwrap(),
            PageFreeLayout {
                pfn_offset: 8,
                order_offset: 16
            }
        );
    }

    #[test]
    fn rejects_3_10_struct_page_records() {
        let f = parse_fixture("tracefs/3.10/mm_page_alloc.format");
        assert_common_header(&f);
        let pad = f.field("common_padding").unwrap();
        assert_eq!((pad.offset, pad.size, pad.signed), (8, 4, true));
        let page = f.field("page").unwrap();
        assert_eq!(page.type_name, "struct page *");
        assert_eq!((page.offset, page.size), (16, 8));
        assert_eq!(f.field("migratetype").unwrap().offset, 32);

        let err = page_alloc_layout(&f).unwrap_err();
        assert!(matches!(err, TracefsError::Unsupported { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("mm_page_alloc"), "{msg}");
        assert!(msg.contains("has no pfn field"), "{msg}");
        assert!(msg.contains("kernel older than 4.3?"), "{msg}");

        let free = parse_fixture("tracefs/3.10/mm_page_free.format");
        let err = page_free_layout(&free).unwrap_err();
        assert!(err.to_string().contains("mm_page_free"), "{err}");
        assert!(matches!(err, TracefsError::Unsupported { .. }));
    }

    #[test]
    fn parses_arrays_data_loc_and_pointers() {
        let f = parse_fixture("tracefs/6.18/sched_switch.format");
        let comm = f.field("prev_comm").unwrap();
        assert_eq!(
            (comm.type_name.as_str(), comm.offset, comm.size),
            ("char[16]", 8, 16)
        );
        assert_eq!(f.field("prev_state").unwrap().type_name, "long");
        let f = parse_fixture("tracefs/6.18/sched_process_exec.format");
        let filename = f.field("filename").unwrap();
        assert_eq!(filename.type_name, "__data_loc char[]");
        assert_eq!((filename.offset, filename.size), (8, 4));
        assert_eq!(f.field("pid").unwrap().type_name, "pid_t");

        let (ty, name) = split_declaration("struct page *page").unwrap();
        assert_eq!((ty.as_str(), name.as_str()), ("struct page *", "page"));
        let (ty, name) = split_declaration("const char ** argv").unwrap();
        assert_eq!((ty.as_str(), name.as_str()), ("const char **", "argv"));
        let (ty, name) = split_declaration("__rel_loc u8[] buf").unwrap();
        assert_eq!((ty.as_str(), name.as_str()), ("__rel_loc u8[]", "buf"));
    }

    #[test]
    fn tolerates_missing_signed_and_unknown_keys() {
        let text = "name: old\nID: 7\nformat:\n\tfield:int x;\toffset:8;\tsize:4;\n\
                    \tfield:int y;\toffset:12;\tsize:4;\tsigned:1;\tfuture:3;\n";
        let f = parse_format(text).unwrap();
        assert!(!f.field("x").unwrap().signed);
        assert!(f.field("y").unwrap().signed);
    }

    #[test]
    fn reports_malformed_text() {
        let err = parse_format("ID: 3\nformat:\n\tfield:int x;\toffset:0;\tsize:4;\n").unwrap_err();
        assert!(err.to_string().contains("no `name:` line"), "{err}");
        let err =
            parse_format("name: e\nformat:\n\tfield:int x;\toffset:zero;\tsize:4;\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("line 3") && msg.contains("`offset` value `zero`"),
            "{msg}"
        );
        let err = parse_format("name: e\nformat:\n\tfield:int x;\tsize:4;\n").unwrap_err();
        assert!(err.to_string().contains("has no offset"), "{err}");
        let err = parse_format("name: e\nformat:\n\nprint fmt: \"\"\n").unwrap_err();
        assert!(err.to_string().contains("no `field:` lines"), "{err}");
        let err = parse_format("name: e\nformat:\n\tfield:x;\toffset:0;\tsize:4;\n").unwrap_err();
        assert!(err.to_string().contains("has no type"), "{err}");
    }

    #[test]
    fn names_the_missing_or_wrong_field() {
        let base = fixture("tracefs/6.18/mm_page_alloc.format");
        let f = parse_format(&base.replace("int migratetype;", "int mt;")).unwrap();
        let err = page_alloc_layout(&f).unwrap_err();
        assert!(
            matches!(err, TracefsError::MissingField { ref field, .. } if field == "migratetype")
        );
        assert!(err.to_string().contains("`migratetype`"), "{err}");

        let f = parse_format(&base.replace(
            "unsigned long gfp_flags;\toffset:24;\tsize:8;",
            "unsigned short gfp_flags;\toffset:24;\tsize:2;",
        ))
        .unwrap();
        let err = page_alloc_layout(&f).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`gfp_flags` has size 2"), "{msg}");

        let f = parse_format(&base.replace(
            "unsigned long pfn;\toffset:8;\tsize:8;",
            "unsigned long pfn;\toffset:8;\tsize:4;",
        ))
        .unwrap();
        let err = page_alloc_layout(&f).unwrap_err();
        assert!(err.to_string().contains("`pfn` has size 4"), "{err}");

        let f = parse_format(&base.replace("unsigned int order;", "unsigned int ord;")).unwrap();
        let err = page_alloc_layout(&f).unwrap_err();
        assert!(err.to_string().contains("no `order` field"), "{err}");

        let free = fixture("tracefs/6.18/mm_page_free.format");
        let f = parse_format(&free.replace("unsigned long pfn;", "unsigned long p;")).unwrap();
        let err = page_free_layout(&f).unwrap_err();
        assert!(matches!(err, TracefsError::MissingField { ref field, .. } if field == "pfn"));
    }

    #[test]
    fn read_format_names_a_missing_event() {
        let dir = tempfile::tempdir().unwrap();
        let event_dir = dir.path().join("events/kmem/mm_page_free");
        std::fs::create_dir_all(&event_dir).unwrap();
        std::fs::write(
            event_dir.join("format"),
            fixture("tracefs/6.18/mm_page_free.format"),
        )
        .unwrap();
        let f = read_format(dir.path(), "kmem", "mm_page_free").unwrap();
        assert_eq!(f.name, "mm_page_free");

        let err = read_format(dir.path(), "kmem", "mm_page_alloc").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("kmem:mm_page_alloc"), "{msg}");
        assert!(msg.contains("this kernel lacks it"), "{msg}");
    }

    #[test]
    fn locate_prefers_tracing_then_debugfs_then_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let primary = dir.path().join("tracing");
        let fallback = dir.path().join("debug/tracing");
        std::fs::create_dir_all(&primary).unwrap();
        std::fs::create_dir_all(fallback.join("events")).unwrap();
        let no_mount = |_: &Path| -> io::Result<()> { panic!("must not mount") };
        assert_eq!(
            locate_with(&primary, &fallback, no_mount).unwrap(),
            fallback
        );

        std::fs::create_dir_all(primary.join("events")).unwrap();
        assert_eq!(locate_with(&primary, &fallback, no_mount).unwrap(), primary);

        // Neither has events/: mount, which (here) creates events/.
        let dir = tempfile::tempdir().unwrap();
        let primary = dir.path().join("tracing");
        let fallback = dir.path().join("debug/tracing");
        std::fs::create_dir_all(&primary).unwrap();
        let mounted = locate_with(&primary, &fallback, |p| {
            std::fs::create_dir(p.join("events"))
        });
        assert_eq!(mounted.unwrap(), primary);
    }

    #[test]
    fn locate_distinguishes_eperm_from_other_mount_failures() {
        let dir = tempfile::tempdir().unwrap();
        let primary = dir.path().join("tracing");
        let fallback = dir.path().join("debug/tracing");

        let err = locate_with(&primary, &fallback, |_| {
            Err(io::Error::from_raw_os_error(libc::EPERM))
        })
        .unwrap_err();
        assert!(matches!(err, TracefsError::NotMounted));
        assert!(err.needs_privilege());
        assert_eq!(
            err.to_string(),
            "tracefs is not mounted; mount it with `mount -t tracefs nodev /sys/kernel/tracing` \
             (as root)"
        );

        let err = locate_with(&primary, &fallback, |_| {
            Err(io::Error::from_raw_os_error(libc::ENODEV))
        })
        .unwrap_err();
        assert!(matches!(err, TracefsError::MountFailed { .. }), "{err:?}");
        assert!(!err.needs_privilege());
        let msg = err.to_string();
        assert!(
            msg.contains("mounting it at") && msg.contains("CONFIG_TRACING"),
            "{msg}"
        );

        // Mount "succeeds" but there are still no events.
        let err = locate_with(&primary, &fallback, |_| Ok(())).unwrap_err();
        assert!(matches!(err, TracefsError::NoEvents { .. }), "{err:?}");

        // tracefs already mounted without events/: do not mount again.
        std::fs::create_dir_all(&primary).unwrap();
        std::fs::write(primary.join("trace"), "").unwrap();
        let err = locate_with(&primary, &fallback, |_| panic!("must not mount")).unwrap_err();
        assert!(err.to_string().contains("CONFIG_EVENT_TRACING"), "{err}");
    }

    // -----------------------------------------------------------------------------------------
    // Slab, percpu and vmalloc layouts
    // -----------------------------------------------------------------------------------------

    /// Every object-allocator fixture: (kernel, category, event).
    const OBJ_FIXTURES: &[(&str, &str, &str)] = &[
        ("4.19", "kmem", "kmalloc"),
        ("4.19", "kmem", "kmalloc_node"),
        ("4.19", "kmem", "kmem_cache_alloc"),
        ("4.19", "kmem", "kmem_cache_alloc_node"),
        ("4.19", "kmem", "kfree"),
        ("4.19", "kmem", "kmem_cache_free"),
        ("4.19", "percpu", "percpu_alloc_percpu"),
        ("4.19", "percpu", "percpu_free_percpu"),
        ("6.1", "kmem", "kmalloc"),
        ("6.1", "kmem", "kmem_cache_alloc"),
        ("6.1", "kmem", "kfree"),
        ("6.1", "kmem", "kmem_cache_free"),
        ("6.1", "percpu", "percpu_alloc_percpu"),
        ("6.1", "percpu", "percpu_free_percpu"),
        ("6.18", "kmem", "kmalloc"),
        ("6.18", "kmem", "kmem_cache_alloc"),
        ("6.18", "kmem", "kfree"),
        ("6.18", "kmem", "kmem_cache_free"),
        ("6.18", "percpu", "percpu_alloc_percpu"),
        ("6.18", "percpu", "percpu_free_percpu"),
        ("6.18", "vmalloc", "alloc_vmap_area"),
        ("6.18", "vmalloc", "free_vmap_area_noflush"),
    ];

    fn obj_fixture(kernel: &str, event: &str) -> EventFormat {
        let f = parse_fixture(&format!("tracefs/{kernel}/{event}.format"));
        assert_eq!(f.name, event);
        assert_common_header(&f);
        f
    }

    /// A fake tracefs root holding `kernel`'s object-allocator fixtures.
    fn fixture_tree(kernel: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for &(k, category, event) in OBJ_FIXTURES.iter().filter(|(k, ..)| *k == kernel) {
            let event_dir = dir.path().join("events").join(category).join(event);
            std::fs::create_dir_all(&event_dir).unwrap();
            std::fs::write(
                event_dir.join("format"),
                fixture(&format!("tracefs/{k}/{event}.format")),
            )
            .unwrap();
        }
        dir
    }

    fn alloc(
        ptr: u32,
        bytes: u32,
        multiplier: u32,
        bytes_req: u32,
        name: u32,
        failed: u32,
        gfp: u32,
    ) -> ObjAllocLayout {
        ObjAllocLayout {
            ptr_offset: ptr,
            bytes_offset: bytes,
            bytes_multiplier: multiplier,
            bytes_req_offset: bytes_req,
            name_offset: name,
            failed_offset: failed,
            gfp_offset: gfp,
            _pad: 0,
        }
    }

    fn free(ptr: u32) -> ObjFreeLayout {
        ObjFreeLayout {
            ptr_offset: ptr,
            _pad: 0,
        }
    }

    const N: u32 = NO_FIELD;

    #[test]
    fn slab_layouts_6_18() {
        let kmalloc = obj_fixture("6.18", "kmalloc");
        assert_eq!(kmalloc.id, Some(658));
        let gfp = kmalloc.field("gfp_flags").unwrap();
        assert_eq!((gfp.type_name.as_str(), gfp.size), ("unsigned long", 8));
        assert_eq!(
            kmalloc_layout(&kmalloc).unwrap(),
            alloc(16, 32, 1, 24, N, N, 40)
        );

        let cache_alloc = obj_fixture("6.18", "kmem_cache_alloc");
        let name = cache_alloc.field("name").unwrap();
        assert_eq!(
            (name.type_name.as_str(), name.offset, name.size),
            ("__data_loc char[]", 24, 4)
        );
        assert_eq!(cache_alloc.field("accounted").unwrap().type_name, "bool");
        // The name pushes bytes_req and the rest 8 bytes further than kmalloc's.
        assert_eq!(
            kmem_cache_alloc_layout(&cache_alloc).unwrap(),
            alloc(16, 40, 1, 32, 24, N, 48)
        );
        // kmalloc_layout never reports a name.
        assert_eq!(kmalloc_layout(&cache_alloc).unwrap().name_offset, N);

        assert_eq!(
            slab_free_layout(&obj_fixture("6.18", "kfree")).unwrap(),
            free(16)
        );
        let cache_free = obj_fixture("6.18", "kmem_cache_free");
        assert_eq!(cache_free.field("name").unwrap().offset, 24);
        assert_eq!(slab_free_layout(&cache_free).unwrap(), free(16));
    }

    #[test]
    fn percpu_layouts_6_18_use_bytes_alloc() {
        let f = obj_fixture("6.18", "percpu_alloc_percpu");
        let ptr = f.field("ptr").unwrap();
        assert_eq!(
            (ptr.type_name.as_str(), ptr.offset, ptr.size),
            ("void __seg_gs *", 56, 8)
        );
        for cpus in [0, 1, 2, 64] {
            // bytes_alloc already covers all possible CPUs: no multiplier.
            assert_eq!(
                percpu_alloc_layout(&f, cpus).unwrap(),
                alloc(56, 64, 1, N, N, N, 72)
            );
        }
        assert_eq!(
            percpu_free_layout(&obj_fixture("6.18", "percpu_free_percpu")).unwrap(),
            free(24)
        );
    }

    #[test]
    fn vmalloc_layouts_6_18() {
        let f = obj_fixture("6.18", "alloc_vmap_area");
        let failed = f.field("failed").unwrap();
        assert_eq!((failed.offset, failed.size, failed.signed), (48, 4, true));
        assert_eq!(
            vmalloc_alloc_layout(&f).unwrap(),
            alloc(8, 16, 1, N, N, 48, N)
        );
        assert_eq!(
            vmalloc_free_layout(&obj_fixture("6.18", "free_vmap_area_noflush")).unwrap(),
            free(8)
        );
    }

    #[test]
    fn slab_layouts_4_19_with_node_events() {
        let kmalloc = obj_fixture("4.19", "kmalloc");
        let gfp = kmalloc.field("gfp_flags").unwrap();
        assert_eq!(
            (gfp.type_name.as_str(), gfp.offset, gfp.size),
            ("gfp_t", 40, 4)
        );
        let expected = alloc(16, 32, 1, 24, N, N, 40);
        assert_eq!(kmalloc_layout(&kmalloc).unwrap(), expected);

        let kmalloc_node = obj_fixture("4.19", "kmalloc_node");
        let node = kmalloc_node.field("node").unwrap();
        assert_eq!((node.offset, node.size, node.signed), (44, 4, true));
        assert_eq!(kmalloc_layout(&kmalloc_node).unwrap(), expected);

        // No cache name on 4.19 (kmem_cache_alloc shares the kmem_alloc class with kmalloc).
        let cache_alloc = obj_fixture("4.19", "kmem_cache_alloc");
        assert!(cache_alloc.field("name").is_none());
        assert_eq!(kmem_cache_alloc_layout(&cache_alloc).unwrap(), expected);
        let cache_alloc_node = obj_fixture("4.19", "kmem_cache_alloc_node");
        assert_eq!(
            kmem_cache_alloc_layout(&cache_alloc_node).unwrap(),
            expected
        );

        for event in ["kfree", "kmem_cache_free"] {
            let f = obj_fixture("4.19", event);
            assert!(f.field("name").is_none(), "{event}");
            assert_eq!(slab_free_layout(&f).unwrap(), free(16), "{event}");
        }
    }

    #[test]
    fn percpu_layouts_4_19_multiply_size_by_possible_cpus() {
        let f = obj_fixture("4.19", "percpu_alloc_percpu");
        assert!(f.field("bytes_alloc").is_none() && f.field("gfp_flags").is_none());
        assert!(f.field("call_site").is_none());
        assert_eq!(f.field("ptr").unwrap().type_name, "void *");
        assert_eq!(
            percpu_alloc_layout(&f, 8).unwrap(),
            alloc(48, 16, 8, N, N, N, N)
        );
        assert_eq!(percpu_alloc_layout(&f, 1).unwrap().bytes_multiplier, 1);
        assert_eq!(percpu_alloc_layout(&f, 0).unwrap().bytes_multiplier, 1);
        assert_eq!(
            percpu_free_layout(&obj_fixture("4.19", "percpu_free_percpu")).unwrap(),
            free(24)
        );
    }

    #[test]
    fn layouts_6_1_merged_node_events() {
        let kmalloc = obj_fixture("6.1", "kmalloc");
        assert_eq!(kmalloc.field("node").unwrap().offset, 48);
        assert!(kmalloc.field("accounted").is_none());
        assert_eq!(
            kmalloc_layout(&kmalloc).unwrap(),
            alloc(16, 32, 1, 24, N, N, 40)
        );
        // kmem_cache_alloc: `accounted` but no `name` yet (that came in 6.18).
        let cache_alloc = obj_fixture("6.1", "kmem_cache_alloc");
        assert_eq!(cache_alloc.field("accounted").unwrap().offset, 52);
        assert!(cache_alloc.field("name").is_none());
        assert_eq!(
            kmem_cache_alloc_layout(&cache_alloc).unwrap(),
            alloc(16, 32, 1, 24, N, N, 40)
        );
        // kmem_cache_free has had `name` since 5.12.
        let cache_free = obj_fixture("6.1", "kmem_cache_free");
        assert_eq!(
            cache_free.field("name").unwrap().type_name,
            "__data_loc char[]"
        );
        assert_eq!(slab_free_layout(&cache_free).unwrap(), free(16));
        assert_eq!(
            slab_free_layout(&obj_fixture("6.1", "kfree")).unwrap(),
            free(16)
        );

        let percpu = obj_fixture("6.1", "percpu_alloc_percpu");
        assert_eq!(percpu.field("ptr").unwrap().type_name, "void *");
        assert_eq!(
            percpu_alloc_layout(&percpu, 4).unwrap(),
            alloc(56, 64, 1, N, N, N, 72)
        );
        assert_eq!(
            percpu_free_layout(&obj_fixture("6.1", "percpu_free_percpu")).unwrap(),
            free(24)
        );
    }

    /// Each layout function against every fixture: the event it is meant for parses, any other
    /// event is rejected with the first field it lacks.
    #[test]
    fn every_layout_function_on_every_fixture() {
        type Check = fn(&EventFormat) -> Result<(), TracefsError>;
        let functions: [(&str, &[&str], Check); 7] = [
            (
                "kmalloc",
                // The kmem_cache_alloc formats carry every field kmalloc_layout reads.
                &[
                    "kmalloc",
                    "kmalloc_node",
                    "kmem_cache_alloc",
                    "kmem_cache_alloc_node",
                ],
                |f| kmalloc_layout(f).map(drop),
            ),
            (
                "kmem_cache_alloc",
                // And vice versa (the name is optional).
                &[
                    "kmem_cache_alloc",
                    "kmem_cache_alloc_node",
                    "kmalloc",
                    "kmalloc_node",
                ],
                |f| kmem_cache_alloc_layout(f).map(drop),
            ),
            (
                "slab_free",
                // Every slab event has `ptr`, and so do the percpu ones.
                &[
                    "kfree",
                    "kmem_cache_free",
                    "kmalloc",
                    "kmalloc_node",
                    "kmem_cache_alloc",
                    "kmem_cache_alloc_node",
                    "percpu_alloc_percpu",
                    "percpu_free_percpu",
                ],
                |f| slab_free_layout(f).map(drop),
            ),
            (
                "percpu_alloc",
                &[
                    "percpu_alloc_percpu",
                    "kmalloc",
                    "kmalloc_node",
                    "kmem_cache_alloc",
                    "kmem_cache_alloc_node",
                ],
                |f| percpu_alloc_layout(f, 4).map(drop),
            ),
            (
                "percpu_free",
                &[
                    "percpu_free_percpu",
                    "percpu_alloc_percpu",
                    "kfree",
                    "kmem_cache_free",
                    "kmalloc",
                    "kmalloc_node",
                    "kmem_cache_alloc",
                    "kmem_cache_alloc_node",
                ],
                |f| percpu_free_layout(f).map(drop),
            ),
            ("vmalloc_alloc", &["alloc_vmap_area"], |f| {
                vmalloc_alloc_layout(f).map(drop)
            }),
            ("vmalloc_free", &["free_vmap_area_noflush"], |f| {
                vmalloc_free_layout(f).map(drop)
            }),
        ];
        for &(kernel, _, event) in OBJ_FIXTURES {
            let f = obj_fixture(kernel, event);
            for (function, accepts, check) in &functions {
                let result = check(&f);
                if accepts.contains(&event) {
                    assert!(result.is_ok(), "{function} on {kernel}/{event}: {result:?}");
                } else {
                    let err = result.expect_err(&format!("{function} on {kernel}/{event}"));
                    assert!(
                        matches!(err, TracefsError::MissingField { .. }),
                        "{function} on {kernel}/{event}: {err:?}"
                    );
                    assert!(err.to_string().contains(event), "{err}");
                }
            }
        }
    }

    #[test]
    fn slab_layout_errors() {
        let base = fixture("tracefs/6.18/kmem_cache_alloc.format");
        let edit = |from: &str, to: &str| {
            assert!(base.contains(from), "{from}");
            parse_format(&base.replace(from, to)).unwrap()
        };

        let f = edit("const void * ptr;", "const void * p;");
        for err in [
            kmalloc_layout(&f).unwrap_err(),
            kmem_cache_alloc_layout(&f).unwrap_err(),
        ] {
            assert!(
                matches!(err, TracefsError::MissingField { ref field, .. } if field == "ptr"),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("kmem_cache_alloc tracepoint has no `ptr` field"),
                "{msg}"
            );
            assert!(msg.contains("events/*/kmem_cache_alloc/format"), "{msg}");
        }
        let err = slab_free_layout(&f).unwrap_err();
        assert!(err.to_string().contains("no `ptr` field"), "{err}");

        let f = edit(
            "const void * ptr;\toffset:16;\tsize:8;",
            "const void * ptr;\toffset:16;\tsize:4;",
        );
        for err in [
            kmem_cache_alloc_layout(&f).unwrap_err(),
            slab_free_layout(&f).unwrap_err(),
        ] {
            let msg = err.to_string();
            assert!(msg.contains("`ptr` has size 4, expected 8"), "{msg}");
        }

        let f = edit(
            "size_t bytes_alloc;\toffset:40;\tsize:8;",
            "unsigned int bytes_alloc;\toffset:40;\tsize:4;",
        );
        let err = kmem_cache_alloc_layout(&f).unwrap_err();
        assert!(
            err.to_string().contains("`bytes_alloc` has size 4"),
            "{err}"
        );

        let f = edit(
            "size_t bytes_req;\toffset:32;\tsize:8;",
            "u16 bytes_req;\toffset:32;\tsize:2;",
        );
        let err = kmem_cache_alloc_layout(&f).unwrap_err();
        assert!(err.to_string().contains("`bytes_req` has size 2"), "{err}");

        let f = edit("size_t bytes_req;", "size_t req;");
        let err = kmalloc_layout(&f).unwrap_err();
        assert!(
            matches!(err, TracefsError::MissingField { ref field, .. } if field == "bytes_req")
        );

        let f = edit(
            "unsigned long gfp_flags;\toffset:48;\tsize:8;",
            "unsigned short gfp_flags;\toffset:48;\tsize:2;",
        );
        let err = kmem_cache_alloc_layout(&f).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`gfp_flags` has size 2, expected 4 (gfp_t) or 8"),
            "{msg}"
        );
        let f = edit("unsigned long gfp_flags;", "unsigned long flags;");
        let err = kmalloc_layout(&f).unwrap_err();
        assert!(err.to_string().contains("no `gfp_flags` field"), "{err}");
        // A 4-byte gfp_t is fine (4.x).
        let f = edit(
            "unsigned long gfp_flags;\toffset:48;\tsize:8;",
            "gfp_t gfp_flags;\toffset:48;\tsize:4;",
        );
        assert_eq!(kmem_cache_alloc_layout(&f).unwrap().gfp_offset, 48);

        // The name must be a __data_loc string (5.12-rc1 briefly had `const char * name`).
        let f = edit(
            "__data_loc char[] name;\toffset:24;\tsize:4;",
            "const char * name;\toffset:24;\tsize:8;",
        );
        let err = kmem_cache_alloc_layout(&f).unwrap_err();
        assert!(matches!(err, TracefsError::BadFieldType { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("field `name` is `const char *` (size 8)")
                && msg.contains("expected `__data_loc char[]` (size 4)"),
            "{msg}"
        );
        // ... which kmalloc_layout and the free layout do not read.
        assert!(kmalloc_layout(&f).is_ok());
        let f = edit(
            "__data_loc char[] name;\toffset:24;\tsize:4;",
            "__data_loc char[] name;\toffset:24;\tsize:8;",
        );
        let err = kmem_cache_alloc_layout(&f).unwrap_err();
        assert!(err.to_string().contains("(size 8)"), "{err}");
        let f = edit("__data_loc char[] name;", "__rel_loc char[] name;");
        assert!(kmem_cache_alloc_layout(&f).is_err());
    }

    #[test]
    fn percpu_layout_errors() {
        let new = fixture("tracefs/6.18/percpu_alloc_percpu.format");
        let old = fixture("tracefs/4.19/percpu_alloc_percpu.format");

        let f = parse_format(&new.replace("void __seg_gs * ptr;", "void __seg_gs * p;")).unwrap();
        let err = percpu_alloc_layout(&f, 2).unwrap_err();
        assert!(
            matches!(err, TracefsError::MissingField { ref field, .. } if field == "ptr"),
            "{err:?}"
        );
        assert!(err.to_string().contains("percpu_alloc_percpu"), "{err}");

        // Without bytes_alloc the per-CPU size is needed.
        let f = parse_format(&old.replace("size_t size;", "size_t sz;")).unwrap();
        let err = percpu_alloc_layout(&f, 2).unwrap_err();
        assert!(
            matches!(err, TracefsError::MissingField { ref field, .. } if field == "size"),
            "{err:?}"
        );
        // With bytes_alloc it is not.
        let f = parse_format(&new.replace("size_t size;", "size_t sz;")).unwrap();
        assert_eq!(percpu_alloc_layout(&f, 2).unwrap().bytes_offset, 64);

        let f = parse_format(&new.replace(
            "size_t bytes_alloc;\toffset:64;\tsize:8;",
            "unsigned int bytes_alloc;\toffset:64;\tsize:4;",
        ))
        .unwrap();
        let err = percpu_alloc_layout(&f, 2).unwrap_err();
        assert!(
            err.to_string().contains("`bytes_alloc` has size 4"),
            "{err}"
        );

        let f = parse_format(&old.replace(
            "size_t size;\toffset:16;\tsize:8;",
            "unsigned int size;\toffset:16;\tsize:4;",
        ))
        .unwrap();
        let err = percpu_alloc_layout(&f, 2).unwrap_err();
        assert!(err.to_string().contains("`size` has size 4"), "{err}");

        let f = parse_format(&new.replace(
            "unsigned long gfp_flags;\toffset:72;\tsize:8;",
            "unsigned char gfp_flags;\toffset:72;\tsize:1;",
        ))
        .unwrap();
        let err = percpu_alloc_layout(&f, 2).unwrap_err();
        assert!(err.to_string().contains("`gfp_flags` has size 1"), "{err}");

        let free = fixture("tracefs/6.18/percpu_free_percpu.format");
        let f = parse_format(&free.replace(
            "void __seg_gs * ptr;\toffset:24;\tsize:8;",
            "void __seg_gs * ptr;\toffset:24;\tsize:4;",
        ))
        .unwrap();
        let err = percpu_free_layout(&f).unwrap_err();
        assert!(err.to_string().contains("`ptr` has size 4"), "{err}");
    }

    #[test]
    fn vmalloc_layout_errors() {
        let base = fixture("tracefs/6.18/alloc_vmap_area.format");
        for field in ["addr", "size", "failed"] {
            let f = parse_format(&base.replace(&format!(" {field};"), " other;")).unwrap();
            let err = vmalloc_alloc_layout(&f).unwrap_err();
            assert!(
                matches!(err, TracefsError::MissingField { field: ref missing, .. } if missing == field),
                "{field}: {err:?}"
            );
            assert!(err.to_string().contains("alloc_vmap_area"), "{err}");
        }
        let f = parse_format(&base.replace(
            "int failed;\toffset:48;\tsize:4;",
            "long failed;\toffset:48;\tsize:8;",
        ))
        .unwrap();
        let err = vmalloc_alloc_layout(&f).unwrap_err();
        assert!(
            err.to_string().contains("`failed` has size 8, expected 4"),
            "{err}"
        );
        let f = parse_format(&base.replace(
            "unsigned long addr;\toffset:8;\tsize:8;",
            "unsigned int addr;\toffset:8;\tsize:4;",
        ))
        .unwrap();
        let err = vmalloc_alloc_layout(&f).unwrap_err();
        assert!(err.to_string().contains("`addr` has size 4"), "{err}");

        let free = fixture("tracefs/6.18/free_vmap_area_noflush.format");
        let f = parse_format(&free.replace("va_start;", "start;")).unwrap();
        let err = vmalloc_free_layout(&f).unwrap_err();
        assert!(err.to_string().contains("no `va_start` field"), "{err}");
        let f = parse_format(&free.replace(
            "unsigned long va_start;\toffset:8;\tsize:8;",
            "unsigned int va_start;\toffset:8;\tsize:4;",
        ))
        .unwrap();
        assert!(vmalloc_free_layout(&f).is_err());
    }

    #[test]
    fn same_layout_prefix_compares_the_named_fields() {
        const READ: &[&str] = &["ptr", "bytes_req", "bytes_alloc", "gfp_flags", "name"];
        let kmalloc = obj_fixture("4.19", "kmalloc");
        let kmalloc_node = obj_fixture("4.19", "kmalloc_node");
        assert!(same_layout_prefix(&kmalloc, &kmalloc_node, READ));
        assert!(same_layout_prefix(&kmalloc_node, &kmalloc, READ));
        assert!(same_layout_prefix(
            &obj_fixture("4.19", "kmem_cache_alloc"),
            &obj_fixture("4.19", "kmem_cache_alloc_node"),
            READ
        ));
        // `node` exists in one only.
        assert!(!same_layout_prefix(
            &kmalloc,
            &kmalloc_node,
            &["ptr", "node"]
        ));
        assert!(same_layout_prefix(&kmalloc, &kmalloc_node, &[]));

        // 6.18 kmem_cache_alloc has a name that shifts bytes_req etc. against kmalloc.
        let kmalloc = obj_fixture("6.18", "kmalloc");
        let cache_alloc = obj_fixture("6.18", "kmem_cache_alloc");
        assert!(same_layout_prefix(
            &kmalloc,
            &cache_alloc,
            &["call_site", "ptr"]
        ));
        assert!(!same_layout_prefix(
            &kmalloc,
            &cache_alloc,
            &["ptr", "bytes_req"]
        ));
        // gfp_t (4.19) vs unsigned long (6.1) at the same offset: different size.
        assert!(!same_layout_prefix(
            &obj_fixture("4.19", "kmalloc"),
            &obj_fixture("6.1", "kmalloc"),
            &["gfp_flags"]
        ));

        // What the loader does instead: compare the computed layouts.
        assert_eq!(
            kmalloc_layout(&obj_fixture("4.19", "kmalloc_node")).unwrap(),
            kmalloc_layout(&obj_fixture("4.19", "kmalloc")).unwrap()
        );
    }

    #[test]
    fn event_exists_per_kernel() {
        let cases: [(&str, &str, &str, [bool; 3]); 10] = [
            //                                        4.19   6.1    6.18
            ("kmem", "kmalloc", "", [true, true, true]),
            ("kmem", "kmem_cache_alloc", "", [true, true, true]),
            ("kmem", "kfree", "", [true, true, true]),
            ("kmem", "kmem_cache_free", "", [true, true, true]),
            (
                "kmem",
                "kmalloc_node",
                "merged into kmalloc in 6.1",
                [true, false, false],
            ),
            ("kmem", "kmem_cache_alloc_node", "", [true, false, false]),
            ("percpu", "percpu_alloc_percpu", "4.13+", [true, true, true]),
            ("percpu", "percpu_free_percpu", "", [true, true, true]),
            ("vmalloc", "alloc_vmap_area", "6.2+", [false, false, true]),
            (
                "vmalloc",
                "free_vmap_area_noflush",
                "",
                [false, false, true],
            ),
        ];
        for (i, kernel) in ["4.19", "6.1", "6.18"].into_iter().enumerate() {
            let tree = fixture_tree(kernel);
            for (category, event, why, exists) in &cases {
                assert_eq!(
                    event_exists(tree.path(), category, event),
                    exists[i],
                    "{kernel} {category}:{event} ({why})"
                );
                if exists[i] {
                    assert_eq!(
                        read_format(tree.path(), category, event).unwrap().name,
                        *event
                    );
                }
            }
            // Wrong category, unknown event, missing root.
            assert!(!event_exists(tree.path(), "percpu", "kmalloc"));
            assert!(!event_exists(tree.path(), "kmem", "no_such_event"));
        }
        assert!(!event_exists(
            Path::new("/nonexistent/tracing"),
            "kmem",
            "kmalloc"
        ));
        // A directory without a format file is not an event.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("events/kmem/kmalloc")).unwrap();
        assert!(!event_exists(dir.path(), "kmem", "kmalloc"));
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0\n"), Some(1));
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(8));
        assert_eq!(parse_cpu_list("0-3,5,7-8\n"), Some(7));
        assert_eq!(parse_cpu_list("0-8191"), Some(8192));
        assert_eq!(parse_cpu_list(" 2-3 "), Some(2));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("\n"), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("0-3,2-5"), None);
        assert_eq!(parse_cpu_list("4,2"), None);
        assert_eq!(parse_cpu_list("0,,1"), None);
        assert_eq!(parse_cpu_list("0-"), None);
        assert_eq!(parse_cpu_list("a-b"), None);
        assert_eq!(parse_cpu_list("0-7:2/4"), None);
        assert_eq!(parse_cpu_list("0-4294967295"), None);
        let cpus = possible_cpus();
        assert!(cpus >= 1, "{cpus}");
        if let Ok(text) = std::fs::read_to_string("/sys/devices/system/cpu/possible") {
            assert_eq!(Some(cpus), parse_cpu_list(&text), "{text:?}");
        }
    }

    #[test]
    fn buddyinfo_max_order() {
        assert_eq!(
            parse_buddyinfo_max_order(&fixture("buddyinfo/6.18-x86_64.txt")),
            Some(10)
        );
        assert_eq!(
            parse_buddyinfo_max_order(&fixture("buddyinfo/4.19-x86_64-numa.txt")),
            Some(10)
        );
        assert_eq!(
            parse_buddyinfo_max_order(&fixture("buddyinfo/arm64-64k-pages.txt")),
            Some(13)
        );
        assert_eq!(parse_buddyinfo_max_order(""), None);
        assert_eq!(parse_buddyinfo_max_order("Node 0, zone Normal\n"), None);
        assert_eq!(parse_buddyinfo_max_order("garbage\n"), None);
    }

    #[test]
    fn page_size_and_max_order_are_sane() {
        let size = page_size();
        assert!(size >= 4096 && size.is_power_of_two(), "{size}");
        let order = max_order();
        assert!((1..=20).contains(&order), "{order}");
    }
}
