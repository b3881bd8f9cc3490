//! The Prometheus harness (`memtrace-testkit`'s `prometheus.rs`) against a real Prometheus
//! server: it scrapes a tiny static exporter served by memtrace's own HTTP server and
//! endpoints (`crate::serve`, the code path `memtrace serve` uses) with a fixed exposition, not
//! memtrace's data: this is the transport test. Checked through Prometheus's HTTP API: the
//! values and labels (escapes included) arrive intact, the series count is the exposition's,
//! a newly published snapshot replaces the old one, and scrapes keep succeeding while other
//! clients hold idle connections beyond the server's connection limit and trickle a request
//! a byte at a time. The server is stopped by PID at the end and must be gone.
//!
//! Unprivileged. Skipped (loudly) without a Prometheus binary; `cargo xtask test` provides one.

use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context as _, Result};
use memtrace_testkit::{http_get, log, require_prometheus, Prometheus, PrometheusConfig};

use super::{endpoints, http, Latest, Published};

const UP_TIMEOUT: Duration = Duration::from_secs(60);

/// A fixed exposition in the shape memtrace's renderer writes (32 MiB of network memory, a
/// lost-event counter, a label value with every escape).
const FIRST: &str = "\
# HELP memtrace_outstanding_bytes Bytes allocated during the session and still not freed.
# TYPE memtrace_outstanding_bytes gauge
memtrace_outstanding_bytes{kind=\"page\",class=\"network\"} 33554432
memtrace_outstanding_bytes{kind=\"slab\",class=\"other-kernel\"} 4096
# HELP memtrace_caller_outstanding_bytes Outstanding bytes by calling function.
# TYPE memtrace_caller_outstanding_bytes gauge
memtrace_caller_outstanding_bytes{caller=\"skb_page_frag_refill\"} 33554432
memtrace_caller_outstanding_bytes{caller=\"odd \\\"q\\\" \\\\ x\\ny\"} 4096
memtrace_caller_outstanding_bytes{caller=\"[other]\"} 0
# HELP memtrace_events_total Every event counter of the session.
# TYPE memtrace_events_total counter
memtrace_events_total{counter=\"outstanding_map_full\",failure=\"true\"} 0
memtrace_events_total{counter=\"allocs_seen\",failure=\"false\"} 12345
";
const FIRST_SERIES: usize = 7;

fn second() -> String {
    FIRST
        .replace("} 33554432\n", "} 67108864\n")
        .replace("} 12345\n", "} 23456\n")
}

fn up(p: &Prometheus) -> Result<Option<f64>> {
    p.query_value("up{job=\"memtrace\"}")
}

#[test]
fn prometheus_scrapes_memtrace_http_server() {
    if require_prometheus().is_none() {
        return;
    }
    if let Err(e) = scenario() {
        panic!("{e:#}");
    }
}

fn scenario() -> Result<()> {
    let latest = Latest::new();
    latest.publish(Published::from_parts(
        FIRST.as_bytes().to_vec(),
        Vec::new(),
        b"{}\n".to_vec(),
    ));
    let server = http::Server::start(
        http::ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_connections: 32,
            ..http::ServerConfig::default()
        },
        endpoints::routes(latest.clone(), endpoints::EndpointOptions::default()),
    )
    .context("starting memtrace's HTTP server")?;
    let target = server.local_addr();
    // The exporter answers before Prometheus is involved.
    let direct = http_get(target, "/metrics", Duration::from_secs(5))?;
    ensure!(direct.status == 200 && direct.text() == FIRST, "{direct:?}");

    let prometheus = Prometheus::start(&PrometheusConfig::scraping(&[target]))?;
    let targets = prometheus.wait_until_up(UP_TIMEOUT)?;
    ensure!(
        targets.len() == 1 && targets[0].scrape_url == format!("http://{target}/metrics"),
        "{targets:?}"
    );

    let network = prometheus.wait_for("the network bytes", UP_TIMEOUT, |p| {
        p.query_value("memtrace_outstanding_bytes{class=\"network\"}")
    })?;
    ensure!(network == 33554432.0, "network bytes {network}");
    ensure!(up(&prometheus)? == Some(1.0), "up is not 1");
    let lost = prometheus.query_value("memtrace_events_total{failure=\"true\"}")?;
    ensure!(lost == Some(0.0), "lost-event counter: {lost:?}");
    let series = prometheus.series_count("{__name__=~\"memtrace_.+\"}")?;
    ensure!(
        series == FIRST_SERIES,
        "{series} memtrace series, expected {FIRST_SERIES}"
    );
    let scraped = prometheus.query_value("scrape_samples_scraped{job=\"memtrace\"}")?;
    ensure!(
        scraped == Some(FIRST_SERIES as f64),
        "scrape_samples_scraped {scraped:?}"
    );
    let names = prometheus.metric_names()?;
    for name in [
        "memtrace_outstanding_bytes",
        "memtrace_caller_outstanding_bytes",
        "memtrace_events_total",
    ] {
        ensure!(
            names.iter().any(|n| n == name),
            "{name} missing from {names:?}"
        );
    }
    // The escaped label value arrives as written.
    let odd = prometheus.query("memtrace_caller_outstanding_bytes{caller=~\"(?s)odd.*\"}")?;
    ensure!(
        odd.len() == 1
            && odd[0].metric.get("caller").map(String::as_str) == Some("odd \"q\" \\ x\ny"),
        "{odd:?}"
    );

    // A new snapshot replaces the old one for the next scrape.
    latest.publish(Published::from_parts(
        second().into_bytes(),
        Vec::new(),
        b"{}\n".to_vec(),
    ));
    prometheus.wait_for("the second snapshot", Duration::from_secs(30), |p| {
        Ok(
            p.query_value("memtrace_outstanding_bytes{class=\"network\"}")?
                .filter(|v| *v == 67108864.0),
        )
    })?;
    let rate =
        prometheus.query_value("increase(memtrace_events_total{counter=\"allocs_seen\"}[1m])")?;
    ensure!(
        rate.is_some_and(|r| r > 0.0),
        "the counter went up: {rate:?}"
    );

    // Abuse while Prometheus scrapes: more idle connections than the server's limit (the
    // oldest are evicted to make room) and a client sending one byte every 200 ms. Every
    // scrape must still succeed.
    let idle: Vec<TcpStream> = (0..48)
        .map(|_| TcpStream::connect(target))
        .collect::<std::io::Result<_>>()
        .context("opening idle connections")?;
    let slow = std::thread::spawn(move || -> Result<()> {
        let mut s = TcpStream::connect(target)?;
        for b in b"GET /metrics HTTP/1.1\r\nHost: slow\r\n\r\n" {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    });
    let before = prometheus
        .query_value("count_over_time(up{job=\"memtrace\"}[1h])")?
        .unwrap_or(0.0);
    let abuse_started = Instant::now();
    let after = prometheus.wait_for(
        "ten more scrapes during the abuse",
        Duration::from_secs(60),
        |p| {
            let now = p
                .query_value("count_over_time(up{job=\"memtrace\"}[1h])")?
                .unwrap_or(0.0);
            Ok((now >= before + 10.0).then_some(now))
        },
    )?;
    let window = abuse_started.elapsed().as_secs() + 1;
    let worst =
        prometheus.query_value(&format!("min_over_time(up{{job=\"memtrace\"}}[{window}s])"))?;
    ensure!(
        worst == Some(1.0),
        "a scrape failed during the abuse: min(up) {worst:?}"
    );
    let slowest = prometheus
        .query_value(&format!(
            "max_over_time(scrape_duration_seconds{{job=\"memtrace\"}}[{window}s])"
        ))?
        .unwrap_or(f64::NAN);
    ensure!(slowest < 1.0, "a scrape took {slowest} s during the abuse");
    drop(idle);
    let _ = slow.join();
    let stats = server.stats();
    log(&format!(
        "prometheus transport: {series} series, {} scrapes during the abuse, slowest {:.1} ms; \
         server: {stats:?}",
        after - before,
        slowest * 1000.0
    ));
    ensure!(
        stats.evicted > 0,
        "the idle connections were never evicted: {stats:?}"
    );

    let pid = prometheus.pid();
    prometheus.stop()?;
    // SAFETY: signal 0 only checks whether a process with that PID exists.
    let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
    ensure!(!alive, "Prometheus (pid {pid}) still runs after stop()");
    server.shutdown();
    Ok(())
}

/// Dropping the handle stops the server too (the usual path when an assertion fails).
#[test]
fn dropping_the_handle_stops_prometheus() {
    if require_prometheus().is_none() {
        return;
    }
    let prometheus = Prometheus::start(&PrometheusConfig::scraping(&[SocketAddr::from((
        [127, 0, 0, 1],
        9,
    ))]))
    .expect("Prometheus starts");
    let pid = prometheus.pid();
    let addr = prometheus.addr();
    // Its own API works (the target on port 9 is down: nothing listens there).
    let down = prometheus
        .wait_for("the target scraped", UP_TIMEOUT, |p| {
            let t = p.targets()?;
            Ok((t.len() == 1 && t[0].health == "down").then_some(t))
        })
        .expect("the unreachable target is reported down");
    assert!(!down[0].last_error.is_empty(), "{down:?}");
    drop(prometheus);
    // SAFETY: signal 0 only checks whether a process with that PID exists.
    assert_ne!(
        unsafe { libc::kill(pid as libc::pid_t, 0) },
        0,
        "pid {pid} alive"
    );
    assert!(TcpStream::connect(addr).is_err(), "{addr} still answers");
}
