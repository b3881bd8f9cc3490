//! Turns a [`RawSession`] into a [`Report`]: per-stack outstanding memory, owners, orders,
//! ages, symbolized frames, the calling function of each stack and a per-caller summary.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use memtrace_common::{Counter, PageRecord, StackAgg};

use super::{
    BuildOptions, CallerSummary, Frame, Owner, RawSession, Report, SessionInfo, StackReport,
    Symbolize, Totals,
};

/// Owners listed per stack when `BuildOptions::max_owners` is 0.
pub const DEFAULT_MAX_OWNERS: usize = 5;

/// Caller of the "stack unavailable" bucket.
pub const STACK_UNAVAILABLE: &str = "[stack unavailable]";

/// Caller of a stack none of whose frames could be resolved.
pub const UNKNOWN_CALLER: &str = "[unknown]";

/// How a symbol name is matched against an entry of [`ALLOCATOR_INTERNALS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolPattern {
    Exact(&'static str),
    Prefix(&'static str),
    Suffix(&'static str),
}

impl SymbolPattern {
    pub fn matches(self, name: &str) -> bool {
        match self {
            SymbolPattern::Exact(p) => name == p,
            SymbolPattern::Prefix(p) => name.starts_with(p),
            SymbolPattern::Suffix(p) => name.ends_with(p),
        }
    }
}

/// Functions that are part of the page allocator itself (or of the tracing/BPF machinery that
/// sits on top of a stack captured from a tracepoint). The "caller" of a stack is its first
/// frame, from the innermost, that matches none of these.
///
/// Names are matched after stripping compiler suffixes such as `.isra.0`, `.constprop.0`,
/// `.part.0` or `.cold` (see [`base_symbol`]).
pub const ALLOCATOR_INTERNALS: &[SymbolPattern] = &[
    // Page allocator entry points and their variants.
    SymbolPattern::Prefix("__alloc_pages"), // __alloc_pages, __alloc_pages_noprof, _bulk, ...
    SymbolPattern::Prefix("alloc_pages"),   // alloc_pages, alloc_pages_mpol*, alloc_pages_bulk*
    SymbolPattern::Prefix("__folio_alloc"),
    SymbolPattern::Prefix("folio_alloc"),
    SymbolPattern::Prefix("vma_alloc_folio"),
    SymbolPattern::Prefix("__get_free_pages"),
    SymbolPattern::Prefix("get_zeroed_page"),
    SymbolPattern::Prefix("alloc_frozen_pages"),
    SymbolPattern::Prefix("__alloc_frozen_pages"),
    // Page allocator internals.
    SymbolPattern::Exact("get_page_from_freelist"),
    SymbolPattern::Exact("post_alloc_hook"),
    SymbolPattern::Exact("prep_new_page"),
    SymbolPattern::Prefix("rmqueue"),
    SymbolPattern::Prefix("__rmqueue"),
    // Memory-allocation-profiling wrappers (alloc_pages_noprof, __kmalloc_large_node_noprof...).
    SymbolPattern::Suffix("_noprof"),
    // Tracepoint and BPF machinery above the allocation.
    SymbolPattern::Prefix("bpf_"),
    SymbolPattern::Prefix("__bpf_trace_"),
    SymbolPattern::Prefix("__bpf_prog_"),
    SymbolPattern::Prefix("perf_trace_"),
    SymbolPattern::Exact("perf_trace_run_bpf_submit"),
    SymbolPattern::Prefix("trace_event_raw_event_"),
    SymbolPattern::Prefix("__traceiter_"),
    SymbolPattern::Exact("trace_call_bpf"),
];

/// `name` without compiler-generated suffixes (`foo.isra.0` → `foo`, `foo.cold` → `foo`).
pub fn base_symbol(name: &str) -> &str {
    match name.find('.') {
        Some(0) | None => name,
        Some(i) => &name[..i],
    }
}

/// Whether `symbol` is a page-allocator internal (see [`ALLOCATOR_INTERNALS`]).
pub fn is_allocator_internal(symbol: &str) -> bool {
    let base = base_symbol(symbol);
    ALLOCATOR_INTERNALS.iter().any(|p| p.matches(base))
}

/// The calling function of a stack: the first resolved frame (innermost first) that is not an
/// allocator internal; else the innermost resolved symbol; else [`UNKNOWN_CALLER`].
pub fn select_caller(frames: &[Frame]) -> String {
    let resolved = || {
        frames
            .iter()
            .filter_map(|f| f.symbol.as_deref())
            .filter(|s| !s.is_empty())
    };
    resolved()
        .find(|s| !is_allocator_internal(s))
        .or_else(|| resolved().next())
        .unwrap_or(UNKNOWN_CALLER)
        .to_string()
}

/// Reads a two's-complement aggregate that may transiently be "negative": clamps it to 0.
fn clamp_agg(v: u64) -> u64 {
    if v > i64::MAX as u64 {
        0
    } else {
        v
    }
}

/// `comm` up to its first NUL.
fn comm_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// What the walk over `OUTSTANDING` found for one stack slot.
#[derive(Default)]
struct WalkAcc {
    bytes: u64,
    count: u64,
    orders: BTreeSet<u8>,
    oldest_age_ns: Option<u64>,
    /// (tgid, pid, comm) → (bytes, allocations)
    owners: HashMap<(u32, u32, String), (u64, u64)>,
}

impl WalkAcc {
    fn add(&mut self, rec: &PageRecord, bytes: u64, age_ns: u64) {
        self.bytes = self.bytes.saturating_add(bytes);
        self.count = self.count.saturating_add(1);
        self.orders.insert(rec.order);
        self.oldest_age_ns = Some(self.oldest_age_ns.map_or(age_ns, |a| a.max(age_ns)));
        let owner = self
            .owners
            .entry((rec.tgid, rec.pid, comm_string(&rec.comm)))
            .or_default();
        owner.0 = owner.0.saturating_add(bytes);
        owner.1 = owner.1.saturating_add(1);
    }

    fn top_owners(&self, max: usize) -> Vec<Owner> {
        let mut owners: Vec<Owner> = self
            .owners
            .iter()
            .map(|((tgid, pid, comm), (bytes, allocations))| Owner {
                tgid: *tgid,
                pid: *pid,
                comm: comm.clone(),
                bytes: *bytes,
                allocations: *allocations,
            })
            .collect();
        owners.sort_by(|a, b| {
            b.bytes
                .cmp(&a.bytes)
                .then(b.allocations.cmp(&a.allocations))
                .then(a.tgid.cmp(&b.tgid))
                .then(a.pid.cmp(&b.pid))
                .then(a.comm.cmp(&b.comm))
        });
        owners.truncate(max);
        owners
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

    // Slot → aggregate (summed, should a slot ever appear twice).
    let mut aggs: BTreeMap<u32, StackAgg> = BTreeMap::new();
    for (slot, agg) in &raw.aggs {
        let e = aggs.entry(*slot).or_default();
        e.outstanding_bytes = e.outstanding_bytes.wrapping_add(agg.outstanding_bytes);
        e.outstanding_count = e.outstanding_count.wrapping_add(agg.outstanding_count);
        e.allocated_bytes = e.allocated_bytes.saturating_add(agg.allocated_bytes);
        e.allocated_count = e.allocated_count.saturating_add(agg.allocated_count);
    }

    // Walk the outstanding records. The key (head pfn, maybe DETACHED_KEY_BIT) does not matter
    // here: every record is a distinct allocation.
    let mut walk: BTreeMap<u32, WalkAcc> = BTreeMap::new();
    for (_key, rec) in &raw.records {
        if rec.remaining_pages == 0 {
            continue;
        }
        let age_ns = raw.now_ns.saturating_sub(rec.ts_ns);
        if opts.min_age_ns > 0 && age_ns < opts.min_age_ns {
            continue;
        }
        let bytes = u64::from(rec.remaining_pages).saturating_mul(raw.page_size);
        walk.entry(rec.stack_id)
            .or_default()
            .add(rec, bytes, age_ns);
    }

    let max_owners = if opts.max_owners == 0 {
        DEFAULT_MAX_OWNERS
    } else {
        opts.max_owners
    };

    let slots: BTreeSet<u32> = aggs.keys().chain(walk.keys()).copied().collect();
    let empty_walk = WalkAcc::default();
    let mut stacks: Vec<StackReport> = Vec::new();
    for slot in slots {
        let agg = aggs.get(&slot);
        let w = walk.get(&slot).unwrap_or(&empty_walk);
        let (bytes, allocations) = match agg {
            Some(a) if opts.min_age_ns == 0 => (
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
        stacks.push(StackReport {
            stack_id: (slot != raw.stack_none_id).then_some(slot),
            bytes,
            allocations,
            allocated_bytes,
            allocated_count,
            orders: w.orders.iter().copied().collect(),
            oldest_age_secs: w.oldest_age_ns.map(|ns| ns as f64 / 1e9),
            caller: String::new(),
            owners: w.top_owners(max_owners),
            frames: Vec::new(),
        });
    }

    symbolize_stacks(&mut stacks, raw, symbols);
    for s in &mut stacks {
        s.caller = match s.stack_id {
            None => STACK_UNAVAILABLE.to_string(),
            Some(_) => select_caller(&s.frames),
        };
    }

    stacks.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(b.allocated_bytes.cmp(&a.allocated_bytes))
            .then(sort_id(a.stack_id).cmp(&sort_id(b.stack_id)))
    });

    let callers = summarize_callers(&stacks);
    let totals = stacks.iter().fold(Totals::default(), |t, s| Totals {
        bytes: t.bytes.saturating_add(s.bytes),
        allocations: t.allocations.saturating_add(s.allocations),
        allocated_bytes: t.allocated_bytes.saturating_add(s.allocated_bytes),
        allocated_count: t.allocated_count.saturating_add(s.allocated_count),
    });

    Report {
        session,
        counters,
        failure_counters,
        programs: raw.programs.clone(),
        totals,
        callers,
        stacks,
    }
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
            s.frames = ips
                .iter()
                .map(|ip| {
                    by_addr
                        .get(ip)
                        .cloned()
                        .unwrap_or_else(|| Frame::unresolved(*ip))
                })
                .collect();
        }
    }
}

fn summarize_callers(stacks: &[StackReport]) -> Vec<CallerSummary> {
    let mut by_caller: HashMap<&str, CallerSummary> = HashMap::new();
    for s in stacks {
        let c = by_caller
            .entry(s.caller.as_str())
            .or_insert_with(|| CallerSummary {
                function: s.caller.clone(),
                ..Default::default()
            });
        c.bytes = c.bytes.saturating_add(s.bytes);
        c.allocations = c.allocations.saturating_add(s.allocations);
        c.allocated_bytes = c.allocated_bytes.saturating_add(s.allocated_bytes);
        c.stacks += 1;
    }
    let mut callers: Vec<CallerSummary> = by_caller.into_values().collect();
    callers.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(b.allocated_bytes.cmp(&a.allocated_bytes))
            .then(a.function.cmp(&b.function))
    });
    callers
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;

    use memtrace_common::DETACHED_KEY_BIT;

    use super::*;

    pub(crate) const PAGE: u64 = 4096;
    pub(crate) const NONE_ID: u32 = 9999;
    const SEC: u64 = 1_000_000_000;

    /// Resolves addresses from a table; records every call.
    #[derive(Default)]
    pub(crate) struct FakeSymbols {
        pub names: HashMap<u64, &'static str>,
        pub calls: RefCell<Vec<Vec<u64>>>,
    }

    impl FakeSymbols {
        pub(crate) fn new(names: &[(u64, &'static str)]) -> Self {
            FakeSymbols {
                names: names.iter().copied().collect(),
                calls: RefCell::default(),
            }
        }
    }

    impl Symbolize for FakeSymbols {
        fn symbolize(&self, addresses: &[u64]) -> Vec<Frame> {
            self.calls.borrow_mut().push(addresses.to_vec());
            addresses
                .iter()
                .map(|&a| match self.names.get(&a) {
                    Some(n) => Frame {
                        address: a,
                        symbol: Some((*n).to_string()),
                        offset: Some(a & 0xff),
                        ..Default::default()
                    },
                    None => Frame::unresolved(a),
                })
                .collect()
        }
    }

    pub(crate) fn agg(
        out_bytes: u64,
        out_count: u64,
        alloc_bytes: u64,
        alloc_count: u64,
    ) -> StackAgg {
        StackAgg {
            outstanding_bytes: out_bytes,
            outstanding_count: out_count,
            allocated_bytes: alloc_bytes,
            allocated_count: alloc_count,
        }
    }

    pub(crate) fn rec(
        stack_id: u32,
        ts_ns: u64,
        tgid: u32,
        pid: u32,
        comm: &str,
        order: u8,
        remaining_pages: u32,
    ) -> PageRecord {
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm.as_bytes());
        PageRecord {
            ts_ns,
            stack_id,
            tgid,
            pid,
            order,
            remaining_pages,
            comm: c,
            ..Default::default()
        }
    }

    fn raw_base() -> RawSession {
        RawSession {
            page_size: PAGE,
            counters: vec![0; Counter::COUNT as usize],
            stack_none_id: NONE_ID,
            now_ns: 1000 * SEC,
            ..Default::default()
        }
    }

    fn opts(min_age_ns: u64, max_owners: usize) -> BuildOptions {
        BuildOptions {
            min_age_ns,
            max_owners,
        }
    }

    fn find(report: &Report, id: Option<u32>) -> &StackReport {
        report
            .stacks
            .iter()
            .find(|s| s.stack_id == id)
            .expect("stack in report")
    }

    const TCP_STACK: &[(u64, &str)] = &[
        (0xffff_ffff_8100_0010, "__alloc_pages_noprof"),
        (0xffff_ffff_8100_0020, "alloc_pages_mpol"),
        (0xffff_ffff_8100_0030, "alloc_pages_noprof"),
        (0xffff_ffff_8100_0040, "skb_page_frag_refill"),
        (0xffff_ffff_8100_0050, "sk_page_frag_refill"),
        (0xffff_ffff_8100_0060, "tcp_sendmsg_locked"),
        (0xffff_ffff_8100_0070, "tcp_sendmsg"),
        (0xffff_ffff_8100_0080, "sock_sendmsg"),
    ];

    const ANON_STACK: &[(u64, &str)] = &[
        (0xffff_ffff_8200_0010, "get_page_from_freelist"),
        (0xffff_ffff_8200_0020, "__alloc_frozen_pages_noprof"),
        (0xffff_ffff_8200_0030, "alloc_pages_mpol"),
        (0xffff_ffff_8200_0040, "folio_alloc_mpol_noprof"),
        (0xffff_ffff_8200_0050, "vma_alloc_folio_noprof"),
        (0xffff_ffff_8200_0060, "do_anonymous_page"),
        (0xffff_ffff_8200_0070, "__handle_mm_fault"),
    ];

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
            "UNRESOLVED",
            "__kmalloc_large_node.constprop.0",
        ]);
        frames[16].symbol = None;
        assert_eq!(select_caller(&frames), "__kmalloc_large_node.constprop.0");
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
        ] {
            assert!(is_allocator_internal(s), "{s} should be internal");
        }
        for s in [
            "skb_page_frag_refill",
            "do_anonymous_page",
            "tcp_sendmsg_locked",
            "page_pool_alloc_pages",
            "kmalloc_large",
            "get_page_from_freelist_wrapper_in_driver_x", // exact rule, not prefix
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
        raw.aggs = vec![(1, agg(10 * PAGE, 3, 100 * PAGE, 50))];
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
        raw.aggs = vec![(1, agg(10 * PAGE, 3, 100 * PAGE, 50))];
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
        raw.aggs = vec![(1, agg((-4096i64) as u64, (-1i64) as u64, 8 * PAGE, 2))];
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
        raw.aggs = vec![(1, agg(12 * PAGE, 2, 12 * PAGE, 2))];
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
            (NONE_ID, agg(2 * PAGE, 2, 5 * PAGE, 5)),
            (1, agg(2 * PAGE, 1, 2 * PAGE, 1)),
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
        raw.aggs = vec![(1, agg(0, 0, PAGE, 1))];
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
            (1, agg(30 * PAGE, 3, 30 * PAGE, 3)),
            (2, agg(20 * PAGE, 20, 20 * PAGE, 20)),
            (3, agg(0, 0, 50 * PAGE, 7)),
            (5, agg(PAGE, 1, PAGE, 1)), // no stack in the map
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
        raw.programs = vec![super::super::ProgramStats {
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
}
