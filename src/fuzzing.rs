//! Entry points of the fuzz targets (`fuzz/`), kept in the library so that every input a
//! fuzzer ever crashed on can be replayed by a plain `cargo test` (tests/fuzz_regressions.rs)
//! through exactly the code the fuzzer ran. Each takes untrusted bytes and must never panic.

use crate::privacy::customer::CustomerKeys;
use crate::privacy::DevicePseudonymizer;
use crate::source::ble::{adv, aggregate::Aggregator, btsnoop::Report, config::BleConfig, input};
use crate::source::pos::{normalize::normalize, parse_input, ParseOpts};
use crate::source::wifi::config::{Policy, WifiConfig};
use crate::source::wifi::{frame, frame_stage::FrameStage, pcap};
use std::sync::Arc;

/// A fuzz entry point: untrusted bytes in, nothing out, never a panic.
pub type Target = fn(&[u8]);

/// Every target by name, for the regression test.
pub const TARGETS: [(&str, Target); 12] = [
    ("wifi_capture", wifi_capture),
    ("wifi_frame", wifi_frame),
    ("ble_adv", ble_adv),
    ("ble_input", ble_input),
    ("pos_json", pos_json),
    ("pos_xml", pos_xml),
    ("pos_csv", pos_csv),
    ("pos_refused", pos_refused),
    ("config", config),
    ("remote_document", remote_document),
    ("remote_command", remote_command),
    ("remote_agent", remote_agent),
];

/// A pseudonymizer for one fuzz input; None (the input is skipped) if the CSPRNG fails.
fn devices() -> Option<Arc<DevicePseudonymizer>> {
    DevicePseudonymizer::new(std::time::Duration::from_secs(86_400), 8)
        .ok()
        .map(Arc::new)
}

fn serialize_all(out: &[crate::event::Event]) {
    for e in out {
        let _ = e.to_wire("fuzz", 1);
    }
}

/// A pcap or pcapng file as `storegw replay --wifi` reads it: framing, radiotap, 802.11 and
/// the footfall stage, then every event serialized for the wire.
pub fn wifi_capture(data: &[u8]) {
    if pcap::detect(data).is_none() {
        return;
    }
    let Ok(reader) = pcap::Reader::new(data) else {
        return;
    };
    let Some(devices) = devices() else { return };
    let mut p = FrameStage::new(&WifiConfig::default(), 1, devices, true);
    let mut out = Vec::new();
    for rec in reader {
        let Ok(rec) = rec else { break };
        let cut = (rec.data.len() as u64) < rec.orig_len as u64;
        p.frame(
            rec.linktype,
            rec.data,
            cut,
            rec.ts_ns.div_euclid(1_000_000),
            &mut out,
        );
    }
    p.finish(&mut out);
    serialize_all(&out);
}

/// One frame as live capture hands it over. The first byte selects radiotap or bare 802.11,
/// a cut capture, the FCS check, the bad-FCS and group-source policies and visits.
pub fn wifi_frame(data: &[u8]) {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let linktype = if sel & 1 == 0 {
        frame::LINKTYPE_RADIOTAP
    } else {
        frame::LINKTYPE_IEEE802_11
    };
    let cut = sel & 2 != 0;
    let policy = |bit: u8| {
        if sel & bit != 0 {
            Policy::Keep
        } else {
            Policy::Drop
        }
    };
    let cfg = WifiConfig {
        verify_fcs: sel & 4 != 0,
        bad_fcs: policy(16),
        group_source: policy(32),
        visits: sel & 64 != 0,
        ..WifiConfig::default()
    };
    let _ = frame::decode(linktype, bytes, cut, cfg.verify_fcs);
    let Some(devices) = devices() else { return };
    let mut p = FrameStage::new(&cfg, 1, devices, false);
    let mut out = Vec::new();
    p.frame(linktype, bytes, cut, 1_700_000_000_000, &mut out);
    p.finish(&mut out);
    serialize_all(&out);
}

/// One advertising report's AD structures (after a selector byte that varies the address,
/// event type and RSSI): the decoder, then the aggregator and the wire form.
pub fn ble_adv(data: &[u8]) {
    let Some((&sel, ad)) = data.split_first() else {
        return;
    };
    let _ = adv::decode(ad).malformed;
    let cfg = BleConfig {
        census: true,
        ..BleConfig::default()
    };
    let Some(devices) = devices() else { return };
    let mut agg = Aggregator::new(&cfg, 1, devices);
    let rep = Report {
        addr: [0xc0, 0, 0, 0, 0, sel],
        addr_type: sel & 1,
        event_type: ((sel >> 1) & 7) as u16,
        rssi: Some(-60 - (sel & 31) as i8),
        tx_power: None,
        data: ad,
    };
    let mut out = Vec::new();
    agg.push(1_700_000_000_000, &rep, &mut out);
    agg.push(1_700_000_005_000, &rep, &mut out);
    agg.finish(1_700_000_100_000, &mut out);
    serialize_all(&out);
}

/// A recorded BLE input as `storegw replay --ble` reads it: a btsnoop log or JSON lines of
/// reports, through the aggregator to the wire form.
pub fn ble_input(data: &[u8]) {
    let Some(format) = input::detect(data) else {
        return;
    };
    let cfg = BleConfig {
        census: true,
        ..BleConfig::default()
    };
    let Some(devices) = devices() else { return };
    let mut agg = Aggregator::new(&cfg, 1, devices);
    let mut out = Vec::new();
    let mut last: Option<i64> = None;
    let _ = input::read_reports(std::io::Cursor::new(data), format, |ts_us, rep| {
        let ts = ts_us.div_euclid(1000);
        agg.push(ts, &rep, &mut out);
        last = Some(last.map_or(ts, |l| l.max(ts)));
    });
    if let Some(l) = last {
        agg.finish(l, &mut out);
    }
    serialize_all(&out);
}

/// Parses `text` as a POS `format`, then normalizes (card scrubbing, customer pseudonyms,
/// money checks) and serializes every accepted transaction.
fn pos(text: &str, format: &str) {
    let opts = ParseOpts {
        default_currency: "EUR".into(),
        default_register: "1".into(),
        offset_s: 3600,
        csv: Default::default(),
    };
    let key = CustomerKeys::from_bytes(b"fuzz-join-key-0123456789abcdef", "DE");
    let Ok(parsed) = parse_input(text, format, &opts) else {
        return;
    };
    for tx in parsed.items.into_iter().flatten() {
        if let Ok(n) = normalize(tx, &key, 1_700_000_000_000) {
            let _ = n.event.to_wire("fuzz", 1);
        }
    }
}

/// POS JSON as pushed over HTTP, dropped in a watched directory or polled: the first byte
/// picks the canonical document, JSON lines, Square or Shopify.
pub fn pos_json(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if let Ok(text) = std::str::from_utf8(rest) {
        pos(
            text,
            ["json", "jsonl", "square", "shopify"][sel as usize % 4],
        );
    }
}

/// ARTS POSLog XML from a legacy till's export directory.
pub fn pos_xml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        pos(text, "poslog");
    }
}

/// A till's CSV export with the default column mapping.
pub fn pos_csv(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        pos(text, "csv");
    }
}

/// A till's export file that the import refused, before it may be kept in `failed/`: the
/// search for card authentication data over its bytes (any encoding, compressed or binary),
/// in the daemon's 1 MiB blocks and in small blocks the input crosses (the first byte picks
/// 256 to 4,336 bytes), and the card-data checks on its text. With one block, a clean verdict
/// on text without NUL bytes is the text check's own verdict.
pub fn pos_refused(data: &[u8]) {
    use crate::privacy::card;
    use crate::source::pos::files::{refused_file_verdict, BLOCK};
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let whole = refused_file_verdict(rest, BLOCK);
    let _ = refused_file_verdict(rest, 256 + usize::from(sel) * 16);
    if let Ok(text) = std::str::from_utf8(rest) {
        let found = card::text_carries_auth_data(text, true);
        let _ = card::looks_like_track(text);
        if whole == "clean" && !rest.contains(&0) {
            assert!(!found, "the file search and the text check disagree");
        }
    }
}

/// The configuration file: TOML syntax, every section's validation and the error rendering
/// that names file, line and key.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = crate::config::parse("fuzz.toml", text, None) {
            let _ = e.to_string();
        }
    }
}

/// A signed remote configuration document as a gateway would receive it on its config topic:
/// envelope split, signature check (against a fixed key, with the signature also recomputed so
/// the fuzzer reaches the overlay parser), forbidden keys, merge and validation.
pub fn remote_document(data: &[u8]) {
    use crate::remote::document::{self, Context, TrustedKeys};
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let Ok(keys) = TrustedKeys::parse(&document::format_public_key(&key.verifying_key())) else {
        return;
    };
    let Ok(local) = "[gateway]\nstore_id = \"s1\"\ngateway_id = \"g1\"\n".parse::<toml::Table>()
    else {
        return;
    };
    // A fixed instant, so the seeds' `not_after` stays within reach and runs are repeatable.
    let now = time::macros::datetime!(2026-06-01 12:00 UTC);
    let cx = Context {
        keys: &keys,
        now,
        last_version: 1,
        local: &local,
        base: None,
        targets: &[],
    };
    let _ = document::verify(data, &cx);
    // The same bytes as an overlay, signed: exercises everything after the signature check.
    if let Ok(signed) = document::sign_at(data, &key, now, document::DEFAULT_VALIDITY) {
        let _ = document::verify(&signed, &cx);
    }
}

/// A signed command as a gateway reads it from its cmd topic: envelope, signature, fields,
/// target, expiry and the nonce log; the same bytes signed go through every later check.
pub fn remote_command(data: &[u8]) {
    use crate::remote::command::{self, NonceLog};
    use crate::remote::document::{self, TrustedKeys};
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let Ok(keys) = TrustedKeys::parse(&document::format_public_key(&key.verifying_key())) else {
        return;
    };
    let mut log = NonceLog::default();
    let now = 1_800_000_000_000;
    let _ = command::verify(data, &keys, "s1", "g1", now, &mut log);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(signed) = command::sign(text, &key) {
            let _ = command::verify(&signed, &keys, "s1", "g1", now, &mut log);
            let _ = command::verify(&signed, &keys, "s1", "g1", now, &mut log);
        }
    }
}

/// A gateway's remote agent fed what a hostile broker could send: the input is cut at 0xFF
/// bytes into up to 8 messages; each message's first byte picks the topic (gateway config,
/// fleet config, cmd) and whether the rest is signed with the trusted key first, so the
/// fuzzer reaches both the unverified path and every decision after the signature. After each
/// message, what the gateway would publish must stay bounded whatever came in.
pub fn remote_agent(data: &[u8]) {
    use crate::remote::agent::Agent;
    use crate::remote::document;
    use crate::remote::state::Layer;
    use std::sync::atomic::{AtomicU64, Ordering};
    static RUN: AtomicU64 = AtomicU64::new(0);
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let dir = std::env::temp_dir().join(format!(
        "storegw-fuzz-agent-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let run = || -> Option<()> {
        std::fs::create_dir_all(&dir).ok()?;
        let public = dir.join("central.pub");
        std::fs::write(&public, document::format_public_key(&key.verifying_key())).ok()?;
        let path = dir.join("storegw.toml");
        let text = format!(
            "[gateway]\nstore_id = \"s1\"\ngateway_id = \"g1\"\nstate_dir = \"{}\"\n[http]\nenabled = false\n[sources.sim]\nenabled = true\n[remote]\npublic_key_file = \"central.pub\"\n",
            dir.join("state").display()
        );
        std::fs::write(&path, &text).ok()?;
        let local = crate::config::parse("fuzz.toml", &text, Some(&dir)).ok()?;
        let (_, agent) = Agent::boot(&path, local, crate::telemetry::Telemetry::new()).ok()?;
        let mut agent = agent?;
        for msg in data.split(|&b| b == 0xFF).take(8) {
            let Some((&sel, body)) = msg.split_first() else {
                continue;
            };
            let payload = if sel & 4 != 0 {
                let Ok(text) = std::str::from_utf8(body) else {
                    continue;
                };
                document::seal(text, &key)
            } else {
                body.to_vec()
            };
            match sel % 3 {
                0 => drop(agent.on_document(Layer::Gateway, &payload)),
                1 => drop(agent.on_document(Layer::Fleet, &payload)),
                _ => drop(agent.on_command(&payload)),
            }
            let state = agent.state_payload();
            assert!(state.len() < 4096, "config state of {} bytes", state.len());
        }
        Some(())
    };
    let _ = run();
    let _ = std::fs::remove_dir_all(&dir);
}
