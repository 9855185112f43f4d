//! Parser behaviour beyond the shared fixtures: returns, voids, namespaces, JSON lines, Square
//! returns, Shopify refunds, minor-unit currencies, and no panic on any truncation of real files.

mod common;

use storegw::privacy::customer::CustomerKeys;
use storegw::source::pos::normalize::normalize;
use storegw::source::pos::{parse_input, ParseOpts, PosConfig};

type R = Result<(), Box<dyn std::error::Error>>;

fn opts() -> ParseOpts {
    ParseOpts::from_config(&PosConfig::default())
}

fn events(text: &str, format: &str) -> Result<Vec<serde_json::Value>, Box<dyn std::error::Error>> {
    let p = parse_input(text, format, &opts()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for i in p.items {
        let tx = i.map_err(|e| e.to_string())?;
        let n = normalize(tx, &CustomerKeys::default(), 0).map_err(|e| e.to_string())?;
        out.push(n.event.body());
    }
    Ok(out)
}

#[test]
fn poslog_return_void_and_prefixes() -> R {
    let xml = r#"<?xml version="1.0"?>
<p:POSLog xmlns:p="http://www.nrf-arts.org/IXRetail/namespace/">
 <p:Transaction><p:RetailStoreID>1</p:RetailStoreID><p:WorkstationID>2</p:WorkstationID>
  <p:SequenceNumber>900</p:SequenceNumber><p:EndDateTime>2024-01-02T10:00:00+01:00</p:EndDateTime><p:CurrencyCode>KWD</p:CurrencyCode>
  <p:RetailTransaction>
   <p:LineItem><p:Return><p:ItemID>X</p:ItemID><p:Quantity>2</p:Quantity><p:RegularSalesUnitPrice>1.250</p:RegularSalesUnitPrice><p:ExtendedAmount>2.500</p:ExtendedAmount>
     <p:TransactionLink><p:SequenceNumber>850</p:SequenceNumber></p:TransactionLink></p:Return></p:LineItem>
   <p:LineItem VoidFlag="true"><p:Sale><p:ItemID>V</p:ItemID><p:ExtendedAmount>9.000</p:ExtendedAmount></p:Sale></p:LineItem>
   <p:LineItem><p:Tender TenderType="Cash" TypeCode="Refund"><p:Amount>2.500</p:Amount></p:Tender></p:LineItem>
   <p:Total TotalType="TransactionGrandAmount">2.500</p:Total>
  </p:RetailTransaction></p:Transaction>
 <p:Transaction CancelFlag="true"><p:WorkstationID>2</p:WorkstationID><p:SequenceNumber>901</p:SequenceNumber><p:CurrencyCode>JPY</p:CurrencyCode>
  <p:RetailTransaction><p:LineItem><p:Sale><p:ItemID>Y</p:ItemID><p:Quantity>1</p:Quantity><p:ExtendedAmount>1500</p:ExtendedAmount></p:Sale></p:LineItem>
  <p:LineItem><p:Discount><p:Amount>100</p:Amount></p:Discount></p:LineItem>
  <p:LineItem><p:Tax><p:Amount>136</p:Amount></p:Tax></p:LineItem>
  <p:Total TotalType="TransactionGrandAmount">1536</p:Total></p:RetailTransaction></p:Transaction>
</p:POSLog>"#;
    let ev = events(xml, "poslog")?;
    assert_eq!(ev.len(), 2);
    let r = &ev[0];
    assert_eq!(r["type"], "refund");
    assert_eq!(r["original_transaction_id"], "850");
    assert_eq!(
        r["lines"].as_array().map(Vec::len),
        Some(1),
        "voided line ignored"
    );
    assert_eq!(r["lines"][0]["amount_minor"], -2500);
    assert_eq!(r["lines"][0]["qty"], -2.0);
    assert_eq!(r["totals"]["total_minor"], -2500);
    assert_eq!(r["tenders"][0]["amount_minor"], -2500);
    assert_eq!(r["time"], "2024-01-02T09:00:00.000Z");
    assert!(r["totals"].get("mismatch_minor").is_none());
    let c = &ev[1];
    assert_eq!(c["type"], "cancellation");
    assert_eq!(c["currency"], "JPY");
    assert_eq!(c["totals"]["total_minor"], -1536);
    assert_eq!(c["totals"]["tax_minor"], -136);
    assert!(c["totals"].get("mismatch_minor").is_none(), "{c}");
    Ok(())
}

#[test]
fn poslog_sensitive_elements_refuse_the_document() {
    let xml = "<POSLog><Transaction><SequenceNumber>1</SequenceNumber><RetailTransaction><LineItem><Tender TenderType=\"Credit\"><Amount>1</Amount><CreditDebit><Track2>;4111111111111111=2512?</Track2></CreditDebit></Tender></LineItem></RetailTransaction></Transaction></POSLog>";
    let e = parse_input(xml, "poslog", &opts())
        .err()
        .map(|e| e.at)
        .unwrap_or_default();
    assert!(e.contains("Track2"), "{e}");
}

#[test]
fn jsonl_and_decimal_forms() -> R {
    let text = "{\"transaction_id\":\"a\",\"currency\":\"BHD\",\"lines\":[{\"qty\":\"3\",\"unit_price\":0.105}],\"totals\":{\"total\":\"0.315\"}}\n\n{\"transaction_id\":\"b\",\"type\":\"refund\",\"original_transaction_id\":\"a\",\"currency\":\"EUR\",\"lines\":[{\"qty\":1,\"amount\":1.1}],\"totals\":{\"total_minor\":110}}\n";
    let ev = events(text, "jsonl")?;
    assert_eq!(ev[0]["totals"]["total_minor"], 315);
    assert_eq!(ev[0]["lines"][0]["amount_minor"], 315);
    assert_eq!(ev[1]["type"], "refund");
    assert_eq!(ev[1]["totals"]["total_minor"], -110);
    assert_eq!(ev[1]["original_transaction_id"], "a");
    let bad = parse_input("{\"transaction_id\":\"a\"}\n{oops\n", "jsonl", &opts())
        .map_err(|e| e.to_string())?;
    let err = bad
        .items
        .into_iter()
        .find_map(Result::err)
        .map(|e| e.at)
        .unwrap_or_default();
    assert!(err.starts_with("line 2"), "{err}");
    Ok(())
}

#[test]
fn square_return_and_shopify_refund() -> R {
    let sq = r#"{"orders":[{"id":"R1","location_id":"L","state":"COMPLETED","created_at":"2024-01-01T00:00:00Z",
      "returns":[{"source_order_id":"O1","return_line_items":[{"name":"Tea","quantity":"2","base_price_money":{"amount":150,"currency":"EUR"},"gross_return_money":{"amount":300,"currency":"EUR"}}]}],
      "total_money":{"amount":-300,"currency":"EUR"},"tenders":[{"type":"CASH","amount_money":{"amount":-300,"currency":"EUR"}}]}]}"#;
    let ev = events(sq, "square")?;
    assert_eq!(ev[0]["type"], "refund");
    assert_eq!(ev[0]["original_transaction_id"], "O1");
    assert_eq!(ev[0]["lines"][0]["amount_minor"], -300);
    assert_eq!(ev[0]["totals"]["total_minor"], -300);
    let sh = r#"{"order":{"id":5,"currency":"EUR","source_name":"pos","created_at":"2024-01-01T10:00:00+01:00","total_price":"20.00","subtotal_price":"20.00","total_tax":"0.00","total_discounts":"0.00",
      "line_items":[{"sku":"A","name":"Mug","price":"10.00","quantity":2}],
      "refunds":[{"id":77,"created_at":"2024-01-02T10:00:00+01:00","refund_line_items":[{"quantity":1,"subtotal":"10.00","line_item":{"sku":"A","name":"Mug","price":"10.00","quantity":2}}],
                  "transactions":[{"amount":"10.00","gateway":"cash","status":"success"}]}]}}"#;
    let ev = events(sh, "shopify")?;
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0]["channel"], "pos");
    assert_eq!(ev[0]["totals"]["total_minor"], 2000);
    assert_eq!(ev[1]["transaction_id"], "5:refund:77");
    assert_eq!(ev[1]["type"], "refund");
    assert_eq!(ev[1]["totals"]["total_minor"], -1000);
    assert_eq!(ev[1]["lines"][0]["qty"], -1.0);
    Ok(())
}

#[test]
fn truncated_real_files_never_panic() -> R {
    let Some(data) = common::shared_data() else {
        return Ok(());
    };
    let o = opts();
    let mut cuts = 0;
    for entry in std::fs::read_dir(data.join("pos"))? {
        let p = entry?.path();
        let text = std::fs::read_to_string(&p)?;
        let step = (text.len() / 60).max(1);
        let mut at = 0;
        while at < text.len() {
            if let Some(cut) = text.get(..at) {
                for f in ["poslog", "csv", "json", "jsonl", "square", "shopify"] {
                    if let Ok(out) = parse_input(cut, f, &o) {
                        for tx in out.items.into_iter().flatten() {
                            let _ = normalize(tx, &CustomerKeys::default(), 0);
                        }
                    }
                }
                cuts += 1;
            }
            at += step;
        }
    }
    assert!(cuts > 100);
    Ok(())
}
