//! The Prometheus server and `promtool` for the metrics tests: the test harness
//! (`tests/src/prometheus.rs`) starts a real Prometheus on a free loopback port that scrapes
//! `memtrace serve`, and `promtool check metrics` lints the exposition. Both come from Debian's
//! `prometheus` package, installed through apt (as root) when missing, like the kernel
//! matrix's host tools. The tests find them through `MEMTRACE_PROMETHEUS` and
//! `MEMTRACE_PROMTOOL`.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{
    cmd,
    kernels::{which, Apt},
};

/// Tells the tests which Prometheus server binary to start.
pub const PROMETHEUS_ENV: &str = "MEMTRACE_PROMETHEUS";
/// Tells the tests which `promtool` checks the exposition.
pub const PROMTOOL_ENV: &str = "MEMTRACE_PROMTOOL";
/// The Debian package that ships both.
const PACKAGE: &str = "prometheus";

/// Absolute paths of the two programs.
pub struct Tools {
    pub prometheus: PathBuf,
    pub promtool: PathBuf,
}

/// `program --version` runs: the binary is usable.
fn check_runs(program: &Path, fix: &str) -> Result<()> {
    cmd::output_quiet(Command::new(program).arg("--version"))
        .map(drop)
        .with_context(|| format!("{} does not run; {fix}", program.display()))
}

/// Finds `prometheus` and `promtool`: the paths in `MEMTRACE_PROMETHEUS`/`MEMTRACE_PROMTOOL`
/// when both are set, else on the PATH, else installs Debian's `prometheus` package.
pub fn ensure(apt: &mut Apt) -> Result<Tools> {
    let from_env = |name: &str| {
        env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let (Some(prometheus), Some(promtool)) = (from_env(PROMETHEUS_ENV), from_env(PROMTOOL_ENV)) {
        let fix = format!(
            "{PROMETHEUS_ENV} and {PROMTOOL_ENV} must name a Prometheus server and its promtool \
             (or unset both and xtask installs Debian's {PACKAGE} package)"
        );
        check_runs(&prometheus, &fix)?;
        check_runs(&promtool, &fix)?;
        return Ok(Tools {
            prometheus,
            promtool,
        });
    }
    if let (Some(prometheus), Some(promtool)) = (which("prometheus"), which("promtool")) {
        return Ok(Tools {
            prometheus,
            promtool,
        });
    }
    if which("apt-get").is_none() {
        bail!(
            "the metrics tests need a Prometheus server and promtool: install your \
             distribution's {PACKAGE} package, or set {PROMETHEUS_ENV} and {PROMTOOL_ENV} to \
             the two binaries"
        );
    }
    eprintln!(
        "[xtask] the metrics tests need prometheus and promtool: installing Debian's {PACKAGE} \
         package"
    );
    apt.install(&[PACKAGE])?;
    stop_packaged_service();
    let find = |name: &str| {
        which(name).with_context(|| {
            format!("{name} is still missing after installing {PACKAGE}: install it yourself")
        })
    };
    Ok(Tools {
        prometheus: find("prometheus")?,
        promtool: find("promtool")?,
    })
}

/// Debian's package enables and starts `prometheus.service` (port 9090) on systemd hosts. The
/// tests start their own servers on free loopback ports and stop them; the one the package
/// started is stopped and disabled right away, so that installing the test dependency leaves
/// no Prometheus running. (Without systemd, or with a policy-rc.d that forbids starting
/// services, as in containers, nothing was started.)
fn stop_packaged_service() {
    if !Path::new("/run/systemd/system").is_dir() || which("systemctl").is_none() {
        return;
    }
    if let Err(e) = cmd::run(
        Command::new("systemctl").args(["disable", "--now", "prometheus.service"]),
        "stop it yourself: `systemctl disable --now prometheus.service`",
    ) {
        eprintln!("[xtask] warning: {e:#}");
    }
}
