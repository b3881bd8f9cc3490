//! pprof output: the report as a gzipped `perftools.profiles.Profile` (google/pprof's
//! `proto/profile.proto`), for `go tool pprof`, Pyroscope, Parca and the like.
//!
//! It is laid out as Go's heap profile, which these tools know how to show:
//!
//! - sample types, in Go's order: `alloc_objects/count`, `alloc_space/bytes`,
//!   `inuse_objects/count`, `inuse_space/bytes`; the default is `inuse_space`. `inuse_*` is
//!   what was still outstanding at the end of the session (respecting `--min-age`), `alloc_*`
//!   everything allocated during it, freed or not;
//! - period type `space/bytes`, period 1: the values are final. With `--sample N` the report's
//!   figures are already multiplied by N, and pprof-format consumers never rescale stored
//!   values by the period (Go's own heap profiles are stored scaled with period = the sampling
//!   rate); a period of N would also claim "one sample every N bytes", which is not what
//!   memtrace's one-allocation-in-N sampling is. The sampling is stated in a comment instead;
//! - one sample per stack of the report, in the report's order (stacks that only churned have
//!   zero `inuse_*` but count for `alloc_*`), leaving out the classes that are not in the
//!   totals (backing pages of traced kinds), as the folded output does, so that nothing is
//!   drawn twice;
//! - `location_id[0]` is the leaf (innermost frame), as `StackReport::frames` is;
//! - one `Location` per distinct kernel address, with `address` set and a `Mapping` for the
//!   kernel image (`[kernel.kallsyms]`, always `mapping[0]` when used) or per module
//!   (`[<module>]`); names in brackets tell pprof not to look for the file on disk;
//! - a location's `line`s are its functions: the functions inlined at that address first,
//!   innermost first, and LAST the function the address is really in, into which they were
//!   inlined (the pprof convention: "the last entry represents the caller into which the
//!   preceding entries were inlined"). `Frame::inlined` is outermost first, so it is reversed.
//!   Only the real function's line has `Frame::file`/`Frame::line` (the symbolizer knows no
//!   source location for the inlined ones: their line number is 0);
//! - unresolved addresses are named by their hex address (`0xffffffff81234567`); the
//!   "stack unavailable" bucket is one pseudo-location (no address, no mapping) whose function
//!   is `[stack unavailable]`, and a stack whose frames could not be read is `[unknown]`;
//! - string labels per sample: `kind`, `class`, `caller` and, for slab objects, `cache`.

pub mod proto;

use std::collections::HashMap;
use std::io::Write as _;

use anyhow::{Context as _, Result};
use flate2::{write::GzEncoder, Compression};
use prost::Message as _;

use crate::model::summaries::class_in_total;
use crate::model::{Frame, Report, StackReport};
use crate::render::folded::{FOLDED_STACK_UNAVAILABLE, FOLDED_UNKNOWN};

/// `(type, unit)` of each sample value, in order: Go's heap profile layout.
pub const SAMPLE_TYPES: [(&str, &str); 4] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
];

/// The sample type tools show first.
pub const DEFAULT_SAMPLE_TYPE: &str = "inuse_space";

/// `(type, unit)` of the period.
pub const PERIOD_TYPE: (&str, &str) = ("space", "bytes");

/// Mapping file name of the core kernel image (as perf names it).
pub const KERNEL_MAPPING: &str = "[kernel.kallsyms]";

/// Function name of the "stack unavailable" pseudo-location.
pub const STACK_UNAVAILABLE: &str = FOLDED_STACK_UNAVAILABLE;

/// Function name of the pseudo-location of a stack whose frames are not known.
pub const UNKNOWN_STACK: &str = FOLDED_UNKNOWN;

/// The report as a gzipped pprof profile (see the module documentation for the layout).
pub fn render_pprof(report: &Report) -> Result<Vec<u8>> {
    let encoded = build_profile(report).encode_to_vec();
    let mut gz = GzEncoder::new(
        Vec::with_capacity(encoded.len() / 4 + 64),
        Compression::default(),
    );
    gz.write_all(&encoded)
        .context("gzip-compressing the pprof profile")?;
    gz.finish().context("gzip-compressing the pprof profile")
}

/// The report as a pprof profile message, before encoding and compression.
pub fn build_profile(report: &Report) -> proto::Profile {
    let mut b = Builder::new();
    let counted: Vec<&StackReport> = report
        .stacks
        .iter()
        .filter(|s| class_in_total(&report.classes, s.class))
        .collect();

    // The kernel image is `mapping[0]` ("the main binary") whenever it is used at all.
    if counted
        .iter()
        .any(|s| s.stack_id.is_some() && s.frames.iter().any(|f| f.module.is_none()))
    {
        b.mapping(None);
    }

    let keys = [b.intern("kind"), b.intern("class"), b.intern("caller")];
    let mut samples = Vec::with_capacity(counted.len());
    for s in counted {
        let location_id = if s.stack_id.is_none() {
            vec![b.pseudo_location(STACK_UNAVAILABLE)]
        } else if s.frames.is_empty() {
            vec![b.pseudo_location(UNKNOWN_STACK)]
        } else {
            s.frames.iter().map(|f| b.frame_location(f)).collect()
        };
        let mut label = vec![
            b.label(keys[0], s.kind.name()),
            b.label(keys[1], s.class.name()),
            b.label(keys[2], &s.caller),
        ];
        if let Some(cache) = &s.cache {
            let key = b.intern("cache");
            label.push(b.label(key, cache));
        }
        samples.push(proto::Sample {
            location_id,
            value: [s.allocated_count, s.allocated_bytes, s.allocations, s.bytes]
                .into_iter()
                .map(to_i64)
                .collect(),
            label,
        });
    }

    let sample_type = SAMPLE_TYPES
        .iter()
        .map(|(t, u)| b.value_type(t, u))
        .collect();
    let period_type = Some(b.value_type(PERIOD_TYPE.0, PERIOD_TYPE.1));
    let default_sample_type = b.intern(DEFAULT_SAMPLE_TYPE);
    let comment = comments(report)
        .iter()
        .map(|c| b.intern(c))
        .collect::<Vec<_>>();
    let session = &report.session;
    proto::Profile {
        sample_type,
        sample: samples,
        mapping: b.mappings.iter().map(MappingAcc::to_proto).collect(),
        location: b.locations,
        function: b.functions,
        string_table: b.strings,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos: secs_to_nanos(session.started_at_unix),
        duration_nanos: secs_to_nanos(session.duration_secs),
        period_type,
        period: 1,
        comment,
        default_sample_type,
        doc_url: 0,
    }
}

/// Free-form lines pprof shows with the profile.
fn comments(report: &Report) -> Vec<String> {
    let s = &report.session;
    let mut out = vec![format!(
        "memtrace {}: kernel memory by allocating stack; inuse_* = outstanding at the end of \
         the session, alloc_* = allocated during it (freed or not)",
        env!("CARGO_PKG_VERSION")
    )];
    if !s.hostname.is_empty() || !s.kernel.is_empty() {
        out.push(format!("host {}, kernel {}", s.hostname, s.kernel));
    }
    if !s.filters.is_empty() {
        out.push(format!("filters: {}", s.filters.join(", ")));
    }
    if let Some(classes) = &report.class_filter {
        let names: Vec<&str> = classes.iter().map(|c| c.name()).collect();
        out.push(format!("classes: {}", names.join(", ")));
    }
    if s.min_age_secs > 0.0 {
        out.push(format!(
            "inuse_* counts only allocations at least {} s old",
            s.min_age_secs
        ));
    }
    if s.sample_every > 1 {
        out.push(format!(
            "sampled: one allocation in {n} was recorded; every value is an estimate, already \
             multiplied by {n}",
            n = s.sample_every
        ));
    }
    if s.slab_sample_every > 1 && s.slab_sample_every != s.sample_every {
        out.push(format!(
            "slab sampled: one object in {n} was recorded; every slab value is an estimate, \
             already multiplied by {n}",
            n = s.slab_sample_every
        ));
    }
    out
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn secs_to_nanos(secs: f64) -> i64 {
    if secs.is_finite() && secs > 0.0 {
        // `as` saturates at i64::MAX.
        (secs * 1e9).round() as i64
    } else {
        0
    }
}

/// The name pprof shows for a frame: its symbol, or its hex address when unresolved.
fn frame_function_name(f: &Frame) -> String {
    match f.symbol.as_deref() {
        Some(sym) if !sym.is_empty() => sym.to_string(),
        _ => format!("{:#x}", f.address),
    }
}

/// Identity of a location: a frame's address and everything shown for it (in a consistent
/// report one address always has the same frame, so this is one location per address).
type FrameKey<'a> = (
    u64,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    Option<u32>,
    &'a [String],
);

#[derive(Hash, PartialEq, Eq)]
enum LocationKey<'a> {
    Pseudo(&'static str),
    Frame(FrameKey<'a>),
}

/// A mapping being built: its address range grows with its locations.
struct MappingAcc {
    id: u64,
    filename: i64,
    start: u64,
    limit: u64,
    has_filenames: bool,
    has_line_numbers: bool,
    has_inline_frames: bool,
}

impl MappingAcc {
    fn to_proto(&self) -> proto::Mapping {
        // A mapping is only made for a frame, so the range is never empty; be safe anyway.
        let (start, limit) = if self.start < self.limit {
            (self.start, self.limit)
        } else {
            (0, 0)
        };
        proto::Mapping {
            id: self.id,
            memory_start: start,
            memory_limit: limit,
            file_offset: 0,
            filename: self.filename,
            build_id: 0,
            // Every location has its function (unresolved ones by address): nothing for
            // pprof to symbolize.
            has_functions: true,
            has_filenames: self.has_filenames,
            has_line_numbers: self.has_line_numbers,
            has_inline_frames: self.has_inline_frames,
        }
    }
}

/// De-duplicating tables of strings, functions, locations and mappings; ids are 1-based
/// positions.
struct Builder<'a> {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<proto::Function>,
    /// (name, filename) string ids → function id.
    function_ids: HashMap<(i64, i64), u64>,
    locations: Vec<proto::Location>,
    location_ids: HashMap<LocationKey<'a>, u64>,
    mappings: Vec<MappingAcc>,
    /// Module (`None`: kernel image) → index in `mappings`.
    mapping_index: HashMap<Option<&'a str>, usize>,
}

impl<'a> Builder<'a> {
    fn new() -> Self {
        let mut b = Builder {
            strings: Vec::new(),
            string_ids: HashMap::new(),
            functions: Vec::new(),
            function_ids: HashMap::new(),
            locations: Vec::new(),
            location_ids: HashMap::new(),
            mappings: Vec::new(),
            mapping_index: HashMap::new(),
        };
        // string_table[0] must be "".
        b.intern("");
        b
    }

    fn intern(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as i64;
        self.strings.push(s.to_string());
        self.string_ids.insert(s.to_string(), id);
        id
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.intern(ty),
            unit: self.intern(unit),
        }
    }

    fn label(&mut self, key: i64, value: &str) -> proto::Label {
        proto::Label {
            key,
            str: self.intern(value),
            num: 0,
            num_unit: 0,
        }
    }

    fn function(&mut self, name: &str, file: Option<&str>) -> u64 {
        let name = self.intern(name);
        let filename = self.intern(file.unwrap_or(""));
        if let Some(&id) = self.function_ids.get(&(name, filename)) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        self.functions.push(proto::Function {
            id,
            name,
            system_name: name,
            filename,
            start_line: 0,
        });
        self.function_ids.insert((name, filename), id);
        id
    }

    /// Index in `mappings` of the kernel image (`None`) or a module's mapping.
    fn mapping(&mut self, module: Option<&'a str>) -> usize {
        if let Some(&i) = self.mapping_index.get(&module) {
            return i;
        }
        let filename = match module {
            None => self.intern(KERNEL_MAPPING),
            Some(m) => self.intern(&format!("[{m}]")),
        };
        let i = self.mappings.len();
        self.mappings.push(MappingAcc {
            id: i as u64 + 1,
            filename,
            start: u64::MAX,
            limit: 0,
            has_filenames: false,
            has_line_numbers: false,
            has_inline_frames: false,
        });
        self.mapping_index.insert(module, i);
        i
    }

    fn push_location(&mut self, key: LocationKey<'a>, mut location: proto::Location) -> u64 {
        let id = self.locations.len() as u64 + 1;
        location.id = id;
        self.locations.push(location);
        self.location_ids.insert(key, id);
        id
    }

    /// A location with no address or mapping whose only function is `name`.
    fn pseudo_location(&mut self, name: &'static str) -> u64 {
        if let Some(&id) = self.location_ids.get(&LocationKey::Pseudo(name)) {
            return id;
        }
        let function_id = self.function(name, None);
        self.push_location(
            LocationKey::Pseudo(name),
            proto::Location {
                id: 0,
                mapping_id: 0,
                address: 0,
                line: vec![proto::Line {
                    function_id,
                    line: 0,
                    column: 0,
                }],
                is_folded: false,
            },
        )
    }

    fn frame_location(&mut self, f: &'a Frame) -> u64 {
        let key = LocationKey::Frame((
            f.address,
            f.symbol.as_deref(),
            f.module.as_deref(),
            f.file.as_deref(),
            f.line,
            f.inlined.as_slice(),
        ));
        if let Some(&id) = self.location_ids.get(&key) {
            return id;
        }
        // Inlined functions innermost first, then the function the address is in.
        let mut line: Vec<proto::Line> = f
            .inlined
            .iter()
            .rev()
            .map(|name| proto::Line {
                function_id: self.function(name, None),
                line: 0,
                column: 0,
            })
            .collect();
        line.push(proto::Line {
            function_id: self.function(&frame_function_name(f), f.file.as_deref()),
            line: f.line.map_or(0, i64::from),
            column: 0,
        });
        // An address no symbol or module explains (a BPF program, a module that went away)
        // belongs to no known mapping: it must not stretch the kernel image's range over the
        // module area.
        let mapping_id = if f.symbol.is_none() && f.module.is_none() {
            0
        } else {
            let m = self.mapping(f.module.as_deref());
            let acc = &mut self.mappings[m];
            acc.start = acc.start.min(f.address);
            acc.limit = acc.limit.max(f.address.saturating_add(1));
            acc.has_filenames |= f.file.is_some();
            acc.has_line_numbers |= f.line.is_some();
            acc.has_inline_frames |= !f.inlined.is_empty();
            acc.id
        };
        self.push_location(
            key,
            proto::Location {
                id: 0,
                mapping_id,
                address: f.address,
                line,
                is_folded: false,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::io::Read as _;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use flate2::read::GzDecoder;

    use super::*;
    use crate::model::testkit::{mixed_report, sample_report};
    use crate::model::Class;

    fn decode(gz: &[u8]) -> proto::Profile {
        assert_eq!(&gz[..2], &[0x1f, 0x8b], "not gzip");
        let mut raw = Vec::new();
        GzDecoder::new(gz).read_to_end(&mut raw).expect("gunzip");
        proto::Profile::decode(raw.as_slice()).expect("decode the profile")
    }

    fn encode(p: &proto::Profile) -> Vec<u8> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&p.encode_to_vec()).expect("gzip");
        gz.finish().expect("gzip")
    }

    /// A location as plain data: address, mapping file name, and per line (innermost first)
    /// the function name, its file and the line number.
    #[derive(Debug, PartialEq)]
    struct Loc {
        address: u64,
        mapping: Option<String>,
        lines: Vec<(String, String, i64)>,
    }

    impl Loc {
        fn names(&self) -> Vec<&str> {
            self.lines.iter().map(|(n, _, _)| n.as_str()).collect()
        }
    }

    /// Lookups through the profile's id and string tables.
    struct View<'p> {
        p: &'p proto::Profile,
        locations: HashMap<u64, &'p proto::Location>,
        functions: HashMap<u64, &'p proto::Function>,
        mappings: HashMap<u64, &'p proto::Mapping>,
    }

    impl<'p> View<'p> {
        /// Also checks the structural rules of profile.proto: string_table[0] == "", ids
        /// non-zero and unique, every reference resolves, every string index in range.
        fn new(p: &'p proto::Profile) -> Self {
            assert_eq!(p.string_table.first().map(String::as_str), Some(""));
            let distinct: HashSet<&String> = p.string_table.iter().collect();
            assert_eq!(distinct.len(), p.string_table.len(), "duplicate strings");
            let n = p.string_table.len() as i64;
            let in_range = |i: i64| assert!((0..n).contains(&i), "string index {i} of {n}");
            let unique = |ids: Vec<u64>, what: &str| {
                let set: HashSet<u64> = ids.iter().copied().collect();
                assert_eq!(set.len(), ids.len(), "duplicate {what} ids");
                assert!(!set.contains(&0), "{what} id 0");
            };
            unique(p.location.iter().map(|l| l.id).collect(), "location");
            unique(p.function.iter().map(|f| f.id).collect(), "function");
            unique(p.mapping.iter().map(|m| m.id).collect(), "mapping");
            let v = View {
                p,
                locations: p.location.iter().map(|l| (l.id, l)).collect(),
                functions: p.function.iter().map(|f| (f.id, f)).collect(),
                mappings: p.mapping.iter().map(|m| (m.id, m)).collect(),
            };
            for f in &p.function {
                [f.name, f.system_name, f.filename]
                    .into_iter()
                    .for_each(in_range);
                assert_eq!(f.name, f.system_name);
            }
            for m in &p.mapping {
                in_range(m.filename);
                assert!(m.memory_start < m.memory_limit, "{m:?}");
                assert!(m.has_functions);
            }
            for l in &p.location {
                assert!(!l.line.is_empty());
                assert!(l.mapping_id == 0 || v.mappings.contains_key(&l.mapping_id));
                for line in &l.line {
                    assert!(v.functions.contains_key(&line.function_id));
                }
                if let Some(m) = v.mappings.get(&l.mapping_id) {
                    assert!((m.memory_start..m.memory_limit).contains(&l.address));
                }
            }
            for s in &p.sample {
                assert_eq!(s.value.len(), p.sample_type.len());
                assert!(!s.location_id.is_empty());
                for id in &s.location_id {
                    assert!(v.locations.contains_key(id), "location {id}");
                }
                for l in &s.label {
                    [l.key, l.str].into_iter().for_each(in_range);
                }
            }
            [p.default_sample_type, p.drop_frames, p.keep_frames]
                .into_iter()
                .for_each(in_range);
            p.comment.iter().copied().for_each(in_range);
            v
        }

        fn s(&self, i: i64) -> &'p str {
            &self.p.string_table[i as usize]
        }

        fn loc(&self, id: u64) -> Loc {
            let l = self.locations[&id];
            Loc {
                address: l.address,
                mapping: self
                    .mappings
                    .get(&l.mapping_id)
                    .map(|m| self.s(m.filename).to_string()),
                lines: l
                    .line
                    .iter()
                    .map(|line| {
                        let f = self.functions[&line.function_id];
                        (
                            self.s(f.name).to_string(),
                            self.s(f.filename).to_string(),
                            line.line,
                        )
                    })
                    .collect(),
            }
        }

        fn stack(&self, s: &proto::Sample) -> Vec<Loc> {
            s.location_id.iter().map(|&id| self.loc(id)).collect()
        }

        fn labels(&self, s: &proto::Sample) -> Vec<(&'p str, &'p str)> {
            s.label
                .iter()
                .map(|l| (self.s(l.key), self.s(l.str)))
                .collect()
        }

        fn value_type(&self, v: &proto::ValueType) -> (&'p str, &'p str) {
            (self.s(v.r#type), self.s(v.unit))
        }
    }

    /// Go's heap layout, checked against literals (not the constants of the code).
    fn check_header(v: &View<'_>) {
        let types: Vec<(&str, &str)> = v.p.sample_type.iter().map(|t| v.value_type(t)).collect();
        assert_eq!(
            types,
            [
                ("alloc_objects", "count"),
                ("alloc_space", "bytes"),
                ("inuse_objects", "count"),
                ("inuse_space", "bytes"),
            ]
        );
        assert_eq!(v.s(v.p.default_sample_type), "inuse_space");
        let period_type = v.p.period_type.as_ref().expect("period type");
        assert_eq!(v.value_type(period_type), ("space", "bytes"));
        assert_eq!(v.p.period, 1);
    }

    /// What a stack's frames should decode to: per frame, its address and function names
    /// innermost first (inlined functions reversed, then the frame's own function).
    fn expected_names(s: &StackReport) -> Vec<(u64, Vec<String>)> {
        s.frames
            .iter()
            .map(|f| {
                let mut names: Vec<String> = f.inlined.iter().rev().cloned().collect();
                names.push(
                    f.symbol
                        .clone()
                        .unwrap_or_else(|| format!("{:#x}", f.address)),
                );
                (f.address, names)
            })
            .collect()
    }

    fn values(s: &StackReport) -> Vec<i64> {
        [s.allocated_count, s.allocated_bytes, s.allocations, s.bytes]
            .map(|v| v as i64)
            .to_vec()
    }

    #[test]
    fn sample_report_profile() {
        let r = sample_report(&[], 0);
        let p = decode(&render_pprof(&r).expect("render"));
        let v = View::new(&p);
        check_header(&v);
        assert_eq!(p.time_nanos, 1_700_000_000_000_000_000);
        assert_eq!(p.duration_nanos, 30_000_000_000);
        let comments: Vec<&str> = p.comment.iter().map(|&c| v.s(c)).collect();
        assert!(comments.iter().any(|c| c.contains("web-1")), "{comments:?}");
        assert!(comments.iter().any(|c| c.contains("6.8.0-31-generic")));
        assert!(!comments.iter().any(|c| c.contains("sampled")));

        // Every stack, churn-only included, in the report's order, with its exact values.
        assert_eq!(r.stacks.len(), 4);
        assert_eq!(p.sample.len(), 4);
        for (s, sample) in r.stacks.iter().zip(&p.sample) {
            assert_eq!(sample.value, values(s), "{}", s.caller);
        }
        assert_eq!(
            p.sample[0].value,
            [163_840, 5 << 30, 9600, 300 << 20],
            "TCP stack"
        );
        let churn = p
            .sample
            .iter()
            .find(|s| s.value[3] == 0)
            .expect("churn-only sample");
        assert_eq!(churn.value, [262_144, 1 << 30, 0, 0]);

        // The TCP stack, leaf first, with the inlined functions of tcp_sendmsg_locked before
        // it (innermost first) and the module frame mapped to its module.
        let tcp = v.stack(&p.sample[0]);
        let kernel = Some(KERNEL_MAPPING.to_string());
        let plain = |address: u64, name: &str| Loc {
            address,
            mapping: kernel.clone(),
            lines: vec![(name.to_string(), String::new(), 0)],
        };
        assert_eq!(
            tcp,
            [
                plain(0xffff_ffff_8100_0010, "__alloc_pages_noprof"),
                plain(0xffff_ffff_8100_0020, "alloc_pages_mpol"),
                plain(0xffff_ffff_8100_0030, "alloc_pages_noprof"),
                plain(0xffff_ffff_8100_0040, "skb_page_frag_refill"),
                plain(0xffff_ffff_8100_0050, "sk_page_frag_refill"),
                Loc {
                    address: 0xffff_ffff_8100_0060,
                    mapping: kernel.clone(),
                    lines: vec![
                        ("inner_inl".into(), String::new(), 0),
                        ("outer_inl".into(), String::new(), 0),
                        ("tcp_sendmsg_locked".into(), "net/ipv4/tcp.c".into(), 1234),
                    ],
                },
                Loc {
                    address: 0xffff_ffff_8100_0070,
                    mapping: Some("[tcp_mod]".into()),
                    lines: vec![("tcp_sendmsg".into(), String::new(), 0)],
                },
            ]
        );
        assert_eq!(
            v.labels(&p.sample[0]),
            [
                ("kind", "page"),
                ("class", "network"),
                ("caller", "skb_page_frag_refill")
            ]
        );

        // Every stack resolves to its frames; unresolved addresses are named in hex.
        for (s, sample) in r.stacks.iter().zip(&p.sample) {
            let got: Vec<(u64, Vec<String>)> = v
                .stack(sample)
                .iter()
                .map(|l| (l.address, l.names().iter().map(|n| n.to_string()).collect()))
                .collect();
            if s.stack_id.is_some() {
                assert_eq!(got, expected_names(s), "{}", s.caller);
            }
        }
        let anon = r
            .stacks
            .iter()
            .position(|s| s.caller == "do_anonymous_page")
            .expect("anon stack");
        let anon_stack = v.stack(&p.sample[anon]);
        let anon_names: Vec<&str> = anon_stack.iter().map(|l| l.names()[0]).collect();
        assert_eq!(
            anon_names,
            [
                "__alloc_pages_noprof",
                "do_anonymous_page",
                "__handle_mm_fault",
                "0xffffffffdeadbeef"
            ]
        );
        assert_eq!(anon_stack[3].address, 0xffff_ffff_dead_beef);
        // An address nothing explains has no mapping (it must not widen the kernel's).
        assert_eq!(anon_stack[3].mapping, None);
        // One location per address: __alloc_pages_noprof is shared by three stacks.
        let leaf_ids: HashSet<u64> = p
            .sample
            .iter()
            .zip(&r.stacks)
            .filter(|(_, s)| s.stack_id.is_some())
            .map(|(sample, _)| sample.location_id[0])
            .collect();
        assert_eq!(leaf_ids.len(), 1);
        let addresses: Vec<u64> = p
            .location
            .iter()
            .filter(|l| l.address != 0)
            .map(|l| l.address)
            .collect();
        let distinct: HashSet<u64> = addresses.iter().copied().collect();
        assert_eq!(addresses.len(), distinct.len());
        assert_eq!(distinct.len(), 7 + 3 + 1);

        // The stack-unavailable bucket: one pseudo-location, no address, no mapping.
        let none = r
            .stacks
            .iter()
            .position(|s| s.stack_id.is_none())
            .expect("unavailable");
        assert_eq!(
            v.stack(&p.sample[none]),
            [Loc {
                address: 0,
                mapping: None,
                lines: vec![("[stack unavailable]".into(), String::new(), 0)],
            }]
        );
        assert_eq!(p.sample[none].value, [2, 8192, 1, 4096]);

        // Mappings: the kernel image first, then the module, with the ranges of their frames.
        let maps: Vec<(&str, u64, u64, bool, bool)> = p
            .mapping
            .iter()
            .map(|m| {
                (
                    v.s(m.filename),
                    m.memory_start,
                    m.memory_limit,
                    m.has_line_numbers,
                    m.has_inline_frames,
                )
            })
            .collect();
        assert_eq!(
            maps,
            [
                (
                    "[kernel.kallsyms]",
                    0xffff_ffff_8100_0010,
                    0xffff_ffff_8300_0011,
                    true,
                    true
                ),
                (
                    "[tcp_mod]",
                    0xffff_ffff_8100_0070,
                    0xffff_ffff_8100_0071,
                    false,
                    false
                ),
            ]
        );
    }

    #[test]
    fn mixed_report_leaves_out_backing_pages() {
        let r = mixed_report(None);
        let p = decode(&render_pprof(&r).expect("render"));
        let v = View::new(&p);
        check_header(&v);

        let drawn: Vec<&StackReport> = r
            .stacks
            .iter()
            .filter(|s| !matches!(s.class, Class::SlabBacking | Class::VmallocBacking))
            .collect();
        assert!(drawn.len() < r.stacks.len(), "fixture has backing pages");
        assert_eq!(p.sample.len(), drawn.len());
        for (s, sample) in drawn.iter().zip(&p.sample) {
            assert_eq!(sample.value, values(s));
            let got: Vec<(u64, Vec<String>)> = v
                .stack(sample)
                .iter()
                .map(|l| (l.address, l.names().iter().map(|n| n.to_string()).collect()))
                .collect();
            if s.stack_id.is_none() {
                assert_eq!(got, [(0, vec!["[stack unavailable]".to_string()])]);
            } else {
                assert_eq!(got, expected_names(s));
            }
            let mut want = vec![
                ("kind", s.kind.name()),
                ("class", s.class.name()),
                ("caller", s.caller.as_str()),
            ];
            if let Some(cache) = &s.cache {
                want.push(("cache", cache.as_str()));
            }
            assert_eq!(v.labels(sample), want);
        }
        // What the totals count is exactly what the profile holds.
        let sum = |i: usize| p.sample.iter().map(|s| s.value[i]).sum::<i64>() as u64;
        assert_eq!(sum(3), r.totals.bytes);
        assert_eq!(sum(2), r.totals.allocations);
        assert_eq!(sum(1), r.totals.allocated_bytes);
        assert_eq!(sum(0), r.totals.allocated_count);
        // The slab and vmalloc backing pages are not drawn.
        let names: HashSet<&str> = p.function.iter().map(|f| v.s(f.name)).collect();
        assert!(!names.contains("allocate_slab"));
        assert!(!names.contains("alloc_pages_bulk_noprof"));
        assert!(names.contains("pcpu_populate_chunk"));
        // Caches of slab stacks as labels.
        let caches: HashSet<&str> = p
            .sample
            .iter()
            .flat_map(|s| v.labels(s))
            .filter(|(k, _)| *k == "cache")
            .map(|(_, c)| c)
            .collect();
        assert!(caches.contains("skbuff_head_cache"), "{caches:?}");
        assert!(caches.contains("kmalloc-512"), "{caches:?}");
        // One function per name even where it appears at several addresses.
        assert_eq!(names.len(), p.function.len());
        let mpol = p
            .location
            .iter()
            .filter(|l| v.s(v.functions[&l.line[0].function_id].name) == "alloc_pages_mpol")
            .count();
        assert!(mpol >= 2, "alloc_pages_mpol at {mpol} addresses");
    }

    #[test]
    fn sampled_unknown_and_empty_reports() {
        let mut r = sample_report(&[], 0);
        r.session.sample_every = 8;
        r.session.filters = vec!["pid 1234".into()];
        r.stacks[1].frames.clear();
        let p = decode(&render_pprof(&r).expect("render"));
        let v = View::new(&p);
        check_header(&v);
        let comments: Vec<&str> = p.comment.iter().map(|&c| v.s(c)).collect();
        assert!(
            comments
                .iter()
                .any(|c| c.contains("one allocation in 8") && c.contains("multiplied by 8")),
            "{comments:?}"
        );
        assert!(comments.contains(&"filters: pid 1234"));
        assert_eq!(
            v.stack(&p.sample[1]),
            [Loc {
                address: 0,
                mapping: None,
                lines: vec![("[unknown]".into(), String::new(), 0)],
            }]
        );

        let p = decode(&render_pprof(&Report::default()).expect("render"));
        let v = View::new(&p);
        check_header(&v);
        assert!(p.sample.is_empty() && p.location.is_empty() && p.mapping.is_empty());
        assert_eq!((p.time_nanos, p.duration_nanos), (0, 0));
    }

    /// Runs `tests/scripts/check_pprof.py` (the vendored profile.proto compiled by protoc)
    /// on our output; and on corrupted copies, which it must reject.
    #[test]
    fn python_checker_agrees() {
        let Some(python) = std::env::var_os("MEMTRACE_PYTHON") else {
            eprintln!(
                "SKIPPED: MEMTRACE_PYTHON not set (path to the python of the venv that \
                 xtask makes with protobuf and grpcio-tools); the pprof output was not \
                 checked against the real profile.proto"
            );
            return;
        };
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scripts/check_pprof.py");
        let dir = tempfile::tempdir().expect("temp dir");
        let run = |profile: &Path, json: &Path| {
            let out = Command::new(&python)
                .arg(&script)
                .arg(profile)
                .arg(json)
                .output()
                .expect("run check_pprof.py");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            eprint!("{text}");
            (out.status.success(), text)
        };
        let write = |name: &str, bytes: &[u8]| -> PathBuf {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            path
        };
        for (name, r) in [
            ("sample", sample_report(&[], 0)),
            ("mixed", mixed_report(None)),
        ] {
            let gz = render_pprof(&r).expect("render");
            let profile = write(&format!("{name}.pb.gz"), &gz);
            let json = write(
                &format!("{name}.json"),
                crate::schema::to_string_pretty(&r)
                    .expect("json")
                    .as_bytes(),
            );
            let (ok, text) = run(&profile, &json);
            assert!(ok, "check_pprof.py rejected the {name} profile:\n{text}");
            assert!(text.contains("OK"), "{text}");

            // Corrupted copies, which the checker must reject: the two alloc_* values of
            // the first sample swapped (a count and a byte total: they differ); two frames
            // of the first sample with several frames swapped.
            let good = decode(&gz);
            let mut swapped = good.clone();
            swapped.sample[0].value.swap(0, 1);
            assert_ne!(swapped.sample[0].value, good.sample[0].value);
            let (ok, text) = run(&write("bad-values.pb.gz", &encode(&swapped)), &json);
            assert!(!ok, "check_pprof.py accepted swapped values:\n{text}");
            assert!(
                text.contains("MISMATCH") && text.contains("values"),
                "{text}"
            );
            let mut reordered = good.clone();
            let deep = reordered
                .sample
                .iter_mut()
                .find(|s| s.location_id.len() >= 2)
                .expect("a sample with two frames");
            deep.location_id.swap(0, 1);
            let (ok, text) = run(&write("bad-order.pb.gz", &encode(&reordered)), &json);
            assert!(!ok, "check_pprof.py accepted swapped frames:\n{text}");
            assert!(
                text.contains("MISMATCH") && text.contains("frame 0"),
                "{text}"
            );
        }
    }
}
