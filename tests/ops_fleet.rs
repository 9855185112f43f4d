//! `storegw fleet` against a real mosquitto holding retained status documents of several
//! gateways: one healthy, one lagging with a big spool, one offline as its last will leaves it,
//! one with a failed source, one in another store; the listing is worst first and the exit
//! status says whether anything needs attention.

mod common;
use common::*;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use std::process::Command;
use std::time::{Duration, Instant};

fn now_ts() -> String {
    storegw::event::rfc3339_ms(storegw::event::now_ms())
}

fn online(store: &str, gw: &str) -> serde_json::Value {
    serde_json::json!({
        "schema": "storegw.v1", "kind": "status", "store": store, "gateway": gw,
        "state": "online", "ts": now_ts(), "version": "0.1.0", "uptime_s": 86400,
        "spool": {
            "ble": {"depth": 12, "bytes": 2048, "oldest_age_s": 0.4},
            "wifi": {"depth": 0, "bytes": 0, "oldest_age_s": null},
            "pos": {"depth": 1, "bytes": 900, "oldest_age_s": 0.2}
        },
        "spool_disk_bytes": 65536,
        "drops": {},
        "sources": {"ble": {"state": "running", "restarts": 0},
                    "pos": {"state": "running", "restarts": 0}},
        "clock": {"sane": true},
        "alarms": []
    })
}

/// Publishes retained documents as the gateways (and the broker's last will) would.
async fn publish_retained(port: u16, docs: &[(String, Vec<u8>)]) -> TestResult {
    let mut o = MqttOptions::new(format!("test-pub-{}", free_port()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut ev) = AsyncClient::new(o, 64);
    for (topic, payload) in docs {
        client
            .publish(topic.clone(), QoS::AtLeastOnce, true, payload.clone())
            .await?;
    }
    let mut acked = 0;
    let until = Instant::now() + Duration::from_secs(10);
    while acked < docs.len() && Instant::now() < until {
        if let Ok(Ok(MqttEvent::Incoming(Packet::PubAck(_)))) =
            tokio::time::timeout(Duration::from_secs(1), ev.poll()).await
        {
            acked += 1;
        }
    }
    assert_eq!(acked, docs.len(), "broker did not acknowledge every status");
    client.disconnect().await?;
    let _ = tokio::time::timeout(Duration::from_millis(300), ev.poll()).await;
    Ok(())
}

fn fleet(port: u16, extra: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new(env!("CARGO_BIN_EXE_storegw"))
        .args(["fleet", "--broker", &format!("mqtt://127.0.0.1:{port}")])
        .args(extra)
        .output()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_lists_offline_lagging_and_healthy_gateways_worst_first() -> TestResult {
    require_mosquitto!();
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), "")?;
    let t = |s: &str, g: &str| format!("storegw/v1/{s}/{g}/status");

    let healthy = online("s042", "gw-ok");
    let mut lagging = online("s042", "gw-lag");
    lagging["spool"]["pos"] =
        serde_json::json!({"depth": 250000, "bytes": 90_000_000, "oldest_age_s": 5400.0});
    lagging["drops"] = serde_json::json!({"ble": {"spool_full": 1200}});
    let offline = storegw::ops::status::offline_payload("s042", "gw-off");
    let mut failed = online("s042", "gw-fail");
    failed["sources"]["pos"] =
        serde_json::json!({"state": "failed", "detail": "bind refused", "restarts": 3});
    failed["alarms"] = serde_json::json!(["source pos failed: bind refused"]);
    let other_store = online("s007", "gw-ok");
    publish_retained(
        broker.port,
        &[
            (t("s042", "gw-ok"), healthy.to_string().into_bytes()),
            (t("s042", "gw-lag"), lagging.to_string().into_bytes()),
            (t("s042", "gw-off"), offline),
            (t("s042", "gw-fail"), failed.to_string().into_bytes()),
            (t("s007", "gw-ok"), other_store.to_string().into_bytes()),
        ],
    )
    .await?;

    // The whole fleet, as JSON for scripts.
    let started = Instant::now();
    let out = fleet(broker.port, &["--json"])?;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "fleet waited too long"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "attention needed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["total"], 5, "{v}");
    assert_eq!(v["attention"], 3, "{v}");
    let names: Vec<String> = v["gateways"]
        .as_array()
        .ok_or("no gateways")?
        .iter()
        .map(|g| format!("{}/{}:{}", g["store"], g["gateway"], g["severity"]).replace('"', ""))
        .collect();
    assert_eq!(
        names[..3],
        [
            "s042/gw-fail:critical",
            "s042/gw-off:critical",
            "s042/gw-lag:warning"
        ],
        "{names:?}"
    );
    let lag = &v["gateways"][2];
    assert_eq!(lag["spool_depth"], 250012);
    assert_eq!(lag["oldest_age_s"], 5400.0);
    assert_eq!(lag["drops"], 1200);
    assert_eq!(v["gateways"][1]["state"], "offline");
    assert_eq!(v["gateways"][0]["failing_sources"][0], "pos:failed");

    // One store, human-readable: one line per gateway, worst first.
    let out = fleet(broker.port, &["--store", "s042"])?;
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout)?;
    eprintln!("{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("CRIT s042/gw-fail"), "{text}");
    assert!(lines[1].starts_with("CRIT s042/gw-off") && lines[1].contains("offline"));
    assert!(
        lines[2].starts_with("WARN s042/gw-lag")
            && lines[2].contains("spool=250012")
            && lines[2].contains("oldest=90m")
            && lines[2].contains("lagging"),
        "{text}"
    );
    assert!(lines[3].starts_with("OK   s042/gw-ok"), "{text}");

    // A store whose gateways are all healthy exits 0.
    let out = fleet(broker.port, &["--store", "s007"])?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // No broker: exit 2 with a reason.
    let out = fleet(free_port(), &["--wait", "1"])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    Ok(())
}

/// A real gateway's retained status (and its last will once killed) read by `storegw fleet`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_reads_a_real_gateway_and_its_last_will() -> TestResult {
    require_mosquitto!();
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), "")?;
    let cfg = write_config(dir.path(), broker.port, "", "")?;
    let mut gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    let until = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < until {
        let out = fleet(broker.port, &["--store", "s042", "--json", "--wait", "1"])?;
        last = String::from_utf8_lossy(&out.stdout).to_string();
        if last.contains("\"online\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let v: serde_json::Value = serde_json::from_str(&last)?;
    assert_eq!(v["gateways"][0]["gateway"], "gw1", "{last}");
    assert_eq!(v["gateways"][0]["state"], "online", "{}", gw.log_text());
    assert!(v["gateways"][0]["version"].is_string());
    gw.sigkill();
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        let out = fleet(broker.port, &["--store", "s042", "--json", "--wait", "1"])?;
        last = String::from_utf8_lossy(&out.stdout).to_string();
        if last.contains("\"offline\"") {
            assert_eq!(out.status.code(), Some(1));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("last will never seen: {last}").into())
}
