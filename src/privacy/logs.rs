//! Addresses in log lines: every line the gateway writes (its own and its libraries') is
//! scrubbed of MAC-like patterns before it reaches stderr or the journal
//! (`crate::ops::logging` calls [`scrub`]; docs/operations.md §6). The gateway itself never
//! logs an identifier; this catches what a library prints (BlueZ object paths such as
//! `/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF`, a `Debug`-printed address).

use std::borrow::Cow;

/// What replaces an address-like pattern in a log line.
pub const REDACTED: &str = "[addr]";

fn hex_at(b: &[u8], i: usize) -> bool {
    b.get(i).is_some_and(|c| c.is_ascii_hexdigit())
}

fn word_at(b: &[u8], i: usize) -> bool {
    b.get(i).is_some_and(|c| c.is_ascii_alphanumeric())
}

/// Length of a MAC-like pattern starting at `i`, if any: six hex pairs joined by one of
/// `: - _ . space` (BlueZ object paths use `_`), three groups of four hex digits joined by `.`,
/// twelve hex digits in a row, or six decimal bytes in brackets (`[192, 17, 34, 51, 68, 85]`,
/// a `Debug`-printed address).
fn mac_len_at(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'[') {
        let mut j = i + 1;
        for k in 0..6 {
            let start = j;
            while b.get(j).is_some_and(|c| c.is_ascii_digit()) {
                j += 1;
            }
            let n: u32 = std::str::from_utf8(b.get(start..j)?).ok()?.parse().ok()?;
            if j - start > 3 || n > 255 {
                return None;
            }
            if k < 5 {
                if b.get(j) != Some(&b',') {
                    return None;
                }
                j += 1;
                while b.get(j) == Some(&b' ') {
                    j += 1;
                }
            }
        }
        return (b.get(j) == Some(&b']')).then_some(j + 1 - i);
    }
    // The caller starts a match only at a word boundary (`_` counts as one: `dev_` + address).
    if !(hex_at(b, i) && hex_at(b, i + 1)) {
        return None;
    }
    // Six pairs with one separator.
    if let Some(&sep) = b.get(i + 2) {
        if b":-_. ".contains(&sep)
            && (0..6).all(|k| hex_at(b, i + 3 * k) && hex_at(b, i + 3 * k + 1))
            && (0..5).all(|k| b.get(i + 3 * k + 2) == Some(&sep))
            && !hex_at(b, i + 17)
        {
            return Some(17);
        }
    }
    // Three groups of four joined by dots.
    if (0..3).all(|g| (0..4).all(|k| hex_at(b, i + 5 * g + k)))
        && b.get(i + 4) == Some(&b'.')
        && b.get(i + 9) == Some(&b'.')
        && !word_at(b, i + 14)
    {
        return Some(14);
    }
    // Twelve hex digits, not part of a longer word or number.
    if (0..12).all(|k| hex_at(b, i + k)) && !word_at(b, i + 12) {
        return Some(12);
    }
    None
}

/// `s` with every MAC-like pattern replaced by `[addr]` (see `mac_len_at`).
pub fn scrub(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        let at_start = i == 0 || !b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_';
        let found = if at_start || b[i] == b'[' {
            mac_len_at(b, i)
        } else {
            None
        };
        match found {
            Some(n) => {
                let o = out.get_or_insert_with(|| String::with_capacity(s.len()));
                o.push_str(s.get(copied..i).unwrap_or(""));
                o.push_str(REDACTED);
                i += n;
                copied = i;
            }
            None => i += 1,
        }
    }
    match out {
        None => Cow::Borrowed(s),
        Some(mut o) => {
            o.push_str(s.get(copied..).unwrap_or(""));
            Cow::Owned(o)
        }
    }
}

/// True when `s` holds a MAC-like pattern.
pub fn has_identifier(s: &str) -> bool {
    matches!(scrub(s), Cow::Owned(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_scrubbed_in_every_spelling() {
        for line in [
            "PropertiesChanged for /org/bluez/hci0/dev_C0_11_22_33_44_55: x",
            "device C0:11:22:33:44:55 found",
            "device c0:11:22:33:44:55",
            "device c0-11-22-33-44-55.",
            "addr=c01122334455",
            "addr=\"C01122334455\"",
            "cisco c011.2233.4455 form",
            "bytes c0 11 22 33 44 55 end",
            "dotted c0.11.22.33.44.55",
            "BDAddr { address: [192, 17, 34, 51, 68, 85] }",
            "reversed 55:44:33:22:11:c0",
        ] {
            let out = scrub(line);
            assert!(out.contains(REDACTED), "{line} -> {out}");
            for form in ["c0", "C0", "192, 17"] {
                assert!(!out.contains(&format!("{form}:11")), "{out}");
            }
            assert!(!out.to_lowercase().contains("2233"), "{line} -> {out}");
            assert!(!out.contains("51, 68"), "{line} -> {out}");
        }
        // Not addresses: times, ids, pseudonyms, longer hex, IPv6, ordinary words.
        for line in [
            "2026-12-01T22:51:47.249018Z sent batch gw1:1795631589428721",
            "pseudonym 3f2a9c0d11e4b5a6 epoch 20423",
            "listening on [::1]:9380 and 127.0.0.1:9380",
            "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "published 123456 events in 12 batches",
            "bytes [2, 21, 253, 165, 6, 147, 164]",
        ] {
            assert_eq!(scrub(line), line);
        }
    }
}
