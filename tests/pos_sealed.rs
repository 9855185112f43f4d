//! Sealed customer identifiers end to end (docs/pos.md, "Sealed customer identifiers"): the real
//! storegw binary seals the loyalty id, e-mail and phone of pushed transactions to a key made
//! by `storegw keygen --recipient`; what arrives at mosquitto validates against the schemas;
//! `storegw unseal` opens (and re-keys) the tokens; an independent HPKE implementation (Python
//! `pyhpke`, through docs/examples/unseal.py) opens them too; and everything a stolen gateway
//! holds (configuration, state directory, spool, log) plus everything it published neither opens
//! nor confirms a single identifier.

// The store build (no `unseal`) runs only the start-up refusal test.
#![cfg_attr(not(feature = "unseal"), allow(unused))]

mod common;

use common::{write_secret, Gateway, Mosquitto, Subscriber};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type R = Result<(), Box<dyn std::error::Error>>;

const TOKEN: &str = "till-token-0123456789";
const STORE: &str = "s042";

/// The customers pushed, raw, and their normalized forms (what unsealing must give back).
const RAW_EMAIL: &str = "  Dana.Sealed@Example.COM ";
const EMAIL: &str = "dana.sealed@example.com";
const RAW_PHONE: &str = "0170 555 0199";
const PHONE: &str = "+491705550199";
const LOYALTY: &str = "LOY-445566";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_storegw"))
}

fn gateway_config(dir: &Path, mqtt: u16, http: u16) -> Result<PathBuf, Box<dyn std::error::Error>> {
    write_secret(&dir.join("pos.token"), format!("{TOKEN}\n"))?;
    let rest = r#"[privacy]
recipient_keys_file = "recipient.pub"

[sources.pos]
enabled = true
default_currency = "EUR"
phone_default_country = "49"

[sources.pos.http]
token_file = "pos.token"
"#;
    common::write_config_with_http(
        dir,
        mqtt,
        "",
        &format!("enabled = true\nlisten = \"127.0.0.1:{http}\""),
        rest,
    )
}

/// The central side needs the `unseal` feature (the central team's build).
#[cfg(feature = "unseal")]
mod central {
    use super::*;

    fn keygen(prefix: &Path) -> Result<String, Box<dyn std::error::Error>> {
        let out = bin()
            .args(["keygen", "--recipient", "--out"])
            .arg(prefix)
            .output()?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn tx(id: &str, customer: Value) -> Value {
        json!({"transaction_id": id, "register": "R1", "time": "2026-11-28T10:15:00+01:00",
           "lines": [{"sku": "4006381333931", "description": "Pencil", "qty": 1, "unit_price": "2.50"}],
           "totals": {"total": "2.50"}, "customer": customer})
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

    /// Every file below `dir`, recursively.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out
    }

    fn find(hay: &[u8], needle: &[u8]) -> bool {
        !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
    }

    /// `storegw tail --json` on the test store until four events arrived, started once it
    /// subscribed (so it misses nothing the gateway publishes afterwards).
    fn tail_json(
        port: u16,
        out: &Path,
        err: &Path,
    ) -> Result<std::process::Child, Box<dyn std::error::Error>> {
        let child = bin()
            .args([
                "tail",
                "--json",
                "--broker",
                &format!("mqtt://127.0.0.1:{port}"),
            ])
            .args(["--store", STORE, "--count", "4", "--for", "60"])
            .stdout(std::fs::File::create(out)?)
            .stderr(std::fs::File::create(err)?)
            .spawn()?;
        let until = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(err)
            .unwrap_or_default()
            .contains("subscribed to")
        {
            if Instant::now() > until {
                return Err("tail --json did not subscribe".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(child)
    }

    /// (transaction id, customer field, value) of every customer field of `events`.
    fn customer_values<'a>(
        events: impl Iterator<Item = &'a Value>,
    ) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for e in events {
            for (k, v) in e["customer"].as_object().into_iter().flatten() {
                out.push((
                    e["transaction_id"].as_str().unwrap_or_default().to_string(),
                    k.clone(),
                    v.as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        out
    }

    /// Runs `storegw unseal` over `input`; returns stdout lines as JSON.
    fn unseal(args: &[&str], input: &str) -> Result<Vec<Value>, Box<dyn std::error::Error>> {
        use std::io::Write;
        let mut child = bin()
            .arg("unseal")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .ok_or("no stdin")?
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(format!("unseal: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(String::from_utf8(out.stdout)?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?)
    }

    /// pyhpke importable, installed with pip if needed; otherwise the reason to skip.
    fn pyhpke() -> Result<(), String> {
        let ok = || {
            Command::new("python3")
                .args(["-c", "import pyhpke"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if ok() {
            return Ok(());
        }
        // Debian 12's Python refuses plain installs (PEP 668); the last try goes to ~/.local.
        for extra in [
            &[][..],
            &["--user"][..],
            &["--user", "--break-system-packages"][..],
        ] {
            let _ = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet"])
                .args(extra)
                .arg("pyhpke")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if ok() {
                return Ok(());
            }
        }
        Err("python3 with pyhpke is not available and `pip install pyhpke` failed".into())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sealed_end_to_end_interop_and_stolen_gateway() -> R {
        require_mosquitto!();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir()?;
        // The central platform's key pair lives apart from the gateway's directory.
        let central = dir.path().join("central");
        let gw_dir = dir.path().join("gateway");
        std::fs::create_dir_all(&central)?;
        std::fs::create_dir_all(&gw_dir)?;
        let said = keygen(&central.join("platform"))?;
        assert!(said.contains("recipient key"), "{said}");
        let private_key = central.join("platform.key");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&private_key)?.permissions().mode() & 0o777,
            0o600
        );
        std::fs::copy(central.join("platform.pub"), gw_dir.join("recipient.pub"))?;
        std::fs::set_permissions(
            gw_dir.join("recipient.pub"),
            std::fs::Permissions::from_mode(0o644),
        )?;

        let broker = Mosquitto::start(dir.path(), "")?;
        let sub = Subscriber::start(broker.port, "storegw/v1/#", 10_000, None).await;
        // `storegw tail --json` follows the store too: its lines are another input of unseal.
        let tail_out = dir.path().join("tail.jsonl");
        let tail_err = dir.path().join("tail.err");
        let mut tail = tail_json(broker.port, &tail_out, &tail_err)?;
        let http = common::free_port();
        let cfg = gateway_config(&gw_dir, broker.port, http)?;

        // check-config names the mode and the key.
        let out = bin().arg("check-config").arg(&cfg).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("privacy.customer: sealed (default)"),
            "{text}"
        );

        let log = gw_dir.join("gw.log");
        let mut gw = Gateway::start(&cfg, &log)?;
        let base = format!("http://127.0.0.1:{http}");
        wait_http(&base)
            .await
            .map_err(|e| format!("{e}; log:\n{}", gw.log_text()))?;
        let url = format!("{base}/v1/pos/transactions");
        let c = reqwest::Client::new();
        let full = json!({"loyalty_id": LOYALTY, "email": RAW_EMAIL, "phone": RAW_PHONE});
        // The same customer twice, and once the phone alone; one transaction without a customer.
        let body = json!([
            tx("S-1", full.clone()),
            tx("S-2", full.clone()),
            tx("S-3", json!({"phone": "+49 170 555-0199"})),
            {"transaction_id": "S-4", "register": "R1", "time": "2026-11-28T10:16:00+01:00",
             "lines": [{"sku": "A", "qty": 1, "amount_minor": 100}], "totals": {"total_minor": 100}}
        ]);
        let r = c.post(&url).bearer_auth(TOKEN).json(&body).send().await?;
        assert_eq!(r.status(), 201, "{}", r.text().await?);
        // A retry of S-1 is a duplicate (its tokens would differ, its content hash does not).
        let r = c
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&json!([tx("S-1", full.clone())]))
            .send()
            .await?;
        assert_eq!(r.status(), 200, "{}", r.text().await?);
        assert_eq!(sub.wait_for(4, Duration::from_secs(20)).await, 4);
        let payloads: Vec<Value> = sub
            .got
            .lock()
            .map(|g| g.payloads.clone())
            .unwrap_or_default();
        gw.sigterm_and_wait(Duration::from_secs(10));
        let tail_status = common::wait_exit(&mut tail, Duration::from_secs(20));
        let tail_lines = std::fs::read_to_string(&tail_out)?;
        let tail_notes = std::fs::read_to_string(&tail_err)?;
        assert_eq!(
            tail_status.and_then(|s| s.code()),
            Some(0),
            "tail --json: {tail_notes}"
        );

        // Schemas: every batch and event validates (tokens included).
        let schemas = common::Schemas::load()?;
        for p in &payloads {
            let errs = schemas.check_batch(p);
            assert!(errs.is_empty(), "{errs:?}");
        }
        let events: Vec<&Value> = payloads
            .iter()
            .flat_map(|p| p["events"].as_array().into_iter().flatten())
            .collect();
        let by_id = |id: &str| {
            events
                .iter()
                .find(|e| e["transaction_id"] == id)
                .map(|e| (*e).clone())
                .unwrap_or(Value::Null)
        };
        let (s1, s2, s3, s4) = (by_id("S-1"), by_id("S-2"), by_id("S-3"), by_id("S-4"));
        assert!(s4.get("customer").is_none(), "{s4}");
        let tokens: Vec<(String, String)> = [&s1, &s2, &s3]
            .iter()
            .flat_map(|e| {
                e["customer"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            })
            .collect();
        assert_eq!(tokens.len(), 7);
        // Randomized: the same customer gives different tokens each time.
        for f in ["loyalty", "email", "phone"] {
            assert_ne!(s1["customer"][f], s2["customer"][f], "{f}");
        }
        assert_ne!(s1["customer"]["phone"], s3["customer"]["phone"]);

        // --- The central side: storegw unseal over the broker batches.
        let batches: String = payloads.iter().map(|p| format!("{p}\n")).collect();
        let key_arg = private_key.to_string_lossy().to_string();
        let opened = unseal(&["--key", &key_arg], &batches)?;
        let mut values = customer_values(
            opened
                .iter()
                .flat_map(|b| b["events"].as_array().into_iter().flatten()),
        );
        values.sort();
        let expect = |id: &str, f: &str, v: &str| (id.to_string(), f.to_string(), v.to_string());
        assert_eq!(
            values,
            vec![
                expect("S-1", "email", EMAIL),
                expect("S-1", "loyalty", LOYALTY),
                expect("S-1", "phone", PHONE),
                expect("S-2", "email", EMAIL),
                expect("S-2", "loyalty", LOYALTY),
                expect("S-2", "phone", PHONE),
                expect("S-3", "phone", PHONE),
            ]
        );
        // `storegw tail --json`: one JSON object per distinct event on stdout, nothing else (the
        // status and notes go to stderr), each with its store and gateway, so unseal needs no
        // --store and opens the same values.
        let tail_events: Vec<Value> = tail_lines
            .lines()
            .map(serde_json::from_str::<Value>)
            .collect::<Result<_, _>>()
            .map_err(|e| {
                format!("tail --json printed a line that is not JSON ({e}):\n{tail_lines}")
            })?;
        assert_eq!(tail_events.len(), 4, "{tail_lines}");
        for e in &tail_events {
            assert_eq!(e["store"], STORE, "{e}");
            assert_eq!(e["gateway"], "gw1", "{e}");
            assert_eq!(e["kind"], "pos.transaction", "{e}");
        }
        assert!(tail_notes.contains("status"), "{tail_notes}");
        for raw in [LOYALTY, EMAIL, PHONE, RAW_PHONE] {
            assert!(!tail_lines.contains(raw), "tail printed {raw}");
        }
        let mut from_tail = customer_values(unseal(&["--key", &key_arg], &tail_lines)?.iter());
        from_tail.sort();
        assert_eq!(from_tail, values, "unseal over tail --json lines");

        // Replay-style lines (bare events) need the store: with --store they open.
        let line = format!("{s3}\n");
        let o = unseal(&["--key", &key_arg, "--store", STORE], &line)?;
        assert_eq!(o[0]["customer"]["phone"], PHONE);
        // A token moved to another store or field does not open.
        let mut moved = s3.clone();
        moved["customer"]["email"] = moved["customer"]["phone"].clone();
        let out = bin()
            .args(["unseal", "--key", &key_arg, "--store", "s999"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut ch| {
                use std::io::Write;
                if let Some(mut i) = ch.stdin.take() {
                    i.write_all(format!("{moved}\n").as_bytes())?;
                }
                ch.wait_with_output()
            })?;
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
        assert!(!String::from_utf8_lossy(&out.stdout).contains(PHONE));
        // --rekey: the platform's keyed pseudonym, equal for equal customers (the join).
        let join = central.join("platform-join.key");
        write_secret(&join, "platform-join-key-0123456789")?;
        let rekeyed = unseal(
            &["--key", &key_arg, "--rekey", &join.to_string_lossy()],
            &batches,
        )?;
        let mut phones = Vec::new();
        for b in &rekeyed {
            for e in b["events"].as_array().into_iter().flatten() {
                if let Some(p) = e["customer"]["phone"].as_str() {
                    phones.push(p.to_string());
                }
            }
        }
        assert_eq!(phones.len(), 3);
        let want = storegw::privacy::customer::keyed_pseudonym(
            b"platform-join-key-0123456789",
            "phone",
            PHONE,
        )
        .unwrap_or_default();
        assert!(phones.iter().all(|p| *p == want), "{phones:?}");

        // --- Interoperability: pyhpke opens what the daemon sealed (docs/examples/unseal.py).
        // CI sets STOREGW_REQUIRE_PYHPKE: the gateway's HPKE is its own composition of
        // RFC 9180, so an independent implementation opening its tokens is not optional there.
        match pyhpke() {
            Err(why) if std::env::var_os("STOREGW_REQUIRE_PYHPKE").is_some() => {
                return Err(format!("pyhpke is required (STOREGW_REQUIRE_PYHPKE): {why}").into())
            }
            Err(why) => eprintln!("skipping the pyhpke interoperability check: {why}"),
            Ok(()) => {
                use std::io::Write;
                let script =
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/examples/unseal.py");
                let mut ch = Command::new("python3")
                    .arg(&script)
                    .arg(&private_key)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()?;
                ch.stdin
                    .take()
                    .ok_or("no stdin")?
                    .write_all(batches.as_bytes())?;
                let out = ch.wait_with_output()?;
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let mut py: Vec<(String, String)> = String::from_utf8(out.stdout)?
                    .lines()
                    .map(|l| {
                        let v: Value = serde_json::from_str(l).unwrap_or_default();
                        (
                            v["field"].as_str().unwrap_or_default().to_string(),
                            v["value"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                py.sort();
                assert_eq!(py.len(), 7, "{py:?}");
                assert_eq!(
                    py.iter()
                        .filter(|(f, v)| f == "phone" && v == PHONE)
                        .count(),
                    3
                );
                assert_eq!(
                    py.iter()
                        .filter(|(f, v)| f == "email" && v == EMAIL)
                        .count(),
                    2
                );
                assert_eq!(
                    py.iter()
                        .filter(|(f, v)| f == "loyalty" && v == LOYALTY)
                        .count(),
                    2
                );
            }
        }

        // --- What a stolen gateway reveals: its whole directory (configuration, recipient key
        // file, token, state directory with the sled spool and status, log) and what it published.
        let mut loot: Vec<(String, Vec<u8>)> = files(&gw_dir)
            .into_iter()
            .filter_map(|p| Some((p.display().to_string(), std::fs::read(&p).ok()?)))
            .collect();
        assert!(
            loot.iter().any(|(n, _)| n.contains("spool")),
            "the spool is part of the loot"
        );
        loot.push(("published".into(), batches.clone().into_bytes()));
        // 1. No identifier in the clear (raw or normalized), anywhere.
        for (name, bytes) in &loot {
            for s in [
                RAW_EMAIL.trim(),
                EMAIL,
                RAW_PHONE,
                PHONE,
                LOYALTY,
                "5550199",
            ] {
                assert!(!find(bytes, s.as_bytes()), "{s} in {name}");
            }
        }
        // 2. No private key material: the private key, in any encoding, is nowhere.
        let private_text = std::fs::read_to_string(&private_key)?;
        let b64 = private_text
            .split_whitespace()
            .next()
            .and_then(|w| w.strip_prefix("x25519-private:"))
            .ok_or("key format")?
            .to_string();
        let raw_sk = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &b64)?;
        let hex_sk: String = raw_sk.iter().map(|b| format!("{b:02x}")).collect();
        for (name, bytes) in &loot {
            assert!(
                !find(bytes, b"x25519-private"),
                "private key file in {name}"
            );
            assert!(
                !find(bytes, b64.as_bytes()),
                "private key (base64) in {name}"
            );
            assert!(
                !find(bytes, hex_sk.as_bytes()),
                "private key (hex) in {name}"
            );
            assert!(!find(bytes, &raw_sk), "private key (raw) in {name}");
        }
        // 3. Every 32-byte window of every small file on the gateway, taken as a private key,
        // opens nothing (the spool is covered by 2).
        let s3_phone = s3["customer"]["phone"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut tried = 0usize;
        for (name, bytes) in &loot {
            if bytes.len() > 16 * 1024 || name == "published" {
                continue;
            }
            for w in bytes.windows(32).step_by(3) {
                let text = format!(
                    "x25519-private:{}",
                    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, w)
                );
                let Ok(o) = storegw::privacy::sealed::Opener::new(&[text]) else {
                    continue;
                };
                tried += 1;
                assert!(
                    o.open("phone", STORE, &s3_phone).is_err(),
                    "opened with bytes of {name}"
                );
            }
        }
        assert!(tried > 100, "{tried}");
        // 4. Guessing is no test: the thief has the recipient public key and the store id, and
        // seals candidate numbers (the true one included) hoping to meet a published token. Sealing
        // is randomized, so even the right guess never matches; without the private key nothing
        // distinguishes it from a wrong one.
        let keys =
            storegw::config::recipient_keys::RecipientKeys::load(&gw_dir.join("recipient.pub"))?;
        let thief = storegw::privacy::customer::CustomerKeys::sealed(
            keys.sealing().ok_or("no key")?,
            STORE,
            "49",
        )?;
        let published: Vec<&str> = tokens.iter().map(|(_, t)| t.as_str()).collect();
        for n in 0..2000u32 {
            let guess = if n == 0 {
                PHONE.to_string()
            } else {
                format!("+4917055{:05}", n)
            };
            let p = thief
                .pseudonyms(&storegw::privacy::customer::RawCustomer {
                    phone: Some(guess),
                    ..Default::default()
                })
                .and_then(|p| p.phone)
                .unwrap_or_default();
            assert!(!published.contains(&p.as_str()));
        }
        // The contrast: with a keyed gateway's join key, the same enumeration finds the number.
        let stolen_join = b"join-key-shared-with-the-cdp-0001";
        let keyed_token = storegw::privacy::customer::keyed_pseudonym(stolen_join, "phone", PHONE)
            .unwrap_or_default();
        let found = (0..=99_999u32).find(|n| {
            storegw::privacy::customer::keyed_pseudonym(
                stolen_join,
                "phone",
                &format!("+49170555{n:04}"),
            )
            .as_deref()
                == Some(keyed_token.as_str())
        });
        assert_eq!(found, Some(199));
        Ok(())
    }
}

#[test]
fn unreadable_recipient_keys_stop_the_gateway() -> R {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let cfg = gateway_config(dir.path(), common::free_port(), common::free_port())?;
    // No recipient key file: check-config and run refuse, naming the key; nothing starts.
    for args in [vec!["check-config"], vec!["run", "--config"]] {
        let out = bin().args(&args).arg(&cfg).output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            err.contains("privacy.recipient_keys_file") && err.contains("cannot read"),
            "{err}"
        );
    }
    // A file that is not a key list: file, line and reason.
    std::fs::write(
        dir.path().join("recipient.pub"),
        "# platform keys\nx25519:bm90IGEga2V5\n",
    )?;
    let out = bin().arg("check-config").arg(&cfg).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("storegw.toml:")
            && err.contains("privacy.recipient_keys_file")
            && err.contains("recipient.pub`: line 2: recipient key has 9 bytes, not 32"),
        "{err}"
    );
    assert!(!dir.path().join("state").join("spool").exists());
    Ok(())
}
