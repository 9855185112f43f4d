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
use ring::{aead, hkdf, hmac};
use std::sync::Arc;
use zeroize::{Zeroize, Zeroizing};

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
    let mut v = Vec::with_capacity(len + TAG_LEN);
    v.extend_from_slice(value);
    v.push(0x80);
    v.resize(len, 0);
    v
}

/// HPKE (RFC 9180) base-mode sealing for the one suite the gateway uses, DHKEM(X25519,
/// HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305. The primitives come from maintained crates:
/// X25519 from curve25519-dalek's point arithmetic with precomputed tables ([`Curve`]), HMAC /
/// HKDF-SHA256 and ChaCha20-Poly1305 from *ring* (already in the store binary for rustls).
/// Only RFC 9180's labels and key schedule are written here (§4.1 `Encap`, §5.1
/// `KeySchedule`, §5.2 `Seal` with sequence number 0); the unit tests hold it to the RFC's test
/// vector A.2.1 byte for byte and X25519 to ring's and to dalek's Montgomery ladder over random
/// keys, and tokens are opened by the `hpke` crate and by pyhpke (`tests/pos_sealed.rs`).
mod rfc9180 {
    use super::*;
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    use curve25519_dalek::edwards::EdwardsBasepointTable;
    use curve25519_dalek::traits::{BasepointTable, IsIdentity};

    /// X25519 with a fixed base: a precomputed table of multiples of the base point (for the
    /// ephemeral public key) and one of the recipient's key, made once per sealer (30 KiB
    /// each). X25519(k, u) is the u-coordinate of clamp(k)·P for a point P on the curve with
    /// that u (either sign: negation keeps u); the tables multiply by the clamped integer
    /// itself, not reduced mod ℓ, so a small-order component of P is cleared by the cofactor 8
    /// in clamp(k) as in the ladder. Constant time, as the ladder. A seal takes about half
    /// the time it takes with ring's ladder (BENCHMARKS.md, "Sealing without the `hpke` crate
    /// on the gateway").
    pub struct Curve {
        base: EdwardsBasepointTable,
        recipient: EdwardsBasepointTable,
        public: [u8; 32],
    }

    impl Curve {
        /// Tables for `public`; refused as the key file's loader refuses it
        /// ([`crate::config::recipient_keys::curve_point`]: a twist point, a small-order part,
        /// a non-canonical encoding).
        pub fn new(public: &[u8; 32]) -> Result<Curve, String> {
            let point = crate::config::recipient_keys::curve_point(public)?;
            Ok(Curve {
                base: EdwardsBasepointTable::create(&ED25519_BASEPOINT_POINT),
                recipient: EdwardsBasepointTable::create(&point),
                public: *public,
            })
        }

        /// X25519(sk, 9): the public half of `sk`.
        fn public_of(&self, sk: &[u8; 32]) -> [u8; 32] {
            self.base.mul_base_clamped(*sk).to_montgomery().to_bytes()
        }

        /// X25519(sk, pkR), refused if all zero (RFC 9180 §7.1.4; compared in constant time,
        /// and unreachable for a key [`Curve::new`] took: clamp(sk) is below ℓ·8 and a multiple
        /// of 8, so it never sends a prime-order point to the identity).
        fn dh(&self, sk: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, String> {
            let mut point = self.recipient.mul_base_clamped(*sk);
            let mut u = point.to_montgomery();
            point.zeroize();
            let zero = u.is_identity();
            let shared = Zeroizing::new(u.to_bytes());
            u.zeroize();
            if zero {
                return Err("sealing failed: zero shared secret".into());
            }
            Ok(shared)
        }
    }

    /// `suite_id` of the KEM: "KEM" || I2OSP(kem_id = 0x0020, 2).
    const KEM_SUITE: &[u8] = b"KEM\x00\x20";
    /// `suite_id` of the key schedule: "HPKE" || kem_id 0x0020 || kdf_id 0x0001 || aead_id 0x0003.
    const HPKE_SUITE: &[u8] = b"HPKE\x00\x20\x00\x01\x00\x03";
    const VERSION: &[u8] = b"HPKE-v1";

    /// LabeledExtract(salt, label, ikm) = HKDF-Extract(salt, "HPKE-v1" || suite || label ||
    /// ikm), which is HMAC-SHA256 keyed by the salt (RFC 5869 §2.2).
    fn labeled_extract(salt: &[u8], suite: &[u8], label: &[u8], ikm: &[u8]) -> hmac::Tag {
        let mut c = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, salt));
        for part in [VERSION, suite, label, ikm] {
            c.update(part);
        }
        c.sign()
    }

    /// Output length for ring's HKDF-Expand.
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }

    /// LabeledExpand(prk, label, info, L) = HKDF-Expand(prk, I2OSP(L, 2) || "HPKE-v1" ||
    /// suite || label || info, L).
    fn labeled_expand(
        prk: &[u8],
        suite: &[u8],
        label: &[u8],
        info: &[u8],
        out: &mut [u8],
    ) -> Result<(), String> {
        let len = u16::try_from(out.len()).map_err(|_| "HPKE output too long".to_string())?;
        let len_be = len.to_be_bytes();
        let parts: [&[u8]; 5] = [&len_be, VERSION, suite, label, info];
        hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, prk)
            .expand(&parts, Len(out.len()))
            .and_then(|okm| okm.fill(out))
            .map_err(|_| "HPKE key derivation failed".to_string())
    }

    /// The key schedule's fixed half: `psk_id_hash`, the same for every base-mode seal
    /// (computed once per process).
    fn psk_id_hash() -> &'static [u8; 32] {
        static HASH: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        HASH.get_or_init(|| {
            let mut h = [0u8; 32];
            h.copy_from_slice(labeled_extract(b"", HPKE_SUITE, b"psk_id_hash", b"").as_ref());
            h
        })
    }

    /// Seals `buf` in place (it becomes ciphertext || tag) to the curve's recipient with the
    /// ephemeral secret `sk_e`; returns `enc`, the ephemeral public key.
    pub fn seal(
        curve: &Curve,
        sk_e: &[u8; 32],
        info: &[u8],
        aad: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<[u8; 32], String> {
        // Encap (§4.1): dh = DH(skE, pkR); enc = pkE; kem_context = enc || pkR.
        let enc = curve.public_of(sk_e);
        let dh = curve.dh(sk_e)?;
        let mut kem_context = [0u8; 64];
        kem_context[..32].copy_from_slice(&enc);
        kem_context[32..].copy_from_slice(&curve.public);
        // ExtractAndExpand: eae_prk = LabeledExtract("", "eae_prk", dh);
        // shared_secret = LabeledExpand(eae_prk, "shared_secret", kem_context, 32).
        let mut shared = Zeroizing::new([0u8; 32]);
        let eae_prk = labeled_extract(b"", KEM_SUITE, b"eae_prk", dh.as_ref());
        labeled_expand(
            eae_prk.as_ref(),
            KEM_SUITE,
            b"shared_secret",
            &kem_context,
            shared.as_mut(),
        )?;
        // KeySchedule (§5.1), mode_base, no PSK.
        let info_hash = labeled_extract(b"", HPKE_SUITE, b"info_hash", info);
        let mut context = [0u8; 65];
        context[1..33].copy_from_slice(psk_id_hash());
        context[33..].copy_from_slice(info_hash.as_ref());
        let secret = labeled_extract(shared.as_ref(), HPKE_SUITE, b"secret", b"");
        let mut key = Zeroizing::new([0u8; 32]);
        let mut nonce = [0u8; 12];
        labeled_expand(secret.as_ref(), HPKE_SUITE, b"key", &context, key.as_mut())?;
        labeled_expand(
            secret.as_ref(),
            HPKE_SUITE,
            b"base_nonce",
            &context,
            &mut nonce,
        )?;
        // Seal (§5.2) with sequence number 0: the nonce is base_nonce itself.
        let aead_key = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, key.as_ref())
            .map_err(|_| "sealing failed: AEAD key".to_string())?;
        aead::LessSafeKey::new(aead_key)
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad),
                buf,
            )
            .map_err(|_| "sealing failed: AEAD".to_string())?;
        Ok(enc)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use curve25519_dalek::montgomery::MontgomeryPoint;

        fn hex(s: &str) -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
                .collect()
        }

        /// RFC 9180, Appendix A.2.1 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
        /// ChaCha20-Poly1305, base mode), the first encryption (sequence number 0).
        #[test]
        fn matches_rfc9180_a21() -> Result<(), String> {
            let sk_em: [u8; 32] =
                hex("f4ec9b33b792c372c1d2c2063507b684ef925b8c75a42dbcbf57d63ccd381600")
                    .try_into()
                    .map_err(|_| "skEm")?;
            let pk_rm: [u8; 32] =
                hex("4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a")
                    .try_into()
                    .map_err(|_| "pkRm")?;
            let info = hex("4f6465206f6e2061204772656369616e2055726e");
            let aad = hex("436f756e742d30");
            let mut buf = hex("4265617574792069732074727574682c20747275746820626561757479");
            let curve = Curve::new(&pk_rm)?;
            let enc = seal(&curve, &sk_em, &info, &aad, &mut buf)?;
            assert_eq!(
                enc.to_vec(),
                hex("1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a")
            );
            assert_eq!(
                buf,
                hex(concat!(
                    "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db",
                    "21993c62ce81883d2dd1b51a28"
                ))
            );
            Ok(())
        }

        /// The tables' X25519 against ring's ladder, for random secrets and random recipient
        /// keys (each made by ring, as a platform's key would be by any X25519 library).
        #[test]
        #[allow(deprecated)] // ring's fixed "randomness": the same secret into both
        fn tables_agree_with_ring_x25519() -> Result<(), String> {
            use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
            let rng = ring::rand::SystemRandom::new();
            let public_of = |k: &EphemeralPrivateKey| -> Result<[u8; 32], String> {
                let pk = k.compute_public_key().map_err(|_| "pk")?;
                <[u8; 32]>::try_from(pk.as_ref()).map_err(|_| "pk size".to_string())
            };
            let fresh = || -> Result<[u8; 32], String> {
                let mut b = [0u8; 32];
                getrandom::fill(&mut b).map_err(|e| e.to_string())?;
                Ok(b)
            };
            for _ in 0..200 {
                let recipient =
                    EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| "keygen")?;
                let pk_r = public_of(&recipient)?;
                let curve = Curve::new(&pk_r)?;
                let sk = fresh()?;
                let theirs = |sk: &[u8; 32]| -> Result<([u8; 32], [u8; 32]), String> {
                    let r = ring::test::rand::FixedSliceRandom { bytes: sk };
                    let k = EphemeralPrivateKey::generate(&X25519, &r).map_err(|_| "k")?;
                    let pk = public_of(&k)?;
                    let dh = agreement::agree_ephemeral(
                        k,
                        &UnparsedPublicKey::new(&X25519, &pk_r),
                        |d| <[u8; 32]>::try_from(d),
                    )
                    .map_err(|_| "dh")?
                    .map_err(|_| "dh size")?;
                    Ok((pk, dh))
                };
                let (pk, dh) = theirs(&sk)?;
                assert_eq!(curve.public_of(&sk), pk);
                assert_eq!(*curve.dh(&sk)?, dh);
                // And curve25519-dalek's own Montgomery ladder.
                assert_eq!(
                    *curve.dh(&sk)?,
                    MontgomeryPoint(pk_r).mul_clamped(sk).to_bytes()
                );
            }
            Ok(())
        }

        #[test]
        fn refuses_small_order_and_twist_points() {
            // u = 0 and u = 1 are of small order; u = 2 is on the twist.
            for u in [0u8, 1, 2] {
                let mut pk = [0u8; 32];
                pk[0] = u;
                assert!(Curve::new(&pk).is_err(), "u = {u}");
            }
            let mut nine = [0u8; 32];
            nine[0] = 9;
            assert!(Curve::new(&nine).is_ok());
        }
    }
}

/// Seals identifiers of one store to the first recipient key (the gateway side).
#[derive(Clone)]
pub struct Sealer {
    id: [u8; KEY_ID_LEN],
    curve: Arc<rfc9180::Curve>,
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

impl Sealer {
    /// A sealer for `store_id` to `key` (checked by a trial seal, so a gateway whose key cannot
    /// seal does not start).
    pub fn new(key: &RecipientKey, store_id: &str) -> Result<Sealer, String> {
        let s = Sealer {
            id: key.id,
            curve: Arc::new(rfc9180::Curve::new(&key.public)?),
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
        let mut sk_e = Zeroizing::new([0u8; 32]);
        getrandom::fill(sk_e.as_mut()).map_err(|e| format!("no randomness: {e}"))?;
        let mut header = [0u8; 1 + KEY_ID_LEN];
        header[0] = TOKEN_VERSION;
        header[1..].copy_from_slice(&self.id);
        let mut buf = pad(value.as_bytes());
        let sealed = rfc9180::seal(
            &self.curve,
            &sk_e,
            &info(tag, &self.store_id),
            &header,
            &mut buf,
        );
        let enc = match sealed {
            Ok(enc) => enc,
            Err(e) => {
                buf.zeroize();
                return Err(e);
            }
        };
        let mut token = Vec::with_capacity(HEADER_LEN + buf.len());
        token.extend_from_slice(&header);
        token.extend_from_slice(&enc);
        token.extend_from_slice(&buf);
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
    use hpke::aead::ChaCha20Poly1305;
    use hpke::kdf::HkdfSha256;
    use hpke::kem::X25519HkdfSha256;
    use hpke::{Deserializable, Kem, OpModeR, Serializable};

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

    /// The gateway's own RFC 9180 composition against the `hpke` crate over many lengths of
    /// value, field name and store id (so of plaintext, `info` and padding).
    #[cfg(feature = "unseal")]
    #[test]
    fn the_hpke_crate_opens_every_length() -> Result<(), String> {
        let (private, public, _) = generate_keypair()?;
        let keys = RecipientKeys::parse(&public)?;
        let k = keys.sealing().ok_or("no key")?;
        let o = Opener::new(&[private.to_string()])?;
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(|e| e.to_string())?;
        let mut x = u64::from_le_bytes(seed) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for n in 0..300usize {
            let store: String = (0..next() % 40)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            let tag: String = (0..1 + next() % 12).map(|_| 'x').collect();
            let len = if n < 70 {
                n
            } else {
                (next() % MAX_VALUE as u64) as usize
            };
            // Any UTF-8: ASCII, two- and three-byte characters.
            let value: String = (0..len)
                .map(|_| match next() % 3 {
                    0 => char::from(b' ' + (next() % 95) as u8),
                    1 => 'é',
                    _ => '€',
                })
                .take_while({
                    let mut bytes = 0;
                    move |c| {
                        bytes += c.len_utf8();
                        bytes <= MAX_VALUE
                    }
                })
                .collect();
            let s = Sealer::new(k, &store)?;
            let t = s.seal(&tag, &value)?;
            assert_eq!(o.open(&tag, &store, &t)?, value, "length {}", value.len());
        }
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
