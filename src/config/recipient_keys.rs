//! The file of the central platform's public keys that `privacy.recipient_keys_file` names: one
//! `x25519:<base64 of 32 bytes>` per line, each known by its key id. Customer identifiers are
//! sealed to the **first** key listed (docs/pos.md, "Sealed customer identifiers").
//!
//! A leaf of the configuration layer: it imports nothing of storegw, so `check-config` refuses
//! a file that holds no usable key (with the file, the line and the reason) without the
//! configuration importing `privacy/`, and the sealing in `privacy::sealed` reads keys with the
//! same parser.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::montgomery::MontgomeryPoint;
use sha2::{Digest, Sha256};
use std::path::Path;

/// Bytes of a key id: the first 8 bytes of SHA-256 of the 32-byte public key. It names the key
/// inside every token, so the platform knows which private key opens it.
pub const KEY_ID_LEN: usize = 8;

/// The key id of an X25519 public key (see [`KEY_ID_LEN`]).
pub fn key_id(public: &[u8; 32]) -> [u8; KEY_ID_LEN] {
    let d = Sha256::digest(public);
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&d[..KEY_ID_LEN]);
    id
}

/// A key id as lowercase hex, as `check-config`, `keygen` and the public key file show it.
pub fn key_id_hex(id: &[u8; KEY_ID_LEN]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// One recipient key: the X25519 public key of the central platform and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientKey {
    /// [`key_id`] of `public`.
    pub id: [u8; KEY_ID_LEN],
    /// The X25519 public key (RFC 7748 u-coordinate, little-endian).
    pub public: [u8; 32],
}

/// The recipient keys of a gateway, in file order: the first one seals, the others are kept so
/// one file can name the next key during a rotation and `check-config` shows them.
#[derive(Debug, Clone, Default)]
pub struct RecipientKeys {
    keys: Vec<RecipientKey>,
}

impl RecipientKeys {
    /// Parses a recipient key file: one `x25519:<base64 32 bytes>` per line, optionally
    /// followed by a comment; blank lines and `#` lines are skipped. Errors name the line.
    pub fn parse(text: &str) -> Result<RecipientKeys, String> {
        let mut keys: Vec<RecipientKey> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let word = line.split_whitespace().next().unwrap_or("");
            let public = parse_public_key(word).map_err(|e| format!("line {}: {e}", i + 1))?;
            let id = key_id(&public);
            if keys.iter().any(|k| k.id == id) {
                return Err(format!("line {}: the same key is listed twice", i + 1));
            }
            keys.push(RecipientKey { id, public });
        }
        if keys.is_empty() {
            return Err("no recipient key (expected lines `x25519:<base64>`)".into());
        }
        Ok(RecipientKeys { keys })
    }

    /// Reads and parses a recipient key file; errors start with the file name.
    pub fn load(path: &Path) -> Result<RecipientKeys, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("`{}`: {e}", path.display()))
    }

    /// The key that seals: the first listed.
    pub fn sealing(&self) -> Option<&RecipientKey> {
        self.keys.first()
    }

    /// Every key, in file order.
    pub fn all(&self) -> &[RecipientKey] {
        &self.keys
    }
}

/// Parses `x25519:<base64 of the 32-byte public key>` and refuses a key no X25519 key pair
/// has ([`curve_point`]): a small-order point (the Diffie-Hellman result would be known, and
/// HPKE refuses to encrypt to it), a point of the twist, one with a small-order part, or a
/// non-canonical encoding.
pub fn parse_public_key(s: &str) -> Result<[u8; 32], String> {
    let b64 = s
        .strip_prefix("x25519:")
        .ok_or("a recipient key starts with `x25519:`")?;
    let raw = B64
        .decode(b64)
        .map_err(|e| format!("recipient key is not base64: {e}"))?;
    let bytes: [u8; 32] = raw
        .as_slice()
        .try_into()
        .map_err(|_| format!("recipient key has {} bytes, not 32", raw.len()))?;
    curve_point(&bytes)?;
    Ok(bytes)
}

/// The Edwards point of an X25519 public key, for the sealer's table (src/privacy/sealed.rs).
/// Refused, as no honestly made X25519 key pair has them: a point of the twist (no Edwards
/// form), a point with a small-order part (an honest key is clamp(k)·B, of prime order), and
/// a non-canonical encoding (high bit set, or u ≥ p: the platform rebuilds its public key
/// canonically, so the `kem_context` of every token would differ and none would open).
pub fn curve_point(public: &[u8; 32]) -> Result<EdwardsPoint, String> {
    let point = MontgomeryPoint(*public)
        .to_edwards(0)
        .ok_or("not a point of Curve25519 (a twist point), not a usable public key")?;
    if point.is_small_order() {
        return Err("a small-order X25519 point, not a usable public key".into());
    }
    if !point.is_torsion_free() {
        return Err("an X25519 point with a small-order part, not a usable public key".into());
    }
    if point.to_montgomery().to_bytes() != *public {
        return Err("a non-canonical X25519 encoding, not a usable public key".into());
    }
    Ok(point)
}

/// Renders a public key as one line of a recipient key file, with its id as comment.
pub fn format_public_key(public: &[u8; 32]) -> String {
    format!(
        "x25519:{}  # key id {}",
        B64.encode(public),
        key_id_hex(&key_id(public))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_names_the_bad_one() {
        // The X25519 base point (u = 9) is a valid public key.
        let mut nine = [0u8; 32];
        nine[0] = 9;
        let line = format_public_key(&nine);
        let keys = RecipientKeys::parse(&format!("# platform\n\n{line}\n")).unwrap_or_default();
        assert_eq!(keys.all().len(), 1);
        assert_eq!(keys.sealing().map(|k| k.public), Some(nine));
        let e = RecipientKeys::parse(&format!("{line}\nx25519:AAAA\n"))
            .err()
            .unwrap_or_default();
        assert!(e.starts_with("line 2:") && e.contains("bytes"), "{e}");
        let e = RecipientKeys::parse(&format!("{line}\n{line}\n"))
            .err()
            .unwrap_or_default();
        assert!(e.contains("twice"), "{e}");
        // The zero point (small order).
        let zero = format!("x25519:{}", B64.encode([0u8; 32]));
        let e = RecipientKeys::parse(&zero).err().unwrap_or_default();
        assert!(e.contains("small-order"), "{e}");
        // u = 2 is on the twist: no X25519 key pair has it.
        let mut two = [0u8; 32];
        two[0] = 2;
        let e = RecipientKeys::parse(&format!("x25519:{}", B64.encode(two)))
            .err()
            .unwrap_or_default();
        assert!(e.contains("twist"), "{e}");
        // The base point plus a point of order 8, and u = 9 spelled with the high bit set or
        // as p + 9: the same X25519 results, but no honest key looks like that.
        let torsion = (curve25519_dalek::constants::ED25519_BASEPOINT_POINT
            + curve25519_dalek::constants::EIGHT_TORSION[1])
            .to_montgomery()
            .to_bytes();
        let mut high = nine;
        high[31] |= 0x80;
        let mut p_plus_9 = [0xffu8; 32];
        p_plus_9[0] = 0xed + 9;
        p_plus_9[31] = 0x7f;
        for (key, want) in [
            (torsion, "small-order part"),
            (high, "non-canonical"),
            (p_plus_9, "non-canonical"),
        ] {
            let e = RecipientKeys::parse(&format!("x25519:{}", B64.encode(key)))
                .err()
                .unwrap_or_default();
            assert!(e.contains(want), "{e}");
        }
        let e = RecipientKeys::parse("ed25519:AAAA")
            .err()
            .unwrap_or_default();
        assert!(e.contains("x25519:"), "{e}");
        assert!(RecipientKeys::parse("# nothing\n").is_err());
    }
}
