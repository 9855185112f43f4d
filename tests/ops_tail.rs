//! `storegw tail` against a real mosquitto fed by the simulator: every event validated and
//! printed once, redeliveries dropped, a broken payload reported, exit status 1 then.

mod common;
use common::*;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

fn start_tail(
    port: u16,
    dir: &std::path::Path,
    extra: &[&str],
) -> std::io::Result<std::process::Child> {
    Command::new(env!("CARGO_BIN_EXE_storegw"))
        .args([
            "tail",
            "--broker",
            &format!("mqtt://127.0.0.1:{port}"),
            "--store",
            "s042",
        ])
        .args(extra)
        .stdout(std::fs::File::create(dir.join("tail.out"))?)
        .stderr(std::fs::File::create(dir.join("tail.err"))?)
        .spawn()
}

fn wait_file(path: &std::path::Path, needle: &str, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(needle)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_validates_dedups_and_reports_bad_payloads() -> TestResult {
    require_mosquitto!();
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), "")?;
    let total = 500u64;
    let mut tail = start_tail(
        broker.port,
        dir.path(),
        &["--count", &(total + 1).to_string(), "--for", "60"],
    )?;
    assert!(
        wait_file(
            &dir.path().join("tail.err"),
            "subscribed to storegw/v1/s042/+/+",
            Duration::from_secs(10)
        ),
        "tail did not subscribe"
    );
    let cfg = write_config(
        dir.path(),
        broker.port,
        "",
        &format!("[sources.sim]\nenabled = true\nrate = 500.0\nseed = 4\nlimit = {total}\n"),
    )?;
    let _gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    let out = dir.path().join("tail.out");
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        let n = std::fs::read_to_string(&out)?
            .lines()
            .filter(|l| l.contains(" gw1:"))
            .count();
        if n as u64 >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Another client redelivers one batch and publishes a broken one.
    let mut o = MqttOptions::new("tail-test-pub", "127.0.0.1", broker.port);
    o.set_keep_alive(Duration::from_secs(10));
    let (client, mut ev) = AsyncClient::new(o, 10);
    let poller = tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    // A redelivery of an event tail already printed (ids are dropped before validation).
    let first_id = std::fs::read_to_string(&out)?
        .lines()
        .find(|l| l.contains(" wifi."))
        .and_then(|l| l.split(' ').nth(3).map(str::to_string))
        .ok_or("no wifi event printed")?;
    let dup = serde_json::json!({"schema": "storegw.v1", "store": "s042", "gateway": "gw1",
        "sent_at": "2026-11-28T10:00:00.000Z",
        "events": [{"id": first_id, "kind": "wifi.census", "ts": "2026-11-28T10:00:00.000Z"}]});
    let broken = serde_json::json!({"schema": "storegw.v1", "store": "s042", "gateway": "gw1",
        "sent_at": "2026-11-28T10:00:00.000Z",
        "events": [{"id": "gw1:999999", "kind": "wifi.census", "ts": "yesterday"}]});
    for p in [dup, broken] {
        client
            .publish(
                "storegw/v1/s042/gw1/wifi",
                QoS::AtLeastOnce,
                false,
                p.to_string(),
            )
            .await?;
    }
    let status = wait_exit(&mut tail, Duration::from_secs(30)).ok_or("tail did not stop")?;
    poller.abort();
    let text = std::fs::read_to_string(&out)?;
    let mut ids = HashSet::new();
    let mut invalid = Vec::new();
    for line in text.lines() {
        if line.starts_with("INVALID") {
            invalid.push(line.to_string());
            continue;
        }
        let f: Vec<&str> = line.split(' ').collect();
        if f.get(2) == Some(&"status") {
            continue;
        }
        let id = f.get(3).ok_or(format!("short line {line}"))?;
        assert!(ids.insert(id.to_string()), "{id} printed twice");
    }
    assert_eq!(ids.len() as u64, total, "distinct valid events");
    // The broken batch is reported as a message (batch schema) and as an event (kind schema).
    assert_eq!(invalid.len(), 2, "{invalid:?}");
    assert!(
        invalid
            .iter()
            .any(|l| l.contains("gw1:999999") && l.contains("/ts")),
        "{invalid:?}"
    );
    assert!(
        invalid
            .iter()
            .any(|l| l.starts_with("INVALID storegw/v1/s042/gw1/wifi: ")),
        "{invalid:?}"
    );
    let err = std::fs::read_to_string(dir.path().join("tail.err"))?;
    assert!(err.contains("1 duplicates dropped"), "{err}");
    assert_eq!(
        status.code(),
        Some(1),
        "invalid payloads must fail the exit status"
    );

    // Summary mode prints running totals and the retained status.
    let mut summary = start_tail(broker.port, dir.path(), &["--summary", "--for", "2"])?;
    let status = wait_exit(&mut summary, Duration::from_secs(20)).ok_or("summary did not stop")?;
    let text = std::fs::read_to_string(&out)?;
    assert!(status.success(), "{text}");
    assert!(text.contains("gateways [s042/gw1:online]"), "{text}");
    Ok(())
}
