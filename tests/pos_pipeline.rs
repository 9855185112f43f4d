//! The POS source end to end: the real storegw binary with a real mosquitto, tills pushing over
//! real HTTP, export files dropped into a watched directory, and a local Square/Shopify API
//! (axum) polled with a cursor. Checks conformance with the shared files, idempotency across a
//! restart, the error answers, and that no card number, e-mail, phone or loyalty id reaches
//! the spool, the log or MQTT.

mod common;

use common::{write_secret, Gateway, Mosquitto, Subscriber};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type R = Result<(), Box<dyn std::error::Error>>;

const TOKEN: &str = "till-token-0123456789";
const JOIN_KEY: &str = "join-key-shared-with-the-cdp-0001";

/// Raw values that must never appear anywhere the gateway writes.
const SECRETS: [&str; 16] = [
    "4111111111111111",
    "4111 1111 1111 1111",
    "5555-5555-5555-4444",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
    "6011 1111 1111 1117",
    "alice.privacy@example.com",
    "Alice.Privacy@Example.com",
    "bob.privacy@example.org",
    "+49 30 1234 5678",
    "+493012345678",
    "LOY-998877",
    "Alice Privacy",
    "Privacystrasse 1",
    "carol.privacy@example.net",
];

fn config(
    dir: &Path,
    mqtt: u16,
    http: u16,
    api: u16,
    pos_cap: &str,
) -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    write_secret(&dir.join("pos.token"), format!("{TOKEN}\n"))?;
    write_secret(&dir.join("join.key"), JOIN_KEY)?;
    write_secret(&dir.join("square.token"), "sq-token")?;
    write_secret(&dir.join("shopify.token"), "sh-token")?;
    let rest = format!(
        r#"[spool.pos]
max_bytes = "{pos_cap}"
max_age = "30d"

[privacy]
join_key_file = "join.key"

[sources.pos]
enabled = true
default_currency = "GBP"
phone_default_country = "49"

[sources.pos.http]
token_file = "pos.token"
body_limit = "64KiB"

[[sources.pos.watch]]
dir = "inbox"
interval = "200ms"
settle = "300ms"

[[sources.pos.poll]]
name = "square"
api = "square"
url = "http://127.0.0.1:{api}"
token_file = "square.token"
interval = "1s"
location_ids = ["L1"]
start = "2019-01-01T00:00:00Z"
max_backoff = "2s"

[[sources.pos.poll]]
name = "shopify"
api = "shopify"
url = "http://127.0.0.1:{api}/admin/api/2024-01"
token_file = "shopify.token"
interval = "1s"
start = "2008-01-01T00:00:00Z"
"#
    );
    common::write_config_with_http(
        dir,
        mqtt,
        "",
        &format!("enabled = true\nlisten = \"127.0.0.1:{http}\""),
        &rest,
    )
}

/// A local Square + Shopify API serving the shared examples plus orders full of personal data.
struct Api {
    square_calls: Arc<AtomicUsize>,
    shopify_calls: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

async fn start_api(port: u16, data: &Path) -> Result<Api, Box<dyn std::error::Error>> {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let ex: Value = serde_json::from_slice(&std::fs::read(
        data.join("pos/square_api_spec_order_examples.json"),
    )?)?;
    let mut create = ex["examples"]["CreateOrderResponse"]["order"].clone();
    create["state"] = json!("COMPLETED");
    let mut update = ex["examples"]["UpdateOrderResponse"]["order"].clone();
    update["state"] = json!("COMPLETED");
    let private = json!({
        "id": "SQ-PRIVATE-1", "location_id": "L1", "state": "COMPLETED",
        "created_at": "2024-03-01T10:00:00Z", "updated_at": "2024-03-01T10:00:05Z",
        "line_items": [{"name": "Gift card 6011 1111 1111 1117", "quantity": "1",
                        "base_price_money": {"amount": 500, "currency": "USD"},
                        "gross_sales_money": {"amount": 500, "currency": "USD"}}],
        "fulfillments": [{"pickup_details": {"recipient": {"display_name": "Alice Privacy",
            "email_address": "alice.privacy@example.com", "phone_number": "+49 30 1234 5678"}}}],
        "tenders": [{"type": "CARD", "amount_money": {"amount": 500, "currency": "USD"},
                     "card_details": {"card": {"card_brand": "VISA", "last_4": "1111"}}}],
        "total_money": {"amount": 500, "currency": "USD"}
    });
    let page1 = json!({"orders": [create], "cursor": "page-2"});
    let page2 = json!({"orders": [update, private]});
    let shop: Value = serde_json::from_slice(&std::fs::read(
        data.join("pos/shopify-api-ruby_orders.json"),
    )?)?;
    let mut p_order = shop["orders"][0].clone();
    p_order["id"] = json!(990001);
    p_order["email"] = json!("Carol.Privacy@Example.net");
    p_order["phone"] = json!("+49 30 1234 5678");
    p_order["billing_address"] = json!({"name": "Alice Privacy", "address1": "Privacystrasse 1"});
    p_order["note"] = json!("card 4111 1111 1111 1111");
    p_order["line_items"][0]["title"] = json!("paid 5555-5555-5555-4444");
    p_order["line_items"][0]["name"] = json!("paid 5555-5555-5555-4444");
    p_order["cancelled_at"] = json!("2008-01-11T09:00:00-05:00");
    let shop1 = shop.clone();
    let shop2 = json!({"orders": [p_order]});
    let square_calls = Arc::new(AtomicUsize::new(0));
    let shopify_calls = Arc::new(AtomicUsize::new(0));
    let (sq, sh) = (square_calls.clone(), shopify_calls.clone());
    let app = axum::Router::new()
        .route(
            "/v2/orders/search",
            axum::routing::post(move |h: HeaderMap, body: axum::body::Bytes| {
                let (sq, page1, page2) = (sq.clone(), page1.clone(), page2.clone());
                async move {
                    let n = sq.fetch_add(1, Ordering::SeqCst);
                    if h.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sq-token") {
                        return (StatusCode::UNAUTHORIZED, "no").into_response();
                    }
                    if n == 0 {
                        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response();
                    }
                    let req: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let v = if req.get("cursor").is_some() { page2 } else { page1 };
                    axum::Json(v).into_response()
                }
            }),
        )
        .route(
            "/admin/api/2024-01/orders.json",
            axum::routing::get(move |h: HeaderMap, q: axum::extract::RawQuery| {
                let (sh, shop1, shop2) = (sh.clone(), shop1.clone(), shop2.clone());
                async move {
                    sh.fetch_add(1, Ordering::SeqCst);
                    if h.get("x-shopify-access-token").and_then(|v| v.to_str().ok()) != Some("sh-token") {
                        return (StatusCode::UNAUTHORIZED, "no").into_response();
                    }
                    if q.0.unwrap_or_default().contains("page_info=2") {
                        axum::Json(shop2).into_response()
                    } else {
                        let link = format!("<http://127.0.0.1:{port}/admin/api/2024-01/orders.json?page_info=2>; rel=\"next\"");
                        ([("link", link)], axum::Json(shop1)).into_response()
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Api {
        square_calls,
        shopify_calls,
        _task: task,
    })
}

/// reqwest is built without a bundled TLS provider; the gateway installs ring, and so do tests.
fn crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn wait_http(base: &str) -> R {
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until {
        if reqwest::get(format!("{base}/metrics")).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("gateway HTTP did not come up".into())
}

async fn wait_path(p: &Path) {
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until && !p.exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn private_json() -> Value {
    json!([
        {"transaction_id": "P-1", "register": "R9", "time": "2024-03-01T12:00:00Z", "currency": "EUR",
         "lines": [{"sku": "SKU-1", "description": "note 5555-5555-5555-4444 and 4111 1111 1111 1111", "qty": 1, "unit_price": "9.99"}],
         "totals": {"total": 9.99},
         "tenders": [{"type": "card", "amount": "9.99", "card_brand": "visa 378282246310005"}],
         "customer": {"loyalty_id": "LOY-998877", "email": "  Alice.Privacy@Example.com ", "phone": "+49 30 1234 5678",
                      "name": "Alice Privacy", "address": "Privacystrasse 1"}},
        {"transaction_id": "P-2", "register": "R9", "currency": "JPY",
         "lines": [{"description": "6011111111111117", "qty": "2", "amount_minor": 3000}],
         "totals": {"total_minor": 3000}, "tenders": [{"type": "cash", "amount_minor": 3000}],
         "customer": {"email": "bob.privacy@example.org", "phone": "030 1234 5678"}}
    ])
}

const PRIVATE_POSLOG: &str = r#"<POSLog xmlns="http://www.nrf-arts.org/IXRetail/namespace/"><Transaction><RetailStoreID>9</RetailStoreID><WorkstationID>77</WorkstationID><SequenceNumber>5001</SequenceNumber><BusinessDayDate>2024-03-01</BusinessDayDate><EndDateTime>2024-03-01T10:00:00</EndDateTime><CurrencyCode>USD</CurrencyCode><RetailTransaction><LineItem><Sale><ItemID>A1</ItemID><Description>ref 4111-1111-1111-1111</Description><RegularSalesUnitPrice>2.00</RegularSalesUnitPrice><ExtendedAmount>2.00</ExtendedAmount><Quantity>1</Quantity></Sale></LineItem><LineItem><Tender TenderType="CreditDebit"><Amount>2.00</Amount><CreditDebit CardType="Credit"><PrimaryAccountNumber>5555555555554444</PrimaryAccountNumber></CreditDebit></Tender></LineItem><LineItem><Customer><Name>Alice Privacy</Name><EMail><EMailAddress>alice.privacy@example.com</EMailAddress></EMail><LoyaltyAccount><LoyaltyAccountID>LOY-998877</LoyaltyAccountID></LoyaltyAccount></Customer></LineItem><Total TotalType="TransactionGrandAmount">2.00</Total></RetailTransaction></Transaction></POSLog>"#;

const PRIVATE_JSONL: &str = "{\"transaction_id\":\"F-1\",\"register\":\"R5\",\"currency\":\"EUR\",\"lines\":[{\"description\":\"378282246310005\",\"qty\":1,\"amount_minor\":100}],\"totals\":{\"total_minor\":100},\"tenders\":[{\"type\":\"card\",\"amount_minor\":100}],\"customer\":{\"email\":\"carol.privacy@example.net\"}}\n{\"transaction_id\":\"F-2\",\"register\":\"R5\",\"currency\":\"EUR\",\"lines\":[{\"sku\":\"S-2\",\"description\":\"6011 1111 1111 1117\",\"qty\":1,\"amount_minor\":200}],\"totals\":{\"total_minor\":200},\"tenders\":[{\"type\":\"cash\",\"amount_minor\":200}],\"customer\":{\"phone\":\"+49 30 1234 5678\",\"loyalty_id\":\"LOY-998877\"}}\n";

fn all_events(sub: &Subscriber) -> Vec<Value> {
    let g = sub
        .got
        .lock()
        .map(|r| r.payloads.clone())
        .unwrap_or_default();
    let mut out: Vec<Value> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for p in g {
        for e in p["events"].as_array().into_iter().flatten() {
            if seen.insert(e["id"].as_str().unwrap_or_default().to_string()) {
                out.push(e.clone());
            }
        }
    }
    out
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                files_under(&p, out);
            } else {
                out.push(p);
            }
        }
    }
}

fn find_secrets(hay: &[u8], what: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(hay).to_lowercase();
    SECRETS
        .iter()
        .filter(|s| text.contains(&s.to_lowercase()))
        .map(|s| format!("`{s}` in {what}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pos_end_to_end() -> R {
    require_mosquitto!();
    crypto();
    let Some(data) = common::shared_data() else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(dir.path(), "")?;
    let sub = Subscriber::start(broker.port, "storegw/v1/#", 100_000, None).await;
    let (http_port, api_port) = (common::free_port(), common::free_port());
    let api = start_api(api_port, &data).await?;
    let cfg = config(dir.path(), broker.port, http_port, api_port, "64MiB")?;
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox)?;
    let mut gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    let base = format!("http://127.0.0.1:{http_port}");
    wait_http(&base).await?;
    let url = format!("{base}/v1/pos/transactions");
    let c = reqwest::Client::new();

    // --- HTTP errors: nothing stored.
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .map_err(|e| format!("{e:?}; gateway log:\n{}", gw.log_text()))?;
    assert_eq!(r.status(), 401);
    let r = c
        .post(&url)
        .bearer_auth("wrong")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    let r = c
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(vec![b' '; 70 * 1024])
        .send()
        .await?;
    assert_eq!(r.status(), 413);
    let half = json!([
        {"transaction_id": "HALF-1", "register": "R1", "lines": [{"qty": 1, "amount_minor": 100}], "totals": {"total_minor": 100}},
        {"transaction_id": "HALF-2", "register": "R1", "lines": [{"qty": 1, "amount_minor": "1.x"}]}
    ]);
    let r = c.post(&url).bearer_auth(TOKEN).json(&half).send().await?;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await?;
    assert_eq!(v["path"], "$[1].lines[0].amount_minor", "{v}");
    let cvv = json!({"transaction_id": "CVV-1", "lines": [], "payment": {"cvv": "123"}});
    let r = c.post(&url).bearer_auth(TOKEN).json(&cvv).send().await?;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await?["path"], "$.payment.cvv");
    let track = json!({"transaction_id": "TRK-1", "lines": [], "note": "%B4111111111111111^PRIVACY/ALICE^2512101?"});
    assert_eq!(
        c.post(&url)
            .bearer_auth(TOKEN)
            .json(&track)
            .send()
            .await?
            .status(),
        400
    );
    let r = c
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await?;
    assert_eq!(r.status(), 415);

    // --- HTTP accepted: canonical JSON (with personal data), POSLog XML, idempotency.
    let r = c
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&private_json())
        .send()
        .await?;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r = c
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&private_json())
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await?;
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(2))
    );
    let poslog = std::fs::read_to_string(data.join("pos/kjbreil-poslog_SMALL.xml"))?;
    let r = c
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/xml")
        .body(poslog)
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let r = c
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/xml")
        .body(PRIVATE_POSLOG)
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    let http_tx = 2 + 1 + 1;

    // --- Export files: two UCI days, a JSON-lines file with personal data, a bad file, and a
    // file still being written.
    for f in [
        "online-retail_by-day_2010-12-22.csv",
        "online-retail_by-day_2011-02-06.csv",
    ] {
        std::fs::copy(data.join("pos").join(f), inbox.join(f))?;
    }
    std::fs::write(inbox.join("private.jsonl"), PRIVATE_JSONL)?;
    std::fs::write(inbox.join("bad.csv"), "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n9,A,x,1,2010-12-22 10:29:00,abc,,UK\n")?;
    std::fs::write(inbox.join("partial.csv.tmp"), "InvoiceNo,StockCode\n")?;
    let file_tx = 22 + 11 + 2;
    // Square: CreateOrder, UpdateOrder, private (3); Shopify: fixture sale + private sale and its cancellation (3).
    let poll_tx = 3 + 3;
    let want = http_tx + file_tx + poll_tx;
    let got = sub.wait_for(want, Duration::from_secs(60)).await;
    assert_eq!(got, want, "pos events on MQTT");

    // Files went where they should (the move follows the fsync, so it may trail MQTT).
    wait_path(&inbox.join("failed/bad.csv.error")).await;
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until && inbox.join("private.jsonl").exists() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_path(&dir.path().join("state/pos-cursor-square.json")).await;
    let err = std::fs::read_to_string(inbox.join("failed/bad.csv.error"))?;
    assert!(err.contains("line 2") && err.contains("UnitPrice"), "{err}");
    for f in [
        "online-retail_by-day_2010-12-22.csv",
        "online-retail_by-day_2011-02-06.csv",
        "private.jsonl",
    ] {
        // Imported files are deleted once stored (done_retention = 0).
        assert!(!inbox.join(f).exists(), "{f} still in the inbox");
        assert!(!inbox.join("done").join(f).exists(), "{f} kept in done/");
    }
    assert!(inbox.join("partial.csv.tmp").exists());
    assert!(
        api.square_calls.load(Ordering::SeqCst) >= 3,
        "429, then two pages"
    );
    assert!(api.shopify_calls.load(Ordering::SeqCst) >= 2);
    let cursor: Value = serde_json::from_slice(&std::fs::read(
        dir.path().join("state/pos-cursor-square.json"),
    )?)?;
    assert_eq!(cursor["updated_since"], "2024-03-01T10:00:05Z");

    // Conformance of what was published.
    let events = all_events(&sub);
    let schemas = common::Schemas::load()?;
    for p in sub
        .got
        .lock()
        .map(|r| r.payloads.clone())
        .unwrap_or_default()
    {
        let errs = schemas.check_batch(&p);
        assert!(errs.is_empty(), "{errs:?}");
    }
    assert!(!events.iter().any(|e| e["transaction_id"]
        .as_str()
        .is_some_and(|t| t.starts_with("HALF"))));
    for f in [
        "online-retail_by-day_2010-12-22.csv",
        "online-retail_by-day_2011-02-06.csv",
    ] {
        let exp: Value = serde_json::from_slice(&std::fs::read(
            data.join("pos").join(format!("{f}.expected.json")),
        )?)?;
        for i in exp["invoices"].as_array().into_iter().flatten() {
            let e = events
                .iter()
                .find(|e| e["source"] == "csv" && e["transaction_id"] == i["InvoiceNo"])
                .ok_or("invoice missing")?;
            assert_eq!(
                e["lines"].as_array().map(Vec::len),
                i["lines"].as_u64().map(|n| n as usize)
            );
            let total =
                storegw::source::pos::money::parse_decimal(i["total"].as_str().unwrap_or(""), 2)?;
            assert_eq!(e["totals"]["total_minor"].as_i64(), Some(total));
            assert_eq!(e["currency"], "GBP");
            if !i["CustomerID"].is_null() {
                assert_eq!(e["customer"]["loyalty"].as_str().map(str::len), Some(64));
            } else {
                assert!(e.get("customer").is_none());
            }
        }
    }
    let pl = events
        .iter()
        .find(|e| e["source"] == "poslog" && e["transaction_id"] == "161")
        .ok_or("poslog 161")?;
    assert_eq!(pl["totals"]["total_minor"], 107);
    assert_eq!(
        pl["tenders"],
        json!([{"type": "CreditDebit", "amount_minor": 107}])
    );
    let p1 = events
        .iter()
        .find(|e| e["transaction_id"] == "P-1")
        .ok_or("P-1")?;
    assert_eq!(p1["totals"]["total_minor"], 999);
    let cust = &p1["customer"];
    // The documented encoding: hex(HMAC-SHA256(join key, "email:" + trimmed lowercase e-mail)).
    let expect_mail = {
        use hmac::{KeyInit, Mac};
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(JOIN_KEY.as_bytes())?;
        m.update(b"email:alice.privacy@example.com");
        storegw::privacy::hex(&m.finalize().into_bytes())
    };
    assert_eq!(cust["email"], expect_mail.as_str());
    let p2 = events
        .iter()
        .find(|e| e["transaction_id"] == "P-2")
        .ok_or("P-2")?;
    assert_eq!(
        p2["customer"]["phone"], cust["phone"],
        "national and E.164 forms hash alike"
    );
    assert_eq!(p2["totals"]["total_minor"], 3000);
    let sq = events
        .iter()
        .find(|e| e["transaction_id"] == "CAISENgvlJ6jLWAzERDzjyHVybY")
        .ok_or("square")?;
    assert_eq!(sq["totals"]["total_minor"], 6176);
    let cancel = events
        .iter()
        .find(|e| e["transaction_id"] == "990001:cancel")
        .ok_or("shopify cancel")?;
    assert_eq!(cancel["type"], "cancellation");
    assert_eq!(cancel["original_transaction_id"], "990001");
    assert_eq!(cancel["totals"]["total_minor"], -40994);

    // --- Restart: idempotency survives; a re-dropped file imports nothing twice.
    assert!(gw.sigterm_and_wait(Duration::from_secs(15)).is_some());
    let mut gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    wait_http(&base).await?;
    let r = c
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&private_json())
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    std::fs::copy(
        data.join("pos/online-retail_by-day_2011-02-06.csv"),
        inbox.join("again.csv"),
    )?;
    let until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < until && inbox.join("again.csv").exists() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!inbox.join("again.csv").exists());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sub.unique(), want, "nothing published twice after restart");
    assert!(gw.sigterm_and_wait(Duration::from_secs(15)).is_some());

    // --- Privacy: spool files, the log, MQTT.
    let mut problems = Vec::new();
    let mut files = Vec::new();
    files_under(&dir.path().join("state"), &mut files);
    for f in &files {
        problems.extend(find_secrets(&std::fs::read(f)?, &f.display().to_string()));
    }
    problems.extend(find_secrets(gw.log_text().as_bytes(), "gateway log"));
    for p in sub
        .got
        .lock()
        .map(|r| r.payloads.clone())
        .unwrap_or_default()
    {
        problems.extend(find_secrets(p.to_string().as_bytes(), "MQTT"));
    }
    assert!(problems.is_empty(), "{problems:?}");
    let scrubbed = events
        .iter()
        .filter(|e| {
            e["flags"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| f == "card_number_removed")
        })
        .count();
    assert!(
        scrubbed >= 6,
        "card numbers removed in {scrubbed} transactions"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pos_spool_refuses_with_503_and_stores_nothing() -> R {
    let Some(_) = common::shared_data() else {
        return Ok(());
    };
    crypto();
    let dir = tempfile::tempdir()?;
    // No broker: nothing drains, the 64 KiB POS spool (the smallest allowed) fills up.
    let (http_port, api_port) = (common::free_port(), common::free_port());
    let cfg = config(
        dir.path(),
        common::free_port(),
        http_port,
        api_port,
        "64KiB",
    )?;
    let text = std::fs::read_to_string(&cfg)?;
    let cut = text.find("[[sources.pos.watch]]").unwrap_or(text.len());
    std::fs::write(&cfg, &text[..cut])?;
    let mut gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    let base = format!("http://127.0.0.1:{http_port}");
    wait_http(&base).await?;
    let url = format!("{base}/v1/pos/transactions");
    let c = reqwest::Client::new();
    let mut status = 0;
    let mut stored = 0;
    let lines: Vec<Value> = (0..60)
        .map(|i| json!({"sku": format!("SKU-{i:05}"), "description": "a fairly long item description for size", "qty": 1, "amount_minor": 100}))
        .collect();
    for i in 0..200 {
        let tx = json!({"transaction_id": format!("T{i}"), "register": "R1", "currency": "EUR",
            "lines": lines, "totals": {"total_minor": 6000}, "tenders": [{"type": "cash", "amount_minor": 6000}]});
        let r = c.post(&url).bearer_auth(TOKEN).json(&tx).send().await?;
        status = r.status().as_u16();
        if status != 201 {
            break;
        }
        stored += 1;
    }
    assert_eq!(status, 503, "after {stored} transactions");
    assert!(stored > 0);
    // A refused transaction was not remembered as seen: the till's retry is not a "duplicate".
    let tx = json!({"transaction_id": format!("T{stored}"), "register": "R1",
        "lines": lines, "totals": {"total_minor": 6000}});
    assert_eq!(
        c.post(&url)
            .bearer_auth(TOKEN)
            .json(&tx)
            .send()
            .await?
            .status(),
        503
    );
    let m = c
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(m.contains("storegw_pos_refused_total"), "{m}");
    assert!(gw.sigterm_and_wait(Duration::from_secs(15)).is_some());
    Ok(())
}
