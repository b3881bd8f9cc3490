//! Stack-table collisions: the kernel hashes every stack to one bucket of a stack map with a
//! fixed seed, and without `BPF_F_REUSE_STACKID` a second stack that hashes to a taken
//! bucket gets -EEXIST. memtrace stores such a stack in its second stack map, without the
//! innermost frame (which hashes it elsewhere).
//!
//! The scenario runs two tracers on the same child (filtered by `--pid`, so only its few
//! stacks are captured): one with the default tables, one with `--max-stacks 1` (one bucket
//! in each table). In the small one the first stack takes the only bucket of the first table,
//! the next distinct stack the only bucket of the second, and every other one is lost. Checks:
//! the second table was used (counter), its stack is a real stack of the child (the default
//! tracer's frames for it, less the innermost one), nothing else has frames, and both tracers
//! account for the same bytes.

use std::collections::BTreeSet;

use anyhow::{ensure, Context as _, Result};
use memtrace_tests::{
    child_value, log, mib, run_scenario, ChildWorkload, Report, Stack, Tracer, MIB,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_memtrace-workload");
const HOLD: u64 = 16 * MIB;

#[test]
fn colliding_stacks_go_to_the_second_map() {
    run_scenario(scenario);
}

fn names(stack: &Stack) -> Vec<String> {
    stack
        .frames
        .iter()
        .map(|f| f.symbol.clone().unwrap_or_else(|| "?".to_string()))
        .collect()
}

fn total_bytes(report: &Report) -> u64 {
    report.stacks.iter().map(|s| s.bytes).sum()
}

fn total_allocated(report: &Report) -> u64 {
    report.stacks.iter().map(|s| s.allocated_count).sum()
}

fn scenario() -> Result<()> {
    let mut child = ChildWorkload::spawn(WORKLOAD, &["hold", &HOLD.to_string()])?;
    let pid = child.pid().to_string();
    // Every slab object recorded (counts not scaled by a sample) and every slab allocation
    // capturing its own stack (no per-call-site reuse, which may file an allocation under
    // another path to the same call site): the two tracers' stacks and counts compare.
    let mut wide = Tracer::start(
        "default tables",
        &[
            "--duration",
            "10m",
            "--pid",
            &pid,
            "--slab-exact",
            "--slab-stack-every",
            "1",
        ],
    )?;
    let mut tiny = Tracer::start(
        "one bucket",
        &[
            "--duration",
            "10m",
            "--pid",
            &pid,
            "--max-stacks",
            "1",
            "--slab-exact",
            "--slab-stack-every",
            "1",
        ],
    )?;
    child.go()?;
    let held = child_value(&child.wait_done()?, "held")?;
    let r_wide = wide.stop_and_report()?;
    let r_tiny = tiny.stop_and_report()?;
    child.finish()?;

    eprintln!("default tables: counters {}", r_wide.counters_line());
    eprintln!("one bucket: counters {}", r_tiny.counters_line());
    for s in &r_tiny.stacks {
        eprintln!("one bucket: {}", s.describe());
    }
    r_wide.check_consistency()?;
    r_tiny.check_consistency()?;

    let max_stacks = r_tiny.session["max_stacks"]
        .as_u64()
        .context("session.max_stacks")?;
    ensure!(max_stacks == 1, "--max-stacks 1 applied as {max_stacks}");
    let second = r_tiny.counter("stack_id_second_map")?;
    let lost = r_tiny.counter("stack_id_eexist")?;
    ensure!(
        second > 0,
        "the second stack map was never used although the first has one bucket \
         (stack_id_eexist {lost})"
    );
    ensure!(
        lost > 0,
        "no stack was lost with one bucket in each table: the child should have more than two \
         distinct stacks"
    );
    ensure!(
        r_wide.counter("stack_id_eexist")? == 0,
        "the default tables lost {} stacks of one small process",
        r_wide.counter("stack_id_eexist")?
    );

    // Slot 0 is the first table's bucket, slot 1 the second's, slot 2 "unavailable".
    let with_frames: BTreeSet<u32> = r_tiny
        .stacks
        .iter()
        .filter(|s| !s.frames.is_empty())
        .filter_map(|s| s.stack_id)
        .collect();
    ensure!(
        with_frames.iter().all(|&id| id <= 1),
        "stack slots with frames: {with_frames:?} (only 0 and 1 exist)"
    );
    let alt: Vec<&Stack> = r_tiny
        .stacks
        .iter()
        .filter(|s| s.stack_id == Some(1))
        .collect();
    ensure!(
        !alt.is_empty(),
        "no stack in slot 1 (the second map's only bucket)"
    );
    let alt_frames = names(alt[0]);
    ensure!(
        alt.iter().all(|s| names(s) == alt_frames),
        "slot 1 has different frames in different kinds"
    );
    ensure!(
        alt_frames.len() >= 3,
        "slot 1's stack has {} frames: {alt_frames:?}",
        alt_frames.len()
    );
    // The same stack in the default tracer: its frames, innermost one dropped (the second map
    // skips one more frame; under tp_btf that frame is the tracer's own, which every report
    // strips, so the frames are then the same).
    let matching: Vec<&Stack> = r_wide
        .stacks
        .iter()
        .filter(|s| {
            let n = names(s);
            n == alt_frames || (n.len() == alt_frames.len() + 1 && n[1..] == alt_frames[..])
        })
        .collect();
    ensure!(
        !matching.is_empty(),
        "slot 1's frames {alt_frames:?} are not those of any stack of the default tracer, \
         whole or less its innermost frame"
    );
    let alt_allocs: u64 = alt.iter().map(|s| s.allocated_count).sum();
    ensure!(
        alt_allocs > 0 && alt_allocs <= second,
        "slot 1 allocated {alt_allocs} times, the counter says {second}"
    );

    // Same events, same bytes: the tiny tracer only files them under fewer stacks.
    let (b_wide, b_tiny) = (total_bytes(&r_wide), total_bytes(&r_tiny));
    let (n_wide, n_tiny) = (total_allocated(&r_wide), total_allocated(&r_tiny));
    log(&format!(
        "stacks: child held {}; default tables {} outstanding ({n_wide} allocated) in {} stacks; \
         one bucket {} outstanding ({n_tiny} allocated): slot 1 = {} ({alt_allocs} allocations, \
         counter {second}), lost {lost}; its frames match {} default stack(s)",
        mib(held),
        mib(b_wide),
        r_wide.stacks.len(),
        mib(b_tiny),
        alt_frames.join(" <- "),
        matching.len()
    ));
    ensure!(
        b_wide >= held && b_tiny >= held,
        "the child held {held} bytes; the tracers account {b_wide} and {b_tiny}"
    );
    ensure!(
        b_wide.abs_diff(b_tiny) * 20 <= b_wide,
        "the two tracers see the same allocations but account {b_wide} and {b_tiny} bytes"
    );
    Ok(())
}
