//! Folded stacks for flamegraph.pl / inferno: `outer;...;inner <bytes>` per line.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::summaries::class_in_total;
use crate::model::{Frame, Report};

/// Frame text of the "stack unavailable" bucket.
pub const FOLDED_STACK_UNAVAILABLE: &str = "[stack unavailable]";

/// Frame text of a stack whose frames are not known (id missing from the stack map).
pub const FOLDED_UNKNOWN: &str = "[unknown]";

/// One line per distinct stack holding memory: frames outermost first joined by `;`, a space,
/// and the outstanding bytes. Identical keys are merged (stacks of different kinds differ by
/// their allocator frames; if two still folded the same, merging them is right for a flame
/// graph); lines are sorted lexicographically.
///
/// Like the totals, the graph leaves out backing pages whose kind was traced too (pages under
/// slabs when slab objects are traced, ...), so that no memory is drawn twice.
pub fn render_folded(report: &Report) -> String {
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for s in report
        .stacks
        .iter()
        .filter(|s| s.bytes > 0 && class_in_total(&report.classes, s.class))
    {
        let key = if s.stack_id.is_none() {
            FOLDED_STACK_UNAVAILABLE.to_string()
        } else if s.frames.is_empty() {
            FOLDED_UNKNOWN.to_string()
        } else {
            s.frames
                .iter()
                .rev()
                .map(frame_name)
                .collect::<Vec<_>>()
                .join(";")
        };
        let total = lines.entry(key).or_default();
        *total = total.saturating_add(s.bytes);
    }
    let mut out = String::new();
    for (key, bytes) in &lines {
        let _ = writeln!(out, "{key} {bytes}");
    }
    out
}

/// The symbol (sanitized), or the hex address when unresolved.
pub(crate) fn frame_name(f: &Frame) -> String {
    match f.symbol.as_deref() {
        Some(sym) if !sym.is_empty() => sanitize(sym),
        _ => format!("{:#x}", f.address),
    }
}

/// `;` separates frames and whitespace separates the count: replace both (and control
/// characters) with `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c == ';' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testkit::{mixed_report, sample_report};
    use crate::model::StackReport;

    /// Parses a line the way flamegraph.pl / inferno do: frames, last space, integer.
    fn parse(line: &str) -> (Vec<&str>, u64) {
        let (frames, n) = line.rsplit_once(' ').expect("space before the count");
        let n: u64 = n.parse().expect("integer count");
        (frames.split(';').collect(), n)
    }

    #[test]
    fn folded_lines() {
        let mut r = sample_report(&[], 0);
        // A second stack with the same frames as the first (e.g. same ips in another slot).
        let mut dup: StackReport = r.stacks[0].clone();
        dup.stack_id = Some(42);
        dup.bytes = 100;
        r.stacks.push(dup);
        // A stack whose frames could not be read.
        r.stacks.push(StackReport {
            stack_id: Some(43),
            bytes: 7,
            frames: Vec::new(),
            ..r.stacks[0].clone()
        });
        // Frame names that would break the format.
        r.stacks[1].frames[1].symbol = Some("odd name;x\ty\nz".into());

        let out = render_folded(&r);
        print!("{out}");
        assert!(out.ends_with('\n'));
        let lines: Vec<&str> = out.lines().collect();
        let mut sorted = lines.clone();
        sorted.sort_unstable();
        assert_eq!(lines, sorted, "not sorted");
        // Stacks 1 and 42 merged; 3 (0 bytes) omitted.
        assert_eq!(lines.len(), 4, "{lines:#?}");

        let parsed: Vec<(Vec<&str>, u64)> = lines.iter().map(|l| parse(l)).collect();
        for (frames, _) in &parsed {
            assert!(frames
                .iter()
                .all(|f| !f.is_empty() && !f.contains(['\t', '\n'])));
        }
        let tcp = parsed
            .iter()
            .find(|(f, _)| f.last() == Some(&"__alloc_pages_noprof") && f.len() == 7)
            .expect("tcp stack");
        assert_eq!(
            tcp.0,
            [
                "tcp_sendmsg",
                "tcp_sendmsg_locked",
                "sk_page_frag_refill",
                "skb_page_frag_refill",
                "alloc_pages_noprof",
                "alloc_pages_mpol",
                "__alloc_pages_noprof",
            ]
        );
        assert_eq!(tcp.1, (300 << 20) + 100);

        assert!(lines.contains(
            &"0xffffffffdeadbeef;__handle_mm_fault;odd_name_x_y_z;__alloc_pages_noprof 16384"
        ));
        assert!(lines.contains(&"[stack unavailable] 4096"));
        assert!(lines.contains(&"[unknown] 7"));
        let total: u64 = parsed.iter().map(|(_, n)| n).sum();
        assert_eq!(total, r.stacks.iter().map(|s| s.bytes).sum::<u64>());
    }

    #[test]
    fn empty_report_is_empty() {
        assert_eq!(render_folded(&Report::default()), "");
    }

    #[test]
    fn backing_pages_of_traced_kinds_are_left_out() {
        let r = mixed_report(None);
        let out = render_folded(&r);
        print!("{out}");
        let lines: Vec<(Vec<&str>, u64)> = out.lines().map(parse).collect();
        // Every kind is there, as in the totals; the slab and vmalloc pages are not.
        let total: u64 = lines.iter().map(|(_, n)| n).sum();
        assert_eq!(total, r.totals.bytes);
        assert!(!out.contains("allocate_slab"));
        assert!(!out.contains("alloc_pages_bulk_noprof"));
        assert!(out.contains("pcpu_populate_chunk")); // percpu not traced: its pages count
        assert!(lines.contains(&(
            vec![
                "array_map_alloc",
                "__bpf_map_area_alloc",
                "__vmalloc_node_range_noprof",
                "__get_vm_area_node",
                "alloc_vmap_area",
            ],
            69632
        )));
        assert!(lines.contains(&(vec!["[stack unavailable]"], 64)));
    }
}
