//! The Wi-Fi probe-request footfall source (docs/wifi.md).

pub mod dot11;
pub mod fcs;
pub mod frame;
pub mod pcap;
pub mod radiotap;

use crate::source::SourceContext;
use serde::Deserialize;
use tokio::task::JoinHandle;

/// `[sources.wifi]` in the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WifiConfig {
    pub enabled: bool,
}

impl WifiConfig {
    /// Semantic checks: (dotted key path, message) pairs.
    pub fn validate(&self, _issues: &mut Vec<(String, String)>) {}

    /// Makes relative paths relative to the config file's directory.
    pub fn resolve_paths(&mut self, _base: &std::path::Path) {}
}

/// Starts the source's tasks when enabled.
pub fn start(ctx: &SourceContext) -> Vec<JoinHandle<()>> {
    if ctx.cfg.sources.wifi.enabled {
        crate::ops::status::set_source("wifi", "failed", Some("not built yet".into()));
    }
    Vec::new()
}

/// `storegw replay` for this source.
pub fn replay(
    _path: &std::path::Path,
    _r: &mut crate::replay::Replay,
) -> Result<serde_json::Value, String> {
    Err("replay of this source is not built yet".into())
}
