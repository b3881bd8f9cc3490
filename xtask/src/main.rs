//! Build tasks for memtrace: `cargo xtask <bootstrap|build-ebpf|build|run|test|bench|soak|man|guest|matrix>`.
//!
//! The eBPF crate (`memtrace-ebpf/`, outside the workspace) is built with nightly for
//! `bpfel-unknown-none` into `<target>/bpf/`; user space embeds the object through
//! `MEMTRACE_EBPF_OBJECT` (see `memtrace/build.rs`), so plain `cargo check`/`clippy` of the
//! workspace never needs the BPF toolchain.

mod bench;
mod bootstrap;
mod cmd;
mod kernels;
mod prometheus;
mod python;
mod soak;

use std::{
    env,
    ffi::OsString,
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};

use bootstrap::NIGHTLY;

/// The `[[bin]]` name in memtrace-ebpf/Cargo.toml, i.e. the object's file name.
const EBPF_BIN: &str = "memtrace";
/// Sub-directory of the cargo target dir that holds the eBPF build (keep in sync with
/// `memtrace/build.rs`).
const BPF_TARGET_SUBDIR: &str = "bpf";
/// Tells `memtrace/build.rs` which object to embed.
const OBJECT_ENV: &str = "MEMTRACE_EBPF_OBJECT";
/// Tells the scenario tests (`tests/`) which binary to run.
const BIN_ENV: &str = "MEMTRACE_BIN";
/// Tells the tests which Python (a venv with protobuf) checks pprof files.
const PYTHON_ENV: &str = "MEMTRACE_PYTHON";

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "memtrace build tasks",
    version
)]
struct Cli {
    /// eBPF crate to build instead of memtrace-ebpf/ (for testing this pipeline).
    #[arg(long, global = true, hide = true, env = "XTASK_EBPF_DIR")]
    ebpf_dir: Option<PathBuf>,
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the eBPF build needs: nightly + rust-src, and a bpf-linker built against
    /// nightly's LLVM. Fast when everything is already there.
    Bootstrap,
    /// Build the eBPF object (nightly, bpfel-unknown-none) and print its path.
    BuildEbpf(EbpfOpts),
    /// Build the eBPF object, then target/release/memtrace with the object embedded.
    Build(EbpfOpts),
    /// Build, then run target/release/memtrace with the given arguments.
    Run {
        #[command(flatten)]
        opts: EbpfOpts,
        /// Arguments for memtrace (put them after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Build, then check formatting, run clippy (user space and eBPF) and all tests: the host's,
    /// a short soak of `memtrace serve` (`--soak-minutes`), then the guest scenario tests in
    /// stock Debian kernels under QEMU (`--kernels`).
    Test(TestOpts),
    /// Build, then run only the guest scenario tests (the kernel matrix of `test`).
    Matrix(kernels::MatrixOpts),
    /// Boot a stock Debian kernel under QEMU (TCG) with the host's / as its read-only root and
    /// run one command in it as root, e.g.
    /// `cargo xtask guest --kernel 6.1 -- target/release/memtrace trace --duration 5s`.
    /// Exits with the command's exit status.
    Guest(kernels::GuestOpts),
    /// The guest side of `guest` and the matrix (runs inside the guest).
    #[command(hide = true)]
    GuestRun {
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
    },
    /// Build, then measure memtrace's overhead (throughput ratios vs bare runs), footprint,
    /// time to report and hold accuracy, next to bpftrace; prints a table and writes JSON.
    /// Needs root. Nothing is asserted.
    Bench(bench::BenchOpts),
    /// The bench's `hooks-only` tracer: empty programs on memtrace's events until SIGINT.
    #[command(hide = true)]
    BenchHooks {
        #[arg(long, value_name = "FILE")]
        object: PathBuf,
    },
    /// Build, then run `memtrace serve` for `--minutes` under a rotating load (the bench's
    /// workloads, process and cgroup churn), sampling its memory, map memory, fds, threads,
    /// series and /metrics latency; prints a table, writes JSON and fails when something grew
    /// after the warm-up (the rule: docs/reliability.md). Needs root.
    Soak(soak::SoakOpts),
    /// Generate the man pages (`man/memtrace*.1`) and shell completions (`completions/`) from
    /// the command-line definitions. Needs no eBPF toolchain.
    Man {
        /// Where to write them [default: <target>/generated].
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct TestOpts {
    #[command(flatten)]
    matrix: kernels::MatrixOpts,
    /// Minutes of the soak of `memtrace serve` after the host tests (0: skip it).
    #[arg(long, value_name = "N", default_value_t = soak::CI_MINUTES)]
    soak_minutes: u32,
}

#[derive(Args, Clone, Copy)]
struct EbpfOpts {
    /// Build the eBPF object with the `dev` profile instead of `release` (user space stays
    /// release).
    #[arg(long)]
    debug: bool,
}

/// Paths every task needs.
pub struct Ctx {
    workspace_root: PathBuf,
    /// Cargo's target directory (honours CARGO_TARGET_DIR / build.target-dir).
    target_dir: PathBuf,
    ebpf_dir: PathBuf,
    /// `$CARGO_HOME/bin`, where `cargo install` puts bpf-linker.
    cargo_bin: PathBuf,
}

impl Ctx {
    fn new(ebpf_dir: Option<PathBuf>) -> Result<Self> {
        let cargo_home = match env::var_os("CARGO_HOME") {
            Some(home) => PathBuf::from(home),
            None => PathBuf::from(env::var_os("HOME").context("neither CARGO_HOME nor HOME set")?)
                .join(".cargo"),
        };
        let cargo_bin = cargo_home.join("bin");
        // rustup installs put ~/.cargo/bin (its proxies, which understand `+nightly`) on PATH
        // via a profile script; CI shells may lack it.
        let path = env::var_os("PATH").unwrap_or_default();
        if !env::split_paths(&path).any(|p| p == cargo_bin) {
            let dirs = std::iter::once(cargo_bin.clone()).chain(env::split_paths(&path));
            env::set_var("PATH", env::join_paths(dirs)?);
        }

        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let workspace_root = manifest_dir
            .parent()
            .context("xtask has no parent directory")?
            .to_path_buf();
        let meta = cmd::output(Command::new("cargo").current_dir(&workspace_root).args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ]))
        .context("cargo is needed: install rustup (https://rustup.rs) or `source ~/.cargo/env`")?;
        let meta: serde_json::Value =
            serde_json::from_str(&meta).context("cannot parse `cargo metadata` output")?;
        let target_dir = meta["target_directory"]
            .as_str()
            .map(PathBuf::from)
            .context("`cargo metadata` has no target_directory")?;
        let ebpf_dir = match ebpf_dir {
            Some(dir) => fs::canonicalize(&dir)
                .with_context(|| format!("eBPF crate dir {} not found", dir.display()))?,
            None => workspace_root.join("memtrace-ebpf"),
        };
        Ok(Self {
            workspace_root,
            target_dir,
            ebpf_dir,
            cargo_bin,
        })
    }

    pub(crate) fn ebpf_object(&self, debug: bool) -> PathBuf {
        self.target_dir
            .join(BPF_TARGET_SUBDIR)
            .join(bpf_target())
            .join(if debug { "debug" } else { "release" })
            .join(EBPF_BIN)
    }

    fn memtrace_bin(&self) -> PathBuf {
        self.target_dir.join("release").join("memtrace")
    }

    fn cargo(&self) -> Command {
        let mut c = Command::new("cargo");
        c.current_dir(&self.workspace_root);
        c
    }
}

fn bpf_target() -> &'static str {
    if cfg!(target_endian = "big") {
        "bpfeb-unknown-none"
    } else {
        "bpfel-unknown-none"
    }
}

/// The rustflags aya-build 0.2.0 uses, plus `target-cpu=v3` and the `bpf_target_arch` check-cfg.
fn ebpf_rustflags() -> Vec<String> {
    // aya-build: the host arch, with riscv64* collapsed to riscv64.
    let arch = match env::consts::ARCH {
        a if a.starts_with("riscv64") => "riscv64",
        a => a,
    };
    vec![
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        // So `#[cfg(bpf_target_arch = …)]` in memtrace-ebpf is not an unexpected cfg.
        "--check-cfg=cfg(bpf_target_arch,values(\"aarch64\",\"arm\",\"loongarch64\",\"mips\",\
         \"mips64\",\"powerpc64\",\"riscv64\",\"s390x\",\"x86_64\"))"
            .to_owned(),
        "-Cdebuginfo=2".to_owned(),
        "-Clink-arg=--btf".to_owned(),
        // Fetching atomics (`r = atomic_fetch_add(..)`) need BPF ISA v3; rustc passes
        // `--cpu v3` on to bpf-linker. LLVM 22 still lowers a *Relaxed* RMW whose result is
        // used to the non-fetching form (llvm/llvm-project#210280): use AcqRel/SeqCst there.
        "-Ctarget-cpu=v3".to_owned(),
    ]
}

/// A `cargo +nightly <subcommand>` for the eBPF crate, with aya-build's environment.
fn ebpf_cargo(ctx: &Ctx, subcommand: &str, debug: bool) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(&ctx.ebpf_dir)
        .arg(format!("+{NIGHTLY}"))
        .arg(subcommand)
        .args(["--bins", "--target", bpf_target(), "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(ctx.target_dir.join(BPF_TARGET_SUBDIR));
    if !debug {
        c.arg("--release");
    }
    c.env("CARGO_ENCODED_RUSTFLAGS", ebpf_rustflags().join("\x1f"));
    // As aya-build does: make sure the nightly toolchain's own rustc is used.
    for key in [
        "RUSTC",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
    ] {
        c.env_remove(key);
    }
    c
}

fn build_ebpf(ctx: &Ctx, debug: bool) -> Result<PathBuf> {
    bootstrap::bootstrap(ctx)?;
    cmd::run(
        &mut ebpf_cargo(ctx, "build", debug),
        &format!(
            "fix the eBPF build errors above ({})",
            ctx.ebpf_dir.display()
        ),
    )?;
    let object = ctx.ebpf_object(debug);
    if !object.is_file() {
        bail!(
            "the eBPF build produced no {}; is the [[bin]] in {}/Cargo.toml still named {EBPF_BIN:?}?",
            object.display(),
            ctx.ebpf_dir.display()
        );
    }
    Ok(object)
}

fn build(ctx: &Ctx, debug: bool) -> Result<PathBuf> {
    let object = build_ebpf(ctx, debug)?;
    cmd::run(
        ctx.cargo()
            .args(["build", "--release", "-p", "memtrace"])
            .env(OBJECT_ENV, &object),
        "fix the memtrace build errors above",
    )?;
    Ok(object)
}

fn is_root() -> bool {
    // Effective uid is the second field of `Uid:` in /proc/self/status.
    fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// memtrace mounts tracefs itself too; doing it here keeps test failures about something else.
fn mount_tracefs() {
    let dir = Path::new("/sys/kernel/tracing");
    let empty = fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none());
    if empty && is_root() {
        let mut mount = Command::new("mount");
        mount.args(["-t", "tracefs", "nodev"]).arg(dir);
        if let Err(e) = cmd::run(&mut mount, "tracefs stays unmounted") {
            eprintln!("[xtask] warning: {e:#}");
        }
    }
}

fn test(ctx: &Ctx, opts: &TestOpts) -> Result<()> {
    let matrix = &opts.matrix;
    let object = build(ctx, false)?;
    let bin = ctx.memtrace_bin();

    cmd::run(
        ctx.cargo().args(["fmt", "--all", "--", "--check"]),
        "run `cargo fmt --all`",
    )?;
    let mut fmt_ebpf = Command::new("cargo");
    fmt_ebpf
        .current_dir(&ctx.ebpf_dir)
        .args(["fmt", "--", "--check"]);
    cmd::run(
        &mut fmt_ebpf,
        &format!("run `cargo fmt` in {}", ctx.ebpf_dir.display()),
    )?;

    cmd::run(
        ctx.cargo()
            .args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
            .env(OBJECT_ENV, &object),
        "fix the clippy findings above",
    )?;
    bootstrap::ensure_component("clippy")?;
    let mut clippy_ebpf = ebpf_cargo(ctx, "clippy", false);
    clippy_ebpf.args(["--", "-D", "warnings"]);
    cmd::run(
        &mut clippy_ebpf,
        &format!(
            "fix the clippy findings above in {}",
            ctx.ebpf_dir.display()
        ),
    )?;

    mount_tracefs();
    // The pprof output is checked by an independent decoder (Python protobuf with the
    // published profile.proto): the tests that need it fail, not skip, under xtask.
    let python = python::ensure_env(&ctx.target_dir)?;
    // A real Prometheus scrapes `memtrace serve` and promtool lints /metrics: installed through
    // apt when missing; the tests that need them fail, not skip, under xtask.
    let prom = prometheus::ensure(&mut kernels::Apt::default())?;
    let host = cmd::run(
        ctx.cargo()
            .args([
                "test",
                "--release",
                "--no-fail-fast",
                "--workspace",
                "--exclude",
                "memtrace-tests",
            ])
            .env(OBJECT_ENV, &object)
            .env(BIN_ENV, &bin)
            .env(PYTHON_ENV, &python)
            .env(prometheus::PROMETHEUS_ENV, &prom.prometheus)
            .env(prometheus::PROMTOOL_ENV, &prom.promtool),
        "fix the failing tests above",
    )
    .and_then(|()| {
        // The scenario tests load eBPF programs and share tracefs state: one at a time.
        cmd::run(
            ctx.cargo()
                .args([
                    "test",
                    "--release",
                    "--no-fail-fast",
                    "-p",
                    "memtrace-tests",
                    "--",
                    "--test-threads=1",
                ])
                .env(OBJECT_ENV, &object)
                .env(BIN_ENV, &bin)
                .env(PYTHON_ENV, &python)
                .env(prometheus::PROMETHEUS_ENV, &prom.prometheus)
                .env(prometheus::PROMTOOL_ENV, &prom.promtool),
            "fix the failing scenario tests above (tests/)",
        )
    })
    // memtrace serve for a few minutes under load: its memory, fds, threads and series must
    // not grow (the built binary; the guest matrix runs after it).
    .and_then(|()| soak::ci(ctx, opts.soak_minutes));
    if let Err(e) = &host {
        eprintln!("[xtask] host tests failed: {e:#}; the guest matrix runs all the same");
    }
    // The same environment as the host scenario run, so `cargo test --no-run` rebuilds nothing.
    let build_env = [
        (OBJECT_ENV, object.into_os_string()),
        (BIN_ENV, bin.clone().into_os_string()),
        (PYTHON_ENV, python.into_os_string()),
    ];
    let guests = kernels::matrix(ctx, matrix, &build_env, &bin);
    match (host, guests) {
        (Ok(()), Ok(())) => {
            eprintln!("[xtask] all checks passed");
            Ok(())
        }
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Err(host), Err(guests)) => Err(anyhow::anyhow!("{host:#}; and {guests:#}")),
    }
}

/// `cargo xtask matrix`: build, then only the guest scenario tests.
fn matrix(ctx: &Ctx, opts: &kernels::MatrixOpts) -> Result<()> {
    let object = build(ctx, false)?;
    let bin = ctx.memtrace_bin();
    let build_env = [
        (OBJECT_ENV, object.into_os_string()),
        (BIN_ENV, bin.clone().into_os_string()),
    ];
    kernels::matrix(ctx, opts, &build_env, &bin)
}

/// `cargo xtask man`: runs the (hidden) `memtrace generate` of a debug build.
fn man(ctx: &Ctx, out_dir: Option<PathBuf>) -> Result<()> {
    let out_dir = out_dir.unwrap_or_else(|| ctx.target_dir.join("generated"));
    cmd::run(
        ctx.cargo()
            .args([
                "run",
                "--quiet",
                "-p",
                "memtrace",
                "--",
                "generate",
                "--out-dir",
            ])
            .arg(&out_dir),
        "fix the memtrace build errors above",
    )?;
    eprintln!(
        "[xtask] man pages in {0}/man (try `man -l {0}/man/memtrace-trace.1`), completions in {0}/completions",
        out_dir.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // In the guest: no cargo there to ask for the workspace's paths, and none needed.
    if let Task::GuestRun { plan } = &cli.task {
        return match kernels::runner::guest_run(plan) {
            Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
            Err(e) => {
                eprintln!("xtask guest-run: error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // Run by the bench as a tracer: no cargo, no build.
    if let Task::BenchHooks { object } = &cli.task {
        return match bench::hooks::run(object) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask bench-hooks: error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let mut code = ExitCode::SUCCESS;
    let result = Ctx::new(cli.ebpf_dir).and_then(|ctx| match cli.task {
        Task::Bootstrap => bootstrap::bootstrap(&ctx).map(drop),
        Task::BuildEbpf(opts) => build_ebpf(&ctx, opts.debug).map(|object| {
            println!("{}", object.display());
        }),
        Task::Build(opts) => build(&ctx, opts.debug).map(|object| {
            eprintln!("[xtask] eBPF object: {}", object.display());
            println!("{}", ctx.memtrace_bin().display());
        }),
        Task::Run { opts, args } => build(&ctx, opts.debug).and_then(|_| {
            // Run even when not root: memtrace reports missing privileges itself.
            let mut run = Command::new(ctx.memtrace_bin());
            run.args(args);
            cmd::echo(&run);
            let err = run.exec();
            Err(err).with_context(|| format!("cannot execute {}", ctx.memtrace_bin().display()))
        }),
        Task::Test(opts) => test(&ctx, &opts),
        Task::Matrix(opts) => matrix(&ctx, &opts),
        Task::Guest(opts) => kernels::guest(&ctx, opts).map(|status| code = ExitCode::from(status)),
        Task::GuestRun { .. } | Task::BenchHooks { .. } => Ok(()),
        Task::Bench(opts) => bench::bench(&ctx, opts),
        Task::Soak(opts) => soak::soak(&ctx, &opts),
        Task::Man { out_dir } => man(&ctx, out_dir),
    });
    match result {
        Ok(()) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
