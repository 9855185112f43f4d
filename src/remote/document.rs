//! Signed configuration documents: parsing, signature check, expiry, replay, forbidden keys,
//! layering over the local file and the same validation as `check-config`.
//!
//! The envelope is a text file a person can read and diff: the TOML overlay, then one last line
//!
//! ```text
//! # storegw-signature: ed25519:<key-id>:<base64 signature>
//! ```
//!
//! The signature covers every byte before that line (the overlay exactly as written, its final
//! newline included). Being a TOML comment, the line leaves the whole file valid TOML. The key id
//! is the first 8 bytes of SHA-256 over the 32-byte public key, in hex: it only picks which
//! trusted key to try, it is never trusted by itself.

use crate::config::{self, Config};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::Signature;
use std::fmt;
use std::path::Path;
use std::time::Duration;
use time::OffsetDateTime;

/// Marker of the signature line; anything after it on the line is the signature itself.
pub const SIGNATURE_PREFIX: &str = "# storegw-signature: ";

/// Largest signed document accepted: a whole storegw.toml is a few KiB, and an MQTT retained
/// message of unbounded size must not be parsed on a small store box.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// The longest a document may stay valid: `not_after` at most this far ahead of the gateway's
/// clock. A broker that withholds newer documents can replay an old one for this long at most.
pub const MAX_VALIDITY: Duration = Duration::from_secs(90 * 86_400);

/// How long `storegw sign` makes a document valid when the overlay names no `not_after`.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(30 * 86_400);

/// The longest piece of outside text a refusal reason quotes; reasons go into state.json, the
/// status document and `config/state`, so input must never size them.
pub const MAX_EXCERPT: usize = 64;

/// A bounded, printable excerpt of outside text: at most `max` characters, anything but
/// printable ASCII shown as `?`, `...` when cut. Keeps a refusal reason a few hundred bytes
/// whatever the input was.
pub fn excerpt(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 3);
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push_str("...");
            break;
        }
        out.push(if c.is_ascii_graphic() || c == ' ' {
            c
        } else {
            '?'
        });
    }
    out
}

/// Why a document was refused; `reason()` is the short text the status document will carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not a signed document at all (no signature line, bad base64, a key id that is not 16 hex
    /// digits, too big): refused before any signature was checked.
    Malformed(String),
    /// Signed by a trusted key, but the signed text is not a valid overlay (not UTF-8, not
    /// TOML, no `version` or `target`). Reads `malformed: ...` like [`Rejection::Malformed`].
    BadOverlay(String),
    /// Signed with a key id none of the trusted keys has.
    UnknownKey(String),
    /// The signature does not match the bytes under the named key (tampered or wrong key).
    BadSignature,
    /// Signed for another gateway or layer (`target` does not name the topic it came on).
    WrongTarget(String),
    /// `not_after` is in the past.
    Expired,
    /// The document carries no `not_after`: every document must expire.
    NoExpiry,
    /// `not_after` is more than [`MAX_VALIDITY`] ahead of the gateway's clock.
    ExpiryTooFar,
    /// `version` is not greater than the last applied one (a replay or an out-of-order push).
    StaleVersion {
        /// The version the document carries.
        version: i64,
        /// The version to exceed: the layer's replay floor (last applied or rolled back, at
        /// least `[remote.min_version]` - 1), or `--last-version` for `storegw verify`.
        last: i64,
    },
    /// The overlay sets a key only the local file may set.
    ForbiddenKey(String),
    /// The merged configuration fails `check-config`'s validation.
    Invalid {
        /// The first problem's dotted key, or `(document)` / `(state)` when no key is to blame.
        key: String,
        /// `check-config`'s message for it (cut to an excerpt in the reason).
        message: String,
    },
    /// The overlay sets a delivery setting beyond what a document may set (see [`BOUNDS`]).
    OutOfBounds {
        /// The delivery setting, as a dotted key of [`BOUNDS`] (`mqtt.linger`, ...).
        key: String,
        /// What a document may set it to, from [`BOUNDS`] (`at most 10s`).
        limit: &'static str,
    },
}

impl Rejection {
    /// The short, stable reason string for status reporting and `storegw verify`.
    /// Every piece of text taken from the input is cut to an [`excerpt`], so a reason is at most
    /// a few hundred bytes of printable ASCII.
    pub fn reason(&self) -> String {
        match self {
            Rejection::Malformed(m) | Rejection::BadOverlay(m) => {
                format!("malformed: {}", excerpt(m, 160))
            }
            Rejection::UnknownKey(id) => format!("unknown_key: {}", excerpt(id, MAX_EXCERPT)),
            Rejection::BadSignature => "bad_signature".into(),
            Rejection::WrongTarget(t) => format!("wrong_target: {}", excerpt(t, 130)),
            Rejection::Expired => "expired".into(),
            Rejection::NoExpiry => "no_expiry: a document must carry `not_after`".into(),
            Rejection::ExpiryTooFar => format!(
                "expiry_too_far: not_after more than {} days ahead",
                MAX_VALIDITY.as_secs() / 86_400
            ),
            Rejection::StaleVersion { version, last } => {
                format!("stale_version: {version} <= {last}")
            }
            Rejection::ForbiddenKey(k) => format!("forbidden_key: {}", excerpt(k, 130)),
            Rejection::Invalid { key, message } => {
                format!("invalid: {}: {}", excerpt(key, 130), excerpt(message, 200))
            }
            Rejection::OutOfBounds { key, limit } => {
                format!("out_of_bounds: {key}: {limit} when set by a document")
            }
        }
    }

    /// True when nothing proves the input came from a trusted key (no envelope, an unknown
    /// key, a signature that does not verify). Such a refusal is only counted: it is never
    /// persisted, reported or answered, so junk on a remote topic costs no disk write and
    /// cannot shape what the gateway publishes.
    pub fn is_unverified(&self) -> bool {
        matches!(
            self,
            Rejection::Malformed(_) | Rejection::UnknownKey(_) | Rejection::BadSignature
        )
    }

    /// The `reason` label of `storegw_remote_unverified_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) | Rejection::BadOverlay(_) => "malformed",
            Rejection::UnknownKey(_) => "unknown_key",
            Rejection::BadSignature => "bad_signature",
            Rejection::WrongTarget(_) => "wrong_target",
            Rejection::Expired => "expired",
            Rejection::NoExpiry => "no_expiry",
            Rejection::ExpiryTooFar => "expiry_too_far",
            Rejection::StaleVersion { .. } => "stale_version",
            Rejection::ForbiddenKey(_) => "forbidden_key",
            Rejection::Invalid { .. } => "invalid",
            Rejection::OutOfBounds { .. } => "out_of_bounds",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

impl std::error::Error for Rejection {}

/// The trusted-key file format lives in the configuration layer (`[remote] public_key_file` is
/// checked by `check-config`); re-exported so the document and command code names it here.
pub use crate::config::trusted_keys::{format_public_key, key_id, parse_public_key, TrustedKeys};

/// True for a key id as [`key_id`] writes it: 16 lowercase hex digits.
pub fn is_key_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A signed document split into its parts (signature not yet checked).
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// The exact signed bytes: the overlay.
    pub overlay: &'a [u8],
    /// Key id named by the signature line.
    pub key_id: String,
    /// The 64-byte signature.
    pub signature: Signature,
}

/// Splits a signed document into overlay bytes and signature line; checks nothing else.
pub fn split(signed: &[u8]) -> Result<Envelope<'_>, Rejection> {
    if signed.len() > MAX_DOCUMENT_BYTES {
        return Err(Rejection::Malformed(format!(
            "{} bytes, more than {MAX_DOCUMENT_BYTES}",
            signed.len()
        )));
    }
    // The signature line is the last line; a trailing newline after it is allowed.
    let body = signed.strip_suffix(b"\n").unwrap_or(signed);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    let start = body
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let overlay = signed.get(..start).unwrap_or_default();
    let last = body.get(start..).unwrap_or_default();
    let sig_line = std::str::from_utf8(last)
        .ok()
        .and_then(|l| l.strip_prefix(SIGNATURE_PREFIX))
        .ok_or_else(|| {
            Rejection::Malformed(format!(
                "the last line must be `{SIGNATURE_PREFIX}ed25519:<key-id>:<signature>`"
            ))
        })?;
    let mut parts = sig_line.trim().splitn(3, ':');
    let (Some("ed25519"), Some(id), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Rejection::Malformed(
            "signature line must read ed25519:<key-id>:<signature>".into(),
        ));
    };
    if !is_key_id(id) {
        return Err(Rejection::Malformed(
            "the key id must be 16 hex digits".into(),
        ));
    }
    let raw = B64
        .decode(sig)
        .map_err(|_| Rejection::Malformed("signature is not base64".into()))?;
    let bytes: [u8; 64] = raw
        .as_slice()
        .try_into()
        .map_err(|_| Rejection::Malformed(format!("signature has {} bytes, not 64", raw.len())))?;
    Ok(Envelope {
        overlay,
        key_id: id.to_string(),
        signature: Signature::from_bytes(&bytes),
    })
}

/// A document whose signature checked out: the overlay parsed, its header fields extracted.
#[derive(Debug, Clone)]
pub struct Document {
    /// The overlay's configuration keys (`version` and `not_after` removed).
    pub overlay: toml::Table,
    /// The document's version; each accepted document must carry a greater one.
    pub version: i64,
    /// After this instant the document is refused.
    pub not_after: Option<OffsetDateTime>,
    /// What it is signed for: `_fleet` or `<store>/<gateway>` (see [`FLEET_TARGET`]).
    pub target: String,
    /// Id of the key that signed it.
    pub key_id: String,
}

/// The `target` of a fleet-wide document; a gateway's own documents name `<store>/<gateway>`.
pub const FLEET_TARGET: &str = "_fleet";

/// The header fields of an overlay.
#[derive(Debug, Clone)]
pub struct Header {
    /// The positive `version`; each accepted document must carry a greater one.
    pub version: i64,
    /// `not_after`; None when the overlay has none (`sign` adds one, verification refuses it).
    pub not_after: Option<OffsetDateTime>,
    /// What it is signed for: `_fleet` or `<store>/<gateway>`, checked to be well formed.
    pub target: String,
}

/// The `target` a gateway's own documents must carry.
pub fn gateway_target(store: &str, gateway: &str) -> String {
    format!("{store}/{gateway}")
}

fn check_target(t: &str) -> Result<(), String> {
    let ok = t == FLEET_TARGET
        || t.split_once('/')
            .is_some_and(|(s, g)| config::valid_id(s) && config::valid_id(g));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`target` `{t}` must be \"{FLEET_TARGET}\" or \"<store>/<gateway>\""
        ))
    }
}

/// Parses overlay text into its configuration keys and its header (`version`, `not_after`,
/// `target`); used by `sign` before signing and by verification after the signature check.
/// The target is signed with the rest, so a document signed for one gateway (or for the fleet)
/// is refused on any other topic.
pub fn parse_overlay(text: &str) -> Result<(toml::Table, Header), String> {
    let mut t: toml::Table = toml::from_str(text)
        .map_err(|e| format!("not TOML: {}", e.message().trim().replace('\n', " ")))?;
    let version = match t.remove("version") {
        Some(toml::Value::Integer(v)) if v > 0 => v,
        Some(_) => return Err("`version` must be a positive integer".into()),
        None => return Err("missing top-level `version` (a positive integer)".into()),
    };
    let not_after = match t.remove("not_after") {
        None => None,
        Some(v) => {
            let s = match &v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Datetime(d) => d.to_string(),
                _ => return Err("`not_after` must be an RFC 3339 date-time".into()),
            };
            let at = OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    format!("`not_after` `{s}` is not an RFC 3339 date-time with offset")
                })?;
            Some(at)
        }
    };
    let target = match t.remove("target") {
        Some(toml::Value::String(s)) => s,
        Some(_) => return Err("`target` must be a string".into()),
        None => {
            return Err(format!(
                "missing top-level `target` (\"{FLEET_TARGET}\" or \"<store>/<gateway>\")"
            ))
        }
    };
    check_target(&target)?;
    Ok((
        t,
        Header {
            version,
            not_after,
            target,
        },
    ))
}

/// The signed text of any envelope (a document or a command) once its signature checks out
/// under a trusted key, with that key's id.
pub fn signed_text<'a>(
    signed: &'a [u8],
    keys: &TrustedKeys,
) -> Result<(&'a str, String), Rejection> {
    let env = split(signed)?;
    let key = keys
        .get(&env.key_id)
        .ok_or_else(|| Rejection::UnknownKey(env.key_id.clone()))?;
    key.verify_strict(env.overlay, &env.signature)
        .map_err(|_| Rejection::BadSignature)?;
    let text =
        std::str::from_utf8(env.overlay).map_err(|_| Rejection::BadOverlay("not UTF-8".into()))?;
    Ok((text, env.key_id))
}

/// Appends the signature line to `text` (a newline first if it lacks one): the envelope of
/// documents and commands alike.
pub fn seal(text: &str, key: &ed25519_dalek::SigningKey) -> Vec<u8> {
    use ed25519_dalek::Signer;
    let mut body = text.as_bytes().to_vec();
    if !body.is_empty() && !body.ends_with(b"\n") {
        body.push(b'\n');
    }
    let sig = key.sign(&body);
    let line = format!(
        "{SIGNATURE_PREFIX}ed25519:{}:{}\n",
        key_id(&key.verifying_key()),
        B64.encode(sig.to_bytes())
    );
    body.extend_from_slice(line.as_bytes());
    body
}

/// Step 1: the signature against the trusted keys, then the overlay's syntax and header.
pub fn verify_signature(signed: &[u8], keys: &TrustedKeys) -> Result<Document, Rejection> {
    let (text, key_id) = signed_text(signed, keys)?;
    let (overlay, h) = parse_overlay(text).map_err(Rejection::BadOverlay)?;
    Ok(Document {
        overlay,
        version: h.version,
        not_after: h.not_after,
        target: h.target,
        key_id,
    })
}

/// Steps 2 and 3: expiry against `now` (a document must carry `not_after`, at most
/// [`MAX_VALIDITY`] ahead), then the version against the last applied one.
pub fn check_fresh(
    doc: &Document,
    now: OffsetDateTime,
    last_version: i64,
) -> Result<(), Rejection> {
    let Some(not_after) = doc.not_after else {
        return Err(Rejection::NoExpiry);
    };
    if now > not_after {
        return Err(Rejection::Expired);
    }
    if not_after - now > MAX_VALIDITY {
        return Err(Rejection::ExpiryTooFar);
    }
    if doc.version <= last_version {
        return Err(Rejection::StaleVersion {
            version: doc.version,
            last: last_version,
        });
    }
    Ok(())
}

/// Keys only the local file may set, as dotted paths (`[]` any array item); a table entry
/// covers every key below it. Besides these, any key named `*_file` or `*_dir` anywhere is a
/// secret's or a local path. A signing key reaches the whole fleet, so what it could do if it
/// were ever misused is kept small (docs/fleet.md, "What a document may change"):
/// - identity and remote control: `gateway`, `remote`;
/// - transport security: where the broker is and how it is reached (`mqtt.url`, `mqtt.host`,
///   `mqtt.tls`, `mqtt.allow_insecure`, `mqtt.username`), so credentials never go to a host
///   or over a channel the local file did not choose;
/// - privacy: the whole `privacy` section, `sources.ble.known_beacons` and
///   `sources.wifi.visits` (what is pseudonymized, how long a key lives, what is tracked),
///   and `sources.wifi.infrastructure` (device addresses: hashed at load from the local file,
///   they would be kept as written in a saved document);
/// - data loss: the whole `spool` section (caps and ages that delete the backlog);
/// - exposure: `http.listen`;
/// - local paths: `sources.pos.watch.[].dir`.
pub const FORBIDDEN: &[&str] = &[
    "remote",
    "gateway",
    "mqtt.url",
    "mqtt.host",
    "mqtt.tls",
    "mqtt.allow_insecure",
    "mqtt.username",
    "privacy",
    "spool",
    "http.listen",
    "sources.ble.known_beacons",
    "sources.ble.allowlist",
    "sources.wifi.visits",
    "sources.wifi.infrastructure",
    "sources.pos.watch.[].dir",
];

/// Delivery settings a document may set only within these limits: beyond them a misused key
/// could stop delivery (a reconnect backoff of years, a linger that never sends) or let the
/// spool's caps delete the backlog (a drain rate of one event a second, tiny batches).
pub const BOUNDS: &[(&str, &str)] = &[
    ("mqtt.reconnect_min", "at most 30s"),
    ("mqtt.reconnect_max", "at most 5m"),
    ("mqtt.linger", "at most 10s"),
    ("mqtt.keep_alive", "at most 5m"),
    ("mqtt.connect_timeout", "at most 60s"),
    ("mqtt.shutdown_timeout", "at most 5m"),
    ("mqtt.status_interval", "at most 10m"),
    ("mqtt.drain_rate", "0 (no limit) or at least 100 events/s"),
    ("mqtt.batch_max_bytes", "at least 64KiB"),
];

/// Step 7: the delivery settings the overlay sets, checked against [`BOUNDS`] on the merged
/// configuration.
pub fn check_bounds(overlay: &toml::Table, cfg: &Config) -> Result<(), Rejection> {
    let Some(mqtt) = overlay.get("mqtt").and_then(|v| v.as_table()) else {
        return Ok(());
    };
    let m = &cfg.mqtt;
    let secs = Duration::from_secs;
    for (key, limit) in BOUNDS {
        let leaf = key.trim_start_matches("mqtt.");
        if !mqtt.contains_key(leaf) {
            continue;
        }
        let within = match leaf {
            "reconnect_min" => m.reconnect_min.0 <= secs(30),
            "reconnect_max" => m.reconnect_max.0 <= secs(300),
            "linger" => m.linger.0 <= secs(10),
            "keep_alive" => m.keep_alive.0 <= secs(300),
            "connect_timeout" => m.connect_timeout.0 <= secs(60),
            "shutdown_timeout" => m.shutdown_timeout.0 <= secs(300),
            "status_interval" => m.status_interval.0 <= secs(600),
            "drain_rate" => m.drain_rate == 0 || m.drain_rate >= 100,
            "batch_max_bytes" => m.batch_max_bytes.0 >= 64 * 1024,
            _ => true,
        };
        if !within {
            return Err(Rejection::OutOfBounds {
                key: (*key).to_string(),
                limit,
            });
        }
    }
    Ok(())
}

/// Step 4: every key of the overlay the local file alone may set (empty when none).
pub fn forbidden_keys(overlay: &toml::Table) -> Vec<String> {
    let mut out = Vec::new();
    walk(overlay, "", "", false, &mut out);
    out
}

/// Collects forbidden keys; below a forbidden table (`inside`) every leaf is one.
fn walk(t: &toml::Table, path: &str, pattern: &str, inside: bool, out: &mut Vec<String>) {
    for (k, v) in t {
        let p = join(path, k);
        let pat = join(pattern, k);
        let named_path = k.ends_with("_file") || k.ends_with("_dir");
        let forbidden = inside || FORBIDDEN.contains(&pat.as_str());
        match v {
            toml::Value::Table(sub) if !named_path && !sub.is_empty() => {
                walk(sub, &p, &pat, forbidden, out)
            }
            toml::Value::Array(items)
                if !named_path && items.iter().any(|i| i.is_table()) && !forbidden =>
            {
                for (i, item) in items.iter().enumerate() {
                    if let toml::Value::Table(sub) = item {
                        walk(sub, &format!("{p}.{i}"), &format!("{pat}.[]"), false, out);
                    }
                }
            }
            _ if named_path || forbidden => out.push(p),
            _ => {}
        }
    }
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_string()
    } else {
        format!("{a}.{b}")
    }
}

/// Deep merge: tables merge key by key, anything else (arrays included) is replaced whole.
pub fn deep_merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => deep_merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The effective configuration table: the local file, then the fleet overlay, then this
/// gateway's overlay (the gateway's word wins over the fleet's, the fleet's over the file's).
pub fn merge_layers(
    local: &toml::Table,
    fleet: Option<&toml::Table>,
    gateway: Option<&toml::Table>,
) -> toml::Table {
    let mut merged = local.clone();
    for layer in [fleet, gateway].into_iter().flatten() {
        deep_merge(&mut merged, layer);
    }
    merged
}

/// Step 6: renders the merged table and runs `check-config`'s parsing and validation on it;
/// `base` resolves relative paths as for the local file.
pub fn validate_merged(
    merged: &toml::Table,
    base: Option<&Path>,
) -> Result<(String, Config), Rejection> {
    let text = toml::to_string(merged).map_err(|e| Rejection::Invalid {
        key: "(document)".into(),
        message: e.to_string(),
    })?;
    match config::parse("merged", &text, base) {
        Ok(cfg) => Ok((text, cfg)),
        Err(e) => {
            let first = e.0.into_iter().next();
            Err(Rejection::Invalid {
                key: first
                    .as_ref()
                    .map(|i| i.key.clone())
                    .unwrap_or_else(|| "(document)".into()),
                message: first.map(|i| i.message).unwrap_or_default(),
            })
        }
    }
}

/// What a successful verification yields.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The document as checked.
    pub document: Document,
    /// The merged configuration as TOML text (what a restart would write).
    pub merged_text: String,
    /// The merged configuration, validated.
    pub config: Config,
}

/// Inputs of the full pipeline besides the document itself.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// Keys from `[remote] public_key_file`.
    pub keys: &'a TrustedKeys,
    /// The current time (a parameter so tests and replays are deterministic).
    pub now: OffsetDateTime,
    /// Version of the last document applied on this layer (0 when none).
    pub last_version: i64,
    /// The local file, parsed as a table.
    pub local: &'a toml::Table,
    /// Directory of the local file (relative paths).
    pub base: Option<&'a Path>,
    /// Targets accepted (the topic's: `_fleet` or `<store>/<gateway>`); empty accepts any.
    pub targets: &'a [String],
}

/// The whole pipeline in the documented order: signature, target, expiry, version, forbidden
/// keys, merge over the local file, validation.
pub fn verify(signed: &[u8], cx: &Context<'_>) -> Result<Verified, Rejection> {
    let document = verify_signature(signed, cx.keys)?;
    if !cx.targets.is_empty() && !cx.targets.contains(&document.target) {
        return Err(Rejection::WrongTarget(document.target));
    }
    check_fresh(&document, cx.now, cx.last_version)?;
    if let Some(k) = forbidden_keys(&document.overlay).into_iter().next() {
        return Err(Rejection::ForbiddenKey(k));
    }
    let merged = merge_layers(cx.local, None, Some(&document.overlay));
    let (merged_text, config) = validate_merged(&merged, cx.base)?;
    check_bounds(&document.overlay, &config)?;
    Ok(Verified {
        document,
        merged_text,
        config,
    })
}

/// Signs overlay bytes now, valid for [`DEFAULT_VALIDITY`] unless the overlay names its own
/// `not_after` (see [`sign_at`]).
pub fn sign(overlay: &[u8], key: &ed25519_dalek::SigningKey) -> Result<Vec<u8>, String> {
    sign_at(overlay, key, OffsetDateTime::now_utc(), DEFAULT_VALIDITY)
}

/// Signs overlay bytes: returns the signed document (overlay, a newline if it lacked one, the
/// signature line). An overlay without `not_after` gets `not_after = now + valid_for` as its
/// first line; one whose `not_after` is further than [`MAX_VALIDITY`] ahead is refused, as
/// gateways would refuse it. Refuses overlays that are not TOML or lack `version` or `target`.
pub fn sign_at(
    overlay: &[u8],
    key: &ed25519_dalek::SigningKey,
    now: OffsetDateTime,
    valid_for: Duration,
) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(overlay).map_err(|_| "the overlay is not UTF-8".to_string())?;
    if text.lines().any(|l| l.starts_with(SIGNATURE_PREFIX)) {
        return Err("the file is already signed".into());
    }
    if valid_for > MAX_VALIDITY || valid_for.is_zero() {
        return Err(format!(
            "a document is valid for at most {} days",
            MAX_VALIDITY.as_secs() / 86_400
        ));
    }
    let (_, header) = parse_overlay(text)?;
    let text = match header.not_after {
        Some(t) if t - now > MAX_VALIDITY => {
            return Err(format!(
                "`not_after` is more than {} days ahead: gateways would refuse it",
                MAX_VALIDITY.as_secs() / 86_400
            ))
        }
        Some(_) => text.to_string(),
        None => {
            let until = (now + valid_for)
                .replace_nanosecond(0)
                .unwrap_or(now + valid_for);
            let stamp = until
                .format(&time::format_description::well_known::Rfc3339)
                .map_err(|e| e.to_string())?;
            format!("not_after = {stamp}\n{text}")
        }
    };
    if text.len() + 201 > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "the overlay is larger than {MAX_DOCUMENT_BYTES} bytes"
        ));
    }
    Ok(seal(&text, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn keys(k: &SigningKey) -> TrustedKeys {
        TrustedKeys::parse(&format!(
            "# central team\n{} main\n",
            format_public_key(&k.verifying_key())
        ))
        .unwrap_or_default()
    }

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-06-01 12:00 UTC)
    }

    const LOCAL: &str = "[gateway]\nstore_id = \"s1\"\ngateway_id = \"g1\"\nstate_dir = \"/var/lib/storegw\"\n\n[http]\nenabled = false\n\n[log]\nlevel = \"info\"\n";

    fn local() -> toml::Table {
        toml::from_str(LOCAL).unwrap_or_default()
    }

    fn run(signed: &[u8], trusted: &TrustedKeys, last: i64) -> Result<Verified, Rejection> {
        let l = local();
        let cx = Context {
            keys: trusted,
            now: now(),
            last_version: last,
            local: &l,
            base: None,
            targets: &[],
        };
        verify(signed, &cx)
    }

    fn signed(overlay: &str, k: &SigningKey) -> Vec<u8> {
        sign_at(overlay.as_bytes(), k, now(), DEFAULT_VALIDITY).unwrap_or_default()
    }

    #[test]
    fn accepts_and_merges() {
        let k = key(1);
        let doc = signed(
            "version = 2\ntarget = \"_fleet\"\n[log]\nlevel = \"debug\"\n",
            &k,
        );
        let v = run(&doc, &keys(&k), 1).map_err(|e| e.reason());
        let v = v
            .as_ref()
            .map(|v| (v.document.version, v.config.log.level.as_str()));
        assert_eq!(v, Ok((2, "debug")));
    }

    #[test]
    fn rejects_bad_signature_tampering_and_wrong_key() {
        let k = key(1);
        let doc = signed(
            "version = 2\ntarget = \"_fleet\"\n[log]\nlevel = \"debug\"\n",
            &k,
        );
        // One byte of the overlay changed.
        let mut tampered = doc.clone();
        if let Some(b) = tampered.iter_mut().position(|b| *b == b'd') {
            tampered[b] = b'D';
        }
        assert_eq!(
            run(&tampered, &keys(&k), 0).err(),
            Some(Rejection::BadSignature)
        );
        // A byte of the signature changed.
        let text = String::from_utf8(doc.clone()).unwrap_or_default();
        let sig_start = text.rfind(':').unwrap_or(0) + 1;
        let mut bad_sig = doc.clone();
        bad_sig[sig_start] = if bad_sig[sig_start] == b'A' {
            b'B'
        } else {
            b'A'
        };
        assert_eq!(
            run(&bad_sig, &keys(&k), 0).err(),
            Some(Rejection::BadSignature)
        );
        // Signed by another key: unknown id; and a forged id naming the trusted key.
        let other = signed("version = 2\ntarget = \"_fleet\"\n", &key(2));
        assert!(matches!(
            run(&other, &keys(&k), 0),
            Err(Rejection::UnknownKey(_))
        ));
        let forged = String::from_utf8(other).unwrap_or_default().replace(
            &key_id(&key(2).verifying_key()),
            &key_id(&k.verifying_key()),
        );
        assert_eq!(
            run(forged.as_bytes(), &keys(&k), 0).err(),
            Some(Rejection::BadSignature)
        );
        // No signature line at all.
        assert!(matches!(
            run(b"version = 2\ntarget = \"_fleet\"\n", &keys(&k), 0),
            Err(Rejection::Malformed(_))
        ));
        assert_eq!(Rejection::BadSignature.reason(), "bad_signature");
    }

    #[test]
    fn key_ids_are_exactly_16_hex_digits_and_reasons_stay_bounded() {
        let k = key(1);
        let doc =
            String::from_utf8(signed("version = 2\ntarget = \"_fleet\"\n", &k)).unwrap_or_default();
        let id = key_id(&k.verifying_key());
        assert!(is_key_id(&id));
        for bad in [
            "\u{1}".repeat(250_000),
            "ABCDEF0123456789".into(),
            "0123456789abcde".into(),
            "0123456789abcdef0".into(),
            "\"}{\\".into(),
        ] {
            let forged = doc.replace(&id, &bad);
            let r = run(forged.as_bytes(), &keys(&k), 0).err();
            assert_eq!(
                r.as_ref().map(|r| r.reason()),
                Some("malformed: the key id must be 16 hex digits".to_string())
            );
            assert!(r.is_some_and(|r| r.is_unverified()));
        }
        // Every reason that quotes input quotes a bounded, printable excerpt.
        let junk = "\u{1}\"\\é".repeat(100_000);
        for r in [
            Rejection::Malformed(junk.clone()),
            Rejection::BadOverlay(junk.clone()),
            Rejection::UnknownKey(junk.clone()),
            Rejection::WrongTarget(junk.clone()),
            Rejection::ForbiddenKey(junk.clone()),
            Rejection::Invalid {
                key: junk.clone(),
                message: junk.clone(),
            },
        ] {
            let reason = r.reason();
            assert!(reason.len() < 400, "{} bytes", reason.len());
            assert!(
                reason.bytes().all(|b| (0x20..0x7f).contains(&b)),
                "{reason}"
            );
        }
        // A signed document with a bad overlay is not "unverified": it is reported.
        assert!(!Rejection::BadOverlay("x".into()).is_unverified());
    }

    #[test]
    fn delivery_settings_stay_within_bounds() {
        let k = key(1);
        for (overlay, ok) in [
            ("[mqtt]\nreconnect_max = \"3650d\"", false),
            (
                "[mqtt]\nreconnect_min = \"1h\"\nreconnect_max = \"2h\"",
                false,
            ),
            ("[mqtt]\nlinger = \"3650d\"", false),
            ("[mqtt]\ndrain_rate = 1", false),
            ("[mqtt]\nbatch_max_bytes = \"1KiB\"", false),
            ("[mqtt]\nstatus_interval = \"1d\"", false),
            ("[mqtt]\nreconnect_max = \"2m\"", true),
            ("[mqtt]\ndrain_rate = 0", true),
            ("[mqtt]\ndrain_rate = 500\nlinger = \"1s\"", true),
        ] {
            let doc = signed(
                &format!("version = 2\ntarget = \"_fleet\"\n{overlay}\n"),
                &k,
            );
            let r = run(&doc, &keys(&k), 0).err().map(|r| r.reason());
            assert_eq!(r.is_none(), ok, "{overlay}: {r:?}");
            if !ok {
                assert!(r.is_some_and(|r| r.starts_with("out_of_bounds: mqtt.")));
            }
        }
    }

    #[test]
    fn weak_public_keys_are_refused() {
        // The identity point (small order): any signature "verifies" under some checks.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let line = format!("ed25519:{}", B64.encode(identity));
        assert!(parse_public_key(&line).is_err_and(|e| e.contains("weak")));
    }

    #[test]
    fn documents_must_carry_a_bounded_expiry() {
        let k = key(1);
        let no_expiry = seal("version = 2\ntarget = \"_fleet\"\n", &k);
        assert_eq!(
            run(&no_expiry, &keys(&k), 0).err(),
            Some(Rejection::NoExpiry)
        );
        let far = seal(
            "version = 2\ntarget = \"_fleet\"\nnot_after = 2026-12-01T00:00:00Z\n",
            &k,
        );
        assert_eq!(run(&far, &keys(&k), 0).err(), Some(Rejection::ExpiryTooFar));
    }

    #[test]
    fn several_trusted_keys() {
        let (a, b) = (key(1), key(2));
        let trusted = TrustedKeys::parse(&format!(
            "{}\n\n{}\n",
            format_public_key(&a.verifying_key()),
            format_public_key(&b.verifying_key())
        ));
        let trusted = trusted.unwrap_or_default();
        assert_eq!(trusted.ids().len(), 2);
        assert!(run(
            &signed("version = 5\ntarget = \"_fleet\"\n", &b),
            &trusted,
            0
        )
        .is_ok());
        assert!(TrustedKeys::parse("ed25519:AAAA\n").is_err());
        assert!(TrustedKeys::parse("# nothing\n").is_err());
    }

    #[test]
    fn rejects_expired() {
        let k = key(1);
        let doc = signed(
            "version = 2\ntarget = \"_fleet\"\nnot_after = 2026-05-01T00:00:00Z\n",
            &k,
        );
        assert_eq!(run(&doc, &keys(&k), 0).err(), Some(Rejection::Expired));
        assert_eq!(Rejection::Expired.reason(), "expired");
        let ok = signed(
            "version = 2\ntarget = \"_fleet\"\nnot_after = \"2026-07-01T00:00:00+02:00\"\n",
            &k,
        );
        assert!(run(&ok, &keys(&k), 0).is_ok());
        // A date-time without an offset is not an instant: refused at signing.
        assert!(sign(
            b"version = 2\ntarget = \"_fleet\"\nnot_after = 2026-07-01T00:00:00\n",
            &k
        )
        .is_err());
    }

    #[test]
    fn rejects_older_and_equal_versions() {
        let k = key(1);
        let doc = signed("version = 7\ntarget = \"_fleet\"\n", &k);
        for last in [7, 8] {
            let r = run(&doc, &keys(&k), last).err();
            assert_eq!(r, Some(Rejection::StaleVersion { version: 7, last }));
        }
        assert!(run(&doc, &keys(&k), 6).is_ok());
        let r = Rejection::StaleVersion {
            version: 7,
            last: 7,
        };
        assert_eq!(r.reason(), "stale_version: 7 <= 7");
    }

    #[test]
    fn rejects_each_forbidden_key_class() {
        let k = key(1);
        for (overlay, key) in [
            ("[gateway]\nstate_dir = \"/tmp/x\"", "gateway.state_dir"),
            ("[gateway]\ngateway_id = \"g2\"", "gateway.gateway_id"),
            ("[gateway]\nstore_id = \"s2\"", "gateway.store_id"),
            (
                "[remote]\nconfirm_timeout = \"1m\"",
                "remote.confirm_timeout",
            ),
            (
                "[remote.min_version]\nfleet = 0",
                "remote.min_version.fleet",
            ),
            ("[mqtt]\nurl = \"mqtt://evil.example\"", "mqtt.url"),
            ("[mqtt]\nhost = \"evil.example\"", "mqtt.host"),
            ("[mqtt]\nallow_insecure = true", "mqtt.allow_insecure"),
            ("[mqtt]\ntls = false", "mqtt.tls"),
            ("[mqtt]\nusername = \"x\"", "mqtt.username"),
            ("[privacy]\nrotation = \"3650d\"", "privacy.rotation"),
            ("[privacy]\npseudonym_bytes = 16", "privacy.pseudonym_bytes"),
            ("[spool.pos]\nmax_age = \"1m\"", "spool.pos.max_age"),
            ("[spool]\nflush_interval = \"1h\"", "spool.flush_interval"),
            ("[http]\nlisten = \"0.0.0.0:9380\"", "http.listen"),
            (
                "[sources.ble]\nknown_beacons = \"all\"",
                "sources.ble.known_beacons",
            ),
            ("[sources.wifi]\nvisits = true", "sources.wifi.visits"),
            // Addresses: the local file's are hashed at load; a document is saved as signed.
            (
                "[sources.wifi]\ninfrastructure = [\"a4:5e:60:01:02:03\"]",
                "sources.wifi.infrastructure",
            ),
            ("[mqtt]\npassword_file = \"/tmp/p\"", "mqtt.password_file"),
            (
                "[mqtt]\nclient_key_file = \"/tmp/k\"",
                "mqtt.client_key_file",
            ),
            (
                "[mqtt]\nclient_cert_file = \"/tmp/c\"",
                "mqtt.client_cert_file",
            ),
            ("[mqtt]\nca_file = \"/tmp/ca\"", "mqtt.ca_file"),
            (
                "[privacy]\njoin_key_file = \"/tmp/j\"",
                "privacy.join_key_file",
            ),
            // A document that could switch sealing off would downgrade a store's privacy.
            ("[privacy]\ncustomer = \"keyed\"", "privacy.customer"),
            ("[privacy]\ncustomer = \"drop\"", "privacy.customer"),
            (
                "[privacy]\nrecipient_keys_file = \"/tmp/evil.pub\"",
                "privacy.recipient_keys_file",
            ),
            (
                "[sources.pos.http]\ntoken_file = \"/tmp/t\"",
                "sources.pos.http.token_file",
            ),
            (
                "[[sources.pos.poll]]\nurl = \"https://x\"\ntoken_file = \"/tmp/t\"",
                "sources.pos.poll.0.token_file",
            ),
            (
                "[[sources.pos.watch]]\ndir = \"/etc\"",
                "sources.pos.watch.0.dir",
            ),
        ] {
            let doc = signed(
                &format!("version = 2\ntarget = \"_fleet\"\n{overlay}\n"),
                &k,
            );
            let r = run(&doc, &keys(&k), 0).err().map(|r| r.reason());
            assert_eq!(r, Some(format!("forbidden_key: {key}")), "{overlay}");
        }
    }

    #[test]
    fn no_document_changes_customer_sealing() {
        // The customer mode and the recipient keys are local-only (the whole `privacy`
        // section, FORBIDDEN): no signed document may downgrade sealing
        // to keyed pseudonyms or drop, nor point the gateway at another recipient key.
        let k = key(1);
        for target in ["_fleet"] {
            for (overlay, key) in [
                ("[privacy]\ncustomer = \"keyed\"", "privacy.customer"),
                ("[privacy]\ncustomer = \"sealed\"", "privacy.customer"),
                (
                    "[privacy]\nrecipient_keys_file = \"/tmp/r.pub\"",
                    "privacy.recipient_keys_file",
                ),
                ("privacy = { customer = \"drop\" }", "privacy.customer"),
            ] {
                let doc = signed(
                    &format!("version = 2\ntarget = \"{target}\"\n{overlay}\n"),
                    &k,
                );
                let r = run(&doc, &keys(&k), 0).err().map(|r| r.reason());
                assert_eq!(
                    r,
                    Some(format!("forbidden_key: {key}")),
                    "{target}: {overlay}"
                );
            }
        }
    }

    #[test]
    fn every_config_path_key_is_forbidden() {
        // Every `_file` key the configuration knows is caught by the suffix rule.
        let src = [
            include_str!("../config/mod.rs"),
            include_str!("../source/pos/config.rs"),
            include_str!("../source/ble/config.rs"),
            include_str!("../source/wifi/config.rs"),
        ];
        for text in src {
            for line in text.lines() {
                let l = line.trim();
                if let Some(rest) = l.strip_prefix("pub ") {
                    if let Some((name, ty)) = rest.split_once(':') {
                        if ty.contains("PathBuf") && !name.contains(' ') {
                            assert!(
                                name.ends_with("_file") || name.ends_with("_dir") || name == "dir",
                                "path key `{name}` needs a forbidden rule"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rejects_overlay_that_makes_config_invalid() {
        let k = key(1);
        let doc = signed(
            "version = 2\ntarget = \"_fleet\"\n[log]\nlevel = \"loud\"\n",
            &k,
        );
        let r = run(&doc, &keys(&k), 0).err().map(|r| r.reason());
        assert_eq!(
            r.as_deref(),
            Some("invalid: log.level: `loud` is not one of trace, debug, info, warn, error")
        );
        let doc = signed("version = 2\ntarget = \"_fleet\"\n[mqtt]\nprot = 1\n", &k);
        let r = run(&doc, &keys(&k), 0).err().map(|r| r.reason());
        assert!(
            r.as_deref()
                .is_some_and(|r| r.starts_with("invalid: ") && r.contains("prot")),
            "{r:?}"
        );
    }

    #[test]
    fn gateway_overrides_fleet_overrides_local() {
        let local: toml::Table =
            toml::from_str("[log]\nlevel = \"info\"\nformat = \"text\"\n[sources.ble]\nenabled = true\nwindow = \"10s\"\n[x]\na = [1, 2, 3]\n")
                .unwrap_or_default();
        let fleet: toml::Table = toml::from_str(
            "[log]\nlevel = \"warn\"\n[sources.ble]\nwindow = \"20s\"\n[x]\na = [9]\n",
        )
        .unwrap_or_default();
        let gw: toml::Table = toml::from_str("[log]\nlevel = \"debug\"\n").unwrap_or_default();
        let m = merge_layers(&local, Some(&fleet), Some(&gw));
        let get = |a: &str, b: &str| m.get(a).and_then(|t| t.get(b)).cloned();
        assert_eq!(get("log", "level"), Some(toml::Value::from("debug")));
        assert_eq!(get("log", "format"), Some(toml::Value::from("text")));
        // Arrays are replaced, not appended.
        assert_eq!(get("x", "a"), Some(toml::Value::Array(vec![9.into()])));
        let ble = m.get("sources").and_then(|s| s.get("ble"));
        assert_eq!(
            ble.and_then(|b| b.get("window")).cloned(),
            Some(toml::Value::from("20s"))
        );
        assert_eq!(
            ble.and_then(|b| b.get("enabled")).cloned(),
            Some(toml::Value::from(true))
        );
        // Without a gateway layer the fleet's value stands; without either, the file's.
        let m = merge_layers(&local, Some(&fleet), None);
        assert_eq!(
            m.get("log").and_then(|t| t.get("level")).cloned(),
            Some(toml::Value::from("warn"))
        );
        assert_eq!(merge_layers(&local, None, None), local);
    }

    #[test]
    fn sign_refuses_bad_overlays() {
        let k = key(1);
        assert!(sign(b"[log]\nlevel = \"debug\"\n", &k).is_err());
        assert!(sign(b"version = \"3\"\n", &k).is_err());
        assert!(sign(b"version = 0\ntarget = \"_fleet\"\n", &k).is_err());
        assert!(sign(b"version = 3\ntarget = \"_fleet\"\n[log\n", &k).is_err());
        let once = signed("version = 3\ntarget = \"_fleet\"", &k);
        assert!(sign(&once, &k).is_err(), "already signed");
        // The signed bytes are the overlay with a final newline, after the `not_after` sign
        // adds; the result stays TOML.
        assert!(once.starts_with(
            b"not_after = 2026-07-01T12:00:00Z\nversion = 3\ntarget = \"_fleet\"\n# storegw-signature: ed25519:"
        ));
        // An overlay's own not_after is kept, unless gateways would refuse it.
        let own = "version = 3\ntarget = \"_fleet\"\nnot_after = 2026-06-05T00:00:00Z\n";
        let kept = sign_at(own.as_bytes(), &k, now(), DEFAULT_VALIDITY).unwrap_or_default();
        assert!(kept.starts_with(own.as_bytes()));
        let far = "version = 3\ntarget = \"_fleet\"\nnot_after = 2027-06-05T00:00:00Z\n";
        assert!(sign_at(far.as_bytes(), &k, now(), DEFAULT_VALIDITY).is_err());
        assert!(sign_at(
            b"version = 3\ntarget = \"_fleet\"\n",
            &k,
            now(),
            MAX_VALIDITY * 2
        )
        .is_err());
        let text = String::from_utf8(once).unwrap_or_default();
        assert!(toml::from_str::<toml::Table>(&text).is_ok());
    }

    #[test]
    fn crlf_and_trailing_newline_tolerated_on_signature_line_only() {
        let k = key(1);
        let doc = signed("version = 4\ntarget = \"_fleet\"\n", &k);
        let mut crlf = doc.clone();
        crlf.pop();
        crlf.extend_from_slice(b"\r\n");
        assert!(run(&crlf, &keys(&k), 0).is_ok());
        let mut bare = doc;
        bare.pop();
        assert!(run(&bare, &keys(&k), 0).is_ok());
    }

    #[test]
    fn fuzz_seed_reaches_validation() {
        // fuzz/seeds/remote_document/signed_ok.toml is signed with the fuzz target's fixed key,
        // so the fuzzer starts from a document that passes every step.
        let seed = include_bytes!("../../fuzz/seeds/remote_document/signed_ok.toml");
        let k = key(7);
        let local: toml::Table =
            toml::from_str("[gateway]\nstore_id = \"s1\"\ngateway_id = \"g1\"\n")
                .unwrap_or_default();
        let cx = Context {
            keys: &keys(&k),
            now: now(),
            last_version: 1,
            local: &local,
            base: None,
            targets: &[],
        };
        let r = verify(seed, &cx).map(|v| v.document.version);
        assert_eq!(r.map_err(|e| e.reason()), Ok(2));
    }
}
