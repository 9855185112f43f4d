//! The retained status payload and `storegw status` (docs/design.md, "Wire contract"), built
//! from a pipeline's health registry (`telemetry::health::Health`, handed in) and the spool.

use crate::event::{now_ms, rfc3339_ms, Stream, SCHEMA};
use crate::spool::Spool;
use crate::telemetry::health::{Health, SourceState};
use crate::telemetry::Telemetry;

/// The status file for `storegw status`: the retained status document plus the reload keys
/// pending a restart. Kept apart from [`payload`] so the MQTT status message is unchanged.
pub fn file_payload(
    health: &Health,
    store: &str,
    gateway: &str,
    state: &str,
    spool: Option<&Spool>,
) -> Vec<u8> {
    let doc = payload(health, store, gateway, state, spool);
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&doc) else {
        return doc;
    };
    v["pending_restart"] = health.pending_restart().into();
    serde_json::to_vec(&v).unwrap_or(doc)
}

/// Reasons the gateway is unhealthy (empty = healthy); drives `/healthz` and the watchdog.
pub fn unhealthy_reasons(health: &Health, spool: &Spool) -> Vec<String> {
    let mut r = Vec::new();
    r.extend(
        health
            .dead_tasks()
            .iter()
            .map(|t| format!("pipeline task {t} ended")),
    );
    for (name, h) in health.source_snapshot() {
        if h.state == SourceState::Failed.as_str() {
            r.push(format!(
                "source {name} failed: {}",
                h.detail.unwrap_or_default()
            ));
        }
    }
    if spool.pos_backlog_too_old() {
        r.push("POS backlog older than spool.pos.max_age".into());
    }
    if let Some(e) = spool.storage_failure() {
        r.push(format!(
            "spool cannot write ({e}); a restart reopens it once space returns"
        ));
    }
    r
}

/// The retained status document of the pipeline whose `health` it is.
pub fn payload(
    health: &Health,
    store: &str,
    gateway: &str,
    state: &str,
    spool: Option<&Spool>,
) -> Vec<u8> {
    let now = now_ms();
    let mut v = serde_json::json!({
        "schema": SCHEMA,
        "kind": "status",
        "store": store,
        "gateway": gateway,
        "state": state,
        "ts": rfc3339_ms(now),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": health.uptime_s(),
        "sources": health.source_snapshot(),
        // Anything before 2024 means the box booted without a time source.
        "clock": { "sane": now > 1_704_067_200_000 },
    });
    if let Some(c) = health.config_state() {
        v["config"] = c;
    }
    if let Some(sp) = spool {
        let mut depth = serde_json::Map::new();
        for s in Stream::ALL {
            depth.insert(
                s.as_str().into(),
                serde_json::to_value(sp.depth(s)).unwrap_or_default(),
            );
        }
        v["spool"] = serde_json::Value::Object(depth);
        v["spool_disk_bytes"] = sp.disk_bytes().into();
        v["drops"] = serde_json::to_value(sp.drops()).unwrap_or_default();
        let mut alarms: Vec<String> = unhealthy_reasons(health, sp);
        if let Some(r) = sp.recovered() {
            alarms.push(r.to_string());
        }
        v["alarms"] = alarms.into();
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The `offline` document used as the MQTT last will.
pub fn offline_payload(store: &str, gateway: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schema": SCHEMA, "kind": "status", "store": store, "gateway": gateway, "state": "offline",
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .unwrap_or_default()
}

/// `storegw status`: opens the spool when no daemon holds it, else reads the status file the
/// running daemon refreshes every few seconds. `remote_state` is the remote configuration
/// state the gateway left behind (the `config` object), when it uses remote configuration.
pub fn offline_report(
    cfg: &crate::config::Config,
    remote_state: Option<serde_json::Value>,
) -> Result<String, String> {
    let dir = cfg.spool_dir();
    let status_file = cfg.gateway.state_dir.join("status.json");
    if !dir.exists() {
        return Err(format!(
            "no spool at {} (has storegw run with this config?)",
            dir.display()
        ));
    }
    match Spool::open(&dir, &cfg.gateway.gateway_id, &cfg.spool) {
        Ok(sp) => {
            // No pipeline runs: an empty registry (no sources, uptime 0) is the truth.
            let p = payload(
                &Health::default(),
                &cfg.gateway.store_id,
                &cfg.gateway.gateway_id,
                "not running",
                Some(&sp),
            );
            let mut v: serde_json::Value = serde_json::from_slice(&p).map_err(|e| e.to_string())?;
            if let Some(state) = remote_state {
                v["config"] = state;
            }
            Ok(serde_json::to_string_pretty(&v).unwrap_or_default())
        }
        Err(e) => {
            let text = std::fs::read(&status_file).map_err(|re| {
                format!(
                    "spool busy ({e}) and no status file {}: {re}",
                    status_file.display()
                )
            })?;
            let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
            Ok(serde_json::to_string_pretty(&v).unwrap_or_default())
        }
    }
}

/// The `/metrics` page of the pipeline whose `telemetry` it is: its metrics registry rendered
/// with the uptime, the spool's figures and every source's health.
pub fn metrics_text(telemetry: &Telemetry, spool: Option<&Spool>) -> String {
    use crate::telemetry::metrics::{Exposition, SpoolFigures, StreamFigures};
    let health = telemetry.health();
    let sources = health.source_snapshot();
    let spool = spool.map(|sp| SpoolFigures {
        streams: Stream::ALL
            .iter()
            .map(|&s| {
                let d = sp.depth(s);
                StreamFigures {
                    stream: s,
                    depth: d.depth,
                    bytes: d.bytes,
                    oldest_age_s: d.oldest_age_s,
                }
            })
            .collect(),
        disk_bytes: sp.disk_bytes(),
        healthy: unhealthy_reasons(health, sp).is_empty(),
    });
    telemetry.metrics().render(&Exposition {
        uptime_s: health.uptime_s(),
        spool,
        sources: &sources,
    })
}
