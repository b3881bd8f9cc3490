//! Loads memtrace's eBPF object, configures it for the running kernel and attaches it.

pub mod privileges;

use anyhow::Context as _;
use aya::{
    programs::{trace_point::TracePointLinkId, ProgramError, TracePoint},
    Ebpf, EbpfLoader,
};
use memtrace_common::{maps, programs, Config, CONFIG_GLOBAL};

use crate::{error::SetupError, tracefs};

/// The eBPF object built from memtrace-ebpf (empty when built without it; see build.rs).
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memtrace.bpf.o"));

/// Sizes chosen on the command line.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Entries of the outstanding-allocation map.
    pub max_allocations: u32,
    /// Requested stack slots; rounded up to a power of two (the kernel does so anyway).
    pub max_stacks: u32,
}

/// One attached program.
struct Attached {
    program: &'static str,
    link: TracePointLinkId,
}

/// Loaded and attached programs plus their maps.
pub struct Tracer {
    pub(crate) ebpf: Ebpf,
    attached: Vec<Attached>,
    pub config: Config,
    /// Slots in the stack map (= stack ids are below this).
    pub stack_slots: u32,
    /// "tracepoint kmem:mm_page_alloc", ...
    pub hooks: Vec<String>,
}

impl Tracer {
    /// Detaches every program; the maps stay readable until the tracer is dropped.
    pub fn detach(&mut self) -> anyhow::Result<()> {
        for a in self.attached.drain(..) {
            let prog: &mut TracePoint = self
                .ebpf
                .program_mut(a.program)
                .with_context(|| format!("program {} vanished", a.program))?
                .try_into()
                .with_context(|| format!("program {} is not a tracepoint", a.program))?;
            prog.detach(a.link)
                .with_context(|| format!("detaching {}", a.program))?;
        }
        Ok(())
    }
}

/// Where each program attaches: (program, category, event). Frees first, so no allocation is
/// recorded whose free could go unseen.
const HOOKS: [(&str, &str, &str); 2] = [
    (programs::PAGE_FREE, "kmem", "mm_page_free"),
    (programs::PAGE_ALLOC, "kmem", "mm_page_alloc"),
];

/// Checks privileges, reads the tracepoint layouts, loads and attaches.
pub fn load(opts: LoadOptions) -> anyhow::Result<Tracer> {
    privileges::check()?;
    if !cfg!(memtrace_ebpf_embedded) || EBPF_OBJECT.is_empty() {
        return Err(SetupError::NoEbpfObject.into());
    }
    let root = tracefs::locate()?;
    let alloc = tracefs::read_format(&root, "kmem", "mm_page_alloc")?;
    let free = tracefs::read_format(&root, "kmem", "mm_page_free")?;
    let stack_slots = opts
        .max_stacks
        .max(1)
        .checked_next_power_of_two()
        .unwrap_or(1 << 31);
    let config = Config {
        page_alloc: tracefs::page_alloc_layout(&alloc)?,
        page_free: tracefs::page_free_layout(&free)?,
        page_size: tracefs::page_size(),
        self_tgid: std::process::id(),
        max_order: tracefs::max_order(),
        stack_none_id: stack_slots,
        _pad: 0,
    };

    let mut ebpf = EbpfLoader::new()
        .override_global(CONFIG_GLOBAL, &config, true)
        .map_max_entries(maps::OUTSTANDING, opts.max_allocations.max(1))
        .map_max_entries(maps::STACKS, stack_slots)
        .map_max_entries(maps::STACK_AGG, stack_slots + 1)
        .load(EBPF_OBJECT)
        .map_err(|e| SetupError::BpfLoad {
            what: "creating maps".into(),
            reason: short_error(&e),
        })?;

    // On any error below, dropping `ebpf` detaches whatever was attached already.
    let mut attached = Vec::new();
    let mut hooks = Vec::new();
    for (name, category, event) in HOOKS {
        let prog: &mut TracePoint = ebpf
            .program_mut(name)
            .with_context(|| format!("the eBPF object has no program {name}"))?
            .try_into()
            .with_context(|| format!("program {name} is not a tracepoint"))?;
        prog.load().map_err(|e| SetupError::BpfLoad {
            what: format!("program {name}"),
            reason: verifier_summary(&e),
        })?;
        let link = prog
            .attach(category, event)
            .map_err(|e| SetupError::Attach {
                event: format!("{category}:{event}"),
                reason: short_error(&e),
            })?;
        attached.push(Attached {
            program: name,
            link,
        });
        hooks.push(format!("tracepoint {category}:{event}"));
    }
    Ok(Tracer {
        ebpf,
        attached,
        config,
        stack_slots,
        hooks,
    })
}

/// The error and its sources on one line.
fn short_error(e: &dyn std::error::Error) -> String {
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
fn verifier_summary(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("processed ") && !l.starts_with(';'))
                .collect();
            let start = tail.len().saturating_sub(3);
            format!("{io_error}; verifier: {}", tail[start..].join(" | "))
        }
        other => short_error(other),
    }
}
