//! sock_diag over `NETLINK_SOCK_DIAG`: the requests (encoded by hand, no netlink crate), the
//! decoding of the replies, and the dump loop on a netlink socket.
//!
//! The encoding and decoding are pure functions on byte buffers, so they are tested on replies
//! captured from a real kernel (`fixtures/`); only [`open`] and [`dump`] make system calls.
//!
//! Hand-written rather than built on `netlink-packet-sock-diag`: that crate rejects the
//! 32-byte `SK_MEMINFO` attribute older kernels send (it expects the newer, longer one), and
//! the memory figures are the whole point here; the wire format memtrace needs is small.
//!
//! Wire formats (`linux/netlink.h`, `linux/sock_diag.h`, `linux/inet_diag.h`,
//! `linux/unix_diag.h`): every message is a 16-byte `nlmsghdr` followed by its payload, padded
//! to 4 bytes (`NLMSG_ALIGN`); a socket reply is an `inet_diag_msg` (72 bytes) or a
//! `unix_diag_msg` (16 bytes) followed by attributes (`nlattr`: u16 length, u16 type, value,
//! padded to 4 bytes, `NLA_ALIGN`). Integers are in host byte order, ports and IP addresses in
//! network byte order.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

/// `sizeof(struct nlmsghdr)`.
pub const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_DUMP_INTR: u16 = 0x10;
/// `NLM_F_ROOT | NLM_F_MATCH`.
const NLM_F_DUMP: u16 = 0x300;
/// The sock_diag request and reply type.
pub const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NETLINK_SOCK_DIAG: libc::c_int = 4;

/// `sizeof(struct inet_diag_req_v2)`.
const INET_DIAG_REQ_LEN: usize = 56;
/// `sizeof(struct inet_diag_msg)`.
const INET_DIAG_MSG_LEN: usize = 72;
/// `INET_DIAG_SKMEMINFO`: `u32 [SK_MEMINFO_VARS]`.
const INET_DIAG_SKMEMINFO: u16 = 7;

/// `sizeof(struct unix_diag_req)`.
const UNIX_DIAG_REQ_LEN: usize = 24;
/// `sizeof(struct unix_diag_msg)`.
const UNIX_DIAG_MSG_LEN: usize = 16;
const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_PEER: u32 = 0x04;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UDIAG_SHOW_MEMINFO: u32 = 0x20;
const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_MEMINFO: u16 = 5;
/// The attribute type without `NLA_F_NESTED` / `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// `TCP_LISTEN`: for a listener, the kernel's queue lengths count connections, not bytes.
pub const STATE_LISTEN: u8 = 10;

const AF_UNIX: u8 = libc::AF_UNIX as u8;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
const IPPROTO_TCP: u8 = libc::IPPROTO_TCP as u8;
const IPPROTO_UDP: u8 = libc::IPPROTO_UDP as u8;

/// `NLMSG_ALIGN` / `NLA_ALIGN`: rounds up to 4 bytes.
fn align4(len: usize) -> usize {
    len.saturating_add(3) & !3
}

/// One sock_diag dump: an address family and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Query {
    Tcp4,
    Tcp6,
    Udp4,
    Udp6,
    Unix,
}

impl Query {
    /// Every dump, in the order they are made.
    pub const ALL: [Query; 5] = [
        Query::Tcp4,
        Query::Tcp6,
        Query::Udp4,
        Query::Udp6,
        Query::Unix,
    ];

    /// The `family` of the model: `tcp`, `tcp6`, `udp`, `udp6`, `unix`.
    pub fn label(self) -> &'static str {
        match self {
            Query::Tcp4 => "tcp",
            Query::Tcp6 => "tcp6",
            Query::Udp4 => "udp",
            Query::Udp6 => "udp6",
            Query::Unix => "unix",
        }
    }

    /// The request for this dump, with sequence number `seq`.
    pub fn encode(self, seq: u32) -> Vec<u8> {
        match self {
            Query::Tcp4 => encode_inet_request(AF_INET, IPPROTO_TCP, seq),
            Query::Tcp6 => encode_inet_request(AF_INET6, IPPROTO_TCP, seq),
            Query::Udp4 => encode_inet_request(AF_INET, IPPROTO_UDP, seq),
            Query::Udp6 => encode_inet_request(AF_INET6, IPPROTO_UDP, seq),
            Query::Unix => encode_unix_request(seq),
        }
    }

    fn is_inet(self) -> bool {
        self != Query::Unix
    }
}

fn push_nlmsghdr(out: &mut Vec<u8>, payload_len: usize, seq: u32) {
    let len = u32::try_from(NLMSG_HDRLEN + payload_len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel fills in our port id.
    out.extend_from_slice(&0u32.to_ne_bytes());
}

/// A dump request for every socket of `family` (`AF_INET`, `AF_INET6`) and `protocol`
/// (`IPPROTO_TCP`, `IPPROTO_UDP`) in every state, with `INET_DIAG_SKMEMINFO`:
/// `nlmsghdr` + `inet_diag_req_v2` (all-zero socket id: no filter), 72 bytes.
pub fn encode_inet_request(family: u8, protocol: u8, seq: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(NLMSG_HDRLEN + INET_DIAG_REQ_LEN);
    push_nlmsghdr(&mut out, INET_DIAG_REQ_LEN, seq);
    out.push(family);
    out.push(protocol);
    // idiag_ext: bit (INET_DIAG_SKMEMINFO - 1).
    out.push(1 << (INET_DIAG_SKMEMINFO - 1));
    out.push(0); // pad
    out.extend_from_slice(&u32::MAX.to_ne_bytes()); // idiag_states: all
    out.resize(NLMSG_HDRLEN + INET_DIAG_REQ_LEN, 0); // struct inet_diag_sockid id
    out
}

/// A dump request for every UNIX socket in every state with its name, peer, queue lengths and
/// memory: `nlmsghdr` + `unix_diag_req`, 40 bytes.
pub fn encode_unix_request(seq: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(NLMSG_HDRLEN + UNIX_DIAG_REQ_LEN);
    push_nlmsghdr(&mut out, UNIX_DIAG_REQ_LEN, seq);
    out.push(AF_UNIX);
    out.push(0); // sdiag_protocol
    out.extend_from_slice(&0u16.to_ne_bytes()); // pad
    out.extend_from_slice(&u32::MAX.to_ne_bytes()); // udiag_states: all
    out.extend_from_slice(&0u32.to_ne_bytes()); // udiag_ino
    let show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | UDIAG_SHOW_MEMINFO;
    out.extend_from_slice(&show.to_ne_bytes());
    out.extend_from_slice(&[0u8; 8]); // udiag_cookie: none
    out
}

/// The kernel's `sk_get_meminfo()` (`SK_MEMINFO_*`), as bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub rmem_alloc: u64,
    pub rcvbuf: u64,
    pub wmem_alloc: u64,
    pub sndbuf: u64,
    pub fwd_alloc: u64,
    pub wmem_queued: u64,
    pub optmem: u64,
    pub backlog: u64,
    pub drops: u64,
}

impl MemInfo {
    /// From the `u32` array; values a kernel does not send are 0, extra ones are ignored.
    fn parse(value: &[u8]) -> Result<MemInfo, DecodeError> {
        if !value.len().is_multiple_of(4) {
            return Err(DecodeError::Malformed(format!(
                "meminfo attribute of {} bytes is not a u32 array",
                value.len()
            )));
        }
        let mut v = [0u64; 9];
        for (slot, chunk) in v.iter_mut().zip(value.chunks_exact(4)) {
            *slot = u64::from(read_u32(chunk, 0));
        }
        Ok(MemInfo {
            rmem_alloc: v[0],
            rcvbuf: v[1],
            wmem_alloc: v[2],
            sndbuf: v[3],
            fwd_alloc: v[4],
            wmem_queued: v[5],
            optmem: v[6],
            backlog: v[7],
            drops: v[8],
        })
    }
}

/// One socket as sock_diag describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    pub query: Query,
    /// Kernel state (`TCP_ESTABLISHED` = 1 … `TCP_NEW_SYN_RECV` = 12; UNIX sockets use the
    /// same numbers).
    pub state: u8,
    /// `SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_SEQPACKET` (UNIX: `udiag_type`; TCP: stream, UDP:
    /// dgram).
    pub socket_type: u8,
    /// `addr:port` (IPv6 as `[addr]:port`, port 0 as `*`), or the UNIX name (`@` for an
    /// abstract one, `*` for none).
    pub local: String,
    /// The peer's `addr:port`; empty for UNIX (see `unix_peer`).
    pub remote: String,
    /// The socket inode (`socket:[INODE]` in `/proc/PID/fd`); 0 for sockets without a file
    /// (not accepted yet, closed, time-wait).
    pub inode: u64,
    /// Inet: `idiag_rqueue` (TCP: payload bytes not read; UDP: memory charged; listener:
    /// connections waiting for accept()). UNIX: `UNIX_DIAG_RQLEN` (bytes queued; listener:
    /// connections). `None` when the kernel did not send it.
    pub rqueue: Option<u64>,
    /// Inet `idiag_wqueue` / UNIX `UNIX_DIAG_RQLEN` second field.
    pub wqueue: Option<u64>,
    pub meminfo: Option<MemInfo>,
    /// UNIX: the peer's inode.
    pub unix_peer: Option<u64>,
}

/// What a reply buffer held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub sockets: Vec<DiagSocket>,
    /// `NLMSG_DONE` was seen: the dump is complete.
    pub done: bool,
    /// `NLM_F_DUMP_INTR`: the socket tables changed during the dump, it may be inconsistent.
    pub interrupted: bool,
}

/// Why a reply could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed sock_diag reply: {0}")]
    Malformed(String),
    /// `NLMSG_ERROR` (or an error in `NLMSG_DONE`) with this errno.
    #[error("the kernel answered the sock_diag request with: {}", io::Error::from_raw_os_error(*.0))]
    Kernel(i32),
}

fn read_u16(buf: &[u8], at: usize) -> u16 {
    let mut b = [0u8; 2];
    b.copy_from_slice(&buf[at..at + 2]);
    u16::from_ne_bytes(b)
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_ne_bytes(b)
}

/// One netlink message: type, flags, sequence number and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
    /// The whole message (header and payload, without the alignment padding).
    pub bytes: &'a [u8],
}

/// Splits a datagram into its netlink messages, checking every length.
pub fn split_messages(buf: &[u8]) -> Result<Vec<Message<'_>>, DecodeError> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        let rest = &buf[off..];
        if rest.len() < NLMSG_HDRLEN {
            return Err(DecodeError::Malformed(format!(
                "{} trailing bytes at offset {off}, shorter than a netlink header",
                rest.len()
            )));
        }
        let len = read_u32(rest, 0) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(DecodeError::Malformed(format!(
                "message at offset {off} claims {len} bytes, {} available",
                rest.len()
            )));
        }
        out.push(Message {
            kind: read_u16(rest, 4),
            flags: read_u16(rest, 6),
            seq: read_u32(rest, 8),
            payload: &rest[NLMSG_HDRLEN..len],
            bytes: &rest[..len],
        });
        off += align4(len).min(rest.len());
    }
    Ok(out)
}

/// Decodes one reply datagram of dump `query` (sequence number `seq`) into `out`. Messages of
/// another sequence number are skipped; an error message ends the dump with its errno.
pub fn decode(buf: &[u8], query: Query, seq: u32, out: &mut Decoded) -> Result<(), DecodeError> {
    for msg in split_messages(buf)? {
        if msg.seq != seq {
            continue;
        }
        if msg.flags & NLM_F_DUMP_INTR != 0 {
            out.interrupted = true;
        }
        match msg.kind {
            NLMSG_NOOP => {}
            NLMSG_DONE => {
                // The payload, when present, is an int: 0 or a negative errno.
                if msg.payload.len() >= 4 {
                    let err = read_u32(msg.payload, 0) as i32;
                    if err < 0 {
                        return Err(DecodeError::Kernel(-err));
                    }
                }
                out.done = true;
            }
            NLMSG_ERROR => {
                if msg.payload.len() < 4 {
                    return Err(DecodeError::Malformed(
                        "error message without an error code".to_string(),
                    ));
                }
                let err = read_u32(msg.payload, 0) as i32;
                if err != 0 {
                    return Err(DecodeError::Kernel(err.saturating_neg()));
                }
                // An acknowledgement: nothing to do.
            }
            NLMSG_OVERRUN => {
                return Err(DecodeError::Malformed(
                    "data lost (NLMSG_OVERRUN)".to_string(),
                ))
            }
            SOCK_DIAG_BY_FAMILY => out.sockets.push(if query.is_inet() {
                decode_inet(msg.payload, query)?
            } else {
                decode_unix(msg.payload)?
            }),
            _ => {}
        }
    }
    Ok(())
}

/// The attributes after a fixed header, as (type, value).
fn attributes(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, DecodeError> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        let rest = &buf[off..];
        if rest.len() < 4 {
            return Err(DecodeError::Malformed(format!(
                "{} trailing attribute bytes",
                rest.len()
            )));
        }
        let len = usize::from(read_u16(rest, 0));
        if len < 4 || len > rest.len() {
            return Err(DecodeError::Malformed(format!(
                "attribute claims {len} bytes, {} available",
                rest.len()
            )));
        }
        out.push((read_u16(rest, 2) & NLA_TYPE_MASK, &rest[4..len]));
        off += align4(len).min(rest.len());
    }
    Ok(out)
}

fn inet_endpoint(family: u8, port_be: &[u8], addr: &[u8]) -> String {
    let port = u16::from_be_bytes([port_be[0], port_be[1]]);
    let port = if port == 0 {
        "*".to_string()
    } else {
        port.to_string()
    };
    if family == AF_INET6 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&addr[..16]);
        format!("[{}]:{port}", Ipv6Addr::from(a))
    } else {
        format!(
            "{}:{port}",
            Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])
        )
    }
}

/// `inet_diag_msg` + attributes.
fn decode_inet(payload: &[u8], query: Query) -> Result<DiagSocket, DecodeError> {
    if payload.len() < INET_DIAG_MSG_LEN {
        return Err(DecodeError::Malformed(format!(
            "inet_diag_msg of {} bytes, expected at least {INET_DIAG_MSG_LEN}",
            payload.len()
        )));
    }
    let family = payload[0];
    if family != AF_INET && family != AF_INET6 {
        return Err(DecodeError::Malformed(format!(
            "inet_diag_msg of address family {family}"
        )));
    }
    // inet_diag_sockid at 4: sport@0 dport@2 src@4 dst@20 if@36 cookie@40.
    let id = &payload[4..52];
    let mut meminfo = None;
    for (kind, value) in attributes(&payload[INET_DIAG_MSG_LEN..])? {
        if kind == INET_DIAG_SKMEMINFO {
            meminfo = Some(MemInfo::parse(value)?);
        }
    }
    let socket_type = if matches!(query, Query::Tcp4 | Query::Tcp6) {
        libc::SOCK_STREAM
    } else {
        libc::SOCK_DGRAM
    };
    Ok(DiagSocket {
        query,
        state: payload[1],
        socket_type: socket_type as u8,
        local: inet_endpoint(family, &id[0..2], &id[4..20]),
        remote: inet_endpoint(family, &id[2..4], &id[20..36]),
        // idiag_expires@52 rqueue@56 wqueue@60 uid@64 inode@68.
        rqueue: Some(u64::from(read_u32(payload, 56))),
        wqueue: Some(u64::from(read_u32(payload, 60))),
        inode: u64::from(read_u32(payload, 68)),
        meminfo,
        unix_peer: None,
    })
}

/// A UNIX socket name: a path up to its NUL, `@name` for the abstract namespace, `*` for none.
fn unix_name(value: &[u8]) -> String {
    match value.split_first() {
        None => "*".to_string(),
        // As `ss` shows them: `@` for the leading NUL (and any other NUL in the name).
        Some((0, abstract_name)) => {
            format!("@{}", String::from_utf8_lossy(abstract_name)).replace('\0', "@")
        }
        Some(_) => {
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            String::from_utf8_lossy(&value[..end]).into_owned()
        }
    }
}

/// `unix_diag_msg` + attributes.
fn decode_unix(payload: &[u8]) -> Result<DiagSocket, DecodeError> {
    if payload.len() < UNIX_DIAG_MSG_LEN {
        return Err(DecodeError::Malformed(format!(
            "unix_diag_msg of {} bytes, expected at least {UNIX_DIAG_MSG_LEN}",
            payload.len()
        )));
    }
    if payload[0] != AF_UNIX {
        return Err(DecodeError::Malformed(format!(
            "unix_diag_msg of address family {}",
            payload[0]
        )));
    }
    let mut s = DiagSocket {
        query: Query::Unix,
        socket_type: payload[1],
        state: payload[2],
        local: "*".to_string(),
        remote: String::new(),
        inode: u64::from(read_u32(payload, 4)),
        rqueue: None,
        wqueue: None,
        meminfo: None,
        unix_peer: None,
    };
    for (kind, value) in attributes(&payload[UNIX_DIAG_MSG_LEN..])? {
        match kind {
            UNIX_DIAG_NAME => s.local = unix_name(value),
            UNIX_DIAG_PEER if value.len() >= 4 => {
                let peer = read_u32(value, 0);
                s.unix_peer = (peer != 0).then_some(u64::from(peer));
            }
            UNIX_DIAG_RQLEN if value.len() >= 8 => {
                s.rqueue = Some(u64::from(read_u32(value, 0)));
                s.wqueue = Some(u64::from(read_u32(value, 4)));
            }
            UNIX_DIAG_MEMINFO => s.meminfo = Some(MemInfo::parse(value)?),
            UNIX_DIAG_PEER | UNIX_DIAG_RQLEN => {
                return Err(DecodeError::Malformed(format!(
                    "UNIX attribute {kind} of {} bytes",
                    value.len()
                )))
            }
            _ => {}
        }
    }
    Ok(s)
}

// ------------------------------------------------------------------------------------------
// System calls
// ------------------------------------------------------------------------------------------

/// How long one receive may wait for the kernel.
const RECV_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Receive buffer: larger than any dump datagram the kernel sends (it sizes them to at most
/// 32 KiB, or the reader's buffer); a larger datagram is detected, not truncated silently.
const RECV_BUFFER: usize = 256 << 10;
/// A dump of more datagrams than this is not believed (a kernel that never sends DONE).
const MAX_DATAGRAMS: usize = 1 << 20;

fn os_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The kernel's netlink address: port id 0, no multicast groups.
fn kernel_address() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain data for which all-zero is valid.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    kernel
}

/// Sets `SO_RCVTIMEO`: a receive waiting longer fails with `EAGAIN`.
fn set_recv_timeout(fd: &OwnedFd, timeout: std::time::Duration) -> io::Result<()> {
    let timeout = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    // SAFETY: `timeout` is a live timeval and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(os_error("setsockopt(SO_RCVTIMEO) on the sock_diag socket"));
    }
    Ok(())
}

/// Opens a `NETLINK_SOCK_DIAG` socket in the calling thread's network namespace (a netlink
/// socket stays in the namespace it was created in), connected to the kernel: the kernel then
/// refuses datagrams other local sockets send to our port id (`ECONNREFUSED` to them), so no
/// other process can forge replies.
pub fn open() -> io::Result<OwnedFd> {
    // SAFETY: socket() has no memory-safety preconditions.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(os_error("socket(AF_NETLINK, NETLINK_SOCK_DIAG)"));
    }
    // SAFETY: `fd` was just returned by socket() and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let kernel = kernel_address();
    // SAFETY: `kernel` is live for the call and the length passed is its size.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(os_error("connecting the sock_diag socket to the kernel"));
    }
    set_recv_timeout(&fd, RECV_TIMEOUT)?;
    Ok(fd)
}

/// Why a dump failed.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl DumpError {
    /// The errno the kernel answered with, if that is what failed.
    pub fn kernel_errno(&self) -> Option<i32> {
        match self {
            DumpError::Decode(DecodeError::Kernel(e)) => Some(*e),
            _ => None,
        }
    }
}

/// Sends `request` to the kernel, retrying when a signal interrupts the call.
fn send_request(fd: &OwnedFd, request: &[u8], query: Query) -> io::Result<()> {
    let kernel = kernel_address();
    loop {
        // SAFETY: `request` and `kernel` are live for the call and the lengths passed are
        // theirs.
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io::Error::new(
                e.kind(),
                format!("sending the {} sock_diag request: {e}", query.label()),
            ));
        }
        if sent as usize != request.len() {
            return Err(io::Error::other(format!(
                "sending the {} sock_diag request: {sent} of {} bytes sent",
                query.label(),
                request.len()
            )));
        }
        return Ok(());
    }
}

/// Receives the next datagram from the kernel into `buf` and returns its length (possibly
/// more than `buf.len()`: `MSG_TRUNC`). Retries on `EINTR`; skips datagrams whose sender is
/// not the kernel (port id 0); a wait longer than `timeout` (the socket's `SO_RCVTIMEO`) is an
/// error saying so.
fn receive(
    fd: &OwnedFd,
    buf: &mut [u8],
    query: Query,
    timeout: std::time::Duration,
) -> Result<usize, DumpError> {
    loop {
        // SAFETY: sockaddr_nl is plain data for which all-zero is valid.
        let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // MSG_TRUNC: the return value is the datagram's real length even if it did not fit.
        // SAFETY: `buf` is live and writable for `buf.len()` bytes; `from` and `from_len` are
        // live and `from_len` is the size of `from`.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
                (&mut from as *mut libc::sockaddr_nl).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "receiving the {} sock_diag dump: no reply from the kernel within {} s",
                        query.label(),
                        timeout.as_secs_f64()
                    ),
                )
                .into()),
                _ => Err(io::Error::new(
                    e.kind(),
                    format!("receiving the {} sock_diag dump: {e}", query.label()),
                )
                .into()),
            };
        }
        if from.nl_family != libc::AF_NETLINK as libc::sa_family_t || from.nl_pid != 0 {
            // Not from the kernel (cannot happen on a connected socket): not a reply.
            continue;
        }
        return Ok(n as usize);
    }
}

/// Sends the request of `query` and calls `each` with every reply datagram until the dump
/// ends, returning the decoded sockets.
pub fn dump_with(
    fd: &OwnedFd,
    query: Query,
    seq: u32,
    mut each: impl FnMut(&[u8]),
) -> Result<Decoded, DumpError> {
    send_request(fd, &query.encode(seq), query)?;
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut out = Decoded::default();
    for _ in 0..MAX_DATAGRAMS {
        let n = receive(fd, &mut buf, query, RECV_TIMEOUT)?;
        if n > buf.len() {
            return Err(DecodeError::Malformed(format!(
                "a {n}-byte datagram did not fit the {}-byte buffer",
                buf.len()
            ))
            .into());
        }
        if n == 0 {
            return Err(DecodeError::Malformed("empty datagram".to_string()).into());
        }
        each(&buf[..n]);
        decode(&buf[..n], query, seq, &mut out)?;
        if out.done {
            return Ok(out);
        }
    }
    Err(DecodeError::Malformed(format!("no end after {MAX_DATAGRAMS} datagrams")).into())
}

/// [`dump_with`] without looking at the datagrams.
pub fn dump(fd: &OwnedFd, query: Query, seq: u32) -> Result<Decoded, DumpError> {
    dump_with(fd, query, seq, |_| {})
}

#[cfg(test)]
mod capture {
    //! Makes a few sockets on loopback, dumps them and keeps the real reply messages of just
    //! those sockets (plus the real `NLMSG_DONE`), and checks each kind was found. With
    //! `MEMTRACE_CAPTURE_FIXTURES=DIR` (`cargo test -p memtrace --lib capture_fixtures`) it
    //! writes them to `DIR/{tcp,tcp6,udp,unix}.bin`: how `fixtures/` was made.
    use super::*;
    use std::io::Write as _;
    use std::net::{TcpListener, TcpStream, UdpSocket};
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};

    fn ino(fd: &impl std::os::fd::AsFd) -> u64 {
        let f = std::fs::File::from(fd.as_fd().try_clone_to_owned().unwrap());
        f.metadata().unwrap().ino()
    }

    #[test]
    fn capture_fixtures() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = std::env::var_os("MEMTRACE_CAPTURE_FIXTURES")
            .map_or_else(|| scratch.path().to_path_buf(), std::path::PathBuf::from);
        let l4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c4 = TcpStream::connect(l4.local_addr().unwrap()).unwrap();
        let (a4, _) = l4.accept().unwrap();
        c4.write_all(&vec![7u8; 100_000]).unwrap();
        let l6 = TcpListener::bind("[::1]:0").unwrap();
        let mut c6 = TcpStream::connect(l6.local_addr().unwrap()).unwrap();
        let (a6, _) = l6.accept().unwrap();
        c6.write_all(&[1u8; 10]).unwrap();
        let u4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        let s4 = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..3 {
            s4.send_to(&[9u8; 1000], u4.local_addr().unwrap()).unwrap();
        }
        // In the scratch directory: removed with it, even when a check panics.
        let tmp = scratch
            .path()
            .join(format!("memtrace-fixture-{}.sock", std::process::id()));
        let ul = UnixListener::bind(&tmp).unwrap();
        let mut uc = UnixStream::connect(&tmp).unwrap();
        let (ua, _) = ul.accept().unwrap();
        uc.write_all(&[3u8; 5000]).unwrap();
        // Abstract names are per network namespace, not per directory: the pid keeps two runs
        // on one host apart.
        let abstract_name = format!("memtrace-fixture-{}", std::process::id());
        let ud = UnixDatagram::bind_addr(
            &<std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(abstract_name.as_bytes()).unwrap(),
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let ports: Vec<u16> = [
            l4.local_addr().unwrap().port(),
            l6.local_addr().unwrap().port(),
            u4.local_addr().unwrap().port(),
        ]
        .to_vec();
        let unix_inodes = [ino(&ul), ino(&uc), ino(&ua), ino(&ud)];
        let _keep = (&a4, &a6, &s4);
        let fd = open().unwrap();
        for (i, (query, name)) in [
            (Query::Tcp4, "tcp"),
            (Query::Tcp6, "tcp6"),
            (Query::Udp4, "udp"),
            (Query::Unix, "unix"),
        ]
        .into_iter()
        .enumerate()
        {
            let seq = 100 + i as u32;
            let mut datagrams = Vec::new();
            dump_with(&fd, query, seq, |d| datagrams.push(d.to_vec())).unwrap();
            let mut kept = Vec::new();
            for d in &datagrams {
                for m in split_messages(d).unwrap() {
                    let mut one = Decoded::default();
                    decode(m.bytes, query, seq, &mut one).unwrap();
                    let keep = match one.sockets.first() {
                        None => m.kind == NLMSG_DONE,
                        Some(s) if query == Query::Unix => unix_inodes.contains(&s.inode),
                        Some(s) => ports.iter().any(|p| {
                            s.local.ends_with(&format!(":{p}"))
                                || s.remote.ends_with(&format!(":{p}"))
                        }),
                    };
                    if keep {
                        eprintln!("{name} seq {seq}: {:?}", one.sockets.first());
                        kept.extend_from_slice(m.bytes);
                        kept.resize(align4(kept.len()), 0);
                    }
                }
            }
            // Our sockets of this kind were found and the kept messages decode on their own.
            let mut again = Decoded::default();
            decode(&kept, query, seq, &mut again).unwrap();
            assert!(
                !again.sockets.is_empty(),
                "{name}: none of our sockets in the dump"
            );
            std::fs::write(dir.join(format!("{name}.bin")), &kept).unwrap();
        }
        eprintln!("unix inodes {unix_inodes:?}, path {}", tmp.display());
    }
}

#[cfg(test)]
mod syscalls {
    //! The netlink socket against other local senders and a silent kernel.
    use super::*;

    /// A reply claiming one UNIX socket of inode `inode`, then the end of the dump.
    fn forged_reply(seq: u32, inode: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut push = |kind: u16, payload: &[u8]| {
            let len = (NLMSG_HDRLEN + payload.len()) as u32;
            out.extend_from_slice(&len.to_ne_bytes());
            out.extend_from_slice(&kind.to_ne_bytes());
            out.extend_from_slice(&0x2u16.to_ne_bytes()); // NLM_F_MULTI
            out.extend_from_slice(&seq.to_ne_bytes());
            out.extend_from_slice(&0u32.to_ne_bytes());
            out.extend_from_slice(payload);
            out.resize(align4(out.len()), 0);
        };
        let mut unix = vec![AF_UNIX, libc::SOCK_STREAM as u8, 1, 0];
        unix.extend_from_slice(&inode.to_ne_bytes());
        unix.extend_from_slice(&[0; 8]);
        push(SOCK_DIAG_BY_FAMILY, &unix);
        push(NLMSG_DONE, &0i32.to_ne_bytes());
        out
    }

    /// Our socket's netlink port id.
    fn port_id(fd: &OwnedFd) -> u32 {
        // SAFETY: sockaddr_nl is plain data for which all-zero is valid.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `addr` and `len` are live and `len` is the size of `addr`.
        let rc = unsafe {
            libc::getsockname(
                fd.as_raw_fd(),
                (&mut addr as *mut libc::sockaddr_nl).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        addr.nl_pid
    }

    #[test]
    fn replies_forged_by_another_socket_are_not_read() {
        let ours = open().unwrap();
        // connect() bound it to a port id.
        let port = port_id(&ours);
        assert_ne!(port, 0);
        // Any local process can open a netlink socket of the same protocol and send to a port.
        // SAFETY: socket() has no memory-safety preconditions.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        assert!(raw >= 0, "{}", io::Error::last_os_error());
        // SAFETY: `raw` was just returned by socket() and nothing else owns it.
        let attacker = unsafe { OwnedFd::from_raw_fd(raw) };
        let seq = 77;
        const FORGED: u32 = 0x0dea_dbee;
        let forged = forged_reply(seq, FORGED);
        // SAFETY: sockaddr_nl is plain data for which all-zero is valid.
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        to.nl_pid = port;
        // SAFETY: `forged` and `to` are live for the call and the lengths passed are theirs.
        let sent = unsafe {
            libc::sendto(
                attacker.as_raw_fd(),
                forged.as_ptr().cast(),
                forged.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        // The kernel refuses datagrams to a socket connected to someone else.
        let err = io::Error::last_os_error();
        assert!(sent < 0, "the forged reply was accepted");
        assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED), "{err}");
        // And the dump is the kernel's: the forged socket is not in it.
        let d = dump(&ours, Query::Unix, seq).unwrap();
        assert!(d.done);
        assert!(
            d.sockets.iter().all(|s| s.inode != u64::from(FORGED)),
            "the forged socket was listed"
        );
    }

    #[test]
    fn a_silent_kernel_is_a_timeout() {
        let fd = open().unwrap();
        let timeout = std::time::Duration::from_millis(200);
        set_recv_timeout(&fd, timeout).unwrap();
        // Nothing was asked: nothing comes.
        let mut buf = vec![0u8; 4096];
        let err = receive(&fd, &mut buf, Query::Tcp4, timeout).unwrap_err();
        let DumpError::Io(e) = &err else {
            panic!("{err}")
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(
            err.to_string()
                .contains("tcp sock_diag dump: no reply from the kernel within 0.2 s"),
            "{err}"
        );
    }
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    //! The fixtures are real replies of this machine's kernel (6.18, x86_64), captured by
    //! `capture::capture_fixtures`: a TCP listener on 127.0.0.1 with an established pair whose
    //! receiver has 100 000 bytes unread, the same on [::1] with 10 bytes, a UDP socket with
    //! three 1000-byte datagrams queued, and UNIX sockets (a listener on a path, a connected
    //! stream pair with 5000 bytes unread, an abstract datagram socket).
    use super::*;

    const TCP: &[u8] = include_bytes!("fixtures/tcp.bin");
    const TCP6: &[u8] = include_bytes!("fixtures/tcp6.bin");
    const UDP: &[u8] = include_bytes!("fixtures/udp.bin");
    const UNIX: &[u8] = include_bytes!("fixtures/unix.bin");

    fn decoded(buf: &[u8], query: Query, seq: u32) -> Result<Decoded, DecodeError> {
        let mut out = Decoded::default();
        decode(buf, query, seq, &mut out)?;
        Ok(out)
    }

    #[test]
    fn inet_request_bytes() {
        let req = encode_inet_request(AF_INET, IPPROTO_TCP, 0x0102_0304);
        #[rustfmt::skip]
        let mut expected = vec![
            72, 0, 0, 0,          // nlmsg_len
            20, 0,                // SOCK_DIAG_BY_FAMILY
            0x01, 0x03,           // NLM_F_REQUEST | NLM_F_DUMP
            4, 3, 2, 1,           // seq
            0, 0, 0, 0,           // pid
            2, 6,                 // AF_INET, IPPROTO_TCP
            0x40, 0,              // idiag_ext = 1 << (INET_DIAG_SKMEMINFO - 1), pad
            0xff, 0xff, 0xff, 0xff, // all states
        ];
        expected.resize(72, 0);
        assert_eq!(req, expected);
        let req6 = Query::Udp6.encode(7);
        assert_eq!(req6.len(), 72);
        assert_eq!(&req6[16..18], &[10, 17]);
        assert_eq!(Query::Tcp6.encode(1)[16..18], [10, 6]);
        assert_eq!(Query::Udp4.encode(1)[16..18], [2, 17]);
    }

    #[test]
    fn unix_request_bytes() {
        #[rustfmt::skip]
        let expected = vec![
            40, 0, 0, 0, 20, 0, 0x01, 0x03, 9, 0, 0, 0, 0, 0, 0, 0,
            1, 0, 0, 0,             // AF_UNIX, protocol, pad
            0xff, 0xff, 0xff, 0xff, // all states
            0, 0, 0, 0,             // udiag_ino
            0x35, 0, 0, 0,          // NAME | PEER | RQLEN | MEMINFO
            0, 0, 0, 0, 0, 0, 0, 0, // cookie
        ];
        assert_eq!(encode_unix_request(9), expected);
        assert_eq!(Query::Unix.encode(9), expected);
    }

    #[test]
    fn decodes_tcp_fixture() {
        let d = decoded(TCP, Query::Tcp4, 100).unwrap();
        assert!(d.done && !d.interrupted);
        assert_eq!(d.sockets.len(), 3);
        let listener = &d.sockets[0];
        assert_eq!(
            (
                listener.state,
                listener.local.as_str(),
                listener.remote.as_str()
            ),
            (STATE_LISTEN, "127.0.0.1:39747", "0.0.0.0:*")
        );
        assert_eq!(listener.inode, 28842917);
        assert_eq!((listener.rqueue, listener.wqueue), (Some(0), Some(128)));
        let receiver = &d.sockets[1];
        assert_eq!(
            *receiver,
            DiagSocket {
                query: Query::Tcp4,
                state: 1,
                socket_type: libc::SOCK_STREAM as u8,
                local: "127.0.0.1:39747".into(),
                remote: "127.0.0.1:49920".into(),
                inode: 28842919,
                rqueue: Some(100_000),
                wqueue: Some(0),
                meminfo: Some(MemInfo {
                    rmem_alloc: 102_496,
                    rcvbuf: 131_072,
                    wmem_alloc: 0,
                    sndbuf: 4_194_304,
                    fwd_alloc: 4000,
                    wmem_queued: 0,
                    optmem: 0,
                    backlog: 0,
                    drops: 1,
                }),
                unix_peer: None,
            }
        );
        assert_eq!(d.sockets[2].local, "127.0.0.1:49920");
        assert_eq!(d.sockets[2].inode, 28842918);
    }

    #[test]
    fn decodes_tcp6_and_udp_fixtures() {
        let d = decoded(TCP6, Query::Tcp6, 101).unwrap();
        assert!(d.done);
        let locals: Vec<&str> = d.sockets.iter().map(|s| s.local.as_str()).collect();
        assert_eq!(locals, ["[::1]:38343", "[::1]:38343", "[::1]:58246"]);
        assert_eq!(d.sockets[0].remote, "[::]:*");
        assert_eq!(d.sockets[1].remote, "[::1]:58246");
        assert_eq!(d.sockets[1].rqueue, Some(10));
        assert_eq!(d.sockets[1].meminfo.map(|m| m.rmem_alloc), Some(842));

        let d = decoded(UDP, Query::Udp4, 102).unwrap();
        assert!(d.done);
        assert_eq!(d.sockets.len(), 1);
        let s = &d.sockets[0];
        assert_eq!((s.state, s.socket_type), (7, libc::SOCK_DGRAM as u8));
        assert_eq!(
            (s.local.as_str(), s.remote.as_str()),
            ("127.0.0.1:41433", "0.0.0.0:*")
        );
        // UDP reports the memory charged as its receive queue.
        assert_eq!(s.rqueue, Some(6912));
        assert_eq!(s.meminfo.map(|m| m.rmem_alloc), Some(6912));
    }

    #[test]
    fn decodes_unix_fixture() {
        let d = decoded(UNIX, Query::Unix, 103).unwrap();
        assert!(d.done);
        let path = "/tmp/memtrace-fixture-2973.sock";
        type Row<'a> = (u64, u8, u8, &'a str, Option<u64>, Option<u64>, Option<u64>);
        let summary: Vec<Row> = d
            .sockets
            .iter()
            .map(|s| {
                (
                    s.inode,
                    s.socket_type,
                    s.state,
                    s.local.as_str(),
                    s.unix_peer,
                    s.rqueue,
                    s.meminfo.map(|m| m.wmem_alloc),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (28842925, 1, 10, path, None, Some(0), Some(0)),
                (28842927, 1, 1, path, Some(28842926), Some(5000), Some(0)),
                // The sender is charged for what waits in its peer's queue.
                (28842926, 1, 1, "*", Some(28842927), Some(0), Some(6400)),
                (28842928, 2, 7, "@memtrace-fixture", None, Some(0), Some(0)),
            ]
        );
    }

    #[test]
    fn other_sequence_numbers_are_skipped() {
        let d = decoded(TCP, Query::Tcp4, 5).unwrap();
        assert_eq!(d, Decoded::default());
    }

    /// An `nlmsghdr` with `payload`.
    fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(align4(m.len()), 0);
        m
    }

    #[test]
    fn errors_and_control_messages() {
        // -ENOENT followed by the request header: no handler for the protocol.
        let mut payload = (-libc::ENOENT).to_ne_bytes().to_vec();
        payload.extend_from_slice(&Query::Udp4.encode(3)[..16]);
        let err = decoded(&message(NLMSG_ERROR, 0, 3, &payload), Query::Udp4, 3).unwrap_err();
        assert_eq!(err, DecodeError::Kernel(libc::ENOENT));
        assert!(err.to_string().contains("No such file"), "{err}");
        // An acknowledgement (error 0), a no-op, an unknown type: nothing.
        let mut buf = message(NLMSG_ERROR, 0, 3, &0i32.to_ne_bytes());
        buf.extend(message(NLMSG_NOOP, 0, 3, &[]));
        buf.extend(message(99, 0, 3, &[1, 2, 3]));
        assert_eq!(decoded(&buf, Query::Udp4, 3).unwrap(), Decoded::default());
        // DONE with an error code, DONE with an interrupted dump.
        let err = decoded(
            &message(NLMSG_DONE, 0, 3, &(-libc::EBUSY).to_ne_bytes()),
            Query::Tcp4,
            3,
        );
        assert_eq!(err.unwrap_err(), DecodeError::Kernel(libc::EBUSY));
        let d = decoded(
            &message(NLMSG_DONE, NLM_F_DUMP_INTR | 2, 3, &0i32.to_ne_bytes()),
            Query::Tcp4,
            3,
        )
        .unwrap();
        assert!(d.done && d.interrupted);
        assert!(matches!(
            decoded(&message(NLMSG_OVERRUN, 0, 3, &[]), Query::Tcp4, 3),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decoded(&message(NLMSG_ERROR, 0, 3, &[1]), Query::Tcp4, 3),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn truncated_input_is_an_error() {
        for (buf, query, seq) in [
            (TCP, Query::Tcp4, 100),
            (TCP6, Query::Tcp6, 101),
            (UDP, Query::Udp4, 102),
            (UNIX, Query::Unix, 103),
        ] {
            let mut boundaries = vec![0];
            for m in split_messages(buf).unwrap() {
                let end = m.bytes.as_ptr() as usize - buf.as_ptr() as usize + m.bytes.len();
                boundaries.push(align4(end));
            }
            for cut in 1..buf.len() {
                let result = decoded(&buf[..cut], query, seq);
                if boundaries.contains(&cut) {
                    // Whole messages: fine, only the end is missing.
                    assert!(!result.unwrap().done, "cut {cut}");
                } else {
                    assert!(
                        matches!(result, Err(DecodeError::Malformed(_))),
                        "{query:?} cut at {cut}: {result:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn damaged_lengths_are_errors() {
        // A message whose length is shorter than its header.
        let mut bad = TCP.to_vec();
        bad[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(decoded(&bad, Query::Tcp4, 100).is_err());
        // An attribute claiming more than its message has.
        let mut bad = TCP.to_vec();
        let at = NLMSG_HDRLEN + INET_DIAG_MSG_LEN;
        bad[at..at + 2].copy_from_slice(&0xfff0u16.to_ne_bytes());
        assert!(matches!(
            decoded(&bad, Query::Tcp4, 100),
            Err(DecodeError::Malformed(_))
        ));
        // A meminfo that is not a u32 array; a short UNIX RQLEN.
        assert!(MemInfo::parse(&[0; 7]).is_err());
        assert_eq!(MemInfo::parse(&[]).unwrap(), MemInfo::default());
        let mut unix = vec![AF_UNIX, 1, 1, 0];
        unix.extend_from_slice(&[0; 12]);
        unix.extend_from_slice(&[6, 0, UNIX_DIAG_RQLEN as u8, 0, 1, 2, 0, 0]);
        assert!(decode_unix(&unix).is_err());
        // A reply of the wrong family for the query.
        assert!(decoded(TCP, Query::Unix, 100).is_err());
        assert!(decoded(UNIX, Query::Tcp4, 103).is_err());
    }

    #[test]
    fn garbage_does_not_panic() {
        // A small deterministic generator: xorshift.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..2000 {
            let len = (next() % 300) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 && buf.len() >= 16 {
                // A plausible header so the payload decoders run too.
                let l = buf.len() as u32;
                buf[0..4].copy_from_slice(&l.to_ne_bytes());
                buf[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
                buf[8..12].copy_from_slice(&1u32.to_ne_bytes());
                if buf.len() > 16 {
                    buf[16] = if round % 4 == 0 { AF_UNIX } else { AF_INET6 };
                }
            }
            let query = if round % 4 == 0 {
                Query::Unix
            } else {
                Query::Tcp6
            };
            let _ = decoded(&buf, query, 1);
        }
        // Flipping each byte of a real reply never panics either.
        for i in 0..UNIX.len() {
            let mut buf = UNIX.to_vec();
            buf[i] ^= 0xff;
            let _ = decoded(&buf, Query::Unix, 103);
        }
    }

    #[test]
    fn unix_names() {
        assert_eq!(unix_name(b""), "*");
        assert_eq!(unix_name(b"\0abs\0x"), "@abs@x");
        assert_eq!(unix_name(b"/run/a.sock\0"), "/run/a.sock");
        assert_eq!(unix_name(b"/run/b.sock"), "/run/b.sock");
    }

    #[test]
    fn dumps_this_kernel() {
        let fd = open().unwrap();
        for (i, q) in Query::ALL.into_iter().enumerate() {
            match dump(&fd, q, 50 + i as u32) {
                Ok(d) => assert!(d.done),
                // A kernel without udp_diag.
                Err(e) => assert_eq!(e.kernel_errno(), Some(libc::ENOENT), "{q:?}: {e}"),
            }
        }
    }
}
