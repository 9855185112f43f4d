//! NRF-ARTS IXRetail POSLog XML: `RetailTransaction`s become transactions (sale, return,
//! voided), everything else (`ControlTransaction`, tender control…) is skipped. Elements are
//! matched by local name so vendor namespaces (NCR `acs:`) and prefixes do not matter.

use super::transaction::{Discount, Line, Parsed, Reject, StatedTotals, Tender, Tx, TxType};
use super::{money, timefmt, ParseOpts};
use crate::privacy::card;
use crate::privacy::customer::RawCustomer;
use roxmltree::{Document, Node};

/// Parsed transactions and the number of non-sale transactions skipped.
pub struct PosLog {
    /// Each `RetailTransaction`, parsed or refused, in document order.
    pub items: Parsed,
    /// `Transaction`s without a `RetailTransaction` (control, tender control…), left out.
    pub skipped: usize,
}

fn children<'a, 'i>(n: Node<'a, 'i>, name: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    n.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn text(n: Node<'_, '_>, name: &str) -> Option<String> {
    child(n, name)
        .and_then(|c| c.text())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn attr_true(n: Node<'_, '_>, name: &str) -> bool {
    n.attributes()
        .find(|a| a.name() == name)
        .is_some_and(|a| a.value().eq_ignore_ascii_case("true"))
}

fn attr(n: Node<'_, '_>, name: &str) -> Option<String> {
    n.attributes()
        .find(|a| a.name() == name)
        .map(|a| a.value().to_string())
}

/// `Transaction[2]/RetailTransaction/LineItem[4]/Sale/ExtendedAmount (line 1, column 2345)`.
fn where_(doc: &Document<'_>, n: Node<'_, '_>) -> String {
    let mut parts = Vec::new();
    let mut cur = Some(n);
    while let Some(c) = cur {
        if c.is_element() && c.parent().is_some_and(|p| p.is_element()) {
            let name = c.tag_name().name();
            let same: Vec<_> = c
                .parent()
                .map(|p| children(p, name).collect())
                .unwrap_or_default();
            if same.len() > 1 {
                let i = same.iter().position(|x| *x == c).unwrap_or(0) + 1;
                parts.push(format!("{name}[{i}]"));
            } else {
                parts.push(name.to_string());
            }
        }
        cur = c.parent();
    }
    parts.reverse();
    let pos = doc.text_pos_at(n.range().start);
    format!("{} (line {}, column {})", parts.join("/"), pos.row, pos.col)
}

/// Parses a POSLog document (root `POSLog`, or a single `Transaction`).
pub fn parse(text: &str, o: &ParseOpts) -> Result<PosLog, Reject> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        // A bound on the tree's memory (docs/pos.md, "Export files").
        nodes_limit: super::files::MAX_XML_NODES,
    };
    let doc = Document::parse_with_options(text, opts).map_err(|e| {
        let p = e.pos();
        Reject::new(
            format!("line {}, column {}", p.row, p.col),
            format!("invalid XML: {e}"),
        )
    })?;
    // Sensitive authentication data anywhere refuses the whole document.
    for n in doc.descendants().filter(|n| n.is_element()) {
        if card::is_forbidden_field(n.tag_name().name())
            || n.attributes().any(|a| card::is_forbidden_field(a.name()))
        {
            return Err(Reject::sensitive(
                where_(&doc, n),
                "card authentication data (CVV, track or PIN block) is never accepted",
            ));
        }
        if n.text().is_some_and(card::looks_like_track) {
            return Err(Reject::sensitive(
                where_(&doc, n),
                "magnetic-stripe track data is never accepted",
            ));
        }
    }
    let root = doc.root_element();
    let txs: Vec<Node<'_, '_>> = match root.tag_name().name() {
        "POSLog" => children(root, "Transaction").collect(),
        "Transaction" => vec![root],
        other => {
            return Err(Reject::new(
                where_(&doc, root),
                format!("root element `{other}`: expected POSLog or Transaction"),
            ))
        }
    };
    let mut out = PosLog {
        items: Vec::new(),
        skipped: 0,
    };
    for t in txs {
        match child(t, "RetailTransaction") {
            None => out.skipped += 1,
            Some(rt) => out.items.push(transaction(&doc, t, rt, o)),
        }
    }
    Ok(out)
}

fn amount(
    doc: &Document<'_>,
    n: Node<'_, '_>,
    name: &str,
    exp: u32,
) -> Result<Option<i64>, Reject> {
    match child(n, name) {
        None => Ok(None),
        Some(c) => {
            let t = c.text().unwrap_or("").trim();
            if t.is_empty() {
                return Ok(None);
            }
            money::parse_decimal(t, exp)
                .map(Some)
                .map_err(|e| Reject::new(where_(doc, c), e))
        }
    }
}

fn transaction(
    doc: &Document<'_>,
    t: Node<'_, '_>,
    rt: Node<'_, '_>,
    o: &ParseOpts,
) -> Result<Tx, Reject> {
    let seq = text(t, "SequenceNumber")
        .ok_or_else(|| Reject::new(where_(doc, t), "Transaction has no SequenceNumber"))?;
    let with_id = |mut r: Reject| {
        r.transaction_id = Some(card::scrub(&seq).0);
        r
    };
    body(doc, t, rt, o, &seq).map_err(with_id)
}

fn body(
    doc: &Document<'_>,
    t: Node<'_, '_>,
    rt: Node<'_, '_>,
    o: &ParseOpts,
    seq: &str,
) -> Result<Tx, Reject> {
    let currency = text(t, "CurrencyCode").unwrap_or_else(|| o.default_currency.clone());
    let exp = money::exponent(&currency).ok_or_else(|| {
        Reject::new(
            child(t, "CurrencyCode")
                .map(|c| where_(doc, c))
                .unwrap_or_default(),
            "not an ISO 4217 currency code",
        )
    })?;
    let time_ms = match child(t, "EndDateTime").or_else(|| child(t, "BeginDateTime")) {
        None => None,
        Some(n) => Some(
            timefmt::parse(n.text().unwrap_or(""), o.offset_s)
                .map_err(|e| Reject::new(where_(doc, n), e))?,
        ),
    };
    let voided = attr_true(t, "CancelFlag")
        || attr_true(t, "VoidFlag")
        || attr_true(rt, "CancelFlag")
        || attr_true(rt, "VoidFlag")
        || attr(rt, "TransactionStatus")
            .or_else(|| text(rt, "TransactionStatus"))
            .is_some_and(|s| {
                let s = s.to_ascii_lowercase();
                s.contains("void") || s.contains("cancel")
            });
    let mut tx = Tx {
        transaction_id: seq.to_string(),
        register: text(t, "WorkstationID").unwrap_or_else(|| o.default_register.clone()),
        store_ref: text(t, "RetailStoreID"),
        business_day: text(t, "BusinessDayDate"),
        time_ms,
        currency,
        source: "poslog".into(),
        ..Tx::default()
    };
    let mut sales = 0;
    let mut returns = 0;
    let mut tax_lines: Option<i64> = None;
    for li in children(rt, "LineItem") {
        if attr_true(li, "VoidFlag") {
            continue;
        }
        for item in li.children().filter(|c| c.is_element()) {
            match item.tag_name().name() {
                name @ ("Sale" | "Return") => {
                    let ret = name == "Return";
                    if ret {
                        returns += 1;
                        if let Some(link) =
                            child(item, "TransactionLink").or_else(|| child(li, "TransactionLink"))
                        {
                            tx.original_transaction_id = text(link, "SequenceNumber");
                        }
                    } else {
                        sales += 1;
                    }
                    tx.lines.push(line(doc, item, exp, ret)?);
                }
                "Discount" | "PriceModifier" => {
                    if let Some(a) = amount(doc, item, "Amount", exp)? {
                        tx.order_discount = money::add(tx.order_discount, a.abs())
                            .map_err(|e| Reject::new(where_(doc, item), e))?;
                    }
                }
                "Tax" => {
                    if let Some(a) = amount(doc, item, "Amount", exp)? {
                        let t = money::add(tax_lines.unwrap_or(0), a)
                            .map_err(|e| Reject::new(where_(doc, item), e))?;
                        tax_lines = Some(t);
                    }
                }
                "Tender" => tx.tenders.push(tender(doc, item, exp)?),
                "LoyaltyReward" if !tx.flags.iter().any(|f| f == "loyalty_reward") => {
                    tx.flags.push("loyalty_reward".into());
                }
                _ => {}
            }
        }
    }
    let mut totals = StatedTotals::default();
    for tot in children(rt, "Total") {
        let kind = attr(tot, "TotalType").unwrap_or_default();
        let v = tot.text().unwrap_or("").trim();
        let parse = || money::parse_decimal(v, exp).map_err(|e| Reject::new(where_(doc, tot), e));
        match kind.as_str() {
            "TransactionGrandAmount" => totals.total = Some(parse()?),
            "TransactionNetAmount" => totals.subtotal = Some(parse()?),
            "TransactionTaxAmount" => totals.tax = Some(parse()?),
            _ => {}
        }
    }
    if totals.tax.is_none() {
        totals.tax = tax_lines;
    }
    if tx.order_discount != 0 {
        totals.discount = Some(tx.order_discount);
    }
    tx.totals = totals;
    tx.kind = Some(if voided {
        TxType::Cancellation
    } else if returns > 0 && sales == 0 {
        TxType::Refund
    } else {
        TxType::Sale
    });
    tx.customer = customer(rt);
    Ok(tx)
}

fn line(doc: &Document<'_>, item: Node<'_, '_>, exp: u32, ret: bool) -> Result<Line, Reject> {
    let qty_node = child(item, "Quantity");
    let qty_text = qty_node
        .and_then(|q| q.text())
        .map(|q| q.trim().to_string())
        .filter(|q| !q.is_empty())
        .unwrap_or_else(|| "1".into());
    let qty = money::parse_qty(&qty_text)
        .map_err(|e| Reject::new(qty_node.map(|q| where_(doc, q)).unwrap_or_default(), e))?;
    let unit = match amount(doc, item, "ActualSalesUnitPrice", exp)? {
        Some(u) => Some(u),
        None => amount(doc, item, "RegularSalesUnitPrice", exp)?,
    };
    let amount_minor = match amount(doc, item, "ExtendedAmount", exp)? {
        Some(a) => a,
        None => {
            let u = unit.ok_or_else(|| {
                Reject::new(
                    where_(doc, item),
                    "line has neither ExtendedAmount nor a unit price",
                )
            })?;
            money::qty_times(&qty_text, u).map_err(|e| Reject::new(where_(doc, item), e))?
        }
    };
    let mut discounts = Vec::new();
    if let Some(d) = amount(doc, item, "ExtendedDiscountAmount", exp)?.filter(|d| *d != 0) {
        discounts.push(Discount {
            code: None,
            amount_minor: d.abs(),
        });
    } else {
        for m in children(item, "RetailPriceModifier") {
            if let Some(a) = amount(doc, m, "Amount", exp)? {
                discounts.push(Discount {
                    code: text(m, "PromotionID").or_else(|| text(m, "ReasonCode")),
                    amount_minor: a.abs(),
                });
            }
        }
    }
    let sku = text(item, "ItemID")
        .or_else(|| child(item, "POSIdentity").and_then(|p| text(p, "POSItemID")));
    Ok(Line {
        sku,
        description: text(item, "Description"),
        qty,
        unit_price_minor: unit,
        amount_minor,
        kind: Some(if ret { "return" } else { "sale" }.into()),
        discounts,
    })
}

fn tender(doc: &Document<'_>, item: Node<'_, '_>, exp: u32) -> Result<Tender, Reject> {
    let mut a = amount(doc, item, "Amount", exp)?
        .ok_or_else(|| Reject::new(where_(doc, item), "Tender has no Amount"))?;
    if let Some(change) = child(item, "TenderChange") {
        if let Some(c) = amount(doc, change, "Amount", exp)? {
            a = a
                .checked_sub(c.abs())
                .ok_or_else(|| Reject::new(where_(doc, change), money::OUT_OF_RANGE))?;
        }
    }
    if attr(item, "TypeCode").is_some_and(|c| c.eq_ignore_ascii_case("Refund")) {
        a = -a.abs();
    }
    let brand = item
        .descendants()
        .filter(|n| n.is_element())
        .find_map(|n| {
            attr(n, "CardBrand").or_else(|| {
                matches!(n.tag_name().name(), "CardBrand" | "CardBrandName")
                    .then(|| n.text().unwrap_or("").trim().to_string())
            })
        })
        .filter(|b| !b.is_empty());
    Ok(Tender {
        kind: attr(item, "TenderType").unwrap_or_else(|| "Unknown".into()),
        amount_minor: a,
        card_brand: brand,
    })
}

fn customer(rt: Node<'_, '_>) -> RawCustomer {
    let mut c = RawCustomer::default();
    for n in rt.descendants().filter(|n| n.is_element()) {
        let v = || {
            n.text()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        };
        match n.tag_name().name() {
            "LoyaltyID" | "LoyaltyAccountID" | "LoyaltyCardNumber" | "LoyaltyAccountNumber"
                if c.loyalty_id.is_none() =>
            {
                c.loyalty_id = v();
            }
            "EMailAddress" | "EmailAddress" | "EMail" | "Email" if c.email.is_none() => {
                c.email = v();
            }
            "FullTelephoneNumber" | "TelephoneNumber" | "PhoneNumber" if c.phone.is_none() => {
                c.phone = v();
            }
            _ => {}
        }
    }
    c
}
