//! The TOML configuration: schema, defaults and validation with `file:line: key: message` errors.
//!
//! Store IT edits one file; every mistake must point at the line to fix, so both serde errors
//! (unknown keys, wrong types) and semantic checks (bad ids, ranges, missing files) are reported
//! with the file, the line and the dotted key path.
//!
//! The layer has three floors (docs/design.md, "Configuration"): leaf modules that import
//! nothing of storegw ([`units`], [`ids`], [`files`], [`trusted_keys`], [`recipient_keys`],
//! [`demo`]); each feed's
//! section in its own `src/source/<feed>/config.rs`, built on the leaves only; and the root
//! [`Config`] here, assembled from both. Nothing here imports feed logic, `remote/`, `ops/` or
//! the demo.

pub mod demo;
pub mod feeds;
pub mod files;
pub mod ids;
pub mod recipient_keys;
pub mod section;
pub mod trusted_keys;
pub mod units;

/// Re-exported so that `crate::config::Dur` and the checks keep their paths for the layers above;
/// the feed sections import the leaf modules directly.
pub use files::{check_secret_mode, check_trusted_file};
pub use ids::{is_loopback_host, valid_id, RESERVED_GATEWAY_IDS, RESERVED_STORE_IDS};
pub use units::{ByteSize, Dur};

pub use crate::source::sim::config::SimConfig;
use section::{Row, Section};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use trusted_keys::TrustedKeys;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[gateway]`: this gateway's ids and state directory; the only required section.
    pub gateway: GatewayConfig,
    /// `[mqtt]`: the central broker, how to reach it, batching and reconnection.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// `[spool]`: the on-disk queue that keeps events while the broker is out of reach.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// `[privacy]`: device-key rotation, count suppression and customer identifiers.
    #[serde(default)]
    pub privacy: PrivacyConfig,
    /// `[http]`: the loopback server for metrics, health and POS push.
    #[serde(default)]
    pub http: HttpConfig,
    /// `[log]`: level and output format of storegw's own messages.
    #[serde(default)]
    pub log: LogConfig,
    /// `[sources.<feed>]`: every input feed, each off unless its `enabled` is written true.
    #[serde(default)]
    pub sources: SourcesConfig,
    /// Signed remote configuration (docs/fleet.md); off unless the section is written.
    #[serde(default)]
    pub remote: Option<RemoteConfig>,
}

/// `[remote]`: which keys may sign configuration documents for this gateway. Local-only: no
/// document may set any of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Trusted Ed25519 public keys, one `ed25519:<base64>` per line.
    pub public_key_file: PathBuf,
    /// How long a changed configuration has to reach the broker before it is rolled back.
    #[serde(default = "default_confirm_timeout")]
    pub confirm_timeout: Dur,
    /// The lowest document version accepted per layer, so a new or reset gateway (no replay
    /// floor yet) cannot be served an old document by a broker that withholds newer ones.
    #[serde(default)]
    pub min_version: MinVersion,
}

/// `[remote.min_version]`: the lowest acceptable document version of each layer (0: any).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MinVersion {
    /// Fleet documents below this version are refused, stored ones too; 0 (the default): any.
    pub fleet: i64,
    /// The same for this gateway's own documents; 0 (the default): any.
    pub gateway: i64,
}

fn default_confirm_timeout() -> Dur {
    Dur::secs(300)
}

/// Identity of this gateway and where it keeps state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// This store's id, a topic level: [A-Za-z0-9_-], 1-64 characters, not `_fleet`. Required.
    pub store_id: String,
    /// This box's id, unique within the store: as `store_id`, but not `config` or `cmd`. Required.
    pub gateway_id: String,
    /// Spool, status file and accepted remote documents (default `/var/lib/storegw`, systemd's
    /// StateDirectory=); relative paths are relative to the configuration file's directory.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/storegw")
}

/// The central broker and how to talk to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port`; overrides host/port/tls when set.
    pub url: Option<String>,
    /// Broker host when `url` is unset (default `127.0.0.1`); beside `url` it must agree with it.
    pub host: String,
    /// Broker port when `url` is unset (default 1883); beside `url` it must agree with it.
    pub port: u16,
    /// MQTT over TLS when `url` is unset (default false); beside `url` it must agree with it.
    pub tls: bool,
    /// PEM CA bundle that signed the broker's certificate; unset: the system bundle.
    pub ca_file: Option<PathBuf>,
    /// This gateway's PEM certificate for mutual TLS; set together with `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// The PEM private key of `client_cert_file`; a secret file (mode 0600).
    pub client_key_file: Option<PathBuf>,
    /// Broker user name; unset: no credentials. Without `password_file` the password is empty.
    pub username: Option<String>,
    /// File holding the broker password (trailing newline ignored); a secret (mode 0600).
    pub password_file: Option<PathBuf>,
    /// MQTT keep-alive interval: how soon a dead link is noticed (5s-65535s, default 30s).
    pub keep_alive: Dur,
    /// Topics are `{topic_prefix}/{store_id}/{gateway_id}/...` (default `storegw/v1`).
    pub topic_prefix: String,
    /// Events in one batch (one MQTT message) at most (1-10000, default 500).
    pub batch_max_events: usize,
    /// Bytes in one batch at most (1KiB-256MiB, default 256KiB).
    pub batch_max_bytes: ByteSize,
    /// How long a batch that is not full waits for more events (default 200ms).
    pub linger: Dur,
    /// Unacknowledged batches on the wire (1-1000, default 32); bounds duplicates after a
    /// reconnect.
    pub max_inflight: u16,
    /// Backoff ceiling of the first reconnect, doubled per attempt, full jitter (default 1s).
    pub reconnect_min: Dur,
    /// Largest backoff ceiling, not below `reconnect_min` (default 120s): a fleet reconnects
    /// as a spread after a broker restart.
    pub reconnect_max: Dur,
    /// Events per second after an outage; 0 = unlimited.
    pub drain_rate: u32,
    /// How often the retained status message is refreshed (at least 1s, default 60s).
    pub status_interval: Dur,
    /// On SIGTERM, how long to wait for in-flight acknowledgements before disconnecting
    /// (default 5s).
    pub shutdown_timeout: Dur,
    /// How long to wait for the broker's CONNACK (default 10s); `remote.confirm_timeout` must
    /// be longer.
    pub connect_timeout: Dur,
    /// Plain MQTT (no TLS) to a broker that is not on this machine is refused when it would
    /// carry credentials or POS data, unless this is written as `true` (docs/operations.md).
    pub allow_insecure: bool,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: None,
            host: "127.0.0.1".into(),
            port: 1883,
            tls: false,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            username: None,
            password_file: None,
            keep_alive: Dur::secs(30),
            topic_prefix: "storegw/v1".into(),
            batch_max_events: 500,
            batch_max_bytes: ByteSize(256 * 1024),
            linger: Dur(Duration::from_millis(200)),
            max_inflight: 32,
            reconnect_min: Dur::secs(1),
            reconnect_max: Dur::secs(120),
            drain_rate: 0,
            status_interval: Dur::secs(60),
            shutdown_timeout: Dur::secs(5),
            connect_timeout: Dur::secs(10),
            allow_insecure: false,
        }
    }
}

/// The durable queue on disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Sensor events reach disk at least this often, so a power cut loses at most this much
    /// (1ms-60s, default 1s); POS transactions are flushed before the HTTP 2xx regardless.
    pub flush_interval: Dur,
    /// sled page cache (at least 1MiB, default 8MiB); keep it small on a Raspberry Pi.
    pub cache_capacity: ByteSize,
    /// `[spool.ble]`: oldest BLE events are dropped beyond the caps (default 256MiB, 3d).
    pub ble: StreamCap,
    /// `[spool.wifi]`: oldest Wi-Fi events are dropped beyond the caps (default 128MiB, 3d).
    pub wifi: StreamCap,
    /// `[spool.pos]`: never dropped; new POS input is refused when full and an old backlog
    /// raises an alarm (default 512MiB, 30d).
    pub pos: StreamCap,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            flush_interval: Dur::secs(1),
            cache_capacity: ByteSize(8 * 1024 * 1024),
            ble: StreamCap {
                max_bytes: ByteSize(256 * 1024 * 1024),
                max_age: Dur::secs(3 * 86_400),
            },
            wifi: StreamCap {
                max_bytes: ByteSize(128 * 1024 * 1024),
                max_age: Dur::secs(3 * 86_400),
            },
            pos: StreamCap {
                max_bytes: ByteSize(512 * 1024 * 1024),
                max_age: Dur::secs(30 * 86_400),
            },
        }
    }
}

/// Caps of one stream's spool tree.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamCap {
    /// Bytes the stream's tree may hold (at least 64KiB): beyond it a sensor stream drops its
    /// oldest events and POS refuses new input (a till gets 503).
    pub max_bytes: ByteSize,
    /// Age of the oldest event kept (at least 1m): older sensor events are dropped, an older POS
    /// backlog raises an alarm.
    pub max_age: Dur,
}

/// Pseudonymization settings (docs/design.md, "Privacy model").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Device-key rotation period, aligned to local midnight when it divides a day.
    pub rotation: Dur,
    /// Counts below this are suppressed (reported as 0 with `suppressed: true`).
    pub min_count: u32,
    /// How POS customer identifiers leave the gateway ([`CustomerMode`]); unset: see
    /// [`PrivacyConfig::customer_mode`].
    pub customer: Option<CustomerMode>,
    /// The central platform's X25519 public keys (`x25519:<base64>` lines); customer
    /// identifiers are sealed to the first one.
    pub recipient_keys_file: Option<PathBuf>,
    /// File holding the customer join key shared with the CDP (`customer = "keyed"`).
    pub join_key_file: Option<PathBuf>,
    /// Bytes of the HMAC kept for device pseudonyms (hex-encoded on the wire).
    pub pseudonym_bytes: usize,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            rotation: Dur::secs(86_400),
            min_count: 1,
            customer: None,
            recipient_keys_file: None,
            join_key_file: None,
            pseudonym_bytes: 8,
        }
    }
}

/// `privacy.customer`: what becomes of a POS customer identifier (loyalty id, e-mail, phone)
/// after its normalization (docs/pos.md, "Customer identifiers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CustomerMode {
    /// Encrypted to the central platform's key (HPKE): no gateway can open or test a token.
    Sealed,
    /// HMAC-SHA256 under the join key every gateway and the platform share: deterministic at
    /// the edge, but whoever holds one gateway's key can test guesses.
    Keyed,
    /// Not published at all.
    Drop,
}

impl CustomerMode {
    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            CustomerMode::Sealed => "sealed",
            CustomerMode::Keyed => "keyed",
            CustomerMode::Drop => "drop",
        }
    }
}

impl PrivacyConfig {
    /// The mode in force: `privacy.customer` when written; otherwise `sealed` when a recipient
    /// key file is set (the recommendation), `keyed` when only a join key file is, else `drop`.
    pub fn customer_mode(&self) -> CustomerMode {
        match self.customer {
            Some(m) => m,
            None if self.recipient_keys_file.is_some() => CustomerMode::Sealed,
            None if self.join_key_file.is_some() => CustomerMode::Keyed,
            None => CustomerMode::Drop,
        }
    }
}

/// The loopback HTTP server: metrics, health and POS ingest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Run the server (default true); off, there is no `/metrics`, `/healthz` or POS push.
    pub enabled: bool,
    /// Address and port (default `127.0.0.1:9380`); another port needs the unit's
    /// `SocketBindAllow=` changed too.
    pub listen: String,
    /// A connection must send a complete request head within this time.
    pub header_timeout: Dur,
    /// A connection with no byte read or written for this long is closed (keep-alive idle,
    /// half-open clients).
    pub idle_timeout: Dur,
    /// Open connections at most; beyond it a new connection gets `503` and is closed at once,
    /// and `/healthz` reports the saturation.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: "127.0.0.1:9380".into(),
            header_timeout: Dur::secs(10),
            idle_timeout: Dur::secs(60),
            max_connections: 64,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `trace`, `debug`, `info` (the default), `warn` or `error`; `STOREGW_LOG` overrides it.
    pub level: String,
    /// `auto` (journald under systemd, text on a terminal), `text`, `json` or `journald`; read
    /// at start only.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "auto".into(),
        }
    }
}

/// Declares [`SourcesConfig`] from the list of feeds ([`feeds::with_feeds`]): each feed's
/// field, and its entry in the checks, the path resolution and the reload table, so a new feed
/// adds nothing here (docs/design.md, "Adding a feed").
macro_rules! feed_sections {
    ($($name:ident: $feed:ident, $ty:path;)+) => {
        /// Every input feed's section, `[sources.<feed>]`.
        #[derive(Debug, Clone, Default, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct SourcesConfig {
            $(
                /// The feed's section, `[sources.<feed>]`, declared in its `config.rs`.
                pub $name: $ty,
            )+
        }

        impl SourcesConfig {
            /// Every section, for its checks.
            pub fn sections(&self) -> Vec<&dyn Section> {
                vec![$(&self.$name as &dyn Section),+]
            }

            /// Every section, for path resolution.
            pub fn sections_mut(&mut self) -> Vec<&mut dyn Section> {
                vec![$(&mut self.$name as &mut dyn Section),+]
            }

            /// Hands every section's reload rows to `sink`, with the section's dotted prefix
            /// and how to reach the section in a whole configuration.
            pub fn reload_rows(sink: &mut impl RowSink) {
                $(
                    sink.section(
                        concat!("sources.", stringify!($name)),
                        <$ty>::RELOAD,
                        |c| &c.sources.$name,
                        |c| &mut c.sources.$name,
                    );
                )+
            }
        }
    };
}

feeds::with_feeds!(feed_sections);

/// Receives the reload rows of each feed section (see [`SourcesConfig::reload_rows`]); the
/// reload table (`ops::reload`) lifts them onto the whole configuration.
pub trait RowSink {
    /// One section's rows.
    fn section<S: 'static>(
        &mut self,
        prefix: &'static str,
        rows: &'static [Row<S>],
        get: fn(&Config) -> &S,
        get_mut: fn(&mut Config) -> &mut S,
    );
}

/// One configuration problem, located as precisely as the file allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The file as named to the loader (`merged` for a remote document's merge).
    pub file: String,
    /// 1-based line of the key or, failing that, of its table; None when no line can be named.
    pub line: Option<usize>,
    /// Dotted key path (`mqtt.port`), or `(file)` / `(syntax)` when no key is to blame.
    pub key: String,
    /// What is wrong, and where it helps, what to write instead.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}: {}", self.file, l, self.key, self.message),
            None => write!(f, "{}: {}: {}", self.file, self.key, self.message),
        }
    }
}

/// Every problem found in a configuration file (never empty).
#[derive(Debug, Clone)]
pub struct ConfigError(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads, parses and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(vec![ConfigIssue {
            file: file.clone(),
            line: None,
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    parse(&file, &text, path.parent())
}

/// A parse message without the text values it quotes: serde writes a string of the wrong
/// type as `string "…"`, and a file's strings can be the store's own device addresses
/// (`sources.wifi.infrastructure`) or other values nobody should find in a log. The key and
/// line say where; the type says what was wrong.
fn without_strings(msg: &str) -> String {
    // serde's enums name the unknown value in backticks (`unknown variant \`x\`, expected …`).
    let msg = match msg.split_once("unknown variant `") {
        Some((head, tail)) => match tail.split_once('`') {
            Some((_, after)) => format!("{head}unknown variant{after}"),
            None => format!("{head}unknown variant"),
        },
        None => msg.to_string(),
    };
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg.as_str();
    while let Some(at) = rest.find("string \"") {
        out.push_str(rest.get(..at).unwrap_or_default());
        out.push_str("a string");
        let value = rest.get(at + "string \"".len()..).unwrap_or_default();
        // The value is written with Rust's debug escapes: `\"` does not close it.
        let mut escaped = false;
        let close = value.char_indices().find(|&(_, c)| {
            let end = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            end
        });
        rest = match close {
            Some((i, _)) => value.get(i + 1..).unwrap_or_default(),
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// Parses and validates configuration text; `file` names it in messages, `base` resolves
/// relative paths of secret files.
pub fn parse(file: &str, text: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
    let mut cfg: Config = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        let key = line
            .and_then(|l| key_path_at_line(text, l))
            .unwrap_or_else(|| "(syntax)".into());
        let message = without_strings(&e.message().trim().replace('\n', " "));
        ConfigError(vec![ConfigIssue {
            file: file.to_string(),
            line,
            key,
            message,
        }])
    })?;
    cfg.resolve_paths(base);
    // Which keys the file writes (serde defaults hide that): a `tls` or `host` written next to
    // a `url` that says otherwise is a contradiction, not something to override silently.
    let written: toml::Table = toml::from_str(text).unwrap_or_default();
    let issues: Vec<ConfigIssue> = validate(&cfg, &written)
        .into_iter()
        .map(|(key, message)| ConfigIssue {
            file: file.to_string(),
            line: line_of_key(text, &key),
            key,
            message,
        })
        .collect();
    if issues.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigError(issues))
    }
}

impl Config {
    /// Secret and certificate paths are relative to the config file's directory.
    fn resolve_paths(&mut self, base: Option<&Path>) {
        let Some(base) = base else { return };
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p {
                if path.is_relative() {
                    *path = base.join(&path);
                }
            }
        };
        fix(&mut self.mqtt.ca_file);
        fix(&mut self.mqtt.client_cert_file);
        fix(&mut self.mqtt.client_key_file);
        fix(&mut self.mqtt.password_file);
        fix(&mut self.privacy.join_key_file);
        fix(&mut self.privacy.recipient_keys_file);
        if let Some(r) = &mut self.remote {
            if r.public_key_file.is_relative() {
                r.public_key_file = base.join(&r.public_key_file);
            }
        }
        for section in self.sources.sections_mut() {
            section.resolve(base);
        }
        if self.gateway.state_dir.is_relative() {
            self.gateway.state_dir = base.join(&self.gateway.state_dir);
        }
    }

    /// Directory of the sled spool.
    pub fn spool_dir(&self) -> PathBuf {
        self.gateway.state_dir.join("spool")
    }

    /// Broker host, port and whether TLS is on, after applying `url`.
    pub fn broker(&self) -> Result<(String, u16, bool), String> {
        match &self.mqtt.url {
            None => Ok((self.mqtt.host.clone(), self.mqtt.port, self.mqtt.tls)),
            Some(url) => parse_broker_url(url),
        }
    }
}

/// Parses `mqtt://host[:port]` / `mqtts://host[:port]` (also `tcp://`, `ssl://`).
pub fn parse_broker_url(url: &str) -> Result<(String, u16, bool), String> {
    let (scheme, rest) = url
        .split_once("://")
        // Not quoted back: a mistyped URL may hold a password.
        .ok_or_else(|| "not a URL (mqtt://host:port or mqtts://host:port)".to_string())?;
    let tls = match scheme {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" | "tls" => true,
        other => return Err(format!("unsupported scheme `{other}` (mqtt or mqtts)")),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('@') {
        return Err(
            "the URL may hold only host and port; credentials go in username/password_file".into(),
        );
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']').to_string(),
            p.parse::<u16>()
                .map_err(|_| "the port is not a number from 0 to 65535".to_string())?,
        ),
        _ => (rest.to_string(), if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err("empty host".into());
    }
    Ok((host, port, tls))
}

/// Every secret file the configuration names, with its dotted key.
fn secret_files(c: &Config) -> Vec<(String, &Path)> {
    let mut v: Vec<(String, &Path)> = [
        ("mqtt.password_file", &c.mqtt.password_file),
        ("mqtt.client_key_file", &c.mqtt.client_key_file),
        ("privacy.join_key_file", &c.privacy.join_key_file),
        (
            "sources.pos.http.token_file",
            &c.sources.pos.http.token_file,
        ),
    ]
    .into_iter()
    .filter_map(|(k, p)| p.as_deref().map(|p| (k.to_string(), p)))
    .collect();
    for (i, p) in c.sources.pos.poll.iter().enumerate() {
        if let Some(t) = &p.token_file {
            v.push((format!("sources.pos.poll.{i}.token_file"), t.as_path()));
        }
    }
    v
}

/// `url` against `tls`/`host`/`port` written beside it, and plain MQTT to a remote broker
/// carrying credentials or POS data (refused unless `allow_insecure = true`).
fn check_transport(c: &Config, written: &toml::Table, v: &mut Vec<(String, String)>) {
    let m = &c.mqtt;
    let wrote = |k: &str| {
        written
            .get("mqtt")
            .and_then(|t| t.as_table())
            .is_some_and(|t| t.contains_key(k))
    };
    if let Some(url) = &m.url {
        if let Ok((host, port, tls)) = parse_broker_url(url) {
            if wrote("tls") && m.tls != tls {
                let (said, is) = if m.tls {
                    ("true", "plain MQTT without TLS")
                } else {
                    ("false", "MQTT over TLS")
                };
                v.push((
                    "mqtt.tls".into(),
                    format!(
                        "tls = {said} contradicts url `{url}` ({is}); give the scheme in url (mqtts:// for TLS) and remove tls"
                    ),
                ));
            }
            if wrote("host") && !m.host.trim().eq_ignore_ascii_case(&host) {
                v.push((
                    "mqtt.host".into(),
                    format!(
                        "`{}` contradicts url `{url}` (host `{host}`); set the broker in url or in host/port, not both",
                        m.host
                    ),
                ));
            }
            if wrote("port") && m.port != port {
                v.push((
                    "mqtt.port".into(),
                    format!(
                        "{} contradicts url `{url}` (port {port}); set the broker in url or in host/port, not both",
                        m.port
                    ),
                ));
            }
        }
    }
    let Ok((host, _, tls)) = c.broker() else {
        return;
    };
    if tls || is_loopback_host(&host) || m.allow_insecure {
        return;
    }
    let mut what = Vec::new();
    if m.username.is_some() || m.password_file.is_some() {
        what.push("the MQTT credentials");
    }
    if c.sources.pos.enabled {
        what.push("POS transactions");
    }
    if what.is_empty() {
        return;
    }
    let key = if m.url.is_some() {
        "mqtt.url"
    } else {
        "mqtt.tls"
    };
    v.push((
        key.into(),
        format!(
            "plain MQTT (no TLS) to `{host}`, which is not this machine, would send {} in clear; use mqtts:// (or tls = true), or write allow_insecure = true to accept that",
            what.join(" and ")
        ),
    ));
}

fn check_file(issues: &mut Vec<(String, String)>, key: &str, p: &Option<PathBuf>) {
    if let Some(path) = p {
        if let Err(e) = std::fs::metadata(path) {
            issues.push((key.into(), format!("cannot read `{}`: {e}", path.display())));
        }
    }
}

/// Semantic checks serde cannot express; returns (key path, message) pairs.
fn validate(c: &Config, written: &toml::Table) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    let mut bad = |k: &str, m: String| v.push((k.to_string(), m));
    if !valid_id(&c.gateway.store_id) {
        bad(
            "gateway.store_id",
            format!("`{}` must match [A-Za-z0-9_-]{{1,64}}", c.gateway.store_id),
        );
    } else if RESERVED_STORE_IDS.contains(&c.gateway.store_id.as_str()) {
        bad(
            "gateway.store_id",
            format!(
                "`{}` is reserved for the fleet-wide topic; choose another id",
                c.gateway.store_id
            ),
        );
    }
    if !valid_id(&c.gateway.gateway_id) {
        bad(
            "gateway.gateway_id",
            format!(
                "`{}` must match [A-Za-z0-9_-]{{1,64}}",
                c.gateway.gateway_id
            ),
        );
    } else if RESERVED_GATEWAY_IDS.contains(&c.gateway.gateway_id.as_str()) {
        bad(
            "gateway.gateway_id",
            format!(
                "`{}` is a topic level of the remote topics; choose another id",
                c.gateway.gateway_id
            ),
        );
    }
    let m = &c.mqtt;
    if let Some(url) = &m.url {
        if let Err(e) = parse_broker_url(url) {
            bad("mqtt.url", e);
        }
    } else if m.host.trim().is_empty() {
        bad("mqtt.host", "must not be empty".into());
    }
    if m.port == 0 {
        bad("mqtt.port", "must be 1-65535".into());
    }
    let p = &m.topic_prefix;
    if p.is_empty()
        || p.starts_with('/')
        || p.ends_with('/')
        || p.contains(['+', '#', '\0'])
        || p.contains("//")
    {
        bad(
            "mqtt.topic_prefix",
            format!("`{p}` must be non-empty topic levels without wildcards or empty levels"),
        );
    }
    if !(1..=10_000).contains(&m.batch_max_events) {
        bad(
            "mqtt.batch_max_events",
            format!("{} is out of range 1-10000", m.batch_max_events),
        );
    }
    if !(1024..=256 * 1024 * 1024).contains(&m.batch_max_bytes.0) {
        bad(
            "mqtt.batch_max_bytes",
            "must be between 1KiB and 256MiB".into(),
        );
    }
    if m.max_inflight == 0 || m.max_inflight > 1000 {
        bad(
            "mqtt.max_inflight",
            format!("{} is out of range 1-1000", m.max_inflight),
        );
    }
    if m.keep_alive.0 < Duration::from_secs(5) || m.keep_alive.0 > Duration::from_secs(65_535) {
        bad("mqtt.keep_alive", "must be between 5s and 65535s".into());
    }
    if m.reconnect_min.0.is_zero() {
        bad("mqtt.reconnect_min", "must be greater than 0".into());
    }
    if m.reconnect_max.0 < m.reconnect_min.0 {
        bad(
            "mqtt.reconnect_max",
            "must not be smaller than mqtt.reconnect_min".into(),
        );
    }
    if m.status_interval.0 < Duration::from_secs(1) {
        bad("mqtt.status_interval", "must be at least 1s".into());
    }
    if m.client_key_file.is_some() != m.client_cert_file.is_some() {
        bad(
            "mqtt.client_cert_file",
            "client_cert_file and client_key_file go together (mutual TLS)".into(),
        );
    }
    if m.password_file.is_some() && m.username.is_none() {
        bad(
            "mqtt.username",
            "password_file is set but username is missing".into(),
        );
    }
    let tls_on = c.broker().map(|b| b.2).unwrap_or(m.tls);
    if !tls_on && (m.ca_file.is_some() || m.client_cert_file.is_some()) {
        bad(
            "mqtt.tls",
            "certificate files are set but TLS is off (set tls = true or use mqtts://)".into(),
        );
    }
    check_file(&mut v, "mqtt.ca_file", &m.ca_file);
    check_file(&mut v, "mqtt.client_cert_file", &m.client_cert_file);
    check_file(&mut v, "mqtt.client_key_file", &m.client_key_file);
    check_file(&mut v, "mqtt.password_file", &m.password_file);
    check_file(&mut v, "privacy.join_key_file", &c.privacy.join_key_file);
    for (key, path) in secret_files(c) {
        if let Err(e) = check_secret_mode(path) {
            v.push((key, e));
        }
    }
    check_transport(c, written, &mut v);
    let mut bad = |k: &str, m: String| v.push((k.to_string(), m));
    let s = &c.spool;
    if s.flush_interval.0.is_zero() || s.flush_interval.0 > Duration::from_secs(60) {
        bad("spool.flush_interval", "must be between 1ms and 60s".into());
    }
    if s.cache_capacity.0 < 1024 * 1024 {
        bad("spool.cache_capacity", "must be at least 1MiB".into());
    }
    for (name, cap) in [("ble", &s.ble), ("wifi", &s.wifi), ("pos", &s.pos)] {
        if cap.max_bytes.0 < 64 * 1024 {
            bad(
                &format!("spool.{name}.max_bytes"),
                "must be at least 64KiB".into(),
            );
        }
        if cap.max_age.0 < Duration::from_secs(60) {
            bad(
                &format!("spool.{name}.max_age"),
                "must be at least 1m".into(),
            );
        }
    }
    let pr = &c.privacy;
    check_customer(pr, &mut bad);
    if pr.rotation.0 < Duration::from_secs(60) {
        bad("privacy.rotation", "must be at least 1m".into());
    }
    if !(4..=32).contains(&pr.pseudonym_bytes) {
        bad("privacy.pseudonym_bytes", "must be between 4 and 32".into());
    }
    if c.http.enabled && c.http.listen.parse::<std::net::SocketAddr>().is_err() {
        bad(
            "http.listen",
            format!("`{}` is not an address:port", c.http.listen),
        );
    }
    for (k, d) in [
        ("http.header_timeout", c.http.header_timeout.0),
        ("http.idle_timeout", c.http.idle_timeout.0),
    ] {
        if d.is_zero() {
            bad(k, "must be greater than 0".into());
        }
    }
    if !(1..=100_000).contains(&c.http.max_connections) {
        bad(
            "http.max_connections",
            "must be between 1 and 100000".into(),
        );
    }
    if !["trace", "debug", "info", "warn", "error"].contains(&c.log.level.as_str()) {
        bad(
            "log.level",
            format!(
                "`{}` is not one of trace, debug, info, warn, error",
                c.log.level
            ),
        );
    }
    if !["auto", "text", "json", "journald"].contains(&c.log.format.as_str()) {
        bad(
            "log.format",
            format!(
                "`{}` is not one of auto, text, json, journald",
                c.log.format
            ),
        );
    }
    for section in c.sources.sections() {
        section.check(&mut v);
    }
    if let Some(r) = &c.remote {
        check_remote(r, c.mqtt.connect_timeout.0, &mut v);
    }
    v
}

/// `privacy.customer` against the key files it needs, and the recipient key file in full: it
/// must be writable only by root or the service user (whoever can swap it receives every
/// customer identifier) and hold usable keys. A file that cannot be read or parsed is refused
/// here, so a gateway never starts with sealing it cannot do.
fn check_customer(pr: &PrivacyConfig, bad: &mut impl FnMut(&str, String)) {
    let mode = pr.customer_mode();
    match (mode, &pr.recipient_keys_file, &pr.join_key_file) {
        (CustomerMode::Sealed, None, _) => bad(
            "privacy.customer",
            "\"sealed\" needs privacy.recipient_keys_file (the central platform's public keys)"
                .into(),
        ),
        (CustomerMode::Keyed, _, None) => bad(
            "privacy.customer",
            "\"keyed\" needs privacy.join_key_file".into(),
        ),
        _ => {}
    }
    if let Some(p) = &pr.recipient_keys_file {
        let key = "privacy.recipient_keys_file";
        match check_trusted_file(p) {
            Err(e) => bad(key, e),
            Ok(()) => {
                if let Err(e) = recipient_keys::RecipientKeys::load(p) {
                    bad(key, e);
                }
            }
        }
    }
}

/// One line for `check-config`: which customer mode is active and with which key.
pub fn customer_summary(c: &Config) -> String {
    let pr = &c.privacy;
    let mode = pr.customer_mode();
    let how = if pr.customer.is_some() {
        "set"
    } else {
        "default"
    };
    match mode {
        CustomerMode::Sealed => {
            let keys = pr
                .recipient_keys_file
                .as_deref()
                .and_then(|p| recipient_keys::RecipientKeys::load(p).ok())
                .unwrap_or_default();
            let ids: Vec<String> = keys
                .all()
                .iter()
                .map(|k| recipient_keys::key_id_hex(&k.id))
                .collect();
            let (first, rest) = ids.split_first().map_or(("?", &[][..]), |(f, r)| (f.as_str(), r));
            let others = if rest.is_empty() {
                String::new()
            } else {
                format!(" (also listed, not used for sealing: {})", rest.join(", "))
            };
            format!(
                "privacy.customer: sealed ({how}): customer identifiers sealed to key {first}{others}"
            )
        }
        CustomerMode::Keyed => format!(
            "privacy.customer: keyed ({how}): customer identifiers as HMAC-SHA256 under the join key (prefer \"sealed\": a stolen gateway's join key reverses every keyed pseudonym)"
        ),
        CustomerMode::Drop => format!(
            "privacy.customer: drop ({how}): customer identifiers are not published"
        ),
    }
}

/// `[remote]`: the public key file must exist, hold at least one key and be writable only by
/// its owner (public keys are not secret, so 0644 is fine; a key anyone may append to is not).
/// `confirm_timeout` must leave a connection attempt time to finish, or every change that needs
/// a restart would be rolled back.
fn check_remote(r: &RemoteConfig, connect_timeout: Duration, v: &mut Vec<(String, String)>) {
    let key = "remote.public_key_file";
    let p = &r.public_key_file;
    match check_trusted_file(p) {
        Err(e) => v.push((key.into(), e)),
        Ok(()) => {
            if let Err(e) = TrustedKeys::load(p) {
                v.push((key.into(), e));
            }
        }
    }
    for (k, n) in [
        ("remote.min_version.fleet", r.min_version.fleet),
        ("remote.min_version.gateway", r.min_version.gateway),
    ] {
        if n < 0 {
            v.push((k.into(), "must be 0 or a positive version".into()));
        }
    }
    let t = r.confirm_timeout.0;
    if t > Duration::from_secs(3600) {
        v.push(("remote.confirm_timeout".into(), "must be at most 1h".into()));
    } else if t <= connect_timeout {
        v.push((
            "remote.confirm_timeout".into(),
            format!(
                "must be longer than mqtt.connect_timeout ({}s): a slow connection would roll every change back",
                connect_timeout.as_secs_f64()
            ),
        ));
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map(|t| t.matches('\n').count() + 1)
        .unwrap_or(1)
}

/// Walks the file tracking `[table]` headers; yields (line, dotted key) for each `key = value`.
fn key_lines(text: &str) -> Vec<(usize, String)> {
    let mut table = String::new();
    let mut out = Vec::new();
    // Brackets still open in a value: its next lines are elements of an array (a line
    // `["dc:fb:…"],` is a value, not a table header, and must never become a key name).
    let mut open = 0i64;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if open > 0 {
            open = (open + bracket_balance(line)).max(0);
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            let name = line
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim();
            table = name.replace([' ', '"'], "");
            out.push((i + 1, table.clone()));
        } else if let Some((k, v)) = line.split_once('=') {
            open = bracket_balance(v).max(0);
            let k = k.trim().trim_matches('"');
            let full = if table.is_empty() {
                k.to_string()
            } else {
                format!("{table}.{k}")
            };
            out.push((i + 1, full));
        }
    }
    out
}

/// `[` minus `]` in a line of TOML, outside strings and comments.
fn bracket_balance(line: &str) -> i64 {
    let mut n = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in line.chars() {
        match quote {
            Some(q) => {
                if c == q && !escaped {
                    quote = None;
                }
                escaped = q == '"' && c == '\\' && !escaped;
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '#' => break,
                '[' => n += 1,
                ']' => n -= 1,
                _ => {}
            },
        }
    }
    n
}

/// Line where a dotted key (or, failing that, its nearest enclosing table) is defined.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let lines = key_lines(text);
    let mut k = key.to_string();
    loop {
        if let Some((l, _)) = lines.iter().find(|(_, name)| *name == k) {
            return Some(*l);
        }
        match k.rsplit_once('.') {
            Some((parent, _)) => k = parent.to_string(),
            None => return None,
        }
    }
}

/// Dotted key defined at (or governing) a line.
fn key_path_at_line(text: &str, line: usize) -> Option<String> {
    key_lines(text)
        .into_iter()
        .take_while(|(l, _)| *l <= line)
        .last()
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_array_element_is_never_read_as_a_table_name() {
        let text = "[sources.wifi]\ninfrastructure = [\n  [\"dc:fb:48:68:be:e4\"],\n  \"x]\", # ]\n]\nenabled = true\n[http]\n";
        assert_eq!(
            key_path_at_line(text, 3).as_deref(),
            Some("sources.wifi.infrastructure")
        );
        assert_eq!(
            key_path_at_line(text, 4).as_deref(),
            Some("sources.wifi.infrastructure")
        );
        assert_eq!(
            key_path_at_line(text, 6).as_deref(),
            Some("sources.wifi.enabled")
        );
        assert_eq!(key_path_at_line(text, 7).as_deref(), Some("http"));
    }

    #[test]
    fn parse_messages_quote_no_string_value() {
        assert_eq!(
            without_strings(r#"invalid type: string "dc:fb:48:68:be:e4", expected a sequence"#),
            "invalid type: a string, expected a sequence"
        );
        assert_eq!(
            without_strings(r#"invalid type: string "a\"b", expected x; string "c""#),
            "invalid type: a string, expected x; a string"
        );
        assert_eq!(without_strings("expected a boolean"), "expected a boolean");
        assert_eq!(
            without_strings("unknown variant `dc:fb:48:68:be:e4`, expected `keyed` or `sealed`"),
            "unknown variant, expected `keyed` or `sealed`"
        );
        assert_eq!(
            parse_broker_url("user:secret@broker").map_err(|e| e.contains("secret")),
            Err(false)
        );
        assert_eq!(
            parse_broker_url("mqtt://broker:secret").map_err(|e| e.contains("secret")),
            Err(false)
        );
        assert_eq!(without_strings(r#"string "unclosed"#), "a string");
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker_url("mqtts://b.example:8884"),
            Ok(("b.example".into(), 8884, true))
        );
        assert_eq!(parse_broker_url("mqtt://b"), Ok(("b".into(), 1883, false)));
        assert!(parse_broker_url("http://b").is_err());
        assert!(parse_broker_url("mqtt://u:p@b").is_err());
    }

    #[test]
    fn error_names_line_and_key() {
        let text = "[gateway]\nstore_id = \"s1\"\ngateway_id = \"g/1\"\n\n[mqtt]\nport = 1883\n";
        let err = parse("x.toml", text, None).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("x.toml:3: gateway.gateway_id: `g/1` must match [A-Za-z0-9_-]{1,64}")
        );
        let text = "[gateway]\nstore_id = \"s1\"\ngateway_id = \"g1\"\n[mqtt]\nprot = 1\n";
        let err = parse("x.toml", text, None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("x.toml:5: mqtt.prot: unknown field `prot`"),
            "{err}"
        );
    }

    #[test]
    fn ids_that_would_reach_the_remote_topics_are_refused() {
        for (store, gateway, key) in [
            ("_fleet", "g1", "gateway.store_id"),
            ("s1", "config", "gateway.gateway_id"),
            ("s1", "cmd", "gateway.gateway_id"),
        ] {
            let t = format!(
                "[gateway]\nstore_id = \"{store}\"\ngateway_id = \"{gateway}\"\n[http]\nenabled = false\n"
            );
            let e = parse("x.toml", &t, None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.contains(key) && e.contains("reserved") || e.contains("topic level"),
                "{e}"
            );
        }
    }

    #[test]
    fn customer_mode_and_recipient_key_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut nine = [0u8; 32];
        nine[0] = 9;
        let line = recipient_keys::format_public_key(&nine);
        std::fs::write(dir.path().join("r.pub"), format!("# platform\n{line}\n"))?;
        std::fs::write(dir.path().join("j.key"), "0123456789abcdef0123")?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                dir.path().join("j.key"),
                std::fs::Permissions::from_mode(0o600),
            )?;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        }
        let base = "[gateway]\nstore_id = \"s1\"\ngateway_id = \"g1\"\n[http]\nenabled = false\n[privacy]\n";
        let parse_with = |extra: &str| parse("x.toml", &format!("{base}{extra}"), Some(dir.path()));
        // With a recipient key, sealed is the default (even beside a join key).
        let c = parse_with("recipient_keys_file = \"r.pub\"\njoin_key_file = \"j.key\"\n")?;
        assert_eq!(c.privacy.customer_mode(), CustomerMode::Sealed);
        let line_out = customer_summary(&c);
        assert!(line_out.contains("sealed (default)"), "{line_out}");
        assert!(line_out.contains(&recipient_keys::key_id_hex(&recipient_keys::key_id(&nine))));
        let c = parse_with("join_key_file = \"j.key\"\n")?;
        assert_eq!(c.privacy.customer_mode(), CustomerMode::Keyed);
        let c = parse_with("")?;
        assert_eq!(c.privacy.customer_mode(), CustomerMode::Drop);
        assert!(customer_summary(&c).contains("drop (default)"));
        let c = parse_with("customer = \"drop\"\nrecipient_keys_file = \"r.pub\"\n")?;
        assert_eq!(c.privacy.customer_mode(), CustomerMode::Drop);
        let e = parse_with("customer = \"sealed\"\n")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("x.toml:7: privacy.customer: \"sealed\" needs privacy.recipient_keys_file (the central platform's public keys)")
        );
        let e = parse_with("customer = \"keyed\"\n")
            .err()
            .map(|e| e.to_string());
        assert!(e
            .unwrap_or_default()
            .contains("needs privacy.join_key_file"));
        let e = parse_with("customer = \"plain\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("x.toml:7: privacy.customer: unknown variant"),
            "{e}"
        );
        // A bad key file: the configuration's file, line and key, then the key file and its line.
        std::fs::write(dir.path().join("r.pub"), format!("{line}\nx25519:AAAA\n"))?;
        let e = parse_with("recipient_keys_file = \"r.pub\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("x.toml:7: privacy.recipient_keys_file: `"),
            "{e}"
        );
        assert!(
            e.contains("r.pub`: line 2: recipient key has 3 bytes, not 32"),
            "{e}"
        );
        std::fs::remove_file(dir.path().join("r.pub"))?;
        let e = parse_with("recipient_keys_file = \"r.pub\"\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("privacy.recipient_keys_file") && e.contains("cannot read"),
            "{e}"
        );
        Ok(())
    }

    #[test]
    fn remote_section_checks_the_key_file() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let key = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
        let line = trusted_keys::format_public_key(&key.verifying_key());
        std::fs::write(dir.path().join("remote.pub"), format!("{line}\n"))?;
        let set_mode = |m: u32| {
            std::fs::set_permissions(
                dir.path().join("remote.pub"),
                std::fs::Permissions::from_mode(m),
            )
        };
        let text = |extra: &str| {
            format!(
                "[gateway]\nstore_id = \"s1\"\ngateway_id = \"g1\"\n[http]\nenabled = false\n[remote]\npublic_key_file = \"remote.pub\"\n{extra}"
            )
        };
        let check = |t: &str| {
            parse("x.toml", t, Some(dir.path()))
                .err()
                .map(|e| e.to_string())
        };
        set_mode(0o644)?;
        let cfg = parse("x.toml", &text(""), Some(dir.path()))?;
        assert_eq!(
            cfg.remote.map(|r| r.confirm_timeout.0),
            Some(Duration::from_secs(300))
        );
        set_mode(0o664)?;
        let e = check(&text("")).unwrap_or_default();
        assert!(
            e.contains("remote.public_key_file") && e.contains("writable"),
            "{e}"
        );
        set_mode(0o644)?;
        // A directory others may write to lets them swap the file.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
        let e = check(&text("")).unwrap_or_default();
        assert!(
            e.contains("remote.public_key_file") && e.contains("its directory"),
            "{e}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        // A file owned by another user (only root can give one away; skipped otherwise).
        let me = files::current_uid();
        if me == Some(0) {
            std::os::unix::fs::chown(dir.path().join("remote.pub"), Some(4242), None)?;
            let e = check(&text("")).unwrap_or_default();
            assert!(e.contains("owned by uid 4242"), "{e}");
            std::os::unix::fs::chown(dir.path().join("remote.pub"), Some(0), None)?;
        } else {
            eprintln!("skipped the owner check: only root can give a file to another user");
        }
        let e = check(&text("[remote.min_version]\nfleet = -1\n")).unwrap_or_default();
        assert!(e.contains("remote.min_version.fleet"), "{e}");
        let cfg = parse(
            "x.toml",
            &text("[remote.min_version]\nfleet = 12\n"),
            Some(dir.path()),
        )?;
        assert_eq!(
            cfg.remote
                .map(|r| (r.min_version.fleet, r.min_version.gateway)),
            Some((12, 0))
        );
        set_mode(0o600)?;
        let e = check(&text("confirm_timeout = \"5s\"\n")).unwrap_or_default();
        assert!(e.contains("remote.confirm_timeout"), "{e}");
        let e = check(&text("confirm_timeout = \"2h\"\n")).unwrap_or_default();
        assert!(e.contains("remote.confirm_timeout"), "{e}");
        std::fs::write(dir.path().join("remote.pub"), "not a key\n")?;
        let e = check(&text("")).unwrap_or_default();
        assert!(e.contains("remote.public_key_file"), "{e}");
        std::fs::remove_file(dir.path().join("remote.pub"))?;
        let e = check(&text("")).unwrap_or_default();
        assert!(e.contains("cannot read"), "{e}");
        // Without the section remote configuration is off.
        let t = "[gateway]\nstore_id = \"s1\"\ngateway_id = \"g1\"\n[http]\nenabled = false\n";
        assert!(parse("x.toml", t, None)?.remote.is_none());
        Ok(())
    }
}
