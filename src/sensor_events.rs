//! Bodies of the sensor event kinds (docs/design.md, "Wire contract"); shared by the real
//! aggregators and the simulator so both publish exactly the same shapes.

use serde::Serialize;
use std::collections::BTreeMap;

/// Identity of a known beacon, as advertised (beacon ids are public by design, not personal).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BeaconId {
    /// Apple iBeacon (`type: ibeacon`), in manufacturer data of company 0x004C.
    Ibeacon {
        /// Proximity UUID, lowercase with hyphens; the allowlist matches it (or it and `major`).
        uuid: String,
        /// Major number as advertised (0-65535); the allowlist may match it with the UUID.
        major: u16,
        /// Minor number as advertised (0-65535), telling beacons of one UUID and major apart.
        minor: u16,
    },
    /// Eddystone-UID (`type: eddystone_uid`), service data 0xFEAA, frame 0x00.
    EddystoneUid {
        /// 10-byte namespace as 20 lowercase hex digits; what the allowlist matches.
        namespace: String,
        /// 6-byte instance as 12 lowercase hex digits, telling beacons of a namespace apart.
        instance: String,
    },
    /// Eddystone-URL (`type: eddystone_url`), frame 0x10: the beacon is named by its URL.
    EddystoneUrl {
        /// The URL expanded from its codes (scheme and host lowercased, the path as sent).
        url: String,
    },
    /// AltBeacon (`type: altbeacon`), beacon code 0xBEAC in any company's manufacturer data.
    Altbeacon {
        /// Bytes 0-15 of the 20-byte beacon id, as a lowercase UUID; what the allowlist matches.
        id1: String,
        /// Bytes 16-17 of the beacon id, big-endian (0-65535).
        id2: u16,
        /// Bytes 18-19 of the beacon id, big-endian (0-65535).
        id3: u16,
        /// Company id of the manufacturer data that carried the frame (any company may send one).
        mfg: u16,
    },
}

/// RSSI summary over a window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RssiStats {
    /// Weakest RSSI of the window's advertisements, in dBm.
    pub min: i16,
    /// Strongest RSSI of the window's advertisements, in dBm.
    pub max: i16,
    /// Mean RSSI in dBm, rounded to 0.1 dB; the input of the distance estimate.
    pub mean: f64,
}

/// Eddystone TLM telemetry attached to a sighting.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Telemetry {
    /// Battery in millivolts; absent when the beacon sends 0 (not supported) or when encrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery_mv: Option<u16>,
    /// Temperature in °C, rounded to 0.01; absent for 0x8000 (not supported) or when encrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f64>,
    /// Advertising PDUs sent since the beacon powered up; absent when encrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adv_count: Option<u32>,
    /// Seconds since power-up (0.1 s steps on air); absent when encrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<f64>,
    /// True for an encrypted TLM (version 0x01): only its presence is known, and the other
    /// fields are absent (reading them needs the beacon's key).
    pub encrypted: bool,
}

/// `ble.sighting`: one known beacon in one window.
#[derive(Debug, Clone, Serialize)]
pub struct BleSighting {
    /// The known beacon (allowlisted, or any with `known_beacons = "all"`).
    pub beacon: BeaconId,
    /// Start of the window (RFC 3339 UTC with milliseconds), a multiple of `window_s`.
    pub window_start: String,
    /// Window length in seconds (`sources.ble.window`, default 10).
    pub window_s: u32,
    /// Advertisements carrying the beacon's identity frame in the window (at least 1).
    pub count: u32,
    /// RSSI of those advertisements that had one; a window with none sends no sighting.
    pub rssi: RssiStats,
    /// Advertised TX power in dBm as sent: at 1 m (iBeacon, AltBeacon) or 0 m (Eddystone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_power: Option<i8>,
    /// Estimated distance in metres (log-distance path loss, docs/ble.md); absent if not finite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_m: Option<f64>,
    /// Eddystone-TLM telemetry last heard from the beacon's device; absent when none came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<Telemetry>,
}

/// `ble.presence`: a known beacon entered or left.
#[derive(Debug, Clone, Serialize)]
pub struct BlePresence {
    /// The known beacon that entered or left.
    pub beacon: BeaconId,
    /// `enter` or `exit`.
    pub transition: String,
    /// RSSI in dBm after exponential smoothing (`rssi_smoothing`), rounded to 0.1 dB: the
    /// value judged against `enter_rssi` / `exit_rssi`.
    pub rssi_smoothed: f64,
    /// On `exit` only: seconds from entering to the last advertisement heard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dwell_s: Option<f64>,
}

/// `ble.census`: how many other BLE devices were around, without identities.
#[derive(Debug, Clone, Serialize)]
pub struct BleCensus {
    /// Start of the window (RFC 3339 UTC with milliseconds), a multiple of `window_s`.
    pub window_start: String,
    /// Window length in seconds (`sources.ble.window`, default 10).
    pub window_s: u32,
    /// Distinct pseudonymous addresses that are not known beacons; 0 below `privacy.min_count`.
    pub devices: u64,
    /// Distinct pseudonymous addresses by address type (`public`, `random`).
    pub by_address_type: BTreeMap<String, u64>,
    /// Distinct devices by advertised company id (`0x004c`).
    pub by_company: BTreeMap<String, u64>,
    /// Advertisements those devices sent in the window (not suppressed).
    pub advertisements: u64,
    /// True when counts below `privacy.min_count` were zeroed.
    pub suppressed: bool,
}

/// `wifi.census`: footfall from probe requests in one window.
#[derive(Debug, Clone, Serialize)]
pub struct WifiCensus {
    /// Start of the window (RFC 3339 UTC with milliseconds), a multiple of `window_s`.
    pub window_start: String,
    /// Window length in seconds (`sources.wifi.window`, default 60).
    pub window_s: u32,
    /// Probe requests accepted in the window (docs/wifi.md, "Parsing policy").
    pub probe_requests: u64,
    /// Probe requests naming a network (SSID reduced to wildcard/directed; never the name).
    pub directed_probes: u64,
    /// Distinct source addresses; over-counts phones that randomize (see `devices_estimated`).
    pub devices: u64,
    /// Of `devices`, the locally administered (randomized) addresses.
    pub randomized: u64,
    /// `randomized` / `devices`, 0 to 1 in steps of 0.001; 0 when `devices` is 0.
    pub randomized_share: f64,
    /// Addresses whose strongest probe reached `rssi_threshold_dbm`.
    pub in_store: u64,
    /// Addresses below `rssi_threshold_dbm`, or heard without a signal figure.
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
    /// The `in_store_rssi` in force (dBm) that split `in_store` from `passer_by`.
    pub rssi_threshold_dbm: i16,
    /// Probe requests by RSSI bucket lower bound (`-90` = [-90,-80)), plus `none`.
    pub rssi_histogram: BTreeMap<String, u64>,
    /// Stays that ended in the window by dwell (`<2`, `2-5`, `5-10`, `10-20`, `20-40`, `40+`
    /// minutes), in devices.
    pub dwell_histogram: BTreeMap<String, u64>,
    /// True when counts below `privacy.min_count` were zeroed (every figure, when the window
    /// held fewer devices than that).
    pub suppressed: bool,
}

/// `wifi.visit`: one pseudonymous in-store device session.
#[derive(Debug, Clone, Serialize)]
pub struct WifiVisit {
    /// Pseudonym of the device track: HMAC-SHA256 under the rotating device key, truncated,
    /// hex; derived from no address, and unlinkable across key rotations.
    pub device: String,
    /// First probe at or above `in_store_rssi` (RFC 3339 UTC with milliseconds).
    pub first_seen: String,
    /// Last probe at or above `in_store_rssi`; also the event's `ts`.
    pub last_seen: String,
    /// `last_seen` minus `first_seen`, in seconds; at least `min_dwell`, or no visit is sent.
    pub dwell_s: f64,
    /// Strongest in-store probe of the visit, in dBm.
    pub peak_rssi: i16,
    /// Probe requests of the device during the session, in the store or not.
    pub probe_requests: u64,
    /// True when the device probed from randomized (locally administered) addresses.
    pub randomized: bool,
}
