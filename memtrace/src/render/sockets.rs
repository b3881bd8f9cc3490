//! Sockets as a table: the end of a trace report and `memtrace sockets`.

use std::fmt::Write as _;

use crate::model::{Socket, SocketOwner, SocketScan};
use crate::units::format_bytes;

/// `rmem_alloc / recv_queue` from which a socket's receive queue counts as costing far more
/// than its payload (small payloads pinning large page frags).
pub const LARGE_RATIO: f64 = 2.0;

/// Owners shown per socket in the table.
const OWNERS_SHOWN: usize = 3;
/// Widest `local -> remote` column before it stops being padded.
const MAX_ADDR_WIDTH: usize = 56;

fn sum(sockets: &[Socket], f: impl Fn(&Socket) -> u64) -> u64 {
    sockets.iter().fold(0u64, |a, s| a.saturating_add(f(s)))
}

fn owner_label(o: &SocketOwner) -> String {
    let mut s = format!("{}[{}]", o.comm, o.pid);
    if let Some(pod) = &o.pod_uid {
        let _ = write!(s, " pod {pod}");
    }
    if let Some(c) = &o.container_id {
        // Any text may come back from a saved document: cut by characters, not bytes.
        let short: String = c.chars().take(12).collect();
        let _ = write!(s, " ctr {short}");
    }
    s
}

fn owners_label(s: &Socket) -> String {
    if s.owners.is_empty() {
        return if s.inode == 0 && s.listener.is_none() {
            "- (no file: closed or not accepted)".to_string()
        } else {
            "? (not found in /proc/*/fd)".to_string()
        };
    }
    let mut parts: Vec<String> = s
        .owners
        .iter()
        .take(OWNERS_SHOWN)
        .map(owner_label)
        .collect();
    if s.owners.len() > OWNERS_SHOWN {
        parts.push(format!("+{} more", s.owners.len() - OWNERS_SHOWN));
    }
    let list = parts.join(", ");
    match (s.inode, s.listener) {
        (0, Some(_)) => format!("not accepted by {list}"),
        // Owners without a file or a listener: those of every listener that may hold it.
        (0, None) => format!("not accepted by one of the listeners of {list}"),
        _ => list,
    }
}

fn ratio_label(s: &Socket) -> String {
    match s.rmem_ratio() {
        Some(r) if r >= 100.0 => format!("{r:.0}x"),
        Some(r) => format!("{r:.1}x"),
        None => "-".to_string(),
    }
}

/// The table of the first `top` sockets (0: all) in the order given, with what they hold in
/// total and, when receive queues cost far more memory than their payload, a line saying so.
pub fn render_table(sockets: &[Socket], top: usize) -> String {
    let shown = if top == 0 {
        sockets.len()
    } else {
        top.min(sockets.len())
    };
    let listed = &sockets[..shown];
    let mut out = String::new();
    if sockets.is_empty() {
        out.push_str("No socket holds that much memory.\n");
        return out;
    }
    let addrs: Vec<String> = listed
        .iter()
        .map(|s| format!("{} -> {}", s.local, s.remote))
        .collect();
    let addr_w = addrs
        .iter()
        .map(|a| a.chars().count())
        .max()
        .unwrap_or(0)
        .clamp("LOCAL -> REMOTE".len(), MAX_ADDR_WIDTH);
    let state_w = listed
        .iter()
        .map(|s| s.state.len())
        .max()
        .unwrap_or(0)
        .max("STATE".len());
    let netns_w = listed
        .iter()
        .map(|s| s.netns.to_string().len())
        .max()
        .unwrap_or(0)
        .max("NETNS".len());
    let _ = writeln!(
        out,
        "{:>10} {:>10} {:>10} {:>10} {:>7}  {:<5} {:<state_w$} {:<addr_w$} {:<netns_w$} OWNERS",
        "HELD",
        "RMEM_ALLOC",
        "RECV-Q",
        "SEND-Q",
        "RMEM/Q",
        "PROTO",
        "STATE",
        "LOCAL -> REMOTE",
        "NETNS"
    );
    for (s, addr) in listed.iter().zip(&addrs) {
        let _ = writeln!(
            out,
            "{:>10} {:>10} {:>10} {:>10} {:>7}  {:<5} {:<state_w$} {:<addr_w$} {:<netns_w$} {}",
            format_bytes(s.held_bytes),
            format_bytes(s.rmem_alloc),
            format_bytes(s.recv_queue),
            format_bytes(s.send_queue),
            ratio_label(s),
            s.family,
            s.state,
            addr,
            s.netns,
            owners_label(s)
        );
    }
    let held = sum(listed, |s| s.held_bytes);
    let _ = write!(
        out,
        "{} socket{} listed hold {} ({} bytes): receive queues {} charged for {} queued",
        shown,
        if shown == 1 { "" } else { "s" },
        format_bytes(held),
        held,
        format_bytes(sum(listed, |s| s.rmem_alloc)),
        format_bytes(sum(listed, |s| s.recv_queue)),
    );
    let send = sum(listed, |s| s.wmem_alloc.max(s.wmem_queued));
    if send > 0 {
        let _ = write!(out, ", send side {}", format_bytes(send));
    }
    out.push('\n');
    if shown < sockets.len() {
        let rest = &sockets[shown..];
        let _ = writeln!(
            out,
            "... {} more socket{} hold {}",
            rest.len(),
            if rest.len() == 1 { "" } else { "s" },
            format_bytes(sum(rest, |s| s.held_bytes))
        );
    }
    let costly: Vec<&Socket> = listed
        .iter()
        .filter(|s| s.rmem_ratio().is_some_and(|r| r >= LARGE_RATIO))
        .collect();
    if !costly.is_empty() {
        let rmem = costly
            .iter()
            .fold(0u64, |a, s| a.saturating_add(s.rmem_alloc));
        let queued = costly
            .iter()
            .fold(0u64, |a, s| a.saturating_add(s.recv_queue));
        let _ = writeln!(
            out,
            "{} socket{} charge {} for {} of queued data ({:.1}x, RMEM/Q column): small \
             payloads pin whole page frags (order-3 pages of 32 KiB from skb_page_frag_refill or \
             a driver's receive buffers); reading or closing the socket frees them",
            costly.len(),
            if costly.len() == 1 { "" } else { "s" },
            format_bytes(rmem),
            format_bytes(queued),
            rmem as f64 / queued.max(1) as f64
        );
    }
    out
}

/// The whole `memtrace sockets` output: a header, the table and the notes.
pub fn render_scan(scan: &SocketScan, top: usize, min_bytes: u64) -> String {
    let mut out = format!(
        "Sockets holding at least {} ({} of {} sockets in {} network namespace{}), by memory \
         held (receive + send queues as the kernel charges them):\n",
        format_bytes(min_bytes),
        scan.sockets.len(),
        scan.scanned,
        scan.namespaces,
        if scan.namespaces == 1 { "" } else { "s" }
    );
    out.push_str(&render_table(&scan.sockets, top));
    for note in &scan.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}
