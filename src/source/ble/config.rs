//! `[sources.ble]`: scanner, windows, which beacons are known, distance and presence tuning.

use crate::config::units::Dur;
use serde::Deserialize;
use std::time::Duration;

/// `[sources.ble]` in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BleConfig {
    /// Scan with the local Bluetooth adapter (BlueZ).
    pub enabled: bool,
    /// Adapter name (`hci0`) or empty for the first one BlueZ lists.
    pub adapter: String,
    /// Aggregation window of `ble.sighting` and `ble.census`.
    pub window: Dur,
    /// `allowlist` (the default): only beacons matching `[sources.ble.allowlist]` are known;
    /// `all`: every iBeacon, Eddystone UID/URL and AltBeacon is. `all` would publish the fixed
    /// identity of any phone app or personal tag that advertises one (docs/ble.md).
    pub known_beacons: String,
    /// This store's own beacons (`known_beacons = "allowlist"`); empty = none is known.
    pub allowlist: AllowList,
    /// Log-distance path-loss exponent n in d = 10^((P1m - RSSI) / (10 n)); 2 is free space.
    pub path_loss_exponent: f64,
    /// Added to every beacon's advertised 1 m reference power (site calibration), dB.
    pub calibration_db: f64,
    /// 1 m reference power used when a beacon advertises an implausible one (>= 0 or < -100).
    pub default_tx_power: i16,
    /// Emit `ble.presence` enter/exit.
    pub presence: bool,
    /// A beacon enters when its smoothed RSSI reaches this (dBm).
    pub enter_rssi: i16,
    /// A present beacon exits when its smoothed RSSI falls below this (dBm); <= enter_rssi.
    pub exit_rssi: i16,
    /// EWMA weight of a new RSSI sample, 0 < a <= 1 (1 = no smoothing).
    pub rssi_smoothing: f64,
    /// A present beacon not heard for this long exits.
    pub absence_timeout: Dur,
    /// Emit `ble.census` for devices that are not known beacons.
    pub census: bool,
    /// No advertisement for this long while scanning: restart the scan, then reopen the adapter.
    pub stall_timeout: Dur,
    /// How long to wait before retrying when BlueZ or the adapter is missing.
    pub retry_interval: Dur,
}

/// Known beacons when `known_beacons = "allowlist"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowList {
    /// iBeacon proximity UUIDs, optionally with a major: `"uuid"` or `"uuid:major"`.
    pub ibeacon: Vec<String>,
    /// Eddystone-UID namespaces, 20 hex digits.
    pub eddystone_namespace: Vec<String>,
    /// Eddystone-URL prefixes (`https://example.com/store/`).
    pub eddystone_url: Vec<String>,
    /// AltBeacon id1 values (UUID form).
    pub altbeacon_id1: Vec<String>,
}

impl Default for BleConfig {
    fn default() -> Self {
        BleConfig {
            enabled: false,
            adapter: String::new(),
            window: Dur::secs(10),
            known_beacons: "allowlist".into(),
            allowlist: AllowList::default(),
            path_loss_exponent: 2.0,
            calibration_db: 0.0,
            default_tx_power: -59,
            presence: true,
            enter_rssi: -80,
            exit_rssi: -90,
            rssi_smoothing: 0.3,
            absence_timeout: Dur::secs(30),
            census: true,
            stall_timeout: Dur::secs(60),
            retry_interval: Dur::secs(30),
        }
    }
}

impl AllowList {
    /// True when no beacon is listed: with `known_beacons = "allowlist"` every device then only
    /// counts in the census.
    pub fn is_empty(&self) -> bool {
        self.ibeacon.is_empty()
            && self.eddystone_namespace.is_empty()
            && self.eddystone_url.is_empty()
            && self.altbeacon_id1.is_empty()
    }
}

/// Parses a UUID in 8-4-4-4-12 form (either case) into bytes.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let parts: Vec<&str> = s.split('-').collect();
    if parts.iter().map(|p| p.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
        return None;
    }
    let mut v = Vec::with_capacity(16);
    super::adv::hex_decode(&parts.concat(), &mut v).then_some(())?;
    v.try_into().ok()
}

/// An iBeacon allowlist entry: UUID and an optional major.
pub fn parse_ibeacon_entry(s: &str) -> Option<([u8; 16], Option<u16>)> {
    match s.split_once(':') {
        Some((u, m)) => Some((parse_uuid(u.trim())?, Some(m.trim().parse().ok()?))),
        None => Some((parse_uuid(s.trim())?, None)),
    }
}

/// A 10-byte Eddystone namespace from 20 hex digits.
pub fn parse_namespace(s: &str) -> Option<[u8; 10]> {
    let mut v = Vec::with_capacity(10);
    (s.len() == 20 && super::adv::hex_decode(s, &mut v)).then_some(())?;
    v.try_into().ok()
}

impl BleConfig {
    /// Semantic checks: (dotted key path, message) pairs.
    pub fn validate(&self, issues: &mut Vec<(String, String)>) {
        let mut bad = |k: &str, m: String| issues.push((format!("sources.ble.{k}"), m));
        if self.adapter.len() > 64
            || !self
                .adapter
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            bad(
                "adapter",
                format!("`{}` is not an adapter name such as hci0", self.adapter),
            );
        }
        if self.window.0 < Duration::from_secs(1) || self.window.0 > Duration::from_secs(3600) {
            bad("window", "must be between 1s and 1h".into());
        }
        // An empty allowlist is valid (the default): no beacon is known, devices are only
        // counted; the scanner says so at start.
        match self.known_beacons.as_str() {
            "all" | "allowlist" => {}
            other => bad(
                "known_beacons",
                format!("`{other}` is not one of all, allowlist"),
            ),
        }
        for e in &self.allowlist.ibeacon {
            if parse_ibeacon_entry(e).is_none() {
                bad(
                    "allowlist.ibeacon",
                    format!("`{e}` is not \"uuid\" or \"uuid:major\" (major 0-65535)"),
                );
            }
        }
        for e in &self.allowlist.eddystone_namespace {
            if parse_namespace(e).is_none() {
                bad(
                    "allowlist.eddystone_namespace",
                    format!("`{e}` is not 20 hex digits"),
                );
            }
        }
        for e in &self.allowlist.eddystone_url {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                bad(
                    "allowlist.eddystone_url",
                    format!("`{e}` must start with http:// or https://"),
                );
            }
        }
        for e in &self.allowlist.altbeacon_id1 {
            if parse_uuid(e).is_none() {
                bad(
                    "allowlist.altbeacon_id1",
                    format!("`{e}` is not a UUID (8-4-4-4-12 hex digits)"),
                );
            }
        }
        if !(1.0..=6.0).contains(&self.path_loss_exponent) {
            bad("path_loss_exponent", "must be between 1.0 and 6.0".into());
        }
        if !(-30.0..=30.0).contains(&self.calibration_db) {
            bad("calibration_db", "must be between -30 and 30 dB".into());
        }
        if !(-100..=0).contains(&self.default_tx_power) {
            bad("default_tx_power", "must be between -100 and 0 dBm".into());
        }
        if !(-127..=20).contains(&self.enter_rssi) {
            bad("enter_rssi", "must be between -127 and 20 dBm".into());
        }
        if !(-127..=20).contains(&self.exit_rssi) {
            bad("exit_rssi", "must be between -127 and 20 dBm".into());
        }
        if self.exit_rssi > self.enter_rssi {
            bad(
                "exit_rssi",
                "must not be above enter_rssi (hysteresis needs exit <= enter)".into(),
            );
        }
        if !(self.rssi_smoothing > 0.0 && self.rssi_smoothing <= 1.0) {
            bad(
                "rssi_smoothing",
                "must be greater than 0 and at most 1".into(),
            );
        }
        if self.absence_timeout.0 < Duration::from_secs(1)
            || self.absence_timeout.0 > Duration::from_secs(86_400)
        {
            bad("absence_timeout", "must be between 1s and 24h".into());
        }
        if self.stall_timeout.0 < Duration::from_secs(2)
            || self.stall_timeout.0 > Duration::from_secs(86_400)
        {
            bad("stall_timeout", "must be between 2s and 24h".into());
        }
        if self.retry_interval.0 < Duration::from_secs(1) {
            bad("retry_interval", "must be at least 1s".into());
        }
    }

    /// No relative paths in this section.
    pub fn resolve_paths(&mut self, _base: &std::path::Path) {}
}

impl crate::config::section::Section for BleConfig {
    fn check(&self, issues: &mut Vec<(String, String)>) {
        self.validate(issues);
    }

    fn resolve(&mut self, base: &std::path::Path) {
        self.resolve_paths(base);
    }
}

impl BleConfig {
    /// BLE's rows of the reload table: the aggregator takes windows, beacons, allowlists and
    /// thresholds on reload; the scanner's adapter and its watchdog timings are chosen when it
    /// starts.
    pub const RELOAD: &'static [crate::config::section::Row<BleConfig>] = &[
        crate::config::section::live(""),
        crate::config::section::restart("enabled", |e, r| e.enabled = r.enabled),
        crate::config::section::restart("adapter", |e, r| e.adapter = r.adapter.clone()),
        crate::config::section::restart("stall_timeout", |e, r| e.stall_timeout = r.stall_timeout),
        crate::config::section::restart("retry_interval", |e, r| {
            e.retry_interval = r.retry_interval
        }),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse() {
        let u = "fda50693-a4e2-4fb1-afcf-c6eb07647825";
        assert!(parse_uuid(u).is_some());
        assert!(parse_uuid(&u.to_uppercase()).is_some());
        assert!(parse_uuid("fda50693a4e24fb1afcfc6eb07647825").is_none());
        assert_eq!(
            parse_ibeacon_entry(&format!("{u}:5")).map(|e| e.1),
            Some(Some(5))
        );
        assert!(parse_ibeacon_entry(&format!("{u}:70000")).is_none());
        assert!(parse_namespace("12345678901234678901").is_some());
        assert!(parse_namespace("1234").is_none());
        let mut issues = Vec::new();
        BleConfig::default().validate(&mut issues);
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(BleConfig::default().known_beacons, "allowlist");
        assert!(BleConfig::default().allowlist.is_empty());
        let c = BleConfig {
            exit_rssi: -70,
            known_beacons: "everything".into(),
            ..Default::default()
        };
        c.validate(&mut issues);
        assert_eq!(issues.len(), 2, "{issues:?}");
    }
}
