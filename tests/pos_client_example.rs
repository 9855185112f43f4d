//! docs/examples/pos_client.py against the running daemon: it waits for a gateway that is not
//! up yet (network errors), stores a transaction (201), replays it as a duplicate (200), stops
//! on a conflict (409) and a wrong token (401), and on a full POS spool honours Retry-After:
//! it gives up when the wait passes its deadline, and succeeds once the uplink drained the
//! spool. Skipped, with a printed reason, when python3 is missing.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "till-token-0123456789";

fn python() -> Option<PathBuf> {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn client(
    dir: &Path,
    http: u16,
    tx: &Value,
    deadline: u32,
) -> std::io::Result<std::process::Child> {
    let file = dir.join(format!("tx-{}.json", free_port()));
    std::fs::write(&file, tx.to_string())?;
    let py = python().unwrap_or_else(|| PathBuf::from("python3"));
    Command::new(py)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/examples/pos_client.py"))
        .args(["--url", &format!("http://127.0.0.1:{http}")])
        .arg("--token-file")
        .arg(dir.join("pos.token"))
        .args(["--deadline", &deadline.to_string()])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// Waits for the client; returns (exit code, the printed status, stderr).
fn finish(c: std::process::Child) -> Result<(i32, Value, String), Box<dyn std::error::Error>> {
    let out = c.wait_with_output()?;
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("client output not JSON ({e}): {err}"))?;
    Ok((out.status.code().unwrap_or(-1), v, err))
}

fn sale(id: &str, cents: i64, lines: usize) -> Value {
    let lines: Vec<Value> = (0..lines)
        .map(|i| json!({"sku": format!("SKU-{i:05}"), "description": "a fairly long item description for size", "amount_minor": cents}))
        .collect();
    json!({"transaction_id": id, "register": "R1", "business_day": "2026-11-28",
        "time": "2026-11-28T10:15:00+01:00", "currency": "EUR", "lines": lines,
        "totals": {"total_minor": cents * lines.len() as i64},
        "tenders": [{"type": "cash", "amount_minor": cents * lines.len() as i64}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_retries_and_stops_as_the_guide_says() -> TestResult {
    if python().is_none() {
        eprintln!("skipping: python3 not installed (apt-get install python3)");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (http, mqtt) = (free_port(), free_port());
    write_secret(&dir.path().join("pos.token"), format!("{TOKEN}\n"))?;
    let cfg = write_config(
        dir.path(),
        mqtt,
        "",
        &format!(
            "[spool.pos]\nmax_bytes = \"64KiB\"\nmax_age = \"30d\"\n\n[sources.pos]\nenabled = true\n\n[sources.pos.http]\ntoken_file = \"{}\"\n",
            dir.path().join("pos.token").display()
        ),
    )?;
    let text = std::fs::read_to_string(&cfg)?.replace(
        "[http]\nenabled = false",
        &format!("[http]\nenabled = true\nlisten = \"127.0.0.1:{http}\""),
    );
    std::fs::write(&cfg, text)?;

    // The gateway is not up yet: the client retries on connection errors until it is.
    let early = client(dir.path(), http, &sale("T-1", 250, 1), 60)?;
    std::thread::sleep(Duration::from_millis(1500));
    let _gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    let (code, v, err) = finish(early)?;
    assert_eq!((code, v["status"].as_u64()), (0, Some(201)), "{v} {err}");
    assert!(err.contains("network error"), "{err}");

    // The same transaction again (a till that lost the answer): stored once, 200.
    let (code, v, _) = finish(client(dir.path(), http, &sale("T-1", 250, 1), 10)?)?;
    assert_eq!((code, v["status"].as_u64()), (0, Some(200)), "{v}");
    assert_eq!(v["answer"]["duplicates"], 1);
    // Same key, other content: refused, not retried.
    let (code, v, err) = finish(client(dir.path(), http, &sale("T-1", 999, 1), 10)?)?;
    assert_eq!((code, v["status"].as_u64()), (1, Some(409)), "{v}");
    assert!(!err.contains("retrying"), "{err}");
    // Wrong token: refused, not retried.
    write_secret(&dir.path().join("pos.token"), "wrong")?;
    let (code, v, _) = finish(client(dir.path(), http, &sale("T-2", 100, 1), 10)?)?;
    assert_eq!((code, v["status"].as_u64()), (1, Some(401)), "{v}");
    write_secret(&dir.path().join("pos.token"), TOKEN)?;

    // Fill the POS spool (no broker yet).
    let c = fill_spool(http).await?;
    // A deadline shorter than Retry-After: the client gives up at once and says why.
    let started = Instant::now();
    let (code, v, err) = finish(client(
        dir.path(),
        http,
        &sale(&format!("F-{c}"), 100, 40),
        5,
    )?)?;
    assert_eq!((code, v["status"].as_u64()), (2, Some(503)), "{v} {err}");
    assert!(err.contains("Retry-After 30"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    if mosquitto_path().is_none() {
        eprintln!(
            "skipping the recovery part: mosquitto not installed (apt-get install mosquitto)"
        );
        return Ok(());
    }
    // Within the deadline: 503, a 30 s wait as told, the uplink drains the spool, then 201.
    let waiting = client(dir.path(), http, &sale(&format!("F-{c}"), 100, 40), 90)?;
    std::thread::sleep(Duration::from_secs(2));
    let _broker = Mosquitto::start_on(&dir.path().join("broker"), mqtt, "")?;
    let (code, v, err) = finish(waiting)?;
    assert_eq!((code, v["status"].as_u64()), (0, Some(201)), "{v} {err}");
    assert!(
        err.contains("HTTP 503, Retry-After 30") && err.contains("retrying in 30"),
        "{err}"
    );
    Ok(())
}

/// Fills the POS spool until the gateway answers 503; returns how many transactions were
/// stored.
async fn fill_spool(http: u16) -> Result<usize, Box<dyn std::error::Error>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{http}/v1/pos/transactions");
    for i in 0..400 {
        let r = c
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&sale(&format!("F-{i}"), 100, 40))
            .send()
            .await?;
        match r.status().as_u16() {
            201 => continue,
            503 => return Ok(i),
            s => return Err(format!("unexpected answer while filling: {s}").into()),
        }
    }
    Err("the POS spool never filled".into())
}
