//! `memtrace overview` against the machine:
//!
//! - `cgroup_columns_show_shmem_and_file_holds`: in every memory cgroup hierarchy this machine
//!   has (v1 `memory`, and cgroup2 when its memory controller is enabled) two cgroups of our
//!   own, one with a child holding 64 MiB of shmem (a memfd), one with a child holding 64 MiB
//!   of dirty page cache; `overview --cgroups --json -` shows each in its own column (and not
//!   in the other), and the shmem cgroup, given a limit just above its usage, as near its limit.
//!   The node rows move with the holds: compared with an overview taken before them, `shmem`
//!   and `page_cache` each grow by (nearly) the 64 MiB held, and the remainder does not grow
//!   by more than [`REMAINDER_SLACK`] (the holds are explained, not left in the remainder).
//! - `node_rows_add_up_to_memtotal`: the rows of the JSON add up to MemTotal (plus a reported
//!   overlap), MemTotal is /proc/meminfo's, and the same holds for an unprivileged run, which
//!   says the root-only detail is missing instead of failing.
//!
//! No BPF is needed, but the scenarios are gated by `require_bpf()` like all the others, so
//! that CI treats a skip the same way.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{ensure, Context as _, Result};
use memtrace_tests::{
    child_values, log, meminfo_field, mib, run_memtrace, run_memtrace_unprivileged, run_scenario,
    ChildWorkload, MIB,
};

/// The child workload binary of this package.
const WORKLOAD: &str = env!("CARGO_BIN_EXE_memtrace-workload");
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);
const HOLD: u64 = 64 * MIB;
/// What must show in the column (the hold, less a little for rounding and timing).
const AT_LEAST: u64 = 60 * MIB;
/// What a node-wide row must grow by with the hold: other page cache on the machine comes and
/// goes between the two overviews (a row grew by 59.8 MiB once with 64 MiB held).
const NODE_AT_LEAST: u64 = 48 * MIB;
/// What the other columns may hold besides (the child's own bits: metadata, buffers).
const AT_MOST_OTHER: u64 = 16 * MIB;
/// How much the node's remainder may grow while the holds exist (other activity on the
/// machine between the two overviews).
const REMAINDER_SLACK: u64 = 32 * MIB;

/// No BPF is needed here; gated like every privileged scenario so that CI
/// (MEMTRACE_REQUIRE_BPF=1) treats a skip the same way.
fn run(scenario: fn() -> Result<()>) {
    run_scenario(scenario);
}

// ------------------------------------------------------------------------------------------
// The child workload and the cgroups
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hier {
    V1,
    V2,
}

impl Hier {
    fn name(self) -> &'static str {
        match self {
            Hier::V1 => "v1",
            Hier::V2 => "v2",
        }
    }
    fn usage_file(self) -> &'static str {
        match self {
            Hier::V1 => "memory.usage_in_bytes",
            Hier::V2 => "memory.current",
        }
    }
    fn limit_file(self) -> &'static str {
        match self {
            Hier::V1 => "memory.limit_in_bytes",
            Hier::V2 => "memory.max",
        }
    }
}

/// The memory cgroup hierarchies we can create cgroups in: the v1 `memory` mount, and the
/// cgroup2 mount when the memory controller is enabled for its children.
fn hierarchies() -> Result<Vec<(Hier, PathBuf)>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").context("mountinfo")?;
    let mut out = Vec::new();
    for l in text.lines() {
        let Some((left, right)) = l.split_once(" - ") else {
            continue;
        };
        let mut r = right.split_whitespace();
        let (Some(fstype), _, Some(opts)) = (r.next(), r.next(), r.next()) else {
            continue;
        };
        let Some(mount) = left.split_whitespace().nth(4).map(PathBuf::from) else {
            continue;
        };
        match fstype {
            "cgroup"
                if opts.split(',').any(|o| o == "memory")
                    && !out.iter().any(|(h, _)| *h == Hier::V1) =>
            {
                out.push((Hier::V1, mount));
            }
            "cgroup2" if !out.iter().any(|(h, _)| *h == Hier::V2) => {
                let control = std::fs::read_to_string(mount.join("cgroup.subtree_control"))
                    .unwrap_or_default();
                if control.split_whitespace().any(|c| c == "memory") {
                    out.push((Hier::V2, mount));
                } else {
                    log(&format!(
                        "overview: cgroup2 at {} has no memory controller for its children; \
                         not tested there",
                        mount.display()
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// A cgroup of ours, removed on drop (after its processes have left).
struct TestCgroup {
    dir: PathBuf,
    rel: String,
    hier: Hier,
}

impl TestCgroup {
    fn create(hier: Hier, mount: &Path, name: &str) -> Result<TestCgroup> {
        let dir = mount.join(name);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TestCgroup {
            dir,
            rel: format!("/{name}"),
            hier,
        })
    }

    fn add(&self, pid: u32) -> Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("moving {pid} into {}", self.dir.display()))
    }

    fn read_number(&self, file: &str) -> Result<u64> {
        let path = self.dir.join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("{}: {text:?}", path.display()))
    }

    fn set_limit(&self, bytes: u64) -> Result<()> {
        let path = self.dir.join(self.hier.limit_file());
        std::fs::write(&path, bytes.to_string())
            .with_context(|| format!("writing {bytes} to {}", path.display()))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

// ------------------------------------------------------------------------------------------
// Running memtrace overview
// ------------------------------------------------------------------------------------------

fn overview_json(args: &[&str], unprivileged: bool) -> Result<Value> {
    let mut all = vec!["overview", "--json", "-"];
    all.extend_from_slice(args);
    let run = if unprivileged {
        run_memtrace_unprivileged(&all, TIMEOUT)?
    } else {
        run_memtrace(&all, TIMEOUT)?
    };
    ensure!(
        run.status.success(),
        "memtrace {} failed ({}): {}",
        all.join(" "),
        run.status,
        run.stderr
    );
    serde_json::from_str(&run.stdout).with_context(|| {
        format!(
            "memtrace {} printed no JSON: {}",
            all.join(" "),
            run.stdout.chars().take(500).collect::<String>()
        )
    })
}

fn u(v: &Value, field: &str) -> Result<u64> {
    v[field]
        .as_u64()
        .with_context(|| format!("no number `{field}` in {v}"))
}

/// Bytes of the node row `key`.
fn row_bytes(v: &Value, key: &str) -> Result<u64> {
    let row = v["rows"]
        .as_array()
        .context("no rows")?
        .iter()
        .find(|r| r["key"] == key)
        .with_context(|| format!("no row {key}"))?;
    u(row, "bytes")
}

/// The rows add up to MemTotal (+ the reported overlap) and the remainder is the last row.
fn check_rows(v: &Value, label: &str) -> Result<()> {
    let rows = v["rows"].as_array().context("no rows")?;
    let mut sum = 0u64;
    for r in rows {
        sum += u(r, "bytes")?;
    }
    let total = u(v, "mem_total_bytes")?;
    let overlap = u(v, "overlap_bytes")?;
    let unexplained = u(v, "unexplained_bytes")?;
    let last = rows.last().context("no rows")?;
    log(&format!(
        "{label}: {} rows sum to {sum} bytes, MemTotal {total}, overlap {overlap}, \
         unexplained {} ({:.2}%)",
        rows.len(),
        mib(unexplained),
        v["unexplained_percent"].as_f64().unwrap_or(f64::NAN)
    ));
    ensure!(
        sum == total + overlap,
        "{label}: the rows add up to {sum}, MemTotal is {total}, overlap {overlap}"
    );
    ensure!(
        last["key"] == "unexplained" && u(last, "bytes")? == unexplained,
        "{label}: the last row is {last}, the remainder {unexplained}"
    );
    ensure!(
        overlap == 0 || unexplained == 0,
        "{label}: both an overlap and a remainder"
    );
    for key in [
        "free",
        "free_per_cpu",
        "user_anon",
        "page_cache",
        "shmem",
        "slab_unreclaimable",
        "vmalloc",
    ] {
        ensure!(
            rows.iter().any(|r| r["key"] == key),
            "{label}: no row {key}"
        );
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Scenarios
// ------------------------------------------------------------------------------------------

#[test]
fn node_rows_add_up_to_memtotal() {
    run(|| {
        let before = meminfo_field("MemTotal")?;
        let v = overview_json(&[], false)?;
        let after = meminfo_field("MemTotal")?;
        check_rows(&v, "root")?;
        let total = u(&v, "mem_total_bytes")?;
        ensure!(
            total == before || total == after,
            "mem_total_bytes {total} is not /proc/meminfo's MemTotal ({before})"
        );
        ensure!(
            v["schema"] == 1 && v["kind"] == "memtrace-overview",
            "header: {v}"
        );
        ensure!(v["cgroups"].is_null(), "cgroups without --cgroups");
        ensure!(
            !v["slab_top"].as_array().is_none_or(|a| a.is_empty()),
            "root sees no slab caches: {}",
            v["slab_note"]
        );

        // Unprivileged: the same identity; the root-only detail replaced by a note.
        let v = overview_json(&[], true)?;
        check_rows(&v, "unprivileged")?;
        let note = v["slab_note"].as_str().unwrap_or("");
        ensure!(
            note.contains("/proc/slabinfo") && note.contains("root"),
            "unprivileged slab note: {note:?}"
        );

        // The table: the rows and the closing line.
        let run = run_memtrace(&["overview"], TIMEOUT)?;
        ensure!(run.status.success(), "overview table: {}", run.stderr);
        ensure!(
            run.stdout
                .contains("unexplained: buddy pages no counter explains")
                && (run
                    .stdout
                    .contains("MemTotal: the rows add up to it exactly")
                    || run.stdout.contains("the rows add up to MemTotal +")),
            "table:\n{}",
            run.stdout
        );
        Ok(())
    });
}

#[test]
fn cgroup_columns_show_shmem_and_file_holds() {
    run(|| {
        let hierarchies = hierarchies()?;
        ensure!(
            !hierarchies.is_empty(),
            "no memory cgroup hierarchy (v1 memory or cgroup2 with the memory controller)"
        );
        for (hier, mount) in hierarchies {
            cgroup_scenario(hier, &mount)
                .with_context(|| format!("cgroup {} at {}", hier.name(), mount.display()))?;
        }
        Ok(())
    });
}

fn find_cgroup<'a>(v: &'a Value, cg: &TestCgroup) -> Result<&'a Value> {
    v["cgroups"]["cgroups"]
        .as_array()
        .context("no cgroups[] in the JSON")?
        .iter()
        .find(|c| c["path"] == cg.rel.as_str() && c["hierarchy"] == cg.hier.name())
        .with_context(|| {
            format!(
                "cgroup {} ({}) not in the overview; hierarchies: {}",
                cg.rel,
                cg.hier.name(),
                v["cgroups"]["hierarchies"]
            )
        })
}

/// While the holds exist, the node's `shmem` and `page_cache` rows are each ≥ [`NODE_AT_LEAST`]
/// larger than before them, and the remainder has not grown by more than
/// [`REMAINDER_SLACK`].
fn check_node_growth(before: &Value, during: &Value, hier: Hier) -> Result<()> {
    let grew = |key: &str| -> Result<i64> {
        Ok(row_bytes(during, key)? as i64 - row_bytes(before, key)? as i64)
    };
    let (shmem, cache, remainder) = (grew("shmem")?, grew("page_cache")?, grew("unexplained")?);
    let signed_mib = |b: i64| format!("{:+.1} MiB", b as f64 / MIB as f64);
    log(&format!(
        "overview {}: with the holds the node rows grew: shmem {}, page cache {}, \
         unexplained {} (free {}, free per-CPU {})",
        hier.name(),
        signed_mib(shmem),
        signed_mib(cache),
        signed_mib(remainder),
        signed_mib(grew("free")?),
        signed_mib(grew("free_per_cpu")?),
    ));
    ensure!(
        shmem >= NODE_AT_LEAST as i64,
        "the node shmem row grew by {} with {} of shmem held",
        signed_mib(shmem),
        mib(HOLD)
    );
    ensure!(
        cache >= NODE_AT_LEAST as i64,
        "the node page-cache row grew by {} with {} of dirty page cache held",
        signed_mib(cache),
        mib(HOLD)
    );
    ensure!(
        remainder <= REMAINDER_SLACK as i64,
        "the remainder grew by {} with the holds (at most {} allowed): they should be \
         explained by rows",
        signed_mib(remainder),
        mib(REMAINDER_SLACK)
    );
    Ok(())
}

fn cgroup_scenario(hier: Hier, mount: &Path) -> Result<()> {
    let base = format!(
        "memtrace-test-overview-{}-{}",
        std::process::id(),
        hier.name()
    );
    // The node before the holds, to see its rows move with them.
    let before = overview_json(&[], false)?;
    check_rows(&before, &format!("{} before the holds", hier.name()))?;
    // Declared before the children, so dropped after them (a cgroup with tasks cannot go).
    let shmem_cg = TestCgroup::create(hier, mount, &format!("{base}-shmem"))?;
    let file_cg = TestCgroup::create(hier, mount, &format!("{base}-file"))?;
    let mut shmem_child = ChildWorkload::spawn(WORKLOAD, &["shmem", &HOLD.to_string()])?;
    shmem_cg.add(shmem_child.pid())?;
    let mut file_child = ChildWorkload::spawn(WORKLOAD, &["file", &HOLD.to_string()])?;
    file_cg.add(file_child.pid())?;
    let shmem_held: u64 = child_values(&shmem_child.go_and_wait()?, "held")
        .iter()
        .sum();
    let file_held: u64 = child_values(&file_child.go_and_wait()?, "held")
        .iter()
        .sum();
    ensure!(
        shmem_held == HOLD && file_held == HOLD,
        "held {shmem_held} / {file_held}"
    );

    // A limit just above the shmem cgroup's usage: it must show as near its limit.
    let usage = shmem_cg.read_number(hier.usage_file())?;
    let limit = (usage + usage / 20).next_multiple_of(4096);
    shmem_cg.set_limit(limit)?;

    let v = overview_json(&["--cgroups"], false)?;
    check_rows(&v, hier.name())?;
    check_node_growth(&before, &v, hier)?;
    let s = find_cgroup(&v, &shmem_cg)?;
    let f = find_cgroup(&v, &file_cg)?;
    log(&format!(
        "overview {}: shmem cgroup usage {} shmem {} file {} limit {} near_limit {}; \
         file cgroup usage {} file {} shmem {} dirty {} writeback {}",
        hier.name(),
        mib(u(s, "usage_bytes")?),
        mib(u(s, "shmem_bytes")?),
        mib(u(s, "file_bytes")?),
        s["limit_bytes"],
        s["near_limit"],
        mib(u(f, "usage_bytes")?),
        mib(u(f, "file_bytes")?),
        mib(u(f, "shmem_bytes")?),
        mib(u(f, "dirty_bytes")?),
        mib(u(f, "writeback_bytes")?),
    ));
    ensure!(
        u(s, "shmem_bytes")? >= AT_LEAST,
        "the shmem hold shows {} in the shmem column",
        mib(u(s, "shmem_bytes")?)
    );
    ensure!(
        u(s, "file_bytes")? <= AT_MOST_OTHER,
        "the shmem hold leaks into the file column: {}",
        mib(u(s, "file_bytes")?)
    );
    ensure!(
        u(f, "file_bytes")? >= AT_LEAST,
        "the file hold shows {} in the file column",
        mib(u(f, "file_bytes")?)
    );
    ensure!(
        u(f, "shmem_bytes")? <= AT_MOST_OTHER,
        "the file hold shows {} as shmem",
        mib(u(f, "shmem_bytes")?)
    );
    ensure!(
        u(s, "usage_bytes")? >= AT_LEAST && u(f, "usage_bytes")? >= AT_LEAST,
        "usage below the holds"
    );
    ensure!(
        s["limit_bytes"].as_u64() == Some(limit) && s["near_limit"] == true,
        "the shmem cgroup (usage {usage}, limit {limit}) is not shown near its limit: {s}"
    );
    ensure!(
        f["near_limit"] == false,
        "the file cgroup has no limit but is near it: {f}"
    );
    let warned = v["warnings"].as_array().is_some_and(|w| {
        w.iter()
            .any(|w| w["kind"] == "cgroup_near_limit" && w["cgroup"] == shmem_cg.rel.as_str())
    });
    ensure!(
        warned,
        "no near-limit warning for {}: {}",
        shmem_cg.rel,
        v["warnings"]
    );

    // The table lists both, the shmem one marked.
    let run = run_memtrace(&["overview", "--cgroups", "--top", "0"], TIMEOUT)?;
    ensure!(run.status.success(), "overview --cgroups: {}", run.stderr);
    let line = run
        .stdout
        .lines()
        .find(|l| l.ends_with("<< near its limit") && l.contains(&shmem_cg.rel))
        .with_context(|| format!("no marked table line for {}:\n{}", shmem_cg.rel, run.stdout))?;
    ensure!(line.starts_with('!'), "{line}");
    ensure!(
        run.stdout
            .lines()
            .any(|l| l.trim_end().ends_with(&file_cg.rel)),
        "no table line for {}:\n{}",
        file_cg.rel,
        run.stdout
    );

    shmem_child.finish()?;
    file_child.finish()?;
    Ok(())
}
