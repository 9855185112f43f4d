//! The Wi-Fi stage every frame goes through, live or replayed: decode, apply the bad-FCS and
//! group-address policies, pseudonymize the source address, aggregate. Raw MACs and SSIDs do
//! not outlive the call that decodes their frame; only pseudonyms reach [`Footfall`].

use super::config::{Policy, WifiConfig};
use super::dot11::{is_group, is_locally_administered};
use super::footfall::{Footfall, Sighting};
use super::frame::{decode, Decoded, FcsStatus};
use crate::event::Event;
use crate::privacy::DevicePseudonymizer;
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;

/// Frame counters (the replay summary and the live metrics).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Every frame handed to the stage.
    pub frames: u64,
    /// Probe requests with a complete 802.11 header (what TShark lists).
    pub probe_requests: u64,
    /// Probe requests that reached the footfall counts.
    pub accepted: u64,
    /// Frames that could not be decoded, probe requests with broken elements, and
    /// group-address probe requests when `group_source = "drop"`.
    pub malformed: u64,
    /// Probe requests whose FCS was bad (computed or flagged by the receiver).
    pub bad_fcs: u64,
    /// Probe requests whose source address has the group bit set.
    pub group_source: u64,
    /// Probe requests without a dBm signal (counted, kept; never "in store").
    pub no_rssi: u64,
}

/// The per-source processing stage.
pub struct Pipeline {
    cfg: WifiConfig,
    devices: Arc<DevicePseudonymizer>,
    /// Census windows and visit sessions.
    pub footfall: Footfall,
    /// Counters since start.
    pub stats: Stats,
    totals: Option<(HashSet<String>, HashSet<String>)>,
}

impl Pipeline {
    /// Applies a reloaded configuration (SIGHUP): FCS and group-address policies and the
    /// footfall thresholds.
    pub fn reconfigure(&mut self, cfg: &WifiConfig, min_count: u32) {
        self.footfall.reconfigure(cfg, min_count);
        self.cfg = cfg.clone();
    }

    /// A stage for `cfg`; `track_totals` keeps the distinct pseudonyms of the whole run (replay
    /// summary only: the live gateway has no use for an ever-growing set).
    pub fn new(
        cfg: &WifiConfig,
        min_count: u32,
        devices: Arc<DevicePseudonymizer>,
        track_totals: bool,
    ) -> Pipeline {
        Pipeline {
            footfall: Footfall::new(cfg, min_count),
            cfg: cfg.clone(),
            devices,
            stats: Stats::default(),
            totals: track_totals.then(|| (HashSet::new(), HashSet::new())),
        }
    }

    /// Processes one captured frame received at `ts_ms`; `cut` when the capture stored fewer
    /// bytes than were on the air. Events produced go to `out`.
    pub fn frame(
        &mut self,
        linktype: u16,
        data: &[u8],
        cut: bool,
        ts_ms: i64,
        out: &mut Vec<Event>,
    ) {
        self.stats.frames += 1;
        let p = match decode(linktype, data, cut, self.cfg.verify_fcs) {
            Decoded::Probe(p) => p,
            Decoded::Other => return,
            Decoded::Malformed(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        self.stats.probe_requests += 1;
        if p.fcs == FcsStatus::Bad {
            self.stats.bad_fcs += 1;
            if self.cfg.bad_fcs == Policy::Drop {
                return;
            }
        }
        if is_group(&p.req.sa) {
            self.stats.group_source += 1;
            if self.cfg.group_source == Policy::Drop {
                self.stats.malformed += 1;
                return;
            }
        }
        if !p.req.elements_complete && !cut {
            self.stats.malformed += 1;
            return;
        }
        if p.rssi.is_none() {
            self.stats.no_rssi += 1;
        }
        self.stats.accepted += 1;
        let randomized = is_locally_administered(&p.req.sa);
        let Ok((device, epoch)) = self.devices.pseudonym(&p.req.sa, ts_ms) else {
            // No key for this epoch (fail closed): the probe is dropped, never kept raw.
            crate::ops::metrics::global().count(
                "storegw_dropped_events_total",
                &crate::ops::metrics::labels(&[("stream", "wifi"), ("reason", "no_key")]),
                1,
            );
            return;
        };
        if let Some((all, rnd)) = &mut self.totals {
            if randomized && !rnd.contains(&device) {
                rnd.insert(device.clone());
            }
            if !all.contains(&device) {
                all.insert(device.clone());
            }
        }
        self.footfall.observe(
            Sighting {
                ts_ms,
                device,
                epoch,
                randomized,
                rssi: p.rssi,
                directed: p.req.ssid.is_directed(),
            },
            out,
        );
    }

    /// Moves event time forward (live timer ticks).
    pub fn advance(&mut self, now_ms: i64, out: &mut Vec<Event>) {
        self.footfall.advance(now_ms, out);
    }

    /// Emits everything still open (end of replay, shutdown).
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.footfall.finish(out);
    }

    /// Distinct devices and distinct randomized devices over the run (when tracked).
    pub fn totals(&self) -> (u64, u64) {
        self.totals
            .as_ref()
            .map(|(a, r)| (a.len() as u64, r.len() as u64))
            .unwrap_or((0, 0))
    }
}
