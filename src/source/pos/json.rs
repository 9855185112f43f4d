//! The canonical JSON transaction (the wire shape, with money as `*_minor` integers or as
//! decimal amounts, and raw customer identifiers), one object, an array, or JSON lines.

use super::jsonutil::{sweep_sensitive, At};
use super::transaction::{Discount, Line, Parsed, Reject, StatedTotals, Tender, Tx, TxType};
use super::{money, timefmt, ParseOpts};
use crate::privacy::customer::RawCustomer;
use serde_json::Value;

/// A JSON document: one transaction object or an array of them.
pub fn parse_document(text: &str, o: &ParseOpts) -> Result<Parsed, Reject> {
    if let Some(txs) = super::json_fast::parse(text, o) {
        return Ok(txs.into_iter().map(Ok).collect());
    }
    parse_document_tree(text, o)
}

/// [`parse_document`] through a `serde_json::Value` tree: every document the fast path
/// leaves, and the reference it is tested against.
pub fn parse_document_tree(text: &str, o: &ParseOpts) -> Result<Parsed, Reject> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        Reject::new(
            format!("line {} column {}", e.line(), e.column()),
            format!("invalid JSON: {e}"),
        )
    })?;
    Ok(match &v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, t)| one(t, &format!("$[{i}]"), o))
            .collect(),
        _ => vec![one(&v, "$", o)],
    })
}

/// JSON lines: one transaction per non-empty line; a bad line is rejected with its number.
pub fn parse_lines(text: &str, o: &ParseOpts) -> Parsed {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(txs) =
            super::json_fast::parse(line, o).filter(|_| line.trim_start().starts_with('{'))
        {
            out.extend(txs.into_iter().map(Ok));
            continue;
        }
        let at = format!("line {}", i + 1);
        match serde_json::from_str::<Value>(line) {
            Ok(v) => out.push(one(&v, &format!("{at}: $"), o)),
            Err(e) => out.push(Err(Reject::new(
                format!("{at} column {}", e.column()),
                format!("invalid JSON: {e}"),
            ))),
        }
    }
    out
}

fn one(v: &Value, path: &str, o: &ParseOpts) -> Result<Tx, Reject> {
    sweep_sensitive(v, path)?;
    if !v.is_object() {
        return Err(Reject::new(path, "expected a transaction object"));
    }
    let a = At::root(v, path);
    let id = a.req_str("transaction_id")?;
    tx(a, o).map_err(|mut r| {
        r.transaction_id = Some(crate::privacy::card::scrub(&id).0);
        r
    })
}

fn tx(a: At<'_>, o: &ParseOpts) -> Result<Tx, Reject> {
    let currency = a
        .str("currency")?
        .unwrap_or_else(|| o.default_currency.clone());
    let exp = money::exponent(&currency)
        .ok_or_else(|| Reject::new(a.key_path("currency"), "not an ISO 4217 currency code"))?;
    let kind = match a.str("type")? {
        None => None,
        Some(t) => Some(TxType::parse(&t).ok_or_else(|| {
            Reject::new(a.key_path("type"), "expected sale, refund or cancellation")
        })?),
    };
    let time_ms = match a.str("time")? {
        None => None,
        Some(t) => {
            Some(timefmt::parse(&t, o.offset_s).map_err(|e| Reject::new(a.key_path("time"), e))?)
        }
    };
    let mut lines = Vec::new();
    for (i, l) in a.array("lines")?.iter().enumerate() {
        let p = format!("{}.lines[{i}]", a.path);
        lines.push(line(At::root(l, &p), exp)?);
    }
    let mut tenders = Vec::new();
    for (i, t) in a.array("tenders")?.iter().enumerate() {
        let p = format!("{}.tenders[{i}]", a.path);
        let t = At::root(t, &p);
        tenders.push(Tender {
            kind: t.req_str("type")?,
            amount_minor: t
                .money("amount", exp)?
                .ok_or_else(|| Reject::new(t.key_path("amount_minor"), "missing"))?,
            card_brand: t.str("card_brand")?,
        });
    }
    let mut order_discount = 0;
    for (i, d) in a.array("discounts")?.iter().enumerate() {
        let p = format!("{}.discounts[{i}]", a.path);
        let d = At::root(d, &p);
        order_discount += d
            .money("amount", exp)?
            .ok_or_else(|| Reject::new(d.key_path("amount_minor"), "missing"))?;
    }
    let totals_v = a.get("totals").unwrap_or(&Value::Null);
    let tp = a.key_path("totals");
    let t = At::root(totals_v, &tp);
    let totals = StatedTotals {
        total: t.money("total", exp)?,
        subtotal: t.money("subtotal", exp)?,
        tax: t.money("tax", exp)?,
        discount: t.money("discount", exp)?,
    };
    let surcharge = t.money("surcharge", exp)?.unwrap_or(0);
    let tax_included = totals_v
        .get("tax_included")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let cust_v = a.get("customer").unwrap_or(&Value::Null);
    let cp = a.key_path("customer");
    let c = At::root(cust_v, &cp);
    let customer = RawCustomer {
        loyalty_id: c.str("loyalty_id")?.or(c.str("loyalty")?),
        email: c.str("email")?,
        phone: c.str("phone")?,
    };
    Ok(Tx {
        transaction_id: a.req_str("transaction_id")?,
        register: a
            .str("register")?
            .unwrap_or_else(|| o.default_register.clone()),
        store_ref: a.str("store_ref")?,
        business_day: a.str("business_day")?,
        time_ms,
        currency,
        kind,
        original_transaction_id: a.str("original_transaction_id")?,
        source: a.str("source")?.unwrap_or_else(|| "json".into()),
        channel: a.str("channel")?,
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

fn line(l: At<'_>, exp: u32) -> Result<Line, Reject> {
    let qty = match l.get("qty") {
        None => 1.0,
        Some(q) => money::qty_from_json(q).map_err(|e| Reject::new(l.key_path("qty"), e))?,
    };
    let unit = l.money("unit_price", exp)?;
    let amount = match l.money("amount", exp)? {
        Some(a) => a,
        None => {
            let u = unit.ok_or_else(|| {
                Reject::new(l.key_path("amount_minor"), "missing (and no unit price)")
            })?;
            let qt = l.get("qty").map(|q| match q {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            money::qty_times(qt.as_deref().unwrap_or("1"), u)
                .map_err(|e| Reject::new(l.key_path("qty"), e))?
        }
    };
    let mut discounts = Vec::new();
    for (i, d) in l.array("discounts")?.iter().enumerate() {
        let p = format!("{}.discounts[{i}]", l.path);
        let d = At::root(d, &p);
        discounts.push(Discount {
            code: d.str("code")?,
            amount_minor: d
                .money("amount", exp)?
                .ok_or_else(|| Reject::new(d.key_path("amount_minor"), "missing"))?,
        });
    }
    Ok(Line {
        sku: l.str("sku")?,
        description: l.str("description")?,
        qty,
        unit_price_minor: unit,
        amount_minor: amount,
        kind: l.str("kind")?,
        discounts,
    })
}
