//! Loads memtrace's eBPF object, configures it for the running kernel and attaches it.

mod attach;
pub mod calibrate;
mod error;
pub mod kernel;
pub mod pages;
pub mod plan;

use anyhow::Context as _;
use aya::{programs::TracePoint, Ebpf, EbpfLoader};
use memtrace_common::{
    control, maps, programs, slab_sampling, Config, Filters, Kind, CONFIG_GLOBAL,
};

use crate::{kernel::tracefs, model::KindStatus};
use attach::{
    attach_fentry, attach_page_btf, attach_raw, detach_all, short_error, take_links,
    verifier_summary, Attached, Link, SLAB_RAW,
};
pub use error::{check_privileges, SetupError};
use kernel::KernelBtfs;
pub use pages::PageTable;
use plan::{hook, Hook};

/// The eBPF object built from memtrace-ebpf (empty when built without it; see build.rs).
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace.bpf.o"));

/// Sizes chosen on the command line.
#[derive(Clone, Debug)]
pub struct LoadOptions {
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
    /// Slab: one object in this many recorded at the start (by address hash; 1 = every
    /// object); doubled while the session runs whenever the object table nears full.
    pub slab_sample_every: u32,
    /// Slab: a stack captured per this many allocations from a call site (see the CLI).
    pub slab_stack_every: u32,
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
    /// Entries of the object table (slab, percpu, vmalloc).
    pub object_capacity: u32,
    /// The slab sampling rate the programs started with.
    pub slab_sample_start: u32,
    /// The page table, when pages are traced.
    pub page_table: Option<PageTable>,
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
        self.set_phase(control::GRACE_PERIOD)
            .context("starting the grace period")
    }

    /// Detaches every program; the maps stay readable until the tracer is dropped.
    pub fn detach(&mut self) -> anyhow::Result<()> {
        detach_all(&mut self.ebpf, self.attached.drain(..).collect())
    }

    /// Ends the session: the programs stop recording and matching (a flag they check), every
    /// program run still in flight is waited for (an RCU grace period, `membarrier`), and the
    /// programs are detached on background threads (each detach waits for grace periods of its
    /// own, tens of milliseconds) while the caller reads the maps, which no longer change.
    /// Where the flag cannot be set or the grace period not waited for, the programs are
    /// detached first, as [`Tracer::detach`] does.
    pub fn stop(&mut self) -> anyhow::Result<Detaching> {
        if self.set_phase(control::STOPPED).is_ok() && rcu_grace_period().is_ok() {
            let links = take_links(&mut self.ebpf, self.attached.drain(..).collect())?;
            let threads = links
                .into_iter()
                .map(|link| std::thread::spawn(move || drop(link)))
                .collect();
            return Ok(Detaching { threads });
        }
        self.detach()?;
        Ok(Detaching {
            threads: Vec::new(),
        })
    }

    fn set_phase(&mut self, phase: u64) -> anyhow::Result<()> {
        let map = self
            .ebpf
            .map_mut(maps::CONTROL)
            .with_context(|| format!("the eBPF object has no map {}", maps::CONTROL))?;
        let mut control: aya::maps::Array<_, u64> =
            aya::maps::Array::try_from(map).context("CONTROL is not an array of u64")?;
        control
            .set(control::GRACE, phase, 0)
            .with_context(|| format!("writing phase {phase} into CONTROL"))?;
        Ok(())
    }
}

/// Programs being detached in the background ([`Tracer::stop`]); joined on drop.
pub struct Detaching {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Detaching {
    /// Waits until every program is detached.
    pub fn join(mut self) {
        self.join_all();
    }

    fn join_all(&mut self) {
        for t in self.threads.drain(..) {
            // A panicking drop of a link is not ours to report; the fd is closed either way.
            let _ = t.join();
        }
    }
}

impl Drop for Detaching {
    fn drop(&mut self) {
        self.join_all();
    }
}

/// Waits for an RCU grace period: every BPF tracing program run that began before has ended
/// (they run under `rcu_read_lock`). `MEMBARRIER_CMD_GLOBAL` is `synchronize_rcu()`.
pub(crate) fn rcu_grace_period() -> std::io::Result<()> {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes no pointers; it only waits.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_GLOBAL,
            0 as libc::c_long,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
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
    let plan = plan::plan(&opts, &plan::KernelFacts::read(&root, btf.kernel()))?;
    let plan::Plan {
        mut config,
        stack_slots,
        map_sizes,
        page_table,
        mut planned,
        mut kinds,
        page_btf,
        slab_names,
        slab_btf,
    } = plan;
    // Page table times count from here.
    config.start_ns = crate::kernel::monotonic_ns();
    let mut ebpf = EbpfLoader::new()
        .btf(btf.aya())
        .override_global(CONFIG_GLOBAL, &config, true)
        .map_max_entries(maps::PAGE_TABLE, map_sizes.page_table)
        .map_max_entries(maps::TABLE_SUMMARY, map_sizes.table_summary)
        .map_max_entries(maps::OWNERS, map_sizes.owners)
        .map_max_entries(maps::OWNER_IDS, map_sizes.owner_ids)
        .map_max_entries(maps::OWNER_FREE, map_sizes.owners)
        .map_max_entries(maps::STACK_GFP, map_sizes.stack_gfp)
        .map_max_entries(maps::OBJECTS, map_sizes.objects)
        .map_max_entries(maps::CACHE_NAMES, map_sizes.cache_names)
        .map_max_entries(maps::STACKS, map_sizes.stacks)
        .map_max_entries(maps::STACKS_ALT, map_sizes.stacks_alt)
        .map_max_entries(maps::STACK_AGG, map_sizes.stack_agg)
        .load(EBPF_OBJECT)
        .map_err(|e| SetupError::BpfLoad {
            what: "creating maps".into(),
            reason: short_error(&e),
        })?;
    // The slab sampling rate the programs start with (they read it from a map: user space
    // raises it while the session runs).
    let slab_every = u64::from(opts.slab_sample_every.max(1));
    {
        let map = ebpf
            .map_mut(maps::SLAB_SAMPLING)
            .with_context(|| format!("the eBPF object has no map {}", maps::SLAB_SAMPLING))?;
        let mut sampling: aya::maps::Array<_, u64> =
            aya::maps::Array::try_from(map).context("SLAB_SAMPLING is not an array of u64")?;
        sampling
            .set(slab_sampling::EVERY, slab_every, 0)
            .context("writing the slab sampling rate (SLAB_SAMPLING)")?;
    }

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
        if let Some(t) = page_table.filter(|t| t.geometry.pfn_shift > 0) {
            notes.push(format!(
                "{} pfns exceed the page table's cap: one sampled pfn per {} pages is tracked, \
                 pages, percpu and vmalloc objects are sampled 1 in {} and their figures are \
                 estimates (slab keeps its own sample)",
                t.geometry.max_pfn,
                t.pages_per_entry(),
                u64::from(config.sample_every) << t.geometry.pfn_shift
            ));
        }
        page.note = (!notes.is_empty()).then(|| notes.join("; "));
    }

    // Slab through raw tracepoints where the BTF prototypes match; else the classic hooks stay.
    if let Some(slab) = planned.iter_mut().find(|p| p.kind == Kind::Slab) {
        let how =
            slab_btf.and_then(|_| attach_raw(&mut ebpf, &SLAB_RAW, &mut attached, &mut loaded));
        let mut notes: Vec<String> = Vec::new();
        match how {
            Ok(()) => {
                // The twin free programs share their event with the first (one hook each).
                slab.hooks = SLAB_RAW
                    .iter()
                    .filter(|(program, _)| !program.ends_with("_twin"))
                    .map(|(program, event)| hook(program, "raw_tp", event, event.contains("free")))
                    .collect();
                notes.push(
                    "each free tracepoint runs twin programs: a free that interrupts one on its \
                     CPU is seen by the other (obj_frees_missed: those neither saw)"
                        .into(),
                );
            }
            Err(e) => notes.push(format!("classic tracepoints (raw_tp not used: {e})")),
        }
        notes.extend(slab.note.take());
        notes.push(if slab_every > 1 {
            format!(
                "one object in {slab_every} recorded (by address hash), figures scaled: \
                 estimates; the rate doubles whenever the object table nears full"
            )
        } else {
            "every object recorded; the rate doubles (figures become estimates) only if the \
             object table nears full"
                .to_string()
        });
        if config.slab_stack_every > 1 {
            notes.push(format!(
                "one kernel stack captured per {} allocations from the same call site and \
                 cache on the same kernel stack of a CPU, the others attributed to it \
                 (obj_stacks_reused)",
                config.slab_stack_every
            ));
        }
        slab.note = Some(notes.join("; "));
    }

    // Load every other program of the planned kinds, then attach frees before allocations.
    let mut hooks: Vec<Hook> = planned
        .iter()
        .flat_map(|p| p.hooks.iter().copied())
        .filter(|h| h.category != "tp_btf" && h.category != "raw_tp")
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
    let slab_traced = planned.iter().any(|p| p.kind == Kind::Slab);
    let hooks = planned
        .iter()
        .flat_map(|p| p.hooks.iter())
        .map(|h| match h.category {
            "fentry" => format!("fentry {}", h.event),
            "tp_btf" => format!("tp_btf {}", h.event),
            "raw_tp" => format!("raw_tp {}", h.event),
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
        object_capacity: map_sizes.objects,
        slab_sample_start: if slab_traced {
            u32::try_from(slab_every).unwrap_or(u32::MAX)
        } else {
            1
        },
        page_table,
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
