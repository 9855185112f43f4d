//! SIGHUP configuration reload: what applies at once, what waits for a restart, and keeping the
//! running configuration when the new file is bad (docs/design.md, "Reload").
//!
//! One table, [`rules`], decides for every key whether it applies live or needs a restart. The
//! same table builds the published configuration (restart-only settings keep their running
//! values), the log lines (applied / pending a restart) and the status file's
//! `pending_restart` list, so what the gateway says is what it does. Live settings reach the
//! sources through the `watch` channel of `Arc<Config>` in their `SourceContext`.

use crate::config::section::{self, Row};
use crate::config::{self, Config, RowSink, SourcesConfig};
use crate::ops::logging;
use crate::telemetry::metrics::{labels, Metric};
use crate::telemetry::Telemetry;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

/// Copies the running value of a restart-only setting into the configuration being published
/// (`(published, running)`).
pub type Keep = Box<dyn Fn(&mut Config, &Config) + Send + Sync>;

/// How a changed key takes effect.
pub enum Apply {
    /// A running task reads the new value (watch channel) and uses it at once.
    Live,
    /// Only a restart applies it; until then the function copies the running value into the
    /// configuration being published (`(published, running)`).
    Restart(Keep),
}

/// One row of the reload table: a dotted key or key prefix and how its changes apply.
pub struct Rule {
    /// Dotted key; it also covers every key below it (`mqtt` covers `mqtt.host`).
    pub key: String,
    /// Live or restart-only.
    pub apply: Apply,
}

/// The gateway's own sections' rows (keys in full); each feed brings its own rows with its
/// section (`RELOAD` in `src/source/<feed>/config.rs`).
const GATEWAY_ROWS: &[Row<Config>] = &[
    section::restart("gateway", |e, r| e.gateway = r.gateway.clone()),
    section::restart("mqtt", |e, r| {
        let drain_rate = e.mqtt.drain_rate;
        e.mqtt = r.mqtt.clone();
        e.mqtt.drain_rate = drain_rate;
    }),
    section::live("mqtt.drain_rate"),
    section::restart("spool", |e, r| e.spool = r.spool.clone()),
    section::restart("http", |e, r| e.http = r.http.clone()),
    section::live("privacy.min_count"),
    section::restart("privacy.rotation", |e, r| {
        e.privacy.rotation = r.privacy.rotation
    }),
    section::restart("privacy.pseudonym_bytes", |e, r| {
        e.privacy.pseudonym_bytes = r.privacy.pseudonym_bytes
    }),
    section::restart("privacy.customer", |e, r| {
        e.privacy.customer = r.privacy.customer
    }),
    section::restart("privacy.recipient_keys_file", |e, r| {
        e.privacy.recipient_keys_file = r.privacy.recipient_keys_file.clone()
    }),
    section::restart("privacy.join_key_file", |e, r| {
        e.privacy.join_key_file = r.privacy.join_key_file.clone()
    }),
    section::live("log.level"),
    section::restart("log.format", |e, r| e.log.format = r.log.format.clone()),
];

/// The reload table: the gateway's rows and every feed section's, lifted onto the whole
/// configuration. The most specific (longest) matching key wins, and a key no row covers needs
/// a restart (nothing is claimed live unless a task is known to read it).
pub fn rules() -> &'static [Rule] {
    static TABLE: std::sync::OnceLock<Vec<Rule>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t: Vec<Rule> = GATEWAY_ROWS
            .iter()
            .map(|r| Rule {
                key: r.key.to_string(),
                apply: match &r.apply {
                    section::Apply::Live => Apply::Live,
                    section::Apply::Restart(keep) => Apply::Restart(Box::new(*keep)),
                },
            })
            .collect();
        SourcesConfig::reload_rows(&mut Lift(&mut t));
        t
    })
}

/// Lifts a section's rows onto the whole configuration.
struct Lift<'a>(&'a mut Vec<Rule>);

impl RowSink for Lift<'_> {
    fn section<S: 'static>(
        &mut self,
        prefix: &'static str,
        rows: &'static [Row<S>],
        get: fn(&Config) -> &S,
        get_mut: fn(&mut Config) -> &mut S,
    ) {
        for r in rows {
            let key = if r.key.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}.{}", r.key)
            };
            let apply = match &r.apply {
                section::Apply::Live => Apply::Live,
                section::Apply::Restart(keep) => {
                    let keep = *keep;
                    Apply::Restart(Box::new(move |e: &mut Config, run: &Config| {
                        keep(get_mut(e), get(run))
                    }))
                }
            };
            self.0.push(Rule { key, apply });
        }
    }
}

/// The table row that governs `key`, if any.
pub fn rule(key: &str) -> Option<&'static Rule> {
    rules()
        .iter()
        .filter(|r| {
            key == r.key || (key.starts_with(r.key.as_str()) && key[r.key.len()..].starts_with('.'))
        })
        .max_by_key(|r| r.key.len())
}

/// True when changing `key` takes a restart to apply.
pub fn needs_restart(key: &str) -> bool {
    !matches!(rule(key).map(|r| &r.apply), Some(Apply::Live))
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
    // Broad rows first, so a narrower row (or a live exception inside a restart row) has the
    // last word on its own key.
    let mut rows: Vec<&Rule> = rules().iter().collect();
    rows.sort_by_key(|r| r.key.len());
    for r in rows {
        if let Apply::Restart(keep) = &r.apply {
            keep(&mut e, running);
        }
    }
    e
}

/// Reload state: the text the process started with (restart-only changes are measured against
/// it) and the text of the last applied reload (live changes are measured against that).
pub struct Reloader {
    boot_text: String,
    last_text: String,
    /// The pipeline's registries: reloads are counted there and pending keys reported there.
    telemetry: Telemetry,
}

impl Reloader {
    /// Remembers the configuration text the gateway started with; reports into `telemetry`.
    pub fn new(path: &Path, telemetry: Telemetry) -> Reloader {
        Self::from_text(std::fs::read_to_string(path).unwrap_or_default(), telemetry)
    }

    /// Starts from a configuration text (the local file merged with remote layers); reports
    /// into `telemetry`.
    pub fn from_text(text: String, telemetry: Telemetry) -> Reloader {
        Reloader {
            boot_text: text.clone(),
            last_text: text,
            telemetry,
        }
    }

    /// Re-reads `path`; on success publishes the effective configuration on `tx` and applies
    /// the log level. A bad file is logged issue by issue (`file:line: key: message`) and the
    /// running configuration stays. Returns whether the new file was accepted.
    pub fn reload(&mut self, path: &Path, tx: &watch::Sender<Arc<Config>>) -> bool {
        match self.read(path) {
            Some((text, new)) => {
                self.apply(&path.display().to_string(), text, new, tx);
                true
            }
            None => false,
        }
    }

    /// Reads and validates `path` as `check-config` does; a bad file is logged issue by issue
    /// and counted as a rejected reload.
    pub fn read(&self, path: &Path) -> Option<(String, Config)> {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(file, error = %e, "reload: cannot read the configuration; keeping the running one");
                self.count("rejected");
                return None;
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
                self.count("rejected");
                return None;
            }
        };
        Some((text, new))
    }

    /// Counts and logs a configuration refused after reading (remote layers that no longer fit).
    pub fn rejected(&self, file: &str, reason: &str) {
        tracing::error!(file, %reason, "reload: configuration rejected; keeping the running one");
        self.count("rejected");
    }

    /// Publishes an accepted configuration (`text` as parsed into `new`): live keys apply at
    /// once, restart-only keys keep their running values and are reported as pending. SIGHUP
    /// and remote documents (already merged and validated) both end here.
    pub fn apply(
        &mut self,
        file: &str,
        text: String,
        new: Config,
        tx: &watch::Sender<Arc<Config>>,
    ) {
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
        self.count("applied");
        tracing::info!(
            file,
            applied = %if live.is_empty() { "(nothing)".to_string() } else { live.join(", ") },
            "configuration reloaded"
        );
        self.telemetry.health().set_pending_restart(pending.clone());
        if !pending.is_empty() {
            tracing::warn!(
                keys = %pending.join(", "),
                "configuration changes that take effect only after a restart (systemctl restart storegw): {}",
                pending.join(", ")
            );
        }
    }

    fn count(&self, result: &str) {
        self.telemetry
            .metrics()
            .count(Metric::ConfigReloads, &labels(&[("result", result)]), 1);
    }
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

    #[test]
    fn table_classes_drive_the_published_configuration() -> Result<(), config::ConfigError> {
        let base = format!(
            "{BASE}[sources.wifi]\ninterface = \"wlan1\"\nchannels = [1]\n\
             [sources.pos]\ndefault_currency = \"EUR\"\n[[sources.pos.watch]]\ndir = \"/a\"\n"
        );
        let new_text = base
            .replace("wlan1", "wlan2")
            .replace("[1]", "[6, 11]")
            .replace("EUR", "GBP")
            .replace("/a", "/b");
        let keys = changed_keys(&base, &new_text);
        let restart: Vec<_> = keys.iter().filter(|k| needs_restart(k)).collect();
        assert_eq!(
            restart,
            ["sources.pos.default_currency", "sources.wifi.interface"]
        );
        let running = config::parse("a.toml", &base, None)?;
        let e = effective(&running, config::parse("a.toml", &new_text, None)?);
        assert_eq!(e.sources.wifi.interface, "wlan1");
        assert_eq!(e.sources.wifi.channels, [6, 11]);
        assert_eq!(e.sources.pos.default_currency, "EUR");
        assert_eq!(
            e.sources.pos.watch.first().map(|w| w.dir.clone()),
            Some(std::path::PathBuf::from("/b"))
        );
        Ok(())
    }

    #[test]
    fn unknown_keys_are_never_claimed_live() {
        assert!(needs_restart("brand_new.key"));
        assert!(!needs_restart("mqtt.drain_rate"));
        assert!(needs_restart("mqtt.drain"));
        assert!(!needs_restart("sources.pos.watch"));
        assert!(needs_restart("sources.pos.http.token_file"));
    }
}
