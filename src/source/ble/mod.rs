//! The BLE beacon source: decodes advertisements (live from BlueZ, or replayed from btsnoop
//! logs), pseudonymizes addresses, and aggregates sightings, presence and census counts.
//!
//! One module per concept: `adv` (pure decoders), `btsnoop` and `input` (recorded input),
//! `aggregate` (windows and sessions), `scan` (btleplug and the watchdog), `config`.

pub mod adv;
pub mod aggregate;
pub mod btsnoop;
pub mod config;
pub mod input;
#[cfg(feature = "ble-live")]
pub mod scan;

pub use config::BleConfig;

use crate::source::SourceContext;
use crate::source::Started;

/// Starts the scanner when enabled. It must run inside the tokio runtime; failures to reach
/// BlueZ are reported in status and retried, never returned.
pub fn start(ctx: &SourceContext) -> Started {
    let ble = &ctx.cfg.sources.ble;
    if !ble.enabled {
        return Started::default();
    }
    if ble.known_beacons == "allowlist" && ble.allowlist.is_empty() {
        tracing::warn!(
            source = "ble",
            "no beacon is known ([sources.ble.allowlist] is empty): every device only counts in \
             ble.census; list this store's beacons to get ble.sighting and ble.presence \
             (docs/ble.md)"
        );
    }
    #[cfg(feature = "ble-live")]
    {
        Started::tasks(vec![tokio::spawn(scan::run(ctx.clone()))])
    }
    #[cfg(not(feature = "ble-live"))]
    {
        ctx.telemetry.health().set_source(
            "ble",
            crate::telemetry::health::SourceState::Failed,
            Some("built without the ble-live feature: live scanning unavailable".into()),
        );
        Started::default()
    }
}

/// `storegw replay --ble FILE`: runs a btsnoop log or JSON lines of reports through the same
/// aggregator as live scanning (time taken from the records), emits the events into `r`, and
/// returns the summary line.
pub fn replay(
    path: &std::path::Path,
    r: &mut crate::source::replay::Replay,
) -> Result<serde_json::Value, String> {
    let cfg = r.cfg.sources.ble.clone();
    let mut agg = aggregate::Aggregator::new(&cfg, r.cfg.privacy.min_count, r.devices.clone());
    let mut out = Vec::new();
    let mut last: Option<i64> = None;
    let format = r.format.clone();
    let st = input::for_each_report(path, format.as_deref(), |ts_us, rep| {
        let ts = ts_us.div_euclid(1000);
        agg.push(ts, &rep, &mut out);
        last = Some(last.map_or(ts, |l| l.max(ts)));
        for e in out.drain(..) {
            r.emit(e);
        }
    })?;
    if let Some(l) = last {
        agg.finish(l, &mut out);
    }
    for e in out.drain(..) {
        r.emit(e);
    }
    Ok(summary(&st, &agg.stats))
}

/// The replay summary line.
fn summary(st: &input::InputStats, s: &aggregate::Stats) -> serde_json::Value {
    let mut decoded = serde_json::Map::new();
    for t in [
        "ibeacon",
        "eddystone_uid",
        "eddystone_url",
        "eddystone_tlm",
        "eddystone_tlm_encrypted",
        "eddystone_eid",
        "altbeacon",
    ] {
        decoded.insert(t.into(), s.decoded.get(t).copied().unwrap_or(0).into());
    }
    serde_json::json!({
        "source": "ble",
        "records": st.records,
        "skipped": st.skipped,
        "reports": s.reports,
        "malformed": st.truncated + st.bad_reports + st.bad_lines + s.malformed_ad,
        "malformed_detail": {
            "truncated_records": st.truncated,
            "bad_reports": st.bad_reports,
            "bad_lines": st.bad_lines,
            "ad_structures": s.malformed_ad,
        },
        "decoded": decoded,
        "sightings": s.sightings,
        "presence": s.presence,
        "census": s.census,
    })
}

feed!(
    /// BLE beacons as a feed.
    Ble,
    "ble",
    start = start,
    replay = replay
);
