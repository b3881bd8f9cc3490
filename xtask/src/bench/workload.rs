//! The benchmark workloads, run inside the harness process: each measures its own throughput
//! over a fixed duration. And the TCP receive-queue hold, whose truth is the kernel's SIOCINQ.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// Size of one page-fault churn region.
const CHURN_REGION: usize = 64 << 20;
/// Write (and read buffer) size of the TCP stream.
const STREAM_CHUNK: usize = 64 << 10;
/// The TCP stream runs this long before its measurement window opens (slow start, autotuning).
const STREAM_WARMUP: Duration = Duration::from_millis(200);
/// Payload of each datagram in the slab loop.
const DGRAM: usize = 64;

/// A throughput workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Churn,
    TcpStream,
    Slab,
}

/// Work done in a measured window.
pub struct Measured {
    pub work: f64,
    pub elapsed: Duration,
}

impl Measured {
    pub fn throughput(&self) -> f64 {
        self.work / self.elapsed.as_secs_f64()
    }
}

impl Workload {
    pub const ALL: [Workload; 3] = [Workload::Churn, Workload::TcpStream, Workload::Slab];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Churn => "page-fault-churn",
            Workload::TcpStream => "tcp-stream",
            Workload::Slab => "slab-unix-dgram",
        }
    }

    /// The unit of the throughput (per second).
    pub fn unit(self) -> &'static str {
        match self {
            Workload::Churn => "pages/s",
            Workload::TcpStream => "bytes/s",
            Workload::Slab => "ops/s",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Workload::Churn => {
                "mmap 64 MiB anonymous (MADV_NOHUGEPAGE), write one byte to every 4 KiB page, \
                 munmap, repeat; one thread; metric: pages faulted in per second"
            }
            Workload::TcpStream => {
                "one loopback TCP connection (127.0.0.1), a sender thread writing 64 KiB chunks \
                 and a receiver thread reading them; metric: bytes received per second"
            }
            Workload::Slab => {
                "socketpair(AF_UNIX, SOCK_DGRAM), send and receive one 64-byte datagram, close \
                 both; one thread; metric: such cycles per second"
            }
        }
    }

    pub fn run(self, duration: Duration) -> Result<Measured> {
        match self {
            Workload::Churn => churn(duration),
            Workload::TcpStream => tcp_stream(duration),
            Workload::Slab => slab(duration),
        }
        .with_context(|| format!("workload {}", self.name()))
    }
}

fn last_error(what: &str) -> anyhow::Error {
    anyhow::Error::new(std::io::Error::last_os_error()).context(what.to_string())
}

fn page_size() -> Result<usize> {
    // SAFETY: sysconf() has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .context("sysconf(_SC_PAGESIZE) failed")
}

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn anonymous(len: usize) -> Result<Mapping> {
        // SAFETY: a new anonymous private mapping at an address the kernel picks; no fd, and no
        // existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(last_error(&format!("mmap({len} bytes, anonymous)")));
        }
        Ok(Mapping { ptr, len })
    }

    fn unmap(mut self) -> Result<()> {
        let (ptr, len) = (self.ptr, self.len);
        self.len = 0;
        // SAFETY: `ptr..ptr+len` is the mapping this value owned; nothing refers to it any more.
        if unsafe { libc::munmap(ptr, len) } != 0 {
            return Err(last_error("munmap"));
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: as in `unmap`; reached only when a churn iteration failed half-way.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

fn churn(duration: Duration) -> Result<Measured> {
    let page = page_size()?;
    let start = Instant::now();
    let mut pages = 0u64;
    loop {
        let region = Mapping::anonymous(CHURN_REGION)?;
        // SAFETY: the range is exactly the mapping just created.
        if unsafe { libc::madvise(region.ptr, region.len, libc::MADV_NOHUGEPAGE) } != 0 {
            return Err(last_error("madvise(MADV_NOHUGEPAGE)"));
        }
        let base = region.ptr.cast::<u8>();
        for offset in (0..region.len).step_by(page) {
            // SAFETY: `offset` is below the mapping's length, the mapping is readable and
            // writable, and only this thread knows its address.
            unsafe { base.add(offset).write_volatile(1) };
        }
        region.unmap()?;
        pages += (CHURN_REGION / page) as u64;
        if start.elapsed() >= duration {
            break;
        }
    }
    Ok(Measured {
        work: pages as f64,
        elapsed: start.elapsed(),
    })
}

fn join<T>(handle: JoinHandle<Result<T>>, name: &str) -> Result<T> {
    match handle.join() {
        Ok(result) => result.with_context(|| format!("thread {name}")),
        Err(_) => bail!("thread {name} panicked"),
    }
}

fn tcp_stream(duration: Duration) -> Result<Measured> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind 127.0.0.1:0")?;
    let addr = listener.local_addr().context("listener address")?;
    let mut sender = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    let (mut receiver, _) = listener.accept().context("accept")?;
    drop(listener);

    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let counter = Arc::clone(&received);
    let rx = std::thread::Builder::new()
        .name("bench-tcp-rx".into())
        .spawn(move || -> Result<()> {
            let mut buf = vec![0u8; STREAM_CHUNK];
            loop {
                match receiver.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => {
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).context("reading the receiver"),
                }
            }
        })
        .context("spawning the receiver thread")?;
    let stop_flag = Arc::clone(&stop);
    let tx = std::thread::Builder::new()
        .name("bench-tcp-tx".into())
        .spawn(move || -> Result<()> {
            let chunk = vec![0x5au8; STREAM_CHUNK];
            while !stop_flag.load(Ordering::Relaxed) {
                sender.write_all(&chunk).context("writing the sender")?;
            }
            // Dropping the sender closes it: the receiver reads EOF and ends.
            Ok(())
        })
        .context("spawning the sender thread")?;

    std::thread::sleep(STREAM_WARMUP);
    let start = Instant::now();
    let before = received.load(Ordering::Relaxed);
    std::thread::sleep(duration);
    let after = received.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    join(tx, "bench-tcp-tx")?;
    join(rx, "bench-tcp-rx")?;
    Ok(Measured {
        work: (after - before) as f64,
        elapsed,
    })
}

fn owned_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass an fd that a syscall just returned and nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn slab(duration: Duration) -> Result<Measured> {
    let message = [0x5au8; DGRAM];
    let mut buf = [0u8; DGRAM];
    let start = Instant::now();
    let mut ops = 0u64;
    loop {
        for _ in 0..64 {
            let mut fds: [libc::c_int; 2] = [-1; 2];
            // SAFETY: `fds` is a live array of two c_ints, as socketpair() requires.
            let rc = unsafe {
                libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                    0,
                    fds.as_mut_ptr(),
                )
            };
            if rc != 0 {
                return Err(last_error("socketpair(AF_UNIX, SOCK_DGRAM)"));
            }
            let (a, b) = (owned_fd(fds[0]), owned_fd(fds[1]));
            // SAFETY: `message` is live and the length passed is its size.
            let sent = unsafe { libc::send(a.as_raw_fd(), message.as_ptr().cast(), DGRAM, 0) };
            if sent != DGRAM as isize {
                return Err(last_error("send on the socketpair"));
            }
            // SAFETY: `buf` is live and writable, and the length passed is its size.
            let got = unsafe { libc::recv(b.as_raw_fd(), buf.as_mut_ptr().cast(), DGRAM, 0) };
            if got != DGRAM as isize {
                return Err(last_error("recv on the socketpair"));
            }
            drop((a, b));
            ops += 1;
        }
        if start.elapsed() >= duration {
            break;
        }
    }
    Ok(Measured {
        work: ops as f64,
        elapsed: start.elapsed(),
    })
}

// ---- TCP receive-queue hold ----------------------------------------------------------------

/// Receive buffer requested with SO_RCVBUFFORCE (the kernel doubles it): room for the whole
/// payload, so the window never closes and the receiver never collapses its queue.
const HOLD_RCVBUF: usize = 256 << 20;
const HOLD_SNDBUF: usize = 64 << 20;
const HOLD_CHUNK: usize = 1 << 20;
const HOLD_SEND_DEADLINE: Duration = Duration::from_secs(20);
const HOLD_SETTLE_DEADLINE: Duration = Duration::from_secs(10);

fn set_int_opt(fd: RawFd, opt: libc::c_int, value: usize, what: &str) -> Result<()> {
    let value = libc::c_int::try_from(value).context("socket option value out of range")?;
    // SAFETY: `value` is a live c_int and the length passed is exactly its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(last_error(what));
    }
    Ok(())
}

/// An `int`-valued socket ioctl (`SIOCINQ` = `FIONREAD`, `SIOCOUTQ`, `SIOCOUTQNSD`).
fn ioctl_int(fd: RawFd, request: libc::Ioctl, what: &str) -> Result<u64> {
    let mut value: libc::c_int = 0;
    // SAFETY: these ioctls write one c_int through the pointer, which points at `value`.
    if unsafe { libc::ioctl(fd, request, &mut value as *mut libc::c_int) } != 0 {
        return Err(last_error(what));
    }
    u64::try_from(value).with_context(|| format!("{what} returned {value}"))
}

fn tcp_socket() -> Result<OwnedFd> {
    // SAFETY: socket() has no memory-safety preconditions.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_error("socket(AF_INET, SOCK_STREAM)"));
    }
    Ok(owned_fd(fd))
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

const SOCKADDR_IN_LEN: libc::socklen_t =
    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;

/// A loopback TCP connection whose receiver never reads: the payload stays queued in the
/// receiver's socket, in the page frags the sender allocated (`skb_page_frag_refill`).
pub struct Hold {
    receiver: TcpStream,
    sender: TcpStream,
    /// Bytes the sender's writes accepted.
    pub sent: u64,
    /// `SIOCINQ` on the receiver once the transfer settled: the truth.
    pub queued: u64,
    /// `SIOCOUTQNSD` on the sender then: bytes never sent (0 when the window stayed open).
    pub unsent: u64,
}

impl Hold {
    /// Sends `total` bytes and waits until everything sent sits in the receiver's queue.
    /// Needs `CAP_NET_ADMIN` for the forced buffer sizes.
    pub fn establish(total: u64) -> Result<Hold> {
        let listener_fd = tcp_socket()?;
        // Before listen(): the accepted socket inherits it and the handshake picks the window
        // scale from it.
        set_int_opt(
            listener_fd.as_raw_fd(),
            libc::SO_RCVBUFFORCE,
            HOLD_RCVBUF,
            "setsockopt(SO_RCVBUFFORCE) (needs CAP_NET_ADMIN)",
        )?;
        let addr = sockaddr(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
        // SAFETY: `addr` is a valid sockaddr_in and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                listener_fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_in).cast(),
                SOCKADDR_IN_LEN,
            )
        };
        if rc != 0 {
            return Err(last_error("bind(127.0.0.1:0)"));
        }
        // SAFETY: listen() on a socket we own has no memory-safety preconditions.
        if unsafe { libc::listen(listener_fd.as_raw_fd(), 1) } != 0 {
            return Err(last_error("listen"));
        }
        let listener = TcpListener::from(listener_fd);
        let local = match listener.local_addr().context("listener address")? {
            std::net::SocketAddr::V4(v4) => v4,
            other => bail!("unexpected listener address {other}"),
        };
        let sender_fd = tcp_socket()?;
        set_int_opt(
            sender_fd.as_raw_fd(),
            libc::SO_SNDBUFFORCE,
            HOLD_SNDBUF,
            "setsockopt(SO_SNDBUFFORCE) (needs CAP_NET_ADMIN)",
        )?;
        let peer = sockaddr(local);
        // SAFETY: `peer` is a valid sockaddr_in and the length passed is its size.
        let rc = unsafe {
            libc::connect(
                sender_fd.as_raw_fd(),
                (&peer as *const libc::sockaddr_in).cast(),
                SOCKADDR_IN_LEN,
            )
        };
        if rc != 0 {
            return Err(last_error(&format!("connect({local})")));
        }
        let sender = TcpStream::from(sender_fd);
        let (receiver, _) = listener.accept().context("accept")?;
        drop(listener);

        // Send from a thread of its own: its per-task page frag cache goes when it exits.
        let mut writer = sender.try_clone().context("dup of the sender")?;
        let send = std::thread::Builder::new()
            .name("bench-hold-tx".into())
            .spawn(move || -> Result<u64> {
                writer
                    .set_write_timeout(Some(Duration::from_millis(500)))
                    .context("SO_SNDTIMEO")?;
                let chunk = vec![0x5au8; HOLD_CHUNK];
                let mut sent = 0u64;
                let deadline = Instant::now() + HOLD_SEND_DEADLINE;
                while sent < total && Instant::now() < deadline {
                    let len = (total - sent).min(HOLD_CHUNK as u64) as usize;
                    match writer.write(&chunk[..len]) {
                        Ok(n) => sent += n as u64,
                        Err(e)
                            if matches!(
                                e.kind(),
                                ErrorKind::WouldBlock
                                    | ErrorKind::TimedOut
                                    | ErrorKind::Interrupted
                            ) => {}
                        Err(e) => return Err(e).context("writing the sender"),
                    }
                }
                Ok(sent)
            })
            .context("spawning the hold sender thread")?;
        let sent = join(send, "bench-hold-tx")?;

        // Wait until the sender has nothing unacknowledged: all of it is in the receive queue.
        let outq = |s: &TcpStream| ioctl_int(s.as_raw_fd(), libc::TIOCOUTQ, "ioctl(SIOCOUTQ)");
        let deadline = Instant::now() + HOLD_SETTLE_DEADLINE;
        while outq(&sender)? > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let queued = ioctl_int(receiver.as_raw_fd(), libc::FIONREAD, "ioctl(SIOCINQ)")?;
        let unsent = ioctl_int(
            sender.as_raw_fd(),
            libc::SIOCOUTQNSD as libc::Ioctl,
            "ioctl(SIOCOUTQNSD)",
        )?;
        Ok(Hold {
            receiver,
            sender,
            sent,
            queued,
            unsent,
        })
    }

    /// Closes both sockets: the queued pages are freed.
    pub fn release(self) {
        drop(self.receiver);
        drop(self.sender);
    }
}

// ---- AF_UNIX order-0 page hold --------------------------------------------------------------

/// Bytes per write to an AF_UNIX stream socket: one page of data, no head, goes into one
/// order-0 page fragment (`alloc_skb_with_frags` lowers its order to what the data needs).
const PAGE_WRITE: usize = 4096;
/// Bytes queued on one socket pair (its send buffer, forced, holds a bit more than this with
/// the skbs' overhead; the kernel caps it near 2 GiB).
const UNIX_PAIR_BYTES: u64 = 1 << 30;

/// Order-0 kernel pages held in AF_UNIX stream socket queues nobody reads: every 4 KiB write
/// is one skb whose data is one page from `alloc_skb_with_frags`. Truth: the receivers'
/// `SIOCINQ`. Needs `CAP_NET_ADMIN` (forced buffer sizes).
pub struct UnixHold {
    pairs: Vec<(OwnedFd, OwnedFd)>,
    /// Bytes written (each write queued one page).
    pub sent: u64,
    /// `SIOCINQ` summed over the receivers: bytes queued, i.e. pages held × 4096.
    pub queued: u64,
    /// How long filling the queues took.
    pub fill: Duration,
}

impl UnixHold {
    /// Queues `total` bytes (a multiple of 4 KiB) in as many socket pairs as needed.
    pub fn establish(total: u64) -> Result<UnixHold> {
        let started = Instant::now();
        let chunk = [0x5au8; PAGE_WRITE];
        let mut pairs = Vec::new();
        let mut sent = 0u64;
        while sent < total {
            let mut fds: [libc::c_int; 2] = [-1; 2];
            // SAFETY: `fds` is a live array of two c_ints, as socketpair() requires.
            let rc = unsafe {
                libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                    0,
                    fds.as_mut_ptr(),
                )
            };
            if rc != 0 {
                return Err(last_error("socketpair(AF_UNIX, SOCK_STREAM)"));
            }
            let (tx, rx) = (owned_fd(fds[0]), owned_fd(fds[1]));
            // Room for the pair's share and the skbs' overhead (the kernel doubles the value).
            let want = usize::try_from(UNIX_PAIR_BYTES).context("pair size")?;
            set_int_opt(
                tx.as_raw_fd(),
                libc::SO_SNDBUFFORCE,
                want,
                "setsockopt(SO_SNDBUFFORCE) (needs CAP_NET_ADMIN)",
            )?;
            let goal = (total - sent).min(UNIX_PAIR_BYTES);
            let mut mine = 0u64;
            while mine < goal {
                // SAFETY: `chunk` is live and readable for its whole length.
                let n = unsafe {
                    libc::send(
                        tx.as_raw_fd(),
                        chunk.as_ptr().cast(),
                        PAGE_WRITE,
                        libc::MSG_DONTWAIT,
                    )
                };
                if n == PAGE_WRITE as isize {
                    mine += PAGE_WRITE as u64;
                    continue;
                }
                if n >= 0 {
                    bail!("a {PAGE_WRITE}-byte write to an AF_UNIX socket wrote {n} bytes");
                }
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => {}
                    // This pair's buffer is full earlier than expected: the next pair goes on.
                    Some(libc::EAGAIN) if mine > 0 => break,
                    _ => return Err(err).context("writing to an AF_UNIX socket"),
                }
            }
            sent += mine;
            pairs.push((tx, rx));
        }
        let mut queued = 0;
        for (_, rx) in &pairs {
            queued += ioctl_int(rx.as_raw_fd(), libc::FIONREAD, "ioctl(SIOCINQ) on AF_UNIX")?;
        }
        Ok(UnixHold {
            pairs,
            sent,
            queued,
            fill: started.elapsed(),
        })
    }

    /// Closes every socket: the queued pages are freed.
    pub fn release(self) {
        drop(self.pairs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_hold_queues_what_it_wrote() {
        let hold = UnixHold::establish(4 << 20);
        // Without CAP_NET_ADMIN the forced buffer size is refused: nothing to check then.
        let Ok(hold) = hold else { return };
        assert_eq!(hold.sent, 4 << 20);
        assert_eq!(hold.queued, hold.sent);
        hold.release();
    }

    #[test]
    fn workloads_do_work() {
        for w in Workload::ALL {
            let m = w.run(Duration::from_millis(50)).expect("workload runs");
            assert!(m.work > 0.0, "{} did no work", w.name());
            assert!(m.throughput() > 0.0);
        }
    }
}
