//! The `--json` report (schema 1) and helpers to find stacks by the functions in them.
//!
//! Reports of memtrace versions that trace only pages (no `kind`, `class`, `classes`,
//! `session.kinds`) still parse: every field added for the slab/percpu/vmalloc kinds and the
//! classes is optional here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;

/// Counters every schema-1 report must carry (it may carry more).
pub const REQUIRED_COUNTERS: [&str; 15] = [
    "allocs_seen",
    "allocs_tracked",
    "failed_allocs",
    "self_allocs",
    "frees_seen",
    "frees_matched",
    "partial_frees",
    "unmatched_frees",
    "outstanding_map_full",
    "stale_records_replaced",
    "records_detached",
    "stack_id_eexist",
    "stack_id_enomem",
    "stack_id_other",
    "agg_missing",
];

/// Counters a report of a memtrace that traces slab/percpu/vmalloc objects carries as well
/// (required once `session.kinds` is present).
pub const OBJ_COUNTERS: [&str; 8] = [
    "obj_allocs_seen",
    "obj_allocs_tracked",
    "obj_failed_allocs",
    "obj_frees_seen",
    "obj_frees_matched",
    "obj_unmatched_frees",
    "objects_map_full",
    "obj_stale_records_replaced",
];

/// Functions of the tracing machinery between a tracepoint and a BPF program, and BPF
/// programs themselves (`bpf_prog_<tag>_<name>` in kallsyms).
pub fn is_tracer_symbol(symbol: &str) -> bool {
    ["bpf_trace_run", "__bpf_trace_"]
        .iter()
        .any(|p| symbol.starts_with(p))
        || is_bpf_program_symbol(symbol)
        // A trampoline image, `bpf_trampoline_<key>` (not `bpf_trampoline_update`).
        || symbol
            .strip_prefix("bpf_trampoline_")
            .is_some_and(|key| !key.is_empty() && key.chars().all(|c| c.is_ascii_digit()))
}

/// `bpf_prog_<16 hex digits tag>[_<name>]` (not kernel functions like `bpf_prog_load`).
fn is_bpf_program_symbol(symbol: &str) -> bool {
    symbol.strip_prefix("bpf_prog_").is_some_and(|rest| {
        rest.len() >= 16
            && rest[..16].chars().all(|c| c.is_ascii_hexdigit())
            && (rest.len() == 16 || rest[16..].starts_with('_'))
    })
}

/// The allocator kinds, as the report names them.
pub const KINDS: [&str; 4] = ["page", "slab", "percpu", "vmalloc"];

/// Every class, as the report names them.
pub const CLASSES: [&str; 10] = [
    "user-anon",
    "page-cache",
    "shmem",
    "network",
    "slab-backing",
    "vmalloc-backing",
    "percpu-backing",
    "page-tables",
    "kernel-stack",
    "other-kernel",
];

/// What `--class kernel` (and the default session) selects: every class but the ones made of
/// movable pages, `user-anon`, `page-cache` and `shmem`.
pub const KERNEL_CLASSES: [&str; 7] = [
    "network",
    "slab-backing",
    "vmalloc-backing",
    "percpu-backing",
    "page-tables",
    "kernel-stack",
    "other-kernel",
];

/// The kind whose own events count the memory of a backing class (pages under slabs, vmap
/// areas, percpu chunks), if `class` is one.
pub fn backed_kind(class: &str) -> Option<&'static str> {
    match class {
        "slab-backing" => Some("slab"),
        "vmalloc-backing" => Some("vmalloc"),
        "percpu-backing" => Some("percpu"),
        _ => None,
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct Report {
    pub schema: u64,
    pub session: serde_json::Value,
    pub counters: BTreeMap<String, u64>,
    pub programs: Vec<ProgramStats>,
    pub totals: Totals,
    /// Outstanding memory per class, before `--class` filtering (absent in page-only reports).
    #[serde(default)]
    pub classes: Vec<ClassSummary>,
    /// The classes `--class` selected (null without `--class`; absent in page-only reports).
    #[serde(default)]
    pub class_filter: Option<Vec<String>>,
    pub callers: Vec<Caller>,
    /// Every stack that allocated during the session, by outstanding bytes descending.
    pub stacks: Vec<Stack>,
    /// Who holds the memory (by process and cgroup).
    #[serde(default)]
    pub owners: OwnerSummary,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ClassSummary {
    pub class: String,
    pub bytes: u64,
    pub allocations: u64,
    pub stacks: u64,
    /// False for backing pages whose owning kind was traced too: left out of the totals.
    pub in_total: bool,
}

/// One entry of `session.kinds`: a kind that was asked for, traced or skipped.
#[derive(Clone, Debug, Deserialize)]
pub struct KindStatus {
    pub kind: String,
    pub traced: bool,
    #[serde(default)]
    pub hooks: Vec<String>,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ProgramStats {
    pub name: String,
    pub recursion_misses: u64,
    pub run_count: u64,
    pub run_time_ns: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Totals {
    pub bytes: u64,
    pub allocations: u64,
    pub allocated_bytes: u64,
    pub allocated_count: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Caller {
    pub function: String,
    pub bytes: u64,
    pub allocations: u64,
    pub allocated_bytes: u64,
    pub stacks: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Stack {
    /// `page`, `slab`, `percpu`, `vmalloc` (absent in page-only reports: see [`Stack::kind`]).
    #[serde(default)]
    pub kind: Option<String>,
    /// What the memory is for (one of [`CLASSES`]); absent in page-only reports.
    #[serde(default)]
    pub class: Option<String>,
    /// `dirty` for page-cache pages allocated on the write path, else null.
    #[serde(default)]
    pub class_detail: Option<String>,
    /// Slab stacks: the cache name, as `/proc/slabinfo` lists it; null for large kmalloc
    /// (buddy pages) and when unknown.
    #[serde(default)]
    pub cache: Option<String>,
    /// Slab stacks: outstanding bytes the callers asked for (`bytes` minus this is slack).
    #[serde(default)]
    pub bytes_req: Option<u64>,
    pub stack_id: Option<u32>,
    /// Outstanding bytes.
    pub bytes: u64,
    /// Outstanding allocations.
    pub allocations: u64,
    /// Bytes allocated from this stack during the session, freed or not.
    pub allocated_bytes: u64,
    pub allocated_count: u64,
    pub orders: Vec<u8>,
    pub oldest_age_secs: Option<f64>,
    pub caller: String,
    pub owners: Vec<Owner>,
    /// Innermost first.
    pub frames: Vec<Frame>,
    /// With `--interval`: whether its outstanding bytes grew steadily across the snapshots.
    #[serde(default)]
    pub growing: Option<bool>,
    /// With `--interval`: the growth verdict's figures (bytes per snapshot, slope, ...).
    #[serde(default)]
    pub growth: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Owner {
    pub tgid: u32,
    pub pid: u32,
    pub comm: String,
    pub bytes: u64,
    pub allocations: u64,
    /// `task`, `softirq`, `hardirq`, `nmi`.
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub cgroup_id: Option<u64>,
    /// cgroup v2 path relative to the cgroup2 mount.
    #[serde(default)]
    pub cgroup: Option<String>,
}

/// `owners` of the report: who holds the memory.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct OwnerSummary {
    pub attributed_bytes: u64,
    pub processes: Vec<ProcessOwner>,
    pub cgroups: Vec<CgroupOwner>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ProcessOwner {
    pub context: String,
    pub tgid: u32,
    pub comm: String,
    pub cmdline: Option<String>,
    pub cgroup: Option<String>,
    pub bytes: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CgroupOwner {
    pub cgroup_id: u64,
    pub path: Option<String>,
    pub bytes: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Frame {
    pub address: String,
    pub symbol: Option<String>,
    pub module: Option<String>,
    pub offset: Option<u64>,
    pub file: Option<String>,
    pub line: Option<u32>,
    #[serde(default)]
    pub inlined: Vec<String>,
}

impl Report {
    /// Parses and validates ([`Report::validate`]) a JSON report. Does not run
    /// [`Report::check_consistency`]: scenarios do, after logging what they measured.
    pub fn from_json_str(text: &str) -> Result<Report> {
        let report: Report =
            serde_json::from_str(text).context("the JSON report does not match schema 1")?;
        report.validate()?;
        Ok(report)
    }

    pub fn from_json_file(path: &Path) -> Result<Report> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the JSON report {}", path.display()))?;
        Report::from_json_str(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Checks the parts of the contract serde cannot: schema version, counter names, order,
    /// the names of kinds and classes.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.schema == 1, "schema is {}, expected 1", self.schema);
        let kinds = self.session_kinds()?;
        let required: Vec<&str> = if kinds.is_some() {
            REQUIRED_COUNTERS
                .iter()
                .chain(OBJ_COUNTERS.iter())
                .copied()
                .collect()
        } else {
            REQUIRED_COUNTERS.to_vec()
        };
        let missing: Vec<_> = required
            .iter()
            .filter(|c| !self.counters.contains_key(**c))
            .collect();
        ensure!(missing.is_empty(), "counters missing: {missing:?}");
        // `--sort growth`: the growing stacks first, then the others by bytes.
        let by_growth = self.session["sort"] == "growth";
        let growing = |s: &Stack| by_growth && s.growing == Some(true);
        for (i, pair) in self.stacks.windows(2).enumerate() {
            ensure!(
                growing(&pair[0]) >= growing(&pair[1]),
                "--sort growth: stacks[{}] is growing after stacks[{i}] which is not",
                i + 1
            );
            ensure!(
                growing(&pair[0]) != growing(&pair[1])
                    || growing(&pair[0])
                    || pair[0].bytes >= pair[1].bytes,
                "stacks are not sorted by outstanding bytes: stacks[{i}] has {} bytes, \
                 stacks[{}] has {}",
                pair[0].bytes,
                i + 1,
                pair[1].bytes
            );
        }
        for (i, stack) in self.stacks.iter().enumerate() {
            for frame in &stack.frames {
                ensure!(
                    frame.address.starts_with("0x"),
                    "stacks[{i}] has a frame address {:?} not written as 0x...",
                    frame.address
                );
            }
            // memtrace's own machinery must not show: the BPF program and the tracing glue
            // that runs it sit above the allocator in a captured stack.
            if let Some(f) = stack
                .frames
                .iter()
                .take(4)
                .find(|f| f.symbol.as_deref().is_some_and(is_tracer_symbol))
            {
                bail!(
                    "stacks[{i}] starts with the tracer's own frames ({:?} among the first \
                     four): {}",
                    f.symbol,
                    stack.describe()
                );
            }
            if let Some(kind) = &stack.kind {
                ensure!(
                    KINDS.contains(&kind.as_str()),
                    "stacks[{i}] has an unknown kind {kind:?}"
                );
            }
            if let Some(class) = &stack.class {
                ensure!(
                    CLASSES.contains(&class.as_str()),
                    "stacks[{i}] has an unknown class {class:?}"
                );
            }
            if let Some(detail) = &stack.class_detail {
                ensure!(
                    detail == "dirty",
                    "stacks[{i}] has an unknown class_detail {detail:?} (only \"dirty\" or null)"
                );
            }
        }
        let mut seen = BTreeSet::new();
        for c in &self.classes {
            ensure!(
                CLASSES.contains(&c.class.as_str()),
                "classes[] names an unknown class {:?}",
                c.class
            );
            ensure!(
                seen.insert(c.class.as_str()),
                "classes[] lists {:?} twice",
                c.class
            );
        }
        for c in self.class_filter.iter().flatten() {
            ensure!(
                CLASSES.contains(&c.as_str()),
                "class_filter names an unknown class {c:?}"
            );
        }
        for k in kinds.iter().flatten() {
            ensure!(
                KINDS.contains(&k.kind.as_str()),
                "session.kinds names an unknown kind {:?}",
                k.kind
            );
        }
        Ok(())
    }

    /// `session.kinds`, or `None` for a page-only report without it.
    pub fn session_kinds(&self) -> Result<Option<Vec<KindStatus>>> {
        match self.session.get("kinds") {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .context("session.kinds does not match [{kind, traced, hooks, note}]"),
        }
    }

    /// The kinds this session traced (`["page"]` for a page-only report).
    pub fn traced_kinds(&self) -> Result<BTreeSet<String>> {
        Ok(match self.session_kinds()? {
            Some(kinds) => kinds
                .into_iter()
                .filter(|k| k.traced)
                .map(|k| k.kind)
                .collect(),
            None => BTreeSet::from(["page".to_string()]),
        })
    }

    /// The class summary of `class`, if listed.
    pub fn class_summary(&self, class: &str) -> Option<&ClassSummary> {
        self.classes.iter().find(|c| c.class == class)
    }

    /// `session.page_size` (4096 when missing).
    pub fn page_size(&self) -> u64 {
        self.session["page_size"].as_u64().unwrap_or(4096)
    }

    /// `session.sample_every` (1 when missing: an exact session).
    pub fn sample_every(&self) -> u64 {
        self.session["sample_every"].as_u64().unwrap_or(1)
    }

    /// Outstanding bytes of `class` in the class summary (0 when not listed).
    pub fn class_bytes(&self, class: &str) -> u64 {
        self.class_summary(class).map_or(0, |c| c.bytes)
    }

    /// Invariants of the figures: what is outstanding at the end was allocated during the
    /// session, owners share a stack's outstanding memory, slab stacks asked for no more than
    /// they got, the class summary is the sum over the stacks of each class (of the selected
    /// classes when the report's `class_filter` says `--class` was used), backing classes are
    /// out of the totals exactly when their kind was traced, and the totals are the sums over
    /// the stacks whose class counts in the total.
    /// Every cache a stack names is one `slabinfo` lists (no name made up from sizes).
    pub fn check_cache_names(&self, slabinfo: &crate::SlabInfo) -> Result<()> {
        let unknown: BTreeSet<&str> = self
            .stacks
            .iter()
            .filter_map(|s| s.cache.as_deref())
            .filter(|c| !slabinfo.caches.contains_key(*c))
            .collect();
        ensure!(
            unknown.is_empty(),
            "the report names slab caches /proc/slabinfo does not list: {unknown:?}"
        );
        Ok(())
    }

    pub fn check_consistency(&self) -> Result<()> {
        match &self.class_filter {
            None => self.check_consistency_inner(None),
            Some(filter) => {
                let selected: Vec<&str> = filter.iter().map(String::as_str).collect();
                self.check_consistency_inner(Some(&selected))
            }
        }
    }

    /// [`Report::check_consistency`] for a report made with `--class` selecting `selected`
    /// (e.g. [`KERNEL_CLASSES`]): the report's `class_filter` (when present) must say so, only
    /// stacks of those classes are listed, the class summary still covers every class (its
    /// entries for the selected ones are the sums over the stacks), and the totals are the sums
    /// over the listed stacks that count in the total.
    pub fn check_consistency_for_classes(&self, selected: &[&str]) -> Result<()> {
        if let Some(filter) = &self.class_filter {
            let reported: BTreeSet<&str> = filter.iter().map(String::as_str).collect();
            let expected: BTreeSet<&str> = selected.iter().copied().collect();
            ensure!(
                reported == expected,
                "class_filter is {reported:?}, expected {expected:?}"
            );
        }
        self.check_consistency_inner(Some(selected))
    }

    fn check_consistency_inner(&self, selected: Option<&[&str]>) -> Result<()> {
        let mut problems = Vec::new();
        for (i, s) in self.stacks.iter().enumerate() {
            if s.bytes > s.allocated_bytes || s.allocations > s.allocated_count {
                problems.push(format!(
                    "stacks[{i}] has more outstanding ({} bytes, {} allocations) than it \
                     allocated during the session ({} bytes, {} allocations): {}",
                    s.bytes,
                    s.allocations,
                    s.allocated_bytes,
                    s.allocated_count,
                    s.describe()
                ));
            }
            let owner_bytes: u64 = s.owners.iter().map(|o| o.bytes).sum();
            let owner_allocs: u64 = s.owners.iter().map(|o| o.allocations).sum();
            if owner_bytes > s.bytes || owner_allocs > s.allocations {
                problems.push(format!(
                    "stacks[{i}]'s owners hold {owner_bytes} bytes in {owner_allocs} \
                     allocations, more than the stack's outstanding {} bytes in {} \
                     allocations; owners {:?}; {}",
                    s.bytes,
                    s.allocations,
                    s.owners
                        .iter()
                        .map(|o| (o.comm.as_str(), o.tgid, o.bytes, o.allocations))
                        .collect::<Vec<_>>(),
                    s.describe()
                ));
            }
            if let Some(req) = s.bytes_req {
                if s.kind() != "slab" {
                    problems.push(format!(
                        "stacks[{i}] of kind {} has bytes_req {req} (slab only): {}",
                        s.kind(),
                        s.describe()
                    ));
                }
                if req > s.bytes {
                    problems.push(format!(
                        "stacks[{i}] asked for more ({req} bytes_req) than its outstanding \
                         objects take ({} bytes): {}",
                        s.bytes,
                        s.describe()
                    ));
                }
            }
            if s.cache.is_some() && s.kind() != "slab" {
                problems.push(format!(
                    "stacks[{i}] of kind {} names a slab cache: {}",
                    s.kind(),
                    s.describe()
                ));
            }
        }

        let has_classes = !self.classes.is_empty() || self.stacks.iter().any(|s| s.class.is_some());
        let sum = |stacks: &[&Stack]| {
            (
                stacks.iter().map(|s| s.bytes).sum::<u64>(),
                stacks.iter().map(|s| s.allocations).sum::<u64>(),
                stacks.iter().map(|s| s.allocated_bytes).sum::<u64>(),
                stacks.iter().map(|s| s.allocated_count).sum::<u64>(),
            )
        };
        let counted: Vec<&Stack> = if has_classes {
            self.check_classes(selected, &mut problems)?;
            self.stacks
                .iter()
                .filter(|s| {
                    s.class
                        .as_deref()
                        .and_then(|c| self.class_summary(c))
                        .is_none_or(|c| c.in_total)
                })
                .collect()
        } else {
            // A report without stacks has nothing to classify (a session ended at once).
            ensure!(
                selected.is_none() || self.stacks.is_empty(),
                "a --class filtered report must carry classes (stacks[].class, classes[])"
            );
            self.stacks.iter().collect()
        };
        let t = &self.totals;
        let sums = sum(&counted);
        if (t.bytes, t.allocations, t.allocated_bytes, t.allocated_count) != sums {
            problems.push(format!(
                "totals {t:?} are not the sums over the {} stacks counted in the total \
                 (bytes, allocations, allocated_bytes, allocated_count) = {sums:?}",
                counted.len()
            ));
        }
        ensure!(
            problems.is_empty(),
            "the report is inconsistent ({} problems):\n{}",
            problems.len(),
            problems
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        Ok(())
    }

    /// The class-related invariants of [`Report::check_consistency_inner`].
    fn check_classes(&self, selected: Option<&[&str]>, problems: &mut Vec<String>) -> Result<()> {
        let traced = self.traced_kinds()?;
        for (i, s) in self.stacks.iter().enumerate() {
            let Some(class) = s.class.as_deref() else {
                problems.push(format!("stacks[{i}] has no class: {}", s.describe()));
                continue;
            };
            if self.class_summary(class).is_none() {
                problems.push(format!(
                    "stacks[{i}] is of class {class}, which classes[] does not list: {}",
                    s.describe()
                ));
            }
            if let Some(selected) = selected {
                if !selected.contains(&class) {
                    problems.push(format!(
                        "stacks[{i}] is of class {class}, not one of the selected {selected:?}: {}",
                        s.describe()
                    ));
                }
            }
        }
        for c in &self.classes {
            let expected_in_total = backed_kind(&c.class).is_none_or(|k| !traced.contains(k));
            if c.in_total != expected_in_total {
                problems.push(format!(
                    "class {} has in_total={} but the traced kinds are {traced:?} (backing \
                     classes are out of the total exactly when their kind is traced)",
                    c.class, c.in_total
                ));
            }
            if selected.is_some_and(|sel| !sel.contains(&c.class.as_str())) {
                continue;
            }
            let of_class: Vec<&Stack> = self
                .stacks
                .iter()
                .filter(|s| s.class.as_deref() == Some(c.class.as_str()))
                .collect();
            let bytes: u64 = of_class.iter().map(|s| s.bytes).sum();
            let allocations: u64 = of_class.iter().map(|s| s.allocations).sum();
            if (c.bytes, c.allocations, c.stacks) != (bytes, allocations, of_class.len() as u64) {
                problems.push(format!(
                    "classes[] entry {:?} is not the sum over its stacks: (bytes, allocations, \
                     stacks) = ({bytes}, {allocations}, {})",
                    c,
                    of_class.len()
                ));
            }
        }
        let all_selected =
            selected.is_none_or(|sel| self.classes.iter().all(|c| sel.contains(&c.class.as_str())));
        if all_selected {
            let by_classes: u64 = self.classes.iter().map(|c| c.bytes).sum();
            let by_stacks: u64 = self.stacks.iter().map(|s| s.bytes).sum();
            if by_classes != by_stacks {
                problems.push(format!(
                    "the classes hold {by_classes} bytes together, the stacks {by_stacks}"
                ));
            }
        }
        Ok(())
    }

    pub fn counter(&self, name: &str) -> Result<u64> {
        self.counters
            .get(name)
            .copied()
            .with_context(|| format!("counter {name:?} missing from the report"))
    }

    /// One line per counter, for logs.
    pub fn counters_line(&self) -> String {
        self.counters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Stack {
    /// The allocator kind (`page` for page-only reports, which carry no kind).
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("page")
    }

    /// The class, or `""` for page-only reports.
    pub fn class(&self) -> &str {
        self.class.as_deref().unwrap_or("")
    }

    /// What the listed owner entries of thread group `tgid` hold: (bytes, allocations). A lower
    /// bound when the owners list is truncated (see [`owner_bytes_upper_bound`]).
    pub fn owned_by(&self, tgid: u32) -> (u64, u64) {
        self.owners
            .iter()
            .filter(|o| o.tgid == tgid)
            .fold((0, 0), |(b, a), o| (b + o.bytes, a + o.allocations))
    }

    /// Kind, class, cache, figures and frame symbols innermost first (`?` for unresolved), for
    /// logs.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = self
            .frames
            .iter()
            .map(|f| f.symbol.as_deref().unwrap_or("?"))
            .collect();
        let mut what = self.kind().to_string();
        if let Some(class) = &self.class {
            what.push_str(&format!(" class={class}"));
        }
        if let Some(detail) = &self.class_detail {
            what.push_str(&format!(" ({detail})"));
        }
        if let Some(cache) = &self.cache {
            what.push_str(&format!(" cache={cache}"));
        }
        if let Some(req) = self.bytes_req {
            what.push_str(&format!(" bytes_req={req}"));
        }
        format!(
            "{what} stack_id={:?} bytes={} allocations={} allocated_bytes={} allocated_count={} \
             caller={} frames=[{}]",
            self.stack_id,
            self.bytes,
            self.allocations,
            self.allocated_bytes,
            self.allocated_count,
            self.caller,
            names.join(" <- ")
        )
    }
}

/// Stacks for which `pred` holds.
pub fn stacks_where(report: &Report, pred: impl Fn(&Stack) -> bool) -> Vec<&Stack> {
    report.stacks.iter().filter(|s| pred(s)).collect()
}

/// Stacks of allocator kind `kind` that, for every group in `required`, contain at least one of
/// the group's functions (like [`find_stacks`]).
pub fn find_kind_stacks<'a>(
    report: &'a Report,
    kind: &str,
    required: &[&[&str]],
) -> Vec<&'a Stack> {
    find_stacks(report, required)
        .into_iter()
        .filter(|s| s.kind() == kind)
        .collect()
}

/// Outstanding allocations summed over `stacks`.
pub fn sum_allocations(stacks: &[&Stack]) -> u64 {
    stacks.iter().map(|s| s.allocations).sum()
}

/// Allocations made during the session, summed over `stacks`.
pub fn sum_allocated_count(stacks: &[&Stack]) -> u64 {
    stacks.iter().map(|s| s.allocated_count).sum()
}

/// What the listed owner entries of `tgid` hold over `stacks`: (bytes, allocations).
pub fn sum_owned_by(stacks: &[&Stack], tgid: u32) -> (u64, u64) {
    stacks
        .iter()
        .map(|s| s.owned_by(tgid))
        .fold((0, 0), |(b, a), (sb, sa)| (b + sb, a + sa))
}

/// Whether a frame symbol names function `name`: equal, or `name` followed by a compiler
/// suffix such as `.cold`, `.isra.0`, `.constprop.0`.
pub fn symbol_matches(symbol: &str, name: &str) -> bool {
    symbol == name
        || symbol
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Whether any frame of `stack` is function `name` (as its symbol or as a function inlined at
/// that address).
pub fn stack_has_function(stack: &Stack, name: &str) -> bool {
    stack.frames.iter().any(|f| {
        f.symbol.as_deref().is_some_and(|s| symbol_matches(s, name))
            || f.inlined.iter().any(|s| symbol_matches(s, name))
    })
}

/// Stacks that, for every group in `required`, contain at least one of the group's functions.
/// E.g. `&[&["tcp_sendmsg", "tcp_sendmsg_locked"], &["skb_page_frag_refill"]]`.
pub fn find_stacks<'a>(report: &'a Report, required: &[&[&str]]) -> Vec<&'a Stack> {
    report
        .stacks
        .iter()
        .filter(|s| {
            required
                .iter()
                .all(|group| group.iter().any(|name| stack_has_function(s, name)))
        })
        .collect()
}

/// Stacks containing all of `names`.
pub fn find_stacks_with_all<'a>(report: &'a Report, names: &[&str]) -> Vec<&'a Stack> {
    report
        .stacks
        .iter()
        .filter(|s| names.iter().all(|name| stack_has_function(s, name)))
        .collect()
}

/// An upper bound of the outstanding bytes that processes with thread-group id `tgid` hold in
/// `stack`, from its (possibly truncated, largest-first) owners list: their own entry if
/// listed; otherwise no more than the smallest listed owner nor than what the listed owners
/// leave of the stack's bytes.
pub fn owner_bytes_upper_bound(stack: &Stack, tgid: u32) -> u64 {
    let listed: u64 = stack
        .owners
        .iter()
        .filter(|o| o.tgid == tgid)
        .map(|o| o.bytes)
        .sum();
    let others: Vec<u64> = stack
        .owners
        .iter()
        .filter(|o| o.tgid != tgid)
        .map(|o| o.bytes)
        .collect();
    let unlisted_rest = stack
        .bytes
        .saturating_sub(listed + others.iter().sum::<u64>());
    let unlisted = match others.iter().min() {
        // A truncated list may leave out smaller entries of `tgid` (other threads' pids).
        Some(&smallest) => unlisted_rest.min(smallest),
        None if listed == 0 => stack.bytes,
        None => unlisted_rest,
    };
    listed + unlisted
}

/// Outstanding bytes summed over `stacks`.
pub fn sum_bytes(stacks: &[&Stack]) -> u64 {
    stacks.iter().map(|s| s.bytes).sum()
}

/// Bytes allocated during the session, summed over `stacks`.
pub fn sum_allocated_bytes(stacks: &[&Stack]) -> u64 {
    stacks.iter().map(|s| s.allocated_bytes).sum()
}

/// Parses `--folded` output (`outer;...;inner <bytes>` per line) into (frames outermost
/// first, bytes).
pub fn parse_folded(text: &str) -> Result<Vec<(Vec<String>, u64)>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (frames, bytes) = line
                .rsplit_once(' ')
                .with_context(|| format!("folded line without ` <bytes>`: {line:?}"))?;
            let bytes = bytes
                .parse::<u64>()
                .with_context(|| format!("folded line with a bad byte count: {line:?}"))?;
            Ok((frames.split(';').map(str::to_string).collect(), bytes))
        })
        .collect()
}

/// Bytes of the folded lines that, for every group in `required`, contain one of its
/// functions (like [`find_stacks`]).
pub fn folded_bytes(text: &str, required: &[&[&str]]) -> Result<u64> {
    Ok(parse_folded(text)?
        .into_iter()
        .filter(|(frames, _)| {
            required.iter().all(|group| {
                group
                    .iter()
                    .any(|n| frames.iter().any(|f| symbol_matches(f, n)))
            })
        })
        .map(|(_, bytes)| bytes)
        .sum())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const SAMPLE: &str = r#"{
      "schema": 1,
      "session": {"kernel": "6.18"},
      "counters": {"allocs_seen": 10, "allocs_tracked": 9, "failed_allocs": 0,
        "self_allocs": 1, "frees_seen": 5, "frees_matched": 4, "partial_frees": 0,
        "unmatched_frees": 1, "outstanding_map_full": 0, "stale_records_replaced": 0,
        "records_detached": 0, "stack_id_eexist": 0, "stack_id_enomem": 0,
        "stack_id_other": 0, "agg_missing": 0, "read_errors": 0},
      "programs": [{"name": "mm_page_alloc", "recursion_misses": 0, "run_count": 0,
        "run_time_ns": 0}],
      "totals": {"bytes": 36864, "allocations": 2, "allocated_bytes": 45056,
        "allocated_count": 4},
      "callers": [{"function": "tcp_sendmsg_locked", "bytes": 32768, "allocations": 1,
        "allocated_bytes": 32768, "stacks": 1}],
      "stacks": [
        {"stack_id": 7, "bytes": 32768, "allocations": 1, "allocated_bytes": 32768,
         "allocated_count": 1, "orders": [3], "oldest_age_secs": 1.5,
         "caller": "skb_page_frag_refill",
         "owners": [{"tgid": 42, "pid": 43, "comm": "t", "bytes": 32768, "allocations": 1}],
         "frames": [
           {"address": "0xffffffff81000000", "symbol": "__alloc_pages_noprof",
            "module": null, "offset": 16, "file": null, "line": null, "inlined": []},
           {"address": "0xffffffff81000100", "symbol": "skb_page_frag_refill",
            "module": null, "offset": 32, "file": null, "line": null, "inlined": []},
           {"address": "0xffffffff81000200", "symbol": "tcp_sendmsg_locked.cold",
            "module": null, "offset": 8, "file": null, "line": null, "inlined": []}]},
        {"stack_id": null, "bytes": 4096, "allocations": 1, "allocated_bytes": 8192,
         "allocated_count": 2, "orders": [0], "oldest_age_secs": null, "caller": "?",
         "owners": [], "frames": []},
        {"stack_id": 9, "bytes": 0, "allocations": 0, "allocated_bytes": 4096,
         "allocated_count": 1, "orders": [], "oldest_age_secs": null, "caller": "x",
         "owners": [], "frames": [
           {"address": "0x1", "symbol": null, "module": "m", "offset": null, "file": null,
            "line": null, "inlined": ["tcp_sendmsg_fastopen"]}]}
      ]
    }"#;

    #[test]
    fn symbol_suffixes() {
        assert!(symbol_matches("tcp_sendmsg", "tcp_sendmsg"));
        assert!(symbol_matches("tcp_sendmsg.cold", "tcp_sendmsg"));
        assert!(symbol_matches("tcp_sendmsg.isra.0", "tcp_sendmsg"));
        assert!(!symbol_matches("tcp_sendmsg_locked", "tcp_sendmsg"));
        assert!(!symbol_matches("tcp_sendms", "tcp_sendmsg"));
    }

    #[test]
    fn parse_and_match() -> Result<()> {
        let report = Report::from_json_str(SAMPLE)?;
        assert_eq!(report.counter("frees_seen")?, 5);
        let tcp = find_stacks(
            &report,
            &[
                &["tcp_sendmsg", "tcp_sendmsg_locked"],
                &["skb_page_frag_refill"],
            ],
        );
        assert_eq!(tcp.len(), 1);
        assert_eq!(sum_bytes(&tcp), 32768);
        assert_eq!(sum_allocated_bytes(&tcp), 32768);
        assert!(find_stacks_with_all(&report, &["tcp_sendmsg", "skb_page_frag_refill"]).is_empty());
        assert_eq!(
            find_stacks_with_all(&report, &["tcp_sendmsg_fastopen"]).len(),
            1,
            "inlined functions count"
        );
        Ok(())
    }

    #[test]
    fn owner_bounds() -> Result<()> {
        let report = Report::from_json_str(SAMPLE)?;
        let tcp = &report.stacks[0];
        assert_eq!(owner_bytes_upper_bound(tcp, 42), 32768, "listed");
        assert_eq!(
            owner_bytes_upper_bound(tcp, 7),
            0,
            "the only owner holds it all"
        );
        let unknown = &report.stacks[1];
        assert_eq!(
            owner_bytes_upper_bound(unknown, 7),
            4096,
            "no owners listed"
        );
        let mut partial = tcp.clone();
        partial.bytes = 40960;
        assert_eq!(
            owner_bytes_upper_bound(&partial, 7),
            8192,
            "what the list leaves"
        );
        Ok(())
    }

    #[test]
    fn folded_lines() -> Result<()> {
        let text = "a;tcp_sendmsg;skb_page_frag_refill 32768\nb;c 4096\n";
        assert_eq!(
            folded_bytes(text, &[&["tcp_sendmsg"], &["skb_page_frag_refill"]])?,
            32768
        );
        assert_eq!(folded_bytes(text, &[])?, 36864);
        assert!(parse_folded("a;b 12x").is_err());
        Ok(())
    }

    /// A multi-kind report: page and slab traced, vmalloc skipped.
    fn kinds_sample() -> serde_json::Value {
        let mut counters = serde_json::Map::new();
        for name in REQUIRED_COUNTERS.iter().chain(OBJ_COUNTERS.iter()) {
            counters.insert(name.to_string(), 0.into());
        }
        let stack = |kind: &str, class: &str, bytes: u64, allocs: u64| {
            serde_json::json!({
                "kind": kind, "class": class, "class_detail": null, "cache": null,
                "bytes_req": null, "stack_id": 1, "bytes": bytes, "allocations": allocs,
                "allocated_bytes": bytes, "allocated_count": allocs, "orders": [],
                "oldest_age_secs": null, "caller": "x", "owners": [], "frames": []
            })
        };
        let mut slab = stack("slab", "network", 2560, 10);
        slab["cache"] = "skbuff_head_cache".into();
        slab["bytes_req"] = 2000.into();
        slab["owners"] = serde_json::json!([
            {"tgid": 42, "pid": 42, "comm": "t", "bytes": 2304, "allocations": 9},
            {"tgid": 7, "pid": 8, "comm": "u", "bytes": 256, "allocations": 1}
        ]);
        serde_json::json!({
            "schema": 1,
            "session": {"kernel": "6.18", "kinds": [
                {"kind": "page", "traced": true, "hooks": ["kmem:mm_page_alloc"], "note": null},
                {"kind": "slab", "traced": true, "hooks": ["kmem:kmalloc"], "note": null},
                {"kind": "vmalloc", "traced": false, "hooks": [], "note": "no events"}
            ]},
            "counters": counters,
            "programs": [],
            "totals": {"bytes": 39424, "allocations": 12, "allocated_bytes": 39424,
                "allocated_count": 12},
            "classes": [
                {"class": "network", "bytes": 35328, "allocations": 11, "stacks": 2,
                 "in_total": true},
                {"class": "slab-backing", "bytes": 8192, "allocations": 2, "stacks": 1,
                 "in_total": false},
                {"class": "user-anon", "bytes": 4096, "allocations": 1, "stacks": 1,
                 "in_total": true}
            ],
            "callers": [],
            "stacks": [
                stack("page", "network", 32768, 1),
                stack("page", "slab-backing", 8192, 2),
                stack("page", "user-anon", 4096, 1),
                slab
            ]
        })
    }

    fn parse(v: &serde_json::Value) -> Result<Report> {
        Report::from_json_str(&v.to_string())
    }

    #[test]
    fn kinds_and_classes_parse_and_add_up() -> Result<()> {
        let report = parse(&kinds_sample())?;
        report.check_consistency()?;
        assert_eq!(
            report.traced_kinds()?,
            BTreeSet::from(["page".to_string(), "slab".to_string()])
        );
        let kinds = report.session_kinds()?.expect("session.kinds");
        assert_eq!(kinds[2].note.as_deref(), Some("no events"));
        assert_eq!(report.class_bytes("slab-backing"), 8192);
        assert_eq!(report.class_bytes("shmem"), 0);
        let slab = stacks_where(&report, |s| s.cache.as_deref() == Some("skbuff_head_cache"));
        assert_eq!(slab.len(), 1);
        assert_eq!(slab[0].kind(), "slab");
        assert_eq!(sum_owned_by(&slab, 42), (2304, 9));
        assert_eq!(sum_allocations(&slab), 10);
        assert_eq!(sum_allocated_count(&slab), 10);
        assert_eq!(find_kind_stacks(&report, "page", &[]).len(), 3);
        assert!(slab[0].describe().contains("cache=skbuff_head_cache"));
        // Page-only reports: every stack is a page stack without class.
        let old = Report::from_json_str(SAMPLE)?;
        assert_eq!(old.stacks[0].kind(), "page");
        assert_eq!(old.traced_kinds()?, BTreeSet::from(["page".to_string()]));
        assert!(old.session_kinds()?.is_none());
        Ok(())
    }

    #[test]
    fn class_filtered_reports_add_up_over_the_selected_classes() -> Result<()> {
        let mut v = kinds_sample();
        v["stacks"].as_array_mut().unwrap().remove(2); // the user-anon stack
        v["totals"] = serde_json::json!({"bytes": 35328, "allocations": 11,
            "allocated_bytes": 35328, "allocated_count": 11});
        let report = parse(&v)?;
        report.check_consistency_for_classes(&KERNEL_CLASSES)?;
        assert!(
            report.check_consistency().is_err(),
            "unfiltered, the user-anon class has no stack"
        );
        // With the report's own class_filter, the plain check knows.
        v["class_filter"] = serde_json::json!(KERNEL_CLASSES);
        let report = parse(&v)?;
        report.check_consistency()?;
        report.check_consistency_for_classes(&KERNEL_CLASSES)?;
        assert!(report.check_consistency_for_classes(&["network"]).is_err());
        v["class_filter"] = serde_json::json!(["network", "heap"]);
        assert!(parse(&v).is_err());
        // A stack outside the selection.
        let report = parse(&kinds_sample())?;
        assert!(report
            .check_consistency_for_classes(&KERNEL_CLASSES)
            .is_err());
        Ok(())
    }

    #[test]
    fn class_contract_breaks_are_caught() -> Result<()> {
        let broken = |f: &dyn Fn(&mut serde_json::Value)| -> Result<Report> {
            let mut v = kinds_sample();
            f(&mut v);
            parse(&v)
        };
        // The backing class counted although slab is traced.
        let r = broken(&|v| {
            v["classes"][1]["in_total"] = true.into();
            v["totals"]["bytes"] = 47616.into();
            v["totals"]["allocations"] = 14.into();
            v["totals"]["allocated_bytes"] = 47616.into();
            v["totals"]["allocated_count"] = 14.into();
        })?;
        assert!(r.check_consistency().is_err());
        // Totals that count the backing pages although the class is out of the total.
        let r = broken(&|v| v["totals"]["bytes"] = 47616.into())?;
        assert!(r.check_consistency().is_err());
        // A class summary that is not the sum over its stacks.
        let r = broken(&|v| v["classes"][0]["bytes"] = 35329.into())?;
        assert!(r.check_consistency().is_err());
        let r = broken(&|v| v["classes"][0]["stacks"] = 3.into())?;
        assert!(r.check_consistency().is_err());
        // Slack cannot be negative; bytes_req and cache are slab-only.
        let r = broken(&|v| v["stacks"][3]["bytes_req"] = 2561.into())?;
        assert!(r.check_consistency().is_err());
        let r = broken(&|v| v["stacks"][0]["cache"] = "x".into())?;
        assert!(r.check_consistency().is_err());
        // A stack whose class is not summarized.
        let r = broken(&|v| v["stacks"][2]["class"] = "page-cache".into())?;
        assert!(r.check_consistency().is_err());
        // Names and counters are validated while parsing.
        assert!(broken(&|v| v["stacks"][0]["class"] = "heap".into()).is_err());
        assert!(broken(&|v| v["stacks"][0]["kind"] = "pages".into()).is_err());
        assert!(broken(&|v| v["stacks"][0]["class_detail"] = "clean".into()).is_err());
        assert!(broken(&|v| v["classes"][2]["class"] = "network".into()).is_err());
        assert!(broken(&|v| {
            v["counters"]
                .as_object_mut()
                .unwrap()
                .remove("objects_map_full");
        })
        .is_err());
        assert!(broken(&|v| v["session"]["kinds"] = serde_json::json!([{"kind": 1}])).is_err());
        Ok(())
    }

    #[test]
    fn validation_rejects_contract_breaks() {
        let bad_schema = SAMPLE.replacen("\"schema\": 1", "\"schema\": 2", 1);
        assert!(Report::from_json_str(&bad_schema).is_err());
        let no_counter = SAMPLE.replacen("\"agg_missing\": 0,", "", 1);
        assert!(Report::from_json_str(&no_counter).is_err());
        let greedy_owner = SAMPLE.replacen(
            "\"bytes\": 32768, \"allocations\": 1}]",
            "\"bytes\": 17592186040320, \"allocations\": 1}]",
            1,
        );
        assert!(Report::from_json_str(&greedy_owner)
            .unwrap()
            .check_consistency()
            .is_err());
        let bad_totals = SAMPLE.replacen("\"bytes\": 36864", "\"bytes\": 36865", 1);
        assert!(Report::from_json_str(&bad_totals)
            .unwrap()
            .check_consistency()
            .is_err());
        Report::from_json_str(SAMPLE)
            .unwrap()
            .check_consistency()
            .unwrap();
        let unsorted = SAMPLE.replacen(
            "\"bytes\": 4096, \"allocations\": 1",
            "\"bytes\": 99999, \"allocations\": 1",
            1,
        );
        assert!(Report::from_json_str(&unsorted).is_err());
    }
}
