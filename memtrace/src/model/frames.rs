//! The tracer's own frames at the top of a captured stack.
//!
//! A stack captured from a tp_btf (or fentry) program starts inside memtrace: the BPF
//! program's JIT image (`bpf_prog_<tag>_<name>` when `net.core.bpf_jit_kallsyms` lists it,
//! else an address no symbol covers), then the tracing glue that called it
//! (`bpf_trace_run4`, `__bpf_trace_mm_page_alloc`, `__traceiter_*`, a BPF trampoline). Users
//! must see their kernel, not memtrace's machinery: those leading frames are dropped from
//! every stack before anything looks at it (callers, classes, context, every output). The
//! stack's identity (its id, its slot) does not change: the dropped frames are the same for
//! every stack a program captures.

use super::Frame;

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
