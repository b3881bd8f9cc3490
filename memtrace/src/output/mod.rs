//! Writing reports: every file atomically (temp file in the same directory, fsync, rename),
//! so a reader never sees a half-written report, even if memtrace is killed while writing;
//! the outputs asked for on the command line; and `--output-dir`, the unattended layout.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;

use crate::{
    fsutil::{check_parent_dir, replace_symlink, write_atomic, TEMP_MARK},
    model::Report,
    render::{self, FlameBy, RenderOptions, SvgOptions},
    units::compact_utc,
};

/// The text report's size and the files asked for (shared by `trace` and `report`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputOptions {
    /// Stacks and calling functions shown in the text report (0: all).
    pub top: u64,
    pub json: Option<PathBuf>,
    pub folded: Option<PathBuf>,
    pub svg: Option<PathBuf>,
    /// What the flame graph's widths measure.
    pub flame_by: FlameBy,
    pub pprof: Option<PathBuf>,
}

impl OutputOptions {
    /// Fails with the path when the directory a file goes into does not exist (checked before
    /// a session, not after it).
    pub fn check_dirs(&self) -> anyhow::Result<()> {
        for path in [&self.json, &self.folded, &self.svg, &self.pprof]
            .into_iter()
            .flatten()
        {
            check_parent_dir(path)?;
        }
        Ok(())
    }
}

/// The outputs of one report in memory, rendered once and written wherever asked.
pub struct Rendered {
    pub text: String,
    pub json: Option<String>,
    pub folded: Option<String>,
    pub svg: Option<Vec<u8>>,
    pub pprof: Option<Vec<u8>>,
}

impl Rendered {
    /// Renders the text report and every format in `want`.
    pub fn new(report: &Report, opts: &OutputOptions, want: Formats) -> anyhow::Result<Self> {
        let top = usize::try_from(opts.top).unwrap_or(usize::MAX);
        Ok(Rendered {
            text: render::text::render_text(report, &RenderOptions { top }),
            json: want
                .json
                .then(|| crate::schema::to_string_pretty(report))
                .transpose()?,
            folded: want.folded.then(|| render::folded::render_folded(report)),
            svg: want
                .svg
                .then(|| {
                    render::svg::render_svg(
                        report,
                        &SvgOptions {
                            flame_by: opts.flame_by,
                        },
                    )
                })
                .transpose()
                .context("rendering the flame graph")?,
            pprof: want
                .pprof
                .then(|| render::pprof::render_pprof(report))
                .transpose()
                .context("rendering the pprof profile")?,
        })
    }
}

/// Which formats to render.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Formats {
    pub json: bool,
    pub folded: bool,
    pub svg: bool,
    pub pprof: bool,
}

impl Formats {
    /// The files named on the command line, plus `extra`.
    pub fn of(opts: &OutputOptions, extra: Formats) -> Formats {
        Formats {
            json: extra.json || opts.json.is_some(),
            folded: extra.folded || opts.folded.is_some(),
            svg: extra.svg || opts.svg.is_some(),
            pprof: extra.pprof || opts.pprof.is_some(),
        }
    }

    /// What `--output-dir` writes besides the text.
    pub const OUTPUT_DIR: Formats = Formats {
        json: true,
        folded: true,
        svg: true,
        pprof: false,
    };
}

/// Writes the files named on the command line (`--json`, `--folded`, `--svg`, `--pprof`).
pub fn write_named(opts: &OutputOptions, r: &Rendered) -> anyhow::Result<()> {
    let files: [(&Option<PathBuf>, Option<&[u8]>); 4] = [
        (&opts.json, r.json.as_deref().map(str::as_bytes)),
        (&opts.folded, r.folded.as_deref().map(str::as_bytes)),
        (&opts.svg, r.svg.as_deref()),
        (&opts.pprof, r.pprof.as_deref()),
    ];
    for (path, bytes) in files {
        if let (Some(path), Some(bytes)) = (path, bytes) {
            write_atomic(path, bytes)?;
        }
    }
    Ok(())
}

/// `--output-dir`: every report of a session under one prefix,
/// `memtrace-<host>-<YYYYMMDDTHHMMSSZ>`, the final one as `<prefix>.{txt,json,svg,folded}`,
/// snapshots as `<prefix>.snap-<NNNN>-at-<seconds>s.{...}` (numbered, so two never share a
/// name), and `latest.{...}` symlinks to the newest whole set.
#[derive(Debug)]
pub struct OutputDir {
    dir: PathBuf,
    prefix: String,
}

impl OutputDir {
    /// Creates `dir` if needed, checks it is writable, and removes temp files that writers
    /// killed before they could rename them left behind (their pid is gone and they are older
    /// than [`STALE_AFTER`]: a live writer in another pid namespace sharing the directory is
    /// left alone).
    pub fn create(dir: &Path, hostname: &str, started_unix: f64) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)
            .with_context(|| format!("creating the output directory {}", dir.display()))?;
        let out = OutputDir {
            dir: dir.to_path_buf(),
            prefix: format!(
                "memtrace-{}-{}",
                sanitize_host(hostname),
                compact_utc(started_unix)
            ),
        };
        // Named like our temp files, so a probe left by a killed memtrace is cleaned up too.
        let probe = dir.join(format!(
            ".{}.probe{TEMP_MARK}{}",
            out.prefix,
            std::process::id()
        ));
        let _ = fs::remove_file(&probe);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .with_context(|| format!("the output directory {} is not writable", dir.display()))?;
        let _ = fs::remove_file(&probe);
        out.remove_stale_temp_files();
        Ok(out)
    }

    /// `memtrace-<host>-<start>`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Writes snapshot number `n` (from 1), taken `at_secs` into the session.
    pub fn write_snapshot(
        &self,
        n: usize,
        at_secs: f64,
        r: &Rendered,
    ) -> anyhow::Result<Vec<PathBuf>> {
        let stem = format!("{}.snap-{n:04}-at-{}s", self.prefix, at_secs.round() as u64);
        self.write_set(&stem, r)
    }

    /// Writes the final report.
    pub fn write_final(&self, r: &Rendered) -> anyhow::Result<Vec<PathBuf>> {
        self.write_set(&self.prefix, r)
    }

    /// Writes the set, the text last, then points the `latest.*` links at it (so they never
    /// mix two sets).
    fn write_set(&self, stem: &str, r: &Rendered) -> anyhow::Result<Vec<PathBuf>> {
        let files: [(&str, Option<&[u8]>); 4] = [
            ("json", r.json.as_deref().map(str::as_bytes)),
            ("folded", r.folded.as_deref().map(str::as_bytes)),
            ("svg", r.svg.as_deref()),
            ("txt", Some(r.text.as_bytes())),
        ];
        let mut written = Vec::new();
        for (ext, bytes) in files {
            let Some(bytes) = bytes else { continue };
            let path = self.dir.join(format!("{stem}.{ext}"));
            write_atomic(&path, bytes)?;
            written.push((ext, path));
        }
        for (ext, _) in &written {
            let link = self.dir.join(format!("latest.{ext}"));
            replace_symlink(&link, &format!("{stem}.{ext}"))?;
        }
        Ok(written.into_iter().map(|(_, p)| p).collect())
    }

    fn remove_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = stale_temp_pid(&name) else {
                continue;
            };
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= STALE_AFTER);
            if old && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Age after which a temp file of a writer that is gone is removed.
pub const STALE_AFTER: Duration = Duration::from_secs(600);

/// The writer's pid of a temp file name of ours (`.memtrace-....tmp.PID`, `.latest.txt.tmp.PID`).
fn stale_temp_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    if !(rest.starts_with("memtrace-") || rest.starts_with("latest.")) {
        return None;
    }
    let (_, pid) = rest.rsplit_once(TEMP_MARK)?;
    pid.parse().ok()
}

/// A host name usable in a file name.
fn sanitize_host(host: &str) -> String {
    let s: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "unknown".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn rendered(text: &str) -> Rendered {
        Rendered {
            text: text.into(),
            json: Some(format!("{{\"t\": \"{text}\"}}")),
            folded: Some("a;b 1\n".into()),
            svg: Some(b"<svg/>".to_vec()),
            pprof: Some(vec![1, 2]),
        }
    }

    #[test]
    fn output_dir_layout_snapshots_and_latest_links() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out/nested");
        // Temp files: one a killed writer left long ago (a pid that cannot exist: above
        // pid_max), one of a live process (ours), and a young one of a pid we can't see (a
        // writer in another pid namespace sharing the directory): only the first goes.
        fs::create_dir_all(&dir).unwrap();
        let stale = dir.join(".memtrace-h-x.json.tmp.4194999");
        let live = dir.join(format!(".memtrace-h-x.txt.tmp.{}", std::process::id()));
        let young = dir.join(".memtrace-h-x.svg.tmp.4194998");
        for p in [&stale, &live, &young] {
            fs::write(p, b"half").unwrap();
        }
        let long_ago = std::time::SystemTime::now() - STALE_AFTER - Duration::from_secs(1);
        for p in [&stale, &live] {
            fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        let out = OutputDir::create(&dir, "web/1 a", 1_700_000_000.0).unwrap();
        assert_eq!(out.prefix(), "memtrace-web_1_a-20231114T221320Z");
        assert!(!stale.exists() && live.exists() && young.exists());
        fs::remove_file(&live).unwrap();
        fs::remove_file(&young).unwrap();

        out.write_snapshot(1, 60.4, &rendered("snap")).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("latest.txt")).unwrap(),
            "snap",
            "latest follows the snapshot"
        );
        let written = out.write_final(&rendered("final")).unwrap();
        assert_eq!(written.len(), 4);
        let p = "memtrace-web_1_a-20231114T221320Z";
        let mut want = vec![
            "latest.folded".to_string(),
            "latest.json".to_string(),
            "latest.svg".to_string(),
            "latest.txt".to_string(),
            format!("{p}.snap-0001-at-60s.folded"),
            format!("{p}.snap-0001-at-60s.json"),
            format!("{p}.snap-0001-at-60s.svg"),
            format!("{p}.snap-0001-at-60s.txt"),
            format!("{p}.folded"),
            format!("{p}.json"),
            format!("{p}.svg"),
            format!("{p}.txt"),
        ];
        want.sort();
        assert_eq!(names(&dir), want);
        assert_eq!(fs::read_to_string(dir.join("latest.txt")).unwrap(), "final");
        assert_eq!(
            fs::read_link(dir.join("latest.json")).unwrap(),
            PathBuf::from(format!("{p}.json"))
        );
    }

    #[test]
    fn output_dir_that_cannot_be_created_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"").unwrap();
        let err = OutputDir::create(&file.join("sub"), "h", 0.0).unwrap_err();
        assert!(
            format!("{err:#}").contains("creating the output directory"),
            "{err:#}"
        );
    }

    #[test]
    fn temp_names() {
        assert_eq!(stale_temp_pid(".memtrace-h-1.json.tmp.123"), Some(123));
        assert_eq!(stale_temp_pid(".latest.txt.tmp.9"), Some(9));
        assert_eq!(stale_temp_pid("memtrace-h-1.json"), None);
        assert_eq!(stale_temp_pid(".other.tmp.5"), None);
        assert_eq!(compact_utc(0.0), "19700101T000000Z");
        assert_eq!(sanitize_host(""), "unknown");
    }
}
