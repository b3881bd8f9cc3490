//! Turns a [`RawSession`] into a [`Report`]: per-(kind, stack) outstanding memory, owners,
//! orders, ages, slab caches, symbolized frames, the calling function and class of each stack,
//! and summaries by class and by calling function.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use memtrace_common::{Counter, Kind, PageRecord, StackAgg};

use super::classify::{classify, Class, ClassifyInput};
use super::frames::{frame_names, select_caller, STACK_UNAVAILABLE};
use super::owners::{settle_owners, summarize_owners, Alloc, WalkAcc, DEFAULT_MAX_OWNERS};
use super::summaries::{callers_and_totals, summarize_classes};
use super::{
    BuildOptions, ExecContext, Frame, Owner, RawSession, Report, SessionInfo, StackReport,
    Symbolize,
};

/// Reads a two's-complement aggregate that may transiently be "negative": clamps it to 0.
fn clamp_agg(v: u64) -> u64 {
    if v > i64::MAX as u64 {
        0
    } else {
        v
    }
}

/// Allocations a page record stands for.
fn allocations_of(rec: &PageRecord) -> u64 {
    1 + u64::from(rec.more_allocations)
}

/// A (kind, stack slot) pair: one stack report.
type Key = (Kind, u32);

/// What every outstanding record of a (kind, slot) says about its class and cache, whatever
/// its age (so that `--min-age` does not change them).
#[derive(Default)]
struct Hints {
    /// (gfp flags, migrate type for pages) → allocations.
    flags: BTreeMap<(u32, Option<u8>), u64>,
}

/// The most frequent key (the smallest on a tie).
fn most_common<K: Copy + Ord>(counts: &BTreeMap<K, u64>) -> Option<K> {
    let mut best: Option<(K, u64)> = None;
    for (k, n) in counts {
        if best.is_none_or(|(_, b)| *n > b) {
            best = Some((*k, *n));
        }
    }
    best.map(|(k, _)| k)
}

/// The kinds traced in this session: those `session.kinds` says were, and those that
/// produced data anyway.
fn traced_kinds(raw: &RawSession, session: &SessionInfo) -> BTreeSet<Kind> {
    let mut traced: BTreeSet<Kind> = Kind::ALL
        .iter()
        .copied()
        .filter(|k| session.kinds.iter().any(|s| s.traced && s.kind == k.name()))
        .collect();
    traced.extend(raw.aggs.iter().map(|(k, _, _)| *k));
    traced.extend(
        raw.objects
            .iter()
            .filter_map(|(k, _)| Kind::from_u32(k.kind)),
    );
    if !raw.records.is_empty() {
        traced.insert(Kind::Page);
    }
    traced
}

/// Multiplies every byte and count of a stack by `scale` (a sampled session's estimate).
fn scale_stack(s: &mut StackReport, scale: u64) {
    s.bytes = s.bytes.saturating_mul(scale);
    s.allocations = s.allocations.saturating_mul(scale);
    s.allocated_bytes = s.allocated_bytes.saturating_mul(scale);
    s.allocated_count = s.allocated_count.saturating_mul(scale);
    s.bytes_req = s.bytes_req.map(|b| b.saturating_mul(scale));
    for o in &mut s.owners {
        o.bytes = o.bytes.saturating_mul(scale);
        o.allocations = o.allocations.saturating_mul(scale);
    }
}

/// Builds the report. `symbols.symbolize` is called at most once, with every distinct address
/// of every reported stack (never with an empty slice).
pub fn build_report(
    raw: &RawSession,
    session: SessionInfo,
    symbols: &dyn Symbolize,
    opts: &BuildOptions,
) -> Report {
    let counters: Vec<(&'static str, u64)> = Counter::ALL
        .iter()
        .map(|&c| (c.name(), raw.counter(c)))
        .collect();
    let failure_counters: Vec<&'static str> = Counter::ALL
        .iter()
        .filter(|c| c.is_failure())
        .map(|c| c.name())
        .collect();

    // (kind, slot) → aggregate (summed, should a slot ever appear twice).
    let mut aggs: BTreeMap<Key, StackAgg> = BTreeMap::new();
    for (kind, slot, agg) in &raw.aggs {
        let e = aggs.entry((*kind, *slot)).or_default();
        e.outstanding_bytes = e.outstanding_bytes.wrapping_add(agg.outstanding_bytes);
        e.outstanding_count = e.outstanding_count.wrapping_add(agg.outstanding_count);
        e.allocated_bytes = e.allocated_bytes.saturating_add(agg.allocated_bytes);
        e.allocated_count = e.allocated_count.saturating_add(agg.allocated_count);
    }

    // Walk the outstanding records. The keys (head pfn, maybe DETACHED_KEY_BIT; object
    // address) do not matter here: every record is a distinct allocation (a page record may
    // stand for several identical ones, `more_allocations`).
    let mut walk: BTreeMap<Key, WalkAcc> = BTreeMap::new();
    let mut hints: HashMap<Key, Hints> = HashMap::new();
    let young = |age_ns: u64| opts.min_age_ns > 0 && age_ns < opts.min_age_ns;
    // The aggregates cover every recorded allocation; with an age filter the walk over the
    // records decides what is outstanding.
    let walk_decides = opts.min_age_ns > 0;
    for (_key, rec) in &raw.records {
        if rec.remaining_pages == 0 {
            continue;
        }
        let key = (Kind::Page, rec.stack_id);
        *hints
            .entry(key)
            .or_default()
            .flags
            .entry((rec.gfp_flags, Some(rec.migratetype)))
            .or_default() += allocations_of(rec);
        let age_ns = raw.now_ns.saturating_sub(rec.ts_ns);
        if young(age_ns) {
            continue;
        }
        walk.entry(key).or_default().add(&Alloc {
            bytes: u64::from(rec.remaining_pages).saturating_mul(raw.page_size),
            allocations: allocations_of(rec),
            age_ns,
            tgid: rec.tgid,
            pid: rec.pid,
            comm: &rec.comm,
            context: ExecContext::from_raw(rec.context),
            cgroup_id: rec.cgroup_id,
            order: Some(rec.order),
            bytes_req: 0,
        });
    }
    for (okey, rec) in &raw.objects {
        // The objects table never holds pages; anything else is not a kind we know.
        let Some(kind) = Kind::from_u32(okey.kind).filter(|k| *k != Kind::Page) else {
            continue;
        };
        let key = (kind, rec.stack_id);
        let h = hints.entry(key).or_default();
        *h.flags.entry((rec.gfp_flags, None)).or_default() += 1;
        let age_ns = raw.now_ns.saturating_sub(rec.ts_ns);
        if young(age_ns) {
            continue;
        }
        walk.entry(key).or_default().add(&Alloc {
            bytes: rec.bytes,
            allocations: 1,
            age_ns,
            tgid: rec.tgid,
            pid: rec.pid,
            comm: &rec.comm,
            context: ExecContext::from_raw(rec.context),
            cgroup_id: rec.cgroup_id,
            order: None,
            bytes_req: if kind == Kind::Slab { rec.bytes_req } else { 0 },
        });
    }

    let max_owners = if opts.max_owners == 0 {
        DEFAULT_MAX_OWNERS
    } else {
        opts.max_owners
    };

    let keys: BTreeSet<Key> = aggs.keys().chain(walk.keys()).copied().collect();
    let empty_walk = WalkAcc::default();
    let mut stacks: Vec<StackReport> = Vec::new();
    // Every owner of every stack (same order as `stacks`), settled and summarized below.
    let mut owner_lists: Vec<Vec<(Option<ExecContext>, Owner)>> = Vec::new();
    for key in keys {
        let (kind, slot) = key;
        let agg = aggs.get(&key);
        let w = walk.get(&key).unwrap_or(&empty_walk);
        let (bytes, allocations) = match agg {
            Some(a) if !walk_decides => (
                clamp_agg(a.outstanding_bytes),
                clamp_agg(a.outstanding_count),
            ),
            _ => (w.bytes, w.count),
        };
        let (allocated_bytes, allocated_count) =
            agg.map_or((0, 0), |a| (a.allocated_bytes, a.allocated_count));
        if allocated_count == 0 && bytes == 0 {
            continue;
        }
        let stack_id = (slot != raw.stack_none_id).then_some(slot);
        stacks.push(StackReport {
            kind,
            class: Class::OtherKernel, // classified once the frames are known
            cache: cache_name(raw, kind, stack_id),
            cache_merged: cache_name(raw, kind, stack_id)
                .and_then(|c| raw.cache_merged.get(&c).cloned())
                .unwrap_or_default(),
            bytes_req: (kind == Kind::Slab).then(|| w.bytes_req(bytes)).flatten(),
            stack_id,
            bytes,
            allocations,
            allocated_bytes,
            allocated_count,
            orders: w.orders.iter().copied().collect(),
            oldest_age_secs: w.oldest_age_ns.map(|ns| ns as f64 / 1e9),
            caller: String::new(),
            owners: Vec::new(),
            frames: Vec::new(),
            growth: None,
        });
        owner_lists.push(w.all_owners());
    }

    // Sampled sessions recorded one allocation in N: scale to estimates before anything is
    // summed, so totals, classes, callers and owners are all on the same footing. Slab has a
    // rate of its own (the outstanding records are all in the sample of the final rate; the
    // allocated side was weighted in the kernel by the rate at each allocation).
    for (s, list) in stacks.iter_mut().zip(owner_lists.iter_mut()) {
        let scale = u64::from(session.sample_every_of(s.kind));
        if scale <= 1 {
            continue;
        }
        let (allocated_bytes, allocated_count) = (s.allocated_bytes, s.allocated_count);
        scale_stack(s, scale);
        if s.kind == Kind::Slab {
            // Two estimates from different samples: what is outstanding was allocated, so
            // the allocated one is at least the outstanding one.
            s.allocated_bytes = allocated_bytes.max(s.bytes);
            s.allocated_count = allocated_count.max(s.allocations);
        }
        for (_, o) in list {
            o.bytes = o.bytes.saturating_mul(scale);
            o.allocations = o.allocations.saturating_mul(scale);
        }
    }

    symbolize_stacks(&mut stacks, raw, symbols);
    for (s, list) in stacks.iter_mut().zip(owner_lists) {
        s.owners = settle_owners(list, &s.frames);
    }
    for s in &mut stacks {
        s.caller = match s.stack_id {
            None => STACK_UNAVAILABLE.to_string(),
            Some(_) => select_caller(&s.frames),
        };
        let slot = s.stack_id.unwrap_or(raw.stack_none_id);
        let (gfp_flags, migratetype) = hints
            .get(&(s.kind, slot))
            .and_then(|h| most_common(&h.flags))
            .or_else(|| {
                // No record says (a snapshot reads none): the stack's first allocation.
                (s.kind == Kind::Page)
                    .then(|| raw.page_gfp.get(&slot))
                    .flatten()
                    .map(|&(gfp, mt)| (gfp, Some(mt)))
            })
            .map_or((None, None), |(gfp, mt)| (Some(gfp), mt));
        let names = frame_names(&s.frames);
        s.class = classify(&ClassifyInput {
            kind: Some(s.kind),
            frames: &names,
            cache: s.cache.as_deref(),
            gfp_flags,
            migratetype,
        });
    }

    let traced = traced_kinds(raw, &session);
    let in_total = |c: Class| c.backs().is_none_or(|k| !traced.contains(&k));
    let classes = summarize_classes(&stacks, in_total);

    if let Some(selected) = &opts.classes {
        stacks.retain(|s| selected.contains(&s.class));
    }
    let owners = summarize_owners(stacks.iter().filter(|s| in_total(s.class)));
    for s in &mut stacks {
        s.owners.truncate(max_owners);
    }
    stacks.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(b.allocated_bytes.cmp(&a.allocated_bytes))
            .then(a.kind.cmp(&b.kind))
            .then(sort_id(a.stack_id).cmp(&sort_id(b.stack_id)))
    });

    let (callers, totals) = callers_and_totals(&stacks, in_total);

    Report {
        session,
        counters,
        failure_counters,
        programs: raw.programs.clone(),
        totals,
        classes,
        class_filter: opts.classes.clone(),
        callers,
        stacks,
        owners,
        snapshots: Vec::new(),
        sockets: Vec::new(),
    }
}

/// The slab cache of a slab stack: the name the programs recorded for its stack id (read
/// through the first object's slab, or the event's `name` field). `None` for other kinds, for
/// the "stack unavailable" bucket (a mix of caches), for large kmalloc (buddy pages, no cache)
/// and when it could not be read: never a name made up from sizes.
fn cache_name(raw: &RawSession, kind: Kind, stack_id: Option<u32>) -> Option<String> {
    if kind != Kind::Slab {
        return None;
    }
    raw.cache_names
        .get(&stack_id?)
        .filter(|n| !n.is_empty())
        .cloned()
}

/// The "stack unavailable" bucket sorts after every real stack id.
fn sort_id(id: Option<u32>) -> u64 {
    id.map_or(u64::MAX, u64::from)
}

/// Fills `frames` of every stack with one symbolization call over the distinct addresses.
fn symbolize_stacks(stacks: &mut [StackReport], raw: &RawSession, symbols: &dyn Symbolize) {
    let mut seen = HashSet::new();
    let mut addrs = Vec::new();
    for s in stacks.iter() {
        if let Some(ips) = s.stack_id.and_then(|id| raw.stacks.get(&id)) {
            for &ip in ips {
                if seen.insert(ip) {
                    addrs.push(ip);
                }
            }
        }
    }
    if addrs.is_empty() {
        return;
    }
    let resolved = symbols.symbolize(&addrs);
    // Tolerate a symbolizer that breaks its contract (too few frames): missing ones stay
    // unresolved rather than being attached to the wrong address.
    let mut by_addr: HashMap<u64, Frame> = HashMap::with_capacity(addrs.len());
    for (i, &addr) in addrs.iter().enumerate() {
        let frame = match resolved.get(i) {
            Some(f) => Frame {
                address: addr,
                ..f.clone()
            },
            None => Frame::unresolved(addr),
        };
        by_addr.insert(addr, frame);
    }
    for s in stacks.iter_mut() {
        if let Some(ips) = s.stack_id.and_then(|id| raw.stacks.get(&id)) {
            s.frames = super::frames::strip_tracer_frames(
                ips.iter()
                    .map(|ip| {
                        by_addr
                            .get(ip)
                            .cloned()
                            .unwrap_or_else(|| Frame::unresolved(*ip))
                    })
                    .collect(),
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {

    use memtrace_common::Kind::{Page, Slab, Vmalloc};
    use memtrace_common::{ObjKey, ObjRecord, PageRecord, DETACHED_KEY_BIT};

    use super::super::ProgramStats;
    use super::*;
    use crate::model::frames::{
        base_symbol, context_from_frames, is_allocator_internal, UNKNOWN_CALLER,
    };
    use crate::model::summaries::{excluded_from_totals, stack_class_detail};
    use crate::model::testkit::*;
    use crate::model::Totals;

    fn opts(min_age_ns: u64, max_owners: usize) -> BuildOptions {
        BuildOptions {
            min_age_ns,
            max_owners,
            classes: None,
        }
    }

    /// The page stack `id`.
    fn find(report: &Report, id: Option<u32>) -> &StackReport {
        find_k(report, Page, id)
    }

    fn find_k(report: &Report, kind: Kind, id: Option<u32>) -> &StackReport {
        report
            .stacks
            .iter()
            .find(|s| s.kind == kind && s.stack_id == id)
            .expect("stack in report")
    }

    fn frames_of(names: &[&str]) -> Vec<Frame> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Frame {
                address: i as u64,
                symbol: Some(n.to_string()),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn caller_skips_allocator_frames() {
        let names: Vec<&str> = TCP_STACK.iter().map(|(_, n)| *n).collect();
        assert_eq!(select_caller(&frames_of(&names)), "skb_page_frag_refill");
        let names: Vec<&str> = ANON_STACK.iter().map(|(_, n)| *n).collect();
        assert_eq!(select_caller(&frames_of(&names)), "do_anonymous_page");
    }

    #[test]
    fn caller_skips_tracing_frames_and_unresolved() {
        let mut frames = frames_of(&[
            "bpf_prog_6deef7357e7b4530_mm_page_alloc",
            "bpf_trace_run2",
            "__bpf_trace_mm_page_alloc",
            "perf_trace_mm_page_alloc",
            "trace_event_raw_event_mm_page_alloc",
            "__traceiter_mm_page_alloc",
            "trace_call_bpf",
            "perf_trace_run_bpf_submit",
            "post_alloc_hook",
            "prep_new_page",
            "rmqueue_bulk",
            "__rmqueue_pcplist",
            "get_page_from_freelist.isra.0",
            "__get_free_pages",
            "get_zeroed_page_noprof",
            "__kmalloc_large_node_noprof",
            "___kmalloc_large_node",
            "UNRESOLVED",
            "kmalloc_reserve.constprop.0",
        ]);
        frames[17].symbol = None;
        assert_eq!(select_caller(&frames), "kmalloc_reserve.constprop.0");
    }

    #[test]
    fn caller_fallbacks() {
        // Only allocator frames: the innermost resolved one.
        let mut frames = frames_of(&["x", "__alloc_pages", "alloc_pages_bulk_noprof"]);
        frames[0].symbol = None;
        assert_eq!(select_caller(&frames), "__alloc_pages");
        // Nothing resolved.
        assert_eq!(select_caller(&[Frame::unresolved(1)]), UNKNOWN_CALLER);
        assert_eq!(select_caller(&[]), UNKNOWN_CALLER);
    }

    #[test]
    fn allocator_internal_table() {
        for s in [
            "__alloc_pages",
            "__alloc_pages_noprof",
            "alloc_pages",
            "alloc_pages_mpol",
            "alloc_pages_mpol_noprof",
            "alloc_pages_bulk_noprof",
            "__folio_alloc",
            "folio_alloc_noprof",
            "vma_alloc_folio",
            "alloc_frozen_pages_nolock",
            "__alloc_frozen_pages_noprof",
            "get_page_from_freelist",
            "rmqueue.constprop.0",
            "__rmqueue_smallest",
            "kmalloc_noprof",
            "bpf_prog_123_x",
            "__traceiter_mm_page_alloc",
            // Slab, percpu and vmalloc internals (older names without `_noprof` too).
            "kmalloc_large",
            "___kmalloc_large_node",
            "kmem_cache_alloc",
            "kmem_cache_alloc_node",
            "kmem_cache_alloc_lru_noprof",
            "___slab_alloc",
            "__slab_alloc.isra.0",
            "slab_alloc_node",
            "__kmalloc",
            "__kmalloc_node_track_caller",
            "__kmalloc_cache_noprof",
            "kmalloc_trace",
            "pcpu_alloc",
            "pcpu_alloc_noprof",
            "__alloc_percpu_gfp",
            "alloc_vmap_area",
            "__get_vm_area_node",
            "__vmalloc_node_range",
            "__vmalloc_node_range_noprof",
            "__kvmalloc_node_noprof",
            "vmalloc",
        ] {
            assert!(is_allocator_internal(s), "{s} should be internal");
        }
        for s in [
            "skb_page_frag_refill",
            "do_anonymous_page",
            "tcp_sendmsg_locked",
            "page_pool_alloc_pages",
            "get_page_from_freelist_wrapper_in_driver_x", // exact rule, not prefix
            "allocate_slab",                              // the slab-backing pages' caller
            "kmalloc_reserve",
            "pcpu_alloc_pages",
            "pcpu_populate_chunk",
            "vmalloc_to_page",
            "copy_process",
            "__bpf_map_area_alloc",
            "noprof_helper",
            ".cold",
        ] {
            assert!(!is_allocator_internal(s), "{s} should not be internal");
        }
        assert_eq!(base_symbol("foo.isra.0"), "foo");
        assert_eq!(base_symbol("foo"), "foo");
    }

    #[test]
    fn aggs_are_authoritative_without_min_age() {
        let mut raw = raw_base();
        raw.aggs = vec![(Page, 1, agg(10 * PAGE, 3, 100 * PAGE, 50))];
        // The walk sees fewer (e.g. outstanding map full): aggregates still win for totals.
        raw.records = vec![
            (100, rec(1, 990 * SEC, 10, 11, "nginx", 3, 8)),
            (200, rec(1, 400 * SEC, 20, 20, "kworker/0:1", 0, 1)),
        ];
        let sym = FakeSymbols::new(&[]);
        let r = build_report(&raw, SessionInfo::default(), &sym, &opts(0, 0));
        let s = find(&r, Some(1));
        assert_eq!(s.bytes, 10 * PAGE);
        assert_eq!(s.allocations, 3);
        assert_eq!(s.allocated_bytes, 100 * PAGE);
        assert_eq!(s.allocated_count, 50);
        assert_eq!(s.orders, vec![0, 3]);
        assert_eq!(s.oldest_age_secs, Some(600.0));
        assert_eq!(s.owners.len(), 2);
        assert_eq!(s.owners[0].comm, "nginx");
        assert_eq!(s.owners[0].bytes, 8 * PAGE);
    }

    #[test]
    fn min_age_uses_the_walk() {
        let mut raw = raw_base();
        raw.aggs = vec![(Page, 1, agg(10 * PAGE, 3, 100 * PAGE, 50))];
        raw.records = vec![
            (100, rec(1, 990 * SEC, 10, 11, "young", 3, 8)), // 10 s old
            (200, rec(1, 400 * SEC, 20, 20, "old", 0, 1)),   // 600 s old
            (300, rec(1, 940 * SEC, 30, 31, "edge", 1, 2)),  // exactly 60 s old
        ];
        let sym = FakeSymbols::new(&[]);
        let r = build_report(&raw, SessionInfo::default(), &sym, &opts(60 * SEC, 0));
        let s = find(&r, Some(1));
        assert_eq!(s.bytes, 3 * PAGE);
        assert_eq!(s.allocations, 2);
        assert_eq!(s.allocated_bytes, 100 * PAGE);
        assert_eq!(s.allocated_count, 50);
        assert_eq!(s.orders, vec![0, 1]);
        assert_eq!(s.oldest_age_secs, Some(600.0));
        let comms: Vec<&str> = s.owners.iter().map(|o| o.comm.as_str()).collect();
        assert_eq!(comms, ["edge", "old"]);
        assert_eq!(r.totals.bytes, 3 * PAGE);

        // Only young records: the stack stays (it allocated) with nothing outstanding.
        let r = build_report(&raw, SessionInfo::default(), &sym, &opts(700 * SEC, 0));
        let s = find(&r, Some(1));
        assert_eq!((s.bytes, s.allocations), (0, 0));
        assert!(s.orders.is_empty() && s.owners.is_empty());
        assert_eq!(s.oldest_age_secs, None);
    }

    #[test]
    fn negative_transient_aggregate_is_clamped() {
        let mut raw = raw_base();
        raw.aggs = vec![(Page, 1, agg((-4096i64) as u64, (-1i64) as u64, 8 * PAGE, 2))];
        let sym = FakeSymbols::new(&[]);
        let r = build_report(&raw, SessionInfo::default(), &sym, &opts(0, 0));
        let s = find(&r, Some(1));
        assert_eq!((s.bytes, s.allocations), (0, 0));
        assert_eq!(r.totals.bytes, 0);
        assert_eq!(r.totals.allocated_bytes, 8 * PAGE);
    }

    #[test]
    fn detached_records_and_missing_aggs_are_counted() {
        let mut raw = raw_base();
        raw.aggs = vec![(Page, 1, agg(12 * PAGE, 2, 12 * PAGE, 2))];
        raw.records = vec![
            // Same head pfn: the original (detached, tail pages still held) and a new one.
            (
                0x1000 | DETACHED_KEY_BIT,
                rec(1, 100 * SEC, 1, 1, "a", 3, 4),
            ),
            (0x1000, rec(1, 200 * SEC, 2, 2, "b", 3, 8)),
            // A slot with no aggregate entry.
            (0x2000, rec(7, 300 * SEC, 3, 3, "c", 2, 4)),
        ];
        let sym = FakeSymbols::new(&[]);
        for min_age in [0, 1] {
            let r = build_report(&raw, SessionInfo::default(), &sym, &opts(min_age, 0));
            let s1 = find(&r, Some(1));
            assert_eq!((s1.bytes, s1.allocations), (12 * PAGE, 2));
            let s7 = find(&r, Some(7));
            assert_eq!((s7.bytes, s7.allocations), (4 * PAGE, 1));
            assert_eq!((s7.allocated_bytes, s7.allocated_count), (0, 0));
            assert_eq!(r.totals.bytes, 16 * PAGE);
            assert_eq!(r.totals.allocations, 3);
        }
    }

    #[test]
    fn stack_unavailable_bucket() {
        let mut raw = raw_base();
        raw.aggs = vec![
            (Page, NONE_ID, agg(2 * PAGE, 2, 5 * PAGE, 5)),
            (Page, 1, agg(2 * PAGE, 1, 2 * PAGE, 1)),
        ];
        raw.records = vec![(5, rec(NONE_ID, 999 * SEC, 4, 4, "x", 0, 1))];
        // Even if the stack map happened to hold an entry for that slot, it is not used.
        raw.stacks.insert(NONE_ID, vec![0xdead]);
        raw.stacks.insert(1, vec![0xffff_ffff_8100_0040]);
        let sym = FakeSymbols::new(TCP_STACK);
        let r = build_report(&raw, SessionInfo::default(), &sym, &opts(0, 0));
        let s = find(&r, None);
        assert_eq!(s.caller, STACK_UNAVAILABLE);
        assert!(s.frames.is_empty());
        assert_eq!(s.bytes, 2 * PAGE);
        // Equal bytes: more allocated first, so the bucket (5 pages allocated) comes first.
        assert_eq!(r.stacks[0].stack_id, None);
        assert_eq!(
            sym.calls.borrow().as_slice(),
            &[vec![0xffff_ffff_8100_0040]]
        );
    }

    #[test]
    fn owners_grouped_sorted_truncated() {
        let mut raw = raw_base();
        raw.aggs = vec![(Page, 1, agg(0, 0, PAGE, 1))];
        raw.records = vec![
            (1, rec(1, 1, 100, 100, "nginx", 0, 1)),
            (2, rec(1, 1, 100, 101, "nginx", 0, 2)),
            (3, rec(1, 1, 100, 101, "nginx", 0, 2)),
            (4, rec(1, 1, 200, 200, "swapper/3", 0, 3)),
            (5, rec(1, 1, 300, 300, "kswapd0", 0, 1)),
            (6, rec(1, 1, 300, 300, "kswapd0", 0, 1)),
            (7, rec(1, 1, 400, 400, "sshd", 0, 1)),
        ];
        let sym = FakeSymbols::new(&[]);
        let r = build_report(&raw, SessionInfo::default(), &sym, &opts(1, 3));
        let s = find(&r, Some(1));
        let got: Vec<(u32, u32, &str, u64, u64)> = s
            .owners
            .iter()
            .map(|o| (o.tgid, o.pid, o.comm.as_str(), o.bytes, o.allocations))
            .collect();
        assert_eq!(
            got,
            [
                (100, 101, "nginx", 4 * PAGE, 2),
                (200, 200, "swapper/3", 3 * PAGE, 1),
                (300, 300, "kswapd0", 2 * PAGE, 2),
            ]
        );
        // max_owners 0 → the default.
        raw.records
            .extend((10..20).map(|i| (i, rec(1, 1, i as u32, i as u32, "t", 0, 1))));
        let r = build_report(&raw, SessionInfo::default(), &sym, &opts(1, 0));
        assert_eq!(find(&r, Some(1)).owners.len(), DEFAULT_MAX_OWNERS);
    }

    #[test]
    fn a_merged_record_counts_as_its_allocations() {
        // Three identical allocations as three records, and as one record of three.
        let mut raw = raw_base();
        raw.aggs = vec![(Page, 1, agg(6 * PAGE, 3, 6 * PAGE, 3))];
        raw.records = vec![
            (1, rec(1, 5 * SEC, 100, 101, "nginx", 1, 2)),
            (3, rec(1, 5 * SEC, 100, 101, "nginx", 1, 2)),
            (5, rec(1, 5 * SEC, 100, 101, "nginx", 1, 2)),
        ];
        let sym = FakeSymbols::new(&[]);
        let separate = build_report(&raw, SessionInfo::default(), &sym, &opts(SEC, 3));
        raw.records = vec![(
            1,
            PageRecord {
                more_allocations: 2,
                ..rec(1, 5 * SEC, 100, 101, "nginx", 1, 6)
            },
        )];
        let merged = build_report(&raw, SessionInfo::default(), &sym, &opts(SEC, 3));
        assert_eq!(separate, merged);
        let s = find(&merged, Some(1));
        assert_eq!((s.bytes, s.allocations), (6 * PAGE, 3));
        assert_eq!((s.owners[0].bytes, s.owners[0].allocations), (6 * PAGE, 3));
    }

    #[test]
    fn page_stacks_without_records_are_classified_by_their_first_allocation() {
        // A snapshot: aggregates only. The stack's first allocation was movable (user-anon).
        let mut raw = raw_base();
        raw.aggs = vec![(Page, 1, agg(2 * PAGE, 2, 2 * PAGE, 2))];
        let sym = FakeSymbols::new(&[]);
        let without = build_report(&raw, SessionInfo::default(), &sym, &opts(0, 3));
        raw.page_gfp
            .insert(1, (0x0014_0cca, memtrace_common::MIGRATE_MOVABLE as u8));
        let with = build_report(&raw, SessionInfo::default(), &sym, &opts(0, 3));
        assert_ne!(find(&without, Some(1)).class, find(&with, Some(1)).class);
        assert_eq!(find(&with, Some(1)).class, Class::UserAnon);
    }

    #[test]
    fn symbolizes_once_with_distinct_addresses() {
        let mut raw = raw_base();
        let tcp: Vec<u64> = TCP_STACK.iter().map(|(a, _)| *a).collect();
        let anon: Vec<u64> = ANON_STACK.iter().map(|(a, _)| *a).collect();
        // Stack 3 shares frames with stack 1 (same path, different depth).
        let mut tcp2 = tcp.clone();
        tcp2.truncate(5);
        tcp2.push(0x1234); // unresolved
        raw.stacks.insert(1, tcp.clone());
        raw.stacks.insert(2, anon.clone());
        raw.stacks.insert(3, tcp2);
        raw.stacks.insert(4, vec![0x9999]); // not reported: no agg, no record
        raw.aggs = vec![
            (Page, 1, agg(30 * PAGE, 3, 30 * PAGE, 3)),
            (Page, 2, agg(20 * PAGE, 20, 20 * PAGE, 20)),
            (Page, 3, agg(0, 0, 50 * PAGE, 7)),
            (Page, 5, agg(PAGE, 1, PAGE, 1)), // no stack in the map
        ];
        let mut all: Vec<(u64, &str)> = TCP_STACK.to_vec();
        all.extend_from_slice(ANON_STACK);
        let sym = FakeSymbols::new(&all);
        let r = build_report(&raw, SessionInfo::default(), &sym, &opts(0, 0));

        let calls = sym.calls.borrow();
        assert_eq!(calls.len(), 1);
        let mut got = calls[0].clone();
        let n = got.len();
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len(), n, "addresses were not de-duplicated");
        let mut want: Vec<u64> = tcp.iter().chain(&anon).copied().collect();
        want.push(0x1234);
        want.sort_unstable();
        assert_eq!(got, want);

        let ids: Vec<Option<u32>> = r.stacks.iter().map(|s| s.stack_id).collect();
        assert_eq!(ids, [Some(1), Some(2), Some(5), Some(3)]);
        let s1 = find(&r, Some(1));
        assert_eq!(s1.caller, "skb_page_frag_refill");
        assert_eq!(s1.frames.len(), TCP_STACK.len());
        assert_eq!(s1.frames[0].symbol.as_deref(), Some("__alloc_pages_noprof"));
        assert_eq!(s1.frames[0].address, TCP_STACK[0].0);
        assert_eq!(find(&r, Some(2)).caller, "do_anonymous_page");
        let s3 = find(&r, Some(3));
        assert_eq!(s3.frames.last().map(|f| f.symbol.clone()), Some(None));
        assert_eq!(s3.caller, "skb_page_frag_refill");
        let s5 = find(&r, Some(5));
        assert!(s5.frames.is_empty());
        assert_eq!(s5.caller, UNKNOWN_CALLER);
        assert!(r.stacks.iter().all(|s| s.stack_id != Some(4)));

        // Callers: two stacks share skb_page_frag_refill.
        let c: Vec<(&str, u64, u64, u64, u64)> = r
            .callers
            .iter()
            .map(|c| {
                (
                    c.function.as_str(),
                    c.bytes,
                    c.allocations,
                    c.allocated_bytes,
                    c.stacks,
                )
            })
            .collect();
        assert_eq!(
            c,
            [
                ("skb_page_frag_refill", 30 * PAGE, 3, 80 * PAGE, 2),
                ("do_anonymous_page", 20 * PAGE, 20, 20 * PAGE, 1),
                (UNKNOWN_CALLER, PAGE, 1, PAGE, 1),
            ]
        );
        assert_eq!(
            r.totals,
            Totals {
                bytes: 51 * PAGE,
                allocations: 24,
                allocated_bytes: 101 * PAGE,
                allocated_count: 31,
            }
        );
    }

    #[test]
    fn no_symbolize_call_without_addresses() {
        let raw = raw_base();
        let sym = FakeSymbols::new(&[]);
        let r = build_report(&raw, SessionInfo::default(), &sym, &opts(0, 0));
        assert!(sym.calls.borrow().is_empty());
        assert!(r.stacks.is_empty());
        assert_eq!(r.totals, Totals::default());
    }

    #[test]
    fn counters_and_programs_copied() {
        let mut raw = raw_base();
        raw.counters[Counter::OutstandingFull as usize] = 7;
        raw.counters[Counter::AllocsSeen as usize] = 1234;
        raw.counters.truncate(Counter::COUNT as usize - 1); // short vector: missing → 0
        raw.programs = vec![ProgramStats {
            name: "mm_page_free".into(),
            recursion_misses: 3,
            ..Default::default()
        }];
        let sym = FakeSymbols::new(&[]);
        let r = build_report(&raw, SessionInfo::default(), &sym, &opts(0, 0));
        assert_eq!(r.counters.len(), Counter::COUNT as usize);
        assert_eq!(r.counters[0], ("allocs_seen", 1234));
        assert!(r.counters.contains(&("outstanding_map_full", 7)));
        assert_eq!(
            r.counters.last(),
            Some(&(Counter::ALL[Counter::ALL.len() - 1].name(), 0))
        );
        let want: Vec<&str> = Counter::ALL
            .iter()
            .filter(|c| c.is_failure())
            .map(|c| c.name())
            .collect();
        assert_eq!(r.failure_counters, want);
        for name in [
            "outstanding_map_full",
            "stale_records_replaced",
            "stack_id_enomem",
        ] {
            assert!(r.failure_counters.contains(&name), "{name}");
        }
        assert!(!r.failure_counters.contains(&"unmatched_frees"));
        assert_eq!(r.programs, raw.programs);
    }

    fn classes_of(r: &Report) -> Vec<(Class, u64, u64, u64, bool)> {
        r.classes
            .iter()
            .map(|c| (c.class, c.bytes, c.allocations, c.stacks, c.in_total))
            .collect()
    }

    #[test]
    fn sampled_sessions_scale_every_figure() {
        let (raw, sym, session) = mixed_raw();
        let exact = build_report(&raw, session.clone(), &sym, &opts(0, 0));
        // Pages (and percpu, vmalloc) at 1 in 8, slab at its own 1 in 4.
        let sampled = build_report(
            &raw,
            SessionInfo {
                sample_every: 8,
                slab_sample_every: 4,
                ..session
            },
            &sym,
            &opts(0, 0),
        );
        assert!(exact.stacks.iter().any(|s| s.kind == Slab));
        assert_eq!(sampled.stacks.len(), exact.stacks.len());
        let scale = |k: Kind| if k == Slab { 4 } else { 8 };
        for (a, b) in exact.stacks.iter().zip(&sampled.stacks) {
            let n = scale(a.kind);
            assert_eq!((b.bytes, b.allocations), (a.bytes * n, a.allocations * n));
            assert_eq!(b.bytes_req, a.bytes_req.map(|x| x * n));
            if a.kind == Slab {
                // The kernel weighted the allocated side already; it covers what is held.
                assert_eq!(b.allocated_count, a.allocated_count.max(b.allocations));
                assert_eq!(b.allocated_bytes, a.allocated_bytes.max(b.bytes));
            } else {
                assert_eq!(b.allocated_count, a.allocated_count * n);
                assert_eq!(b.allocated_bytes, a.allocated_bytes * n);
            }
            for (oa, ob) in a.owners.iter().zip(&b.owners) {
                assert_eq!(
                    (ob.bytes, ob.allocations),
                    (oa.bytes * n, oa.allocations * n)
                );
            }
        }
        let in_total = |r: &Report, c: Class| {
            r.classes
                .iter()
                .find(|x| x.class == c)
                .is_none_or(|x| x.in_total)
        };
        let expected: u64 = exact
            .stacks
            .iter()
            .filter(|s| in_total(&exact, s.class))
            .map(|s| s.bytes * scale(s.kind))
            .sum();
        assert_eq!(sampled.totals.bytes, expected);
        assert!(sampled.session.estimated() && !exact.session.estimated());
    }

    #[test]
    fn mixed_kinds_classes_and_totals() {
        let (raw, sym, session) = mixed_raw();
        let r = build_report(&raw, session, &sym, &opts(0, 0));
        assert_eq!(sym.calls.borrow().len(), 1, "symbolized once");

        let got: Vec<(Kind, Option<u32>, Class)> = r
            .stacks
            .iter()
            .map(|s| (s.kind, s.stack_id, s.class))
            .collect();
        assert_eq!(
            got,
            [
                (Vmalloc, Some(13), Class::OtherKernel),
                (Page, Some(14), Class::VmallocBacking),
                (Page, Some(1), Class::Network),
                (Page, Some(10), Class::SlabBacking),
                (Page, Some(2), Class::UserAnon),
                (Page, Some(16), Class::PercpuBacking),
                (Slab, Some(12), Class::OtherKernel),
                (Slab, Some(11), Class::Network),
                (Slab, None, Class::OtherKernel),
            ]
        );
        assert_eq!(
            classes_of(&r),
            [
                (Class::OtherKernel, 17 * PAGE + 1280 + 64, 5, 3, true),
                (Class::VmallocBacking, 16 * PAGE, 16, 1, false),
                (Class::Network, 8 * PAGE + 768, 4, 2, true),
                (Class::SlabBacking, 4 * PAGE, 2, 1, false),
                (Class::UserAnon, 3 * PAGE, 3, 1, true),
                // Percpu was not traced: its chunk pages count.
                (Class::PercpuBacking, 2 * PAGE, 2, 1, true),
            ]
        );
        // Totals leave out the slab and vmalloc pages (counted as slab objects and vmalloc
        // areas).
        assert_eq!(
            r.totals,
            Totals {
                bytes: 30 * PAGE + 768 + 1280 + 64,
                allocations: 1 + 3 + 3 + 3 + 1 + 2 + 1,
                allocated_bytes: 16 * PAGE + 5 * PAGE + 1024 + 1280 + 17 * PAGE + 2 * PAGE + 64,
                allocated_count: 2 + 5 + 4 + 3 + 1 + 2 + 1,
            }
        );
        let excluded: Vec<Class> = excluded_from_totals(&r).iter().map(|c| c.class).collect();
        assert_eq!(excluded, [Class::VmallocBacking, Class::SlabBacking]);
        // Callers cover the same stacks as the totals: the BPF map counts once (as its vmalloc
        // area), allocate_slab (the slab pages) not at all.
        let bpf = r
            .callers
            .iter()
            .find(|c| c.function == "__bpf_map_area_alloc")
            .expect("bpf caller");
        assert_eq!((bpf.bytes, bpf.stacks), (17 * PAGE, 1));
        assert!(r.callers.iter().all(|c| c.function != "allocate_slab"));
        assert_eq!(
            r.callers.iter().map(|c| c.bytes).sum::<u64>(),
            r.totals.bytes
        );
        let callers: Vec<&str> = r.callers.iter().map(|c| c.function.as_str()).collect();
        assert!(callers.contains(&"__alloc_skb") && callers.contains(&"kernfs_fop_open"));
        assert_eq!(r.class_filter, None);
        // Objects: no orders; owners and ages from the records.
        let s11 = find_k(&r, Slab, Some(11));
        assert!(s11.orders.is_empty());
        assert_eq!(s11.oldest_age_secs, Some(10.0));
        assert_eq!(s11.owners.len(), 1);
        assert_eq!((s11.owners[0].bytes, s11.owners[0].allocations), (768, 3));
        assert_eq!(s11.caller, "__alloc_skb");
        let s13 = find_k(&r, Vmalloc, Some(13));
        assert_eq!(s13.caller, "__bpf_map_area_alloc");
        assert_eq!((s13.cache.as_deref(), s13.bytes_req), (None, None));
        assert_eq!(find(&r, Some(10)).caller, "allocate_slab");
        assert_eq!(find(&r, Some(10)).orders, [1]);
    }

    #[test]
    fn backing_pages_count_when_their_kind_was_not_traced() {
        let (mut raw, sym, mut session) = mixed_raw();
        // Pages only: slab and vmalloc skipped, nothing of theirs collected.
        raw.aggs.retain(|(k, _, _)| *k == Page);
        raw.objects.clear();
        session.kinds = vec![
            kind_status(Page, true),
            kind_status(Slab, false),
            kind_status(Vmalloc, false),
        ];
        let r = build_report(&raw, session.clone(), &sym, &opts(0, 0));
        assert!(r.classes.iter().all(|c| c.in_total), "{:?}", r.classes);
        assert_eq!(r.totals.bytes, (8 + 3 + 4 + 16 + 2) * PAGE);
        assert!(excluded_from_totals(&r).is_empty());
        assert!(r.callers.iter().any(|c| c.function == "allocate_slab"));

        // A kind that produced data counts as traced even if the session info does not say
        // so (e.g. no kinds listed at all).
        let (raw, sym, mut session) = mixed_raw();
        session.kinds.clear();
        let r = build_report(&raw, session, &sym, &opts(0, 0));
        let slab_backing = r
            .classes
            .iter()
            .find(|c| c.class == Class::SlabBacking)
            .expect("slab-backing");
        assert!(!slab_backing.in_total);
        let percpu_backing = r
            .classes
            .iter()
            .find(|c| c.class == Class::PercpuBacking)
            .expect("percpu-backing");
        assert!(percpu_backing.in_total);
    }

    #[test]
    fn class_filter_restricts_stacks_callers_totals() {
        let (raw, sym, session) = mixed_raw();
        let all = build_report(&raw, session.clone(), &sym, &opts(0, 0));
        let filter = |classes: Vec<Class>| BuildOptions {
            classes: Some(classes),
            ..opts(0, 0)
        };

        let r = build_report(&raw, session.clone(), &sym, &filter(vec![Class::Network]));
        let ids: Vec<(Kind, Option<u32>)> = r.stacks.iter().map(|s| (s.kind, s.stack_id)).collect();
        assert_eq!(ids, [(Page, Some(1)), (Slab, Some(11))]);
        assert_eq!(r.totals.bytes, 8 * PAGE + 768);
        assert_eq!(r.totals.allocations, 4);
        assert_eq!(r.totals.allocated_bytes, 16 * PAGE + 1024);
        let callers: Vec<&str> = r.callers.iter().map(|c| c.function.as_str()).collect();
        assert_eq!(callers, ["skb_page_frag_refill", "__alloc_skb"]);
        // The class summary is from before the filter.
        assert_eq!(r.classes, all.classes);
        assert_eq!(r.class_filter, Some(vec![Class::Network]));

        // Only backing pages of traced kinds: listed, but nothing counts in the totals.
        let r = build_report(
            &raw,
            session.clone(),
            &sym,
            &filter(vec![Class::SlabBacking]),
        );
        assert_eq!(r.stacks.len(), 1);
        assert_eq!(r.stacks[0].stack_id, Some(10));
        assert_eq!(r.totals, Totals::default());
        assert!(r.callers.is_empty());
        let excluded: Vec<Class> = excluded_from_totals(&r).iter().map(|c| c.class).collect();
        assert_eq!(excluded, [Class::SlabBacking]);

        // Several classes, and the `kernel` shorthand.
        let kernel = crate::model::classify::parse_class_list("kernel").expect("kernel");
        let r = build_report(&raw, session, &sym, &filter(kernel));
        assert!(r
            .stacks
            .iter()
            .all(|s| s.class != Class::UserAnon && s.class != Class::PageCache));
        assert_eq!(r.stacks.len(), all.stacks.len() - 1);
        assert_eq!(r.totals.bytes, all.totals.bytes - 3 * PAGE);
    }

    #[test]
    fn slab_cache_names_and_requested_bytes() {
        let (mut raw, sym, session) = mixed_raw();
        // Stack 12's cache was not recorded (unreadable, or large kmalloc).
        raw.cache_names.remove(&12);
        let r = build_report(&raw, session.clone(), &sym, &opts(0, 0));
        let s11 = find_k(&r, Slab, Some(11));
        assert_eq!(s11.cache.as_deref(), Some("skbuff_head_cache"));
        assert_eq!(s11.bytes_req, Some(3 * 232));
        // kmalloc whose cache was not recorded (unreadable, or a large kmalloc): no name is
        // made up from the object sizes.
        let s12 = find_k(&r, Slab, Some(12));
        assert_eq!(s12.cache, None);
        assert_eq!(s12.bytes, 1280);
        assert_eq!(s12.bytes_req, Some(800));
        // The "stack unavailable" bucket mixes caches: no name.
        let none = find_k(&r, Slab, None);
        assert_eq!(none.cache, None);
        assert_eq!(none.caller, STACK_UNAVAILABLE);
        assert_eq!(none.bytes_req, Some(50));
        // Other kinds have neither.
        for s in r.stacks.iter().filter(|s| s.kind != Slab) {
            assert_eq!((&s.cache, s.bytes_req), (&None, None), "{:?}", s.stack_id);
        }

        // --min-age: the young 256-byte object no longer counts; the cache name does not
        // change with it.
        let r = build_report(&raw, session.clone(), &sym, &opts(60 * SEC, 0));
        let s12 = find_k(&r, Slab, Some(12));
        assert_eq!((s12.bytes, s12.allocations), (1024, 2));
        assert_eq!(s12.bytes_req, Some(600));
        assert_eq!(s12.cache, None);
        assert_eq!(s12.oldest_age_secs, Some(900.0));
        let s11 = find_k(&r, Slab, Some(11));
        assert_eq!((s11.bytes, s11.bytes_req), (0, Some(0)));
        assert_eq!(s11.cache.as_deref(), Some("skbuff_head_cache"));

        // Records missing (table full): the requested share is scaled to the aggregate.
        let mut raw2 = raw.clone();
        raw2.aggs.push((Slab, 12, agg(1280, 2, 0, 0))); // summed: 2560 bytes outstanding
        let r = build_report(&raw2, session.clone(), &sym, &opts(0, 0));
        let s12 = find_k(&r, Slab, Some(12));
        assert_eq!((s12.bytes, s12.bytes_req), (2560, Some(1600)));

        // No requested size in the records (event without bytes_req): unknown, not 0.
        let mut raw3 = raw.clone();
        for (_, o) in &mut raw3.objects {
            o.bytes_req = 0;
        }
        let r = build_report(&raw3, session.clone(), &sym, &opts(0, 0));
        assert_eq!(find_k(&r, Slab, Some(12)).bytes_req, None);

        // A recorded name stays when nothing is outstanding any more; none is made up.
        let mut raw4 = raw.clone();
        raw4.objects.retain(|(_, o)| o.stack_id != 11);
        raw4.cache_names.insert(12, "kmalloc-cg-512".into());
        let r = build_report(&raw4, session, &sym, &opts(0, 0));
        assert_eq!(
            find_k(&r, Slab, Some(12)).cache.as_deref(),
            Some("kmalloc-cg-512")
        );
        assert_eq!(
            find_k(&r, Slab, Some(11)).cache.as_deref(),
            Some("skbuff_head_cache")
        );
    }

    #[test]
    fn same_slot_in_two_kinds_are_two_stacks() {
        let mut raw = raw_base();
        raw.aggs = vec![
            (Page, NONE_ID, agg(PAGE, 1, PAGE, 1)),
            (Slab, NONE_ID, agg(PAGE, 8, PAGE, 8)),
            (Slab, 5, agg(PAGE, 1, PAGE, 1)),
            (Page, 5, agg(PAGE, 1, PAGE, 1)),
        ];
        let sym = FakeSymbols::new(&[]);
        let r = build_report(&raw, SessionInfo::default(), &sym, &opts(0, 0));
        let got: Vec<(Kind, Option<u32>)> = r.stacks.iter().map(|s| (s.kind, s.stack_id)).collect();
        // Equal bytes and allocated bytes: by kind, then slot (unavailable last).
        assert_eq!(
            got,
            [(Page, Some(5)), (Page, None), (Slab, Some(5)), (Slab, None)]
        );
        assert_eq!(r.totals.bytes, 4 * PAGE);
        assert_eq!(r.totals.allocations, 11);
        assert_eq!(r.callers.len(), 2); // [unknown] and [stack unavailable]
    }

    #[test]
    fn page_class_uses_the_most_common_flags_whatever_their_age() {
        let mut raw = raw_base();
        let syms = add_stack(&mut raw, 3, &["__alloc_pages_noprof", "mystery_fn"]);
        let sym = FakeSymbols::new(&syms);
        let movable = |ts| PageRecord {
            gfp_flags: 0x100cca,
            migratetype: 1,
            ..rec(3, ts, 1, 1, "a", 0, 1)
        };
        let kernel = |ts| PageRecord {
            gfp_flags: 0xcc0,
            migratetype: 0,
            ..rec(3, ts, 1, 1, "a", 0, 1)
        };
        raw.aggs = vec![(Page, 3, agg(3 * PAGE, 3, 3 * PAGE, 3))];
        raw.records = vec![
            (1, movable(999 * SEC)),
            (2, movable(999 * SEC)),
            (3, kernel(10 * SEC)),
        ];
        let r = build_report(&raw, SessionInfo::default(), &sym, &opts(0, 0));
        assert_eq!(find(&r, Some(3)).class, Class::UserAnon);
        // Only the kernel record is old enough to count, but the class stays.
        let r = build_report(&raw, SessionInfo::default(), &sym, &opts(60 * SEC, 0));
        assert_eq!(find(&r, Some(3)).bytes, PAGE);
        assert_eq!(find(&r, Some(3)).class, Class::UserAnon);
        raw.records.push((4, kernel(10 * SEC)));
        raw.records.push((5, kernel(10 * SEC)));
        let r = build_report(&raw, SessionInfo::default(), &sym, &opts(0, 0));
        assert_eq!(find(&r, Some(3)).class, Class::OtherKernel);
    }

    #[test]
    fn inlined_functions_take_part_in_classification() {
        let mut raw = raw_base();
        let syms = add_stack(&mut raw, 4, &["__alloc_pages_noprof", "copy_process"]);
        raw.aggs = vec![(Page, 4, agg(4 * PAGE, 1, 4 * PAGE, 1))];
        let r = build_report(
            &raw,
            SessionInfo::default(),
            &FakeSymbols::new(&syms),
            &opts(0, 0),
        );
        assert_eq!(find(&r, Some(4)).class, Class::KernelStack);
        let mut s = find(&r, Some(4)).clone();
        // A page-cache stack whose write_begin was inlined: frame_names lists it, the detail
        // sees it.
        s.class = Class::PageCache;
        s.frames[1].symbol = Some("filemap_read".into());
        assert_eq!(stack_class_detail(&s), None);
        s.frames[1].symbol = Some("vfs_write".into());
        s.frames[1].inlined = vec!["generic_perform_write".into(), "ext4_write_begin".into()];
        assert_eq!(
            frame_names(&s.frames),
            [
                "__alloc_pages_noprof",
                "ext4_write_begin",
                "generic_perform_write",
                "vfs_write"
            ]
        );
        assert_eq!(stack_class_detail(&s), Some("dirty"));
    }

    #[test]
    fn objects_of_unknown_kinds_are_ignored() {
        let mut raw = raw_base();
        raw.objects = vec![
            obj(Page, 1, 1, 0, 4096, 0, "a"),
            (
                ObjKey {
                    addr: 2,
                    kind: 9,
                    _pad: 0,
                },
                ObjRecord::default(),
            ),
        ];
        let r = build_report(
            &raw,
            SessionInfo::default(),
            &FakeSymbols::new(&[]),
            &opts(1, 0),
        );
        assert!(r.stacks.is_empty(), "{:?}", r.stacks);
    }

    #[test]
    fn interrupt_context_from_the_stack() {
        let ctx = |names: &[&str]| context_from_frames(&frames_of(names));
        assert_eq!(
            ctx(&["__alloc_pages_noprof", "tcp_sendmsg", "__sys_sendto"]),
            ExecContext::Task
        );
        // Softirq on irq exit: the softirq marker is met before the sysvec entry.
        assert_eq!(
            ctx(&[
                "__alloc_pages_noprof",
                "napi_alloc_skb",
                "net_rx_action",
                "handle_softirqs",
                "irq_exit_rcu",
                "sysvec_apic_timer_interrupt",
                "asm_sysvec_apic_timer_interrupt"
            ]),
            ExecContext::Softirq
        );
        assert_eq!(
            ctx(&["kmalloc", "__do_softirq", "do_softirq"]),
            ExecContext::Softirq
        );
        assert_eq!(
            ctx(&[
                "kmalloc",
                "hrtimer_interrupt",
                "__sysvec_apic_timer_interrupt",
                "sysvec_apic_timer_interrupt"
            ]),
            ExecContext::Hardirq
        );
        assert_eq!(
            ctx(&[
                "kmalloc",
                "vp_interrupt",
                "__handle_irq_event_percpu",
                "handle_irq_event"
            ]),
            ExecContext::Hardirq
        );
        assert_eq!(
            ctx(&[
                "kmalloc",
                "perf_event_nmi_handler",
                "nmi_handle",
                "default_do_nmi",
                "exc_nmi"
            ]),
            ExecContext::Nmi
        );
        // Compiler suffixes are ignored; unresolved frames are skipped.
        assert_eq!(
            context_from_frames(&[
                Frame::unresolved(1),
                frames_of(&["handle_softirqs.cold"])[0].clone()
            ]),
            ExecContext::Softirq
        );
    }

    #[test]
    fn interrupt_owners_fold_and_summaries_add_up() {
        let mut raw = raw_base();
        let mut syms = add_stack(
            &mut raw,
            1,
            &[
                "__alloc_pages_noprof",
                "napi_alloc_skb",
                "net_rx_action",
                "handle_softirqs",
            ],
        );
        syms.extend(add_stack(
            &mut raw,
            2,
            &["__alloc_pages_noprof", "tcp_sendmsg"],
        ));
        raw.aggs.push((Page, 1, agg(3 * PAGE, 3, 3 * PAGE, 3)));
        raw.aggs.push((Page, 2, agg(3 * PAGE, 3, 3 * PAGE, 3)));
        let mut unknown = |pfn: u64, stack: u32, tgid: u32, cg: u64| {
            let mut r = rec(stack, SEC, tgid, tgid, "w", 0, 1);
            r.context = memtrace_common::context::UNKNOWN;
            r.cgroup_id = cg;
            raw.records.push((pfn, r));
        };
        // Softirq stack: three different interrupted tasks, one owner.
        unknown(1, 1, 10, 100);
        unknown(2, 1, 20, 200);
        unknown(3, 1, 30, 300);
        // Task stack: two processes in two cgroups.
        unknown(4, 2, 10, 100);
        unknown(5, 2, 10, 100);
        unknown(6, 2, 40, 400);
        let syms = FakeSymbols::new(&syms);
        let r = build_report(&raw, SessionInfo::default(), &syms, &opts(0, 5));
        let soft = find(&r, Some(1));
        assert_eq!(soft.owners.len(), 1, "{:?}", soft.owners);
        assert_eq!(soft.owners[0].context, ExecContext::Softirq);
        assert_eq!((soft.owners[0].tgid, soft.owners[0].cgroup_id), (0, 0));
        assert_eq!(soft.owners[0].comm, "[softirq]");
        assert_eq!(soft.owners[0].bytes, 3 * PAGE);
        let task = find(&r, Some(2));
        assert_eq!(task.owners[0].tgid, 10);
        assert_eq!(task.owners[0].bytes, 2 * PAGE);
        assert_eq!(task.owners[0].cgroup_id, 100);

        let o = &r.owners;
        assert_eq!(o.attributed_bytes, 6 * PAGE);
        let soft_row = o
            .processes
            .iter()
            .find(|p| p.context == ExecContext::Softirq)
            .unwrap();
        assert_eq!(soft_row.bytes, 3 * PAGE);
        assert_eq!(
            o.processes.iter().find(|p| p.tgid == 10).unwrap().bytes,
            2 * PAGE
        );
        // Interrupt contexts belong to no cgroup.
        assert_eq!(o.cgroups.iter().map(|c| c.bytes).sum::<u64>(), 3 * PAGE);
        assert_eq!(o.cgroups[0].cgroup_id, 100);
    }
}
