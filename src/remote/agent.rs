//! The gateway's side of remote configuration and commands (docs/fleet.md, "On the gateway").
//!
//! The agent owns no I/O: the uplink hands it what arrives on the subscribed topics and tells
//! it when the broker is reached, and `daemon::run` carries out what it decides (apply a
//! configuration live, exit for a restart, run a command, publish an answer). Its decisions and
//! their reasons are kept in `{state_dir}/remote/` ([`StateDir`]) before they take effect, so a
//! restart or a power cut never loses a rollback or reopens a replay.
//!
//! A change that only touches live keys (the reload table, `ops::reload::RULES`) is applied at
//! once. A change with a restart-only key is installed, and the process exits so systemd starts
//! it with the new configuration; that start has `remote.confirm_timeout` to reach the broker,
//! or it puts the previous document back and exits again. A start after the deadline rolls back
//! before anything runs, so a configuration that crashes the gateway is undone as well.

use crate::config::Config;
use crate::event::{now_ms, rfc3339_ms, SCHEMA};
use crate::ops::reload;
use crate::remote::command::{self, Action, NonceLog};
use crate::remote::document::{self, Rejection, TrustedKeys};
use crate::remote::state::{Installing, Layer, Pending, Persisted, Probation, Report, StateDir};
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;

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
        text: String,
        config: Box<Config>,
        changed: Vec<String>,
    },
    /// Accepted with restart-only keys: installed; the process must exit and be restarted.
    Restart { keys: Vec<String> },
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
    Config(Layer),
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
    /// Bytes of the last refused document per layer: a retained refusal delivered again at
    /// every reconnection is not processed and reported again.
    last_refused: [Option<Vec<u8>>; 2],
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
    /// Signed documents that came while a change was pending, per layer (the latest).
    deferred: [Option<Vec<u8>>; 2],
    /// Why the last settled session could not confirm (the pipeline was not healthy).
    unhealthy: Option<String>,
    /// When this start has run long enough to end the probation of a change.
    probation_until: Option<tokio::time::Instant>,
    /// state.json could not be read: documents are refused and the file is left as it is.
    state_damaged: Option<String>,
    /// Rate limit of the log line for unverified input.
    unverified_log: LogLimiter,
}

/// At most one log line per interval; counts what it held back.
#[derive(Debug, Default)]
struct LogLimiter {
    last: Option<std::time::Instant>,
    held: u64,
}

impl LogLimiter {
    /// Some(lines held back since the last one) when a line may be written now.
    fn allow(&mut self, every: Duration) -> Option<u64> {
        let now = std::time::Instant::now();
        if self.last.is_some_and(|l| now.duration_since(l) < every) {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
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
    /// nothing stored is used).
    pub fn boot(local_path: &Path, local: Config) -> Result<(Config, Option<Agent>), String> {
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
        let (nonces, nonces_lost_until) = load_nonces(&dir);
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
            last_refused: [None, None],
            confirm_by: None,
            last_connect_error: None,
            subscribed: false,
            settle_until: None,
            reconnect_nonces: Vec::new(),
            min_version: [remote.min_version.fleet, remote.min_version.gateway],
            deferred: [None, None],
            unhealthy: None,
            probation_until: None,
            state_damaged,
            unverified_log: LogLimiter::default(),
        };
        agent.check_pending_at_boot()?;
        agent.check_probation_at_boot()?;
        for l in Layer::ALL {
            match agent.boot_layer(l) {
                Ok(o) => agent.set_overlay(l, o),
                Err(reason) => {
                    tracing::error!(layer = l.as_str(), %reason, "stored remote document no longer accepted; running without it");
                    agent.state.layer_mut(l).applied = 0;
                    agent.report(0, l, "rejected", Some(format!("stored document: {reason}")));
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
                    "rejected",
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
            agent.report(0, Layer::Gateway, "rejected", Some(damaged_reason(&e)));
        }
        agent.save()?;
        Ok((cfg, Some(agent)))
    }

    /// A change installed by the previous process is confirmed by reaching the broker and
    /// running healthy; this start counts one more try and gets a full `confirm_timeout`,
    /// measured on the monotonic clock. The tries are the bound: after
    /// [`MAX_UNCONFIRMED_STARTS`] the change is rolled back before anything runs, so a
    /// configuration that crashes the gateway is undone too, whatever the wall clock did.
    fn check_pending_at_boot(&mut self) -> Result<(), String> {
        let Some(mut p) = self.state.pending.clone() else {
            return Ok(());
        };
        p.starts += 1;
        if p.starts > MAX_UNCONFIRMED_STARTS {
            let why = format!("not confirmed after {} starts", p.starts - 1);
            self.roll_back(p.layer, p.version, why)?;
        } else {
            self.confirm_by = Some(tokio::time::Instant::now() + self.confirm_timeout);
            tracing::warn!(
                layer = p.layer.as_str(),
                version = p.version,
                start = p.starts,
                confirm_within_s = self.confirm_timeout.as_secs(),
                "configuration applied by restart: waiting to reach the broker and run healthy before keeping it"
            );
            self.state.pending = Some(p);
        }
        self.save()
    }

    /// A change in effect but still on probation: this start counts; too many starts within
    /// [`PROBATION`] of it roll it back.
    fn check_probation_at_boot(&mut self) -> Result<(), String> {
        let Some(mut p) = self.state.probation else {
            return Ok(());
        };
        p.starts += 1;
        if p.starts >= MAX_PROBATION_STARTS {
            let why = format!(
                "the gateway started {} times within {} min of this change",
                p.starts,
                PROBATION.as_secs() / 60
            );
            self.state.probation = None;
            self.roll_back(p.layer, p.version, why)?;
        } else {
            self.state.probation = Some(p);
            self.probation_until = Some(tokio::time::Instant::now() + PROBATION);
        }
        self.save()
    }

    /// When this start has run long enough to end a change's probation (None: none).
    pub fn probation_deadline(&self) -> Option<tokio::time::Instant> {
        self.probation_until
    }

    /// This start ran for [`PROBATION`]: the change on probation is kept for good if the
    /// gateway is healthy now (`health`); if not, it is looked at again a minute later.
    pub fn on_probation_elapsed(&mut self, health: Result<(), String>) {
        if let Err(why) = health {
            tracing::warn!(reason = %why, "a recent configuration change is still on probation: the gateway is unhealthy");
            self.probation_until = Some(tokio::time::Instant::now() + Duration::from_secs(60));
            return;
        }
        self.probation_until = None;
        if self.state.probation.take().is_some() {
            if let Err(e) = self.save() {
                tracing::error!(error = %e, "cannot record the end of a change's probation");
            }
        }
    }

    fn roll_back(&mut self, layer: Layer, version: i64, why: String) -> Result<(), String> {
        let last = self
            .unhealthy
            .as_ref()
            .or(self.last_connect_error.as_ref())
            .or(self
                .state
                .pending
                .as_ref()
                .and_then(|p| p.last_error.as_ref()));
        let reason = match last {
            Some(e) => format!("{why} (last problem: {})", document::excerpt(e, 200)),
            None => why,
        };
        tracing::error!(layer = layer.as_str(), version, %reason, "rolling back to the previous configuration");
        self.dir.restore_previous(layer)?;
        let prev = self
            .stored_overlay(layer)
            .ok()
            .flatten()
            .map(|(_, v)| v)
            .unwrap_or(0);
        let v = self.state.layer_mut(layer);
        v.applied = prev;
        v.floor = v.floor.max(version);
        self.state.pending = None;
        self.confirm_by = None;
        self.report(version, layer, "rolled_back", Some(reason));
        Ok(())
    }

    /// The stored document of a layer, verified again, and its version.
    fn stored_overlay(&self, l: Layer) -> Result<Option<(toml::Table, i64)>, String> {
        let Some(doc) = self.dir.document(l)? else {
            return Ok(None);
        };
        let d = document::verify_signature(&doc, &self.keys).map_err(|r| r.reason())?;
        if d.target != self.target(l) {
            return Err(Rejection::WrongTarget(d.target).reason());
        }
        if let Some(k) = document::forbidden_keys(&d.overlay).into_iter().next() {
            return Err(Rejection::ForbiddenKey(k).reason());
        }
        Ok(Some((d.overlay, d.version)))
    }

    /// A layer's overlay at start. A document whose installation was interrupted (the intent
    /// is still recorded) is taken back: the previous one returns, and the document, still
    /// retained on the broker, is processed again at the next connection. A stored document
    /// whose version the state does not record (state.json moved away, or a document refused at
    /// an earlier start whose key is trusted again) is adopted as the layer's version.
    fn boot_layer(&mut self, l: Layer) -> Result<Option<toml::Table>, String> {
        if let Some(i) = self.state.installing.filter(|i| i.layer == l) {
            let stored = self.stored_overlay(l).ok().flatten().map(|(_, v)| v);
            if stored == Some(i.version) {
                tracing::warn!(
                    layer = l.as_str(),
                    version = i.version,
                    "the installation of a document was interrupted; the previous one is back"
                );
                self.dir.restore_previous(l)?;
            }
            self.state.installing = None;
        }
        let stored = self.stored_overlay(l)?;
        let version = stored.as_ref().map(|(_, v)| *v).unwrap_or(0);
        let min = self.min_version[layer_index(l)];
        if stored.is_some() && version < min {
            return Err(format!(
                "version {version} is below remote.min_version.{} ({min})",
                l.as_str()
            ));
        }
        let v = self.state.layer_mut(l);
        if version != v.applied {
            v.applied = version;
            v.floor = v.floor.max(version);
        }
        Ok(stored.map(|(o, _)| o))
    }

    fn set_overlay(&mut self, l: Layer, o: Option<toml::Table>) {
        match l {
            Layer::Fleet => self.fleet = o,
            Layer::Gateway => self.gateway_overlay = o,
        }
    }

    /// Merges the layers (with `replace` standing in for one of them) over the local file and
    /// validates the result as `check-config` does.
    fn merged(
        &self,
        replace: Option<(Layer, &toml::Table)>,
    ) -> Result<(String, Config), Rejection> {
        let pick = |l: Layer, cur: &Option<toml::Table>| -> Option<toml::Table> {
            match replace {
                Some((r, t)) if r == l => Some(t.clone()),
                _ => cur.clone(),
            }
        };
        let fleet = pick(Layer::Fleet, &self.fleet);
        let gw = pick(Layer::Gateway, &self.gateway_overlay);
        let m = document::merge_layers(&self.local, fleet.as_ref(), gw.as_ref());
        document::validate_merged(&m, self.base.as_deref())
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

    /// Verifies a document from a config topic and decides how it applies; the decision is on
    /// disk before this returns. Input no trusted key signed is only counted (never persisted,
    /// reported or answered), and a signed document that comes while a change is pending waits
    /// until that change is confirmed, so the rollback target stays the one before it.
    pub fn on_document(&mut self, layer: Layer, signed: &[u8]) -> DocumentOutcome {
        if signed.is_empty() {
            // A cleared retained message: the layer's document stays; only a newer signed
            // document changes anything.
            return DocumentOutcome::Unchanged;
        }
        let i = layer_index(layer);
        if self.last_refused[i].as_deref() == Some(signed)
            || self.dir.document(layer).ok().flatten().as_deref() == Some(signed)
        {
            return DocumentOutcome::Unchanged;
        }
        let doc = match document::verify_signature(signed, &self.keys) {
            Ok(d) => d,
            Err(r) if r.is_unverified() => {
                self.unverified("config", &r);
                self.last_refused[i] = Some(signed.to_vec());
                return DocumentOutcome::Ignored;
            }
            Err(r) => return self.refuse(layer, signed, 0, r),
        };
        if let Some(e) = &self.state_damaged {
            let reason = damaged_reason(e);
            tracing::warn!(layer = layer.as_str(), version = doc.version, %reason, "remote configuration refused");
            // Reported, not persisted: the damaged file is left for a person to look at.
            self.report(doc.version, layer, "rejected", Some(reason.clone()));
            return DocumentOutcome::Rejected(reason);
        }
        if self.state.pending.is_some() {
            tracing::info!(
                layer = layer.as_str(),
                version = doc.version,
                "signed document received while a change is being confirmed: it is applied after"
            );
            self.deferred[i] = Some(signed.to_vec());
            return DocumentOutcome::Deferred;
        }
        match self.accept(layer, signed, doc) {
            Ok(o) => o,
            Err((version, r)) => self.refuse(layer, signed, version, r),
        }
    }

    /// The documents deferred while a change was pending, to pass to [`Agent::on_document`]
    /// again now that nothing is pending (fleet first, then gateway).
    pub fn take_deferred(&mut self) -> Vec<(Layer, Vec<u8>)> {
        if self.state.pending.is_some() {
            return Vec::new();
        }
        Layer::ALL
            .into_iter()
            .filter_map(|l| self.deferred[layer_index(l)].take().map(|d| (l, d)))
            .collect()
    }

    /// Counts unverified input on a remote topic (`storegw_remote_unverified_total`) and logs
    /// it at most once a minute; nothing of the input is kept, reported or written.
    fn unverified(&mut self, topic: &str, r: &Rejection) {
        crate::ops::metrics::global().count(
            crate::ops::metrics::Metric::RemoteUnverified,
            &crate::ops::metrics::labels(&[("topic", topic), ("reason", r.label())]),
            1,
        );
        if let Some(held) = self.unverified_log.allow(UNVERIFIED_LOG_EVERY) {
            tracing::warn!(
                topic,
                reason = r.label(),
                held_back = held,
                "unverified message on a remote topic ignored (storegw_remote_unverified_total counts them)"
            );
        }
    }

    /// A signed document refused: reported and recorded.
    fn refuse(
        &mut self,
        layer: Layer,
        signed: &[u8],
        version: i64,
        r: Rejection,
    ) -> DocumentOutcome {
        let reason = r.reason();
        tracing::warn!(layer = layer.as_str(), version, %reason, "remote configuration rejected");
        // A refusal for a cause that may pass (a disk that refused a write) is not
        // remembered: the document is tried again when it comes again.
        if !matches!(&r, Rejection::Invalid { key, .. } if key == "(state)") {
            self.last_refused[layer_index(layer)] = Some(signed.to_vec());
        }
        self.report(version, layer, "rejected", Some(reason.clone()));
        if let Err(e) = self.save() {
            tracing::error!(error = %e, "cannot record the remote configuration state");
        }
        DocumentOutcome::Rejected(reason)
    }

    /// The `target` a document on `layer` must be signed for.
    fn target(&self, layer: Layer) -> String {
        match layer {
            Layer::Fleet => document::FLEET_TARGET.to_string(),
            Layer::Gateway => document::gateway_target(&self.store, &self.gateway),
        }
    }

    /// The time expiry is judged against: never earlier than the latest time this gateway
    /// recorded, so a clock that booted behind cannot make an expired document valid again.
    fn checked_now(&self) -> OffsetDateTime {
        let now = now_ms().max(self.state.clock_ms);
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(now) * 1_000_000)
            .unwrap_or_else(|_| OffsetDateTime::now_utc())
    }

    fn accept(
        &mut self,
        layer: Layer,
        signed: &[u8],
        doc: document::Document,
    ) -> Result<DocumentOutcome, (i64, Rejection)> {
        let v = doc.version;
        if doc.target != self.target(layer) {
            return Err((v, Rejection::WrongTarget(doc.target)));
        }
        let lv = *self.state.layer(layer);
        if v == lv.floor && lv.floor > lv.applied {
            // The change rolled back earlier, still retained on the broker: its rollback stays
            // the report.
            tracing::debug!(
                layer = layer.as_str(),
                version = v,
                "rolled-back document delivered again; ignored"
            );
            return Ok(DocumentOutcome::Unchanged);
        }
        if v == lv.applied
            && self
                .stored_overlay(layer)
                .ok()
                .flatten()
                .is_some_and(|(o, _)| o == doc.overlay)
        {
            // The document in effect, in other bytes (line endings): nothing to apply or report.
            return Ok(DocumentOutcome::Unchanged);
        }
        let floor = lv
            .applied
            .max(lv.floor)
            .max(self.min_version[layer_index(layer)].saturating_sub(1));
        document::check_fresh(&doc, self.checked_now(), floor).map_err(|r| (v, r))?;
        if let Some(k) = document::forbidden_keys(&doc.overlay).into_iter().next() {
            return Err((v, Rejection::ForbiddenKey(k)));
        }
        let (text, cfg) = self
            .merged(Some((layer, &doc.overlay)))
            .map_err(|r| (v, r))?;
        let changed = reload::changed_keys(&self.running_text, &text);
        let restart: Vec<String> = changed
            .iter()
            .filter(|k| reload::needs_restart(k))
            .cloned()
            .collect();
        let fail = |e: String| {
            (
                v,
                Rejection::Invalid {
                    key: "(state)".into(),
                    message: e,
                },
            )
        };
        // The state after this document, committed only once every file is written: a full or
        // failing disk leaves the running state as it was.
        let mut next = self.state.clone();
        {
            let s = next.layer_mut(layer);
            s.applied = v;
            s.floor = s.floor.max(v);
        }
        let at = rfc3339_ms(now_ms());
        if restart.is_empty() {
            next.report = Some(Report {
                version: v,
                layer,
                state: "applied".into(),
                reason: None,
                at,
            });
            next.probation = Some(Probation {
                layer,
                version: v,
                starts: 0,
            });
        } else {
            next.probation = None;
            next.pending = Some(Pending {
                layer,
                version: v,
                starts: 0,
                last_error: None,
            });
            next.report = Some(Report {
                version: v,
                layer,
                state: "pending".into(),
                reason: Some(format!("restarting for {}", restart.join(", "))),
                at,
            });
        }
        self.commit(layer, v, signed, next).map_err(fail)?;
        if let Err(e) = self.dir.write_effective(&text) {
            tracing::warn!(error = %e, "cannot record the merged configuration (effective.toml)");
        }
        if restart.is_empty() {
            self.set_overlay(layer, Some(doc.overlay));
            self.running_text = text.clone();
            tracing::info!(layer = layer.as_str(), version = v, keys = %changed.join(", "), "remote configuration applied live");
            Ok(DocumentOutcome::Live {
                text,
                config: Box::new(cfg),
                changed,
            })
        } else {
            tracing::warn!(layer = layer.as_str(), version = v, keys = %restart.join(", "), "remote configuration needs a restart: exiting for systemd to start storegw with it");
            Ok(DocumentOutcome::Restart { keys: restart })
        }
    }

    /// Stores a layer's new document and the state that goes with it, in an order a power cut
    /// cannot break: the intent (`installing`) is recorded first, then the document is
    /// installed (the previous one kept), then the new state replaces the intent. A start that
    /// finds the intent puts the previous document back ([`Agent::boot`]). On a write error the
    /// previous document and state stay in effect.
    fn commit(
        &mut self,
        layer: Layer,
        version: i64,
        signed: &[u8],
        mut next: Persisted,
    ) -> Result<(), String> {
        let mut intent = self.state.clone();
        intent.installing = Some(Installing { layer, version });
        intent.clock_ms = intent.clock_ms.max(now_ms());
        next.clock_ms = intent.clock_ms;
        self.dir.save(&intent)?;
        if let Err(e) = self.dir.install(layer, signed) {
            let _ = self.dir.save(&self.state);
            return Err(e);
        }
        next.installing = None;
        if let Err(e) = self.dir.save(&next) {
            let _ = self.dir.restore_previous(layer);
            let _ = self.dir.save(&self.state);
            return Err(e);
        }
        self.state = next;
        crate::ops::status::set_config(Some(self.status_object()));
        Ok(())
    }

    /// The broker was reached and (`subscribed`) granted the remote topics: confirms a change
    /// applied by restart. A refused subscription does not confirm: the gateway could not be
    /// corrected remotely any more. Returns true when the report changed.
    pub fn on_connected(&mut self, subscribed: bool) -> bool {
        self.subscribed = subscribed;
        if !subscribed {
            self.on_connect_failed(
                "connected, but the broker refused the subscription to the remote topics".into(),
            );
        }
        false
    }

    /// The broker acknowledged the configuration state published on this session: with the
    /// subscription granted, the session only has to last [`Agent::settle_time`] to confirm a
    /// change applied by restart (a broker that accepts and then drops the session, as an ACL
    /// that refuses the new topics may, does not confirm it).
    pub fn on_acknowledged(&mut self) {
        if self.subscribed && self.state.pending.is_some() {
            self.settle_until = Some(tokio::time::Instant::now() + self.settle_time());
        }
    }

    /// The session ended: a confirmation waiting for it to settle is off.
    pub fn on_disconnected(&mut self) {
        self.subscribed = false;
        self.settle_until = None;
    }

    /// How long a working session must last to confirm: a quarter of `confirm_timeout`, at
    /// most 10 s.
    pub fn settle_time(&self) -> Duration {
        (self.confirm_timeout / 4).min(Duration::from_secs(10))
    }

    /// When a settling session confirms the pending change (None: nothing settling).
    pub fn settle_deadline(&self) -> Option<tokio::time::Instant> {
        self.settle_until
    }

    /// The session lasted: confirms the change applied by restart if the pipeline is healthy
    /// (`health`: every enabled source running, the HTTP listener bound, the spool writable).
    /// An unhealthy gateway does not confirm; it tries again one settle time later, until the
    /// confirm deadline rolls the change back with the health problem as the reason. Returns
    /// true when the report changed.
    pub fn on_settled(&mut self, health: Result<(), String>) -> bool {
        if self.settle_until.take().is_none() {
            return false;
        }
        self.last_connect_error = None;
        if self.state.pending.is_none() {
            return false;
        }
        if let Err(why) = health {
            if self.unhealthy.as_deref() != Some(why.as_str()) {
                tracing::warn!(reason = %why, "configuration change not confirmed yet: the gateway is not healthy with it");
            }
            self.unhealthy = Some(why);
            if self.subscribed {
                self.settle_until = Some(tokio::time::Instant::now() + self.settle_time());
            }
            return false;
        }
        self.unhealthy = None;
        let Some(p) = self.state.pending.take() else {
            return false;
        };
        self.confirm_by = None;
        // Confirmed, and watched for a while: repeated starts soon after still roll it back.
        self.state.probation = Some(Probation {
            layer: p.layer,
            version: p.version,
            starts: 0,
        });
        self.probation_until = Some(tokio::time::Instant::now() + PROBATION);
        self.report(p.version, p.layer, "applied", None);
        if let Err(e) = self.save() {
            tracing::error!(error = %e, "cannot record the confirmed configuration");
        }
        tracing::info!(
            layer = p.layer.as_str(),
            version = p.version,
            "configuration confirmed: the broker was reached with it"
        );
        true
    }

    /// The uplink could not connect; the reason goes into a rollback's report.
    pub fn on_connect_failed(&mut self, error: String) {
        self.subscribed = false;
        self.settle_until = None;
        let error = document::excerpt(&error, 200);
        let changed = match &mut self.state.pending {
            Some(p) if p.last_error.as_deref() != Some(error.as_str()) => {
                p.last_error = Some(error.clone());
                true
            }
            _ => false,
        };
        if changed {
            if let Err(e) = self.save() {
                tracing::error!(error = %e, "cannot record the remote configuration state");
            }
        }
        self.last_connect_error = Some(error);
    }

    /// When an unconfirmed change must be rolled back (None: nothing to confirm).
    pub fn confirm_deadline(&self) -> Option<tokio::time::Instant> {
        self.confirm_by
    }

    /// The deadline passed without reaching the broker: puts the previous document back. The
    /// process must then exit so the previous configuration runs.
    pub fn on_confirm_timeout(&mut self) -> Result<(), String> {
        let Some(p) = self.state.pending.clone() else {
            return Ok(());
        };
        let why = if self.unhealthy.is_some() {
            format!(
                "not confirmed: the gateway did not run healthy within {}s of applying it",
                self.confirm_timeout.as_secs()
            )
        } else {
            format!(
                "not confirmed: the broker was not reached within {}s of applying it",
                self.confirm_timeout.as_secs()
            )
        };
        self.roll_back(p.layer, p.version, why)?;
        self.save()
    }

    /// The local file was re-read (SIGHUP, `reload` command): the layers merged over its new
    /// text, validated.
    pub fn remerge_local(&mut self, local_text: &str) -> Result<(String, Config), String> {
        let table: toml::Table = local_text.parse().map_err(|e| format!("{e}"))?;
        let old = std::mem::replace(&mut self.local, table);
        match self.merged(None) {
            Ok((text, cfg)) => {
                self.running_text = text.clone();
                let _ = self.dir.write_effective(&text);
                Ok((text, cfg))
            }
            Err(r) => {
                self.local = old;
                Err(format!(
                    "the remote layers over the new local file: {}",
                    r.reason()
                ))
            }
        }
    }

    /// The merged configuration text in effect.
    pub fn running_text(&self) -> &str {
        &self.running_text
    }

    /// Verifies a command; a verified command's nonce is on disk before it runs. A command no
    /// trusted key signed is counted and dropped without an answer.
    pub fn on_command(&mut self, signed: &[u8]) -> CommandOutcome {
        let now = now_ms();
        if let Err(r) = document::signed_text(signed, &self.keys) {
            if r.is_unverified() {
                self.unverified("cmd", &r);
                return CommandOutcome::Ignored;
            }
        }
        if let Some(until) = self.nonces_lost_until.filter(|u| now < *u) {
            let why = format!(
                "busy: the nonce log was lost; commands are accepted again from {}",
                rfc3339_ms(until)
            );
            return CommandOutcome::Refused(self.result_payload(None, None, "refused", Some(&why)));
        }
        match command::verify(
            signed,
            &self.keys,
            &self.store,
            &self.gateway,
            now,
            &mut self.nonces,
        ) {
            Ok(c) => {
                if let Err(e) = save_nonces(&self.dir, &self.nonces) {
                    // Without the nonce on disk a restart would accept the command again.
                    tracing::error!(error = %e, "cannot record the command's nonce; refusing it");
                    return CommandOutcome::Refused(self.result_payload(
                        Some(c.action.as_str()),
                        Some(&c.nonce),
                        "refused",
                        Some("cannot record the nonce"),
                    ));
                }
                tracing::info!(command = c.action.as_str(), nonce = %c.nonce, "signed command accepted");
                CommandOutcome::Run(c)
            }
            Err(r) => {
                tracing::warn!(reason = %r.reason, "signed command refused");
                CommandOutcome::Refused(self.result_payload(
                    r.command.as_deref(),
                    r.nonce.as_deref(),
                    "refused",
                    Some(&r.reason),
                ))
            }
        }
    }

    /// The answer to a command that ran.
    pub fn command_result(&self, c: &command::Command, detail: Option<&str>) -> Vec<u8> {
        self.result_payload(Some(c.action.as_str()), Some(&c.nonce), "done", detail)
    }

    /// The answer to a verified command that could not be carried out (a `reload` of a file
    /// that does not pass validation).
    pub fn command_refused(&self, c: &command::Command, why: &str) -> Vec<u8> {
        self.result_payload(
            Some(c.action.as_str()),
            Some(&c.nonce),
            "refused",
            Some(why),
        )
    }

    /// A `reconnect` is answered after the new connection is up.
    pub fn defer_reconnect_answer(&mut self, nonce: String) {
        if self.reconnect_nonces.len() < 64 {
            self.reconnect_nonces.push(nonce);
        }
    }

    /// The deferred `reconnect` answers, once connected again.
    pub fn take_reconnect_answers(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.reconnect_nonces)
            .into_iter()
            .map(|n| self.result_payload(Some(Action::Reconnect.as_str()), Some(&n), "done", None))
            .collect()
    }

    fn result_payload(
        &self,
        command: Option<&str>,
        nonce: Option<&str>,
        result: &str,
        reason: Option<&str>,
    ) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schema": SCHEMA,
            "kind": "command_result",
            "store": self.store,
            "gateway": self.gateway,
            "command": command,
            "nonce": nonce,
            "result": result,
            "reason": reason,
            "at": rfc3339_ms(now_ms()),
        }))
        .unwrap_or_default()
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

    fn report(&mut self, version: i64, layer: Layer, state: &str, reason: Option<String>) {
        self.state.report = Some(Report {
            version,
            layer,
            state: state.into(),
            reason,
            at: rfc3339_ms(now_ms()),
        });
        crate::ops::status::set_config(Some(self.status_object()));
    }

    /// Publishes the state to the status document and writes state.json (never over a
    /// damaged one: that is left for a person to look at).
    fn save(&mut self) -> Result<(), String> {
        crate::ops::status::set_config(Some(self.status_object()));
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

/// The nonce log, and until when commands must be refused because it was lost: a damaged or
/// unreadable log could hide a nonce of a command that has not expired yet, so no command is
/// accepted until every command signed before now has expired.
fn load_nonces(dir: &StateDir) -> (NonceLog, Option<i64>) {
    let p = dir.path().join("nonces.json");
    let lost = || Some(now_ms().saturating_add(command::MAX_COMMAND_TTL_S * 1000));
    match std::fs::read(&p) {
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(log) => (log, None),
            Err(e) => {
                tracing::error!(file = %p.display(), error = %e, "command nonce log damaged: signed commands are refused for 24 h");
                (NonceLog::default(), lost())
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (NonceLog::default(), None),
        Err(e) => {
            tracing::error!(file = %p.display(), error = %e, "cannot read the command nonce log: signed commands are refused for 24 h");
            (NonceLog::default(), lost())
        }
    }
}

fn save_nonces(dir: &StateDir, log: &NonceLog) -> Result<(), String> {
    let bytes = serde_json::to_vec(log).map_err(|e| e.to_string())?;
    crate::remote::state::write_atomic(&dir.path().join("nonces.json"), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Result<(), Box<dyn std::error::Error>>;

    fn key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[9u8; 32])
    }

    fn signed(overlay: &str) -> Result<Vec<u8>, String> {
        document::sign(overlay.as_bytes(), &key())
    }

    /// A gateway directory with a local file trusting `key()` (`remote_extra` added to its
    /// `[remote]`), two installed gateway documents (rate 5 then rate 9, the second awaiting
    /// confirmation after `starts` starts).
    fn gateway_with(
        dir: &Path,
        starts: u32,
        remote_extra: &str,
    ) -> Result<(PathBuf, Config), Box<dyn std::error::Error>> {
        std::fs::write(
            dir.join("central.pub"),
            document::format_public_key(&key().verifying_key()),
        )?;
        let path = dir.join("storegw.toml");
        let text = format!(
            "[gateway]\nstore_id = \"s1\"\ngateway_id = \"g1\"\nstate_dir = \"{}\"\n[http]\nenabled = false\n\
             [sources.sim]\nenabled = true\nrate = 1.0\n[remote]\npublic_key_file = \"central.pub\"\nconfirm_timeout = \"60s\"\n{remote_extra}",
            dir.join("state").display()
        );
        std::fs::write(&path, &text)?;
        let local = crate::config::parse("storegw.toml", &text, Some(dir))?;
        let sd = StateDir::open(&dir.join("state"))?;
        sd.install(
            Layer::Gateway,
            &signed("version = 1\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 5.0\n")?,
        )?;
        sd.install(
            Layer::Gateway,
            &signed("version = 2\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 9.0\n")?,
        )?;
        let mut st = Persisted::default();
        st.gateway.applied = 2;
        st.gateway.floor = 2;
        st.pending = Some(Pending {
            layer: Layer::Gateway,
            version: 2,
            starts,
            last_error: Some("Connection refused".into()),
        });
        sd.save(&st)?;
        Ok((path, local))
    }

    fn gateway_with_pending(
        dir: &Path,
        starts: u32,
    ) -> Result<(PathBuf, Config), Box<dyn std::error::Error>> {
        gateway_with(dir, starts, "")
    }

    /// A booted agent with version 2 pending (first start after the change).
    fn pending_agent(dir: &Path) -> Result<(Agent, Config), Box<dyn std::error::Error>> {
        let (path, local) = gateway_with_pending(dir, 0)?;
        let (cfg, agent) = Agent::boot(&path, local)?;
        Ok((agent.ok_or("no agent")?, cfg))
    }

    /// Connects, has the state publish acknowledged and lets the session settle.
    fn settle(agent: &mut Agent) {
        agent.on_connected(true);
        agent.on_acknowledged();
    }

    fn state_file(dir: &Path) -> Result<Persisted, Box<dyn std::error::Error>> {
        Ok(StateDir::open(&dir.join("state"))?.load()?)
    }

    #[test]
    fn a_change_that_keeps_crashing_the_gateway_is_rolled_back() -> R {
        let tmp = tempfile::tempdir()?;
        let (path, local) = gateway_with_pending(tmp.path(), MAX_UNCONFIRMED_STARTS)?;
        let (cfg, agent) = Agent::boot(&path, local)?;
        assert_eq!(cfg.sources.sim.rate, 5.0, "the previous document is back");
        let agent = agent.ok_or("no agent")?;
        let s = agent.status_object();
        assert_eq!(s["state"], "rolled_back");
        assert_eq!(s["version"], 2);
        assert_eq!(s["versions"]["gateway"], 1);
        let reason = s["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("after 3 starts"), "{reason}");
        assert!(reason.contains("Connection refused"), "{reason}");
        assert!(agent.confirm_deadline().is_none());
        // The rolled-back version stays refused.
        let st = state_file(tmp.path())?;
        assert_eq!((st.gateway.applied, st.gateway.floor), (1, 2));
        assert!(st.pending.is_none());
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn the_confirm_window_is_per_start_on_the_monotonic_clock() -> R {
        // The change was accepted by a process whose wall clock was hours behind; the clock
        // stepped during the restart. Whatever the wall clock says, this start gets a full
        // confirm_timeout, and only the start count bounds the tries.
        let tmp = tempfile::tempdir()?;
        let (mut agent, cfg) = pending_agent(tmp.path())?;
        assert_eq!(cfg.sources.sim.rate, 9.0, "the change runs");
        let t0 = tokio::time::Instant::now();
        assert_eq!(agent.confirm_deadline(), Some(t0 + Duration::from_secs(60)));
        assert_eq!(state_file(tmp.path())?.pending.map(|p| p.starts), Some(1));
        // Nothing reached: the deadline rolls back.
        tokio::time::advance(Duration::from_secs(61)).await;
        agent.on_connect_failed("Connection refused".into());
        agent.on_confirm_timeout()?;
        let s = agent.status_object();
        assert_eq!(s["state"], "rolled_back");
        assert!(s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not reached within 60s")));
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_settled_session_confirms_and_starts_the_probation() -> R {
        let tmp = tempfile::tempdir()?;
        let (mut agent, _) = pending_agent(tmp.path())?;
        assert!(!agent.on_connected(true));
        agent.on_acknowledged();
        let settle_at = agent.settle_deadline().ok_or("not settling")?;
        assert_eq!(settle_at - tokio::time::Instant::now(), agent.settle_time());
        tokio::time::advance(agent.settle_time()).await;
        assert!(agent.on_settled(Ok(())));
        assert_eq!(agent.status_object()["state"], "applied");
        assert!(agent.confirm_deadline().is_none());
        let st = state_file(tmp.path())?;
        assert!(st.pending.is_none());
        assert_eq!(st.gateway.applied, 2);
        assert_eq!(
            st.probation,
            Some(Probation {
                layer: Layer::Gateway,
                version: 2,
                starts: 0
            })
        );
        // Ten healthy minutes end the probation.
        assert_eq!(
            agent.probation_deadline(),
            Some(tokio::time::Instant::now() + PROBATION)
        );
        agent.on_probation_elapsed(Err("source wifi failed".into()));
        assert!(
            state_file(tmp.path())?.probation.is_some(),
            "unhealthy: kept"
        );
        agent.on_probation_elapsed(Ok(()));
        assert!(state_file(tmp.path())?.probation.is_none());
        assert!(agent.probation_deadline().is_none());
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn an_unhealthy_pipeline_never_confirms_and_is_rolled_back() -> R {
        // The broker is reachable, but the change broke a source (Wi-Fi without its
        // capability, BLE without an adapter, an HTTP port the sandbox refuses).
        let tmp = tempfile::tempdir()?;
        let (mut agent, _) = pending_agent(tmp.path())?;
        settle(&mut agent);
        for _ in 0..5 {
            tokio::time::advance(agent.settle_time()).await;
            assert!(!agent.on_settled(Err("source wifi failed: Operation not permitted".into())));
            assert!(agent.settle_deadline().is_some(), "tried again");
        }
        assert_eq!(state_file(tmp.path())?.pending.map(|p| p.version), Some(2));
        tokio::time::advance(Duration::from_secs(60)).await;
        agent.on_confirm_timeout()?;
        let s = agent.status_object();
        assert_eq!(s["state"], "rolled_back");
        let reason = s["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("did not run healthy"), "{reason}");
        assert!(reason.contains("source wifi failed"), "{reason}");
        assert_eq!(s["versions"]["gateway"], 1);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_subscription_does_not_confirm() -> R {
        let tmp = tempfile::tempdir()?;
        let (mut agent, _) = pending_agent(tmp.path())?;
        agent.on_connected(false);
        agent.on_acknowledged();
        assert!(agent.settle_deadline().is_none());
        assert!(!agent.on_settled(Ok(())));
        assert!(state_file(tmp.path())?.pending.is_some());
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn documents_during_a_pending_change_wait_and_keep_the_rollback_target() -> R {
        let tmp = tempfile::tempdir()?;
        let (mut agent, _) = pending_agent(tmp.path())?;
        // A live-only v3 on the same layer, and a restart document on the other layer.
        let v3 = signed("version = 3\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 11.0\n")?;
        let fleet = signed("version = 1\ntarget = \"_fleet\"\n[log]\nformat = \"json\"\n")?;
        assert!(matches!(
            agent.on_document(Layer::Gateway, &v3),
            DocumentOutcome::Deferred
        ));
        assert!(matches!(
            agent.on_document(Layer::Fleet, &fleet),
            DocumentOutcome::Deferred
        ));
        assert!(agent.take_deferred().is_empty(), "nothing while pending");
        let st = state_file(tmp.path())?;
        assert_eq!(
            st.pending.map(|p| (p.layer, p.version)),
            Some((Layer::Gateway, 2))
        );
        // The rollback restores v1, the document before the pending one.
        agent.on_confirm_timeout()?;
        let st = state_file(tmp.path())?;
        assert_eq!((st.gateway.applied, st.gateway.floor), (1, 2));
        let back = StateDir::open(&tmp.path().join("state"))?.document(Layer::Gateway)?;
        assert!(back.is_some_and(|d| String::from_utf8_lossy(&d).contains("rate = 5.0")));
        // v3 was never refused: it applies after the rollback.
        assert!(matches!(
            agent.on_document(Layer::Gateway, &v3),
            DocumentOutcome::Live { .. }
        ));
        assert_eq!(agent.status_object()["versions"]["gateway"], 3);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn deferred_documents_apply_once_the_change_is_confirmed() -> R {
        let tmp = tempfile::tempdir()?;
        let (mut agent, _) = pending_agent(tmp.path())?;
        let v3 = signed("version = 3\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 11.0\n")?;
        assert!(matches!(
            agent.on_document(Layer::Gateway, &v3),
            DocumentOutcome::Deferred
        ));
        settle(&mut agent);
        tokio::time::advance(agent.settle_time()).await;
        assert!(agent.on_settled(Ok(())));
        let deferred = agent.take_deferred();
        assert_eq!(deferred.len(), 1);
        for (layer, doc) in deferred {
            assert!(matches!(
                agent.on_document(layer, &doc),
                DocumentOutcome::Live { .. }
            ));
        }
        let st = state_file(tmp.path())?;
        assert_eq!((st.gateway.applied, st.gateway.floor), (3, 3));
        Ok(())
    }

    #[test]
    fn repeated_starts_within_the_probation_roll_the_change_back() -> R {
        let tmp = tempfile::tempdir()?;
        let (path, local) = gateway_with_pending(tmp.path(), 0)?;
        let sd = StateDir::open(&tmp.path().join("state"))?;
        let mut st = sd.load()?;
        st.pending = None;
        st.probation = Some(Probation {
            layer: Layer::Gateway,
            version: 2,
            starts: 0,
        });
        sd.save(&st)?;
        for start in 1..MAX_PROBATION_STARTS {
            let (cfg, _) = Agent::boot(&path, local.clone())?;
            assert_eq!(cfg.sources.sim.rate, 9.0, "start {start} keeps the change");
        }
        let (cfg, agent) = Agent::boot(&path, local)?;
        assert_eq!(cfg.sources.sim.rate, 5.0, "rolled back");
        let s = agent.ok_or("no agent")?.status_object();
        assert_eq!(s["state"], "rolled_back");
        assert!(s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("started 5 times")));
        let st = sd.load()?;
        assert!(st.probation.is_none());
        assert_eq!((st.gateway.applied, st.gateway.floor), (1, 2));
        Ok(())
    }

    #[test]
    fn unverified_input_is_counted_never_written_or_reported() -> R {
        let tmp = tempfile::tempdir()?;
        let (mut agent, _) = pending_agent(tmp.path())?;
        let state_path = tmp.path().join("state/remote/state.json");
        let before = std::fs::read(&state_path)?;
        let modified = std::fs::metadata(&state_path)?.modified()?;
        let report = agent.status_object();
        let label = crate::ops::metrics::labels(&[("topic", "config"), ("reason", "malformed")]);
        let counted = || {
            crate::ops::metrics::global()
                .counter_value(crate::ops::metrics::Metric::RemoteUnverified, &label)
        };
        let n0 = counted();
        // A key id of 250,000 control bytes, then many distinct forgeries.
        let mut huge = b"version = 9\n# storegw-signature: ed25519:".to_vec();
        huge.extend(std::iter::repeat_n(1u8, 250_000));
        huge.extend_from_slice(b":AAAA\n");
        assert!(matches!(
            agent.on_document(Layer::Fleet, &huge),
            DocumentOutcome::Ignored
        ));
        let other = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
        for i in 0..200 {
            let forged = document::sign(
                format!("version = {}\ntarget = \"_fleet\"\n", 100 + i).as_bytes(),
                &other,
            )?;
            assert!(matches!(
                agent.on_document(Layer::Fleet, &forged),
                DocumentOutcome::Ignored
            ));
            let mut tampered = signed(&format!("version = {}\ntarget = \"_fleet\"\n", 500 + i))?;
            tampered[0] = b'V';
            assert!(matches!(
                agent.on_document(Layer::Fleet, &tampered),
                DocumentOutcome::Ignored
            ));
            assert!(matches!(
                agent.on_command(format!("junk {i}").as_bytes()),
                CommandOutcome::Ignored
            ));
        }
        assert!(counted() > n0, "counted");
        assert_eq!(agent.status_object(), report, "the report is untouched");
        assert_eq!(std::fs::read(&state_path)?, before);
        assert_eq!(std::fs::metadata(&state_path)?.modified()?, modified);
        let files: Vec<_> = std::fs::read_dir(tmp.path().join("state/remote"))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert!(
            !files.iter().any(|f| f.to_string_lossy().contains("nonce")),
            "{files:?}"
        );
        assert!(agent.state_payload().len() < 2048);
        Ok(())
    }

    #[test]
    fn a_damaged_state_file_starts_reports_and_refuses_documents() -> R {
        let tmp = tempfile::tempdir()?;
        let (path, local) = gateway_with_pending(tmp.path(), 0)?;
        let state_path = tmp.path().join("state/remote/state.json");
        std::fs::write(&state_path, b"{\"gateway\": broken")?;
        let (cfg, agent) = Agent::boot(&path, local)?;
        let mut agent = agent.ok_or("no agent")?;
        assert_eq!(cfg.sources.sim.rate, 9.0, "the stored documents still run");
        let s = agent.status_object();
        assert_eq!(s["state"], "rejected");
        assert!(s["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("state_damaged")));
        let v3 = signed("version = 3\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 11.0\n")?;
        assert!(matches!(
            agent.on_document(Layer::Gateway, &v3),
            DocumentOutcome::Rejected(r) if r.starts_with("state_damaged")
        ));
        assert_eq!(std::fs::read(&state_path)?, b"{\"gateway\": broken");
        Ok(())
    }

    #[test]
    fn min_version_refuses_old_documents_on_a_fresh_gateway() -> R {
        let tmp = tempfile::tempdir()?;
        let (path, local) = gateway_with(tmp.path(), 0, "[remote.min_version]\ngateway = 5\n")?;
        std::fs::remove_file(tmp.path().join("state/remote/state.json"))?;
        let (cfg, agent) = Agent::boot(&path, local)?;
        let mut agent = agent.ok_or("no agent")?;
        assert_eq!(
            cfg.sources.sim.rate, 1.0,
            "the stored v2 is below the minimum"
        );
        let old = signed("version = 4\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 11.0\n")?;
        assert!(matches!(
            agent.on_document(Layer::Gateway, &old),
            DocumentOutcome::Rejected(r) if r.starts_with("stale_version")
        ));
        let new = signed("version = 5\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 11.0\n")?;
        assert!(matches!(
            agent.on_document(Layer::Gateway, &new),
            DocumentOutcome::Live { .. }
        ));
        Ok(())
    }

    #[test]
    fn documents_must_expire_and_not_too_far_ahead() -> R {
        let tmp = tempfile::tempdir()?;
        let (mut agent, _) = pending_agent(tmp.path())?;
        agent.state.pending = None;
        let text = "version = 3\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 11.0\n";
        let no_expiry = document::seal(text, &key());
        assert!(matches!(
            agent.on_document(Layer::Gateway, &no_expiry),
            DocumentOutcome::Rejected(r) if r.starts_with("no_expiry")
        ));
        let far = document::seal(&format!("not_after = 2999-01-01T00:00:00Z\n{text}"), &key());
        assert!(matches!(
            agent.on_document(Layer::Gateway, &far),
            DocumentOutcome::Rejected(r) if r.starts_with("expiry_too_far")
        ));
        // A clock that booted behind the last recorded time judges by the recorded time.
        agent.state.clock_ms = now_ms() + 10 * 86_400_000;
        let soon = document::sign_at(
            text.as_bytes(),
            &key(),
            OffsetDateTime::now_utc(),
            Duration::from_secs(86_400),
        )?;
        assert!(matches!(
            agent.on_document(Layer::Gateway, &soon),
            DocumentOutcome::Rejected(r) if r == "expired"
        ));
        Ok(())
    }

    #[test]
    fn an_interrupted_installation_is_undone_at_start() -> R {
        let tmp = tempfile::tempdir()?;
        let (path, local) = gateway_with_pending(tmp.path(), 0)?;
        // Power lost after version 2 was installed, before its state was recorded.
        let sd = StateDir::open(&tmp.path().join("state"))?;
        let mut st = sd.load()?;
        st.gateway.applied = 1;
        st.gateway.floor = 1;
        st.pending = None;
        st.installing = Some(Installing {
            layer: Layer::Gateway,
            version: 2,
        });
        sd.save(&st)?;
        let (cfg, agent) = Agent::boot(&path, local)?;
        assert_eq!(cfg.sources.sim.rate, 5.0);
        let s = agent.ok_or("no agent")?.status_object();
        assert_eq!(s["versions"]["gateway"], 1);
        let st = sd.load()?;
        assert!(st.installing.is_none());
        // Version 2 was never applied: it may come again.
        assert_eq!(st.gateway.floor, 1);
        Ok(())
    }

    #[test]
    fn a_damaged_nonce_log_refuses_commands_until_all_could_have_expired() -> R {
        let tmp = tempfile::tempdir()?;
        let (path, local) = gateway_with_pending(tmp.path(), 0)?;
        let cmd = command::sign(
            &command::render(
                Action::Status,
                "s1",
                "g1",
                "abcdefghijklmnop",
                now_ms() + 60_000,
            ),
            &key(),
        )?;
        std::fs::write(tmp.path().join("state/remote/nonces.json"), b"{broken")?;
        let (_, agent) = Agent::boot(&path, local.clone())?;
        let mut agent = agent.ok_or("no agent")?;
        match agent.on_command(&cmd) {
            CommandOutcome::Refused(a) => {
                assert!(String::from_utf8_lossy(&a).contains("nonce log was lost"))
            }
            other => return Err(format!("a command ran without its nonce log: {other:?}").into()),
        }
        // With a readable log the same command runs.
        std::fs::remove_file(tmp.path().join("state/remote/nonces.json"))?;
        let (_, agent) = Agent::boot(&path, local)?;
        let mut agent = agent.ok_or("no agent")?;
        assert!(matches!(agent.on_command(&cmd), CommandOutcome::Run(_)));
        Ok(())
    }

    #[test]
    fn a_lost_state_file_adopts_the_stored_versions() -> R {
        let tmp = tempfile::tempdir()?;
        let (path, local) = gateway_with_pending(tmp.path(), 0)?;
        std::fs::remove_file(tmp.path().join("state/remote/state.json"))?;
        let (cfg, agent) = Agent::boot(&path, local)?;
        assert_eq!(
            cfg.sources.sim.rate, 9.0,
            "the stored document stays in effect"
        );
        let s = agent.ok_or("no agent")?.status_object();
        assert_eq!(s["versions"]["gateway"], 2);
        Ok(())
    }

    #[test]
    fn the_topics_follow_a_remotely_changed_prefix() -> R {
        let tmp = tempfile::tempdir()?;
        let (path, local) = gateway_with_pending(tmp.path(), 0)?;
        let sd = StateDir::open(&tmp.path().join("state"))?;
        sd.install(
            Layer::Gateway,
            &signed("version = 3\ntarget = \"s1/g1\"\n[mqtt]\ntopic_prefix = \"retail/v2\"\n")?,
        )?;
        let mut st = sd.load()?;
        st.gateway.applied = 3;
        st.gateway.floor = 3;
        st.pending = None;
        sd.save(&st)?;
        let (cfg, agent) = Agent::boot(&path, local)?;
        let agent = agent.ok_or("no agent")?;
        assert_eq!(cfg.mqtt.topic_prefix, "retail/v2");
        assert!(agent
            .subscriptions()
            .contains(&"retail/v2/s1/g1/config".to_string()));
        assert_eq!(agent.state_topic(), "retail/v2/s1/g1/config/state");
        assert_eq!(
            agent.inbox("retail/v2/_fleet/config"),
            Some(Inbox::Config(Layer::Fleet))
        );
        assert_eq!(agent.inbox("storegw/v1/s1/g1/cmd"), None);
        Ok(())
    }

    #[test]
    fn stored_documents_from_an_untrusted_key_are_not_used() -> R {
        let tmp = tempfile::tempdir()?;
        let (path, local) = gateway_with_pending(tmp.path(), 0)?;
        // The central team replaced its key: the stored documents no longer verify.
        let other = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]);
        std::fs::write(
            tmp.path().join("central.pub"),
            document::format_public_key(&other.verifying_key()),
        )?;
        let (cfg, agent) = Agent::boot(&path, local)?;
        assert_eq!(cfg.sources.sim.rate, 1.0, "the local file alone");
        let s = agent.ok_or("no agent")?.status_object();
        assert_eq!(s["state"], "rejected");
        assert!(s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unknown_key")));
        Ok(())
    }
}
