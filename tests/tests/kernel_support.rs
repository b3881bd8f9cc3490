//! What memtrace does on kernels that lack something: no BTF (classic tracepoints, with a
//! note), a kernel older than it accepts (a one-line error, exit code 4), and bulk slab frees
//! (traced with fentry where the kernel allows it, named in the report where it does not).
//! These run on the host and, through `cargo xtask test`'s kernel matrix, inside the guests.

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use memtrace_tests::{
    find_kind_stacks, find_stacks, log, mib, run_memtrace_env, run_scenario, sum_allocated_count,
    sum_allocations, sum_bytes, tcp_hold, Report, SlabInfo, Tracer, MIB,
};

/// Inside a kernel-matrix guest (set by `cargo xtask test`): features the kernel has must be
/// used, not merely degrade gracefully.
fn in_matrix_guest() -> Option<String> {
    std::env::var("MEMTRACE_GUEST_KERNEL")
        .ok()
        .filter(|v| !v.is_empty())
}

fn kind_note(report: &Report, kind: &str) -> Result<(Vec<String>, String)> {
    let kinds = report
        .session_kinds()?
        .context("the report has no session.kinds")?;
    let k = kinds
        .iter()
        .find(|k| k.kind == kind)
        .with_context(|| format!("session.kinds has no {kind}"))?;
    Ok((k.hooks.clone(), k.note.clone().unwrap_or_default()))
}

#[test]
fn without_btf_pages_use_classic_tracepoints_and_say_so() {
    run_scenario(without_btf_scenario);
}

/// `MEMTRACE_BTF_PATH` pointing nowhere: memtrace behaves as on a kernel built without BTF.
fn without_btf_scenario() -> Result<()> {
    let env = [("MEMTRACE_BTF_PATH", "/nonexistent/vmlinux-btf")];
    let mut tracer = Tracer::start_env("nobtf", &["--duration", "10m"], &env)?;
    let hold = tcp_hold(16 * MIB)?;
    let truth = hold.held_bytes();
    let report = tracer.stop_and_report()?;
    report.validate()?;
    report.check_consistency()?;
    let (page_hooks, page_note) = kind_note(&report, "page")?;
    let (slab_hooks, slab_note) = kind_note(&report, "slab")?;
    log(&format!(
        "nobtf: page hooks {page_hooks:?} note {page_note:?}; slab hooks {slab_hooks:?} note \
         {slab_note:?}; counters {}",
        report.counters_line()
    ));
    ensure!(
        page_hooks == ["kmem:mm_page_free", "kmem:mm_page_alloc"],
        "without BTF the page kind must use the classic tracepoints, got {page_hooks:?}"
    );
    ensure!(
        page_note.contains("classic tracepoints") && page_note.contains("no kernel BTF"),
        "the page kind's note must say why tp_btf is not used: {page_note:?}"
    );
    ensure!(
        slab_note.contains("no kernel BTF") && slab_note.contains("bulk frees"),
        "the slab kind's note must say what is lost without BTF: {slab_note:?}"
    );
    ensure!(
        !slab_hooks.iter().any(|h| h.starts_with("fentry")),
        "no fentry program can load without BTF: {slab_hooks:?}"
    );
    // No cache is named from sizes: only names the kernel gave (the event's name field).
    report.check_cache_names(&SlabInfo::read()?)?;
    let tcp = find_stacks(
        &report,
        &[
            &["tcp_sendmsg", "tcp_sendmsg_locked"],
            &["skb_page_frag_refill"],
        ],
    );
    let held = sum_bytes(&tcp);
    log(&format!(
        "nobtf: truth {} ({truth} bytes); tcp frag stacks {} ({held} bytes), {:+.1} %",
        mib(truth),
        mib(held),
        (held as f64 - truth as f64) * 100.0 / truth.max(1) as f64
    ));
    ensure!(
        held.abs_diff(truth) * 10 <= truth,
        "the TCP receive queue holds {truth} bytes, the classic-tracepoint session reports \
         {held} on its stacks (more than 10 % off)"
    );
    drop(hold);
    Ok(())
}

#[test]
fn kernels_older_than_the_minimum_are_refused() {
    run_scenario(|| {
        (|| -> Result<()> {
            let done = run_memtrace_env(
                &["trace", "--duration", "1s"],
                &[("MEMTRACE_KERNEL_RELEASE", "5.10.0-30-amd64")],
                Duration::from_secs(60),
            )?;
            let lines: Vec<&str> = done.stderr.lines().filter(|l| !l.is_empty()).collect();
            log(&format!("5.10: exit {:?}, stderr {lines:?}", done.code()));
            ensure!(
                done.code() == Some(4),
                "a 5.10 kernel must be refused with exit code 4 (environment), got {:?}",
                done.code()
            );
            ensure!(
                lines.len() == 1 && lines[0].contains("needs Linux 5.12 or newer"),
                "expected one line naming the minimum, got {lines:?}"
            );
            ensure!(
                done.stdout.is_empty(),
                "no report expected: {}",
                done.stdout
            );
            Ok(())
        })()
    });
}

/// SysV semaphore sets whose `SEM_UNDO` records (`struct sem_undo`, kmalloc'ed by
/// `find_alloc_undo`) the kernel frees with `kvfree_rcu` when the sets are removed: batched,
/// then freed with `kfree_bulk` → `kmem_cache_free_bulk`, which has no tracepoint.
const SEM_SETS: usize = 2000;

#[test]
fn bulk_frees_are_traced_or_named() {
    run_scenario(bulk_free_scenario);
}

fn bulk_free_scenario() -> Result<()> {
    let mut tracer = Tracer::start(
        "bulk",
        &["--kind", "slab", "--slab-exact", "--duration", "10m"],
    )?;
    let sets = sem_undo_hold(SEM_SETS)?;
    remove_sem_sets(&sets)?;
    // kvfree_rcu drains its batches after a grace period (lazy RCU: up to ~10 s).
    std::thread::sleep(Duration::from_secs(12));
    let report = tracer.stop_and_report()?;
    report.validate()?;
    report.check_consistency()?;
    let (hooks, note) = kind_note(&report, "slab")?;
    // `find_alloc_undo` is inlined into `__do_semtimedop` on some kernels.
    let undo = find_kind_stacks(&report, "slab", &[&["find_alloc_undo", "__do_semtimedop"]]);
    let (allocated, outstanding) = (sum_allocated_count(&undo), sum_allocations(&undo));
    let bulk = report.counter("obj_bulk_frees")?;
    log(&format!(
        "bulk: hooks {hooks:?}; note {note:?}; {SEM_SETS} SEM_UNDO records: find_alloc_undo \
         stacks allocated {allocated}, still outstanding {outstanding}; obj_bulk_frees {bulk}, \
         obj_bulk_truncated {}, obj_stale_records_replaced {}",
        report.counter("obj_bulk_truncated")?,
        report.counter("obj_stale_records_replaced")?
    ));
    let traced = hooks.iter().any(|h| h == "fentry:kmem_cache_free_bulk");
    if let Some(kernel) = in_matrix_guest() {
        ensure!(
            traced,
            "kernel {kernel} allows fentry: kmem_cache_free_bulk must be traced (hooks \
             {hooks:?}, note {note:?})"
        );
    }
    ensure!(
        allocated as usize >= SEM_SETS,
        "only {allocated} of {SEM_SETS} SEM_UNDO allocations were seen on find_alloc_undo stacks"
    );
    if traced {
        ensure!(
            bulk > 0,
            "kmem_cache_free_bulk is traced but no bulk free was seen after {SEM_SETS} \
             kvfree_rcu'd objects"
        );
        ensure!(
            (outstanding as usize) * 20 <= SEM_SETS,
            "{outstanding} of {SEM_SETS} SEM_UNDO records freed through kvfree_rcu are still \
             listed as outstanding (> 5 %): bulk frees were missed"
        );
    } else {
        ensure!(
            note.contains("bulk frees (kmem_cache_free_bulk, kfree_bulk) not traced"),
            "bulk frees are not traced, and the slab kind's note does not say so: {note:?}"
        );
    }
    Ok(())
}

/// `count` semaphore sets of one semaphore, each incremented once with `SEM_UNDO`.
fn sem_undo_hold(count: usize) -> Result<Vec<i32>> {
    let mut ids = Vec::with_capacity(count);
    let result = (|| -> Result<()> {
        for _ in 0..count {
            // SAFETY: plain syscall wrappers; the arguments are values, the sembuf a local.
            let id = unsafe { libc::semget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT | 0o600) };
            ensure!(
                id >= 0,
                "semget: {} (kernel.sem limits?)",
                std::io::Error::last_os_error()
            );
            ids.push(id);
            let mut op = libc::sembuf {
                sem_num: 0,
                sem_op: 1,
                sem_flg: libc::SEM_UNDO as libc::c_short,
            };
            // SAFETY: one valid sembuf.
            let r = unsafe { libc::semop(id, &mut op, 1) };
            ensure!(r == 0, "semop: {}", std::io::Error::last_os_error());
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = remove_sem_sets(&ids);
        return Err(e);
    }
    Ok(ids)
}

fn remove_sem_sets(ids: &[i32]) -> Result<()> {
    for &id in ids {
        // SAFETY: IPC_RMID takes no fourth argument.
        let r = unsafe { libc::semctl(id, 0, libc::IPC_RMID) };
        ensure!(
            r == 0,
            "semctl IPC_RMID: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
