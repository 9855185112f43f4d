//! Issue 12, POS part, against the real storegw binary and a real mosquitto: card numbers by
//! scheme rules (ids kept, ids holding a card refused), card numbers written other ways,
//! e-mail and phone numbers in free text, errors without values, export file retention,
//! idempotency conflicts, amount overflow, streamed imports (peak RSS) and the HTTP limits.

mod common;

use common::{Gateway, Mosquitto, Subscriber};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

type R = Result<(), Box<dyn std::error::Error>>;
const TOKEN: &str = "till-token-0123456789";

fn config(
    dir: &Path,
    mqtt: u16,
    http: u16,
    extra_http: &str,
    watch: &str,
) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    common::write_secret(&dir.join("pos.token"), TOKEN)?;
    let rest = format!(
        "[spool.pos]\nmax_bytes = \"1GiB\"\nmax_age = \"30d\"\n\n[sources.pos]\nenabled = true\ndefault_currency = \"EUR\"\nnaive_time_offset = \"+01:00\"\n\n[sources.pos.http]\ntoken_file = \"{}\"\nbody_timeout = \"2s\"\n\n{watch}",
        dir.join("pos.token").display()
    );
    common::write_config_with_http(
        dir,
        mqtt,
        "",
        &format!("enabled = true\nlisten = \"127.0.0.1:{http}\"\n{extra_http}"),
        &rest,
    )
}

async fn wait_http(base: &str, gw: &Gateway) -> R {
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if reqwest::get(format!("{base}/metrics")).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("gateway HTTP did not come up:\n{}", gw.log_text()).into())
}

fn tx(id: &str, desc: &str) -> Value {
    json!({"transaction_id": id, "register": "R1", "time": "2026-03-01T10:00:00+01:00",
           "lines": [{"sku": "4006381333931", "description": desc, "qty": 1, "amount_minor": 100}],
           "totals": {"total_minor": 100}, "tenders": [{"type": "cash", "amount_minor": 100}]})
}

fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `bytes` compressed by the system's `gzip`; where there is none (it is part of every Debian
/// system), the same bytes in a gzip member with one stored deflate block (RFC 1951 3.2.4).
fn gzip(bytes: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    use std::io::Write;
    let child = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            println!("no gzip ({e}): a stored gzip member stands in for its output");
            let len = bytes.len() as u16;
            let mut z = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 1];
            z.extend_from_slice(&len.to_le_bytes());
            z.extend_from_slice(&(!len).to_le_bytes());
            z.extend_from_slice(bytes);
            z.extend_from_slice(&crc32(bytes).to_le_bytes());
            z.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            return Ok(z);
        }
    };
    child.stdin.take().ok_or("no stdin")?.write_all(bytes)?;
    let out = child.wait_with_output()?;
    assert!(out.status.success() && out.stdout.starts_with(&[0x1f, 0x8b]));
    Ok(out.stdout)
}

/// CRC-32 (ISO-HDLC), as gzip and ZIP check their contents.
fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |mut c, &b| {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
        c
    })
}

/// A ZIP archive holding `bytes` as `name`, stored (PKWARE APPNOTE 4.3: local header, data,
/// central directory, end record).
fn stored_zip(name: &str, bytes: &[u8]) -> Vec<u8> {
    let crc = crc32(bytes);
    let (n, len) = (name.len() as u16, bytes.len() as u32);
    let mut z = Vec::new();
    z.extend_from_slice(b"PK\x03\x04\x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    for v in [crc, len, len] {
        z.extend_from_slice(&v.to_le_bytes());
    }
    z.extend_from_slice(&n.to_le_bytes());
    z.extend_from_slice(&[0, 0]);
    z.extend_from_slice(name.as_bytes());
    z.extend_from_slice(bytes);
    let central = z.len() as u32;
    z.extend_from_slice(b"PK\x01\x02\x14\x00\x0a\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    for v in [crc, len, len] {
        z.extend_from_slice(&v.to_le_bytes());
    }
    z.extend_from_slice(&n.to_le_bytes());
    z.extend_from_slice(&[0; 12]);
    z.extend_from_slice(&0u32.to_le_bytes());
    z.extend_from_slice(name.as_bytes());
    let dir_len = z.len() as u32 - central;
    z.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00\x01\x00\x01\x00");
    z.extend_from_slice(&dir_len.to_le_bytes());
    z.extend_from_slice(&central.to_le_bytes());
    z.extend_from_slice(&[0, 0]);
    z
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                files_under(&p, out);
            } else {
                out.push(p);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pos_privacy_end_to_end() -> R {
    require_mosquitto!();
    crypto();
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(dir.path(), "")?;
    let sub = Subscriber::start(broker.port, "storegw/v1/#", 100_000, None).await;
    let http = common::free_port();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox)?;
    let watch = format!(
        "[[sources.pos.watch]]\ndir = \"{}\"\ninterval = \"200ms\"\nsettle = \"300ms\"\nfailed_retention = \"1d\"\n",
        inbox.display()
    );
    let cfg = config(dir.path(), broker.port, http, "", &watch)?;
    let gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    let base = format!("http://127.0.0.1:{http}");
    wait_http(&base, &gw).await?;
    let url = format!("{base}/v1/pos/transactions");
    let c = reqwest::Client::new();
    let post = |v: Value| c.post(&url).bearer_auth(TOKEN).json(&v).send();

    // 1. Luhn-valid numeric ids and EAN-13 SKUs are kept: two distinct transactions.
    let mut expect = 0;
    for id in [
        "5000000000005",
        "5000000000013",
        "4000000000006",
        "6000000000007",
    ] {
        let r = post(tx(id, "plain")).await?;
        assert_eq!(r.status(), 201, "{id}: {:?}", r.text().await);
        expect += 1;
    }
    // An id that really is a card number is refused, naming the field, not the value.
    for id in [
        "4111111111111111",
        "T-5555 5555 5555 4444",
        "41111111111111111225",
    ] {
        let r = post(tx(id, "plain")).await?;
        assert_eq!(r.status(), 400, "{id}");
        let body = r.text().await?;
        assert!(
            body.contains("transaction_id") && body.contains("card"),
            "{body}"
        );
        assert!(
            !body.contains("1111111111") && !body.contains("5555 5555"),
            "{body}"
        );
    }
    let mut bad_sku = tx("SKU-CARD", "x");
    bad_sku["lines"][0]["sku"] = json!("3782-822463-10005");
    let r = post(bad_sku).await?;
    assert_eq!(r.status(), 400);
    assert!(r.text().await?.contains("lines[0].sku"));

    // 2 + 3. Card numbers written other ways, e-mail addresses and phone numbers in free text.
    let leaks = [
        "4111.1111.1111.1111",
        "4111  1111  1111  1111",
        "4111\t1111\t1111\t1111",
        "4111\u{a0}1111\u{a0}1111\u{a0}1111",
        "4111 - 1111 - 1111 - 1111",
        "4111/1111/1111/1111",
        "４１１１１１１１１１１１１１１１",
        "41111111111111111225",
        "5555 5555 5555 4444 exp 12/25",
        "Gift for jane.doe@example.com",
        "mail ＪＡＮＥ＠ＥＸＡＭＰＬＥ．ＣＯＭ",
        "call +49 170 1234567",
        "tel 0170 1234567",
        "(415) 555-2671",
    ];
    for (i, text) in leaks.iter().enumerate() {
        let r = post(tx(&format!("L-{i}"), text)).await?;
        assert_eq!(r.status(), 201, "{text}");
        expect += 1;
    }
    // Track 2 without its sentinels (a chip's Track 2 Equivalent Data as hex, a reader's
    // stripped track) is track data: the whole input is refused, not the PAN cut out.
    for (i, text) in [
        "EMV 57: 4111111111111111D25121010000000000F",
        "swiped 5500000000000004=26012010000000",
    ]
    .iter()
    .enumerate()
    {
        let r = post(tx(&format!("T2-{i}"), text)).await?;
        assert_eq!(r.status(), 400, "{text}");
        let body = r.text().await?;
        assert!(
            !body.contains("1111111111") && !body.contains("0000000000"),
            "{body}"
        );
    }

    // 4. Errors never echo values.
    let mut t = tx("E-1", "x");
    t["time"] = json!("Jane Privacy-Doe");
    let r = post(t).await?;
    assert_eq!(r.status(), 400);
    let body = r.text().await?;
    assert!(body.contains("$.time") && !body.contains("Jane"), "{body}");
    let mut t = tx("E-2", "x");
    t["lines"][0]["amount_minor"] = json!("jane.doe@example.com");
    let body = post(t).await?.text().await?;
    assert!(!body.contains("jane"), "{body}");

    // 6. Same key, other content: 409; same content: 200; no business day: derived from time.
    let r = post(tx("5000000000005", "plain")).await?;
    assert_eq!(r.status(), 200);
    let r = post(tx("5000000000005", "other content")).await?;
    assert_eq!(r.status(), 409, "{:?}", r.text().await);
    let mut next_day = tx("5000000000005", "next day, numbering restarted");
    next_day["time"] = json!("2026-03-02T09:00:00+01:00");
    assert_eq!(post(next_day).await?.status(), 201);
    expect += 1;
    // Local day at +01:00: 23:30Z on Mar 1 is Mar 2 in the store, same as the sale above.
    let mut late = tx("5000000000005", "late");
    late["time"] = json!("2026-03-01T23:30:00Z");
    assert_eq!(post(late).await?.status(), 409);

    // 7. Overflow: i64::MIN, sums, absurd offsets.
    let mut t = tx("O-1", "x");
    t["type"] = json!("refund");
    t["lines"][0]["amount_minor"] = json!(i64::MIN);
    assert_eq!(post(t).await?.status(), 400);
    let mut t = tx("O-2", "x");
    t["lines"] = Value::Array(vec![
        json!({"qty": 1, "amount_minor": 900_000_000_000_000i64});
        20
    ]);
    t["totals"] = json!({"total_minor": i64::MAX});
    assert_eq!(post(t).await?.status(), 400);
    let mut t = tx("O-3", "x");
    t["time"] = json!("2026-03-01T10:00:00+99999999:00");
    assert_eq!(post(t).await?.status(), 400);

    // 5. Files: imported → deleted; CVV → deleted at once with a note; bad → failed/ 0600.
    std::fs::write(
        inbox.join("ok.jsonl"),
        format!("{}\n", tx("F-1", "file ok")),
    )?;
    expect += 1;
    std::fs::write(
        inbox.join("cvv.csv"),
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CVV\n1,A,x,1,2010-12-22 10:29:00,1.00,123\n",
    )?;
    std::fs::write(
        inbox.join("bad.csv"),
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID\n9,A,x,1,Jane Privacy-Doe,1.00,\n",
    )?;
    // Card authentication data behind another reason to refuse the file: the file is
    // deleted all the same, never kept in failed/.
    let track = "%B4111111111111111^DOE/JOHN^2512101000000000?";
    let mut late = tx("J-2", "x");
    late["note"] = json!(track);
    let mut early = tx("J-1", "x");
    early["time"] = json!("not a time");
    let mut streamed =
        String::from("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice\n");
    streamed.push_str("1,A,x,1,not a date,1.00\n");
    while streamed.len() < 4_500_000 {
        streamed.push_str("2,A,an ordinary row of a large export,1,2010-12-22 10:29:00,1.00\n");
    }
    streamed.push_str("3,A,;4111111111111111=25121010000000000?,1,2010-12-22 10:29:00,1.00\n");
    // Excel's "Unicode text": UTF-16LE with a byte-order mark, tab-separated.
    let mut utf16 = vec![0xff, 0xfe];
    for u in "InvoiceNo\tStockCode\tDescription\tQuantity\tInvoiceDate\tUnitPrice\tCVV\n1\tA\tx\t1\t2010-12-22 10:29:00\t1.00\t123\n".encode_utf16() {
        utf16.extend_from_slice(&u.to_le_bytes());
    }
    // The same export compressed (gzip, as `gzip` writes it) and archived (a ZIP, as a
    // spreadsheet's container): neither can be searched, so neither may be kept.
    let cvv_export = b"InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CVV\n1,A,x,1,2010-12-22 10:29:00,1.00,123\n";
    let gz = gzip(cvv_export)?;
    let hidden: [(&str, Vec<u8>); 7] = [
        ("export.csv.gz", gz),
        ("export.zip", stored_zip("export.csv", cvv_export)),
        ("utf16.csv", utf16),
        // Not UTF-8 (a pound sign in Windows-1252) with a CVV column.
        (
            "latin1.csv",
            b"InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CVV\n1,A,\xa3 off,1,2010-12-22 10:29:00,1.00,123\n".to_vec(),
        ),
        ("lines.jsonl", format!("{early}\n{late}\n").into_bytes()),
        (
            "broken.xml",
            b"<POSLog><Transaction><Tender><Track2>;4111111111111111=2512?</Track2></Tender>".to_vec(),
        ),
        ("streamed.csv", streamed.into_bytes()),
    ];
    for (name, bytes) in &hidden {
        std::fs::write(inbox.join(name), bytes)?;
    }
    // Refused, but text without card data in an 8-bit code page and in UTF-16: kept.
    let kept_text = [
        (
            "latin1_clean.csv",
            b"InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice\n1,A,\xa3 off,1,not a date,1.00\n".to_vec(),
        ),
        (
            "utf16_clean.csv",
            [0xff, 0xfe]
                .into_iter()
                .chain(
                    "InvoiceNo\tStockCode\tDescription\tQuantity\tInvoiceDate\tUnitPrice\n1\tA\t\u{4e2d}\u{3001}\t1\tnot a date\t1.00\n"
                        .encode_utf16()
                        .flat_map(u16::to_le_bytes),
                )
                .collect(),
        ),
    ];
    for (name, bytes) in &kept_text {
        std::fs::write(inbox.join(name), bytes)?;
    }
    let note_of = |name: &str| inbox.join(format!("failed/{name}.error"));
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until
        && (inbox.join("ok.jsonl").exists()
            || !inbox.join("failed/cvv.csv.error").exists()
            || !inbox.join("failed/bad.csv.error").exists()
            || hidden.iter().any(|(n, _)| !note_of(n).exists())
            || kept_text.iter().any(|(n, _)| !note_of(n).exists()))
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!inbox.join("ok.jsonl").exists() && !inbox.join("done/ok.jsonl").exists());
    assert!(!inbox.join("cvv.csv").exists() && !inbox.join("failed/cvv.csv").exists());
    assert!(inbox.join("failed/cvv.csv.error").exists());
    for (name, _) in &hidden {
        let note = std::fs::read_to_string(note_of(name))?;
        assert!(
            !inbox.join(name).exists() && !inbox.join("failed").join(name).exists(),
            "{name} was kept: {note}"
        );
        assert!(note.contains("card authentication data"), "{name}: {note}");
        assert!(!note.contains("4111"), "{name}: {note}");
    }
    for (name, bytes) in &kept_text {
        assert_eq!(
            std::fs::read(inbox.join("failed").join(name))?,
            *bytes,
            "{name} was not kept as it was"
        );
    }
    let note = std::fs::read_to_string(note_of("export.csv.gz"))?;
    assert!(note.contains("gzip-compressed"), "{note}");
    use std::os::unix::fs::PermissionsExt;
    for f in [
        "failed/latin1_clean.csv",
        "failed/utf16_clean.csv",
        "failed/bad.csv",
        "failed/bad.csv.error",
        "failed/cvv.csv.error",
        "failed/latin1.csv.error",
        "failed/streamed.csv.error",
    ] {
        let mode = std::fs::metadata(inbox.join(f))?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let note = std::fs::read_to_string(inbox.join("failed/bad.csv.error"))?;
    assert!(
        note.contains("InvoiceDate") && !note.contains("Jane"),
        "{note}"
    );

    // What was published: distinct ids kept, nothing leaked, flags set.
    let got = sub.wait_for(expect, Duration::from_secs(30)).await;
    assert_eq!(got, expect);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let payloads = sub
        .got
        .lock()
        .map(|r| r.payloads.clone())
        .unwrap_or_default();
    let mut events = Vec::new();
    for p in &payloads {
        events.extend(p["events"].as_array().cloned().unwrap_or_default());
    }
    for id in ["5000000000005", "5000000000013", "4000000000006"] {
        assert!(
            events.iter().any(|e| e["transaction_id"] == id),
            "{id} missing"
        );
    }
    assert!(!events
        .iter()
        .any(|e| e["transaction_id"] == "[card removed]"));
    let schemas = common::Schemas::load()?;
    for p in &payloads {
        let errs = schemas.check_batch(p);
        assert!(errs.is_empty(), "{errs:?}");
    }
    let flag = |id: &str, f: &str| {
        events.iter().any(|e| {
            e["transaction_id"] == id && e["flags"].as_array().into_iter().flatten().any(|x| x == f)
        })
    };
    for i in 0..9 {
        assert!(flag(&format!("L-{i}"), "card_number_removed"), "L-{i}");
    }
    assert!(flag("L-9", "email_removed") && flag("L-10", "email_removed"));
    for i in 11..14 {
        assert!(flag(&format!("L-{i}"), "phone_removed"), "L-{i}");
    }
    let mut hay = String::new();
    for p in &payloads {
        hay.push_str(&p.to_string());
    }
    hay.push_str(&gw.log_text());
    let mut files = Vec::new();
    files_under(&dir.path().join("state"), &mut files);
    files_under(&inbox.join("failed"), &mut files);
    for f in files.iter().filter(|f| !f.ends_with("bad.csv")) {
        hay.push_str(&String::from_utf8_lossy(&std::fs::read(f)?));
    }
    let hay = hay.to_lowercase();
    for secret in [
        "41111111",
        "4111 1111",
        "jane.doe",
        "1234567",
        "555-2671",
        "Jane Privacy",
        "5555 5555",
    ] {
        assert!(!hay.contains(&secret.to_lowercase()), "`{secret}` leaked");
    }
    Ok(())
}

/// The backlog a store keeps while its uplink is down is on disk for hours: decoded chunk by
/// chunk (not searched as compressed bytes), it holds none of the card numbers, e-mail
/// addresses and phone numbers its transactions were sent with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_kept_on_disk_holds_no_raw_identifier() -> R {
    crypto();
    let dir = tempfile::tempdir()?;
    let http = common::free_port();
    // No broker listens: every event stays in the spool.
    let cfg = config(dir.path(), common::free_port(), http, "", "")?;
    let mut gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    let base = format!("http://127.0.0.1:{http}");
    wait_http(&base, &gw).await?;
    let url = format!("{base}/v1/pos/transactions");
    let c = reqwest::Client::new();
    let texts = [
        "4111.1111.1111.1111",
        "４１１１１１１１１１１１１１１１",
        "5555 5555 5555 4444 exp 12/25",
        "Gift for jane.doe@example.com",
        "mail ＪＡＮＥ＠ＥＸＡＭＰＬＥ．ＣＯＭ",
        "call +49 170 1234567",
        "(415) 555-2671",
    ];
    // One at a time (small chunks, stored raw) and all in one request (one chunk, compressed).
    for (i, text) in texts.iter().enumerate() {
        let r = c
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&tx(&format!("S-{i}"), text))
            .send()
            .await?;
        assert_eq!(r.status(), 201, "{text}");
    }
    let bulk: Vec<Value> = (0..40)
        .map(|i| tx(&format!("B-{i}"), texts[i % texts.len()]))
        .collect();
    let r = c.post(&url).bearer_auth(TOKEN).json(&bulk).send().await?;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let _ = gw.sigterm_and_wait(Duration::from_secs(15));
    let (plain, chunks) = common::spool_plaintext(&dir.path().join("state/spool"))?;
    let text = String::from_utf8_lossy(&plain).to_lowercase();
    assert!(chunks >= 2, "{chunks} chunks");
    assert_eq!(
        text.matches("\"transaction_id\":\"b-").count(),
        40,
        "the bulk is in the spool"
    );
    assert!(text.matches("\"transaction_id\":\"s-").count() == texts.len());
    for secret in [
        "41111111",
        "4111.1111",
        "４１１１",
        "5555 5555",
        "jane.doe",
        "ｊａｎｅ",
        "1234567",
        "555-2671",
    ] {
        assert!(!text.contains(secret), "`{secret}` is in the spool");
    }
    Ok(())
}

fn connect(port: u16) -> std::io::Result<std::net::TcpStream> {
    let s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// Reads until the server closes the connection or answers; true when it closed within `d`.
fn closed_within(s: &mut std::net::TcpStream, d: Duration) -> bool {
    let _ = s.set_read_timeout(Some(d));
    let mut buf = [0u8; 1024];
    let start = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed() <= d,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_timeouts_and_connection_cap() -> R {
    crypto();
    let dir = tempfile::tempdir()?;
    let http = common::free_port();
    let cfg = config(
        dir.path(),
        common::free_port(),
        http,
        "header_timeout = \"1s\"\nidle_timeout = \"3s\"\nmax_connections = 8",
        "",
    )?;
    let gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    let base = format!("http://127.0.0.1:{http}");
    wait_http(&base, &gw).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Slowloris: a request head trickling in is cut at the header timeout.
    let mut slow = connect(http)?;
    slow.write_all(b"POST /v1/pos/transactions HTTP/1.1\r\nHost: x\r\n")?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let _ = slow.write_all(b"X-A: 1\r\n");
    assert!(
        closed_within(&mut slow, Duration::from_secs(5)),
        "slow head not closed"
    );
    assert!(t0.elapsed() < Duration::from_secs(4));
    // A body that never completes: 408 after body_timeout (2 s).
    let mut body = connect(http)?;
    body.write_all(format!("POST /v1/pos/transactions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"trans").as_bytes())?;
    let mut answer = String::new();
    let _ = body.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Saturation: idle connections fill the cap; one more gets 503; /healthz reports it.
    let mut idle: Vec<std::net::TcpStream> =
        (0..8).map(|_| connect(http)).collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = connect(http)?;
    extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // Idle connections are closed after idle_timeout; then health says why it was degraded.
    let t0 = Instant::now();
    for s in &mut idle {
        assert!(
            closed_within(s, Duration::from_secs(6)),
            "idle connection kept open"
        );
    }
    let waited = t0.elapsed();
    eprintln!("idle connections closed after {waited:?}");
    let r = reqwest::get(format!("{base}/healthz")).await?;
    assert_eq!(r.status(), 503);
    assert!(r.text().await?.contains("saturated"));
    let status = reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    assert!(
        status.contains("storegw_http_connections_refused_total"),
        "{status}"
    );
    // Many idle clients in a row never exhaust the descriptors: all come and go.
    for _ in 0..5 {
        let batch: Vec<_> = (0..8).filter_map(|_| connect(http).ok()).collect();
        drop(batch);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/pos/transactions"))
        .bearer_auth(TOKEN)
        .json(&tx("H-1", "after the storm"))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    Ok(())
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// 8. A 64 MiB CSV export is streamed: the daemon's peak RSS stays far below the file's
/// size times the parse overhead (which took gigabytes before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_export_peak_rss() -> R {
    crypto();
    let dir = tempfile::tempdir()?;
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox)?;
    let watch = format!(
        "[[sources.pos.watch]]\ndir = \"{}\"\ninterval = \"200ms\"\nsettle = \"200ms\"\n",
        inbox.display()
    );
    let http = common::free_port();
    let cfg = config(dir.path(), common::free_port(), http, "", &watch)?;
    let mut csv = String::from(
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n",
    );
    let pad = "x".repeat(380);
    let mut i = 0u64;
    while csv.len() < 64 * 1024 * 1024 {
        let inv = 500_000 + i / 10;
        csv.push_str(&format!(
            "{inv},S{},\"ITEM {i} {pad}\",2,2011-02-06 11:11:00,1.25,,United Kingdom\n",
            i % 97
        ));
        i += 1;
    }
    let size = csv.len();
    std::fs::write(inbox.join(".big.csv.tmp"), &csv)?;
    drop(csv);
    let gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    wait_http(&format!("http://127.0.0.1:{http}"), &gw).await?;
    let base = vm_hwm_kib(gw.child.id()).unwrap_or(0);
    std::fs::rename(inbox.join(".big.csv.tmp"), inbox.join("big.csv"))?;
    let until = Instant::now() + Duration::from_secs(900);
    while Instant::now() < until && inbox.join("big.csv").exists() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        !inbox.join("big.csv").exists(),
        "not imported in time:\n{}",
        gw.log_text()
    );
    assert!(
        !inbox.join("failed/big.csv.error").exists(),
        "{}",
        gw.log_text()
    );
    let peak = vm_hwm_kib(gw.child.id()).ok_or("no VmHWM")?;
    eprintln!(
        "64 MiB export: {size} bytes, {} rows, peak RSS {} MiB (at start {} MiB)",
        i,
        peak / 1024,
        base / 1024
    );
    assert!(peak < 160 * 1024, "peak RSS {} MiB", peak / 1024);
    Ok(())
}
