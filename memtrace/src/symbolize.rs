//! Kernel address symbolization with blazesym.
//!
//! Function names come from `/proc/kallsyms` (always present, but without sizes, source
//! lines or inlining); when a `vmlinux` with debug info for the running kernel is found,
//! blazesym uses it first and adds file/line and inlined functions. Addresses the vmlinux
//! pass cannot resolve (kernel modules without installed `.ko` files, BPF programs, ftrace
//! trampolines, ...) are retried with kallsyms alone.
//!
//! Symbolization never fails a report: on trouble the frames stay unresolved (raw addresses)
//! and [`KernelSymbolizer::warnings`] says why and how to fix it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use blazesym::symbolize::source::{Kernel, Source};
use blazesym::symbolize::{Input, Sym, Symbolized, Symbolizer};
use blazesym::MaybeDefault;

use crate::model::{Frame, Symbolize};

/// The running kernel's symbol table.
pub const KALLSYMS: &str = "/proc/kallsyms";

/// Loaded kernel modules; blazesym maps module addresses with it.
const PROC_MODULES: &str = "/proc/modules";

/// kallsyms has no symbol sizes, so an address far past the last symbol before it would still
/// "resolve" to that symbol. No kernel function is this large: beyond it the frame is left
/// unresolved instead of getting a misleading name.
const MAX_UNSIZED_OFFSET: usize = 1 << 20;

/// Symbolizes kernel stack addresses (implements [`Symbolize`]).
#[derive(Debug)]
pub struct KernelSymbolizer {
    kallsyms: PathBuf,
    vmlinux: Option<PathBuf>,
    warnings: Mutex<Vec<String>>,
    /// Frames already resolved, by address: a long session (`--interval`, `memtrace serve`)
    /// symbolizes only the addresses its snapshots have not met yet, instead of loading
    /// kallsyms and the debug info and resolving every stack again each time.
    resolved: Mutex<HashMap<u64, Frame>>,
}

/// Resolved frames kept by a [`KernelSymbolizer`]; past this the cache starts over (kernel text
/// holds far fewer distinct return addresses that allocate).
const MAX_CACHED_FRAMES: usize = 1 << 18;

impl Default for KernelSymbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl KernelSymbolizer {
    /// `/proc/kallsyms`, plus a vmlinux with debug info for the running kernel when one is
    /// installed in a usual place (see [`find_vmlinux`]).
    pub fn new() -> Self {
        let (vmlinux, warnings) = find_vmlinux();
        KernelSymbolizer {
            kallsyms: PathBuf::from(KALLSYMS),
            vmlinux,
            warnings: Mutex::new(warnings),
            resolved: Mutex::new(HashMap::new()),
        }
    }

    #[cfg(test)]
    /// Explicit sources (a saved kallsyms copy, a given vmlinux or `None` for kallsyms only).
    pub fn with_sources(kallsyms: impl Into<PathBuf>, vmlinux: Option<PathBuf>) -> Self {
        KernelSymbolizer {
            kallsyms: kallsyms.into(),
            vmlinux,
            warnings: Mutex::new(Vec::new()),
            resolved: Mutex::new(HashMap::new()),
        }
    }

    #[cfg(test)]
    /// The vmlinux whose debug info is used (source lines, inlined functions), if any.
    pub fn vmlinux(&self) -> Option<&Path> {
        self.vmlinux.as_deref()
    }

    /// Problems met so far, each a one-line message naming the fix (no duplicates).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn warn(&self, message: String) {
        let mut warnings = self.warnings.lock().unwrap_or_else(PoisonError::into_inner);
        if !warnings.contains(&message) {
            warnings.push(message);
        }
    }

    fn kernel_source(&self, vmlinux: Option<&Path>) -> Source<'static> {
        Source::Kernel(Kernel {
            kallsyms: MaybeDefault::Some(self.kallsyms.clone()),
            vmlinux: match vmlinux {
                Some(path) => MaybeDefault::Some(path.to_path_buf()),
                None => MaybeDefault::None,
            },
            // Let blazesym derive it (from /proc/kcore or by comparing `_stext` in kallsyms and
            // vmlinux); it only matters for vmlinux lookups.
            kaslr_offset: None,
            debug_syms: true,
            ..Default::default()
        })
    }
}

impl Symbolize for KernelSymbolizer {
    fn symbolize(&self, addresses: &[u64]) -> Vec<Frame> {
        let mut cache = self.resolved.lock().unwrap_or_else(PoisonError::into_inner);
        let mut frames: Vec<Option<Frame>> =
            addresses.iter().map(|a| cache.get(a).cloned()).collect();
        let missing: Vec<u64> = addresses
            .iter()
            .zip(&frames)
            .filter(|(_, f)| f.is_none())
            .map(|(a, _)| *a)
            .collect();
        if !missing.is_empty() {
            let fresh = self.symbolize_uncached(&missing);
            if cache.len() + fresh.len() > MAX_CACHED_FRAMES {
                cache.clear();
            }
            let mut fresh = fresh.into_iter();
            for (slot, &address) in frames.iter_mut().filter(|f| f.is_none()).zip(&missing) {
                let frame = fresh.next().unwrap_or_else(|| Frame::unresolved(address));
                // Unresolved addresses are tried again next time (a module may load).
                if frame.symbol.is_some() {
                    cache.insert(frame.address, frame.clone());
                }
                *slot = Some(frame);
            }
        }
        addresses
            .iter()
            .zip(frames)
            .map(|(&a, f)| f.unwrap_or_else(|| Frame::unresolved(a)))
            .collect()
    }
}

impl KernelSymbolizer {
    /// Resolves `addresses` (one frame each, in order) without the cache.
    fn symbolize_uncached(&self, addresses: &[u64]) -> Vec<Frame> {
        let mut frames: Vec<Frame> = addresses.iter().map(|&a| Frame::unresolved(a)).collect();
        if addresses.is_empty() {
            return frames;
        }

        let info = match KallsymsInfo::read(&self.kallsyms) {
            Ok(info) => info,
            Err(e) => {
                self.warn(format!(
                    "cannot read {}: {e}; kernel stacks are shown as raw addresses (run memtrace \
                     as root)",
                    self.kallsyms.display()
                ));
                return frames;
            }
        };
        if info.symbols == 0 {
            self.warn(format!(
                "{} lists no symbols; kernel stacks are shown as raw addresses (is it a kallsyms \
                 file?)",
                self.kallsyms.display()
            ));
            return frames;
        }
        if info.nonzero == 0 {
            self.warn(format!(
                "kernel symbol addresses in {} are hidden (all zero); run memtrace as root and set \
                 `sysctl -w kernel.kptr_restrict=0` to get function names",
                self.kallsyms.display()
            ));
            return frames;
        }

        let symbolizer = Symbolizer::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true) // Rust-for-Linux symbols are mangled.
            .enable_auto_reload(false)
            .build();

        // Indices of `frames` still to resolve with kallsyms alone.
        let mut retry: Vec<usize> = (0..addresses.len()).collect();
        let vmlinux = self.vmlinux.as_deref().filter(|vmlinux| {
            // blazesym 0.2 consults the module map before every vmlinux lookup and fails the
            // lookup when /proc/modules is missing (kernels built with CONFIG_MODULES=n).
            let usable = Path::new(PROC_MODULES).exists();
            if !usable {
                self.warn(format!(
                    "not using {}: this kernel has no {PROC_MODULES} (CONFIG_MODULES=n), which \
                     blazesym needs for vmlinux lookups; names come from {} without source lines",
                    vmlinux.display(),
                    self.kallsyms.display()
                ));
            }
            usable
        });
        if let Some(vmlinux) = vmlinux {
            let src = self.kernel_source(Some(vmlinux));
            match symbolizer.symbolize(&src, Input::AbsAddr(addresses)) {
                Ok(results) => {
                    retry.clear();
                    let mut resolved = 0usize;
                    for (i, (&address, result)) in addresses.iter().zip(&results).enumerate() {
                        match result_to_frame(address, result, &info) {
                            Some(frame) => {
                                frames[i] = frame;
                                resolved += 1;
                            }
                            None => retry.push(i),
                        }
                    }
                    if resolved == 0 {
                        self.warn(format!(
                            "{} resolved no kernel address (does it match the running kernel?); \
                             names come from {} without source lines: install the matching \
                             kernel debug info package",
                            vmlinux.display(),
                            self.kallsyms.display()
                        ));
                    }
                }
                Err(e) => self.warn(format!(
                    "symbolizing with {} failed ({e}); names come from {} without source lines: \
                     install the kernel debug info package that matches the running kernel",
                    vmlinux.display(),
                    self.kallsyms.display()
                )),
            }
        }
        if retry.is_empty() {
            return frames;
        }

        let src = self.kernel_source(None);
        let retry_addrs: Vec<u64> = retry.iter().map(|&i| addresses[i]).collect();
        match symbolizer.symbolize(&src, Input::AbsAddr(&retry_addrs)) {
            Ok(results) => {
                for (&i, result) in retry.iter().zip(results.iter()) {
                    if let Some(frame) = result_to_frame(addresses[i], result, &info) {
                        frames[i] = frame;
                    }
                }
            }
            Err(e) => self.warn(format!(
                "symbolizing kernel addresses with {} failed ({e}); kernel stacks are shown as raw \
                 addresses (run memtrace as root)",
                self.kallsyms.display()
            )),
        }
        frames
    }
}

/// `Some(frame)` when blazesym resolved the address to a plausible symbol.
fn result_to_frame(address: u64, result: &Symbolized<'_>, info: &KallsymsInfo) -> Option<Frame> {
    match result {
        Symbolized::Sym(sym) => frame_from_sym(address, sym, info),
        Symbolized::Unknown(_) => None,
    }
}

fn frame_from_sym(address: u64, sym: &Sym<'_>, info: &KallsymsInfo) -> Option<Frame> {
    if sym.size.is_none() && sym.offset > MAX_UNSIZED_OFFSET {
        return None;
    }
    let offset = sym.offset as u64;
    let start = address.wrapping_sub(offset);
    let module = info
        .module_of
        .get(&start)
        .cloned()
        .or_else(|| sym.module.as_deref().and_then(module_from_path));
    let (file, line) = match &sym.code_info {
        // The location in `symbol` itself (with inlining: of the call to the first inlined
        // function), so it is consistent with the function name shown.
        Some(ci) => (Some(ci.to_path().display().to_string()), ci.line),
        None => (None, None),
    };
    Some(Frame {
        address,
        symbol: Some(sym.name.to_string()),
        module,
        offset: Some(offset),
        file,
        line,
        inlined: sym.inlined.iter().map(|f| f.name.to_string()).collect(),
    })
}

/// `/lib/modules/.../virtio-net.ko` (what blazesym reports for module symbols resolved from
/// their ELF file) → `virtio_net`; `None` for the vmlinux image.
fn module_from_path(path: &OsStr) -> Option<String> {
    let name = Path::new(path).file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".ko")
        .or_else(|| name.split_once(".ko.").map(|(stem, _)| stem))?;
    Some(stem.replace('-', "_"))
}

/// What memtrace itself needs from kallsyms: whether addresses are visible, and which
/// module (`[virtio_net]`, `[bpf]`, ...) each module symbol belongs to.
#[derive(Debug, Default)]
struct KallsymsInfo {
    symbols: usize,
    nonzero: usize,
    /// Symbol start address → module name, for symbols tagged `[module]`.
    module_of: HashMap<u64, String>,
}

impl KallsymsInfo {
    fn read(path: &Path) -> std::io::Result<Self> {
        let mut info = KallsymsInfo::default();
        let mut line = String::new();
        let mut reader = BufReader::new(File::open(path)?);
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            info.add_line(&line);
        }
        Ok(info)
    }

    /// `ffffffffc0201000 t ftrace_trampoline\t[__builtin__ftrace]`
    fn add_line(&mut self, line: &str) {
        let mut words = line.split_ascii_whitespace();
        let (Some(addr), Some(_kind), Some(_name)) = (words.next(), words.next(), words.next())
        else {
            return;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            return;
        };
        self.symbols += 1;
        if addr == 0 {
            return;
        }
        self.nonzero += 1;
        if let Some(module) = words
            .next()
            .and_then(|m| m.strip_prefix('['))
            .and_then(|m| m.strip_suffix(']'))
        {
            self.module_of.insert(addr, module.to_string());
        }
    }
}

/// Looks for a vmlinux with symbols for the running kernel: blazesym 0.2's own default
/// locations (`/boot/vmlinux-R`, `/usr/lib/debug/boot/vmlinux-R`) first, then the Fedora/RHEL
/// debuginfo path, a kernel build tree, and the build-ID indexed debug directory. A candidate
/// whose GNU build ID differs from the running kernel's (`/sys/kernel/notes`) is skipped with a
/// warning: its symbols would be wrong. Returns the vmlinux and the warnings.
pub fn find_vmlinux() -> (Option<PathBuf>, Vec<String>) {
    let mut warnings = Vec::new();
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return (None, warnings);
    };
    let release = release.trim();
    let kernel_id = std::fs::read("/sys/kernel/notes")
        .ok()
        .and_then(|notes| parse_gnu_build_id_note(&notes));
    let mut candidates = vec![
        PathBuf::from(format!("/boot/vmlinux-{release}")),
        PathBuf::from(format!("/usr/lib/debug/boot/vmlinux-{release}")),
        PathBuf::from(format!("/usr/lib/debug/lib/modules/{release}/vmlinux")),
        PathBuf::from(format!("/lib/modules/{release}/build/vmlinux")),
        PathBuf::from(format!("/lib/modules/{release}/vmlinux")),
    ];
    if let Some(id) = kernel_id.as_deref().filter(|id| id.len() > 1) {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        candidates.push(PathBuf::from(format!(
            "/usr/lib/debug/.build-id/{}/{}.debug",
            &hex[..2],
            &hex[2..]
        )));
    }
    for path in candidates {
        if !path.is_file() {
            continue;
        }
        match blazesym::helper::read_elf_build_id(&path) {
            Err(e) => warnings.push(format!(
                "ignoring {}: it is not a readable ELF file ({e}); install an uncompressed vmlinux \
                 with debug info to get source lines",
                path.display()
            )),
            Ok(Some(id)) if kernel_id.as_deref().is_some_and(|k| k != &*id) => {
                warnings.push(format!(
                    "ignoring {}: its build ID does not match the running kernel; install the \
                     vmlinux of the running kernel to get source lines",
                    path.display()
                ))
            }
            Ok(_) => return (Some(path), warnings),
        }
    }
    (None, warnings)
}

/// Finds the `NT_GNU_BUILD_ID` note (name "GNU", type 3) in a sequence of ELF notes such as
/// `/sys/kernel/notes`.
fn parse_gnu_build_id_note(mut notes: &[u8]) -> Option<Vec<u8>> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let word = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    while notes.len() >= 12 {
        let namesz = usize::try_from(word(notes, 0)?).ok()?;
        let descsz = usize::try_from(word(notes, 4)?).ok()?;
        let kind = word(notes, 8)?;
        let name_end = 12usize.checked_add(namesz)?;
        let desc_start = 12usize.checked_add(align4(namesz)?)?;
        let desc_end = desc_start.checked_add(descsz)?;
        let name = notes.get(12..name_end)?;
        let desc = notes.get(desc_start..desc_end)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
            return Some(desc.to_vec());
        }
        notes = notes.get(desc_start.checked_add(align4(descsz)?)?..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel)
    }

    #[test]
    fn kallsyms_fixture_names_offsets_and_modules() {
        let s = KernelSymbolizer::with_sources(fixture("kallsyms/sample.kallsyms"), None);
        let addrs = [
            0xffffffff81000100, // alpha
            0xffffffff81000110, // alpha+0x10
            0xffffffff810003ff, // beta+0x1ff
            0xffffffffc0001030, // virtnet_poll+0x30 [virtio_net]
            0xffffffffc0100008, // bpf program [bpf]
            0x10,               // below every symbol
            0xffffffffc0300000, // far past the last symbol
            0xffffffff81000400, // gamma
        ];
        let frames = s.symbolize(&addrs);
        assert_eq!(frames.len(), addrs.len());
        for (f, a) in frames.iter().zip(addrs) {
            assert_eq!(f.address, a);
        }
        let named: Vec<_> = frames
            .iter()
            .map(|f| (f.symbol.as_deref(), f.offset, f.module.as_deref()))
            .collect();
        assert_eq!(
            named,
            [
                (Some("alpha"), Some(0), None),
                (Some("alpha"), Some(0x10), None),
                (Some("beta"), Some(0x1ff), None),
                (Some("virtnet_poll"), Some(0x30), Some("virtio_net")),
                (
                    Some("bpf_prog_6deef7357e7b4530_sd_fw_ingress"),
                    Some(8),
                    Some("bpf")
                ),
                (None, None, None),
                (None, None, None),
                (Some("gamma"), Some(0), None),
            ]
        );
        assert_eq!(frames[5], Frame::unresolved(0x10));
        assert!(frames
            .iter()
            .all(|f| f.file.is_none() && f.inlined.is_empty()));
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
        assert!(s.symbolize(&[]).is_empty());
    }

    #[test]
    fn resolved_frames_are_kept_for_the_next_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("kallsyms");
        std::fs::copy(fixture("kallsyms/sample.kallsyms"), &copy).unwrap();
        let s = KernelSymbolizer::with_sources(&copy, None);
        let first = s.symbolize(&[0xffffffff81000110, 0x10, 0xffffffffc0001030]);
        assert_eq!(first[0].symbol.as_deref(), Some("alpha"));
        assert_eq!(first[1], Frame::unresolved(0x10));
        // kallsyms gone: what was resolved comes from the cache, in the order asked for; the
        // rest is tried again (and stays unresolved), one frame per address all the same.
        std::fs::remove_file(&copy).unwrap();
        let second = s.symbolize(&[0xffffffffc0001030, 0x10, 0xffffffff81000110, 0x20]);
        assert_eq!(second[0], first[2]);
        assert_eq!(second[1], Frame::unresolved(0x10));
        assert_eq!(second[2], first[0]);
        assert_eq!(second[3], Frame::unresolved(0x20));
        assert!(s.warnings().iter().any(|w| w.contains("cannot read")));
    }

    #[test]
    fn hidden_addresses_warn_about_kptr_restrict() {
        let s = KernelSymbolizer::with_sources(fixture("kallsyms/restricted.kallsyms"), None);
        let frames = s.symbolize(&[0xffffffff81000100, 0xffffffff81000200]);
        assert_eq!(
            frames,
            [
                Frame::unresolved(0xffffffff81000100),
                Frame::unresolved(0xffffffff81000200)
            ]
        );
        let warnings = s.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("kptr_restrict=0"), "{warnings:?}");
        assert!(warnings[0].contains("as root"), "{warnings:?}");
        // Warnings are not repeated.
        s.symbolize(&[1]);
        assert_eq!(s.warnings().len(), 1);
    }

    #[test]
    fn unreadable_kallsyms_leaves_frames_unresolved() {
        let s = KernelSymbolizer::with_sources("/nonexistent/kallsyms", None);
        let frames = s.symbolize(&[0xffffffff81000100]);
        assert_eq!(frames, [Frame::unresolved(0xffffffff81000100)]);
        let warnings = s.warnings();
        assert!(
            warnings[0].contains("cannot read /nonexistent/kallsyms"),
            "{warnings:?}"
        );
    }

    #[test]
    fn unusable_vmlinux_falls_back_to_kallsyms() {
        // Not an ELF file: blazesym fails to open it and the kallsyms pass takes over.
        let s = KernelSymbolizer::with_sources(
            fixture("kallsyms/sample.kallsyms"),
            Some(fixture("kallsyms/restricted.kallsyms")),
        );
        let frames = s.symbolize(&[0xffffffff81000110, 0xffffffffc0001030]);
        assert_eq!(frames[0].symbol.as_deref(), Some("alpha"));
        assert_eq!(frames[0].offset, Some(0x10));
        assert_eq!(frames[1].module.as_deref(), Some("virtio_net"));
        let warnings = s.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("restricted.kallsyms"), "{warnings:?}");
        assert!(warnings[0].contains("without source lines"), "{warnings:?}");
    }

    #[test]
    fn module_names_from_paths() {
        let m = |p: &str| module_from_path(OsStr::new(p));
        assert_eq!(
            m("/lib/modules/6.1/kernel/drivers/net/virtio_net.ko").as_deref(),
            Some("virtio_net")
        );
        assert_eq!(
            m("/lib/modules/6.1/x/nf-tables.ko.zst").as_deref(),
            Some("nf_tables")
        );
        assert_eq!(m("/usr/lib/debug/boot/vmlinux-6.1.0"), None);
    }

    #[test]
    fn gnu_build_id_from_notes() {
        let mut notes = Vec::new();
        // A "Xen" note first (name padded to 4, odd desc size padded to 4).
        notes.extend_from_slice(&4u32.to_ne_bytes());
        notes.extend_from_slice(&5u32.to_ne_bytes());
        notes.extend_from_slice(&6u32.to_ne_bytes());
        notes.extend_from_slice(b"Xen\0");
        notes.extend_from_slice(&[1, 2, 3, 4, 5, 0, 0, 0]);
        // The build ID.
        let id: Vec<u8> = (0..20).collect();
        notes.extend_from_slice(&4u32.to_ne_bytes());
        notes.extend_from_slice(&20u32.to_ne_bytes());
        notes.extend_from_slice(&3u32.to_ne_bytes());
        notes.extend_from_slice(b"GNU\0");
        notes.extend_from_slice(&id);
        assert_eq!(parse_gnu_build_id_note(&notes), Some(id));
        assert_eq!(parse_gnu_build_id_note(&notes[..30]), None);
        assert_eq!(parse_gnu_build_id_note(&[]), None);
    }

    /// Every `(address, type, name)` in the live /proc/kallsyms, or `None` (with a loud message)
    /// when the addresses are hidden and the test may be skipped.
    fn live_kallsyms() -> Option<Vec<(u64, String, Option<String>)>> {
        let text = std::fs::read_to_string(KALLSYMS).unwrap_or_default();
        let syms: Vec<(u64, String, Option<String>)> = text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_ascii_whitespace();
                let addr = u64::from_str_radix(w.next()?, 16).ok()?;
                let _kind = w.next()?;
                let name = w.next()?.to_string();
                let module = w.next().map(|m| m.trim_matches(['[', ']']).to_string());
                Some((addr, name, module))
            })
            .collect();
        if syms.iter().any(|s| s.0 != 0) {
            return Some(syms);
        }
        let msg = "/proc/kallsyms addresses are hidden (not root, or kernel.kptr_restrict=2)";
        if std::env::var("MEMTRACE_REQUIRE_BPF").as_deref() == Ok("1") {
            panic!("{msg}, and MEMTRACE_REQUIRE_BPF=1 requires this test to run");
        }
        eprintln!("\n!!!!!!!! SKIPPED live kallsyms symbolization test: {msg} !!!!!!!!\n");
        None
    }

    #[test]
    fn symbolizes_live_kernel_addresses() {
        let Some(syms) = live_kallsyms() else {
            return;
        };
        let mut count_at: HashMap<u64, usize> = HashMap::new();
        for s in &syms {
            *count_at.entry(s.0).or_default() += 1;
        }
        // A symbol with a unique address, so the expected name is unambiguous.
        let unique = |name: &str| {
            syms.iter()
                .find(|s| s.1 == name && count_at[&s.0] == 1)
                .map(|s| s.0)
        };
        let tcp = unique("tcp_sendmsg").expect("tcp_sendmsg in /proc/kallsyms");
        let (alloc_name, alloc) = ["__alloc_pages_noprof", "__alloc_pages", "alloc_pages"]
            .iter()
            .find_map(|n| unique(n).map(|a| (*n, a)))
            .expect("a page allocator function in /proc/kallsyms");

        let mut addrs = vec![tcp, tcp + 0x10, alloc + 1];
        let module_sym = syms
            .iter()
            .find(|s| s.2.is_some() && count_at[&s.0] == 1)
            .cloned();
        if let Some(m) = &module_sym {
            addrs.push(m.0);
        } else {
            eprintln!("note: no module symbols in /proc/kallsyms; module lookup not tested live");
        }

        let s = KernelSymbolizer::new();
        eprintln!("vmlinux used: {:?}", s.vmlinux());
        let frames = s.symbolize(&addrs);
        eprintln!("{frames:#?}\nwarnings: {:?}", s.warnings());
        assert_eq!(frames.len(), addrs.len());
        assert_eq!(frames[0].symbol.as_deref(), Some("tcp_sendmsg"));
        assert_eq!(frames[0].offset, Some(0));
        assert_eq!(frames[0].module, None);
        assert_eq!(frames[1].symbol.as_deref(), Some("tcp_sendmsg"));
        assert_eq!(frames[1].offset, Some(0x10));
        assert_eq!(frames[2].symbol.as_deref(), Some(alloc_name));
        assert_eq!(frames[2].offset, Some(1));
        if let Some((_, name, module)) = module_sym {
            assert_eq!(frames[3].symbol.as_deref(), Some(name.as_str()));
            assert_eq!(frames[3].offset, Some(0));
            assert_eq!(frames[3].module, module);
        }
        if s.vmlinux().is_some() {
            assert!(
                frames[0].file.is_some(),
                "vmlinux debug info gave no source line"
            );
        }
    }
}
