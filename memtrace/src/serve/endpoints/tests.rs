//! The endpoints through the real server on loopback.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
};

use flate2::read::GzDecoder;

use super::*;
use crate::model::testkit::sample_report;
use crate::serve::http::{Server, ServerConfig};

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn fetch(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "{method} {path} HTTP/1.1\r\nHost: t\r\n\r\n").expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    let head = String::from_utf8(raw[..end].to_vec()).expect("head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    Reply {
        status,
        head,
        body: raw[end + 4..].to_vec(),
    }
}

fn server(latest: &Latest<Published>, opts: EndpointOptions, name: &str) -> Server {
    Server::start(
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            thread_name: name.to_string(),
            ..ServerConfig::default()
        },
        routes(latest.clone(), opts),
    )
    .expect("server")
}

#[test]
fn nothing_published_yet() {
    let latest = Latest::new();
    let server = server(&latest, EndpointOptions::default(), "ep-empty");
    let addr = server.local_addr();
    for path in [
        METRICS_PATH,
        PPROF_HEAP_PATH,
        PPROF_ALLOCS_PATH,
        REPORT_PATH,
        HEALTH_PATH,
    ] {
        let r = fetch(addr, "GET", path);
        assert_eq!(r.status, 503, "{path}");
    }
    assert_eq!(
        fetch(addr, "GET", METRICS_PATH).header("retry-after"),
        Some("5")
    );
    let index = fetch(addr, "GET", "/");
    assert_eq!(index.status, 200);
    let text = String::from_utf8_lossy(&index.body);
    for path in [METRICS_PATH, PPROF_HEAP_PATH, REPORT_PATH, HEALTH_PATH] {
        assert!(text.contains(path), "{text}");
    }
    server.shutdown();
}

#[test]
fn every_endpoint_serves_the_published_snapshot() {
    let report = sample_report(&[], 2);
    let opts = MetricsOptions::default();
    let latest = Latest::new();
    let server = server(&latest, EndpointOptions::default(), "ep-serve");
    let addr = server.local_addr();
    latest.publish(Published::render(&report, &opts).expect("render"));

    let m = fetch(addr, "GET", METRICS_PATH);
    assert_eq!(m.status, 200);
    assert_eq!(m.header("content-type"), Some(CONTENT_TYPE));
    assert_eq!(
        String::from_utf8(m.body).expect("UTF-8"),
        render::metrics::render_metrics(&report, &opts).expect("metrics")
    );

    let expected_pprof = render::pprof::render_pprof(&report).expect("pprof");
    for path in [
        PPROF_HEAP_PATH,
        PPROF_ALLOCS_PATH,
        "/debug/pprof/heap?gc=1&debug=0",
    ] {
        let p = fetch(addr, "GET", path);
        assert_eq!(p.status, 200, "{path}");
        assert_eq!(p.header("content-type"), Some(PPROF_CONTENT_TYPE));
        assert_eq!(
            p.header("content-encoding"),
            None,
            "served as the gzipped file it is"
        );
        assert_eq!(p.body, expected_pprof, "{path}");
    }
    let mut decoded = Vec::new();
    GzDecoder::new(&expected_pprof[..])
        .read_to_end(&mut decoded)
        .expect("the body is gzip");
    assert!(!decoded.is_empty());
    let head = fetch(addr, "HEAD", PPROF_HEAP_PATH);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(&*expected_pprof.len().to_string())
    );
    for path in ["/debug/pprof/heap?debug=1", "/debug/pprof/heap?seconds=14"] {
        assert_eq!(fetch(addr, "GET", path).status, 400, "{path}");
    }

    let j = fetch(addr, "GET", REPORT_PATH);
    assert_eq!(j.status, 200);
    assert_eq!(j.header("content-type"), Some("application/json"));
    let text = String::from_utf8(j.body).expect("UTF-8");
    // The saved-session reader takes it back as the same report.
    let back = crate::schema::parse(&text, "/report.json").expect("a saved session");
    assert_eq!(back.totals, report.totals);
    assert_eq!(back.stacks.len(), report.stacks.len());

    let h = fetch(addr, "GET", HEALTH_PATH);
    assert_eq!((h.status, &h.body[..]), (200, &b"ok\n"[..]));
    server.shutdown();
}

#[test]
fn stale_snapshot_is_unhealthy() {
    let latest = Latest::new();
    let server = server(
        &latest,
        EndpointOptions {
            stale_after: Some(Duration::from_millis(200)),
        },
        "ep-stale",
    );
    let addr = server.local_addr();
    latest.publish(Published::from_parts(&b"m\n"[..], &b"p"[..], &b"{}\n"[..]));
    assert_eq!(fetch(addr, "GET", HEALTH_PATH).status, 200);
    std::thread::sleep(Duration::from_millis(400));
    let h = fetch(addr, "GET", HEALTH_PATH);
    assert_eq!(h.status, 503);
    assert!(String::from_utf8_lossy(&h.body).starts_with("stale:"));
    // The data is still served: stale is for the health check to say.
    assert_eq!(fetch(addr, "GET", METRICS_PATH).body, b"m\n");
    latest.publish(Published::from_parts(&b"m2\n"[..], &b"p"[..], &b"{}\n"[..]));
    assert_eq!(fetch(addr, "GET", HEALTH_PATH).status, 200);
    assert_eq!(fetch(addr, "GET", METRICS_PATH).body, b"m2\n");
    server.shutdown();
}

/// The pprof endpoint's body passes the independent decoder (Python protobuf with the published
/// profile.proto, `tests/scripts/check_pprof.py`) against the /report.json of the same
/// snapshot, both fetched over HTTP.
#[test]
fn served_pprof_matches_served_report_in_the_independent_decoder() {
    let Some(python) = std::env::var_os("MEMTRACE_PYTHON") else {
        eprintln!(
            "\n==================================================================\n\
             SKIPPED served_pprof_matches_served_report_in_the_independent_decoder: \
             MEMTRACE_PYTHON not set (the venv xtask makes with protobuf and grpcio-tools), so \
             the served profile was NOT checked against profile.proto. Run `cargo xtask test`.\n\
             ==================================================================\n"
        );
        return;
    };
    let report = crate::model::testkit::mixed_report(None);
    let latest = Latest::new();
    let server = server(&latest, EndpointOptions::default(), "ep-python");
    let addr = server.local_addr();
    latest.publish(Published::render(&report, &MetricsOptions::default()).expect("render"));
    let dir = tempfile::tempdir().expect("temp dir");
    let profile = dir.path().join("heap.pb.gz");
    let json = dir.path().join("report.json");
    std::fs::write(&profile, fetch(addr, "GET", PPROF_HEAP_PATH).body).expect("write");
    std::fs::write(&json, fetch(addr, "GET", REPORT_PATH).body).expect("write");
    server.shutdown();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scripts/check_pprof.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(&profile)
        .arg(&json)
        .output()
        .expect("run check_pprof.py");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "check_pprof.py rejected the served profile:\n{said}"
    );
    assert!(said.contains("OK"), "{said}");
}
