//! How memtrace fails: without privileges (exit 3), on bad usage (exit 2), and that a
//! SIGTERM'd session still writes its complete report (exit 0).

use std::time::Duration;

use anyhow::ensure;
use memtrace_tests::{
    log, mib, parse_folded, run_memtrace, run_memtrace_unprivileged, run_scenario, Tracer,
};

const TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn unprivileged_run_exits_3_and_names_the_capabilities() {
    run_scenario(|| {
        let run = run_memtrace_unprivileged(&["trace", "--duration", "5s"], TIMEOUT)?;
        log(&format!(
            "unprivileged: {}\nstderr:\n{}",
            run.status, run.stderr
        ));
        ensure!(
            run.code() == Some(3),
            "unprivileged memtrace ended with {:?}, expected exit code 3; stderr:\n{}",
            run.status,
            run.stderr
        );
        for needed in ["CAP_BPF", "CAP_PERFMON"] {
            ensure!(
                run.stderr.contains(needed),
                "the not-privileged message does not name {needed}:\n{}",
                run.stderr
            );
        }
        ensure!(
            run.stderr.contains("CAP_SYS_ADMIN") || run.stderr.contains("root"),
            "the not-privileged message names neither CAP_SYS_ADMIN nor root:\n{}",
            run.stderr
        );
        ensure!(
            run.stdout.trim().is_empty(),
            "an unprivileged run must not print a report, stdout was:\n{}",
            run.stdout
        );
        Ok(())
    });
}

#[test]
fn bad_duration_is_a_usage_error() {
    run_scenario(|| {
        let run = run_memtrace(&["trace", "--duration", "nonsense"], TIMEOUT)?;
        log(&format!(
            "bad usage: {}\nstderr:\n{}",
            run.status, run.stderr
        ));
        ensure!(
            run.code() == Some(2),
            "`memtrace trace --duration nonsense` ended with {:?}, expected exit code 2; \
             stderr:\n{}",
            run.status,
            run.stderr
        );
        ensure!(
            run.stderr.contains("--duration"),
            "the usage error does not name the flag --duration:\n{}",
            run.stderr
        );
        Ok(())
    });
}

#[test]
fn sigterm_still_writes_the_complete_report() {
    run_scenario(|| {
        let mut tracer = Tracer::start("sigterm", &["--duration", "10m"])?;
        // Long enough for the kernel to allocate something, so the report has stacks.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let status = tracer.stop_with(libc::SIGTERM)?;
        ensure!(
            status.code() == Some(0),
            "a SIGTERM'd session ended with {status:?}, expected exit code 0; stderr:\n{}",
            tracer.stderr()
        );
        // Typed parsing checks every contract field; the raw value double-checks the keys.
        let report = tracer.report()?;
        let raw = tracer.json()?;
        ensure!(
            raw["schema"] == 1,
            "schema is {}, expected 1",
            raw["schema"]
        );
        ensure!(raw["counters"].is_object(), "no counters object");
        log(&format!(
            "sigterm: session {}\ncounters: {}\n{} stacks, {} outstanding, {} allocated",
            raw["session"],
            report.counters_line(),
            report.stacks.len(),
            mib(report.totals.bytes),
            mib(report.totals.allocated_bytes)
        ));
        report.check_consistency()?;
        let folded = parse_folded(&tracer.folded()?)?;
        log(&format!("sigterm: {} folded lines", folded.len()));
        ensure!(
            !tracer.stdout().trim().is_empty(),
            "a SIGTERM'd session printed no text report"
        );
        Ok(())
    });
}
