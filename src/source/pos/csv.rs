//! Line-per-row CSV exports (RFC 4180: quoted fields, doubled quotes, commas and newlines inside
//! quotes) grouped into transactions by a configured transaction-id column. The default column
//! mapping is the UCI Online Retail layout.

use super::config::CsvMapping;
use super::transaction::{Line, Parsed, Reject, StatedTotals, Tender, Tx, TxType};
use super::{money, timefmt, ParseOpts};
use crate::privacy::card;
use crate::privacy::customer::RawCustomer;

/// One record and the line it starts on (1-based).
pub struct Record {
    /// The 1-based line the record starts on (a quoted field may span lines), for rejections.
    pub line: usize,
    /// The fields, unquoted and not trimmed.
    pub fields: Vec<String>,
}

/// Splits RFC 4180 text into records. An unterminated quote is an error naming its line.
pub fn records(text: &str, delim: char) -> Result<Vec<Record>, Reject> {
    let mut out = Vec::new();
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut in_q = false;
    let mut line = 1usize;
    let mut start_line = 1usize;
    let mut q_line = 0usize;
    let mut chars = text
        .strip_prefix('\u{feff}')
        .unwrap_or(text)
        .chars()
        .peekable();
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        if in_q {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cur.push('"');
                }
                '"' => in_q = false,
                '\n' => {
                    line += 1;
                    cur.push(c);
                }
                _ => cur.push(c),
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                in_q = true;
                q_line = line;
                at_field_start = false;
            }
            c if c == delim => {
                fields.push(std::mem::take(&mut cur));
                at_field_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut cur));
                if !(fields.len() == 1 && fields.first().is_some_and(String::is_empty)) {
                    out.push(Record {
                        line: start_line,
                        fields: std::mem::take(&mut fields),
                    });
                }
                fields.clear();
                line += 1;
                start_line = line;
                at_field_start = true;
            }
            _ => {
                cur.push(c);
                at_field_start = false;
            }
        }
    }
    if in_q {
        return Err(Reject::new(
            format!("line {q_line}"),
            "unterminated quoted field",
        ));
    }
    if !cur.is_empty() || !fields.is_empty() {
        fields.push(cur);
        out.push(Record {
            line: start_line,
            fields,
        });
    }
    Ok(out)
}

struct Cols {
    id: usize,
    sku: Option<usize>,
    desc: Option<usize>,
    qty: Option<usize>,
    unit: Option<usize>,
    amount: Option<usize>,
    time: Option<usize>,
    register: Option<usize>,
    currency: Option<usize>,
    loyalty: Option<usize>,
    email: Option<usize>,
    phone: Option<usize>,
    tender: Option<usize>,
}

/// Parses a CSV export with the given column mapping; rows are grouped by transaction id in
/// order of first appearance.
pub fn parse(text: &str, m: &CsvMapping, o: &ParseOpts) -> Result<Parsed, Reject> {
    let delim = m.delimiter.chars().next().unwrap_or(',');
    let recs = records(text, delim)?;
    let mut it = recs.into_iter();
    let header = it
        .next()
        .ok_or_else(|| Reject::new("line 1", "empty file: no header row"))?;
    let names: Vec<String> = header.fields.iter().map(|h| h.trim().to_string()).collect();
    for n in &names {
        if card::is_forbidden_field(n) {
            return Err(Reject::sensitive(
                format!("line 1: column `{n}`"),
                "card authentication data (CVV, track or PIN block) is never accepted",
            ));
        }
    }
    let find =
        |k: &str, what: &str| -> Result<Option<usize>, Reject> {
            if k.is_empty() {
                return Ok(None);
            }
            names.iter().position(|n| n == k).map(Some).ok_or_else(|| {
                Reject::new("line 1", format!("no column `{k}` (mapping csv.{what})"))
            })
        };
    let cols = Cols {
        id: find(&m.transaction_id, "transaction_id")?
            .ok_or_else(|| Reject::new("line 1", "csv.transaction_id mapping is empty"))?,
        sku: find(&m.sku, "sku")?,
        desc: find(&m.description, "description")?,
        qty: find(&m.qty, "qty")?,
        unit: find(&m.unit_price, "unit_price")?,
        amount: find(&m.amount, "amount")?,
        time: find(&m.time, "time")?,
        register: find(&m.register, "register")?,
        currency: find(&m.currency, "currency")?,
        loyalty: find(&m.loyalty_id, "loyalty_id")?,
        email: find(&m.email, "email")?,
        phone: find(&m.phone, "phone")?,
        tender: find(&m.tender, "tender")?,
    };
    if cols.amount.is_none() && (cols.qty.is_none() || cols.unit.is_none()) {
        return Err(Reject::new(
            "line 1",
            "mapping needs an amount column or both qty and unit_price",
        ));
    }
    // Group rows; a row that fails turns its whole transaction into a rejection.
    let mut order: Vec<String> = Vec::new();
    let mut groups: std::collections::HashMap<String, Result<Tx, Reject>> =
        std::collections::HashMap::new();
    for rec in it {
        for f in &rec.fields {
            if card::looks_like_track(f) {
                return Err(Reject::sensitive(
                    format!("line {}", rec.line),
                    "magnetic-stripe track data is never accepted",
                ));
            }
        }
        let cell = |i: Option<usize>| -> Option<String> {
            i.and_then(|i| rec.fields.get(i))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let Some(id) = cell(Some(cols.id)) else {
            let r = Reject::new(
                format!("line {}: column `{}`", rec.line, m.transaction_id),
                "empty transaction id",
            );
            let key = format!("\u{0}line{}", rec.line);
            order.push(key.clone());
            groups.insert(key, Err(r));
            continue;
        };
        if !groups.contains_key(&id) {
            order.push(id.clone());
            groups.insert(id.clone(), Ok(new_tx(&id, &cell, &cols, m, o)));
        }
        let Some(entry) = groups.get_mut(&id) else {
            continue;
        };
        if let Ok(tx) = entry {
            if let Err(e) = add_row(tx, &cell, &cols, m, o, rec.line) {
                *entry = Err(Reject {
                    transaction_id: Some(card::scrub(&id).0),
                    ..e
                });
            }
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|k| groups.remove(&k))
        .collect())
}

fn new_tx(
    id: &str,
    cell: &dyn Fn(Option<usize>) -> Option<String>,
    c: &Cols,
    m: &CsvMapping,
    o: &ParseOpts,
) -> Tx {
    let cancel = !m.cancel_prefix.is_empty() && id.starts_with(&m.cancel_prefix);
    Tx {
        transaction_id: id.to_string(),
        register: cell(c.register).unwrap_or_else(|| o.default_register.clone()),
        currency: cell(c.currency).unwrap_or_else(|| o.default_currency.clone()),
        kind: Some(if cancel {
            TxType::Cancellation
        } else {
            TxType::Sale
        }),
        original_transaction_id: None,
        source: "csv".into(),
        totals: StatedTotals::default(),
        customer: RawCustomer {
            loyalty_id: cell(c.loyalty),
            email: cell(c.email),
            phone: cell(c.phone),
        },
        ..Tx::default()
    }
}

fn add_row(
    tx: &mut Tx,
    cell: &dyn Fn(Option<usize>) -> Option<String>,
    c: &Cols,
    m: &CsvMapping,
    o: &ParseOpts,
    line: usize,
) -> Result<(), Reject> {
    let at = |col: &str| format!("line {line}: column `{col}`");
    let exp = money::exponent(&tx.currency)
        .ok_or_else(|| Reject::new(at(&m.currency), "not an ISO 4217 currency code"))?;
    if tx.time_ms.is_none() {
        if let Some(t) = cell(c.time) {
            tx.time_ms =
                Some(timefmt::parse(&t, o.offset_s).map_err(|e| Reject::new(at(&m.time), e))?);
        }
    }
    let qty_text = cell(c.qty).unwrap_or_else(|| "1".into());
    let qty = money::parse_qty(&qty_text).map_err(|e| Reject::new(at(&m.qty), e))?;
    let unit = match cell(c.unit) {
        Some(u) => {
            Some(money::parse_decimal(&u, exp).map_err(|e| Reject::new(at(&m.unit_price), e))?)
        }
        None => None,
    };
    let amount = match cell(c.amount) {
        Some(a) => money::parse_decimal(&a, exp).map_err(|e| Reject::new(at(&m.amount), e))?,
        None => {
            let u = unit.ok_or_else(|| Reject::new(at(&m.unit_price), "empty unit price"))?;
            // Exact: the unit price's own text times the quantity, rounded once.
            let price_text = cell(c.unit).unwrap_or_default();
            line_amount(&qty_text, &price_text, exp)
                .unwrap_or_else(|| money::qty_times(&qty_text, u).unwrap_or(0))
        }
    };
    if tx.customer.loyalty_id.is_none() {
        tx.customer.loyalty_id = cell(c.loyalty);
    }
    if let Some(t) = cell(c.tender) {
        tx.tenders.push(Tender {
            kind: t,
            amount_minor: amount,
            card_brand: None,
        });
    }
    tx.lines.push(Line {
        sku: cell(c.sku),
        description: cell(c.desc),
        qty,
        unit_price_minor: unit,
        amount_minor: amount,
        kind: None,
        discounts: Vec::new(),
    });
    Ok(())
}

/// qty × price on decimal text with 6 extra digits, rounded once to the currency.
fn line_amount(qty: &str, price: &str, exp: u32) -> Option<i64> {
    let q = money::parse_decimal(qty, 6).ok()?;
    let p = money::parse_decimal(price, exp + 6).ok()?;
    let prod = i128::from(q) * i128::from(p); // scaled by 10^(12 + exp)
    let div = 1_000_000_000_000i128;
    let (qt, r) = (prod / div, prod % div);
    let rounded = if r.abs() * 2 >= div {
        qt + prod.signum()
    } else {
        qt
    };
    i64::try_from(rounded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4180() {
        let t = "a,b,c\r\n1,\"x, y\",\"he said \"\"hi\"\"\"\n2,\"multi\nline\",z\n\n3,,\n";
        let r = records(t, ',').unwrap_or_default();
        assert_eq!(r.len(), 4);
        assert_eq!(r[1].fields, vec!["1", "x, y", "he said \"hi\""]);
        assert_eq!(r[2].fields[1], "multi\nline");
        assert_eq!(r[3].line, 6);
        assert_eq!(r[3].fields, vec!["3", "", ""]);
        assert!(records("a\n\"open", ',').is_err());
    }

    #[test]
    fn amounts() {
        assert_eq!(line_amount("-3", "0.70", 2), Some(-210));
        assert_eq!(line_amount("3", "2.555", 2), Some(767));
        assert_eq!(line_amount("12", "0.85", 2), Some(1020));
    }
}
