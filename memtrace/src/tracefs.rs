//! tracefs: where it is, what the classic tracepoint records look like on this kernel, and a
//! few facts about the page allocator (`page_size`, `max_order`).
//!
//! The record layout of `kmem:mm_page_alloc` / `kmem:mm_page_free` differs between kernels
//! (e.g. `gfp_flags` is a 4-byte `gfp_t` on 4.x and an 8-byte `unsigned long` on 6.x, and
//! 3.x kernels had a 4-byte `common_padding` in the common header), so the offsets are read
//! from the event's `format` file at run time and handed to the eBPF programs.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use memtrace_common::{PageAllocLayout, PageFreeLayout};

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
         (see events/kmem/{event}/format in tracefs)"
    )]
    MissingField { event: String, field: String },

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
