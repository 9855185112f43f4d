//! `storegw calibrate wifi DIR`: fits a store's mapping from its radio picture to people on
//! days with people counted (`<day>.pcap` + `<day>.truth.json`), and judges a mapping on days
//! (docs/wifi.md, "People").
//!
//! The captures go through the same [`FrameStage`] as live capture (addresses become keyed
//! hashes there, under a key drawn for this run and dropped with it); the fit sees only track
//! numbers, keyed hashes, times and signal levels, in RAM. Nothing is written: the result is
//! the `[sources.wifi.calibration]` section printed on stdout.

use super::config::{Calibration, WifiConfig};
use super::footfall::Sighting;
use super::frame_stage::FrameStage;
use super::pcap::Reader;
use super::people::{weighted_devices, PeopleSettings, Presence};
use crate::config::units::Dur;
use crate::privacy::DevicePseudonymizer;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// Census window of the calibration: the truth counts people per minute.
const MINUTE_MS: i64 = 60_000;

/// One day with people counted.
pub struct Day {
    /// The day's file stem (shown in reports).
    pub name: String,
    /// Its accepted probe requests after the privacy stage, in capture order.
    pub sightings: Vec<Sighting>,
    /// People counted per minute (minute start, ms UTC).
    pub truth: BTreeMap<i64, f64>,
}

/// One counted minute: what each method read.
#[derive(Debug, Clone, Copy)]
pub struct Minute {
    /// Minute start, ms UTC.
    pub start_ms: i64,
    /// People counted.
    pub truth: f64,
    /// `people_estimated` as the census carries it (rounded).
    pub people: f64,
    /// Distinct addresses at or above the source's `in_store_rssi` (address counting).
    pub addresses: f64,
    /// `in_store_estimated` (device tracks at or above `in_store_rssi`).
    pub devices: f64,
    /// Non-resident devices present (the model's input, before the mapping).
    pub present: f64,
    /// Of them, with randomized addresses.
    pub present_randomized: f64,
    /// Devices listed as infrastructure that are on (not in `present`).
    pub present_listed: f64,
}

/// How close an estimate came to the people counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    /// Occupied quarter-hours: Σ|mean estimate − mean people| / Σ mean people.
    pub quarter_weighted_error: f64,
    /// Pearson r of the quarter-hour means over occupied quarter-hours.
    pub quarter_r: f64,
    /// Mean absolute error over occupied minutes.
    pub minute_mae: f64,
    /// Mean reading over minutes counted empty.
    pub empty_mean: f64,
    /// Occupied quarter-hours, occupied minutes and empty minutes judged.
    pub quarters: usize,
    /// Occupied minutes judged.
    pub occupied_minutes: usize,
    /// Empty minutes judged.
    pub empty_minutes: usize,
}

/// Judges `estimate` of each minute against its truth.
pub fn judge(minutes: &[Minute], estimate: impl Fn(&Minute) -> f64) -> Figures {
    let mut f = Figures::default();
    let mut quarters: BTreeMap<i64, (f64, f64, f64)> = BTreeMap::new();
    let (mut occ_err, mut empty_sum) = (0.0, 0.0);
    for m in minutes {
        let e = estimate(m);
        let q = quarters
            .entry(m.start_ms.div_euclid(15 * MINUTE_MS))
            .or_default();
        *q = (q.0 + m.truth, q.1 + e, q.2 + 1.0);
        if m.truth > 0.0 {
            occ_err += (e - m.truth).abs();
            f.occupied_minutes += 1;
        } else {
            empty_sum += e;
            f.empty_minutes += 1;
        }
    }
    f.minute_mae = occ_err / f.occupied_minutes.max(1) as f64;
    f.empty_mean = empty_sum / f.empty_minutes.max(1) as f64;
    let occupied: Vec<(f64, f64)> = quarters
        .values()
        .map(|(t, e, n)| (t / n, e / n))
        .filter(|(t, _)| *t > 0.0)
        .collect();
    f.quarters = occupied.len();
    let truth_sum: f64 = occupied.iter().map(|(t, _)| t).sum();
    let err_sum: f64 = occupied.iter().map(|(t, e)| (e - t).abs()).sum();
    f.quarter_weighted_error = err_sum / truth_sum.max(f64::MIN_POSITIVE);
    f.quarter_r = pearson(&occupied);
    f
}

fn pearson(xy: &[(f64, f64)]) -> f64 {
    let n = xy.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = xy.iter().map(|p| p.0).sum::<f64>() / n;
    let my = xy.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xy {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    match sxx * syy {
        d if d > 0.0 => sxy / d.sqrt(),
        _ => 0.0,
    }
}

/// Reads a truth file: `{"window_s": 60, "people": {"<minute start, s UTC>": N}}`.
fn read_truth(path: &Path) -> Result<BTreeMap<i64, f64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let window = v.get("window_s").and_then(|w| w.as_i64()).unwrap_or(60);
    if window != 60 {
        return Err(format!(
            "{}: window_s {window}: people must be counted per minute (60)",
            path.display()
        ));
    }
    let people = v
        .get("people")
        .and_then(|p| p.as_object())
        .ok_or_else(|| format!("{}: no `people` object", path.display()))?;
    let mut out = BTreeMap::new();
    for (k, n) in people {
        let (Ok(t), Some(n)) = (k.parse::<i64>(), n.as_f64()) else {
            return Err(format!(
                "{}: `people` entry `{k}` is not `\"<unix seconds>\": <count>`",
                path.display()
            ));
        };
        if n < 0.0 || !n.is_finite() {
            return Err(format!("{}: negative count at {k}", path.display()));
        }
        out.insert(t.saturating_mul(1000).div_euclid(MINUTE_MS) * MINUTE_MS, n);
    }
    Ok(out)
}

/// Replays one capture through the Wi-Fi stage and keeps its sightings.
pub fn load_day(pcap: &Path, truth: &Path, cfg: &WifiConfig) -> Result<Day, String> {
    let truth = read_truth(truth)?;
    let buf = std::fs::read(pcap).map_err(|e| format!("{}: {e}", pcap.display()))?;
    let reader = Reader::new(&buf).map_err(|e| format!("{}: {e}", pcap.display()))?;
    // A daily key, dropped with the stage: nothing of this run can be linked to anything.
    let devices = DevicePseudonymizer::new(std::time::Duration::from_secs(86_400), 8)?;
    // Equipment is learned by maker on every day (`fleet::size_to_try`), so the fit can try the rule on and off without a second replay.
    let mut cfg = WifiConfig {
        visits: false,
        ..cfg.clone()
    };
    cfg.calibration.equipment_fleet = super::fleet::size_to_try(cfg.calibration.equipment_fleet);
    let mut stage = FrameStage::new(&cfg, 1, Arc::new(devices), false);
    stage.record = Some(Vec::new());
    let mut out = Vec::new();
    let mut last_ts = 0i64;
    for rec in reader {
        let Ok(rec) = rec else { break };
        let ts_ms = match rec.ts_ns {
            0 => last_ts,
            ns => ns.div_euclid(1_000_000),
        };
        last_ts = ts_ms;
        let cut = (rec.data.len() as u64) < rec.orig_len as u64;
        stage.frame(rec.linktype, rec.data, cut, ts_ms, &mut out);
        out.clear();
    }
    let name = pcap
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Day {
        name,
        sightings: stage.record.take().unwrap_or_default(),
        truth,
    })
}

/// Every `<day>.pcap` of `dir` that has a `<day>.truth.json` beside it, by name.
pub fn load_dir(dir: &Path, cfg: &WifiConfig) -> Result<Vec<Day>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".pcap").map(str::to_string)
        })
        .filter(|stem| dir.join(format!("{stem}.truth.json")).is_file())
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(format!(
            "{}: no <day>.pcap with a <day>.truth.json beside it",
            dir.display()
        ));
    }
    names
        .iter()
        .map(|n| {
            load_day(
                &dir.join(format!("{n}.pcap")),
                &dir.join(format!("{n}.truth.json")),
                cfg,
            )
        })
        .collect()
}

/// What the census would read in each counted minute of `day` under `set` (the source's
/// `in_store_rssi` for the address and device counts).
pub fn simulate(day: &Day, set: &PeopleSettings, in_store_rssi: i16, learn: bool) -> Vec<Minute> {
    let mut presence = Presence::new(*set);
    let mut out = Vec::with_capacity(day.truth.len());
    let (Some(&first), Some(&last)) = (day.truth.keys().next(), day.truth.keys().next_back())
    else {
        return out;
    };
    let mut idx = day
        .sightings
        .first()
        .map_or(first, |s| s.ts_ms.min(first))
        .div_euclid(MINUTE_MS);
    let mut addrs: HashSet<u64> = HashSet::new();
    let mut tracks: HashSet<u64> = HashSet::new();
    let close = |idx: i64,
                 presence: &mut Presence,
                 addrs: &mut HashSet<u64>,
                 tracks: &mut HashSet<u64>,
                 out: &mut Vec<Minute>| {
        let start = idx * MINUTE_MS;
        let w = presence.close_window(start, start + MINUTE_MS);
        if let Some(&truth) = day.truth.get(&start) {
            out.push(Minute {
                start_ms: start,
                truth,
                people: w.people.round(),
                addresses: addrs.len() as f64,
                devices: tracks.len() as f64,
                present: w.devices as f64,
                present_randomized: w.randomized as f64,
                present_listed: w.listed,
            });
        }
        addrs.clear();
        tracks.clear();
    };
    for s in &day.sightings {
        let i = s.ts_ms.div_euclid(MINUTE_MS);
        while idx < i {
            close(idx, &mut presence, &mut addrs, &mut tracks, &mut out);
            idx += 1;
        }
        // Two tracks found to be one phone (rule 6) fold as in the census (`footfall`): one
        // stay, and one device in the minute's count.
        if let Some(from) = s.merged {
            presence.fold(from, s.track);
            if tracks.remove(&from) {
                tracks.insert(s.track);
            }
        }
        presence.observe(
            s.ts_ms,
            s.track,
            s.addr,
            s.randomized,
            s.rssi,
            s.infrastructure || (learn && s.learned),
        );
        if s.rssi.is_some_and(|r| r as i16 >= in_store_rssi) {
            addrs.insert(s.addr);
            tracks.insert(s.track);
        }
    }
    while idx <= last.div_euclid(MINUTE_MS) {
        close(idx, &mut presence, &mut addrs, &mut tracks, &mut out);
        idx += 1;
    }
    out
}

/// Candidate in-store thresholds (dBm), holds (s) and residency spans (s) the fit tries.
const RSSI_GRID: [i16; 5] = [-80, -75, -70, -65, -60];
const HOLD_GRID_S: [u64; 7] = [60, 90, 120, 180, 300, 420, 600];
const RESIDENT_GRID_S: [u64; 3] = [3600, 3 * 3600, 8 * 3600];
const MIN_STAY_GRID_S: [u64; 6] = [0, 30, 60, 180, 300, 600];
const BACKGROUND_GRID: [f64; 9] = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0];
/// Candidate weights of a randomized-address device against a fixed-address one, the default
/// (1) first: a lower weight is chosen only when it fits strictly better (a store without
/// randomized devices, where every weight fits alike, keeps 1).
const RANDOMIZED_WEIGHT_GRID: [f64; 5] = [1.0, 0.75, 0.5, 0.25, 0.0];
/// Candidate weights of a listed infrastructure device that is on, the default (0: never
/// people) first, so it stays unless the equipment fits strictly better; tried only when the
/// days hold listed devices.
const INFRASTRUCTURE_WEIGHT_GRID: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

/// The scale `a` minimizing Σ|a·x − p| (a weighted median of p/x, weights x), within the
/// bounds `devices_per_person` may take. Found by selection, not by sorting: the fit asks for
/// it hundreds of thousands of times.
fn best_scale(xp: &mut [(f64, f64)]) -> f64 {
    let mut r: Vec<(f64, f64)> = xp
        .iter()
        .filter(|(x, _)| *x > 0.0)
        .map(|(x, p)| (p / x, *x))
        .collect();
    let total: f64 = r.iter().map(|(_, w)| w).sum();
    weighted_median(&mut r, total / 2.0).map_or(1.0, |m| m.clamp(0.1, 10.0))
}

/// The smallest value whose weight, with the weights of the values below it, reaches `half`
/// (of `(value, weight)` pairs): the lower weighted median when `half` is half the total.
fn weighted_median(r: &mut [(f64, f64)], mut half: f64) -> Option<f64> {
    let mut r = r;
    loop {
        if r.len() <= 16 {
            r.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut acc = 0.0;
            for (v, w) in r.iter() {
                acc += w;
                if acc >= half {
                    return Some(*v);
                }
            }
            return r.last().map(|(v, _)| *v);
        }
        let mid = r.len() / 2;
        let (below, pivot, above) = r.select_nth_unstable_by(mid, |a, b| a.0.total_cmp(&b.0));
        let below_w: f64 = below.iter().map(|(_, w)| w).sum();
        if below_w >= half {
            r = below;
        } else if below_w + pivot.1 >= half {
            return Some(pivot.0);
        } else {
            half -= below_w + pivot.1;
            r = above;
        }
    }
}

/// The result of a fit: the section and how it did on the days it was fitted on.
#[derive(Debug, Clone)]
pub struct Fit {
    /// The fitted section.
    pub calibration: Calibration,
    /// Mean absolute error per counted minute (empty minutes included) on the fit days.
    pub minute_error: f64,
}

/// Every candidate threshold, hold and residency span simulated once on every day, so fits on
/// different subsets of the days (leave one day out) cost no new replay.
pub struct Grid {
    cands: Vec<(Calibration, Vec<Vec<Minute>>)>,
}

/// Simulates every candidate of the grid on `days`, with the equipment learned by maker
/// and without it when the days hold any.
pub fn grid(days: &[Day], cfg: &WifiConfig) -> Grid {
    let mut cands = Vec::new();
    let size = super::fleet::size_to_try(cfg.calibration.equipment_fleet);
    let learned = days.iter().any(|d| d.sightings.iter().any(|s| s.learned));
    let fleets: &[usize] = if learned { &[0, size] } else { &[0] };
    // The rule off first, so that it is kept only where it fits strictly better.
    for (&fleet, &rssi) in fleets
        .iter()
        .flat_map(|f| RSSI_GRID.iter().map(move |r| (f, r)))
    {
        for &hold in &HOLD_GRID_S {
            for (&resident, &min_stay) in RESIDENT_GRID_S
                .iter()
                .flat_map(|r| MIN_STAY_GRID_S.iter().map(move |m| (r, m)))
            {
                let cal = Calibration {
                    in_store_rssi: Some(rssi),
                    hold: Dur::secs(hold),
                    devices_per_person: 1.0,
                    background: 0.0,
                    randomized_weight: 1.0,
                    infrastructure_weight: 0.0,
                    equipment_fleet: fleet,
                    resident_after: Dur::secs(resident),
                    min_stay: Dur::secs(min_stay),
                };
                let set = PeopleSettings::new(&cal, cfg.in_store_rssi, cfg.max_tracked_devices);
                let per_day = days
                    .iter()
                    .map(|d| simulate(d, &set, cfg.in_store_rssi, fleet > 0))
                    .collect();
                cands.push((cal, per_day));
            }
        }
    }
    Grid { cands }
}

impl Grid {
    /// Fits on the days `use_day` accepts (by index): for each candidate threshold, hold and
    /// residency span, the randomized-address weight, the listed equipment's weight (when the
    /// days hold listed devices), devices-per-person and background that minimize the absolute
    /// error per counted minute (empty minutes count as much as occupied ones), and the
    /// candidate with the least error.
    pub fn fit(&self, use_day: impl Fn(usize) -> bool + Sync) -> Fit {
        let listed = self.cands.iter().any(|(_, per_day)| {
            per_day
                .iter()
                .enumerate()
                .any(|(i, d)| use_day(i) && d.iter().any(|m| m.present_listed > 0.0))
        });
        let weights = if listed {
            &INFRASTRUCTURE_WEIGHT_GRID[..]
        } else {
            &INFRASTRUCTURE_WEIGHT_GRID[..1]
        };
        // The candidates in as many shares as there are cores; the best of each share, then
        // the best of those (the first share wins ties, as one pass in order would).
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let share = self.cands.len().div_ceil(threads.max(1)).max(1);
        let use_day = &use_day;
        let bests: Vec<Option<Fit>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .cands
                .chunks(share)
                .map(|cands| scope.spawn(move || fit_share(cands, use_day, weights)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(None))
                .collect()
        });
        let mut best: Option<Fit> = None;
        for f in bests.into_iter().flatten() {
            if best
                .as_ref()
                .is_none_or(|b| f.minute_error < b.minute_error)
            {
                best = Some(f);
            }
        }
        best.unwrap_or(Fit {
            calibration: Calibration::default(),
            minute_error: f64::NAN,
        })
    }
}

/// The best fit among `cands` ([`Grid::fit`]): for each, the randomized-address weight, the
/// listed equipment's weight (among `weights`), devices-per-person and background that
/// minimize the absolute error per counted minute.
fn fit_share(
    cands: &[(Calibration, Vec<Vec<Minute>>)],
    use_day: &(impl Fn(usize) -> bool + Sync),
    weights: &[f64],
) -> Option<Fit> {
    let mut best: Option<Fit> = None;
    let mut xp: Vec<(f64, f64)> = Vec::new();
    for (cal, per_day) in cands {
        let minutes: Vec<&Minute> = per_day
            .iter()
            .enumerate()
            .filter(|(i, _)| use_day(*i))
            .flat_map(|(_, m)| m)
            .collect();
        if minutes.is_empty() {
            continue;
        }
        // Without equipment on in these minutes every weight fits alike: try the first only.
        let weights = match minutes.iter().any(|m| m.present_listed > 0.0) {
            true => weights,
            false => weights.get(..1).unwrap_or(weights),
        };
        for (&w, &e, &b) in RANDOMIZED_WEIGHT_GRID.iter().flat_map(|w| {
            weights
                .iter()
                .flat_map(move |e| BACKGROUND_GRID.iter().map(move |b| (w, e, b)))
        }) {
            let weighted = |m: &Minute| {
                weighted_devices(m.present, m.present_randomized, m.present_listed, w, e)
            };
            xp.clear();
            xp.extend(
                minutes
                    .iter()
                    .map(|m| ((weighted(m) - b).max(0.0), m.truth)),
            );
            let a = best_scale(&mut xp);
            let err = xp
                .iter()
                .map(|(x, p)| ((a * x).round() - p).abs())
                .sum::<f64>()
                / xp.len() as f64;
            if best.as_ref().is_none_or(|f| err < f.minute_error) {
                best = Some(Fit {
                    calibration: Calibration {
                        devices_per_person: (1.0 / a * 100.0).round() / 100.0,
                        background: b,
                        randomized_weight: w,
                        infrastructure_weight: e,
                        ..cal.clone()
                    },
                    minute_error: err,
                });
            }
        }
    }
    best
}

/// Fits the calibration on all of `days` ([`Grid::fit`]).
pub fn fit(days: &[Day], cfg: &WifiConfig) -> Fit {
    grid(days, cfg).fit(|_| true)
}

/// The minutes of `days` under `cal` (for judging a calibration on days it was not fitted on).
pub fn minutes(days: &[Day], cal: &Calibration, cfg: &WifiConfig) -> Vec<Minute> {
    let set = PeopleSettings::new(cal, cfg.in_store_rssi, cfg.max_tracked_devices);
    days.iter()
        .flat_map(|d| simulate(d, &set, cfg.in_store_rssi, cal.equipment_fleet > 0))
        .collect()
}

/// The `storegw calibrate wifi DIR` report: the section to append to the configuration
/// (stdout) and, as TOML comments, how it did on the days it was fitted on.
pub fn run(dir: &Path, cfg: &WifiConfig) -> Result<String, String> {
    let days = load_dir(dir, cfg)?;
    let fit = fit(&days, cfg);
    let all = minutes(&days, &fit.calibration, cfg);
    let f = judge(&all, |m| m.people);
    let a = judge(&all, |m| m.addresses);
    let mut out = format!(
        "# storegw calibrate wifi: {} days, {} counted minutes ({} occupied, {} empty)\n\
         # on these days (in-sample; judge on other days): quarter-hour error {:.1}% (r {:.2}), \
         minute MAE {:.2}, empty room {:.2}; address counting {:.1}% (r {:.2})\n",
        days.len(),
        all.len(),
        f.occupied_minutes,
        f.empty_minutes,
        f.quarter_weighted_error * 100.0,
        f.quarter_r,
        f.minute_mae,
        f.empty_mean,
        a.quarter_weighted_error * 100.0,
        a.quarter_r,
    );
    out.push_str(&fit.calibration.to_toml());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge_reads_quarters_minutes_and_empty_rooms() {
        let m = |min: i64, truth: f64, people: f64| Minute {
            start_ms: min * MINUTE_MS,
            truth,
            people,
            addresses: 0.0,
            devices: 0.0,
            present: 0.0,
            present_randomized: 0.0,
            present_listed: 0.0,
        };
        let minutes = [
            m(0, 10.0, 12.0),
            m(1, 10.0, 8.0),
            m(15, 4.0, 5.0),
            m(30, 0.0, 1.0),
            m(31, 0.0, 0.0),
        ];
        let f = judge(&minutes, |m| m.people);
        assert_eq!(f.quarters, 2);
        // Quarter 1: mean 10 vs 10; quarter 2: 4 vs 5.
        assert!((f.quarter_weighted_error - 1.0 / 14.0).abs() < 1e-9);
        assert!((f.minute_mae - 5.0 / 3.0).abs() < 1e-9);
        assert!((f.empty_mean - 0.5).abs() < 1e-9);
        assert!((f.quarter_r - 1.0).abs() < 1e-9);
    }

    #[test]
    fn tracks_folded_into_one_phone_count_once_as_in_the_census() {
        let s = |ts_ms: i64, track: u64, merged: Option<u64>| Sighting {
            ts_ms,
            addr: track,
            track,
            merged,
            silence_ms: 300_000,
            epoch: 0,
            randomized: true,
            rssi: Some(-50),
            directed: false,
            infrastructure: false,
            learned: false,
        };
        let day = Day {
            name: "d".into(),
            // Two tracks in minute 0; in minute 1 the second is found to be the first's phone.
            sightings: vec![
                s(1_000, 1, None),
                s(2_000, 2, None),
                s(MINUTE_MS + 1_000, 1, Some(2)),
                s(MINUTE_MS + 2_000, 1, None),
            ],
            truth: [(0, 1.0), (MINUTE_MS, 1.0)].into_iter().collect(),
        };
        let cal = Calibration {
            hold: Dur::secs(120),
            min_stay: Dur::secs(0),
            ..Calibration::default()
        };
        let set = PeopleSettings::new(&cal, -70, 1000);
        let m = simulate(&day, &set, -70, false);
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].devices, m[0].present),
            (2.0, 2.0),
            "two tracks before the fold"
        );
        assert_eq!(
            (m[1].devices, m[1].present),
            (1.0, 1.0),
            "one phone after it"
        );
    }

    #[test]
    fn the_scale_is_a_weighted_median() {
        let mut xp = [(2.0, 2.0), (4.0, 2.0), (10.0, 10.0), (0.0, 3.0)];
        assert_eq!(best_scale(&mut xp), 1.0);
        // Selection agrees with sorting on many values, ties and uneven weights included.
        let mut x = 7u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 1000) as f64 / 100.0
        };
        for n in [1, 2, 17, 100, 2_001] {
            let mut xp: Vec<(f64, f64)> = (0..n).map(|_| (next(), next().floor())).collect();
            let mut r: Vec<(f64, f64)> = xp
                .iter()
                .filter(|(x, _)| *x > 0.0)
                .map(|(x, p)| (p / x, *x))
                .collect();
            r.sort_by(|a, b| a.0.total_cmp(&b.0));
            let total: f64 = r.iter().map(|(_, w)| w).sum();
            let mut acc = 0.0;
            let sorted = r
                .iter()
                .find(|(_, w)| {
                    acc += w;
                    acc >= total / 2.0
                })
                .map_or(1.0, |(v, _)| v.clamp(0.1, 10.0));
            assert_eq!(best_scale(&mut xp), sorted, "{n} values");
        }
    }

    #[test]
    fn without_randomized_devices_the_weight_stays_at_one() {
        let minute = |i: i64, present: f64, truth: f64| Minute {
            start_ms: i * MINUTE_MS,
            truth,
            people: 0.0,
            addresses: 0.0,
            devices: 0.0,
            present,
            present_randomized: 0.0,
            present_listed: 0.0,
        };
        let day: Vec<Minute> = (0..60)
            .map(|i| minute(i, (i % 7) as f64, (i % 7) as f64))
            .collect();
        let grid = Grid {
            cands: vec![(Calibration::default(), vec![day])],
        };
        let fit = grid.fit(|_| true);
        assert_eq!(fit.calibration.randomized_weight, 1.0);
        assert_eq!(fit.calibration.devices_per_person, 1.0);
    }
}
