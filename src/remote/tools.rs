//! The central team's side of remote configuration: key generation, signing, offline
//! verification and publishing a signed document as a retained message.

use super::document::{self, Context, TrustedKeys};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroize as _;

/// Prefix of a private key file's only line.
const PRIVATE_PREFIX: &str = "ed25519-private:";

/// Writes `PREFIX.key` (mode 0600, the seed) and `PREFIX.pub` (the public key line); refuses to
/// overwrite either, so a signing key is never lost by a slip. Returns the key id.
pub fn keygen(prefix: &Path) -> Result<String, String> {
    let key_path = with_suffix(prefix, "key");
    let pub_path = with_suffix(prefix, "pub");
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(format!("`{}` exists; not overwriting it", p.display()));
        }
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness from the kernel: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let mut line = format!("{PRIVATE_PREFIX}{}\n", B64.encode(seed));
    seed.zeroize();
    let written = write_new(&key_path, line.as_bytes(), 0o600);
    line.zeroize();
    written?;
    let public = key.verifying_key();
    let id = document::key_id(&public);
    write_new(
        &pub_path,
        format!("{} {id}\n", document::format_public_key(&public)).as_bytes(),
        0o644,
    )?;
    Ok(id)
}

fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Creates a file that must not exist yet, with its mode set at creation.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot create `{}`: {e}", path.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

/// Reads a private key file written by `keygen`; refuses one others may read.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, String> {
    crate::config::check_secret_mode(path)?;
    let mut text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let parsed = text
        .trim()
        .strip_prefix(PRIVATE_PREFIX)
        .ok_or_else(|| format!("`{}` is not a storegw private key", path.display()))
        .and_then(|b| {
            B64.decode(b)
                .map_err(|_| format!("`{}`: key is not base64", path.display()))
        });
    text.zeroize();
    let mut raw = parsed?;
    let seed: Result<[u8; 32], _> = raw.as_slice().try_into();
    raw.zeroize();
    let mut seed = seed.map_err(|_| format!("`{}`: key is not 32 bytes", path.display()))?;
    let key = SigningKey::from_bytes(&seed);
    seed.zeroize();
    Ok(key)
}

/// `storegw sign`: signs the exact bytes of `input` and writes the signed document to `out`
/// (default: `input` with `.signed` appended). Returns the output path.
/// An overlay without `not_after` is made valid for `valid_for` from now.
pub fn sign_file(
    input: &Path,
    key: &Path,
    out: Option<&Path>,
    valid_for: std::time::Duration,
) -> Result<PathBuf, String> {
    let overlay =
        std::fs::read(input).map_err(|e| format!("cannot read `{}`: {e}", input.display()))?;
    let key = load_signing_key(key)?;
    let signed = document::sign_at(&overlay, &key, time::OffsetDateTime::now_utc(), valid_for)
        .map_err(|e| format!("`{}`: {e}", input.display()))?;
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| with_suffix(input, "signed"));
    std::fs::write(&out, signed).map_err(|e| format!("cannot write `{}`: {e}", out.display()))?;
    Ok(out)
}

/// The outcome of `storegw verify`: the text to print, or the rejection.
pub enum VerifyOutcome {
    /// Every check passed; the merged configuration (or the overlay without `--config`).
    Accepted(String),
    /// The reason string a gateway would report.
    Rejected(document::Rejection),
}

/// `storegw verify`: the gateway's pipeline, offline. With a local config the overlay is merged
/// over it and validated as `check-config` does; without one, the checks up to forbidden keys run
/// and the overlay is printed.
pub fn verify_file(
    signed: &Path,
    public_key: &Path,
    config: Option<&Path>,
    last_version: i64,
) -> Result<VerifyOutcome, String> {
    let data =
        std::fs::read(signed).map_err(|e| format!("cannot read `{}`: {e}", signed.display()))?;
    let keys = TrustedKeys::load(public_key)?;
    let now = time::OffsetDateTime::now_utc();
    let Some(config) = config else {
        let doc = match document::verify_signature(&data, &keys) {
            Ok(d) => d,
            Err(r) => return Ok(VerifyOutcome::Rejected(r)),
        };
        if let Err(r) = document::check_fresh(&doc, now, last_version) {
            return Ok(VerifyOutcome::Rejected(r));
        }
        if let Some(k) = document::forbidden_keys(&doc.overlay).into_iter().next() {
            return Ok(VerifyOutcome::Rejected(document::Rejection::ForbiddenKey(
                k,
            )));
        }
        let text = toml::to_string(&doc.overlay).map_err(|e| e.to_string())?;
        return Ok(VerifyOutcome::Accepted(format!(
            "# version {} signed by {}; not merged (no --config)\n{text}",
            doc.version, doc.key_id
        )));
    };
    let local_text = std::fs::read_to_string(config)
        .map_err(|e| format!("cannot read `{}`: {e}", config.display()))?;
    let local: toml::Table = toml::from_str(&local_text)
        .map_err(|e| format!("`{}`: {}", config.display(), e.message().trim()))?;
    // The document must be signed for this gateway or for the fleet.
    let id = |k: &str| {
        local
            .get("gateway")
            .and_then(|g| g.get(k))
            .and_then(toml::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let targets = [
        document::FLEET_TARGET.to_string(),
        document::gateway_target(&id("store_id"), &id("gateway_id")),
    ];
    let cx = Context {
        keys: &keys,
        now,
        last_version,
        local: &local,
        base: config.parent(),
        targets: &targets,
    };
    Ok(match document::verify(&data, &cx) {
        Ok(v) => VerifyOutcome::Accepted(format!(
            "# version {} signed by {}, merged over {}\n{}",
            v.document.version,
            v.document.key_id,
            config.display(),
            v.merged_text
        )),
        Err(r) => VerifyOutcome::Rejected(r),
    })
}

/// `storegw push` options.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// The broker and topic prefix.
    pub conn: crate::ops::tail::BrokerConn,
    /// Store id of the target gateway.
    pub store: String,
    /// Gateway id; `None` publishes on the fleet-wide topic.
    pub gateway: Option<String>,
}

/// The topic a document goes to: one gateway's, or the fleet's.
pub fn config_topic(prefix: &str, store: &str, gateway: Option<&str>) -> String {
    match gateway {
        Some(g) => format!("{prefix}/{store}/{g}/config"),
        None => format!("{prefix}/_fleet/config"),
    }
}

fn mqtt_options(o: &PushOptions) -> Result<MqttOptions, String> {
    o.conn.client_options("storegw-push", 1024 * 1024)
}

/// `storegw push`: publishes a signed document retained at QoS 1 and waits for the broker's
/// acknowledgement. The file must look like a signed document (its signature is the gateways'
/// to check). Returns the topic.
pub async fn push(o: &PushOptions, file: &Path) -> Result<String, String> {
    if !crate::config::valid_id(&o.store) {
        return Err(format!("--store `{}` is not a valid store id", o.store));
    }
    if let Some(g) = &o.gateway {
        if !crate::config::valid_id(g) {
            return Err(format!("--gateway `{g}` is not a valid gateway id"));
        }
    }
    let data = std::fs::read(file).map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
    let env = document::split(&data).map_err(|e| format!("`{}`: {e}", file.display()))?;
    let text = std::str::from_utf8(env.overlay)
        .map_err(|_| format!("`{}`: the overlay is not UTF-8", file.display()))?;
    let (_, header) =
        document::parse_overlay(text).map_err(|e| format!("`{}`: {e}", file.display()))?;
    // Checked here too, so a document meant for another gateway is caught before it is pushed.
    let want = match &o.gateway {
        Some(g) => document::gateway_target(&o.store, g),
        None => document::FLEET_TARGET.to_string(),
    };
    if header.target != want {
        return Err(format!(
            "`{}` is signed for target `{}`, not `{want}`: gateways would refuse it on {}",
            file.display(),
            header.target,
            config_topic(&o.conn.prefix, &o.store, o.gateway.as_deref())
        ));
    }
    let topic = config_topic(&o.conn.prefix, &o.store, o.gateway.as_deref());
    let (client, mut ev) = AsyncClient::new(mqtt_options(o)?, 16);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut last_error = None;
    loop {
        let e = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                return Err(format!(
                    "no acknowledgement from {} within 15 s{}",
                    o.conn.broker,
                    last_error.map(|e| format!(": {e}")).unwrap_or_default()
                ));
            }
            e = ev.poll() => e,
        };
        match e {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                client
                    .publish(topic.clone(), QoS::AtLeastOnce, true, data.clone())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(MqttEvent::Incoming(Packet::PubAck(_))) => break,
            Ok(_) => {}
            Err(e) => {
                last_error = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(300), ev.poll()).await;
    Ok(topic)
}

/// `storegw command` options.
#[derive(Debug, Clone)]
pub struct CommandOptions {
    /// The broker and topic prefix.
    pub conn: crate::ops::tail::BrokerConn,
    /// Target store and gateway (the command is signed for exactly this gateway).
    pub store: String,
    /// The gateway's id (`--gateway`): with `store`, the cmd topic and the signed target.
    pub gateway: String,
    /// The private key signing the command.
    pub key: PathBuf,
    /// How long the command stays valid.
    pub ttl: Duration,
    /// How long to wait for the answer.
    pub wait: Duration,
}

/// `storegw command`: signs a command for one gateway (fresh random nonce, expiry `ttl` from
/// now), publishes it on `{prefix}/{store}/{gateway}/cmd` (QoS 1, not retained) and waits for
/// the answer with the same nonce on `.../cmd/result`. Returns the answer; an error when none
/// came within `wait` (the gateway is offline, or its link dropped the command).
pub async fn command(
    o: &CommandOptions,
    action: super::command::Action,
) -> Result<serde_json::Value, String> {
    for (what, id) in [("--store", &o.store), ("--gateway", &o.gateway)] {
        if !crate::config::valid_id(id) {
            return Err(format!("{what} `{id}` is not a valid id"));
        }
    }
    let ttl_ms = o.ttl.as_millis().min(i64::MAX as u128) as i64;
    if ttl_ms <= 0 || ttl_ms > super::command::MAX_COMMAND_TTL_S * 1000 {
        return Err(format!(
            "--ttl must be between 1s and {}h",
            super::command::MAX_COMMAND_TTL_S / 3600
        ));
    }
    let key = load_signing_key(&o.key)?;
    let mut raw = [0u8; 12];
    getrandom::fill(&mut raw).map_err(|e| format!("no random nonce: {e}"))?;
    let nonce: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let text = super::command::render(
        action,
        &o.store,
        &o.gateway,
        &nonce,
        crate::event::now_ms().saturating_add(ttl_ms),
    );
    let signed = super::command::sign(&text, &key)?;
    let base = format!("{}/{}/{}", o.conn.prefix, o.store, o.gateway);
    let (client, mut ev) = AsyncClient::new(o.conn.client_options("storegw-cmd", 1024 * 1024)?, 16);
    let deadline = tokio::time::Instant::now() + o.wait;
    let mut last_error = None;
    loop {
        let e = tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                let _ = client.disconnect().await;
                return Err(format!(
                    "no answer from {}/{} within {:?} (nonce {nonce}){}",
                    o.store, o.gateway, o.wait,
                    last_error.map(|e| format!("; last error: {e}")).unwrap_or_default()
                ));
            }
            e = ev.poll() => e,
        };
        match e {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                client
                    .subscribe(format!("{base}/cmd/result"), QoS::AtLeastOnce)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            // Subscribed before publishing, so the answer cannot be missed.
            Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                client
                    .publish(
                        format!("{base}/cmd"),
                        QoS::AtLeastOnce,
                        false,
                        signed.clone(),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                    continue;
                };
                if v["nonce"] == nonce.as_str() {
                    let _ = client.disconnect().await;
                    let _ = tokio::time::timeout(Duration::from_millis(300), ev.poll()).await;
                    return Ok(v);
                }
            }
            Ok(_) => {}
            Err(e) => {
                last_error = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}
