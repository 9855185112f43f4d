//! `storegw replay --wifi FILE`: a pcap or pcapng capture through the same [`FrameStage`] as
//! live capture, with the capture's own timestamps as event time.

use super::frame_stage::FrameStage;
use super::pcap::{self, Reader};

/// Runs `path` through the pipeline, emitting into `r`; returns the summary object.
pub fn run(
    path: &std::path::Path,
    r: &mut crate::source::replay::Replay,
) -> Result<serde_json::Value, String> {
    let buf = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let format = pcap::detect(&buf).ok_or_else(|| {
        format!(
            "{}: not a pcap or pcapng file (unknown magic number)",
            path.display()
        )
    })?;
    let reader = Reader::new(&buf).map_err(|e| format!("{}: {e}", path.display()))?;
    let cfg = r.cfg.sources.wifi.clone();
    let mut p = FrameStage::new(&cfg, r.cfg.privacy.min_count, r.devices.clone(), true);
    let mut out = Vec::new();
    let mut file_error = None;
    let mut last_ts = 0i64;
    for rec in reader {
        let rec = match rec {
            Ok(rec) => rec,
            Err(e) => {
                // The rest of the file cannot be framed: count it once and stop.
                p.stats.frames += 1;
                p.stats.malformed += 1;
                file_error = Some(e.to_string());
                break;
            }
        };
        let ts_ms = if rec.ts_ns == 0 {
            last_ts
        } else {
            rec.ts_ns.div_euclid(1_000_000)
        };
        last_ts = ts_ms;
        let cut = (rec.data.len() as u64) < rec.orig_len as u64;
        p.frame(rec.linktype, rec.data, cut, ts_ms, &mut out);
        for e in out.drain(..) {
            r.emit(e);
        }
    }
    p.finish(&mut out);
    for e in out.drain(..) {
        r.emit(e);
    }
    let (distinct, randomized, estimated, in_store_estimated) = p.totals();
    let s = p.stats;
    let mut summary = serde_json::json!({
        "source": "wifi",
        "format": match format { pcap::Format::Pcap => "pcap", pcap::Format::Pcapng => "pcapng" },
        "frames": s.frames,
        "probe_requests": s.probe_requests,
        "accepted": s.accepted,
        "distinct_devices": distinct,
        "randomized_devices": randomized,
        "devices_estimated": estimated,
        "in_store_devices_estimated": in_store_estimated,
        "malformed": s.malformed,
        "bad_fcs": s.bad_fcs,
        "group_source": s.group_source,
        "no_rssi": s.no_rssi,
        "people_estimated_peak": p.footfall.people_peak,
        "resident_estimated_peak": p.footfall.resident_peak,
        "arrivals_estimated": p.footfall.arrivals.round() as u64,
        "census": p.footfall.census_events,
        "visits": p.footfall.visit_events,
        "untracked": p.footfall.untracked + p.estimator.untracked,
    });
    if let (Some(e), Some(m)) = (file_error, summary.as_object_mut()) {
        m.insert("file_error".into(), e.into());
    }
    Ok(summary)
}
