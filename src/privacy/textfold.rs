//! Text as the scanners for card numbers, e-mail addresses and phone numbers see it: every
//! character folded by Unicode NFKC (full-width and superscript digits, NBSP, `＠`) and every
//! decimal digit of any script mapped to its ASCII value, while keeping the byte position of
//! each character in the original text, so a hit can be cut out of the text as written.
//!
//! NFKC of one character comes from a generated table ([`NFKC_SINGLE`], `nfkc_table.rs`)
//! instead of the `unicode-normalization` crate: the scan only needs the characters whose NFKC
//! form is one other character, and the crate's full decomposition and composition tables cost
//! the store binary far more (BENCHMARKS.md, "Store binary size"). A unit test checks the
//! table against the crate (a dev-dependency) for every code point.

#[path = "nfkc_table.rs"]
mod nfkc_table;
use nfkc_table::NFKC_SINGLE;

/// First code point of each run of ten Unicode decimal digits (general category Nd) outside
/// ASCII; NFKC leaves these alone (Arabic-Indic, Devanagari, Thai, …).
const DIGIT_ZEROS: [u32; 62] = [
    0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66,
    0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0, 0x11650,
    0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0, 0x16B50,
    0x1D7CE, 0x1E140, 0x1E2F0, 0x1E4F0, 0x1E950, 0x1FBF0,
];

/// NFKC of `c` when that is one character, else `c` itself (a lookup in [`NFKC_SINGLE`]).
fn nfkc_single(c: char) -> char {
    let cp = u32::from(c);
    NFKC_SINGLE
        .binary_search_by_key(&cp, |&(from, _)| from)
        .ok()
        .and_then(|i| NFKC_SINGLE.get(i))
        .and_then(|&(_, to)| char::from_u32(to))
        .unwrap_or(c)
}

/// Folds one character: NFKC when that gives one character, any script's digit to ASCII,
/// any white space to a plain space.
pub fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c;
    }
    let f = nfkc_single(c);
    if f.is_ascii() {
        return f;
    }
    if f.is_whitespace() {
        return ' ';
    }
    let cp = u32::from(f);
    if let Some(z) = DIGIT_ZEROS.iter().find(|z| cp >= **z && cp < **z + 10) {
        // Mathematical digits come in five sets of ten; any offset maps mod 10.
        return char::from(b'0' + ((cp - z) % 10) as u8);
    }
    if (0x1D7CE..=0x1D7FF).contains(&cp) {
        return char::from(b'0' + ((cp - 0x1D7CE) % 10) as u8);
    }
    f
}

/// A text with every character folded and its byte range in the original.
pub struct Folded<'a> {
    src: &'a str,
    chars: Vec<(usize, usize, char)>,
}

impl<'a> Folded<'a> {
    /// Folds `src` character by character.
    pub fn new(src: &'a str) -> Folded<'a> {
        let chars = src
            .char_indices()
            .map(|(i, c)| (i, i + c.len_utf8(), fold_char(c)))
            .collect();
        Folded { src, chars }
    }

    /// The folded characters.
    pub fn chars(&self) -> impl Iterator<Item = char> + '_ {
        self.chars.iter().map(|(_, _, c)| *c)
    }

    /// The folded character at char index `i`.
    pub fn at(&self, i: usize) -> Option<char> {
        self.chars.get(i).map(|(_, _, c)| *c)
    }

    /// Number of characters.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// Values of every digit, in order.
    pub fn digits(&self) -> impl Iterator<Item = u8> + '_ {
        self.chars().filter_map(digit)
    }

    /// The original text with the char ranges `cuts` (half-open, sorted, disjoint) replaced.
    pub fn replace(&self, cuts: &[(usize, usize)], marker: &str) -> String {
        let mut out = String::with_capacity(self.src.len());
        let mut pos = 0usize;
        for (a, z) in cuts {
            let (Some(start), Some(end)) = (
                self.chars.get(*a).map(|c| c.0),
                self.chars.get(z.saturating_sub(1)).map(|c| c.1),
            ) else {
                continue;
            };
            if start < pos {
                continue;
            }
            out.push_str(self.src.get(pos..start).unwrap_or(""));
            out.push_str(marker);
            pos = end;
        }
        out.push_str(self.src.get(pos..).unwrap_or(""));
        out
    }
}

/// The value of a folded ASCII digit.
pub fn digit(c: char) -> Option<u8> {
    c.is_ascii_digit().then(|| c as u8 - b'0')
}

/// Largest number of separator characters between two digit groups that still joins them
/// (`4111 - 1111` has three).
pub const MAX_GAP: usize = 4;

/// Maximal runs of digits joined across separators (anything that is neither a letter nor a
/// digit: spaces, tabs, dots, dashes, slashes, zero-width characters), at most [`MAX_GAP`]
/// in a row. Each digit comes with its char index.
pub fn digit_runs(f: &Folded<'_>) -> Vec<Vec<(u8, usize)>> {
    let mut runs = Vec::new();
    let mut cur: Vec<(u8, usize)> = Vec::new();
    let mut gap = 0usize;
    for (i, c) in f.chars().enumerate() {
        if let Some(d) = digit(c) {
            cur.push((d, i));
            gap = 0;
        } else if c.is_alphanumeric() || gap >= MAX_GAP {
            if !cur.is_empty() {
                runs.push(std::mem::take(&mut cur));
            }
            gap = if c.is_alphanumeric() {
                MAX_GAP
            } else {
                gap + 1
            };
        } else {
            gap += 1;
        }
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_digits_of_every_kind() {
        let s = "４１\u{00B9}\u{0661}\u{0967}\u{0E51}\u{1D7D9}";
        let d: Vec<u8> = Folded::new(s).digits().collect();
        assert_eq!(d, vec![4, 1, 1, 1, 1, 1, 1]);
        assert_eq!(fold_char('\u{00A0}'), ' ');
        assert_eq!(fold_char('＠'), '@');
    }

    /// The scrubbers' quick exits count `char::is_numeric` (a card needs 12 digits, a phone
    /// 7): that is sound only if no character that is not numeric folds to a digit.
    #[test]
    fn only_numeric_characters_fold_to_digits() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            if digit(fold_char(c)).is_some() {
                assert!(c.is_numeric(), "U+{:04X} folds to a digit", u32::from(c));
            }
        }
    }

    /// NFKC of one character by the reference implementation: the character it gives, when
    /// it gives exactly one.
    fn nfkc_reference(c: char) -> char {
        use unicode_normalization::UnicodeNormalization;
        let mut it = std::iter::once(c).nfkc();
        match (it.next(), it.next()) {
            (Some(one), None) => one,
            _ => c,
        }
    }

    /// The table's proof: for every code point (surrogates are no `char`), the table gives
    /// what `unicode-normalization` gives.
    #[test]
    fn nfkc_table_matches_unicode_normalization_for_every_code_point() {
        let mut checked = 0u32;
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(
                nfkc_single(c),
                nfkc_reference(c),
                "U+{:04X}: table and unicode-normalization differ",
                u32::from(c)
            );
            checked += 1;
        }
        assert_eq!(checked, 0x110000 - 0x800);
        assert!(NFKC_SINGLE.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
    }

    /// Writes `nfkc_table.rs` from `unicode-normalization` (after a crate update:
    /// `cargo test --lib regenerate_nfkc_table -- --ignored`, then the test above).
    #[test]
    #[ignore]
    fn regenerate_nfkc_table() -> std::io::Result<()> {
        use std::fmt::Write as _;
        let pairs: Vec<(u32, u32)> = (0x80..=0x10FFFF)
            .filter_map(char::from_u32)
            .map(|c| (c, nfkc_reference(c)))
            .filter(|(c, f)| c != f)
            .map(|(c, f)| (u32::from(c), u32::from(f)))
            .collect();
        let mut out = String::new();
        out.push_str(
            "//! Generated by `cargo test --lib regenerate_nfkc_table -- --ignored` \
             (textfold.rs) from\n\
             //! unicode-normalization; do not edit. Checked for every code point by\n\
             //! `nfkc_table_matches_unicode_normalization_for_every_code_point`.\n\n\
             /// Every code point whose NFKC form is one character other than itself, with that\n\
             /// character; sorted by code point (binary search).\n\
             #[rustfmt::skip]\n",
        );
        let _ = writeln!(
            out,
            "pub static NFKC_SINGLE: [(u32, u32); {}] = [",
            pairs.len()
        );
        for row in pairs.chunks(6) {
            out.push_str("   ");
            for (c, f) in row {
                let _ = write!(out, " (0x{c:X}, 0x{f:X}),");
            }
            out.push('\n');
        }
        out.push_str("];\n");
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/privacy/nfkc_table.rs");
        std::fs::write(path, out)
    }

    #[test]
    fn runs_join_across_separators_but_not_letters() {
        let f = Folded::new("a 12 - 34\t56 b78");
        let runs = digit_runs(&f);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs.first().map(Vec::len), Some(6));
        let f = Folded::new("12     34");
        assert_eq!(digit_runs(&f).len(), 2);
    }
}
