//! SIGHUP configuration reload: what applies at once, what waits for a restart, and keeping the
//! running configuration when the new file is bad.
//!
//! Live settings (log level, sources' thresholds and allowlists, `privacy.min_count`, the
//! simulator's rate) reach the pipeline through a `watch` channel of `Arc<Config>` that every
//! source holds in its `SourceContext`. Settings that shape the spool, the MQTT session, the
//! HTTP listener or the identity of the gateway are kept at their running values and named in
//! the log, so the published configuration is always the one in effect.

use crate::config::{self, Config};
use crate::ops::{logging, metrics};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

/// Keys (dotted prefixes) whose change needs a restart.
const RESTART_PREFIXES: [&str; 9] = [
    "gateway",
    "mqtt",
    "spool",
    "http",
    "privacy.rotation",
    "privacy.pseudonym_bytes",
    "privacy.join_key_file",
    "log.format",
    "sources.sim.seed",
];

/// Keys under a restart-only prefix that still apply live.
const LIVE_EXCEPTIONS: [&str; 1] = ["mqtt.drain_rate"];

/// True when changing `key` takes a restart to apply.
pub fn needs_restart(key: &str) -> bool {
    if LIVE_EXCEPTIONS.contains(&key) {
        return false;
    }
    let prefixed = |p: &str| key == p || key.starts_with(&format!("{p}."));
    RESTART_PREFIXES.iter().any(|p| prefixed(p))
        || (key.starts_with("sources.") && key.ends_with(".enabled"))
        || ["beacons", "registers", "currency"]
            .iter()
            .any(|k| key == format!("sources.sim.{k}"))
}

/// Flattens a TOML document into dotted key → value text.
fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Dotted keys whose written value differs between two configuration texts (added and removed
/// keys included).
pub fn changed_keys(old: &str, new: &str) -> Vec<String> {
    let parse = |t: &str| {
        let mut m = BTreeMap::new();
        if let Ok(v) = t.parse::<toml::Table>() {
            flatten("", &toml::Value::Table(v), &mut m);
        }
        m
    };
    let (a, b) = (parse(old), parse(new));
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The configuration to publish: the new one, with every restart-only setting kept at its
/// running value.
pub fn effective(running: &Config, new: Config) -> Config {
    let mut e = new;
    e.gateway = running.gateway.clone();
    let drain_rate = e.mqtt.drain_rate;
    e.mqtt = running.mqtt.clone();
    e.mqtt.drain_rate = drain_rate;
    e.spool = running.spool.clone();
    e.http = running.http.clone();
    e.privacy.rotation = running.privacy.rotation;
    e.privacy.pseudonym_bytes = running.privacy.pseudonym_bytes;
    e.privacy.join_key_file = running.privacy.join_key_file.clone();
    e.log.format = running.log.format.clone();
    let (sim, old) = (&mut e.sources.sim, &running.sources.sim);
    sim.enabled = old.enabled;
    sim.seed = old.seed;
    sim.beacons = old.beacons;
    sim.registers = old.registers;
    sim.currency = old.currency.clone();
    e
}

/// Reload state: the text the process started with (restart-only changes are measured against
/// it) and the text of the last applied reload (live changes are measured against that).
pub struct Reloader {
    boot_text: String,
    last_text: String,
}

impl Reloader {
    /// Remembers the configuration text the gateway started with.
    pub fn new(path: &Path) -> Reloader {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        Reloader {
            boot_text: text.clone(),
            last_text: text,
        }
    }

    /// Re-reads `path`; on success publishes the effective configuration on `tx` and applies
    /// the log level. A bad file is logged issue by issue (`file:line: key: message`) and the
    /// running configuration stays. Returns whether the new file was accepted.
    pub fn reload(&mut self, path: &Path, tx: &watch::Sender<Arc<Config>>) -> bool {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(file, error = %e, "reload: cannot read the configuration; keeping the running one");
                count("rejected");
                return false;
            }
        };
        let new = match config::parse(&file, &text, path.parent()) {
            Ok(c) => c,
            Err(e) => {
                for issue in &e.0 {
                    tracing::error!("reload: {issue}");
                }
                tracing::error!(
                    file,
                    issues = e.0.len(),
                    "reload: configuration rejected; keeping the running one"
                );
                count("rejected");
                return false;
            }
        };
        let running = tx.borrow().clone();
        let live: Vec<String> = changed_keys(&self.last_text, &text)
            .into_iter()
            .filter(|k| !needs_restart(k))
            .collect();
        let pending: Vec<String> = changed_keys(&self.boot_text, &text)
            .into_iter()
            .filter(|k| needs_restart(k))
            .collect();
        if new.log.level != running.log.level && !logging::set_level(&new.log.level) {
            tracing::warn!("reload: log.level not applied (STOREGW_LOG sets the filter)");
        }
        tx.send_replace(Arc::new(effective(&running, new)));
        self.last_text = text;
        count("applied");
        tracing::info!(
            file,
            applied = %if live.is_empty() { "(nothing)".to_string() } else { live.join(", ") },
            "configuration reloaded"
        );
        if !pending.is_empty() {
            tracing::warn!(
                keys = %pending.join(", "),
                "configuration changes that take effect only after a restart (systemctl restart storegw): {}",
                pending.join(", ")
            );
        }
        true
    }
}

fn count(result: &str) {
    metrics::global().count(
        "storegw_config_reloads_total",
        &metrics::labels(&[("result", result)]),
        1,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[gateway]\nstore_id = \"s1\"\ngateway_id = \"g1\"\n[log]\nlevel = \"info\"\n[sources.sim]\nrate = 10.0\n";

    #[test]
    fn classifies_changed_keys() {
        let new = BASE
            .replace("info", "debug")
            .replace("rate = 10.0", "rate = 20.0\nenabled = true")
            .replace("\"g1\"", "\"g2\"")
            + "[mqtt]\nhost = \"b\"\n";
        let keys = changed_keys(BASE, &new);
        assert_eq!(
            keys,
            [
                "gateway.gateway_id",
                "log.level",
                "mqtt.host",
                "sources.sim.enabled",
                "sources.sim.rate"
            ]
        );
        let restart: Vec<_> = keys.iter().filter(|k| needs_restart(k)).collect();
        assert_eq!(
            restart,
            ["gateway.gateway_id", "mqtt.host", "sources.sim.enabled"]
        );
    }

    #[test]
    fn effective_keeps_restart_only_settings() -> Result<(), config::ConfigError> {
        let running = config::parse("a.toml", BASE, None)?;
        let new = config::parse(
            "a.toml",
            &BASE
                .replace("\"g1\"", "\"g2\"")
                .replace("rate = 10.0", "rate = 99.0"),
            None,
        )?;
        let e = effective(&running, new);
        assert_eq!(e.gateway.gateway_id, "g1");
        assert_eq!(e.sources.sim.rate, 99.0);
        Ok(())
    }
}
