//! Sealed customer identifiers: a normalized identifier encrypted to the central platform's
//! X25519 key with HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20-Poly1305), so that nothing on a gateway can open or test a token
//! (docs/pos.md, "Sealed customer identifiers"; docs/design.md, "Privacy model").
//!
//! Token (base64url without padding) of the bytes
//!
//! ```text
//! 0        version, 0x01
//! 1..9     key id: SHA-256(recipient public key)[0..8]
//! 9..41    enc: the HPKE encapsulated key (the sender's ephemeral X25519 public key)
//! 41..     ChaCha20-Poly1305 ciphertext of the padded value, its 16-byte tag last
//! ```
//!
//! with `info = "storegw/customer/v1" 0x00 <tag> 0x00 <store id>` (a token cannot move between
//! fields or stores), `aad = bytes 0..9` (the header is authenticated) and the value padded
//! with `0x80` and zeros to a multiple of 32 bytes (a token shows the value's length only in
//! 32-byte steps). Every seal draws a fresh ephemeral key: equal values give different tokens.
//!
//! The gateway side ([`Sealer`]) needs only the public key. Opening ([`Opener`]) and the
//! platform's key generation ([`generate_keypair`]) are in the central team's build (feature
//! `unseal`), not in the store binary.

use crate::config::recipient_keys::{RecipientKey, KEY_ID_LEN};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeS, Serializable};

/// The first byte of every token; a new layout gets a new version.
pub const TOKEN_VERSION: u8 = 1;
/// The purpose label at the start of the HPKE `info`.
pub const INFO_LABEL: &[u8] = b"storegw/customer/v1";
/// Plaintexts are padded to a multiple of this many bytes.
pub const PAD_BLOCK: usize = 32;
/// Longest normalized value that is sealed; a longer one is no identifier and is dropped.
pub const MAX_VALUE: usize = 1024;
/// Bytes before the ciphertext: version, key id, encapsulated key.
pub const HEADER_LEN: usize = 1 + KEY_ID_LEN + 32;
const TAG_LEN: usize = 16;

type PublicKey = <X25519HkdfSha256 as Kem>::PublicKey;

/// The HPKE `info` of an identifier: binds the purpose, the identifier's tag and the store.
pub fn info(tag: &str, store_id: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(INFO_LABEL.len() + tag.len() + store_id.len() + 2);
    v.extend_from_slice(INFO_LABEL);
    v.push(0);
    v.extend_from_slice(tag.as_bytes());
    v.push(0);
    v.extend_from_slice(store_id.as_bytes());
    v
}

/// ISO/IEC 7816-4 padding: `0x80`, then zeros up to a multiple of [`PAD_BLOCK`].
fn pad(value: &[u8]) -> Vec<u8> {
    let len = (value.len() / PAD_BLOCK + 1) * PAD_BLOCK;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(value);
    v.push(0x80);
    v.resize(len, 0);
    v
}

/// Seals identifiers of one store to the first recipient key (the gateway side).
#[derive(Clone)]
pub struct Sealer {
    id: [u8; KEY_ID_LEN],
    public: PublicKey,
    store_id: String,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field(
                "key_id",
                &crate::config::recipient_keys::key_id_hex(&self.id),
            )
            .field("store_id", &self.store_id)
            .finish()
    }
}

/// Ephemeral randomness for one seal: 32 bytes from the kernel CSPRNG, drawn (fallibly)
/// before the seal. HPKE's X25519 encapsulation asks for exactly that; should it ever ask for
/// more, the seal is discarded rather than run on anything but fresh kernel randomness.
struct OneSeal {
    bytes: [u8; 32],
    used: usize,
    overdrawn: bool,
}

impl hpke::rand_core::TryRng for OneSeal {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        let left = self.bytes.len() - self.used;
        if dst.len() > left {
            self.overdrawn = true;
            dst.fill(0);
            return Ok(());
        }
        dst.copy_from_slice(&self.bytes[self.used..self.used + dst.len()]);
        self.used += dst.len();
        Ok(())
    }
}

impl hpke::rand_core::TryCryptoRng for OneSeal {}

impl Drop for OneSeal {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.bytes);
    }
}

impl Sealer {
    /// A sealer for `store_id` to `key` (checked by a trial seal, so a gateway whose key cannot
    /// seal does not start).
    pub fn new(key: &RecipientKey, store_id: &str) -> Result<Sealer, String> {
        let public = PublicKey::from_bytes(&key.public)
            .map_err(|_| "not an X25519 public key".to_string())?;
        let s = Sealer {
            id: key.id,
            public,
            store_id: store_id.to_string(),
        };
        s.seal("loyalty", "trial")?;
        Ok(s)
    }

    /// Id of the key this sealer seals to, as hex.
    pub fn key_id(&self) -> String {
        crate::config::recipient_keys::key_id_hex(&self.id)
    }

    /// Seals a normalized identifier under its tag (`loyalty`, `email`, `phone`); the token is
    /// base64url without padding. Fails only when the kernel gives no randomness, or the value
    /// is longer than [`MAX_VALUE`].
    pub fn seal(&self, tag: &str, value: &str) -> Result<String, String> {
        use base64::Engine as _;
        if value.len() > MAX_VALUE {
            return Err("identifier too long".into());
        }
        let mut rng = OneSeal {
            bytes: [0u8; 32],
            used: 0,
            overdrawn: false,
        };
        getrandom::fill(&mut rng.bytes).map_err(|e| format!("no randomness: {e}"))?;
        let mut header = Vec::with_capacity(HEADER_LEN + value.len() + PAD_BLOCK + TAG_LEN);
        header.push(TOKEN_VERSION);
        header.extend_from_slice(&self.id);
        let mut plain = pad(value.as_bytes());
        let sealed =
            hpke::single_shot_seal_with_rng::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
                &OpModeS::Base,
                &self.public,
                &info(tag, &self.store_id),
                &plain,
                &header,
                &mut rng,
            );
        zeroize::Zeroize::zeroize(&mut plain);
        let (enc, ct) = sealed.map_err(|e| format!("sealing failed: {e}"))?;
        if rng.overdrawn {
            return Err("sealing asked for more randomness than drawn".into());
        }
        let mut token = header;
        token.extend_from_slice(&enc.to_bytes());
        token.extend_from_slice(&ct);
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token))
    }
}

/// Whether a string has the shape of a sealed token (base64url of a version-1 token), as
/// opposed to a keyed pseudonym (64 hex characters).
pub fn looks_sealed(token: &str) -> bool {
    use base64::Engine as _;
    token.len() != 64
        && base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .is_ok_and(|b| b.len() >= HEADER_LEN + PAD_BLOCK + TAG_LEN && b[0] == TOKEN_VERSION)
}

#[cfg(feature = "unseal")]
pub use central::{generate_keypair, parse_private_key, Opener};

/// The central platform's side: key pairs and opening (feature `unseal`, not in the store
/// binary).
#[cfg(feature = "unseal")]
mod central {
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;
    use hpke::OpModeR;
    use zeroize::Zeroizing;

    type PrivateKey = <X25519HkdfSha256 as Kem>::PrivateKey;
    type EncappedKey = <X25519HkdfSha256 as Kem>::EncappedKey;

    /// Makes a recipient key pair from 32 bytes of kernel randomness (HPKE DeriveKeyPair):
    /// the private key file's line (`x25519-private:<base64>`), the public one
    /// (`x25519:<base64>  # key id …`), and the key id.
    pub fn generate_keypair() -> Result<(Zeroizing<String>, String, String), String> {
        let mut ikm = Zeroizing::new([0u8; 32]);
        getrandom::fill(ikm.as_mut()).map_err(|e| format!("no randomness: {e}"))?;
        let (sk, pk) = X25519HkdfSha256::derive_keypair(ikm.as_ref());
        let mut pub_bytes = [0u8; 32];
        pub_bytes.copy_from_slice(&pk.to_bytes());
        let mut sk_bytes = Zeroizing::new([0u8; 32]);
        sk_bytes.copy_from_slice(&sk.to_bytes());
        let private = Zeroizing::new(format!(
            "x25519-private:{}",
            B64.encode(sk_bytes.as_slice())
        ));
        let id = crate::config::recipient_keys::key_id_hex(&crate::config::recipient_keys::key_id(
            &pub_bytes,
        ));
        Ok((
            private,
            crate::config::recipient_keys::format_public_key(&pub_bytes),
            id,
        ))
    }

    /// Parses a private key file's text (`x25519-private:<base64 of 32 bytes>`, `#` lines and
    /// blank lines skipped): the private key and the id of its public key.
    pub fn parse_private_key(text: &str) -> Result<(PrivateKey, [u8; KEY_ID_LEN]), String> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or("no private key (expected `x25519-private:<base64>`)")?;
        let b64 = line
            .split_whitespace()
            .next()
            .and_then(|w| w.strip_prefix("x25519-private:"))
            .ok_or("a private key starts with `x25519-private:`")?;
        let raw = Zeroizing::new(
            B64.decode(b64)
                .map_err(|e| format!("private key is not base64: {e}"))?,
        );
        let sk = PrivateKey::from_bytes(&raw)
            .map_err(|_| format!("private key has {} bytes, not 32", raw.len()))?;
        let pk = X25519HkdfSha256::sk_to_pk(&sk);
        let mut pub_bytes = [0u8; 32];
        pub_bytes.copy_from_slice(&pk.to_bytes());
        Ok((sk, crate::config::recipient_keys::key_id(&pub_bytes)))
    }

    /// Opens tokens with one or more private keys (the one the token's key id names).
    pub struct Opener {
        keys: Vec<([u8; KEY_ID_LEN], PrivateKey)>,
    }

    impl Opener {
        /// An opener over private key file texts.
        pub fn new(texts: &[String]) -> Result<Opener, String> {
            let mut keys = Vec::new();
            for t in texts {
                let (sk, id) = parse_private_key(t)?;
                keys.push((id, sk));
            }
            Ok(Opener { keys })
        }

        /// Ids of the keys held, as hex.
        pub fn key_ids(&self) -> Vec<String> {
            self.keys
                .iter()
                .map(|(id, _)| crate::config::recipient_keys::key_id_hex(id))
                .collect()
        }

        /// Opens a token sealed under `tag` for `store_id`: the normalized identifier. Errors
        /// say why (unknown key id, wrong field or store, damaged token), never the value.
        pub fn open(&self, tag: &str, store_id: &str, token: &str) -> Result<String, String> {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token)
                .map_err(|_| "not a base64url token".to_string())?;
            if raw.len() < HEADER_LEN + PAD_BLOCK + TAG_LEN {
                return Err("token too short".into());
            }
            if raw[0] != TOKEN_VERSION {
                return Err(format!("unknown token version {}", raw[0]));
            }
            let id = &raw[1..1 + KEY_ID_LEN];
            let (_, sk) = self
                .keys
                .iter()
                .find(|(k, _)| k.as_slice() == id)
                .ok_or_else(|| format!("no private key for key id {}", hex_of(id)))?;
            let enc = EncappedKey::from_bytes(&raw[1 + KEY_ID_LEN..HEADER_LEN])
                .map_err(|_| "bad encapsulated key".to_string())?;
            let plain = Zeroizing::new(
                hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
                    &OpModeR::Base,
                    sk,
                    &enc,
                    &info(tag, store_id),
                    &raw[HEADER_LEN..],
                    &raw[..1 + KEY_ID_LEN],
                )
                .map_err(|_| {
                    "cannot open: not sealed for this field and store, or damaged".to_string()
                })?,
            );
            let end = plain
                .iter()
                .rposition(|&b| b != 0)
                .filter(|&i| plain[i] == 0x80)
                .ok_or("bad padding")?;
            String::from_utf8(plain[..end].to_vec()).map_err(|_| "not UTF-8".to_string())
        }
    }

    fn hex_of(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::recipient_keys::RecipientKeys;

    #[test]
    fn padding_hides_length_in_32_byte_steps() {
        assert_eq!(pad(b"").len(), 32);
        assert_eq!(pad(&[b'a'; 31]).len(), 32);
        assert_eq!(pad(&[b'a'; 32]).len(), 64);
        assert_eq!(pad(b"ab")[2], 0x80);
    }

    #[test]
    fn info_layout() {
        assert_eq!(
            info("phone", "s1"),
            b"storegw/customer/v1\0phone\0s1".to_vec()
        );
    }

    #[test]
    fn tokens_are_randomized_and_shaped() -> Result<(), String> {
        let mut nine = [0u8; 32];
        nine[0] = 9;
        let keys = RecipientKeys::parse(&crate::config::recipient_keys::format_public_key(&nine))?;
        let k = keys.sealing().ok_or("no key")?;
        let s = Sealer::new(k, "s1")?;
        let a = s.seal("phone", "+493012345678")?;
        let b = s.seal("phone", "+493012345678")?;
        assert_ne!(a, b);
        // 1 + 8 + 32 + 32 + 16 = 89 bytes -> 119 base64url characters.
        assert_eq!(a.len(), 119);
        assert!(looks_sealed(&a));
        assert!(!looks_sealed(&"0".repeat(64)));
        assert!(s.seal("email", &"x".repeat(MAX_VALUE + 1)).is_err());
        Ok(())
    }

    #[cfg(feature = "unseal")]
    #[test]
    fn opens_only_for_its_field_store_and_key() -> Result<(), String> {
        let (private, public, id) = generate_keypair()?;
        let keys = RecipientKeys::parse(&public)?;
        let k = keys.sealing().ok_or("no key")?;
        let s = Sealer::new(k, "s1")?;
        assert_eq!(s.key_id(), id);
        let o = Opener::new(&[private.to_string()])?;
        let t = s.seal("email", "bob@example.com")?;
        assert_eq!(o.open("email", "s1", &t)?, "bob@example.com");
        assert!(o.open("phone", "s1", &t).is_err());
        assert!(o.open("email", "s2", &t).is_err());
        let (other, _, _) = generate_keypair()?;
        let e = Opener::new(&[other.to_string()])?
            .open("email", "s1", &t)
            .err()
            .unwrap_or_default();
        assert!(e.contains("no private key for key id"), "{e}");
        // A flipped header byte (the key id is authenticated as aad).
        let mut raw = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &t)
            .map_err(|e| e.to_string())?;
        raw[HEADER_LEN + 3] ^= 1;
        let bad = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &raw);
        assert!(o.open("email", "s1", &bad).is_err());
        let exact = "e".repeat(32);
        assert_eq!(o.open("loyalty", "s1", &s.seal("loyalty", &exact)?)?, exact);
        assert_eq!(o.open("loyalty", "s1", &s.seal("loyalty", "")?)?, "");
        Ok(())
    }
}
