//! Command-line parsing.

use std::{path::PathBuf, time::Duration};

use clap::Parser as _;
use memtrace_common::Kind;

use super::args::FlameByArg;
use super::trace::SortBy;
use super::*;
use crate::model::classify::KERNEL_CLASSES;
use crate::model::Class;

fn trace(cli: Cli) -> TraceArgs {
    match cli.command {
        Command::Trace(t) => *t,
        other => panic!("not trace: {other:?}"),
    }
}

#[test]
fn outputs_report_and_generate() {
    let t = trace(
        Cli::try_parse_from([
            "memtrace",
            "trace",
            "--save",
            "s.json",
            "--svg",
            "s.svg",
            "--flame-by",
            "allocated",
            "--pprof",
            "s.pb.gz",
            "--output-dir",
            "/out",
            "-q",
            "--top",
            "0",
        ])
        .unwrap(),
    );
    assert_eq!(t.output.json, Some(PathBuf::from("s.json")));
    assert_eq!(t.output.svg, Some(PathBuf::from("s.svg")));
    assert_eq!(t.output.pprof, Some(PathBuf::from("s.pb.gz")));
    assert_eq!(t.output.flame_by, FlameByArg::Allocated);
    assert_eq!(t.output_dir, Some(PathBuf::from("/out")));
    assert!(t.quiet);
    assert_eq!(t.output.top, 0);
    let cli = Cli::try_parse_from([
        "memtrace", "report", "s.json", "--top", "3", "--class", "network", "--folded", "f",
    ])
    .unwrap();
    let Command::Report(r) = cli.command else {
        panic!("not report")
    };
    assert_eq!(r.session, PathBuf::from("s.json"));
    assert_eq!(r.output.top, 3);
    assert_eq!(r.class, Some(vec![Class::Network]));
    assert_eq!(r.output.folded, Some(PathBuf::from("f")));
    // report needs its file; it has no tracing options.
    assert!(Cli::try_parse_from(["memtrace", "report"]).is_err());
    assert!(Cli::try_parse_from(["memtrace", "report", "s.json", "--duration", "1s"]).is_err());
    assert!(Cli::try_parse_from(["memtrace", "trace", "--flame-by", "x"]).is_err());
    // generate is hidden from --help.
    let mut help = Vec::new();
    <Cli as clap::CommandFactory>::command()
        .write_long_help(&mut help)
        .unwrap();
    let help = String::from_utf8(help).unwrap();
    assert!(
        help.contains("report") && !help.contains("generate"),
        "{help}"
    );
    assert!(help.contains("Exit codes"));
}

#[test]
fn durations() {
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
    assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
    assert!(parse_duration("nonsense").is_err());
}

#[test]
fn defaults_and_flags() {
    let cli = Cli::try_parse_from(["memtrace", "trace"]).unwrap();
    let t = trace(cli);
    assert_eq!(t.duration, Duration::from_secs(30));
    assert_eq!(t.output.top, 10);
    assert!(!t.quiet && t.output_dir.is_none());
    assert_eq!(t.output.flame_by, FlameByArg::Outstanding);
    assert_eq!(t.tracing.max_allocations, None);
    assert!(t.tracing.warnings().is_empty());
    assert_eq!(t.tracing.max_objects, DEFAULT_MAX_OBJECTS);
    assert_eq!(t.tracing.sample, 1);
    assert_eq!(t.tracing.movable_stack_every, 64);
    assert!(!t.tracing.classic_tracepoints);
    // Default grace: 20 % of the duration (30 s → 6 s), at most a minute.
    assert_eq!(t.grace(), Duration::from_secs(6));
    assert_eq!(t.sort, SortBy::Bytes);
    assert!(t.tracing.pid.is_empty() && t.interval.is_none());
    for (args, grace) in [
        (&["--duration", "10m"][..], 60),
        (&["--duration", "10s"][..], 2),
        (&["--duration", "10m", "--grace", "0"][..], 0),
        (&["--duration", "10s", "--grace", "1m"][..], 10),
    ] {
        let mut argv = vec!["memtrace", "trace"];
        argv.extend_from_slice(args);
        let t = trace(Cli::try_parse_from(argv).unwrap());
        assert_eq!(t.grace(), Duration::from_secs(grace), "{args:?}");
    }
    // The default session is kernel memory: movable pages are skipped in the kernel.
    assert_eq!(t.tracing.classes(), KERNEL_CLASSES.to_vec());
    assert!(t.tracing.skip_movable());
    for (classes, skip) in [("all", false), ("network,shmem", false), ("kernel", true)] {
        let cli = Cli::try_parse_from(["memtrace", "trace", "--class", classes]).unwrap();
        let t = trace(cli);
        assert_eq!(t.tracing.skip_movable(), skip, "{classes}");
    }
    assert!(Cli::try_parse_from(["memtrace", "trace", "--sample", "0"]).is_err());
    let cli = Cli::try_parse_from([
        "memtrace",
        "trace",
        "--duration",
        "2m",
        "--top",
        "3",
        "--min-age",
        "5s",
        "--json",
        "a.json",
        "--folded",
        "a.folded",
        "--max-stacks",
        "100",
    ])
    .unwrap();
    let t = trace(cli);
    assert_eq!(t.duration, Duration::from_secs(120));
    assert_eq!(t.min_age, Duration::from_secs(5));
    assert_eq!(t.tracing.max_stacks, 100);
    assert!(Cli::try_parse_from(["memtrace", "trace", "--duration", "x"]).is_err());
    // Owner filters, grace, interval, sort.
    let cli = Cli::try_parse_from([
        "memtrace",
        "trace",
        "--pid",
        "1,2",
        "--pid",
        "3",
        "--comm",
        "nginx",
        "--cgroup",
        "/a",
        "--cgroup",
        "b/c",
        "--pod",
        "1234",
        "--interval",
        "10s",
        "--sort",
        "growth",
    ])
    .unwrap();
    let t = trace(cli);
    assert_eq!(t.tracing.pid, vec![1, 2, 3]);
    assert_eq!(t.tracing.comm, vec!["nginx".to_string()]);
    assert_eq!(t.tracing.cgroup, vec!["/a".to_string(), "b/c".to_string()]);
    assert_eq!(t.tracing.pod, vec!["1234".to_string()]);
    assert_eq!(t.interval, Some(Duration::from_secs(10)));
    assert_eq!(t.sort, SortBy::Growth);
    assert!(Cli::try_parse_from(["memtrace", "trace", "--sort", "age"]).is_err());
}

#[test]
fn sizes_and_views() {
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("64K"), Ok(64 << 10));
    assert_eq!(parse_size("512MiB"), Ok(512 << 20));
    assert_eq!(parse_size("1.5G"), Ok(3 << 29));
    assert_eq!(parse_size("0"), Ok(0));
    assert!(parse_size("12 parsecs").is_err());
    assert!(parse_size("").is_err());
    let cli = Cli::try_parse_from(["memtrace", "overview", "--cgroups"]).unwrap();
    let Command::Overview(o) = cli.command else {
        panic!("not overview")
    };
    assert!(o.cgroups && o.json.is_none());
    assert_eq!(
        (o.unexplained_warn, o.unexplained_warn_percent),
        (1 << 30, 5.0)
    );
    let cli =
        Cli::try_parse_from(["memtrace", "sockets", "--min-bytes", "0", "--json", "-"]).unwrap();
    let Command::Sockets(s) = cli.command else {
        panic!("not sockets")
    };
    assert_eq!(s.min_bytes, 0);
    assert_eq!(s.json, Some(PathBuf::from("-")));
    assert_eq!(s.top, 20);
}

#[test]
fn kinds() {
    assert_eq!(parse_kinds("page,slab"), Ok(vec![Kind::Page, Kind::Slab]));
    assert_eq!(
        parse_kinds("vmalloc, page,page"),
        Ok(vec![Kind::Page, Kind::Vmalloc])
    );
    assert_eq!(parse_kinds("all"), Ok(Kind::ALL.to_vec()));
    assert!(parse_kinds("pages").unwrap_err().contains("valid: page"));
    assert!(parse_kinds("").is_err());
    let cli = Cli::try_parse_from(["memtrace", "trace"]).unwrap();
    let t = trace(cli);
    assert_eq!(t.tracing.kind, vec![Kind::Page, Kind::Slab]);
    assert_eq!(t.tracing.class, None);
    let cli =
        Cli::try_parse_from(["memtrace", "trace", "--kind", "all", "--class", "kernel"]).unwrap();
    let t = trace(cli);
    assert_eq!(t.tracing.kind.len(), 4);
    let classes = t.tracing.class.unwrap();
    assert!(!classes.contains(&Class::UserAnon) && !classes.contains(&Class::PageCache));
    assert!(classes.contains(&Class::Network));
}
