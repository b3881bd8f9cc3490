//! Where the binary is and whether the privileged tests can run here.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The workspace root: two levels above this crate's manifest directory (`tests/testkit`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

/// The memtrace binary under test: env `MEMTRACE_BIN`, else
/// `<workspace root>/target/release/memtrace`.
pub fn memtrace_bin() -> PathBuf {
    match std::env::var_os("MEMTRACE_BIN") {
        Some(bin) if !bin.is_empty() => PathBuf::from(bin),
        _ => workspace_root().join("target/release/memtrace"),
    }
}

/// Why the privileged scenario tests cannot run here, or `None` when they can.
pub fn bpf_unavailable_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Some(format!(
            "not running as root (euid {euid}); the scenarios load BPF programs and force \
             socket buffer sizes"
        ));
    }

    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    match aya::sys::is_map_supported(aya::maps::MapType::Array) {
        Ok(true) => {}
        Ok(false) => {
            return Some(format!(
                "the bpf() syscall cannot create a BPF array map (BPF unusable here; \
                 /sys/kernel/btf/vmlinux {})",
                if btf { "exists" } else { "is missing" }
            ))
        }
        Err(e) => return Some(format!("the bpf() syscall probe failed: {e}")),
    }
    if let Err(e) = crate::programs::loaded_memtrace_programs() {
        return Some(format!("cannot enumerate loaded BPF programs: {e:#}"));
    }

    let bin = memtrace_bin();
    match std::fs::metadata(&bin) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => None,
        Ok(_) => Some(format!(
            "{} is not an executable file (set MEMTRACE_BIN or build the release binary)",
            bin.display()
        )),
        Err(e) => Some(format!(
            "memtrace binary {} not found ({e}); set MEMTRACE_BIN or build it first",
            bin.display()
        )),
    }
}

/// Whether the privileged scenario tests can run. When they cannot, prints a loud `SKIPPED`
/// banner to stderr and returns `false` — unless env `MEMTRACE_REQUIRE_BPF=1`, where a skip is
/// a failure and this panics with the reason.
pub fn require_bpf() -> bool {
    let Some(reason) = bpf_unavailable_reason() else {
        return true;
    };
    if std::env::var("MEMTRACE_REQUIRE_BPF").is_ok_and(|v| v == "1") {
        panic!(
            "MEMTRACE_REQUIRE_BPF=1 but the privileged memtrace scenario cannot run \
             (a skip is a failure here): {reason}"
        );
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string();
    let bar = "#".repeat(78);
    // Straight to fd 2: the test harness would capture (and hide) eprintln! of a passing test.
    crate::log(&format!(
        "\n{bar}\n#\n#  SKIPPED: {test}\n#  SKIPPED: {reason}\n#  SKIPPED: this privileged \
         scenario did NOT run and proves nothing.\n#  SKIPPED: set MEMTRACE_REQUIRE_BPF=1 to \
         turn this skip into a failure.\n#\n{bar}\n"
    ));
    false
}
