//! Per-packet agreement of the Wi-Fi parsers with TShark (and the fryza authors' CSV) on every
//! shared capture, and no panic on the fuzzer crash files.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use storegw::source::wifi::dot11::Ssid;
use storegw::source::wifi::frame::{decode, Decoded, FcsStatus};
use storegw::source::wifi::pcap::Reader;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// What we decode from one probe request, in the TSV's terms.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    time_us: i64,
    sa: String,
    la: bool,
    group: bool,
    da: String,
    bssid: String,
    seq: u16,
    directed: bool,
    ssid_hex: String,
    rssi: Option<i8>,
    freq: Option<u16>,
    fcs: Option<u8>,
    elements: Vec<u8>,
}

fn mac(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn decode_file(path: &Path) -> Result<(BTreeMap<usize, Row>, usize, usize), String> {
    let buf = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    let mut frames = 0;
    let mut malformed = 0;
    for (i, rec) in Reader::new(&buf).map_err(|e| e.to_string())?.enumerate() {
        let Ok(rec) = rec else {
            malformed += 1;
            break;
        };
        frames += 1;
        let cut = (rec.data.len() as u64) < rec.orig_len as u64;
        match decode(rec.linktype, rec.data, cut, true) {
            Decoded::Probe(p) => {
                let (directed, ssid_hex) = match p.req.ssid {
                    Ssid::Directed(s) => (true, s.iter().map(|b| format!("{b:02x}")).collect()),
                    _ => (false, String::new()),
                };
                out.insert(
                    i + 1,
                    Row {
                        time_us: rec.ts_ns / 1000,
                        sa: mac(&p.req.sa),
                        la: p.req.sa[0] & 2 != 0,
                        group: p.req.sa[0] & 1 != 0,
                        da: mac(&p.req.da),
                        bssid: mac(&p.req.bssid),
                        seq: p.req.seq,
                        directed,
                        ssid_hex,
                        rssi: p.rssi,
                        freq: p.freq_mhz,
                        fcs: match p.fcs {
                            FcsStatus::Absent => None,
                            FcsStatus::Good => Some(1),
                            FcsStatus::Bad => Some(0),
                            FcsStatus::Unverified => Some(2),
                        },
                        elements: p.req.elements().map(|(id, _)| id).collect(),
                    },
                );
            }
            Decoded::Other => {}
            Decoded::Malformed(_) => malformed += 1,
        }
    }
    Ok((out, frames, malformed))
}

fn opt<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() {
        None
    } else {
        s.parse().ok()
    }
}

/// Reads a `*.tshark_probes.tsv`, checking its column header first.
fn read_tsv(path: &Path) -> Result<BTreeMap<usize, Row>, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)?;
    let mut rows = BTreeMap::new();
    let mut header_seen = false;
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let c: Vec<&str> = line.split('\t').collect();
        if !header_seen {
            assert_eq!(
                c,
                [
                    "frame",
                    "time_epoch",
                    "sa",
                    "sa_locally_administered",
                    "sa_group_bit",
                    "da",
                    "bssid",
                    "seq",
                    "ssid_hex",
                    "dbm_antsignal",
                    "freq_mhz",
                    "fcs_status"
                ],
                "{}: column header changed",
                path.display()
            );
            header_seen = true;
            continue;
        }
        assert_eq!(c.len(), 12, "{}: {line}", path.display());
        let (secs, frac) = c[1].split_once('.').ok_or("time")?;
        let time_us =
            secs.parse::<i64>()? * 1_000_000 + frac.get(..6).ok_or("frac")?.parse::<i64>()?;
        rows.insert(
            c[0].parse()?,
            Row {
                time_us,
                sa: c[2].to_string(),
                la: c[3] == "1",
                group: c[4] == "1",
                da: c[5].to_string(),
                bssid: c[6].to_string(),
                seq: c[7].parse()?,
                directed: !c[8].is_empty(),
                ssid_hex: c[8].to_string(),
                rssi: opt(c[9]),
                freq: opt(c[10]),
                fcs: opt(c[11]),
                elements: Vec::new(),
            },
        );
    }
    assert!(header_seen, "{}: no column header", path.display());
    Ok(rows)
}

fn wifi_dir() -> Option<PathBuf> {
    common::shared_data().map(|d| d.join("wifi"))
}

fn captures(dir: &Path) -> Result<Vec<PathBuf>, Box<dyn std::error::Error>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| dir.join(format!("{}.tshark_probes.tsv", name(p))).exists())
        .collect();
    v.sort();
    Ok(v)
}

fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn every_probe_agrees_with_tshark() -> TestResult {
    let Some(dir) = wifi_dir() else {
        return Ok(());
    };
    let caps = captures(&dir)?;
    assert!(
        caps.len() >= 9,
        "expected the shared captures, found {caps:?}"
    );
    for cap in &caps {
        let tsv = read_tsv(&dir.join(format!("{}.tshark_probes.tsv", name(cap))))?;
        let (ours, frames, malformed) = decode_file(cap)?;
        assert_eq!(malformed, 0, "{}: malformed frames", name(cap));
        let want: Vec<usize> = tsv.keys().copied().collect();
        let got: Vec<usize> = ours.keys().copied().collect();
        assert_eq!(got, want, "{}: probe request frame numbers", name(cap));
        for (n, t) in &tsv {
            let o = &ours[n];
            let ctx = format!("{} frame {n}", name(cap));
            assert_eq!(o.sa, t.sa, "{ctx}: SA");
            assert_eq!(o.rssi, t.rssi, "{ctx}: RSSI");
            assert_eq!(o.seq, t.seq, "{ctx}: seq");
            assert_eq!(o.freq, t.freq, "{ctx}: freq");
            assert_eq!(o.directed, t.directed, "{ctx}: wildcard/directed");
            assert_eq!(o.ssid_hex, t.ssid_hex, "{ctx}: SSID bytes");
            assert_eq!((o.la, o.group), (t.la, t.group), "{ctx}: LA/group");
            assert_eq!((&o.da, &o.bssid), (&t.da, &t.bssid), "{ctx}: DA/BSSID");
            assert_eq!(o.fcs, t.fcs, "{ctx}: FCS status");
            assert_eq!(o.time_us, t.time_us, "{ctx}: time");
        }
        eprintln!(
            "{}: {frames} frames, {} probe requests agree with TShark",
            name(cap),
            tsv.len()
        );
    }
    Ok(())
}

#[test]
fn pcap_and_pcapng_of_one_capture_are_identical() -> TestResult {
    let Some(dir) = wifi_dir() else {
        return Ok(());
    };
    let a = decode_file(&dir.join("polimi-vigo_SamsungA53_01_filtered.pcap"))?;
    let b = decode_file(&dir.join("polimi-vigo_SamsungA53_01_filtered.pcapng"))?;
    assert_eq!(a.0.len(), 882);
    assert_eq!(a, b);
    Ok(())
}

#[test]
fn fryza_csv_second_ground_truth() -> TestResult {
    let Some(dir) = wifi_dir() else {
        return Ok(());
    };
    let (ours, _, _) = decode_file(&dir.join("fryza_sc6-61_2023-04-14_anonymized.pcap"))?;
    let text = std::fs::read_to_string(dir.join("fryza_sc6-61_2023-04-14_ver-99.csv"))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("empty csv")?.split(';').collect();
    let col = |n: &str| {
        header
            .iter()
            .position(|h| *h == n)
            .ok_or(format!("no column {n}"))
    };
    let (src, rssi, seq, freq, rnd, elt) = (
        col("src")?,
        col("rssi")?,
        col("seq_num")?,
        col("ch_freq")?,
        col("randomized")?,
        col("dot11elt")?,
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(';').collect()).collect();
    assert_eq!(rows.len(), ours.len());
    for (row, (n, o)) in rows.iter().zip(ours.iter()) {
        let ctx = format!("fryza frame {n}");
        assert_eq!(row[src], o.sa, "{ctx}: src");
        assert_eq!(row[rssi].parse::<i8>().ok(), o.rssi, "{ctx}: rssi");
        assert_eq!(row[seq].parse::<u16>()?, o.seq, "{ctx}: seq");
        assert_eq!(row[freq].parse::<u16>().ok(), o.freq, "{ctx}: freq");
        assert_eq!(row[rnd] == "1", o.la, "{ctx}: randomized");
        let ids: Vec<u8> = row[elt]
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse())
            .collect::<Result<_, _>>()?;
        assert_eq!(ids, o.elements, "{ctx}: dot11elt");
    }
    Ok(())
}

#[test]
fn fuzzer_crash_files_are_malformed_not_panics() -> TestResult {
    let Some(dir) = wifi_dir() else {
        return Ok(());
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("malformed"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 5);
    for f in &files {
        let (probes, frames, malformed) = decode_file(f)?;
        eprintln!("{}: {frames} frames, {malformed} malformed", name(f));
        assert!(probes.is_empty(), "{}: no valid probe request", name(f));
        assert!(frames >= 1);
        assert_eq!(malformed, frames, "{}: every frame is damaged", name(f));
    }
    Ok(())
}

/// Every frame of every shared capture, cut at every length and with bytes flipped, decodes
/// to something (probe, other or malformed) without panicking.
#[test]
fn mutated_frames_never_panic() -> TestResult {
    let Some(dir) = wifi_dir() else {
        return Ok(());
    };
    let mut n = 0u64;
    for cap in captures(&dir)? {
        let buf = std::fs::read(&cap)?;
        for rec in Reader::new(&buf)?.flatten().take(300) {
            let mut f = rec.data.to_vec();
            for cut in 0..f.len() {
                let _ = decode(rec.linktype, &f[..cut], true, true);
                let _ = decode(rec.linktype, &f[..cut], false, true);
            }
            for i in 0..f.len().min(64) {
                let old = f[i];
                for v in [0x00, 0xff, old ^ 0x80] {
                    f[i] = v;
                    let _ = decode(rec.linktype, &f, false, true);
                    n += 1;
                }
                f[i] = old;
            }
        }
    }
    assert!(n > 10_000);
    Ok(())
}
