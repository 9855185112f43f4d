//! schemas/openapi.json against the running daemon: every answer of the real gateway (good,
//! duplicate, conflicting, unauthorized, malformed, oversize, slow, wrong type, spool full,
//! connection cap) must be a status code the document lists for that operation, with a
//! documented content type, and a JSON body valid against the documented schema; the
//! document's own examples must be valid against their schemas.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TOKEN: &str = "till-token-0123456789";

fn load(name: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(name);
    Ok(serde_json::from_slice(&std::fs::read(p)?)?)
}

/// The OpenAPI document with helpers to look up and validate responses.
struct Api {
    doc: Value,
}

impl Api {
    fn load() -> Result<Api, Box<dyn std::error::Error>> {
        Ok(Api {
            doc: load("openapi.json")?,
        })
    }

    /// Compiles a schema of the document, its `#/components/schemas/…` references resolved
    /// against the document's components.
    fn validator(&self, schema: &Value) -> Result<jsonschema::Validator, String> {
        let text = schema
            .to_string()
            .replace("#/components/schemas/", "#/$defs/");
        let mut s: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let defs = self.doc["components"]["schemas"]
            .to_string()
            .replace("#/components/schemas/", "#/$defs/");
        if let Value::Object(m) = &mut s {
            m.insert(
                "$defs".into(),
                serde_json::from_str(&defs).map_err(|e| e.to_string())?,
            );
        }
        jsonschema::validator_for(&s).map_err(|e| e.to_string())
    }

    /// Checks one real answer; returns the problems (empty = conforms).
    fn check(
        &self,
        path: &str,
        method: &str,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Vec<String> {
        let what = format!("{method} {path} -> {status}");
        let resp = &self.doc["paths"][path][method]["responses"][status.to_string()];
        if resp.is_null() {
            return vec![format!("{what}: status not documented")];
        }
        let header = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.as_str())
        };
        let mut errs = Vec::new();
        for (name, h) in resp["headers"].as_object().into_iter().flatten() {
            let h = match h.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    &self.doc["components"]["headers"]
                        [r.trim_start_matches("#/components/headers/")]
                }
                None => h,
            };
            match header(name) {
                None if h["required"] != true => {}
                None => errs.push(format!("{what}: header {name} missing")),
                Some(v) if h["schema"]["type"] == "integer" && v.parse::<u64>().is_err() => {
                    errs.push(format!("{what}: header {name} `{v}` not an integer"))
                }
                Some(_) => {}
            }
        }
        // An answer documented without content (hyper's 431) must come with an empty body.
        if resp.get("content").is_none() {
            if !body.is_empty() {
                errs.push(format!("{what}: a body where none is documented"));
            }
            return errs;
        }
        let ctype = header("content-type").unwrap_or("");
        let media = ctype.split(';').next().unwrap_or("").trim();
        let Some((_, content)) = resp["content"]
            .as_object()
            .into_iter()
            .flatten()
            .find(|(k, _)| k.split(';').next().unwrap_or("").trim() == media)
        else {
            errs.push(format!("{what}: content type `{ctype}` not documented"));
            return errs;
        };
        if media == "application/json" {
            let v: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return vec![format!("{what}: body not JSON: {e}")],
            };
            match self.validator(&content["schema"]) {
                Ok(val) => errs.extend(
                    val.iter_errors(&v)
                        .map(|e| format!("{what}: {e} at {} in {v}", e.instance_path)),
                ),
                Err(e) => errs.push(format!("{what}: schema: {e}")),
            }
        } else if std::str::from_utf8(body).is_err() {
            errs.push(format!("{what}: text body not UTF-8"));
        }
        errs
    }
}

/// A real HTTP/1.1 exchange over a plain socket (the test controls every byte, including a
/// body that never arrives); returns (status, headers, body).
fn raw(port: u16, request: &[u8]) -> Result<Answer, Box<dyn std::error::Error>> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(request)?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header end")?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: buf[split + 4..].to_vec(),
    })
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

async fn send(r: reqwest::RequestBuilder) -> Result<Answer, Box<dyn std::error::Error>> {
    let resp = r.send().await?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let body = resp.bytes().await?.to_vec();
    Ok(Answer {
        status,
        headers,
        body,
    })
}

fn config(dir: &Path, mqtt: u16, http: u16) -> Result<PathBuf, Box<dyn std::error::Error>> {
    write_secret(&dir.join("pos.token"), format!("{TOKEN}\n"))?;
    write_config(
        dir,
        mqtt,
        "",
        &format!(
            r#"[spool.pos]
max_bytes = "64KiB"
max_age = "30d"

[sources.pos]
enabled = true
default_currency = "EUR"

[sources.pos.http]
token_file = "{token}"
body_limit = "16KiB"
body_timeout = "1s"
"#,
            token = dir.join("pos.token").display()
        ),
    )
    .and_then(|p| {
        let text = std::fs::read_to_string(&p)?.replace(
            "[http]\nenabled = false",
            &format!("[http]\nenabled = true\nlisten = \"127.0.0.1:{http}\"\nmax_connections = 6"),
        );
        std::fs::write(&p, text)?;
        Ok(p)
    })
}

fn sale(id: &str, cents: i64) -> Value {
    json!({"transaction_id": id, "register": "R1", "business_day": "2026-11-28",
        "time": "2026-11-28T10:15:00+01:00", "currency": "EUR",
        "lines": [{"sku": "4006381333931", "description": "Pencil", "qty": 1, "amount_minor": cents}],
        "totals": {"total_minor": cents}, "tenders": [{"type": "cash", "amount_minor": cents}]})
}

#[test]
fn document_examples_match_their_schemas() -> TestResult {
    let api = Api::load()?;
    let input =
        jsonschema::validator_for(&load("pos.input.schema.json")?).map_err(|e| e.to_string())?;
    let post = &api.doc["paths"]["/v1/pos/transactions"]["post"];
    let examples = post["requestBody"]["content"]["application/json"]["examples"]
        .as_object()
        .ok_or("no request examples")?;
    for (name, ex) in examples {
        let items = match &ex["value"] {
            Value::Array(a) => a.clone(),
            v => vec![v.clone()],
        };
        for tx in items {
            let errs: Vec<String> = input.iter_errors(&tx).map(|e| e.to_string()).collect();
            assert!(errs.is_empty(), "request example {name}: {errs:?}");
        }
    }
    let mut checked = 0;
    for (path, ops) in api.doc["paths"].as_object().ok_or("no paths")? {
        for (method, op) in ops.as_object().ok_or("no operations")? {
            for (code, resp) in op["responses"].as_object().ok_or("no responses")? {
                for (media, c) in resp["content"].as_object().into_iter().flatten() {
                    if media != "application/json" {
                        continue;
                    }
                    let v = api.validator(&c["schema"])?;
                    let exs: Vec<&Value> = c["example"]
                        .as_object()
                        .map(|_| vec![&c["example"]])
                        .unwrap_or_else(|| {
                            c["examples"]
                                .as_object()
                                .into_iter()
                                .flat_map(|m| m.values().map(|e| &e["value"]))
                                .collect()
                        });
                    for ex in exs {
                        let errs: Vec<String> = v.iter_errors(ex).map(|e| e.to_string()).collect();
                        assert!(errs.is_empty(), "{method} {path} {code}: {errs:?}");
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked >= 9, "only {checked} response examples");
    // The bodies the live test sends and the daemon stores are valid input as documented.
    let mut big = sale("F-1", 4000);
    big["lines"][0]["qty"] = json!("2.5");
    big["lines"][0]["unit_price"] = json!("1.60");
    if let Some(l) = big["lines"][0].as_object_mut() {
        l.remove("amount_minor");
    }
    for tx in [sale("T-1", 250), big] {
        let errs: Vec<String> = input.iter_errors(&tx).map(|e| e.to_string()).collect();
        assert!(errs.is_empty(), "{tx}: {errs:?}");
    }
    let mut no_amount = sale("T-9", 1);
    if let Some(l) = no_amount["lines"][0].as_object_mut() {
        l.remove("amount_minor");
    }
    assert!(
        !input.is_valid(&no_amount),
        "a line without any amount must be invalid"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_answers_conform_to_the_openapi_document() -> TestResult {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = Api::load()?;
    let dir = tempfile::tempdir()?;
    let http = free_port();
    // No broker at this port: nothing drains, so the 64 KiB POS spool fills up for the 503.
    let cfg = config(dir.path(), free_port(), http)?;
    let _gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    let base = format!("http://127.0.0.1:{http}");
    let url = format!("{base}/v1/pos/transactions");
    let c = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(20);
    while c.get(format!("{base}/healthz")).send().await.is_err() {
        if Instant::now() > until {
            return Err(format!("gateway HTTP did not come up: {}", _gw.log_text()).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut problems = Vec::new();
    let mut expect = |what: &str, a: &Answer, path: &str, method: &str, status: u16| {
        seen.insert((path.to_string(), status));
        if a.status != status {
            problems.push(format!(
                "{what}: got {} expected {status}: {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            ));
        }
        problems.extend(
            api.check(path, method, a.status, &a.headers, &a.body)
                .into_iter()
                .map(|p| format!("{what}: {p}")),
        );
    };
    let p = "/v1/pos/transactions";
    let post = |body: Value| c.post(&url).bearer_auth(TOKEN).json(&body);

    let a = send(post(sale("T-1", 250))).await?;
    expect("new", &a, p, "post", 201);
    let a = send(post(json!([sale("T-1", 250)]))).await?;
    expect("replay", &a, p, "post", 200);
    let a = send(post(sale("T-1", 999))).await?;
    expect("conflict", &a, p, "post", 409);
    let a = send(c.post(&url).json(&sale("T-2", 100))).await?;
    expect("no token", &a, p, "post", 401);
    let a = send(c.post(&url).bearer_auth("wrong").json(&sale("T-2", 100))).await?;
    expect("wrong token", &a, p, "post", 401);
    let mut bad_time = sale("T-3", 100);
    bad_time["time"] = "yesterday".into();
    let a = send(post(json!([sale("T-4", 100), bad_time]))).await?;
    expect("bad field", &a, p, "post", 400);
    let a = send(
        c.post(&url)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body("{\"transaction_id\": "),
    )
    .await?;
    expect("not JSON", &a, p, "post", 400);
    let a = send(
        c.post(&url)
            .bearer_auth(TOKEN)
            .header("content-type", "text/csv")
            .body("a,b"),
    )
    .await?;
    expect("content type", &a, p, "post", 415);
    let big: Vec<Value> = (0..200).map(|i| sale(&format!("B-{i}"), 100)).collect();
    let a = send(post(json!(big))).await?;
    expect("oversize", &a, p, "post", 413);
    let a = send(
        c.post(&url)
            .bearer_auth(TOKEN)
            .header("content-type", "application/x-ndjson")
            .body(format!("{}\n{}\n", sale("L-1", 100), sale("L-2", 200))),
    )
    .await?;
    expect("json lines", &a, p, "post", 201);
    // A body that never arrives: 408 after body_timeout (1 s).
    let a = tokio::task::spawn_blocking(move || {
        raw(
            http,
            format!(
                "POST /v1/pos/transactions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"transaction_id\""
            )
            .as_bytes(),
        )
        .map_err(|e| e.to_string())
    })
    .await??;
    expect("slow body", &a, p, "post", 408);
    for path in ["/healthz", "/metrics"] {
        let a = send(c.get(format!("{base}{path}"))).await?;
        expect(path, &a, path, "get", 200);
    }
    // A request head over the 64 KiB a connection reads ahead: 431, on every path.
    for (path, method) in [(p, "post"), ("/healthz", "get"), ("/metrics", "get")] {
        let req = format!(
            "{} {path} HTTP/1.1\r\nHost: localhost\r\nX-Padding: {}\r\nContent-Length: 0\r\n\r\n",
            method.to_uppercase(),
            "a".repeat(70 * 1024)
        );
        let a = tokio::task::spawn_blocking(move || {
            raw(http, req.as_bytes()).map_err(|e| e.to_string())
        })
        .await??;
        expect("head too large", &a, path, method, 431);
    }
    // Fill the POS spool (no broker drains it): the till is told to come back later.
    let lines: Vec<Value> = (0..40)
        .map(|i| json!({"sku": format!("SKU-{i:05}"), "description": "a fairly long item description for size", "amount_minor": 100}))
        .collect();
    let mut full = None;
    for i in 0..300 {
        let mut tx = sale(&format!("F-{i}"), 4000);
        tx["lines"] = json!(lines);
        let a = send(post(tx)).await?;
        if a.status != 201 {
            full = Some(a);
            break;
        }
    }
    let a = full.ok_or("the POS spool never filled")?;
    expect("spool full", &a, p, "post", 503);
    // Every connection slot taken by idle clients: one more is refused at once.
    let idle: Vec<std::net::TcpStream> = (0..6)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", http)).ok())
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for path in ["/metrics", p] {
        let req = if path == p {
            format!("POST {p} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
        } else {
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
        };
        let a = tokio::task::spawn_blocking(move || {
            raw(http, req.as_bytes()).map_err(|e| e.to_string())
        })
        .await??;
        let method = if path == p { "post" } else { "get" };
        expect("connection cap", &a, path, method, 503);
    }
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = send(c.get(format!("{base}/healthz"))).await?;
    expect("saturated health", &a, "/healthz", "get", 503);
    assert!(problems.is_empty(), "{problems:#?}");
    // Every documented status of the POST was produced by the real daemon.
    let documented: Vec<u16> = api.doc["paths"][p]["post"]["responses"]
        .as_object()
        .ok_or("no responses")?
        .keys()
        .filter_map(|k| k.parse().ok())
        .collect();
    for code in documented {
        assert!(
            seen.contains(&(p.to_string(), code)),
            "documented {code} never seen"
        );
    }
    Ok(())
}
