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
use crate::remote::state::{Installing, Layer, Pending, Persisted, Report, StateDir};
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;

/// Starts with an unconfirmed change before it is rolled back even if its deadline has not
/// passed (a gateway that keeps crashing with it).
pub const MAX_UNCONFIRMED_STARTS: u32 = 3;

/// What a message on a config topic leads to.
#[derive(Debug)]
pub enum DocumentOutcome {
    /// Already in effect (a retained message delivered again at a reconnection): nothing to do.
    Unchanged,
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
        let state = dir
            .load()
            .map_err(|e| format!("remote state damaged ({e}); move the file away to start over"))?;
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
        };
        agent.check_pending_at_boot()?;
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
        agent.save()?;
        Ok((cfg, Some(agent)))
    }

    /// A change installed by the previous process is confirmed by reaching the broker; this
    /// start counts one more try, and rolls back when the deadline has passed or the tries are
    /// used up.
    fn check_pending_at_boot(&mut self) -> Result<(), String> {
        let Some(mut p) = self.state.pending.clone() else {
            return Ok(());
        };
        p.starts += 1;
        let now = now_ms();
        if now > p.deadline_ms || p.starts > MAX_UNCONFIRMED_STARTS {
            let why = if now > p.deadline_ms {
                format!(
                    "not confirmed: the broker was not reached within {}s of applying it",
                    self.confirm_timeout.as_secs()
                )
            } else {
                format!("not confirmed after {} starts", p.starts - 1)
            };
            self.roll_back(&p, why)?;
        } else {
            // The wall clock may have jumped (a box without a battery-backed clock boots in
            // the past): never wait longer than one confirm_timeout from this start.
            let left = Duration::from_millis((p.deadline_ms - now).max(0) as u64)
                .min(self.confirm_timeout);
            self.confirm_by = Some(tokio::time::Instant::now() + left);
            tracing::warn!(
                layer = p.layer.as_str(),
                version = p.version,
                confirm_within_s = left.as_secs(),
                "configuration applied by restart: waiting to reach the broker before keeping it"
            );
            self.state.pending = Some(p);
        }
        self.save()
    }

    fn roll_back(&mut self, p: &Pending, why: String) -> Result<(), String> {
        let reason = match self.last_connect_error.as_ref().or(p.last_error.as_ref()) {
            Some(e) => format!("{why} (last error: {e})"),
            None => why,
        };
        tracing::error!(layer = p.layer.as_str(), version = p.version, %reason, "rolling back to the previous configuration");
        self.dir.restore_previous(p.layer)?;
        let prev = self
            .stored_overlay(p.layer)
            .ok()
            .flatten()
            .map(|(_, v)| v)
            .unwrap_or(0);
        let v = self.state.layer_mut(p.layer);
        v.applied = prev;
        v.floor = v.floor.max(p.version);
        self.state.pending = None;
        self.confirm_by = None;
        self.report(p.version, p.layer, "rolled_back", Some(reason));
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
    /// disk before this returns.
    pub fn on_document(&mut self, layer: Layer, signed: &[u8]) -> DocumentOutcome {
        if signed.is_empty() {
            // A cleared retained message: the layer's document stays; only a newer signed
            // document changes anything.
            return DocumentOutcome::Unchanged;
        }
        if self.dir.document(layer).ok().flatten().as_deref() == Some(signed)
            || self.last_refused[layer_index(layer)].as_deref() == Some(signed)
        {
            return DocumentOutcome::Unchanged;
        }
        match self.accept(layer, signed) {
            Ok(o) => o,
            Err((version, r)) => {
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
        }
    }

    /// The `target` a document on `layer` must be signed for.
    fn target(&self, layer: Layer) -> String {
        match layer {
            Layer::Fleet => document::FLEET_TARGET.to_string(),
            Layer::Gateway => document::gateway_target(&self.store, &self.gateway),
        }
    }

    fn accept(&mut self, layer: Layer, signed: &[u8]) -> Result<DocumentOutcome, (i64, Rejection)> {
        let doc = document::verify_signature(signed, &self.keys).map_err(|r| (0, r))?;
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
        document::check_fresh(&doc, OffsetDateTime::now_utc(), lv.applied.max(lv.floor))
            .map_err(|r| (v, r))?;
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
        } else {
            next.pending = Some(Pending {
                layer,
                version: v,
                deadline_ms: now_ms().saturating_add(self.confirm_timeout.as_millis() as i64),
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

    /// The session lasted: confirms the change applied by restart. Returns true when the
    /// report changed.
    pub fn on_settled(&mut self) -> bool {
        if self.settle_until.take().is_none() {
            return false;
        }
        self.last_connect_error = None;
        let Some(p) = self.state.pending.take() else {
            return false;
        };
        self.confirm_by = None;
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
        if let Some(p) = &mut self.state.pending {
            if p.last_error.as_deref() != Some(error.as_str()) {
                p.last_error = Some(error.clone());
                if let Err(e) = self.dir.save(&self.state) {
                    tracing::error!(error = %e, "cannot record the remote configuration state");
                }
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
        self.roll_back(
            &p,
            format!(
                "not confirmed: the broker was not reached within {}s of applying it",
                self.confirm_timeout.as_secs()
            ),
        )?;
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

    /// Verifies a command; a verified command's nonce is on disk before it runs.
    pub fn on_command(&mut self, signed: &[u8]) -> CommandOutcome {
        let now = now_ms();
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

    fn save(&self) -> Result<(), String> {
        crate::ops::status::set_config(Some(self.status_object()));
        self.dir.save(&self.state)
    }
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

    /// A gateway directory with a local file trusting `key()`, two installed gateway documents
    /// (rate 5 then rate 9, the second awaiting confirmation) and `pending` as the state.
    fn gateway_with_pending(
        dir: &Path,
        deadline_ms: i64,
        starts: u32,
    ) -> Result<(PathBuf, Config), Box<dyn std::error::Error>> {
        std::fs::write(
            dir.join("central.pub"),
            document::format_public_key(&key().verifying_key()),
        )?;
        let path = dir.join("storegw.toml");
        let text = format!(
            "[gateway]\nstore_id = \"s1\"\ngateway_id = \"g1\"\nstate_dir = \"{}\"\n[http]\nenabled = false\n\
             [sources.sim]\nenabled = true\nrate = 1.0\n[remote]\npublic_key_file = \"central.pub\"\n",
            dir.join("state").display()
        );
        std::fs::write(&path, &text)?;
        let local = crate::config::parse("storegw.toml", &text, Some(dir))?;
        let sd = StateDir::open(&dir.join("state"))?;
        sd.install(
            Layer::Gateway,
            &document::sign(
                b"version = 1\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 5.0\n",
                &key(),
            )?,
        )?;
        sd.install(
            Layer::Gateway,
            &document::sign(
                b"version = 2\ntarget = \"s1/g1\"\n[sources.sim]\nrate = 9.0\n",
                &key(),
            )?,
        )?;
        let mut st = Persisted::default();
        st.gateway.applied = 2;
        st.gateway.floor = 2;
        st.pending = Some(Pending {
            layer: Layer::Gateway,
            version: 2,
            deadline_ms,
            starts,
            last_error: Some("Connection refused".into()),
        });
        sd.save(&st)?;
        Ok((path, local))
    }

    #[test]
    fn a_start_after_the_deadline_rolls_back_before_running() -> R {
        let tmp = tempfile::tempdir()?;
        let (path, local) = gateway_with_pending(tmp.path(), now_ms() - 1, 1)?;
        let (cfg, agent) = Agent::boot(&path, local)?;
        let agent = agent.ok_or("no agent")?;
        assert_eq!(cfg.sources.sim.rate, 5.0, "the previous document is back");
        let s = agent.status_object();
        assert_eq!(s["state"], "rolled_back");
        assert_eq!(s["version"], 2);
        assert_eq!(s["versions"]["gateway"], 1);
        let reason = s["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("Connection refused"), "{reason}");
        assert!(agent.confirm_deadline().is_none());
        // The rolled-back version stays refused.
        let st = StateDir::open(&tmp.path().join("state"))?.load()?;
        assert_eq!((st.gateway.applied, st.gateway.floor), (1, 2));
        assert!(st.pending.is_none());
        Ok(())
    }

    #[test]
    fn a_change_that_keeps_crashing_the_gateway_is_rolled_back() -> R {
        let tmp = tempfile::tempdir()?;
        let (path, local) =
            gateway_with_pending(tmp.path(), now_ms() + 600_000, MAX_UNCONFIRMED_STARTS)?;
        let (cfg, agent) = Agent::boot(&path, local)?;
        assert_eq!(cfg.sources.sim.rate, 5.0);
        let s = agent.ok_or("no agent")?.status_object();
        assert_eq!(s["state"], "rolled_back");
        assert!(s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("after 3 starts")));
        Ok(())
    }

    #[test]
    fn a_pending_change_runs_until_confirmed_by_the_broker() -> R {
        let tmp = tempfile::tempdir()?;
        let (path, local) = gateway_with_pending(tmp.path(), now_ms() + 600_000, 0)?;
        let (cfg, agent) = Agent::boot(&path, local)?;
        let mut agent = agent.ok_or("no agent")?;
        assert_eq!(cfg.sources.sim.rate, 9.0);
        assert!(agent.confirm_deadline().is_some());
        assert!(!agent.on_connected(true));
        agent.on_acknowledged();
        assert!(agent.settle_deadline().is_some());
        assert!(agent.on_settled());
        assert_eq!(agent.status_object()["state"], "applied");
        assert!(agent.confirm_deadline().is_none());
        let st = StateDir::open(&tmp.path().join("state"))?.load()?;
        assert!(st.pending.is_none());
        assert_eq!(st.gateway.applied, 2);
        Ok(())
    }

    #[test]
    fn an_interrupted_installation_is_undone_at_start() -> R {
        let tmp = tempfile::tempdir()?;
        let (path, local) = gateway_with_pending(tmp.path(), now_ms() + 600_000, 0)?;
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
        let (path, local) = gateway_with_pending(tmp.path(), now_ms() + 600_000, 0)?;
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
            CommandOutcome::Run(_) => return Err("a command ran without its nonce log".into()),
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
        let (path, local) = gateway_with_pending(tmp.path(), now_ms() + 600_000, 0)?;
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
        let (path, local) = gateway_with_pending(tmp.path(), now_ms() + 600_000, 0)?;
        let sd = StateDir::open(&tmp.path().join("state"))?;
        sd.install(
            Layer::Gateway,
            &document::sign(
                b"version = 3\ntarget = \"s1/g1\"\n[mqtt]\ntopic_prefix = \"retail/v2\"\n",
                &key(),
            )?,
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
        let (path, local) = gateway_with_pending(tmp.path(), now_ms() + 600_000, 0)?;
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
