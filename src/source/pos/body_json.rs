//! The `pos.transaction` event body: its shape, defined by the `Serialize` derive below (the
//! content hash and `schemas/pos.transaction.schema.json` follow it), and the same bytes
//! written straight by [`write`], which the gateway uses (a test compares both writers on
//! random bodies).
//!
//! Why a second writer: every POS transaction is serialized once, and through serde's
//! serializer that was 15% of the gateway's CPU in a bulk push on the size-optimized store
//! build (a call per key, per value and per write; BENCHMARKS.md, "POS push"). Here keys are
//! constants, numbers are written digit by digit, and a string goes out as it is unless it
//! needs escaping, when `serde_json` writes it.

use super::transaction::{Discount, Line, Tender, TxType};
use crate::privacy::customer::Pseudonyms;
use serde::Serialize;

/// The event body exactly as `schemas/pos.transaction.schema.json` describes it.
#[derive(Debug, Serialize)]
pub struct TxBody {
    /// `sale`, `refund` or `cancellation` (wire `type`); the last two carry negative amounts.
    #[serde(rename = "type")]
    pub kind: TxType,
    /// The source's id, kept as sent; with `register` and the business day the idempotency key.
    pub transaction_id: String,
    /// The till, or `default_register` when the source names none; part of the idempotency key.
    pub register: String,
    /// The source's store id (POSLog `RetailStoreID`), when it states one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_ref: Option<String>,
    /// The till's trading day when the source states one; a day derived from `time` is only in
    /// the idempotency key, not here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_day: Option<String>,
    /// When the sale ended, RFC 3339 UTC with milliseconds; the gateway's clock when the source
    /// sent no time (flag `time_missing`).
    pub time: String,
    /// ISO 4217 code; every `*_minor` amount is an integer of its minor unit.
    pub currency: String,
    /// The transaction a refund or cancellation reverses, when the source links it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_transaction_id: Option<String>,
    /// Input format (`poslog`, `csv`, `square`, `shopify`), or canonical JSON's own `source`
    /// (default `json`).
    pub source: String,
    /// Sales channel as the source names it (Shopify `source_name`: `pos`, `web`), when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The items; amounts are negative on returned lines and in refunds and cancellations.
    pub lines: Vec<Line>,
    /// The stated totals and their check against the lines.
    pub totals: Totals,
    /// The payments, at most the card brand each; negative in refunds and cancellations.
    pub tenders: Vec<Tender>,
    /// Sealed tokens or keyed pseudonyms (`privacy.customer`); absent when none was sent,
    /// none normalized, or the mode is `drop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<Pseudonyms>,
    /// Notes on the transaction (`total_mismatch`, `card_number_removed`, `time_missing`, …);
    /// consumers must accept new values.
    pub flags: Vec<String>,
}

/// Totals on the wire: the stated ones plus the check against the lines.
#[derive(Debug, Serialize)]
pub struct Totals {
    /// The total as the source states it (negative in refunds and cancellations), or the total
    /// the lines give with flag `total_computed` when it states none.
    pub total_minor: i64,
    /// The stated subtotal (negative in refunds and cancellations); not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtotal_minor: Option<i64>,
    /// The stated tax (negative in refunds and cancellations); in the check unless included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_minor: Option<i64>,
    /// The stated transaction discount, the reduction (negative in refunds and
    /// cancellations); not part of the check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount_minor: Option<i64>,
    /// Σ(line amount − line discounts).
    pub lines_sum_minor: i64,
    /// stated total − (lines sum + tax unless included − transaction discounts + surcharges),
    /// when not 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mismatch_minor: Option<i64>,
}

/// Appends the JSON object of `body` to `out`.
pub fn write(body: &TxBody, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":");
    out.extend_from_slice(match body.kind {
        TxType::Sale => b"\"sale\"",
        TxType::Refund => b"\"refund\"",
        TxType::Cancellation => b"\"cancellation\"",
    });
    key_str(out, b",\"transaction_id\":", &body.transaction_id);
    key_str(out, b",\"register\":", &body.register);
    opt_str(out, b",\"store_ref\":", &body.store_ref);
    opt_str(out, b",\"business_day\":", &body.business_day);
    key_str(out, b",\"time\":", &body.time);
    key_str(out, b",\"currency\":", &body.currency);
    opt_str(
        out,
        b",\"original_transaction_id\":",
        &body.original_transaction_id,
    );
    key_str(out, b",\"source\":", &body.source);
    opt_str(out, b",\"channel\":", &body.channel);
    list(out, b",\"lines\":", &body.lines, line);
    out.extend_from_slice(b",\"totals\":");
    totals(out, &body.totals);
    list(out, b",\"tenders\":", &body.tenders, tender);
    if let Some(c) = &body.customer {
        out.extend_from_slice(b",\"customer\":");
        // Rare (a transaction with a customer) and small: serde writes it.
        let _ = serde_json::to_writer(&mut *out, c);
    }
    list(out, b",\"flags\":", &body.flags, |out, f| string(out, f));
    out.push(b'}');
}

fn line(out: &mut Vec<u8>, l: &Line) {
    // The first field is optional: `sep` is the comma before every field but the first.
    out.push(b'{');
    let mut sep = false;
    if let Some(s) = &l.sku {
        out.extend_from_slice(b"\"sku\":");
        string(out, s);
        sep = true;
    }
    if let Some(d) = &l.description {
        out.extend_from_slice(if sep {
            b",\"description\":"
        } else {
            b"\"description\":"
        });
        string(out, d);
        sep = true;
    }
    out.extend_from_slice(if sep { b",\"qty\":" } else { b"\"qty\":" });
    float(out, l.qty);
    opt_int(out, b",\"unit_price_minor\":", l.unit_price_minor);
    out.extend_from_slice(b",\"amount_minor\":");
    int(out, l.amount_minor);
    opt_str(out, b",\"kind\":", &l.kind);
    list(out, b",\"discounts\":", &l.discounts, discount);
    out.push(b'}');
}

fn discount(out: &mut Vec<u8>, d: &Discount) {
    out.push(b'{');
    if let Some(c) = &d.code {
        out.extend_from_slice(b"\"code\":");
        string(out, c);
        out.push(b',');
    }
    out.extend_from_slice(b"\"amount_minor\":");
    int(out, d.amount_minor);
    out.push(b'}');
}

fn totals(out: &mut Vec<u8>, t: &Totals) {
    out.extend_from_slice(b"{\"total_minor\":");
    int(out, t.total_minor);
    opt_int(out, b",\"subtotal_minor\":", t.subtotal_minor);
    opt_int(out, b",\"tax_minor\":", t.tax_minor);
    opt_int(out, b",\"discount_minor\":", t.discount_minor);
    out.extend_from_slice(b",\"lines_sum_minor\":");
    int(out, t.lines_sum_minor);
    opt_int(out, b",\"mismatch_minor\":", t.mismatch_minor);
    out.push(b'}');
}

fn tender(out: &mut Vec<u8>, t: &Tender) {
    key_str(out, b"{\"type\":", &t.kind);
    out.extend_from_slice(b",\"amount_minor\":");
    int(out, t.amount_minor);
    opt_str(out, b",\"card_brand\":", &t.card_brand);
    out.push(b'}');
}

/// `key` and a JSON array of `items`, each written by `item`.
fn list<T>(out: &mut Vec<u8>, key: &[u8], items: &[T], item: impl Fn(&mut Vec<u8>, &T)) {
    out.extend_from_slice(key);
    out.push(b'[');
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        item(out, x);
    }
    out.push(b']');
}

fn key_str(out: &mut Vec<u8>, key: &[u8], s: &str) {
    out.extend_from_slice(key);
    string(out, s);
}

fn opt_str(out: &mut Vec<u8>, key: &[u8], s: &Option<String>) {
    if let Some(s) = s {
        key_str(out, key, s);
    }
}

fn opt_int(out: &mut Vec<u8>, key: &[u8], n: Option<i64>) {
    if let Some(n) = n {
        out.extend_from_slice(key);
        int(out, n);
    }
}

/// A JSON string: as it is when no byte needs an escape (JSON escapes only `"`, `\` and
/// control characters; other text, UTF-8 included, is written unchanged), else as serde
/// escapes it.
fn string(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// An integer in decimal, as `itoa` (serde's) writes it: the sign, then the magnitude's
/// digits by [`crate::event::write_u64`].
fn int(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    crate::event::write_u64(out, n.unsigned_abs());
}

/// A quantity as serde writes an `f64` (`ryu`: `2.0`, `0.5`, `1e16`; `null` when not
/// finite). Whole quantities below 10^15, the usual case, are written here (`ryu` writes them
/// as the integer and `.0`); negative zero and everything else go through serde.
fn float(out: &mut Vec<u8>, q: f64) {
    if q.fract() == 0.0 && q.abs() < 1e15 && !(q == 0.0 && q.is_sign_negative()) {
        int(out, q as i64);
        out.extend_from_slice(b".0");
    } else {
        let _ = serde_json::to_writer(&mut *out, &q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(rng: &mut fastrand::Rng) -> String {
        const PIECES: [&str; 16] = [
            "a", "Coffee", " ", "\"", "\\", "\n", "\t", "\u{1}", "\u{1f}", "é", "日本", "😀",
            "\u{7f}", "/", "<", "\u{2028}",
        ];
        (0..rng.usize(0..6))
            .map(|_| PIECES[rng.usize(..PIECES.len())])
            .collect()
    }

    fn opt_text(rng: &mut fastrand::Rng) -> Option<String> {
        rng.bool().then(|| text(rng))
    }

    fn number(rng: &mut fastrand::Rng) -> i64 {
        match rng.u8(..6) {
            0 => i64::MIN,
            1 => i64::MAX,
            2 => 0,
            3 => -rng.i64(0..100_000),
            _ => rng.i64(0..1_000_000_000),
        }
    }

    fn opt_number(rng: &mut fastrand::Rng) -> Option<i64> {
        rng.bool().then(|| number(rng))
    }

    fn qty(rng: &mut fastrand::Rng) -> f64 {
        const ODD: [f64; 10] = [
            -0.0,
            0.0,
            0.5,
            -2.25,
            1e15,
            -1e15,
            1e16,
            999_999_999_999_999.0,
            f64::NAN,
            f64::INFINITY,
        ];
        match rng.u8(..4) {
            0 => ODD[rng.usize(..ODD.len())],
            1 => rng.f64() * 1000.0 - 500.0,
            _ => rng.i64(-50..1000) as f64,
        }
    }

    fn body(rng: &mut fastrand::Rng) -> TxBody {
        let kinds = [TxType::Sale, TxType::Refund, TxType::Cancellation];
        TxBody {
            kind: kinds[rng.usize(..3)],
            transaction_id: text(rng),
            register: text(rng),
            store_ref: opt_text(rng),
            business_day: opt_text(rng),
            time: text(rng),
            currency: text(rng),
            original_transaction_id: opt_text(rng),
            source: text(rng),
            channel: opt_text(rng),
            lines: (0..rng.usize(0..4))
                .map(|_| Line {
                    sku: opt_text(rng),
                    description: opt_text(rng),
                    qty: qty(rng),
                    unit_price_minor: opt_number(rng),
                    amount_minor: number(rng),
                    kind: opt_text(rng),
                    discounts: (0..rng.usize(0..3))
                        .map(|_| Discount {
                            code: opt_text(rng),
                            amount_minor: number(rng),
                        })
                        .collect(),
                })
                .collect(),
            totals: Totals {
                total_minor: number(rng),
                subtotal_minor: opt_number(rng),
                tax_minor: opt_number(rng),
                discount_minor: opt_number(rng),
                lines_sum_minor: number(rng),
                mismatch_minor: opt_number(rng),
            },
            tenders: (0..rng.usize(0..3))
                .map(|_| Tender {
                    kind: text(rng),
                    amount_minor: number(rng),
                    card_brand: opt_text(rng),
                })
                .collect(),
            customer: rng.bool().then(|| Pseudonyms {
                loyalty: opt_text(rng),
                email: opt_text(rng),
                phone: opt_text(rng),
            }),
            flags: (0..rng.usize(0..3)).map(|_| text(rng)).collect(),
        }
    }

    /// The hand-written body is serde's, byte for byte, on 20,000 random bodies: every
    /// optional field present and absent, text that needs escaping, extreme amounts, odd
    /// quantities.
    #[test]
    fn random_bodies_are_written_exactly_as_serde_writes_them() -> Result<(), serde_json::Error> {
        let mut rng = fastrand::Rng::with_seed(31);
        for _ in 0..20_000 {
            let b = body(&mut rng);
            let mut ours = Vec::new();
            write(&b, &mut ours);
            let theirs = serde_json::to_vec(&b)?;
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            );
        }
        Ok(())
    }
}
