//! Bodies of the sensor event kinds (docs/design.md, "Wire contract"); shared by the real
//! aggregators and the simulator so both publish exactly the same shapes.

use serde::Serialize;
use std::collections::BTreeMap;

/// Identity of a known beacon, as advertised (beacon ids are public by design, not personal).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BeaconId {
    Ibeacon {
        uuid: String,
        major: u16,
        minor: u16,
    },
    EddystoneUid {
        namespace: String,
        instance: String,
    },
    EddystoneUrl {
        url: String,
    },
    Altbeacon {
        id1: String,
        id2: u16,
        id3: u16,
        mfg: u16,
    },
}

/// RSSI summary over a window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RssiStats {
    pub min: i16,
    pub max: i16,
    pub mean: f64,
}

/// Eddystone TLM telemetry attached to a sighting.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Telemetry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery_mv: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adv_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<f64>,
    pub encrypted: bool,
}

/// `ble.sighting`: one known beacon in one window.
#[derive(Debug, Clone, Serialize)]
pub struct BleSighting {
    pub beacon: BeaconId,
    pub window_start: String,
    pub window_s: u32,
    pub count: u32,
    pub rssi: RssiStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_power: Option<i8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_m: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<Telemetry>,
}

/// `ble.presence`: a known beacon entered or left.
#[derive(Debug, Clone, Serialize)]
pub struct BlePresence {
    pub beacon: BeaconId,
    /// `enter` or `exit`.
    pub transition: String,
    pub rssi_smoothed: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dwell_s: Option<f64>,
}

/// `ble.census`: how many other BLE devices were around, without identities.
#[derive(Debug, Clone, Serialize)]
pub struct BleCensus {
    pub window_start: String,
    pub window_s: u32,
    pub devices: u64,
    /// Distinct pseudonymous addresses by address type (`public`, `random`).
    pub by_address_type: BTreeMap<String, u64>,
    /// Distinct devices by advertised company id (`0x004c`).
    pub by_company: BTreeMap<String, u64>,
    pub advertisements: u64,
    /// True when counts below `privacy.min_count` were zeroed.
    pub suppressed: bool,
}

/// `wifi.census`: footfall from probe requests in one window.
#[derive(Debug, Clone, Serialize)]
pub struct WifiCensus {
    pub window_start: String,
    pub window_s: u32,
    pub probe_requests: u64,
    /// Probe requests naming a network (SSID reduced to wildcard/directed; never the name).
    pub directed_probes: u64,
    pub devices: u64,
    pub randomized: u64,
    pub randomized_share: f64,
    pub in_store: u64,
    pub passer_by: u64,
    /// Devices estimated from address tracks (docs/wifi.md, "Device estimation"): what
    /// `devices` would be if phones did not randomize their addresses.
    pub devices_estimated: u64,
    /// Estimated devices whose strongest probe reached the in-store threshold.
    pub in_store_estimated: u64,
    /// Estimated devices below the in-store threshold.
    pub passer_by_estimated: u64,
    /// People present in the window (devices present between their probes, residents left
    /// out, mapped to people by the store's calibration; docs/wifi.md, "People").
    pub people_estimated: u64,
    /// Resident devices present (the store's own equipment, learned or listed).
    pub resident_estimated: u64,
    /// People who came in during the window.
    pub arrivals_estimated: u64,
    pub rssi_threshold_dbm: i16,
    /// Probe requests by RSSI bucket lower bound (`-90` = [-90,-80)), plus `none`.
    pub rssi_histogram: BTreeMap<String, u64>,
    /// Stays that ended in the window by dwell (`<2`, `2-5`, `5-10`, `10-20`, `20-40`, `40+`
    /// minutes), in devices.
    pub dwell_histogram: BTreeMap<String, u64>,
    pub suppressed: bool,
}

/// `wifi.visit`: one pseudonymous in-store device session.
#[derive(Debug, Clone, Serialize)]
pub struct WifiVisit {
    pub device: String,
    pub first_seen: String,
    pub last_seen: String,
    pub dwell_s: f64,
    pub peak_rssi: i16,
    pub probe_requests: u64,
    pub randomized: bool,
}
