//! Card data never leaves the POS stage. Primary account numbers are recognised by the card
//! schemes' own rules (IIN range, length, Luhn check digit), wherever and however they are
//! written (any separators, full-width or other script digits, glued to an expiry); inputs
//! carrying CVV, track data or PIN blocks are refused as a whole (PCI DSS forbids storing them
//! at all, so there is nothing to salvage). docs/pos.md, "Card data", states the guarantee.

use super::textfold::{digit_runs, Folded};

/// Marker that replaces a card number cut out of free text.
pub const CARD_MARKER: &str = "[card removed]";

/// Where a number is found: free text tolerates over-removal (a few digits lost), identifiers
/// must be certain (a hit refuses the transaction), so retired lengths count only in text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Descriptions, tender names, codes: every card-shaped window is cut.
    Text,
    /// Transaction ids, registers, SKUs: GS1 codes are kept, currently issued lengths only.
    Identifier,
}

/// One card scheme range: the first `digits` digits of the PAN between `lo` and `hi`, and the
/// PAN lengths the scheme issues in it (ISO/IEC 7812 IIN ranges as the schemes publish them).
struct Range {
    digits: u32,
    lo: u32,
    hi: u32,
    lens: &'static [usize],
}

const fn r(digits: u32, lo: u32, hi: u32, lens: &'static [usize]) -> Range {
    Range {
        digits,
        lo,
        hi,
        lens,
    }
}

const L16_19: &[usize] = &[16, 17, 18, 19];
const L14_19: &[usize] = &[14, 15, 16, 17, 18, 19];
const L12_19: &[usize] = &[12, 13, 14, 15, 16, 17, 18, 19];

/// IIN ranges and lengths per scheme.
static RANGES: &[Range] = &[
    // Visa (13-digit Visa cards are retired: see VISA_13), Visa Electron is inside.
    r(1, 4, 4, &[16, 19]),
    // Mastercard: 51-55 and the 2-series 2221-2720.
    r(2, 51, 55, &[16]),
    r(4, 2221, 2720, &[16]),
    // American Express.
    r(2, 34, 34, &[15]),
    r(2, 37, 37, &[15]),
    // Discover and the Diners Club International ranges it carries.
    r(4, 6011, 6011, L16_19),
    r(3, 644, 649, L16_19),
    r(2, 65, 65, L16_19),
    r(6, 622126, 622925, L16_19),
    r(3, 300, 305, L14_19),
    r(4, 3095, 3095, L14_19),
    r(2, 36, 36, L14_19),
    r(2, 38, 39, L14_19),
    // JCB.
    r(4, 3528, 3589, L16_19),
    // UnionPay.
    r(2, 62, 62, L16_19),
    r(2, 81, 81, L16_19),
    // Maestro (incl. Maestro UK 6759).
    r(4, 5018, 5018, L12_19),
    r(4, 5020, 5020, L12_19),
    r(4, 5038, 5038, L12_19),
    r(4, 5893, 5893, L12_19),
    r(4, 6304, 6304, L12_19),
    r(4, 6759, 6759, L12_19),
    r(4, 6761, 6763, L12_19),
    // Mir, BORICA.
    r(4, 2200, 2204, L16_19),
    r(4, 2205, 2205, &[16]),
    // RuPay.
    r(2, 60, 60, &[16]),
    r(2, 82, 82, &[16]),
    r(3, 508, 508, &[16]),
    r(3, 353, 353, &[16]),
    r(3, 356, 356, &[16]),
    // Troy, Dankort, InterPayment, InstaPayment, UzCard, Humo, LankaPay.
    r(4, 9792, 9792, &[16]),
    r(4, 5019, 5019, &[16]),
    r(3, 636, 636, L16_19),
    r(3, 637, 639, &[16]),
    r(4, 8600, 8600, &[16]),
    r(4, 5614, 5614, &[16]),
    r(4, 9860, 9860, &[16]),
    r(6, 357111, 357111, &[16]),
    // Verve.
    r(6, 506099, 506198, &[16, 18, 19]),
    r(6, 650002, 650027, &[16, 18, 19]),
    r(6, 507865, 507964, &[16, 18, 19]),
    // UATP.
    r(1, 1, 1, &[15]),
];

/// Visa once issued 13-digit cards; none is valid today, so they only count in free text.
const VISA_13: Range = r(1, 4, 4, &[13]);

fn prefix(d: &[u8], n: u32) -> Option<u32> {
    let n = n as usize;
    (d.len() >= n).then(|| {
        d.iter()
            .take(n)
            .fold(0u32, |acc, x| acc * 10 + u32::from(*x))
    })
}

fn in_range(d: &[u8], r: &Range) -> bool {
    r.lens.contains(&d.len()) && prefix(d, r.digits).is_some_and(|p| p >= r.lo && p <= r.hi)
}

/// Whether `d` (digit values) is a PAN: a scheme's IIN range and length, and the Luhn check.
pub fn is_pan(d: &[u8], ctx: Context) -> bool {
    let scheme =
        RANGES.iter().any(|r| in_range(d, r)) || (ctx == Context::Text && in_range(d, &VISA_13));
    scheme && luhn(d)
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

/// GS1 check digit (GTIN-8, UPC-A/GTIN-12, EAN-13, GTIN-14): weights 3 and 1 from the right.
pub fn is_gtin(d: &[u8]) -> bool {
    if !matches!(d.len(), 8 | 12 | 13 | 14) {
        return false;
    }
    let Some((check, body)) = d.split_last() else {
        return false;
    };
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, x)| u32::from(*x) * if i % 2 == 0 { 3 } else { 1 })
        .sum();
    (10 - sum % 10) % 10 == u32::from(*check)
}

/// Character ranges (in `f`'s char indices) of the card numbers in free text. Digits are
/// joined across separators; every window of 12-19 digits is tried, longest first, so a PAN
/// glued to an expiry or to other numbers is still found.
fn text_hits(f: &Folded) -> Vec<(usize, usize)> {
    let mut cut = Vec::new();
    for run in digit_runs(f) {
        let d: Vec<u8> = run.iter().map(|(v, _)| *v).collect();
        let mut start = 0;
        while start + 12 <= d.len() {
            let hit = (12..=19).rev().find(|len| {
                d.get(start..start + len)
                    .is_some_and(|w| is_pan(w, Context::Text))
            });
            match hit {
                Some(len) => {
                    if let (Some(a), Some(z)) = (run.get(start), run.get(start + len - 1)) {
                        cut.push((a.1, z.1 + 1));
                    }
                    start += len;
                }
                None => start += 1,
            }
        }
    }
    cut
}

/// Replaces every card number in free text by [`CARD_MARKER`]. Returns the text and how many
/// numbers were cut.
pub fn scrub_text(s: &str) -> (String, usize) {
    // A card number has at least 12 digits, and every character that folds to a digit is
    // numeric (a test in textfold checks it for every code point).
    if s.chars().filter(|c| c.is_numeric()).nth(11).is_none() {
        return (s.to_string(), 0);
    }
    let f = Folded::new(s);
    let cuts = text_hits(&f);
    let n = cuts.len();
    (f.replace(&cuts, CARD_MARKER), n)
}

/// Replaces every card number in `s` (free-text rules); `true` when something was removed.
pub fn scrub(s: &str) -> (String, bool) {
    let (out, n) = scrub_text(s);
    (out, n > 0)
}

/// Whether an identifier (transaction id, register, SKU, barcode) holds a card number. A GS1
/// code with a valid check digit is a barcode, not a card. Digit groups are joined across
/// separators group by group, so `R1-4111 1111 1111 1111` is found but the digits of `R1` do
/// not turn a code into a card; a group longer than 19 digits is checked at both ends (a PAN
/// glued to an expiry or a counter).
pub fn identifier_holds_card(s: &str) -> bool {
    // A card number has at least 12 digits, and only numeric characters fold to digits.
    if s.chars().filter(|c| c.is_numeric()).nth(11).is_none() {
        return false;
    }
    let f = Folded::new(s);
    let all: Vec<u8> = f.digits().collect();
    let only_code = f
        .chars()
        .all(|c| c.is_ascii_digit() || c == ' ' || c == '-');
    if only_code && is_gtin(&all) {
        return false;
    }
    for run in digit_runs(&f) {
        // Split the run back into its groups (consecutive char indices).
        let mut groups: Vec<Vec<u8>> = Vec::new();
        let mut last: Option<usize> = None;
        for (v, i) in &run {
            match (last, groups.last_mut()) {
                (Some(l), Some(g)) if *i == l + 1 => g.push(*v),
                _ => groups.push(vec![*v]),
            }
            last = Some(*i);
        }
        for a in 0..groups.len() {
            let mut d: Vec<u8> = Vec::new();
            for g in groups.iter().skip(a) {
                d.extend_from_slice(g);
                if d.len() > 19 + 19 {
                    break;
                }
                if is_pan(&d, Context::Identifier) {
                    return true;
                }
                if d.len() > 19 {
                    let n = d.len();
                    let ends = (12..=19).any(|len| {
                        d.get(..len).is_some_and(|w| is_pan(w, Context::Identifier))
                            || d.get(n - len..)
                                .is_some_and(|w| is_pan(w, Context::Identifier))
                    });
                    if ends {
                        return true;
                    }
                }
            }
        }
    }
    false
}
/// Field names that carry sensitive authentication data: a record naming one is refused.
pub fn is_forbidden_field(name: &str) -> bool {
    // Every rule below needs one of these letter pairs in the folded name (`cv`, `cs`, `ci`,
    // `ca`, `pi`, `tr`, `ma`, `se`): every key of every POS document passes here, and most
    // have none, so they are done in one pass that writes nothing.
    let mut prev = 0u8;
    let maybe = name
        .bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| b.to_ascii_lowercase())
        .any(|b| {
            let pair = matches!(
                (prev, b),
                (b'c', b'v' | b's' | b'i' | b'a')
                    | (b'p', b'i')
                    | (b't', b'r')
                    | (b'm', b'a')
                    | (b's', b'e')
            );
            prev = b;
            pair
        });
    if !maybe {
        return false;
    }
    let mut small = [0u8; 48];
    let mut len = 0usize;
    let mut long: Option<Vec<u8>> = None;
    for b in name.bytes().filter(u8::is_ascii_alphanumeric) {
        let b = b.to_ascii_lowercase();
        match (&mut long, small.get_mut(len)) {
            (Some(v), _) => v.push(b),
            (None, Some(slot)) => {
                *slot = b;
                len += 1;
            }
            (None, None) => {
                let mut v = small.to_vec();
                v.push(b);
                long = Some(v);
            }
        }
    }
    let folded: &[u8] = match &long {
        Some(v) => v,
        None => small.get(..len).unwrap_or_default(),
    };
    // Only ASCII letters and digits remain.
    let n = std::str::from_utf8(folded).unwrap_or_default();
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
    EXACT.contains(&n)
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
/// `;<pan>=<yymm>…?` for track 2) or its chip equivalent ([`track2_equivalent`]).
pub fn looks_like_track(s: &str) -> bool {
    sentinel_track(s) || track2_equivalent(s)
}

/// Track 2 data without its sentinels: EMV's Track 2 Equivalent Data (tag 57, or
/// Mastercard's contactless 9F6B, written as hex: `<pan>D<yymm><service code>…`, often padded
/// with `F`, alone or as a TLV inside a chip's data), or track 2 as a reader that strips the
/// sentinels types it (`<pan>=<yymm>…`, also behind an ISO 8583 length prefix), at any of its
/// separators ([`track2_at`]).
pub fn track2_equivalent(s: &str) -> bool {
    let b = s.as_bytes();
    // The shortest match: a 12-digit PAN, the separator, 7 digits. Most values are shorter.
    b.len() >= 20 && memchr::memchr3_iter(b'=', b'D', b'd', b).any(|at| track2_at(b, at))
}

/// Digits looked at before a Track 2 separator: a tag 57, its length and a 19-digit PAN.
const TLV_PAN_MAX: usize = 23;

/// Whether the separator at `at` (`=`, `D` or `d`) ends the PAN of Track 2 data: before it a
/// PAN (scheme range and Luhn check, lengths issued today) that starts its run of digits, or
/// follows a TLV length of 16-19 bytes (`10`-`13`, after a tag 57 or where the run starts,
/// behind a tag such as 9F6B) or a length prefix that counts the track; after it a month 01-12
/// and a service code ISO/IEC 7813 allows. So an order number, a barcode or a date after a
/// `D` is not taken for it. Reads at most [`TLV_PAN_MAX`] bytes before `at` and the digits
/// after it.
pub fn track2_at(b: &[u8], at: usize) -> bool {
    let after = b.get(at + 1..at + 8).unwrap_or_default();
    let plausible = matches!(
        after,
        [y1, y2, m1, m2, s1, s2, s3]
            if [y1, y2, s3].iter().all(|c| c.is_ascii_digit())
                && matches!((m1, m2), (b'0', b'1'..=b'9') | (b'1', b'0'..=b'2'))
                && matches!(s1, b'1' | b'2' | b'5' | b'6' | b'7' | b'9')
                && matches!(s2, b'0' | b'2' | b'4')
                && matches!(s3, b'0'..=b'7')
    );
    if !plausible {
        return false;
    }
    let before = b.get(..at).unwrap_or_default();
    let run = before
        .iter()
        .rev()
        .take(TLV_PAN_MAX)
        .take_while(|c| c.is_ascii_digit())
        .count();
    let pan = |k: usize| {
        let mut d = [0u8; 19];
        let digits = before.get(at - k..).unwrap_or_default();
        for (slot, c) in d.iter_mut().zip(digits) {
            *slot = c - b'0';
        }
        d.get(..k).is_some_and(|d| is_pan(d, Context::Identifier))
    };
    // What precedes a PAN of `k` digits inside the run.
    let two_before = |k: usize| before.get(at - k - 2..at - k);
    let track_len = |k: usize| {
        k + 1
            + b.get(at + 1..)
                .unwrap_or_default()
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count()
    };
    (12..=19).any(|k| {
        if k == run {
            return pan(k);
        }
        if k + 2 > run {
            return false;
        }
        let len = two_before(k).unwrap_or_default();
        let tlv = (b"10".as_slice()..=b"13".as_slice()).contains(&len)
            && (k + 2 == run
                || (k + 4 <= run && before.get(at - k - 4..at - k - 2) == Some(b"57")));
        let prefix = k + 2 == run
            && len
                .iter()
                .fold(0usize, |n, c| n * 10 + usize::from(c - b'0'))
                == track_len(k);
        (tlv || prefix) && pan(k)
    })
}

/// Track data with its start sentinel (`%B` for track 1, `;` for track 2).
fn sentinel_track(s: &str) -> bool {
    // Every string value of a document passes here: most hold neither marker, and most are
    // short enough that reading their bytes costs less than a search call.
    let marked = if s.len() < 64 {
        s.bytes().any(|c| c == b'%' || c == b';')
    } else {
        memchr::memchr2(b'%', b';', s.as_bytes()).is_some()
    };
    if !marked {
        return false;
    }
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

/// Judges the attribute names of an XML tag's rest (after its name): true if `judge` holds for
/// the word before any `=` outside a quoted value and a `>` outside quotes closes the tag
/// before a line end or a `<` (otherwise it is text, not a tag). A `>` inside a quoted value
/// (`note="a>b"`) does not end the tag.
fn xml_attribute_names_judged(rest: &str, judge: impl Fn(&str) -> bool) -> bool {
    let mut quote = None;
    let mut hit = false;
    // The word being read outside quotes, and the last one finished (constant work per byte).
    let mut word: Option<usize> = None;
    let mut last: Option<(usize, usize)> = None;
    for (j, &c) in rest.as_bytes().iter().enumerate() {
        if c == b'\n' || c == b'<' {
            return false;
        }
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        let ends_word = c.is_ascii_whitespace() || matches!(c, b'"' | b'\'' | b'=' | b'>');
        if ends_word {
            if let Some(start) = word.take() {
                last = Some((start, j));
            }
        } else if word.is_none() {
            word = Some(j);
        }
        match c {
            b'"' | b'\'' => {
                quote = Some(c);
                last = None;
            }
            b'>' => return hit,
            b'=' => {
                hit |= last
                    .take()
                    .and_then(|(from, to)| rest.get(from..to))
                    .is_some_and(&judge);
            }
            _ => {}
        }
    }
    false
}

/// Whether the raw text of an input that could not be parsed carries card authentication
/// data: track data anywhere, or a CVV, track or PIN-block name where a format puts field
/// names (a JSON key, an XML element or attribute, a cell of the first line when `header`).
/// A file refused for another reason (not UTF-8, too large, a bad row before the one with
/// track data) is judged by this before it is kept in `failed/` (docs/pos.md, "Export
/// files"). Words in free text ("rolling pin") are not names, so they do not count.
pub fn text_carries_auth_data(text: &str, header: bool) -> bool {
    // Every look around a position is bounded, so a hostile file costs linear time.
    let window = |from: usize, to: usize| -> &str {
        let (mut from, mut to) = (from.min(text.len()), to.min(text.len()));
        while !text.is_char_boundary(from) {
            from += 1;
        }
        while to > from && !text.is_char_boundary(to) {
            to -= 1;
        }
        text.get(from..to).unwrap_or_default()
    };
    let b = text.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        let hit = match c {
            // Track 1 (`%B<pan>^…`) and track 2 (`;<pan>=…`): 128 bytes cover either.
            b'%' | b';' => sentinel_track(window(i, i + 128)),
            // Track 2 without sentinels, judged at this separator as a value is.
            b'=' | b'D' | b'd' => track2_at(b, i),
            // An XML element and the names of its attributes (each word before an `=` outside
            // a quoted value). A tag is a name (a letter or `_` first) and its attributes closed
            // by a `>` outside quotes on one line within 256 bytes; `Kids <5y; rolling pin=2`
            // is text.
            b'<' => {
                let tag = window(i + 1, i + 256);
                let tag = tag.strip_prefix(['/', '?']).unwrap_or(tag);
                let name_len = tag
                    .find(|c: char| !(c.is_ascii_alphanumeric() || "_-:.".contains(c)))
                    .unwrap_or(tag.len());
                let name = tag.get(..name_len).unwrap_or_default();
                // Judged by the local name, as the POSLog reader does (`acs:Track2`).
                let local = |n: &str| is_forbidden_field(n.rsplit(':').next().unwrap_or(n));
                local(name)
                    || (name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                        && xml_attribute_names_judged(
                            tag.get(name_len..).unwrap_or_default(),
                            local,
                        ))
            }
            // A JSON key: a string followed by a colon (not `\"` inside a string), unless
            // its value is null, which the JSON readers accept.
            b':' => {
                window(i + 1, i + 64).trim_start().get(..4) != Some("null")
                    && window(i.saturating_sub(512), i)
                        .trim_end()
                        .strip_suffix('"')
                        .filter(|k| !k.ends_with('\\'))
                        .and_then(|k| k.rfind('"').and_then(|o| k.get(o + 1..)))
                        .is_some_and(is_forbidden_field)
            }
            _ => false,
        };
        if hit {
            return true;
        }
    }
    // The first line as a CSV header, unless it opens a JSON or XML document (whose names the
    // rules above judged). A byte-order mark or an undecodable byte is no reason to skip it.
    // Records end at a line end or at the ASCII record separator; fields are separated by any
    // delimiter an export may be configured with (`,` `;` tab `|` `^` `~`) or by a control
    // character (the ASCII unit separator of some legacy exports).
    let first = text
        .split(['\n', '\r', '\u{1e}'])
        .next()
        .unwrap_or_default();
    let first = first.trim_start_matches(['\u{feff}', '\u{fffd}', ' ', '\t']);
    header
        && !first.starts_with(['{', '[', '<'])
        && first
            .split(|c: char| matches!(c, ',' | ';' | '|' | '^' | '~') || c.is_ascii_control())
            .map(|cell| cell.trim_matches(['"', ' ', '\t', '\u{feff}', '\u{fffd}']))
            .filter(|n| n.len() <= 64)
            .any(is_forbidden_field)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(s: &str) -> Vec<u8> {
        s.bytes().map(|b| b - b'0').collect()
    }

    #[test]
    fn raw_text_with_auth_data_is_found_in_every_format_and_free_text_is_not() {
        let found = [
            ("Invoice,Card CVV,Amount\n1,123,4.00\n", true),
            ("a;b;pin_block\n", true),
            ("{\"id\":\"T1\",\"card\":{\"cvv2\" : \"123\"}}", true),
            ("{\"id\":\"T1\"}\n{\"id\":\"T2\",\"TrackData\":\"x\"}", true),
            ("<POSLog><Tender><acs:Track2>x</acs:Track2></Tender>", true),
            ("<Tender type=\"card\" PinBlock = \"00\">", true),
            // A `>` inside a quoted value does not end the tag; words inside one are no names.
            ("<Tender note=\"a > b\" Track2='x'>", true),
            ("<Tender note='1>0' type=\"card\" CVV=\"1\"/>", true),
            ("1,A,x,\"%B4111111111111111^DOE/JOHN^2512101?\",1.00", true),
            ("9,A,pay ;4111111111111111=25121010000000000? now,1", true),
            ("\u{feff}Invoice;Kartenpr\u{fffd}fnummer CVC;Amount\n", true),
            // Fields and records separated by the ASCII unit and record separators.
            (
                "InvoiceNo\u{1f}Description\u{1f}CVV\u{1f}Tender\u{1e}1\u{1f}x\u{1f}123",
                true,
            ),
            ("Invoice^Amount^Track2\n", true),
            ("Invoice,CVV2/CVC2,Amount\n", true),
        ];
        for (text, header) in found {
            assert!(text_carries_auth_data(text, header), "{text}");
        }
        let clean = [
            "<Note text=\"rolling pin=2\" kind=\"memo\">",
            "Invoice,Description,Amount\n1,Rolling pin; CVV card at till,4.00\n",
            "{\"description\":\"bowling pin: cvv\",\"time\":\"10:29:00\"}",
            "<Item><Description>PIN pad cover</Description></Item>",
            "Invoice,Description\n1,Kids <5y; rolling pin=2 <b>\n",
            "{\"id\":\"T1\",\"cvv\": null,\"note\":\"ask \\\"PIN\\\": never\"}",
            "10:29:00;12:00:00;%;;;<<<>>>::::\"\":",
            "",
        ];
        for text in clean {
            assert!(!text_carries_auth_data(text, true), "{text}");
        }
        // Not UTF-8 in the file: decoded lossily, the names and track data still show.
        let latin1 = b"Invoice,Description,CVV\n1,\xa3 price,123\n";
        assert!(text_carries_auth_data(
            &String::from_utf8_lossy(latin1),
            true
        ));
        // Linear in a hostile file: long runs of the markers are judged quickly.
        let hostile = "<\"".repeat(200_000) + &"\" :".repeat(200_000) + &"<a=".repeat(300_000);
        assert!(!text_carries_auth_data(&hostile, false));
    }

    #[test]
    fn removes_test_pans_however_written() {
        for pan in [
            "4111 1111 1111 1111",
            "5555-5555-5555-4444",
            "378282246310005",
            "6011111111111117",
            "4111111111111111",
            "3530111333300000",
            "2223000048400011",
            "4111.1111.1111.1111",
            "4111  1111  1111  1111",
            "4111\t1111\t1111\t1111",
            "4111\u{00A0}1111\u{00A0}1111\u{00A0}1111",
            "4111 - 1111 - 1111 - 1111",
            "4111/1111/1111/1111",
            "４１１１１１１１１１１１１１１１",
            "4111\u{200B}1111\u{200B}1111\u{200B}1111",
            "\u{0664}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}\u{0661}",
            "6759649826438453",
            "4222222222222",
        ] {
            let (s, hit) = scrub(&format!("paid with {pan} ok"));
            assert!(hit, "{pan}");
            assert_eq!(s, "paid with [card removed] ok", "{pan}");
        }
    }

    #[test]
    fn pan_glued_to_other_digits() {
        for t in [
            "41111111111111111225",
            "4111111111111111 1225",
            "ref 12 4111111111111111",
            "0000041111111111111111",
        ] {
            let (s, hit) = scrub(t);
            assert!(hit, "{t}");
            assert!(!s.contains("41111111"), "{t} -> {s}");
        }
    }

    #[test]
    fn keeps_non_pans() {
        // Fails Luhn; too short; zeros; no scheme (Luhn-valid but 50… is no IIN range).
        for t in [
            "4111 1111 1111 1112",
            "SKU 123456789012",
            "00000000067591",
            "0000000000000040000066677",
            "2017-10-01T02:01:31",
            "5000000000005",
            "5000000000013",
        ] {
            assert!(!scrub(t).1, "{t}");
        }
    }

    #[test]
    fn scheme_rules() {
        assert!(is_pan(&digits("5555555555554444"), Context::Identifier));
        assert!(is_pan(&digits("2720990000000007"), Context::Identifier));
        assert!(!is_pan(&digits("2721000000000007"), Context::Identifier));
        assert!(is_pan(&digits("36227206271667"), Context::Identifier));
        assert!(is_pan(&digits("3566002020360505"), Context::Identifier));
        assert!(is_pan(&digits("6200000000000005"), Context::Identifier));
        assert!(!is_pan(&digits("4222222222222"), Context::Identifier));
        assert!(is_pan(&digits("4222222222222"), Context::Text));
        // Amex is 15 digits only.
        assert!(!is_pan(&digits("3782822463100050"), Context::Identifier));
    }

    #[test]
    fn identifiers() {
        for id in [
            "5000000000005",
            "5000000000013",
            "4006381333931",
            "036000291452",
            "96385074",
            "10614141000415",
            "T-1001",
            "2024-03-01-000123",
        ] {
            assert!(!identifier_holds_card(id), "{id}");
        }
        for id in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "R1-4111-1111-1111-1111",
            "41111111111111111225",
            "TX5555555555554444",
            "378282246310005",
        ] {
            assert!(identifier_holds_card(id), "{id}");
        }
    }

    /// Random Luhn-valid 13-digit ids and random valid EAN-13 codes: the old rule removed all
    /// of the former and every Luhn-valid EAN-13; the scheme rules keep (almost) all of them.
    #[test]
    fn false_positive_rates() {
        let mut rng = fastrand::Rng::with_seed(12);
        let n = 20_000;
        let (mut ids_hit, mut ean_hit, mut ean_luhn) = (0, 0, 0);
        for _ in 0..n {
            let mut d: Vec<u8> = (0..12).map(|_| rng.u8(0..10)).collect();
            let check = (0..10u8)
                .find(|c| {
                    let mut t = d.clone();
                    t.push(*c);
                    luhn(&t)
                })
                .unwrap_or(0);
            d.push(check);
            let id: String = d.iter().map(|x| char::from(b'0' + x)).collect();
            ids_hit += usize::from(identifier_holds_card(&id));
            let mut e: Vec<u8> = (0..12).map(|_| rng.u8(0..10)).collect();
            let sum: u32 = e
                .iter()
                .rev()
                .enumerate()
                .map(|(i, x)| u32::from(*x) * if i % 2 == 0 { 3 } else { 1 })
                .sum();
            e.push(((10 - sum % 10) % 10) as u8);
            let ean: String = e.iter().map(|x| char::from(b'0' + x)).collect();
            ean_luhn += usize::from(luhn(&e));
            ean_hit += usize::from(identifier_holds_card(&ean));
        }
        println!(
            "Luhn-valid 13-digit ids refused: {ids_hit}/{n} (before: {n}/{n}); EAN-13 refused: {ean_hit}/{n} (before: {ean_luhn}/{n})"
        );
        assert!(ids_hit * 100 < n, "{ids_hit}");
        assert_eq!(ean_hit, 0);
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
        // The quick letter-pair exit never hides a rule: every listed name and every suffix or
        // infix rule, in other spellings, is still refused.
        for base in [
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
            "xcvv",
            "xcvc2",
            "xpinblockx",
            "xtrackdatax",
            "track1",
            "track2",
            "track3",
            "xtrack1data",
            "xtrack2data",
            "xmagstripe",
        ] {
            let upper = base.to_ascii_uppercase();
            let spaced: String = base.chars().flat_map(|c| [c, '_']).collect();
            for f in [base.to_string(), upper, spaced] {
                assert!(is_forbidden_field(&f), "{f}");
            }
        }
        assert!(looks_like_track("%B4111111111111111^DOE/JOHN^2512101?"));
        assert!(looks_like_track(";4111111111111111=25121010000000000?"));
        assert!(!looks_like_track("a;b=c"));
        let long = "x".repeat(80);
        assert!(looks_like_track(&format!(
            "{long};4111111111111111=25121010000000000?"
        )));
        assert!(looks_like_track(&format!(
            "{long}%B4111111111111111^DOE/JOHN^2512101?"
        )));
        assert!(!looks_like_track(&format!("{long}; 50% off")));
    }

    #[test]
    fn track_2_equivalent_data_is_track_data() {
        for t in [
            // EMV tag 57 as hex, padded; upper and lower case separator.
            "4111111111111111D25121010000000000F",
            "4111111111111111d2512101000",
            "57134111111111111111D25121010000000000F",
            "9F2608AB57134111111111111111D25121010000000000F5F3401",
            // A 19-digit PAN; a length in hex letters after digits; Mastercard's 9F6B.
            "4000000000000000006D2512201",
            "5F340101570C4111111111111111D2512101",
            "9F6B135500000000000004D26012010000000000F",
            // Track 2 typed by a reader that strips the sentinels, also behind an ISO 8583
            // length prefix (33 characters of track follow).
            "4111111111111111=25121010000000000",
            "card: 5500000000000004=2601201 ok",
            "field35 334111111111111111=2512101000000000",
        ] {
            assert!(looks_like_track(t), "{t}");
            assert!(
                text_carries_auth_data(&format!("1,x,{t},1.00\n"), false),
                "{t}"
            );
        }
        for t in [
            // Not a PAN (Luhn), a longer digit run, no month, too few digits after, a service
            // code ISO/IEC 7813 does not allow.
            "4111111111111112D25121010000000000F",
            "94111111111111111D2512101000",
            "4111111111111111D2513101000",
            "4111111111111111D25121",
            "4111111111111111D2512801000",
            "Order 1234567890123D2512101 shipped",
            "a=b, 12 D 2512101",
            // A long run whose tail happens to pass is no TLV; a length prefix that does not
            // count the track is no prefix.
            "12344111111111111111D25121010000000000F",
            "994111111111111111=2512101000000000",
            // A 13-digit barcode starting with 4 (retired Visa length) and a date after it.
            "4000000000006=251201120000",
            // An earlier separator whose digits a window would have cut.
            "01234567894111111111111111=2512101=",
        ] {
            assert!(!looks_like_track(t), "{t}");
            assert!(
                !text_carries_auth_data(&format!("1,x,{t},1.00\n"), false),
                "{t}"
            );
        }
    }

    /// What the docs promise for chip data as spaced hex pairs, which is not recognized as
    /// track data: its card number is cut out of free text all the same.
    #[test]
    fn spaced_hex_chip_data_loses_its_card_number() {
        let t = "57 13 41 11 11 11 11 11 11 11 D2 51 21 01 00 00 00 00 00 0F";
        let (out, n) = scrub_text(t);
        assert!(n >= 1 && !out.contains("41 11 11 11"), "{out}");
    }

    /// The search of a refused file agrees with the check of a value on every string, so a
    /// file is never judged by a different rule than the records it holds.
    #[test]
    fn file_search_and_value_check_agree_on_track_2() {
        let parts = [
            "4111111111111111",
            "5500000000000004",
            "0123456789",
            "57",
            "13",
            "9F6B",
            "33",
            "=",
            "D",
            "d",
            "2512101",
            "2513101",
            "000000",
            "F",
            " ",
            "x",
            ";",
            "é",
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                text.push_str(parts[(x % parts.len() as u64) as usize]);
            }
            let value = track2_equivalent(&text);
            let file = text
                .bytes()
                .enumerate()
                .any(|(i, c)| matches!(c, b'=' | b'D' | b'd') && track2_at(text.as_bytes(), i));
            assert_eq!(value, file, "{text}");
            if value {
                assert!(text_carries_auth_data(&text, false), "{text}");
            }
        }
    }
}
