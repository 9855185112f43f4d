//! Shopify Admin REST `order` objects (money as decimal strings). Each order gives a sale; a
//! cancelled order also gives a cancellation, and each refund a refund, both negative and
//! linked to the order.

use super::jsonutil::{sweep_sensitive, At};
use super::transaction::{Discount, Line, Parsed, Reject, StatedTotals, Tender, Tx, TxType};
use super::{money, timefmt, ParseOpts};
use crate::privacy::customer::RawCustomer;
use serde_json::Value;

/// Parses `{"order": {...}}`, `{"orders": [...]}`, a bare order or an array of orders.
pub fn parse(text: &str, o: &ParseOpts) -> Result<Parsed, Reject> {
    let v: Value = serde_json::from_str(text).map_err(|e| {
        Reject::new(
            format!("line {} column {}", e.line(), e.column()),
            format!("invalid JSON: {e}"),
        )
    })?;
    parse_value(&v, o)
}

/// Parses an already decoded document (the poller's response body).
pub fn parse_value(v: &Value, o: &ParseOpts) -> Result<Parsed, Reject> {
    let mut out = Vec::new();
    if let Some(order) = v.get("order") {
        out.extend(order_txs(order, "$.order", o));
    } else if let Some(Value::Array(a)) = v.get("orders") {
        for (i, x) in a.iter().enumerate() {
            out.extend(order_txs(x, &format!("$.orders[{i}]"), o));
        }
    } else if let Value::Array(a) = v {
        for (i, x) in a.iter().enumerate() {
            out.extend(order_txs(x, &format!("$[{i}]"), o));
        }
    } else if v.get("line_items").is_some() {
        out.extend(order_txs(v, "$", o));
    } else {
        return Err(Reject::new("$", "no `order` or `orders` in the document"));
    }
    Ok(out)
}

fn order_txs(v: &Value, path: &str, o: &ParseOpts) -> Vec<Result<Tx, Reject>> {
    let a = At::root(v, path);
    let id = match a.req_str("id") {
        Ok(id) => id,
        Err(e) => return vec![Err(e)],
    };
    let tag = |mut r: Reject| {
        r.transaction_id = Some(crate::privacy::card::scrub(&id).0);
        r
    };
    let sale = match sale(a, &id, o) {
        Ok(t) => t,
        Err(e) => return vec![Err(tag(e))],
    };
    let mut out = Vec::new();
    if a.get("cancelled_at").is_some() {
        let mut c = sale.clone();
        c.transaction_id = format!("{id}:cancel");
        c.kind = Some(TxType::Cancellation);
        c.original_transaction_id = Some(id.clone());
        if let Ok(Some(t)) = a.str("cancelled_at") {
            c.time_ms = timefmt::parse(&t, o.offset_s).ok().or(c.time_ms);
        }
        out.push(Ok(c));
    }
    match refunds(a, &id, &sale, o) {
        Ok(r) => out.extend(r.into_iter().map(Ok)),
        Err(e) => out.push(Err(tag(e))),
    }
    out.insert(0, Ok(sale));
    out
}

fn dec(a: At<'_>, k: &str, exp: u32) -> Result<Option<i64>, Reject> {
    match a.get(k) {
        None => Ok(None),
        Some(v) => money::from_json_decimal(v, exp)
            .map(Some)
            .map_err(|e| Reject::new(a.key_path(k), e)),
    }
}

fn sale(a: At<'_>, id: &str, o: &ParseOpts) -> Result<Tx, Reject> {
    sweep_sensitive(a.v, a.path)?;
    let currency = a
        .str("currency")?
        .unwrap_or_else(|| o.default_currency.clone());
    let exp = money::exponent(&currency)
        .ok_or_else(|| Reject::new(a.key_path("currency"), "not an ISO 4217 currency code"))?;
    let mut lines = Vec::new();
    let mut line_disc = 0;
    for (i, l) in a.array("line_items")?.iter().enumerate() {
        let p = format!("{}.line_items[{i}]", a.path);
        let line = line(At::root(l, &p), exp)?;
        for d in &line.discounts {
            line_disc = money::add(line_disc, d.amount_minor).map_err(|e| Reject::new(&p, e))?;
        }
        lines.push(line);
    }
    let total_discounts = dec(a, "total_discounts", exp)?;
    let mut shipping = 0;
    for (i, s) in a.array("shipping_lines")?.iter().enumerate() {
        let p = format!("{}.shipping_lines[{i}]", a.path);
        let price = dec(At::root(s, &p), "price", exp)?.unwrap_or(0);
        shipping = money::add(shipping, price).map_err(|e| Reject::new(&p, e))?;
    }
    let total = dec(a, "total_price", exp)?;
    let brand = a
        .get("payment_details")
        .and_then(|p| p.get("credit_card_company"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let gateway = a
        .str("gateway")?
        .or_else(|| {
            a.get("payment_gateway_names")
                .and_then(|g| g.get(0))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into());
    let time = a.str("processed_at")?.or(a.str("created_at")?);
    let time_ms = match time {
        None => None,
        Some(t) => Some(
            timefmt::parse(&t, o.offset_s).map_err(|e| Reject::new(a.key_path("created_at"), e))?,
        ),
    };
    let cust = a.get("customer");
    let billing = a.get("billing_address");
    let pick = |k: &str| -> Option<String> {
        a.get(k)
            .or_else(|| cust.and_then(|c| c.get(k)))
            .or_else(|| billing.and_then(|c| c.get(k)))
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
    };
    let source_name = a.str("source_name")?;
    Ok(Tx {
        transaction_id: id.to_string(),
        register: a
            .str("device_id")?
            .or(a.str("location_id")?)
            .unwrap_or_else(|| o.default_register.clone()),
        time_ms,
        currency,
        kind: Some(TxType::Sale),
        source: "shopify".into(),
        channel: source_name,
        lines,
        order_discount: total_discounts
            .map(|d| d.saturating_sub(line_disc).max(0))
            .unwrap_or(0),
        surcharge: shipping,
        tax_included: a
            .get("taxes_included")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        totals: StatedTotals {
            total,
            subtotal: dec(a, "subtotal_price", exp)?,
            tax: dec(a, "total_tax", exp)?,
            discount: total_discounts,
        },
        tenders: total
            .map(|t| {
                vec![Tender {
                    kind: gateway,
                    amount_minor: t,
                    card_brand: brand,
                }]
            })
            .unwrap_or_default(),
        customer: RawCustomer {
            loyalty_id: None,
            email: pick("email"),
            phone: pick("phone"),
        },
        ..Tx::default()
    })
}

fn line(l: At<'_>, exp: u32) -> Result<Line, Reject> {
    let qty_v = l.get("quantity").cloned().unwrap_or(Value::from(1));
    let qty = money::qty_from_json(&qty_v).map_err(|e| Reject::new(l.key_path("quantity"), e))?;
    let qty_text = match &qty_v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let price = dec(l, "price", exp)?.ok_or_else(|| Reject::new(l.key_path("price"), "missing"))?;
    let amount =
        money::qty_times(&qty_text, price).map_err(|e| Reject::new(l.key_path("quantity"), e))?;
    let mut discounts = Vec::new();
    let mut alloc = 0;
    for (i, d) in l.array("discount_allocations")?.iter().enumerate() {
        let p = format!("{}.discount_allocations[{i}]", l.path);
        let a = dec(At::root(d, &p), "amount", exp)?.unwrap_or(0);
        alloc = money::add(alloc, a).map_err(|e| Reject::new(&p, e))?;
    }
    let disc = if alloc != 0 {
        Some(alloc)
    } else {
        dec(l, "total_discount", exp)?
    };
    if let Some(d) = disc.filter(|d| *d != 0) {
        discounts.push(Discount {
            code: None,
            amount_minor: d,
        });
    }
    Ok(Line {
        sku: l.str("sku")?.filter(|s| !s.is_empty()),
        description: l.str("name")?.or(l.str("title")?),
        qty,
        unit_price_minor: Some(price),
        amount_minor: amount,
        kind: Some("sale".into()),
        discounts,
    })
}

fn refunds(a: At<'_>, id: &str, sale: &Tx, o: &ParseOpts) -> Result<Vec<Tx>, Reject> {
    let exp = money::exponent(&sale.currency).unwrap_or(2);
    let mut out = Vec::new();
    for (r, rf) in a.array("refunds")?.iter().enumerate() {
        let rp = format!("{}.refunds[{r}]", a.path);
        let ra = At::root(rf, &rp);
        let rid = ra.req_str("id")?;
        let mut lines = Vec::new();
        for (i, rl) in ra.array("refund_line_items")?.iter().enumerate() {
            let p = format!("{rp}.refund_line_items[{i}]");
            let rl = At::root(rl, &p);
            let li = rl.get("line_item").cloned().unwrap_or(Value::Null);
            let lp = rl.key_path("line_item");
            let mut l = if li.is_object() {
                line(At::root(&li, &lp), exp)?
            } else {
                Line::default()
            };
            if let Some(q) = rl.get("quantity") {
                l.qty =
                    money::qty_from_json(q).map_err(|e| Reject::new(rl.key_path("quantity"), e))?;
            }
            if let Some(s) = dec(rl, "subtotal", exp)? {
                l.amount_minor = s;
                l.discounts.clear();
            }
            l.kind = Some("return".into());
            lines.push(l);
        }
        let mut tenders = Vec::new();
        for (i, t) in ra.array("transactions")?.iter().enumerate() {
            let p = format!("{rp}.transactions[{i}]");
            let t = At::root(t, &p);
            if t.str("status")?.as_deref().is_some_and(|s| s != "success") {
                continue;
            }
            tenders.push(Tender {
                kind: t.str("gateway")?.unwrap_or_else(|| "unknown".into()),
                amount_minor: dec(t, "amount", exp)?.unwrap_or(0),
                card_brand: None,
            });
        }
        let mut paid: i64 = 0;
        for t in &tenders {
            paid = money::add(paid, t.amount_minor).map_err(|e| Reject::new(&rp, e))?;
        }
        let time_ms = match ra.str("created_at")? {
            Some(t) => timefmt::parse(&t, o.offset_s).ok(),
            None => None,
        };
        out.push(Tx {
            transaction_id: format!("{id}:refund:{rid}"),
            register: sale.register.clone(),
            time_ms: time_ms.or(sale.time_ms),
            currency: sale.currency.clone(),
            kind: Some(TxType::Refund),
            original_transaction_id: Some(id.to_string()),
            source: "shopify".into(),
            channel: sale.channel.clone(),
            lines,
            tax_included: true,
            totals: StatedTotals {
                total: (!tenders.is_empty()).then_some(paid),
                ..StatedTotals::default()
            },
            tenders,
            ..Tx::default()
        });
    }
    Ok(out)
}
