//! The ble feed (see the issue for this source). NOT BUILT YET: configuration accepted, source
//! reports itself as failed when enabled.

pub mod adv;
pub mod btsnoop;
pub mod input;

use crate::source::SourceContext;
use serde::Deserialize;
use tokio::task::JoinHandle;

/// `[sources.ble]` in the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BleConfig {
    pub enabled: bool,
}

impl BleConfig {
    /// Semantic checks: (dotted key path, message) pairs.
    pub fn validate(&self, _issues: &mut Vec<(String, String)>) {}

    /// Makes relative paths relative to the config file's directory.
    pub fn resolve_paths(&mut self, _base: &std::path::Path) {}
}

/// Starts the source's tasks when enabled.
pub fn start(ctx: &SourceContext) -> Vec<JoinHandle<()>> {
    if ctx.cfg.sources.ble.enabled {
        crate::ops::status::set_source("ble", "failed", Some("not built yet".into()));
    }
    Vec::new()
}

/// `storegw replay` for this source: runs `path` through the live pipeline stages, emits the
/// events into `r`, and returns the summary line.
pub fn replay(
    _path: &std::path::Path,
    _r: &mut crate::replay::Replay,
) -> Result<serde_json::Value, String> {
    Err("replay of this source is not built yet".into())
}
