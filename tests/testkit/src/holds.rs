//! Workloads that make the kernel hold a known amount of memory of one class or kind until they
//! are dropped (or drained), for the kind and class scenarios.
//!
//! - [`unix_dgram_hold`]: datagrams queued on an AF_UNIX socket pair that nobody reads: one skb
//!   (a `skbuff_head_cache` object plus a data buffer) per datagram, slab objects of the
//!   network stack. Truth: the datagrams sent, and the `/proc/slabinfo` growth.
//! - [`shmem_hold`]: a memfd (tmpfs) file written full: `shmem` pages.
//! - [`file_hold`]: a file on a disk-backed filesystem written full and kept: `page-cache`
//!   pages (dirty until written back).
//! - [`anon_hold`]: anonymous memory faulted in and kept mapped: `user-anon` pages.
//! - [`unix_page_hold`]: order-0 kernel pages in AF_UNIX stream queues nobody reads, one page
//!   per 4 KiB write (gigabytes of them: the scale scenario). Truth: the receivers' `SIOCINQ`.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use crate::procfs::{meminfo_field, SlabGrowth, SlabInfo};
use crate::workload::{get_int_opt, ioctl_int, last_error, set_buffer, set_int_opt};
use crate::{mib, workspace_root, MIB};

const WRITE_CHUNK: usize = 1 << 20;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Datagrams queued on an AF_UNIX `SOCK_DGRAM` socket pair whose receiving end is not read.
/// Both sockets stay open until [`UnixDgramHold::drain`] (or drop, which closes them and so
/// frees the queue).
pub struct UnixDgramHold {
    sender: OwnedFd,
    receiver: OwnedFd,
    /// Datagrams sent and queued (each send of a datagram queues exactly one skb).
    pub datagrams: u64,
    /// Payload bytes per datagram.
    pub payload: usize,
    /// Effective `SO_SNDBUF` of the sender (the queue is charged to it).
    pub sndbuf: u64,
    /// Whether `SO_SNDBUFFORCE` worked (root) or the plain, capped option was used.
    pub forced: bool,
    /// `SIOCOUTQ` on the sender once everything was sent: the skbs' `truesize` it is charged.
    pub charged: u64,
    /// `/proc/slabinfo` before and after sending (root only).
    pub slab_before: Option<SlabInfo>,
    pub slab_after: Option<SlabInfo>,
}

impl UnixDgramHold {
    /// Slab caches that grew by at least half a datagram count while sending: the skb heads
    /// and the data buffers (empty without `/proc/slabinfo`).
    pub fn slab_growth(&self) -> Vec<SlabGrowth> {
        match (&self.slab_before, &self.slab_after) {
            (Some(before), Some(after)) => after.grown_since(before, self.datagrams / 2),
            _ => Vec::new(),
        }
    }

    /// Reads every queued datagram, then closes both sockets. Returns the datagrams read.
    pub fn drain(self) -> Result<u64> {
        let mut buf = vec![0u8; self.payload.max(1) * 2];
        let mut read = 0u64;
        loop {
            // SAFETY: `buf` is live and writable for its whole length.
            let n = unsafe {
                libc::recv(
                    self.receiver.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                read += 1;
                continue;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => break,
                Some(libc::EINTR) => continue,
                _ => return Err(err).context("recv on the AF_UNIX receiver"),
            }
        }
        drop(self.sender);
        drop(self.receiver);
        Ok(read)
    }
}

/// Sends `count` datagrams of `payload` bytes from one end of a fresh AF_UNIX `SOCK_DGRAM`
/// socket pair to the other, which never reads. The send buffer is forced large enough for all
/// of them (as root); sending never blocks, and fails if the queue would be full.
///
/// (For a connected pair, `net.unix.max_dgram_qlen` does not apply: the kernel only checks the
/// receiver's queue length when the receiver is not connected back to the sender; the sender's
/// `SO_SNDBUF` is the only limit.)
pub fn unix_dgram_hold(count: u64, payload: usize) -> Result<UnixDgramHold> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a live array of two c_ints, which socketpair fills on success.
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
    // SAFETY: both fds were just returned by socketpair and are owned by nobody else.
    let (sender, receiver) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

    // An skb of a small datagram takes well under 2 KiB of truesize.
    let want = usize::try_from(count.saturating_mul(2048).max(MIB))
        .unwrap_or(usize::MAX)
        .min(i32::MAX as usize / 2);
    let forced = set_buffer(
        sender.as_raw_fd(),
        libc::SO_SNDBUFFORCE,
        libc::SO_SNDBUF,
        want,
    )
    .context("setting the sender's SO_SNDBUF")?;
    set_buffer(
        receiver.as_raw_fd(),
        libc::SO_RCVBUFFORCE,
        libc::SO_RCVBUF,
        want,
    )
    .context("setting the receiver's SO_RCVBUF")?;
    let sndbuf = get_int_opt(sender.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF)?;

    let slab_before = if root() {
        Some(SlabInfo::read()?)
    } else {
        None
    };
    let data = vec![0x5au8; payload];
    let mut sent = 0u64;
    while sent < count {
        // SAFETY: `data` is live and readable for its whole length.
        let n = unsafe {
            libc::send(
                sender.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            ensure!(
                n as usize == payload,
                "a datagram send wrote {n} of {payload} bytes"
            );
            sent += 1;
            continue;
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) => bail!(
                "the AF_UNIX queue is full after {sent} of {count} datagrams (SO_SNDBUF {sndbuf}, \
                 forced {forced}); too small a send buffer"
            ),
            _ => return Err(err).with_context(|| format!("send of datagram {sent}")),
        }
    }
    let slab_after = if root() {
        Some(SlabInfo::read()?)
    } else {
        None
    };
    let charged = ioctl_int(sender.as_raw_fd(), libc::TIOCOUTQ, "ioctl(SIOCOUTQ)")?;
    let hold = UnixDgramHold {
        sender,
        receiver,
        datagrams: sent,
        payload,
        sndbuf,
        forced,
        charged,
        slab_before,
        slab_after,
    };
    eprintln!(
        "unix dgram hold: {sent} datagrams of {payload} bytes queued, sender charged {} \
         (SO_SNDBUF {}, forced {forced}); slab growth {:?}",
        mib(charged),
        mib(sndbuf),
        hold.slab_growth()
    );
    Ok(hold)
}

/// Shared memory (a memfd, i.e. a tmpfs file) written full and kept open.
pub struct ShmemHold {
    file: File,
    /// Bytes written.
    pub bytes: u64,
    /// `Shmem` of `/proc/meminfo` before and after writing.
    pub shmem_before: u64,
    pub shmem_after: u64,
}

impl ShmemHold {
    /// Growth of `Shmem` in `/proc/meminfo` while writing (other processes may add noise).
    pub fn meminfo_growth(&self) -> i64 {
        self.shmem_after as i64 - self.shmem_before as i64
    }

    /// Closes the memfd: its pages are freed.
    pub fn release(self) {
        drop(self.file);
    }
}

/// Writes `bytes` (a multiple of 1 MiB) into a fresh memfd and keeps it.
pub fn shmem_hold(bytes: u64) -> Result<ShmemHold> {
    ensure!(
        bytes.is_multiple_of(WRITE_CHUNK as u64),
        "shmem_hold takes whole MiB"
    );
    // SAFETY: the name is a NUL-terminated C string literal.
    let fd = unsafe { libc::memfd_create(c"memtrace-test-shmem".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(last_error("memfd_create"));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let shmem_before = meminfo_field("Shmem")?;
    write_chunks(&mut file, bytes).context("writing the memfd")?;
    let shmem_after = meminfo_field("Shmem")?;
    let hold = ShmemHold {
        file,
        bytes,
        shmem_before,
        shmem_after,
    };
    eprintln!(
        "shmem hold: wrote {} into a memfd; /proc/meminfo Shmem grew by {:.2} MiB",
        mib(bytes),
        hold.meminfo_growth() as f64 / MIB as f64
    );
    Ok(hold)
}

fn write_chunks(file: &mut File, bytes: u64) -> Result<()> {
    // Not zeroes: nothing may be tempted to treat the pages as empty.
    let chunk = vec![0xa5u8; WRITE_CHUNK];
    let mut written = 0;
    while written < bytes {
        let len = (bytes - written).min(WRITE_CHUNK as u64) as usize;
        file.write_all(&chunk[..len])?;
        written += len as u64;
    }
    Ok(())
}

const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Whether `dir` is on a filesystem whose pages are page cache of a real file (not tmpfs or
/// ramfs, whose pages are shmem or unevictable).
fn disk_backed(dir: &Path) -> Result<bool> {
    let path =
        std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).context("a NUL in the path")?;
    // SAFETY: statfs is a plain C struct for which all-zero is a valid value.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `fs` is a live statfs.
    let rc = unsafe { libc::statfs(path.as_ptr(), &mut fs) };
    if rc != 0 {
        return Err(last_error(&format!("statfs({})", dir.display())));
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between libcs.
    let ftype = fs.f_type as i64;
    Ok(ftype != TMPFS_MAGIC && ftype != RAMFS_MAGIC)
}

/// A file on a disk-backed filesystem written full and kept (not synced). Dropping it deletes
/// the file, which frees its page cache.
pub struct FileHold {
    file: File,
    pub path: PathBuf,
    /// Bytes written.
    pub bytes: u64,
    /// Growth of `Cached` / `Dirty` in `/proc/meminfo` while writing (noisy).
    pub cached_growth: i64,
    pub dirty_growth: i64,
    _dir: tempfile::TempDir,
}

impl FileHold {
    /// Deletes the file (its page cache is freed once the file is closed).
    pub fn release(self) -> Result<()> {
        let FileHold {
            file, path, _dir, ..
        } = self;
        drop(file);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        drop(_dir);
        Ok(())
    }
}

/// Writes `bytes` (a multiple of 1 MiB) into a new file in a temp dir on a disk-backed
/// filesystem (the system temp dir, `/var/tmp` (a kernel-matrix guest's scratch disk), or the
/// workspace's `target/` when those are tmpfs) and keeps
/// the file open and its pages dirty.
pub fn file_hold(bytes: u64) -> Result<FileHold> {
    ensure!(
        bytes.is_multiple_of(WRITE_CHUNK as u64),
        "file_hold takes whole MiB"
    );
    let candidates = [
        std::env::temp_dir(),
        PathBuf::from("/var/tmp"),
        workspace_root().join("target"),
    ];
    let mut base = None;
    for dir in &candidates {
        if dir.is_dir() && disk_backed(dir)? {
            base = Some(dir.clone());
            break;
        }
    }
    let base = base.with_context(|| {
        format!("none of {candidates:?} is on a disk-backed filesystem (all tmpfs/ramfs)")
    })?;
    let dir = tempfile::Builder::new()
        .prefix("memtrace-file-hold-")
        .tempdir_in(&base)
        .with_context(|| format!("creating a temp dir in {}", base.display()))?;
    let path = dir.path().join("held");
    let mut file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let cached_before = meminfo_field("Cached")?;
    let dirty_before = meminfo_field("Dirty")?;
    write_chunks(&mut file, bytes).with_context(|| format!("writing {}", path.display()))?;
    let hold = FileHold {
        file,
        path,
        bytes,
        cached_growth: meminfo_field("Cached")? as i64 - cached_before as i64,
        dirty_growth: meminfo_field("Dirty")? as i64 - dirty_before as i64,
        _dir: dir,
    };
    eprintln!(
        "file hold: wrote {} to {}; /proc/meminfo Cached grew by {:.2} MiB, Dirty by {:.2} MiB",
        mib(bytes),
        hold.path.display(),
        hold.cached_growth as f64 / MIB as f64,
        hold.dirty_growth as f64 / MIB as f64
    );
    Ok(hold)
}

/// Anonymous memory faulted in (one write per page) and kept mapped until dropped.
pub struct AnonHold {
    base: *mut libc::c_void,
    /// Bytes mapped and touched.
    pub bytes: u64,
}

// SAFETY: the mapping belongs to the process, not to a thread; AnonHold only unmaps it.
unsafe impl Send for AnonHold {}

impl Drop for AnonHold {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in anon_hold; nothing else refers to it.
        unsafe { libc::munmap(self.base, self.bytes as usize) };
    }
}

/// Maps `bytes` (a multiple of the page size) of anonymous memory and writes one byte per page.
pub fn anon_hold(bytes: u64) -> Result<AnonHold> {
    let len = usize::try_from(bytes).context("size out of range")?;
    ensure!(len.is_multiple_of(4096), "anon_hold takes whole pages");
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(last_error("mmap"));
    }
    let hold = AnonHold { base, bytes };
    for offset in (0..len).step_by(4096) {
        // SAFETY: `offset < len`, inside the writable mapping just created.
        unsafe { base.cast::<u8>().add(offset).write_volatile(0x5a) };
    }
    eprintln!("anon hold: faulted in {}", mib(bytes));
    Ok(hold)
}

/// Bytes per write to the AF_UNIX stream sockets of [`unix_page_hold`]: one page of data and
/// no head, which `alloc_skb_with_frags` puts in one order-0 page.
pub const UNIX_PAGE_WRITE: usize = 4096;
/// Bytes queued on one socket pair of [`unix_page_hold`] (its forced send buffer, doubled by
/// the kernel, leaves room for the skbs' overhead; the kernel caps it near 2 GiB).
const UNIX_PAGE_PAIR: u64 = 1 << 30;

/// Order-0 kernel pages queued in AF_UNIX stream sockets nobody reads; freed on drop.
pub struct UnixPageHold {
    pairs: Vec<(OwnedFd, OwnedFd)>,
    /// Bytes written: one page each 4 KiB.
    pub sent: u64,
    /// `SIOCINQ` summed over the receivers.
    pub queued: u64,
}

/// Writes `total` bytes (a multiple of 4 KiB) in 4 KiB writes to as many AF_UNIX stream socket
/// pairs as needed (1 GiB each), whose receiving ends are never read. Needs `CAP_NET_ADMIN`
/// (forced send buffers).
pub fn unix_page_hold(total: u64) -> Result<UnixPageHold> {
    let chunk = [0x5au8; UNIX_PAGE_WRITE];
    let mut pairs = Vec::new();
    let mut sent = 0u64;
    while sent < total {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a live array of two c_ints, which socketpair fills on success.
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
        // SAFETY: both fds were just returned by socketpair and are owned by nobody else.
        let (tx, rx) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        set_int_opt(
            tx.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            usize::try_from(UNIX_PAGE_PAIR)?,
        )
        .context("setsockopt(SO_SNDBUFFORCE) on an AF_UNIX socket (needs CAP_NET_ADMIN)")?;
        let goal = (total - sent).min(UNIX_PAGE_PAIR);
        let mut mine = 0u64;
        while mine < goal {
            // SAFETY: `chunk` is live and readable for its whole length.
            let n = unsafe {
                libc::send(
                    tx.as_raw_fd(),
                    chunk.as_ptr().cast(),
                    UNIX_PAGE_WRITE,
                    libc::MSG_DONTWAIT,
                )
            };
            if n == UNIX_PAGE_WRITE as isize {
                mine += UNIX_PAGE_WRITE as u64;
                continue;
            }
            ensure!(n < 0, "a 4 KiB write to an AF_UNIX socket wrote {n} bytes");
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => {}
                // This pair is full sooner than expected: the next one takes the rest.
                Some(libc::EAGAIN) if mine > 0 => break,
                _ => return Err(err).context("writing to an AF_UNIX stream socket"),
            }
        }
        sent += mine;
        pairs.push((tx, rx));
    }
    let mut queued = 0;
    for (_, rx) in &pairs {
        queued += ioctl_int(rx.as_raw_fd(), libc::FIONREAD, "ioctl(SIOCINQ) on AF_UNIX")?;
    }
    Ok(UnixPageHold {
        pairs,
        sent,
        queued,
    })
}

impl UnixPageHold {
    /// Closes every socket: the pages are freed.
    pub fn release(self) {
        drop(self.pairs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slab truth on its own: every datagram is queued, the skb caches grow by about as
    /// many objects, and draining reads them all back.
    #[test]
    fn unix_dgram_hold_reaches_its_count_and_drains() -> Result<()> {
        // Without root the send buffer is capped by net.core.wmem_max: keep it small.
        let count = if root() { 20_000 } else { 1_000 };
        let hold = unix_dgram_hold(count, 16)?;
        assert_eq!(hold.datagrams, count);
        assert!(hold.charged > 0);
        if root() {
            assert!(hold.forced);
            let growth = hold.slab_growth();
            // Other tests run concurrently and allocate or free skbs too: loose bounds.
            assert!(
                growth
                    .iter()
                    .any(|g| g.name == "skbuff_head_cache" && g.objects as u64 >= count * 3 / 4),
                "{growth:?}"
            );
        }
        assert_eq!(hold.drain()?, count);
        Ok(())
    }

    #[test]
    fn shmem_file_and_anon_holds() -> Result<()> {
        let shmem = shmem_hold(4 * MIB)?;
        assert_eq!(shmem.bytes, 4 * MIB);
        assert_eq!(shmem.file.metadata()?.len(), 4 * MIB);
        shmem.release();
        let file = file_hold(4 * MIB)?;
        assert_eq!(std::fs::metadata(&file.path)?.len(), 4 * MIB);
        assert!(disk_backed(&file.path)?);
        let path = file.path.clone();
        file.release()?;
        assert!(!path.exists());
        let anon = anon_hold(4 * MIB)?;
        assert_eq!(anon.bytes, 4 * MIB);
        drop(anon);
        Ok(())
    }
}
