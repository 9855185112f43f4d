//! A gateway killed (SIGKILL) in the middle of importing a large export file, then restarted:
//! every transaction of the file is published, none twice.

mod common;

use common::{Gateway, Mosquitto, Subscriber};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

type R = Result<(), Box<dyn std::error::Error>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_file_imports_nothing_twice() -> R {
    require_mosquitto!();
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(dir.path(), "")?;
    let sub = Subscriber::start(broker.port, "storegw/v1/+/+/pos", 1_000_000, None).await;
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox)?;
    let cfg = common::write_config(
        dir.path(),
        broker.port,
        "",
        &format!(
            "[sources.pos]\nenabled = true\ndefault_currency = \"GBP\"\n[sources.pos.http]\nenabled = false\n[[sources.pos.watch]]\ndir = \"{}\"\ninterval = \"100ms\"\nsettle = \"200ms\"\n",
            inbox.display()
        ),
    )?;
    let n = 60_000;
    let mut csv = String::from(
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n",
    );
    for i in 0..n {
        csv.push_str(&format!(
            "{},S{},\"ITEM, NO {i}\",2,2011-02-06 11:11:00,1.25,,United Kingdom\n",
            600000 + i,
            i % 97
        ));
    }
    std::fs::write(inbox.join(".big.csv.tmp"), &csv)?;
    let log = dir.path().join("gw.log");
    let mut gw = Gateway::start(&cfg, &log)?;
    std::fs::rename(inbox.join(".big.csv.tmp"), inbox.join("big.csv"))?;
    // Kill as soon as part of the file is durable and published.
    let until = Instant::now() + Duration::from_secs(60);
    while sub.unique() == 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.sigkill();
    let at_kill = sub.unique();
    assert!(at_kill > 0, "nothing published before the kill");
    assert!(
        inbox.join("big.csv").exists(),
        "file finished before the kill; make it larger"
    );
    let _gw = Gateway::start(&cfg, &log)?;
    let got = sub.wait_for(n, Duration::from_secs(180)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Distinct event ids per transaction: QoS 1 may redeliver an id, but a transaction stored
    // twice would show up under two ids.
    let mut per_tx: HashMap<String, HashSet<String>> = HashMap::new();
    for p in sub
        .got
        .lock()
        .map(|r| r.payloads.clone())
        .unwrap_or_default()
    {
        for e in p["events"].as_array().into_iter().flatten() {
            per_tx
                .entry(e["transaction_id"].as_str().unwrap_or_default().to_string())
                .or_default()
                .insert(e["id"].as_str().unwrap_or_default().to_string());
        }
    }
    let dup_ids = sub.got.lock().map(|r| r.duplicates()).unwrap_or(0);
    let twice = per_tx.values().filter(|ids| ids.len() > 1).count();
    eprintln!("killed after {at_kill} published; {got} unique events, {dup_ids} redelivered ids");
    assert_eq!(sub.unique(), n);
    assert_eq!(per_tx.len(), n);
    assert_eq!(twice, 0, "transactions stored twice");
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until && inbox.join("big.csv").exists() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!inbox.join("big.csv").exists(), "imported file not deleted");
    Ok(())
}
