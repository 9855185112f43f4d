//! `storegw replay --ble` on the shared btsnoop logs: the events and summary it prints, and the
//! privacy guarantee that no raw BLE address reaches stdout, logs, MQTT or the spool.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn logs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("ble/hci"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "log"));
    v.sort();
    v
}

fn replay(args: &[&str]) -> Result<(Vec<serde_json::Value>, String), Box<dyn std::error::Error>> {
    let out = Command::new(env!("CARGO_BIN_EXE_storegw"))
        .arg("replay")
        .args(args)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "replay failed: {stderr}");
    let lines = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<serde_json::Value>, _>>()?;
    Ok((lines, stderr))
}

/// A replay configuration; `ble` is the `[sources.ble]` body.
fn replay_config(dir: &Path, ble: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let path = dir.join("replay.toml");
    std::fs::write(
        &path,
        format!("[gateway]\nstore_id = \"s1\"\ngateway_id = \"g1\"\nstate_dir = \"state\"\n\n[sources.ble]\n{ble}"),
    )?;
    Ok(path)
}

/// The recorded iBeacon (cnrd-yeelock log) is this store's beacon: listed in the allowlist.
const YEELOCK_ALLOWLIST: &str =
    "[sources.ble.allowlist]\nibeacon = [\"fda50693-a4e2-4fb1-afcf-c6eb07647825\"]\n";

#[test]
fn replays_both_logs_with_schema_valid_events() -> TestResult {
    let Some(data) = shared_data() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let cfg = replay_config(tmp.path(), YEELOCK_ALLOWLIST)?;
    let cfg = cfg.to_str().unwrap_or_default();
    let schemas = Schemas::load()?;
    let hci = data.join("ble/hci");
    for (name, reports) in [
        ("cnrd-yeelock_btsnoop_hci.log", 26),
        ("phlash-blefun_btsnoop_hci.log", 382),
    ] {
        let path = hci.join(name);
        let (lines, _) = replay(&["--ble", path.to_str().unwrap_or_default(), "--config", cfg])?;
        let (summary, events) = lines.split_last().ok_or("no output")?;
        assert_eq!(summary["reports"], reports, "{name}: {summary}");
        assert_eq!(summary["malformed"], 0, "{name}");
        for e in events {
            let kind = e["kind"].as_str().unwrap_or_default();
            let v = schemas.kinds.get(kind).ok_or("unknown kind")?;
            let errs: Vec<String> = v.iter_errors(e).map(|x| x.to_string()).collect();
            assert!(errs.is_empty(), "{name}: {errs:?} in {e}");
        }
        let count = |k: &str| events.iter().filter(|e| e["kind"] == k).count() as u64;
        assert_eq!(summary["sightings"], count("ble.sighting"));
        assert_eq!(summary["presence"], count("ble.presence"));
        assert_eq!(summary["census"], count("ble.census"));
        assert!(count("ble.census") > 0, "{name}: no census");
        if name.starts_with("cnrd") {
            assert_eq!(summary["decoded"]["ibeacon"], 6);
            let sighted: u64 = events
                .iter()
                .filter(|e| e["kind"] == "ble.sighting")
                .map(|e| {
                    let b = &e["beacon"];
                    assert_eq!(b["type"], "ibeacon");
                    assert_eq!(b["uuid"], "fda50693-a4e2-4fb1-afcf-c6eb07647825");
                    assert_eq!(b["major"], 5);
                    assert_eq!(b["minor"], 6);
                    assert_eq!(e["tx_power"], -80);
                    e["count"].as_u64().unwrap_or(0)
                })
                .sum();
            assert_eq!(sighted, 6, "every iBeacon advert is in a sighting");
            let tr: Vec<&str> = events
                .iter()
                .filter(|e| e["kind"] == "ble.presence")
                .filter_map(|e| e["transition"].as_str())
                .collect();
            assert_eq!(tr, ["enter", "exit"]);
            // 9 distinct addresses in the log; the beacon is not counted as another device.
            let devices: u64 = events
                .iter()
                .filter(|e| e["kind"] == "ble.census")
                .filter_map(|e| e["devices"].as_u64())
                .sum();
            assert_eq!(devices, 8);
        }
    }
    // The JSON-lines form of a log gives the same events.
    let path = hci.join("cnrd-yeelock_btsnoop_hci.log");
    let js = hci.join("cnrd-yeelock_btsnoop_hci.log.adv_reports.jsonl");
    let (a, _) = replay(&["--ble", path.to_str().unwrap_or_default(), "--config", cfg])?;
    let (b, _) = replay(&["--ble", js.to_str().unwrap_or_default(), "--config", cfg])?;
    let strip = |v: &[serde_json::Value]| -> Vec<String> {
        v.iter()
            .map(|e| {
                let mut e = e.clone();
                if let Some(o) = e.as_object_mut() {
                    o.remove("records");
                    o.remove("skipped");
                }
                e.to_string()
            })
            .collect()
    };
    assert_eq!(strip(&a), strip(&b));
    Ok(())
}

/// The default configuration (allowlist, empty) publishes no beacon identity: the recorded
/// iBeacon, as a phone app would advertise it, is only counted as one more device.
#[test]
fn default_config_publishes_no_beacon_identity() -> TestResult {
    let Some(data) = shared_data() else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let cfg = replay_config(tmp.path(), "")?;
    let path = data.join("ble/hci/cnrd-yeelock_btsnoop_hci.log");
    let (lines, _) = replay(&[
        "--ble",
        path.to_str().unwrap_or_default(),
        "--config",
        cfg.to_str().unwrap_or_default(),
    ])?;
    let (summary, events) = lines.split_last().ok_or("no output")?;
    assert_eq!(summary["decoded"]["ibeacon"], 6, "the frames are there");
    assert_eq!(summary["sightings"], 0, "{summary}");
    assert_eq!(summary["presence"], 0, "{summary}");
    for e in events {
        assert_eq!(e["kind"], "ble.census", "{e}");
        assert!(
            !e.to_string().contains("fda50693"),
            "beacon identity in {e}"
        );
    }
    let devices: u64 = events.iter().filter_map(|e| e["devices"].as_u64()).sum();
    // With the beacon known, the census windows sum to 8; here it is one more device.
    assert!(devices > 8, "the beacon is counted as a device: {devices}");
    Ok(())
}

/// Every textual form a raw address could take, and its bytes in both orders.
fn address_forms(data: &Path) -> (BTreeSet<String>, Vec<[u8; 6]>) {
    let mut text = BTreeSet::new();
    let mut raw = Vec::new();
    for log in logs(data) {
        let _ = storegw::source::ble::input::for_each_report(&log, None, |_, r| {
            let a = r.addr;
            let mut rev = a;
            rev.reverse();
            for b in [a, rev] {
                let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
                for s in [hex.join(":"), hex.join("-"), hex.concat()] {
                    text.insert(s.clone());
                    text.insert(s.to_uppercase());
                }
                raw.push(b);
            }
        });
    }
    raw.sort();
    raw.dedup();
    (text, raw)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_address_leaves_the_ble_stage() -> TestResult {
    require_mosquitto!();
    let Some(data) = shared_data() else {
        return Ok(());
    };
    let (forms, raw) = address_forms(&data);
    assert!(raw.len() >= 2 * 14, "addresses of both logs collected");
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), "")?;
    let sub = Subscriber::start(broker.port, "storegw/v1/#", 100_000, None).await;
    let cfg = write_config(dir.path(), broker.port, "", "")?;
    let text = std::fs::read_to_string(&cfg)?.replace("level = \"info\"", "level = \"debug\"");
    std::fs::write(&cfg, text)?;
    let mut captured = String::new();
    let mut published = 0u64;
    for log in logs(&data) {
        let out = Command::new(env!("CARGO_BIN_EXE_storegw"))
            .env("STOREGW_LOG", "debug")
            .arg("replay")
            .arg("--ble")
            .arg(&log)
            .arg("--config")
            .arg(&cfg)
            .arg("--publish")
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let summary: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap_or("{}"))?;
        published += summary["sightings"].as_u64().unwrap_or(0)
            + summary["presence"].as_u64().unwrap_or(0)
            + summary["census"].as_u64().unwrap_or(0);
        captured.push_str(&stdout);
        captured.push_str(&stderr);
    }
    assert!(published > 0);
    let got = sub
        .wait_for(published as usize, Duration::from_secs(30))
        .await;
    assert_eq!(
        got as u64, published,
        "every replayed event reached the broker"
    );
    {
        let r = sub.got.lock().map_err(|_| "poisoned")?;
        for p in r.payloads.iter().chain(r.status.iter()) {
            captured.push_str(&p.to_string());
        }
    }
    for f in &forms {
        assert!(
            !captured.contains(f.as_str()),
            "raw address form {f} leaked"
        );
    }
    let mut files = Vec::new();
    files_under(&dir.path().join("state"), &mut files);
    assert!(!files.is_empty(), "spool files exist");
    for file in files {
        let bytes = std::fs::read(&file)?;
        for f in &forms {
            assert!(
                !bytes.windows(f.len()).any(|w| w == f.as_bytes()),
                "{f} in {}",
                file.display()
            );
        }
        for a in &raw {
            assert!(
                !bytes.windows(6).any(|w| w == a),
                "raw address bytes in {}",
                file.display()
            );
        }
    }
    Ok(())
}

/// The backlog a store keeps on disk while its uplink is down, decoded chunk by chunk (LZ4
/// decompressed, `common::spool_plaintext`): a search of the raw files (the test above) sees
/// compressed bytes, where a leaked address could hide in a back-reference.
#[test]
fn a_ble_backlog_kept_on_disk_holds_no_raw_address() -> TestResult {
    let Some(data) = shared_data() else {
        return Ok(());
    };
    let (forms, raw) = address_forms(&data);
    let dir = tempfile::tempdir()?;
    let mut plain = Vec::new();
    let mut chunks = 0;
    let mut logs_text = Vec::new();
    for (i, log) in logs(&data).iter().enumerate() {
        let gw = dir.path().join(format!("gw{i}"));
        std::fs::create_dir_all(&gw)?;
        // Nothing listens on this port: every event stays in the spool.
        let cfg = write_config(&gw, free_port(), "", "")?;
        logs_text.extend(replay_into_backlog("--ble", log, &cfg)?);
        let spool = gw.join("state/spool");
        if spool.exists() {
            let (p, n) = spool_plaintext(&spool)?;
            plain.extend(p);
            chunks += n;
        }
    }
    let text = String::from_utf8_lossy(&plain);
    let census = text.matches("\"devices\"").count();
    eprintln!(
        "decoded {chunks} spool chunks ({} bytes, {census} census events); searching {} address spellings",
        plain.len(),
        forms.len()
    );
    assert!(
        chunks > 0 && census > 0,
        "the backlog holds the logs' events"
    );
    for (name, hay) in [("decoded spool", &plain), ("trace logs", &logs_text)] {
        for f in &forms {
            assert!(
                !hay.windows(f.len()).any(|w| w == f.as_bytes()),
                "raw address form {f} in the {name}"
            );
        }
        for a in &raw {
            assert!(
                !hay.windows(6).any(|w| w == a),
                "raw address bytes in the {name}"
            );
        }
    }
    Ok(())
}
