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
