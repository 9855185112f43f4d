//! `storegw tail`: the consumer's view of a live feed. Subscribes to one store's topics,
//! validates every payload against the JSON Schemas built into the binary, drops redelivered
//! events by id, and prints one line per event or a running summary, so store IT and the
//! central team can check a feed without writing a consumer.

use crate::config::parse_broker_url;
use crate::event::{EventKind, Stream};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS, Transport};
use serde_json::Value;
#[cfg(feature = "tail")]
use std::collections::HashMap;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The JSON Schemas of wire contract v1, as shipped in `schemas/`.
#[cfg(feature = "tail")]
const SCHEMAS: [(&str, &str); 8] = [
    ("batch", include_str!("../../schemas/batch.schema.json")),
    ("status", include_str!("../../schemas/status.schema.json")),
    (
        EventKind::BleSighting.as_str(),
        include_str!("../../schemas/ble.sighting.schema.json"),
    ),
    (
        EventKind::BlePresence.as_str(),
        include_str!("../../schemas/ble.presence.schema.json"),
    ),
    (
        EventKind::BleCensus.as_str(),
        include_str!("../../schemas/ble.census.schema.json"),
    ),
    (
        EventKind::WifiCensus.as_str(),
        include_str!("../../schemas/wifi.census.schema.json"),
    ),
    (
        EventKind::WifiVisit.as_str(),
        include_str!("../../schemas/wifi.visit.schema.json"),
    ),
    (
        EventKind::PosTransaction.as_str(),
        include_str!("../../schemas/pos.transaction.schema.json"),
    ),
];

/// Ids remembered for deduplication; beyond this the set starts over (a redelivery is bounded
/// by the gateway's in-flight window, far smaller).
const DEDUP_CAPACITY: usize = 2_000_000;

/// Compiled validators of every payload kind.
#[cfg(feature = "tail")]
pub struct Validators {
    by_name: HashMap<&'static str, jsonschema::Validator>,
}

/// Without the `tail` feature (store builds) there is no schema validator.
#[cfg(not(feature = "tail"))]
pub struct Validators;

#[cfg(not(feature = "tail"))]
impl Validators {
    /// Store builds carry no validator: `storegw tail` says so and stops.
    pub fn new() -> Result<Validators, String> {
        Err("this storegw was built without schema validation (cargo feature `tail`)".into())
    }

    /// Never reached: [`Validators::new`] fails in this build.
    pub fn check(&self, _name: &str, _v: &Value) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(feature = "tail")]
impl Validators {
    /// Compiles the embedded schemas.
    pub fn new() -> Result<Validators, String> {
        let mut by_name = HashMap::new();
        for (name, text) in SCHEMAS {
            let v: Value = serde_json::from_str(text).map_err(|e| format!("schema {name}: {e}"))?;
            let compiled =
                jsonschema::validator_for(&v).map_err(|e| format!("schema {name}: {e}"))?;
            by_name.insert(name, compiled);
        }
        Ok(Validators { by_name })
    }

    /// The first few problems of `v` against schema `name` (empty = valid).
    pub fn check(&self, name: &str, v: &Value) -> Vec<String> {
        match self.by_name.get(name) {
            None => vec![format!("unknown kind `{name}`")],
            Some(s) => s
                .iter_errors(v)
                .take(3)
                .map(|e| {
                    let at = e.instance_path.to_string();
                    if at.is_empty() {
                        e.to_string()
                    } else {
                        format!("{e} at {at}")
                    }
                })
                .collect(),
        }
    }
}

/// How the central team's tools (`tail`, `fleet`, `push`) reach the broker; the same command
/// line options for all three.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerConn {
    /// mqtt://host[:port] or mqtts://host[:port].
    #[arg(long)]
    pub broker: String,
    /// Topic prefix (the gateways' mqtt.topic_prefix).
    #[arg(long, default_value = "storegw/v1")]
    pub prefix: String,
    /// Broker user name.
    #[arg(long)]
    pub username: Option<String>,
    /// File holding the password (first line), mode 0600 like every secret.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// PEM CA bundle for mqtts:// (default: the system bundle).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Send the user name and password over plain mqtt:// to a host other than this machine
    /// (refused without it, as the daemon refuses without `mqtt.allow_insecure`).
    #[arg(long)]
    pub allow_insecure: bool,
}

impl BrokerConn {
    /// MQTT options: a throw-away clean session under a random client id (`id_prefix-…`),
    /// credentials from the password file, TLS for `mqtts://`.
    pub fn client_options(
        &self,
        id_prefix: &str,
        max_packet: usize,
    ) -> Result<MqttOptions, String> {
        let (host, port, tls) =
            parse_broker_url(&self.broker).map_err(|e| format!("--broker: {e}"))?;
        let id = format!("{id_prefix}-{:08x}", fastrand::u32(..));
        if self.username.is_some()
            && !tls
            && !self.allow_insecure
            && !crate::config::is_loopback_host(&host)
        {
            return Err(format!(
                "--broker: credentials would go in clear to `{host}` over mqtt://; use mqtts:// or --allow-insecure"
            ));
        }
        let mut m = MqttOptions::new(id, host, port);
        m.set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(max_packet, 64 * 1024);
        if let Some(u) = &self.username {
            let pw = match &self.password_file {
                Some(p) => crate::config::check_secret_mode(p)
                    .map_err(|e| format!("--password-file {e}"))
                    .and_then(|_| {
                        std::fs::read_to_string(p)
                            .map_err(|e| format!("--password-file {}: {e}", p.display()))
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
                None => String::new(),
            };
            m.set_credentials(u.clone(), pw);
        }
        if tls {
            let cfg = crate::tls::tls_config(self.ca_file.as_deref(), None)?;
            m.set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(cfg)),
            ));
        }
        Ok(m)
    }
}

/// What to subscribe to and how to print.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// The broker and topic prefix.
    pub conn: BrokerConn,
    /// Store to follow.
    pub store: String,
    /// One gateway only; every gateway of the store when `None`.
    pub gateway: Option<String>,
    /// Running totals every 5 s instead of one line per event.
    pub summary: bool,
    /// One JSON line per distinct event (the event object with the batch's `store` and
    /// `gateway` added), for `storegw unseal` and other tools; problems go to stderr.
    pub json: bool,
    /// Stop after this many distinct events.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// Running totals, also the result of a finished tail.
#[derive(Debug, Default)]
pub struct Totals {
    /// Distinct events (valid or not).
    pub events: u64,
    /// Redelivered events dropped by id.
    pub duplicates: u64,
    /// Events failing their kind's schema.
    pub invalid_events: u64,
    /// Messages failing the batch or status schema, or not JSON, or on a wrong topic.
    pub invalid_messages: u64,
    /// Distinct events by kind.
    pub per_kind: BTreeMap<String, u64>,
    /// Last status state by `store/gateway`.
    pub gateways: BTreeMap<String, String>,
}

impl Totals {
    fn line(&self, elapsed: Duration) -> String {
        let kinds: Vec<String> = self
            .per_kind
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let gws: Vec<String> = self
            .gateways
            .iter()
            .map(|(g, s)| format!("{g}:{s}"))
            .collect();
        format!(
            "after {:.0}s: {} events ({} duplicates dropped, {} invalid events, {} invalid messages) [{}] gateways [{}]",
            elapsed.as_secs_f64(),
            self.events,
            self.duplicates,
            self.invalid_events,
            self.invalid_messages,
            kinds.join(" "),
            gws.join(" ")
        )
    }
}

/// Checks one MQTT message and updates the totals; returns the lines to print (per-event mode).
pub struct Checker {
    validators: Validators,
    prefix: String,
    seen: HashSet<String>,
    /// Per-event output as JSON lines (see [`TailOptions::json`]).
    pub json: bool,
    /// What was received so far.
    pub totals: Totals,
}

impl Checker {
    /// A checker for topics under `prefix`.
    pub fn new(prefix: &str) -> Result<Checker, String> {
        Ok(Checker {
            validators: Validators::new()?,
            prefix: prefix.to_string(),
            seen: HashSet::new(),
            json: false,
            totals: Totals::default(),
        })
    }

    /// Validates a message received on `topic`; returns one line per new event (or per
    /// problem) for the per-event output.
    pub fn message(&mut self, topic: &str, payload: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let levels: Vec<&str> = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .map(|r| r.split('/').collect())
            .unwrap_or_default();
        let [store, gateway, stream] = levels.as_slice() else {
            self.totals.invalid_messages += 1;
            return vec![format!(
                "INVALID {topic}: not {{prefix}}/{{store}}/{{gateway}}/{{stream}}"
            )];
        };
        let v: Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                self.totals.invalid_messages += 1;
                return vec![format!("INVALID {topic}: not JSON: {e}")];
            }
        };
        if *stream == "status" {
            let errs = self.validators.check("status", &v);
            let state = v["state"].as_str().unwrap_or("?").to_string();
            self.totals
                .gateways
                .insert(format!("{store}/{gateway}"), state.clone());
            if errs.is_empty() {
                out.push(format!(
                    "{} {store}/{gateway} status {state} spool={} alarms={}",
                    v["ts"].as_str().unwrap_or("-"),
                    spool_depth(&v),
                    v["alarms"].as_array().map(|a| a.len()).unwrap_or(0)
                ));
            } else {
                self.totals.invalid_messages += 1;
                out.push(format!("INVALID {topic}: {}", errs.join("; ")));
            }
            return out;
        }
        let Ok(stream) = stream.parse::<Stream>() else {
            self.totals.invalid_messages += 1;
            return vec![format!("INVALID {topic}: unknown stream")];
        };
        let errs = self.validators.check("batch", &v);
        let mut problems = errs;
        if v["store"].as_str() != Some(store) || v["gateway"].as_str() != Some(gateway) {
            problems.push("store/gateway in the payload differ from the topic".into());
        }
        if !problems.is_empty() {
            self.totals.invalid_messages += 1;
            out.push(format!("INVALID {topic}: {}", problems.join("; ")));
        }
        for e in v["events"].as_array().into_iter().flatten() {
            let id = e["id"].as_str().unwrap_or_default();
            let kind = e["kind"].as_str().unwrap_or_default();
            if !id.is_empty() && self.seen.contains(id) {
                self.totals.duplicates += 1;
                continue;
            }
            let known = kind.parse::<EventKind>().ok();
            let mut errs = match known {
                Some(k) => self.validators.check(k.as_str(), e),
                None => vec![format!("unknown kind `{kind}`")],
            };
            if known.is_some_and(|k| k.stream() != stream) {
                errs.push(format!("{kind} on the {stream} topic"));
            }
            if id.is_empty() {
                errs.push("no id".into());
            } else {
                if self.seen.len() >= DEDUP_CAPACITY {
                    self.seen.clear();
                }
                self.seen.insert(id.to_string());
            }
            self.totals.events += 1;
            *self.totals.per_kind.entry(kind.to_string()).or_default() += 1;
            let ts = e["ts"].as_str().unwrap_or("-");
            if self.json {
                let mut obj = serde_json::Map::new();
                obj.insert("store".into(), Value::String(store.to_string()));
                obj.insert("gateway".into(), Value::String(gateway.to_string()));
                if let Some(m) = e.as_object() {
                    obj.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                out.push(Value::Object(obj).to_string());
                if !errs.is_empty() {
                    self.totals.invalid_events += 1;
                    out.push(format!(
                        "INVALID {ts} {store}/{gateway} {kind} {id}: {}",
                        errs.join("; ")
                    ));
                }
                continue;
            }
            if errs.is_empty() {
                out.push(format!(
                    "{ts} {store}/{gateway} {kind} {id}{}",
                    detail(known, e)
                ));
            } else {
                self.totals.invalid_events += 1;
                out.push(format!(
                    "INVALID {ts} {store}/{gateway} {kind} {id}: {}",
                    errs.join("; ")
                ));
            }
        }
        out
    }
}

/// The figures a reader checks first, after the event id: Wi-Fi address counts beside the
/// estimated devices (absent from gateways before device estimation: `-`), visit dwell.
fn detail(kind: Option<EventKind>, e: &Value) -> String {
    let n = |k: &str| e[k].as_u64().map_or("-".to_string(), |v| v.to_string());
    match kind {
        Some(EventKind::WifiCensus) => format!(
            " devices={} devices_estimated={} in_store_estimated={}",
            n("devices"),
            n("devices_estimated"),
            n("in_store_estimated")
        ),
        Some(EventKind::WifiVisit) => format!(" dwell_s={}", e["dwell_s"].as_f64().unwrap_or(0.0)),
        _ => String::new(),
    }
}

fn spool_depth(status: &Value) -> u64 {
    status["spool"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|d| d["depth"].as_u64())
                .fold(0u64, u64::saturating_add)
        })
        .unwrap_or(0)
}

fn mqtt_options(o: &TailOptions) -> Result<MqttOptions, String> {
    o.conn.client_options("storegw-tail", 64 * 1024 * 1024)
}

/// Runs until Ctrl-C, `count` distinct events or `duration`; returns the totals.
pub async fn run(o: TailOptions) -> Result<Totals, String> {
    if !crate::config::valid_id(&o.store) {
        return Err(format!("--store `{}` is not a valid store id", o.store));
    }
    if let Some(g) = &o.gateway {
        if !crate::config::valid_id(g) {
            return Err(format!("--gateway `{g}` is not a valid gateway id"));
        }
    }
    let filter = format!(
        "{}/{}/{}/+",
        o.conn.prefix,
        o.store,
        o.gateway.as_deref().unwrap_or("+")
    );
    let mut checker = Checker::new(&o.conn.prefix)?;
    checker.json = o.json;
    let (client, mut ev) = AsyncClient::new(mqtt_options(&o)?, 64);
    let start = Instant::now();
    // `--for` is any number of seconds; beyond what the clock can add there is no deadline.
    let deadline = o
        .duration
        .and_then(|d| tokio::time::Instant::now().checked_add(d));
    let mut summary_tick = tokio::time::interval(Duration::from_secs(5));
    let mut stdout = std::io::stdout().lock();
    let mut failures = 0u32;
    let mut last_error: Option<String> = None;
    let mut connected = false;
    loop {
        let stop_at =
            deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep_until(stop_at), if deadline.is_some() => break,
            _ = summary_tick.tick(), if o.summary => {
                let _ = writeln!(stdout, "{}", checker.totals.line(start.elapsed()));
                let _ = stdout.flush();
            }
            e = ev.poll() => match e {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    failures = 0;
                    connected = true;
                    client.subscribe(filter.clone(), QoS::AtLeastOnce).await.map_err(|e| e.to_string())?;
                }
                Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                    eprintln!("subscribed to {filter}");
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    let lines = checker.message(&p.topic, &p.payload);
                    if !o.summary {
                        for l in lines {
                            // In JSON mode stdout holds only events; notes go to stderr.
                            if o.json && !l.starts_with('{') {
                                eprintln!("{l}");
                            } else {
                                let _ = writeln!(stdout, "{l}");
                            }
                        }
                        let _ = stdout.flush();
                    }
                    if o.count.is_some_and(|c| checker.totals.events >= c) {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    failures += 1;
                    eprintln!("broker {}: {e}", o.conn.broker);
                    last_error = Some(e.to_string());
                    if failures >= 5 && checker.totals.events == 0 {
                        return Err(format!("cannot reach {}: {e}", o.conn.broker));
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    if o.summary {
        let _ = writeln!(stdout, "{}", checker.totals.line(start.elapsed()));
    } else {
        eprintln!("{}", checker.totals.line(start.elapsed()));
    }
    let _ = client.try_disconnect();
    if !connected {
        return Err(format!(
            "never connected to {}: {}",
            o.conn.broker,
            last_error.unwrap_or_else(|| "no answer".into())
        ));
    }
    Ok(checker.totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_clear_to_another_host_are_refused() {
        let conn = |broker: &str, user: Option<&str>, allow_insecure: bool| BrokerConn {
            broker: broker.into(),
            prefix: "storegw/v1".into(),
            username: user.map(String::from),
            password_file: None,
            ca_file: None,
            allow_insecure,
        };
        let refused = conn("mqtt://broker.example", Some("signer"), false)
            .client_options("t", 1024)
            .err()
            .unwrap_or_default();
        assert!(refused.contains("in clear"), "{refused}");
        assert!(conn("mqtt://broker.example", Some("signer"), true)
            .client_options("t", 1024)
            .is_ok());
        assert!(conn("mqtt://127.0.0.1:1883", Some("signer"), false)
            .client_options("t", 1024)
            .is_ok());
        assert!(conn("mqtt://broker.example", None, false)
            .client_options("t", 1024)
            .is_ok());
    }

    #[test]
    fn validates_dedups_and_flags_mismatches() -> Result<(), String> {
        let mut c = Checker::new("storegw/v1")?;
        let mut sim = crate::source::sim::Simulator::new(&crate::config::SimConfig::default());
        let ev = loop {
            let e = sim.next_event(1_764_000_000_000);
            if e.kind == EventKind::BleSighting {
                break e;
            }
        };
        let wire: Value =
            serde_json::from_slice(&ev.to_wire("gw1", 7)).map_err(|e| e.to_string())?;
        let batch = serde_json::json!({"schema": "storegw.v1", "store": "s1", "gateway": "gw1",
            "sent_at": "2026-01-01T00:00:00.000Z", "events": [wire]});
        let bytes = batch.to_string().into_bytes();
        let lines = c.message("storegw/v1/s1/gw1/ble", &bytes);
        assert_eq!(lines.len(), 1);
        assert!(!lines[0].starts_with("INVALID"), "{lines:?}");
        assert!(c.message("storegw/v1/s1/gw1/ble", &bytes).is_empty());
        assert_eq!(c.totals.duplicates, 1);
        let mut moved = batch.clone();
        moved["events"][0]["id"] = "gw1:9".into();
        let lines = c.message("storegw/v1/s1/gw1/wifi", moved.to_string().as_bytes());
        assert!(
            lines.iter().any(|l| l.contains("on the wifi topic")),
            "{lines:?}"
        );
        let mut bad = batch.clone();
        bad["events"][0]["id"] = "gw1:8".into();
        bad["events"][0]["rssi"] = "loud".into();
        let lines = c.message("storegw/v1/s1/gw1/ble", bad.to_string().as_bytes());
        assert!(
            lines[0].starts_with("INVALID") && lines[0].contains("rssi"),
            "{lines:?}"
        );
        assert_eq!(c.totals.invalid_events, 2);
        assert_eq!(c.message("storegw/v1/s1/gw1/ble", b"{").len(), 1);
        assert_eq!(c.totals.invalid_messages, 1);
        Ok(())
    }
}
