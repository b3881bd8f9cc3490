//! The overview as a table (the default) and as JSON (`--json`; the [`Overview`] serialized
//! as is, `schema` 1).

use std::fmt::Write as _;

use anyhow::Context as _;

use crate::units::{format_bytes, format_unix_utc};

use super::breakdown::{key, percent, Detail};
use super::cgroups::Hierarchy;
use super::{CgroupSection, Overview};

/// The overview as pretty-printed JSON.
pub fn to_json(o: &Overview) -> anyhow::Result<String> {
    serde_json::to_string_pretty(o).context("serializing the overview as JSON")
}

/// `label size, label size, …` of the details inside row `within`; zero ones are left out,
/// except dirty and writeback (the write cache is always shown).
fn details_line(details: &[Detail], within: &str) -> Option<String> {
    let parts: Vec<String> = details
        .iter()
        .filter(|d| d.within == within && (d.bytes > 0 || matches!(d.key, "dirty" | "writeback")))
        .map(|d| format!("{} {}", d.label, format_bytes(d.bytes)))
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The table: the breakdown, socket buffers, the largest slab caches and vmalloc users,
/// notes, warnings with the next command, and with `--cgroups` the top `top` cgroups (0: all).
pub fn render_table(o: &Overview, top: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "memtrace overview — where the memory is");
    let _ = writeln!(s, "  host:      {}", o.hostname);
    let _ = writeln!(s, "  kernel:    {}", o.kernel);
    let _ = writeln!(s, "  taken:     {}", format_unix_utc(o.taken_at_unix));
    let _ = writeln!(
        s,
        "  MemTotal:  {} ({} bytes)",
        format_bytes(o.mem_total_bytes),
        o.mem_total_bytes
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "{:>11} {:>6}  {:<46} FROM", "BYTES", "SHARE", "PART");
    let detail_indent = " ".repeat(21);
    for r in &o.rows {
        if r.minor && r.bytes == 0 {
            continue;
        }
        if r.key == key::UNEXPLAINED {
            let _ = writeln!(s, "{:>11} {:>6}  {}", "", "", "-".repeat(46));
        }
        // The JSON has the whole formula; the table names the LRU lists by one word.
        let source = if r.key == key::USER_ANON {
            "LRU lists + isolated − Cached − Buffers − SwapCached"
        } else {
            r.source.as_str()
        };
        let _ = writeln!(
            s,
            "{:>11} {:>5.1}%  {:<46} {source}",
            format_bytes(r.bytes),
            percent(r.bytes, o.mem_total_bytes),
            r.label,
        );
        if r.key == key::HUGETLB && r.bytes == 0 {
            continue;
        }
        if let Some(line) = details_line(&o.details, r.key) {
            let _ = writeln!(s, "{detail_indent}of which: {line}");
        }
        if r.key == key::SWAP_CACHE {
            if let Some(line) = details_line(&o.details, "user") {
                let _ = writeln!(s, "{detail_indent}the user rows above include: {line}");
            }
        }
    }
    let sum: u64 = o.rows.iter().map(|r| r.bytes).sum();
    if o.overlap_bytes == 0 {
        let _ = writeln!(
            s,
            "{:>11} {:>5.1}%  MemTotal: the rows add up to it exactly ({sum} bytes)",
            format_bytes(sum),
            percent(sum, o.mem_total_bytes)
        );
    } else {
        let _ = writeln!(
            s,
            "{:>11} {:>5.1}%  the rows add up to MemTotal + {} of overlapping counters (see the notes)",
            format_bytes(sum),
            percent(sum, o.mem_total_bytes),
            format_bytes(o.overlap_bytes)
        );
    }

    let _ = writeln!(s);
    match &o.sockets {
        Some(k) => {
            let _ = writeln!(
                s,
                "Socket buffers: {} (TCP {}, UDP {}, IP fragments {}; /proc/net/sockstat) — \
                 inside the slab rows and the remainder, not a row of their own",
                format_bytes(k.total_bytes),
                format_bytes(k.tcp_bytes),
                format_bytes(k.udp_bytes),
                format_bytes(k.frag_bytes)
            );
        }
        None => {
            let _ = writeln!(s, "Socket buffers: unknown (see the notes)");
        }
    }
    if o.slab_top.is_empty() {
        if let Some(note) = &o.slab_note {
            let _ = writeln!(s, "Largest slab caches: not shown ({note})");
        }
    } else {
        let _ = writeln!(s, "Largest slab caches (/proc/slabinfo):");
        // The largest unreclaimable one too when it is not among them.
        let extra = o
            .slab_largest_unreclaimable
            .as_ref()
            .filter(|u| !o.slab_top.iter().any(|c| c.name == u.name));
        for (c, largest) in o
            .slab_top
            .iter()
            .map(|c| (c, false))
            .chain(extra.map(|c| (c, true)))
        {
            let kind = match c.reclaimable {
                Some(true) => ", reclaimable",
                Some(false) if largest => ", the largest unreclaimable",
                Some(false) => ", unreclaimable",
                None => "",
            };
            let _ = writeln!(
                s,
                "{:>11}  {} ({} of {} objects of {} B in use{kind})",
                format_bytes(c.bytes),
                c.name,
                c.active_objs,
                c.num_objs,
                c.objsize
            );
        }
    }
    if o.vmalloc_top.is_empty() {
        if let Some(note) = &o.vmalloc_note {
            let _ = writeln!(s, "Largest vmalloc users: not shown ({note})");
        }
    } else {
        let _ = writeln!(s, "Largest vmalloc users (/proc/vmallocinfo, by caller):");
        for c in &o.vmalloc_top {
            let _ = writeln!(
                s,
                "{:>11}  {} ({} area{})",
                format_bytes(c.bytes),
                c.caller,
                c.areas,
                if c.areas == 1 { "" } else { "s" }
            );
        }
    }

    if let Some(section) = &o.cgroups {
        let _ = writeln!(s);
        render_cgroups(&mut s, section, top);
    }

    if !o.notes.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(s, "Notes:");
        for n in &o.notes {
            let _ = writeln!(s, "  - {n}");
        }
    }
    if !o.warnings.is_empty() {
        let _ = writeln!(s);
        for w in &o.warnings {
            let _ = writeln!(s, "WARNING: {}", w.message);
            for cmd in &w.next {
                let _ = writeln!(s, "  next: {cmd}");
            }
        }
    }
    s
}

fn opt_bytes(b: Option<u64>) -> String {
    b.map_or_else(|| "-".to_owned(), format_bytes)
}

fn render_cgroups(s: &mut String, section: &CgroupSection, top: usize) {
    let total = section.cgroups.len();
    let shown = if top == 0 { total } else { top.min(total) };
    let places: Vec<String> = section
        .hierarchies
        .iter()
        .map(|h| {
            format!(
                "{} at {}: {}",
                h.hierarchy.name(),
                h.mount.display(),
                h.cgroups
            )
        })
        .collect();
    let _ = writeln!(
        s,
        "Memory cgroups by usage ({}; {shown} of {total} shown):",
        if places.is_empty() {
            "no hierarchy".to_owned()
        } else {
            places.join(", ")
        }
    );
    let both = section
        .cgroups
        .iter()
        .any(|c| c.memory.hierarchy == Hierarchy::V1)
        && section
            .cgroups
            .iter()
            .any(|c| c.memory.hierarchy == Hierarchy::V2);
    if total > 0 {
        let _ = writeln!(
            s,
            "  {:>10} {:>10} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  CGROUP",
            "USAGE", "LIMIT", "USE%", "ANON", "FILE", "SHMEM", "DIRTY+WB", "KERNEL", "SOCK"
        );
    }
    for c in section.cgroups.iter().take(shown) {
        let m = &c.memory;
        let mark = if c.near_limit { '!' } else { ' ' };
        let pct = c
            .limit_percent
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.0}%"));
        let prefix = if both {
            format!("{}:", m.hierarchy.name())
        } else {
            String::new()
        };
        let name = if c.name.is_empty() {
            String::new()
        } else {
            format!("  [{}]", c.name)
        };
        let _ = writeln!(
            s,
            "{mark} {:>10} {:>10} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  {prefix}{}{name}{}",
            format_bytes(m.usage_bytes),
            opt_bytes(m.limit_bytes),
            pct,
            format_bytes(m.anon_bytes),
            format_bytes(m.file_bytes),
            format_bytes(m.shmem_bytes),
            format_bytes(m.write_cache_bytes()),
            opt_bytes(m.kernel_bytes),
            opt_bytes(m.sock_bytes),
            m.path,
            if c.near_limit { "  << near its limit" } else { "" }
        );
    }
    if shown < total {
        let _ = writeln!(
            s,
            "  ... {} more (--top 0 lists all; the JSON has all)",
            total - shown
        );
    }
    if total > 0 {
        let _ = writeln!(
            s,
            "  FILE is page cache without shmem; DIRTY+WB is write cache that cannot be \
             reclaimed before it is written; \"-\": not known for this cgroup/hierarchy"
        );
    }
    for h in &section.hierarchies {
        if let Some(note) = &h.note {
            let _ = writeln!(s, "  note: {note}");
        }
    }
    for n in &section.notes {
        let _ = writeln!(s, "  note: {n}");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::super::advice::{assess, Thresholds};
    use super::super::breakdown::{breakdown, Facts};
    use super::super::cgroups::{CgroupMemory, HierarchyScan};
    use super::super::meminfo::{Meminfo, Vmstat};
    use super::super::{CgroupEntry, SocketMemory};
    use super::*;

    const REAL_MEMINFO: &str = include_str!("../../tests/fixtures/overview/meminfo-6.18-vm.txt");
    const REAL_VMSTAT: &str = include_str!("../../tests/fixtures/overview/vmstat-6.18-vm.txt");
    const MIB: u64 = 1 << 20;

    fn sample() -> Overview {
        let m = Meminfo::parse(REAL_MEMINFO).unwrap();
        let v = Vmstat::parse(REAL_VMSTAT).unwrap();
        let f = Facts {
            vmap_stack_source: "/proc/config.gz".into(),
            ..Facts::default()
        };
        let b = breakdown(&m, &v, &f);
        let stat: BTreeMap<String, u64> =
            [("anon", 10 * MIB), ("file", 80 * MIB), ("shmem", 64 * MIB)]
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect();
        let mut o = Overview {
            schema: 1,
            kind: "memtrace-overview",
            hostname: "vm".into(),
            kernel: "6.18".into(),
            taken_at_unix: 0.0,
            page_size: 4096,
            mem_total_bytes: b.mem_total,
            unexplained_bytes: b.unexplained,
            unexplained_percent: b.unexplained_percent(),
            overlap_bytes: b.overlap,
            rows: b.rows,
            details: b.details,
            sockets: Some(SocketMemory {
                tcp_bytes: 4096,
                udp_bytes: 0,
                frag_bytes: 0,
                total_bytes: 4096,
            }),
            slab_top: Vec::new(),
            slab_largest_unreclaimable: None,
            slab_note: Some("/proc/slabinfo is readable by root only".into()),
            vmalloc_top: Vec::new(),
            vmalloc_note: None,
            vmap_stack: true,
            vmap_stack_source: "/proc/config.gz".into(),
            balloon_in_memtotal: None,
            thresholds: Thresholds::new(32 * MIB, 5.0),
            notes: vec!["a note".into()],
            warnings: Vec::new(),
            cgroups: Some(CgroupSection {
                hierarchies: vec![HierarchyScan {
                    hierarchy: Hierarchy::V1,
                    mount: "/sys/fs/cgroup/memory".into(),
                    cgroups: 2,
                    note: None,
                }],
                cgroups: vec![
                    CgroupEntry::new(CgroupMemory::from_v2(
                        "/test",
                        Path::new("/sys/fs/cgroup/test"),
                        100 * MIB,
                        &stat,
                        Some(105 * MIB),
                    )),
                    CgroupEntry::new(CgroupMemory::from_v2(
                        "/other",
                        Path::new("/sys/fs/cgroup/other"),
                        MIB,
                        &BTreeMap::new(),
                        None,
                    )),
                ],
                notes: Vec::new(),
            }),
        };
        o.warnings = assess(&o);
        o
    }

    #[test]
    fn table() {
        let o = sample();
        let t = render_table(&o, 20);
        // Every main row, the remainder, the total line.
        for label in [
            "free",
            "user anon",
            "page cache",
            "slab unreclaimable",
            "kernel stacks",
            "vmalloc",
            "unexplained: buddy pages no counter explains",
            "MemTotal: the rows add up to it exactly (25276510208 bytes)",
        ] {
            assert!(t.contains(label), "{label} missing:\n{t}");
        }
        assert!(t.contains("of which: dirty 266.4 MiB"), "{t}");
        // Subsets that straddle rows are parts of the user rows together, after them.
        let user = t
            .lines()
            .find(|l| l.contains("the user rows above include:"))
            .unwrap();
        assert!(
            user.contains("mapped anon (AnonPages, incl. mapped swap cache)")
                && user.contains("mapped files and shmem (Mapped)"),
            "{user}"
        );
        assert!(!t.contains("of which: mapped"), "{t}");
        let free = t.lines().position(|l| l.contains(" free  ")).unwrap();
        assert!(
            t.lines()
                .nth(free + 1)
                .unwrap()
                .contains("free (per-CPU lists)"),
            "{t}"
        );
        // Minor rows that are 0 are left out.
        assert!(!t.contains("FUSE writeback"), "{t}");
        assert!(
            t.contains("Largest slab caches: not shown (/proc/slabinfo is readable by root only)")
        );
        // 60.9 MiB of remainder ≥ the 32 MiB threshold: flagged with the next command.
        assert!(
            t.contains("WARNING: 60.9 MiB (0.3% of MemTotal) are pages"),
            "{t}"
        );
        assert!(t.contains(
            "  next: memtrace trace --duration 10m --kind page --class network,other-kernel"
        ));
        // The cgroup near its limit is marked.
        let line = t.lines().find(|l| l.contains("/test")).unwrap();
        assert!(
            line.starts_with('!') && line.contains("near its limit"),
            "{line}"
        );
        assert!(line.contains(" 64.0 MiB "), "shmem column: {line}");
        assert!(t.contains("2 of 2 shown"));
        let t1 = render_table(&o, 1);
        assert!(t1.contains("1 more (--top 0 lists all"), "{t1}");
        assert!(!t1.contains("/other"));
    }

    #[test]
    fn largest_unreclaimable_slab_cache_is_listed() {
        use super::super::detail::SlabCache;
        let cache = |name: &str, reclaimable| SlabCache {
            name: name.into(),
            active_objs: 1,
            num_objs: 2,
            objsize: 64,
            bytes: 8 * MIB,
            reclaimable,
        };
        let mut o = sample();
        o.slab_top = vec![cache("dentry", Some(true))];
        o.slab_largest_unreclaimable = Some(cache("kmalloc-2k", Some(false)));
        let t = render_table(&o, 20);
        assert!(
            t.contains("kmalloc-2k (1 of 2 objects of 64 B in use, the largest unreclaimable)"),
            "{t}"
        );
        // Already listed: once.
        o.slab_top.push(cache("kmalloc-2k", Some(false)));
        let t = render_table(&o, 20);
        assert_eq!(t.matches("kmalloc-2k").count(), 1, "{t}");
    }

    #[test]
    fn json_fields() {
        let o = sample();
        let v: serde_json::Value = serde_json::from_str(&to_json(&o).unwrap()).unwrap();
        assert_eq!(v["schema"], 1);
        assert_eq!(v["kind"], "memtrace-overview");
        let rows = v["rows"].as_array().unwrap();
        let sum: u64 = rows.iter().map(|r| r["bytes"].as_u64().unwrap()).sum();
        assert_eq!(
            sum,
            v["mem_total_bytes"].as_u64().unwrap() + v["overlap_bytes"].as_u64().unwrap()
        );
        assert_eq!(rows.last().unwrap()["key"], "unexplained");
        assert_eq!(rows.last().unwrap()["bytes"], v["unexplained_bytes"]);
        let cg = &v["cgroups"]["cgroups"][0];
        assert_eq!(cg["path"], "/test");
        assert_eq!(cg["hierarchy"], "v2");
        assert_eq!(cg["shmem_bytes"], 64 * MIB);
        assert_eq!(cg["near_limit"], true);
        assert!(cg["workload"]["pod_uid"].is_null());
        assert_eq!(v["cgroups"]["hierarchies"][0]["hierarchy"], "v1");
        assert_eq!(v["warnings"][0]["kind"], "unexplained");
        assert!(v["warnings"][0]["next"][0]
            .as_str()
            .unwrap()
            .starts_with("memtrace trace"));
        assert_eq!(v["thresholds"]["unexplained_warn_bytes"], 32 * MIB);
        assert!(v["sockets"]["total_bytes"].is_u64());
        assert!(v["details"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["key"] == "dirty"));
    }
}
