//! The Wi-Fi stage every frame goes through, live or replayed: decode, apply the bad-FCS and
//! group-address policies, replace the source address and the element list by keyed hashes
//! ([`crate::privacy::wifi::ProbeKeys`]), estimate the device, aggregate. Raw MACs and SSIDs do
//! not outlive the call that decodes their frame; only keyed hashes (key in RAM, new at every
//! key rotation) and track numbers reach [`Estimator`] and [`Footfall`].

use super::config::{Policy, WifiConfig};
use super::dot11::{is_group, is_locally_administered};
use super::estimate::{self, Estimator, Placement};
use super::fleet::Fleets;
use super::footfall::{Footfall, Sighting};
use super::frame::{decode, Decoded, FcsStatus};
use crate::event::Event;
use crate::privacy::wifi::{KeyEpoch, ProbeKeys};
use crate::privacy::DevicePseudonymizer;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Strongest antenna signal taken as a measurement; above it the field counts as absent.
const MAX_PLAUSIBLE_DBM: i8 = 0;

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
    /// Probe requests dropped because the device key could not be made (fail closed); live,
    /// `storegw_dropped_events_total{stream="wifi",reason="no_key"}`. Not in the replay summary.
    #[serde(skip)]
    pub no_key: u64,
}

/// Whole-run totals (replay summary): distinct addresses, distinct randomized addresses, and
/// estimated devices. A track that starts from an address an expired track already had is the
/// same device again (one address, one transmitter), so a phone silent for longer than the
/// session gap is not counted twice.
#[derive(Default)]
struct Totals {
    addrs: HashSet<u64>,
    randomized: HashSet<u64>,
    device_of_addr: HashMap<u64, u64>,
    device_of_track: HashMap<u64, u64>,
    /// Devices found to be another device's second track: resolved to it.
    folded: HashMap<u64, u64>,
    in_store: HashSet<u64>,
    /// Distinct devices (new ones minus folded ones).
    devices: u64,
    /// The last device number handed out.
    last_id: u64,
}

impl Totals {
    fn place(&mut self, addr: u64, track: u64, placement: Placement, in_store: bool) {
        if let Placement::Merged(from) = placement {
            self.fold(from, track);
        }
        let known = match placement {
            Placement::New | Placement::Untracked => self.device_of_addr.get(&addr),
            Placement::Known | Placement::Linked | Placement::Split | Placement::Merged(_) => {
                self.device_of_track.get(&track)
            }
        };
        let device = match known {
            Some(d) => self.resolve(*d),
            None => {
                self.devices += 1;
                self.last_id += 1;
                self.last_id
            }
        };
        self.device_of_track.insert(track, device);
        self.device_of_addr.entry(addr).or_insert(device);
        if in_store {
            self.in_store.insert(device);
        }
    }

    /// The device a device number stands for now (after folds).
    fn resolve(&self, mut d: u64) -> u64 {
        while let Some(&to) = self.folded.get(&d) {
            d = to;
        }
        d
    }

    /// Track `from` was a second track of `into`'s phone: one device, counted once.
    fn fold(&mut self, from: u64, into: u64) {
        let Some(gone) = self.device_of_track.remove(&from).map(|d| self.resolve(d)) else {
            return;
        };
        let Some(kept) = self.device_of_track.get(&into).map(|d| self.resolve(*d)) else {
            self.device_of_track.insert(into, gone);
            return;
        };
        if gone == kept {
            return;
        }
        self.devices = self.devices.saturating_sub(1);
        self.folded.insert(gone, kept);
        if self.in_store.remove(&gone) {
            self.in_store.insert(kept);
        }
    }
}

/// The per-source processing stage.
pub struct FrameStage {
    cfg: WifiConfig,
    keys: ProbeKeys,
    /// Device tracks.
    pub estimator: Estimator,
    /// Census windows and visit sessions.
    pub footfall: Footfall,
    /// The store's equipment learned by maker (docs/wifi.md, "People", rule 8).
    fleets: Fleets,
    /// Counters since start.
    pub stats: Stats,
    totals: Option<Totals>,
    /// Every sighting, kept when set (`storegw calibrate wifi` replays a day once and tries
    /// its settings on them): keyed hashes and track numbers only, in RAM.
    pub record: Option<Vec<Sighting>>,
}

impl FrameStage {
    /// Applies a reloaded configuration (SIGHUP): FCS and group-address policies and the
    /// footfall thresholds.
    pub fn reconfigure(&mut self, cfg: &WifiConfig, min_count: u32) {
        self.footfall.reconfigure(cfg, min_count);
        self.estimator
            .reconfigure(estimate::Settings::from_config(cfg));
        self.fleets
            .resize(cfg.calibration.equipment_fleet, cfg.max_tracked_devices);
        self.cfg = cfg.clone();
    }

    /// A stage for `cfg`; `track_totals` keeps the distinct pseudonyms of the whole run (replay
    /// summary only: the live gateway has no use for an ever-growing set).
    pub fn new(
        cfg: &WifiConfig,
        min_count: u32,
        devices: Arc<DevicePseudonymizer>,
        track_totals: bool,
    ) -> FrameStage {
        let mut footfall = Footfall::new(cfg, min_count);
        footfall.set_visit_ids(devices.clone());
        FrameStage {
            footfall,
            estimator: Estimator::new(estimate::Settings::from_config(cfg)),
            fleets: Fleets::new(cfg.calibration.equipment_fleet, cfg.max_tracked_devices),
            keys: ProbeKeys::new(devices),
            cfg: cfg.clone(),
            stats: Stats::default(),
            totals: track_totals.then(Totals::default),
            record: None,
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
        // No receiver reports a signal above 0 dBm (they saturate well below): such a value
        // is a corrupted field, and a corrupted RSSI must not make a device "in store".
        let rssi = p.rssi.filter(|r| *r <= MAX_PLAUSIBLE_DBM);
        if rssi.is_none() {
            self.stats.no_rssi += 1;
        }
        self.stats.accepted += 1;
        let randomized = is_locally_administered(&p.req.sa);
        // A new key epoch forgets every track: nothing links across a rotation.
        let epoch = match self.keys.epoch(ts_ms) {
            KeyEpoch::Current(e) => e,
            KeyEpoch::New(e) => {
                self.estimator.clear();
                self.fleets.clear();
                e
            }
            KeyEpoch::NoKey => {
                self.estimator.clear();
                self.fleets.clear();
                // No key for this epoch (fail closed): the probe is dropped, never kept raw.
                self.stats.no_key += 1;
                return;
            }
        };
        // The raw address and element list go no further than these lines.
        let addr = self.keys.address(&p.req.sa);
        let in_store = rssi.is_some_and(|r| r as i16 >= self.cfg.in_store_rssi);
        let infrastructure = self.cfg.infrastructure.contains(&p.req.sa);
        // Only a well-received globally unique address heard in the store teaches a fleet or
        // counts as learned equipment: a damaged or forged address would invent members, and
        // a laptop of the same maker in the corridor is not the store's.
        let learned = in_store
            && !randomized
            && !is_group(&p.req.sa)
            && p.fcs != FcsStatus::Bad
            && self.fleets.learning()
            && self.fleets.observe(self.keys.maker(&p.req.sa), addr);
        let keys = &self.keys;
        let probe = estimate::Probe {
            ts_ms,
            addr,
            randomized,
            fingerprint: 0,
            seq: p.req.seq,
        };
        // Only a new address needs its fingerprint.
        let (track, placement) = self
            .estimator
            .observe_with(probe, || keys.fingerprint(p.req.elements()));
        // An untracked probe (track cap reached) counts as its own device.
        let track = track.unwrap_or(addr | 1 << 63);
        if let Some(t) = &mut self.totals {
            t.addrs.insert(addr);
            if randomized {
                t.randomized.insert(addr);
            }
            t.place(addr, track, placement, in_store);
        }
        let sighting = Sighting {
            ts_ms,
            addr,
            track,
            merged: match placement {
                Placement::Merged(from) => Some(from),
                _ => None,
            },
            silence_ms: self.estimator.silence_ms(track),
            epoch,
            randomized,
            rssi,
            directed: p.req.ssid.is_directed(),
            infrastructure,
            learned,
        };
        if let Some(r) = &mut self.record {
            r.push(sighting.clone());
        }
        self.footfall.observe(sighting, out);
    }

    /// Moves event time forward (live timer ticks).
    pub fn advance(&mut self, now_ms: i64, out: &mut Vec<Event>) {
        self.footfall.advance(now_ms, out);
    }

    /// Emits everything still open (end of replay, shutdown).
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.footfall.finish(out);
    }

    /// Distinct addresses, distinct randomized addresses, estimated devices and estimated
    /// devices ever in the store, over the run (when tracked).
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        self.totals
            .as_ref()
            .map(|t| {
                (
                    t.addrs.len() as u64,
                    t.randomized.len() as u64,
                    t.devices,
                    t.in_store.len() as u64,
                )
            })
            .unwrap_or((0, 0, 0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A radiotap probe request (signal -50 dBm, no FCS) from `sa` with iPhone-like elements.
    fn probe(sa: [u8; 6], seq: u16) -> Vec<u8> {
        let mut f = vec![0u8, 0, 10, 0];
        f.extend(32u32.to_le_bytes());
        f.push(-50i8 as u8);
        f.push(0);
        f.extend([0x40, 0, 0, 0]);
        f.extend([0xff; 6]);
        f.extend(sa);
        f.extend([0xff; 6]);
        f.extend((seq << 4).to_le_bytes());
        f.extend([0, 0, 1, 4, 0x82, 0x84, 0x8b, 0x96, 3, 1, 6]);
        f.extend([127, 8, 0, 0, 8, 4, 0, 0, 0, 0x40]);
        f
    }

    fn pipeline(rotation_s: u64) -> FrameStage {
        let devices = DevicePseudonymizer::new(Duration::from_secs(rotation_s), 8)
            .map(Arc::new)
            .expect("kernel CSPRNG");
        let cfg = WifiConfig {
            visits: true,
            min_dwell: crate::config::Dur::secs(0),
            ..WifiConfig::default()
        };
        FrameStage::new(&cfg, 1, devices, true)
    }

    #[test]
    fn rotating_addresses_are_one_device_and_a_key_rotation_forgets_it() {
        let mut p = pipeline(60);
        let mut out = Vec::new();
        let t0 = 1_700_000_040_000; // a minute boundary: one key epoch per minute
        for (i, t) in [1_000, 1_020, 10_000, 30_000].iter().enumerate() {
            let sa = [0x02 | (i as u8) << 4, 0x11, 0x22, 0x33, 0x44, i as u8];
            p.frame(127, &probe(sa, 100 * i as u16), false, t0 + t, &mut out);
        }
        assert_eq!(p.estimator.len(), 1);
        assert_eq!(p.totals().0, 4, "four addresses");
        assert_eq!(p.totals().2, 1, "one device");
        // The next minute is the next key epoch: every track is forgotten, the same phone
        // is a new device that nothing links to the old one.
        let sa = [0x06, 0x11, 0x22, 0x33, 0x44, 0x99];
        p.frame(127, &probe(sa, 7), false, t0 + 61_000, &mut out);
        assert_eq!(p.estimator.len(), 1);
        assert_eq!(p.estimator.created, 2);
        p.finish(&mut out);
        let visits: Vec<String> = out
            .iter()
            .filter(|e| e.kind == crate::event::EventKind::WifiVisit)
            .map(|e| e.body()["device"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(visits.len(), 2, "one visit per epoch");
        assert_ne!(visits[0], visits[1]);
        let census: Vec<u64> = out
            .iter()
            .filter(|e| e.kind == crate::event::EventKind::WifiCensus)
            .filter_map(|e| e.body()["devices_estimated"].as_u64())
            .collect();
        assert_eq!(census, [1, 1]);
    }

    /// Three devices of one maker in the store make its devices the store's equipment for
    /// the rest of the key epoch; another maker's device and randomized addresses stay
    /// devices, and the next epoch learns again.
    #[test]
    fn equipment_is_learned_by_maker_within_the_epoch() {
        let devices = DevicePseudonymizer::new(Duration::from_secs(60), 8)
            .map(Arc::new)
            .expect("kernel CSPRNG");
        let mut cfg = WifiConfig::default();
        cfg.calibration.equipment_fleet = 3;
        let mut p = FrameStage::new(&cfg, 1, devices, true);
        p.record = Some(Vec::new());
        let mut out = Vec::new();
        let t0 = 1_700_000_040_000;
        let frames: [([u8; 6], i64); 7] = [
            ([0x00, 0x1b, 0x21, 1, 1, 1], 1_000),
            ([0x00, 0x1b, 0x21, 2, 2, 2], 2_000),
            ([0x00, 0x1c, 0x21, 3, 3, 3], 3_000),
            ([0x02, 0x1b, 0x21, 4, 4, 4], 4_000),
            ([0x00, 0x1b, 0x21, 5, 5, 5], 5_000),
            ([0x00, 0x1b, 0x21, 1, 1, 1], 6_000),
            ([0x00, 0x1b, 0x21, 1, 1, 1], 61_000),
        ];
        for (i, (sa, t)) in frames.iter().enumerate() {
            p.frame(127, &probe(*sa, i as u16), false, t0 + t, &mut out);
        }
        let learned: Vec<bool> = p
            .record
            .take()
            .unwrap_or_default()
            .iter()
            .map(|s| s.equipment())
            .collect();
        assert_eq!(learned, [false, false, false, false, true, true, false]);
    }

    #[test]
    fn estimation_off_counts_addresses() {
        let devices = DevicePseudonymizer::new(Duration::from_secs(86_400), 8)
            .map(Arc::new)
            .expect("kernel CSPRNG");
        let cfg = WifiConfig {
            estimate_devices: false,
            ..WifiConfig::default()
        };
        let mut p = FrameStage::new(&cfg, 1, devices, true);
        let mut out = Vec::new();
        for i in 0..3u8 {
            p.frame(
                127,
                &probe([0x02, 0, 0, 0, 0, i], 1),
                false,
                1_000 + i as i64,
                &mut out,
            );
        }
        assert_eq!(p.totals().2, 3);
    }
}
