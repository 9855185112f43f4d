//! Customer identifiers become pseudonyms the CDP can reproduce: HMAC-SHA256 under the join key
//! shared with it, over a documented normalization (docs/pos.md, "Customer pseudonyms").
//! Names and addresses are never kept.

use hmac::{KeyInit, Mac};
use std::sync::atomic::{AtomicBool, Ordering};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Raw identifiers as a source delivers them; they live only in RAM until [`JoinKey::pseudonyms`].
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

/// The pseudonyms that go on the wire (64 hex characters each).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Pseudonyms {
    /// Pseudonym of the normalized loyalty id ([`normalize_loyalty`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loyalty: Option<String>,
    /// Pseudonym of the normalized e-mail address ([`normalize_email`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Pseudonym of the phone number in E.164 ([`normalize_phone`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// The join key shared with the CDP; `None` inside means identifiers are dropped.
#[derive(Clone, Default)]
pub struct JoinKey {
    key: Option<Vec<u8>>,
    default_country: String,
}

static WARNED: AtomicBool = AtomicBool::new(false);

impl JoinKey {
    /// Reads the key file (its bytes, trailing whitespace removed). Without a file, customer
    /// identifiers are dropped, and the log says so once.
    pub fn load(path: Option<&std::path::Path>, default_country: &str) -> Result<JoinKey, String> {
        let key = match path {
            None => None,
            Some(p) => {
                let mut raw = std::fs::read(p)
                    .map_err(|e| format!("privacy.join_key_file {}: {e}", p.display()))?;
                while raw.last().is_some_and(u8::is_ascii_whitespace) {
                    raw.pop();
                }
                if raw.len() < 16 {
                    return Err(format!(
                        "privacy.join_key_file {}: key shorter than 16 bytes",
                        p.display()
                    ));
                }
                Some(raw)
            }
        };
        Ok(JoinKey {
            key,
            default_country: default_country.to_string(),
        })
    }

    /// A key from bytes (tests, tools).
    pub fn from_bytes(key: &[u8], default_country: &str) -> JoinKey {
        JoinKey {
            key: Some(key.to_vec()),
            default_country: default_country.to_string(),
        }
    }

    /// Whether customer identifiers can be kept at all.
    pub fn present(&self) -> bool {
        self.key.is_some()
    }

    fn mac(&self, tag: &str, value: &str) -> Option<String> {
        let key = self.key.as_ref()?;
        let mut m = HmacSha256::new_from_slice(key).ok()?;
        m.update(tag.as_bytes());
        m.update(b":");
        m.update(value.as_bytes());
        Some(super::hex(&m.finalize().into_bytes()))
    }

    /// Pseudonymizes what can be normalized; the rest is dropped.
    pub fn pseudonyms(&self, c: &RawCustomer) -> Option<Pseudonyms> {
        if c.is_empty() {
            return None;
        }
        if self.key.is_none() {
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "privacy.join_key_file is not set: POS customer identifiers (loyalty id, e-mail, phone) are dropped"
                );
            }
            return None;
        }
        let p = Pseudonyms {
            loyalty: c
                .loyalty_id
                .as_deref()
                .and_then(normalize_loyalty)
                .and_then(|v| self.mac("loyalty", &v)),
            email: c
                .email
                .as_deref()
                .and_then(normalize_email)
                .and_then(|v| self.mac("email", &v)),
            phone: c
                .phone
                .as_deref()
                .and_then(|p| normalize_phone(p, &self.default_country))
                .and_then(|v| self.mac("phone", &v)),
        };
        (p != Pseudonyms::default()).then_some(p)
    }
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
        let k = JoinKey::from_bytes(b"0123456789abcdef", "");
        let p = k
            .pseudonyms(&RawCustomer {
                email: Some(" Bob@Example.COM".into()),
                ..Default::default()
            })
            .unwrap_or_default();
        let e = p.email.unwrap_or_default();
        assert_eq!(e.len(), 64);
        assert_eq!(e, DOC_VECTOR);
        assert!(JoinKey::default()
            .pseudonyms(&RawCustomer {
                email: Some("a@b.c".into()),
                ..Default::default()
            })
            .is_none());
    }

    const DOC_VECTOR: &str = "83a9f2600a016cdbb13d1527d6af583d5d94373cb312a2b14aa171eb31292592";
}
