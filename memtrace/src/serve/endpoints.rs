//! The endpoints of `memtrace serve`, served from the latest [`Published`] snapshot:
//!
//! | path | what | content type |
//! |---|---|---|
//! | `/metrics` | the Prometheus text format ([`crate::render::metrics`], `docs/metrics.md`) | `text/plain; version=0.0.4; charset=utf-8` |
//! | `/debug/pprof/heap` | the gzipped pprof profile with Go's heap sample types, as `--pprof` writes it | `application/octet-stream` |
//! | `/debug/pprof/allocs` | the same profile (the path Parca and Grafana Alloy scrape by default; Go's differs only in its default sample type) | `application/octet-stream` |
//! | `/report.json` | the whole report in the saved-session schema (`docs/json-schema.md`), compact | `application/json` |
//! | `/healthz` | `ok`, or 503 before the first snapshot and when the last one is older than [`EndpointOptions::stale_after`] | `text/plain` |
//! | `/` | this list | `text/plain` |
//!
//! Before the first snapshot every data endpoint answers 503 with `Retry-After`: publish one
//! right after the programs are attached. The pprof endpoints answer 400 to `?debug=N` (N > 0,
//! Go's text form) and `?seconds=N` (a delta profile): memtrace serves the binary profile of
//! the session so far only; any other query is ignored, like Go's `?gc=1`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    http::{Body, Request, Response, Routes},
    Latest,
};
use crate::{
    model::Report,
    render::{
        self,
        metrics::{MetricsOptions, CONTENT_TYPE},
    },
};

pub const METRICS_PATH: &str = "/metrics";
pub const PPROF_HEAP_PATH: &str = "/debug/pprof/heap";
pub const PPROF_ALLOCS_PATH: &str = "/debug/pprof/allocs";
pub const REPORT_PATH: &str = "/report.json";
pub const HEALTH_PATH: &str = "/healthz";

/// Content type of the pprof endpoints (as Go's net/http/pprof serves them).
pub const PPROF_CONTENT_TYPE: &str = "application/octet-stream";

/// One snapshot, rendered once for every endpoint (each request only clones an `Arc`).
#[derive(Clone, Debug)]
pub struct Published {
    /// `/metrics`: the Prometheus text format.
    pub metrics: Body,
    /// `/debug/pprof/heap`: the gzipped profile.
    pub pprof: Body,
    /// `/report.json`.
    pub report_json: Body,
    /// When it was made (for `/healthz`).
    pub published_at: Instant,
}

impl Published {
    /// Renders the report for every endpoint.
    pub fn render(report: &Report, metrics: &MetricsOptions) -> anyhow::Result<Published> {
        let text = render::metrics::render_metrics(report, metrics)
            .map_err(|_| anyhow::anyhow!("encoding the Prometheus metrics failed"))?;
        let pprof = render::pprof::render_pprof(report).context("rendering the pprof profile")?;
        let json = crate::schema::to_vec_compact(report)?;
        Ok(Published::from_parts(text.into_bytes(), pprof, json))
    }

    /// A snapshot of already rendered bodies (e.g. a fixed exposition for a transport test).
    pub fn from_parts(
        metrics: impl Into<Body>,
        pprof: impl Into<Body>,
        report_json: impl Into<Body>,
    ) -> Published {
        Published {
            metrics: metrics.into(),
            pprof: pprof.into(),
            report_json: report_json.into(),
            published_at: Instant::now(),
        }
    }
}

/// How the endpoints judge health.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointOptions {
    /// `/healthz` answers 503 when the latest snapshot is older than this (e.g. three
    /// intervals: the session loop is stuck); `None`: any snapshot is healthy.
    pub stale_after: Option<Duration>,
}

fn not_yet() -> Response {
    Response::text(
        503,
        "memtrace: no snapshot yet (the first one is published shortly after tracing starts)\n",
    )
    .with_header("Retry-After", "5")
}

fn pprof_response(latest: &Latest<Published>, request: &Request) -> Response {
    if request
        .query_param("debug")
        .is_some_and(|d| !d.is_empty() && d != "0")
    {
        return Response::text(
            400,
            "memtrace serves the binary profile only (debug=0); read it with \
             `go tool pprof -top URL`\n",
        );
    }
    if request.query_param("seconds").is_some() {
        return Response::text(
            400,
            "memtrace serves the profile of the session so far, not a delta profile: scrape \
             without seconds= (Parca, Grafana Alloy: delta = false)\n",
        );
    }
    match latest.get() {
        Some(p) => Response::new(200, PPROF_CONTENT_TYPE, Arc::clone(&p.pprof))
            .with_header("Content-Disposition", "attachment; filename=\"heap\""),
        None => not_yet(),
    }
}

/// The route table of `memtrace serve` over `latest`.
pub fn routes(latest: Latest<Published>, opts: EndpointOptions) -> Routes {
    let index = format!(
        "memtrace {}: kernel memory allocations still held, by stack\n\
         {METRICS_PATH}               Prometheus metrics (docs/metrics.md)\n\
         {PPROF_HEAP_PATH}     pprof profile (gzipped; go tool pprof URL)\n\
         {PPROF_ALLOCS_PATH}   the same profile\n\
         {REPORT_PATH}           the whole report (docs/json-schema.md)\n\
         {HEALTH_PATH}               health\n",
        env!("CARGO_PKG_VERSION")
    );
    let (m, h, a, r, z) = (
        latest.clone(),
        latest.clone(),
        latest.clone(),
        latest.clone(),
        latest,
    );
    Routes::new()
        .get("/", move |_req| Response::text(200, index.clone()))
        .get(METRICS_PATH, move |_req| match m.get() {
            Some(p) => Response::new(200, CONTENT_TYPE, Arc::clone(&p.metrics)),
            None => not_yet(),
        })
        .get(PPROF_HEAP_PATH, move |req| pprof_response(&h, req))
        .get(PPROF_ALLOCS_PATH, move |req| pprof_response(&a, req))
        .get(REPORT_PATH, move |_req| match r.get() {
            Some(p) => Response::new(200, "application/json", Arc::clone(&p.report_json)),
            None => not_yet(),
        })
        .get(HEALTH_PATH, move |_req| {
            let Some(p) = z.get() else {
                return Response::text(503, "starting: no snapshot yet\n");
            };
            let age = p.published_at.elapsed();
            match opts.stale_after {
                Some(limit) if age > limit => Response::text(
                    503,
                    format!(
                        "stale: the last snapshot is {:.0} s old (limit {:.0} s)\n",
                        age.as_secs_f64(),
                        limit.as_secs_f64()
                    ),
                ),
                _ => Response::text(200, "ok\n"),
            }
        })
}

#[cfg(test)]
mod tests;
