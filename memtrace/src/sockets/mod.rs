//! `memtrace sockets`: the sockets whose queues hold memory, in every network namespace, with
//! the processes (and pods) that own them.
//!
//! This is the other half of the receive-queue case: `memtrace trace` shows order-3 page frags
//! held by `skb_page_frag_refill`, and this finds the socket they are queued on and the process
//! that stopped reading it. The kernel is asked with sock_diag (`diag`: TCP and UDP over IPv4
//! and IPv6 with `INET_DIAG_SKMEMINFO`, UNIX with `UNIX_DIAG_MEMINFO`), once per network
//! namespace (`netns`); owners come from `/proc/PID/fd` (`owners`); `render` prints the table
//! and the JSON document.
//!
//! **Memory held** ([`Socket::held_bytes`], the sort key) is
//! `rmem_alloc + max(wmem_alloc, wmem_queued) + backlog`: what the kernel charges to the socket
//! for its receive queue (skb truesize, page frags included — far above the payload when small
//! payloads pin large frags), its send side, and packets waiting in the backlog while the
//! socket is locked. `wmem_alloc` (skbs handed to the device, not freed yet) and `wmem_queued`
//! (TCP's write and retransmit queue) count the same data twice on TCP (the skbs in flight are
//! clones of queued ones), so only the larger counts; UDP and UNIX have only `wmem_alloc`.
//! `fwd_alloc` is a reservation, not memory in use, and `optmem` (socket options, filters) is
//! small and not queue memory: both are reported but not added. On UNIX sockets the kernel
//! charges queued data to the *sending* socket (`wmem_alloc`): the receiver shows the bytes in
//! `recv_queue`, the sender holds the memory.

pub mod diag;
pub mod netns;
pub mod owners;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

pub use crate::model::{Socket, SocketOwner, SocketScan};
use diag::{DiagSocket, Query};

/// What [`collect_with`] looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectOptions {
    /// Only sockets holding at least this many bytes (0: all sockets).
    pub min_bytes: u64,
    /// Where `/proc` is.
    pub proc_root: PathBuf,
    /// Keep only the `n` sockets with the most `rmem_alloc` (those holding any; `0`: all of
    /// them), by `rmem_alloc`, largest first ([`top_by_rmem_alloc`]) — chosen before the
    /// owners are looked up, so only theirs are.
    pub top_rmem: Option<usize>,
}

impl Default for CollectOptions {
    fn default() -> Self {
        CollectOptions {
            min_bytes: 0,
            proc_root: PathBuf::from("/proc"),
            top_rmem: None,
        }
    }
}

/// The `n` sockets with the most receive-queue memory (`rmem_alloc`, largest first) in every
/// reachable network namespace, with their owners (looked up for these `n` only): the end of
/// a trace report.
pub fn collect_top_by_rmem_alloc(n: usize) -> anyhow::Result<SocketScan> {
    collect_with(&CollectOptions {
        min_bytes: 1,
        top_rmem: Some(n),
        ..CollectOptions::default()
    })
}

/// Notes about namespaces: one line per distinct message, with the namespaces it applies to
/// (hundreds of namespaces failing the same way make one line, not hundreds).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceNotes {
    /// Message → namespace inodes, in the order the messages first came.
    groups: Vec<(String, Vec<u64>)>,
}

impl NamespaceNotes {
    /// `message` applies to namespace `netns`.
    pub fn add(&mut self, message: String, netns: u64) {
        match self.groups.iter_mut().find(|(m, _)| *m == message) {
            Some((_, namespaces)) => namespaces.push(netns),
            None => self.groups.push((message, vec![netns])),
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// One line per message: `MESSAGE (in network namespace 7)` or `MESSAGE (in 300 network
    /// namespaces: 7, 9, … 292 more)`.
    pub fn lines(&self) -> Vec<String> {
        self.groups
            .iter()
            .map(|(message, namespaces)| match namespaces.as_slice() {
                [one] => format!("{message} (in network namespace {one})"),
                many => format!(
                    "{message} (in {} network namespaces: {})",
                    many.len(),
                    join_limited(many, 8)
                ),
            })
            .collect()
    }
}

/// Why dump `query` failed, without the namespace.
fn dump_failure(query: Query, e: &diag::DumpError) -> String {
    match e.kernel_errno() {
        Some(libc::ENOENT) => format!(
            "{} sockets not listed: the kernel has no sock_diag handler for them (module {}_diag \
             not loaded?)",
            query.label(),
            match query {
                Query::Unix => "unix",
                Query::Udp4 | Query::Udp6 => "udp",
                Query::Tcp4 | Query::Tcp6 => "tcp",
            }
        ),
        _ => format!("{} sockets not listed: {e}", query.label()),
    }
}

/// [`collect`] with a minimum size, another `/proc`, or only the top sockets by
/// `rmem_alloc` ([`CollectOptions`]).
pub fn collect_with(opts: &CollectOptions) -> anyhow::Result<SocketScan> {
    let named: Vec<&Path> = netns::NAMED_NETNS_DIRS.iter().map(Path::new).collect();
    let found = netns::discover(&opts.proc_root, &named)?;
    let mut notes = Vec::new();
    let mut ns_notes = NamespaceNotes::default();
    let mut raw: Vec<(u64, DiagSocket)> = Vec::new();
    let mut namespaces = 0;
    let mut denied: Vec<u64> = Vec::new();
    let mut seq = 1u32;
    let can_enter = has_cap(CAP_SYS_ADMIN);
    if !can_enter {
        let others = found.namespaces.iter().filter(|n| !n.own).count();
        notes.push(format!(
            "only memtrace's own network namespace is listed: entering the others (setns) needs \
             CAP_SYS_ADMIN ({others} other namespace(s) found; finding them all needs \
             CAP_SYS_PTRACE)"
        ));
    }
    for ns in found.namespaces.iter().filter(|n| can_enter || n.own) {
        let fd = match netns::diag_socket_in(ns) {
            Ok(fd) => fd,
            Err(e) if ns.own => {
                return Err(anyhow::Error::new(e)
                    .context("opening a sock_diag netlink socket in our own network namespace"))
            }
            Err(netns::EnterError::Permission { inode, .. }) => {
                denied.push(inode);
                continue;
            }
            Err(e) => {
                ns_notes.add(format!("not listed: {}", e.cause()), ns.inode);
                continue;
            }
        };
        let mut any = false;
        let mut failures = Vec::new();
        for query in Query::ALL {
            seq = seq.wrapping_add(1);
            match diag::dump(&fd, query, seq) {
                Ok(d) => {
                    any = true;
                    if d.interrupted {
                        ns_notes.add(
                            format!(
                                "the {} sockets changed during the dump; the list may miss or \
                                 repeat a few",
                                query.label()
                            ),
                            ns.inode,
                        );
                    }
                    raw.extend(d.sockets.into_iter().map(|s| (ns.inode, s)));
                }
                Err(e) => failures.push(dump_failure(query, &e)),
            }
        }
        if any {
            namespaces += 1;
        } else if ns.own {
            anyhow::bail!(
                "sock_diag answered no dump in our own network namespace: {}",
                failures.join("; ")
            );
        }
        for failure in failures {
            ns_notes.add(failure, ns.inode);
        }
    }
    notes.extend(ns_notes.lines());
    if !denied.is_empty() {
        notes.push(format!(
            "{} other network namespace(s) not listed: entering them (setns) was refused{} \
             (namespaces {})",
            denied.len(),
            missing_cap(CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
            join_limited(&denied, 8)
        ));
    }
    if !found.unreadable.is_empty() {
        notes.push(format!(
            "the network namespace of {} could not be read (permission denied{}): namespaces \
             only they use are not listed",
            processes(&opts.proc_root, &found.unreadable),
            missing_cap(CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
        ));
    }

    let scanned = raw.len();
    let sockets = with_owners(raw, opts, &mut notes)?;
    Ok(SocketScan {
        sockets,
        namespaces,
        scanned,
        notes,
    })
}

/// The model of `raw` as `opts` selects it, with the owners of the sockets kept (only theirs
/// are looked up in `opts.proc_root`).
fn with_owners(
    raw: Vec<(u64, DiagSocket)>,
    opts: &CollectOptions,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Socket>> {
    let listeners = Listeners::new(&raw);
    let mut sockets = build(raw, opts.min_bytes);
    if let Some(n) = opts.top_rmem {
        sockets = top_by_rmem_alloc(&sockets, n);
    }
    let wanted = owner_inodes(&sockets, &listeners);
    let index = owners::scan_fds(&opts.proc_root, &wanted).with_context(|| {
        format!(
            "listing {} to find the sockets' processes",
            opts.proc_root.display()
        )
    })?;
    if !index.unreadable.is_empty() {
        notes.push(format!(
            "the open files of {} could not be read (permission denied{}): sockets only they \
             hold show no owner",
            processes(&opts.proc_root, &index.unreadable),
            missing_cap(CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
        ));
    }
    let mut describer = owners::Describer::new(&opts.proc_root);
    attach_owners(&mut sockets, &index, &listeners, |pid| describer.owner(pid));
    Ok(sockets)
}

/// The socket inodes whose processes `sockets` need: their own, or for a connection not
/// accepted yet, those of its candidate listeners.
pub fn owner_inodes(sockets: &[Socket], listeners: &Listeners) -> HashSet<u64> {
    sockets
        .iter()
        .flat_map(|s| {
            let mut inodes = listeners.for_socket(s);
            inodes.push(s.inode);
            inodes
        })
        .filter(|&i| i != 0)
        .collect()
}

const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;

/// Whether this process has capability `bit` in its effective set (`/proc/self/status`);
/// `false` when that cannot be read.
fn has_cap(bit: u32) -> bool {
    crate::privileges::has(bit)
}

/// `; needs NAME` when this process lacks capability `bit`, else nothing (then something else
/// refused: a security module, a protected process).
fn missing_cap(bit: u32, name: &str) -> String {
    if has_cap(bit) {
        String::new()
    } else {
        format!("; needs {name}")
    }
}

/// `3 processes (pid 1 systemd, pid 7 x, …)`: a few pids with their names.
fn processes(proc_root: &Path, pids: &[u32]) -> String {
    const SHOWN: usize = 5;
    let mut named: Vec<String> = pids
        .iter()
        .take(SHOWN)
        .map(|pid| {
            let comm = std::fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
                .map(|c| c.trim().to_string())
                .unwrap_or_default();
            format!("pid {pid} {comm}").trim_end().to_string()
        })
        .collect();
    if pids.len() > SHOWN {
        named.push(format!("… {} more", pids.len() - SHOWN));
    }
    format!(
        "{} process{} ({})",
        pids.len(),
        if pids.len() == 1 { "" } else { "es" },
        named.join(", ")
    )
}

fn join_limited(values: &[u64], max: usize) -> String {
    let mut s: Vec<String> = values.iter().take(max).map(u64::to_string).collect();
    if values.len() > max {
        s.push(format!("… {} more", values.len() - max));
    }
    s.join(", ")
}

/// `ss`'s names of the kernel's socket states (UNIX sockets use the same numbers).
pub fn state_name(state: u8, family: Query) -> String {
    match state {
        1 => "ESTAB",
        2 => "SYN-SENT",
        3 => "SYN-RECV",
        4 => "FIN-WAIT-1",
        5 => "FIN-WAIT-2",
        6 => "TIME-WAIT",
        7 if family == Query::Unix || matches!(family, Query::Udp4 | Query::Udp6) => "UNCONN",
        7 => "CLOSE",
        8 => "CLOSE-WAIT",
        9 => "LAST-ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW-SYN-RECV",
        other => return format!("STATE-{other}"),
    }
    .to_string()
}

fn type_name(t: u8) -> String {
    match libc::c_int::from(t) {
        libc::SOCK_STREAM => "stream".into(),
        libc::SOCK_DGRAM => "dgram".into(),
        libc::SOCK_SEQPACKET => "seqpacket".into(),
        libc::SOCK_RAW => "raw".into(),
        other => format!("type-{other}"),
    }
}

/// `rmem_alloc + max(wmem_alloc, wmem_queued) + backlog` (see the module docs).
pub fn held_bytes(s: &Socket) -> u64 {
    s.rmem_alloc
        .saturating_add(s.wmem_alloc.max(s.wmem_queued))
        .saturating_add(s.backlog)
}

/// Splits an `addr:port` endpoint (`[addr]:port` for IPv6) at its last colon into address and
/// port.
fn endpoint_parts(endpoint: &str) -> Option<(&str, &str)> {
    endpoint.rsplit_once(':')
}

/// The TCP listeners of every namespace, to find the listener whose accept queue holds a
/// connection not accepted yet (a socket without a file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listeners {
    /// (namespace, family, port) → (address, inode) of each listener.
    by_port: HashMap<(u64, String, String), Vec<(String, u64)>>,
}

impl Listeners {
    /// The listeners among `raw`.
    pub fn new(raw: &[(u64, DiagSocket)]) -> Self {
        let mut by_port: HashMap<(u64, String, String), Vec<(String, u64)>> = HashMap::new();
        for (ns, d) in raw {
            if matches!(d.query, Query::Tcp4 | Query::Tcp6) && d.state == diag::STATE_LISTEN {
                if let Some((addr, port)) = endpoint_parts(&d.local) {
                    by_port
                        .entry((*ns, d.query.label().to_string(), port.to_string()))
                        .or_default()
                        .push((addr.to_string(), d.inode));
                }
            }
        }
        for candidates in by_port.values_mut() {
            candidates.sort_by_key(|&(_, inode)| inode);
        }
        Listeners { by_port }
    }

    /// For a TCP connection without a file in a state where its process never closed it
    /// (`ESTAB`, `CLOSE-WAIT`): it waits in an accept queue. The listeners that may hold it,
    /// by inode: those bound to its local address, else the wildcard ones (the kernel prefers
    /// the exact address) — several with `SO_REUSEPORT`, when which one cannot be told.
    /// Empty for any other socket.
    pub fn for_socket(&self, s: &Socket) -> Vec<u64> {
        let waiting = s.inode == 0
            && (s.family == "tcp" || s.family == "tcp6")
            && (s.state == "ESTAB" || s.state == "CLOSE-WAIT");
        let Some((addr, port)) = endpoint_parts(&s.local).filter(|_| waiting) else {
            return Vec::new();
        };
        let Some(candidates) = self
            .by_port
            .get(&(s.netns, s.family.clone(), port.to_string()))
        else {
            return Vec::new();
        };
        let pick = |want: &dyn Fn(&str) -> bool| -> Vec<u64> {
            candidates
                .iter()
                .filter(|(a, _)| want(a))
                .map(|&(_, inode)| inode)
                .collect()
        };
        let exact = pick(&|a| a == addr);
        if exact.is_empty() {
            pick(&|a| a == "0.0.0.0" || a == "[::]")
        } else {
            exact
        }
    }
}

/// The model of the sockets of every namespace: sockets holding at least `min_bytes`, sorted
/// by [`held_bytes`] (largest first; then `rmem_alloc`, namespace, inode), without owners.
/// UNIX peers are named; connections not accepted yet get their listener when only one
/// listener can hold them ([`Listeners::for_socket`]; with several, `listener` stays `None`).
pub fn build(raw: Vec<(u64, DiagSocket)>, min_bytes: u64) -> Vec<Socket> {
    let listeners = Listeners::new(&raw);
    // UNIX names, per namespace.
    let mut unix_names: HashMap<(u64, u64), String> = HashMap::new();
    for (ns, d) in &raw {
        if d.query == Query::Unix && d.local != "*" {
            unix_names.insert((*ns, d.inode), d.local.clone());
        }
    }
    let mut out: Vec<Socket> = raw
        .into_iter()
        .map(|(ns, d)| {
            let m = d.meminfo.unwrap_or_default();
            let listening = d.state == diag::STATE_LISTEN;
            let remote = if d.query == Query::Unix {
                match d.unix_peer {
                    Some(peer) => unix_names
                        .get(&(ns, peer))
                        .cloned()
                        .unwrap_or_else(|| format!("socket:[{peer}]")),
                    None => "*".to_string(),
                }
            } else {
                d.remote.clone()
            };
            let mut s = Socket {
                netns: ns,
                family: d.query.label().to_string(),
                socket_type: type_name(d.socket_type),
                state: state_name(d.state, d.query),
                local: d.local,
                remote,
                inode: d.inode,
                recv_queue: if listening { 0 } else { d.rqueue.unwrap_or(0) },
                send_queue: if listening { 0 } else { d.wqueue.unwrap_or(0) },
                accept_queue: if listening { d.rqueue } else { None },
                rmem_alloc: m.rmem_alloc,
                rcvbuf: m.rcvbuf,
                wmem_alloc: m.wmem_alloc,
                wmem_queued: m.wmem_queued,
                sndbuf: m.sndbuf,
                fwd_alloc: m.fwd_alloc,
                optmem: m.optmem,
                backlog: m.backlog,
                drops: m.drops,
                held_bytes: 0,
                listener: None,
                owners: Vec::new(),
            };
            s.held_bytes = held_bytes(&s);
            // A connection not accepted yet: its listener, when only one can hold it.
            if let [one] = listeners.for_socket(&s).as_slice() {
                s.listener = Some(*one);
            }
            s
        })
        .filter(|s| s.held_bytes >= min_bytes)
        .collect();
    sort_sockets(&mut out);
    out
}

/// Largest `held_bytes` first; then `rmem_alloc`, namespace and inode, so the order is stable.
pub fn sort_sockets(sockets: &mut [Socket]) {
    sockets.sort_by(|a, b| {
        b.held_bytes
            .cmp(&a.held_bytes)
            .then(b.rmem_alloc.cmp(&a.rmem_alloc))
            .then(a.netns.cmp(&b.netns))
            .then(a.inode.cmp(&b.inode))
            .then(a.local.cmp(&b.local))
    });
}

/// The `n` sockets with the most `rmem_alloc` (receive-queue memory) holding any, largest
/// first (`n` = 0: all), for the end of a trace report.
pub fn top_by_rmem_alloc(sockets: &[Socket], n: usize) -> Vec<Socket> {
    let mut v: Vec<Socket> = sockets
        .iter()
        .filter(|s| s.rmem_alloc > 0)
        .cloned()
        .collect();
    v.sort_by(|a, b| {
        b.rmem_alloc
            .cmp(&a.rmem_alloc)
            .then(a.netns.cmp(&b.netns))
            .then(a.inode.cmp(&b.inode))
    });
    if n > 0 {
        v.truncate(n);
    }
    v
}

/// Fills in the owners: the processes with the socket open, or for a connection not accepted
/// yet, those of its listener — of every listener that may hold it when there are several
/// (then `listener` is `None` and the table says "one of the listeners").
pub fn attach_owners(
    sockets: &mut [Socket],
    index: &owners::OwnerIndex,
    listeners: &Listeners,
    mut describe: impl FnMut(u32) -> SocketOwner,
) {
    for s in sockets {
        let inodes = if s.inode == 0 {
            listeners.for_socket(s)
        } else {
            vec![s.inode]
        };
        let pids: BTreeSet<u32> = inodes
            .iter()
            .filter_map(|i| index.by_inode.get(i))
            .flatten()
            .copied()
            .collect();
        if !pids.is_empty() {
            s.owners = pids.into_iter().map(&mut describe).collect();
        }
    }
}

/// Runs `memtrace sockets`.
#[cfg(test)]
mod tests;
