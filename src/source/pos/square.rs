//! Square Orders and Payments API JSON (money objects in minor units, quantities as strings).
//! Accepts a `{"order"}` / `{"orders"}` (SearchOrders) / `{"payment"}` / `{"payments"}`
//! response, a bare order, or a collection of named responses holding those.

use super::jsonutil::{sweep_sensitive, At};
use super::transaction::{Discount, Line, Parsed, Reject, StatedTotals, Tender, Tx, TxType};
use super::{money, timefmt, ParseOpts};
use crate::privacy::customer::RawCustomer;
use serde_json::Value;

/// Parsed transactions plus objects skipped on purpose (calculations without id, failed
/// payments, open orders are kept and flagged).
pub struct SquareOut {
    /// Each order or payment, parsed or refused.
    pub items: Parsed,
    /// Objects left out: orders and payments without an id, and FAILED or CANCELED payments.
    pub skipped: usize,
}

/// Parses a Square API document.
pub fn parse(text: &str, o: &ParseOpts) -> Result<SquareOut, Reject> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        Reject::new(
            format!("line {} column {}", e.line(), e.column()),
            format!("invalid JSON: {e}"),
        )
    })?;
    let mut out = SquareOut {
        items: Vec::new(),
        skipped: 0,
    };
    collect(&v, "$", o, &mut out, 0);
    Ok(out)
}

/// Parses an already decoded value (the poller's response body).
pub fn parse_value(v: &Value, o: &ParseOpts) -> SquareOut {
    let mut out = SquareOut {
        items: Vec::new(),
        skipped: 0,
    };
    collect(v, "$", o, &mut out, 0);
    out
}

fn collect(v: &Value, path: &str, o: &ParseOpts, out: &mut SquareOut, depth: usize) {
    let Some(m) = v.as_object() else { return };
    if m.contains_key("line_items") || m.contains_key("returns") && m.contains_key("location_id") {
        push(out, order(v, path, o));
        return;
    }
    for (k, x) in m {
        let p = format!("{path}.{k}");
        match (k.as_str(), x) {
            ("order", Value::Object(_)) => push(out, order(x, &p, o)),
            ("payment", Value::Object(_)) => push(out, payment(x, &p, o)),
            ("orders", Value::Array(a)) => {
                for (i, y) in a.iter().enumerate() {
                    push(out, order(y, &format!("{p}[{i}]"), o));
                }
            }
            ("payments", Value::Array(a)) => {
                for (i, y) in a.iter().enumerate() {
                    push(out, payment(y, &format!("{p}[{i}]"), o));
                }
            }
            (_, Value::Object(_)) if depth < 3 => collect(x, &p, o, out, depth + 1),
            _ => {}
        }
    }
}

fn push(out: &mut SquareOut, r: Option<Result<Tx, Reject>>) {
    match r {
        Some(x) => out.items.push(x),
        None => out.skipped += 1,
    }
}

fn currency_of(a: At<'_>, keys: &[&str], o: &ParseOpts) -> String {
    keys.iter()
        .find_map(|k| {
            a.get(k)
                .and_then(|m| m.get("currency"))
                .and_then(Value::as_str)
        })
        .map(str::to_string)
        .unwrap_or_else(|| o.default_currency.clone())
}

fn minor(a: At<'_>, k: &str) -> Result<Option<i64>, Reject> {
    Ok(a.money_obj(k)?.map(|(v, _)| v))
}

fn time_of(a: At<'_>, o: &ParseOpts) -> Result<Option<i64>, Reject> {
    for k in ["closed_at", "created_at"] {
        if let Some(t) = a.str(k)? {
            return timefmt::parse(&t, o.offset_s)
                .map(Some)
                .map_err(|e| Reject::new(a.key_path(k), e));
        }
    }
    Ok(None)
}

/// `None` when the object is not a transaction (an order calculation has no id).
fn order(v: &Value, path: &str, o: &ParseOpts) -> Option<Result<Tx, Reject>> {
    let a = At::root(v, path);
    let id = a.str("id").ok().flatten()?;
    Some(order_tx(a, &id, o).map_err(|mut r| {
        r.transaction_id = Some(crate::privacy::card::scrub(&id).0);
        r
    }))
}

fn order_tx(a: At<'_>, id: &str, o: &ParseOpts) -> Result<Tx, Reject> {
    sweep_sensitive(a.v, a.path)?;
    let currency = currency_of(a, &["total_money", "net_amounts"], o);
    let state = a.str("state")?.unwrap_or_default();
    let mut flags = Vec::new();
    let mut kind = TxType::Sale;
    let mut original = None;
    if state == "CANCELED" {
        kind = TxType::Cancellation;
    } else if state != "COMPLETED" && !state.is_empty() {
        flags.push(format!("state_{}", state.to_ascii_lowercase()));
    }
    let mut lines = Vec::new();
    for (i, l) in a.array("line_items")?.iter().enumerate() {
        let p = format!("{}.line_items[{i}]", a.path);
        lines.push(line(At::root(l, &p), false)?);
    }
    for (r, ret) in a.array("returns")?.iter().enumerate() {
        let rp = format!("{}.returns[{r}]", a.path);
        let ra = At::root(ret, &rp);
        if original.is_none() {
            original = ra.str("source_order_id")?;
        }
        for (i, l) in ra.array("return_line_items")?.iter().enumerate() {
            let p = format!("{rp}.return_line_items[{i}]");
            lines.push(line(At::root(l, &p), true)?);
        }
    }
    if !lines.is_empty()
        && lines.iter().all(|l| l.kind.as_deref() == Some("return"))
        && kind == TxType::Sale
    {
        kind = TxType::Refund;
    }
    let mut tenders = Vec::new();
    for (i, t) in a.array("tenders")?.iter().enumerate() {
        let p = format!("{}.tenders[{i}]", a.path);
        let t = At::root(t, &p);
        tenders.push(Tender {
            kind: t.str("type")?.unwrap_or_else(|| "OTHER".into()),
            amount_minor: minor(t, "amount_money")?.unwrap_or(0),
            card_brand: t
                .get("card_details")
                .and_then(|c| c.get("card"))
                .and_then(|c| c.get("card_brand"))
                .and_then(Value::as_str)
                .map(str::to_string),
        });
    }
    let tax_included = a
        .array("taxes")?
        .iter()
        .any(|t| t.get("type").and_then(Value::as_str) == Some("INCLUSIVE"));
    let surcharge = minor(a, "total_service_charge_money")?.unwrap_or(0)
        + minor(a, "total_tip_money")?.unwrap_or(0);
    let mut customer = RawCustomer::default();
    for f in a.array("fulfillments")? {
        for d in ["pickup_details", "shipment_details", "delivery_details"] {
            if let Some(r) = f.get(d).and_then(|x| x.get("recipient")) {
                customer.email = customer.email.or(r
                    .get("email_address")
                    .and_then(Value::as_str)
                    .map(str::to_string));
                customer.phone = customer.phone.or(r
                    .get("phone_number")
                    .and_then(Value::as_str)
                    .map(str::to_string));
            }
        }
    }
    Ok(Tx {
        transaction_id: id.to_string(),
        register: a
            .str("location_id")?
            .unwrap_or_else(|| o.default_register.clone()),
        time_ms: time_of(a, o)?,
        currency,
        kind: Some(kind),
        original_transaction_id: original,
        source: "square".into(),
        channel: a
            .get("source")
            .and_then(|s| s.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string),
        lines,
        surcharge,
        tax_included,
        totals: StatedTotals {
            total: minor(a, "total_money")?,
            subtotal: None,
            tax: minor(a, "total_tax_money")?,
            discount: minor(a, "total_discount_money")?,
        },
        tenders,
        customer,
        flags,
        ..Tx::default()
    })
}

fn line(l: At<'_>, ret: bool) -> Result<Line, Reject> {
    let qty_text = l.str("quantity")?.unwrap_or_else(|| "1".into());
    let qty = money::parse_qty(&qty_text).map_err(|e| Reject::new(l.key_path("quantity"), e))?;
    let unit = minor(l, "base_price_money")?;
    let amount = match minor(l, "gross_sales_money")?.or(minor(l, "gross_return_money")?) {
        Some(g) => g,
        None => match minor(l, "variation_total_price_money")? {
            Some(v) => v,
            None => {
                let u =
                    unit.ok_or_else(|| Reject::new(l.key_path("base_price_money"), "missing"))?;
                money::qty_times(&qty_text, u)
                    .map_err(|e| Reject::new(l.key_path("quantity"), e))?
            }
        },
    };
    let mut discounts = Vec::new();
    if let Some(d) = minor(l, "total_discount_money")?.filter(|d| *d != 0) {
        discounts.push(Discount {
            code: None,
            amount_minor: d,
        });
    }
    let name = l.str("name")?;
    let variation = l.str("variation_name")?;
    Ok(Line {
        sku: l.str("catalog_object_id")?,
        description: match (name, variation) {
            (Some(n), Some(v)) => Some(format!("{n} ({v})")),
            (n, _) => n,
        },
        qty,
        unit_price_minor: unit,
        amount_minor: amount,
        kind: Some(if ret { "return" } else { "sale" }.into()),
        discounts,
    })
}

fn payment(v: &Value, path: &str, o: &ParseOpts) -> Option<Result<Tx, Reject>> {
    let a = At::root(v, path);
    let id = a.str("id").ok().flatten()?;
    let status = a.str("status").ok().flatten().unwrap_or_default();
    if matches!(status.as_str(), "FAILED" | "CANCELED") {
        return None;
    }
    let r = (|| {
        sweep_sensitive(a.v, a.path)?;
        let currency = currency_of(a, &["total_money", "amount_money"], o);
        let total = minor(a, "total_money")?.or(minor(a, "amount_money")?);
        let brand = a
            .get("card_details")
            .and_then(|c| c.get("card"))
            .and_then(|c| c.get("card_brand"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut flags = vec!["payment_only".to_string()];
        if status != "COMPLETED" && !status.is_empty() {
            flags.push(format!("state_{}", status.to_ascii_lowercase()));
        }
        Ok(Tx {
            transaction_id: id.clone(),
            register: a
                .str("location_id")?
                .unwrap_or_else(|| o.default_register.clone()),
            time_ms: time_of(a, o)?,
            currency,
            kind: Some(TxType::Sale),
            source: "square".into(),
            tax_included: true,
            totals: StatedTotals {
                total,
                ..StatedTotals::default()
            },
            surcharge: total.unwrap_or(0),
            tenders: vec![Tender {
                kind: a.str("source_type")?.unwrap_or_else(|| "OTHER".into()),
                amount_minor: total.unwrap_or(0),
                card_brand: brand,
            }],
            customer: RawCustomer {
                email: a.str("buyer_email_address")?,
                ..RawCustomer::default()
            },
            flags,
            ..Tx::default()
        })
    })();
    Some(r.map_err(|mut e: Reject| {
        e.transaction_id = Some(crate::privacy::card::scrub(&id).0);
        e
    }))
}
