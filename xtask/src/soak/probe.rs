//! What one soak sample reads: memtrace's own figures from /proc (resident memory, threads,
//! open fds, the kernel memory of its BPF maps) and its endpoints over HTTP (the series and
//! counters of /metrics, /healthz).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};

use crate::bench::tracer::status_kib;

/// memtrace's figures from /proc/PID.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcFigures {
    /// `VmRSS` of /proc/PID/status.
    pub rss_bytes: u64,
    /// `Threads` of /proc/PID/status.
    pub threads: u64,
    /// Entries of /proc/PID/fd.
    pub fds: u64,
    /// fds that are BPF maps.
    pub bpf_maps: u64,
    /// Sum of `memlock` over the BPF map fds: what memtrace itself reports as its map memory
    /// (`map_memory_bytes` in memtrace/src/loader/mod.rs, `memtrace_bpf_map_memory_bytes`).
    pub map_memlock_bytes: u64,
    /// BPF programs it holds (program and link fds), by id: none may stay loaded after it ends.
    pub prog_ids: BTreeSet<u32>,
    /// BPF maps it holds, by id.
    pub map_ids: BTreeSet<u32>,
}

/// `VmRSS` (bytes) and `Threads` of a /proc/PID/status text.
pub fn parse_status(status: &str) -> Result<(u64, u64)> {
    let rss = status_kib(status, "VmRSS:").context("no `VmRSS: N kB` line")?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .context("no `Threads: N` line")?;
    Ok((rss, threads))
}

/// A numeric `key:\tvalue` line of an fdinfo text.
fn fdinfo_field(fdinfo: &str, key: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// What one fd is, from its fdinfo text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdKind {
    /// A BPF map: its `memlock` (0 when the line is missing, as memtrace counts it) and id.
    Map {
        memlock: u64,
        id: Option<u32>,
    },
    /// A BPF program, or a link to one: the program's id.
    Prog {
        id: u32,
    },
    Other,
}

/// Classifies an fd by its fdinfo text the way memtrace's `map_memlock` does: a map is an fd
/// whose fdinfo has a `map_type:` line.
pub fn classify_fdinfo(fdinfo: &str) -> FdKind {
    let id = |key| fdinfo_field(fdinfo, key).and_then(|v| u32::try_from(v).ok());
    if fdinfo.lines().any(|l| l.starts_with("map_type:")) {
        return FdKind::Map {
            memlock: fdinfo_field(fdinfo, "memlock").unwrap_or(0),
            id: id("map_id"),
        };
    }
    match id("prog_id") {
        Some(id) => FdKind::Prog { id },
        None => FdKind::Other,
    }
}

/// Reads memtrace's figures. Fds opened or closed while the directory is read are skipped.
pub fn read_proc(pid: libc::pid_t) -> Result<ProcFigures> {
    let status_path = format!("/proc/{pid}/status");
    let status =
        fs::read_to_string(&status_path).with_context(|| format!("reading {status_path}"))?;
    let (rss_bytes, threads) =
        parse_status(&status).with_context(|| format!("parsing {status_path}"))?;
    let mut figures = ProcFigures {
        rss_bytes,
        threads,
        ..ProcFigures::default()
    };
    let fd_dir = format!("/proc/{pid}/fd");
    for entry in fs::read_dir(&fd_dir).with_context(|| format!("listing {fd_dir}"))? {
        let entry = entry.with_context(|| format!("listing {fd_dir}"))?;
        figures.fds += 1;
        let fdinfo = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        let Ok(info) = fs::read_to_string(&fdinfo) else {
            continue;
        };
        match classify_fdinfo(&info) {
            FdKind::Map { memlock, id } => {
                figures.bpf_maps += 1;
                figures.map_memlock_bytes += memlock;
                figures.map_ids.extend(id);
            }
            FdKind::Prog { id } => {
                figures.prog_ids.insert(id);
            }
            FdKind::Other => {}
        }
    }
    Ok(figures)
}

// ---- HTTP ------------------------------------------------------------------------------------

/// One answer of memtrace serve.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// From connecting to the last byte of the body (memtrace closes after each response).
    pub latency: Duration,
}

/// `GET path` over HTTP/1.0; the whole answer is read (the server closes the connection).
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Reply> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: memtrace-soak\r\n\r\n"
    )
    .with_context(|| format!("sending GET {path} to {addr}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer to GET {path} from {addr}"))?;
    let latency = started.elapsed();
    let (status, body) = split_reply(&raw).with_context(|| format!("GET {path} from {addr}"))?;
    Ok(Reply {
        status,
        body: body.to_vec(),
        latency,
    })
}

/// Status code and body of a raw HTTP/1.x answer; checks `Content-Length` when present.
fn split_reply(raw: &[u8]) -> Result<(u16, &[u8])> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no complete header")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let body = &raw[end + 4..];
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        if name.trim().eq_ignore_ascii_case("content-length") {
            let len: usize = value.trim().parse().context("bad Content-Length")?;
            ensure!(
                len == body.len(),
                "Content-Length {len} but {} bytes of body",
                body.len()
            );
        }
    }
    Ok((status, body))
}

// ---- /metrics --------------------------------------------------------------------------------

/// The figures of one /metrics answer that the soak follows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsFigures {
    /// Sample lines (neither empty nor a `#` comment): the series of one scrape.
    pub series: u64,
    /// Distinct `program` labels of `memtrace_program_runs_total`: loaded BPF programs.
    pub programs: u64,
    /// `memtrace_events_total{failure="true"}` by `counter`.
    pub failure_counters: BTreeMap<String, u64>,
    /// Sum of `memtrace_program_recursion_misses_total` over the programs.
    pub recursion_misses: u64,
    /// `memtrace_table_entries` by `table`.
    pub table_entries: BTreeMap<String, u64>,
    /// The housekeeping of a long session ([`HOUSEKEEPING`]), by metric name.
    pub housekeeping: BTreeMap<String, u64>,
    /// `memtrace_bpf_map_memory_bytes`: memtrace's own figure of its map memory.
    pub map_memory_gauge: Option<u64>,
    /// `memtrace_snapshot_timestamp_seconds`.
    pub snapshot_timestamp: Option<f64>,
}

impl MetricsFigures {
    pub fn failures_total(&self) -> u64 {
        self.failure_counters.values().sum()
    }
}

/// The metrics of a long session's housekeeping the soak reports at the end: what stack
/// rotation, owner recycling and the cgroup index did.
pub const HOUSEKEEPING: [&str; 5] = [
    "memtrace_stacks_retired_total",
    "memtrace_owners_recycled_total",
    "memtrace_owner_table_used",
    "memtrace_cgroups_expired_total",
    "memtrace_slab_rate_changes_total",
];

/// One sample line of the Prometheus text format: name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleLine {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl SampleLine {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `name{a="x",b="y\"z"} 12.5 [timestamp]`.
pub fn parse_sample_line(line: &str) -> Result<SampleLine> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .context("no value after the metric name")?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices();
        let end = loop {
            // Label name up to `=`, or the closing brace.
            let Some((i, c)) = chars.next() else {
                bail!("unterminated label set");
            };
            if c == '}' {
                break i + 1;
            }
            if c == ',' || c.is_ascii_whitespace() {
                continue;
            }
            let start = i;
            let mut eq = None;
            for (j, c) in chars.by_ref() {
                if c == '=' {
                    eq = Some(j);
                    break;
                }
            }
            let eq = eq.context("a label without `=`")?;
            let label = after[start..eq].trim().to_string();
            ensure!(
                matches!(chars.next(), Some((_, '"'))),
                "label {label} has no quoted value"
            );
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, other)) => value.push(other),
                        None => bail!("label {label}: escape at the end"),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    other => value.push(other),
                }
            }
            ensure!(closed, "label {label}: unterminated value");
            labels.push((label, value));
        };
        rest = &after[end..];
    }
    let value_text = rest
        .split_ascii_whitespace()
        .next()
        .context("no value after the labels")?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse::<f64>()
            .with_context(|| format!("bad value {v:?}"))?,
    };
    Ok(SampleLine {
        name,
        labels,
        value,
    })
}

fn as_count(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        value.round() as u64
    } else {
        0
    }
}

/// The soak's figures of a /metrics body.
pub fn parse_metrics(text: &str) -> Result<MetricsFigures> {
    let mut figures = MetricsFigures::default();
    let mut programs = BTreeSet::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        figures.series += 1;
        let sample = parse_sample_line(line)
            .with_context(|| format!("/metrics line {}: {line:?}", number + 1))?;
        match sample.name.as_str() {
            "memtrace_events_total" if sample.label("failure") == Some("true") => {
                let counter = sample.label("counter").unwrap_or("?").to_string();
                *figures.failure_counters.entry(counter).or_default() += as_count(sample.value);
            }
            "memtrace_program_recursion_misses_total" => {
                figures.recursion_misses += as_count(sample.value);
            }
            "memtrace_program_runs_total" => {
                programs.insert(sample.label("program").unwrap_or("?").to_string());
            }
            "memtrace_table_entries" => {
                let table = sample.label("table").unwrap_or("?").to_string();
                figures.table_entries.insert(table, as_count(sample.value));
            }
            "memtrace_bpf_map_memory_bytes" => {
                figures.map_memory_gauge = Some(as_count(sample.value));
            }
            name if HOUSEKEEPING.contains(&name) => {
                figures
                    .housekeeping
                    .insert(name.to_string(), as_count(sample.value));
            }
            "memtrace_snapshot_timestamp_seconds" => {
                figures.snapshot_timestamp = Some(sample.value);
            }
            _ => {}
        }
    }
    figures.programs = programs.len() as u64;
    Ok(figures)
}

/// The fixed part of the documented series bound at the default top sizes (docs/metrics.md,
/// "Series: the bound", which memtrace's own test keeps in step with the renderer).
pub const SERIES_BOUND_BASE: u64 = 287;

/// The documented series bound at the default top sizes: [`SERIES_BOUND_BASE`] + 3 per loaded
/// BPF program.
pub fn series_bound(programs: u64) -> u64 {
    SERIES_BOUND_BASE + 3 * programs
}

// ---- /report.json ----------------------------------------------------------------------------

/// The few figures of /report.json the soak keeps: what memtrace's memory grows with.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct ReportFigures {
    /// Stacks in the report (holding memory, or allocated from during the session).
    #[serde(deserialize_with = "count_items")]
    pub stacks: u64,
    /// Snapshots the report carries (bounded by memtrace serve's window).
    #[serde(deserialize_with = "count_items")]
    pub snapshots: u64,
    pub totals: ReportTotals,
    /// Every event counter of the session.
    pub counters: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct ReportTotals {
    /// Outstanding allocations (page records and objects) at the snapshot.
    pub allocations: u64,
    pub bytes: u64,
}

/// Counts the items of a JSON array without keeping them.
fn count_items<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Counter;
    impl<'de> serde::de::Visitor<'de> for Counter {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
            let mut n = 0;
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                n += 1;
            }
            Ok(n)
        }
    }
    d.deserialize_seq(Counter)
}

pub fn parse_report(body: &[u8]) -> Result<ReportFigures> {
    serde_json::from_slice(body).context("/report.json is not a memtrace report")
}

// ---- BPF objects after the exit --------------------------------------------------------------

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;

/// Whether the BPF program (`map` false) or map with this id still exists in the kernel.
fn bpf_object_exists(id: u32, map: bool) -> Result<bool> {
    // `union bpf_attr` for the GET_FD_BY_ID commands: the id, next_id, open_flags; the rest
    // of what the kernel reads (the size passed) must be zero.
    let mut attr = [0u32; 4];
    attr[0] = id;
    let cmd = if map {
        BPF_MAP_GET_FD_BY_ID
    } else {
        BPF_PROG_GET_FD_BY_ID
    };
    // SAFETY: bpf(2) reads `size` bytes from the pointer, which points at `attr`, a live
    // array of exactly that size; GET_FD_BY_ID writes nothing into it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as libc::c_uint,
        )
    };
    if fd >= 0 {
        let fd = libc::c_int::try_from(fd).context("bpf() returned an fd out of range")?;
        // SAFETY: `fd` was just returned by bpf() to this process and nothing else owns it.
        unsafe { libc::close(fd) };
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOENT) => Ok(false),
        _ => Err(err).with_context(|| {
            format!(
                "bpf(GET_FD_BY_ID) for {} id {id}",
                if map { "map" } else { "program" }
            )
        }),
    }
}

/// Waits up to `timeout` for these programs and maps to be gone from the kernel (they are
/// freed asynchronously after their last fd closed); the ones that stay, as a message.
pub fn wait_bpf_objects_gone(
    progs: &BTreeSet<u32>,
    maps: &BTreeSet<u32>,
    timeout: Duration,
) -> Result<Option<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut left_progs = Vec::new();
        for &id in progs {
            if bpf_object_exists(id, false)? {
                left_progs.push(id);
            }
        }
        let mut left_maps = Vec::new();
        for &id in maps {
            if bpf_object_exists(id, true)? {
                left_maps.push(id);
            }
        }
        if left_progs.is_empty() && left_maps.is_empty() {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Ok(Some(format!(
                "still loaded {timeout:?} after memtrace exited: programs {left_progs:?}, maps \
                 {left_maps:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let status = "Name:\tmemtrace\nUmask:\t0022\nState:\tS (sleeping)\n\
                      VmPeak:\t  300000 kB\nVmHWM:\t   50000 kB\nVmRSS:\t   41236 kB\n\
                      RssAnon:\t   30000 kB\nThreads:\t7\nSigQ:\t0/95000\n";
        assert_eq!(parse_status(status).unwrap(), (41236 * 1024, 7));
        assert!(parse_status("Name:\tx\nThreads:\t3\n").is_err());
        assert!(parse_status("VmRSS:\t 1 kB\n").is_err());
    }

    #[test]
    fn classifies_fdinfo_like_memtrace() {
        let map = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2083\nmap_type:\t1\n\
                   key_size:\t8\nvalue_size:\t48\nmax_entries:\t524288\nmap_flags:\t0x0\n\
                   map_extra:\t0x0\nmemlock:\t62957952\nmap_id:\t5575\nfrozen:\t0\n";
        assert_eq!(
            classify_fdinfo(map),
            FdKind::Map {
                memlock: 62_957_952,
                id: Some(5575)
            }
        );
        let prog = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2083\nprog_type:\t5\n\
                    prog_jited:\t1\nprog_tag:\t0123456789abcdef\nmemlock:\t4096\n\
                    prog_id:\t901\nrun_time_ns:\t0\nrun_cnt:\t0\n";
        assert_eq!(classify_fdinfo(prog), FdKind::Prog { id: 901 });
        let link = "pos:\t0\nflags:\t02000000\nmnt_id:\t16\nino:\t2083\nlink_type:\t\
                    raw_tracepoint\nlink_id:\t77\nprog_tag:\t0123456789abcdef\nprog_id:\t901\n";
        assert_eq!(classify_fdinfo(link), FdKind::Prog { id: 901 });
        // A plain file, and a perf event (memlock-free, no map_type): not maps.
        assert_eq!(
            classify_fdinfo("pos:\t0\nflags:\t0100002\nmnt_id:\t25\nino:\t12\n"),
            FdKind::Other
        );
        assert_eq!(
            classify_fdinfo("pos:\t0\nflags:\t02\nmemlock:\t4096\n"),
            FdKind::Other
        );
    }

    #[test]
    fn own_process_is_readable() {
        // SAFETY: getpid() has no preconditions.
        let me = unsafe { libc::getpid() };
        let figures = read_proc(me).expect("figures of this process");
        assert!(figures.rss_bytes > 0);
        assert!(figures.threads >= 1);
        assert!(figures.fds >= 3);
    }

    #[test]
    fn parses_sample_lines() {
        let line =
            parse_sample_line(r#"memtrace_cgroup_outstanding_bytes{cgroup="/a \"b\"\\c,d}"} 4096"#)
                .unwrap();
        assert_eq!(line.name, "memtrace_cgroup_outstanding_bytes");
        assert_eq!(line.label("cgroup"), Some(r#"/a "b"\c,d}"#));
        assert_eq!(line.value, 4096.0);
        let line = parse_sample_line("memtrace_sample_every 1").unwrap();
        assert!(line.labels.is_empty());
        assert_eq!(line.value, 1.0);
        let line = parse_sample_line("x{a=\"1\",b=\"2\",} 2.5e3 1700000000000").unwrap();
        assert_eq!(line.labels.len(), 2);
        assert_eq!(line.value, 2500.0);
        assert!(parse_sample_line("x{a=\"1\" 2").is_err());
        assert!(parse_sample_line("x{a=\"1\"}").is_err());
        assert!(parse_sample_line("x notanumber").is_err());
    }

    const METRICS: &str = r#"# HELP memtrace_info memtrace's version.
# TYPE memtrace_info gauge
memtrace_info{version="0.1.0",kernel="6.18.44",host="vm"} 1

# TYPE memtrace_bpf_map_memory_bytes gauge
memtrace_bpf_map_memory_bytes 119537664
memtrace_snapshot_timestamp_seconds 1764000000.5
memtrace_table_entries{table="allocations"} 1200
memtrace_table_entries{table="objects"} 3400
memtrace_table_entries{table="stacks"} 560
memtrace_events_total{counter="allocs_seen",failure="false"} 99999
memtrace_events_total{counter="outstanding_map_full",failure="true"} 0
memtrace_events_total{counter="stack_id_enomem",failure="true"} 3
memtrace_events_total{counter="stale_records_replaced",failure="true"} 4
memtrace_program_recursion_misses_total{program="mm_page_alloc"} 0
memtrace_program_recursion_misses_total{program="mm_page_free"} 24
memtrace_program_runs_total{program="mm_page_alloc"} 0
memtrace_program_runs_total{program="mm_page_free"} 0
# EOF
"#;

    #[test]
    fn series_bound_is_the_documented_one() {
        let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
        let text = std::fs::read_to_string(&doc).unwrap();
        let stated = format!("**{SERIES_BOUND_BASE} + 3·P**");
        assert!(
            text.contains(&stated),
            "{} no longer states {stated}: update SERIES_BOUND_BASE",
            doc.display()
        );
    }

    #[test]
    fn counts_series_and_reads_counters() {
        let m = parse_metrics(METRICS).unwrap();
        assert_eq!(m.series, 14);
        assert_eq!(m.programs, 2);
        assert_eq!(m.failure_counters.len(), 3);
        assert_eq!(m.failure_counters["stack_id_enomem"], 3);
        assert_eq!(m.failures_total(), 7);
        assert_eq!(m.recursion_misses, 24);
        assert_eq!(m.table_entries["objects"], 3400);
        assert_eq!(m.map_memory_gauge, Some(119_537_664));
        assert_eq!(m.snapshot_timestamp, Some(1_764_000_000.5));
        assert_eq!(series_bound(m.programs), SERIES_BOUND_BASE + 6);
        assert!(parse_metrics("x{a=\"1\" 2\n").is_err());
        assert_eq!(parse_metrics("# only comments\n\n").unwrap().series, 0);
    }

    #[test]
    fn reads_report_figures() {
        let body = br#"{"schema": 1, "session": {"x": 1}, "stacks": [{"bytes": 1,
            "frames": [{"symbol": "a"}]}, {"bytes": 2}], "snapshots": [], "totals":
            {"allocations": 7, "bytes": 4096, "allocated_bytes": 1, "allocated_count": 1},
            "counters": {"allocs_seen": 9, "stack_id_enomem": 0}}"#;
        let r = parse_report(body).unwrap();
        assert_eq!((r.stacks, r.snapshots), (2, 0));
        assert_eq!(r.totals.allocations, 7);
        assert_eq!(r.counters["allocs_seen"], 9);
        assert!(parse_report(b"{}").is_err());
    }

    #[test]
    fn splits_http_replies() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
        let (status, body) = split_reply(raw).unwrap();
        assert_eq!((status, body), (200, &b"ok\n"[..]));
        assert!(split_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nok\n").is_err());
        assert!(split_reply(b"HTTP/1.1 200 OK\r\n").is_err());
        let (status, _) = split_reply(b"HTTP/1.1 503 Service Unavailable\r\n\r\n").unwrap();
        assert_eq!(status, 503);
    }

    #[test]
    fn missing_ids_are_not_loaded() {
        // Id 0 never names a BPF object; without the privilege the syscall fails (EPERM),
        // which must be an error, not "gone".
        match bpf_object_exists(0, false) {
            Ok(exists) => assert!(!exists),
            Err(e) => assert!(format!("{e:#}").contains("GET_FD_BY_ID"), "{e:#}"),
        }
    }
}
