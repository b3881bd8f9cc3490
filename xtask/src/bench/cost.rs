//! What each BPF program of a tracer costs per event: the kernel's own statistics
//! (`kernel.bpf_stats_enabled=1`: `run_time_ns` and `run_cnt` per program), read from the
//! tracer's program fds while it runs, for any tracer (memtrace or bpftrace).
//!
//! Statistics cost time themselves (two clock reads per run), so they are only switched on for
//! separate cost runs, never for the throughput runs the ratios come from.

use std::{fs, time::Duration};

use anyhow::{Context as _, Result};

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// One BPF program of a tracer, as its fdinfo and `bpf_prog_info` show it.
#[derive(Clone, Debug, Default)]
pub struct ProgStat {
    pub id: u32,
    /// As the kernel keeps it (at most 15 characters).
    pub name: String,
    pub run_cnt: u64,
    pub run_time_ns: u64,
    pub recursion_misses: u64,
}

impl ProgStat {
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.run_cnt > 0).then(|| self.run_time_ns as f64 / self.run_cnt as f64)
    }
}

/// `kernel.bpf_stats_enabled` switched on for as long as this lives, then back to what it was.
pub struct StatsEnabled {
    before: String,
}

impl StatsEnabled {
    pub fn on() -> Result<StatsEnabled> {
        let before = fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("reading {STATS_SYSCTL}"))?
            .trim()
            .to_string();
        fs::write(STATS_SYSCTL, "1").with_context(|| format!("writing 1 to {STATS_SYSCTL}"))?;
        Ok(StatsEnabled { before })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(e) = fs::write(STATS_SYSCTL, &self.before) {
            eprintln!(
                "[bench] warning: could not restore {STATS_SYSCTL} to {}: {e}",
                self.before
            );
        }
    }
}

/// A field `key:\tvalue` of an fdinfo text.
fn fdinfo_field(info: &str, key: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// Every BPF program `pid` holds an fd of (programs only reachable through links are not
/// listed: memtrace and bpftrace keep their program fds).
pub fn programs_of(pid: libc::pid_t) -> Result<Vec<ProgStat>> {
    let fd_dir = format!("/proc/{pid}/fd");
    let mut out: Vec<ProgStat> = Vec::new();
    for entry in fs::read_dir(&fd_dir).with_context(|| format!("listing {fd_dir}"))? {
        let entry = entry.with_context(|| format!("listing {fd_dir}"))?;
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        if target.as_os_str() != "anon_inode:bpf-prog" {
            continue;
        }
        let fdinfo = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        let Ok(info) = fs::read_to_string(&fdinfo) else {
            continue;
        };
        let Some(id) = fdinfo_field(&info, "prog_id").and_then(|i| u32::try_from(i).ok()) else {
            continue;
        };
        if out.iter().any(|p| p.id == id) {
            continue;
        }
        out.push(ProgStat {
            id,
            name: prog_name(id).unwrap_or_else(|_| format!("prog {id}")),
            run_cnt: fdinfo_field(&info, "run_cnt").unwrap_or(0),
            run_time_ns: fdinfo_field(&info, "run_time_ns").unwrap_or(0),
            recursion_misses: fdinfo_field(&info, "recursion_misses").unwrap_or(0),
        });
    }
    out.sort_by_key(|p| p.id);
    Ok(out)
}

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// The leading part of `struct bpf_prog_info` up to and including `name` (offset 64, 16 bytes).
const INFO_PREFIX: usize = 80;

/// The name of program `id` (`bpf_prog_info.name`).
fn prog_name(id: u32) -> std::io::Result<String> {
    #[repr(C)]
    struct ById {
        prog_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut by_id = ById {
        prog_id: id,
        next_id: 0,
        open_flags: 0,
    };
    // SAFETY: a properly sized bpf_attr prefix for BPF_PROG_GET_FD_BY_ID; no pointers in it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            &mut by_id as *mut ById,
            std::mem::size_of::<ById>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = fd as libc::c_int;
    let mut info = [0u8; INFO_PREFIX];
    let mut attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: INFO_PREFIX as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: `attr` points to `info`, a live buffer of `info_len` bytes the kernel fills.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>() as libc::c_uint,
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: `fd` is the descriptor the kernel just returned to us.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(err);
    }
    let name = &info[64..80];
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..len]).into_owned())
}

/// Per-program statistics of one cost run: a tracer's programs over one workload run.
#[derive(Clone, Debug)]
pub struct CostSample {
    pub workload: super::workload::Workload,
    pub config: &'static str,
    pub elapsed: Duration,
    pub work: f64,
    pub programs: Vec<ProgStat>,
}

impl CostSample {
    /// Program time per second of the run, as a share of one CPU (percent).
    pub fn cpu_percent(&self, p: &ProgStat) -> f64 {
        p.run_time_ns as f64 * 100.0 / self.elapsed.as_nanos().max(1) as f64
    }

    /// Program time per unit of work (ns).
    pub fn ns_per_work(&self, p: &ProgStat) -> f64 {
        if self.work > 0.0 {
            p.run_time_ns as f64 / self.work
        } else {
            0.0
        }
    }

    pub fn total_ns_per_work(&self) -> f64 {
        self.programs.iter().map(|p| self.ns_per_work(p)).sum()
    }

    pub fn total_cpu_percent(&self) -> f64 {
        self.programs.iter().map(|p| self.cpu_percent(p)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fdinfo_fields() {
        let info = "pos:\t0\nflags:\t02000002\nprog_type:\t26\nprog_jited:\t1\n\
                    prog_tag:\t6deef7357e7b4530\nmemlock:\t4096\nprog_id:\t812\n\
                    run_time_ns:\t123456\nrun_cnt:\t1000\nrecursion_misses:\t3\n";
        assert_eq!(fdinfo_field(info, "prog_id"), Some(812));
        assert_eq!(fdinfo_field(info, "run_time_ns"), Some(123_456));
        assert_eq!(fdinfo_field(info, "run_cnt"), Some(1000));
        assert_eq!(fdinfo_field(info, "recursion_misses"), Some(3));
        assert_eq!(fdinfo_field(info, "verified_insns"), None);
        let p = ProgStat {
            run_cnt: 1000,
            run_time_ns: 123_456,
            ..ProgStat::default()
        };
        assert_eq!(p.ns_per_run(), Some(123.456));
    }
}
