//! Parser throughput beside external tools on the same input, in the same run: the Wi-Fi
//! decoder vs `tshark -T fields` on one capture file, the BLE decoder vs the TheengsDecoder
//! Python package on the same advertisements. Both sides run on one core.

use super::Row;
use crate::source::ble::adv::{self, Ad, AdStructures, ServiceUuid};
use crate::source::wifi::frame::{self, Decoded};
use crate::source::wifi::pcap;
use std::process::{Command, Stdio};
use std::time::Instant;

/// A named parser measurement.
pub type ParserBench = (&'static str, fn() -> Result<Vec<Row>, String>);

/// Every parser measurement, run in this order.
pub const ALL: &[ParserBench] = &[
    ("Wi-Fi frames parsed vs tshark", wifi_vs_tshark),
    (
        "Wi-Fi device estimation vs address counting",
        super::estimation::error,
    ),
    (
        "BLE advertisements decoded vs TheengsDecoder",
        ble_vs_theengs,
    ),
];

/// The largest shared capture, repeated into a pcap of at least 100k frames.
fn big_capture() -> Result<(Vec<u8>, u64), String> {
    let src =
        super::data::shared_data()?.join("wifi/polimi-vigo_SamsungA53_06_unfiltered_mixed.pcap");
    let buf = std::fs::read(&src).map_err(|e| format!("{}: {e}", src.display()))?;
    let reader = pcap::Reader::new(&buf).map_err(|e| format!("{e:?}"))?;
    let records: Vec<pcap::Record> = reader.filter_map(|r| r.ok()).collect();
    if records.is_empty() {
        return Err("no records in the capture".into());
    }
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&262_144u32.to_le_bytes());
    out.extend_from_slice(&(records[0].linktype as u32).to_le_bytes());
    let mut frames = 0u64;
    while frames < 100_000 {
        for r in &records {
            let ts = r.ts_ns.max(0) as u64;
            out.extend_from_slice(&((ts / 1_000_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&(((ts / 1000) % 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&r.orig_len.to_le_bytes());
            out.extend_from_slice(r.data);
            frames += 1;
        }
    }
    Ok((out, frames))
}

fn wifi_vs_tshark() -> Result<Vec<Row>, String> {
    let (file, frames) = big_capture()?;
    let mut best = f64::MAX;
    let mut probes = 0u64;
    for _ in 0..5 {
        let t = Instant::now();
        let reader = pcap::Reader::new(&file).map_err(|e| format!("{e:?}"))?;
        probes = 0;
        for r in reader.flatten() {
            let cut = r.orig_len as usize > r.data.len();
            if let Decoded::Probe(_) = frame::decode(r.linktype, r.data, cut, true) {
                probes += 1;
            }
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    let ours = frames as f64 / best;
    let mut row = Row::new(
        &format!("Wi-Fi frames parsed, {frames}-frame capture ({probes} probe requests)"),
        ours,
        "frames/s",
    );
    let path = std::env::temp_dir().join(format!("storegw-bench-{}.pcap", std::process::id()));
    std::fs::write(&path, &file).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let tshark = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&path)
        .args([
            "-T",
            "fields",
            "-e",
            "wlan.sa",
            "-e",
            "wlan.seq",
            "-e",
            "radiotap.dbm_antsignal",
            "-e",
            "wlan.ssid",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    let mut tshark_rate = None;
    match tshark {
        Ok(s) if s.success() => {
            let base = frames as f64 / secs;
            tshark_rate = Some(base);
            row = row.baseline("tshark -T fields, same file", base).target(
                "≥50× tshark and ≥3M frames/s",
                ours >= 50.0 * base && ours >= 3e6,
            );
        }
        _ => {
            row = row.target("≥3M frames/s (tshark not installed: no ratio)", ours >= 3e6);
        }
    }
    let mut rows = vec![row];
    match super::estimation::rate(tshark_rate) {
        Ok(r) => rows.push(r),
        Err(e) => eprintln!("bench: Wi-Fi estimation rate not measured: {e}"),
    }
    Ok(rows)
}

/// Real advertising payloads from the shared btsnoop logs plus the beacon vectors.
fn ble_payloads() -> Result<Vec<Vec<u8>>, String> {
    let data = super::data::shared_data()?;
    let mut out = Vec::new();
    for f in [
        "ble/hci/cnrd-yeelock_btsnoop_hci.log.adv_reports.jsonl",
        "ble/hci/phlash-blefun_btsnoop_hci.log.adv_reports.jsonl",
        "ble/vectors/beacontools_vectors.jsonl",
    ] {
        let text = std::fs::read_to_string(data.join(f)).map_err(|e| format!("{f}: {e}"))?;
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let hex = v["ad_hex"].as_str().or_else(|| {
                (v["kind"] == "ad_payload")
                    .then(|| v["hex"].as_str())
                    .flatten()
            });
            let mut b = Vec::new();
            if let Some(h) = hex {
                if adv::hex_decode(h, &mut b) && !b.is_empty() {
                    out.push(b);
                }
            }
        }
    }
    if out.is_empty() {
        return Err("no advertising payloads found".into());
    }
    Ok(out)
}

/// What TheengsDecoder is fed for one advertisement: manufacturer data (with the company id)
/// and the first service data, as its own tests do.
fn theengs_input(payload: &[u8]) -> serde_json::Value {
    let mut v = serde_json::json!({"id": "AA:BB:CC:DD:EE:FF"});
    for ad in AdStructures::new(payload) {
        match ad {
            Ad::Manufacturer { company, data } if v.get("manufacturerdata").is_none() => {
                let mut all = company.to_le_bytes().to_vec();
                all.extend_from_slice(data);
                v["manufacturerdata"] = crate::privacy::hex(&all).into();
            }
            Ad::ServiceData {
                uuid: ServiceUuid::U16(u),
                data,
            } if v.get("servicedata").is_none() => {
                v["servicedata"] = crate::privacy::hex(data).into();
                v["servicedatauuid"] = format!("0x{u:04x}").into();
            }
            Ad::Name { name, .. } if v.get("name").is_none() => {
                v["name"] = String::from_utf8_lossy(name).into_owned().into();
            }
            _ => {}
        }
    }
    v
}

const THEENGS_SCRIPT: &str = r#"
import json, sys, time
from TheengsDecoder import decodeBLE
inputs = [line.strip() for line in open(sys.argv[1]) if line.strip()]
n = 0
t = time.perf_counter()
while time.perf_counter() - t < 3.0:
    for s in inputs:
        decodeBLE(s)
    n += len(inputs)
print(n / (time.perf_counter() - t))
"#;

fn ble_vs_theengs() -> Result<Vec<Row>, String> {
    let payloads = ble_payloads()?;
    let target_n = 4_000_000usize;
    let mut best = f64::MAX;
    let mut beacons = 0usize;
    for _ in 0..3 {
        let t = Instant::now();
        beacons = 0;
        let mut n = 0;
        while n < target_n {
            for p in &payloads {
                if adv::decode(std::hint::black_box(p)).frame.is_some() {
                    beacons += 1;
                }
            }
            n += payloads.len();
        }
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    let ours = 1.0 / best;
    let mut row = Row::new(
        &format!(
            "BLE advertisements decoded ({} real payloads, one core)",
            payloads.len()
        ),
        ours,
        "adverts/s",
    );
    let _ = beacons;
    let dir = std::env::temp_dir();
    let inputs = dir.join(format!(
        "storegw-bench-theengs-{}.jsonl",
        std::process::id()
    ));
    let script = dir.join(format!("storegw-bench-theengs-{}.py", std::process::id()));
    let lines: Vec<String> = payloads
        .iter()
        .map(|p| theengs_input(p).to_string())
        .collect();
    std::fs::write(&inputs, lines.join("\n")).map_err(|e| e.to_string())?;
    std::fs::write(&script, THEENGS_SCRIPT).map_err(|e| e.to_string())?;
    let out = Command::new("python3").arg(&script).arg(&inputs).output();
    let _ = std::fs::remove_file(&inputs);
    let _ = std::fs::remove_file(&script);
    let rate = out.ok().filter(|o| o.status.success()).and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<f64>()
            .ok()
    });
    row = match rate {
        Some(base) => row
            .baseline("TheengsDecoder (pip), same payloads", base)
            .target(
                "≥1000× TheengsDecoder and ≥2M/s",
                ours >= 1000.0 * base && ours >= 2e6,
            ),
        None => row.target(
            "≥2M/s (TheengsDecoder not installed: pip install TheengsDecoder)",
            ours >= 2e6,
        ),
    };
    Ok(vec![row])
}
