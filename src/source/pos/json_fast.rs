//! The fast path of the canonical JSON parser: a document whose text holds no suspicious field
//! name or track-like string is deserialized straight into the transaction's own shapes, with
//! no tree of maps per transaction (the tree and its key strings were most of the push path's
//! allocations, BENCHMARKS.md "POS push"). Anything this path does not take exactly as
//! [`super::json::parse_document`] would (a refused field, a bad value, a duplicate key, an
//! unexpected shape) makes it give up, and the tree-based parser reads the document and gives
//! the answer, with the path of the bad field. So the fast path changes speed, never results:
//! `tests` below and `tests/pos_parsers.rs` compare both on every input they have.

use super::json_wire::{self, Object, Scalar, WireLine, WireTx, S};
use super::transaction::{Discount, Line, StatedTotals, Tender, Tx, TxType};
use super::{money, timefmt, ParseOpts};
use crate::privacy::card;
use crate::privacy::customer::RawCustomer;
use std::borrow::Cow;

/// The transactions of `text`, or `None` when the tree-based parser must decide.
pub fn parse(text: &str, o: &ParseOpts) -> Option<Vec<Tx>> {
    let mut txs = Vec::new();
    parse_each(text, o, |t| txs.push(t)).then_some(txs)
}

/// Hands each transaction of `text` to `each` as soon as it is read, so a caller that turns
/// them into something else (the HTTP push normalizes them) never holds the whole document as
/// transactions. `false` when the tree-based parser must decide: the caller then drops
/// whatever `each` was given.
pub fn parse_each(text: &str, o: &ParseOpts, mut each: impl FnMut(Tx)) -> bool {
    json_wire::read_each(text, &mut CardJudge::default(), |w| match tx(w, o) {
        Some(t) => {
            each(t);
            true
        }
        // The tree parser decides anything this path does not take.
        None => false,
    })
}

/// Judged while the document is read: a field name that is a card-authentication field, or a
/// string that looks like track data, leaves the document to the tree parser (which refuses
/// it with the path). Escaped text is judged decoded.
#[derive(Default)]
struct CardJudge<'t> {
    /// A bulk upload repeats the same few unknown keys in every record: each is judged once.
    judged: JudgedKeys<'t>,
}

impl<'t> json_wire::Judge<'t> for CardJudge<'t> {
    fn name(&mut self, name: Cow<'t, str>) -> bool {
        match name {
            Cow::Borrowed(n) if self.judged.contains(n) => true,
            Cow::Borrowed(n) => {
                let clean = !card::is_forbidden_field(n);
                if clean {
                    self.judged.insert(n);
                }
                clean
            }
            // An escaped name is judged every time.
            Cow::Owned(n) => !card::is_forbidden_field(&n),
        }
    }

    fn text(&mut self, text: &str) -> bool {
        !card::looks_like_track(text)
    }
}

/// Key names [`CardJudge`] has judged clean in one document: a small hash set over the text,
/// without allocation. A key that finds no free slot near its own is simply judged again, so
/// a document of endless distinct keys costs what it cost before.
struct JudgedKeys<'t> {
    slots: [Option<&'t str>; JudgedKeys::SLOTS],
}

impl Default for JudgedKeys<'_> {
    fn default() -> Self {
        JudgedKeys {
            slots: [None; JudgedKeys::SLOTS],
        }
    }
}

impl<'t> JudgedKeys<'t> {
    const SLOTS: usize = 128;
    /// Slots looked at from a key's own.
    const PROBES: usize = 4;

    /// The slots a key may occupy (FNV-1a of its bytes picks the first).
    fn slots_of(key: &str) -> impl Iterator<Item = usize> {
        let h = key.bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        }) as usize;
        // Wrapping: on a 32-bit target the hash fills the whole `usize` (2^32 is a multiple
        // of SLOTS, so the slot is the same).
        (0..Self::PROBES).map(move |p| h.wrapping_add(p) % Self::SLOTS)
    }

    fn contains(&self, key: &str) -> bool {
        Self::slots_of(key).any(|i| self.slots.get(i).copied().flatten() == Some(key))
    }

    fn insert(&mut self, key: &'t str) {
        for i in Self::slots_of(key) {
            if let Some(slot @ None) = self.slots.get_mut(i) {
                *slot = Some(key);
                return;
            }
        }
    }
}

/// [`super::jsonutil::At::str`] without keeping the text, for fields only read here (type,
/// time, quantity): absent or null is `None`, numbers count as their text.
fn peek<'v>(v: &'v S<'_>) -> Option<Option<Cow<'v, str>>> {
    match v {
        None => Some(None),
        Some(Scalar::Str(s)) => Some(Some(Cow::Borrowed(s.as_ref()))),
        Some(Scalar::Num(n)) => Some(Some(Cow::Owned(n.to_string()))),
        Some(Scalar::Bool(_)) => None,
    }
}

/// [`peek`] for a field that is kept: text moves out of the scalar instead of being copied.
fn text(v: S<'_>) -> Option<Option<String>> {
    match v {
        Some(Scalar::Str(s)) => Some(Some(s.into_owned())),
        other => Some(peek(&other)?.map(Cow::into_owned)),
    }
}

/// [`super::jsonutil::At::req_str`].
fn required(v: S<'_>) -> Option<String> {
    text(v)?.filter(|s| !s.trim().is_empty())
}

/// [`super::jsonutil::At::money`]: `<k>_minor` first, else `<k>` in major units.
fn amount(minor: &S<'_>, major: &S<'_>, exp: u32) -> Option<Option<i64>> {
    match (minor, major) {
        (Some(v), _) => money::from_json_minor(&v.value()).ok().map(Some),
        (_, Some(v)) => money::from_json_decimal(&v.value(), exp).ok().map(Some),
        _ => Some(None),
    }
}

fn tx(w: WireTx<'_>, o: &ParseOpts) -> Option<Tx> {
    let transaction_id = required(w.transaction_id)?;
    let currency = text(w.currency)?.unwrap_or_else(|| o.default_currency.clone());
    let exp = money::exponent(&currency)?;
    let kind = match peek(&w.kind)? {
        None => None,
        Some(t) => Some(TxType::parse(&t)?),
    };
    let time_ms = match peek(&w.time)? {
        None => None,
        Some(t) => Some(timefmt::parse(&t, o.offset_s).ok()?),
    };
    let lines = w
        .lines
        .unwrap_or_default()
        .into_iter()
        .map(|Object(l)| line(l, exp))
        .collect::<Option<Vec<_>>>()?;
    let tenders = w
        .tenders
        .unwrap_or_default()
        .into_iter()
        .map(|Object(t)| {
            Some(Tender {
                amount_minor: amount(&t.amount_minor, &t.amount, exp)??,
                kind: required(t.kind)?,
                card_brand: text(t.card_brand)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let mut order_discount: i64 = 0;
    for Object(d) in w.discounts.unwrap_or_default() {
        order_discount = order_discount.checked_add(amount(&d.amount_minor, &d.amount, exp)??)?;
    }
    let t = w.totals.map(|Object(t)| t);
    let m = |pair: Option<(&S<'_>, &S<'_>)>| match pair {
        None => Some(None),
        Some((minor, major)) => amount(minor, major, exp),
    };
    let totals = StatedTotals {
        total: m(t.as_ref().map(|t| (&t.total_minor, &t.total)))?,
        subtotal: m(t.as_ref().map(|t| (&t.subtotal_minor, &t.subtotal)))?,
        tax: m(t.as_ref().map(|t| (&t.tax_minor, &t.tax)))?,
        discount: m(t.as_ref().map(|t| (&t.discount_minor, &t.discount)))?,
    };
    let surcharge = m(t.as_ref().map(|t| (&t.surcharge_minor, &t.surcharge)))?.unwrap_or(0);
    let tax_included = matches!(
        t.as_ref().and_then(|t| t.tax_included.as_ref()),
        Some(Scalar::Bool(true))
    );
    let customer = match w.customer {
        None => RawCustomer::default(),
        Some(Object(c)) => {
            let loyalty_id = text(c.loyalty_id)?;
            let loyalty = text(c.loyalty)?;
            RawCustomer {
                loyalty_id: loyalty_id.or(loyalty),
                email: text(c.email)?,
                phone: text(c.phone)?,
            }
        }
    };
    Some(Tx {
        transaction_id,
        register: text(w.register)?.unwrap_or_else(|| o.default_register.clone()),
        store_ref: text(w.store_ref)?,
        business_day: text(w.business_day)?,
        time_ms,
        currency,
        kind,
        original_transaction_id: text(w.original_transaction_id)?,
        source: text(w.source)?.unwrap_or_else(|| "json".into()),
        channel: text(w.channel)?,
        lines,
        order_discount,
        surcharge,
        tax_included,
        totals,
        tenders,
        customer,
        flags: Vec::new(),
    })
}

fn line(l: WireLine<'_>, exp: u32) -> Option<Line> {
    let qty_v = l.qty.as_ref();
    let qty = match qty_v {
        None => 1.0,
        // An integer reads as its own text would (no exponent, no fraction).
        Some(Scalar::Num(n)) if n.is_i64() || n.is_u64() => n.as_f64()?,
        Some(q) => money::qty_from_json(&q.value()).ok()?,
    };
    let unit = amount(&l.unit_price_minor, &l.unit_price, exp)?;
    let amount_minor = match amount(&l.amount_minor, &l.amount, exp)? {
        Some(a) => a,
        None => {
            let qt = qty_v.map(|q| match q {
                Scalar::Str(s) => s.to_string(),
                other => other.value().to_string(),
            });
            money::qty_times(qt.as_deref().unwrap_or("1"), unit?).ok()?
        }
    };
    let discounts = l
        .discounts
        .unwrap_or_default()
        .into_iter()
        .map(|Object(d)| {
            Some(Discount {
                amount_minor: amount(&d.amount_minor, &d.amount, exp)??,
                code: text(d.code)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Line {
        sku: text(l.sku)?,
        description: text(l.description)?,
        qty,
        unit_price_minor: unit,
        amount_minor,
        kind: text(l.kind)?,
        discounts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ParseOpts {
        ParseOpts::from_config(&crate::source::pos::PosConfig::default())
    }

    /// Whether the fast path reads `text` past its judge (shapes aside).
    fn clean(text: &str) -> bool {
        json_wire::read_each(text, &mut CardJudge::default(), |_| true)
    }

    /// The names the reader knows are not judged: none of them may be a card field.
    #[test]
    fn no_field_the_reader_knows_is_a_card_field() {
        for name in json_wire::NAMES {
            assert!(!card::is_forbidden_field(name), "{name}");
        }
    }

    /// The fast path's answer is the tree parser's, for every document it takes.
    pub fn same_as_tree(doc: &str) -> bool {
        let o = opts();
        let Some(fast) = parse(doc, &o) else {
            return false;
        };
        let fast: Vec<Result<Tx, super::super::transaction::Reject>> =
            fast.into_iter().map(Ok).collect();
        let slow = super::super::json::parse_document_tree(doc, &o);
        assert_eq!(
            format!("{:?}", Ok::<_, ()>(fast)),
            format!("{slow:?}"),
            "{doc}"
        );
        true
    }

    const TAKEN: &[&str] = &[
        r#"{"transaction_id":"T1","lines":[{"sku":"A","amount_minor":100}]}"#,
        r#"[{"transaction_id":42,"register":7,"currency":"EUR","type":"refund","time":"2026-12-01T10:00:00+01:00","lines":[{"sku":"A","qty":"2","unit_price":"1.5"},{"description":"x","qty":1.5,"unit_price_minor":3,"amount":"4"}],"tenders":[{"type":"cash","amount":4}],"totals":{"total":"4","tax_minor":null,"tax_included":true},"customer":{"loyalty":"L-1","email":"a@b.example"}}]"#,
        r#"{"transaction_id":"T2","currency":"EUR","store_ref":null,"business_day":"2026-12-01","channel":"web","source":"till","original_transaction_id":"T1","discounts":[{"amount":"0.50"}],"lines":[{"sku":"B","amount_minor":250,"kind":"return","discounts":[{"code":"X","amount_minor":10}]}],"totals":{"total_minor":190,"subtotal":"2.40","discount_minor":60,"surcharge":"0.10"},"extra":{"nested":[1,2,{"k":"v"}]}}"#,
        r#"[{"transaction_id":"T3","lines":[]},{"transaction_id":"T4","type":"void","customer":{"loyalty_id":null,"loyalty":"77","phone":"+49 30 1234567"}}]"#,
        r#"{"transaction_id":"T\u0035","lines":[{"sku":"A","description":"caf\u00e9 \"x\"","amount_minor":1}]}"#,
    ];

    /// Documents the fast path leaves to the tree parser (which refuses or accepts them).
    const LEFT: &[&str] = &[
        r#"{"transaction_id":"T1","cvv":"123"}"#,
        r#"{"transaction_id":"T1","c\u0076v":null}"#,
        r#"{"transaction_id":"T1","lines":[{"description":";4111111111111111=2512101"}]}"#,
        r#"{"transaction_id":"T1","transaction_id":"T2"}"#,
        r#"{"transaction_id":"T1","lines":{"sku":"A"}}"#,
        r#"{"transaction_id":"T1","currency":"euro"}"#,
        r#"{"transaction_id":"  "}"#,
        r#"{"transaction_id":"T1","lines":[{"sku":"A"}]}"#,
        r#"{"transaction_id":"T1","time":"yesterday"}"#,
        r#"{"transaction_id":"T1","register":["R"]}"#,
        r#"{"transaction_id":"T1","tenders":[{"type":"cash"}]}"#,
        r#"[1,2]"#,
        r#""T1""#,
        r#"{"transaction_id":"T1""#,
        // Arrays where objects belong (serde's derive would read them field by field).
        r#"[["T1",null,null,null,null,null,null,null,null,null,null,null,null,null,null]]"#,
        r#"{"transaction_id":"T1","totals":[null,null,null,null,null,null,null,null,null,null,true]}"#,
        r#"{"transaction_id":"T1","lines":[["A",null,null,null,null,100,null,null,null]]}"#,
        r#"{"transaction_id":"T1","tenders":[["cash",100,null,null]]}"#,
        r#"{"transaction_id":"T1","customer":["L1",null,null,null]}"#,
        r#"{"transaction_id":"T1","discounts":[[null,50,null]]}"#,
        // In a field no shape names: serde's derive skipped these unchecked, and took
        // documents the tree parser refuses (a number out of range, a lone surrogate).
        r#"{"transaction_id":"T1","note":1e999}"#,
        r#"{"transaction_id":"T1","note":["\ud800"]}"#,
    ];

    #[test]
    fn takes_plain_documents_exactly_as_the_tree_parser() {
        for doc in TAKEN {
            assert!(same_as_tree(doc), "fast path refused {doc}");
        }
    }

    #[test]
    fn leaves_everything_else_to_the_tree_parser() {
        for doc in LEFT {
            assert!(parse(doc, &opts()).is_none(), "fast path took {doc}");
        }
    }

    /// Keys are judged once per document: a forbidden key is still found after many keys
    /// judged clean, after its own name was seen as a value, and in an escaped spelling of a
    /// name already judged.
    #[test]
    fn judging_each_key_once_still_finds_every_forbidden_key() {
        let many: String = (0..40).map(|i| format!(r#""k{i}":1,"#)).collect();
        for doc in [
            format!(r#"{{{many}"transaction_id":"T1","cvv":"1"}}"#),
            format!(
                r#"[{{"transaction_id":"T1","x":"cvv"}},{{"transaction_id":"T2",{many}"cvv":"1"}}]"#
            ),
            r#"[{"transaction_id":"T1","pin":null},{"transaction_id":"T2","pin":null}]"#.into(),
            r#"[{"transaction_id":"T1","track":1},{"transaction_id":"T2","track1":1}]"#.into(),
            r#"[{"transaction_id":"T1","cvx":1},{"transaction_id":"T2","c\u0076v":1}]"#.into(),
            r#"[{"transaction_id":"T1","c\u0076x":1},{"transaction_id":"T2","c\u0076v":1}]"#.into(),
            // Inside values no field names: names and texts are judged at any depth.
            r#"{"transaction_id":"T1","extra":{"a":[{"cvv":"1"}]}}"#.into(),
            r#"{"transaction_id":"T1","extra":[1,";4111111111111111=2512101?"]}"#.into(),
            r#"{"transaction_id":"T1","lines":[{"sku":"A","x":{"pin":1}}]}"#.into(),
        ] {
            assert!(!clean(&doc), "judged clean: {doc}");
        }
        assert!(clean(&format!(r#"{{{many}"transaction_id":"T1"}}"#)));
        let mut set = JudgedKeys::default();
        let names: Vec<String> = (0..400).map(|i| format!("key{i}")).collect();
        for n in &names {
            set.insert(n);
        }
        let kept = names.iter().filter(|n| set.contains(n)).count();
        assert!(kept > 64 && kept <= JudgedKeys::SLOTS, "{kept} kept");
        assert!(!set.contains("cvv") && !set.contains("key"));
        // A key whose hash is at the top of the range (0xFFFFFFFE) probes past it.
        assert!(clean(r#"{"ka89n1fm":1,"ka89n1fm":2}"#));
    }

    /// Random documents built from the fields both parsers read, each given values of every
    /// kind (absent, null, numbers, decimals, text, bad types): whatever the fast path takes,
    /// it takes exactly as the tree parser does.
    #[test]
    fn random_documents_agree_with_the_tree_parser() {
        const SCALARS: &[&str] = &[
            "null",
            "0",
            "7",
            "-3",
            "1.5",
            "1e3",
            "\"\"",
            "\" \"",
            "\"12.34\"",
            "\"abc\"",
            "\"2026-12-01T10:00:00Z\"",
            "\"EUR\"",
            "\"JPY\"",
            "\"refund\"",
            "\"sale\"",
            "true",
            "[]",
            "{}",
            "\"4111 1111 1111 1111\"",
            "\"a@b.example\"",
            "9223372036854775807",
            "\"-0.005\"",
        ];
        const TX: &[&str] = &[
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
            "other",
        ];
        const LINE: &[&str] = &[
            "sku",
            "description",
            "qty",
            "unit_price_minor",
            "unit_price",
            "amount_minor",
            "amount",
            "kind",
        ];
        const MONEY: &[&str] = &["amount_minor", "amount", "code", "type", "card_brand"];
        const TOTALS: &[&str] = &[
            "total_minor",
            "total",
            "subtotal",
            "tax_minor",
            "tax",
            "discount",
            "surcharge_minor",
            "tax_included",
        ];
        const CUSTOMER: &[&str] = &["loyalty_id", "loyalty", "email", "phone"];
        let mut rng = fastrand::Rng::with_seed(23);
        let obj = |rng: &mut fastrand::Rng, keys: &[&str], extra: &str| {
            let mut parts: Vec<String> = Vec::new();
            for k in keys {
                if rng.u8(..) >= 140 {
                    continue;
                }
                // Mostly a value the field takes, sometimes anything.
                let good: &[&str] = match *k {
                    "time" => &["\"2026-12-01T10:00:00Z\"", "\"2026-12-01T10:00:00\""],
                    "currency" => &["\"EUR\"", "\"JPY\"", "\"BHD\""],
                    "type" if keys.contains(&"register") => &["\"sale\"", "\"refund\"", "\"void\""],
                    "tax_included" => &["true", "false"],
                    "qty" => &["2", "\"1.5\"", "-1", "0.25"],
                    k if k.contains("minor") => &["150", "0", "-20"],
                    "amount" | "unit_price" | "total" | "subtotal" | "tax" | "discount"
                    | "surcharge" => &["\"1.50\"", "2", "0.5"],
                    _ => &["\"T1\"", "\"A-7\"", "42", "\"caf\\u00e9\""],
                };
                let v = if rng.u8(..4) > 0 {
                    good[rng.usize(..good.len())]
                } else {
                    SCALARS[rng.usize(..SCALARS.len())]
                };
                parts.push(format!("\"{k}\":{v}"));
            }
            if !extra.is_empty() {
                parts.push(extra.to_string());
            }
            format!("{{{}}}", parts.join(","))
        };
        let (mut taken, mut total) = (0, 0);
        for _ in 0..4000 {
            let money: Vec<String> = (0..rng.usize(..3))
                .map(|_| obj(&mut rng, MONEY, ""))
                .collect();
            let lines: Vec<String> = (0..rng.usize(..3))
                .map(|_| {
                    let d = format!("\"discounts\":[{}]", money.join(","));
                    let with = rng.bool();
                    obj(&mut rng, LINE, if with { &d } else { "" })
                })
                .collect();
            let mut extra = vec![format!("\"lines\":[{}]", lines.join(","))];
            if rng.bool() {
                extra.push(format!("\"tenders\":[{}]", money.join(",")));
            }
            if rng.bool() {
                extra.push(format!("\"discounts\":[{}]", money.join(",")));
            }
            if rng.bool() {
                extra.push(format!("\"totals\":{}", obj(&mut rng, TOTALS, "")));
            }
            if rng.bool() {
                extra.push(format!("\"customer\":{}", obj(&mut rng, CUSTOMER, "")));
            }
            let doc = obj(&mut rng, TX, &extra.join(","));
            total += 1;
            if same_as_tree(&doc) {
                taken += 1;
            }
        }
        eprintln!("fast path took {taken} of {total} random documents, each as the tree parser");
        // Enough of them valid for the comparison to mean something.
        assert!(taken > 100, "only {taken} of {total} documents were taken");
    }
}
