//! The gateway's side of remote configuration and commands (docs/fleet.md, "On the gateway").
//!
//! The agent owns no I/O: the uplink hands it what arrives on the subscribed topics and tells
//! it when the broker is reached, and `daemon::run` carries out what it decides (apply a
//! configuration live, exit for a restart, run a command, publish an answer). Its decisions and
//! their reasons are kept in `{state_dir}/remote/` ([`StateDir`]) before they take effect, so a
//! restart or a power cut never loses a rollback or reopens a replay.
//!
//! A change that only touches live keys (the reload table, `ops::reload::rules`) is applied at
//! once. A change with a restart-only key is installed, and the process exits so systemd starts
//! it with the new configuration; that start has `remote.confirm_timeout` to reach the broker,
//! or it puts the previous document back and exits again. A start after the deadline rolls back
//! before anything runs, so a configuration that crashes the gateway is undone as well.
//!
//! The agent is split by responsibility: [`layers`] (the stored documents and their merge over
//! the local file), [`accept`] (the accept policy for a document that arrives), [`confirm`]
//! (confirmation, rollback and probation of a change) and [`commands`] (signed commands and the
//! nonce log). Each is an `impl Agent` block over the one state below.

mod accept;
mod commands;
mod confirm;
mod layers;
#[cfg(test)]
mod tests;

use crate::config::Config;
use crate::event::{now_ms, rfc3339_ms, SCHEMA};
use crate::remote::command::{self, NonceLog};
use crate::remote::document::{self, TrustedKeys};
use crate::remote::state::{Layer, Persisted, Report, ReportState, StateDir};
use crate::telemetry::Telemetry;
use commands::load_nonces;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Starts with an unconfirmed change before it is rolled back (a gateway that keeps crashing
/// with it never confirms it).
pub const MAX_UNCONFIRMED_STARTS: u32 = 3;

/// How long one start must run healthy after a change for the change to be trusted; until
/// then each start counts, and [`MAX_PROBATION_STARTS`] of them roll it back.
pub const PROBATION: Duration = Duration::from_secs(600);

/// Starts within [`PROBATION`] of a change that roll it back: below systemd's start limit
/// (the unit's `StartLimitBurst=10`), so the unit never stays failed because of a document.
pub const MAX_PROBATION_STARTS: u32 = 5;

/// One log line per this interval at most for unverified input on the remote topics.
const UNVERIFIED_LOG_EVERY: Duration = Duration::from_secs(60);

/// What a message on a config topic leads to.
#[derive(Debug)]
pub enum DocumentOutcome {
    /// Already in effect (a retained message delivered again at a reconnection): nothing to do.
    Unchanged,
    /// Nothing proves it came from a trusted key: counted and dropped, nothing reported.
    Ignored,
    /// Signed, but a change is still being confirmed: kept and processed once it is (or
    /// delivered again after a rollback's restart).
    Deferred,
    /// Refused; the reason is in the report. Nothing changed.
    Rejected(String),
    /// Accepted and every changed key is live: publish this configuration (merged text, config,
    /// changed keys).
    Live {
        /// The merged configuration text (the local file, then the fleet and gateway layers).
        text: String,
        /// That text parsed and validated, to publish to the running tasks.
        config: Box<Config>,
        /// Dotted keys whose value changed, every one of them live.
        changed: Vec<String>,
    },
    /// Accepted with restart-only keys: installed; the process must exit and be restarted.
    Restart {
        /// The changed keys that need the restart (dotted); the report names them too.
        keys: Vec<String>,
    },
}

/// What a message on the command topic leads to.
#[derive(Debug)]
pub enum CommandOutcome {
    /// Verified: carry out the action, then answer with [`Agent::command_result`].
    Run(command::Command),
    /// Refused: publish this answer on `.../cmd/result`.
    Refused(Vec<u8>),
    /// Nothing proves it came from a trusted key: counted and dropped, not answered.
    Ignored,
}

/// The topics an agent listens on, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbox {
    /// `{prefix}/_fleet/config` or this gateway's own config topic, by layer.
    Config(Layer),
    /// This gateway's `{prefix}/{store}/{gateway}/cmd`: signed commands.
    Command,
}

/// The gateway side of remote configuration; exists only when `[remote]` is configured.
pub struct Agent {
    store: String,
    gateway: String,
    prefix: String,
    base: Option<PathBuf>,
    keys: TrustedKeys,
    confirm_timeout: Duration,
    dir: StateDir,
    state: Persisted,
    nonces: NonceLog,
    /// Commands are refused until then: the nonce log was lost (see `load_nonces`).
    nonces_lost_until: Option<i64>,
    /// The local file as a table (updated on SIGHUP).
    local: toml::Table,
    /// The verified overlays in effect.
    fleet: Option<toml::Table>,
    gateway_overlay: Option<toml::Table>,
    /// Merged configuration text in effect.
    running_text: String,
    /// Bytes of the last unverified message per layer: retained junk delivered again at every
    /// reconnection is not checked again.
    last_unverified: [Option<Vec<u8>>; 2],
    /// Signed documents refused on this connection (see [`Agent::on_document`]).
    refused: RefusedDocs,
    /// When an unconfirmed change must have reached the broker.
    confirm_by: Option<tokio::time::Instant>,
    last_connect_error: Option<String>,
    /// The current session's subscription was granted.
    subscribed: bool,
    /// A working session confirms the pending change if it lasts until then.
    settle_until: Option<tokio::time::Instant>,
    /// `reconnect` commands are answered once the new connection is up.
    reconnect_nonces: Vec<String>,
    /// `[remote.min_version]` per layer.
    min_version: [i64; 2],
    /// Signed documents that came while a change was pending or on probation, per layer (the
    /// highest version, with it).
    deferred: [Option<(i64, Vec<u8>)>; 2],
    /// The pipeline's health problems as last seen by the daemon (the baseline of a change).
    health_now: Vec<String>,
    /// Why the last settled session could not confirm (the pipeline was not healthy).
    unhealthy: Option<String>,
    /// When this start has run long enough to end the probation of a change.
    probation_until: Option<tokio::time::Instant>,
    /// state.json could not be read: documents are refused and the file is left as it is.
    state_damaged: Option<String>,
    /// Rate limit of the log line for unverified input.
    unverified_log: crate::ops::logging::Throttle,
    /// The pipeline's registries: unverified input is counted there, and the configuration
    /// state goes into its status document.
    telemetry: Telemetry,
}

/// Digests of the signed documents refused since the last connection, at most
/// [`RefusedDocs::MAX`] (the oldest forgotten first): a refused document delivered again is not
/// processed, reported or logged again.
#[derive(Debug, Default)]
struct RefusedDocs {
    digests: std::collections::VecDeque<[u8; 32]>,
}

impl RefusedDocs {
    const MAX: usize = 256;

    fn digest(doc: &[u8]) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        Sha256::digest(doc).into()
    }

    fn contains(&self, doc: &[u8]) -> bool {
        let d = Self::digest(doc);
        self.digests.contains(&d)
    }

    fn insert(&mut self, doc: &[u8]) {
        if self.digests.len() == Self::MAX {
            self.digests.pop_front();
        }
        self.digests.push_back(Self::digest(doc));
    }

    fn clear(&mut self) {
        self.digests.clear();
    }
}

fn layer_index(l: Layer) -> usize {
    match l {
        Layer::Fleet => 0,
        Layer::Gateway => 1,
    }
}

impl Agent {
    /// At start: reads the remote state, rolls back an unconfirmed change whose time is up,
    /// verifies the stored documents again and merges them over the local file. Returns the
    /// configuration to run with and the agent (None when `[remote]` is not configured: then
    /// nothing stored is used). The agent reports into `telemetry`, the pipeline's.
    pub fn boot(
        local_path: &Path,
        local: Config,
        telemetry: Telemetry,
    ) -> Result<(Config, Option<Agent>), String> {
        let Some(remote) = local.remote.clone() else {
            return Ok((local, None));
        };
        let keys = TrustedKeys::load(&remote.public_key_file)
            .map_err(|e| format!("remote.public_key_file: {e}"))?;
        let dir = StateDir::open(&local.gateway.state_dir)?;
        let (state, state_damaged) = match dir.load() {
            Ok(s) => (s, None),
            Err(e) => {
                tracing::error!(error = %e, "remote state damaged: running the stored documents, refusing new ones until state.json is repaired or moved away");
                (Persisted::default(), Some(e))
            }
        };
        let (nonces, nonces_lost_until) =
            load_nonces(&dir, crate::event::now_ms().max(state.clock_ms));
        let local_text = std::fs::read_to_string(local_path)
            .map_err(|e| format!("cannot read {}: {e}", local_path.display()))?;
        let local_table: toml::Table = local_text
            .parse()
            .map_err(|e| format!("{}: {e}", local_path.display()))?;
        let mut agent = Agent {
            store: local.gateway.store_id.clone(),
            gateway: local.gateway.gateway_id.clone(),
            prefix: local.mqtt.topic_prefix.clone(),
            base: local_path.parent().map(Path::to_path_buf),
            keys,
            confirm_timeout: remote.confirm_timeout.0,
            dir,
            state,
            nonces,
            nonces_lost_until,
            local: local_table,
            fleet: None,
            gateway_overlay: None,
            running_text: String::new(),
            last_unverified: [None, None],
            refused: RefusedDocs::default(),
            confirm_by: None,
            last_connect_error: None,
            subscribed: false,
            settle_until: None,
            reconnect_nonces: Vec::new(),
            min_version: [remote.min_version.fleet, remote.min_version.gateway],
            deferred: [None, None],
            health_now: Vec::new(),
            unhealthy: None,
            probation_until: None,
            state_damaged,
            unverified_log: crate::ops::logging::Throttle::default(),
            telemetry,
        };
        agent.check_pending_at_boot()?;
        agent.check_probation_at_boot()?;
        for l in Layer::ALL {
            match agent.boot_layer(l) {
                Ok(o) => agent.set_overlay(l, o),
                Err(reason) => {
                    tracing::error!(layer = l.as_str(), %reason, "stored remote document no longer accepted; running without it");
                    agent.state.layer_mut(l).applied = 0;
                    agent.report(
                        0,
                        l,
                        ReportState::Rejected,
                        Some(format!("stored document: {reason}")),
                    );
                }
            }
        }
        let cfg = match agent.merged(None) {
            Ok((text, cfg)) => {
                agent.running_text = text;
                cfg
            }
            Err(r) => {
                // The local file changed under the layers: run the local file, say why.
                tracing::error!(reason = %r.reason(), "remote layers do not fit the local file; running the local file alone");
                agent.fleet = None;
                agent.gateway_overlay = None;
                agent.state.fleet.applied = 0;
                agent.state.gateway.applied = 0;
                agent.report(
                    0,
                    Layer::Gateway,
                    ReportState::Rejected,
                    Some(format!("layers over the local file: {}", r.reason())),
                );
                agent.running_text = toml::to_string(&agent.local).unwrap_or_default();
                local
            }
        };
        // The topics follow the configuration the uplink runs with: a document may move the
        // gateway to another `mqtt.topic_prefix`, and then listens and answers there.
        agent.prefix = cfg.mqtt.topic_prefix.clone();
        agent.dir.write_effective(&agent.running_text)?;
        if let Some(e) = agent.state_damaged.clone() {
            agent.report(
                0,
                Layer::Gateway,
                ReportState::Rejected,
                Some(damaged_reason(&e)),
            );
        }
        agent.save()?;
        Ok((cfg, Some(agent)))
    }

    /// The daemon's view of the pipeline's health problems (empty: healthy), taken before a
    /// message is handled: a change is not held responsible for what was wrong before it.
    pub fn with_health(&mut self, problems: Vec<String>) -> &mut Agent {
        self.health_now = problems;
        self
    }

    /// The topics to subscribe to (QoS 1).
    pub fn subscriptions(&self) -> Vec<String> {
        vec![
            self.topic("config"),
            format!("{}/_fleet/config", self.prefix),
            self.topic("cmd"),
        ]
    }

    fn topic(&self, leaf: &str) -> String {
        format!("{}/{}/{}/{leaf}", self.prefix, self.store, self.gateway)
    }

    /// The topic a layer's documents come on.
    pub fn config_topic(&self, layer: Layer) -> String {
        match layer {
            Layer::Gateway => self.topic("config"),
            Layer::Fleet => format!("{}/_fleet/config", self.prefix),
        }
    }

    /// Which inbox a topic is, if it is one of ours.
    pub fn inbox(&self, topic: &str) -> Option<Inbox> {
        if topic == self.topic("config") {
            Some(Inbox::Config(Layer::Gateway))
        } else if topic == format!("{}/_fleet/config", self.prefix) {
            Some(Inbox::Config(Layer::Fleet))
        } else if topic == self.topic("cmd") {
            Some(Inbox::Command)
        } else {
            None
        }
    }

    /// Where command answers go.
    pub fn result_topic(&self) -> String {
        self.topic("cmd/result")
    }

    /// Where the retained configuration state goes.
    pub fn state_topic(&self) -> String {
        self.topic("config/state")
    }

    /// The `config` object of the status document.
    pub fn status_object(&self) -> serde_json::Value {
        self.state.status_object()
    }

    /// The retained `{prefix}/{store}/{gateway}/config/state` payload: the status document's
    /// `config` object with the gateway's identity.
    pub fn state_payload(&self) -> Vec<u8> {
        let mut v = self.status_object();
        if let Some(o) = v.as_object_mut() {
            o.insert("schema".into(), SCHEMA.into());
            o.insert("kind".into(), "config_state".into());
            o.insert("store".into(), self.store.clone().into());
            o.insert("gateway".into(), self.gateway.clone().into());
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// Records what became of a document (in RAM and in the status document; [`Agent::save`]
    /// writes it).
    fn report(&mut self, version: i64, layer: Layer, state: ReportState, reason: Option<String>) {
        self.state.report = Some(Report {
            version,
            layer,
            state,
            reason,
            at: rfc3339_ms(now_ms()),
        });
        self.telemetry
            .health()
            .set_config(Some(self.status_object()));
    }

    /// Publishes the state to the status document and writes state.json (never over a
    /// damaged one: that is left for a person to look at).
    fn save(&mut self) -> Result<(), String> {
        self.telemetry
            .health()
            .set_config(Some(self.status_object()));
        if self.state_damaged.is_some() {
            return Ok(());
        }
        self.state.clock_ms = self.state.clock_ms.max(now_ms());
        self.dir.save(&self.state)
    }
}

/// The report of a gateway whose state.json could not be read.
fn damaged_reason(e: &str) -> String {
    format!(
        "state_damaged: {}; new documents are refused until state.json is repaired or moved away",
        document::excerpt(e, 200)
    )
}
