//! Loads memtrace's eBPF object, configures it for the running kernel and attaches it.

pub mod calibrate;
mod error;
pub mod kernel;
pub mod pages;

use anyhow::Context as _;
use aya::{
    programs::{
        fentry::FEntryLinkId, tp_btf::BtfTracePointLinkId, trace_point::TracePointLinkId,
        BtfTracePoint, FEntry, ProgramError, TracePoint,
    },
    Btf, Ebpf, EbpfLoader,
};
use memtrace_common::{
    control, maps, programs, Config, Filters, Kind, SlabNameLayout, CONFIG_GLOBAL,
};

use std::path::Path;

use crate::{
    kernel::{btf::KernelBtf, mm, tracefs},
    model::KindStatus,
};
pub use error::{check_privileges, SetupError};
use kernel::KernelBtfs;

/// The eBPF object built from memtrace-ebpf (empty when built without it; see build.rs).
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace.bpf.o"));

/// Sizes chosen on the command line.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Entries of the outstanding page-allocation map.
    pub max_allocations: u32,
    /// Entries of the outstanding object map (slab, percpu, vmalloc).
    pub max_objects: u32,
    /// Requested stack slots; rounded up to a power of two (the kernel does so anyway).
    pub max_stacks: u32,
    /// Kinds to trace.
    pub kinds: Vec<Kind>,
    /// Leave movable pages (user, page cache, shmem) out in the kernel.
    pub skip_movable: bool,
    /// Record one allocation in this many (by pfn / address hash); 1 = all.
    pub sample_every: u32,
    /// Movable page allocations capture a stack once per this many (see the CLI).
    pub movable_stack_every: u32,
    /// Use the classic tracepoints for pages even where tp_btf works.
    pub classic_tracepoints: bool,
    /// Owner filters applied in the kernel (`--pid`, `--comm`, `--cgroup`, `--pod`).
    pub filters: Filters,
}

/// One attached program.
struct Attached {
    program: &'static str,
    link: Link,
}

enum Link {
    TracePoint(TracePointLinkId),
    BtfTracePoint(BtfTracePointLinkId),
    FEntry(FEntryLinkId),
}

/// Loaded and attached programs plus their maps.
pub struct Tracer {
    pub(crate) ebpf: Ebpf,
    attached: Vec<Attached>,
    pub config: Config,
    /// Slots in the stack map (= stack ids are below this).
    pub stack_slots: u32,
    /// "tracepoint kmem:mm_page_alloc", ...
    pub hooks: Vec<String>,
    /// Every requested kind, traced or skipped.
    pub kinds: Vec<KindStatus>,
    /// Names of the loaded programs.
    pub programs: Vec<String>,
    /// Kernel memory the maps take (sum of `memlock` over memtrace's BPF map fds).
    pub map_memory_bytes: u64,
}

impl Tracer {
    /// Whether `kind` is being traced.
    pub fn traces(&self, kind: Kind) -> bool {
        self.kinds.iter().any(|k| k.traced && k.kind == kind.name())
    }
}

impl Tracer {
    /// Starts the grace period: the programs stop recording new allocations (frees are still
    /// matched).
    pub fn begin_grace(&mut self) -> anyhow::Result<()> {
        let map = self
            .ebpf
            .map_mut(maps::CONTROL)
            .with_context(|| format!("the eBPF object has no map {}", maps::CONTROL))?;
        let mut control: aya::maps::Array<_, u64> =
            aya::maps::Array::try_from(map).context("CONTROL is not an array of u64")?;
        control
            .set(control::GRACE, 1, 0)
            .context("starting the grace period (writing CONTROL)")?;
        Ok(())
    }

    /// Detaches every program; the maps stay readable until the tracer is dropped.
    pub fn detach(&mut self) -> anyhow::Result<()> {
        detach_all(&mut self.ebpf, self.attached.drain(..).collect())
    }
}

/// Detaches `attached` (programs stay loaded, maps readable). Each detach waits for an RCU
/// grace period in the kernel, tens of milliseconds: the links are taken out of their programs
/// and dropped on threads of their own, so the waits overlap.
fn detach_all(ebpf: &mut Ebpf, attached: Vec<Attached>) -> anyhow::Result<()> {
    let mut owned: Vec<Box<dyn Send>> = Vec::new();
    for a in attached {
        let prog = ebpf
            .program_mut(a.program)
            .with_context(|| format!("program {} vanished", a.program))?;
        let link: Box<dyn Send> = match a.link {
            Link::TracePoint(link) => {
                let prog: &mut TracePoint = prog
                    .try_into()
                    .with_context(|| format!("program {} is not a tracepoint", a.program))?;
                Box::new(
                    prog.take_link(link)
                        .with_context(|| format!("detaching {}", a.program))?,
                )
            }
            Link::FEntry(link) => {
                let prog: &mut FEntry = prog
                    .try_into()
                    .with_context(|| format!("program {} is not fentry", a.program))?;
                Box::new(
                    prog.take_link(link)
                        .with_context(|| format!("detaching {}", a.program))?,
                )
            }
            Link::BtfTracePoint(link) => {
                let prog: &mut BtfTracePoint = prog
                    .try_into()
                    .with_context(|| format!("program {} is not tp_btf", a.program))?;
                Box::new(
                    prog.take_link(link)
                        .with_context(|| format!("detaching {}", a.program))?,
                )
            }
        };
        owned.push(link);
    }
    std::thread::scope(|scope| {
        for link in owned {
            scope.spawn(move || drop(link));
        }
    });
    Ok(())
}

/// One tracepoint to attach a program to.
#[derive(Clone, Copy, Debug)]
struct Hook {
    program: &'static str,
    category: &'static str,
    event: &'static str,
    /// Frees attach before allocations, so no allocation is recorded whose free could go
    /// unseen.
    is_free: bool,
}

const fn hook(
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
struct PlannedKind {
    kind: Kind,
    hooks: Vec<Hook>,
    note: Option<String>,
}

/// Reads the formats of a kind's events, fills its part of `config` and says which hooks to
/// attach; `Err(note)` when the kind cannot be traced on this kernel.
fn plan_kind(root: &Path, kind: Kind, config: &mut Config) -> Result<PlannedKind, String> {
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
            config.percpu_alloc = tracefs::percpu_alloc_layout(&alloc, mm::possible_cpus())
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

/// Checks privileges, reads the tracepoint layouts, loads and attaches the requested kinds.
/// A kind whose events this kernel lacks is skipped with a note; none traceable is an error.
pub fn load(opts: LoadOptions) -> anyhow::Result<Tracer> {
    check_privileges()?;
    if !cfg!(memtrace_ebpf_embedded) || EBPF_OBJECT.is_empty() {
        return Err(SetupError::NoEbpfObject.into());
    }
    kernel::check_release()?;
    let root = tracefs::locate()?;
    // The kernel's BTF, parsed once: memtrace's own reader (sizes, offsets, prototypes) and
    // aya's (loading tp_btf/fentry programs).
    let btf = KernelBtfs::load();
    let stack_slots = opts
        .max_stacks
        .max(1)
        .checked_next_power_of_two()
        .unwrap_or(1 << 31);
    let alt_slots = alt_stack_slots(stack_slots);
    let slot_count = stack_slots + alt_slots;
    let tracked_words = pages::bitmap_words(pages::max_pfn());
    let mut config = Config {
        page_size: mm::page_size(),
        self_tgid: std::process::id(),
        max_order: mm::max_order(),
        stack_none_id: slot_count,
        agg_stride: slot_count + 1,
        stack_alt_base: stack_slots,
        skip_movable: u32::from(opts.skip_movable),
        sample_every: opts.sample_every.max(1),
        movable_stack_every: opts.movable_stack_every,
        tracked_words,
        filters: opts.filters,
        ..Config::zeroed()
    };
    // tp_btf for pages where the kernel's BTF has the prototypes memtrace expects.
    let page_btf = if opts.kinds.contains(&Kind::Page) && !opts.classic_tracepoints {
        btf.kernel().and_then(page_btf_support)
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
        btf.kernel()
            .and_then(|b| slab_name_layout(b, config.page_size, kmalloc_max_size(config.page_size)))
    } else {
        Err("slab not traced".into())
    };
    if let Ok(names) = slab_names {
        config.slab_names = names;
    }
    let mut planned: Vec<PlannedKind> = Vec::new();
    let mut kinds = Vec::new();
    for &kind in &opts.kinds {
        match plan_kind(&root, kind, &mut config) {
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
        }
        .into());
    }
    let traces = |k: Kind| planned.iter().any(|p| p.kind == k);
    let objects_traced = traces(Kind::Slab) || traces(Kind::Percpu) || traces(Kind::Vmalloc);

    let mut ebpf = EbpfLoader::new()
        .btf(btf.aya())
        .override_global(CONFIG_GLOBAL, &config, true)
        // Maps of kinds not traced get one entry: their memory is not wasted.
        .map_max_entries(
            maps::OUTSTANDING,
            if traces(Kind::Page) {
                opts.max_allocations.max(1)
            } else {
                1
            },
        )
        .map_max_entries(
            maps::OBJECTS,
            if objects_traced {
                opts.max_objects.max(1)
            } else {
                1
            },
        )
        .map_max_entries(
            maps::CACHE_NAMES,
            if traces(Kind::Slab) { slot_count } else { 1 },
        )
        .map_max_entries(maps::STACKS, stack_slots)
        .map_max_entries(maps::STACKS_ALT, alt_slots)
        .map_max_entries(
            maps::TRACKED_PFNS,
            if traces(Kind::Page) {
                tracked_words.max(1)
            } else {
                1
            },
        )
        .map_max_entries(maps::STACK_AGG, Kind::COUNT * (slot_count + 1))
        .load(EBPF_OBJECT)
        .map_err(|e| SetupError::BpfLoad {
            what: "creating maps".into(),
            reason: short_error(&e),
        })?;

    // Calibration, before any tracing program runs: the tp_btf page programs' pfns and the
    // slab programs' object → slab lookup.
    let kmalloc_events: Vec<&'static str> = planned
        .iter()
        .filter(|p| p.kind == Kind::Slab)
        .flat_map(|p| p.hooks.iter())
        .filter(|h| h.program == programs::KMALLOC)
        .map(|h| h.event)
        .collect();
    let calibration = calibrate::run(
        &mut ebpf,
        btf.aya(),
        &calibrate::Wanted {
            vmemmap: page_btf.is_ok(),
            object_pages: slab_names.is_ok().then_some(kmalloc_events),
            page_struct_size: config
                .slab_names
                .page_struct_size
                .max(config.page_struct_size),
            page_size: config.page_size,
            kmalloc_max_size: config.slab_names.kmalloc_max_size,
        },
    );
    if let Some(slab) = planned.iter_mut().find(|p| p.kind == Kind::Slab) {
        let names = match (&slab_names, &calibration.object_pages) {
            (Ok(_), Ok(_)) => "cache names read through each object's slab".to_string(),
            (Err(e), _) | (_, Err(e)) => {
                let fallback = if config.kmem_cache_alloc.name_offset != memtrace_common::NO_FIELD {
                    "kmem_cache_alloc stacks named from the event's name field, kmalloc stacks \
                     unnamed"
                } else {
                    "stacks unnamed"
                };
                format!("cache names not readable through the objects' slabs ({e}): {fallback}")
            }
        };
        slab.note = Some(match slab.note.take() {
            Some(n) => format!("{n}; {names}"),
            None => names,
        });
    }

    let mut attached = Vec::new();
    let mut loaded: Vec<&str> = Vec::new();
    // Pages through tp_btf first; if that fails, the page kind keeps its classic hooks.
    if let Some(page) = planned.iter_mut().find(|p| p.kind == Kind::Page) {
        let how = page_btf
            .and_then(|_| {
                calibration
                    .vmemmap
                    .map_err(|e| format!("calibration failed: {e}"))
            })
            .and_then(|_| {
                let btf = btf.aya().ok_or("no kernel BTF")?;
                attach_page_btf(&mut ebpf, btf, &mut attached, &mut loaded)
            });
        match how {
            Ok(()) => {
                page.hooks = vec![
                    hook(programs::PAGE_FREE_BTF, "tp_btf", "mm_page_free", true),
                    hook(programs::PAGE_ALLOC_BTF, "tp_btf", "mm_page_alloc", false),
                ];
            }
            Err(e) => {
                page.note = Some(format!("classic tracepoints (tp_btf not used: {e})"));
            }
        }
        let mut notes: Vec<String> = page.note.take().into_iter().collect();
        if config.skip_movable != 0 {
            notes.push(
                "movable pages (user-anon, page-cache, shmem) are not traced; --class all \
                 traces every page"
                    .into(),
            );
        }
        if config.skip_movable == 0 && config.movable_stack_every > 1 {
            notes.push(format!(
                "movable pages: one kernel stack captured per {} allocations of a task with the \
                 same gfp flags on a CPU, the others attributed to it (stacks_reused)",
                config.movable_stack_every
            ));
        }
        if config.tracked_words == 0 {
            notes.push("no pfn bitmap (/proc/zoneinfo unreadable): every free is looked up".into());
        }
        page.note = (!notes.is_empty()).then(|| notes.join("; "));
    }

    // Load every other program of the planned kinds, then attach frees before allocations.
    let mut hooks: Vec<Hook> = planned
        .iter()
        .flat_map(|p| p.hooks.iter().copied())
        .filter(|h| h.category != "tp_btf")
        .collect();
    hooks.sort_by_key(|h| !h.is_free);
    // On any error below, dropping `ebpf` detaches whatever was attached already.
    for h in &hooks {
        let prog: &mut TracePoint = ebpf
            .program_mut(h.program)
            .with_context(|| format!("the eBPF object has no program {}", h.program))?
            .try_into()
            .with_context(|| format!("program {} is not a tracepoint", h.program))?;
        if !loaded.contains(&h.program) {
            prog.load().map_err(|e| SetupError::BpfLoad {
                what: format!("program {}", h.program),
                reason: verifier_summary(&e),
            })?;
            loaded.push(h.program);
        }
        let link = prog
            .attach(h.category, h.event)
            .map_err(|e| SetupError::Attach {
                event: format!("{}:{}", h.category, h.event),
                reason: short_error(&e),
            })?;
        attached.push(Attached {
            program: h.program,
            link: Link::TracePoint(link),
        });
    }
    // Bulk slab frees have no tracepoint: an fentry program catches them where BTF and
    // fentry are available; elsewhere slab is traced without them (said in the kind's note).
    if let Some(slab) = planned.iter_mut().find(|p| p.kind == Kind::Slab) {
        let fentry = btf
            .aya()
            .ok_or_else(|| "no kernel BTF".to_string())
            .and_then(|b| {
                attach_fentry(
                    &mut ebpf,
                    b,
                    programs::SLAB_FREE_BULK,
                    "kmem_cache_free_bulk",
                )
            });
        match fentry {
            Ok(link) => {
                attached.push(Attached {
                    program: programs::SLAB_FREE_BULK,
                    link: Link::FEntry(link),
                });
                loaded.push(programs::SLAB_FREE_BULK);
                slab.hooks.push(hook(
                    programs::SLAB_FREE_BULK,
                    "fentry",
                    "kmem_cache_free_bulk",
                    true,
                ));
            }
            Err(e) => {
                let bulk = format!(
                    "bulk frees (kmem_cache_free_bulk, kfree_bulk) not traced: {e}; such objects \
                     stay listed until their address is reused (obj_stale_records_replaced)"
                );
                slab.note = Some(match slab.note.take() {
                    Some(n) => format!("{n}; {bulk}"),
                    None => bulk,
                });
            }
        }
    }
    for p in &planned {
        kinds.push(KindStatus {
            kind: p.kind.name().into(),
            traced: true,
            hooks: p
                .hooks
                .iter()
                .map(|h| format!("{}:{}", h.category, h.event))
                .collect(),
            note: p.note.clone(),
        });
    }
    kinds.sort_by_key(|k| Kind::ALL.iter().position(|x| x.name() == k.kind));
    let hooks = planned
        .iter()
        .flat_map(|p| p.hooks.iter())
        .map(|h| match h.category {
            "fentry" => format!("fentry {}", h.event),
            "tp_btf" => format!("tp_btf {}", h.event),
            category => format!("tracepoint {category}:{}", h.event),
        })
        .collect();
    Ok(Tracer {
        ebpf,
        attached,
        config,
        stack_slots,
        hooks,
        kinds,
        programs: loaded.iter().map(|s| s.to_string()).collect(),
        map_memory_bytes: map_memory_bytes(),
    })
}

/// Kernel memory taken by this process's BPF maps: the `memlock` line of every map fd's
/// fdinfo (what the kernel charges for the map, preallocated tables included).
fn map_memory_bytes() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/fdinfo") else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|info| map_memlock(&info))
        .sum()
}

/// The `memlock` of one fdinfo text if it describes a BPF map, else 0.
fn map_memlock(fdinfo: &str) -> u64 {
    if !fdinfo.lines().any(|l| l.starts_with("map_type:")) {
        return 0;
    }
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
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
fn kmalloc_max_size(page_size: u64) -> u32 {
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

/// Loads and attaches the tp_btf page programs (free first; the `struct page *` → pfn
/// conversion is calibrated already). On failure, whatever was attached here is detached
/// again.
fn attach_page_btf(
    ebpf: &mut Ebpf,
    btf: &Btf,
    attached: &mut Vec<Attached>,
    loaded: &mut Vec<&'static str>,
) -> Result<(), String> {
    let mut mine = Vec::new();
    let mut attach = |ebpf: &mut Ebpf, program: &'static str, event: &str| {
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| format!("the eBPF object has no program {program}"))?
            .try_into()
            .map_err(|e| format!("program {program}: {e}"))?;
        prog.load(event, btf).map_err(|e| verifier_summary(&e))?;
        if !loaded.contains(&program) {
            loaded.push(program);
        }
        let link = prog.attach().map_err(|e| short_error(&e))?;
        mine.push(Attached {
            program,
            link: Link::BtfTracePoint(link),
        });
        Ok::<(), String>(())
    };
    let result = attach(ebpf, programs::PAGE_FREE_BTF, "mm_page_free")
        .and_then(|()| attach(ebpf, programs::PAGE_ALLOC_BTF, "mm_page_alloc"));
    match result {
        Ok(()) => {
            attached.extend(mine);
            Ok(())
        }
        Err(e) => {
            if let Err(d) = detach_all(ebpf, mine) {
                return Err(format!("{e}; then detaching failed: {d:#}"));
            }
            Err(e)
        }
    }
}

/// Loads and attaches an fentry program on `function`.
fn attach_fentry(
    ebpf: &mut Ebpf,
    btf: &Btf,
    program: &str,
    function: &str,
) -> Result<FEntryLinkId, String> {
    let prog: &mut FEntry = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("the eBPF object has no program {program}"))?
        .try_into()
        .map_err(|e| format!("program {program}: {e}"))?;
    prog.load(function, btf).map_err(|e| verifier_summary(&e))?;
    prog.attach().map_err(|e| short_error(&e))
}

/// The error and its sources on one line.
fn short_error(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The syscall error plus the last meaningful verifier lines (the reason is at the end).
fn verifier_summary(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            if std::env::var_os("MEMTRACE_VERIFIER_LOG").is_some() {
                eprintln!("memtrace: verifier log:\n{log}");
            }
            let tail: Vec<&str> = log
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("processed ") && !l.starts_with(';'))
                .collect();
            let start = tail.len().saturating_sub(3);
            if tail.is_empty() {
                io_error.to_string()
            } else {
                format!("{io_error}; verifier: {}", tail[start..].join(" | "))
            }
        }
        other => short_error(other),
    }
}

#[cfg(test)]
mod tests {
    use super::map_memlock;

    #[test]
    fn memlock_of_map_fds_only() {
        let map = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2083\nmap_type:\t1\n\
                   key_size:\t8\nvalue_size:\t48\nmax_entries:\t524288\nmap_flags:\t0x0\n\
                   map_extra:\t0x0\nmemlock:\t62957952\nmap_id:\t5575\nfrozen:\t0\n";
        assert_eq!(map_memlock(map), 62_957_952);
        let prog = "pos:\t0\nprog_type:\t26\nprog_jited:\t1\nmemlock:\t4096\n";
        assert_eq!(map_memlock(prog), 0);
        assert_eq!(map_memlock("pos:\t0\nflags:\t0100002\n"), 0);
    }
}
