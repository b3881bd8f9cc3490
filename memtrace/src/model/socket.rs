//! Sockets whose queues hold memory, as the `sockets` stage found them: the end of a trace
//! report and `memtrace sockets`.

/// A process with a file descriptor on a socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketOwner {
    pub pid: u32,
    /// `/proc/PID/comm`; `[exited]` if the process went away while memtrace looked.
    pub comm: String,
    pub cmdline: Option<String>,
    /// Kubernetes pod UID, from the cgroup path.
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
    /// The cgroup path that names the workload (v2, or the v1 memory one on hybrid hosts).
    pub cgroup: Option<String>,
}

/// One socket and the memory it holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Socket {
    /// The network namespace (nsfs inode, as in `/proc/PID/ns/net`).
    pub netns: u64,
    /// `tcp`, `tcp6`, `udp`, `udp6` or `unix`.
    pub family: String,
    /// `stream`, `dgram` or `seqpacket`.
    pub socket_type: String,
    /// `ESTAB`, `LISTEN`, `UNCONN`, `TIME-WAIT`, … (as `ss` spells them).
    pub state: String,
    /// `addr:port` (`[addr]:port` for IPv6, `*` for port 0), or the UNIX name (`@name` for an
    /// abstract one, `*` for none).
    pub local: String,
    /// The peer's `addr:port`; for UNIX the peer's name, else `socket:[INODE]` of the peer,
    /// `*` without a peer.
    pub remote: String,
    /// Socket inode (`socket:[INODE]` in `/proc/PID/fd`); 0 for a socket without a file: a
    /// connection not accepted yet, or one closed by its process.
    pub inode: u64,
    /// Bytes waiting to be read, as the kernel reports them (`ss` Recv-Q): TCP and UNIX payload
    /// bytes, UDP the memory charged. 0 for listeners (see `accept_queue`).
    pub recv_queue: u64,
    /// `ss` Send-Q: TCP bytes not acknowledged, UDP and UNIX memory of skbs sent but not freed.
    /// 0 for listeners.
    pub send_queue: u64,
    /// Listeners: connections waiting for accept().
    pub accept_queue: Option<u64>,
    /// `SK_MEMINFO_RMEM_ALLOC`: memory charged for the receive queue (skb truesize).
    pub rmem_alloc: u64,
    pub rcvbuf: u64,
    /// `SK_MEMINFO_WMEM_ALLOC`: memory of skbs sent and not freed yet.
    pub wmem_alloc: u64,
    /// `SK_MEMINFO_WMEM_QUEUED`: TCP write and retransmit queues.
    pub wmem_queued: u64,
    pub sndbuf: u64,
    /// `SK_MEMINFO_FWD_ALLOC`: reserved, not in use.
    pub fwd_alloc: u64,
    pub optmem: u64,
    /// Bytes in the backlog (arrived while the socket was locked).
    pub backlog: u64,
    /// Packets dropped.
    pub drops: u64,
    /// `rmem_alloc + max(wmem_alloc, wmem_queued) + backlog` (module docs): the sort key.
    pub held_bytes: u64,
    /// For a connection not accepted yet: the inode of the listener whose accept queue holds
    /// it; its owners are that listener's. `None` when several listeners may hold it
    /// (`SO_REUSEPORT`): then its owners are those of all of them.
    pub listener: Option<u64>,
    /// Processes with the socket open (for a connection not accepted: the listener's).
    pub owners: Vec<SocketOwner>,
}

impl Socket {
    /// `rmem_alloc / recv_queue` — how much memory each queued byte costs — when both are
    /// known and non-zero.
    pub fn rmem_ratio(&self) -> Option<f64> {
        (self.recv_queue > 0 && self.rmem_alloc > 0)
            .then(|| self.rmem_alloc as f64 / self.recv_queue as f64)
    }
}

/// The sockets `memtrace sockets` (or the end of a trace report) found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketScan {
    /// The sockets holding at least `min_bytes`, by `held_bytes`, largest first (with
    /// [`CollectOptions::top_rmem`]: the top ones by `rmem_alloc`, in that order).
    pub sockets: Vec<Socket>,
    /// Network namespaces whose sockets were listed.
    pub namespaces: usize,
    /// Sockets seen in them (before `min_bytes`).
    pub scanned: usize,
    /// What could not be seen, and why (one line each; a failure shared by several namespaces
    /// is one line).
    pub notes: Vec<String>,
}
