//! From advertising reports to events: `ble.sighting` windows, `ble.presence` sessions and
//! `ble.census` counts (docs/design.md, "Wire contract").
//!
//! Time comes only from the reports' timestamps (and [`Aggregator::tick`]), so a replayed log
//! and the live scanner run exactly this code. The raw address is turned into a pseudonym on
//! entry ([`crate::privacy::ble::address_pseudonym`]) and never stored; everything keyed by pseudonym is forgotten when the device key
//! rotates, so nothing links across a rotation.

use super::adv::{self, Frame};
use super::btsnoop::Report;
use super::config::{self, BleConfig};
use crate::event::{rfc3339_ms, Event, EventKind, Stream};
use crate::privacy::DevicePseudonymizer;
use crate::sensor_events::{BeaconId, BleCensus, BlePresence, BleSighting, RssiStats, Telemetry};
use crate::telemetry::metrics::{Metric, Metrics};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Beyond this many remembered addresses (TLM association) the map is reset: bounded RAM.
const MAX_ADDRS: usize = 100_000;

/// Identity of a beacon in compact, copyable form (no allocation per advert).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BeaconKey {
    /// An iBeacon, by proximity UUID, major and minor.
    IBeacon {
        /// Proximity UUID, display byte order.
        uuid: [u8; 16],
        /// Major: an allowlist entry may match it together with the UUID.
        major: u16,
        /// Minor: completes the identity; the allowlist never matches on it.
        minor: u16,
    },
    /// An Eddystone-UID, by namespace and instance.
    EddystoneUid {
        /// 10-byte namespace ID, the part the allowlist matches.
        namespace: [u8; 10],
        /// 6-byte instance ID within the namespace.
        instance: [u8; 6],
    },
    /// An Eddystone-URL, by its encoded form (expanded only for the wire, [`BeaconKey::to_id`]).
    EddystoneUrl {
        /// URL Scheme Prefix byte (0x00-0x03).
        scheme: u8,
        /// Encoded bytes in use at the start of `enc`; more than 32 get no key.
        len: u8,
        /// Encoded URL, zero-padded past `len`: a fixed size keeps the key `Copy`, no allocation.
        enc: [u8; 32],
    },
    /// An AltBeacon, by manufacturer id and beacon id.
    AltBeacon {
        /// Company id of the manufacturer data (MFG ID), published with the id as `mfg`.
        mfg: u16,
        /// Beacon id: id1 (16-byte UUID), id2, id3 (big-endian); the allowlist matches id1.
        id: [u8; 20],
    },
}

impl BeaconKey {
    /// The identity and the advertised reference power at 1 m of an identity frame.
    pub fn of(frame: &Frame<'_>) -> Option<(BeaconKey, i8, i16)> {
        Some(match *frame {
            Frame::IBeacon {
                uuid,
                major,
                minor,
                tx_power,
            } => (
                BeaconKey::IBeacon { uuid, major, minor },
                tx_power,
                tx_power as i16,
            ),
            Frame::EddystoneUid {
                tx_power,
                namespace,
                instance,
            } => (
                BeaconKey::EddystoneUid {
                    namespace,
                    instance,
                },
                tx_power,
                // Eddystone calibrates at 0 m; the spec's 41 dB is the loss over the first metre.
                tx_power as i16 - 41,
            ),
            Frame::EddystoneUrl { tx_power, url } => {
                // The spec allows 17 encoded bytes; longer ones (extended adverts) beyond the
                // key's room are not treated as a beacon rather than cut.
                let mut enc = [0u8; 32];
                let n = url.encoded.len();
                enc.get_mut(..n)?.copy_from_slice(url.encoded);
                (
                    BeaconKey::EddystoneUrl {
                        scheme: url.scheme,
                        len: n as u8,
                        enc,
                    },
                    tx_power,
                    tx_power as i16 - 41,
                )
            }
            Frame::AltBeacon {
                mfg, id, ref_rssi, ..
            } => (BeaconKey::AltBeacon { mfg, id }, ref_rssi, ref_rssi as i16),
            _ => return None,
        })
    }

    /// The wire form of the identity.
    pub fn to_id(&self) -> BeaconId {
        match self {
            BeaconKey::IBeacon { uuid, major, minor } => BeaconId::Ibeacon {
                uuid: adv::uuid_string(uuid),
                major: *major,
                minor: *minor,
            },
            BeaconKey::EddystoneUid {
                namespace,
                instance,
            } => BeaconId::EddystoneUid {
                namespace: crate::privacy::hex(namespace),
                instance: crate::privacy::hex(instance),
            },
            BeaconKey::EddystoneUrl { scheme, len, enc } => BeaconId::EddystoneUrl {
                url: adv::EncodedUrl {
                    scheme: *scheme,
                    encoded: enc.get(..*len as usize).unwrap_or_default(),
                }
                .expand(),
            },
            BeaconKey::AltBeacon { mfg, id } => {
                let mut id1 = [0u8; 16];
                id1.copy_from_slice(&id[..16]);
                BeaconId::Altbeacon {
                    id1: adv::uuid_string(&id1),
                    id2: u16::from_be_bytes([id[16], id[17]]),
                    id3: u16::from_be_bytes([id[18], id[19]]),
                    mfg: *mfg,
                }
            }
        }
    }
}

/// Which beacons are known (become sightings and presence), parsed once from the config.
#[derive(Debug, Clone, Default)]
pub struct Known {
    all: bool,
    ibeacon: Vec<([u8; 16], Option<u16>)>,
    namespaces: Vec<[u8; 10]>,
    url_prefixes: Vec<String>,
    altbeacon: Vec<[u8; 16]>,
}

impl Known {
    /// From a validated configuration (invalid entries never match).
    pub fn from_config(c: &BleConfig) -> Known {
        Known {
            all: c.known_beacons != "allowlist",
            ibeacon: c
                .allowlist
                .ibeacon
                .iter()
                .filter_map(|e| config::parse_ibeacon_entry(e))
                .collect(),
            namespaces: c
                .allowlist
                .eddystone_namespace
                .iter()
                .filter_map(|e| config::parse_namespace(e))
                .collect(),
            url_prefixes: c.allowlist.eddystone_url.clone(),
            altbeacon: c
                .allowlist
                .altbeacon_id1
                .iter()
                .filter_map(|e| config::parse_uuid(e))
                .collect(),
        }
    }

    /// Whether a beacon is known.
    pub fn matches(&self, k: &BeaconKey) -> bool {
        if self.all {
            return true;
        }
        match k {
            BeaconKey::IBeacon { uuid, major, .. } => self
                .ibeacon
                .iter()
                .any(|(u, m)| u == uuid && m.is_none_or(|m| m == *major)),
            BeaconKey::EddystoneUid { namespace, .. } => self.namespaces.contains(namespace),
            BeaconKey::EddystoneUrl { .. } => {
                if self.url_prefixes.is_empty() {
                    return false;
                }
                let url = match k.to_id() {
                    BeaconId::EddystoneUrl { url } => url,
                    _ => return false,
                };
                self.url_prefixes
                    .iter()
                    .any(|p| url.starts_with(p.as_str()))
            }
            BeaconKey::AltBeacon { id, .. } => self.altbeacon.iter().any(|u| id[..16] == u[..]),
        }
    }
}

/// One known beacon within the current window.
#[derive(Debug, Clone)]
struct Sight {
    count: u32,
    rssi_n: u32,
    rssi_min: i16,
    rssi_max: i16,
    rssi_sum: i64,
    tx_power: i8,
    ref_1m: i16,
    telemetry: Option<Telemetry>,
}

/// Presence state of one known beacon.
#[derive(Debug, Clone)]
struct Presence {
    smoothed: f64,
    last_seen: i64,
    /// Entered at, while present.
    since: Option<i64>,
}

/// What the aggregator has seen and produced (the replay summary).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Advertising reports received, including those dropped for want of a key (`no_key`).
    pub reports: u64,
    /// Malformed AD structures inside otherwise readable reports.
    pub malformed_ad: u64,
    /// Beacon frames decoded, known or not, by [`Frame::type_name`] (the summary's `decoded`).
    pub decoded: BTreeMap<&'static str, u64>,
    /// `ble.sighting` events emitted.
    pub sightings: u64,
    /// `ble.presence` events emitted, enters and exits.
    pub presence: u64,
    /// `ble.census` events emitted.
    pub census: u64,
    /// Reports dropped because the device key could not be made (fail closed).
    pub no_key: u64,
}

impl Stats {
    /// Adds what happened since `last` to `metrics` (the pipeline's), then remembers `self` in
    /// `last`. The aggregator only counts; the live task that owns it exports, so a replay or
    /// a test never touches a pipeline's metrics.
    pub fn export_since(&self, last: &mut Stats, metrics: &Metrics) {
        metrics.count(
            Metric::BleReports,
            "",
            self.reports.saturating_sub(last.reports),
        );
        metrics.count(
            Metric::BleMalformed,
            "what=\"ad_structure\"",
            self.malformed_ad.saturating_sub(last.malformed_ad),
        );
        for (t, n) in &self.decoded {
            let before = last.decoded.get(t).copied().unwrap_or(0);
            metrics.count(
                Metric::BleDecoded,
                &format!("type=\"{t}\""),
                n.saturating_sub(before),
            );
        }
        for (kind, now, before) in [
            (EventKind::BleSighting, self.sightings, last.sightings),
            (EventKind::BlePresence, self.presence, last.presence),
            (EventKind::BleCensus, self.census, last.census),
        ] {
            metrics.count(
                Metric::BleEvents,
                &format!("kind=\"{kind}\""),
                now.saturating_sub(before),
            );
        }
        // Only when it happened: the family is not listed with a zero sample for every stream.
        let no_key = self.no_key.saturating_sub(last.no_key);
        if no_key > 0 {
            metrics.drops(Stream::Ble, "no_key", no_key);
        }
        *last = self.clone();
    }
}

/// Turns reports into events.
pub struct Aggregator {
    cfg: BleConfig,
    known: Known,
    devices: Arc<DevicePseudonymizer>,
    min_count: u32,
    window_ms: i64,
    window_start: Option<i64>,
    epoch: Option<i64>,
    sights: HashMap<BeaconKey, Sight>,
    presence: HashMap<BeaconKey, Presence>,
    /// Pseudonym → the known beacon it advertises (to attach its TLM frames).
    addr_beacon: HashMap<String, BeaconKey>,
    /// Pseudonym → TLM heard before the beacon's identity frame.
    pending_tlm: HashMap<String, Telemetry>,
    census_addrs: HashMap<String, bool>,
    census_company: HashMap<u16, HashSet<String>>,
    census_adverts: u64,
    /// Counters for the summary and metrics.
    pub stats: Stats,
}

fn telemetry(f: &Frame<'_>) -> Option<Telemetry> {
    match f {
        Frame::EddystoneTlm(t) => Some(Telemetry {
            battery_mv: t.battery_mv,
            temperature_c: t.temperature_c.map(|c| (c * 100.0).round() / 100.0),
            adv_count: Some(t.adv_count),
            uptime_s: Some(t.sec_count as f64 / 10.0),
            encrypted: false,
        }),
        Frame::EddystoneEtlm { .. } => Some(Telemetry {
            battery_mv: None,
            temperature_c: None,
            adv_count: None,
            uptime_s: None,
            encrypted: true,
        }),
        _ => None,
    }
}

impl Aggregator {
    /// An aggregator for one source; `min_count` is `privacy.min_count`.
    pub fn new(cfg: &BleConfig, min_count: u32, devices: Arc<DevicePseudonymizer>) -> Aggregator {
        Aggregator {
            known: Known::from_config(cfg),
            cfg: cfg.clone(),
            devices,
            min_count,
            window_ms: (cfg.window.0.as_millis() as i64).max(1000),
            window_start: None,
            epoch: None,
            sights: HashMap::new(),
            presence: HashMap::new(),
            addr_beacon: HashMap::new(),
            pending_tlm: HashMap::new(),
            census_addrs: HashMap::new(),
            census_company: HashMap::new(),
            census_adverts: 0,
            stats: Stats::default(),
        }
    }

    /// Applies a reloaded configuration (SIGHUP): allowlist, thresholds, distance model and
    /// `min_count` at once; a new window length from the next window on.
    pub fn reconfigure(&mut self, cfg: &BleConfig, min_count: u32) {
        self.known = Known::from_config(cfg);
        self.cfg = cfg.clone();
        self.min_count = min_count;
        self.window_ms = (cfg.window.0.as_millis() as i64).max(1000);
    }

    /// One advertising report received at `ts_ms`.
    pub fn push(&mut self, ts_ms: i64, rep: &Report<'_>, out: &mut Vec<Event>) {
        self.tick(ts_ms, out);
        self.stats.reports += 1;
        if self.window_start.is_none() {
            self.window_start = Some(ts_ms - ts_ms.rem_euclid(self.window_ms));
        }
        // The raw address goes no further than this line.
        let Ok((pseudonym, epoch)) =
            crate::privacy::ble::address_pseudonym(&self.devices, &rep.addr, ts_ms)
        else {
            // No key for this epoch (fail closed): the report is dropped, never kept raw.
            self.stats.no_key += 1;
            return;
        };
        if self.epoch.is_some_and(|e| e != epoch) {
            self.close_window(ts_ms, out);
            self.window_start = Some(ts_ms - ts_ms.rem_euclid(self.window_ms));
            self.addr_beacon.clear();
            self.pending_tlm.clear();
        }
        self.epoch = Some(epoch);
        if self.addr_beacon.len() > MAX_ADDRS {
            self.addr_beacon.clear();
        }
        if self.pending_tlm.len() > MAX_ADDRS {
            self.pending_tlm.clear();
        }

        let a = adv::decode(rep.data);
        self.stats.malformed_ad += a.malformed as u64;
        let rssi = rep.rssi.map(|r| r as i16);
        if let Some(f) = &a.frame {
            *self.stats.decoded.entry(f.type_name()).or_default() += 1;
        }
        let known = a
            .frame
            .as_ref()
            .and_then(BeaconKey::of)
            .filter(|(k, _, _)| self.known.matches(k));
        if let Some((key, tx, ref_1m)) = known {
            self.sighting(key, tx, ref_1m, rssi);
            if let Some(r) = rssi {
                self.observe_presence(key, r, ts_ms, out);
            }
            if let Some(t) = self.pending_tlm.remove(&pseudonym) {
                if let Some(s) = self.sights.get_mut(&key) {
                    s.telemetry = Some(t);
                }
            }
            self.addr_beacon.insert(pseudonym, key);
            return;
        }
        if let Some(t) = a.frame.as_ref().and_then(telemetry) {
            if let Some(key) = self.addr_beacon.get(&pseudonym) {
                if let Some(s) = self.sights.get_mut(key) {
                    s.telemetry = Some(t);
                } else {
                    self.pending_tlm.insert(pseudonym, t);
                }
                return;
            }
            // Telemetry belongs to a beacon whose identity frame comes separately: held for
            // it, and not counted as another device (its identity frames are, if not known).
            self.pending_tlm.insert(pseudonym, t);
            return;
        }
        // Scan responses and other frames of a known beacon are not "other devices".
        if self.cfg.census && !self.addr_beacon.contains_key(&pseudonym) {
            self.census_adverts += 1;
            let public = rep.addr_type % 2 == 0;
            if let Some(c) = a.company {
                self.census_company
                    .entry(c)
                    .or_default()
                    .insert(pseudonym.clone());
            }
            self.census_addrs.insert(pseudonym, public);
        }
    }

    fn sighting(&mut self, key: BeaconKey, tx: i8, ref_1m: i16, rssi: Option<i16>) {
        let s = self.sights.entry(key).or_insert(Sight {
            count: 0,
            rssi_n: 0,
            rssi_min: i16::MAX,
            rssi_max: i16::MIN,
            rssi_sum: 0,
            tx_power: tx,
            ref_1m,
            telemetry: None,
        });
        s.count += 1;
        s.tx_power = tx;
        s.ref_1m = ref_1m;
        if let Some(r) = rssi {
            s.rssi_n += 1;
            s.rssi_min = s.rssi_min.min(r);
            s.rssi_max = s.rssi_max.max(r);
            s.rssi_sum += r as i64;
        }
    }

    fn observe_presence(&mut self, key: BeaconKey, rssi: i16, ts: i64, out: &mut Vec<Event>) {
        if !self.cfg.presence {
            return;
        }
        let a = self.cfg.rssi_smoothing;
        let p = self.presence.entry(key).or_insert(Presence {
            smoothed: rssi as f64,
            last_seen: ts,
            since: None,
        });
        p.smoothed = a * rssi as f64 + (1.0 - a) * p.smoothed;
        p.last_seen = p.last_seen.max(ts);
        let sm = (p.smoothed * 10.0).round() / 10.0;
        match p.since {
            None if p.smoothed >= self.cfg.enter_rssi as f64 => {
                p.since = Some(ts);
                out.push(presence_event(&key, "enter", sm, None, ts));
                self.stats.presence += 1;
            }
            Some(since) if p.smoothed < self.cfg.exit_rssi as f64 => {
                p.since = None;
                let dwell = (ts - since).max(0) as f64 / 1000.0;
                out.push(presence_event(&key, "exit", sm, Some(dwell), ts));
                self.stats.presence += 1;
            }
            _ => {}
        }
    }

    /// Advances time: closes a finished window and times out absent beacons.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<Event>) {
        if let Some(start) = self.window_start {
            if now_ms >= start + self.window_ms {
                self.close_window(start + self.window_ms, out);
                self.window_start = Some(now_ms - now_ms.rem_euclid(self.window_ms));
            }
        }
        let timeout = self.cfg.absence_timeout.0.as_millis() as i64;
        let mut gone: Vec<BeaconKey> = Vec::new();
        for (k, p) in self.presence.iter_mut() {
            if now_ms - p.last_seen < timeout {
                continue;
            }
            if let Some(since) = p.since.take() {
                let dwell = (p.last_seen - since).max(0) as f64 / 1000.0;
                let sm = (p.smoothed * 10.0).round() / 10.0;
                out.push(presence_event(
                    k,
                    "exit",
                    sm,
                    Some(dwell),
                    p.last_seen + timeout,
                ));
                self.stats.presence += 1;
            }
            gone.push(*k);
        }
        for k in gone {
            self.presence.remove(&k);
        }
    }

    /// Emits the open window (shutdown, end of a replay, key rotation).
    pub fn flush(&mut self, now_ms: i64, out: &mut Vec<Event>) {
        if let Some(start) = self.window_start {
            self.close_window((start + self.window_ms).min(now_ms.max(start)), out);
            self.window_start = None;
        }
    }

    /// End of a recorded input: the open window, then an exit for every beacon still present
    /// once the absence timeout has passed after the last report.
    pub fn finish(&mut self, last_ms: i64, out: &mut Vec<Event>) {
        let end = last_ms + self.cfg.absence_timeout.0.as_millis() as i64;
        if let Some(start) = self.window_start {
            self.close_window(start + self.window_ms, out);
            self.window_start = None;
        }
        self.tick(end, out);
    }

    fn close_window(&mut self, ts: i64, out: &mut Vec<Event>) {
        let Some(start) = self.window_start else {
            return;
        };
        let window_s = (self.window_ms / 1000) as u32;
        let mut sights: Vec<(BeaconKey, Sight)> = self.sights.drain().collect();
        sights.sort_by_key(|(k, _)| format!("{:?}", k.to_id()));
        for (k, s) in sights {
            if s.rssi_n == 0 {
                continue;
            }
            let mean = s.rssi_sum as f64 / s.rssi_n as f64;
            let ref_1m = if (-100..0).contains(&s.ref_1m) {
                s.ref_1m
            } else {
                self.cfg.default_tx_power
            } as f64
                + self.cfg.calibration_db;
            let d = 10f64.powf((ref_1m - mean) / (10.0 * self.cfg.path_loss_exponent));
            let body = BleSighting {
                beacon: k.to_id(),
                window_start: rfc3339_ms(start),
                window_s,
                count: s.count,
                rssi: RssiStats {
                    min: s.rssi_min,
                    max: s.rssi_max,
                    mean: (mean * 10.0).round() / 10.0,
                },
                tx_power: Some(s.tx_power),
                distance_m: d.is_finite().then(|| (d * 100.0).round() / 100.0),
                telemetry: s.telemetry,
            };
            out.push(Event::new(EventKind::BleSighting, ts, &body));
            self.stats.sightings += 1;
        }
        if self.census_adverts > 0 {
            let k = self.min_count;
            let mut suppressed = false;
            let public = self.census_addrs.values().filter(|p| **p).count() as u64;
            let random = self.census_addrs.len() as u64 - public;
            // Public + random = devices: withheld together, so neither is devices minus the
            // other (`suppress_parts`).
            let mut by_type = BTreeMap::new();
            for (name, (v, s)) in ["public", "random"]
                .into_iter()
                .zip(crate::privacy::suppress_parts(&[public, random], k))
            {
                suppressed |= s;
                by_type.insert(name.to_string(), v);
            }
            let mut sup = |n: u64| {
                let (v, s) = crate::privacy::suppress(n, k);
                suppressed |= s;
                v
            };
            let mut by_company = BTreeMap::new();
            for (c, set) in &self.census_company {
                by_company.insert(format!("0x{c:04x}"), sup(set.len() as u64));
            }
            let devices = sup(self.census_addrs.len() as u64);
            let body = BleCensus {
                window_start: rfc3339_ms(start),
                window_s,
                devices,
                by_address_type: by_type,
                by_company,
                advertisements: self.census_adverts,
                suppressed,
            };
            out.push(Event::new(EventKind::BleCensus, ts, &body));
            self.stats.census += 1;
        }
        self.census_addrs.clear();
        self.census_company.clear();
        self.census_adverts = 0;
    }
}

fn presence_event(k: &BeaconKey, t: &str, sm: f64, dwell: Option<f64>, ts: i64) -> Event {
    Event::new(
        EventKind::BlePresence,
        ts,
        &BlePresence {
            beacon: k.to_id(),
            transition: t.into(),
            rssi_smoothed: sm,
            dwell_s: dwell,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ibeacon_ad(minor: u8) -> Vec<u8> {
        let mut v = vec![0x02, 0x01, 0x06, 0x1a, 0xff, 0x4c, 0x00, 0x02, 0x15];
        v.extend_from_slice(&[0x11; 16]);
        v.extend_from_slice(&[0, 1, 0, minor, 0xC5]);
        v
    }

    fn agg(cfg: BleConfig) -> Aggregator {
        let d = test_devices(86_400);
        Aggregator::new(&cfg, 1, d)
    }

    fn rep(addr: u8, rssi: i8, data: &[u8]) -> Report<'_> {
        Report {
            addr: [0xC0, 0, 0, 0, 0, addr],
            addr_type: 1,
            event_type: 0,
            rssi: Some(rssi),
            tx_power: None,
            data,
        }
    }

    #[test]
    fn window_stats_and_distance() {
        let mut a = agg(all_known());
        let ad = ibeacon_ad(2);
        let mut out = Vec::new();
        let t0 = 1_700_000_000_000;
        for (i, r) in [-59i8, -69, -64].iter().enumerate() {
            a.push(t0 + i as i64 * 1000, &rep(1, *r, &ad), &mut out);
        }
        a.tick(t0 + 20_000, &mut out);
        let s: Vec<_> = out
            .iter()
            .filter(|e| e.kind == EventKind::BleSighting)
            .collect();
        assert_eq!(s.len(), 1);
        let b = &s[0].body();
        assert_eq!(b["count"], 3);
        assert_eq!(b["rssi"]["min"], -69);
        assert_eq!(b["rssi"]["max"], -59);
        assert_eq!(b["rssi"]["mean"], -64.0);
        assert_eq!(b["tx_power"], -59);
        // 10^((-59 - -64) / 20) = 1.78 m
        assert_eq!(b["distance_m"], 1.78);
    }

    #[test]
    fn presence_hysteresis_and_timeout() {
        let cfg = BleConfig {
            rssi_smoothing: 1.0,
            enter_rssi: -70,
            exit_rssi: -80,
            ..all_known()
        };
        let mut a = agg(cfg);
        let ad = ibeacon_ad(3);
        let mut out = Vec::new();
        let t0 = 1_700_000_000_000;
        let seq = [-85i8, -65, -75, -79, -81, -75, -60];
        for (i, r) in seq.iter().enumerate() {
            a.push(t0 + i as i64 * 1000, &rep(2, *r, &ad), &mut out);
        }
        let tr: Vec<String> = out
            .iter()
            .filter(|e| e.kind == EventKind::BlePresence)
            .map(|e| e.body()["transition"].as_str().unwrap_or("").to_string())
            .collect();
        // enter at -65, hold through -75/-79, exit at -81, -75 is not enough, enter at -60.
        assert_eq!(tr, ["enter", "exit", "enter"]);
        out.clear();
        a.tick(t0 + 6000 + 30_000, &mut out);
        let exit: Vec<_> = out
            .iter()
            .filter(|e| e.kind == EventKind::BlePresence)
            .collect();
        assert_eq!(exit.len(), 1);
        assert_eq!(exit[0].body()["transition"], "exit");
        assert_eq!(exit[0].body()["dwell_s"], 0.0);
        assert_eq!(exit[0].ts_ms, t0 + 6000 + 30_000);
    }

    #[test]
    fn census_counts_and_suppression() {
        let d = test_devices(86_400);
        let mut a = Aggregator::new(&all_known(), 2, d);
        let apple = [0x05u8, 0xff, 0x4c, 0x00, 0x10, 0x01];
        let ms = [0x05u8, 0xff, 0x06, 0x00, 0x01, 0x09];
        let mut out = Vec::new();
        let t0 = 1_700_000_000_000;
        a.push(t0, &rep(1, -50, &apple), &mut out);
        a.push(t0 + 1, &rep(1, -50, &apple), &mut out);
        a.push(t0 + 2, &rep(2, -50, &apple), &mut out);
        a.push(t0 + 3, &rep(3, -50, &ms), &mut out);
        a.flush(t0 + 5, &mut out);
        assert_eq!(out.len(), 1);
        let b = &out[0].body();
        assert_eq!(b["devices"], 3);
        assert_eq!(b["advertisements"], 4);
        assert_eq!(b["by_address_type"]["random"], 3);
        assert_eq!(b["by_company"]["0x004c"], 2);
        assert_eq!(b["by_company"]["0x0006"], 0, "1 < min_count 2");
        assert_eq!(b["suppressed"], true);
    }

    #[test]
    fn allowlist_keeps_other_beacons_in_census() {
        let cfg = BleConfig {
            known_beacons: "allowlist".into(),
            allowlist: config::AllowList {
                ibeacon: vec!["11111111-1111-1111-1111-111111111111:1".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let mut a = agg(cfg);
        let mut out = Vec::new();
        let t0 = 1_700_000_000_000;
        let known = ibeacon_ad(1);
        let mut other = ibeacon_ad(1);
        other[25] = 9; // major 0x0901
        a.push(t0, &rep(1, -50, &known), &mut out);
        a.push(t0, &rep(2, -50, &other), &mut out);
        a.flush(t0 + 1, &mut out);
        let kinds: Vec<EventKind> = out.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::BlePresence,
                EventKind::BleSighting,
                EventKind::BleCensus
            ]
        );
        assert_eq!(out[1].body()["beacon"]["major"], 1);
        assert_eq!(out[2].body()["devices"], 1);
    }

    fn uid_ad() -> Vec<u8> {
        let mut v = vec![0x03, 0x03, 0xAA, 0xFE, 0x17, 0x16, 0xAA, 0xFE, 0x00, 0xE3];
        v.extend_from_slice(&[0x12; 10]);
        v.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0]);
        v
    }

    fn tlm_ad() -> Vec<u8> {
        let h = "0303aafe1116aafe20000b1813000000146700002ac4";
        let mut v = Vec::new();
        assert!(adv::hex_decode(h, &mut v));
        v
    }

    #[test]
    fn tlm_attaches_to_the_beacon_of_the_same_address() {
        let mut a = agg(all_known());
        let mut out = Vec::new();
        let t0 = 1_700_000_000_000;
        // TLM before the identity frame, then UID: attached once the identity is known.
        a.push(t0, &rep(7, -60, &tlm_ad()), &mut out);
        a.push(t0 + 100, &rep(7, -60, &uid_ad()), &mut out);
        a.flush(t0 + 200, &mut out);
        let s: Vec<_> = out
            .iter()
            .filter(|e| e.kind == EventKind::BleSighting)
            .collect();
        assert_eq!(s.len(), 1);
        let b = &s[0].body();
        assert_eq!(b["beacon"]["type"], "eddystone_uid");
        assert_eq!(b["beacon"]["namespace"], "12121212121212121212");
        assert_eq!(b["beacon"]["instance"], "000000000001");
        assert_eq!(b["telemetry"]["battery_mv"], 2840);
        assert_eq!(b["telemetry"]["temperature_c"], 19.0);
        assert_eq!(b["telemetry"]["uptime_s"], 1094.8);
        assert_eq!(b["telemetry"]["encrypted"], false);
        // Eddystone: -29 dBm at 0 m is -70 at 1 m; RSSI -60 is closer than 1 m.
        assert_eq!(b["tx_power"], -29);
        assert!(b["distance_m"].as_f64().unwrap_or(9.0) < 1.0);
        assert!(
            out.iter().all(|e| e.kind != EventKind::BleCensus),
            "TLM of a beacon is no census"
        );
    }

    /// These tests are about the aggregation of beacons, so every beacon is known
    /// (`known_beacons = "all"`; the default is the allowlist).
    fn all_known() -> BleConfig {
        BleConfig {
            known_beacons: "all".into(),
            ..BleConfig::default()
        }
    }

    fn test_devices(rotation_s: u64) -> Arc<DevicePseudonymizer> {
        match DevicePseudonymizer::new(Duration::from_secs(rotation_s), 8) {
            Ok(d) => Arc::new(d),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn key_rotation_forgets_addresses() {
        let d = test_devices(3600);
        let mut a = Aggregator::new(&all_known(), 1, d.clone());
        let mut out = Vec::new();
        let t0 = 1_700_000_000_000;
        a.push(t0, &rep(7, -60, &uid_ad()), &mut out);
        assert_eq!(a.addr_beacon.len(), 1);
        // The next key epoch: the TLM can no longer be linked to the earlier identity frame.
        let t1 = t0 + 3_600_000;
        assert_eq!(d.epoch_of(t1), d.epoch_of(t0) + 1);
        a.push(t1, &rep(7, -60, &tlm_ad()), &mut out);
        assert!(a.addr_beacon.is_empty());
        assert_eq!(a.pending_tlm.len(), 1);
    }
}
