//! The canonical transaction between a parser and the wire: every input format is parsed into
//! a [`Tx`], and [`crate::source::pos::normalize`] turns a `Tx` into one `pos.transaction` event.

use crate::privacy::customer::RawCustomer;

/// What a transaction is; refunds and cancellations carry negative amounts on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TxType {
    /// A sale; also what a source that states no type gets.
    Sale,
    /// Goods given back (`refund`, also read from `return`).
    Refund,
    /// A voided or cancelled transaction (read from `cancellation`, `cancel` or `void`).
    Cancellation,
}

impl TxType {
    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<TxType> {
        let s = s.trim();
        let is = |w: &str| s.eq_ignore_ascii_case(w);
        if is("sale") {
            Some(TxType::Sale)
        } else if is("refund") || is("return") {
            Some(TxType::Refund)
        } else if is("cancellation") || is("cancel") || is("void") {
            Some(TxType::Cancellation)
        } else {
            None
        }
    }

    /// Whether amounts must be negative.
    pub fn negative(self) -> bool {
        !matches!(self, TxType::Sale)
    }
}

/// A discount on a line or on the transaction; `amount_minor` is the reduction (positive on a
/// sale).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Discount {
    /// The promotion or coupon code, when given; free text, scrubbed like descriptions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The reduction in minor units; on the wire negative on a returned line and in refunds and
    /// cancellations.
    pub amount_minor: i64,
}

/// One sold or returned item.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Line {
    /// The item code (SKU, barcode), kept as sent; one holding a card number refuses the
    /// transaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// The item's name; free text: card numbers, e-mail addresses and phone numbers are cut out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Units, possibly fractional (weighed goods); 1 when the source omits it; on the wire
    /// negative on returned lines and in refunds and cancellations.
    pub qty: f64,
    /// Price of one unit in minor units as stated (its sign is never changed); None when the
    /// source gives only the line amount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_price_minor: Option<i64>,
    /// Extended amount before line discounts (qty × unit price as the source states it).
    pub amount_minor: i64,
    /// `sale` or `return` when the source says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Reductions on this line; the lines sum subtracts them from `amount_minor`.
    pub discounts: Vec<Discount>,
}

/// How a transaction was paid. Only the tender type and at most the card brand are kept.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Tender {
    /// The tender as the source names it (`cash`, `card`, POSLog `TenderType`); free text.
    #[serde(rename = "type")]
    pub kind: String,
    /// Amount paid with it in minor units (POSLog: change deducted); negative in refunds and
    /// cancellations on the wire.
    pub amount_minor: i64,
    /// The card brand, the only card detail kept; None when the source gives none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card_brand: Option<String>,
}

/// Totals exactly as the source states them (never recomputed).
#[derive(Debug, Clone, Default)]
pub struct StatedTotals {
    /// Grand total in minor units; None: the total the lines give is published (flag
    /// `total_computed`).
    pub total: Option<i64>,
    /// Net amount before tax (POSLog `TransactionNetAmount`); published, not checked.
    pub subtotal: Option<i64>,
    /// Tax (POSLog: the sum of `Tax` lines without `TransactionTaxAmount`); added to the
    /// lines in the check unless `tax_included`.
    pub tax: Option<i64>,
    /// Transaction discount as stated, published as `discount_minor`; the check uses
    /// `order_discount` instead.
    pub discount: Option<i64>,
}

/// A parsed transaction before scrubbing and pseudonymization. Raw customer identifiers live
/// here, in RAM only.
#[derive(Debug, Clone, Default)]
pub struct Tx {
    /// The source's id (POSLog `SequenceNumber`), kept as sent; part of the idempotency key.
    pub transaction_id: String,
    /// The till (POSLog `WorkstationID`), or `default_register`; part of the idempotency key.
    pub register: String,
    /// The source's store id (POSLog `RetailStoreID`), when it states one.
    pub store_ref: Option<String>,
    /// The till's trading day as sent; None: the key takes the local date of `time_ms` at
    /// `naive_time_offset` (empty without a time).
    pub business_day: Option<String>,
    /// Unix ms; `None` means "now" (the source did not say).
    pub time_ms: Option<i64>,
    /// ISO 4217 code (`default_currency` when the source states none); refused otherwise.
    pub currency: String,
    /// Sale, refund or cancellation; None (the source did not say) is a sale.
    pub kind: Option<TxType>,
    /// The transaction a refund or cancellation reverses, when the source links it.
    pub original_transaction_id: Option<String>,
    /// Input format (`poslog`, `csv`, `json`, `square`, `shopify`).
    pub source: String,
    /// Sales channel as the source names it (Shopify `source_name`), when given; free text.
    pub channel: Option<String>,
    /// The items in input order; normalizing makes returned lines, and all lines of a refund or
    /// cancellation, negative.
    pub lines: Vec<Line>,
    /// Transaction-level discounts (not already inside the lines).
    pub order_discount: i64,
    /// Amounts in the total that are not lines: service charges, tips, shipping, or a
    /// payment without itemization.
    pub surcharge: i64,
    /// Tax is included in line prices (VAT style): not added when checking the total.
    pub tax_included: bool,
    /// Totals as the source states them: checked against the lines, never recomputed.
    pub totals: StatedTotals,
    /// The payments as the source lists them (possibly none).
    pub tenders: Vec<Tender>,
    /// Raw loyalty id, e-mail and phone: sealed, keyed or dropped when normalized.
    pub customer: RawCustomer,
    /// Flags the parser sets (`loyalty_reward`, `payment_only`, `state_<state>`); normalizing
    /// adds its own.
    pub flags: Vec<String>,
}

/// Why an input record was refused, and where.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Reject {
    /// Line number, JSON path or XML path of the offending field.
    pub at: String,
    /// What is wrong; values that look like card numbers or personal data are redacted.
    pub reason: String,
    /// The transaction id when it was already known (scrubbed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    /// True for card authentication data (CVV, track, PIN block): the whole input is refused.
    #[serde(skip)]
    pub sensitive: bool,
}

impl Reject {
    /// A plain parse/validation failure. Card numbers echoed from the input are cut out here,
    /// since rejections go to logs, HTTP answers and `.error` files.
    pub fn new(at: impl Into<String>, reason: impl Into<String>) -> Reject {
        Reject {
            at: crate::privacy::pii::redact_message(&at.into()),
            reason: crate::privacy::pii::redact_message(&reason.into()),
            transaction_id: None,
            sensitive: false,
        }
    }

    /// Sensitive authentication data found.
    pub fn sensitive(at: impl Into<String>, reason: impl Into<String>) -> Reject {
        Reject {
            sensitive: true,
            ..Reject::new(at, reason)
        }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.reason)
    }
}

/// A parser's output: transactions in input order, each parsed or refused on its own.
pub type Parsed = Vec<Result<Tx, Reject>>;

#[cfg(test)]
mod tests {
    #[test]
    fn rejections_do_not_echo_personal_values() {
        let r = super::Reject::new("$.time", "`John Smith` is not a date-time");
        assert_eq!(r.reason, "`[redacted]` is not a date-time");
        let r = super::Reject::new("$.time", "`alice@example.com` is not a date-time");
        assert_eq!(r.reason, "`[redacted]` is not a date-time");
        let r = super::Reject::new("x", "`+49 30 1234 5678` is not a quantity");
        assert!(!r.reason.contains("1234"));
        let r = super::Reject::new("x", "`1.x` is not a decimal amount");
        assert_eq!(r.reason, "`1.x` is not a decimal amount");
        let r = super::Reject::new(
            "line 2: column `UnitPrice`",
            "`abc` is not a decimal amount",
        );
        assert_eq!(r.at, "line 2: column `UnitPrice`");
    }
}
