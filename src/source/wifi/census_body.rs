//! The `wifi.census` body written straight into the event's buffer. Every window emits one,
//! and the generic serialization (owned strings, a map with string keys, every key escaped)
//! cost more than the probes of a busy window. The output is byte for byte what serde_json
//! makes of [`WifiCensus`](crate::sensor_events::WifiCensus); the tests compare both.

use super::people::{DWELL_BUCKETS, DWELL_LABELS};
use crate::event::{write_rfc3339_ms, write_u64};

/// Histogram labels: the lower bounds of the 10 dB buckets from -130 to 120 (every `i8`).
pub const BUCKET_LABELS: [&str; 26] = [
    "-130", "-120", "-110", "-100", "-90", "-80", "-70", "-60", "-50", "-40", "-30", "-20", "-10",
    "0", "10", "20", "30", "40", "50", "60", "70", "80", "90", "100", "110", "120",
];

/// Histogram entries at most: every bucket and `none`.
const MAX_ENTRIES: usize = BUCKET_LABELS.len() + 1;

/// The figures of one census, suppression already applied.
#[derive(Debug, Clone)]
pub struct CensusBody {
    pub start_ms: i64,
    pub window_s: u32,
    pub probe_requests: u64,
    pub directed_probes: u64,
    pub devices: u64,
    pub randomized: u64,
    pub randomized_share: f64,
    pub in_store: u64,
    pub passer_by: u64,
    pub devices_estimated: u64,
    pub in_store_estimated: u64,
    pub passer_by_estimated: u64,
    pub people_estimated: u64,
    pub resident_estimated: u64,
    pub arrivals_estimated: u64,
    pub rssi_threshold_dbm: i16,
    /// Stays that ended in the window by dwell bucket (index as in [`DWELL_LABELS`]).
    pub dwell: [u64; DWELL_BUCKETS],
    pub suppressed: bool,
    histogram: [(&'static str, u64); MAX_ENTRIES],
    entries: usize,
}

impl CensusBody {
    /// A census of zeros for the window starting at `start_ms`.
    pub fn new(start_ms: i64, window_s: u32, rssi_threshold_dbm: i16) -> CensusBody {
        CensusBody {
            start_ms,
            window_s,
            probe_requests: 0,
            directed_probes: 0,
            devices: 0,
            randomized: 0,
            randomized_share: 0.0,
            in_store: 0,
            passer_by: 0,
            devices_estimated: 0,
            in_store_estimated: 0,
            passer_by_estimated: 0,
            people_estimated: 0,
            resident_estimated: 0,
            arrivals_estimated: 0,
            rssi_threshold_dbm,
            dwell: [0; DWELL_BUCKETS],
            suppressed: false,
            histogram: [("", 0); MAX_ENTRIES],
            entries: 0,
        }
    }

    /// Adds a histogram entry (a label of [`BUCKET_LABELS`] or `none`, each at most once).
    pub fn push_histogram(&mut self, label: &'static str, probes: u64) {
        if let Some(e) = self.histogram.get_mut(self.entries) {
            *e = (label, probes);
            self.entries += 1;
        }
    }

    /// The histogram entries as a JSON object orders them: by label.
    fn histogram(&mut self) -> &[(&'static str, u64)] {
        let h = &mut self.histogram[..self.entries];
        h.sort_unstable_by_key(|(label, _)| *label);
        h
    }

    /// Appends the body, a JSON object, to `out`.
    pub fn write(mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"window_start\":\"");
        write_rfc3339_ms(out, self.start_ms);
        out.extend_from_slice(b"\",\"window_s\":");
        write_u64(out, self.window_s.into());
        for (key, v) in [
            (&b",\"probe_requests\":"[..], self.probe_requests),
            (b",\"directed_probes\":", self.directed_probes),
            (b",\"devices\":", self.devices),
            (b",\"randomized\":", self.randomized),
        ] {
            out.extend_from_slice(key);
            write_u64(out, v);
        }
        out.extend_from_slice(b",\"randomized_share\":");
        // The one float: serde_json's own formatting, so the digits are the same. Its two
        // most common values (nobody randomized, everybody randomized) are spelled out.
        let share = self.randomized_share.to_bits();
        if share == 0f64.to_bits() {
            out.extend_from_slice(b"0.0");
        } else if share == 1f64.to_bits() {
            out.extend_from_slice(b"1.0");
        } else if serde_json::to_writer(&mut *out, &self.randomized_share).is_err() {
            out.extend_from_slice(b"null");
        }
        for (key, v) in [
            (&b",\"in_store\":"[..], self.in_store),
            (b",\"passer_by\":", self.passer_by),
            (b",\"devices_estimated\":", self.devices_estimated),
            (b",\"in_store_estimated\":", self.in_store_estimated),
            (b",\"passer_by_estimated\":", self.passer_by_estimated),
            (b",\"people_estimated\":", self.people_estimated),
            (b",\"resident_estimated\":", self.resident_estimated),
            (b",\"arrivals_estimated\":", self.arrivals_estimated),
        ] {
            out.extend_from_slice(key);
            write_u64(out, v);
        }
        out.extend_from_slice(b",\"rssi_threshold_dbm\":");
        if self.rssi_threshold_dbm < 0 {
            out.push(b'-');
        }
        write_u64(out, self.rssi_threshold_dbm.unsigned_abs().into());
        out.extend_from_slice(b",\"rssi_histogram\":{");
        let suppressed = self.suppressed;
        for (i, (label, n)) in self.histogram().iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(label.as_bytes());
            out.extend_from_slice(b"\":");
            write_u64(out, *n);
        }
        out.extend_from_slice(b"},\"dwell_histogram\":{");
        for (i, (label, bucket)) in DWELL_LABELS.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(label.as_bytes());
            out.extend_from_slice(b"\":");
            write_u64(out, self.dwell.get(*bucket).copied().unwrap_or(0));
        }
        out.extend_from_slice(if suppressed {
            b"},\"suppressed\":true}"
        } else {
            b"},\"suppressed\":false}"
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::rfc3339_ms;
    use crate::sensor_events::WifiCensus;
    use std::collections::BTreeMap;

    /// What serde_json makes of the same figures.
    fn reference(c: &CensusBody) -> Vec<u8> {
        let hist: BTreeMap<String, u64> = c.histogram[..c.entries]
            .iter()
            .map(|(l, n)| (l.to_string(), *n))
            .collect();
        serde_json::to_vec(&WifiCensus {
            window_start: rfc3339_ms(c.start_ms),
            window_s: c.window_s,
            probe_requests: c.probe_requests,
            directed_probes: c.directed_probes,
            devices: c.devices,
            randomized: c.randomized,
            randomized_share: c.randomized_share,
            in_store: c.in_store,
            passer_by: c.passer_by,
            devices_estimated: c.devices_estimated,
            in_store_estimated: c.in_store_estimated,
            passer_by_estimated: c.passer_by_estimated,
            people_estimated: c.people_estimated,
            resident_estimated: c.resident_estimated,
            arrivals_estimated: c.arrivals_estimated,
            rssi_threshold_dbm: c.rssi_threshold_dbm,
            rssi_histogram: hist,
            dwell_histogram: DWELL_LABELS
                .iter()
                .map(|(l, i)| (l.to_string(), c.dwell[*i]))
                .collect(),
            suppressed: c.suppressed,
        })
        .unwrap_or_default()
    }

    #[test]
    fn labels_are_the_bucket_bounds() {
        for (i, l) in BUCKET_LABELS.iter().enumerate() {
            assert_eq!(l.parse::<i16>().ok(), Some(-130 + 10 * i as i16));
        }
    }

    #[test]
    fn same_bytes_as_serde_json() {
        let mut rng = fastrand::Rng::with_seed(7);
        let starts = [
            0,
            1_700_000_040_000,
            -86_400_000,
            253_402_300_800_000,
            i64::MIN / 4,
        ];
        for round in 0..5_000 {
            let mut c = CensusBody::new(
                starts[round % starts.len()] + rng.i64(0..1_000_000),
                rng.u32(..),
                rng.i16(..),
            );
            let mut big = || match rng.u8(0..4) {
                0 => 0,
                1 => u64::MAX,
                _ => rng.u64(0..10_000),
            };
            c.probe_requests = big();
            c.directed_probes = big();
            c.devices = big();
            c.randomized = big();
            c.in_store = big();
            c.passer_by = big();
            c.devices_estimated = big();
            c.in_store_estimated = big();
            c.passer_by_estimated = big();
            c.people_estimated = big();
            c.resident_estimated = big();
            c.arrivals_estimated = big();
            for d in c.dwell.iter_mut() {
                *d = big();
            }
            c.randomized_share = match rng.u8(0..4) {
                0 => 0.0,
                1 => 1.0,
                2 => -0.0,
                _ => (rng.u32(0..1000) as f64 / rng.u32(1..1000) as f64 * 1000.0).round() / 1000.0,
            };
            c.suppressed = rng.bool();
            let mut labels: Vec<&'static str> = BUCKET_LABELS.to_vec();
            labels.push("none");
            rng.shuffle(&mut labels);
            for l in labels.iter().take(rng.usize(0..=labels.len())) {
                c.push_histogram(l, rng.u64(0..1000));
            }
            let want = reference(&c);
            let mut got = Vec::new();
            c.write(&mut got);
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want)
            );
        }
    }
}
