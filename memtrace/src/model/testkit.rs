//! Builders of raw sessions and reports shared by the tests of the model, the renderers and
//! the schema.

#![cfg(test)]

use std::cell::RefCell;
use std::collections::HashMap;

use memtrace_common::Kind::{Page, Percpu, Slab, Vmalloc};
use memtrace_common::{Counter, Kind, ObjKey, ObjRecord, PageRecord, StackAgg};

use super::build::build_report;
use super::{
    BuildOptions, Class, Frame, KindStatus, ProgramStats, RawSession, Report, SessionInfo,
    StackReport, Symbolize,
};

pub(crate) const SEC: u64 = 1_000_000_000;
pub(crate) const PAGE: u64 = 4096;

pub(crate) const NONE_ID: u32 = 9999;

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

pub(crate) fn agg(out_bytes: u64, out_count: u64, alloc_bytes: u64, alloc_count: u64) -> StackAgg {
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

pub(crate) fn raw_base() -> RawSession {
    RawSession {
        page_size: PAGE,
        counters: vec![0; Counter::COUNT as usize],
        stack_none_id: NONE_ID,
        now_ns: 1000 * SEC,
        ..Default::default()
    }
}

pub(crate) fn obj(
    kind: Kind,
    addr: u64,
    stack_id: u32,
    ts_ns: u64,
    bytes: u64,
    bytes_req: u64,
    comm: &str,
) -> (ObjKey, ObjRecord) {
    let mut c = [0u8; 16];
    c[..comm.len()].copy_from_slice(comm.as_bytes());
    (
        ObjKey {
            addr,
            kind: kind as u32,
            _pad: 0,
        },
        ObjRecord {
            ts_ns,
            bytes,
            bytes_req,
            stack_id,
            tgid: 1,
            pid: 1,
            gfp_flags: 0xcc0,
            comm: c,
            ..Default::default()
        },
    )
}

/// Puts a stack of these function names (innermost first) under `id`, with made-up
/// addresses, and returns the symbol table entries for them.
pub(crate) fn add_stack(
    raw: &mut RawSession,
    id: u32,
    names: &[&'static str],
) -> Vec<(u64, &'static str)> {
    let syms: Vec<(u64, &'static str)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                0xffff_ffff_9000_0000 + u64::from(id) * 0x1000 + i as u64 * 0x10,
                *n,
            )
        })
        .collect();
    raw.stacks
        .insert(id, syms.iter().map(|(a, _)| *a).collect());
    syms
}

/// A page stack with nothing in it (for tests elsewhere to fill).
pub(crate) fn empty_stack() -> StackReport {
    StackReport {
        kind: Page,
        class: Class::OtherKernel,
        cache: None,
        cache_merged: Vec::new(),
        bytes_req: None,
        stack_id: Some(1),
        bytes: 0,
        allocations: 0,
        allocated_bytes: 0,
        allocated_count: 0,
        orders: Vec::new(),
        oldest_age_secs: None,
        caller: "f".into(),
        owners: Vec::new(),
        frames: Vec::new(),
        growth: None,
    }
}

pub(crate) fn kind_status(kind: Kind, traced: bool) -> KindStatus {
    KindStatus {
        kind: kind.name().to_string(),
        traced,
        hooks: Vec::new(),
        note: None,
    }
}

pub(crate) const SKB_SLAB_PAGE: &[&str] = &[
    "__alloc_frozen_pages_noprof",
    "alloc_pages_mpol",
    "allocate_slab",
    "___slab_alloc",
    "kmem_cache_alloc_node_noprof",
    "kmalloc_reserve",
    "__alloc_skb",
    "tcp_stream_alloc_skb",
];

/// Every kind at once: page stacks 1 (TCP frags, network), 2 (anonymous), 10 (slab
/// pages), 14 (vmalloc pages), 16 (percpu chunk pages); slab stacks 11 (skbuff_head_cache)
/// and 12 (kmalloc, no cache name) and the slab "stack unavailable" bucket; vmalloc stack 13
/// (a BPF map, the same allocation as stack 14's pages). Page, slab and vmalloc were
/// traced, percpu was not.
pub(crate) fn mixed_raw() -> (RawSession, FakeSymbols, SessionInfo) {
    let mut raw = raw_base();
    let mut syms: Vec<(u64, &'static str)> = Vec::new();
    let tcp: Vec<&'static str> = TCP_STACK.iter().map(|(_, n)| *n).collect();
    let anon: Vec<&'static str> = ANON_STACK.iter().map(|(_, n)| *n).collect();
    syms.extend(add_stack(&mut raw, 1, &tcp));
    syms.extend(add_stack(&mut raw, 2, &anon));
    syms.extend(add_stack(&mut raw, 10, SKB_SLAB_PAGE));
    syms.extend(add_stack(
        &mut raw,
        11,
        &[
            "kmem_cache_alloc_node_noprof",
            "__alloc_skb",
            "tcp_stream_alloc_skb",
            "tcp_sendmsg_locked",
        ],
    ));
    syms.extend(add_stack(
        &mut raw,
        12,
        &[
            "__kmalloc_cache_noprof",
            "kernfs_fop_open",
            "do_dentry_open",
        ],
    ));
    syms.extend(add_stack(
        &mut raw,
        13,
        &[
            "alloc_vmap_area",
            "__get_vm_area_node",
            "__vmalloc_node_range_noprof",
            "__bpf_map_area_alloc",
            "array_map_alloc",
        ],
    ));
    syms.extend(add_stack(
        &mut raw,
        14,
        &[
            "__alloc_pages_noprof",
            "alloc_pages_bulk_noprof",
            "__vmalloc_node_range_noprof",
            "__bpf_map_area_alloc",
            "array_map_alloc",
        ],
    ));
    syms.extend(add_stack(
        &mut raw,
        16,
        &[
            "__alloc_pages_noprof",
            "pcpu_populate_chunk",
            "pcpu_balance_populated",
        ],
    ));
    raw.cache_names.insert(11, "skbuff_head_cache".to_string());
    raw.cache_names.insert(12, "kmalloc-512".to_string());
    raw.aggs = vec![
        (Page, 1, agg(8 * PAGE, 1, 16 * PAGE, 2)),
        (Page, 2, agg(3 * PAGE, 3, 5 * PAGE, 5)),
        (Page, 10, agg(4 * PAGE, 2, 4 * PAGE, 2)),
        (Slab, 11, agg(768, 3, 1024, 4)),
        (Slab, 12, agg(1280, 3, 1280, 3)),
        (Vmalloc, 13, agg(17 * PAGE, 1, 17 * PAGE, 1)),
        (Page, 14, agg(16 * PAGE, 16, 16 * PAGE, 16)),
        (Page, 16, agg(2 * PAGE, 2, 2 * PAGE, 2)),
        (Slab, NONE_ID, agg(64, 1, 64, 1)),
    ];
    raw.records = vec![
        (1, rec(1, 990 * SEC, 10, 11, "nginx", 3, 8)),
        (2, rec(2, 900 * SEC, 20, 20, "bash", 0, 1)),
        (3, rec(2, 900 * SEC, 20, 20, "bash", 0, 1)),
        (4, rec(2, 900 * SEC, 20, 20, "bash", 0, 1)),
        (5, rec(10, 500 * SEC, 10, 11, "nginx", 1, 2)),
        (6, rec(10, 500 * SEC, 10, 11, "nginx", 1, 2)),
    ];
    raw.objects = vec![
        obj(Slab, 0xa000, 11, 990 * SEC, 256, 232, "nginx"),
        obj(Slab, 0xa100, 11, 990 * SEC, 256, 232, "nginx"),
        obj(Slab, 0xa200, 11, 990 * SEC, 256, 232, "nginx"),
        obj(Slab, 0xb000, 12, 100 * SEC, 512, 300, "cat"),
        obj(Slab, 0xb200, 12, 100 * SEC, 512, 300, "cat"),
        obj(Slab, 0xb400, 12, 990 * SEC, 256, 200, "cat"),
        obj(Vmalloc, 0xc000, 13, 800 * SEC, 17 * PAGE, 0, "bpftool"),
        obj(Slab, 0xd000, NONE_ID, 990 * SEC, 64, 50, "x"),
    ];
    let session = SessionInfo {
        page_size: PAGE,
        kinds: vec![
            kind_status(Page, true),
            kind_status(Slab, true),
            kind_status(Percpu, false),
            kind_status(Vmalloc, true),
        ],
        ..Default::default()
    };
    (raw, FakeSymbols::new(&syms), session)
}

/// A report with three stacks holding memory (TCP frags, anonymous pages, unavailable),
/// one stack that only churned, and a counter/program set given by the caller.
pub(crate) fn sample_report(counters: &[(Counter, u64)], misses: u64) -> Report {
    let syms: &[(u64, &'static str)] = &[
        (0xffff_ffff_8100_0010, "__alloc_pages_noprof"),
        (0xffff_ffff_8100_0020, "alloc_pages_mpol"),
        (0xffff_ffff_8100_0030, "alloc_pages_noprof"),
        (0xffff_ffff_8100_0040, "skb_page_frag_refill"),
        (0xffff_ffff_8100_0050, "sk_page_frag_refill"),
        (0xffff_ffff_8100_0060, "tcp_sendmsg_locked"),
        (0xffff_ffff_8100_0070, "tcp_sendmsg"),
        (0xffff_ffff_8200_0060, "do_anonymous_page"),
        (0xffff_ffff_8200_0070, "__handle_mm_fault"),
        (0xffff_ffff_8300_0010, "my func;with odd chars"),
    ];
    let mut raw = RawSession {
        page_size: PAGE,
        counters: vec![0; Counter::COUNT as usize],
        stack_none_id: NONE_ID,
        now_ns: 1_000_000_000_000,
        programs: vec![
            ProgramStats {
                name: "mm_page_alloc".into(),
                ..Default::default()
            },
            ProgramStats {
                name: "mm_page_free".into(),
                recursion_misses: misses,
                run_count: 10,
                run_time_ns: 1000,
            },
        ],
        ..Default::default()
    };
    for (c, v) in counters {
        raw.counters[*c as usize] = *v;
    }
    raw.stacks = HashMap::from([
        (
            1,
            vec![
                0xffff_ffff_8100_0010,
                0xffff_ffff_8100_0020,
                0xffff_ffff_8100_0030,
                0xffff_ffff_8100_0040,
                0xffff_ffff_8100_0050,
                0xffff_ffff_8100_0060,
                0xffff_ffff_8100_0070,
            ],
        ),
        (
            2,
            vec![
                0xffff_ffff_8100_0010,
                0xffff_ffff_8200_0060,
                0xffff_ffff_8200_0070,
                0xffff_ffff_dead_beef,
            ],
        ),
        (3, vec![0xffff_ffff_8100_0010, 0xffff_ffff_8300_0010]),
    ]);
    let agg3: StackAgg = agg(0, 0, 1 << 30, 262_144);
    raw.aggs = vec![
        (Kind::Page, 1, agg(300 << 20, 9600, 5 << 30, 163_840)),
        (Kind::Page, 2, agg(4 * PAGE, 4, 64 * PAGE, 64)),
        (Kind::Page, 3, agg3),
        (Kind::Page, NONE_ID, agg(PAGE, 1, 2 * PAGE, 2)),
    ];
    raw.records = vec![
        (10, rec(1, 748_000_000_000, 1234, 1235, "nginx", 3, 8)),
        (20, rec(1, 990_000_000_000, 1234, 1235, "nginx", 3, 8)),
        (30, rec(1, 999_000_000_000, 0, 0, "swapper/3", 3, 8)),
        (40, rec(2, 999_500_000_000, 77, 77, "bash", 0, 1)),
    ];
    let session = SessionInfo {
        hostname: "web-1".into(),
        kernel: "6.8.0-31-generic".into(),
        started_at_unix: 1_700_000_000.0,
        duration_secs: 30.0,
        requested_duration_secs: 30.0,
        ended_by: "duration".into(),
        min_age_secs: 0.0,
        page_size: PAGE,
        max_allocations: 65_536,
        max_objects: 65_536,
        map_memory_bytes: 0,
        max_stacks: 16_384,
        sample_every: 1,
        hooks: vec![
            "tracepoint kmem:mm_page_alloc".into(),
            "tracepoint kmem:mm_page_free".into(),
        ],
        kinds: Vec::new(),
        ..Default::default()
    };
    let mut r = build_report(
        &raw,
        session,
        &FakeSymbols::new(syms),
        &BuildOptions::default(),
    );
    // Give one frame debug info and inlined functions.
    r.stacks[0].frames[5].file = Some("net/ipv4/tcp.c".into());
    r.stacks[0].frames[5].line = Some(1234);
    r.stacks[0].frames[5].inlined = vec!["outer_inl".into(), "inner_inl".into()];
    r.stacks[0].frames[6].module = Some("tcp_mod".into());
    r
}

/// The mixed-kind fixture of the model tests, with kinds' hooks and notes.
pub(crate) fn mixed_report(classes: Option<Vec<Class>>) -> Report {
    let (raw, sym, mut session) = mixed_raw();
    session.kinds[0].hooks = vec!["kmem:mm_page_alloc".into(), "kmem:mm_page_free".into()];
    session.kinds[1].hooks = vec![
        "kmem:kmalloc".into(),
        "kmem:kmem_cache_alloc".into(),
        "kmem:kfree".into(),
        "kmem:kmem_cache_free".into(),
    ];
    session.kinds[2].note = Some("percpu:percpu_alloc_percpu not found in tracefs".into());
    session.kinds[3].hooks = vec![
        "vmalloc:alloc_vmap_area".into(),
        "vmalloc:free_vmap_area_noflush".into(),
    ];
    session.kinds[3].note = Some("sizes include the guard page".into());
    build_report(
        &raw,
        session,
        &sym,
        &BuildOptions {
            classes,
            ..Default::default()
        },
    )
}

pub(crate) const TCP_STACK: &[(u64, &str)] = &[
    (0xffff_ffff_8100_0010, "__alloc_pages_noprof"),
    (0xffff_ffff_8100_0020, "alloc_pages_mpol"),
    (0xffff_ffff_8100_0030, "alloc_pages_noprof"),
    (0xffff_ffff_8100_0040, "skb_page_frag_refill"),
    (0xffff_ffff_8100_0050, "sk_page_frag_refill"),
    (0xffff_ffff_8100_0060, "tcp_sendmsg_locked"),
    (0xffff_ffff_8100_0070, "tcp_sendmsg"),
    (0xffff_ffff_8100_0080, "sock_sendmsg"),
];

pub(crate) const ANON_STACK: &[(u64, &str)] = &[
    (0xffff_ffff_8200_0010, "get_page_from_freelist"),
    (0xffff_ffff_8200_0020, "__alloc_frozen_pages_noprof"),
    (0xffff_ffff_8200_0030, "alloc_pages_mpol"),
    (0xffff_ffff_8200_0040, "folio_alloc_mpol_noprof"),
    (0xffff_ffff_8200_0050, "vma_alloc_folio_noprof"),
    (0xffff_ffff_8200_0060, "do_anonymous_page"),
    (0xffff_ffff_8200_0070, "__handle_mm_fault"),
];
