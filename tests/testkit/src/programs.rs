//! Which memtrace BPF programs are loaded in the kernel.
//!
//! After a test every tracer it started has exited, so none of their programs (`mm_page_alloc`,
//! `mm_page_free`, and for the slab/percpu/vmalloc kinds `kmalloc`, `kmem_cache_alloc`, `kfree`,
//! ...) may remain: a remaining one is pinned, attached without an owner, or held by a tracer
//! that did not exit. Programs of the same name that belong to a *foreign*
//! live process (another memtrace run on the same machine, loaded before our first tracer or
//! held open by a process this test binary did not start) are reported but not counted.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use aya::programs::{loaded_programs, ProgramError};
use aya::sys::SyscallError;

use crate::process::spawned_pids;

/// The names of memtrace's programs (one per tracepoint it attaches to).
pub const PROGRAM_NAMES: [&str; 21] = [
    "calib_page_alloc",
    "calib_kmalloc",
    "mm_page_alloc",
    "mm_page_free",
    "mm_page_alloc_btf",
    "mm_page_free_btf",
    "kmem_cache_free_bulk",
    "kmalloc",
    "kmem_cache_alloc",
    "kfree",
    "kmem_cache_free",
    "kmalloc_raw",
    "cache_alloc_raw",
    "kfree_raw",
    "kfree_raw_twin",
    "cache_free_raw",
    "cache_free_twin",
    "percpu_alloc_percpu",
    "percpu_free_percpu",
    "alloc_vmap_area",
    "free_vmap_area_noflush",
];

/// The kernel keeps at most 15 characters of a program name (`BPF_OBJ_NAME_LEN` - 1).
const KERNEL_NAME_LEN: usize = 15;

/// Whether `name`, as the kernel shows it (truncated to 15 characters), is one of
/// [`PROGRAM_NAMES`].
pub fn is_memtrace_program_name(name: &str) -> bool {
    !name.is_empty()
        && PROGRAM_NAMES
            .iter()
            .any(|p| *p == name || (name.len() == KERNEL_NAME_LEN && p.starts_with(name)))
}

/// How long programs may take to disappear after their tracer exited.
const UNLOAD_TIMEOUT: Duration = Duration::from_secs(10);

static FIRST_SPAWN: OnceLock<SystemTime> = OnceLock::new();

/// Called before the first tracer is spawned: programs loaded earlier cannot be ours.
pub(crate) fn note_spawn() {
    FIRST_SPAWN.get_or_init(SystemTime::now);
}

/// A loaded BPF program named like one of memtrace's.
#[derive(Clone, Debug)]
pub struct LoadedProgram {
    pub id: u32,
    pub name: String,
    pub loaded_at: Option<SystemTime>,
    /// Live processes holding an fd that refers to the program (program or link fds).
    pub holders: Vec<(u32, String)>,
}

impl LoadedProgram {
    /// Whether this program can have been loaded by a process this test binary started.
    pub fn possibly_ours(&self) -> bool {
        let Some(first) = FIRST_SPAWN.get() else {
            return false;
        };
        // Load times come from the boot clock: allow some slack against the wall clock.
        let loaded_before_us = self
            .loaded_at
            .is_some_and(|t| t + Duration::from_secs(2) < *first);
        if loaded_before_us {
            return false;
        }
        let ours = spawned_pids();
        self.holders.is_empty() || self.holders.iter().any(|(pid, _)| ours.contains(pid))
    }
}

/// Every loaded program named like one of [`PROGRAM_NAMES`], with its holders.
pub fn loaded_memtrace_programs() -> Result<Vec<LoadedProgram>> {
    let mut found = Vec::new();
    for info in loaded_programs() {
        let info = match info {
            Ok(info) => info,
            // Unloaded between listing its id and opening it.
            Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
                if io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                continue
            }
            Err(e) => return Err(e).context("enumerating loaded BPF programs"),
        };
        let name = info.name_as_str().unwrap_or("").to_string();
        if is_memtrace_program_name(&name) {
            found.push(LoadedProgram {
                id: info.id(),
                name,
                loaded_at: info.loaded_at(),
                holders: Vec::new(),
            });
        }
    }
    if !found.is_empty() {
        let holders = fd_holders()?;
        for prog in &mut found {
            prog.holders = holders.get(&prog.id).cloned().unwrap_or_default();
        }
    }
    Ok(found)
}

/// prog id → live (pid, comm) holding an fd whose fdinfo names that `prog_id`.
fn fd_holders() -> Result<BTreeMap<u32, Vec<(u32, String)>>> {
    let mut holders: BTreeMap<u32, Vec<(u32, String)>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").context("listing /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go while we look: skip whatever cannot be read.
        let Ok(fds) = std::fs::read_dir(entry.path().join("fdinfo")) else {
            continue;
        };
        let mut ids = Vec::new();
        for fd in fds.flatten() {
            let Ok(text) = std::fs::read_to_string(fd.path()) else {
                continue;
            };
            ids.extend(text.lines().filter_map(|l| {
                l.strip_prefix("prog_id:")
                    .and_then(|v| v.trim().parse::<u32>().ok())
            }));
        }
        if ids.is_empty() {
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm"))
            .map(|c| c.trim().to_string())
            .unwrap_or_default();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            holders.entry(id).or_default().push((pid, comm.clone()));
        }
    }
    Ok(holders)
}

/// Fails when, after waiting up to `timeout` for them to go, memtrace programs that may be
/// ours are still loaded.
pub fn check_no_memtrace_programs_loaded(timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let programs = loaded_memtrace_programs()?;
        let (ours, foreign): (Vec<_>, Vec<_>) =
            programs.into_iter().partition(LoadedProgram::possibly_ours);
        if ours.is_empty() {
            if !foreign.is_empty() {
                eprintln!(
                    "note: memtrace-named BPF programs of other processes are loaded (not \
                     ours, ignored): {foreign:?}"
                );
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "BPF programs named {PROGRAM_NAMES:?} are still loaded {timeout:?} after the \
                 test's tracers exited (pinned, orphaned, or held by a tracer we started): \
                 {ours:?}; our tracer pids: {:?}",
                spawned_pids()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Panics if memtrace programs that may be ours stay loaded (waits up to 10 s for them to go).
/// Call at the end of every scenario, after all its tracers exited.
pub fn assert_no_memtrace_programs_loaded() {
    if let Err(e) = check_no_memtrace_programs_loaded(UNLOAD_TIMEOUT) {
        panic!("{e:#}");
    }
    eprintln!("no memtrace BPF programs of ours are loaded");
}

#[cfg(test)]
mod tests {
    use std::os::fd::{FromRawFd, OwnedFd};

    use super::*;

    /// The head of `union bpf_attr` for BPF_PROG_LOAD, zero-padded.
    #[repr(C)]
    struct ProgLoadAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        rest: [u8; 64],
    }

    /// Loads `r0 = 0; exit` as a socket filter called `name`.
    fn load_dummy_program(name: &str) -> Result<OwnedFd> {
        // BPF_MOV64_IMM(BPF_REG_0, 0), BPF_EXIT_INSN().
        let insns: [u64; 2] = [0xb7, 0x95];
        let license = c"GPL";
        let mut prog_name = [0u8; 16];
        prog_name[..name.len()].copy_from_slice(name.as_bytes());
        let attr = ProgLoadAttr {
            prog_type: 1, // BPF_PROG_TYPE_SOCKET_FILTER
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 0,
            log_size: 0,
            log_buf: 0,
            kern_version: 0,
            prog_flags: 0,
            prog_name,
            rest: [0; 64],
        };
        // SAFETY: `attr` is a valid, zero-padded BPF_PROG_LOAD attribute whose pointers refer to
        // `insns` and `license`, both alive for the duration of the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                5, // BPF_PROG_LOAD
                &attr as *const ProgLoadAttr,
                std::mem::size_of::<ProgLoadAttr>() as u32,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("BPF_PROG_LOAD");
        }
        let fd = i32::try_from(fd).context("fd out of range")?;
        // SAFETY: the kernel just returned this new fd; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    #[test]
    fn program_names_as_the_kernel_truncates_them() {
        assert!(is_memtrace_program_name("mm_page_alloc"));
        assert!(is_memtrace_program_name("kfree"));
        assert!(is_memtrace_program_name("percpu_alloc_pe"));
        assert!(is_memtrace_program_name("free_vmap_area_"));
        assert!(is_memtrace_program_name("kmem_cache_allo"));
        assert!(!is_memtrace_program_name("kmem_cache"));
        assert!(!is_memtrace_program_name("percpu_alloc_p"));
        assert!(!is_memtrace_program_name(""));
        assert!(!is_memtrace_program_name("sys_enter"));
    }

    #[test]
    fn finds_a_program_by_name_with_its_holder() -> Result<()> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: loading a BPF program needs root");
            return Ok(());
        }
        let fd = load_dummy_program("mm_page_free")?;
        let me = std::process::id();
        let found = loaded_memtrace_programs()?;
        let ours: Vec<_> = found
            .iter()
            .filter(|p| p.holders.iter().any(|(pid, _)| *pid == me))
            .collect();
        assert_eq!(ours.len(), 1, "found {found:?}");
        assert_eq!(ours[0].name, "mm_page_free");
        // Held by this test process, which is not a tracer we spawned: not ours.
        assert!(!ours[0].possibly_ours());
        let id = ours[0].id;
        drop(fd);
        let deadline = Instant::now() + Duration::from_secs(10);
        while loaded_memtrace_programs()?.iter().any(|p| p.id == id) {
            assert!(
                Instant::now() < deadline,
                "program {id} still loaded after close"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}
