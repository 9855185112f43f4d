//! The Wi-Fi probe-request footfall source (docs/wifi.md): live AF_PACKET capture on a
//! monitor-mode interface or replay of pcap/pcapng files, both through one [`pipeline`].

#[cfg(feature = "calibrate")]
pub mod calibrate;
pub mod capture;
mod census_body;
pub mod config;
pub mod dot11;
pub mod estimate;
pub mod fcs;
pub mod fleet;
pub mod footfall;
pub mod frame;
pub mod frame_stage;
pub mod live;
pub mod pcap;
pub mod people;
pub mod radiotap;
mod recorded;

pub use config::WifiConfig;

use crate::source::{SourceContext, Started};

/// Starts live capture on the configured monitor interface when enabled.
pub fn start(ctx: &SourceContext) -> Started {
    if !ctx.cfg.sources.wifi.enabled {
        return Started::default();
    }
    Started::tasks(vec![tokio::spawn(live::run(
        ctx.clone(),
        capture::LinkMode::FromDevice,
    ))])
}

/// `storegw replay` for this source: runs `path` through the live pipeline stages, emits the
/// events into `r`, and returns the summary line.
pub fn replay(
    path: &std::path::Path,
    r: &mut crate::source::replay::Replay,
) -> Result<serde_json::Value, String> {
    recorded::run(path, r)
}

feed!(
    /// Wi-Fi probe requests as a feed.
    Wifi,
    "wifi",
    start = start,
    replay = replay
);
