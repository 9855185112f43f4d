//! Device estimation against ground truth: the labelled one-phone captures
//! (`../shared/data/wifi/labelled`, see its README) replayed alone and mixed with its
//! `labelled.py mix`. Judged per census window against the truth file, and over the whole
//! capture, beside naive address counting on the same input.

// The PHONES table lives in the `bench` feature (storegw::bench::estimation).
#![cfg(feature = "bench")]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

type TestResult = Result<(), Box<dyn std::error::Error>>;

use storegw::bench::estimation::PHONES;

fn labelled() -> Option<PathBuf> {
    let dir = common::shared_data()?.join("wifi/labelled");
    if dir.join("labelled.py").exists() {
        Some(dir)
    } else {
        eprintln!("skipping: {} not found", dir.display());
        None
    }
}

fn python() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipping the mixes: python3 not found (labelled.py builds them)");
    }
    ok
}

struct Replay {
    census: Vec<serde_json::Value>,
    visits: Vec<serde_json::Value>,
    summary: serde_json::Value,
}

fn replay(file: &Path, config: &Path) -> Result<Replay, Box<dyn std::error::Error>> {
    let out = Command::new(env!("CARGO_BIN_EXE_storegw"))
        .args(["replay", "--wifi"])
        .arg(file)
        .arg("--config")
        .arg(config)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", file.display());
    let mut lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let summary = lines.pop().ok_or("no summary")?;
    let kind = |k: &str| -> Vec<serde_json::Value> {
        lines.iter().filter(|e| e["kind"] == k).cloned().collect()
    };
    Ok(Replay {
        census: kind("wifi.census"),
        visits: kind("wifi.visit"),
        summary,
    })
}

fn config(dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    common::write_config(dir, 1883, "", "[sources.wifi]\nvisits = true\n")
}

/// Unix seconds of a census window start (`2026-01-01T00:01:00.000Z`).
fn window_start(c: &serde_json::Value) -> Option<i64> {
    let s = c["window_start"].as_str()?;
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp())
}

/// Probe request times (seconds) of a capture, by the library's own pcap reader.
fn probe_times(file: &Path) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    use storegw::source::wifi::frame::{decode, Decoded};
    use storegw::source::wifi::pcap::Reader;
    let buf = std::fs::read(file)?;
    let mut out = Vec::new();
    for r in Reader::new(&buf).map_err(|e| format!("{e:?}"))?.flatten() {
        if let Decoded::Probe(_) = decode(r.linktype, r.data, false, true) {
            out.push(r.ts_ns as f64 / 1e9);
        }
    }
    out.sort_by(f64::total_cmp);
    Ok(out)
}

/// Presence spans: the phone's probes split where it was silent for over an hour (the rule
/// labelled.py uses for its main span).
fn presence(times: &[f64]) -> Vec<(f64, f64)> {
    let mut spans: Vec<(f64, f64)> = Vec::new();
    for &t in times {
        match spans.last_mut() {
            Some(s) if t - s.1 <= 3600.0 => s.1 = t,
            _ => spans.push((t, t)),
        }
    }
    spans
}

#[test]
fn one_phone_is_one_device_with_one_visit_per_presence() -> TestResult {
    let Some(dir) = labelled() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let cfg = config(tmp.path())?;
    for phone in PHONES {
        let file = dir.join(format!("{phone}.pcap"));
        let r = replay(&file, &cfg)?;
        let s = &r.summary;
        let windows: Vec<&serde_json::Value> = r
            .census
            .iter()
            .filter(|c| c["probe_requests"].as_u64() > Some(0))
            .collect();
        let ones = windows
            .iter()
            .filter(|c| c["devices_estimated"] == 1)
            .count();
        let share = ones as f64 / windows.len().max(1) as f64;
        let spans = presence(&probe_times(&file)?);
        let mut dwell: Vec<f64> = r
            .visits
            .iter()
            .filter_map(|v| v["dwell_s"].as_f64())
            .collect();
        dwell.sort_by(|a, b| b.total_cmp(a));
        let mut truth: Vec<f64> = spans.iter().map(|(a, b)| b - a).collect();
        truth.sort_by(|a, b| b.total_cmp(a));
        println!(
            "{phone}: addresses {} devices_estimated {} (in store {}), windows with 1 device \
             {ones}/{} ({:.0}%), visits {:?} s, presence {:?} s",
            s["distinct_devices"],
            s["devices_estimated"],
            s["in_store_devices_estimated"],
            windows.len(),
            share * 100.0,
            dwell,
            truth
        );
        // Every probe in the store comes from the one phone; the S21 capture ends with two
        // probes of another device far outside (-82 dBm, another element fingerprint), which
        // is a passer-by and counts as one.
        assert_eq!(s["in_store_devices_estimated"], 1, "{phone}");
        let passers = s["devices_estimated"].as_u64().unwrap_or(0)
            - s["in_store_devices_estimated"].as_u64().unwrap_or(0);
        assert!(passers <= 1, "{phone}: {s}");
        assert!(share >= 0.9, "{phone}: {ones}/{} windows", windows.len());
        assert_eq!(dwell.len(), truth.len(), "{phone}: one visit per presence");
        for (d, t) in dwell.iter().zip(&truth) {
            assert!(
                (d - t).abs() <= 0.2 * t,
                "{phone}: visit {d} s vs presence {t} s"
            );
        }
    }
    Ok(())
}

/// One census window of a mix: (estimated devices, address count, true devices).
type Row = (f64, f64, f64);

/// Per-window errors of one mix: (estimate, naive address count, truth) per window that has
/// at least one phone.
fn mix_windows(
    dir: &Path,
    tmp: &Path,
    cfg: &Path,
    phones: &[&str],
    seed: u32,
) -> Result<(Vec<Row>, serde_json::Value), Box<dyn std::error::Error>> {
    let out = tmp.join(format!("mix-{}-{seed}.pcap", phones.join("+")));
    let st = Command::new("python3")
        .arg(dir.join("labelled.py"))
        .arg("mix")
        .arg(dir)
        .arg(&out)
        .arg("--devices")
        .arg(phones.join(","))
        .arg("--seed")
        .arg(seed.to_string())
        .output()?;
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{}.truth.json", out.display()))?)?;
    let r = replay(&out, cfg)?;
    let by_start: BTreeMap<i64, &serde_json::Value> = r
        .census
        .iter()
        .filter_map(|c| Some((window_start(c)?, c)))
        .collect();
    let mut rows = Vec::new();
    for (w, n) in truth["per_window"].as_object().ok_or("no per_window")? {
        let w: i64 = w.parse()?;
        let n = n.as_f64().unwrap_or(0.0);
        let c = by_start.get(&w).copied();
        let est = c
            .and_then(|c| c["devices_estimated"].as_f64())
            .unwrap_or(0.0);
        let naive = c.and_then(|c| c["devices"].as_f64()).unwrap_or(0.0);
        rows.push((est, naive, n));
    }
    Ok((rows, r.summary))
}

fn mape(rows: &[Row], pick: impl Fn(&Row) -> f64) -> f64 {
    rows.iter()
        .map(|r| (pick(r) - r.2).abs() / r.2)
        .sum::<f64>()
        / rows.len().max(1) as f64
}

/// The labelled directory, a temp dir for the mixes, and the replay config.
type MixSetup = (PathBuf, tempfile::TempDir, PathBuf);

/// The labelled data, python3 for its mixer, a temp dir and a config; None (with the reason
/// printed) when something is missing.
fn mix_setup() -> Result<Option<MixSetup>, Box<dyn std::error::Error>> {
    let Some(dir) = labelled() else {
        return Ok(None);
    };
    if !python() {
        return Ok(None);
    }
    let tmp = tempfile::tempdir()?;
    let cfg = config(tmp.path())?;
    Ok(Some((dir, tmp, cfg)))
}

#[test]
fn mixes_of_two_to_five_phones_are_counted_per_window() -> TestResult {
    let Some((dir, tmp, cfg)) = mix_setup()? else {
        return Ok(());
    };
    let mut all = Vec::new();
    let mut rng = fastrand::Rng::with_seed(11);
    for n in 2..=5usize {
        for seed in 1..=4u32 {
            let mut phones = PHONES.to_vec();
            rng.shuffle(&mut phones);
            phones.truncate(n);
            let (rows, s) = mix_windows(&dir, tmp.path(), &cfg, &phones, seed)?;
            println!(
                "{n} phones {phones:?} seed {seed}: MAPE estimated {:.1}% vs addresses {:.1}%; \
                 whole capture {} estimated, {} addresses",
                100.0 * mape(&rows, |r| r.0),
                100.0 * mape(&rows, |r| r.1),
                s["devices_estimated"],
                s["distinct_devices"]
            );
            all.extend(rows);
        }
    }
    let est = mape(&all, |r| r.0);
    let naive = mape(&all, |r| r.1);
    let within = all.iter().filter(|r| (r.0 - r.2).abs() <= 1.0).count() as f64 / all.len() as f64;
    println!(
        "all mixes: {} windows, MAPE estimated {:.1}% vs address counting {:.1}%, within ±1: {:.1}%",
        all.len(),
        est * 100.0,
        naive * 100.0,
        within * 100.0
    );
    assert!(est <= 0.25, "MAPE {est}");
    assert!(within >= 0.9, "within ±1: {within}");
    assert!(naive > 2.0 * est, "estimation must beat address counting");
    Ok(())
}

/// The hard case: two iPhone 11 on the same iOS carry identical elements and randomize their
/// sequence numbers, so only interleaved bursts tell them apart. Measured and bounded, not
/// hidden: they count as one device in most shared windows.
#[test]
fn two_identical_iphones_are_reported() -> TestResult {
    let Some((dir, tmp, cfg)) = mix_setup()? else {
        return Ok(());
    };
    let mut all = Vec::new();
    for seed in 1..=3 {
        let (rows, _) = mix_windows(&dir, tmp.path(), &cfg, &["iPhone11-B", "iPhone11-F"], seed)?;
        all.extend(rows);
    }
    let both: Vec<&Row> = all.iter().filter(|r| r.2 == 2.0).collect();
    let split = both.iter().filter(|r| r.0 >= 2.0).count();
    println!(
        "iPhone11-B + iPhone11-F: {} windows, MAPE {:.1}%; of {} windows with both, {} counted 2",
        all.len(),
        100.0 * mape(&all, |r| r.0),
        both.len(),
        split
    );
    assert!(all.iter().all(|r| (r.0 - r.2).abs() <= 1.0));
    Ok(())
}

/// The labelled captures, when python3 is there to craft cases from them (else a printed
/// reason and None).
fn crafting() -> Option<PathBuf> {
    labelled().filter(|_| python())
}

/// Writes a crafted capture of `phone` to `out` with tests/common/twin_probes.py (`extra`:
/// its options).
fn craft(dir: &Path, phone: &str, out: &Path, extra: &[&str]) -> TestResult {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/twin_probes.py");
    let st = Command::new("python3")
        .arg(&script)
        .arg(dir)
        .arg(dir.join(format!("{phone}.pcap")))
        .arg(out)
        .args(extra)
        .status()?;
    assert!(st.success(), "twin_probes.py {phone} {extra:?}");
    Ok(())
}

/// The visits' dwell times, seconds.
fn dwells(r: &Replay) -> Vec<f64> {
    r.visits
        .iter()
        .filter_map(|v| v["dwell_s"].as_f64())
        .collect()
}

/// Two tracks of one phone: a phone that sends two kinds of probe request in every scan (two
/// fingerprints, two addresses), crafted on each real one-phone capture's timing
/// (tests/common/twin_probes.py). Its tracks burst together, so they are folded into one:
/// one device, and the same visits as the phone alone.
#[test]
fn a_phone_with_two_kinds_of_probe_is_one_device_and_one_visit() -> TestResult {
    let Some(dir) = crafting() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let cfg = config(tmp.path())?;
    for phone in PHONES {
        let file = dir.join(format!("{phone}.pcap"));
        let twin = tmp.path().join(format!("{phone}-twin.pcap"));
        craft(&dir, phone, &twin, &[])?;
        let alone = replay(&file, &cfg)?;
        let both = replay(&twin, &cfg)?;
        let dwell = dwells;
        println!(
            "{phone} with twin probes: in-store devices {} (alone {}), visits {:?} s (alone {:?} s), tracks folded: addresses {} vs {}",
            both.summary["in_store_devices_estimated"],
            alone.summary["in_store_devices_estimated"],
            dwell(&both),
            dwell(&alone),
            both.summary["distinct_devices"],
            alone.summary["distinct_devices"],
        );
        assert_eq!(both.summary["in_store_devices_estimated"], 1, "{phone}");
        let (d2, d1) = (dwell(&both), dwell(&alone));
        assert_eq!(d2.len(), d1.len(), "{phone}: one visit per presence");
        for (a, b) in d2.iter().zip(&d1) {
            assert!(
                (a - b).abs() <= 0.2 * b,
                "{phone}: visit {a} s vs {b} s alone"
            );
        }
    }
    Ok(())
}

/// A silence is judged by the phone's own rhythm: the same seven minutes without a probe, in
/// the middle of a real capture (tests/common/twin_probes.py --pause), is a phone that stayed
/// when it scans every few minutes (the iPhone XR here, one visit) and one that left when it
/// scans every minute (the Galaxy S21, two visits): the session gap is 5 minutes.
#[test]
fn a_silence_longer_than_the_gap_is_judged_by_the_phone_s_rhythm() -> TestResult {
    let Some(dir) = crafting() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let cfg = config(tmp.path())?;
    for (phone, visits) in [("iPhoneXR-A", 1), ("S21Ultra-M", 2)] {
        let paused = tmp.path().join(format!("{phone}-paused.pcap"));
        craft(&dir, phone, &paused, &["--pause", "420"])?;
        let r = replay(&paused, &cfg)?;
        let dwell = dwells(&r);
        println!("{phone} silent 7 min: visits {dwell:?} s");
        assert_eq!(dwell.len(), visits, "{phone}: {dwell:?}");
        // A randomizing phone that left and came back is a new device to the summary too.
        assert_eq!(r.summary["in_store_devices_estimated"], visits, "{phone}");
    }
    Ok(())
}

/// Visits under staggered arrivals (docs/wifi.md): `scripts/stagger-visits` over 30 seeds of
/// `labelled.py stagger` (2 to 5 phones, each staying 8-40 min, arriving within an hour).
/// With all five shared phones the bounds only catch a regression: two of them are the same
/// model on the same iOS, identical to the estimator, and keep dwell under the 90%.
/// With phones the frames can tell apart (one of the pair left out) the targets hold.
#[test]
fn staggered_arrivals_are_measured() -> TestResult {
    let Some(dir) = crafting() else {
        return Ok(());
    };
    let all = stagger(&dir, None)?;
    assert!(all["phones"] >= 90.0, "{all:?}");
    assert!((0.85..=1.1).contains(&all["visits_per_phone"]), "{all:?}");
    assert!(all["dwell_within_20pct"] >= 0.8, "{all:?}");
    assert!(all["per_window_device_error"] <= 0.06, "{all:?}");
    let apart = stagger(&dir, Some("S21Ultra-M,iPhone11-B,iPhone12Pro-C,iPhoneXR-A"))?;
    assert!(apart["phones"] >= 80.0, "{apart:?}");
    assert!(apart["visits_per_phone"] <= 1.1, "{apart:?}");
    assert!(apart["dwell_within_20pct"] >= 0.9, "{apart:?}");
    assert!(apart["per_window_device_error"] <= 0.1, "{apart:?}");
    Ok(())
}

/// Runs `scripts/stagger-visits` over 30 seeds (of the given phones, or all) and returns its
/// figures.
fn stagger(
    dir: &Path,
    phones: Option<&str>,
) -> Result<std::collections::HashMap<String, f64>, Box<dyn std::error::Error>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/stagger-visits");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .args(["--seeds", "30", "--bin", env!("CARGO_BIN_EXE_storegw")])
        .arg("--labelled")
        .arg(dir);
    if let Some(p) = phones {
        cmd.args(["--phones", p]);
    }
    let out = cmd.output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    println!(
        "staggered arrivals ({}): {text}",
        phones.unwrap_or("all five phones")
    );
    let last = text.lines().last().ok_or("no output")?;
    let m: serde_json::Value = serde_json::from_str(last)?;
    Ok([
        "phones",
        "visits_per_phone",
        "dwell_within_20pct",
        "per_window_device_error",
    ]
    .iter()
    .map(|k| (k.to_string(), m[*k].as_f64().unwrap_or(f64::NAN)))
    .collect())
}
