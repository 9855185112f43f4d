//! The POS HTTP push as a till fleet uses it: the storegw binary as its own process, with a
//! real mosquitto and a counting subscriber, fed 200k small transactions in requests of 1000
//! (an end-of-day export, a till catching up) and of 1 (tills pushing each sale). Measured from
//! /proc: transactions/s, CPU seconds of the gateway process from the first request until the
//! subscriber has every transaction, and its peak RSS. Beside it, the floor of the same work
//! measured in this process in the same run: `serde_json` parsing the same bodies plus one sled
//! insert and one flush per request. The spool's bytes per transaction are measured with the
//! broker down (the backlog a store builds while its uplink is out).

use super::{
    clock_ticks, counting_subscriber, dir_bytes, proc_cpu_ticks, proc_status_kb, start_broker,
    wait_count, Row,
};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How much to push.
#[derive(Debug, Clone, Copy)]
pub struct PushLoad {
    /// Transactions in the bulk run (requests of 1000).
    pub bulk: u64,
    /// Transactions in the single run (requests of 1).
    pub single: u64,
    /// Concurrent connections of the single run (tills pushing at the same time).
    pub clients: usize,
}

const TOKEN: &str = "bench-pos-token-0123456789";

/// One small transaction as a till sends it: two lines, one card tender, totals stated.
pub fn transaction(i: u64) -> String {
    format!(
        concat!(
            r#"{{"transaction_id":"T{i:08}","register":"R{r}","time":"2026-12-02T10:{m:02}:{s:02}Z","#,
            r#""currency":"EUR","type":"sale","lines":["#,
            r#"{{"sku":"SKU-{sku}","description":"Coffee beans 1kg","qty":1,"unit_price_minor":1299,"amount_minor":1299}},"#,
            r#"{{"sku":"SKU-7","description":"Milk 1l","qty":2,"unit_price_minor":119,"amount_minor":238}}],"#,
            r#""tenders":[{{"type":"card","amount_minor":1537,"card_brand":"visa"}}],"#,
            r#""totals":{{"total_minor":1537}}}}"#
        ),
        i = i,
        r = i % 8,
        m = (i / 60) % 60,
        s = i % 60,
        sku = i % 997
    )
}

/// Request bodies: JSON arrays of `per` transactions, numbered from `first`.
pub fn bodies(first: u64, n: u64, per: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = first;
    let end = first + n;
    while i < end {
        let k = per.min(end - i);
        let mut b = String::with_capacity(k as usize * 420 + 2);
        b.push('[');
        for j in 0..k {
            if j > 0 {
                b.push(',');
            }
            b.push_str(&transaction(i + j));
        }
        b.push(']');
        out.push(b.into_bytes());
        i += k;
    }
    out
}

/// The gateway process under test, killed on drop.
struct Gateway {
    child: Child,
    port: u16,
    state: std::path::PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway(dir: &Path, mqtt_port: u16) -> Result<Gateway, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let port = crate::demo::free_port()?;
    let token = dir.join("pos.token");
    std::fs::write(&token, TOKEN).map_err(|e| e.to_string())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
    }
    let state = dir.join("state");
    let conf = dir.join("storegw.toml");
    std::fs::write(
        &conf,
        format!(
            "[gateway]\nstore_id = \"bench\"\ngateway_id = \"gw1\"\nstate_dir = \"{}\"\n\
             [mqtt]\nport = {mqtt_port}\nreconnect_min = \"100ms\"\nreconnect_max = \"1s\"\n\
             [spool]\npos = {{ max_bytes = \"4GiB\", max_age = \"7d\" }}\n\
             [http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n\
             [log]\nlevel = \"warn\"\nformat = \"text\"\n\
             [sources.pos]\nenabled = true\n[sources.pos.http]\nenabled = true\ntoken_file = \"{}\"\n\
             body_limit = \"4MiB\"\n",
            state.display(),
            token.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    // The store's gateway (`super::gateway_exe`); STOREGW_BENCH_GATEWAY may also name the
    // size-optimized release build that ships, measured with this bench's load and floor.
    let exe = super::gateway_exe()?;
    let log = dir.join("storegw.log");
    let err = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .args(["run", "--config"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start storegw: {e}"))?;
    let mut gw = Gateway { child, port, state };
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(gw);
        }
        if let Ok(Some(status)) = gw.child.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let last = text.lines().last().unwrap_or("").to_string();
            return Err(format!("storegw exited ({status}): {last}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("storegw's HTTP server did not come up".into())
}

/// Pushes every body over `clients` keep-alive connections; each must get 201.
async fn push_all(port: u16, bodies: Vec<Vec<u8>>, clients: usize) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{port}/v1/pos/transactions");
    // reqwest is built without a default TLS provider (plain HTTP here, but the builder asks).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let queue = std::sync::Arc::new(std::sync::Mutex::new(bodies));
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let queue = queue.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .map_err(|e| e.to_string())?;
            loop {
                let next = queue.lock().map_err(|e| e.to_string())?.pop();
                let Some(body) = next else {
                    return Ok::<(), String>(());
                };
                let r = client
                    .post(&url)
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = r.status();
                if status.as_u16() != 201 {
                    let text = r.text().await.unwrap_or_default();
                    return Err(format!("push answered {status}: {text}"));
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// What one run of the gateway gave.
struct Run {
    tx_per_s: f64,
    cpu_s: f64,
    peak_rss_mb: f64,
}

/// Pushes `n` transactions in requests of `per` to a fresh gateway with the broker up, and
/// waits until the subscriber has every one.
async fn run_push(bin: &Path, dir: &Path, n: u64, per: u64, clients: usize) -> Result<Run, String> {
    let broker = start_broker(bin, &dir.join("broker"))?;
    let count = counting_subscriber(broker.port, "storegw/v1/+/+/pos").await?;
    let gw = start_gateway(&dir.join("gw"), broker.port)?;
    let pid = gw.child.id();
    let bodies = bodies(0, n, per);
    // Let it connect and settle before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu0 = proc_cpu_ticks(pid).unwrap_or(0);
    let t = Instant::now();
    if let Err(e) = push_all(gw.port, bodies, clients).await {
        let log = std::fs::read_to_string(dir.join("gw/storegw.log")).unwrap_or_default();
        let why: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("WARN"))
            .rev()
            .take(3)
            .collect();
        return Err(format!("{e} (gateway log: {})", why.join(" | ")));
    }
    let pushed = t.elapsed().as_secs_f64();
    wait_count(&count, n, Duration::from_secs(600)).await?;
    let cpu1 = proc_cpu_ticks(pid).unwrap_or(0);
    let hwm_kb = proc_status_kb(pid, "VmHWM:").unwrap_or(0);
    drop(gw);
    drop(broker);
    let delivered = count.load(Ordering::Relaxed);
    if delivered < n {
        return Err(format!("only {delivered} of {n} transactions delivered"));
    }
    Ok(Run {
        tx_per_s: n as f64 / pushed,
        cpu_s: cpu1.saturating_sub(cpu0) as f64 / clock_ticks(),
        peak_rss_mb: hwm_kb as f64 / 1024.0,
    })
}

/// Bytes the spool holds per transaction after a bulk push with the broker down.
async fn backlog_bytes(dir: &Path, n: u64) -> Result<(f64, f64), String> {
    let gw = start_gateway(dir, 1)?;
    let bodies = bodies(10_000_000, n, 1000);
    let body_bytes: usize = bodies.iter().map(Vec::len).sum();
    push_all(gw.port, bodies, 1).await?;
    let state = gw.state.clone();
    drop(gw);
    let disk = dir_bytes(&state.join("spool"));
    Ok((disk as f64 / n as f64, body_bytes as f64 / n as f64))
}

/// The floor: parse each body with serde_json, insert it into sled and flush, per request.
fn floor(dir: &Path, n: u64, per: u64) -> Result<f64, String> {
    let bodies = bodies(0, n, per);
    let db = sled::Config::new()
        .path(dir.join("floor"))
        .flush_every_ms(None)
        .mode(sled::Mode::LowSpace)
        .open()
        .map_err(|e| e.to_string())?;
    let tree = db.open_tree("floor").map_err(|e| e.to_string())?;
    let t = Instant::now();
    for (k, b) in bodies.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_slice(b).map_err(|e| e.to_string())?;
        if !v.is_array() {
            return Err("floor: body is not an array".into());
        }
        tree.insert((k as u64).to_be_bytes(), b.as_slice())
            .map_err(|e| e.to_string())?;
        db.flush().map_err(|e| e.to_string())?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// The POS push rows of the report.
pub async fn pos_push(bin: &Path, dir: &Path, load: PushLoad) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let bulk = run_push(bin, &dir.join("bulk"), load.bulk, 1000, 1).await?;
    let floor_bulk = floor(&dir.join("floor-bulk"), load.bulk, 1000)?;
    let per_200k = |cpu: f64, n: u64| cpu * 200_000.0 / n as f64;
    rows.push(
        Row::new(
            &format!("POS push, {} transactions in requests of 1000", load.bulk),
            bulk.tx_per_s,
            "tx/s",
        )
        .baseline(
            "serde_json parse + sled insert + flush per request",
            floor_bulk,
        )
        .target("≥100k tx/s", bulk.tx_per_s >= 100_000.0),
    );
    rows.push(
        Row::new(
            "POS push (requests of 1000): gateway CPU per 200k transactions, until delivered",
            per_200k(bulk.cpu_s, load.bulk),
            "CPU s",
        )
        .target("≤2 CPU s", per_200k(bulk.cpu_s, load.bulk) <= 2.0),
    );
    rows.push(
        Row::new(
            "POS push (requests of 1000): gateway peak RSS",
            bulk.peak_rss_mb,
            "MiB",
        )
        .target("≤32 MiB", bulk.peak_rss_mb <= 32.0),
    );
    if load.single > 0 {
        let single = run_push(bin, &dir.join("single"), load.single, 1, load.clients).await?;
        let floor_single = floor(&dir.join("floor-single"), load.single, 1)?;
        rows.push(
            Row::new(
                &format!(
                    "POS push, {} transactions one per request, {} connections",
                    load.single, load.clients
                ),
                single.tx_per_s,
                "req/s",
            )
            .baseline(
                "serde_json parse + sled insert + flush per request",
                floor_single,
            )
            .target("≥2,000 req/s", single.tx_per_s >= 2_000.0),
        );
        rows.push(
            Row::new(
                "POS push (one per request): gateway CPU per 200k transactions, until delivered",
                per_200k(single.cpu_s, load.single),
                "CPU s",
            )
            .target(&format!("peak RSS {:.1} MiB", single.peak_rss_mb), true),
        );
    }
    let (per_tx, body_per_tx) = backlog_bytes(&dir.join("backlog"), load.bulk).await?;
    rows.push(
        Row::new(
            &format!(
                "POS spool bytes on disk per transaction at a {}-transaction backlog",
                load.bulk
            ),
            per_tx,
            "bytes",
        )
        .baseline("request body per transaction", body_per_tx)
        .target("≤1× request body", per_tx <= body_per_tx),
    );
    Ok(rows)
}
