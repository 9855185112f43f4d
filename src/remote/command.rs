//! Signed commands on `{prefix}/{store}/{gateway}/cmd` (docs/fleet.md, "Commands").
//!
//! A command is a small TOML text signed exactly like a configuration document (same signature
//! line, same trusted keys):
//!
//! ```toml
//! command = "reconnect"                 # status | reconnect | rotate-keys | reload
//! store = "s042"                        # the gateway it is for: a command signed for one
//! gateway = "gw1"                       # gateway is refused by every other
//! nonce = "6f1c2a9e0b7d4e53"            # 16 to 64 characters [A-Za-z0-9_-], used once
//! not_after = 2026-12-02T10:05:00Z      # required, at most 24 hours ahead
//! # storegw-signature: ed25519:<key-id>:<base64>
//! ```
//!
//! Checked in this order: signature, target, expiry, replay (the nonce was seen before).
//! A nonce is remembered until its command expires, which is what bounds the memory: commands
//! expire within [`MAX_COMMAND_TTL_S`], and at most [`MAX_NONCES`] are remembered. None of the
//! commands deletes data or runs a program.

use crate::remote::document::{signed_text, TrustedKeys, MAX_DOCUMENT_BYTES};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The longest a command may stay valid: a captured command cannot be replayed later than
/// this, and the nonce memory stays small.
pub const MAX_COMMAND_TTL_S: i64 = 24 * 3600;

/// Outstanding nonces kept at most; beyond it new commands are refused until old ones expire.
pub const MAX_NONCES: usize = 10_000;

/// What a command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Publish the status document now.
    Status,
    /// Drop the broker connection and connect again.
    Reconnect,
    /// Draw new device keys now (pseudonyms change, aggregators forget their state).
    RotateKeys,
    /// Re-read the local configuration file, as SIGHUP does.
    Reload,
}

impl Action {
    /// Every command, for messages and the central tool.
    pub const ALL: [Action; 4] = [
        Action::Status,
        Action::Reconnect,
        Action::RotateKeys,
        Action::Reload,
    ];

    /// The command's word.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Status => "status",
            Action::Reconnect => "reconnect",
            Action::RotateKeys => "rotate-keys",
            Action::Reload => "reload",
        }
    }

    /// Parses a command word.
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// A verified command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// What to carry out; its word is repeated in the answer.
    pub action: Action,
    /// The sender's one-time id (16 to 64 of [A-Za-z0-9_-]): recorded against replay, repeated
    /// in the answer.
    pub nonce: String,
    /// Expiry, ms since the epoch.
    pub not_after_ms: i64,
}

/// Why a command was refused. The nonce is given when the command was readable enough to have
/// one, so the sender can match the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The short reason for `cmd/result` and the log (`wrong_target: ...`, `expired`, ...).
    pub reason: String,
    /// The command's nonce; None when the text was not readable enough to have one.
    pub nonce: Option<String>,
    /// The command word as written, even an unknown one; None when `nonce` is None.
    pub command: Option<String>,
}

fn refuse(reason: impl Into<String>) -> Refusal {
    Refusal {
        reason: reason.into(),
        nonce: None,
        command: None,
    }
}

/// The fields of a command text, before any check but syntax.
struct Fields {
    command: String,
    store: String,
    gateway: String,
    nonce: String,
    not_after_ms: i64,
}

fn parse_fields(text: &str) -> Result<Fields, String> {
    let t: toml::Table = toml::from_str(text)
        .map_err(|e| format!("not TOML: {}", e.message().trim().replace('\n', " ")))?;
    for k in t.keys() {
        if !["command", "store", "gateway", "nonce", "not_after"].contains(&k.as_str()) {
            return Err(format!("unknown field `{k}`"));
        }
    }
    let s = |k: &str| -> Result<String, String> {
        match t.get(k) {
            Some(toml::Value::String(v)) => Ok(v.clone()),
            Some(_) => Err(format!("`{k}` must be a string")),
            None => Err(format!("missing `{k}`")),
        }
    };
    let not_after = match t.get("not_after") {
        Some(toml::Value::Datetime(d)) => d.to_string(),
        Some(toml::Value::String(s)) => s.clone(),
        Some(_) => return Err("`not_after` must be an RFC 3339 date-time".into()),
        None => return Err("missing `not_after` (commands must expire)".into()),
    };
    let at = OffsetDateTime::parse(&not_after, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("`not_after` `{not_after}` is not an RFC 3339 date-time"))?;
    let nonce = s("nonce")?;
    if !(16..=64).contains(&nonce.len())
        || !nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("`nonce` must be 16 to 64 characters of [A-Za-z0-9_-]".into());
    }
    Ok(Fields {
        command: s("command")?,
        store: s("store")?,
        gateway: s("gateway")?,
        nonce,
        not_after_ms: (at.unix_timestamp_nanos() / 1_000_000) as i64,
    })
}

/// Renders a command text (unsigned) for the central tool.
pub fn render(
    action: Action,
    store: &str,
    gateway: &str,
    nonce: &str,
    not_after_ms: i64,
) -> String {
    format!(
        "command = \"{}\"\nstore = \"{store}\"\ngateway = \"{gateway}\"\nnonce = \"{nonce}\"\nnot_after = {}\n",
        action.as_str(),
        crate::event::rfc3339_ms(not_after_ms)
    )
}

/// Signs a command text: the text, then the signature line.
pub fn sign(text: &str, key: &ed25519_dalek::SigningKey) -> Result<Vec<u8>, String> {
    parse_fields(text)?;
    Ok(crate::remote::document::seal(text, key))
}

/// The nonces of commands that have not expired yet, persisted so a restart does not reopen a
/// replay window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NonceLog {
    /// nonce → the command's expiry (ms since the epoch).
    seen: BTreeMap<String, i64>,
    /// The latest time commands were checked at: a nonce is forgotten once its command expired
    /// by this time, so a clock that steps back afterwards must not make the command valid
    /// again. Expiry is judged against this mark, never against an earlier clock.
    #[serde(default)]
    high_water_ms: i64,
}

impl NonceLog {
    /// Moves the high-water mark to `now_ms` if later; returns the time to judge expiry by.
    pub fn advance(&mut self, now_ms: i64) -> i64 {
        self.high_water_ms = self.high_water_ms.max(now_ms);
        self.high_water_ms
    }

    /// Forgets nonces whose commands have expired: an expired command is refused anyway.
    pub fn prune(&mut self, now_ms: i64) {
        let now = self.advance(now_ms);
        self.seen.retain(|_, exp| *exp >= now);
    }

    /// Number of remembered nonces.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Verifies a signed command for this gateway: signature, target, expiry, replay. On success
/// the nonce is recorded in `log` (the caller persists it before acting).
pub fn verify(
    signed: &[u8],
    keys: &TrustedKeys,
    store: &str,
    gateway: &str,
    now_ms: i64,
    log: &mut NonceLog,
) -> Result<Command, Refusal> {
    log.prune(now_ms);
    // Never earlier than a time commands were already checked at (see `NonceLog`).
    let now_ms = log.advance(now_ms);
    if signed.len() > MAX_DOCUMENT_BYTES {
        return Err(refuse("malformed: too big"));
    }
    let (text, _) = signed_text(signed, keys).map_err(|e| refuse(e.reason()))?;
    let f = parse_fields(text).map_err(|e| refuse(format!("malformed: {e}")))?;
    let tag = |reason: String| Refusal {
        reason,
        nonce: Some(f.nonce.clone()),
        command: Some(f.command.clone()),
    };
    if f.store != store || f.gateway != gateway {
        return Err(tag(format!("wrong_target: {}/{}", f.store, f.gateway)));
    }
    let Some(action) = Action::parse(&f.command) else {
        return Err(tag(format!("unknown_command: {}", f.command)));
    };
    if now_ms > f.not_after_ms {
        return Err(tag("expired".into()));
    }
    if f.not_after_ms - now_ms > MAX_COMMAND_TTL_S * 1000 {
        return Err(tag(format!(
            "expiry_too_far: not_after more than {} h ahead",
            MAX_COMMAND_TTL_S / 3600
        )));
    }
    if log.seen.contains_key(&f.nonce) {
        return Err(tag("replayed: nonce already used".into()));
    }
    if log.seen.len() >= MAX_NONCES {
        return Err(tag("busy: too many unexpired commands".into()));
    }
    log.seen.insert(f.nonce.clone(), f.not_after_ms);
    Ok(Command {
        action,
        nonce: f.nonce,
        not_after_ms: f.not_after_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
    }

    fn trusted() -> Result<TrustedKeys, String> {
        TrustedKeys::parse(&crate::remote::document::format_public_key(
            &key().verifying_key(),
        ))
    }

    const NOW: i64 = 1_800_000_000_000;

    fn cmd(action: Action, nonce: &str, ttl_ms: i64) -> Result<Vec<u8>, String> {
        sign(&render(action, "s1", "g1", nonce, NOW + ttl_ms), &key())
    }

    #[test]
    fn accepts_once_and_refuses_the_replay() -> Result<(), String> {
        let keys = trusted()?;
        let mut log = NonceLog::default();
        let c = cmd(Action::Reconnect, "abcdefghijklmnop", 60_000)?;
        let ok = verify(&c, &keys, "s1", "g1", NOW, &mut log).map_err(|r| r.reason)?;
        assert_eq!(ok.action, Action::Reconnect);
        let again = verify(&c, &keys, "s1", "g1", NOW + 1, &mut log);
        assert_eq!(
            again.map_err(|r| r.reason),
            Err("replayed: nonce already used".to_string())
        );
        // Once the command has expired the nonce is forgotten, and the command is refused as
        // expired instead.
        let late = verify(&c, &keys, "s1", "g1", NOW + 60_001, &mut log);
        assert_eq!(late.map_err(|r| r.reason), Err("expired".to_string()));
        assert!(log.is_empty());
        Ok(())
    }

    #[test]
    fn a_clock_stepping_back_does_not_reopen_an_expired_command() -> Result<(), String> {
        let keys = trusted()?;
        let mut log = NonceLog::default();
        let c = cmd(Action::Reconnect, "abcdefghijklmnop", 60_000)?;
        assert!(verify(&c, &keys, "s1", "g1", NOW, &mut log).is_ok());
        // An hour later another command prunes the first nonce.
        let other = sign(
            &render(
                Action::Status,
                "s1",
                "g1",
                "qrstuvwxyzabcdef",
                NOW + 3_660_000,
            ),
            &key(),
        )?;
        assert!(verify(&other, &keys, "s1", "g1", NOW + 3_600_000, &mut log).is_ok());
        assert_eq!(log.len(), 1, "the first nonce was pruned");
        // The log survives a restart (it is persisted), then the clock steps back.
        let mut log: NonceLog =
            serde_json::from_slice(&serde_json::to_vec(&log).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        let r = verify(&c, &keys, "s1", "g1", NOW + 1_000, &mut log).map_err(|r| r.reason);
        assert_eq!(r, Err("expired".to_string()));
        Ok(())
    }

    #[test]
    fn refuses_other_targets_tampering_long_expiry_and_unknown_commands() -> Result<(), String> {
        let keys = trusted()?;
        let mut log = NonceLog::default();
        let c = cmd(Action::Status, "abcdefghijklmnop", 60_000)?;
        let r = verify(&c, &keys, "s1", "g2", NOW, &mut log).map_err(|r| r.reason);
        assert_eq!(r, Err("wrong_target: s1/g1".to_string()));
        let mut bad = c.clone();
        bad[10] ^= 1;
        let r = verify(&bad, &keys, "s1", "g1", NOW, &mut log).map_err(|r| r.reason);
        assert_eq!(r, Err("bad_signature".to_string()));
        let far = cmd(
            Action::Status,
            "abcdefghijklmnoq",
            2 * MAX_COMMAND_TTL_S * 1000,
        )?;
        let r = verify(&far, &keys, "s1", "g1", NOW, &mut log).map_err(|r| r.reason);
        assert!(r.is_err_and(|e| e.starts_with("expiry_too_far")));
        let text = render(Action::Status, "s1", "g1", "abcdefghijklmnor", NOW + 1000)
            .replace("\"status\"", "\"shell\"");
        let r = verify(&sign(&text, &key())?, &keys, "s1", "g1", NOW, &mut log);
        assert_eq!(
            r.map_err(|r| r.reason),
            Err("unknown_command: shell".into())
        );
        let short = render(Action::Status, "s1", "g1", "short", NOW + 1000);
        assert!(sign(&short, &key()).is_err());
        assert!(log.is_empty(), "no refused command leaves a nonce behind");
        Ok(())
    }
}
