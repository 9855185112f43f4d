//! One [`Tx`] in, one `pos.transaction` event out: card numbers, e-mail addresses and phone
//! numbers cut from free text, identifiers holding a card number refused, customer
//! identifiers pseudonymized, amounts checked for overflow, refunds made negative, the source's totals kept as
//! stated and any mismatch with the lines flagged.

pub use super::body_json::{Totals, TxBody};
use super::transaction::{Discount, Line, Reject, Tender, Tx, TxType};
use crate::event::{rfc3339_ms, Event, EventKind};
use crate::privacy::card;
use crate::privacy::customer::{CustomerKeys, Dropped};
use crate::privacy::pii::FreeText;

/// A normalized transaction ready for the spool, with its idempotency key.
#[derive(Debug)]
pub struct Normalized {
    /// The `pos.transaction` event; its id (`<gateway>:<seq>`) is given when the spool
    /// appends it.
    pub event: Event,
    /// `register ␟ business day ␟ transaction id`: the idempotency key. The business day is
    /// the source's, else the local date of the transaction time (docs/pos.md, "Exactly once").
    pub key: String,
    /// The key as versions before the derived business day wrote it (empty day), looked up
    /// too so an upgrade does not store a retried transaction twice.
    pub legacy_key: Option<String>,
    /// SHA-256 of the content: the same key with other content is a conflict (409).
    pub content: [u8; 32],
    /// The source sent no time (the gateway's clock filled it in; left out of the content).
    pub time_filled_in: bool,
    /// Lines in the event, for the replay summary's `lines` count.
    pub body_lines: usize,
    /// The transaction's currency, the key of the replay summary's totals.
    pub currency: String,
    /// The published `totals.total_minor`, summed per currency in the replay summary.
    pub total_minor: i64,
}

/// An identifier (id, register, SKU, barcode) is kept as it is unless it holds a card number:
/// then the transaction is refused, never stored under a placeholder.
fn ident(at: &str, v: String) -> Result<String, Reject> {
    refuse_card(|| at.to_string(), v)
}

fn ident_o(at: &str, v: Option<String>) -> Result<Option<String>, Reject> {
    v.map(|x| ident(at, x)).transpose()
}

/// [`ident_o`] with the field's path built only when the value is refused.
fn ident_lazy(at: impl FnOnce() -> String, v: Option<String>) -> Result<Option<String>, Reject> {
    v.map(|x| refuse_card(at, x)).transpose()
}

fn refuse_card(at: impl FnOnce() -> String, v: String) -> Result<String, Reject> {
    if card::identifier_holds_card(&v) {
        return Err(Reject::new(
            at(),
            "holds a payment card number; identifiers must not carry card numbers",
        ));
    }
    Ok(v)
}

fn range(at: &str) -> Reject {
    Reject::new(at, "amount out of range")
}

/// `-|v|`, refused for values whose magnitude does not fit.
fn neg(v: i64, at: &str) -> Result<i64, Reject> {
    v.checked_abs()
        .and_then(i64::checked_neg)
        .ok_or_else(|| range(at))
}

fn add(a: i64, b: i64, at: &str) -> Result<i64, Reject> {
    a.checked_add(b).ok_or_else(|| range(at))
}

fn sub(a: i64, b: i64, at: &str) -> Result<i64, Reject> {
    a.checked_sub(b).ok_or_else(|| range(at))
}

/// `v` without surrounding white space, reusing its buffer (most values have none).
fn trimmed(mut v: String) -> String {
    let end = v.trim_end().len();
    v.truncate(end);
    let start = v.len() - v.trim_start().len();
    if start > 0 {
        v.drain(..start);
    }
    v
}

/// `YYYY-MM-DD` of `ms` at the store's UTC offset, appended to `out`; `false` (nothing
/// written) when the time is out of range.
fn write_local_day(out: &mut String, ms: i64, offset_s: i32) -> bool {
    use std::fmt::Write;
    let Some(d) = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .zip(time::UtcOffset::from_whole_seconds(offset_s).ok())
        .and_then(|(t, off)| t.checked_to_offset(off))
        .map(|t| t.date())
    else {
        return false;
    };
    let (y, m, day) = (d.year(), u8::from(d.month()), d.day());
    match u16::try_from(y) {
        // The usual years by hand (every transaction writes one; the formatter cost more than
        // the rest of the key), the same text as the formatter writes.
        Ok(y) if y <= 9999 => {
            let two = |v: u8| [char::from(b'0' + v / 10), char::from(b'0' + v % 10)];
            let ([y0, y1], [y2, y3]) = (two((y / 100) as u8), two((y % 100) as u8));
            let ([m0, m1], [d0, d1]) = (two(m), two(day));
            out.extend([y0, y1, y2, y3, '-', m0, m1, '-', d0, d1]);
            true
        }
        _ => write!(out, "{y:04}-{m:02}-{day:02}").is_ok(),
    }
}

/// Normalizes one transaction with the business day, when the source states none, taken at
/// UTC (see [`normalize_at`]).
pub fn normalize(tx: Tx, key: &CustomerKeys, now_ms: i64) -> Result<Normalized, Reject> {
    normalize_at(tx, key, now_ms, 0)
}

/// Normalizes one transaction. `now_ms` stands in for a missing time; `offset_s` is the
/// store's UTC offset, which gives the business day of the idempotency key when the source
/// states none.
pub fn normalize_at(
    tx: Tx,
    customer_keys: &CustomerKeys,
    now_ms: i64,
    offset_s: i32,
) -> Result<Normalized, Reject> {
    let mut dropped = Dropped::default();
    let n = normalize_tallied(tx, customer_keys, now_ms, offset_s, &mut dropped);
    customer_keys.count(dropped);
    n
}

/// [`normalize_at`] with the customer identifiers it drops added to `dropped`, not counted
/// ([`CustomerKeys::pseudonyms_tallied`]).
pub fn normalize_tallied(
    tx: Tx,
    customer_keys: &CustomerKeys,
    now_ms: i64,
    offset_s: i32,
    dropped: &mut Dropped,
) -> Result<Normalized, Reject> {
    let mut sc = FreeText::default();
    let transaction_id = trimmed(tx.transaction_id);
    if transaction_id.is_empty() {
        return Err(Reject::new("transaction_id", "missing transaction id"));
    }
    let transaction_id = ident("transaction_id", transaction_id)?;
    let reject = |r: Reject| Reject {
        transaction_id: Some(transaction_id.clone()),
        ..r
    };
    if super::money::exponent(&tx.currency).is_none() {
        return Err(reject(Reject::new(
            "currency",
            "is not an ISO 4217 currency code",
        )));
    }
    let kind = tx.kind.unwrap_or(TxType::Sale);
    let mut flags = tx.flags;
    let mut lines: Vec<Line> = Vec::with_capacity(tx.lines.len());
    let mut lines_sum: i64 = 0;
    for (i, l) in tx.lines.into_iter().enumerate() {
        let at = |f: &str| format!("lines[{i}].{f}");
        let ret = kind.negative() || l.kind.as_deref() == Some("return");
        let amount = if ret {
            neg(l.amount_minor, &at("amount_minor")).map_err(reject)?
        } else {
            l.amount_minor
        };
        let mut line = Line {
            sku: ident_lazy(|| at("sku"), l.sku).map_err(reject)?,
            description: sc.opt(l.description.map(trimmed)),
            qty: if ret { -l.qty.abs() } else { l.qty },
            unit_price_minor: l.unit_price_minor,
            amount_minor: amount,
            kind: sc.opt(l.kind),
            discounts: Vec::with_capacity(l.discounts.len()),
        };
        let mut net = amount;
        for (j, d) in l.discounts.into_iter().enumerate() {
            let dat = || at(&format!("discounts[{j}].amount_minor"));
            let amount_minor = if ret {
                neg(d.amount_minor, &dat()).map_err(reject)?
            } else {
                d.amount_minor
            };
            net = net
                .checked_sub(amount_minor)
                .ok_or_else(|| reject(range(&dat())))?;
            line.discounts.push(Discount {
                code: sc.opt(d.code),
                amount_minor,
            });
        }
        if line.qty == 0.0 {
            line.qty = 0.0; // no negative zero on the wire
        }
        lines_sum = add(lines_sum, net, "lines").map_err(reject)?;
        lines.push(line);
    }
    let sign = |v: i64, at: &str| -> Result<i64, Reject> {
        if kind.negative() {
            neg(v, at).map_err(reject)
        } else {
            Ok(v)
        }
    };
    let order_discount = sign(tx.order_discount, "discounts")?;
    let tax = tx.totals.tax.map(|t| sign(t, "totals.tax")).transpose()?;
    let surcharge = sign(tx.surcharge, "totals.surcharge")?;
    let with_tax = if tx.tax_included {
        lines_sum
    } else {
        add(lines_sum, tax.unwrap_or(0), "totals.tax").map_err(reject)?
    };
    let expected = sub(with_tax, order_discount, "discounts")
        .and_then(|v| add(v, surcharge, "totals.surcharge"))
        .map_err(reject)?;
    let total = match tx.totals.total {
        Some(t) => sign(t, "totals.total")?,
        None => {
            flags.push("total_computed".into());
            expected
        }
    };
    let mismatch = sub(total, expected, "totals.total").map_err(reject)?;
    if mismatch != 0 {
        flags.push("total_mismatch".into());
    }
    let mut tenders: Vec<Tender> = Vec::with_capacity(tx.tenders.len());
    for (i, t) in tx.tenders.into_iter().enumerate() {
        let amount_minor = if kind.negative() {
            sign(t.amount_minor, &format!("tenders[{i}].amount_minor"))?
        } else {
            t.amount_minor
        };
        tenders.push(Tender {
            kind: sc.text(t.kind),
            amount_minor,
            card_brand: sc.opt(t.card_brand),
        });
    }
    let subtotal = tx
        .totals
        .subtotal
        .map(|v| sign(v, "totals.subtotal"))
        .transpose()?;
    let stated_discount = tx
        .totals
        .discount
        .map(|v| sign(v, "totals.discount"))
        .transpose()?;
    let register = ident("register", trimmed(tx.register)).map_err(reject)?;
    let business_day = ident_o("business_day", tx.business_day).map_err(reject)?;
    let store_ref = ident_o("store_ref", tx.store_ref).map_err(reject)?;
    let original_transaction_id =
        ident_o("original_transaction_id", tx.original_transaction_id).map_err(reject)?;
    // The idempotency key: the business day is the source's, else the local date of the
    // transaction time (docs/pos.md, "Exactly once").
    let mut key = String::with_capacity(register.len() + transaction_id.len() + 12);
    key.push_str(&register);
    key.push('\u{1f}');
    let derived_day = match (&business_day, tx.time_ms) {
        (Some(d), _) => {
            key.push_str(d);
            false
        }
        (None, Some(ms)) => write_local_day(&mut key, ms, offset_s),
        (None, None) => false,
    };
    key.push('\u{1f}');
    key.push_str(&transaction_id);
    let legacy_key = derived_day.then(|| {
        let mut k = String::with_capacity(register.len() + transaction_id.len() + 2);
        k.push_str(&register);
        k.push_str("\u{1f}\u{1f}");
        k.push_str(&transaction_id);
        k
    });
    let body = TxBody {
        kind,
        transaction_id,
        register,
        store_ref,
        business_day,
        time: rfc3339_ms(tx.time_ms.unwrap_or(now_ms)),
        currency: tx.currency.clone(),
        original_transaction_id,
        source: sc.text(tx.source),
        channel: sc.opt(tx.channel),
        totals: Totals {
            total_minor: total,
            subtotal_minor: subtotal,
            tax_minor: tax,
            discount_minor: stated_discount,
            lines_sum_minor: lines_sum,
            mismatch_minor: (mismatch != 0).then_some(mismatch),
        },
        lines,
        tenders,
        customer: customer_keys.pseudonyms_tallied(&tx.customer, dropped),
        flags: Vec::new(),
    };
    if tx.time_ms.is_none() {
        flags.push("time_missing".into());
    }
    let mut flags: Vec<String> = flags.into_iter().map(|f| sc.text(f)).collect();
    flags.extend(sc.removed().map(String::from));
    let mut body = TxBody { flags, ..body };
    let body_lines = body.lines.len();
    let ts = tx.time_ms.unwrap_or(now_ms);
    let mut bytes = Vec::with_capacity(320 + 192 * body_lines);
    super::body_json::write(&body, &mut bytes);
    let event = Event::from_object(EventKind::PosTransaction, ts, bytes);
    let content = content_hash(
        &mut body,
        event.body_bytes(),
        tx.time_ms.is_none(),
        customer_keys.randomized(),
    );
    Ok(Normalized {
        key,
        legacy_key,
        content,
        time_filled_in: tx.time_ms.is_none(),
        body_lines,
        currency: tx.currency,
        total_minor: total,
        event,
    })
}

/// SHA-256 of the event body as it is serialized, hashed as it is written (no copy): a time
/// the gateway filled in (the source sent none) is blanked, so a retry of the same transaction
/// hashes alike. Sealed customer tokens differ on every seal, so they are blanked too (only
/// which identifiers are present counts): a retry is a duplicate, not a conflict. They are not
/// replaced by anything derived from the identifiers: the hash is kept on disk, where a hash
/// of a phone number could be tested by guessing.
fn content_hash(
    body: &mut TxBody,
    serialized: &[u8],
    time_filled_in: bool,
    customer_randomized: bool,
) -> [u8; 32] {
    use sha2::Digest;
    let blank_customer = customer_randomized && body.customer.is_some();
    if !time_filled_in && !blank_customer {
        return sha2::Sha256::digest(serialized).into();
    }
    if time_filled_in {
        body.time.clear();
    }
    if customer_randomized {
        if let Some(c) = body.customer.as_mut() {
            for v in [&mut c.loyalty, &mut c.email, &mut c.phone]
                .into_iter()
                .flatten()
            {
                *v = "sealed".into();
            }
        }
    }
    let mut h = HashWriter(sha2::Sha256::new());
    // Serializing plain structs into a hasher cannot fail.
    let _ = serde_json::to_writer(&mut h, &*body);
    h.0.finalize().into()
}

/// Feeds what a serializer writes straight into SHA-256.
struct HashWriter(sha2::Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(&mut self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Normalized {
    /// The content hash as releases before the compact index computed it (the body parsed
    /// back, keys sorted, filled-in time removed, sealed tokens blanked), to compare with
    /// entries those releases left in the index.
    pub fn legacy_content(&self, customer_randomized: bool) -> [u8; 32] {
        use sha2::Digest;
        let mut body = self.event.body();
        if let Some(m) = body.as_object_mut() {
            if self.time_filled_in {
                m.remove("time");
            }
            if customer_randomized {
                if let Some(c) = m.get_mut("customer").and_then(|c| c.as_object_mut()) {
                    for v in c.values_mut() {
                        *v = serde_json::Value::String("sealed".into());
                    }
                }
            }
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        sha2::Sha256::digest(&bytes).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key's day, written by hand for the usual years, is the formatter's text for any
    /// time and offset.
    #[test]
    fn the_local_day_is_written_as_the_formatter_writes_it() {
        use std::fmt::Write;
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..20_000 {
            let ms = rng.i64(-62_135_596_800_000..253_402_300_800_000);
            let off = rng.i32(-14 * 3600..=14 * 3600);
            let mut ours = String::from("R\u{1f}");
            let wrote = write_local_day(&mut ours, ms, off);
            let mut theirs = String::from("R\u{1f}");
            let d = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
                .ok()
                .zip(time::UtcOffset::from_whole_seconds(off).ok())
                .and_then(|(t, o)| t.checked_to_offset(o))
                .map(|t| t.date());
            if let Some(d) = d {
                let _ = write!(
                    theirs,
                    "{:04}-{:02}-{:02}",
                    d.year(),
                    u8::from(d.month()),
                    d.day()
                );
            }
            assert_eq!((wrote, ours), (d.is_some(), theirs), "{ms} {off}");
        }
    }
    use crate::privacy::customer::RawCustomer;
    use crate::source::pos::transaction::StatedTotals;

    fn sale() -> Tx {
        Tx {
            transaction_id: "T1".into(),
            register: "R1".into(),
            currency: "EUR".into(),
            source: "json".into(),
            lines: vec![Line {
                sku: Some("A".into()),
                description: Some("card 4111 1111 1111 1111 used".into()),
                qty: 2.0,
                unit_price_minor: Some(150),
                amount_minor: 300,
                ..Line::default()
            }],
            totals: StatedTotals {
                total: Some(300),
                ..StatedTotals::default()
            },
            tenders: vec![Tender {
                kind: "card".into(),
                amount_minor: 300,
                card_brand: Some("visa".into()),
            }],
            ..Tx::default()
        }
    }

    #[test]
    fn scrubs_and_flags() {
        let n = normalize(sale(), &CustomerKeys::default(), 0).map_err(|e| e.to_string());
        let n = n.unwrap_or_else(|e| panic!("{e}"));
        let s = n.event.body().to_string();
        assert!(!s.contains("4111"), "{s}");
        assert!(s.contains("card_number_removed"));
        assert!(!s.contains("total_mismatch"));
    }

    #[test]
    fn refund_is_negative_and_mismatch_flagged() {
        let mut t = sale();
        t.kind = Some(TxType::Refund);
        t.totals.total = Some(250);
        t.totals.subtotal = Some(300);
        t.totals.tax = Some(-20);
        t.totals.discount = Some(30);
        let n = normalize(t, &CustomerKeys::default(), 0).unwrap_or_else(|e| panic!("{e}"));
        let b = &n.event.body();
        assert_eq!(b["totals"]["total_minor"], -250);
        // Every stated amount is negative, whatever sign the source wrote.
        assert_eq!(b["totals"]["subtotal_minor"], -300);
        assert_eq!(b["totals"]["tax_minor"], -20);
        assert_eq!(b["totals"]["discount_minor"], -30);
        assert_eq!(b["totals"]["lines_sum_minor"], -300);
        // −250 stated against −300 of lines and −20 of tax.
        assert_eq!(b["totals"]["mismatch_minor"], 70);
        assert_eq!(b["lines"][0]["qty"], -2.0);
        assert_eq!(b["tenders"][0]["amount_minor"], -300);
    }

    #[test]
    fn customer_without_key_is_dropped() {
        let mut t = sale();
        t.customer = RawCustomer {
            email: Some("a@b.example".into()),
            ..RawCustomer::default()
        };
        let n = normalize(t.clone(), &CustomerKeys::default(), 0).unwrap_or_else(|e| panic!("{e}"));
        assert!(n.event.body().get("customer").is_none());
        let k = CustomerKeys::from_bytes(b"0123456789abcdef", "");
        let n = normalize(t, &k, 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            n.event.body()["customer"]["email"].as_str().map(str::len),
            Some(64)
        );
    }

    #[test]
    fn sealed_customer_retry_is_a_duplicate_not_a_conflict() -> Result<(), String> {
        let mut nine = [0u8; 32];
        nine[0] = 9;
        let keys = crate::config::recipient_keys::RecipientKeys::parse(
            &crate::config::recipient_keys::format_public_key(&nine),
        )?;
        let k = CustomerKeys::sealed(keys.sealing().ok_or("no key")?, "s1", "49")?;
        let mut t = sale();
        t.customer = RawCustomer {
            phone: Some("030 1234 5678".into()),
            ..RawCustomer::default()
        };
        let a = normalize(t.clone(), &k, 0).map_err(|e| e.to_string())?;
        let b = normalize(t.clone(), &k, 0).map_err(|e| e.to_string())?;
        let (ta, tb) = (
            a.event.body()["customer"]["phone"].clone(),
            b.event.body()["customer"]["phone"].clone(),
        );
        assert_ne!(ta, tb, "sealing is randomized");
        assert_eq!(a.content, b.content, "a retry hashes alike");
        // Without the customer, the content differs (presence counts).
        t.customer = RawCustomer::default();
        let c = normalize(t, &k, 0).map_err(|e| e.to_string())?;
        assert_ne!(a.content, c.content);
        Ok(())
    }

    /// A time whose local date passes year 9999 gets a key without a derived day, not a panic.
    #[test]
    fn a_time_at_the_end_of_the_calendar_does_not_panic() {
        let mut t = sale();
        t.time_ms = Some(253_402_300_200_000); // 9999-12-31T23:30:00Z
        let n = normalize_at(t, &CustomerKeys::default(), 0, 3600);
        let n = n.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.key, "R1\u{1f}\u{1f}T1");
        assert!(n.legacy_key.is_none());
    }

    #[test]
    fn bad_currency_rejected() {
        let mut t = sale();
        t.currency = "euro".into();
        assert!(normalize(t, &CustomerKeys::default(), 0).is_err());
    }
}
