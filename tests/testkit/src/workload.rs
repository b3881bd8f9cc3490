//! Workloads with an independently measurable truth.
//!
//! - [`tcp_hold`]: a loopback TCP connection whose receiver never reads, so the pages the
//!   sender allocated in `tcp_sendmsg` → `skb_page_frag_refill` stay queued at the receiver.
//!   The truth is what the kernel itself reports as queued (`SIOCINQ`).
//! - [`churn`]: a forked child that faults in anonymous memory and unmaps it again, so the
//!   page-fault path allocates a known amount and frees all of it.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::{mib, MIB};

/// The receive buffer asked for (the kernel doubles it): large enough for the whole transfer,
/// so the receive window never closes and the receiver never collapses its queue.
const RCVBUF: usize = 256 << 20;
const SNDBUF: usize = 64 << 20;
const WRITE_CHUNK: usize = 1 << 20;
/// A transfer that queues less than this at the receiver proves too little.
const MIN_HELD: u64 = 32 * MIB;
const SEND_DEADLINE: Duration = Duration::from_secs(20);
const SETTLE_DEADLINE: Duration = Duration::from_secs(10);

pub(crate) fn last_error(what: &str) -> anyhow::Error {
    anyhow::Error::new(std::io::Error::last_os_error()).context(what.to_string())
}

pub(crate) fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: usize,
) -> Result<()> {
    let value = libc::c_int::try_from(value).context("socket option value out of range")?;
    // SAFETY: `value` is a live c_int and the length passed is exactly its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(last_error(&format!("setsockopt({level}, {opt}, {value})")));
    }
    Ok(())
}

pub(crate) fn get_int_opt(fd: RawFd, level: libc::c_int, opt: libc::c_int) -> Result<u64> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live and `len` holds the size of `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            opt,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(last_error(&format!("getsockopt({level}, {opt})")));
    }
    u64::try_from(value).context("negative socket option value")
}

/// Sets a buffer size with the privileged `*FORCE` option (beyond `net.core.*mem_max`),
/// falling back to the plain option without `CAP_NET_ADMIN`. Returns whether it was forced.
pub(crate) fn set_buffer(
    fd: RawFd,
    force_opt: libc::c_int,
    plain_opt: libc::c_int,
    bytes: usize,
) -> Result<bool> {
    match set_int_opt(fd, libc::SOL_SOCKET, force_opt, bytes) {
        Ok(()) => Ok(true),
        Err(_) => {
            set_int_opt(fd, libc::SOL_SOCKET, plain_opt, bytes)?;
            Ok(false)
        }
    }
}

/// An `int`-valued socket ioctl (`SIOCINQ`, `SIOCOUTQ`, `SIOCOUTQNSD`).
pub(crate) fn ioctl_int(fd: RawFd, request: libc::Ioctl, what: &str) -> Result<u64> {
    let mut value: libc::c_int = 0;
    // SAFETY: these ioctls write one c_int through the pointer, which points at `value`.
    let rc = unsafe { libc::ioctl(fd, request, &mut value as *mut libc::c_int) };
    if rc != 0 {
        return Err(last_error(what));
    }
    u64::try_from(value).with_context(|| format!("{what} returned {value}"))
}

/// Bytes queued for reading on a TCP socket.
fn inq(fd: RawFd) -> Result<u64> {
    ioctl_int(fd, libc::FIONREAD, "ioctl(SIOCINQ)")
}

/// Bytes not yet acknowledged by the peer (sent or not).
fn outq(fd: RawFd) -> Result<u64> {
    ioctl_int(fd, libc::TIOCOUTQ, "ioctl(SIOCOUTQ)")
}

/// Bytes not yet sent at all.
fn outq_unsent(fd: RawFd) -> Result<u64> {
    ioctl_int(fd, libc::SIOCOUTQNSD as libc::Ioctl, "ioctl(SIOCOUTQNSD)")
}

fn tcp_socket() -> Result<OwnedFd> {
    // SAFETY: socket() has no memory-safety preconditions.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_error("socket(AF_INET, SOCK_STREAM)"));
    }
    // SAFETY: `fd` was just returned by socket() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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

/// CPUs this thread may run on.
pub(crate) fn allowed_cpus() -> Result<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit array for which all-zero is a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live cpu_set_t and the size passed is its size.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(last_error("sched_getaffinity"));
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET only reads the bit array of `set`, and `cpu` is below its bit count.
    Ok((0..max)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Pins the calling thread to `cpu`.
fn pin_current_thread(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is a plain bit array for which all-zero is a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit of `set`; `cpu` comes from allowed_cpus(), below its size.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t and the size passed is its size.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(last_error(&format!("sched_setaffinity(cpu {cpu})")));
    }
    Ok(())
}

/// Runs `f` on a new thread pinned to `cpu` (when pinning fails, unpinned) and joins it.
/// A separate thread also means its per-task page fragment cache goes away when it exits.
pub(crate) fn on_cpu<T: Send + 'static>(
    cpu: Option<usize>,
    name: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let handle = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            if let Some(cpu) = cpu {
                if let Err(e) = pin_current_thread(cpu) {
                    eprintln!("note: could not pin to cpu {cpu}: {e:#}");
                }
            }
            f()
        })
        .with_context(|| format!("spawning thread {name}"))?;
    match handle.join() {
        Ok(result) => result,
        Err(_) => bail!("thread {name} panicked"),
    }
}

/// A loopback TCP connection holding data in the receiver's queue. Keeps both sockets open
/// until [`TcpHold::drain`] (or drop).
pub struct TcpHold {
    receiver: TcpStream,
    sender: TcpStream,
    cpu: Option<usize>,
    /// Bytes asked to send.
    pub requested: u64,
    /// Bytes the sender's write() calls accepted.
    pub sent: u64,
    /// `SIOCINQ` on the receiver once the transfer settled: bytes held in its queue.
    pub queued: u64,
    /// `SIOCOUTQNSD` on the sender at that time: bytes the sender still holds unsent.
    pub unsent: u64,
    /// Effective `SO_RCVBUF` of the receiver / `SO_SNDBUF` of the sender.
    pub rcvbuf: u64,
    pub sndbuf: u64,
    /// Whether `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` worked (root) or plain sizes were used.
    pub forced: bool,
}

impl TcpHold {
    /// Bytes of payload the kernel holds for this connection: queued at the receiver plus
    /// never sent by the sender. This is the truth the tracer is compared with.
    pub fn held_bytes(&self) -> u64 {
        self.queued + self.unsent
    }

    /// `SIOCINQ` on the receiver now.
    pub fn receiver_queued(&self) -> Result<u64> {
        inq(self.receiver.as_raw_fd())
    }

    /// `SIOCOUTQ` on the sender now.
    pub fn sender_unacked(&self) -> Result<u64> {
        outq(self.sender.as_raw_fd())
    }

    /// Reads everything queued (on the CPU that sent it, so the buffers are freed right away
    /// rather than deferred to another CPU), closes both sockets, and makes every CPU run its
    /// network softirq once so deferred frees happen. Returns the bytes read.
    pub fn drain(self) -> Result<u64> {
        let TcpHold {
            receiver,
            sender,
            cpu,
            ..
        } = self;
        let read = on_cpu(cpu, "tcp-hold-drain", move || {
            receiver
                .set_read_timeout(Some(Duration::from_millis(100)))
                .context("SO_RCVTIMEO on the receiver")?;
            let mut receiver = receiver;
            let mut buf = vec![0u8; WRITE_CHUNK];
            let mut read = 0u64;
            let deadline = Instant::now() + SETTLE_DEADLINE;
            loop {
                match receiver.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => read += n as u64,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        if inq(receiver.as_raw_fd())? == 0 && outq(sender.as_raw_fd())? == 0 {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).context("reading the receiver"),
                }
                if Instant::now() >= deadline {
                    bail!(
                        "draining did not finish within {SETTLE_DEADLINE:?} (read {read} bytes, \
                         {} still queued)",
                        inq(receiver.as_raw_fd())?
                    );
                }
            }
            drop(receiver);
            drop(sender);
            Ok(read)
        })?;
        flush_deferred_skb_frees()?;
        Ok(read)
    }
}

/// Sends `total` bytes over a fresh loopback TCP connection whose receiver never reads, then
/// waits until the sender has nothing unacknowledged and measures the receiver's queue.
///
/// If the receive window cannot take everything, the transfer stops after a deadline and the
/// held bytes are what the kernel reports then; fails if fewer than 32 MiB are held.
pub fn tcp_hold(total: u64) -> Result<TcpHold> {
    let listener_fd = tcp_socket()?;
    // Before listen(): the accepted socket inherits it, and the window scale is chosen from it
    // during the handshake.
    let forced_rcv = set_buffer(
        listener_fd.as_raw_fd(),
        libc::SO_RCVBUFFORCE,
        libc::SO_RCVBUF,
        RCVBUF,
    )
    .context("setting the receive buffer")?;
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
    let forced_snd = set_buffer(
        sender_fd.as_raw_fd(),
        libc::SO_SNDBUFFORCE,
        libc::SO_SNDBUF,
        SNDBUF,
    )
    .context("setting the send buffer")?;
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

    let rcvbuf = get_int_opt(receiver.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF)?;
    let sndbuf = get_int_opt(sender.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF)?;

    // Send from one thread on one CPU, so the buffers are allocated there (and drain() can
    // free them there) and the thread's page fragment cache is released when it exits.
    let cpu = allowed_cpus()?.first().copied();
    let writer = sender.try_clone().context("dup of the sender")?;
    let sent = on_cpu(cpu, "tcp-hold-send", move || {
        let mut writer = writer;
        writer
            .set_write_timeout(Some(Duration::from_millis(500)))
            .context("SO_SNDTIMEO on the sender")?;
        let chunk = vec![0x5au8; WRITE_CHUNK];
        let mut sent = 0u64;
        let deadline = Instant::now() + SEND_DEADLINE;
        while sent < total && Instant::now() < deadline {
            let len = (total - sent).min(WRITE_CHUNK as u64) as usize;
            match writer.write(&chunk[..len]) {
                Ok(n) => sent += n as u64,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e).context("writing to the sender"),
            }
        }
        Ok(sent)
    })?;

    // Wait until everything sent was acknowledged, i.e. it sits in the receiver's queue.
    let deadline = Instant::now() + SETTLE_DEADLINE;
    let mut stable_since = Instant::now();
    let mut last = (u64::MAX, u64::MAX);
    loop {
        let now = (outq(sender.as_raw_fd())?, inq(receiver.as_raw_fd())?);
        if now.0 == 0 {
            break;
        }
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
        // The window is closed: nothing moves any more.
        if Instant::now() >= deadline || stable_since.elapsed() > Duration::from_secs(2) {
            eprintln!(
                "note: the sender still holds {} unacknowledged (window closed?), {} queued",
                now.0, now.1
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let queued = inq(receiver.as_raw_fd())?;
    let unsent = outq_unsent(sender.as_raw_fd())?;
    let hold = TcpHold {
        receiver,
        sender,
        cpu,
        requested: total,
        sent,
        queued,
        unsent,
        rcvbuf,
        sndbuf,
        forced: forced_rcv && forced_snd,
    };
    eprintln!(
        "tcp hold: requested {} sent {} queued at receiver (SIOCINQ) {} unsent {} \
         (rcvbuf {} sndbuf {} forced {} cpu {:?})",
        mib(total),
        mib(sent),
        mib(queued),
        mib(unsent),
        mib(rcvbuf),
        mib(sndbuf),
        hold.forced,
        cpu
    );
    ensure!(
        queued >= MIN_HELD.min(total),
        "only {} queued at the receiver (sent {} of {}); too little for a meaningful test",
        mib(queued),
        mib(sent),
        mib(total)
    );
    Ok(hold)
}

/// Makes every allowed CPU run its network receive softirq once (a one-byte loopback
/// exchange on a thread pinned there), which frees socket buffers whose freeing was deferred
/// to the CPU that allocated them.
pub fn flush_deferred_skb_frees() -> Result<()> {
    for cpu in allowed_cpus()? {
        on_cpu(Some(cpu), "skb-flush", || {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind")?;
            let mut a = TcpStream::connect(listener.local_addr()?).context("connect")?;
            let (mut b, _) = listener.accept().context("accept")?;
            let mut byte = [0u8; 1];
            a.write_all(b"x")?;
            b.read_exact(&mut byte)?;
            b.write_all(b"y")?;
            a.read_exact(&mut byte)?;
            Ok(())
        })
        .with_context(|| format!("loopback exchange on cpu {cpu}"))?;
    }
    Ok(())
}

/// Empties every CPU's LRU folio batches. A page faulted in on one CPU sits in that CPU's
/// batch, with a reference, until the batch fills or is drained: a process that exits on
/// another CPU leaves those pages allocated (a few per CPU) for a while. `migrate_pages(2)`
/// of this process from node 0 to node 0 runs `lru_add_drain_all()` and moves nothing
/// (`mlock(2)` no longer drains since 5.18).
pub fn drain_lru_batches() -> Result<()> {
    let nodes: libc::c_ulong = 1;
    let max_node = libc::c_ulong::BITS as libc::c_ulong;
    // SAFETY: both node masks point at one live c_ulong holding `max_node` bits; pid 0 is
    // this process.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_migrate_pages,
            0 as libc::c_long,
            max_node,
            &nodes as *const libc::c_ulong,
            &nodes as *const libc::c_ulong,
        )
    };
    if rc < 0 {
        return Err(last_error("migrate_pages (to drain the LRU batches)"));
    }
    Ok(())
}

/// Waits (at most `timeout`) until `PageTables` in /proc/meminfo is back to at most
/// `baseline_bytes + slack_bytes`. Page tables of an exited process are freed after an RCU
/// grace period, which lazy RCU (`CONFIG_RCU_LAZY`) may delay by up to 10 s. Returns the
/// last value read and how long it waited.
pub fn wait_for_page_tables(
    baseline_bytes: u64,
    slack_bytes: u64,
    timeout: Duration,
) -> Result<(u64, Duration)> {
    let started = Instant::now();
    loop {
        let now = crate::meminfo_field("PageTables")?;
        if now <= baseline_bytes + slack_bytes || started.elapsed() >= timeout {
            return Ok((now, started.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What [`churn`] did.
#[derive(Clone, Debug)]
pub struct ChurnStats {
    /// The forked child that faulted the memory in (the allocations' owner).
    pub pid: u32,
    pub iterations: usize,
    pub region_bytes: u64,
    /// Bytes written to, one byte per page: `iterations * region_bytes`.
    pub touched_bytes: u64,
    pub elapsed: Duration,
}

const CHURN_TIMEOUT: Duration = Duration::from_secs(120);

/// Kills (SIGKILL, by PID) and reaps a forked child on drop unless it was reaped already.
struct ForkedChild {
    pid: libc::pid_t,
    reaped: bool,
}

impl ForkedChild {
    /// `waitpid` without blocking: `Some(wait status)` once it exited.
    fn try_wait(&mut self) -> Result<Option<libc::c_int>> {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a live c_int; `pid` is our unreaped child.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        match rc {
            0 => Ok(None),
            rc if rc == self.pid => {
                self.reaped = true;
                Ok(Some(status))
            }
            _ => Err(last_error("waitpid")),
        }
    }
}

impl Drop for ForkedChild {
    fn drop(&mut self) {
        if !self.reaped {
            let mut status: libc::c_int = 0;
            // SAFETY: `pid` is our own child, not reaped yet, so its PID is not reused; kill and
            // waitpid have no memory-safety preconditions beyond the live `status`.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, &mut status, 0);
            }
        }
    }
}

/// The forked child's work. Only raw system calls and volatile writes: after fork() in a
/// multithreaded process it must not allocate or take locks. Returns the exit code.
fn churn_child(iterations: usize, region: usize, page: usize) -> libc::c_int {
    for i in 0..iterations {
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                region,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return 10;
        }
        // Half the rounds with transparent huge pages asked for, half forbidden, so both the
        // 4 KiB and the THP fault paths run. Failure (no THP support) is fine.
        let advice = if i % 2 == 0 {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        // SAFETY: `ptr..ptr+region` is the mapping just created.
        unsafe { libc::madvise(ptr, region, advice) };
        let base = ptr.cast::<u8>();
        for offset in (0..region).step_by(page) {
            // SAFETY: `offset < region`, inside the writable mapping just created.
            unsafe { base.add(offset).write_volatile(1) };
        }
        // SAFETY: unmaps exactly the mapping created above; nothing refers to it any more.
        if unsafe { libc::munmap(ptr, region) } != 0 {
            return 12;
        }
    }
    0
}

/// In a forked child: `iterations` times, map `region_bytes` of anonymous memory, write one
/// byte to every page, unmap it. Waits for the child (killing it after 120 s).
pub fn churn(iterations: usize, region_bytes: usize) -> Result<ChurnStats> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = usize::try_from(page)
        .ok()
        .filter(|&p| p > 0)
        .context("sysconf(_SC_PAGESIZE)")?;
    ensure!(
        region_bytes.is_multiple_of(page),
        "region must be a multiple of the page size"
    );
    let started = Instant::now();
    // SAFETY: the child only runs churn_child (raw system calls, no allocation, no locks) and
    // then _exit()s, which is what is allowed after fork() in a multithreaded process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(last_error("fork"));
    }
    if pid == 0 {
        let code = churn_child(iterations, region_bytes, page);
        // SAFETY: _exit ends the child without running the parent's atexit handlers or
        // destructors.
        unsafe { libc::_exit(code) };
    }
    let mut child = ForkedChild { pid, reaped: false };
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > CHURN_TIMEOUT {
            bail!("churn child {pid} did not finish within {CHURN_TIMEOUT:?}; killing it");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "churn child {pid} failed (wait status {status:#x}; exit code 10 = mmap, 12 = munmap)"
    );
    let stats = ChurnStats {
        pid: u32::try_from(pid).context("pid")?,
        iterations,
        region_bytes: region_bytes as u64,
        touched_bytes: (iterations * region_bytes) as u64,
        elapsed: started.elapsed(),
    };
    eprintln!(
        "churn: child {} touched {} in {} x {} (half MADV_HUGEPAGE, half MADV_NOHUGEPAGE) in {:.2?}",
        stats.pid,
        mib(stats.touched_bytes),
        iterations,
        mib(stats.region_bytes),
        stats.elapsed
    );
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The truth source of the TCP scenario on its own: SIOCINQ sees what was sent, and
    /// draining empties it.
    #[test]
    fn tcp_hold_measures_and_drains() -> Result<()> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        // Without root the buffers cannot be forced past net.core.rmem_max: keep it small.
        let total = if root { 64 * MIB } else { 2 * MIB };
        let hold = tcp_hold(total)?;
        assert_eq!(hold.sent, total);
        assert_eq!(
            hold.held_bytes(),
            total,
            "everything sent is held somewhere"
        );
        if root {
            assert!(hold.forced);
            assert_eq!(
                hold.queued, total,
                "with forced buffers all of it reaches the receiver"
            );
        }
        assert_eq!(hold.receiver_queued()?, hold.queued);
        assert_eq!(hold.drain()?, total);
        Ok(())
    }

    #[test]
    fn churn_runs_in_a_child() -> Result<()> {
        let stats = churn(2, 8 << 20)?;
        assert_eq!(stats.touched_bytes, 16 << 20);
        // SAFETY: getpid has no preconditions.
        assert_ne!(stats.pid, unsafe { libc::getpid() } as u32);
        Ok(())
    }

    #[test]
    fn flush_runs_on_every_cpu() -> Result<()> {
        assert!(!allowed_cpus()?.is_empty());
        flush_deferred_skb_frees()
    }
}
