//! Network namespaces: which ones exist (the inodes of `/proc/*/ns/net` and of the files
//! bind-mounted in `/run/netns`), and a sock_diag socket inside each.
//!
//! A netlink socket belongs to the namespace of the thread that created it. For another
//! namespace, a short-lived thread enters it with `setns(CLONE_NEWNET)` (which changes only that
//! thread), creates the socket and hands it back; the dump then runs from the calling thread.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::diag;

/// Directories where `ip netns add` keeps named namespaces (alive without any process).
pub const NAMED_NETNS_DIRS: [&str; 2] = ["/run/netns", "/var/run/netns"];

/// One network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// The nsfs inode (`net:[INODE]`), the same number `ip netns identify` / `lsns` show.
    pub inode: u64,
    /// The lowest pid living in it (`None`: reached through a bind mount only).
    pub pid: Option<u32>,
    /// A file that refers to it (`/proc/PID/ns/net` or `/run/netns/NAME`).
    pub path: PathBuf,
    /// The namespace memtrace itself runs in.
    pub own: bool,
}

/// What [`discover`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Our own namespace first, then the others by inode.
    pub namespaces: Vec<Namespace>,
    /// Processes whose namespace link could not be read (permission), by pid.
    pub unreadable: Vec<u32>,
}

/// `net:[4026531833]` → 4026531833.
pub fn parse_ns_link(link: &str) -> Option<u64> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

fn ns_inode(path: &Path) -> io::Result<u64> {
    let link = fs::read_link(path)?;
    let text = link.to_string_lossy();
    parse_ns_link(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} points to {text:?}, not net:[INODE]", path.display()),
        )
    })
}

/// `NSFS_MAGIC` (`linux/magic.h`): the file system of namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Whether `path` is a namespace file (a bind mount of nsfs, or a link to one), not a plain
/// file such as the one a failed `ip netns add` leaves in `/run/netns`.
pub fn is_nsfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data for which all-zero is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string and `st` is live and writable.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut st) };
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on some targets, i32 or u32 on others
    let magic = st.f_type as i64;
    rc == 0 && magic == NSFS_MAGIC
}

/// Inode of a bind-mounted namespace file (`stat` follows to the nsfs inode); an error for a
/// file that is not on nsfs.
fn mounted_ns_inode(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    if !is_nsfs(path) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a namespace file", path.display()),
        ));
    }
    Ok(fs::metadata(path)?.ino())
}

/// The distinct network namespaces of the processes under `proc_root` (`/proc`), our own
/// (`proc_root/self/ns/net`), and the files in `named_dirs`.
pub fn discover(proc_root: &Path, named_dirs: &[&Path]) -> anyhow::Result<Discovery> {
    let own_path = proc_root.join("self/ns/net");
    let own = ns_inode(&own_path)
        .with_context(|| format!("reading our own network namespace {}", own_path.display()))?;
    let mut found: BTreeMap<u64, Namespace> = BTreeMap::new();
    found.insert(
        own,
        Namespace {
            inode: own,
            pid: None,
            path: own_path,
            own: true,
        },
    );
    let mut unreadable = Vec::new();
    let entries = fs::read_dir(proc_root)
        .with_context(|| format!("listing {} for network namespaces", proc_root.display()))?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path().join("ns/net");
        let inode = match ns_inode(&path) {
            Ok(i) => i,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                unreadable.push(pid);
                continue;
            }
            // Exited, a zombie, or a kernel without the link.
            Err(_) => continue,
        };
        let ns = found.entry(inode).or_insert_with(|| Namespace {
            inode,
            pid: Some(pid),
            path: path.clone(),
            own: false,
        });
        if ns.pid.is_none_or(|p| pid < p) {
            ns.pid = Some(pid);
            if !ns.own {
                ns.path = path;
            }
        }
    }
    for dir in named_dirs {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if let Ok(inode) = mounted_ns_inode(&path) {
                found.entry(inode).or_insert(Namespace {
                    inode,
                    pid: None,
                    path,
                    own: false,
                });
            }
        }
    }
    let mut namespaces: Vec<Namespace> = found.into_values().collect();
    namespaces.sort_by_key(|n| (!n.own, n.inode));
    unreadable.sort_unstable();
    Ok(Discovery {
        namespaces,
        unreadable,
    })
}

/// Why a namespace could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    /// `setns` refused: not allowed (needs `CAP_SYS_ADMIN`).
    #[error("setns into network namespace {inode} ({path}): {source}")]
    Permission {
        inode: u64,
        path: String,
        source: io::Error,
    },
    /// The namespace went away, or something else failed.
    #[error("network namespace {inode} ({path}): {source:#}")]
    Other {
        inode: u64,
        path: String,
        source: anyhow::Error,
    },
}

impl EnterError {
    /// What failed, without the namespace: the same text for every namespace that failed
    /// the same way (to group them in one note).
    pub fn cause(&self) -> String {
        match self {
            EnterError::Permission { source, .. } => format!("setns: {source}"),
            EnterError::Other { source, .. } => source.root_cause().to_string(),
        }
    }
}

/// A sock_diag socket in namespace `ns`: created here for our own namespace, otherwise by a
/// thread that enters `ns` first.
pub fn diag_socket_in(ns: &Namespace) -> Result<OwnedFd, EnterError> {
    let path = ns.path.display().to_string();
    let other = |source: anyhow::Error| EnterError::Other {
        inode: ns.inode,
        path: path.clone(),
        source,
    };
    if ns.own {
        return diag::open().map_err(|e| other(e.into()));
    }
    let file = fs::File::open(&ns.path)
        .with_context(|| format!("opening {}", ns.path.display()))
        .map_err(other)?;
    // The namespace file must still be the namespace discovered (the pid may have been reused).
    use std::os::unix::fs::MetadataExt as _;
    match file.metadata() {
        Ok(m) if m.ino() == ns.inode => {}
        Ok(_) => {
            return Err(other(anyhow::anyhow!(
                "its file now refers to another namespace (the process exited)"
            )))
        }
        Err(e) => return Err(other(e.into())),
    }
    let fd = OwnedFd::from(file);
    let handle = std::thread::Builder::new()
        .name("memtrace-netns".to_string())
        .spawn(move || -> Result<OwnedFd, (bool, io::Error)> {
            // SAFETY: `fd` is an open nsfs file; setns changes only this thread's namespace,
            // and this thread ends right after creating the socket.
            let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err((true, io::Error::last_os_error()));
            }
            diag::open().map_err(|e| (false, e))
        })
        .map_err(|e| other(anyhow::Error::new(e).context("spawning a thread for setns")))?;
    match handle.join() {
        Ok(Ok(fd)) => Ok(fd),
        Ok(Err((true, e)))
            if matches!(e.kind(), io::ErrorKind::PermissionDenied)
                || e.raw_os_error() == Some(libc::EPERM) =>
        {
            Err(EnterError::Permission {
                inode: ns.inode,
                path,
                source: e,
            })
        }
        Ok(Err((_, e))) => Err(other(e.into())),
        Err(_) => Err(other(anyhow::anyhow!("the setns thread panicked"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn ns_links() {
        assert_eq!(parse_ns_link("net:[4026531833]"), Some(4026531833));
        assert_eq!(parse_ns_link("mnt:[4026531833]"), None);
        assert_eq!(parse_ns_link("net:[x]"), None);
        assert_eq!(parse_ns_link("net:[1"), None);
    }

    #[test]
    fn discover_fake_proc() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let link = |who: &str, target: &str| {
            fs::create_dir_all(root.join(who).join("ns")).unwrap();
            symlink(target, root.join(who).join("ns/net")).unwrap();
        };
        link("self", "net:[100]");
        link("1", "net:[100]");
        link("42", "net:[200]");
        link("7", "net:[200]");
        link("9", "garbage");
        fs::create_dir_all(root.join("11")).unwrap(); // exited: no ns
        fs::create_dir_all(root.join("sys")).unwrap();
        // A named-namespace directory with a leftover plain file (a failed `ip netns add`)
        // and a link to a real namespace file.
        let named = root.join("netns");
        fs::create_dir_all(&named).unwrap();
        fs::write(named.join("leftover"), b"").unwrap();
        symlink("/proc/self/ns/net", named.join("real")).unwrap();
        let real = mounted_ns_inode(Path::new("/proc/self/ns/net")).unwrap();
        let d = discover(root, &[&root.join("no-such-dir"), &named]).unwrap();
        assert!(d.unreadable.is_empty());
        assert_eq!(
            d.namespaces,
            vec![
                Namespace {
                    inode: 100,
                    pid: Some(1),
                    path: root.join("self/ns/net"),
                    own: true,
                },
                Namespace {
                    inode: 200,
                    pid: Some(7),
                    path: root.join("7/ns/net"),
                    own: false,
                },
                Namespace {
                    inode: real,
                    pid: None,
                    path: named.join("real"),
                    own: false,
                },
            ]
        );
        let err = discover(&root.join("missing"), &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains("own network namespace"),
            "{err:#}"
        );
    }

    #[test]
    fn only_nsfs_files_are_namespaces() {
        assert!(is_nsfs(Path::new("/proc/self/ns/net")));
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("leftover");
        fs::write(&plain, b"").unwrap();
        assert!(!is_nsfs(&plain));
        assert!(!is_nsfs(&dir.path().join("missing")));
        assert!(mounted_ns_inode(&plain).is_err());
    }

    #[test]
    fn discover_real_and_enter_own() {
        let d = discover(Path::new("/proc"), &[]).unwrap();
        let own = &d.namespaces[0];
        assert!(own.own);
        let fd = diag_socket_in(own).unwrap();
        let decoded = diag::dump(&fd, diag::Query::Unix, 1).unwrap();
        assert!(decoded.done);
    }
}
