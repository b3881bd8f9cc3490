//! `memtrace serve`: a session that does not end, publishing a snapshot every `--interval`
//! over HTTP — Prometheus metrics, a pprof profile for Parca / Pyroscope, the report JSON.

use std::{net::SocketAddr, time::Duration};

use clap::Args;

use super::{parse_duration, TracingArgs};
use crate::{
    output::OutputOptions,
    render::metrics::MetricsOptions,
    serve::{endpoints, http, Latest, Published},
    session::{Session, SessionOptions, MIN_INTERVAL},
};

/// Snapshots kept for the growth verdict and the report's `snapshots` (memory stays bounded
/// however long the session runs).
const SNAPSHOT_WINDOW: usize = 30;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to serve on. Loopback by default: memtrace has no authentication of its own;
    /// put a NetworkPolicy or kube-rbac-proxy in front before listening elsewhere (see
    /// deploy/README.md).
    #[arg(long, default_value = http::DEFAULT_LISTEN, value_parser = parse_listen, value_name = "ADDR:PORT")]
    pub listen: SocketAddr,

    /// How often a snapshot is taken and published (at least 1s; each reads all the kernel
    /// maps).
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Duration,

    /// The host name in the metrics and reports (default: the kernel's; in a pod on the pod
    /// network, the node's name through the Downward API).
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    pub hostname: Option<String>,

    /// Calling functions, pods and cgroups listed in the metrics (the rest is summed under
    /// `[other]`, so the series stay bounded).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,

    /// No informational messages on stderr (warnings and errors are still shown).
    #[arg(long, short)]
    pub quiet: bool,

    #[command(flatten)]
    pub tracing: TracingArgs,
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    http::parse_listen(s).map_err(|e| e.to_string())
}

impl ServeArgs {
    /// The session these arguments ask for.
    pub fn session_options(&self) -> SessionOptions {
        SessionOptions {
            duration: None,
            min_age: Duration::ZERO,
            grace: Duration::ZERO,
            interval: Some(self.interval),
            sort_growth: false,
            quiet: self.quiet,
            classes: self.tracing.classes(),
            load: self.tracing.load_options(),
            filters: self.tracing.filters(),
            outputs: OutputOptions {
                top: self.top as u64,
                ..OutputOptions::default()
            },
            output_dir: None,
            print_snapshots: false,
            snapshot_window: SNAPSHOT_WINDOW,
            first_snapshot_after: Some(Duration::ZERO),
            hostname: self.hostname.clone(),
            warnings: self.tracing.warnings(),
        }
    }

    fn metrics_options(&self) -> MetricsOptions {
        MetricsOptions {
            top_callers: self.top,
            top_pods: self.top,
            top_cgroups: self.top,
            top_growing: self.top,
            ..MetricsOptions::default()
        }
    }
}

/// Runs `memtrace serve` until SIGINT/SIGTERM.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    if args.interval < MIN_INTERVAL {
        anyhow::bail!("--interval must be at least 1s (e.g. --interval 60s): every snapshot reads all the kernel maps");
    }
    // The port first: a taken address fails before anything is loaded.
    let latest = Latest::new();
    let routes = endpoints::routes(
        latest.clone(),
        endpoints::EndpointOptions {
            stale_after: Some(args.interval * 3 + Duration::from_secs(30)),
        },
    );
    let server = http::Server::start(
        http::ServerConfig {
            listen: args.listen,
            ..http::ServerConfig::default()
        },
        routes,
    )?;
    let mut session = Session::start(args.session_options())?;
    let metrics = args.metrics_options();
    if !args.quiet {
        eprintln!(
            "memtrace: serving http://{}/ (metrics, pprof, report.json) every {}",
            server.local_addr(),
            humantime::format_duration(args.interval)
        );
    }
    let ended_by = session.run_with(|report| {
        latest.publish(Published::render(report, &metrics)?);
        release_free_memory();
        Ok(())
    })?;
    // The final report (programs detached) is the last one served until the server stops.
    let finished = session.finish(ended_by)?;
    latest.publish(Published::render(&finished.report, &metrics)?);
    let stats = server.shutdown();
    if !args.quiet {
        eprintln!("memtrace: served {stats}");
    }
    Ok(())
}

/// Gives the memory a snapshot freed back to the kernel. Each snapshot allocates and frees
/// tens of MiB (the maps' records, the report, its renderings) on the session thread while the
/// HTTP threads allocate in arenas of their own; glibc keeps freed pages mapped, so a serve
/// process's RSS would follow the high-water mark of every arena rather than what it holds
/// (the soak saw it climb with the report's size).
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own arenas and returns free pages to the kernel;
    // it takes the arenas' locks and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
