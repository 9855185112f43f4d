//! One [`Tx`] in, one `pos.transaction` event out: card numbers cut from every string,
//! customer identifiers pseudonymized, refunds made negative, the source's totals kept as
//! stated and any mismatch with the lines flagged.

use super::card;
use super::customer::{JoinKey, Pseudonyms};
use super::model::{Discount, Line, Reject, Tender, Tx, TxType};
use crate::event::{rfc3339_ms, Event};
use serde::Serialize;

/// The event body exactly as `schemas/pos.transaction.schema.json` describes it.
#[derive(Debug, Serialize)]
pub struct TxBody {
    #[serde(rename = "type")]
    pub kind: TxType,
    pub transaction_id: String,
    pub register: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_day: Option<String>,
    pub time: String,
    pub currency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_transaction_id: Option<String>,
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    pub lines: Vec<Line>,
    pub totals: Totals,
    pub tenders: Vec<Tender>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<Pseudonyms>,
    pub flags: Vec<String>,
}

/// Totals on the wire: the stated ones plus the check against the lines.
#[derive(Debug, Serialize)]
pub struct Totals {
    pub total_minor: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subtotal_minor: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_minor: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discount_minor: Option<i64>,
    /// Σ(line amount − line discounts).
    pub lines_sum_minor: i64,
    /// stated total − (lines sum + tax unless included − transaction discounts + surcharges),
    /// when not 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mismatch_minor: Option<i64>,
}

/// A normalized transaction ready for the spool, with its idempotency key.
#[derive(Debug)]
pub struct Normalized {
    pub event: Event,
    /// `register ␟ business day ␟ transaction id` (scrubbed): the idempotency key.
    pub key: String,
    pub body_lines: usize,
    pub currency: String,
    pub total_minor: i64,
}

struct Scrubber {
    hit: bool,
}

impl Scrubber {
    fn s(&mut self, v: String) -> String {
        let (out, hit) = card::scrub(&v);
        self.hit |= hit;
        out
    }
    fn o(&mut self, v: Option<String>) -> Option<String> {
        v.map(|x| self.s(x))
    }
}

fn neg(v: i64) -> i64 {
    -v.abs()
}

/// Normalizes one transaction. `now_ms` stands in for a missing time.
pub fn normalize(tx: Tx, key: &JoinKey, now_ms: i64) -> Result<Normalized, Reject> {
    let mut sc = Scrubber { hit: false };
    let transaction_id = sc.s(tx.transaction_id.trim().to_string());
    let reject = |at: &str, why: String| Reject {
        transaction_id: Some(transaction_id.clone()),
        ..Reject::new(at, why)
    };
    if transaction_id.is_empty() {
        return Err(Reject::new("transaction_id", "missing transaction id"));
    }
    if super::money::exponent(&tx.currency).is_none() {
        return Err(reject(
            "currency",
            format!("`{}` is not an ISO 4217 currency code", tx.currency),
        ));
    }
    let kind = tx.kind.unwrap_or(TxType::Sale);
    let mut flags = tx.flags;
    let mut lines: Vec<Line> = Vec::with_capacity(tx.lines.len());
    for l in tx.lines {
        let ret = kind.negative() || l.kind.as_deref() == Some("return");
        let mut line = Line {
            sku: sc.o(l.sku),
            description: sc.o(l.description.map(|d| d.trim().to_string())),
            qty: if ret { -l.qty.abs() } else { l.qty },
            unit_price_minor: l.unit_price_minor,
            amount_minor: if ret {
                neg(l.amount_minor)
            } else {
                l.amount_minor
            },
            kind: sc.o(l.kind),
            discounts: Vec::with_capacity(l.discounts.len()),
        };
        for d in l.discounts {
            line.discounts.push(Discount {
                code: sc.o(d.code),
                amount_minor: if ret {
                    neg(d.amount_minor)
                } else {
                    d.amount_minor
                },
            });
        }
        if line.qty == 0.0 {
            line.qty = 0.0; // no negative zero on the wire
        }
        lines.push(line);
    }
    let lines_sum: i64 = lines
        .iter()
        .map(|l| l.amount_minor - l.discounts.iter().map(|d| d.amount_minor).sum::<i64>())
        .sum();
    let sign = |v: i64| if kind.negative() { neg(v) } else { v };
    let order_discount = sign(tx.order_discount);
    let tax = tx.totals.tax.map(sign);
    let expected = lines_sum + if tx.tax_included { 0 } else { tax.unwrap_or(0) } - order_discount
        + sign(tx.surcharge);
    let total = match tx.totals.total {
        Some(t) => sign(t),
        None => {
            flags.push("total_computed".into());
            expected
        }
    };
    let mismatch = total - expected;
    if mismatch != 0 {
        flags.push("total_mismatch".into());
    }
    let tenders: Vec<Tender> = tx
        .tenders
        .into_iter()
        .map(|t| Tender {
            kind: sc.s(t.kind),
            amount_minor: sign(t.amount_minor),
            card_brand: sc.o(t.card_brand),
        })
        .collect();
    let register = sc.s(tx.register.trim().to_string());
    let business_day = sc.o(tx.business_day);
    let body = TxBody {
        kind,
        transaction_id: transaction_id.clone(),
        register: register.clone(),
        store_ref: sc.o(tx.store_ref),
        business_day: business_day.clone(),
        time: rfc3339_ms(tx.time_ms.unwrap_or(now_ms)),
        currency: tx.currency.clone(),
        original_transaction_id: sc.o(tx.original_transaction_id),
        source: sc.s(tx.source),
        channel: sc.o(tx.channel),
        totals: Totals {
            total_minor: total,
            subtotal_minor: tx.totals.subtotal.map(sign),
            tax_minor: tax,
            discount_minor: tx.totals.discount,
            lines_sum_minor: lines_sum,
            mismatch_minor: (mismatch != 0).then_some(mismatch),
        },
        lines,
        tenders,
        customer: key.pseudonyms(&tx.customer),
        flags: Vec::new(),
    };
    if tx.time_ms.is_none() {
        flags.push("time_missing".into());
    }
    if sc.hit {
        flags.push("card_number_removed".into());
    }
    let flags: Vec<String> = flags.into_iter().map(|f| card::scrub(&f).0).collect();
    let body = TxBody { flags, ..body };
    let body_lines = body.lines.len();
    let ts = tx.time_ms.unwrap_or(now_ms);
    Ok(Normalized {
        key: format!(
            "{register}\u{1f}{}\u{1f}{transaction_id}",
            business_day.as_deref().unwrap_or("")
        ),
        body_lines,
        currency: tx.currency,
        total_minor: total,
        event: Event::new("pos.transaction", ts, &body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::pos::customer::RawCustomer;
    use crate::source::pos::model::StatedTotals;

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
        let n = normalize(sale(), &JoinKey::default(), 0).map_err(|e| e.to_string());
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
        let n = normalize(t, &JoinKey::default(), 0).unwrap_or_else(|e| panic!("{e}"));
        let b = &n.event.body();
        assert_eq!(b["totals"]["total_minor"], -250);
        assert_eq!(b["totals"]["lines_sum_minor"], -300);
        assert_eq!(b["totals"]["mismatch_minor"], 50);
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
        let n = normalize(t.clone(), &JoinKey::default(), 0).unwrap_or_else(|e| panic!("{e}"));
        assert!(n.event.body().get("customer").is_none());
        let k = JoinKey::from_bytes(b"0123456789abcdef", "");
        let n = normalize(t, &k, 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            n.event.body()["customer"]["email"].as_str().map(str::len),
            Some(64)
        );
    }

    #[test]
    fn bad_currency_rejected() {
        let mut t = sale();
        t.currency = "euro".into();
        assert!(normalize(t, &JoinKey::default(), 0).is_err());
    }
}
