//! Embeds the eBPF object built by `cargo xtask build-ebpf` as `$OUT_DIR/memtrace.bpf.o`.
//!
//! Source, first found wins:
//! 1. `$MEMTRACE_EBPF_OBJECT` (xtask always sets it; relative paths are taken from the
//!    workspace root);
//! 2. `<target>/bpf/<bpf target>/release/memtrace`, where xtask puts it (`<target>` is
//!    `$CARGO_TARGET_DIR` or `<workspace>/target`).
//!
//! With an object, `--cfg memtrace_ebpf_embedded` is set. Without one an empty file is written
//! (so `include_bytes!` still compiles: `cargo check`/`clippy` need no BPF toolchain) and a
//! warning says how to get the real thing.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

const OBJECT_ENV: &str = "MEMTRACE_EBPF_OBJECT";
const EMBEDDED_CFG: &str = "memtrace_ebpf_embedded";

fn is_elf(path: &Path) -> bool {
    fs::read(path).is_ok_and(|bytes| bytes.starts_with(b"\x7fELF"))
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg({EMBEDDED_CFG})");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={OBJECT_ENV}");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("memtrace/ has a parent");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("memtrace.bpf.o");

    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(|d| workspace.join(d))
        .unwrap_or_else(|| workspace.join("target"));
    let bpf_target = match env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("big") => "bpfeb-unknown-none",
        _ => "bpfel-unknown-none",
    };
    let default_object = target_dir
        .join("bpf")
        .join(bpf_target)
        .join("release")
        .join("memtrace");

    // Watch only candidates that exist: cargo reruns a build script on every build while a
    // watched path is missing. (Both are watched in the no-object case below.)
    let mut chosen = None;
    if let Some(path) = env::var_os(OBJECT_ENV).filter(|p| !p.is_empty()) {
        let path = workspace.join(path);
        println!("cargo:rerun-if-changed={}", path.display());
        if is_elf(&path) {
            chosen = Some(path);
        } else {
            println!(
                "cargo:warning={OBJECT_ENV}={} is not an ELF object; ignoring it",
                path.display()
            );
        }
    }
    if default_object.exists() && chosen.as_ref() != Some(&default_object) {
        println!("cargo:rerun-if-changed={}", default_object.display());
    }
    if chosen.is_none() && is_elf(&default_object) {
        chosen = Some(default_object.clone());
    }

    match chosen {
        Some(object) => {
            fs::copy(&object, &out).unwrap_or_else(|e| {
                panic!("cannot copy {} to {}: {e}", object.display(), out.display())
            });
            println!("cargo:rustc-cfg={EMBEDDED_CFG}");
        }
        None => {
            // Missing path: rerun every build until `cargo xtask build-ebpf` creates it.
            println!("cargo:rerun-if-changed={}", default_object.display());
            fs::write(&out, b"").unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
            println!(
                "cargo:warning=memtrace is built without its eBPF object (no {OBJECT_ENV}, no {}); \
                 it cannot trace. `cargo xtask build` makes one",
                default_object.display()
            );
        }
    }
}
