//! Higher-order allocations freed page by page (split pages) are taken out of the outstanding
//! set piece by piece: transparent huge pages (order 9) are faulted in, half of each is
//! unmapped (MADV_DONTNEED; the folio goes on the deferred-split queue), the deferred-split
//! shrinker splits them to order 0 (`vm.drop_caches=2` runs every shrinker; it also drops the
//! machine's dentry/inode caches, harmless on a test machine), which frees the unmapped halves
//! page by page, and unmapping the rest frees the other halves page by page. Without memtrace's
//! head search every one of those frees would be "unmatched" and the huge-page stacks would
//! keep (almost) all their bytes as false leaks.
//!
//! (The debugfs `split_huge_pages` knob would be more direct, but some sandboxed kernels refuse
//! writes to debugfs even for root.)

use std::{fs, ptr, time::Duration};

use anyhow::{bail, ensure, Context as _, Result};
use memtrace_tests::{
    find_stacks_with_all, log, mib, require_bpf, run_scenario, sum_allocated_bytes, sum_bytes,
    Tracer, MIB,
};

const HUGE: usize = 2 * MIB as usize;
const REGION: usize = 64 * MIB as usize;

#[test]
fn split_huge_pages_are_freed_piece_by_piece() {
    if !require_bpf() {
        return;
    }
    if let Some(reason) = thp_unavailable() {
        // Not a BPF problem: the kernel lacks the feature this scenario needs.
        eprintln!("\n!!! SKIPPED split_huge_pages_are_freed_piece_by_piece: {reason}\n");
        return;
    }
    run_scenario(scenario);
}

fn thp_unavailable() -> Option<String> {
    let enabled = fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    if enabled.contains("[never]") {
        return Some("transparent huge pages are disabled ([never])".into());
    }
    None
}

fn vmstat(name: &str) -> Result<u64> {
    let text = fs::read_to_string("/proc/vmstat").context("reading /proc/vmstat")?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("{name} not in /proc/vmstat"))
}

/// An anonymous mapping aligned to 2 MiB, unmapped on drop.
struct Region {
    base: *mut u8,
    len: usize,
    start: usize,
}

impl Region {
    fn new(len: usize) -> Result<Region> {
        let map_len = len + HUGE;
        // SAFETY: anonymous private mapping, no address hint; checked for MAP_FAILED.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            bail!("mmap: {}", std::io::Error::last_os_error());
        }
        let start = (base as usize).next_multiple_of(HUGE);
        Ok(Region {
            base: base.cast(),
            len: map_len,
            start,
        })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

fn scenario() -> Result<()> {
    // THP pages are user memory (movable): traced with --class all.
    let mut tracer = Tracer::start("split", &["--class", "all", "--duration", "10m"])?;
    let splits_before = vmstat("thp_split_page")?;
    let region = Region::new(REGION)?;
    // SAFETY: [start, start + REGION) lies inside the mapping; madvise only sets a hint.
    let rc = unsafe {
        libc::madvise(
            region.start as *mut libc::c_void,
            REGION,
            libc::MADV_HUGEPAGE,
        )
    };
    ensure!(
        rc == 0,
        "madvise(MADV_HUGEPAGE): {}",
        std::io::Error::last_os_error()
    );
    for off in (0..REGION).step_by(4096) {
        // SAFETY: inside the mapping; a non-zero byte per page so the split cannot replace
        // zero-filled subpages with the shared zero page.
        unsafe { ptr::write_volatile((region.start + off) as *mut u8, 0x5a) };
    }
    for chunk in (0..REGION).step_by(HUGE) {
        let half = region.start + chunk + HUGE / 2;
        // SAFETY: the second half of a huge page inside the mapping; its pages are dropped.
        let rc = unsafe { libc::madvise(half as *mut libc::c_void, HUGE / 2, libc::MADV_DONTNEED) };
        ensure!(
            rc == 0,
            "madvise(MADV_DONTNEED): {}",
            std::io::Error::last_os_error()
        );
    }
    fs::write("/proc/sys/vm/drop_caches", "2").context("writing 2 to /proc/sys/vm/drop_caches")?;
    let split = vmstat("thp_split_page")? - splits_before;
    drop(region);
    std::thread::sleep(Duration::from_millis(300));
    let report = tracer.stop_and_report()?;
    eprintln!("counters: {}", report.counters_line());

    let huge = find_stacks_with_all(&report, &["do_huge_pmd_anonymous_page"]);
    let allocated = sum_allocated_bytes(&huge);
    let outstanding = sum_bytes(&huge);
    let partial = report.counter("partial_frees")?;
    log(&format!(
        "split: {split} huge pages split; huge-page stacks ({}) allocated {} and hold {} \
         ({:.2} %); partial_frees={partial}",
        huge.len(),
        mib(allocated),
        mib(outstanding),
        outstanding as f64 * 100.0 / allocated.max(1) as f64,
    ));
    report.check_consistency()?;
    let expected_huge = (REGION / HUGE) as u64;
    ensure!(
        split * 10 >= expected_huge * 9,
        "only {split} of {expected_huge} huge pages were split: the scenario did not run as designed"
    );
    ensure!(
        allocated * 10 >= REGION as u64 * 9,
        "huge-page fault stacks allocated only {allocated} bytes; the workload faulted {REGION}"
    );
    let pages_freed_singly = split * (HUGE as u64 / 4096);
    ensure!(
        partial * 10 >= pages_freed_singly * 9,
        "partial_frees={partial}, but about {pages_freed_singly} pages of split huge pages were freed one by one"
    );
    ensure!(
        outstanding * 50 < allocated,
        "{outstanding} bytes of {allocated} allocated on the huge-page stacks are still outstanding \
         after every split page was freed (must be < 2 %)"
    );
    Ok(())
}
