//! Reads what the programs left in the kernel maps: while they run (progress, snapshots,
//! stack rotation) and once they are stopped (the report; the page table through mmap).

mod owners;
pub mod page_table;
mod rotate;
pub mod slab_rate;
mod syscalls;

pub use owners::OwnerRecycling;
pub use rotate::StackRotation;

use std::{
    collections::HashMap,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use anyhow::{bail, Context as _};
use aya::maps::{Array, Map, MapData, PerCpuArray, StackTraceMap};
use memtrace_common::{
    maps, owner_next, programs, Counter, Kind, ObjKey, ObjRecord, OwnerCache, OwnerRecord,
    PageRecord, StackAgg, StackCache,
};

use crate::{
    loader::Tracer,
    model::{LiveStats, OwnerUse, ProgramStats, RawSession},
};
use slab_rate::RateState;

pub use crate::kernel::monotonic_ns;

/// Reads [`LiveStats`] while the programs run; bytes scaled by the sampling rates
/// (`--sample` for pages, percpu and vmalloc; the slab sample's rate now for slab).
pub fn live_stats(
    tracer: &Tracer,
    sample_every: u32,
    slab: &RateState,
) -> anyhow::Result<LiveStats> {
    let ebpf = &tracer.ebpf;
    let counters_map: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map(ebpf, maps::COUNTERS)?).context("COUNTERS map")?;
    let mut stats = LiveStats::default();
    for c in Counter::ALL {
        let per_cpu = counters_map
            .get(&(c as u32), 0)
            .with_context(|| format!("reading counter {}", c.name()))?;
        let v: u64 = per_cpu.iter().sum();
        if matches!(
            c,
            Counter::AllocsSeen
                | Counter::FreesSeen
                | Counter::ObjAllocsSeen
                | Counter::ObjFreesSeen
        ) {
            stats.events = stats.events.saturating_add(v);
        }
        if c.is_failure() {
            stats.failures = stats.failures.saturating_add(v);
        }
    }
    let stride = tracer.config.agg_stride.max(1);
    for (index, agg) in read_stack_aggs(tracer, false)? {
        let (bytes, _) = outstanding(&agg, index, slab);
        let every = if index / stride == Kind::Slab as u32 {
            slab.every
        } else {
            sample_every
        };
        stats.outstanding_bytes = stats
            .outstanding_bytes
            .saturating_add(bytes.saturating_mul(u64::from(every.max(1))));
    }
    Ok(stats)
}

/// The outstanding (bytes, count) of a `STACK_AGG` slot, less what the slab sample thinned out
/// of it; 0 for a slot transiently "negative" while programs race.
fn outstanding(agg: &StackAgg, index: u32, slab: &RateState) -> (u64, u64) {
    let (bytes, count) = slab.thinned.get(&index).copied().unwrap_or((0, 0));
    let clamp = |v: u64| if (v as i64) > 0 { v } else { 0 };
    (
        clamp(agg.outstanding_bytes.wrapping_sub(bytes)),
        clamp(agg.outstanding_count.wrapping_sub(count)),
    )
}

/// What the twin slab free programs did so far (see `memtrace_common::FreeClaims`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TwinCounts {
    /// Runs the kernel skipped, over the four programs.
    pub misses: u64,
    /// Runs that handled their event.
    pub claims: u64,
    /// Runs that found their event handled by the twin.
    pub taken: u64,
}

impl TwinCounts {
    /// Slab frees neither twin saw between `self` (earlier) and `later`. Each event runs both
    /// programs: one handles it and the other finds it handled, or the kernel skipped one
    /// (the other handled it: a claim without a taken) or both (lost). So misses = one-sided
    /// events + 2 × lost, and one-sided events = claims - taken.
    pub fn missed_until(&self, later: &TwinCounts) -> u64 {
        let misses = later.misses.saturating_sub(self.misses);
        let one_sided = later
            .claims
            .saturating_sub(self.claims)
            .saturating_sub(later.taken.saturating_sub(self.taken));
        misses.saturating_sub(one_sided) / 2
    }
}

/// The twin free programs' counts now; `None` when they are not loaded (slab through classic
/// tracepoints, or not traced).
pub fn twin_counts(tracer: &Tracer) -> anyhow::Result<Option<TwinCounts>> {
    let twins = [
        programs::KFREE_RAW,
        programs::KFREE_RAW_TWIN,
        programs::KMEM_CACHE_FREE_RAW,
        programs::KMEM_CACHE_FREE_RAW_TWIN,
    ];
    if !twins.iter().all(|t| tracer.programs.iter().any(|p| p == t)) {
        return Ok(None);
    }
    let mut counts = TwinCounts::default();
    for name in twins {
        let prog = tracer
            .ebpf
            .program(name)
            .with_context(|| format!("program {name} missing"))?;
        let fd = prog.fd().with_context(|| format!("fd of program {name}"))?;
        let info = syscalls::prog_info(fd.as_fd().as_raw_fd())
            .with_context(|| format!("bpf_prog_info of {name}"))?;
        counts.misses += info.recursion_misses;
    }
    let counters: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map(&tracer.ebpf, maps::COUNTERS)?).context("COUNTERS map")?;
    let sum = |c: Counter| -> anyhow::Result<u64> {
        Ok(counters
            .get(&(c as u32), 0)
            .with_context(|| format!("reading counter {}", c.name()))?
            .iter()
            .sum())
    };
    counts.claims = sum(Counter::ObjFreeClaims)?;
    counts.taken = sum(Counter::ObjFreeClaimsTaken)?;
    Ok(Some(counts))
}

/// What the session knows beyond the maps when they are read.
#[derive(Clone, Debug, Default)]
pub struct Extras {
    /// The slab sample: its rate and what was thinned out.
    pub slab: RateState,
    /// Slab frees neither twin free program saw (see [`TwinCounts::missed_until`]).
    pub frees_missed: u64,
}

/// Reads counters, aggregates, records, stacks and program statistics: the final report (or
/// a snapshot that needs the page allocations' ages, `--min-age`). Slab records outside the
/// sample of the final rate (made by programs that still read an older rate) are thinned
/// here, like the sampling thread would.
pub fn collect(tracer: &Tracer, extras: &Extras) -> anyhow::Result<RawSession> {
    collect_with(tracer, extras, true)
}

/// Like [`collect`] without walking the page table (an `--interval` snapshot): per-stack bytes
/// and counts of pages come from the aggregates; pages have no owners, orders or ages.
pub fn collect_snapshot(tracer: &Tracer, extras: &Extras) -> anyhow::Result<RawSession> {
    collect_with(tracer, extras, false)
}

/// Outstanding page allocations (one record each, or several identical ones), how many each
/// page stack slot holds, and the owner indices the entries refer to.
type PageRecords = (Vec<(u64, PageRecord)>, Vec<u64>, Vec<u32>);

fn collect_with(
    tracer: &Tracer,
    extras: &Extras,
    page_records: bool,
) -> anyhow::Result<RawSession> {
    let ebpf = &tracer.ebpf;
    let now_ns = monotonic_ns();

    let counters_map: PerCpuArray<&MapData, u64> =
        PerCpuArray::try_from(map(ebpf, maps::COUNTERS)?).context("COUNTERS map")?;
    let mut counters = vec![0u64; Counter::COUNT as usize];
    for (i, slot) in counters.iter_mut().enumerate() {
        let per_cpu = counters_map
            .get(&(i as u32), 0)
            .with_context(|| format!("reading counter {i}"))?;
        *slot = per_cpu.iter().sum();
    }

    let stride = tracer.config.agg_stride.max(1);
    let mut aggs: Vec<(u32, StackAgg)> = Vec::new();
    for (index, mut agg) in read_stack_aggs(tracer, true)? {
        if agg.allocated_count == 0 && agg.outstanding_count == 0 && agg.outstanding_bytes == 0 {
            continue;
        }
        if let Some((bytes, count)) = extras.slab.thinned.get(&index) {
            agg.outstanding_bytes = agg.outstanding_bytes.wrapping_sub(*bytes);
            agg.outstanding_count = agg.outstanding_count.wrapping_sub(*count);
        }
        aggs.push((index, agg));
    }

    // gfp flags and migrate type of each page stack's first allocation: what classifies page
    // stacks (snapshots read no page records).
    let mut page_gfp = HashMap::new();
    let mut stack_gfp = Vec::new();
    let mut page_source = None;
    if let (true, Some(table)) = (tracer.traces(Kind::Page), &tracer.page_table) {
        stack_gfp = read_array::<u64>(map(ebpf, maps::STACK_GFP)?, "STACK_GFP")?
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        page_gfp = stack_gfp
            .iter()
            .enumerate()
            .filter_map(|(slot, &v)| {
                memtrace_common::page_table::gfp_decode(v).map(|g| (slot as u32, g))
            })
            .collect();
        if page_records {
            page_source = Some(PageSource::new(tracer, table)?);
        }
    }
    // The page table is read on a thread of its own while the object table is read here.
    let (page_table, objects) = std::thread::scope(|scope| {
        let pages = page_source.as_ref().map(|source| {
            let stack_gfp = &stack_gfp;
            scope.spawn(move || timed("page table", || source.read(stack_gfp, stride)))
        });
        let objects = timed("object table", || {
            if [Kind::Slab, Kind::Percpu, Kind::Vmalloc]
                .iter()
                .any(|k| tracer.traces(*k))
            {
                read_hash::<ObjKey, ObjRecord>(map(ebpf, maps::OBJECTS)?, "OBJECTS")
            } else {
                Ok(Vec::new())
            }
        });
        let pages = match pages {
            Some(handle) => match handle.join() {
                Ok(result) => result.map(Some),
                Err(_) => Err(anyhow::anyhow!("the page table reader panicked")),
            },
            None => Ok(None),
        };
        (pages, objects)
    });
    let mut objects = objects?;
    let mut records = Vec::new();
    let mut owner_use = None;
    if let Some((recs, counts, referenced)) = page_table? {
        owner_use = page_source.as_ref().map(|source| OwnerUse {
            handed_out: source.handed_out,
            capacity: source.capacity,
            referenced,
            cached: source.cached.clone(),
        });
        // The programs count an allocation down when its head page goes; the table counts it
        // while any of its pages is outstanding, as the records do.
        for (index, agg) in aggs.iter_mut() {
            if *index / stride == Kind::Page as u32 {
                agg.outstanding_count =
                    counts.get((*index % stride) as usize).copied().unwrap_or(0);
            }
        }
        records = recs;
    }
    let position: HashMap<u32, usize> = aggs
        .iter()
        .enumerate()
        .map(|(i, (index, _))| (*index, i))
        .collect();
    let late = slab_rate::thin_records(&mut objects, extras.slab.every.max(1), stride, |i, b| {
        if let Some(agg) = position.get(&i).and_then(|&p| aggs.get_mut(p)) {
            agg.1.outstanding_bytes = agg.1.outstanding_bytes.wrapping_sub(b);
            agg.1.outstanding_count = agg.1.outstanding_count.wrapping_sub(1);
        }
    });
    counters[Counter::ObjRecordsThinned as usize] = extras.slab.thinned_records + late;
    counters[Counter::ObjFreesMissed as usize] = extras.frees_missed;
    let mut kind_aggs = Vec::with_capacity(aggs.len());
    for (index, agg) in aggs {
        let kind = Kind::from_u32(index / stride)
            .with_context(|| format!("STACK_AGG slot {index} beyond the last kind"))?;
        kind_aggs.push((kind, index % stride, agg));
    }
    let aggs = kind_aggs;

    let stack_map: StackTraceMap<&MapData> =
        StackTraceMap::try_from(map(ebpf, maps::STACKS)?).context("STACKS map")?;
    let alt_map: StackTraceMap<&MapData> =
        StackTraceMap::try_from(map(ebpf, maps::STACKS_ALT)?).context("STACKS_ALT map")?;
    let mut stacks = HashMap::new();
    for (_, slot, _) in &aggs {
        if stacks.contains_key(slot) {
            continue;
        }
        let trace = match locate_slot(*slot, &tracer.config) {
            Some(StackSlot::Main(id)) => stack_map.get(&id, 0),
            Some(StackSlot::Alt(id)) => alt_map.get(&id, 0),
            None => continue,
        };
        // A slot without a stack (should not happen) just renders without frames.
        if let Ok(trace) = trace {
            let ips: Vec<u64> = trace.frames().iter().map(|f| f.ip).collect();
            stacks.insert(*slot, ips);
        }
    }

    let mut cache_names = HashMap::new();
    if tracer.traces(Kind::Slab) {
        let names: Array<&MapData, [u8; 32]> =
            Array::try_from(map(ebpf, maps::CACHE_NAMES)?).context("CACHE_NAMES map")?;
        for (kind, slot, _) in &aggs {
            if *kind != Kind::Slab || *slot >= tracer.config.stack_none_id {
                continue;
            }
            if let Ok(raw) = names.get(slot, 0) {
                let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                // A stack whose cache could not be read is marked, not named.
                if len > 0 && raw[0] != memtrace_common::CACHE_NAME_UNRESOLVED {
                    cache_names.insert(*slot, String::from_utf8_lossy(&raw[..len]).into_owned());
                }
            }
        }
    }

    let mut program_stats = Vec::new();
    for name in &tracer.programs {
        let prog = ebpf
            .program(name)
            .with_context(|| format!("program {name} missing"))?;
        let fd = prog.fd().with_context(|| format!("fd of program {name}"))?;
        let info = syscalls::prog_info(fd.as_fd().as_raw_fd())
            .with_context(|| format!("bpf_prog_info of {name}"))?;
        program_stats.push(ProgramStats {
            name: name.clone(),
            recursion_misses: info.recursion_misses,
            run_count: info.run_cnt,
            run_time_ns: info.run_time_ns,
        });
    }

    let cache_merged = slab_merges(cache_names.values().map(String::as_str));
    Ok(RawSession {
        page_size: tracer.config.page_size,
        counters,
        programs: program_stats,
        aggs,
        records,
        objects,
        cache_names,
        cache_merged,
        stacks,
        stack_none_id: tracer.config.stack_none_id,
        now_ns,
        page_gfp,
        owner_use,
    })
}

/// `f()`, and with `MEMTRACE_TIMING` set how long it took (a step of the collection; the
/// session prints the others).
fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let result = f();
    if std::env::var_os("MEMTRACE_TIMING").is_some() {
        eprintln!(
            "memtrace: timing:   {what} {:.3} s",
            started.elapsed().as_secs_f64()
        );
    }
    result
}

/// What reading the page table needs, taken from the tracer (whose maps another thread reads
/// meanwhile): the table's and the owner table's fds, the owners handed out, and which owner
/// indices the CPUs' caches held before the walk (what owner recycling needs to know).
struct PageSource<'a> {
    table: BorrowedFd<'a>,
    chunks: u32,
    owners: BorrowedFd<'a>,
    handed_out: u32,
    capacity: u32,
    cached: Vec<u32>,
    pfn_shift: u32,
    stack_bits: u32,
    start_ns: u64,
}

impl<'a> PageSource<'a> {
    fn new(tracer: &'a Tracer, table: &crate::loader::PageTable) -> anyhow::Result<Self> {
        let ebpf = &tracer.ebpf;
        let next: Array<&MapData, u64> =
            Array::try_from(map(ebpf, maps::OWNER_NEXT)?).context("OWNER_NEXT map")?;
        let handed_out = next
            .get(&owner_next::NEXT, 0)
            .context("reading OWNER_NEXT")?;
        let cache: PerCpuArray<&MapData, OwnerCache> =
            PerCpuArray::try_from(map(ebpf, maps::OWNER_CACHE)?).context("OWNER_CACHE map")?;
        let mut cached: Vec<u32> = cache
            .get(&0, 0)
            .context("reading OWNER_CACHE")?
            .iter()
            .filter(|c| c.index_plus_one != 0)
            .map(|c| c.index_plus_one - 1)
            .collect();
        cached.sort_unstable();
        cached.dedup();
        Ok(PageSource {
            table: page_table::map_fd(map(ebpf, maps::PAGE_TABLE)?).context("PAGE_TABLE")?,
            chunks: table.geometry.chunks,
            owners: page_table::map_fd(map(ebpf, maps::OWNERS)?).context("OWNERS")?,
            handed_out: u32::try_from(handed_out.min(u64::from(table.owner_cap)))?,
            capacity: table.owner_cap,
            cached,
            pfn_shift: tracer.config.pfn_shift,
            stack_bits: tracer.config.entry_stack_bits,
            start_ns: tracer.config.start_ns,
        })
    }

    /// The outstanding page allocations, one record each (or several identical ones), how
    /// many each page stack slot (below `stride`) holds, and the owner indices referred to.
    /// The owner table is read after the table: an index recycled during the scan names its
    /// new owner.
    fn read(&self, stack_gfp: &[u64], stride: u32) -> anyhow::Result<PageRecords> {
        let mut grouper = page_table::Grouper::new(page_table::Decode {
            pfn_shift: self.pfn_shift,
            stack_bits: self.stack_bits,
            start_ns: self.start_ns,
            stack_gfp,
        });
        page_table::scan(self.table, self.chunks, |index, v| grouper.push(index, v))
            .context("reading the page table")?;
        let owners: Vec<OwnerRecord> =
            page_table::read_mapped(self.owners, self.capacity as usize + 1)
                .context("reading the owner table")?;
        let grouped = grouper.finish(&owners);
        let counts = page_table::count_by_stack(&grouped.records, stride);
        Ok((grouped.records, counts, grouped.owners_referenced))
    }
}

/// SLUB's view of merged caches: `/sys/kernel/slab/<name>` of a mergeable cache is a symlink to
/// a directory named after its properties (`:0000512`), shared by every cache merged into it.
const SYS_SLAB: &str = "/sys/kernel/slab";

/// For each of `names`, the other cache names that share its directory under [`SYS_SLAB`]
/// (nothing where sysfs has no such view, as with the SLAB allocator).
fn slab_merges<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<String, Vec<String>> {
    let Ok(dir) = std::fs::read_dir(SYS_SLAB) else {
        return HashMap::new();
    };
    let links: Vec<(String, String)> = dir
        .flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                target.file_name()?.to_string_lossy().into_owned(),
            ))
        })
        .collect();
    merged_names(&links, names)
}

/// [`slab_merges`] over (name, symlink target) pairs.
pub fn merged_names<'a>(
    links: &[(String, String)],
    names: impl Iterator<Item = &'a str>,
) -> HashMap<String, Vec<String>> {
    let mut out = HashMap::new();
    for name in names {
        let Some((_, target)) = links.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let mut others: Vec<String> = links
            .iter()
            .filter(|(n, t)| t == target && n != name)
            .map(|(n, _)| n.clone())
            .collect();
        if !others.is_empty() {
            others.sort();
            out.insert(name.to_string(), others);
        }
    }
    out
}

fn map<'a>(ebpf: &'a aya::Ebpf, name: &str) -> anyhow::Result<&'a Map> {
    ebpf.map(name)
        .with_context(|| format!("the eBPF object has no map {name}"))
}

fn map_mut<'a>(ebpf: &'a mut aya::Ebpf, name: &str) -> anyhow::Result<&'a mut Map> {
    ebpf.map_mut(name)
        .with_context(|| format!("the eBPF object has no map {name}"))
}

/// Every (index, value) of an array map: batched (tens of thousands of slots in a few
/// syscalls), or one lookup per slot on kernels without batched array lookups.
fn read_array<V: aya::Pod + Default>(m: &Map, name: &str) -> anyhow::Result<Vec<(u32, V)>> {
    let Map::Array(data) = m else {
        bail!("{name} is not an array map");
    };
    let fd = data.fd().as_fd().as_raw_fd();
    match syscalls::lookup_batch::<u32, V>(fd, BATCH) {
        Ok(v) => Ok(v),
        Err(e) if syscalls::batch_unsupported(&e) => Array::<&MapData, V>::try_from(m)
            .with_context(|| format!("{name} map"))?
            .iter()
            .enumerate()
            .map(|(i, v)| Ok((i as u32, v.with_context(|| format!("reading {name}[{i}]"))?)))
            .collect(),
        Err(e) => Err(e).with_context(|| format!("BPF_MAP_LOOKUP_BATCH on {name}")),
    }
}

/// Every slot of `STACK_AGG` with what each CPU's movable page stack cache (`STACK_CACHE`)
/// recorded under its stack and not yet added (see [`StackCache`]).
///
/// `consistent`: allocated totals must never go down from one read to the next (snapshots,
/// `/metrics` counters, stack rotation). A cache moves its pending counts into `STACK_AGG`
/// when it takes another stack; during a read that would be seen twice or not at all. So the
/// programs are told to hold those moves (`control::PAGE_STACK_HOLD`), an RCU grace period
/// lets every run that had not seen it end, and only then are the caches and `STACK_AGG`
/// read. Without the movable caches in use, nothing to hold. (Progress lines read the
/// outstanding bytes only, a gauge: not `consistent`.)
fn read_stack_aggs(tracer: &Tracer, consistent: bool) -> anyhow::Result<Vec<(u32, StackAgg)>> {
    let ebpf = &tracer.ebpf;
    let cfg = &tracer.config;
    let cached = tracer.traces(Kind::Page) && cfg.skip_movable == 0 && cfg.movable_stack_every > 1;
    let _hold = match (consistent && cached, ebpf.map(maps::CONTROL)) {
        (true, Some(Map::Array(control))) => Some(Hold::begin(control)?),
        _ => None,
    };
    let caches: Vec<StackCache> = match ebpf.map(maps::STACK_CACHE) {
        Some(m) if cached => PerCpuArray::<&MapData, StackCache>::try_from(m)
            .context("STACK_CACHE map")?
            .get(&0, 0)
            .context("reading STACK_CACHE")?
            .iter()
            .copied()
            .collect(),
        _ => Vec::new(),
    };
    let mut aggs = read_array::<StackAgg>(map(ebpf, maps::STACK_AGG)?, "STACK_AGG")?;
    add_pending(&mut aggs, &caches);
    Ok(aggs)
}

/// `control::PAGE_STACK_HOLD` set, until dropped (one holder at a time in this process).
struct Hold<'a> {
    fd: i32,
    _only_one: std::sync::MutexGuard<'a, ()>,
}

static HOLD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Hold<'static> {
    fn begin(control: &MapData) -> anyhow::Result<Hold<'static>> {
        let only_one = HOLD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let fd = control.fd().as_fd().as_raw_fd();
        syscalls::set_u64(fd, memtrace_common::control::PAGE_STACK_HOLD, 1)
            .context("holding the stack caches (CONTROL)")?;
        let hold = Hold {
            fd,
            _only_one: only_one,
        };
        // Runs that read the flag before it was set end within a grace period.
        crate::loader::rcu_grace_period().context("waiting for an RCU grace period")?;
        Ok(hold)
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        // A failure leaves the caches adding to STACK_AGG directly (slower, still exact).
        let _ = syscalls::set_u64(self.fd, memtrace_common::control::PAGE_STACK_HOLD, 0);
    }
}

/// Adds the pending counts of movable page stack caches to their slots (a page stack's slot
/// is its stack id: block 0). A slot beyond the array is left alone.
fn add_pending(aggs: &mut [(u32, StackAgg)], caches: &[StackCache]) {
    for c in caches.iter().filter(|c| c.pending_count != 0) {
        let slot = c.stack_id;
        let found = match aggs.get(slot as usize) {
            Some((i, _)) if *i == slot => Some(slot as usize),
            _ => aggs.iter().position(|(i, _)| *i == slot),
        };
        if let Some(k) = found {
            let a = &mut aggs[k].1;
            a.allocated_bytes = a.allocated_bytes.wrapping_add(c.pending_bytes);
            a.allocated_count = a.allocated_count.wrapping_add(c.pending_count);
            a.outstanding_bytes = a.outstanding_bytes.wrapping_add(c.pending_bytes);
            a.outstanding_count = a.outstanding_count.wrapping_add(c.pending_count);
        }
    }
}

/// Entries per batched lookup.
const BATCH: u32 = 16_384;

/// All entries of a hash map, in batches of many entries per syscall (one lookup per key for
/// 1 M records would take seconds); falls back to key-by-key iteration where batching is
/// unsupported.
fn read_hash<K, V>(m: &Map, name: &str) -> anyhow::Result<Vec<(K, V)>>
where
    K: aya::Pod + Default,
    V: aya::Pod + Default,
{
    let Map::HashMap(data) = m else {
        bail!("{name} is not a hash map");
    };
    let fd = data.fd().as_fd().as_raw_fd();
    match syscalls::lookup_batch::<K, V>(fd, BATCH) {
        Ok(v) => Ok(v),
        Err(e) if syscalls::batch_unsupported(&e) => {
            let h: aya::maps::HashMap<&MapData, K, V> =
                aya::maps::HashMap::try_from(m).with_context(|| format!("{name} map"))?;
            h.iter()
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("reading {name}"))
        }
        Err(e) => Err(e).with_context(|| format!("BPF_MAP_LOOKUP_BATCH on {name}")),
    }
}

/// Where the stack of a stack slot lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackSlot {
    /// Id in `STACKS`.
    Main(u32),
    /// Id in `STACKS_ALT` (the stack without its innermost frame).
    Alt(u32),
}

/// The map and id of stack slot `slot` (`None`: the "stack unavailable" slot or beyond).
pub fn locate_slot(slot: u32, config: &memtrace_common::Config) -> Option<StackSlot> {
    if slot >= config.stack_none_id {
        None
    } else if slot >= config.stack_alt_base {
        Some(StackSlot::Alt(slot - config.stack_alt_base))
    } else {
        Some(StackSlot::Main(slot))
    }
}

#[cfg(test)]
mod tests {
    use super::{locate_slot, StackSlot};

    #[test]
    fn pending_movable_allocations_are_added_to_their_slots() {
        use memtrace_common::{StackAgg, StackCache};
        let agg = |b: u64, c: u64| StackAgg {
            outstanding_bytes: b,
            outstanding_count: c,
            allocated_bytes: b,
            allocated_count: c,
        };
        let mut aggs: Vec<(u32, StackAgg)> = (0..4).map(|i| (i, agg(0, 0))).collect();
        aggs[2].1 = agg(8192, 2);
        let cache = |stack_id: u32, pending_count: u64| StackCache {
            stack_id,
            uses: 5,
            pending_bytes: pending_count * 4096,
            pending_count,
            ..StackCache::default()
        };
        // Two CPUs with pending allocations of slot 2, one of slot 1, one with nothing pending
        // (its slot is left alone), one naming a slot beyond the array.
        let caches = [
            cache(2, 3),
            cache(2, 1),
            cache(1, 4),
            cache(3, 0),
            cache(9, 7),
        ];
        super::add_pending(&mut aggs, &caches);
        assert_eq!(aggs[2].1, agg(6 * 4096, 6));
        assert_eq!(aggs[1].1, agg(4 * 4096, 4));
        assert_eq!(aggs[3].1, agg(0, 0));
        assert_eq!(aggs[0].1, agg(0, 0));
        // Frees already taken off the slot (negative, two's complement) come back to 0.
        let mut aggs = vec![(0, agg(4096u64.wrapping_neg(), u64::MAX))];
        super::add_pending(&mut aggs, &[cache(0, 1)]);
        assert_eq!(aggs[0].1.outstanding_bytes, 0);
        assert_eq!(aggs[0].1.outstanding_count, 0);
    }

    #[test]
    fn merged_caches_share_a_sysfs_directory() {
        let links: Vec<(String, String)> = [
            ("pool_workqueue", ":0000512"),
            ("skbuff_fclone_cache", ":0000512"),
            ("sgpool-16", ":0000512"),
            ("dentry", ":a-0000192"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let m = super::merged_names(
            &links,
            ["pool_workqueue", "dentry", "task_struct"].into_iter(),
        );
        assert_eq!(
            m.get("pool_workqueue").map(Vec::as_slice),
            Some(&["sgpool-16".to_string(), "skbuff_fclone_cache".to_string()][..])
        );
        // Alone in its directory, or not a symlink (unmergeable): nothing.
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn stack_slots_map_to_their_stack_map() {
        let config = memtrace_common::Config {
            stack_alt_base: 16,
            stack_none_id: 20,
            agg_stride: 21,
            ..memtrace_common::Config::zeroed()
        };
        assert_eq!(locate_slot(0, &config), Some(StackSlot::Main(0)));
        assert_eq!(locate_slot(15, &config), Some(StackSlot::Main(15)));
        assert_eq!(locate_slot(16, &config), Some(StackSlot::Alt(0)));
        assert_eq!(locate_slot(19, &config), Some(StackSlot::Alt(3)));
        assert_eq!(locate_slot(20, &config), None);
        assert_eq!(locate_slot(u32::MAX, &config), None);
    }
}
