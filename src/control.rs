//! The control socket (`regent status`, `regent step-down`, `regent
//! metrics`), the optional HTTP metrics endpoint, and how both render a
//! snapshot of the node.

mod render;

pub use render::{
    render_metrics, render_status, render_status_json, Counters, HookCounts, HookFigures,
    Snapshot,
};
