//! The pos feed (see the issue for this source). NOT BUILT YET: configuration accepted, source
//! reports itself as failed when enabled.

use crate::source::SourceContext;
use serde::Deserialize;
use tokio::task::JoinHandle;

/// `[sources.pos]` in the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PosConfig {
    pub enabled: bool,
}

impl PosConfig {
    /// Semantic checks: (dotted key path, message) pairs.
    pub fn validate(&self, _issues: &mut Vec<(String, String)>) {}

    /// Makes relative paths relative to the config file's directory.
    pub fn resolve_paths(&mut self, _base: &std::path::Path) {}
}

/// Starts the source's tasks when enabled.
pub fn start(ctx: &SourceContext) -> Vec<JoinHandle<()>> {
    if ctx.cfg.sources.pos.enabled {
        crate::ops::status::set_source("pos", "failed", Some("not built yet".into()));
    }
    Vec::new()
}

/// Routes the POS source adds to the loopback HTTP server.
pub fn http_routes(_ctx: &SourceContext) -> axum::Router {
    axum::Router::new()
}

/// `storegw replay` for this source: runs `path` through the live pipeline stages, emits the
/// events into `r`, and returns the summary line.
pub fn replay(
    _path: &std::path::Path,
    _r: &mut crate::replay::Replay,
) -> Result<serde_json::Value, String> {
    Err("replay of this source is not built yet".into())
}
