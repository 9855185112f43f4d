//! Card data never leaves the POS stage: primary account numbers are cut out of every string,
//! and inputs carrying CVV, track data or PIN blocks are refused as a whole (PCI DSS forbids
//! storing them at all, so there is nothing to salvage).

/// Replaces every card number in `s`: a run of 13-19 digits, single spaces or dashes allowed
/// between them, that passes the Luhn check. Returns the scrubbed text and whether anything was
/// removed. Runs of more than 19 digits are checked group by group (a PAN followed by an expiry).
pub fn scrub(s: &str) -> (String, bool) {
    let b = s.as_bytes();
    let mut cut: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
            continue;
        }
        // A maximal run of digit groups separated by single ' ' or '-'.
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while b.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
            groups.push((start, j));
            let sep = b.get(j).is_some_and(|c| *c == b' ' || *c == b'-');
            if sep && b.get(j + 1).is_some_and(u8::is_ascii_digit) {
                j += 1;
            } else {
                break;
            }
        }
        find_pans(b, &groups, &mut cut);
        i = j.max(i + 1);
    }
    if cut.is_empty() {
        return (s.to_string(), false);
    }
    let mut out = String::with_capacity(s.len());
    let mut pos = 0;
    for (a, z) in cut {
        if a < pos {
            continue;
        }
        out.push_str(s.get(pos..a).unwrap_or(""));
        out.push_str("[card removed]");
        pos = z;
    }
    out.push_str(s.get(pos..).unwrap_or(""));
    (out, true)
}

fn digits_of(b: &[u8], groups: &[(usize, usize)]) -> Vec<u8> {
    groups
        .iter()
        .flat_map(|(a, z)| b.get(*a..*z).unwrap_or(&[]).iter().map(|c| c - b'0'))
        .collect()
}

/// Checks the whole run, then every contiguous sequence of groups, for a 13-19 digit Luhn number.
fn find_pans(b: &[u8], groups: &[(usize, usize)], cut: &mut Vec<(usize, usize)>) {
    let n = groups.len();
    for first in 0..n {
        for last in (first..n).rev() {
            let Some(sel) = groups.get(first..=last) else {
                continue;
            };
            let d = digits_of(b, sel);
            if (13..=19).contains(&d.len()) && luhn(&d) && d.iter().any(|x| *x != 0) {
                if let (Some(a), Some(z)) = (sel.first(), sel.last()) {
                    cut.push((a.0, z.1));
                }
                return find_rest(b, groups, last + 1, cut);
            }
        }
    }
}

fn find_rest(b: &[u8], groups: &[(usize, usize)], from: usize, cut: &mut Vec<(usize, usize)>) {
    if let Some(rest) = groups.get(from..) {
        if !rest.is_empty() {
            find_pans(b, rest, cut);
        }
    }
}

/// The Luhn (mod 10) check digit test used by every card scheme.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

/// Field names that carry sensitive authentication data: a record naming one is refused.
pub fn is_forbidden_field(name: &str) -> bool {
    let n: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    // Strip an XML namespace prefix that survived as letters (`acs:CVV` → `acscvv`).
    const EXACT: [&str; 14] = [
        "cvv",
        "cvv2",
        "cvc",
        "cvc2",
        "cid",
        "csc",
        "cav2",
        "securitycode",
        "cardsecuritycode",
        "cardverificationvalue",
        "pin",
        "pinblock",
        "encryptedpinblock",
        "pindata",
    ];
    EXACT.contains(&n.as_str())
        || n.ends_with("cvv")
        || n.ends_with("cvv2")
        || n.ends_with("cvc")
        || n.ends_with("cvc2")
        || n.contains("pinblock")
        || n.contains("trackdata")
        || n == "track1"
        || n == "track2"
        || n == "track3"
        || n.ends_with("track1data")
        || n.ends_with("track2data")
        || n.ends_with("magstripe")
}

/// Whether a string looks like magnetic-stripe track data (`%B<pan>^NAME^…?` for track 1,
/// `;<pan>=<yymm>…?` for track 2).
pub fn looks_like_track(s: &str) -> bool {
    let t = s.trim();
    let track1 = t
        .find("%B")
        .and_then(|p| t.get(p + 2..))
        .is_some_and(|rest| {
            rest.chars().take_while(char::is_ascii_digit).count() >= 12 && rest.contains('^')
        });
    let track2 = t
        .find(';')
        .and_then(|p| t.get(p + 1..))
        .is_some_and(|rest| {
            let n = rest.chars().take_while(char::is_ascii_digit).count();
            n >= 12 && rest.get(n..).is_some_and(|r| r.starts_with('='))
        });
    track1 || track2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_test_pans() {
        for pan in [
            "4111 1111 1111 1111",
            "5555-5555-5555-4444",
            "378282246310005",
            "6011111111111117",
            "4111111111111111",
            "3530111333300000",
        ] {
            let (s, hit) = scrub(&format!("paid with {pan} ok"));
            assert!(hit, "{pan}");
            assert_eq!(s, "paid with [card removed] ok");
        }
    }

    #[test]
    fn keeps_non_pans() {
        // Fails Luhn.
        assert!(!scrub("4111 1111 1111 1112").1);
        // Too short, too long, zeros.
        assert!(!scrub("SKU 123456789012").1);
        assert!(!scrub("00000000067591").1);
        assert!(!scrub("0000000000000040000066677").1);
        assert!(!scrub("2017-10-01T02:01:31").1);
    }

    #[test]
    fn pan_next_to_expiry() {
        let (s, hit) = scrub("4111 1111 1111 1111 1225");
        assert!(hit);
        assert!(!s.contains("4111"));
    }

    #[test]
    fn forbidden_fields() {
        for f in [
            "cvv",
            "CVV2",
            "card_cvc",
            "security_code",
            "pin_block",
            "track2",
            "TrackData",
            "acs:Track1Data",
        ] {
            assert!(is_forbidden_field(f), "{f}");
        }
        for f in ["sku", "pinned", "tracking_number", "description", "spin"] {
            assert!(!is_forbidden_field(f), "{f}");
        }
        assert!(looks_like_track("%B4111111111111111^DOE/JOHN^2512101?"));
        assert!(looks_like_track(";4111111111111111=25121010000000000?"));
        assert!(!looks_like_track("a;b=c"));
    }
}
