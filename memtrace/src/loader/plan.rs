//! The plan of a session, decided before anything touches the kernel: the `Config` the
//! programs read, the size of every map, the hooks of each kind and what to say about each.
//! Pure apart from reading tracefs format files under a root it is given, so it is tested on
//! the recorded format files of several kernels.

use std::path::Path;

use memtrace_common::{page_table, programs, Config, Kind, SlabBtfLayout, SlabNameLayout};

use super::{pages, LoadOptions, SetupError};
use crate::kernel::{btf::KernelBtf, mm, tracefs};
use crate::model::KindStatus;

/// What the plan depends on about this machine (gathered once by [`KernelFacts::read`]).
#[derive(Clone, Debug)]
pub struct KernelFacts<'a> {
    /// The tracefs root (with `events/`).
    pub root: &'a Path,
    /// The kernel's BTF, or why there is none.
    pub btf: Result<&'a KernelBtf, String>,
    pub page_size: u64,
    pub max_order: u32,
    /// Highest pfn plus one and where it came from (`/proc/zoneinfo`, else `/proc/iomem`),
    /// or why it is not known.
    pub max_pfn: Result<(u64, &'static str), String>,
    /// Most entries the page table may have ([`pages::PAGE_TABLE_CAP`]; smaller with the test
    /// knob [`pages::CAP_ENV`]).
    pub page_table_cap: u64,
    /// Owners the owner table holds (`page_table::MAX_OWNER_INDEX`; fewer with the test knob
    /// [`pages::OWNER_CAP_ENV`]).
    pub owner_cap: u32,
    pub possible_cpus: u32,
    /// Largest kmalloc cache object.
    pub kmalloc_max_size: u32,
    /// memtrace's own tgid.
    pub self_tgid: u32,
}

impl<'a> KernelFacts<'a> {
    /// This machine's facts.
    pub fn read(root: &'a Path, btf: Result<&'a KernelBtf, String>) -> Self {
        let page_size = mm::page_size();
        KernelFacts {
            root,
            btf,
            page_size,
            max_order: mm::max_order(),
            max_pfn: pages::machine_max_pfn(page_size),
            page_table_cap: env_number(pages::CAP_ENV, pages::PAGE_TABLE_CAP),
            owner_cap: u32::try_from(env_number(
                pages::OWNER_CAP_ENV,
                u64::from(page_table::MAX_OWNER_INDEX),
            ))
            .unwrap_or(page_table::MAX_OWNER_INDEX)
            .clamp(1, page_table::MAX_OWNER_INDEX),
            possible_cpus: mm::possible_cpus(),
            kmalloc_max_size: kmalloc_max_size(page_size),
            self_tgid: std::process::id(),
        }
    }
}

/// A number from the environment variable `name` (a test knob), else `default`.
fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Entries of each map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// Values (64 entries each) of the page table.
    pub page_table: u32,
    /// `u64` words of the page table's summary (one bit per value).
    pub table_summary: u32,
    /// Owner table: index → owner (`owner_cap + 1`: index 0 is "other owners"); also the
    /// length of the ring of recycled indices.
    pub owners: u32,
    /// Owner table: owner → index.
    pub owner_ids: u32,
    /// gfp flags and migrate type per page stack slot.
    pub stack_gfp: u32,
    pub objects: u32,
    pub cache_names: u32,
    pub stacks: u32,
    pub stacks_alt: u32,
    pub stack_agg: u32,
}

/// The plan.
pub struct Plan {
    pub config: Config,
    /// Buckets of the stack map.
    pub stack_slots: u32,
    pub map_sizes: MapSizes,
    /// The page table, when pages are traced.
    pub page_table: Option<pages::PageTable>,
    /// The kinds that will be traced.
    pub(super) planned: Vec<PlannedKind>,
    /// The kinds skipped, with why.
    pub kinds: Vec<KindStatus>,
    /// `sizeof(struct page)` where the page programs can run as tp_btf, or why not.
    pub page_btf: Result<u32, String>,
    /// How the slab programs read cache names, or why they cannot.
    pub slab_names: Result<SlabNameLayout, String>,
    /// The `struct kmem_cache` offsets where the slab programs can run as raw tracepoints (their
    /// prototypes checked in BTF), or why not.
    pub slab_btf: Result<SlabBtfLayout, String>,
}

/// Plans the session `opts` asks for on a machine with `facts`. A kind whose events this
/// kernel lacks is skipped with a note; none traceable is an error.
pub fn plan(opts: &LoadOptions, facts: &KernelFacts<'_>) -> Result<Plan, SetupError> {
    let stack_slots = opts
        .max_stacks
        .max(1)
        .checked_next_power_of_two()
        .unwrap_or(1 << 31);
    let alt_slots = alt_stack_slots(stack_slots);
    let slot_count = stack_slots + alt_slots;
    // The page table: one entry per pfn up to its cap, one per sampled pfn beyond.
    let page_table = facts
        .max_pfn
        .as_ref()
        .ok()
        .map(|&(max_pfn, source)| pages::PageTable {
            geometry: pages::geometry(max_pfn, facts.page_table_cap),
            max_pfn_source: source,
            owner_cap: facts.owner_cap,
        });
    let mut config = Config {
        page_size: facts.page_size,
        self_tgid: facts.self_tgid,
        max_order: facts.max_order,
        stack_none_id: slot_count,
        agg_stride: slot_count + 1,
        stack_alt_base: stack_slots,
        skip_movable: u32::from(opts.skip_movable),
        sample_every: opts.sample_every.max(1),
        movable_stack_every: opts.movable_stack_every,
        // Slots 0..=stack_none_id.
        entry_stack_bits: page_table::stack_bits(slot_count + 1),
        filters: opts.filters,
        slab_stack_every: opts.slab_stack_every,
        ..Config::zeroed()
    };
    // tp_btf for pages where the kernel's BTF has the prototypes memtrace expects.
    let page_btf = if opts.kinds.contains(&Kind::Page) && !opts.classic_tracepoints {
        facts.btf.clone().and_then(page_btf_support)
    } else {
        Err("disabled (--classic-tracepoints)".into())
    };
    if let Ok(size) = page_btf {
        config.page_struct_size = size;
        config.page_struct_shift = if size.is_power_of_two() {
            size.trailing_zeros()
        } else {
            0
        };
    }
    // Slab cache names read through each object's slab, where the BTF has the layouts.
    let slab_names = if opts.kinds.contains(&Kind::Slab) {
        facts
            .btf
            .clone()
            .and_then(|b| slab_name_layout(b, config.page_size, facts.kmalloc_max_size))
    } else {
        Err("slab not traced".into())
    };
    if let Ok(names) = slab_names {
        config.slab_names = names;
    }
    // Raw tracepoints for slab where the kernel's BTF has the 6.1+ prototypes.
    let slab_btf = if !opts.kinds.contains(&Kind::Slab) {
        Err("slab not traced".into())
    } else if opts.classic_tracepoints {
        Err("disabled (--classic-tracepoints)".into())
    } else {
        facts.btf.clone().and_then(slab_btf_support)
    };
    if let Ok(layout) = slab_btf {
        config.slab_btf = layout;
    }
    let mut planned: Vec<PlannedKind> = Vec::new();
    let mut kinds = Vec::new();
    for &kind in &opts.kinds {
        let planned_kind = match (&facts.max_pfn, kind) {
            (Err(why), Kind::Page) => Err(format!("the page table cannot be sized: {why}")),
            _ => plan_kind(facts.root, kind, facts.possible_cpus, &mut config),
        };
        match planned_kind {
            Ok(p) => planned.push(p),
            Err(reason) => kinds.push(KindStatus {
                kind: kind.name().into(),
                traced: false,
                hooks: Vec::new(),
                note: Some(reason),
            }),
        }
    }
    if planned.is_empty() {
        return Err(SetupError::NoKind {
            reasons: kinds
                .iter()
                .map(|k| format!("{}: {}", k.kind, k.note.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    let traces = |k: Kind| planned.iter().any(|p| p.kind == k);
    let page_table = page_table.filter(|_| traces(Kind::Page));
    if let Some(t) = &page_table {
        config.table_indices = t.geometry.indices;
        config.pfn_shift = t.geometry.pfn_shift;
        config.owner_cap = t.owner_cap;
    }
    let objects_traced = traces(Kind::Slab) || traces(Kind::Percpu) || traces(Kind::Vmalloc);
    // Maps of kinds not traced get one entry: their memory is not wasted.
    let one_unless = |traced: bool, n: u32| if traced { n.max(1) } else { 1 };
    let map_sizes = MapSizes {
        page_table: page_table.map_or(1, |t| t.geometry.chunks.max(1)),
        table_summary: page_table.map_or(1, |t| t.geometry.chunks.div_ceil(64).max(1)),
        owners: page_table.map_or(1, |t| t.owner_cap + 1),
        owner_ids: page_table.map_or(1, |t| t.owner_cap),
        stack_gfp: one_unless(traces(Kind::Page), slot_count + 1),
        objects: one_unless(objects_traced, opts.max_objects),
        cache_names: one_unless(traces(Kind::Slab), slot_count),
        stacks: stack_slots,
        stacks_alt: alt_slots,
        stack_agg: Kind::COUNT * (slot_count + 1),
    };
    Ok(Plan {
        config,
        stack_slots,
        map_sizes,
        page_table,
        planned,
        kinds,
        page_btf,
        slab_names,
        slab_btf,
    })
}

/// One tracepoint to attach a program to.
#[derive(Clone, Copy, Debug)]
pub(super) struct Hook {
    pub(super) program: &'static str,
    pub(super) category: &'static str,
    pub(super) event: &'static str,
    /// Frees attach before allocations, so no allocation is recorded whose free could go
    /// unseen.
    pub(super) is_free: bool,
}

pub(super) const fn hook(
    program: &'static str,
    category: &'static str,
    event: &'static str,
    is_free: bool,
) -> Hook {
    Hook {
        program,
        category,
        event,
        is_free,
    }
}

/// A kind that will be traced: its hooks, and anything to say about it.
pub(super) struct PlannedKind {
    pub(super) kind: Kind,
    pub(super) hooks: Vec<Hook>,
    pub(super) note: Option<String>,
}

/// Reads the formats of a kind's events, fills its part of `config` and says which hooks to
/// attach; `Err(note)` when the kind cannot be traced on this kernel.
fn plan_kind(
    root: &Path,
    kind: Kind,
    possible_cpus: u32,
    config: &mut Config,
) -> Result<PlannedKind, String> {
    let fmt = |cat: &str, ev: &str| tracefs::read_format(root, cat, ev).map_err(|e| e.to_string());
    let layout_err = |ev: &str, e: tracefs::TracefsError| format!("{ev}: {e}");
    let mut note = None;
    let hooks = match kind {
        Kind::Page => {
            let alloc = fmt("kmem", "mm_page_alloc")?;
            let free = fmt("kmem", "mm_page_free")?;
            config.page_alloc =
                tracefs::page_alloc_layout(&alloc).map_err(|e| layout_err("mm_page_alloc", e))?;
            config.page_free =
                tracefs::page_free_layout(&free).map_err(|e| layout_err("mm_page_free", e))?;
            vec![
                hook(programs::PAGE_FREE, "kmem", "mm_page_free", true),
                hook(programs::PAGE_ALLOC, "kmem", "mm_page_alloc", false),
            ]
        }
        Kind::Slab => {
            let kmalloc = fmt("kmem", "kmalloc")?;
            let cache_alloc = fmt("kmem", "kmem_cache_alloc")?;
            let kfree = fmt("kmem", "kfree")?;
            let cache_free = fmt("kmem", "kmem_cache_free")?;
            config.kmalloc =
                tracefs::kmalloc_layout(&kmalloc).map_err(|e| layout_err("kmalloc", e))?;
            config.kmem_cache_alloc = tracefs::kmem_cache_alloc_layout(&cache_alloc)
                .map_err(|e| layout_err("kmem_cache_alloc", e))?;
            config.kfree = tracefs::slab_free_layout(&kfree).map_err(|e| layout_err("kfree", e))?;
            config.kmem_cache_free = tracefs::slab_free_layout(&cache_free)
                .map_err(|e| layout_err("kmem_cache_free", e))?;
            let mut hooks = vec![
                hook(programs::KFREE, "kmem", "kfree", true),
                hook(programs::KMEM_CACHE_FREE, "kmem", "kmem_cache_free", true),
                hook(programs::KMALLOC, "kmem", "kmalloc", false),
                hook(
                    programs::KMEM_CACHE_ALLOC,
                    "kmem",
                    "kmem_cache_alloc",
                    false,
                ),
            ];
            // Kernels before 6.1 have separate *_node events with the same leading fields:
            // the same program serves both when the offsets agree.
            let mut skipped = Vec::new();
            for (program, event, base, layout_of) in [
                (
                    programs::KMALLOC,
                    "kmalloc_node",
                    config.kmalloc,
                    tracefs::kmalloc_layout as fn(&tracefs::EventFormat) -> _,
                ),
                (
                    programs::KMEM_CACHE_ALLOC,
                    "kmem_cache_alloc_node",
                    config.kmem_cache_alloc,
                    tracefs::kmem_cache_alloc_layout,
                ),
            ] {
                if !tracefs::event_exists(root, "kmem", event) {
                    continue;
                }
                match fmt("kmem", event).and_then(|f| layout_of(&f).map_err(|e| e.to_string())) {
                    Ok(l) if l == base => hooks.push(hook(program, "kmem", event, false)),
                    _ => skipped.push(event),
                }
            }
            if !skipped.is_empty() {
                note = Some(format!(
                    "kmem:{} not traced (layout differs from the base event)",
                    skipped.join(", kmem:")
                ));
            }
            hooks
        }
        Kind::Percpu => {
            let alloc = fmt("percpu", "percpu_alloc_percpu")?;
            let free = fmt("percpu", "percpu_free_percpu")?;
            config.percpu_alloc = tracefs::percpu_alloc_layout(&alloc, possible_cpus)
                .map_err(|e| layout_err("percpu_alloc_percpu", e))?;
            config.percpu_free = tracefs::percpu_free_layout(&free)
                .map_err(|e| layout_err("percpu_free_percpu", e))?;
            note = Some("bytes over all possible CPUs".into());
            vec![
                hook(programs::PERCPU_FREE, "percpu", "percpu_free_percpu", true),
                hook(
                    programs::PERCPU_ALLOC,
                    "percpu",
                    "percpu_alloc_percpu",
                    false,
                ),
            ]
        }
        Kind::Vmalloc => {
            let alloc = fmt("vmalloc", "alloc_vmap_area")?;
            let free = fmt("vmalloc", "free_vmap_area_noflush")?;
            config.vmalloc_alloc = tracefs::vmalloc_alloc_layout(&alloc)
                .map_err(|e| layout_err("alloc_vmap_area", e))?;
            config.vmalloc_free = tracefs::vmalloc_free_layout(&free)
                .map_err(|e| layout_err("free_vmap_area_noflush", e))?;
            note = Some("vmap area sizes (virtual, including guard pages)".into());
            vec![
                hook(
                    programs::VMALLOC_FREE,
                    "vmalloc",
                    "free_vmap_area_noflush",
                    true,
                ),
                hook(programs::VMALLOC_ALLOC, "vmalloc", "alloc_vmap_area", false),
            ]
        }
    };
    Ok(PlannedKind { kind, hooks, note })
}

/// Buckets of the second stack map for `stack_slots` buckets in the first (a power of two):
/// a quarter. It only holds the stacks that collided in the first map (a few percent of
/// them while the first is far from full).
pub fn alt_stack_slots(stack_slots: u32) -> u32 {
    (stack_slots / 4).max(1)
}

/// Where the slab programs find an object's cache (see [`SlabNameLayout`]), from the BTF.
fn slab_name_layout(
    btf: &KernelBtf,
    page_size: u64,
    kmalloc_max_size: u32,
) -> Result<SlabNameLayout, String> {
    let need = |what: &str, v: Option<u32>| v.ok_or_else(|| format!("no {what} in the kernel BTF"));
    let page_struct_size = need("struct page", btf.struct_size("page").filter(|&s| s > 0))?;
    let compound_head = need(
        "struct page.compound_head",
        btf.member_offset("page", "compound_head"),
    )?;
    // `struct slab` overlays the head page since 5.17; before, the field is in `struct page`.
    let slab_cache = need(
        "struct slab.slab_cache",
        btf.member_offset("slab", "slab_cache")
            .or_else(|| btf.member_offset("page", "slab_cache")),
    )?;
    let cache_size = need(
        "struct kmem_cache.size",
        btf.member_offset("kmem_cache", "size"),
    )?;
    let cache_name = need(
        "struct kmem_cache.name",
        btf.member_offset("kmem_cache", "name"),
    )?;
    if !page_size.is_power_of_two() {
        return Err(format!("page size {page_size} is not a power of two"));
    }
    Ok(SlabNameLayout {
        page_struct_size,
        page_shift: page_size.trailing_zeros(),
        compound_head,
        slab_cache,
        cache_size,
        cache_name,
        kmalloc_max_size,
        _pad: 0,
    })
}

/// The largest kmalloc cache object on this kernel: the largest `kmalloc-<size>` in
/// `/proc/slabinfo` (8 KiB with SLUB on 4 KiB pages), else two pages (SLUB's limit).
pub(super) fn kmalloc_max_size(page_size: u64) -> u32 {
    let default = u32::try_from(2 * page_size).unwrap_or(u32::MAX);
    std::fs::read_to_string("/proc/slabinfo")
        .ok()
        .and_then(|text| kmalloc_max_from_slabinfo(&text))
        .unwrap_or(default)
}

/// The largest object size of the plain `kmalloc-*` caches in a `/proc/slabinfo` text.
pub fn kmalloc_max_from_slabinfo(text: &str) -> Option<u32> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let objsize = words.nth(2)?.parse::<u32>().ok()?;
            name.strip_prefix("kmalloc-")
                .filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                .map(|_| objsize)
        })
        .max()
}

/// `sizeof(struct page)` when the kernel's BTF describes the page tracepoints the way the
/// tp_btf programs read them.
fn page_btf_support(btf: &KernelBtf) -> Result<u32, String> {
    let size = btf
        .struct_size("page")
        .filter(|&s| s > 0)
        .ok_or("no struct page in the kernel BTF")?;
    for (event, expected) in [
        (
            "mm_page_alloc",
            &["struct page *", "unsigned int", "gfp_t", "int"][..],
        ),
        ("mm_page_free", &["struct page *", "unsigned int"][..]),
    ] {
        let args = btf
            .tracepoint_args(event)
            .ok_or_else(|| format!("no btf_trace_{event} in the kernel BTF"))?;
        if args != expected {
            return Err(format!(
                "{event} has arguments ({}), expected ({})",
                args.join(", "),
                expected.join(", ")
            ));
        }
    }
    Ok(size)
}

/// The argument types of the slab tracepoints as the raw tracepoint programs read them (6.1+, when
/// `kmalloc_node` / `kmem_cache_alloc_node` were folded in and `kmem_cache_alloc` /
/// `kmem_cache_free` started passing the cache), in the spelling of [`KernelBtf::type_name`].
pub const SLAB_TP_BTF_ARGS: [(&str, &[&str]); 4] = [
    (
        "kmalloc",
        &[
            "long unsigned int",
            "void*",
            "size_t",
            "size_t",
            "gfp_t",
            "int",
        ],
    ),
    (
        "kmem_cache_alloc",
        &[
            "long unsigned int",
            "void*",
            "struct kmem_cache *",
            "gfp_t",
            "int",
        ],
    ),
    ("kfree", &["long unsigned int", "void*"]),
    (
        "kmem_cache_free",
        &["long unsigned int", "void*", "struct kmem_cache *"],
    ),
];

/// Where the raw slab programs read a `struct kmem_cache`, when the kernel's BTF describes
/// the slab tracepoints the way they read them (older kernels pass sizes instead of the cache
/// and have separate `*_node` events: classic tracepoints there).
fn slab_btf_support(btf: &KernelBtf) -> Result<SlabBtfLayout, String> {
    for (event, expected) in SLAB_TP_BTF_ARGS {
        let args = btf
            .tracepoint_args(event)
            .ok_or_else(|| format!("no btf_trace_{event} in the kernel BTF"))?;
        if args != expected {
            return Err(format!(
                "{event} has arguments ({}), expected ({}) as on 6.1+",
                args.join(", "),
                expected.join(", ")
            ));
        }
    }
    let member = |m: &str| {
        btf.member_offset("kmem_cache", m)
            .ok_or_else(|| format!("no struct kmem_cache.{m} in the kernel BTF"))
    };
    Ok(SlabBtfLayout {
        cache_size: member("size")?,
        cache_object_size: member("object_size")?,
        cache_name: member("name")?,
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use memtrace_common::{Filters, NO_FIELD};

    use super::*;
    use crate::kernel::btf::KernelBtf;

    /// A tracefs tree of the recorded format files of `kernel` (`tests/fixtures/tracefs/`).
    fn tree(kernel: &str) -> tempfile::TempDir {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tracefs")
            .join(kernel);
        let dir = tempfile::tempdir().expect("temp dir");
        for entry in std::fs::read_dir(&src).expect("fixtures") {
            let path = entry.expect("entry").path();
            let event = path
                .file_stem()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let category = match event.as_str() {
                e if e.starts_with("percpu") => "percpu",
                e if e.contains("vmap") => "vmalloc",
                e if e.starts_with("sched") => "sched",
                _ => "kmem",
            };
            let d = dir.path().join("events").join(category).join(&event);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::copy(&path, d.join("format")).expect("copy");
        }
        dir
    }

    fn facts(root: &Path) -> KernelFacts<'_> {
        KernelFacts {
            root,
            btf: Err("no kernel BTF (test)".into()),
            page_size: 4096,
            max_order: 10,
            max_pfn: Ok((6_553_600, "/proc/zoneinfo")),
            page_table_cap: pages::PAGE_TABLE_CAP,
            owner_cap: page_table::MAX_OWNER_INDEX,
            possible_cpus: 2,
            kmalloc_max_size: 8192,
            self_tgid: 4242,
        }
    }

    fn opts(kinds: &[Kind]) -> LoadOptions {
        LoadOptions {
            max_objects: 1 << 18,
            max_stacks: 10_000,
            kinds: kinds.to_vec(),
            skip_movable: true,
            sample_every: 1,
            movable_stack_every: 64,
            classic_tracepoints: false,
            filters: Filters::none(),
            slab_sample_every: 1,
            slab_stack_every: 16,
        }
    }

    fn hooks(p: &Plan, kind: Kind) -> Vec<String> {
        p.planned
            .iter()
            .filter(|k| k.kind == kind)
            .flat_map(|k| k.hooks.iter())
            .map(|h| format!("{}:{}", h.category, h.event))
            .collect()
    }

    #[test]
    fn every_kind_on_6_18_without_btf() {
        let dir = tree("6.18");
        let p = plan(&opts(&Kind::ALL), &facts(dir.path())).expect("plan");
        assert!(p.kinds.is_empty(), "nothing skipped: {:?}", p.kinds);
        assert_eq!(
            hooks(&p, Kind::Page),
            ["kmem:mm_page_free", "kmem:mm_page_alloc"]
        );
        assert_eq!(
            hooks(&p, Kind::Slab),
            [
                "kmem:kfree",
                "kmem:kmem_cache_free",
                "kmem:kmalloc",
                "kmem:kmem_cache_alloc"
            ]
        );
        assert_eq!(hooks(&p, Kind::Vmalloc).len(), 2);
        // Stack slots: 10 000 rounds up to 16 384, plus a quarter in the second map.
        assert_eq!(p.stack_slots, 16_384);
        assert_eq!(p.map_sizes.stacks_alt, 4096);
        assert_eq!(p.config.stack_none_id, 16_384 + 4096);
        assert_eq!(p.map_sizes.stack_agg, 4 * (16_384 + 4096 + 1));
        // The page table: one entry per pfn of 25 GiB, 64 per value; the owner table.
        assert_eq!(p.map_sizes.page_table, 102_400);
        // Its summary: one bit per value, 12.5 KiB.
        assert_eq!(p.map_sizes.table_summary, 1600);
        assert_eq!(p.config.table_indices, 6_553_600);
        assert_eq!((p.config.pfn_shift, p.config.owner_cap), (0, 65_535));
        assert_eq!(
            (p.map_sizes.owners, p.map_sizes.owner_ids),
            (65_536, 65_535)
        );
        assert_eq!(p.map_sizes.stack_gfp, 16_384 + 4096 + 1);
        // Stack slots 0..=16 384 + 4096 need 15 bits of an entry.
        assert_eq!(p.config.entry_stack_bits, 15);
        assert_eq!(p.map_sizes.cache_names, 16_384 + 4096);
        // Facts reach the config; without BTF neither tp_btf nor slab names.
        assert_eq!(
            (p.config.self_tgid, p.config.page_size, p.config.max_order),
            (4242, 4096, 10)
        );
        assert!(p.page_btf.is_err() && p.slab_names.is_err());
        assert_eq!(p.config.page_struct_size, 0);
        // 6.18's kmem_cache_alloc names its cache; percpu reports bytes over all CPUs.
        assert_ne!(p.config.kmem_cache_alloc.name_offset, NO_FIELD);
        assert_eq!(p.config.percpu_alloc.bytes_multiplier, 1);
    }

    #[test]
    fn a_kind_without_events_is_skipped_with_its_reason() {
        // The 6.1 fixtures have slab and percpu events, no vmalloc ones (6.2+) and no page
        // ones (not recorded).
        let dir = tree("6.1");
        let p = plan(
            &opts(&[Kind::Slab, Kind::Percpu, Kind::Vmalloc]),
            &facts(dir.path()),
        )
        .expect("plan");
        assert_eq!(p.kinds.len(), 1);
        assert_eq!(p.kinds[0].kind, "vmalloc");
        assert!(!p.kinds[0].traced);
        assert!(
            p.kinds[0]
                .note
                .as_deref()
                .is_some_and(|n| n.contains("vmalloc:alloc_vmap_area does not exist")),
            "{:?}",
            p.kinds[0].note
        );
        // Maps of kinds not traced take one entry.
        assert_eq!(
            (
                p.map_sizes.page_table,
                p.map_sizes.owners,
                p.map_sizes.owner_ids,
                p.map_sizes.stack_gfp
            ),
            (1, 1, 1, 1)
        );
        assert!(p.page_table.is_none());
        assert_eq!(p.config.table_indices, 0);
        assert_eq!(p.map_sizes.objects, 1 << 18);
        // 6.1's kmem_cache_alloc has no name field.
        assert_eq!(p.config.kmem_cache_alloc.name_offset, NO_FIELD);
    }

    #[test]
    fn node_twins_of_4_19_share_the_programs() {
        let dir = tree("4.19");
        let p = plan(&opts(&[Kind::Slab, Kind::Percpu]), &facts(dir.path())).expect("plan");
        let slab = hooks(&p, Kind::Slab);
        assert!(slab.contains(&"kmem:kmalloc_node".to_string()), "{slab:?}");
        assert!(slab.contains(&"kmem:kmem_cache_alloc_node".to_string()));
        // 4.19's percpu event has no bytes_alloc: size times possible CPUs.
        assert_eq!(p.config.percpu_alloc.bytes_multiplier, 2);
    }

    #[test]
    fn the_page_table_is_sized_from_the_highest_pfn() {
        let dir = tree("6.18");
        // A test cap of 2^20 entries on 25 GiB: one sampled pfn per 8, and the note says so.
        let mut f = facts(dir.path());
        f.page_table_cap = 1 << 20;
        f.owner_cap = 7;
        let p = plan(&opts(&[Kind::Page]), &f).expect("plan");
        let t = p.page_table.expect("page table");
        assert_eq!((t.geometry.pfn_shift, t.pages_per_entry()), (3, 8));
        assert_eq!(p.config.pfn_shift, 3);
        assert_eq!(p.config.table_indices, 819_200);
        assert_eq!(p.map_sizes.page_table, 12_800);
        assert_eq!(p.map_sizes.table_summary, 200);
        assert_eq!((p.map_sizes.owners, p.config.owner_cap), (8, 7));
        // Without the highest pfn the page kind cannot be traced; the others still are.
        f.max_pfn = Err("no zoneinfo (test)".into());
        let p = plan(&opts(&[Kind::Page, Kind::Slab]), &f).expect("plan");
        assert!(p.page_table.is_none());
        assert_eq!(p.kinds.len(), 1);
        assert_eq!(p.kinds[0].kind, "page");
        assert!(p.kinds[0]
            .note
            .as_deref()
            .is_some_and(|n| n.contains("page table cannot be sized")));
        assert_eq!(p.map_sizes.page_table, 1);
    }

    #[test]
    fn tp_btf_only_where_the_prototypes_match() {
        let dir = tree("6.18");
        // BTF with the page tracepoints as the tp_btf programs read them.
        let good = KernelBtf::parse(&crate::kernel::btf::tests::kernel_like(64)).expect("btf");
        let mut f = facts(dir.path());
        f.btf = Ok(&good);
        let p = plan(&opts(&[Kind::Page]), &f).expect("plan");
        assert_eq!(p.page_btf, Ok(64));
        assert_eq!(
            (p.config.page_struct_size, p.config.page_struct_shift),
            (64, 6)
        );
        // --classic-tracepoints: not even tried.
        let mut classic = opts(&[Kind::Page]);
        classic.classic_tracepoints = true;
        let p = plan(&classic, &f).expect("plan");
        assert!(p
            .page_btf
            .is_err_and(|e| e.contains("--classic-tracepoints")));
        // A kernel whose mm_page_free passes something else first: classic, with the reason.
        let other = KernelBtf::parse(&crate::kernel::btf::tests::blob(&[
            (1, "unsigned int", 0, 4, vec![32]),
            (4, "page", 0, 64, vec![]),
            (2, "", 0, 0, vec![]),
            (13, "", 4, 0, vec![0, 3, 0, 1, 0, 1, 0, 1]),
            (2, "", 0, 4, vec![]),
            (8, "btf_trace_mm_page_alloc", 0, 5, vec![]),
            (8, "btf_trace_mm_page_free", 0, 5, vec![]),
        ]))
        .expect("btf");
        f.btf = Ok(&other);
        let p = plan(&opts(&[Kind::Page]), &f).expect("plan");
        assert!(
            p.page_btf
                .as_ref()
                .is_err_and(|e| e.contains("has arguments")),
            "{:?}",
            p.page_btf
        );
        assert_eq!(p.config.page_struct_size, 0);
    }

    #[test]
    fn slab_tracepoints_of_this_kernel_take_raw_tp_from_6_1() {
        // Not a root-only test: /sys/kernel/btf/vmlinux is world-readable where it exists.
        let Ok(btf) = KernelBtf::from_sys_fs() else {
            return;
        };
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release.trim().split(['.', '-']);
        let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let support = slab_btf_support(&btf);
        if (major, minor) >= (6, 1) {
            let layout = support.expect("6.1+ slab prototypes");
            assert!(layout.cache_name > 0 && layout.cache_size > 0);
            assert_ne!(layout.cache_size, layout.cache_object_size);
        } else {
            assert!(support.is_err(), "{release}: {support:?}");
        }
    }

    #[test]
    fn nothing_traceable_is_an_error_naming_each_kind() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = match plan(&opts(&[Kind::Page, Kind::Vmalloc]), &facts(dir.path())) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("planned without events"),
        };
        assert!(err.contains("page:") && err.contains("vmalloc:"), "{err}");
    }
}
