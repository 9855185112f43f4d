//! The wire shapes of a canonical JSON transaction, and the reader that fills them straight
//! from the request text for the fast path ([`super::json_fast`]).
//!
//! serde's derive read these shapes before; it was the largest single cost of a bulk push
//! (BENCHMARKS.md, "POS push"). The reader below takes the same JSON grammar as serde_json and
//! gives up (`None`) wherever serde's derive would fail: a syntax error, a duplicate field, an
//! array or object where a scalar belongs, a number outside `f64`. Escaped strings are decoded
//! and numbers other than plain integers are read by serde_json itself, so both readers hold the
//! same values. The derive stays, in the tests, as the definition the reader is compared with.
//! In values no field names the reader is stricter than the derive was, as strict as the tree
//! parser: serde skips them without checking a number's range or a string's escapes, so the
//! derive took `{"note":1e999}`, which the tree parser refuses; the reader gives up on it.

use serde_json::{Number, Value};
use std::borrow::Cow;

/// A scalar as the document wrote it. Text without escapes is borrowed from the request body,
/// so a field costs no allocation until it is kept; an object or array where a scalar belongs
/// fails the fast path (the tree parser then answers), and so does a number outside `f64`
/// (which the tree's `Value` would read as null). Amounts and quantities are converted by
/// the tree parser's own functions, through [`Scalar::value`].
#[derive(Debug, PartialEq)]
pub(super) enum Scalar<'a> {
    Bool(bool),
    Num(Number),
    Str(Cow<'a, str>),
}

/// An optional scalar field (absent and null are `None`).
pub(super) type S<'a> = Option<Scalar<'a>>;

impl Scalar<'_> {
    /// The scalar as the tree parser holds it.
    pub(super) fn value(&self) -> Value {
        match self {
            Scalar::Bool(b) => Value::Bool(*b),
            Scalar::Num(n) => Value::Number(n.clone()),
            Scalar::Str(s) => Value::String(s.to_string()),
        }
    }
}

/// `T` read only from a JSON object. serde's derive also reads a struct from an array of its
/// fields in order, which the tree parser refuses: such a document must leave the fast path.
#[derive(Debug, PartialEq)]
pub(super) struct Object<T>(pub(super) T);

#[derive(Default, Debug, PartialEq)]
#[cfg_attr(test, derive(serde::Deserialize))]
#[cfg_attr(test, serde(bound(deserialize = "'de: 'a")))]
pub(super) struct WireTx<'a> {
    pub(super) transaction_id: S<'a>,
    pub(super) register: S<'a>,
    pub(super) store_ref: S<'a>,
    pub(super) business_day: S<'a>,
    pub(super) time: S<'a>,
    pub(super) currency: S<'a>,
    #[cfg_attr(test, serde(rename = "type"))]
    pub(super) kind: S<'a>,
    pub(super) original_transaction_id: S<'a>,
    pub(super) source: S<'a>,
    pub(super) channel: S<'a>,
    pub(super) lines: Option<Vec<Object<WireLine<'a>>>>,
    pub(super) tenders: Option<Vec<Object<WireTender<'a>>>>,
    pub(super) discounts: Option<Vec<Object<WireDiscount<'a>>>>,
    pub(super) totals: Option<Object<WireTotals<'a>>>,
    pub(super) customer: Option<Object<WireCustomer<'a>>>,
}

#[derive(Default, Debug, PartialEq)]
#[cfg_attr(test, derive(serde::Deserialize))]
#[cfg_attr(test, serde(bound(deserialize = "'de: 'a")))]
pub(super) struct WireLine<'a> {
    pub(super) sku: S<'a>,
    pub(super) description: S<'a>,
    pub(super) qty: S<'a>,
    pub(super) unit_price_minor: S<'a>,
    pub(super) unit_price: S<'a>,
    pub(super) amount_minor: S<'a>,
    pub(super) amount: S<'a>,
    pub(super) kind: S<'a>,
    pub(super) discounts: Option<Vec<Object<WireDiscount<'a>>>>,
}

#[derive(Default, Debug, PartialEq)]
#[cfg_attr(test, derive(serde::Deserialize))]
#[cfg_attr(test, serde(bound(deserialize = "'de: 'a")))]
pub(super) struct WireTender<'a> {
    #[cfg_attr(test, serde(rename = "type"))]
    pub(super) kind: S<'a>,
    pub(super) amount_minor: S<'a>,
    pub(super) amount: S<'a>,
    pub(super) card_brand: S<'a>,
}

#[derive(Default, Debug, PartialEq)]
#[cfg_attr(test, derive(serde::Deserialize))]
#[cfg_attr(test, serde(bound(deserialize = "'de: 'a")))]
pub(super) struct WireDiscount<'a> {
    pub(super) code: S<'a>,
    pub(super) amount_minor: S<'a>,
    pub(super) amount: S<'a>,
}

#[derive(Default, Debug, PartialEq)]
#[cfg_attr(test, derive(serde::Deserialize))]
#[cfg_attr(test, serde(bound(deserialize = "'de: 'a")))]
pub(super) struct WireTotals<'a> {
    pub(super) total_minor: S<'a>,
    pub(super) total: S<'a>,
    pub(super) subtotal_minor: S<'a>,
    pub(super) subtotal: S<'a>,
    pub(super) tax_minor: S<'a>,
    pub(super) tax: S<'a>,
    pub(super) discount_minor: S<'a>,
    pub(super) discount: S<'a>,
    pub(super) surcharge_minor: S<'a>,
    pub(super) surcharge: S<'a>,
    pub(super) tax_included: S<'a>,
}

#[derive(Default, Debug, PartialEq)]
#[cfg_attr(test, derive(serde::Deserialize))]
#[cfg_attr(test, serde(bound(deserialize = "'de: 'a")))]
pub(super) struct WireCustomer<'a> {
    pub(super) loyalty_id: S<'a>,
    pub(super) loyalty: S<'a>,
    pub(super) email: S<'a>,
    pub(super) phone: S<'a>,
}

/// What decides, while the text is read, whether the fast path may go on: a field name the
/// shapes do not know, or a string value, may hold card data (judged in `super::json_fast`).
/// The names the shapes know are never judged: none of them is a card field (tested there).
pub(super) trait Judge<'a> {
    /// Whether a field the shapes do not know, named `name`, may be read past.
    fn name(&mut self, name: Cow<'a, str>) -> bool;
    /// Whether a string value may be read.
    fn text(&mut self, text: &str) -> bool;
}

/// Every field name the shapes know.
#[cfg(test)]
pub(super) const NAMES: &[&str] = &[
    "transaction_id",
    "register",
    "store_ref",
    "business_day",
    "time",
    "currency",
    "type",
    "original_transaction_id",
    "source",
    "channel",
    "lines",
    "tenders",
    "discounts",
    "totals",
    "customer",
    "sku",
    "description",
    "qty",
    "unit_price_minor",
    "unit_price",
    "amount_minor",
    "amount",
    "kind",
    "card_brand",
    "code",
    "total_minor",
    "total",
    "subtotal_minor",
    "subtotal",
    "tax_minor",
    "tax",
    "discount_minor",
    "discount",
    "surcharge_minor",
    "surcharge",
    "tax_included",
    "loyalty_id",
    "loyalty",
    "email",
    "phone",
];

/// Reads `text` (one transaction object, or an array of them) and hands each transaction to
/// `each` as soon as it is read; `each` answers `false` to stop. `false` when the text is not
/// read whole: not JSON, not these shapes, refused by `judge`, or stopped.
pub(super) fn read_each<'a>(
    text: &'a str,
    judge: &mut impl Judge<'a>,
    mut each: impl FnMut(WireTx<'a>) -> bool,
) -> bool {
    let mut r = Reader { text, at: 0, judge };
    let whole = (|| {
        r.ws();
        if r.peek()? == b'[' {
            r.at += 1;
            r.elements(|r| {
                let w = r.tx()?;
                each(w).then_some(())
            })?;
        } else {
            let w = r.tx()?;
            each(w).then_some(())?;
        }
        r.ws();
        (r.at == text.len()).then_some(())
    })();
    whole.is_some()
}

/// Nesting of values the fields do not name that is still skipped here (serde_json refuses
/// beyond 128; between the two the tree parser reads the document).
const MAX_SKIP_DEPTH: usize = 100;

/// A position in the text. Every method answers `None` where serde_json would report an error
/// or serde's derive would refuse the shape.
struct Reader<'a, 'j, J> {
    text: &'a str,
    at: usize,
    judge: &'j mut J,
}

impl<'a, J: Judge<'a>> Reader<'a, '_, J> {
    // The three smallest steps are inlined even in the size-optimized store build, where a
    // call per byte of a bulk push cost more than the step (BENCHMARKS.md, "POS push").
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    /// JSON's four whitespace bytes, no others.
    #[inline(always)]
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    #[inline(always)]
    fn expect(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.at += 1)
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let end = self.at + word.len();
        (self.text.as_bytes().get(self.at..end)? == word.as_bytes()).then(|| self.at = end)
    }

    /// A string at the cursor: borrowed when it holds no escape, else decoded by serde_json
    /// (which also refuses a bad escape or a lone surrogate).
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.expect(b'"')?;
        let start = self.at;
        let b = self.text.as_bytes();
        let mut escaped = false;
        loop {
            // The plain run up to the next byte that matters, in one scan.
            let run = b
                .get(self.at..)?
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
            self.at += run;
            match *b.get(self.at)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.at += 2;
                }
                // Control characters must be escaped.
                _ => return None,
            }
        }
        self.at += 1;
        if escaped {
            let quoted = self.text.get(start - 1..self.at)?;
            serde_json::from_str::<String>(quoted).ok().map(Cow::Owned)
        } else {
            self.text.get(start..self.at - 1).map(Cow::Borrowed)
        }
    }

    /// A number at the cursor, as serde_json reads it: integers without a sign or with `-`
    /// here (up to 18 digits), anything else by serde_json's own number reader.
    fn number(&mut self) -> Option<Number> {
        let start = self.at;
        let b = self.text.as_bytes();
        while matches!(
            b.get(self.at),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        ) {
            self.at += 1;
        }
        let token = self.text.get(start..self.at)?;
        // Bytes, not `str` prefixes: in the size-optimized build those prefix tests were calls
        // to `memcmp`.
        let (negative, digits) = match token.as_bytes().split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, token.as_bytes()),
        };
        let plain = !digits.is_empty()
            && digits.len() <= 18
            && digits.iter().all(u8::is_ascii_digit)
            && (digits.len() == 1 || digits.first() != Some(&b'0'));
        if plain {
            let v = digits
                .iter()
                .fold(0i64, |v, c| v * 10 + i64::from(c - b'0'));
            // serde_json reads `-0` as a float.
            if !negative {
                return Some(Number::from(v));
            } else if v != 0 {
                return Some(Number::from(-v));
            }
        }
        serde_json::from_str::<Number>(token).ok()
    }

    /// An optional scalar field: `null` is `None`; an array or object refuses the shape.
    fn scalar(&mut self) -> Option<S<'a>> {
        Some(match self.peek()? {
            b'"' => {
                let s = self.string()?;
                self.judge.text(&s).then_some(Some(Scalar::Str(s)))?
            }
            b'n' => {
                self.literal("null")?;
                None
            }
            b't' => {
                self.literal("true")?;
                Some(Scalar::Bool(true))
            }
            b'f' => {
                self.literal("false")?;
                Some(Scalar::Bool(false))
            }
            b'-' | b'0'..=b'9' => Some(Scalar::Num(self.number()?)),
            _ => return None,
        })
    }

    /// Any value, checked and passed over (a field the shapes do not name).
    fn skip(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'{' if depth < MAX_SKIP_DEPTH => {
                self.at += 1;
                self.members(|r, key| {
                    r.judge.name(key).then_some(())?;
                    r.skip(depth + 1)
                })
            }
            b'[' if depth < MAX_SKIP_DEPTH => {
                self.at += 1;
                self.elements(|r| r.skip(depth + 1))
            }
            b'{' | b'[' => None,
            _ => self.scalar().map(drop),
        }
    }

    /// The elements of an array whose `[` was read, each read by `f`.
    fn elements(&mut self, mut f: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.ws();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(());
        }
        loop {
            self.ws();
            f(self)?;
            self.ws();
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// The members of an object whose `{` was read: `f` reads each value, given its key.
    fn members(&mut self, mut f: impl FnMut(&mut Self, Cow<'a, str>) -> Option<()>) -> Option<()> {
        self.ws();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            f(self, key)?;
            self.ws();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An object of named fields: `field` reads the value of a field it knows and answers its
    /// number (a second time is a duplicate, which serde's derive refuses), `None` for a name
    /// it does not know (skipped).
    fn fields(
        &mut self,
        mut field: impl FnMut(&mut Self, &str) -> Option<Option<u32>>,
    ) -> Option<()> {
        self.expect(b'{')?;
        let mut seen = 0u32;
        self.members(|r, key| match field(r, &key)? {
            Some(n) => {
                // Every name a shape reads is in the list the card-field test checks.
                #[cfg(test)]
                assert!(NAMES.contains(&&*key), "{key} is missing from NAMES");
                let bit = 1u32.checked_shl(n)?;
                (seen & bit == 0).then(|| seen |= bit)
            }
            None => {
                r.judge.name(key).then_some(())?;
                r.skip(0)
            }
        })
    }

    /// An optional array of objects, each read by `f`.
    fn list<T>(
        &mut self,
        mut f: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<Option<Vec<Object<T>>>> {
        if self.peek()? == b'n' {
            self.literal("null")?;
            return Some(None);
        }
        self.expect(b'[')?;
        let mut out = Vec::new();
        self.elements(|r| {
            out.push(Object(f(r)?));
            Some(())
        })?;
        Some(Some(out))
    }

    /// An optional object read by `f`.
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<Object<T>>> {
        if self.peek()? == b'n' {
            self.literal("null")?;
            return Some(None);
        }
        f(self).map(|t| Some(Object(t)))
    }

    fn tx(&mut self) -> Option<WireTx<'a>> {
        let mut w = WireTx::default();
        self.fields(|r, key| {
            Some(Some(match key {
                "transaction_id" => put(&mut w.transaction_id, r.scalar()?, 0),
                "register" => put(&mut w.register, r.scalar()?, 1),
                "store_ref" => put(&mut w.store_ref, r.scalar()?, 2),
                "business_day" => put(&mut w.business_day, r.scalar()?, 3),
                "time" => put(&mut w.time, r.scalar()?, 4),
                "currency" => put(&mut w.currency, r.scalar()?, 5),
                "type" => put(&mut w.kind, r.scalar()?, 6),
                "original_transaction_id" => put(&mut w.original_transaction_id, r.scalar()?, 7),
                "source" => put(&mut w.source, r.scalar()?, 8),
                "channel" => put(&mut w.channel, r.scalar()?, 9),
                "lines" => put(&mut w.lines, r.list(Self::line)?, 10),
                "tenders" => put(&mut w.tenders, r.list(Self::tender)?, 11),
                "discounts" => put(&mut w.discounts, r.list(Self::discount)?, 12),
                "totals" => put(&mut w.totals, r.nested(Self::totals)?, 13),
                "customer" => put(&mut w.customer, r.nested(Self::customer)?, 14),
                _ => return Some(None),
            }))
        })?;
        Some(w)
    }

    fn line(&mut self) -> Option<WireLine<'a>> {
        let mut l = WireLine::default();
        self.fields(|r, key| {
            Some(Some(match key {
                "sku" => put(&mut l.sku, r.scalar()?, 0),
                "description" => put(&mut l.description, r.scalar()?, 1),
                "qty" => put(&mut l.qty, r.scalar()?, 2),
                "unit_price_minor" => put(&mut l.unit_price_minor, r.scalar()?, 3),
                "unit_price" => put(&mut l.unit_price, r.scalar()?, 4),
                "amount_minor" => put(&mut l.amount_minor, r.scalar()?, 5),
                "amount" => put(&mut l.amount, r.scalar()?, 6),
                "kind" => put(&mut l.kind, r.scalar()?, 7),
                "discounts" => put(&mut l.discounts, r.list(Self::discount)?, 8),
                _ => return Some(None),
            }))
        })?;
        Some(l)
    }

    fn tender(&mut self) -> Option<WireTender<'a>> {
        let mut t = WireTender::default();
        self.fields(|r, key| {
            Some(Some(match key {
                "type" => put(&mut t.kind, r.scalar()?, 0),
                "amount_minor" => put(&mut t.amount_minor, r.scalar()?, 1),
                "amount" => put(&mut t.amount, r.scalar()?, 2),
                "card_brand" => put(&mut t.card_brand, r.scalar()?, 3),
                _ => return Some(None),
            }))
        })?;
        Some(t)
    }

    fn discount(&mut self) -> Option<WireDiscount<'a>> {
        let mut d = WireDiscount::default();
        self.fields(|r, key| {
            Some(Some(match key {
                "code" => put(&mut d.code, r.scalar()?, 0),
                "amount_minor" => put(&mut d.amount_minor, r.scalar()?, 1),
                "amount" => put(&mut d.amount, r.scalar()?, 2),
                _ => return Some(None),
            }))
        })?;
        Some(d)
    }

    fn totals(&mut self) -> Option<WireTotals<'a>> {
        let mut t = WireTotals::default();
        self.fields(|r, key| {
            Some(Some(match key {
                "total_minor" => put(&mut t.total_minor, r.scalar()?, 0),
                "total" => put(&mut t.total, r.scalar()?, 1),
                "subtotal_minor" => put(&mut t.subtotal_minor, r.scalar()?, 2),
                "subtotal" => put(&mut t.subtotal, r.scalar()?, 3),
                "tax_minor" => put(&mut t.tax_minor, r.scalar()?, 4),
                "tax" => put(&mut t.tax, r.scalar()?, 5),
                "discount_minor" => put(&mut t.discount_minor, r.scalar()?, 6),
                "discount" => put(&mut t.discount, r.scalar()?, 7),
                "surcharge_minor" => put(&mut t.surcharge_minor, r.scalar()?, 8),
                "surcharge" => put(&mut t.surcharge, r.scalar()?, 9),
                "tax_included" => put(&mut t.tax_included, r.scalar()?, 10),
                _ => return Some(None),
            }))
        })?;
        Some(t)
    }

    fn customer(&mut self) -> Option<WireCustomer<'a>> {
        let mut c = WireCustomer::default();
        self.fields(|r, key| {
            Some(Some(match key {
                "loyalty_id" => put(&mut c.loyalty_id, r.scalar()?, 0),
                "loyalty" => put(&mut c.loyalty, r.scalar()?, 1),
                "email" => put(&mut c.email, r.scalar()?, 2),
                "phone" => put(&mut c.phone, r.scalar()?, 3),
                _ => return Some(None),
            }))
        })?;
        Some(c)
    }
}

/// Stores a field's value and answers its number, for [`Reader::fields`].
fn put<T>(slot: &mut T, v: T, n: u32) -> u32 {
    *slot = v;
    n
}

/// serde's derive over the same shapes: the reader's definition, compared with it below and in
/// `json_fast`'s tests.
#[cfg(test)]
pub(super) mod by_serde {
    use super::*;
    use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
    use serde::Deserialize;
    use std::fmt;

    impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<'a>(std::marker::PhantomData<&'a ()>);
            impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
                type Value = Scalar<'a>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a JSON scalar")
                }
                fn visit_bool<E>(self, b: bool) -> Result<Scalar<'a>, E> {
                    Ok(Scalar::Bool(b))
                }
                fn visit_i64<E>(self, n: i64) -> Result<Scalar<'a>, E> {
                    Ok(Scalar::Num(n.into()))
                }
                fn visit_u64<E>(self, n: u64) -> Result<Scalar<'a>, E> {
                    Ok(Scalar::Num(n.into()))
                }
                fn visit_f64<E: de::Error>(self, n: f64) -> Result<Scalar<'a>, E> {
                    Number::from_f64(n)
                        .map(Scalar::Num)
                        .ok_or_else(|| E::custom("not a finite number"))
                }
                fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Scalar<'a>, E> {
                    Ok(Scalar::Str(Cow::Borrowed(s)))
                }
                fn visit_str<E>(self, s: &str) -> Result<Scalar<'a>, E> {
                    Ok(Scalar::Str(Cow::Owned(s.to_string())))
                }
                fn visit_string<E>(self, s: String) -> Result<Scalar<'a>, E> {
                    Ok(Scalar::Str(Cow::Owned(s)))
                }
            }
            d.deserialize_any(V(std::marker::PhantomData))
        }
    }

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<T>(std::marker::PhantomData<T>);
            impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
                type Value = Object<T>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
                    T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Object)
                }
            }
            d.deserialize_map(V(std::marker::PhantomData))
        }
    }

    /// Every transaction of `text` as serde's derive reads it, or `None` where it fails.
    pub(in super::super) fn read_all(text: &str) -> Option<Vec<WireTx<'_>>> {
        let mut de = serde_json::Deserializer::from_str(text);
        let txs = match text.trim_start().as_bytes().first()? {
            b'[' => All.deserialize(&mut de).ok()?,
            b'{' => vec![Object::<WireTx>::deserialize(&mut de).ok()?.0],
            _ => return None,
        };
        de.end().ok()?;
        Some(txs)
    }

    struct All;

    impl<'de> DeserializeSeed<'de> for All {
        type Value = Vec<WireTx<'de>>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for All {
        type Value = Vec<WireTx<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of transactions")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(Object(w)) = seq.next_element::<Object<WireTx<'de>>>()? {
                out.push(w);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads past everything: the judging is `json_fast`'s and tested there.
    struct Open;

    impl Judge<'_> for Open {
        fn name(&mut self, _: Cow<'_, str>) -> bool {
            true
        }
        fn text(&mut self, _: &str) -> bool {
            true
        }
    }

    fn by_hand(text: &str) -> Option<Vec<WireTx<'_>>> {
        let mut out = Vec::new();
        read_each(text, &mut Open, |w| {
            out.push(w);
            true
        })
        .then_some(out)
    }

    /// The reader's answer is serde's derive's, document by document: the same shapes where
    /// both read, and a refusal exactly where serde refuses.
    fn agree(doc: &str) -> bool {
        let hand = by_hand(doc);
        assert_eq!(hand, by_serde::read_all(doc), "{doc:?}");
        hand.is_some()
    }

    #[test]
    fn reads_what_serde_reads() {
        for doc in [
            r#"{"transaction_id":"T1"}"#,
            " [ {\"transaction_id\" : \"T1\" , \"lines\" : [ { \"qty\" : 2 } ] } ]\n\t\r ",
            r#"[]"#,
            r#"[{}]"#,
            r#"{"transaction_id":"T\u0031\"x\\","register":7,"time":null,"type":"sale"}"#,
            r#"{"lines":null,"tenders":[],"discounts":[{"code":"A","amount":"1.5"}],"totals":null,"customer":null}"#,
            r#"{"lines":[{"sku":"A","discounts":[{"amount_minor":-5}]}],"totals":{"tax_included":true}}"#,
            r#"{"extra":{"a":[1,2.5e3,-0,{"b":null}],"c":"\ud83d\ude00"},"other":[[[]]],"n":-0.0}"#,
            r#"{"register":-0,"store_ref":1e2,"source":1E-2,"channel":123456789012345678901234}"#,
            r#"{"register":9223372036854775807,"store_ref":-9223372036854775808,"source":18446744073709551615}"#,
            r#"{"register":999999999999999999,"store_ref":-999999999999999999,"source":0.1}"#,
            r#"{"transaction_id":true,"register":false,"customer":{"loyalty":"L","phone":"+1"}}"#,
            r#"{"kind":"sale","lines":[{"kind":"return"}],"tenders":[{"type":"cash","kind":1}]}"#,
        ] {
            assert!(agree(doc), "not read: {doc}");
        }
    }

    #[test]
    fn refuses_what_serde_refuses() {
        for doc in [
            "",
            " ",
            "null",
            "\"T1\"",
            "[1]",
            "[null]",
            "[{}]x",
            "[{},]",
            "{,}",
            r#"{"transaction_id":"T1",}"#,
            r#"{"transaction_id":"T1""#,
            r#"{"transaction_id":"T1"}}"#,
            r#"{"transaction_id":"T1","transaction_id":"T2"}"#,
            r#"{"transaction_id":["T1"]}"#,
            r#"{"transaction_id":{"a":1}}"#,
            r#"{"lines":{"sku":"A"}}"#,
            r#"{"lines":[["A"]]}"#,
            r#"{"totals":[1,2]}"#,
            r#"{"customer":"L1"}"#,
            r#"{"register":01}"#,
            r#"{"register":1.}"#,
            r#"{"register":.5}"#,
            r#"{"register":+1}"#,
            r#"{"register":-}"#,
            r#"{"register":1e}"#,
            r#"{"register":1e999}"#,
            r#"{"register":nul}"#,
            r#"{"register":truex}"#,
            r#"{"register":"a	b"}"#,
            r#"{"register":"\x"}"#,
            r#"{"register":"\ud800"}"#,
            r#"{"extra":[1 2]}"#,
            r#"{"extra":{"a" 1}}"#,
            "{\"register\":1}\u{c}",
            "\u{feff}{}",
        ] {
            assert!(!agree(doc), "read: {doc}");
        }
    }

    /// Damaged documents (bytes dropped, doubled or replaced by JSON's own punctuation) are
    /// refused or read exactly as serde does; valid ones are all read.
    #[test]
    fn damaged_documents_agree_with_serde() {
        let base = [
            r#"[{"transaction_id":"T1","register":"R\u00e9 1","time":"2026-12-01T10:00:00Z","currency":"EUR","type":"sale","lines":[{"sku":"A","description":"x \"y\"","qty":2,"unit_price_minor":150,"amount_minor":300,"discounts":[{"code":"C","amount_minor":10}]},{"sku":"B","qty":"1.5","unit_price":"2.00"}],"tenders":[{"type":"card","amount_minor":290,"card_brand":"visa"}],"discounts":[],"totals":{"total_minor":290,"tax_included":true,"tax":0.5},"customer":{"loyalty_id":null,"email":"a@b.example"},"extra":{"k":[1,-2,3.5e-1,true,false,null,"s",{}]}}]"#,
            r#"{"transaction_id":7,"lines":[{"amount":-1.25}],"totals":{"total":"1"}}"#,
        ];
        const PUNCT: &[u8] = b"{}[],:\"\\ -0e.ntf";
        let mut rng = fastrand::Rng::with_seed(2026);
        let (mut read, mut total) = (0, 0);
        for _ in 0..60_000 {
            let mut d: Vec<u8> = base[rng.usize(..base.len())].as_bytes().to_vec();
            for _ in 0..rng.usize(1..4) {
                let at = rng.usize(..d.len());
                match rng.u8(..3) {
                    0 => {
                        d.remove(at);
                    }
                    1 => d.insert(at, PUNCT[rng.usize(..PUNCT.len())]),
                    _ => {
                        let end = (at + rng.usize(1..12)).min(d.len());
                        let copy = d[at..end].to_vec();
                        d.splice(at..at, copy);
                    }
                }
            }
            let Ok(doc) = String::from_utf8(d) else {
                continue;
            };
            total += 1;
            if agree(&doc) {
                read += 1;
            }
        }
        eprintln!("{read} of {total} damaged documents still read, each as serde reads it");
        assert!(read > 500, "only {read} of {total} read");
    }
}
