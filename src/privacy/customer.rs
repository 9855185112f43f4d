//! Customer identifiers (loyalty id, e-mail, phone) after their documented normalization
//! (docs/pos.md, "Customer identifiers"), in one of three modes (`privacy.customer`):
//! **sealed** to the central platform's public key with HPKE ([`super::sealed`]), so nothing on
//! a gateway can open or test them; **keyed**, HMAC-SHA256 under the join key shared with the
//! CDP; or **dropped**. Names and addresses are never kept.

use super::sealed::Sealer;
use crate::config::{CustomerMode, PrivacyConfig};
use crate::telemetry::Telemetry;
use hmac::{KeyInit, Mac};
use std::sync::atomic::{AtomicBool, Ordering};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Raw identifiers as a source delivers them; they live only in RAM until
/// [`CustomerKeys::pseudonyms`].
#[derive(Debug, Clone, Default)]
pub struct RawCustomer {
    /// The loyalty or customer number, as written by the source.
    pub loyalty_id: Option<String>,
    /// The e-mail address, as written by the source.
    pub email: Option<String>,
    /// The phone number, as written by the source (national or international).
    pub phone: Option<String>,
}

impl RawCustomer {
    /// True when no identifier is present.
    pub fn is_empty(&self) -> bool {
        self.loyalty_id.is_none() && self.email.is_none() && self.phone.is_none()
    }
}

/// What goes on the wire for each identifier: a sealed token (base64url) or a keyed pseudonym
/// (64 hex characters), by mode.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Pseudonyms {
    /// Token or pseudonym of the normalized loyalty id ([`normalize_loyalty`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loyalty: Option<String>,
    /// Token or pseudonym of the normalized e-mail address ([`normalize_email`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Token or pseudonym of the phone number in E.164 ([`normalize_phone`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// How identifiers are protected: the mode with its key material.
#[derive(Clone, Default)]
enum Protection {
    /// Dropped.
    #[default]
    Drop,
    /// HMAC-SHA256 under the join key.
    Keyed(Vec<u8>),
    /// Sealed to the platform's key.
    Sealed(Sealer),
}

/// The customer identifier policy of a gateway: the mode of `privacy.customer` and its key
/// (the join key, or the recipient key with the store id); the default drops identifiers.
#[derive(Clone, Default)]
pub struct CustomerKeys {
    protection: Protection,
    default_country: String,
    /// Where identifiers that cannot be kept are counted (`storegw_malformed_total{source="pos"}`):
    /// the pipeline's registries from [`CustomerKeys::from_config`], private ones otherwise.
    telemetry: Telemetry,
}

/// Customer identifiers dropped while protecting, by reason, not yet counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    loyalty: u32,
    email: u32,
    phone: u32,
    not_sealed: u32,
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// The join key file's bytes, trailing whitespace removed, at least 16 bytes.
pub fn read_join_key(p: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut raw =
        std::fs::read(p).map_err(|e| format!("privacy.join_key_file {}: {e}", p.display()))?;
    while raw.last().is_some_and(u8::is_ascii_whitespace) {
        raw.pop();
    }
    if raw.len() < 16 {
        return Err(format!(
            "privacy.join_key_file {}: key shorter than 16 bytes",
            p.display()
        ));
    }
    Ok(raw)
}

impl CustomerKeys {
    /// The policy the configuration asks for, with its key read from disk. A mode whose key
    /// cannot be read is an error (the gateway does not start), never a fallback to another
    /// mode.
    pub fn from_config(
        privacy: &PrivacyConfig,
        store_id: &str,
        default_country: &str,
        telemetry: &Telemetry,
    ) -> Result<CustomerKeys, String> {
        let protection = match privacy.customer_mode() {
            CustomerMode::Drop => Protection::Drop,
            CustomerMode::Keyed => {
                let p = privacy
                    .join_key_file
                    .as_deref()
                    .ok_or("privacy.customer = \"keyed\" needs privacy.join_key_file")?;
                Protection::Keyed(read_join_key(p)?)
            }
            CustomerMode::Sealed => {
                let p = privacy
                    .recipient_keys_file
                    .as_deref()
                    .ok_or("privacy.customer = \"sealed\" needs privacy.recipient_keys_file")?;
                let keys = crate::config::recipient_keys::RecipientKeys::load(p)
                    .map_err(|e| format!("privacy.recipient_keys_file {e}"))?;
                let first = keys
                    .sealing()
                    .ok_or("privacy.recipient_keys_file holds no key")?;
                Protection::Sealed(Sealer::new(first, store_id)?)
            }
        };
        Ok(CustomerKeys {
            protection,
            default_country: default_country.to_string(),
            telemetry: telemetry.clone(),
        })
    }

    /// Keyed mode from key bytes (tests, tools).
    pub fn from_bytes(key: &[u8], default_country: &str) -> CustomerKeys {
        CustomerKeys {
            protection: Protection::Keyed(key.to_vec()),
            default_country: default_country.to_string(),
            telemetry: Telemetry::new(),
        }
    }

    /// Sealed mode to a recipient key for a store (tests, tools).
    pub fn sealed(
        key: &crate::config::recipient_keys::RecipientKey,
        store_id: &str,
        default_country: &str,
    ) -> Result<CustomerKeys, String> {
        Ok(CustomerKeys {
            protection: Protection::Sealed(Sealer::new(key, store_id)?),
            default_country: default_country.to_string(),
            telemetry: Telemetry::new(),
        })
    }

    /// Whether customer identifiers can be kept at all.
    pub fn present(&self) -> bool {
        !matches!(self.protection, Protection::Drop)
    }

    /// Whether equal identifiers give different output (sealed): the idempotency content hash
    /// must then leave the customer values out (`source/pos/normalize.rs`, `content_hash`).
    pub fn randomized(&self) -> bool {
        matches!(self.protection, Protection::Sealed(_))
    }

    /// The mode in force.
    pub fn mode(&self) -> CustomerMode {
        match self.protection {
            Protection::Drop => CustomerMode::Drop,
            Protection::Keyed(_) => CustomerMode::Keyed,
            Protection::Sealed(_) => CustomerMode::Sealed,
        }
    }

    fn protect(
        &self,
        tag: &'static str,
        raw: &str,
        normalized: Option<String>,
        dropped: &mut Dropped,
    ) -> Option<String> {
        let Some(value) = normalized else {
            if raw.trim().is_empty() {
                return None;
            }
            // Present in the input but no identifier after normalization: counted by a fixed
            // reason, never echoed.
            match tag {
                "loyalty" => dropped.loyalty = dropped.loyalty.saturating_add(1),
                "email" => dropped.email = dropped.email.saturating_add(1),
                _ => dropped.phone = dropped.phone.saturating_add(1),
            }
            return None;
        };
        match &self.protection {
            Protection::Drop => None,
            Protection::Keyed(key) => keyed_pseudonym(key, tag, &value),
            Protection::Sealed(s) => match s.seal(tag, &value) {
                Ok(t) => Some(t),
                Err(_) => {
                    // The reason is fixed text (no randomness, too long), never the value.
                    dropped.not_sealed = dropped.not_sealed.saturating_add(1);
                    None
                }
            },
        }
    }

    /// Protects what can be normalized; the rest is dropped (counted as malformed `pos` input
    /// with the reason `customer_<tag>`, never echoed).
    pub fn pseudonyms(&self, c: &RawCustomer) -> Option<Pseudonyms> {
        let mut dropped = Dropped::default();
        let p = self.pseudonyms_tallied(c, &mut dropped);
        self.count(dropped);
        p
    }

    /// Counts identifiers that were dropped (`storegw_malformed_total{source="pos"}`).
    pub fn count(&self, d: Dropped) {
        for (reason, n) in [
            ("customer_loyalty", d.loyalty),
            ("customer_email", d.email),
            ("customer_phone", d.phone),
            ("customer_not_sealed", d.not_sealed),
        ] {
            if n > 0 {
                self.telemetry
                    .metrics()
                    .malformed("pos", reason, u64::from(n));
            }
        }
    }

    /// [`CustomerKeys::pseudonyms`] with what it drops added to `dropped` instead of counted:
    /// for a caller that may discard the result (the POS push reads a document in one pass
    /// and starts over on the general path when the fast one gives up), so an identifier is
    /// counted once.
    pub fn pseudonyms_tallied(&self, c: &RawCustomer, dropped: &mut Dropped) -> Option<Pseudonyms> {
        if c.is_empty() {
            return None;
        }
        if !self.present() {
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "privacy.customer is \"drop\" (no recipient or join key): POS customer identifiers (loyalty id, e-mail, phone) are dropped"
                );
            }
            return None;
        }
        let p = Pseudonyms {
            loyalty: c
                .loyalty_id
                .as_deref()
                .and_then(|v| self.protect("loyalty", v, normalize_loyalty(v), dropped)),
            email: c
                .email
                .as_deref()
                .and_then(|v| self.protect("email", v, normalize_email(v), dropped)),
            phone: c.phone.as_deref().and_then(|v| {
                let n = normalize_phone(v, &self.default_country);
                self.protect("phone", v, n, dropped)
            }),
        };
        (p != Pseudonyms::default()).then_some(p)
    }
}

/// `hex(HMAC-SHA256(key, tag ":" normalized value))`: the keyed pseudonym of keyed gateways, and
/// what `storegw unseal --rekey` gives for an opened token, so both join alike.
pub fn keyed_pseudonym(key: &[u8], tag: &str, normalized: &str) -> Option<String> {
    let mut m = HmacSha256::new_from_slice(key).ok()?;
    m.update(tag.as_bytes());
    m.update(b":");
    m.update(normalized.as_bytes());
    Some(super::hex(&m.finalize().into_bytes()))
}

/// Loyalty id: trimmed; a float-formatted integer (`17593.0`) loses its `.0`; empty is none.
pub fn normalize_loyalty(s: &str) -> Option<String> {
    let t = s.trim();
    let t = match t.split_once('.') {
        Some((int, frac))
            if !int.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && !frac.is_empty()
                && frac.bytes().all(|b| b == b'0') =>
        {
            int
        }
        _ => t,
    };
    (!t.is_empty()).then(|| t.to_string())
}

/// E-mail: trimmed and lowercased (whole address); must have one `@` with text on both sides.
pub fn normalize_email(s: &str) -> Option<String> {
    let t = s.trim().to_lowercase();
    let (local, domain) = t.split_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') || t.contains(' ') {
        return None;
    }
    Some(t)
}

/// Phone to E.164 (`+` and 8-15 digits). Spaces, dashes, dots, slashes and parentheses are
/// removed; `00` becomes `+`; a national number with one leading trunk `0` gets the configured
/// default country code. Anything else is dropped.
pub fn normalize_phone(s: &str, default_country: &str) -> Option<String> {
    let mut t: String = s
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '/' | '(' | ')'))
        .collect();
    if let Some(rest) = t.strip_prefix("00") {
        t = format!("+{rest}");
    }
    let digits = if let Some(rest) = t.strip_prefix('+') {
        rest.to_string()
    } else if let Some(national) = t.strip_prefix('0') {
        if default_country.is_empty() {
            return None;
        }
        format!("{default_country}{national}")
    } else {
        return None;
    };
    let ok = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    ok.then(|| format!("+{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizations() {
        assert_eq!(normalize_loyalty(" 17593.0 ").as_deref(), Some("17593"));
        assert_eq!(normalize_loyalty("A17.5").as_deref(), Some("A17.5"));
        assert_eq!(normalize_loyalty("  "), None);
        assert_eq!(
            normalize_email("  Bob.Norman@HostMail.com ").as_deref(),
            Some("bob.norman@hostmail.com")
        );
        assert_eq!(normalize_email("nobody"), None);
        assert_eq!(
            normalize_phone("+49 (30) 1234-5678", "").as_deref(),
            Some("+493012345678")
        );
        assert_eq!(
            normalize_phone("030 1234 5678", "49").as_deref(),
            Some("+493012345678")
        );
        assert_eq!(
            normalize_phone("0049 30 12345678", "").as_deref(),
            Some("+493012345678")
        );
        assert_eq!(normalize_phone("030 1234 5678", ""), None);
        assert_eq!(normalize_phone("+12", ""), None);
    }

    #[test]
    fn known_vector() {
        // HMAC-SHA256(key = "0123456789abcdef", "email:bob@example.com"), as docs/pos.md shows.
        let k = CustomerKeys::from_bytes(b"0123456789abcdef", "");
        let p = k
            .pseudonyms(&RawCustomer {
                email: Some(" Bob@Example.COM".into()),
                ..Default::default()
            })
            .unwrap_or_default();
        let e = p.email.unwrap_or_default();
        assert_eq!(e.len(), 64);
        assert_eq!(e, DOC_VECTOR);
        assert!(CustomerKeys::default()
            .pseudonyms(&RawCustomer {
                email: Some("a@b.c".into()),
                ..Default::default()
            })
            .is_none());
    }

    const DOC_VECTOR: &str = "83a9f2600a016cdbb13d1527d6af583d5d94373cb312a2b14aa171eb31292592";
}
