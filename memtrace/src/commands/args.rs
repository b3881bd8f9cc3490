//! Value parsers and options shared by several subcommands.

use std::{path::PathBuf, time::Duration};

use clap::Args;
use memtrace_common::Kind;

use crate::model::classify::{parse_class_list, Class};
use crate::output::OutputOptions;
use crate::render::FlameBy;

/// Output files and the text report, shared by `trace` and `report`.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Stacks and calling functions shown in the text report (0: all).
    #[arg(long, default_value_t = 10)]
    pub top: u64,

    /// Write the report as JSON to this file: the saved session that `memtrace report`
    /// re-renders (schema: docs/json-schema.md).
    #[arg(long, visible_alias = "save", value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write folded stacks (`outer;...;inner bytes`) for flamegraph.pl / inferno.
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,

    /// Write a flame graph (SVG) of the outstanding bytes, coloured by class.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// What the flame graph's widths measure: `outstanding` bytes (still held) or all
    /// `allocated` bytes (freed or not).
    #[arg(long, value_enum, default_value_t = FlameByArg::Outstanding)]
    pub flame_by: FlameByArg,

    /// Write a gzipped pprof profile (inuse_space/inuse_objects, alloc_space/alloc_objects)
    /// for go tool pprof, Pyroscope, Parca.
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,
}

impl OutputArgs {
    /// The options of the output layer.
    pub fn options(&self) -> OutputOptions {
        OutputOptions {
            top: self.top,
            json: self.json.clone(),
            folded: self.folded.clone(),
            svg: self.svg.clone(),
            flame_by: self.flame_by.into(),
            pprof: self.pprof.clone(),
        }
    }
}

/// `--flame-by`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum FlameByArg {
    /// Bytes still held at the end of the session.
    #[default]
    Outstanding,
    /// Bytes allocated during the session, freed or not.
    Allocated,
}

impl From<FlameByArg> for FlameBy {
    fn from(f: FlameByArg) -> Self {
        match f {
            FlameByArg::Outstanding => FlameBy::Outstanding,
            FlameByArg::Allocated => FlameBy::Allocated,
        }
    }
}

/// Parses `page,slab`, `all`, ... into a de-duplicated list in canonical order.
pub fn parse_kinds(s: &str) -> Result<Vec<Kind>, String> {
    let mut kinds = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "all" {
            kinds.extend(Kind::ALL);
            continue;
        }
        match Kind::ALL.iter().find(|k| k.name() == part) {
            Some(k) => kinds.push(*k),
            None => {
                return Err(format!(
                    "unknown kind `{part}` (valid: page, slab, percpu, vmalloc, all)"
                ))
            }
        }
    }
    if kinds.is_empty() {
        return Err("no kind given (valid: page, slab, percpu, vmalloc, all)".into());
    }
    kinds.sort();
    kinds.dedup();
    Ok(kinds)
}

pub fn parse_classes(s: &str) -> Result<Vec<Class>, String> {
    parse_class_list(s)
}

/// Parses a size: bytes (`4096`), or with a binary unit (`64K`, `64KiB`, `512M`, `1GiB`, `2T`;
/// `K`/`KB`/`KiB` all mean 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (examples: 4096, 64K, 512MiB, 1GiB)"
            ))
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 4096, 64K, 512MiB, 1GiB)"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(bytes.round() as u64)
}

/// Parses `30s`, `10m`, `1h30m`, `500ms`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 10m, 1h30m, 500ms)"))
}
