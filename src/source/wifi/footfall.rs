//! Footfall from pseudonymous probe sightings: `wifi.census` per window and opt-in `wifi.visit`
//! sessions. Driven by event time only (the caller advances the clock), so replay and live
//! capture run the same code. Only keyed hashes of addresses and device-track numbers (see
//! `estimate.rs`) ever enter this module; every piece of state is dropped when the device key
//! rotates, so nothing links across a rotation. Visits follow device tracks, and a visit's
//! `device` is a pseudonym of the track's number under the rotating key
//! ([`crate::privacy::wifi::visit_pseudonym`]): random per track, never derived from an
//! address or a fingerprint.

use super::census_body::{CensusBody, BUCKET_LABELS};
use super::config::WifiConfig;
use super::estimate::U64Map;
use super::people::{PeopleSettings, PeopleWindow, Presence};
use crate::event::{rfc3339_ms, write_rfc3339_ms, Event, EventKind};
use crate::privacy::{suppress, suppress_parts, DevicePseudonymizer};
use crate::sensor_events::WifiVisit;
use std::sync::Arc;

/// One accepted probe request after the privacy stage.
#[derive(Debug, Clone)]
pub struct Sighting {
    /// Event time in Unix milliseconds: receipt time live, the capture timestamp in replay.
    pub ts_ms: i64,
    /// Keyed hash of the source address (never a raw MAC): the address counts.
    pub addr: u64,
    /// Estimated device (track number): the estimated counts and the visits.
    pub track: u64,
    /// A track just found to be a second track of `track`'s phone and folded into it: its
    /// window entry, stay and visit become `track`'s.
    pub merged: Option<u64>,
    /// How long the track may stay silent and still be in the store (the session gap, or
    /// longer for a phone that probes slowly: `Estimator::silence_ms`).
    pub silence_ms: i64,
    /// Key epoch of the pseudonym.
    pub epoch: i64,
    /// Locally administered source address.
    pub randomized: bool,
    /// Signal in dBm (radiotap); `None` when absent or above 0 dBm, and then never in the store.
    pub rssi: Option<i8>,
    /// The probe named a network (directed) rather than asking for any (wildcard).
    pub directed: bool,
    /// The address is on the store's `infrastructure` list: resident, never people.
    pub infrastructure: bool,
    /// Its maker's devices were learned as the store's equipment (`source::wifi::fleet`):
    /// treated as listed while the calibration's `equipment_fleet` is on.
    pub learned: bool,
}

impl Sighting {
    /// The store's own equipment, listed or learned.
    pub fn equipment(&self) -> bool {
        self.infrastructure || self.learned
    }
}

/// Empty windows emitted at most in one stretch (a replay with a day-long gap stays short).
const MAX_EMPTY_WINDOWS: i64 = 1440;

/// Largest window maps (in entries) kept for the next window.
const MAX_SPARE: usize = 4096;

/// Buckets of the RSSI histogram: every `i8` value falls in one of the 10 dB buckets from
/// -130 to 120.
const HIST_BUCKETS: usize = BUCKET_LABELS.len();
/// Lower bound of the first histogram bucket.
const HIST_LOWEST: i16 = -130;

/// Kind of the per-window events.
const CENSUS: EventKind = EventKind::WifiCensus;

/// Where the window start sits in a serialized census body (its first field).
const START_AT: usize = br#"{"window_start":""#.len();
/// Length of an RFC 3339 window start with a four-digit year.
const START_LEN: usize = "2026-01-01T00:00:00.000Z".len();

#[derive(Default)]
struct DevWindow {
    randomized: bool,
    max_rssi: Option<i8>,
}

struct Window {
    idx: i64,
    probes: u64,
    directed: u64,
    devices: U64Map<DevWindow>,
    estimated: U64Map<DevWindow>,
    /// Probes per 10 dB bucket ([`hist_index`]): a fixed array, no lookup per probe.
    hist: [u64; HIST_BUCKETS],
    no_rssi: u64,
}

impl Window {
    fn new(idx: i64) -> Window {
        Window {
            idx,
            probes: 0,
            directed: 0,
            devices: U64Map::default(),
            estimated: U64Map::default(),
            hist: [0; HIST_BUCKETS],
            no_rssi: 0,
        }
    }
}

struct Session {
    last_seen: i64,
    /// Silence after which the device has left (`Sighting::silence_ms`, at least the gap).
    silence_ms: i64,
    in_first: Option<i64>,
    in_last: i64,
    peak: Option<i8>,
    probes: u64,
    randomized: bool,
}

/// Census windows and visit sessions.
pub struct Footfall {
    window_ms: i64,
    threshold: i16,
    min_count: u32,
    visits: bool,
    min_dwell_ms: i64,
    gap_ms: i64,
    max_tracked: usize,
    epoch: Option<i64>,
    /// The first window not yet emitted (the open one).
    next_idx: Option<i64>,
    cur: Option<Window>,
    sessions: U64Map<Session>,
    /// Devices present between their probes, residents, people.
    presence: Presence,
    visit_ids: Option<Arc<DevicePseudonymizer>>,
    /// The serialized census of an empty window and the threshold it was made with.
    empty: Option<(i16, Vec<u8>)>,
    /// The emptied maps of the last window, so the next one starts at the size its
    /// predecessor needed instead of growing again (dropped with everything else by
    /// [`Footfall::finish`]).
    spare: Option<(U64Map<DevWindow>, U64Map<DevWindow>)>,
    /// Devices not tracked for visits because `max_tracked_devices` was reached.
    pub untracked: u64,
    /// `wifi.census` events produced.
    pub census_events: u64,
    /// `wifi.visit` events produced.
    pub visit_events: u64,
    /// Most people present in one window (replay summary).
    pub people_peak: u64,
    /// Most resident devices present in one window (replay summary).
    pub resident_peak: u64,
    /// People who came in, summed over the windows (replay summary).
    pub arrivals: f64,
}

/// 10 dB histogram bucket: lower bound (`-67` → `-70`).
fn bucket(rssi: i8) -> i16 {
    (rssi as i16).div_euclid(10) * 10
}

/// Index of the histogram bucket of `rssi` in [`Window::hist`].
fn hist_index(rssi: i8) -> usize {
    ((bucket(rssi) - HIST_LOWEST) / 10) as usize
}

impl Footfall {
    /// Aggregator for one source configuration; `min_count` is `privacy.min_count`.
    pub fn new(cfg: &WifiConfig, min_count: u32) -> Footfall {
        Footfall {
            window_ms: cfg.window_ms(),
            threshold: cfg.in_store_rssi,
            min_count,
            visits: cfg.visits,
            min_dwell_ms: cfg.min_dwell.0.as_millis() as i64,
            gap_ms: (cfg.session_gap.0.as_millis() as i64).max(1),
            max_tracked: cfg.max_tracked_devices,
            epoch: None,
            next_idx: None,
            cur: None,
            sessions: U64Map::default(),
            presence: Presence::new(PeopleSettings::from_config(cfg)),
            visit_ids: None,
            empty: None,
            spare: None,
            untracked: 0,
            census_events: 0,
            visit_events: 0,
            people_peak: 0,
            resident_peak: 0,
            arrivals: 0.0,
        }
    }

    /// Applies a reloaded configuration (SIGHUP): threshold, visits, dwell, gap and
    /// `min_count` at once. The window length keeps its running value (windows are aligned to
    /// it); changing it needs a restart.
    pub fn reconfigure(&mut self, cfg: &WifiConfig, min_count: u32) {
        self.threshold = cfg.in_store_rssi;
        self.min_count = min_count;
        self.visits = cfg.visits;
        self.min_dwell_ms = cfg.min_dwell.0.as_millis() as i64;
        self.gap_ms = (cfg.session_gap.0.as_millis() as i64).max(1);
        self.max_tracked = cfg.max_tracked_devices;
        self.presence.reconfigure(PeopleSettings::from_config(cfg));
    }

    /// Names visits with pseudonyms of their track number under the rotating device key
    /// (without it, tests see `track-N`).
    pub fn set_visit_ids(&mut self, ids: Arc<DevicePseudonymizer>) {
        self.visit_ids = Some(ids);
    }

    fn in_store(&self, rssi: Option<i8>) -> bool {
        rssi.is_some_and(|r| r as i16 >= self.threshold)
    }

    /// Feeds one sighting; closed windows and sessions go to `out`.
    pub fn observe(&mut self, s: Sighting, out: &mut Vec<Event>) {
        if self.epoch.is_some_and(|e| e != s.epoch) {
            // Key rotation: close everything and forget every pseudonym of the old key.
            self.finish(out);
        }
        self.epoch = Some(s.epoch);
        self.open_at(s.ts_ms);
        self.advance(s.ts_ms, out);
        if let Some(from) = s.merged {
            self.fold(from, s.track);
        }
        self.presence.observe(
            s.ts_ms,
            s.track,
            s.addr,
            s.randomized,
            s.rssi,
            s.equipment(),
        );
        let in_store = self.in_store(s.rssi);
        let open = self.next_idx.unwrap_or(0);
        let spare = &mut self.spare;
        let w = self.cur.get_or_insert_with(|| {
            let mut w = Window::new(open);
            if let Some((devices, estimated)) = spare.take() {
                (w.devices, w.estimated) = (devices, estimated);
            }
            w
        });
        // A sighting older than the open window (clock step, reordered capture) counts in it.
        w.probes += 1;
        w.directed += s.directed as u64;
        match s.rssi {
            Some(r) => {
                if let Some(n) = w.hist.get_mut(hist_index(r)) {
                    *n += 1;
                }
            }
            None => w.no_rssi += 1,
        }
        for d in [
            w.devices.entry(s.addr).or_default(),
            w.estimated.entry(s.track).or_default(),
        ] {
            d.randomized |= s.randomized;
            d.max_rssi = match (d.max_rssi, s.rssi) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        if s.learned {
            // Learned equipment was a device until its maker's batch was heard: its session
            // so far is no visit.
            self.sessions.remove(&s.track);
        }
        if !self.visits || s.equipment() {
            return;
        }
        if let Some(sess) = self.sessions.get(&s.track) {
            if s.ts_ms - sess.last_seen > sess.silence_ms.max(self.gap_ms) {
                if let Some(sess) = self.sessions.remove(&s.track) {
                    self.emit_visit(s.track, sess, out);
                }
            }
        }
        if !self.sessions.contains_key(&s.track) && self.sessions.len() >= self.max_tracked {
            self.untracked += 1;
            return;
        }
        let sess = self.sessions.entry(s.track).or_insert(Session {
            last_seen: s.ts_ms,
            silence_ms: s.silence_ms,
            in_first: None,
            in_last: s.ts_ms,
            peak: None,
            probes: 0,
            randomized: s.randomized,
        });
        sess.last_seen = sess.last_seen.max(s.ts_ms);
        sess.silence_ms = s.silence_ms;
        sess.probes += 1;
        if in_store {
            sess.in_first.get_or_insert(s.ts_ms);
            sess.in_last = sess.in_last.max(s.ts_ms);
            sess.peak = Some(sess.peak.map_or(s.rssi.unwrap_or(i8::MIN), |p| {
                p.max(s.rssi.unwrap_or(i8::MIN))
            }));
        }
    }

    /// Track `from` was a second track of `into`'s phone: the open window counts them once,
    /// and their stays and visit sessions become one.
    fn fold(&mut self, from: u64, into: u64) {
        if let Some(w) = self.cur.as_mut() {
            if let Some(f) = w.estimated.remove(&from) {
                let d = w.estimated.entry(into).or_default();
                d.randomized |= f.randomized;
                d.max_rssi = d.max_rssi.max(f.max_rssi);
            }
        }
        self.presence.fold(from, into);
        let Some(f) = self.sessions.remove(&from) else {
            return;
        };
        match self.sessions.get_mut(&into) {
            Some(k) => {
                k.last_seen = k.last_seen.max(f.last_seen);
                k.silence_ms = k.silence_ms.max(f.silence_ms);
                k.in_first = match (k.in_first, f.in_first) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                k.in_last = k.in_last.max(f.in_last);
                k.peak = k.peak.max(f.peak);
                k.probes += f.probes;
                k.randomized |= f.randomized;
            }
            None => {
                self.sessions.insert(into, f);
            }
        }
    }

    /// Starts windowing at `now_ms` even before the first sighting, so a quiet store still
    /// reports zero-count windows (live capture calls it once at start).
    pub fn open_at(&mut self, now_ms: i64) {
        self.next_idx
            .get_or_insert(now_ms.div_euclid(self.window_ms));
    }

    /// Moves event time to `now_ms`: emits windows that ended (empty ones as zeros) and closes
    /// sessions whose device has been gone longer than the session gap. Live capture calls it
    /// on a timer.
    pub fn advance(&mut self, now_ms: i64, out: &mut Vec<Event>) {
        let idx = now_ms.div_euclid(self.window_ms);
        let Some(next) = self.next_idx else { return };
        if idx <= next {
            return;
        }
        match self.cur.take() {
            Some(w) => self.emit_census(w, out),
            None => self.emit_census(Window::new(next), out),
        }
        for i in (next + 1).max(idx - MAX_EMPTY_WINDOWS)..idx {
            self.emit_census(Window::new(i), out);
        }
        self.next_idx = Some(idx);
        if self.visits {
            let gap = self.gap_ms;
            let gone: Vec<u64> = self
                .sessions
                .iter()
                .filter(|(_, s)| now_ms - s.last_seen > s.silence_ms.max(gap))
                .map(|(k, _)| *k)
                .collect();
            for k in gone {
                if let Some(s) = self.sessions.remove(&k) {
                    self.emit_visit(k, s, out);
                }
            }
        }
    }

    /// Emits the open window and every qualifying session, and forgets all state (end of a
    /// replay, shutdown, key rotation).
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        if let Some(w) = self.cur.take() {
            self.emit_census(w, out);
        }
        self.spare = None;
        self.next_idx = None;
        self.presence.clear();
        let mut all: Vec<(u64, Session)> = self.sessions.drain().collect();
        all.sort_by_key(|(_, s)| s.last_seen);
        for (k, s) in all {
            self.emit_visit(k, s, out);
        }
        self.epoch = None;
    }

    fn emit_census(&mut self, w: Window, out: &mut Vec<Event>) {
        let start = w.idx * self.window_ms;
        let people = self.presence.close_window(start, start + self.window_ms);
        self.people_peak = self.people_peak.max(people.people.round() as u64);
        self.resident_peak = self.resident_peak.max(people.resident);
        self.arrivals += people.arrivals;
        let event = match (w.probes, people == PeopleWindow::default()) {
            (0, true) => self.empty_census(w.idx),
            _ => self.census(&w, &people),
        };
        out.push(event);
        self.census_events += 1;
        let Window {
            mut devices,
            mut estimated,
            ..
        } = w;
        // After a crowd, the memory goes back rather than staying reserved.
        if (1..=MAX_SPARE).contains(&devices.capacity()) {
            devices.clear();
            estimated.clear();
            self.spare = Some((devices, estimated));
        }
    }

    /// The census of a window without probes. Only its start differs from one such window to
    /// the next, so the body is serialized once per threshold and the start written into a
    /// copy: a replay across a gap, or a restart after one, emits up to [`MAX_EMPTY_WINDOWS`]
    /// of them in a row.
    fn empty_census(&mut self, idx: i64) -> Event {
        let start = idx * self.window_ms;
        if let Some((threshold, template)) = &self.empty {
            if *threshold == self.threshold {
                let mut body = Vec::with_capacity(template.len());
                body.extend_from_slice(&template[..START_AT]);
                write_rfc3339_ms(&mut body, start);
                if body.len() == START_AT + START_LEN {
                    body.extend_from_slice(&template[START_AT + START_LEN..]);
                    return Event::from_object(CENSUS, start + self.window_ms, body);
                }
            }
        }
        let event = self.census(&Window::new(idx), &PeopleWindow::default());
        // Kept as a template only when the start is where the copies will write theirs.
        let stamp = rfc3339_ms(start);
        if stamp.len() == START_LEN
            && event.body_bytes().get(START_AT..START_AT + START_LEN) == Some(stamp.as_bytes())
        {
            self.empty = Some((self.threshold, event.body_bytes().to_vec()));
        }
        event
    }

    /// The census of window `w` with its people figures, serialized in full.
    fn census(&self, w: &Window, people: &PeopleWindow) -> Event {
        let k = self.min_count;
        let devices = w.devices.len() as u64;
        let randomized = w.devices.values().filter(|d| d.randomized).count() as u64;
        let in_store = w
            .devices
            .values()
            .filter(|d| self.in_store(d.max_rssi))
            .count() as u64;
        let est = w.estimated.len() as u64;
        let est_in_store = w
            .estimated
            .values()
            .filter(|d| self.in_store(d.max_rssi))
            .count() as u64;
        // Below k devices every figure is withheld, so none can single a device out. The
        // estimate decides: one phone behind ten random addresses is still one person.
        let (_, s1) = suppress(devices.min(est), k);
        let all_hidden = s1;
        let sup0 = |n: u64| -> (u64, bool) {
            if all_hidden {
                (0, n > 0)
            } else {
                suppress(n, k)
            }
        };
        // Figures that add up to a published one are withheld together (`suppress_parts`), so
        // none comes back by subtraction: in the store + passing = devices, randomized +
        // fixed-address = devices, directed + broadcast = probes, the histogram = probes.
        let parts = |v: &[u64]| -> Vec<(u64, bool)> {
            if all_hidden {
                v.iter().map(|&n| (0, n > 0)).collect()
            } else {
                suppress_parts(v, k)
            }
        };
        let two = |v: Vec<(u64, bool)>| -> ((u64, bool), (u64, bool)) {
            let mut it = v.into_iter();
            (it.next().unwrap_or_default(), it.next().unwrap_or_default())
        };
        let (devices_s, s6) = sup0(devices);
        let (est_s, s7) = sup0(est);
        let ((est_in_s, s8), (est_pass_s, s9)) =
            two(parts(&[est_in_store, est.saturating_sub(est_in_store)]));
        let (people_s, s10) = sup0(people.people.round() as u64);
        let (resident_s, s11) = sup0(people.resident);
        let (arrivals_s, s12) = sup0(people.arrivals.round() as u64);
        let sup = |n: u64| -> (u64, bool) {
            if all_hidden {
                (0, n > 0)
            } else {
                suppress(n, k)
            }
        };
        let (probes, s0) = sup(w.probes);
        let ((directed, s5), _) = two(parts(&[w.directed, w.probes.saturating_sub(w.directed)]));
        let ((randomized, s2), _) = two(parts(&[randomized, devices.saturating_sub(randomized)]));
        let ((in_store, s3), (passer_by, s4)) =
            two(parts(&[in_store, devices.saturating_sub(in_store)]));
        let mut body = CensusBody::new(
            w.idx * self.window_ms,
            (self.window_ms / 1000) as u32,
            self.threshold,
        );
        body.suppressed =
            s0 || s1 || s2 || s3 || s4 || s5 || s6 || s7 || s8 || s9 || s10 || s11 || s12;
        for (slot, n) in body.dwell.iter_mut().zip(people.dwell) {
            let (n, s) = sup0(n);
            body.suppressed |= s;
            *slot = n;
        }
        let buckets: Vec<(&str, u64)> = w
            .hist
            .iter()
            .zip(BUCKET_LABELS)
            .filter(|(n, _)| **n > 0)
            .map(|(n, label)| (label, *n))
            .chain((w.no_rssi > 0).then_some(("none", w.no_rssi)))
            .collect();
        let counts: Vec<u64> = buckets.iter().map(|b| b.1).collect();
        for ((label, _), (n, s)) in buckets.iter().zip(parts(&counts)) {
            body.suppressed |= s;
            body.push_histogram(label, n);
        }
        body.randomized_share = if devices_s > 0 {
            ((randomized as f64 / devices_s as f64 * 1000.0).round() / 1000.0).min(1.0)
        } else {
            0.0
        };
        body.probe_requests = probes;
        body.directed_probes = directed;
        body.devices = devices_s;
        body.randomized = randomized;
        body.in_store = in_store;
        body.passer_by = passer_by;
        body.devices_estimated = est_s;
        body.in_store_estimated = est_in_s;
        body.passer_by_estimated = est_pass_s;
        body.people_estimated = people_s;
        body.resident_estimated = resident_s;
        body.arrivals_estimated = arrivals_s;
        let mut out = Vec::with_capacity(512);
        body.write(&mut out);
        Event::from_object(CENSUS, (w.idx + 1) * self.window_ms, out)
    }

    fn emit_visit(&mut self, track: u64, s: Session, out: &mut Vec<Event>) {
        let (Some(first), Some(peak)) = (s.in_first, s.peak) else {
            return; // never in the store: a passer-by, forgotten here
        };
        let dwell = s.in_last - first;
        if dwell < self.min_dwell_ms {
            return;
        }
        let device = match &self.visit_ids {
            Some(ids) => match crate::privacy::wifi::visit_pseudonym(ids, track, s.in_last) {
                Some(d) => d,
                // No key (fail closed): the visit is not published under a weak name.
                None => return,
            },
            None => format!("track-{track}"),
        };
        out.push(Event::new(
            EventKind::WifiVisit,
            s.in_last,
            &WifiVisit {
                device,
                first_seen: rfc3339_ms(first),
                last_seen: rfc3339_ms(s.in_last),
                dwell_s: dwell as f64 / 1000.0,
                peak_rssi: peak as i16,
                probe_requests: s.probes,
                randomized: s.randomized,
            },
        ));
        self.visit_events += 1;
    }

    /// Devices currently held for visit sessions (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.sessions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    fn cfg(visits: bool) -> WifiConfig {
        WifiConfig {
            visits,
            min_dwell: Dur::secs(60),
            session_gap: Dur::secs(120),
            ..WifiConfig::default()
        }
    }

    fn id(dev: &str) -> u64 {
        dev.bytes()
            .fold(7u64, |h, b| h.wrapping_mul(131).wrapping_add(b as u64))
    }

    fn s(ts: i64, dev: &str, rssi: Option<i8>, epoch: i64) -> Sighting {
        Sighting {
            ts_ms: ts,
            addr: id(dev),
            track: id(dev),
            merged: None,
            silence_ms: 0,
            epoch,
            randomized: dev.starts_with('r'),
            rssi,
            directed: dev == "a",
            infrastructure: false,
            learned: false,
        }
    }

    #[test]
    fn census_counts_and_histogram() {
        let mut f = Footfall::new(&cfg(false), 1);
        let mut out = Vec::new();
        let t0 = 1_700_000_040_000; // a window boundary (divisible by 60 s)
        f.observe(s(t0 + 1000, "a", Some(-60), 1), &mut out);
        f.observe(s(t0 + 2000, "a", Some(-75), 1), &mut out);
        f.observe(s(t0 + 3000, "r1", Some(-85), 1), &mut out);
        f.observe(s(t0 + 4000, "r2", None, 1), &mut out);
        assert!(out.is_empty());
        f.advance(t0 + 60_000, &mut out);
        assert_eq!(out.len(), 1);
        let c = &out[0].body();
        assert_eq!(c["probe_requests"], 4);
        assert_eq!(c["directed_probes"], 2);
        assert_eq!(c["devices"], 3);
        assert_eq!(c["randomized"], 2);
        assert_eq!(c["in_store"], 1);
        assert_eq!(c["passer_by"], 2);
        assert_eq!(c["randomized_share"], 0.667);
        assert_eq!(c["rssi_histogram"]["-60"], 1);
        assert_eq!(c["rssi_histogram"]["-80"], 1);
        assert_eq!(c["rssi_histogram"]["-90"], 1);
        assert_eq!(c["rssi_histogram"]["none"], 1);
        assert_eq!(c["window_s"], 60);
        assert_eq!(c["suppressed"], false);
        // Two empty windows later, then data: the empties are reported as zeros.
        f.observe(s(t0 + 185_000, "a", Some(-50), 1), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].body()["devices"], 0);
    }

    /// Four phones in the store for 4.5 minutes (k = 1), then two (k = 3): the people figures
    /// of the census, and the same small-count suppression as the device counts.
    #[test]
    fn people_arrivals_and_dwell_reach_the_census() {
        let cal = crate::source::wifi::config::Calibration {
            hold: Dur::secs(60),
            min_stay: Dur::secs(0),
            devices_per_person: 1.0,
            background: 0.0,
            ..Default::default()
        };
        let wifi = WifiConfig {
            calibration: cal,
            ..cfg(false)
        };
        let t0 = 1_700_000_040_000; // a window boundary
        let run = |phones: &[&str], k: u32| {
            let mut f = Footfall::new(&wifi, k);
            let mut out = Vec::new();
            for i in 0..10 {
                for p in phones {
                    f.observe(s(t0 + 1_000 + i * 30_000, p, Some(-50), 1), &mut out);
                }
            }
            f.advance(t0 + 8 * 60_000, &mut out);
            out.iter().map(|e| e.body()).collect::<Vec<_>>()
        };
        let c = run(&["r1", "r2", "r3", "r4"], 1);
        assert_eq!(c[0]["people_estimated"], 4);
        assert_eq!(c[0]["arrivals_estimated"], 4);
        assert_eq!(c[0]["resident_estimated"], 0);
        assert_eq!(c[1]["arrivals_estimated"], 0, "arrived once");
        // Last probes at 271 s, held 60 s: present in the window from 300 s, where the stays
        // (270 s each) end and reach the histogram; nobody in the next.
        assert_eq!(c[5]["people_estimated"], 4);
        assert_eq!(c[5]["dwell_histogram"]["2-5"], 4);
        assert_eq!(c[4]["dwell_histogram"]["2-5"], 0);
        assert_eq!(c[6]["people_estimated"], 0);
        let few = run(&["r1", "r2"], 3);
        assert_eq!(few[0]["people_estimated"], 0);
        assert_eq!(few[0]["arrivals_estimated"], 0);
        assert_eq!(few[0]["suppressed"], true);
        assert_eq!(few[5]["dwell_histogram"]["2-5"], 0);
        assert_eq!(few[5]["suppressed"], true);
        let many = run(&["r1", "r2", "r3", "r4"], 3);
        assert_eq!(many[0]["people_estimated"], 4);
        assert_eq!(many[5]["dwell_histogram"]["2-5"], 4);
    }

    #[test]
    fn an_empty_window_is_the_full_census_of_nothing() {
        let mut f = Footfall::new(&cfg(false), 3);
        let year_10000 = 253_402_300_800_000 / 60_000;
        for (idx, threshold) in [
            (28_333_334, -70),
            (28_333_335, -70),
            (0, -70),
            (28_333_336, -55),
            (-5, -55),
            (year_10000, -55),
            (year_10000 - 1, -55),
            (28_333_337, -70),
        ] {
            f.threshold = threshold;
            let e = f.empty_census(idx);
            assert_eq!(
                e,
                f.census(&Window::new(idx), &PeopleWindow::default()),
                "window {idx}"
            );
            assert_eq!(e.body()["rssi_threshold_dbm"], threshold);
        }
    }

    #[test]
    fn reload_applies_the_new_threshold_at_once() {
        let mut f = Footfall::new(&cfg(false), 1);
        let mut out = Vec::new();
        let t0 = 1_700_000_040_000;
        let strict = WifiConfig {
            in_store_rssi: -55,
            ..cfg(false)
        };
        f.reconfigure(&strict, 1);
        f.observe(s(t0 + 1000, "a", Some(-60), 1), &mut out);
        f.advance(t0 + 60_000, &mut out);
        assert_eq!(out[0].body()["in_store"], 0);
        assert_eq!(out[0].body()["passer_by"], 1);
        assert_eq!(out[0].body()["rssi_threshold_dbm"], -55);
    }

    #[test]
    fn k_suppression_hides_small_windows() {
        let mut f = Footfall::new(&cfg(false), 3);
        let mut out = Vec::new();
        f.observe(s(0, "a", Some(-60), 1), &mut out);
        f.observe(s(10, "b", Some(-60), 1), &mut out);
        f.finish(&mut out);
        let c = &out[0].body();
        assert_eq!(c["devices"], 0);
        assert_eq!(c["probe_requests"], 0);
        assert_eq!(c["in_store"], 0);
        assert_eq!(c["rssi_histogram"]["-60"], 0);
        assert_eq!(c["suppressed"], true);
    }

    #[test]
    fn a_small_figure_is_not_recoverable_by_subtraction() {
        // Six devices, five in the store, one passing (k = 3): publishing 6 and 5 would give
        // the one away, so in_store and passer_by are withheld together; likewise the one
        // randomized device against five fixed ones, and the one directed probe.
        let mut f = Footfall::new(&cfg(false), 3);
        let mut out = Vec::new();
        for (i, d) in ["a", "b", "c", "d", "r1"].into_iter().enumerate() {
            f.observe(s(i as i64 * 1000, d, Some(-60), 1), &mut out);
        }
        f.observe(s(9_000, "p", Some(-90), 1), &mut out);
        f.finish(&mut out);
        let c = &out[0].body();
        assert_eq!(c["devices"], 6);
        assert_eq!(
            (c["in_store"].as_u64(), c["passer_by"].as_u64()),
            (Some(0), Some(0))
        );
        assert_eq!(
            (
                c["in_store_estimated"].as_u64(),
                c["passer_by_estimated"].as_u64()
            ),
            (Some(0), Some(0))
        );
        assert_eq!(c["randomized"], 0);
        assert_eq!(c["directed_probes"], 0);
        assert_eq!(c["suppressed"], true);
        // The histogram (five probes in one bucket, one in another): the one would be the
        // probe count minus the five, so both buckets are withheld.
        let h = &c["rssi_histogram"];
        let published: u64 = h
            .as_object()
            .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
        assert_eq!(published, 0, "{h}");
    }

    #[test]
    fn visits_only_for_in_store_devices_with_min_dwell() {
        let mut f = Footfall::new(&cfg(true), 1);
        let mut out = Vec::new();
        // "a" in store 0..90 s; "p" passer-by (weak); "b" in store only 30 s.
        for t in (0..=90).step_by(10) {
            f.observe(s(t * 1000, "a", Some(-55), 1), &mut out);
            f.observe(s(t * 1000, "p", Some(-85), 1), &mut out);
        }
        f.observe(s(5_000, "b", Some(-50), 1), &mut out);
        f.observe(s(35_000, "b", Some(-52), 1), &mut out);
        // Long silence closes the sessions.
        f.advance(400_000, &mut out);
        let visits: Vec<_> = out
            .iter()
            .filter(|e| e.kind == EventKind::WifiVisit)
            .collect();
        assert_eq!(visits.len(), 1);
        let v = &visits[0].body();
        assert_eq!(v["device"], format!("track-{}", id("a")));
        assert_eq!(v["dwell_s"], 90.0);
        assert_eq!(v["peak_rssi"], -55);
        assert_eq!(v["probe_requests"], 10);
        assert_eq!(f.tracked(), 0);
    }

    #[test]
    fn gap_splits_sessions_and_rotation_forgets() {
        let mut f = Footfall::new(&cfg(true), 1);
        let mut out = Vec::new();
        for t in [0, 30, 70] {
            f.observe(s(t * 1000, "a", Some(-50), 1), &mut out);
        }
        // 200 s gap > 120 s session gap: the first session closes, a new one starts.
        for t in [270, 300, 340] {
            f.observe(s(t * 1000, "a", Some(-50), 1), &mut out);
        }
        let n = out
            .iter()
            .filter(|e| e.kind == EventKind::WifiVisit)
            .count();
        assert_eq!(n, 1);
        // Key epoch changes: the open session and window are closed and forgotten.
        f.observe(s(345_000, "a2", Some(-50), 2), &mut out);
        let n = out
            .iter()
            .filter(|e| e.kind == EventKind::WifiVisit)
            .count();
        assert_eq!(n, 2);
        assert_eq!(f.tracked(), 1);
    }

    /// The bodies of the events of one kind.
    fn bodies(out: &[Event], kind: EventKind) -> Vec<serde_json::Value> {
        out.iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.body())
            .collect()
    }

    #[test]
    fn a_folded_track_is_one_visit_and_one_device() {
        let mut f = Footfall::new(&cfg(true), 1);
        let mut out = Vec::new();
        let t0 = 1_700_000_040_000;
        // Two tracks of one phone (its two fingerprints) from 0 s and 20 s, bursting together.
        f.observe(s(t0, "ra", Some(-50), 1), &mut out);
        for t in [20_000, 40_000] {
            f.observe(s(t0 + t, "ra", Some(-50), 1), &mut out);
            f.observe(s(t0 + t + 100, "rb", Some(-60), 1), &mut out);
        }
        // The estimator folds "rb" into "ra" at 50 s; "ra" goes on probing to 170 s.
        let mut folded = s(t0 + 50_000, "ra", Some(-52), 1);
        folded.merged = Some(id("rb"));
        f.observe(folded, &mut out);
        for t in (60..=170).step_by(10) {
            f.observe(s(t0 + t * 1000, "ra", Some(-50), 1), &mut out);
        }
        f.advance(t0 + 600_000, &mut out);
        let census = bodies(&out, EventKind::WifiCensus);
        assert_eq!(census[0]["devices_estimated"], 1, "{:?}", census[0]);
        let visits = bodies(&out, EventKind::WifiVisit);
        assert_eq!(visits.len(), 1, "{visits:?}");
        assert_eq!(visits[0]["device"], format!("track-{}", id("ra")));
        assert_eq!(visits[0]["dwell_s"], 170.0);
        assert_eq!(visits[0]["probe_requests"], 18);
    }

    #[test]
    fn a_slow_phone_stays_one_visit_over_its_silences() {
        let mut f = Footfall::new(&cfg(true), 1);
        let mut out = Vec::new();
        // Session gap 120 s; the estimator says this track may be silent 9 min (its rhythm).
        for t in [0, 200, 400, 600] {
            let mut x = s(t * 1000, "ra", Some(-50), 1);
            x.silence_ms = 540_000;
            f.observe(x, &mut out);
        }
        f.advance(1_200_000, &mut out);
        let visits = bodies(&out, EventKind::WifiVisit);
        assert_eq!(visits.len(), 1, "{visits:?}");
        assert_eq!(visits[0]["dwell_s"], 600.0);
    }
}
