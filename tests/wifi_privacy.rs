//! Privacy of the Wi-Fi source end to end: every shared capture is replayed with `--publish`
//! to a real mosquitto; the spool files, the logs and everything received over MQTT are then
//! searched for every MAC address and every probed SSID in the input. None may appear.

mod common;
use common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use storegw::source::wifi::dot11::Ssid;
use storegw::source::wifi::frame::{decode, Decoded, LINKTYPE_RADIOTAP};
use storegw::source::wifi::pcap::Reader;

/// The Wi-Fi section of both tests: every doubtful frame kept, every visit published and the
/// equipment learned by maker at its smallest size (maker prefixes hashed), so as much as
/// possible flows through (the worst case for privacy).
const WORST_CASE: &str = "[sources.wifi]\nvisits = true\nmin_dwell = \"0s\"\nbad_fcs = \"keep\"\n\
     group_source = \"keep\"\n[sources.wifi.calibration]\nequipment_fleet = 2\n\
     infrastructure_weight = 0.5\n";

/// Every capture file under wifi/ (malformed ones and the labelled phones included; the
/// occupancy days are represented by the one in wifi/ itself).
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for d in [
        dir.to_path_buf(),
        dir.join("malformed"),
        dir.join("labelled"),
    ] {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let ok = p
                .extension()
                .is_some_and(|x| x == "pcap" || x == "pcapng" || x == "cap");
            if ok {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// MAC-shaped fields (addr1..addr3 of every frame) and probed SSIDs of one capture.
fn secrets(buf: &[u8], macs: &mut Vec<[u8; 6]>, ssids: &mut Vec<Vec<u8>>) {
    let Ok(reader) = Reader::new(buf) else { return };
    for rec in reader.flatten() {
        let frame = if rec.linktype == LINKTYPE_RADIOTAP {
            let rt = rec
                .data
                .get(2..4)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
                .unwrap_or(usize::MAX);
            rec.data.get(rt..).unwrap_or(&[])
        } else {
            rec.data
        };
        for at in [4, 10, 16] {
            if let Some(m) = frame
                .get(at..at + 6)
                .and_then(|s| <[u8; 6]>::try_from(s).ok())
            {
                if m != [0; 6] && !macs.contains(&m) {
                    macs.push(m);
                }
            }
        }
        let cut = (rec.data.len() as u64) < rec.orig_len as u64;
        if let Decoded::Probe(p) = decode(rec.linktype, rec.data, cut, false) {
            if let Ssid::Directed(s) = p.req.ssid {
                if !ssids.iter().any(|x| x == s) {
                    ssids.push(s.to_vec());
                }
            }
        }
    }
}

/// Every way a MAC is commonly written, lower case (the haystacks are lower-cased).
fn mac_forms(m: &[u8; 6]) -> Vec<Vec<u8>> {
    let h: Vec<String> = m.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        h.join("").into_bytes(),
        h.join(":").into_bytes(),
        h.join("-").into_bytes(),
        format!("{}{}.{}{}.{}{}", h[0], h[1], h[2], h[3], h[4], h[5]).into_bytes(),
    ]
}

/// Many needles (each at least 4 bytes) searched in one pass: a 24-bit prefix bitmap filters
/// positions, a map on the 4-byte prefix finds the candidates.
struct Needles<'a> {
    bits: Vec<u64>,
    by_prefix: HashMap<[u8; 4], Vec<&'a (String, Vec<u8>)>>,
}

impl<'a> Needles<'a> {
    fn new(list: &'a [(String, Vec<u8>)]) -> Needles<'a> {
        let mut bits = vec![0u64; (1 << 24) / 64];
        let mut by_prefix: HashMap<[u8; 4], Vec<&'a (String, Vec<u8>)>> = HashMap::new();
        for n in list {
            let Some(p) = n.1.get(..4).and_then(|p| <[u8; 4]>::try_from(p).ok()) else {
                continue;
            };
            let k = (p[0] as usize) << 16 | (p[1] as usize) << 8 | p[2] as usize;
            bits[k / 64] |= 1 << (k % 64);
            by_prefix.entry(p).or_default().push(n);
        }
        Needles { bits, by_prefix }
    }

    fn find_in(&self, hay: &[u8]) -> Option<&'a str> {
        for i in 0..hay.len().saturating_sub(3) {
            let k = (hay[i] as usize) << 16 | (hay[i + 1] as usize) << 8 | hay[i + 2] as usize;
            if self.bits[k / 64] & (1 << (k % 64)) == 0 {
                continue;
            }
            let p = [hay[i], hay[i + 1], hay[i + 2], hay[i + 3]];
            for n in self.by_prefix.get(&p).into_iter().flatten() {
                if hay[i..].starts_with(&n.1) {
                    return Some(&n.0);
                }
            }
        }
        None
    }
}

/// What the searches look for: every spelling of every MAC ([`mac_forms`]) and every probed
/// SSID of at least 4 bytes, raw and as hex (shorter strings would match pseudonyms, random
/// hex, or JSON by chance), and the maker prefixes of the globally unique addresses.
fn needles_for(macs: &[[u8; 6]], ssids: &[Vec<u8>]) -> Vec<(String, Vec<u8>)> {
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for m in macs {
        for form in mac_forms(m) {
            needles.push((format!("MAC {}", String::from_utf8_lossy(&form)), form));
        }
    }
    // The maker prefix of every globally unique address (the equipment learned by maker
    // hashes it), written with separators and holding a hex letter: without them it could be
    // a time of day or random hex.
    let mut prefixes: Vec<[u8; 3]> = macs
        .iter()
        .filter(|m| m[0] & 3 == 0)
        .map(|m| [m[0], m[1], m[2]])
        .collect();
    prefixes.sort_unstable();
    prefixes.dedup();
    for p in prefixes {
        let h: Vec<String> = p.iter().map(|b| format!("{b:02x}")).collect();
        if !h.concat().bytes().any(|c| c.is_ascii_alphabetic()) {
            continue;
        }
        for sep in [":", "-"] {
            let form = h.join(sep);
            needles.push((format!("maker prefix {form}"), form.into_bytes()));
        }
    }
    for s in ssids.iter().filter(|s| s.len() >= 4) {
        let hex: Vec<u8> = s
            .iter()
            .flat_map(|b| format!("{b:02x}").into_bytes())
            .collect();
        let what = format!("SSID {:?}", String::from_utf8_lossy(s));
        needles.push((what.clone(), hex));
        needles.push((what, s.to_ascii_lowercase()));
    }
    needles
}

fn files_under(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b.to_ascii_lowercase()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_mac_or_ssid_leaves_the_wifi_stage() -> TestResult {
    require_mosquitto!();
    let Some(data) = shared_data() else {
        return Ok(());
    };
    // A fixed prefix: the random part of a default temp name could spell a probed SSID, and
    // the files searched below hold their own paths.
    let dir = tempfile::Builder::new().prefix("storegw-wp-").tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), "")?;
    let sub = Subscriber::start(broker.port, "storegw/v1/#", 1_000_000, None).await;
    let files = inputs(&data.join("wifi"));
    assert!(files.len() >= 14, "{files:?}");
    let mut macs = Vec::new();
    let mut ssids = Vec::new();
    let mut logs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut expected = 0u64;
    for (i, f) in files.iter().enumerate() {
        secrets(&std::fs::read(f)?, &mut macs, &mut ssids);
        let gw = dir.path().join(format!("gw{i}"));
        std::fs::create_dir_all(&gw)?;
        let cfg = write_config(&gw, broker.port, "", WORST_CASE)?;
        let out = Command::new(env!("CARGO_BIN_EXE_storegw"))
            .args(["replay", "--publish", "--wifi"])
            .arg(f)
            .arg("--config")
            .arg(&cfg)
            .env("STOREGW_LOG", "trace")
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{}: {stderr}", f.display());
        let stdout = String::from_utf8(out.stdout.clone())?;
        let summary: serde_json::Value =
            serde_json::from_str(stdout.lines().last().ok_or("no summary")?)?;
        expected +=
            summary["census"].as_u64().unwrap_or(0) + summary["visits"].as_u64().unwrap_or(0);
        logs.push((
            format!("{} stderr", f.display()),
            out.stderr.to_ascii_lowercase(),
        ));
        logs.push((
            format!("{} stdout", f.display()),
            out.stdout.to_ascii_lowercase(),
        ));
    }
    let got = sub
        .wait_for(expected as usize, Duration::from_secs(60))
        .await;
    assert_eq!(got as u64, expected, "every published event arrived");
    assert!(expected > 500, "the captures produced events to search");
    let mqtt = {
        let r = sub.got.lock().map_err(|_| "poisoned")?;
        serde_json::to_vec(&r.payloads)?.to_ascii_lowercase()
    };
    let mut hay: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    files_under(dir.path(), &mut hay);
    let mut haystacks: Vec<(String, &[u8])> = hay
        .iter()
        .map(|(p, b)| (p.display().to_string(), b.as_slice()))
        .collect();
    haystacks.extend(logs.iter().map(|(n, b)| (n.clone(), b.as_slice())));
    haystacks.push(("mqtt".into(), &mqtt));
    assert!(
        hay.iter()
            .any(|(p, _)| p.to_string_lossy().contains("state")),
        "spool files exist"
    );
    eprintln!(
        "searching {} MACs and {} SSIDs in {} haystacks ({} bytes of MQTT)",
        macs.len(),
        ssids.len(),
        haystacks.len(),
        mqtt.len()
    );
    assert!(macs.len() > 100 && ssids.len() > 5);
    let needles = needles_for(&macs, &ssids);
    let index = Needles::new(&needles);
    for (name, h) in &haystacks {
        if let Some(what) = index.find_in(h) {
            panic!("{what} found in {name}");
        }
    }
    // The search itself works: a pseudonymized-looking haystack holding a MAC is caught.
    if let Some(m) = macs.first() {
        let mut probe = b"{\"device\":\"0123456789abcdef\",\"x\":\"".to_vec();
        probe.extend(mac_forms(m).remove(1));
        assert!(index.find_in(&probe).is_some());
    }
    Ok(())
}

/// The backlog a store keeps on disk while its uplink is down, decoded chunk by chunk (LZ4
/// decompressed, `common::spool_plaintext`): a search of the raw files sees compressed bytes,
/// where a leaked address could hide in a back-reference. Every shared capture, every MAC
/// address and probed SSID in it, in every spelling the test above searches.
#[test]
fn a_wifi_backlog_kept_on_disk_holds_no_raw_mac_or_ssid() -> TestResult {
    let Some(data) = shared_data() else {
        return Ok(());
    };
    let dir = tempfile::Builder::new().prefix("storegw-wb-").tempdir()?;
    let files = inputs(&data.join("wifi"));
    assert!(files.len() >= 14, "{files:?}");
    let mut macs = Vec::new();
    let mut ssids = Vec::new();
    let mut plain = Vec::new();
    let mut chunks = 0;
    let mut logs = Vec::new();
    for (i, f) in files.iter().enumerate() {
        secrets(&std::fs::read(f)?, &mut macs, &mut ssids);
        let gw = dir.path().join(format!("gw{i}"));
        std::fs::create_dir_all(&gw)?;
        // Nothing listens on this port: every event stays in the spool.
        let cfg = write_config(&gw, free_port(), "", WORST_CASE)?;
        logs.extend(replay_into_backlog("--wifi", f, &cfg)?.to_ascii_lowercase());
        let spool = gw.join("state/spool");
        if spool.exists() {
            let (p, n) = spool_plaintext(&spool)?;
            plain.extend(p.to_ascii_lowercase());
            chunks += n;
        }
    }
    let text = String::from_utf8_lossy(&plain);
    let census = text.matches("\"devices_estimated\"").count();
    eprintln!(
        "decoded {chunks} spool chunks ({} bytes, {census} census events) of {} captures; \
         searching {} MACs and {} SSIDs",
        plain.len(),
        files.len(),
        macs.len(),
        ssids.len()
    );
    assert!(census > 500, "the backlog holds the captures' events");
    assert!(macs.len() > 100 && ssids.len() > 5);
    let needles = needles_for(&macs, &ssids);
    let index = Needles::new(&needles);
    for (name, h) in [("decoded spool", &plain), ("trace logs", &logs)] {
        if let Some(what) = index.find_in(h) {
            panic!("{what} found in the {name}");
        }
    }
    Ok(())
}
