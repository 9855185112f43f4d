//! `storegw replay --wifi` on every shared capture: summary figures derived from the TShark
//! reference under the documented policies, schema-valid events, census totals that add up,
//! and the bad-FCS / group-address policy switches.

mod common;

use common::Schemas;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// One TSV row, reduced to what the summary depends on.
struct Ref {
    directed: bool,
    sa: String,
    la: bool,
    group: bool,
    bad_fcs: bool,
}

fn read_ref(tsv: &Path) -> Result<Vec<Ref>, Box<dyn std::error::Error>> {
    let mut out = Vec::new();
    for line in std::fs::read_to_string(tsv)?.lines() {
        if line.starts_with('#') || line.starts_with("frame\t") || line.is_empty() {
            continue;
        }
        let c: Vec<&str> = line.split('\t').collect();
        out.push(Ref {
            directed: !c[8].is_empty(),
            sa: c[2].to_string(),
            la: c[3] == "1",
            group: c[4] == "1",
            bad_fcs: c[11] == "0",
        });
    }
    Ok(out)
}

fn captures(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| tsv_of(p).exists())
        .collect();
    v.sort();
    v
}

fn tsv_of(p: &Path) -> PathBuf {
    PathBuf::from(format!("{}.tshark_probes.tsv", p.display()))
}

/// Runs the replay; returns (events, summary, stderr).
fn replay(
    file: &Path,
    config: &Path,
) -> Result<(Vec<serde_json::Value>, serde_json::Value, String), Box<dyn std::error::Error>> {
    let out = Command::new(env!("CARGO_BIN_EXE_storegw"))
        .args(["replay", "--wifi"])
        .arg(file)
        .arg("--config")
        .arg(config)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{}: {stderr}", file.display());
    let mut lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let summary = lines.pop().ok_or("no summary line")?;
    Ok((lines, summary, stderr))
}

fn config(dir: &Path, wifi: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    common::write_config(dir, 1883, "", &format!("[sources.wifi]\n{wifi}\n"))
}

#[test]
fn summaries_follow_tshark_under_default_policy() -> TestResult {
    let Some(data) = common::shared_data() else {
        return Ok(());
    };
    let schemas = Schemas::load()?;
    let tmp = tempfile::tempdir()?;
    let cfg = config(tmp.path(), "visits = true\nmin_dwell = \"30s\"")?;
    let caps = captures(&data.join("wifi"));
    assert!(caps.len() >= 9);
    for cap in &caps {
        let rows = read_ref(&tsv_of(cap))?;
        let (events, s, _) = replay(cap, &cfg)?;
        let name = cap.display().to_string();
        let good: Vec<&Ref> = rows.iter().filter(|r| !r.bad_fcs && !r.group).collect();
        let devices: BTreeSet<&str> = good.iter().map(|r| r.sa.as_str()).collect();
        let randomized: BTreeSet<&str> = good
            .iter()
            .filter(|r| r.la)
            .map(|r| r.sa.as_str())
            .collect();
        let bad = rows.iter().filter(|r| r.bad_fcs).count() as u64;
        let group_ok = rows.iter().filter(|r| r.group && !r.bad_fcs).count() as u64;
        assert_eq!(s["probe_requests"], rows.len() as u64, "{name}");
        assert_eq!(s["bad_fcs"], bad, "{name}");
        assert_eq!(
            s["malformed"], group_ok,
            "{name}: group-address probes are malformed"
        );
        assert_eq!(s["distinct_devices"], devices.len() as u64, "{name}");
        assert_eq!(s["randomized_devices"], randomized.len() as u64, "{name}");
        assert_eq!(s["accepted"], good.len() as u64, "{name}");
        let census: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["kind"] == "wifi.census")
            .collect();
        let visits: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["kind"] == "wifi.visit")
            .collect();
        assert_eq!(s["census"], census.len() as u64, "{name}");
        assert_eq!(s["visits"], visits.len() as u64, "{name}");
        let probes: u64 = census
            .iter()
            .filter_map(|c| c["probe_requests"].as_u64())
            .sum();
        assert_eq!(probes, good.len() as u64, "{name}: census adds up");
        let directed: u64 = census
            .iter()
            .filter_map(|c| c["directed_probes"].as_u64())
            .sum();
        let want = good.iter().filter(|r| r.directed).count() as u64;
        assert_eq!(directed, want, "{name}: directed probes");
        for e in &events {
            let kind = e["kind"].as_str().unwrap_or_default();
            let v = schemas.kinds.get(kind).ok_or(format!("kind {kind}"))?;
            let errs: Vec<String> = v.iter_errors(e).map(|x| x.to_string()).collect();
            assert!(errs.is_empty(), "{name}: {kind}: {errs:?}");
        }
        for v in &visits {
            assert!(
                v["peak_rssi"].as_i64().unwrap_or(-999) >= -70,
                "{name}: {v}"
            );
            assert!(v["dwell_s"].as_f64().unwrap_or(0.0) >= 30.0, "{name}: {v}");
        }
        eprintln!("{name}: {s}");
    }
    Ok(())
}

#[test]
fn baccichet_policy_switches() -> TestResult {
    let Some(data) = common::shared_data() else {
        return Ok(());
    };
    let cap = data.join("wifi/baccichet_iPhone11-F_anonymized.pcap");
    let rows = read_ref(&tsv_of(&cap))?;
    let all: BTreeSet<&str> = rows.iter().map(|r| r.sa.as_str()).collect();
    let unicast: BTreeSet<&str> = rows
        .iter()
        .filter(|r| !r.group)
        .map(|r| r.sa.as_str())
        .collect();
    let group_probes = rows.iter().filter(|r| r.group).count() as u64;
    let tmp = tempfile::tempdir()?;

    // Default: every FCS is bad, so nothing counts as a device.
    let (_, s, _) = replay(&cap, &config(tmp.path(), "")?)?;
    assert_eq!(
        (s["bad_fcs"].as_u64(), s["distinct_devices"].as_u64()),
        (Some(106), Some(0))
    );

    // Keep bad-FCS frames (an anonymised capture): group-address SAs are still not devices.
    let (_, s, _) = replay(&cap, &config(tmp.path(), "bad_fcs = \"keep\"")?)?;
    assert_eq!(s["distinct_devices"], unicast.len() as u64);
    assert_eq!(s["group_source"], group_probes);
    assert_eq!(s["malformed"], group_probes);

    // Keep both: all 47 SAs count.
    let (_, s, _) = replay(
        &cap,
        &config(tmp.path(), "bad_fcs = \"keep\"\ngroup_source = \"keep\"")?,
    )?;
    assert_eq!(s["distinct_devices"], all.len() as u64);
    assert_eq!(all.len(), 47);
    assert_eq!(s["accepted"], 106);

    // Not verifying the CRC: the radiotap flags do not say bad, so frames count.
    let (_, s, _) = replay(&cap, &config(tmp.path(), "verify_fcs = false")?)?;
    assert_eq!(s["bad_fcs"], 0);
    assert_eq!(s["distinct_devices"], unicast.len() as u64);
    Ok(())
}

#[test]
fn malformed_files_counted_and_non_captures_refused() -> TestResult {
    let Some(data) = common::shared_data() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let cfg = config(tmp.path(), "")?;
    let mut n = 0;
    for e in std::fs::read_dir(data.join("wifi/malformed"))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "pcap") {
            let (events, s, _) = replay(&p, &cfg)?;
            assert!(events.is_empty());
            assert!(s["malformed"].as_u64() >= Some(1), "{}: {s}", p.display());
            assert_eq!(s["malformed"], s["frames"]);
            n += 1;
        }
    }
    assert_eq!(n, 5);
    let out = Command::new(env!("CARGO_BIN_EXE_storegw"))
        .args(["replay", "--wifi"])
        .arg(data.join("SOURCES.md"))
        .arg("--config")
        .arg(&cfg)
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a pcap or pcapng file"));
    Ok(())
}
