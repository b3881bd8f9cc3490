//! Format parsing and layouts on recorded format files of several kernels.

use super::format::{parse_format, split_declaration};
use super::*;
use memtrace_common::{ObjAllocLayout, ObjFreeLayout, PageAllocLayout, PageFreeLayout, NO_FIELD};

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
    assert!(matches!(err, TracefsError::MissingField { ref field, .. } if field == "migratetype"));
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
        call_site_offset: NO_FIELD,
    }
}

/// [`alloc`] of a slab event, whose `call_site` is at offset 8 on every kernel.
fn slab(ptr: u32, bytes: u32, bytes_req: u32, name: u32, gfp: u32) -> ObjAllocLayout {
    ObjAllocLayout {
        call_site_offset: 8,
        ..alloc(ptr, bytes, 1, bytes_req, name, NO_FIELD, gfp)
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
    assert_eq!(kmalloc_layout(&kmalloc).unwrap(), slab(16, 32, 24, N, 40));

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
        slab(16, 40, 32, 24, 48)
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
    let expected = slab(16, 32, 24, N, 40);
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
    assert_eq!(kmalloc_layout(&kmalloc).unwrap(), slab(16, 32, 24, N, 40));
    // kmem_cache_alloc: `accounted` but no `name` yet (that came in 6.18).
    let cache_alloc = obj_fixture("6.1", "kmem_cache_alloc");
    assert_eq!(cache_alloc.field("accounted").unwrap().offset, 52);
    assert!(cache_alloc.field("name").is_none());
    assert_eq!(
        kmem_cache_alloc_layout(&cache_alloc).unwrap(),
        slab(16, 32, 24, N, 40)
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
    assert!(matches!(err, TracefsError::MissingField { ref field, .. } if field == "bytes_req"));

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
