//! E-mail addresses and phone numbers written into free text (a description, a tender name, a
//! discount code) are cut out and replaced by a marker before anything is stored; customer
//! identifiers meant for the CDP travel in their own fields and become pseudonyms
//! (docs/pos.md, "Personal data in free text").

use super::card::is_gtin;
use super::textfold::{digit, Folded};

/// Marker that replaces an e-mail address.
pub const EMAIL_MARKER: &str = "[email removed]";
/// Marker that replaces a phone number.
pub const PHONE_MARKER: &str = "[phone removed]";

fn local_char(c: char) -> bool {
    c.is_alphanumeric() || "._%+-!#$&'*/=?^`{|}~".contains(c)
}

fn label_char(c: char) -> bool {
    c.is_alphanumeric() || c == '-' || c == '_'
}

/// Length in chars of an obfuscated word (`(at)`, `[dot]`, ` at `) starting at `i`.
fn word_token(f: &Folded<'_>, i: usize, word: &str) -> Option<usize> {
    let mut j = i;
    while f.at(j) == Some(' ') && j < i + 2 {
        j += 1;
    }
    let open = f.at(j)?;
    let close = match open {
        '(' => ')',
        '[' => ']',
        '{' => '}',
        '<' => '>',
        _ => return None,
    };
    j += 1;
    for w in word.chars() {
        if f.at(j).map(|c| c.to_ascii_lowercase()) != Some(w) {
            return None;
        }
        j += 1;
    }
    if f.at(j) != Some(close) {
        return None;
    }
    j += 1;
    let end = j + 2;
    while f.at(j) == Some(' ') && j < end {
        j += 1;
    }
    Some(j - i)
}

fn at_sign(f: &Folded<'_>, i: usize) -> Option<usize> {
    if f.at(i) == Some('@') {
        return Some(1);
    }
    word_token(f, i, "at")
}

fn dot(f: &Folded<'_>, i: usize) -> Option<usize> {
    if f.at(i) == Some('.') {
        return Some(1);
    }
    word_token(f, i, "dot")
}

/// The end (exclusive) of a domain starting at `i`: labels joined by dots, at least two, the
/// last one a top-level domain of two letters or more.
fn domain_end(f: &Folded<'_>, i: usize) -> Option<usize> {
    let mut j = i;
    let mut labels = 0;
    let mut last_end;
    let mut last_alpha;
    loop {
        let start = j;
        while f.at(j).is_some_and(label_char) {
            j += 1;
        }
        if j == start {
            return None;
        }
        labels += 1;
        last_end = j;
        last_alpha = j - start >= 2 && (start..j).all(|k| f.at(k).is_some_and(char::is_alphabetic));
        match dot(f, j) {
            Some(n) if f.at(j + n).is_some_and(label_char) => j += n,
            _ => break,
        }
        if labels >= 2 && !f.at(j).is_some_and(label_char) {
            break;
        }
    }
    (labels >= 2 && last_alpha).then_some(last_end)
}

fn email_hits(f: &Folded<'_>) -> Vec<(usize, usize)> {
    let mut cut = Vec::new();
    let mut i = 0;
    while i < f.len() {
        let Some(n) = at_sign(f, i) else {
            i += 1;
            continue;
        };
        let mut a = i;
        while a > 0 && f.at(a - 1).is_some_and(local_char) {
            a -= 1;
        }
        if a == i || cut.last().is_some_and(|(_, z)| *z > a) {
            i += 1;
            continue;
        }
        match domain_end(f, i + n) {
            Some(z) => {
                cut.push((a, z));
                i = z;
            }
            None => i += 1,
        }
    }
    cut
}

/// Replaces every e-mail address (also written `name (at) host (dot) org` or with a
/// full-width `＠`) by [`EMAIL_MARKER`]; returns the text and how many were cut.
pub fn scrub_emails(s: &str) -> (String, usize) {
    // The scrubber reads folded text, where full-width or circled letters spell "at" too:
    // text with any non-ASCII character is always read.
    let maybe = !s.is_ascii()
        || s.contains('@')
        || s.as_bytes()
            .windows(2)
            .any(|w| w.eq_ignore_ascii_case(b"at"));
    if !maybe {
        return (s.to_string(), 0);
    }
    let f = Folded::new(s);
    let cuts = email_hits(&f);
    (f.replace(&cuts, EMAIL_MARKER), cuts.len())
}

fn phone_sep(c: char) -> bool {
    matches!(
        c,
        ' ' | '-' | '.' | '/' | '(' | ')' | '\u{2010}'..='\u{2015}' | '\u{2212}'
    )
}

const KEYWORDS: [&str; 14] = [
    "tel", "phone", "mobile", "mob", "cell", "call", "fax", "whatsapp", "sms", "telefon", "handy",
    "tél", "ph", "contact",
];

/// Whether a phone keyword ends within a few characters before char index `i`.
fn keyword_before(f: &Folded<'_>, i: usize) -> bool {
    let from = i.saturating_sub(14);
    let before: String = (from..i)
        .filter_map(|k| f.at(k))
        .collect::<String>()
        .to_lowercase();
    let words: Vec<&str> = before
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .collect();
    words.last().is_some_and(|w| KEYWORDS.contains(w))
}

/// A candidate: digits joined by phone separators, its groups and char range.
struct Cand {
    start: usize,
    end: usize,
    digits: Vec<u8>,
    groups: Vec<usize>,
    plus: bool,
}

fn candidates(f: &Folded<'_>) -> Vec<Cand> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < f.len() {
        if f.at(i).and_then(digit).is_none() {
            i += 1;
            continue;
        }
        // Preceded by a letter or digit: part of a word or code, not a phone number.
        let mut s = i;
        while s > 0 && f.at(s - 1).is_some_and(|c| c == '(' || c == ' ') && s + 2 > i {
            s -= 1;
        }
        let plus = s > 0 && f.at(s - 1) == Some('+');
        if plus {
            s -= 1;
        }
        while f.at(s).is_some_and(|c| c == ' ') && s < i {
            s += 1;
        }
        if i > 0 && f.at(i - 1).is_some_and(char::is_alphanumeric) {
            while f.at(i).and_then(digit).is_some() {
                i += 1;
            }
            continue;
        }
        let mut c = Cand {
            start: s,
            end: i,
            digits: Vec::new(),
            groups: Vec::new(),
            plus,
        };
        let mut j = i;
        loop {
            let g0 = j;
            while let Some(d) = f.at(j).and_then(digit) {
                c.digits.push(d);
                j += 1;
            }
            c.groups.push(j - g0);
            c.end = j;
            let mut k = j;
            while f.at(k).is_some_and(phone_sep) && k < j + 3 {
                k += 1;
            }
            if k > j && f.at(k).and_then(digit).is_some() {
                j = k;
            } else {
                break;
            }
        }
        // A letter or digit glued to the end: a code, not a phone number.
        let glued = f.at(c.end).is_some_and(char::is_alphanumeric);
        i = c.end.max(i + 1);
        if !glued {
            out.push(c);
        }
    }
    out
}

fn is_phone(f: &Folded<'_>, c: &Cand) -> bool {
    let n = c.digits.len();
    let first = c.digits.first().copied();
    let second = c.digits.get(1).copied();
    let single = c.groups.len() == 1;
    if single && is_gtin(&c.digits) {
        return false;
    }
    if c.plus {
        return (8..=15).contains(&n) && first != Some(0);
    }
    if first == Some(0) && second == Some(0) {
        return (10..=17).contains(&n);
    }
    let keyword = keyword_before(f, c.start);
    if keyword && (7..=15).contains(&n) {
        return true;
    }
    if first == Some(0) && second != Some(0) && (9..=12).contains(&n) && !single {
        return true;
    }
    // North American shapes: (415) 555-2671, 415-555-2671, 1 415 555 2671.
    c.groups == [3, 3, 4] || (c.groups == [1, 3, 3, 4] && first == Some(1))
}

/// Replaces every phone number in free text by [`PHONE_MARKER`]: international (`+49 …`,
/// `0049 …`), national with a trunk zero written in groups (`030 1234 5678`), North American
/// (`(415) 555-2671`), or any 7-15 digit number after a word like `tel`, `phone`, `mobile`.
/// Returns the text and how many were cut.
pub fn scrub_phones(s: &str) -> (String, usize) {
    if s.chars().filter(|c| c.is_numeric()).count() < 7 {
        return (s.to_string(), 0);
    }
    let f = Folded::new(s);
    let cuts: Vec<(usize, usize)> = candidates(&f)
        .into_iter()
        .filter(|c| is_phone(&f, c))
        .map(|c| (c.start, c.end))
        .collect();
    (f.replace(&cuts, PHONE_MARKER), cuts.len())
}

/// Whether any of the three scrubbers could cut something from `s`, judged by their own entry
/// tests in one pass: a card number needs 12 numeric characters and a phone number 7, an
/// e-mail address an at sign, the letters "at" or any non-ASCII character (which may fold
/// to either). Most product descriptions and tender names pass none and are kept without a
/// copy.
fn may_hold_personal_data(s: &str) -> bool {
    let mut numeric = 0usize;
    let mut prev_a = false;
    for &b in s.as_bytes() {
        if !b.is_ascii() || b == b'@' || (prev_a && b.eq_ignore_ascii_case(&b't')) {
            return true;
        }
        if b.is_ascii_digit() {
            numeric += 1;
            if numeric >= 7 {
                return true;
            }
        }
        prev_a = b.eq_ignore_ascii_case(&b'a');
    }
    false
}

/// Free text of one transaction (descriptions, tender names, codes, flags) on its way to the
/// wire: card numbers, then e-mail addresses, then phone numbers become markers, and what was
/// cut is counted so the event can say so in its flags without repeating a value.
#[derive(Debug, Default)]
pub struct FreeText {
    cards: usize,
    emails: usize,
    phones: usize,
}

impl FreeText {
    /// `v` scrubbed of card numbers, e-mail addresses and phone numbers (in that order).
    pub fn text(&mut self, v: String) -> String {
        if !may_hold_personal_data(&v) {
            return v;
        }
        let (v, c) = super::card::scrub_text(&v);
        let (v, e) = scrub_emails(&v);
        let (v, p) = scrub_phones(&v);
        self.cards += c;
        self.emails += e;
        self.phones += p;
        v
    }

    /// [`FreeText::text`] of an optional field.
    pub fn opt(&mut self, v: Option<String>) -> Option<String> {
        v.map(|x| self.text(x))
    }

    /// The flags naming what was cut so far (`card_number_removed`, `email_removed`,
    /// `phone_removed`, in that order), so a consumer knows the text was changed.
    pub fn removed(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.cards, "card_number_removed"),
            (self.emails, "email_removed"),
            (self.phones, "phone_removed"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(_, flag)| flag)
    }
}

/// An error text with personal values removed, because rejections go to logs, HTTP answers
/// and `.error` files: card numbers are cut everywhere, and a value quoted in backticks that
/// may identify a person (an `@`, whitespace, or seven digits or more) becomes `[redacted]`.
/// Field and element names are single tokens and stay.
pub fn redact_message(s: &str) -> String {
    let s = super::card::scrub(s).0;
    let mut out = String::with_capacity(s.len());
    let mut parts = s.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, p) in parts.enumerate() {
        out.push('`');
        let quoted = i % 2 == 0;
        // Field and element names are single tokens; anything with a space, an `@` or many
        // digits is a value.
        let personal = p.contains('@')
            || p.chars().any(char::is_whitespace)
            || p.chars().filter(|c| c.is_numeric()).count() >= 7;
        if quoted && personal {
            out.push_str("[redacted]");
        } else {
            out.push_str(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address whose "at" is spelled in full-width letters is cut like any other (the entry
    /// test used to look for ASCII letters only).
    #[test]
    fn an_at_in_other_letters_is_still_an_at() {
        for text in [
            "write to jane(ａｔ)example.com",
            "jane（ａｔ）example（ｄｏｔ）com",
        ] {
            let (out, n) = scrub_emails(text);
            assert_eq!(n, 1, "{text} -> {out}");
            assert!(!out.contains("jane"), "{out}");
            let mut ft = FreeText::default();
            assert!(!ft.text(text.to_string()).contains("jane"));
        }
    }

    /// The one-pass pre-check never keeps a text that one of the scrubbers would change.
    #[test]
    fn the_precheck_skips_only_texts_no_scrubber_changes() {
        const PARTS: &[&str] = &[
            "4",
            "1",
            "0",
            "٣",
            "５",
            " ",
            "-",
            "a",
            "A",
            "t",
            "T",
            "@",
            "＠",
            "﹫",
            "(at)",
            "x",
            "é",
            "mail",
            "tel ",
            "+49 ",
            ".",
            "com",
            "Milk 1l",
            "4111 1111 1111 1111",
            "ａ",
            "ｔ",
            "ⓐ",
            "ⓣ",
            "（",
            "）",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        let mut skipped = 0;
        for _ in 0..20_000 {
            let s: String = (0..rng.usize(1..12))
                .map(|_| PARTS[rng.usize(..PARTS.len())])
                .collect();
            let (c, _) = crate::privacy::card::scrub_text(&s);
            let (e, _) = scrub_emails(&c);
            let (p, _) = scrub_phones(&e);
            if !may_hold_personal_data(&s) {
                skipped += 1;
                assert_eq!(p, s, "skipped a text a scrubber changes");
            }
            assert_eq!(FreeText::default().text(s.clone()), p, "{s}");
        }
        assert!(skipped > 1000, "only {skipped} texts took the short way");
    }

    #[test]
    fn emails_in_text() {
        for (text, want) in [
            ("Gift for jane.doe@example.com", "Gift for [email removed]"),
            (
                "mail: Jane_Doe+x@Mail.Example.co.uk.",
                "mail: [email removed].",
            ),
            (
                "jane.doe (at) example (dot) com thanks",
                "[email removed] thanks",
            ),
            ("jane[at]example.org", "[email removed]"),
            ("ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ", "[email removed]"),
            ("müller@exämple.de ok", "[email removed] ok"),
        ] {
            assert_eq!(scrub_emails(text).0, want, "{text}");
        }
        for keep in [
            "Pencil @ 2 for 1",
            "at the counter",
            "user@localhost",
            "a@b",
        ] {
            assert_eq!(scrub_emails(keep).1, 0, "{keep}");
        }
    }

    #[test]
    fn phones_in_text() {
        for text in [
            "call +49 170 1234567",
            "+49 (0)30 1234-5678",
            "+44 20 7946 0958",
            "0049 30 12345678",
            "030 1234 5678",
            "(0170) 123 4567",
            "Tel. 1234567",
            "phone:01701234567",
            "(415) 555-2671",
            "+1 415.555.2671",
            "+49\u{00A0}170\u{00A0}1234567",
            "＋４９ １７０ １２３４５６７",
        ] {
            let (s, n) = scrub_phones(text);
            assert_eq!(n, 1, "{text} -> {s}");
            assert_eq!(
                s.chars().filter(char::is_ascii_digit).count(),
                0,
                "{text} -> {s}"
            );
        }
        for keep in [
            "Pencil 4006381333931",
            "2024-03-01 10:30:00",
            "12.50 EUR",
            "SKU 0123456789",
            "Pack of 12, 3 for 2",
            "Order 12345678901",
            "Size 36-38-40",
            "AB0170123456",
        ] {
            assert_eq!(scrub_phones(keep).1, 0, "{keep}");
        }
    }

    #[test]
    fn free_text_counts_what_it_cuts() {
        let mut f = FreeText::default();
        assert_eq!(f.removed().count(), 0);
        let t = f.text("card 4111 1111 1111 1111, mail jane.doe@example.com".into());
        assert_eq!(t, "card [card removed], mail [email removed]");
        assert_eq!(f.opt(None), None);
        assert_eq!(
            f.removed().collect::<Vec<_>>(),
            ["card_number_removed", "email_removed"]
        );
    }

    #[test]
    fn messages_keep_names_and_lose_values() {
        assert_eq!(
            redact_message("`John Smith` is not a date-time"),
            "`[redacted]` is not a date-time"
        );
        assert_eq!(
            redact_message("line 2: column `UnitPrice`"),
            "line 2: column `UnitPrice`"
        );
        assert!(!redact_message("id 4111111111111111 bad").contains("4111"));
    }
}
