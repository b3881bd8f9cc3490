//! `memtrace sockets`.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap::Args;

use super::parse_size;
use crate::sockets;

/// `memtrace sockets`.
#[derive(Debug, Clone, Args)]
pub struct SocketsArgs {
    /// Only sockets holding at least this much memory (receive + send + other buffers as the
    /// kernel charges them; e.g. 1MiB, 64K, 0 for all).
    #[arg(long, default_value = "1MiB", value_parser = parse_size, value_name = "SIZE")]
    pub min_bytes: u64,

    /// Sockets listed in the table (0: all; the JSON has all that pass --min-bytes).
    #[arg(long, default_value_t = 20)]
    pub top: u64,

    /// Write the sockets as JSON to this file (`-` for stdout instead of the table).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

pub fn run(args: &SocketsArgs) -> anyhow::Result<()> {
    let scan = sockets::collect_with(&sockets::CollectOptions {
        min_bytes: args.min_bytes,
        ..sockets::CollectOptions::default()
    })?;
    let top = usize::try_from(args.top).unwrap_or(usize::MAX);
    let doc = crate::schema::sockets::SocketsDocument::new(
        &scan,
        crate::sysinfo::host_name(),
        crate::sysinfo::unix_now(),
        args.min_bytes,
    );
    let mut stdout = std::io::stdout().lock();
    match args.json.as_deref() {
        Some(path) if path == Path::new("-") => {
            let json = crate::schema::sockets::to_json(&doc)?;
            writeln!(stdout, "{json}").context("writing the JSON to stdout")?;
            for note in &scan.notes {
                eprintln!("memtrace: note: {note}");
            }
        }
        json => {
            if let Some(path) = json {
                let text = crate::schema::sockets::to_json(&doc)?;
                crate::fsutil::write_atomic(path, format!("{text}\n").as_bytes())
                    .with_context(|| format!("writing the sockets JSON to {}", path.display()))?;
            }
            write!(
                stdout,
                "{}",
                crate::render::sockets::render_scan(&scan, top, args.min_bytes)
            )
            .context("writing the table to stdout")?;
        }
    }
    stdout.flush().context("writing to stdout")
}
