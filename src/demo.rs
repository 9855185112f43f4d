//! `storegw demo`: the whole pipeline on the simulator against an embedded broker, with a
//! subscriber that counts what the central platform would receive. Needs no config and no root.

use crate::config::{self, Config};
use crate::daemon::Pipeline;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

/// The embedded demo configuration; it lives in the configuration layer so that replay can
/// start from it without importing the demo.
pub use crate::config::demo::DEMO_TOML;

/// Finds a free loopback TCP port.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

/// Without the `demo` feature (store builds) there is no embedded broker.
#[cfg(not(feature = "demo"))]
pub fn start_embedded_broker(_port: u16) -> Result<(), String> {
    Err(
        "this storegw was built without the embedded demo broker (cargo feature `demo`); \
         `storegw run` works against any MQTT broker"
            .into(),
    )
}

/// Starts rumqttd on `127.0.0.1:port` in a background thread.
#[cfg(feature = "demo")]
pub fn start_embedded_broker(port: u16) -> Result<(), String> {
    let text = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 1000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 4194304
max_inflight_count = 500
dynamic_filters = true
"#
    );
    let cfg: rumqttd::Config =
        toml::from_str(&text).map_err(|e| format!("embedded broker config: {e}"))?;
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(cfg);
            if let Err(e) = broker.start() {
                eprintln!("embedded broker stopped: {e}");
            }
        })
        .map_err(|e| format!("cannot start embedded broker: {e}"))?;
    // Wait until it answers MQTT.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if broker_answers(port) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "embedded broker did not listen on 127.0.0.1:{port}"
    ))
}

/// Whether an MQTT broker on `127.0.0.1:port` accepts a connection: a CONNECT answered by a
/// successful CONNACK. A bare TCP connect closed before any CONNECT is what rumqttd logs as an
/// error ("connection closed by peer"), so readiness is probed with a real, if minimal, session;
/// closing it after the CONNACK is an ordinary disconnect to the broker.
#[cfg(feature = "demo")]
fn broker_answers(port: u16) -> bool {
    use std::io::Read;
    const CLIENT_ID: &[u8] = b"storegw-demo-probe";
    let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
    // MQTT 3.1.1 CONNECT: protocol "MQTT" level 4, clean session, keep-alive 5 s.
    let mut connect = vec![0x10, (12 + CLIENT_ID.len()) as u8];
    connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 5]);
    connect.extend_from_slice(&(CLIENT_ID.len() as u16).to_be_bytes());
    connect.extend_from_slice(CLIENT_ID);
    let mut connack = [0u8; 4];
    tcp.write_all(&connect).is_ok()
        && tcp.read_exact(&mut connack).is_ok()
        && connack[0] == 0x20
        && connack[3] == 0
}

/// What the demo subscriber saw.
#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    per_kind: BTreeMap<String, u64>,
    duplicates: u64,
    samples: BTreeMap<String, serde_json::Value>,
    /// The last status document (after a clean stop: the retained `offline`).
    status: Option<serde_json::Value>,
}

/// Runs the demo for `duration`, printing progress and a final summary.
pub async fn run(duration: Duration, rate: Option<f64>) -> Result<(), String> {
    // The same bounds as `sources.sim.rate` in a file (NaN and infinity fail them too).
    if rate.is_some_and(|r| !(r > 0.0 && r <= 1_000_000.0)) {
        return Err("--rate must be above 0 and at most 1000000 events/s".into());
    }
    let port = free_port()?;
    start_embedded_broker(port)?;
    let state = std::env::temp_dir().join(format!(
        "storegw-demo-{}-{}",
        std::process::id(),
        crate::event::now_ms()
    ));
    let mut cfg: Config =
        config::parse("config/demo.toml (embedded)", DEMO_TOML, None).map_err(|e| e.to_string())?;
    cfg.mqtt.port = port;
    cfg.gateway.state_dir = state.clone();
    if let Some(r) = rate {
        cfg.sources.sim.rate = r;
    }
    println!(
        "storegw demo: simulated store `{}` → spool in {} → embedded MQTT broker on 127.0.0.1:{port}",
        cfg.gateway.store_id,
        state.display()
    );
    println!(
        "subscribing to {}/# as the central platform would, for {}s\n",
        cfg.mqtt.topic_prefix,
        duration.as_secs()
    );

    let mut o = MqttOptions::new("storegw-demo-subscriber", "127.0.0.1", port);
    o.set_max_packet_size(8 * 1024 * 1024, 64 * 1024)
        .set_keep_alive(Duration::from_secs(30));
    let (sub, mut ev) = AsyncClient::new(o, 64);
    sub.subscribe(format!("{}/#", cfg.mqtt.topic_prefix), QoS::AtLeastOnce)
        .await
        .map_err(|e| format!("demo subscriber: {e}"))?;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    let subscriber = tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                        continue;
                    };
                    let Ok(mut s) = seen2.lock() else { continue };
                    if v["kind"] == "status" {
                        s.status = Some(v);
                        continue;
                    }
                    for e in v["events"].as_array().into_iter().flatten() {
                        let id = e["id"].as_str().unwrap_or_default().to_string();
                        let kind = e["kind"].as_str().unwrap_or_default().to_string();
                        if s.ids.insert(id) {
                            *s.per_kind.entry(kind.clone()).or_default() += 1;
                            s.samples.entry(kind).or_insert_with(|| e.clone());
                        } else {
                            s.duplicates += 1;
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });

    let pipeline = Pipeline::start(&cfg).await?;
    let telemetry = pipeline.telemetry.clone();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let stop = tokio::time::sleep(duration);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let m = telemetry.metrics();
                let produced: u64 = crate::event::Stream::ALL.iter().map(|s| m.events_out_total(*s)).sum();
                let delivered = seen.lock().map(|s| s.ids.len()).unwrap_or(0);
                print!(
                    "\r[{:>3}s] acked by broker {:>7}  received by subscriber {:>7}  spool depth {:>5}  mqtt {}   ",
                    started.elapsed().as_secs(),
                    produced,
                    delivered,
                    pipeline.spool.total_depth(),
                    if m.connected() { "up" } else { "down" }
                );
                let _ = std::io::stdout().flush();
            }
            _ = &mut stop => break,
            _ = crate::daemon::termination() => break,
        }
    }
    println!("\n\nstopping: waiting for the batches in flight…");
    let spool = pipeline.spool.clone();
    pipeline.shutdown().await;
    let ran_s = started.elapsed().as_secs();
    tokio::time::sleep(Duration::from_millis(500)).await;
    subscriber.abort();
    let s = seen
        .lock()
        .map_err(|_| "subscriber state poisoned".to_string())?;
    println!("\n{:<18} {:>10}", "event kind", "delivered");
    let mut total = 0;
    for (k, n) in &s.per_kind {
        println!("{k:<18} {n:>10}");
        total += n;
    }
    println!(
        "{:<18} {:>10}   (duplicates received: {})",
        "total", total, s.duplicates
    );
    let acked: u64 = crate::event::Stream::ALL
        .iter()
        .map(|st| telemetry.metrics().events_out_total(*st))
        .sum();
    println!(
        "\n{}",
        last_status_line(s.status.as_ref(), ran_s, spool.total_depth(), acked)
    );
    if let Some(sample) = s
        .samples
        .get(crate::event::EventKind::PosTransaction.as_str())
        .or_else(|| s.samples.values().next())
    {
        println!(
            "\nsample event:\n{}",
            serde_json::to_string_pretty(sample).unwrap_or_default()
        );
    }
    let _ = std::fs::remove_dir_all(&state);
    if total == 0 {
        return Err("no events arrived at the subscriber".into());
    }
    Ok(())
}

/// The summary's status line: the state the broker holds for this gateway (`offline` after a
/// clean stop, retained), how long the pipeline ran, what is left in the spool and how many
/// events the broker acknowledged.
fn last_status_line(
    status: Option<&serde_json::Value>,
    uptime_s: u64,
    spool_depth: u64,
    delivered: u64,
) -> String {
    let state = status
        .and_then(|v| v["state"].as_str())
        .unwrap_or("unknown");
    let why = if state == "offline" {
        " (retained, published on a clean stop)"
    } else {
        ""
    };
    let left = if spool_depth > 0 {
        " (kept for the next start: a stop waits only for the batches in flight)"
    } else {
        ""
    };
    format!(
        "last status: state=\"{state}\"{why} uptime_s={uptime_s} spool_depth={spool_depth}{left} \
         delivered={delivered}"
    )
}
