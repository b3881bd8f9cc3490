//! Renderers of a [`crate::model::Report`]: human text, folded stacks (for flamegraph.pl /
//! inferno), a flame graph SVG, pprof, and the sockets table. The JSON is the schema's
//! (`crate::schema`).

pub mod folded;
pub mod metrics;
pub mod pprof;
pub mod sockets;
pub mod svg;
pub mod text;

pub use svg::{FlameBy, SvgOptions};

/// Options of the text renderer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderOptions {
    /// Rows of the callers table and stacks listed in detail; 0 lists everything.
    pub top: usize,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions { top: 10 }
    }
}
