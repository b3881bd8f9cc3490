//! The node-wide counters `memtrace overview` starts from: `/proc/meminfo`, `/proc/vmstat`,
//! `/proc/zoneinfo` (free pages on the per-CPU lists) and `/proc/net/sockstat` (+
//! `sockstat6`). All are world-readable.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context as _};

pub const MEMINFO: &str = "/proc/meminfo";
pub const VMSTAT: &str = "/proc/vmstat";
pub const SOCKSTAT: &str = "/proc/net/sockstat";
pub const SOCKSTAT6: &str = "/proc/net/sockstat6";
pub const ZONEINFO: &str = "/proc/zoneinfo";

/// `/proc/meminfo`: every field in bytes (`kB` values × 1024), unit-less counts
/// (`HugePages_Total`, …) as they are. Field names keep their spelling (`Active(anon)`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meminfo {
    fields: BTreeMap<String, u64>,
}

impl Meminfo {
    /// Parses the text of `/proc/meminfo`. A line that is not `Name: number [kB]` is an error
    /// naming the line (the file is never like that; a fixture or a foreign file would be).
    pub fn parse(text: &str) -> anyhow::Result<Meminfo> {
        let mut fields = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = || {
                format!(
                    "line {} of meminfo is not `Name: value [kB]`: {line:?}",
                    i + 1
                )
            };
            let (name, value) = line.split_once(':').with_context(bad)?;
            let mut words = value.split_whitespace();
            let number: u64 = words
                .next()
                .and_then(|v| v.parse().ok())
                .with_context(bad)?;
            let factor = match words.next() {
                None => 1,
                Some("kB") => 1024,
                Some(_) => bail!(bad()),
            };
            if words.next().is_some() {
                bail!(bad());
            }
            let bytes = number.checked_mul(factor).with_context(bad)?;
            fields.insert(name.trim().to_owned(), bytes);
        }
        if !fields.contains_key("MemTotal") {
            bail!("no MemTotal in meminfo (is this /proc/meminfo?)");
        }
        Ok(Meminfo { fields })
    }

    /// Reads and parses `path` (normally [`MEMINFO`]).
    pub fn read(path: &Path) -> anyhow::Result<Meminfo> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Meminfo::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// A field, `None` when this kernel does not have it.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.fields.get(name).copied()
    }

    /// A field, 0 when absent.
    pub fn or0(&self, name: &str) -> u64 {
        self.get(name).unwrap_or(0)
    }

    /// `MemTotal` in bytes ([`Meminfo::parse`] guarantees it is there).
    pub fn mem_total(&self) -> u64 {
        self.or0("MemTotal")
    }
}

/// `/proc/vmstat`: `name value` per line, values as they are (mostly pages).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vmstat {
    fields: BTreeMap<String, u64>,
}

impl Vmstat {
    /// Parses the text of `/proc/vmstat`; a line that is not `name number` is an error.
    pub fn parse(text: &str) -> anyhow::Result<Vmstat> {
        let mut fields = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(name), Some(value), None) = (words.next(), words.next(), words.next()) else {
                bail!("line {} of vmstat is not `name value`: {line:?}", i + 1);
            };
            let value: u64 = value
                .parse()
                .with_context(|| format!("line {} of vmstat: bad number in {line:?}", i + 1))?;
            fields.insert(name.to_owned(), value);
        }
        Ok(Vmstat { fields })
    }

    /// Reads and parses `path` (normally [`VMSTAT`]).
    pub fn read(path: &Path) -> anyhow::Result<Vmstat> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Vmstat::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn get(&self, name: &str) -> Option<u64> {
        self.fields.get(name).copied()
    }

    pub fn or0(&self, name: &str) -> u64 {
        self.get(name).unwrap_or(0)
    }
}

/// Free pages waiting on the per-CPU page lists (PCP), summed over every zone and CPU: the
/// `count:` lines of the `pagesets` part of each zone in `/proc/zoneinfo`
/// (`pagesets` / `cpu: N` / `count: C` / `high: …`).
///
/// The page allocator takes these pages off the buddy free lists in batches (`rmqueue_bulk`
/// subtracts them from `NR_FREE_PAGES`) and hands them out to the CPU later, so they are free
/// but not in `MemFree` — a few MiB to hundreds of MiB, growing with the CPU count. Returns
/// pages; an error when there is no `pagesets` part or a `count:` without a number.
pub fn parse_zoneinfo_pcp(text: &str) -> anyhow::Result<u64> {
    let mut in_pagesets = false;
    let mut seen = false;
    let mut pages = 0u64;
    for (i, line) in text.lines().enumerate() {
        let word = line.trim();
        if line.starts_with("Node ") {
            in_pagesets = false;
        } else if word == "pagesets" {
            in_pagesets = true;
            seen = true;
        } else if in_pagesets {
            if let Some(value) = word.strip_prefix("count:") {
                let count: u64 = value.trim().parse().with_context(|| {
                    format!("line {} of zoneinfo: bad count in {line:?}", i + 1)
                })?;
                pages = pages.saturating_add(count);
            }
        }
    }
    if !seen {
        bail!("no `pagesets` in zoneinfo (is this /proc/zoneinfo?)");
    }
    Ok(pages)
}

/// Reads [`ZONEINFO`]: free pages on the per-CPU lists ([`parse_zoneinfo_pcp`]).
pub fn read_zoneinfo_pcp() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(ZONEINFO).with_context(|| format!("reading {ZONEINFO}"))?;
    parse_zoneinfo_pcp(&text).with_context(|| format!("parsing {ZONEINFO}"))
}

/// Socket buffer memory as the protocols account it (`/proc/net/sockstat`, `sockstat6`).
///
/// `TCP ... mem N` and `UDP ... mem N` are pages charged to all TCP / UDP sockets of the
/// machine (`tcp_memory_allocated` is global, not per network namespace, so the figure is the
/// node's from any namespace); `FRAG ... memory N` are bytes of IP fragments waiting for
/// reassembly (per namespace). This memory is skb heads (slab) and page frags (buddy pages
/// that no meminfo counter explains), so it overlaps the slab rows and the remainder of the
/// breakdown and is shown beside it, never as a row of its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sockstat {
    pub tcp_pages: u64,
    pub udp_pages: u64,
    /// IPv4 + IPv6 fragment queues, bytes.
    pub frag_bytes: u64,
}

impl Sockstat {
    /// Parses `sockstat` and, when given, `sockstat6` (only its `FRAG6` line counts).
    /// Unknown lines are ignored; a known field with a bad number is an error.
    pub fn parse(sockstat: &str, sockstat6: Option<&str>) -> anyhow::Result<Sockstat> {
        let mut out = Sockstat::default();
        for text in std::iter::once(sockstat).chain(sockstat6) {
            for line in text.lines() {
                let Some((proto, rest)) = line.split_once(':') else {
                    continue;
                };
                let words: Vec<&str> = rest.split_whitespace().collect();
                let field = |name: &str| -> anyhow::Result<u64> {
                    let Some(at) = words.iter().position(|w| *w == name) else {
                        return Ok(0);
                    };
                    let value = words.get(at + 1).with_context(|| {
                        format!("sockstat: `{name}` without a value in {line:?}")
                    })?;
                    value
                        .parse()
                        .with_context(|| format!("sockstat: bad `{name}` in {line:?}"))
                };
                match proto.trim() {
                    "TCP" => out.tcp_pages = field("mem")?,
                    "UDP" => out.udp_pages = field("mem")?,
                    "FRAG" | "FRAG6" => out.frag_bytes += field("memory")?,
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// Reads [`SOCKSTAT`] and [`SOCKSTAT6`] (the latter optional: no IPv6).
    pub fn read() -> anyhow::Result<Sockstat> {
        let v4 =
            std::fs::read_to_string(SOCKSTAT).with_context(|| format!("reading {SOCKSTAT}"))?;
        let v6 = std::fs::read_to_string(SOCKSTAT6).ok();
        Sockstat::parse(&v4, v6.as_deref()).with_context(|| format!("parsing {SOCKSTAT}"))
    }

    /// TCP + UDP buffers and fragments, in bytes.
    pub fn total_bytes(&self, page_size: u64) -> u64 {
        (self.tcp_pages + self.udp_pages)
            .saturating_mul(page_size)
            .saturating_add(self.frag_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const REAL_MEMINFO: &str =
        include_str!("../../tests/fixtures/overview/meminfo-6.18-vm.txt");
    const REAL_VMSTAT: &str = include_str!("../../tests/fixtures/overview/vmstat-6.18-vm.txt");
    const REAL_SOCKSTAT: &str = include_str!("../../tests/fixtures/overview/sockstat-6.18.txt");
    const REAL_ZONEINFO: &str = include_str!("../../tests/fixtures/overview/zoneinfo-6.18-vm.txt");

    #[test]
    fn zoneinfo_per_cpu_free_pages() {
        // This 2-CPU VM: DMA and DMA32 lists empty, Normal 14114 + 14334 pages; the Movable
        // and Device zones have no pagesets. (The `nr_free_pages` lines are MemFree's.)
        assert_eq!(parse_zoneinfo_pcp(REAL_ZONEINFO).unwrap(), 14_114 + 14_334);
        // An older layout (3.10: count/high/batch only), two nodes.
        let old = "Node 0, zone   Normal\n  pages free     1000\n  pagesets\n    cpu: 0\n\
                   \x20             count: 30\n              high:  186\n              batch: 31\n\
                   \x20 vm stats threshold: 24\n    cpu: 1\n              count: 12\n\
                   \x20 all_unreclaimable: 0\nNode 1, zone   Normal\n  pagesets\n    cpu: 0\n\
                   \x20             count: 100\n";
        assert_eq!(parse_zoneinfo_pcp(old).unwrap(), 142);
        // `count` outside pagesets is not a PCP count.
        assert_eq!(
            parse_zoneinfo_pcp("Node 0, zone DMA\n  count: 5\n  pagesets\n").unwrap(),
            0
        );
        let err = parse_zoneinfo_pcp("MemTotal: 1 kB\n").unwrap_err();
        assert!(format!("{err:#}").contains("pagesets"), "{err:#}");
        let err = parse_zoneinfo_pcp("Node 0, zone DMA\n  pagesets\n    count: x\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 3"), "{err:#}");
    }

    #[test]
    fn real_meminfo() {
        let m = Meminfo::parse(REAL_MEMINFO).unwrap();
        assert_eq!(m.mem_total(), 24_684_092 * 1024);
        assert_eq!(m.get("Active(anon)"), Some(1_488 * 1024));
        assert_eq!(m.get("HugePages_Total"), Some(0));
        assert_eq!(m.get("Hugepagesize"), Some(2048 * 1024));
        assert_eq!(m.get("SecPageTables"), Some(0));
        assert_eq!(m.get("NoSuchField"), None);
        assert_eq!(m.or0("NoSuchField"), 0);
    }

    #[test]
    fn meminfo_errors_name_the_line() {
        let err = Meminfo::parse("MemTotal: 10 kB\nMemFree 3 kB\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        let err = Meminfo::parse("MemTotal: 10 MB\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
        let err = Meminfo::parse("MemTotal: ten kB\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
        let err = Meminfo::parse("MemFree: 10 kB\n").unwrap_err();
        assert!(format!("{err:#}").contains("no MemTotal"), "{err:#}");
        let err = Meminfo::parse(&format!("MemTotal: {} kB\n", u64::MAX)).unwrap_err();
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
        let err = Meminfo::read(Path::new("/nonexistent/meminfo")).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/meminfo"),
            "{err:#}"
        );
    }

    #[test]
    fn real_vmstat() {
        let v = Vmstat::parse(REAL_VMSTAT).unwrap();
        assert!(v.get("nr_free_pages").is_some());
        assert_eq!(v.get("nr_isolated_anon"), Some(0));
        assert_eq!(v.or0("nr_no_such"), 0);
        let err = Vmstat::parse("nr_free_pages 12\nnr_bad\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        let err = Vmstat::parse("nr_free_pages x\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
    }

    #[test]
    fn sockstat() {
        let s = Sockstat::parse(REAL_SOCKSTAT, Some("FRAG6: inuse 0 memory 0\n")).unwrap();
        assert_eq!(s.udp_pages, 0);
        let text = "sockets: used 300\nTCP: inuse 20 orphan 1 tw 3 alloc 25 mem 16390\n\
                    UDP: inuse 4 mem 12\nUDPLITE: inuse 0\nRAW: inuse 0\nFRAG: inuse 1 memory 4096\n";
        let s = Sockstat::parse(text, Some("TCP6: inuse 2\nFRAG6: inuse 1 memory 1024\n")).unwrap();
        assert_eq!(
            s,
            Sockstat {
                tcp_pages: 16390,
                udp_pages: 12,
                frag_bytes: 5120
            }
        );
        assert_eq!(s.total_bytes(4096), (16390 + 12) * 4096 + 5120);
        assert!(Sockstat::parse("TCP: inuse 1 mem x\n", None).is_err());
        assert!(Sockstat::parse("TCP: inuse 1 mem\n", None).is_err());
        // No TCP line at all: zero, not an error.
        assert_eq!(Sockstat::parse("", None).unwrap(), Sockstat::default());
    }
}
