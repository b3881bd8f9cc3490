//! Summaries of a report's stacks: by class and by calling function, the totals (which classes
//! count), and narrowing a finished report to some classes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::classify::{class_detail, Class};
use super::frames::frame_names;
use super::owners::{merge_owner_details, summarize_owners};
use super::{CallerSummary, ClassSummary, Report, StackReport, Totals};

/// The detail of a stack's class (`dirty` for page-cache pages allocated to be written).
pub fn stack_class_detail(s: &StackReport) -> Option<&'static str> {
    class_detail(s.class, &frame_names(&s.frames))
}

/// Whether stacks of `class` count in the report's totals (see [`ClassSummary::in_total`]).
/// Classes missing from `classes` count.
pub fn class_in_total(classes: &[ClassSummary], class: Class) -> bool {
    classes
        .iter()
        .find(|c| c.class == class)
        .is_none_or(|c| c.in_total)
}

/// The classes of the report's stacks that hold memory but are left out of the totals.
pub fn excluded_from_totals(report: &Report) -> Vec<&ClassSummary> {
    let present: BTreeSet<Class> = report
        .stacks
        .iter()
        .filter(|s| s.bytes > 0 || s.allocated_bytes > 0)
        .map(|s| s.class)
        .collect();
    report
        .classes
        .iter()
        .filter(|c| !c.in_total && present.contains(&c.class))
        .collect()
}

/// Callers and totals over the same stacks, so that callers add up to the totals and nothing
/// is counted twice (a large kmalloc'ed skb head is a slab object *and* pages whose caller is
/// the same function).
pub(crate) fn callers_and_totals(
    stacks: &[StackReport],
    in_total: impl Fn(Class) -> bool,
) -> (Vec<CallerSummary>, Totals) {
    let counted: Vec<&StackReport> = stacks.iter().filter(|s| in_total(s.class)).collect();
    let callers = summarize_callers(&counted);
    let totals = counted.iter().fold(Totals::default(), |t, s| Totals {
        bytes: t.bytes.saturating_add(s.bytes),
        allocations: t.allocations.saturating_add(s.allocations),
        allocated_bytes: t.allocated_bytes.saturating_add(s.allocated_bytes),
        allocated_count: t.allocated_count.saturating_add(s.allocated_count),
    });
    (callers, totals)
}

/// Narrows a finished report to `classes` (a saved session re-rendered with `--class`):
/// stacks of other classes are dropped, callers and totals recomputed, and the owner summary
/// rebuilt from the remaining stacks' owners (in a saved session those are the top owners of
/// each stack, so smaller owners may be missing from it: `attributed_bytes` says how much
/// it covers). The class summary stays as it was: it describes the whole session.
pub fn restrict_classes(report: &mut Report, classes: &[Class]) {
    report.stacks.retain(|s| classes.contains(&s.class));
    let summary = report.classes.clone();
    let in_total = |c: Class| class_in_total(&summary, c);
    let (callers, totals) = callers_and_totals(&report.stacks, in_total);
    report.callers = callers;
    report.totals = totals;
    let owners = summarize_owners(report.stacks.iter().filter(|s| in_total(s.class)));
    // Names, cmdlines and pods were resolved when the session ended; keep them.
    let old = std::mem::take(&mut report.owners);
    report.owners = merge_owner_details(owners, &old);
    // The stacks now cover the requested classes the session recorded.
    report.class_filter = Some(match &report.class_filter {
        Some(recorded) => classes
            .iter()
            .copied()
            .filter(|c| recorded.contains(c))
            .collect(),
        None => classes.to_vec(),
    });
    // The sockets are listed for network memory.
    if !classes.contains(&Class::Network) {
        report.sockets.clear();
    }
}

/// Outstanding memory by class over every stack, by bytes descending.
pub(crate) fn summarize_classes(
    stacks: &[StackReport],
    in_total: impl Fn(Class) -> bool,
) -> Vec<ClassSummary> {
    let mut by_class: BTreeMap<Class, ClassSummary> = BTreeMap::new();
    for s in stacks {
        let c = by_class.entry(s.class).or_insert_with(|| ClassSummary {
            class: s.class,
            bytes: 0,
            allocations: 0,
            stacks: 0,
            in_total: in_total(s.class),
        });
        c.bytes = c.bytes.saturating_add(s.bytes);
        c.allocations = c.allocations.saturating_add(s.allocations);
        c.stacks += 1;
    }
    let mut classes: Vec<ClassSummary> = by_class.into_values().collect();
    classes.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(b.allocations.cmp(&a.allocations))
            .then(a.class.cmp(&b.class))
    });
    classes
}

/// By calling function, across kinds: a function that holds pages and slab objects is one
/// row (its stacks differ anyway; the kind of each is in the stacks list).
pub(crate) fn summarize_callers(stacks: &[&StackReport]) -> Vec<CallerSummary> {
    let mut by_caller: HashMap<&str, CallerSummary> = HashMap::new();
    for s in stacks {
        let c = by_caller
            .entry(s.caller.as_str())
            .or_insert_with(|| CallerSummary {
                function: s.caller.clone(),
                ..Default::default()
            });
        c.bytes = c.bytes.saturating_add(s.bytes);
        c.allocations = c.allocations.saturating_add(s.allocations);
        c.allocated_bytes = c.allocated_bytes.saturating_add(s.allocated_bytes);
        c.stacks += 1;
    }
    let mut callers: Vec<CallerSummary> = by_caller.into_values().collect();
    callers.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(b.allocated_bytes.cmp(&a.allocated_bytes))
            .then(a.function.cmp(&b.function))
    });
    callers
}
