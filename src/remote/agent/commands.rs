//! Signed commands on the cmd topic and the nonce log that keeps them from being replayed.

use super::{Agent, CommandOutcome};
use crate::event::{now_ms, rfc3339_ms, SCHEMA};
use crate::remote::command::{self, Action, NonceLog};
use crate::remote::document;
use crate::remote::state::StateDir;

impl Agent {
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
        let recorded = now.max(self.state.clock_ms);
        if let Some(until) = self.nonces_lost_until.filter(|u| recorded < *u) {
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

    pub(super) fn result_payload(
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
}

/// The nonce log, and until when commands must be refused because it was lost: a damaged or
/// unreadable log could hide a nonce of a command that has not expired yet, so no command is
/// accepted until every command signed before now has expired.
/// `now` is never earlier than the latest time the gateway recorded, so a box that boots with
/// its clock far behind does not shorten the wait.
pub(super) fn load_nonces(dir: &StateDir, now: i64) -> (NonceLog, Option<i64>) {
    let p = dir.path().join("nonces.json");
    let lost = || Some(now.saturating_add(command::MAX_COMMAND_TTL_S * 1000));
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
