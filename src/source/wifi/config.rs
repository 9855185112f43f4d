//! `[sources.wifi]`: every knob of the probe-request source, with defaults and validation
//! (documented key by key in config/storegw.toml and docs/wifi.md).

use crate::config::units::Dur;
pub use crate::privacy::wifi::Infrastructure;
use serde::Deserialize;
use std::time::Duration;

/// What to do with a class of doubtful probe requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Count it in its own counter and keep it out of every device figure.
    Drop,
    /// Count it and treat it like any other probe request.
    Keep,
}

/// `[sources.wifi]` in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WifiConfig {
    /// Capture live on `interface` (default off; read at start only). Replay ignores it.
    pub enabled: bool,
    /// Monitor-mode interface to capture on (radiotap link type).
    pub interface: String,
    /// Attach a kernel (classic BPF) filter so only probe requests reach user space.
    pub bpf_filter: bool,
    /// Channels to hop over (`iw dev IFACE set channel N`); empty = stay where the interface is.
    pub channels: Vec<u16>,
    /// Time on each channel when hopping.
    pub hop_dwell: Dur,
    /// Census window length; must divide a day so windows align to midnight.
    pub window: Dur,
    /// A device is in the store when its strongest probe in the window reaches this (dBm).
    pub in_store_rssi: i16,
    /// Check the CRC of frames that carry an FCS.
    pub verify_fcs: bool,
    /// Frames whose FCS is bad (corrupted receptions): counted in `bad_fcs`, then this.
    pub bad_fcs: Policy,
    /// Source addresses with the group bit set (no real transmitter has it).
    pub group_source: Policy,
    /// Emit `wifi.visit` sessions (opt-in).
    pub visits: bool,
    /// A visit is reported only when the device stayed above `in_store_rssi` this long.
    pub min_dwell: Dur,
    /// A device unseen this long has left: its session closes.
    pub session_gap: Dur,
    /// Devices tracked at once for visits (RAM bound); more are counted, not tracked.
    pub max_tracked_devices: usize,
    /// Group randomized addresses into estimated devices (docs/wifi.md, "Device estimation");
    /// off, every address counts as a device.
    pub estimate_devices: bool,
    /// The store's own equipment (MAC addresses): resident, never people. Hashed when the
    /// configuration is read, never kept as written.
    pub infrastructure: Infrastructure,
    /// The store's mapping from its radio picture to people (`storegw calibrate wifi`);
    /// documented defaults without it.
    pub calibration: Calibration,
}

/// `[sources.wifi.calibration]`: how present devices become people in this store. Printed by
/// `storegw calibrate wifi DIR` from days with people counted; the defaults are the fit on all
/// 13 shared lab days (docs/wifi.md, "People"), a starting point, not a store's own mapping.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Calibration {
    /// A probe at or above this (dBm) places its device in the store (for people); without
    /// it, `sources.wifi.in_store_rssi`.
    pub in_store_rssi: Option<i16>,
    /// A device stays present this long after its last in-store probe (a phone whose screen
    /// is off probes every few minutes).
    pub hold: Dur,
    /// Present devices per person (phones, watches, laptops; people without a probing phone
    /// lower it).
    pub devices_per_person: f64,
    /// Devices present when nobody is (strays that the residency rule does not catch).
    pub background: f64,
    /// What a present device with a randomized address counts for, against 1 for a device
    /// with its fixed address (0 to 1). Where people's phones randomize, both count (1); where
    /// the randomized tracks are mostly fragments and strays and the people carry
    /// fixed-address devices (the shared lab days fit 0), they count less.
    pub randomized_weight: f64,
    /// What a device listed in `sources.wifi.infrastructure` counts for while it is on,
    /// against 1 for a fixed-address device (0 to 1). 0 (the default): the store's equipment
    /// is never people. Where the equipment is switched on by the people who use it
    /// (workstations in a lab, an office, a library), the store's counted days say how much
    /// it tells: the shared lab days, with the lab's 14 PCs listed, fit 0.75.
    pub infrastructure_weight: f64,
    /// This many devices with globally unique addresses of one maker (the address's first
    /// three bytes) heard in the store within a key epoch make that maker's devices heard in
    /// the store the store's equipment, as if listed in `sources.wifi.infrastructure` (a store
    /// buys its PCs and tills in batches; shoppers' phones draw random addresses). 0 (the
    /// default): learn none; else 2 to 16. The calibration tries it off and at the
    /// configured size (3 when none is) and keeps it where the counted days fit better.
    pub equipment_fleet: usize,
    /// A device present without a break this long is resident (0s: never).
    pub resident_after: Dur,
    /// A device counts once its stay in the store has lasted this long: passers-by whose
    /// signal reaches into the store for a scan or two never do.
    pub min_stay: Dur,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration {
            in_store_rssi: None,
            hold: Dur::secs(120),
            devices_per_person: 1.16,
            background: 0.5,
            randomized_weight: 1.0,
            infrastructure_weight: 0.0,
            equipment_fleet: 0,
            resident_after: Dur::secs(3 * 3600),
            min_stay: Dur::secs(60),
        }
    }
}

impl Calibration {
    /// Semantic checks, keys named in full.
    pub fn validate(&self, issues: &mut Vec<(String, String)>) {
        let mut bad = |k: &str, m: String| {
            issues.push((format!("sources.wifi.calibration.{k}"), m));
        };
        if let Some(r) = self.in_store_rssi.filter(|r| !(-120..=0).contains(r)) {
            bad("in_store_rssi", format!("{r} dBm is out of range -120..0"));
        }
        if self.hold.0 > Duration::from_secs(3600) {
            bad("hold", "must be at most 1h".into());
        }
        if !(self.devices_per_person.is_finite() && (0.1..=10.0).contains(&self.devices_per_person))
        {
            bad(
                "devices_per_person",
                format!("{} must be between 0.1 and 10", self.devices_per_person),
            );
        }
        if !(self.background.is_finite() && (0.0..=1000.0).contains(&self.background)) {
            bad(
                "background",
                format!("{} must be between 0 and 1000", self.background),
            );
        }
        if !(self.randomized_weight.is_finite() && (0.0..=1.0).contains(&self.randomized_weight)) {
            bad(
                "randomized_weight",
                format!("{} must be between 0 and 1", self.randomized_weight),
            );
        }
        if !(self.infrastructure_weight.is_finite()
            && (0.0..=1.0).contains(&self.infrastructure_weight))
        {
            bad(
                "infrastructure_weight",
                format!("{} must be between 0 and 1", self.infrastructure_weight),
            );
        }
        if self.equipment_fleet == 1 || self.equipment_fleet > super::fleet::MAX_SIZE {
            bad(
                "equipment_fleet",
                format!(
                    "{} must be 0 (learn none) or 2 to {} devices of one maker",
                    self.equipment_fleet,
                    super::fleet::MAX_SIZE
                ),
            );
        }
        if self.min_stay.0 > Duration::from_secs(3600) {
            bad("min_stay", "must be at most 1h".into());
        }
        if self.resident_after.0 > Duration::from_secs(86_400) {
            bad("resident_after", "must be at most 24h (0s: never)".into());
        }
    }

    /// The section as TOML, as `storegw calibrate wifi` prints it.
    pub fn to_toml(&self) -> String {
        let rssi = match self.in_store_rssi {
            Some(r) => format!("in_store_rssi = {r}\n"),
            None => String::new(),
        };
        format!(
            "[sources.wifi.calibration]\n{}hold = \"{}s\"\ndevices_per_person = {:.2}\nbackground = {:.2}\nrandomized_weight = {:.2}\ninfrastructure_weight = {:.2}\nequipment_fleet = {}\nresident_after = \"{}s\"\nmin_stay = \"{}s\"\n",
            rssi,
            self.hold.0.as_secs(),
            self.devices_per_person,
            self.background,
            self.randomized_weight,
            self.infrastructure_weight,
            self.equipment_fleet,
            self.resident_after.0.as_secs(),
            self.min_stay.0.as_secs()
        )
    }
}

impl Default for WifiConfig {
    fn default() -> Self {
        WifiConfig {
            enabled: false,
            interface: "wlan1".into(),
            bpf_filter: true,
            channels: Vec::new(),
            hop_dwell: Dur(Duration::from_millis(500)),
            window: Dur::secs(60),
            in_store_rssi: -70,
            verify_fcs: true,
            bad_fcs: Policy::Drop,
            group_source: Policy::Drop,
            visits: false,
            min_dwell: Dur::secs(120),
            session_gap: Dur::secs(300),
            max_tracked_devices: 20_000,
            estimate_devices: true,
            infrastructure: Infrastructure::default(),
            calibration: Calibration::default(),
        }
    }
}

/// Is `ch` a channel number `iw` accepts on 2.4 or 5 GHz?
fn valid_channel(ch: u16) -> bool {
    (1..=14).contains(&ch) || (32..=177).contains(&ch)
}

impl WifiConfig {
    /// Semantic checks: (dotted key path, message) pairs.
    pub fn validate(&self, issues: &mut Vec<(String, String)>) {
        let mut bad = |k: &str, m: String| issues.push((format!("sources.wifi.{k}"), m));
        let ifname = &self.interface;
        if ifname.is_empty()
            || ifname.len() > 15
            || ifname
                .bytes()
                .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
        {
            bad(
                "interface",
                format!(
                    "`{ifname}` is not a Linux interface name (1-15 characters, no / : or spaces)"
                ),
            );
        }
        for &ch in &self.channels {
            if !valid_channel(ch) {
                bad(
                    "channels",
                    format!("{ch} is not a 2.4 GHz (1-14) or 5 GHz (32-177) channel"),
                );
            }
        }
        let dwell = self.hop_dwell.0;
        if dwell < Duration::from_millis(50) || dwell > Duration::from_secs(3600) {
            bad("hop_dwell", "must be between 50ms and 1h".into());
        }
        let w = self.window.0;
        if w < Duration::from_secs(1)
            || w > Duration::from_secs(86_400)
            || w.subsec_millis() != 0
            || 86_400 % w.as_secs().max(1) != 0
        {
            bad(
                "window",
                "must be whole seconds between 1s and 24h that divide a day (e.g. 60s, 5m, 15m, 1h)"
                    .into(),
            );
        }
        if !(-120..=0).contains(&self.in_store_rssi) {
            bad(
                "in_store_rssi",
                format!("{} dBm is out of range -120..0", self.in_store_rssi),
            );
        }
        if self.min_dwell.0 > Duration::from_secs(86_400) {
            bad("min_dwell", "must be at most 24h".into());
        }
        if self.session_gap.0 < Duration::from_secs(10)
            || self.session_gap.0 > Duration::from_secs(86_400)
        {
            bad("session_gap", "must be between 10s and 24h".into());
        }
        if !(1..=1_000_000).contains(&self.max_tracked_devices) {
            bad(
                "max_tracked_devices",
                "must be between 1 and 1000000".into(),
            );
        }
        for m in self.infrastructure.errors() {
            bad("infrastructure", m.clone());
        }
        self.calibration.validate(issues);
    }

    /// Makes relative paths relative to the config file's directory (the source has none).
    pub fn resolve_paths(&mut self, _base: &std::path::Path) {}

    /// Census window in milliseconds.
    pub fn window_ms(&self) -> i64 {
        (self.window.0.as_millis() as i64).max(1000)
    }
}

impl crate::config::section::Section for WifiConfig {
    fn check(&self, issues: &mut Vec<(String, String)>) {
        self.validate(issues);
    }

    fn resolve(&mut self, base: &std::path::Path) {
        self.resolve_paths(base);
    }
}

impl WifiConfig {
    /// Wi-Fi's rows of the reload table: the pipeline takes windows and policies on reload, the
    /// channel hopper re-reads its list and dwell; the capture socket (interface, BPF filter)
    /// is opened at start.
    pub const RELOAD: &'static [crate::config::section::Row<WifiConfig>] = &[
        crate::config::section::live(""),
        crate::config::section::restart("enabled", |e, r| e.enabled = r.enabled),
        crate::config::section::restart("interface", |e, r| e.interface = r.interface.clone()),
        crate::config::section::restart("bpf_filter", |e, r| e.bpf_filter = r.bpf_filter),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_named() {
        let mut v = Vec::new();
        WifiConfig::default().validate(&mut v);
        assert!(v.is_empty(), "{v:?}");
        let c = WifiConfig {
            interface: "wlan0/x".into(),
            channels: vec![6, 15],
            hop_dwell: Dur(Duration::from_millis(10)),
            window: Dur::secs(7),
            in_store_rssi: 5,
            session_gap: Dur::secs(1),
            max_tracked_devices: 0,
            min_dwell: Dur::secs(90_000),
            ..WifiConfig::default()
        };
        c.validate(&mut v);
        let keys: Vec<&str> = v.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "sources.wifi.interface",
                "sources.wifi.channels",
                "sources.wifi.hop_dwell",
                "sources.wifi.window",
                "sources.wifi.in_store_rssi",
                "sources.wifi.min_dwell",
                "sources.wifi.session_gap",
                "sources.wifi.max_tracked_devices"
            ]
        );
    }
}
