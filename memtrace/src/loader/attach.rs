//! Loading and attaching programs, detaching them again, and one-line errors from the
//! verifier.

use anyhow::Context as _;
use aya::{
    programs::{
        fentry::FEntryLinkId, raw_trace_point::RawTracePointLinkId, tp_btf::BtfTracePointLinkId,
        trace_point::TracePointLinkId, BtfTracePoint, FEntry, ProgramError, RawTracePoint,
        TracePoint,
    },
    Btf, Ebpf,
};
use memtrace_common::programs;

/// One attached program.
pub(super) struct Attached {
    pub(super) program: &'static str,
    pub(super) link: Link,
}

pub(super) enum Link {
    TracePoint(TracePointLinkId),
    BtfTracePoint(BtfTracePointLinkId),
    RawTracePoint(RawTracePointLinkId),
    FEntry(FEntryLinkId),
}

/// Detaches `attached` (programs stay loaded, maps readable). Each detach waits for an RCU
/// grace period in the kernel, tens of milliseconds: the links are taken out of their programs
/// and dropped on threads of their own, so the waits overlap.
pub(super) fn detach_all(ebpf: &mut Ebpf, attached: Vec<Attached>) -> anyhow::Result<()> {
    let owned = take_links(ebpf, attached)?;
    std::thread::scope(|scope| {
        for link in owned {
            scope.spawn(move || drop(link));
        }
    });
    Ok(())
}

/// Takes the links of `attached` out of their programs: dropping one detaches it.
pub(super) fn take_links(
    ebpf: &mut Ebpf,
    attached: Vec<Attached>,
) -> anyhow::Result<Vec<Box<dyn Send>>> {
    let mut owned: Vec<Box<dyn Send>> = Vec::new();
    for a in attached {
        let prog = ebpf
            .program_mut(a.program)
            .with_context(|| format!("program {} vanished", a.program))?;
        let link: Box<dyn Send> = match a.link {
            Link::TracePoint(link) => {
                let prog: &mut TracePoint = prog
                    .try_into()
                    .with_context(|| format!("program {} is not a tracepoint", a.program))?;
                Box::new(
                    prog.take_link(link)
                        .with_context(|| format!("detaching {}", a.program))?,
                )
            }
            Link::FEntry(link) => {
                let prog: &mut FEntry = prog
                    .try_into()
                    .with_context(|| format!("program {} is not fentry", a.program))?;
                Box::new(
                    prog.take_link(link)
                        .with_context(|| format!("detaching {}", a.program))?,
                )
            }
            Link::BtfTracePoint(link) => {
                let prog: &mut BtfTracePoint = prog
                    .try_into()
                    .with_context(|| format!("program {} is not tp_btf", a.program))?;
                Box::new(
                    prog.take_link(link)
                        .with_context(|| format!("detaching {}", a.program))?,
                )
            }
            Link::RawTracePoint(link) => {
                let prog: &mut RawTracePoint = prog
                    .try_into()
                    .with_context(|| format!("program {} is not raw_tp", a.program))?;
                Box::new(
                    prog.take_link(link)
                        .with_context(|| format!("detaching {}", a.program))?,
                )
            }
        };
        owned.push(link);
    }
    Ok(owned)
}

/// Loads and attaches the tp_btf page programs (free first; the `struct page *` → pfn
/// conversion is calibrated already). On failure, whatever was attached here is detached
/// again.
pub(super) fn attach_page_btf(
    ebpf: &mut Ebpf,
    btf: &Btf,
    attached: &mut Vec<Attached>,
    loaded: &mut Vec<&'static str>,
) -> Result<(), String> {
    let mut mine = Vec::new();
    let mut attach = |ebpf: &mut Ebpf, program: &'static str, event: &str| {
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| format!("the eBPF object has no program {program}"))?
            .try_into()
            .map_err(|e| format!("program {program}: {e}"))?;
        prog.load(event, btf).map_err(|e| verifier_summary(&e))?;
        if !loaded.contains(&program) {
            loaded.push(program);
        }
        let link = prog.attach().map_err(|e| short_error(&e))?;
        mine.push(Attached {
            program,
            link: Link::BtfTracePoint(link),
        });
        Ok::<(), String>(())
    };
    let result = attach(ebpf, programs::PAGE_FREE_BTF, "mm_page_free")
        .and_then(|()| attach(ebpf, programs::PAGE_ALLOC_BTF, "mm_page_alloc"));
    match result {
        Ok(()) => {
            attached.extend(mine);
            Ok(())
        }
        Err(e) => {
            if let Err(d) = detach_all(ebpf, mine) {
                return Err(format!("{e}; then detaching failed: {d:#}"));
            }
            Err(e)
        }
    }
}

/// Loads and attaches raw tracepoint programs, each `(program, tracepoint)` in order (frees
/// first). On failure, whatever was attached here is detached again.
pub(super) fn attach_raw(
    ebpf: &mut Ebpf,
    programs: &[(&'static str, &str)],
    attached: &mut Vec<Attached>,
    loaded: &mut Vec<&'static str>,
) -> Result<(), String> {
    let mut mine = Vec::new();
    let mut attach = |ebpf: &mut Ebpf, program: &'static str, event: &str| {
        let prog: &mut RawTracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| format!("the eBPF object has no program {program}"))?
            .try_into()
            .map_err(|e| format!("program {program}: {e}"))?;
        if !loaded.contains(&program) {
            prog.load()
                .map_err(|e| format!("{program}: {}", verifier_summary(&e)))?;
            loaded.push(program);
        }
        let link = prog
            .attach(event)
            .map_err(|e| format!("{program}: {}", short_error(&e)))?;
        mine.push(Attached {
            program,
            link: Link::RawTracePoint(link),
        });
        Ok::<(), String>(())
    };
    let result = programs
        .iter()
        .try_for_each(|(program, event)| attach(ebpf, program, event));
    match result {
        Ok(()) => {
            attached.extend(mine);
            Ok(())
        }
        Err(e) => {
            if let Err(d) = detach_all(ebpf, mine) {
                return Err(format!("{e}; then detaching failed: {d:#}"));
            }
            Err(e)
        }
    }
}

/// The raw tracepoint slab programs, frees first (each free with its twin, see
/// `memtrace_common::FreeClaims`).
pub(super) const SLAB_RAW: [(&str, &str); 6] = [
    (programs::KFREE_RAW, "kfree"),
    (programs::KFREE_RAW_TWIN, "kfree"),
    (programs::KMEM_CACHE_FREE_RAW, "kmem_cache_free"),
    (programs::KMEM_CACHE_FREE_RAW_TWIN, "kmem_cache_free"),
    (programs::KMALLOC_RAW, "kmalloc"),
    (programs::KMEM_CACHE_ALLOC_RAW, "kmem_cache_alloc"),
];

/// Loads and attaches an fentry program on `function`.
pub(super) fn attach_fentry(
    ebpf: &mut Ebpf,
    btf: &Btf,
    program: &str,
    function: &str,
) -> Result<FEntryLinkId, String> {
    let prog: &mut FEntry = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("the eBPF object has no program {program}"))?
        .try_into()
        .map_err(|e| format!("program {program}: {e}"))?;
    prog.load(function, btf).map_err(|e| verifier_summary(&e))?;
    prog.attach().map_err(|e| short_error(&e))
}

/// The error and its sources on one line.
pub(super) fn short_error(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The syscall error plus the last meaningful verifier lines (the reason is at the end).
pub(super) fn verifier_summary(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            if std::env::var_os("MEMTRACE_VERIFIER_LOG").is_some() {
                eprintln!("memtrace: verifier log:\n{log}");
            }
            let tail: Vec<&str> = log
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("processed ") && !l.starts_with(';'))
                .collect();
            let start = tail.len().saturating_sub(3);
            if tail.is_empty() {
                io_error.to_string()
            } else {
                format!("{io_error}; verifier: {}", tail[start..].join(" | "))
            }
        }
        other => short_error(other),
    }
}
