//! Renderers of a [`crate::model::Report`]: human text, JSON (stable schema) and folded stacks
//! (for flamegraph.pl / inferno).

pub mod folded;
pub mod json;
pub mod pprof;
pub mod svg;
pub mod text;

pub use json::JSON_SCHEMA_VERSION;
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
