//! `cargo xtask bootstrap`: the nightly toolchain, its `rust-src`, and a `bpf-linker` built
//! against the very libLLVM that nightly rustc ships (bpf-linker has no usable prebuilt binary).

use std::{
    env, fs,
    os::unix::fs::{symlink, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{cmd, Ctx};

pub const NIGHTLY: &str = "nightly";
/// The bpf-linker release we build; bump together with the nightly's LLVM major.
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_MIN: (u32, u32, u32) = (0, 13, 0);

/// What the eBPF build needs to know about the nightly toolchain.
pub struct Nightly {
    /// `rustc +nightly --print sysroot`; its `lib/` holds the libLLVM bpf-linker links to.
    pub sysroot: PathBuf,
    pub llvm_major: u32,
}

impl Nightly {
    pub fn lib_dir(&self) -> PathBuf {
        self.sysroot.join("lib")
    }
}

pub fn bootstrap(ctx: &Ctx) -> Result<Nightly> {
    ensure_nightly()?;
    ensure_component("rust-src")?;
    let nightly = nightly_info()?;
    ensure_bpf_linker(ctx, &nightly)?;
    Ok(nightly)
}

fn rustup() -> Command {
    Command::new("rustup")
}

fn ensure_nightly() -> Result<()> {
    let list = cmd::output(rustup().args(["toolchain", "list"])).context(
        "rustup is needed for the eBPF build; install it from https://rustup.rs and retry",
    )?;
    // `nightly-<host>` (possibly followed by "(default)"); dated `nightly-2025-…` do not count.
    let present = list.lines().any(|line| {
        line.split_whitespace().next().is_some_and(|name| {
            name.strip_prefix("nightly-")
                .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
        })
    });
    if present {
        return Ok(());
    }
    cmd::run(
        rustup().args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]),
        "cannot install the nightly toolchain the eBPF build needs; \
         run `rustup toolchain install nightly --profile minimal --component rust-src` by hand",
    )
}

/// Makes sure `component` is installed for nightly.
pub fn ensure_component(component: &str) -> Result<()> {
    let installed =
        cmd::output(rustup().args(["component", "list", "--installed", "--toolchain", NIGHTLY]))?;
    // Lines are `rust-src` or `clippy-x86_64-unknown-linux-gnu`.
    let present = installed.lines().any(|line| {
        let line = line.trim();
        line == component
            || line
                .strip_prefix(component)
                .is_some_and(|rest| rest.starts_with('-'))
    });
    if present {
        return Ok(());
    }
    cmd::run(
        rustup().args(["component", "add", component, "--toolchain", NIGHTLY]),
        &format!("run `rustup component add {component} --toolchain nightly` by hand"),
    )
}

fn nightly_info() -> Result<Nightly> {
    let vv = cmd::output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let llvm = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .map(str::trim)
        .context("`rustc +nightly -vV` prints no `LLVM version:` line")?;
    let llvm_major = llvm
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("cannot parse nightly's LLVM version {llvm:?}"))?;
    let sysroot = cmd::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    Ok(Nightly {
        sysroot: PathBuf::from(sysroot.trim()),
        llvm_major,
    })
}

/// The first executable `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// `LD_LIBRARY_PATH` as rustup sets it for nightly rustc (which is what runs bpf-linker).
fn nightly_ld_library_path(nightly: &Nightly) -> Result<std::ffi::OsString> {
    let mut dirs = vec![nightly.lib_dir()];
    if let Some(old) = env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(env::split_paths(&old));
    }
    env::join_paths(dirs).context("nightly sysroot path contains ':'")
}

/// Ok(version line) if `linker` runs, is new enough and uses nightly's LLVM major;
/// Err(reason) otherwise.
fn check_bpf_linker(linker: &Path, nightly: &Nightly) -> Result<String, String> {
    let mut probe = Command::new(linker);
    probe.arg("--version").env(
        "LD_LIBRARY_PATH",
        nightly_ld_library_path(nightly).map_err(|e| e.to_string())?,
    );
    let version = cmd::output(&mut probe).map_err(|e| format!("{e:#}"))?;
    let version = version.trim().to_owned();
    let parsed: Option<(u32, u32, u32)> = version.split_whitespace().nth(1).and_then(|v| {
        let mut it = v.split('.').map(|n| n.parse::<u32>().ok());
        Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
    });
    match parsed {
        Some(v) if v >= BPF_LINKER_MIN => {}
        _ => return Err(format!("`{version}` is older than {BPF_LINKER_VERSION}")),
    }
    // A dynamically linked bpf-linker needs `libLLVM.so.22.1-rust-…` or `libLLVM-22.so`; an
    // older LLVM than rustc's cannot read rustc's bitcode.
    let majors: Vec<u32> = needed_libs(linker)
        .iter()
        .filter_map(|lib| {
            let rest = lib
                .strip_prefix("libLLVM.so.")
                .or_else(|| lib.strip_prefix("libLLVM-"))?;
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..digits].parse().ok()
        })
        .collect();
    if !majors.is_empty() && !majors.contains(&nightly.llvm_major) {
        return Err(format!(
            "it links LLVM {majors:?} but nightly rustc uses LLVM {}",
            nightly.llvm_major
        ));
    }
    Ok(version)
}

/// DT_NEEDED entries of a little-endian ELF64 file (empty if it is anything else).
fn needed_libs(binary: &Path) -> Vec<String> {
    let Ok(data) = fs::read(binary) else {
        return Vec::new();
    };
    let u16_at = |o: usize| {
        data.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        data.get(o..o + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .and_then(|b| usize::try_from(u64::from_le_bytes(b)).ok())
    };
    // ELF magic, ELFCLASS64, ELFDATA2LSB.
    if !data.starts_with(b"\x7fELF\x02\x01") {
        return Vec::new();
    }
    let parse = || -> Option<Vec<String>> {
        let (shoff, shentsize, shnum) = (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?);
        let section = |i: usize| {
            let h = shoff + i * shentsize;
            // (sh_type, sh_link, sh_offset, sh_size)
            Some((
                u32_at(h + 4)?,
                u32_at(h + 0x28)? as usize,
                u64_at(h + 0x18)?,
                u64_at(h + 0x20)?,
            ))
        };
        const SHT_DYNAMIC: u32 = 6;
        const DT_NEEDED: usize = 1;
        let (_, strtab, dyn_off, dyn_size) = (0..shnum)
            .filter_map(section)
            .find(|s| s.0 == SHT_DYNAMIC)?;
        let (_, _, str_off, str_size) = section(strtab)?;
        let strings = data.get(str_off..str_off + str_size)?;
        let mut libs = Vec::new();
        for entry in (dyn_off..dyn_off + dyn_size).step_by(16) {
            if u64_at(entry)? == DT_NEEDED {
                let name = strings.get(u64_at(entry + 8)?..)?;
                let len = name.iter().position(|&b| b == 0)?;
                libs.push(String::from_utf8_lossy(&name[..len]).into_owned());
            }
        }
        Some(libs)
    };
    parse().unwrap_or_default()
}

fn ensure_bpf_linker(ctx: &Ctx, nightly: &Nightly) -> Result<()> {
    let reason = match which("bpf-linker") {
        None => "not found on PATH".to_owned(),
        Some(linker) => match check_bpf_linker(&linker, nightly) {
            Ok(version) => {
                eprintln!("[xtask] {version} ({}) is usable", linker.display());
                return Ok(());
            }
            Err(reason) => format!("{} is unusable: {reason}", linker.display()),
        },
    };
    eprintln!(
        "[xtask] bpf-linker {reason}; building bpf-linker {BPF_LINKER_VERSION} against nightly's \
         LLVM {} (takes a minute or two)",
        nightly.llvm_major
    );
    install_bpf_linker(ctx, nightly)?;

    let installed = ctx.cargo_bin.join("bpf-linker");
    if which("bpf-linker").as_deref() != Some(installed.as_path()) {
        // Something else shadows it on PATH: put ours first for everything we run.
        let path = env::var_os("PATH").unwrap_or_default();
        let dirs = std::iter::once(ctx.cargo_bin.clone()).chain(env::split_paths(&path));
        env::set_var("PATH", env::join_paths(dirs)?);
    }
    match check_bpf_linker(&installed, nightly) {
        Ok(version) => {
            eprintln!("[xtask] installed {version} at {}", installed.display());
            Ok(())
        }
        Err(reason) => bail!(
            "freshly built {} is unusable ({reason}); check the `cargo install` output above",
            installed.display()
        ),
    }
}

fn install_bpf_linker(ctx: &Ctx, nightly: &Nightly) -> Result<()> {
    let lib_dir = nightly.lib_dir();
    let major = nightly.llvm_major;
    // rustc ships `libLLVM.so.<MAJOR>.<minor>-rust-<version>` (plus a `libLLVM-<MAJOR>-…so`).
    let mut candidates: Vec<PathBuf> = fs::read_dir(&lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("libLLVM.so.{major}.")))
        })
        .collect();
    candidates.sort();
    let libllvm = candidates.pop().with_context(|| {
        format!(
            "no libLLVM.so.{major}.* in {}; reinstall it with `rustup toolchain install nightly --force`",
            lib_dir.display()
        )
    })?;

    // LLVM_PREFIX for bpf-linker's build script: a `lib/libLLVM.so` pointing at rustc's copy.
    let prefix = ctx.target_dir.join("bpf-linker-llvm");
    let link = prefix.join("lib").join("libLLVM.so");
    fs::create_dir_all(prefix.join("lib"))
        .with_context(|| format!("cannot create {}", prefix.display()))?;
    if fs::symlink_metadata(&link).is_ok() {
        fs::remove_file(&link).with_context(|| format!("cannot remove {}", link.display()))?;
    }
    symlink(&libllvm, &link).with_context(|| format!("cannot create {}", link.display()))?;
    eprintln!("[xtask] {} -> {}", link.display(), libllvm.display());

    let install = |locked: bool| {
        let mut c = Command::new("cargo");
        c.current_dir(&ctx.workspace_root)
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--force",
            ])
            .args(locked.then_some("--locked"))
            .arg("--no-default-features")
            .arg("--features")
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix)
            // bpf-linker's own rpath points into LLVM_PREFIX (under target/, gone after
            // `cargo clean`); add the toolchain's lib dir so it also runs outside rustc.
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                format!("-Clink-arg=-Wl,-rpath,{}", lib_dir.display()),
            )
            .env_remove("RUSTFLAGS")
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER");
        c
    };
    let fix = format!(
        "could not build bpf-linker {BPF_LINKER_VERSION} with feature llvm-{major}; if nightly \
         moved to a new LLVM, bump BPF_LINKER_VERSION in xtask/src/bootstrap.rs"
    );
    if cmd::run(&mut install(true), &fix).is_err() {
        eprintln!("[xtask] `cargo install --locked` failed; retrying without --locked");
        cmd::run(&mut install(false), &fix)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_libs_of_self() {
        let libs = needed_libs(Path::new("/proc/self/exe"));
        assert!(libs.iter().any(|l| l.starts_with("libc.so")), "{libs:?}");
    }
}
