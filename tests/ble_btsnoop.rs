//! The btsnoop reader against the shared HCI logs: every LE advertising report, exactly as the
//! TShark-checked `*.adv_reports.jsonl` lists them, and nothing else.

mod common;

use std::path::Path;
use storegw::source::ble::{adv, btsnoop, input};

type TestResult = common::TestResult;

const LOGS: [&str; 2] = [
    "cnrd-yeelock_btsnoop_hci.log",
    "phlash-blefun_btsnoop_hci.log",
];

#[derive(Debug, Clone, PartialEq)]
struct Row {
    frame: u64,
    ts_us: i64,
    addr: String,
    addr_type: u8,
    event_type: u16,
    rssi: Option<i8>,
    ad_hex: String,
}

fn read_log(path: &Path) -> (Vec<Row>, u64, u64) {
    let file = std::fs::File::open(path).expect("log opens");
    let mut snoop = btsnoop::Btsnoop::new(std::io::BufReader::new(file)).expect("btsnoop header");
    let mut rows = Vec::new();
    let mut buf = Vec::new();
    let mut bad = 0u32;
    let mut records = 0;
    while let Some(h) = snoop.next_record(&mut buf).expect("readable") {
        records += 1;
        snoop.adv_reports(&h, &buf, &mut bad, |r| {
            rows.push(Row {
                frame: h.frame,
                ts_us: h.ts_us,
                addr: r.addr_string(),
                addr_type: r.addr_type,
                event_type: r.event_type,
                rssi: r.rssi,
                ad_hex: storegw::privacy::hex(r.data),
            })
        });
    }
    assert_eq!(bad, 0);
    (rows, records, snoop.truncated)
}

fn expected(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path).expect("jsonl");
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            Row {
                frame: v["frame"].as_u64().unwrap_or(0),
                ts_us: (v["ts"].as_f64().unwrap_or(0.0) * 1e6).round() as i64,
                addr: v["addr"].as_str().unwrap_or("").to_string(),
                addr_type: v["addr_type"].as_u64().unwrap_or(9) as u8,
                event_type: v["event_type"].as_u64().unwrap_or(99) as u16,
                rssi: v["rssi"].as_i64().map(|x| x as i8),
                ad_hex: v["ad_hex"].as_str().unwrap_or("").to_string(),
            }
        })
        .collect()
}

#[test]
fn reproduces_shared_report_lists() -> TestResult {
    let Some(dir) = common::shared_data() else {
        return Ok(());
    };
    let want_records = [690, 29317];
    let want_reports = [26, 382];
    for (i, name) in LOGS.iter().enumerate() {
        let log = dir.join("ble/hci").join(name);
        let (rows, records, truncated) = read_log(&log);
        let want = expected(
            &dir.join("ble/hci")
                .join(format!("{name}.adv_reports.jsonl")),
        );
        assert_eq!(records, want_records[i], "{name}: records");
        assert_eq!(truncated, 0, "{name}");
        assert_eq!(rows.len(), want_reports[i], "{name}: reports");
        assert_eq!(rows.len(), want.len());
        for (got, exp) in rows.iter().zip(&want) {
            // ts in the list is a float of seconds: allow its rounding.
            assert!(
                (got.ts_us - exp.ts_us).abs() <= 1,
                "{name}: {got:?} vs {exp:?}"
            );
            let got = Row {
                ts_us: exp.ts_us,
                ..got.clone()
            };
            assert_eq!(&got, exp, "{name}");
        }
    }
    Ok(())
}

#[test]
fn json_lines_input_gives_the_same_reports() -> TestResult {
    let Some(dir) = common::shared_data() else {
        return Ok(());
    };
    for name in LOGS {
        let mut from_log = Vec::new();
        let st = input::for_each_report(&dir.join("ble/hci").join(name), None, |ts, r| {
            from_log.push((ts, r.addr, r.addr_type, r.rssi, r.data.to_vec()))
        })?;
        assert_eq!(st.truncated + st.bad_reports, 0);
        assert!(st.skipped > 0 && st.skipped < st.records);
        let mut from_json = Vec::new();
        let js = dir
            .join("ble/hci")
            .join(format!("{name}.adv_reports.jsonl"));
        let st = input::for_each_report(&js, None, |ts, r| {
            from_json.push((ts, r.addr, r.addr_type, r.rssi, r.data.to_vec()))
        })?;
        assert_eq!(st.bad_lines, 0);
        assert_eq!(from_log.len(), from_json.len());
        for (a, b) in from_log.iter().zip(&from_json) {
            assert!((a.0 - b.0).abs() <= 1);
            assert_eq!((a.1, a.2, a.3, &a.4), (b.1, b.2, b.3, &b.4));
        }
    }
    Ok(())
}

#[test]
fn truncated_log_is_counted_not_fatal() -> TestResult {
    let Some(dir) = common::shared_data() else {
        return Ok(());
    };
    let bytes = std::fs::read(dir.join("ble/hci").join(LOGS[0]))?;
    let tmp = tempfile::tempdir()?;
    // Cut at many points, including inside headers and advertising events.
    for cut in [17usize, 30, 41, 1000, 5003, bytes.len() - 1] {
        let p = tmp.path().join(format!("cut{cut}.log"));
        std::fs::write(&p, &bytes[..cut])?;
        let mut n = 0;
        let st = input::for_each_report(&p, None, |_, r| {
            n += 1;
            let _ = adv::decode(r.data);
        })?;
        assert!(st.truncated <= 1, "cut at {cut}");
        if [17, 30, bytes.len() - 1].contains(&cut) {
            assert_eq!(st.truncated, 1, "cut at {cut}");
        }
    }
    // Garbage is refused with a clear error, not a panic.
    let p = tmp.path().join("garbage.bin");
    std::fs::write(&p, b"\x00\x01\x02 not a log")?;
    let err = input::for_each_report(&p, None, |_, _| {})
        .err()
        .unwrap_or_default();
    assert!(err.contains("neither a btsnoop log"), "{err}");
    Ok(())
}

#[test]
fn yeelock_ibeacon_fields() -> TestResult {
    let Some(dir) = common::shared_data() else {
        return Ok(());
    };
    let mut seen = 0;
    input::for_each_report(&dir.join("ble/hci").join(LOGS[0]), None, |_, r| {
        if let Some(adv::Frame::IBeacon {
            uuid,
            major,
            minor,
            tx_power,
        }) = adv::decode(r.data).frame
        {
            assert_eq!(
                adv::uuid_string(&uuid),
                "fda50693-a4e2-4fb1-afcf-c6eb07647825"
            );
            assert_eq!((major, minor, tx_power), (5, 6, -80));
            seen += 1;
        }
    })?;
    assert_eq!(seen, 6);
    Ok(())
}
