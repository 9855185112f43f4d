//! Fleet simulation: many gateways (in-process pipelines, each with its own spool and MQTT
//! session) against one mosquitto on loopback; the broker is killed and restarted, and we
//! measure how the fleet comes back: the reconnect spread (full-jitter backoff must keep it from
//! being a spike), the peak connection rate, and the time until every backlog is drained.

use super::Row;
use crate::daemon::Pipeline;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When each gateway's `online` status arrived, by gateway topic.
type Arrivals = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

/// Subscribes to every status topic with a persistent QoS 1 session, so `online` messages
/// published while the watcher itself reconnects after the broker restart are not missed.
async fn status_watcher(port: u16) -> Arrivals {
    let seen: Arrivals = Arc::default();
    let mut o = MqttOptions::new("fleet-watcher", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(false);
    let (client, mut ev) = AsyncClient::new(o, 1024);
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    let _ = client
                        .subscribe("storegw/v1/+/+/status", QoS::AtLeastOnce)
                        .await;
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) if !p.retain => {
                    if p.payload.windows(8).any(|w| w == b"\"online\"") {
                        if let Ok(mut m) = s.lock() {
                            m.entry(p.topic.clone()).or_default().push(Instant::now());
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    seen
}

fn gateway_config(dir: &Path, i: usize, port: u16) -> Result<crate::config::Config, String> {
    let text = format!(
        "[gateway]\nstore_id = \"fleet{i:04}\"\ngateway_id = \"gw1\"\nstate_dir = \"{}\"\n\
         [mqtt]\nport = {port}\nreconnect_min = \"1s\"\nreconnect_max = \"60s\"\n\
         status_interval = \"300s\"\nconnect_timeout = \"5s\"\n\
         [spool]\ncache_capacity = \"1MiB\"\n[http]\nenabled = false\n\
         [sources.sim]\nenabled = true\nrate = 20.0\nseed = {i}\n",
        dir.join(format!("gw{i:04}")).display()
    );
    crate::config::parse("(fleet)", &text, None).map_err(|e| e.to_string())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs `n` gateways, stops the broker for `outage`, restarts it and measures the recovery.
pub async fn fleet(bin: &Path, dir: &Path, n: usize, outage: Duration) -> Result<Vec<Row>, String> {
    let port = crate::demo::free_port()?;
    let mut broker = super::start_broker_on(bin, &dir.join("broker"), port, true)?;
    let seen = status_watcher(port).await;
    let mut gateways = Vec::with_capacity(n);
    for i in 0..n {
        let cfg = gateway_config(dir, i, port)?;
        gateways.push(Pipeline::start(&cfg).await?);
    }
    // Everyone connected before the outage.
    let until = Instant::now() + Duration::from_secs(60);
    while seen.lock().map(|m| m.len()).unwrap_or(0) < n && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The broker goes down (saving its sessions, as a maintenance restart does) and comes back
    // on the same port after the outage.
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    unsafe {
        libc::kill(broker.child.id() as i32, libc::SIGTERM);
    }
    let _ = broker.child.wait();
    tokio::time::sleep(outage).await;
    let restarted = Instant::now();
    let broker2 = super::start_broker_on(bin, &dir.join("broker"), port, true)?;
    let backlog: u64 = gateways.iter().map(|g| g.spool.total_depth()).sum();
    let until = Instant::now() + Duration::from_secs(180);
    let mut drained = None;
    loop {
        let back = seen
            .lock()
            .map(|m| {
                m.values()
                    .filter(|v| v.iter().any(|t| *t >= restarted))
                    .count()
            })
            .unwrap_or(0);
        let depth: u64 = gateways.iter().map(|g| g.spool.total_depth()).sum();
        if back >= n && depth == 0 {
            drained = Some(restarted.elapsed().as_secs_f64());
            break;
        }
        if Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut delays: Vec<f64> = seen
        .lock()
        .map(|m| {
            m.values()
                .filter_map(|v| v.iter().find(|t| **t >= restarted))
                .map(|t| t.duration_since(restarted).as_secs_f64())
                .collect()
        })
        .unwrap_or_default();
    delays.sort_by(|a, b| a.total_cmp(b));
    let mut per_second: HashMap<u64, u32> = HashMap::new();
    for d in &delays {
        *per_second.entry(*d as u64).or_default() += 1;
    }
    let peak = per_second.values().copied().max().unwrap_or(0);
    for g in gateways {
        g.shutdown().await;
    }
    drop(broker2);
    let back = delays.len();
    let (p10, p50, p90, max) = (
        percentile(&delays, 0.1),
        percentile(&delays, 0.5),
        percentile(&delays, 0.9),
        percentile(&delays, 1.0),
    );
    Ok(vec![
        Row::new(
            &format!(
                "fleet of {n}: reconnect delay after a {} s broker outage, p50 (p10 {p10:.1} s, p90 {p90:.1} s, max {max:.1} s; {back}/{n} back)",
                outage.as_secs()
            ),
            p50,
            "s",
        )
        .target("spread by jitter, not a spike: p90 − p10 ≥ 1 s", p90 - p10 >= 1.0 && back == n),
        Row::new(&format!("fleet of {n}: peak reconnections in one second"), peak as f64, "conn/s")
            .target(
                &format!("below the fleet size ({n}), i.e. no thundering herd"),
                (peak as usize) < n,
            ),
        Row::new(
            &format!("fleet of {n}: time from broker restart until every backlog ({backlog} events) is drained"),
            drained.unwrap_or(f64::NAN),
            "s",
        )
        .target("drained within 180 s", drained.is_some()),
    ])
}

/// When each gateway reported the pushed document `applied`, by gateway topic.
type Confirmed = Arc<Mutex<HashMap<String, Instant>>>;

/// Subscribes to every gateway's retained configuration state; records the first `applied`
/// of `version`, and counts the gateways that have reported anything (they are connected).
async fn config_watcher(port: u16, version: i64) -> (Confirmed, Arc<Mutex<usize>>) {
    let confirmed: Confirmed = Arc::default();
    let reporting = Arc::new(Mutex::new(0usize));
    let mut o = MqttOptions::new("fleet-config-watcher", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut ev) = AsyncClient::new(o, 1024);
    let (c, r) = (confirmed.clone(), reporting.clone());
    tokio::spawn(async move {
        let mut seen = std::collections::HashSet::new();
        loop {
            match ev.poll().await {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    let _ = client
                        .subscribe("storegw/v1/+/+/config/state", QoS::AtLeastOnce)
                        .await;
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                        continue;
                    };
                    if seen.insert(p.topic.clone()) {
                        if let Ok(mut n) = r.lock() {
                            *n += 1;
                        }
                    }
                    if v["state"] == "applied" && v["version"] == version {
                        if let Ok(mut m) = c.lock() {
                            m.entry(p.topic.clone()).or_insert_with(Instant::now);
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    (confirmed, reporting)
}

/// Runs `n` gateways with remote configuration on (the daemon's own loop, `daemon::serve`, in
/// this process), publishes one signed fleet-wide document that changes a live setting, and
/// measures how long until every gateway has verified, applied and confirmed it on its
/// `config/state` topic.
pub async fn config_rollout(bin: &Path, dir: &Path, n: usize) -> Result<Vec<Row>, String> {
    use crate::remote::document;
    let port = crate::demo::free_port()?;
    let _broker = super::start_broker_on(bin, &dir.join("broker"), port, false)?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| e.to_string())?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let pub_file = dir.join("central.pub");
    std::fs::write(
        &pub_file,
        format!("{}\n", document::format_public_key(&key.verifying_key())),
    )
    .map_err(|e| e.to_string())?;
    let version = 1;
    let (confirmed, reporting) = config_watcher(port, version).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let path = dir.join(format!("gw{i:04}.toml"));
        let text = format!(
            "[gateway]\nstore_id = \"fleet{i:04}\"\ngateway_id = \"gw1\"\nstate_dir = \"{}\"\n\
             [mqtt]\nport = {port}\nreconnect_min = \"1s\"\nreconnect_max = \"30s\"\n\
             status_interval = \"300s\"\nconnect_timeout = \"5s\"\n\
             [spool]\ncache_capacity = \"1MiB\"\n[http]\nenabled = false\n\
             [sources.sim]\nenabled = true\nrate = 1.0\nseed = {i}\n\
             [remote]\npublic_key_file = \"{}\"\n",
            dir.join(format!("gw{i:04}")).display(),
            pub_file.display()
        );
        std::fs::write(&path, &text).map_err(|e| e.to_string())?;
        let cfg = crate::config::parse(&path.display().to_string(), &text, Some(dir))
            .map_err(|e| e.to_string())?;
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let until_stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            crate::daemon::serve(cfg, &path, until_stopped, None).await
        }));
    }
    let until = Instant::now() + Duration::from_secs(120);
    while reporting.lock().map(|r| *r).unwrap_or(0) < n && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connected = reporting.lock().map(|r| *r).unwrap_or(0);
    // The document: a live setting (the simulator's rate), signed once for the whole fleet.
    let signed = document::sign(
        format!("version = {version}\ntarget = \"_fleet\"\n[sources.sim]\nrate = 2.0\n").as_bytes(),
        &key,
    )?;
    let mut o = MqttOptions::new("fleet-config-signer", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut ev) = AsyncClient::new(o, 16);
    let pushed = Instant::now();
    client
        .publish("storegw/v1/_fleet/config", QoS::AtLeastOnce, true, signed)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    let until = Instant::now() + Duration::from_secs(120);
    while confirmed.lock().map(|m| m.len()).unwrap_or(0) < n && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut delays: Vec<f64> = confirmed
        .lock()
        .map(|m| {
            m.values()
                .map(|t| t.saturating_duration_since(pushed).as_secs_f64())
                .collect()
        })
        .unwrap_or_default();
    delays.sort_by(|a, b| a.total_cmp(b));
    let _ = stop_tx.send(true);
    let mut restarts = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(crate::daemon::RunEnd::Restart)) => restarts += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("a gateway failed: {e}")),
            Err(e) => return Err(format!("a gateway task failed: {e}")),
        }
    }
    let done = delays.len();
    let (p50, p90, max) = (
        percentile(&delays, 0.5),
        percentile(&delays, 0.9),
        percentile(&delays, 1.0),
    );
    Ok(vec![Row::new(
        &format!(
            "fleet of {n}: signed fleet-wide config change, push until every gateway reported it applied (p50 {p50:.2} s, p90 {p90:.2} s; {done}/{n} confirmed, {connected}/{n} connected before, {restarts} restarts)"
        ),
        max,
        "s",
    )
    .target(
        "every gateway confirms within 30 s, none restarts",
        done == n && restarts == 0 && max <= 30.0,
    )])
}
