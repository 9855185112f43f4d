//! `storegw fleet`: the central team's one-command view of many gateways. Reads the retained
//! status documents (`{prefix}/{store}/{gateway}/status`), waits briefly for the broker to hand
//! them all over, and prints one line per gateway, worst first, or JSON for scripts. The exit
//! status says whether any gateway needs attention, so a cron job or a CI step can alert on it.

use crate::event::now_ms;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// What to read and when a gateway counts as needing attention.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// The broker and topic prefix (read access to `{prefix}/+/+/status` is enough).
    pub conn: crate::ops::tail::BrokerConn,
    /// One store only; every store when `None`.
    pub store: Option<String>,
    /// Longest wait for retained documents after the subscription is acknowledged.
    pub wait: Duration,
    /// Oldest unsent event older than this makes a gateway `lagging`.
    pub max_age_s: f64,
    /// An `online` document older than this makes a gateway `stale` (it stopped reporting
    /// without its last will firing, or its clock is off).
    pub stale_s: f64,
}

/// How bad a gateway looks; the order is the sort order (worst first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Offline, a failed source, or an unreadable document.
    Critical,
    /// Online but lagging, stale, degraded, alarmed or with a bad clock.
    Warning,
    /// Nothing to do.
    Ok,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "CRIT",
            Severity::Warning => "WARN",
            Severity::Ok => "OK",
        }
    }
}

/// One gateway's health as read from its status document.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayHealth {
    /// Store id, from the topic (so even an unreadable document is named).
    pub store: String,
    /// Gateway id, from the topic.
    pub gateway: String,
    /// The sort key and the exit status's input.
    pub severity: Severity,
    /// `online`, `offline`, or `invalid` when the document cannot be read.
    pub state: String,
    /// storegw version the gateway runs (fleet upgrades are checked with it).
    pub version: Option<String>,
    /// Seconds since the gateway process started (a small value means a recent restart).
    pub uptime_s: Option<u64>,
    /// When the document was written (absent from the last-will `offline` document).
    pub ts: Option<String>,
    /// Events waiting in the spool, all streams.
    pub spool_depth: u64,
    /// Age of the oldest waiting event, any stream.
    pub oldest_age_s: Option<f64>,
    /// Events dropped or refused since the spool was created, all streams and reasons.
    pub drops: u64,
    /// Sources whose state is neither `running` nor `starting` nor `stopped`, with the state.
    pub failing_sources: Vec<String>,
    /// The configuration state, when the gateway reports one.
    pub config: Option<String>,
    /// The gateway's own alarms (unhealthy reasons, a recovered spool).
    pub alarms: Vec<String>,
    /// Why the gateway needs attention (empty for `ok`).
    pub reasons: Vec<String>,
}

/// Reads one status document; `topic_store`/`topic_gateway` come from the topic, so even an
/// unreadable document names its gateway. `now` is the reader's clock in ms.
pub fn assess(
    topic_store: &str,
    topic_gateway: &str,
    payload: &[u8],
    now: i64,
    o: &FleetOptions,
) -> GatewayHealth {
    let mut h = GatewayHealth {
        store: topic_store.to_string(),
        gateway: topic_gateway.to_string(),
        severity: Severity::Ok,
        state: "invalid".into(),
        version: None,
        uptime_s: None,
        ts: None,
        spool_depth: 0,
        oldest_age_s: None,
        drops: 0,
        failing_sources: Vec::new(),
        config: None,
        alarms: Vec::new(),
        reasons: Vec::new(),
    };
    let v: Value = match serde_json::from_slice(payload) {
        Ok(v @ Value::Object(_)) if v["kind"] == "status" => v,
        _ => {
            h.severity = Severity::Critical;
            h.reasons.push("status document unreadable".into());
            return h;
        }
    };
    h.state = v["state"].as_str().unwrap_or("invalid").to_string();
    h.version = v["version"].as_str().map(str::to_string);
    h.uptime_s = v["uptime_s"].as_u64();
    h.ts = v["ts"].as_str().map(str::to_string);
    for d in v["spool"].as_object().into_iter().flat_map(|m| m.values()) {
        h.spool_depth = h
            .spool_depth
            .saturating_add(d["depth"].as_u64().unwrap_or(0));
        if let Some(a) = d["oldest_age_s"].as_f64() {
            h.oldest_age_s = Some(h.oldest_age_s.map_or(a, |b: f64| b.max(a)));
        }
    }
    h.drops = v["drops"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(Value::as_object)
        .flat_map(|r| r.values())
        .filter_map(Value::as_u64)
        .fold(0u64, u64::saturating_add);
    let mut failed = false;
    for (name, s) in v["sources"].as_object().into_iter().flatten() {
        let state = s["state"].as_str().unwrap_or("?");
        if !matches!(state, "running" | "starting" | "stopped") {
            failed |= state == "failed";
            h.failing_sources.push(format!("{name}:{state}"));
        }
    }
    h.config = match &v["config"] {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m.get("state").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    h.alarms = v["alarms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();

    let mut crit = Vec::new();
    let mut warn = Vec::new();
    match h.state.as_str() {
        "online" => {}
        "offline" => crit.push("offline".to_string()),
        other => crit.push(format!("state `{other}`")),
    }
    if failed {
        crit.push("source failed".into());
    } else if !h.failing_sources.is_empty() {
        warn.push("source degraded".into());
    }
    if h.state == "online" {
        if h.oldest_age_s.is_some_and(|a| a > o.max_age_s) {
            warn.push("lagging".into());
        }
        if let Some(age) =
            h.ts.as_deref()
                .and_then(parse_ts_ms)
                .map(|t| (now - t) as f64 / 1000.0)
        {
            if age > o.stale_s {
                warn.push(format!("stale ({age:.0}s old)"));
            }
        }
        if v["clock"]["sane"] == Value::Bool(false) {
            warn.push("clock not set".into());
        }
        if !h.alarms.is_empty() {
            warn.push("alarms".into());
        }
        // A refused or rolled-back remote configuration needs someone's attention; `local`,
        // `applied` and `pending` (a restart confirming a change) do not.
        if h.config
            .as_deref()
            .is_some_and(|c| matches!(c, "rejected" | "rolled_back"))
        {
            warn.push(format!(
                "config {}",
                h.config.as_deref().unwrap_or_default()
            ));
        }
    }
    h.severity = if !crit.is_empty() {
        Severity::Critical
    } else if !warn.is_empty() {
        Severity::Warning
    } else {
        Severity::Ok
    };
    h.reasons = crit.into_iter().chain(warn).collect();
    h
}

fn parse_ts_ms(ts: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Worst first: severity, then the oldest backlog, the deepest spool, then by name.
pub fn sort_worst_first(list: &mut [GatewayHealth]) {
    list.sort_by(|a, b| {
        a.severity
            .cmp(&b.severity)
            .then_with(|| {
                let (x, y) = (a.oldest_age_s.unwrap_or(0.0), b.oldest_age_s.unwrap_or(0.0));
                y.total_cmp(&x)
            })
            .then_with(|| b.spool_depth.cmp(&a.spool_depth))
            .then_with(|| (&a.store, &a.gateway).cmp(&(&b.store, &b.gateway)))
    });
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".to_string(), |v| v.to_string())
}

/// One human-readable line per gateway.
pub fn line(h: &GatewayHealth) -> String {
    let dash = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(",")
        }
    };
    format!(
        "{:<4} {:<24} {:<7} v{:<8} up={:<8} spool={:<7} oldest={:<8} drops={:<6} failing={} config={} why={}",
        h.severity.as_str(),
        format!("{}/{}", h.store, h.gateway),
        h.state,
        opt(&h.version),
        h.uptime_s.map_or("-".to_string(), human_secs),
        h.spool_depth,
        h.oldest_age_s.map_or("-".to_string(), |a| human_secs(a as u64)),
        h.drops,
        dash(&h.failing_sources),
        opt(&h.config),
        dash(&h.reasons),
    )
}

fn human_secs(s: u64) -> String {
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The JSON document printed with `--json`.
pub fn json_report(list: &[GatewayHealth]) -> Value {
    serde_json::json!({
        "gateways": list,
        "total": list.len(),
        "attention": list.iter().filter(|h| h.severity != Severity::Ok).count(),
    })
}

/// MQTT client options: a throw-away clean session, credentials and TLS as `storegw tail`
/// takes them.
fn mqtt_options(o: &FleetOptions) -> Result<MqttOptions, String> {
    o.conn.client_options("storegw-fleet", 4 * 1024 * 1024)
}

/// Quiet time after the last retained document before the listing is considered complete
/// (the broker sends every retained message right after the subscription acknowledgement).
const QUIET: Duration = Duration::from_millis(700);

/// Connects, collects the retained status documents, and returns them worst first.
pub async fn run(o: &FleetOptions) -> Result<Vec<GatewayHealth>, String> {
    if let Some(s) = &o.store {
        if !crate::config::valid_id(s) {
            return Err(format!("--store `{s}` is not a valid store id"));
        }
    }
    let filter = format!(
        "{}/{}/+/status",
        o.conn.prefix,
        o.store.as_deref().unwrap_or("+")
    );
    let (client, mut ev) = AsyncClient::new(mqtt_options(o)?, 64);
    // Connecting and subscribing get their own time, at least 5 s (a TLS handshake over a
    // store's uplink), at most `wait` when that is longer.
    let connect_deadline = tokio::time::Instant::now() + o.wait.max(Duration::from_secs(5));
    let mut subscribed_at: Option<tokio::time::Instant> = None;
    let mut last_msg: Option<tokio::time::Instant> = None;
    let mut docs: BTreeMap<(String, String), GatewayHealth> = BTreeMap::new();
    let mut last_error: Option<String> = None;
    loop {
        let now = tokio::time::Instant::now();
        let stop_at = match subscribed_at {
            None => connect_deadline,
            Some(s) => (s + o.wait).min(last_msg.unwrap_or(s) + QUIET.max(o.wait / 4)),
        };
        if now >= stop_at {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(stop_at) => break,
            e = ev.poll() => match e {
                Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                    client
                        .subscribe(filter.clone(), QoS::AtLeastOnce)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                    subscribed_at = Some(tokio::time::Instant::now());
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    last_msg = Some(tokio::time::Instant::now());
                    let levels: Vec<&str> = p
                        .topic
                        .strip_prefix(o.conn.prefix.as_str())
                        .and_then(|r| r.strip_prefix('/'))
                        .map(|r| r.split('/').collect())
                        .unwrap_or_default();
                    if let [store, gateway, "status"] = levels.as_slice() {
                        // An empty retained message clears a topic: the gateway was retired.
                        if p.payload.is_empty() {
                            docs.remove(&(store.to_string(), gateway.to_string()));
                        } else {
                            let h = assess(store, gateway, &p.payload, now_ms(), o);
                            docs.insert((store.to_string(), gateway.to_string()), h);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    last_error = Some(e.to_string());
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }
    let _ = client.try_disconnect();
    if subscribed_at.is_none() {
        return Err(format!(
            "cannot read {}: {}",
            o.conn.broker,
            last_error.unwrap_or_else(|| "no answer".into())
        ));
    }
    let mut list: Vec<GatewayHealth> = docs.into_values().collect();
    sort_worst_first(&mut list);
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> FleetOptions {
        FleetOptions {
            conn: crate::ops::tail::BrokerConn {
                broker: "mqtt://127.0.0.1".into(),
                prefix: "storegw/v1".into(),
                username: None,
                password_file: None,
                ca_file: None,
                allow_insecure: false,
            },
            store: None,
            wait: Duration::from_secs(1),
            max_age_s: 300.0,
            stale_s: 300.0,
        }
    }

    #[test]
    fn classifies_and_sorts() {
        let now = 1_764_000_000_000;
        let ts = crate::event::rfc3339_ms(now - 5_000);
        let ok = serde_json::json!({"schema":"storegw.v1","kind":"status","store":"s1",
            "gateway":"a","state":"online","ts":ts,"version":"0.1.0","uptime_s":10,
            "spool":{"ble":{"depth":3,"bytes":10,"oldest_age_s":1.5}},
            "sources":{"ble":{"state":"running","restarts":0}},"clock":{"sane":true},"alarms":[]});
        let mut lag = ok.clone();
        lag["spool"]["pos"] =
            serde_json::json!({"depth": 90000, "bytes": 1, "oldest_age_s": 7200.0});
        let mut failed = ok.clone();
        failed["sources"]["pos"] = serde_json::json!({"state":"failed","restarts":2});
        let off = serde_json::json!({"schema":"storegw.v1","kind":"status","store":"s1",
            "gateway":"d","state":"offline","version":"0.1.0"});
        let o = opts();
        let mut list = vec![
            assess("s1", "a", ok.to_string().as_bytes(), now, &o),
            assess("s1", "b", lag.to_string().as_bytes(), now, &o),
            assess("s1", "c", failed.to_string().as_bytes(), now, &o),
            assess("s1", "d", off.to_string().as_bytes(), now, &o),
            assess("s1", "e", b"not json", now, &o),
        ];
        sort_worst_first(&mut list);
        let order: Vec<(&str, Severity)> = list
            .iter()
            .map(|h| (h.gateway.as_str(), h.severity))
            .collect();
        assert_eq!(
            order,
            [
                ("c", Severity::Critical),
                ("d", Severity::Critical),
                ("e", Severity::Critical),
                ("b", Severity::Warning),
                ("a", Severity::Ok)
            ]
        );
        assert_eq!(list[3].spool_depth, 90003);
        assert!(list[3].reasons.contains(&"lagging".to_string()));
        let stale = assess("s1", "a", ok.to_string().as_bytes(), now + 3_600_000, &o);
        assert_eq!(stale.severity, Severity::Warning);
        assert!(line(&list[0]).starts_with("CRIT s1/c"));
    }
}
