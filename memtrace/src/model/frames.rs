//! What a stack's frames say: the tracer's own frames at the top (dropped), the allocator's
//! internal functions (skipped when choosing the calling function), the calling function, and
//! whether the allocation ran in interrupt context.
//!
//! ## The tracer's own frames
//!
//! A stack captured from a tp_btf (or fentry) program starts inside memtrace: the BPF
//! program's JIT image (`bpf_prog_<tag>_<name>` when `net.core.bpf_jit_kallsyms` lists it,
//! else an address no symbol covers), then the tracing glue that called it
//! (`bpf_trace_run4`, `__bpf_trace_mm_page_alloc`, `__traceiter_*`, a BPF trampoline). Users
//! must see their kernel, not memtrace's machinery: those leading frames are dropped from
//! every stack before anything looks at it (callers, classes, context, every output). The
//! stack's identity (its id, its slot) does not change: the dropped frames are the same for
//! every stack a program captures.

use super::{ExecContext, Frame};

/// Tracing glue: the functions between a tracepoint and the BPF program it runs.
fn is_tracing_glue(symbol: &str) -> bool {
    symbol.starts_with("bpf_trace_run")
        || symbol.starts_with("__bpf_trace_")
        || symbol.starts_with("__traceiter_")
        || symbol
            .strip_prefix("bpf_trampoline_")
            .is_some_and(|key| !key.is_empty() && key.chars().all(|c| c.is_ascii_digit()))
        || is_bpf_program(symbol)
        || symbol.starts_with("__bpf_prog_enter")
        || symbol == "bpf_get_stackid_raw_tp"
        || symbol == "bpf_get_stack_raw_tp"
}

/// A JIT-compiled BPF program as kallsyms names it: `bpf_prog_<16 hex digits tag>[_<name>]`
/// (kernel functions such as `bpf_prog_load` are not).
fn is_bpf_program(symbol: &str) -> bool {
    symbol.strip_prefix("bpf_prog_").is_some_and(|rest| {
        rest.len() >= 16
            && rest[..16].chars().all(|c| c.is_ascii_hexdigit())
            && (rest.len() == 16 || rest[16..].starts_with('_'))
    })
}

/// How many leading frames of `frames` (innermost first) belong to the tracer: the longest
/// prefix made only of tracing glue and unresolved addresses that ends with tracing glue. An
/// unresolved first frame without glue after it is kept (it may be a module without symbols).
pub fn tracer_frames(frames: &[Frame]) -> usize {
    let mut end = 0;
    for (i, f) in frames.iter().enumerate() {
        match f.symbol.as_deref() {
            Some(s) if is_tracing_glue(s) => end = i + 1,
            None if f.module.is_none() => {}
            _ => break,
        }
    }
    end
}

/// `frames` without the tracer's leading frames.
pub fn strip_tracer_frames(mut frames: Vec<Frame>) -> Vec<Frame> {
    let n = tracer_frames(&frames);
    frames.drain(..n);
    frames
}

/// Caller of the "stack unavailable" bucket.
pub const STACK_UNAVAILABLE: &str = "[stack unavailable]";

/// Caller of a stack none of whose frames could be resolved.
pub const UNKNOWN_CALLER: &str = "[unknown]";

/// How a name is matched against a pattern of [`ALLOCATOR_INTERNALS`] or of the class rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolPattern {
    Exact(&'static str),
    Prefix(&'static str),
    Suffix(&'static str),
    Contains(&'static str),
}

impl SymbolPattern {
    pub fn matches(self, name: &str) -> bool {
        match self {
            SymbolPattern::Exact(p) => name == p,
            SymbolPattern::Prefix(p) => name.starts_with(p),
            SymbolPattern::Suffix(p) => name.ends_with(p),
            SymbolPattern::Contains(p) => name.contains(p),
        }
    }
}

/// Functions that are part of the allocators themselves (page, slab, percpu, vmalloc) or of
/// the tracing/BPF machinery that sits on top of a stack captured from a tracepoint. The
/// "caller" of a stack is its first frame, from the innermost, that matches none of these.
///
/// Names are matched after stripping compiler suffixes such as `.isra.0`, `.constprop.0`,
/// `.part.0` or `.cold` (see [`base_symbol`]).
pub const ALLOCATOR_INTERNALS: &[SymbolPattern] = &[
    // Page allocator entry points and their variants.
    SymbolPattern::Prefix("__alloc_pages"), // __alloc_pages, __alloc_pages_noprof, _bulk, ...
    SymbolPattern::Prefix("alloc_pages"),   // alloc_pages, alloc_pages_mpol*, alloc_pages_bulk*
    SymbolPattern::Prefix("__folio_alloc"),
    SymbolPattern::Prefix("folio_alloc"),
    SymbolPattern::Prefix("vma_alloc_folio"),
    SymbolPattern::Prefix("__get_free_pages"),
    SymbolPattern::Prefix("get_zeroed_page"),
    SymbolPattern::Prefix("alloc_frozen_pages"),
    SymbolPattern::Prefix("__alloc_frozen_pages"),
    // Page allocator internals.
    SymbolPattern::Exact("get_page_from_freelist"),
    SymbolPattern::Exact("post_alloc_hook"),
    SymbolPattern::Exact("prep_new_page"),
    SymbolPattern::Prefix("rmqueue"),
    SymbolPattern::Prefix("__rmqueue"),
    // Slab allocator entry points and internals (before the `_noprof` names of 6.10).
    SymbolPattern::Prefix("kmem_cache_alloc"),
    SymbolPattern::Prefix("__kmem_cache_alloc"),
    SymbolPattern::Prefix("slab_alloc"),
    SymbolPattern::Exact("__slab_alloc"),
    SymbolPattern::Exact("___slab_alloc"),
    SymbolPattern::Exact("__kmalloc"),
    SymbolPattern::Prefix("__kmalloc_node"),
    SymbolPattern::Prefix("__kmalloc_cache"),
    SymbolPattern::Prefix("__kmalloc_track_caller"),
    SymbolPattern::Prefix("__do_kmalloc"),
    SymbolPattern::Prefix("kmalloc_trace"),
    SymbolPattern::Prefix("kmalloc_node_trace"),
    // Large kmalloc (straight from the page allocator).
    SymbolPattern::Prefix("kmalloc_large"),
    SymbolPattern::Prefix("__kmalloc_large"),
    SymbolPattern::Prefix("___kmalloc_large"),
    // Percpu allocator.
    SymbolPattern::Exact("pcpu_alloc"),
    SymbolPattern::Prefix("__alloc_percpu"),
    // vmalloc.
    SymbolPattern::Exact("alloc_vmap_area"),
    SymbolPattern::Prefix("__get_vm_area"),
    SymbolPattern::Prefix("__vmalloc_node"),
    SymbolPattern::Exact("__vmalloc_area_node"),
    SymbolPattern::Exact("vm_area_alloc_pages"),
    SymbolPattern::Exact("__vmalloc"),
    SymbolPattern::Exact("vmalloc"),
    SymbolPattern::Exact("vzalloc"),
    SymbolPattern::Prefix("__kvmalloc_node"),
    SymbolPattern::Exact("kvmalloc_node"),
    // Memory-allocation-profiling wrappers (alloc_pages_noprof, __kmalloc_large_node_noprof...).
    SymbolPattern::Suffix("_noprof"),
    // Tracepoint and BPF machinery above the allocation.
    SymbolPattern::Prefix("bpf_"),
    SymbolPattern::Prefix("__bpf_trace_"),
    SymbolPattern::Prefix("__bpf_prog_"),
    SymbolPattern::Prefix("perf_trace_"),
    SymbolPattern::Exact("perf_trace_run_bpf_submit"),
    SymbolPattern::Prefix("trace_event_raw_event_"),
    SymbolPattern::Prefix("__traceiter_"),
    SymbolPattern::Exact("trace_call_bpf"),
];

/// `name` without compiler-generated suffixes (`foo.isra.0` → `foo`, `foo.cold` → `foo`).
pub fn base_symbol(name: &str) -> &str {
    match name.find('.') {
        Some(0) | None => name,
        Some(i) => &name[..i],
    }
}

/// Whether `symbol` is an allocator internal (see [`ALLOCATOR_INTERNALS`]).
pub fn is_allocator_internal(symbol: &str) -> bool {
    let base = base_symbol(symbol);
    ALLOCATOR_INTERNALS.iter().any(|p| p.matches(base))
}

/// The calling function of a stack: the first resolved frame (innermost first) that is not an
/// allocator internal; else the innermost resolved symbol; else [`UNKNOWN_CALLER`].
pub fn select_caller(frames: &[Frame]) -> String {
    let resolved = || {
        frames
            .iter()
            .filter_map(|f| f.symbol.as_deref())
            .filter(|s| !s.is_empty())
    };
    resolved()
        .find(|s| !is_allocator_internal(s))
        .or_else(|| resolved().next())
        .unwrap_or(UNKNOWN_CALLER)
        .to_string()
}

/// Function names of `frames`, innermost first, with the functions inlined at each address
/// (innermost first, before the function that contains them); unresolved frames left out.
pub fn frame_names(frames: &[Frame]) -> Vec<&str> {
    let mut names = Vec::with_capacity(frames.len());
    for f in frames {
        names.extend(
            f.inlined
                .iter()
                .rev()
                .map(String::as_str)
                .filter(|n| !n.is_empty()),
        );
        if let Some(sym) = f.symbol.as_deref().filter(|s| !s.is_empty()) {
            names.push(sym);
        }
    }
    names
}

/// Frames that only run in interrupt context, innermost first wins: an NMI can interrupt a
/// hard interrupt, which can interrupt a softirq, which runs on top of a task.
pub fn context_from_frames(frames: &[Frame]) -> ExecContext {
    for f in frames {
        let Some(name) = f.symbol.as_deref().map(base_symbol) else {
            continue;
        };
        if matches!(
            name,
            "exc_nmi" | "asm_exc_nmi" | "default_do_nmi" | "nmi_handle" | "do_nmi"
        ) {
            return ExecContext::Nmi;
        }
        if name.starts_with("__sysvec_")
            || name.starts_with("sysvec_")
            || name.starts_with("asm_sysvec_")
            || matches!(
                name,
                "__handle_irq_event_percpu"
                    | "handle_irq_event"
                    | "handle_irq_event_percpu"
                    | "__common_interrupt"
                    | "common_interrupt"
                    | "asm_common_interrupt"
                    | "do_IRQ"
            )
        {
            return ExecContext::Hardirq;
        }
        if matches!(
            name,
            "handle_softirqs" | "__do_softirq" | "do_softirq" | "run_ksoftirqd"
        ) {
            return ExecContext::Softirq;
        }
    }
    ExecContext::Task
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(symbol: Option<&str>) -> Frame {
        Frame {
            address: 0xffff_ffff_a000_0000,
            symbol: symbol.map(str::to_owned),
            ..Default::default()
        }
    }

    fn names(frames: &[Frame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| f.symbol.clone().unwrap_or_else(|| "?".into()))
            .collect()
    }

    #[test]
    fn tp_btf_program_and_glue_are_dropped() {
        // What a tp_btf page stack looks like on 6.1/6.12/6.18.
        let stack = vec![
            f(None),
            f(Some("bpf_trace_run4")),
            f(Some("__alloc_pages")),
            f(Some("alloc_pages_mpol")),
            f(Some("skb_page_frag_refill")),
        ];
        assert_eq!(tracer_frames(&stack), 2);
        assert_eq!(
            names(&strip_tracer_frames(stack)),
            ["__alloc_pages", "alloc_pages_mpol", "skb_page_frag_refill"]
        );
        // The program named in kallsyms, and more glue.
        let stack = vec![
            f(Some("bpf_prog_6deef7357e7b4530_mm_page_alloc_btf")),
            f(Some("bpf_trace_run4")),
            f(Some("__bpf_trace_mm_page_alloc")),
            f(Some("__traceiter_mm_page_alloc")),
            f(Some("get_page_from_freelist")),
        ];
        assert_eq!(
            names(&strip_tracer_frames(stack)),
            ["get_page_from_freelist"]
        );
        // A stack from the second stack map: the program frame already skipped.
        let stack = vec![f(Some("bpf_trace_run4")), f(Some("__alloc_pages"))];
        assert_eq!(names(&strip_tracer_frames(stack)), ["__alloc_pages"]);
    }

    #[test]
    fn kernel_stacks_are_left_alone() {
        // Classic tracepoint stacks start in the kernel.
        let stack = vec![f(Some("kmem_cache_alloc_noprof")), f(Some("__alloc_skb"))];
        assert_eq!(tracer_frames(&stack), 0);
        // An unresolved frame with no glue after it stays (a module without symbols).
        let stack = vec![f(None), f(Some("__alloc_pages"))];
        assert_eq!(tracer_frames(&stack), 0);
        // A module frame is never the tracer's.
        let mut m = f(None);
        m.module = Some("virtio_net".into());
        let stack = vec![m, f(Some("bpf_trace_run4"))];
        assert_eq!(tracer_frames(&stack), 0);
        // Glue further down (a BPF program that allocates) is kernel work: kept.
        let stack = vec![
            f(Some("__alloc_pages")),
            f(Some("bpf_map_alloc")),
            f(Some("bpf_trace_run2")),
        ];
        assert_eq!(tracer_frames(&stack), 0);
        // Kernel functions named bpf_prog_* or bpf_trampoline_* are not tracer frames.
        let stack = vec![f(Some("bpf_trampoline_update")), f(Some("__fput"))];
        assert_eq!(tracer_frames(&stack), 0);
        let stack = vec![f(Some("bpf_trampoline_6442453463")), f(Some("__fput"))];
        assert_eq!(tracer_frames(&stack), 1);
        let stack = vec![f(Some("bpf_prog_load")), f(Some("__sys_bpf"))];
        assert_eq!(tracer_frames(&stack), 0);
        assert!(is_bpf_program("bpf_prog_6deef7357e7b4530"));
        assert!(!is_bpf_program("bpf_prog_alloc_no_stats"));
        assert!(strip_tracer_frames(Vec::new()).is_empty());
    }
}
