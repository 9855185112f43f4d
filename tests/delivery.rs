//! End-to-end delivery against a real mosquitto: every id counted, through broker restarts,
//! SIGKILL of the gateway and a full spool.

mod common;
use common::*;
use std::time::Duration;

fn sim(rate: u32, limit: u64) -> String {
    format!("[sources.sim]\nenabled = true\nrate = {rate}.0\nseed = 3\nlimit = {limit}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_100k_events_each_id_seen_and_schema_valid() -> TestResult {
    require_mosquitto!();
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), "")?;
    let sub = Subscriber::start(broker.port, "storegw/v1/#", 400, None).await;
    let cfg = write_config(
        dir.path(),
        broker.port,
        "batch_max_events = 1000\nmax_inflight = 64",
        &sim(25_000, 100_000),
    )?;
    let gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    let got = sub.wait_for(100_000, Duration::from_secs(120)).await;
    assert_eq!(got, 100_000, "log:\n{}", gw.log_text());
    let schemas = Schemas::load()?;
    let r = sub.got.lock().map_err(|_| "poisoned")?;
    assert_eq!(r.duplicates(), 0);
    assert!(r.counts.keys().all(|id| id.starts_with("gw1:")));
    for k in storegw::event::EventKind::ALL {
        assert!(
            r.per_kind.get(k.as_str()).copied().unwrap_or(0) > 0,
            "no {k} delivered"
        );
    }
    for p in &r.payloads {
        let errs = schemas.check_batch(p);
        assert!(errs.is_empty(), "schema errors: {errs:?}");
    }
    assert!(!r.status.is_empty(), "no status message");
    for s in &r.status {
        let errs: Vec<String> = schemas
            .status
            .iter_errors(s)
            .map(|e| e.to_string())
            .collect();
        assert!(errs.is_empty(), "status schema errors: {errs:?} in {s}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarted_five_times_loses_nothing() -> TestResult {
    require_mosquitto!();
    let dir = tempfile::tempdir()?;
    let mut broker = Mosquitto::start(&dir.path().join("broker"), "")?;
    let sub = Subscriber::start(broker.port, "storegw/v1/#", 0, None).await;
    let (batch, inflight) = (100usize, 8usize);
    // scripts/faults raises this to 20; the flow lasts as long as the restarts.
    let restarts: usize = std::env::var("STOREGW_BROKER_RESTARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let total = 6_000 * restarts as u64;
    let cfg = write_config(
        dir.path(),
        broker.port,
        &format!("batch_max_events = {batch}\nmax_inflight = {inflight}"),
        &sim(3_000, total),
    )?;
    let gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    for _ in 0..restarts {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        broker.stop();
        tokio::time::sleep(Duration::from_millis(700)).await;
        broker.restart()?;
    }
    let got = sub.wait_for(total as usize, Duration::from_secs(90)).await;
    assert_eq!(got, total as usize, "ids lost; log:\n{}", gw.log_text());
    let dups = sub.got.lock().map(|r| r.duplicates()).unwrap_or(0);
    eprintln!("broker restarts: {restarts}, delivered {got}, duplicates {dups}");
    assert!(
        dups <= (restarts * batch * inflight) as u64,
        "duplicates {dups} exceed {restarts} × the in-flight window"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_flow_loses_no_flushed_event() -> TestResult {
    require_mosquitto!();
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), "")?;
    let sub = Subscriber::start(broker.port, "storegw/v1/#", 0, None).await;
    let total = 6_000u64;
    // The simulator finishes in about a second; the drain-rate limit keeps publishing going for
    // several more, so the kill lands mid-flow with everything produced already flushed.
    let cfg = write_config(
        dir.path(),
        broker.port,
        "drain_rate = 800\nbatch_max_events = 100",
        &sim(6_000, total),
    )?;
    let mut gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let before = sub.unique();
    gw.sigkill();
    assert!(
        before > 0 && (before as u64) < total,
        "kill did not land mid-flow ({before})"
    );
    // Restart without the simulator: only the spool's content is delivered.
    let cfg2 = write_config(dir.path(), broker.port, "batch_max_events = 500", "")?;
    let gw2 = Gateway::start(&cfg2, &dir.path().join("gw2.log"))?;
    let got = sub.wait_for(total as usize, Duration::from_secs(60)).await;
    assert_eq!(
        got as u64,
        total,
        "delivered before kill {before}; log:\n{}",
        gw2.log_text()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_small_spool_drops_oldest_sensor_refuses_pos() -> TestResult {
    require_mosquitto!();
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let cfg = write_config(
        dir.path(),
        port,
        "",
        &format!(
            "[spool]\nflush_interval = \"200ms\"\n[spool.ble]\nmax_bytes = \"64KiB\"\nmax_age = \"1h\"\n[spool.wifi]\nmax_bytes = \"64KiB\"\nmax_age = \"1h\"\n[spool.pos]\nmax_bytes = \"64KiB\"\nmax_age = \"1h\"\n\n{}",
            sim(4_000, 20_000)
        ),
    )?;
    let mut gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    tokio::time::sleep(Duration::from_secs(11)).await;
    let st = status_file(dir.path()).ok_or("no status file")?;
    let drops = &st["drops"];
    assert!(drops["ble"]["spool_full"].as_u64().unwrap_or(0) > 0, "{st}");
    assert!(
        drops["wifi"]["spool_full"].as_u64().unwrap_or(0) > 0,
        "{st}"
    );
    assert!(
        drops["pos"]["refused_full"].as_u64().unwrap_or(0) > 0,
        "{st}"
    );
    assert!(
        drops["pos"].get("spool_full").is_none(),
        "POS must never be dropped: {st}"
    );
    for s in ["ble", "wifi", "pos"] {
        assert!(
            st["spool"][s]["bytes"].as_u64().unwrap_or(u64::MAX) <= 64 * 1024,
            "{st}"
        );
    }
    gw.sigterm_and_wait(Duration::from_secs(10));
    // Now the broker comes up: what is left is delivered, and it is the newest sensor data.
    let _broker = Mosquitto::start_on(&dir.path().join("broker"), port, "")?;
    let sub = Subscriber::start(port, "storegw/v1/#", 0, None).await;
    let depth: u64 = ["ble", "wifi", "pos"]
        .iter()
        .map(|s| st["spool"][s]["depth"].as_u64().unwrap_or(0))
        .sum();
    let _gw2 = Gateway::start(&cfg, &dir.path().join("gw2.log"))?;
    let got = sub.wait_for(depth as usize, Duration::from_secs(30)).await;
    assert!(got as u64 >= depth, "spooled {depth}, delivered {got}");
    Ok(())
}
