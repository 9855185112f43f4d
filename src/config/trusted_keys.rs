//! The file of trusted public keys that `[remote] public_key_file` names: one
//! `ed25519:<base64>` per line, each known by its key id.
//!
//! A leaf of the configuration layer: it imports nothing of storegw, so `check-config` can
//! refuse a file that holds no usable key without the configuration importing `remote/`, and
//! the remote agent, documents, commands and tools read keys with the same parser.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};
use std::path::Path;

/// Key id of a public key: names the key in a signature line without being trusted itself.
pub fn key_id(key: &VerifyingKey) -> String {
    let d = Sha256::digest(key.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The public keys a gateway trusts (`[remote] public_key_file`).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(String, VerifyingKey)>,
}

impl TrustedKeys {
    /// Parses a public key file: one `ed25519:<base64 32 bytes>` per line, optionally followed by
    /// a comment; blank lines and `#` lines are skipped. Several keys let the central team rotate
    /// its signing key without a window where gateways trust nothing.
    pub fn parse(text: &str) -> Result<TrustedKeys, String> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let word = line.split_whitespace().next().unwrap_or("");
            let key = parse_public_key(word).map_err(|e| format!("line {}: {e}", i + 1))?;
            keys.push((key_id(&key), key));
        }
        if keys.is_empty() {
            return Err("no public key (expected lines `ed25519:<base64>`)".into());
        }
        Ok(TrustedKeys { keys })
    }

    /// Reads and parses a public key file.
    pub fn load(path: &Path) -> Result<TrustedKeys, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("`{}`: {e}", path.display()))
    }

    /// Ids of the trusted keys, for messages.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|(id, _)| id.clone()).collect()
    }

    /// The trusted key with this id.
    pub(crate) fn get(&self, id: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|(k, _)| k == id).map(|(_, v)| v)
    }
}

/// Parses `ed25519:<base64 of the 32-byte public key>`.
pub fn parse_public_key(s: &str) -> Result<VerifyingKey, String> {
    let b64 = s
        .strip_prefix("ed25519:")
        .ok_or("a public key starts with `ed25519:`")?;
    let raw = B64
        .decode(b64)
        .map_err(|e| format!("public key is not base64: {e}"))?;
    let bytes: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| format!("public key has {} bytes, not 32", raw.len()))?;
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|_| "not a valid Ed25519 public key".to_string())?;
    if key.is_weak() {
        // A small-order point: signatures under it prove nothing.
        return Err("a weak (small-order) Ed25519 public key".into());
    }
    Ok(key)
}

/// Renders a public key as one line of a public key file.
pub fn format_public_key(key: &VerifyingKey) -> String {
    format!("ed25519:{}", B64.encode(key.as_bytes()))
}
