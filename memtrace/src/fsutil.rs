//! Files written atomically: a temp file in the same directory, fsync, rename — a reader never
//! sees a half-written file, even if memtrace is killed while writing. A leaf module.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

/// Writes `bytes` to `path` through a temporary file and a rename. The temp file is created
/// exclusively (`O_EXCL`, so never through a symlink someone planted in a shared directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        // A leftover of an earlier process that had our pid.
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Temporary files are hidden (`.NAME.tmp.PID`) and carry the writer's pid, so a stale one
/// (the writer was SIGKILLed) can be recognised and removed.
pub(crate) const TEMP_MARK: &str = ".tmp.";

pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    path.with_file_name(format!(".{name}{TEMP_MARK}{}", std::process::id()))
}

/// Points the symlink `link` at `target` (a name in the same directory) atomically.
pub(crate) fn replace_symlink(link: &Path, target: &str) -> anyhow::Result<()> {
    let tmp = temp_path(link);
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("creating the symlink {}", tmp.display()))?;
    let renamed = fs::rename(&tmp, link);
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    renamed.with_context(|| format!("renaming {} to {}", tmp.display(), link.display()))
}

/// Fails with the path when the directory a `--json`/`--svg`/... file goes into does not exist
/// (checked before a session, not after it).
pub fn check_parent_dir(path: &Path) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if parent.is_dir() {
        Ok(())
    } else {
        anyhow::bail!(
            "cannot write {}: the directory {} does not exist",
            path.display(),
            parent.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_replaces_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn missing_directory_is_an_error_with_the_path() {
        let err = write_atomic(Path::new("/nonexistent-dir/r.json"), b"x").unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent-dir"));
    }
}
