//! What in an [`Overview`] is large enough to say so, and which `memtrace` command finds out
//! more: the remainder (pages no counter explains) → `memtrace trace --kind page` on the
//! classes those pages have; socket buffers → `memtrace sockets` and `--class network`;
//! unreclaimable slab / vmalloc → `--kind slab` / `--kind vmalloc`; cgroups near their limit,
//! with what fills them (the write-cache case), and cgroups whose socket buffers are large.

use crate::units::format_bytes;

use super::breakdown::{key, percent};
use super::cgroups::{Hierarchy, NEAR_LIMIT_PERCENT};
use super::{CgroupEntry, Overview};

/// Socket buffers of the node are flagged from this much…
pub const NETWORK_WARN_BYTES: u64 = 512 << 20;
/// …or this share of MemTotal (percent).
pub const NETWORK_WARN_PERCENT: f64 = 3.0;
/// A cgroup's socket buffers are flagged from this much, or from
/// [`CGROUP_SOCK_WARN_MIN_BYTES`] when they are [`CGROUP_SOCK_WARN_SHARE`] % of its usage.
pub const CGROUP_SOCK_WARN_BYTES: u64 = 256 << 20;
pub const CGROUP_SOCK_WARN_MIN_BYTES: u64 = 64 << 20;
pub const CGROUP_SOCK_WARN_SHARE: f64 = 20.0;
/// At most this many cgroup warnings of each kind; the rest are summed up in one line.
const MAX_CGROUP_WARNINGS: usize = 10;

/// The command that attributes the remainder: page allocations still held, on the classes
/// that no meminfo counter covers (network frags and page_pool pages; other kernel pages).
pub const TRACE_UNEXPLAINED: &str =
    "memtrace trace --duration 10m --kind page --class network,other-kernel";
pub const SOCKETS: &str = "memtrace sockets";
pub const TRACE_NETWORK: &str = "memtrace trace --duration 10m --kind page,slab --class network";
pub const TRACE_SLAB: &str = "memtrace trace --duration 10m --kind slab";
pub const TRACE_VMALLOC: &str = "memtrace trace --duration 10m --kind vmalloc";

/// When something counts as large.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Thresholds {
    /// `--unexplained-warn`: the remainder (and unreclaimable slab, vmalloc) from this much…
    pub unexplained_warn_bytes: u64,
    /// …or `--unexplained-warn-percent` of MemTotal.
    pub unexplained_warn_percent: f64,
    pub network_warn_bytes: u64,
    pub network_warn_percent: f64,
}

impl Thresholds {
    pub fn new(unexplained_warn_bytes: u64, unexplained_warn_percent: f64) -> Thresholds {
        Thresholds {
            unexplained_warn_bytes,
            unexplained_warn_percent,
            network_warn_bytes: NETWORK_WARN_BYTES,
            network_warn_percent: NETWORK_WARN_PERCENT,
        }
    }
}

/// Something large, and what to run next.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    /// `unexplained`, `network`, `slab`, `vmalloc`, `cgroup_near_limit`, `cgroup_network`.
    pub kind: &'static str,
    pub message: String,
    /// Commands to run next (may be empty).
    pub next: Vec<String>,
    /// The cgroup (path in its hierarchy) for the cgroup kinds.
    pub cgroup: Option<String>,
}

/// `bytes` ≥ `abs`, or ≥ `pct` % of `total`.
fn large(bytes: u64, total: u64, abs: u64, pct: f64) -> bool {
    bytes >= abs || percent(bytes, total) >= pct
}

/// Quotes `s` for a POSIX shell when it has anything but safe characters.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/_.,:=@%+-".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Every warning for `o`, most important first.
pub fn assess(o: &Overview) -> Vec<Warning> {
    let t = &o.thresholds;
    let total = o.mem_total_bytes;
    let mut out = Vec::new();
    let sock_large = o.sockets.is_some_and(|s| {
        large(
            s.total_bytes,
            total,
            t.network_warn_bytes,
            t.network_warn_percent,
        )
    });

    if large(
        o.unexplained_bytes,
        total,
        t.unexplained_warn_bytes,
        t.unexplained_warn_percent,
    ) {
        let mut next = vec![TRACE_UNEXPLAINED.to_owned()];
        if sock_large {
            next.push(SOCKETS.to_owned());
        }
        out.push(Warning {
            kind: "unexplained",
            message: format!(
                "{} ({:.1}% of MemTotal) are pages taken straight from the buddy allocator that \
                 no counter explains (flagged from {} or {}%): network page frags and page_pool \
                 pages held in socket queues, driver and DMA buffers, vmap()ed pages — memory \
                 no per-process tool shows. Trace who holds them",
                format_bytes(o.unexplained_bytes),
                o.unexplained_percent,
                format_bytes(t.unexplained_warn_bytes),
                t.unexplained_warn_percent
            ),
            next,
            cgroup: None,
        });
    }

    if let Some(s) = o.sockets.filter(|_| sock_large) {
        out.push(Warning {
            kind: "network",
            message: format!(
                "socket buffers hold {} ({:.1}% of MemTotal: TCP {}, UDP {}, IP fragments {}): \
                 data waiting in socket queues, in slab (skb heads) and in the remainder (page \
                 frags). Find the sockets and their processes, and the stacks that allocated \
                 the pages",
                format_bytes(s.total_bytes),
                percent(s.total_bytes, total),
                format_bytes(s.tcp_bytes),
                format_bytes(s.udp_bytes),
                format_bytes(s.frag_bytes)
            ),
            next: vec![SOCKETS.to_owned(), TRACE_NETWORK.to_owned()],
            cgroup: None,
        });
    }

    let row = |k: &str| o.rows.iter().find(|r| r.key == k).map_or(0, |r| r.bytes);
    let slab = row(key::SLAB_UNRECLAIMABLE);
    if large(
        slab,
        total,
        t.unexplained_warn_bytes,
        t.unexplained_warn_percent,
    ) {
        let top = o
            .slab_largest_unreclaimable
            .as_ref()
            .map(|c| {
                format!(
                    " (largest unreclaimable cache: {} with {})",
                    c.name,
                    format_bytes(c.bytes)
                )
            })
            .unwrap_or_default();
        out.push(Warning {
            kind: "slab",
            message: format!(
                "unreclaimable slab holds {} ({:.1}% of MemTotal){top}. Trace the slab \
                 allocations still held",
                format_bytes(slab),
                percent(slab, total)
            ),
            next: vec![TRACE_SLAB.to_owned()],
            cgroup: None,
        });
    }
    let vmalloc = row(key::VMALLOC);
    if large(
        vmalloc,
        total,
        t.unexplained_warn_bytes,
        t.unexplained_warn_percent,
    ) {
        out.push(Warning {
            kind: "vmalloc",
            message: format!(
                "vmalloc holds {} ({:.1}% of MemTotal). Trace the vmalloc areas still held",
                format_bytes(vmalloc),
                percent(vmalloc, total)
            ),
            next: vec![TRACE_VMALLOC.to_owned()],
            cgroup: None,
        });
    }

    if let Some(section) = &o.cgroups {
        out.extend(cgroup_warnings(&section.cgroups));
    }
    out
}

/// Whether the cgroup's socket buffers are large.
fn cgroup_sock_large(c: &CgroupEntry) -> bool {
    let Some(sock) = c.memory.sock_bytes else {
        return false;
    };
    sock >= CGROUP_SOCK_WARN_BYTES
        || (sock >= CGROUP_SOCK_WARN_MIN_BYTES
            && percent(sock, c.memory.usage_bytes) >= CGROUP_SOCK_WARN_SHARE)
}

/// `a` is a proper ancestor of `b` in the same hierarchy.
fn is_ancestor(a: &CgroupEntry, b: &CgroupEntry) -> bool {
    a.memory.hierarchy == b.memory.hierarchy
        && b.memory
            .path
            .strip_prefix(&a.memory.path)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn display(c: &CgroupEntry) -> String {
    let v = match c.memory.hierarchy {
        Hierarchy::V1 => " (v1)",
        Hierarchy::V2 => "",
    };
    if c.name.is_empty() {
        format!("{}{v}", c.memory.path)
    } else {
        format!("{}{v} [{}]", c.memory.path, c.name)
    }
}

fn trace_cgroup(c: &CgroupEntry, what: &str) -> String {
    format!(
        "memtrace trace --duration 10m {what} --cgroup {}",
        shell_quote(&c.memory.dir.to_string_lossy())
    )
}

fn cgroup_warnings(cgroups: &[CgroupEntry]) -> Vec<Warning> {
    let mut out = Vec::new();

    // Near the limit: what fills the cgroup, largest first.
    let near: Vec<&CgroupEntry> = cgroups.iter().filter(|c| c.near_limit).collect();
    for c in near.iter().take(MAX_CGROUP_WARNINGS) {
        let m = &c.memory;
        let mut parts = vec![
            (m.anon_bytes, format!("anon {}", format_bytes(m.anon_bytes))),
            (
                m.file_bytes,
                format!(
                    "page cache {} (dirty + writeback {}: write cache charged to the cgroup, \
                     reclaimable only once written)",
                    format_bytes(m.file_bytes),
                    format_bytes(m.write_cache_bytes())
                ),
            ),
            (
                m.shmem_bytes,
                format!("shmem {}", format_bytes(m.shmem_bytes)),
            ),
        ];
        if let Some(k) = m.kernel_bytes {
            parts.push((k, format!("kernel {}", format_bytes(k))));
        }
        if let Some(s) = m.sock_bytes {
            parts.push((s, format!("sockets {}", format_bytes(s))));
        }
        parts.sort_by_key(|p| std::cmp::Reverse(p.0));
        let mut next = Vec::new();
        let usage = m.usage_bytes.max(1);
        if m.kernel_bytes.is_some_and(|k| percent(k, usage) >= 25.0) {
            next.push(trace_cgroup(c, "--kind page,slab"));
        }
        if m.sock_bytes
            .is_some_and(|s| percent(s, usage) >= CGROUP_SOCK_WARN_SHARE)
        {
            next.push(SOCKETS.to_owned());
            next.push(trace_cgroup(c, "--kind page,slab --class network"));
        }
        out.push(Warning {
            kind: "cgroup_near_limit",
            message: format!(
                "cgroup {} uses {} = {:.0}% of its limit {}: {}",
                display(c),
                format_bytes(m.usage_bytes),
                c.limit_percent.unwrap_or(0.0),
                m.limit_bytes.map_or_else(|| "-".into(), format_bytes),
                parts
                    .into_iter()
                    .map(|(_, s)| s)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            next,
            cgroup: Some(m.path.clone()),
        });
    }
    if near.len() > MAX_CGROUP_WARNINGS {
        out.push(Warning {
            kind: "cgroup_near_limit",
            message: format!(
                "{} more cgroups are at {}% of their limit or more (see the table / JSON)",
                near.len() - MAX_CGROUP_WARNINGS,
                NEAR_LIMIT_PERCENT
            ),
            next: Vec::new(),
            cgroup: None,
        });
    }

    // Large socket buffers: the innermost such cgroups only (their ancestors contain them).
    let sock: Vec<&CgroupEntry> = cgroups.iter().filter(|c| cgroup_sock_large(c)).collect();
    let innermost: Vec<&CgroupEntry> = sock
        .iter()
        .copied()
        .filter(|a| !sock.iter().any(|b| is_ancestor(a, b)))
        .collect();
    for c in innermost.iter().take(MAX_CGROUP_WARNINGS) {
        let s = c.memory.sock_bytes.unwrap_or(0);
        out.push(Warning {
            kind: "cgroup_network",
            message: format!(
                "cgroup {} holds {} in socket buffers ({:.0}% of its usage)",
                display(c),
                format_bytes(s),
                percent(s, c.memory.usage_bytes)
            ),
            next: vec![
                SOCKETS.to_owned(),
                trace_cgroup(c, "--kind page,slab --class network"),
            ],
            cgroup: Some(c.memory.path.clone()),
        });
    }
    if innermost.len() > MAX_CGROUP_WARNINGS {
        out.push(Warning {
            kind: "cgroup_network",
            message: format!(
                "{} more cgroups hold large socket buffers (see the SOCK column)",
                innermost.len() - MAX_CGROUP_WARNINGS
            ),
            next: vec![SOCKETS.to_owned()],
            cgroup: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::super::breakdown::{breakdown, Facts};
    use super::super::cgroups::CgroupMemory;
    use super::super::meminfo::{Meminfo, Vmstat};
    use super::super::{CgroupSection, SocketMemory};
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    /// An overview of an 8 GiB machine whose remainder is `unexplained_kb`.
    fn overview(unexplained_kb: u64, sock: u64) -> Overview {
        let free = 8 * 1024 * 1024 - unexplained_kb;
        let m = Meminfo::parse(&format!(
            "MemTotal: 8388608 kB\nMemFree: {free} kB\nBuffers: 0 kB\nCached: 0 kB\n\
             SwapCached: 0 kB\nActive(anon): 0 kB\nInactive(anon): 0 kB\nActive(file): 0 kB\n\
             Inactive(file): 0 kB\nUnevictable: 0 kB\nShmem: 0 kB\nSReclaimable: 0 kB\n\
             SUnreclaim: 0 kB\nKernelStack: 0 kB\nPageTables: 0 kB\nVmallocUsed: 0 kB\n\
             Percpu: 0 kB\n"
        ))
        .unwrap();
        let f = Facts {
            vmallocinfo_bytes: Some(0),
            vmap_stack_source: "test".into(),
            ..Facts::default()
        };
        let b = breakdown(&m, &Vmstat::default(), &f);
        Overview {
            schema: 1,
            kind: "memtrace-overview",
            hostname: "h".into(),
            kernel: "k".into(),
            taken_at_unix: 0.0,
            page_size: 4096,
            mem_total_bytes: b.mem_total,
            unexplained_bytes: b.unexplained,
            unexplained_percent: b.unexplained_percent(),
            overlap_bytes: b.overlap,
            rows: b.rows,
            details: b.details,
            sockets: Some(SocketMemory {
                tcp_bytes: sock,
                udp_bytes: 0,
                frag_bytes: 0,
                total_bytes: sock,
            }),
            slab_top: Vec::new(),
            slab_largest_unreclaimable: None,
            slab_note: None,
            vmalloc_top: Vec::new(),
            vmalloc_note: None,
            vmap_stack: true,
            vmap_stack_source: "test".into(),
            balloon_in_memtotal: None,
            thresholds: Thresholds::new(GIB, 5.0),
            notes: Vec::new(),
            warnings: Vec::new(),
            cgroups: None,
        }
    }

    fn kinds(w: &[Warning]) -> Vec<&'static str> {
        w.iter().map(|w| w.kind).collect()
    }

    #[test]
    fn unexplained_thresholds_absolute_and_percent() {
        // 300 MiB of 8 GiB = 3.7 %: below both defaults.
        let o = overview(300 * 1024, 0);
        assert!(assess(&o).is_empty());
        // 500 MiB = 6.1 %: above the percentage.
        let o = overview(500 * 1024, 0);
        let w = assess(&o);
        assert_eq!(kinds(&w), ["unexplained"]);
        assert_eq!(w[0].next, [TRACE_UNEXPLAINED]);
        assert!(
            w[0].message.contains("500.0 MiB (6.1% of MemTotal)"),
            "{}",
            w[0].message
        );
        // An absolute threshold below it alone flags it too.
        let mut o = overview(300 * 1024, 0);
        o.thresholds = Thresholds::new(256 * MIB, 50.0);
        assert_eq!(kinds(&assess(&o)), ["unexplained"]);
        // Both above: nothing.
        o.thresholds = Thresholds::new(GIB, 50.0);
        assert!(assess(&o).is_empty());
    }

    #[test]
    fn network_suggests_sockets() {
        let o = overview(600 * 1024, 600 * MIB);
        let w = assess(&o);
        assert_eq!(kinds(&w), ["unexplained", "network"]);
        assert_eq!(w[0].next, [TRACE_UNEXPLAINED, SOCKETS]);
        assert_eq!(w[1].next, [SOCKETS, TRACE_NETWORK]);
        // 3 % of 8 GiB is 245.8 MiB.
        let o = overview(0, 250 * MIB);
        assert_eq!(kinds(&assess(&o)), ["network"]);
        let o = overview(0, 200 * MIB);
        assert!(assess(&o).is_empty());
    }

    fn entry(path: &str, usage: u64, limit: Option<u64>, stat: &[(&str, u64)]) -> CgroupEntry {
        let stat: BTreeMap<String, u64> = stat.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        CgroupEntry::new(CgroupMemory::from_v2(
            path,
            &Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')),
            usage,
            &stat,
            limit,
        ))
    }

    #[test]
    fn cgroup_near_limit_and_sockets() {
        let mut o = overview(0, 0);
        let uid = "0f5b9d3e-7a1c-4e2b-9c8d-1a2b3c4d5e6f";
        o.cgroups = Some(CgroupSection {
            hierarchies: Vec::new(),
            notes: Vec::new(),
            cgroups: vec![
                // The write-cache case: near the limit with mostly dirty page cache.
                entry(
                    &format!("/kubepods/burstable/pod{uid}"),
                    590 * MIB,
                    Some(600 * MIB),
                    &[
                        ("anon", 23 * MIB),
                        ("file", 560 * MIB),
                        ("file_dirty", 300 * MIB),
                        ("file_writeback", 50 * MIB),
                        ("kernel", 7 * MIB),
                    ],
                ),
                // Socket buffers: parent and child both large; only the child is named.
                entry("/web", 2 * GIB, None, &[("sock", 400 * MIB)]),
                entry("/web/nginx", 2 * GIB, None, &[("sock", 400 * MIB)]),
                // Not large: 50 MiB.
                entry("/small", 100 * MIB, None, &[("sock", 50 * MIB)]),
                // 100 MiB = 25 % of the usage: large.
                entry("/api", 400 * MIB, None, &[("sock", 100 * MIB)]),
                // Below the limit share.
                entry("/roomy", 500 * MIB, Some(600 * MIB), &[]),
            ],
        });
        let w = assess(&o);
        assert_eq!(
            kinds(&w),
            ["cgroup_near_limit", "cgroup_network", "cgroup_network"]
        );
        assert!(
            w[0].message.contains("98% of its limit 600.0 MiB"),
            "{}",
            w[0].message
        );
        assert!(
            w[0].message
                .contains("page cache 560.0 MiB (dirty + writeback 350.0 MiB"),
            "{}",
            w[0].message
        );
        assert!(
            w[0].message.contains(&format!("[pod {uid} (burstable)]")),
            "{}",
            w[0].message
        );
        assert!(w[0].next.is_empty());
        assert_eq!(w[1].cgroup.as_deref(), Some("/web/nginx"));
        assert_eq!(
            w[1].next,
            [
                SOCKETS.to_owned(),
                "memtrace trace --duration 10m --kind page,slab --class network --cgroup \
                 /sys/fs/cgroup/web/nginx"
                    .to_owned()
            ]
        );
        assert_eq!(w[2].cgroup.as_deref(), Some("/api"));
    }

    #[test]
    fn slab_names_the_largest_unreclaimable_cache() {
        use super::super::detail::SlabCache;
        let mut o = overview(0, 0);
        for r in &mut o.rows {
            if r.key == key::SLAB_UNRECLAIMABLE {
                r.bytes = 2 * GIB;
            }
        }
        let cache = |name: &str, bytes, reclaimable| SlabCache {
            name: name.into(),
            active_objs: 1,
            num_objs: 1,
            objsize: 1,
            bytes,
            reclaimable,
        };
        // kmalloc-2k is not among the largest caches listed; it is still the one named.
        o.slab_top = vec![
            cache("dentry", 3 * GIB, Some(true)),
            cache("inode_cache", 2 * GIB + MIB, None),
        ];
        o.slab_largest_unreclaimable = Some(cache("kmalloc-2k", 2 * GIB, Some(false)));
        let w = assess(&o);
        assert_eq!(kinds(&w), ["slab"]);
        assert!(
            w[0].message
                .contains("largest unreclaimable cache: kmalloc-2k with 2.0 GiB"),
            "{}",
            w[0].message
        );
        assert_eq!(w[0].next, [TRACE_SLAB]);
    }

    #[test]
    fn quoting() {
        assert_eq!(
            shell_quote("/sys/fs/cgroup/a.slice"),
            "/sys/fs/cgroup/a.slice"
        );
        assert_eq!(shell_quote("/a b"), "'/a b'");
        assert_eq!(shell_quote(r"/x\x2dy"), r"'/x\x2dy'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
