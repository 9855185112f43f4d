//! People in the store from device tracks (docs/wifi.md, "People"): which tracks are *present*
//! (alive and in the store, also between the probes of a phone whose screen is off), which of
//! them are the store's own residents (PCs, tills, staff devices that stay all day), and how
//! many people the rest stand for under the store's calibration.
//!
//! Only track numbers and keyed address hashes (under the epoch key, made by
//! [`crate::privacy::wifi`]) enter here; everything is held in RAM, bounded by
//! `max_tracked_devices`, and forgotten at every key rotation.

use super::config::{Calibration, WifiConfig};
use super::estimate::U64Map;

/// Upper bounds (minutes) of the dwell buckets; the last bucket is open.
const DWELL_BOUNDS_MIN: [i64; 5] = [2, 5, 10, 20, 40];

/// Dwell histogram labels in the order a JSON object with sorted keys lists them (the order
/// serde_json gives a `BTreeMap`), with the index of the bucket each names.
pub const DWELL_LABELS: [(&str, usize); 6] = [
    ("10-20", 3),
    ("2-5", 1),
    ("20-40", 4),
    ("40+", 5),
    ("5-10", 2),
    ("<2", 0),
];

/// Buckets of the dwell histogram.
pub const DWELL_BUCKETS: usize = 6;

/// The bucket of a stay of `dwell_ms`.
fn dwell_bucket(dwell_ms: i64) -> usize {
    DWELL_BOUNDS_MIN
        .iter()
        .position(|b| dwell_ms < b * 60_000)
        .unwrap_or(DWELL_BUCKETS - 1)
}

/// The settings of the presence model, from the calibration (or its defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeopleSettings {
    /// A probe at or above this (dBm) places its device in the store.
    pub in_store_rssi: i16,
    /// A device stays present this long after its last in-store probe.
    pub hold_ms: i64,
    /// Devices one person carries on average (present devices per person).
    pub devices_per_person: f64,
    /// Devices present when nobody is (strays the residency rule does not catch).
    pub background: f64,
    /// What a randomized-address device counts for against a fixed-address one.
    pub randomized_weight: f64,
    /// What a listed infrastructure device that is on counts for against a fixed-address
    /// device (0: left out of people, the default).
    pub infrastructure_weight: f64,
    /// A device present without a break this long is resident (0: never).
    pub resident_after_ms: i64,
    /// A device counts only once its stay has lasted this long (passers-by never do).
    pub min_stay_ms: i64,
    /// Tracks held at once (`max_tracked_devices`).
    pub max_tracks: usize,
}

impl PeopleSettings {
    /// Settings for a source configuration (its calibration section or the defaults).
    pub fn from_config(cfg: &WifiConfig) -> PeopleSettings {
        PeopleSettings::new(&cfg.calibration, cfg.in_store_rssi, cfg.max_tracked_devices)
    }

    /// Settings from a calibration section, the source's in-store threshold (used when the
    /// calibration names none) and the track cap.
    pub fn new(cal: &Calibration, in_store_rssi: i16, max_tracks: usize) -> PeopleSettings {
        PeopleSettings {
            in_store_rssi: cal.in_store_rssi.unwrap_or(in_store_rssi),
            hold_ms: cal.hold.0.as_millis() as i64,
            devices_per_person: cal.devices_per_person,
            background: cal.background,
            randomized_weight: cal.randomized_weight,
            infrastructure_weight: cal.infrastructure_weight,
            resident_after_ms: cal.resident_after.0.as_millis() as i64,
            min_stay_ms: cal.min_stay.0.as_millis() as i64,
            max_tracks,
        }
    }

    /// People standing for `devices` present non-resident devices, `randomized` of them with
    /// randomized addresses, and `listed` infrastructure devices on (per minute).
    pub fn people(&self, devices: u64, randomized: u64, listed: f64) -> f64 {
        let weighted = weighted_devices(
            devices as f64,
            randomized as f64,
            listed,
            self.randomized_weight,
            self.infrastructure_weight,
        );
        ((weighted - self.background) / self.devices_per_person.max(0.01)).max(0.0)
    }

    /// What one device counts for: 1 with a fixed (globally unique) address,
    /// [`PeopleSettings::randomized_weight`] with a randomized one.
    pub fn weight(&self, global: bool) -> f64 {
        if global {
            1.0
        } else {
            self.randomized_weight
        }
    }
}

/// What the present devices count for before the mapping to people: `devices` non-resident
/// devices, `randomized` of them at `randomized_weight`, plus `listed` infrastructure devices
/// on at `infrastructure_weight`. The census and the calibration's fit weigh alike through it.
pub fn weighted_devices(
    devices: f64,
    randomized: f64,
    listed: f64,
    randomized_weight: f64,
    infrastructure_weight: f64,
) -> f64 {
    devices - (1.0 - randomized_weight) * randomized.min(devices) + infrastructure_weight * listed
}

/// One device's current stay in the store.
#[derive(Clone, Copy)]
struct Stay {
    first_ms: i64,
    last_ms: i64,
    /// Keyed hash of the address the stay began with (for residency by address).
    addr: u64,
    global: bool,
    resident: bool,
    /// The stay has lasted `min_stay`: a person (or a resident), not a passer-by.
    counted: bool,
}

/// A listed infrastructure device.
#[derive(Clone, Copy)]
struct Listed {
    last_ms: i64,
    /// Minutes of the open window in which it probed.
    minutes: u32,
}

/// The figures of one window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PeopleWindow {
    /// People present (unrounded; the census rounds).
    pub people: f64,
    /// Non-resident devices present.
    pub devices: u64,
    /// Of them, with randomized addresses.
    pub randomized: u64,
    /// Resident devices present (learned or listed as infrastructure).
    pub resident: u64,
    /// Listed infrastructure devices on: each counts the share of the window's minutes in
    /// which it probed (1 in a one-minute window), so a longer window does not count a device
    /// that probes every few minutes as on all the time.
    pub listed: f64,
    /// Stays that began in the window, in people.
    pub arrivals: f64,
    /// Stays that ended in the window, by dwell bucket (devices; see [`DWELL_LABELS`]).
    pub dwell: [u64; DWELL_BUCKETS],
}

/// Presence of device tracks over event time.
pub struct Presence {
    set: PeopleSettings,
    stays: U64Map<Stay>,
    /// Keyed hashes of globally unique addresses found resident in this key epoch: the
    /// device is resident again when its track restarts.
    resident_addrs: U64Map<()>,
    /// Listed infrastructure tracks: when each last probed and in how many minutes of the
    /// open window.
    infra: U64Map<Listed>,
    /// Arrivals of the open window, each counted with its address kind's weight.
    arrivals: f64,
    /// Stays dropped because the cap was reached.
    pub untracked: u64,
}

impl Presence {
    /// An empty model.
    pub fn new(set: PeopleSettings) -> Presence {
        Presence {
            set,
            stays: U64Map::default(),
            resident_addrs: U64Map::default(),
            infra: U64Map::default(),
            arrivals: 0.0,
            untracked: 0,
        }
    }

    /// New settings (SIGHUP); stays are kept.
    pub fn reconfigure(&mut self, set: PeopleSettings) {
        self.set = set;
    }

    /// Forgets everything (key rotation).
    pub fn clear(&mut self) {
        self.stays.clear();
        self.resident_addrs.clear();
        self.infra.clear();
        self.arrivals = 0.0;
    }

    /// Stays held now.
    pub fn len(&self) -> usize {
        self.stays.len()
    }

    /// True when no stay is held.
    pub fn is_empty(&self) -> bool {
        self.stays.is_empty()
    }

    /// One probe of `track` (from address hash `addr`) at `ts_ms`; `infrastructure` when the
    /// address is the store's equipment (listed, or learned by maker).
    pub fn observe(
        &mut self,
        ts_ms: i64,
        track: u64,
        addr: u64,
        randomized: bool,
        rssi: Option<i8>,
        infrastructure: bool,
    ) {
        if infrastructure {
            // Equipment learned by maker was a device until its maker's batch was heard: it
            // leaves the devices now, and its stay so far is no visit (no dwell recorded).
            self.stays.remove(&track);
            // Switched on (again: nothing heard for longer than `hold`) is an arrival at the
            // calibrated weight, 0 unless the store's counted days show its equipment is
            // switched on by the people who use it.
            let full = self.infra.len() >= self.set.max_tracks;
            let minute = |t: i64| t.div_euclid(60_000);
            match self.infra.get_mut(&track) {
                Some(l) => {
                    if ts_ms - l.last_ms > self.set.hold_ms {
                        self.arrivals += self.set.infrastructure_weight;
                    }
                    if l.minutes == 0 || minute(ts_ms) != minute(l.last_ms) {
                        l.minutes += 1;
                    }
                    l.last_ms = l.last_ms.max(ts_ms);
                }
                None if !full => {
                    self.infra.insert(
                        track,
                        Listed {
                            last_ms: ts_ms,
                            minutes: 1,
                        },
                    );
                    self.arrivals += self.set.infrastructure_weight;
                }
                None => self.untracked += 1,
            }
            return;
        }
        if rssi.is_none_or(|r| (r as i16) < self.set.in_store_rssi) {
            return;
        }
        let hold = self.set.hold_ms;
        if let Some(s) = self.stays.get_mut(&track) {
            if ts_ms - s.last_ms <= hold {
                s.last_ms = s.last_ms.max(ts_ms);
                if !s.counted && s.last_ms - s.first_ms >= self.set.min_stay_ms {
                    s.counted = true;
                    if !s.resident {
                        self.arrivals += self.set.weight(s.global);
                    }
                }
                let after = self.set.resident_after_ms;
                if after > 0 && !s.resident && s.last_ms - s.first_ms >= after {
                    s.resident = true;
                    if s.global && self.resident_addrs.len() < self.set.max_tracks {
                        self.resident_addrs.insert(s.addr, ());
                    }
                }
                return;
            }
        }
        if !self.stays.contains_key(&track) && self.stays.len() >= self.set.max_tracks {
            self.untracked += 1;
            return;
        }
        let resident = !randomized && self.resident_addrs.contains_key(&addr);
        let counted = self.set.min_stay_ms <= 0;
        if counted && !resident {
            self.arrivals += self.set.weight(!randomized);
        }
        self.stays.insert(
            track,
            Stay {
                first_ms: ts_ms,
                last_ms: ts_ms,
                addr,
                global: !randomized,
                resident,
                counted,
            },
        );
    }

    /// Track `from` was a second track of `into`'s phone: one stay. When both had counted as
    /// arrivals, the phone counts once (taken off the open window's arrivals).
    pub fn fold(&mut self, from: u64, into: u64) {
        let Some(f) = self.stays.remove(&from) else {
            return;
        };
        let Some(k) = self.stays.get_mut(&into) else {
            self.stays.insert(into, f);
            return;
        };
        if f.counted && k.counted && !f.resident && !k.resident {
            self.arrivals = (self.arrivals - self.set.weight(f.global)).max(0.0);
        }
        k.first_ms = k.first_ms.min(f.first_ms);
        k.last_ms = k.last_ms.max(f.last_ms);
        k.resident |= f.resident;
        k.counted |= f.counted;
    }

    /// Closes the window `[start_ms, end_ms)`: counts who was present in it, and ends the
    /// stays whose hold ran out before `end_ms` (their dwell goes to the histogram).
    pub fn close_window(&mut self, start_ms: i64, end_ms: i64) -> PeopleWindow {
        let hold = self.set.hold_ms;
        let mut w = PeopleWindow::default();
        let minutes = ((end_ms - start_ms) as f64 / 60_000.0).max(1.0);
        self.infra.retain(|_, l| {
            if l.minutes > 0 {
                w.resident += 1;
                w.listed += (f64::from(l.minutes) / minutes).min(1.0);
                l.minutes = 0;
            }
            // Remembered while a probe could still be the same session (no new arrival).
            l.last_ms + hold >= end_ms
        });
        self.stays.retain(|_, s| {
            let present = s.counted && s.first_ms < end_ms && s.last_ms + hold >= start_ms;
            if present {
                match s.resident {
                    true => w.resident += 1,
                    false => {
                        w.devices += 1;
                        w.randomized += u64::from(!s.global);
                    }
                }
            }
            let ended = s.last_ms + hold < end_ms;
            if ended && s.counted && !s.resident {
                w.dwell[dwell_bucket(s.last_ms - s.first_ms)] += 1;
            }
            !ended
        });
        w.people = self.set.people(w.devices, w.randomized, w.listed);
        w.arrivals = self.arrivals / self.set.devices_per_person.max(0.01);
        self.arrivals = 0.0;
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> PeopleSettings {
        PeopleSettings {
            in_store_rssi: -70,
            hold_ms: 180_000,
            devices_per_person: 1.0,
            background: 0.0,
            randomized_weight: 1.0,
            infrastructure_weight: 0.0,
            resident_after_ms: 3_600_000,
            min_stay_ms: 0,
            max_tracks: 100,
        }
    }

    #[test]
    fn a_quiet_phone_is_present_between_its_probes() {
        let mut p = Presence::new(set());
        p.observe(10_000, 1, 11, true, Some(-60), false);
        let w = p.close_window(0, 60_000);
        assert_eq!((w.devices, w.arrivals), (1, 1.0));
        // No probe in the next two minutes: still present (hold 3 min).
        assert_eq!(p.close_window(60_000, 120_000).devices, 1);
        assert_eq!(p.close_window(120_000, 180_000).devices, 1);
        // Held until 190 s, inside the next window; gone in the one after.
        let w = p.close_window(180_000, 240_000);
        assert_eq!(w.devices, 1);
        assert_eq!(w.dwell[0], 1, "the stay (under 2 min) ended in this window");
        assert_eq!(p.close_window(240_000, 300_000).devices, 0);
        assert!(p.is_empty());
    }

    #[test]
    fn passers_by_never_stay_long_enough() {
        let mut p = Presence::new(PeopleSettings {
            min_stay_ms: 120_000,
            ..set()
        });
        // A burst in the corridor, then nothing.
        p.observe(1_000, 1, 11, true, Some(-55), false);
        p.observe(1_500, 1, 11, true, Some(-55), false);
        // Someone who stays.
        for t in [2_000, 70_000, 130_000] {
            p.observe(t, 2, 12, true, Some(-60), false);
        }
        let w = p.close_window(0, 180_000);
        assert_eq!((w.devices, w.arrivals), (1, 1.0));
        let w = p.close_window(400_000, 460_000);
        assert_eq!(w.devices, 0);
        assert_eq!(w.dwell.iter().sum::<u64>(), 1, "only the stay is a visit");
    }

    #[test]
    fn weak_probes_are_not_in_the_store() {
        let mut p = Presence::new(set());
        p.observe(10_000, 1, 11, true, Some(-80), false);
        p.observe(10_000, 2, 12, true, None, false);
        assert_eq!(p.close_window(0, 60_000).devices, 0);
    }

    #[test]
    fn devices_all_day_become_resident_and_stay_so_by_address() {
        let mut p = Presence::new(set());
        for m in 0..=61 {
            p.observe(m * 60_000, 1, 11, false, Some(-50), false);
            p.close_window(m * 60_000, (m + 1) * 60_000);
        }
        let w = p.close_window(62 * 60_000, 63 * 60_000);
        assert_eq!((w.devices, w.resident), (0, 1));
        // Gone long enough to end the stay, then back on a new track: resident at once.
        p.close_window(70 * 60_000, 71 * 60_000);
        p.observe(80 * 60_000, 2, 11, false, Some(-50), false);
        let w = p.close_window(80 * 60_000, 81 * 60_000);
        assert_eq!((w.devices, w.resident, w.arrivals), (0, 1, 0.0));
        // Listed infrastructure counts as resident only.
        p.observe(81 * 60_000, 3, 13, false, Some(-50), true);
        let w = p.close_window(81 * 60_000, 82 * 60_000);
        assert_eq!((w.devices, w.resident, w.listed), (0, 2, 1.0));
        assert_eq!((w.people, w.arrivals), (0.0, 0.0));
    }

    /// A device whose maker is learned as the store's equipment (rule 8) was a device until
    /// then: from its first probe as equipment it leaves the devices, and its stay so far
    /// ends without a dwell.
    #[test]
    fn equipment_learned_later_leaves_the_devices_without_a_dwell() {
        let mut p = Presence::new(set());
        p.observe(1_000, 1, 11, false, Some(-50), false);
        let w = p.close_window(0, 60_000);
        assert_eq!((w.devices, w.listed), (1, 0.0));
        p.observe(70_000, 1, 11, false, Some(-50), true);
        let w = p.close_window(60_000, 120_000);
        assert_eq!((w.devices, w.listed, w.resident), (0, 1.0, 1));
        let w = p.close_window(600_000, 660_000);
        assert_eq!(w.dwell.iter().sum::<u64>(), 0, "no visit of the equipment");
    }

    /// Where the store's counted days show its listed equipment is switched on by the people
    /// who use it (workstations in a lab, an office, a library), the calibration gives it a
    /// weight: it counts in the minutes it probes (at any signal level), and switching on
    /// after a silence longer than `hold` is an arrival. With the default weight 0 it is never
    /// people.
    #[test]
    fn listed_equipment_counts_at_its_calibrated_weight() {
        let mut p = Presence::new(PeopleSettings {
            infrastructure_weight: 0.5,
            ..set()
        });
        for (t, track) in [(1_000, 1), (2_000, 2), (3_000, 3), (4_000, 4)] {
            p.observe(t, track, track + 10, false, Some(-90), true);
        }
        let w = p.close_window(0, 60_000);
        assert_eq!((w.listed, w.resident, w.devices), (4.0, 4, 0));
        assert_eq!((w.people, w.arrivals), (2.0, 2.0));
        // A probe within the hold (3 min) is the same session: no new arrival.
        p.observe(100_000, 1, 11, false, None, true);
        let w = p.close_window(60_000, 120_000);
        assert_eq!((w.listed, w.people, w.arrivals), (1.0, 0.5, 0.0));
        assert_eq!(p.close_window(120_000, 180_000).listed, 0.0);
        // Heard again after a longer silence: switched on again, an arrival.
        p.observe(500_000, 2, 12, false, None, true);
        let w = p.close_window(480_000, 540_000);
        assert_eq!((w.listed, w.arrivals), (1.0, 0.5));
        // In a five-minute window, a device that probed in two of its minutes is on for 2/5.
        p.observe(600_000, 3, 13, false, None, true);
        p.observe(610_000, 3, 13, false, None, true);
        p.observe(700_000, 3, 13, false, None, true);
        let w = p.close_window(600_000, 900_000);
        assert!((w.listed - 0.4).abs() < 1e-9, "{}", w.listed);
        assert_eq!(w.resident, 1);
    }

    #[test]
    fn calibration_maps_devices_to_people() {
        let s = PeopleSettings {
            devices_per_person: 1.5,
            background: 1.0,
            ..set()
        };
        assert_eq!(s.people(0, 0, 0.0), 0.0);
        assert_eq!(s.people(1, 0, 0.0), 0.0);
        assert_eq!(s.people(4, 0, 0.0), 2.0);
        assert_eq!(
            s.people(4, 4, 0.0),
            2.0,
            "weight 1: randomized devices count fully"
        );
        // Randomized devices at half weight: 2 fixed + 4 randomized count as 4 devices.
        let half = PeopleSettings {
            randomized_weight: 0.5,
            ..s
        };
        assert_eq!(half.people(6, 4, 0.0), 2.0);
        // Never more randomized devices than devices: 6 randomized at half weight are 3.
        assert!((half.people(6, 9, 0.0) - 2.0 / 1.5).abs() < 1e-9);
    }

    #[test]
    fn present_devices_are_counted_by_address_kind() {
        let mut p = Presence::new(set());
        p.observe(1_000, 1, 11, true, Some(-60), false);
        p.observe(2_000, 2, 12, false, Some(-60), false);
        p.observe(3_000, 3, 13, true, Some(-60), false);
        let w = p.close_window(0, 60_000);
        assert_eq!((w.devices, w.randomized), (3, 2));
    }

    #[test]
    fn dwell_buckets() {
        assert_eq!(dwell_bucket(0), 0);
        assert_eq!(dwell_bucket(119_999), 0);
        assert_eq!(dwell_bucket(120_000), 1);
        assert_eq!(dwell_bucket(600_000), 3);
        assert_eq!(dwell_bucket(2_400_000), 5);
        let mut seen: Vec<usize> = DWELL_LABELS.iter().map(|(_, i)| *i).collect();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2, 3, 4, 5]);
        let mut labels: Vec<&str> = DWELL_LABELS.iter().map(|(l, _)| *l).collect();
        labels.sort_unstable();
        assert_eq!(labels, DWELL_LABELS.map(|(l, _)| l), "sorted as JSON keys");
    }
}
