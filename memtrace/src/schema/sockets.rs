//! `memtrace sockets --json`: its own document (fields in this order), whose sockets have the
//! shape of the trace report's `sockets[]`.

use anyhow::Context as _;
use serde::Serialize;

use super::v1::SocketV1;
use crate::model::SocketScan;

/// The `schema` of the JSON document: kind and version. Bump the version on any incompatible
/// change.
pub const SOCKETS_SCHEMA: &str = "memtrace-sockets/1";

/// `memtrace sockets --json`.
#[derive(Clone, Debug, Serialize)]
pub struct SocketsDocument {
    /// [`SOCKETS_SCHEMA`].
    pub schema: String,
    pub host: String,
    /// When the sockets were read (Unix time, seconds).
    pub collected_unix: f64,
    /// `--min-bytes`.
    pub min_bytes: u64,
    /// Network namespaces listed.
    pub namespaces: usize,
    /// Sockets seen before `min_bytes`.
    pub scanned: usize,
    /// Sum of `held_bytes` of `sockets`.
    pub held_bytes: u64,
    pub notes: Vec<String>,
    /// Every socket holding at least `min_bytes`, largest first.
    pub sockets: Vec<SocketV1>,
}

impl SocketsDocument {
    pub fn new(scan: &SocketScan, host: String, collected_unix: f64, min_bytes: u64) -> Self {
        SocketsDocument {
            schema: SOCKETS_SCHEMA.to_string(),
            host,
            collected_unix,
            min_bytes,
            namespaces: scan.namespaces,
            scanned: scan.scanned,
            held_bytes: scan
                .sockets
                .iter()
                .fold(0u64, |a, s| a.saturating_add(s.held_bytes)),
            notes: scan.notes.clone(),
            sockets: scan.sockets.iter().map(Into::into).collect(),
        }
    }
}

/// The document as pretty JSON.
pub fn to_json(doc: &SocketsDocument) -> anyhow::Result<String> {
    serde_json::to_string_pretty(doc).context("encoding the sockets as JSON")
}
