//! The Python environment of the pprof check (`tests/scripts/check_pprof.py`): a venv with
//! pinned `protobuf` and `grpcio-tools` (whose protoc compiles the vendored
//! `memtrace/proto/profile.proto`). Made once under the target directory; fast afterwards.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use crate::cmd;

/// Pinned packages. grpcio-tools 1.71 bundles protoc 29 (Python gencode 5.29) and requires
/// protobuf >=5.26.1,<6; grpcio-tools pulls grpcio, pinned to the same release. All have
/// wheels for CPython 3.9–3.13.
const PACKAGES: [&str; 3] = ["protobuf==5.29.5", "grpcio-tools==1.71.2", "grpcio==1.71.2"];

/// Written in the venv once the packages are installed; holds `PACKAGES`, one a line.
const MARKER: &str = ".memtrace-pyenv";

/// Imported to prove the venv works.
const PROBE: &str = "import google.protobuf, grpc_tools.protoc";

/// The venv's directory under `target_dir`.
fn venv_dir(target_dir: &Path) -> PathBuf {
    target_dir.join("pyenv")
}

/// Makes (if missing or broken) the venv `<target_dir>/pyenv` with the pinned packages and
/// returns the path of its `python`. Fast when the venv is there with the same pins.
pub fn ensure_env(target_dir: &Path) -> Result<PathBuf> {
    // A Python the user provides (e.g. an offline machine with the packages installed).
    if let Some(python) = std::env::var_os("MEMTRACE_PYTHON") {
        let python = PathBuf::from(python);
        cmd::run(
            Command::new(&python).args(["-c", PROBE]),
            "MEMTRACE_PYTHON must name a Python with protobuf and grpcio-tools installed \
             (or unset it and xtask makes its own venv)",
        )?;
        return Ok(python);
    }
    let target_dir = std::path::absolute(target_dir)
        .with_context(|| format!("cannot make {} absolute", target_dir.display()))?;
    let venv = venv_dir(&target_dir);
    // Not canonicalized: bin/python is a symlink to the system interpreter, and only when
    // started through the venv's path does it use the venv's packages.
    let python = venv.join("bin").join("python");
    let marker = venv.join(MARKER);
    if is_ready(&python, &marker) {
        return Ok(python);
    }
    if venv.exists() {
        eprintln!(
            "[xtask] the Python venv {} is missing packages or broken: making it again",
            venv.display()
        );
        fs::remove_dir_all(&venv)
            .with_context(|| format!("cannot remove the broken venv {}", venv.display()))?;
    }
    fs::create_dir_all(&target_dir)
        .with_context(|| format!("cannot create {}", target_dir.display()))?;
    cmd::run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "the pprof check needs Python 3.9 or newer with the venv module: on Debian/Ubuntu \
         `apt-get install python3 python3-venv`",
    )?;
    cmd::run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--quiet",
                // Wheels only: never minutes of compiling grpcio on a Python without wheels.
                "--only-binary=:all:",
                "--retries",
                "3",
                "--timeout",
                "30",
            ])
            .args(PACKAGES),
        "cannot install the Python packages of the pprof check from PyPI; check the network \
         access to PyPI, or that this Python version has wheels for them (3.9 to 3.13)",
    )?;
    cmd::run(
        Command::new(&python).args(["-c", PROBE]),
        "the freshly installed protobuf/grpcio-tools do not import",
    )?;
    fs::write(&marker, marker_text())
        .with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(python)
}

fn marker_text() -> String {
    PACKAGES.iter().map(|p| format!("{p}\n")).collect()
}

/// The venv has the pinned packages (marker) and its python still starts and imports them
/// (a system Python upgrade breaks a venv's interpreter link).
fn is_ready(python: &Path, marker: &Path) -> bool {
    if fs::read_to_string(marker).ok().as_deref() != Some(marker_text().as_str()) {
        return false;
    }
    Command::new(python)
        .args(["-c", PROBE])
        .output()
        .is_ok_and(|out| out.status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_decides_readiness() {
        let dir = std::env::temp_dir().join(format!("xtask-pyenv-test-{}", std::process::id()));
        let venv = venv_dir(&dir);
        fs::create_dir_all(venv.join("bin")).expect("mkdir");
        let marker = venv.join(MARKER);
        let python = venv.join("bin").join("python");
        // No marker, no python.
        assert!(!is_ready(&python, &marker));
        // Marker of other pins.
        fs::write(&marker, "protobuf==1.0\n").expect("write");
        assert!(!is_ready(&python, &marker));
        // Right pins but no interpreter: broken.
        fs::write(&marker, marker_text()).expect("write");
        assert!(!is_ready(&python, &marker));
        assert_eq!(marker_text().lines().count(), PACKAGES.len());
        assert!(PACKAGES.iter().all(|p| p.contains("==")));
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
