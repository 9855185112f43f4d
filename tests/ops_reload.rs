//! SIGHUP reload of the running binary: log level and simulator rate apply at once, a change
//! that needs a restart is named, a bad file is rejected and delivery goes on.

mod common;
use common::*;
use std::time::Duration;

/// Delivered ids over `secs` seconds.
async fn delivered_during(sub: &Subscriber, secs: u64) -> usize {
    let before = sub.unique();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    sub.unique() - before
}

async fn wait_log(gw: &Gateway, needle: &str) -> bool {
    for _ in 0..50 {
        if gw.log_text().contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_live_settings_and_rejects_a_bad_file() -> TestResult {
    require_mosquitto!();
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), "")?;
    let sub = Subscriber::start(broker.port, "storegw/v1/#", 0, None).await;
    let cfg = write_config(
        dir.path(),
        broker.port,
        "",
        "[sources.sim]\nenabled = true\nrate = 20.0\nseed = 9\n",
    )?;
    let original = std::fs::read_to_string(&cfg)?;
    let gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    assert!(sub.wait_for(20, Duration::from_secs(20)).await >= 20);
    let slow = delivered_during(&sub, 3).await;
    assert!(
        !gw.log_text().contains("DEBUG"),
        "debug lines at level info"
    );

    // Live: log level and simulator rate. Restart-only: the broker host (named, not applied).
    let changed = original
        .replace("level = \"info\"", "level = \"debug\"")
        .replace("rate = 20.0", "rate = 1000.0")
        .replace("host = \"127.0.0.1\"", "host = \"localhost\"");
    std::fs::write(&cfg, &changed)?;
    unsafe_kill(gw.child.id(), 1);
    assert!(
        wait_log(&gw, "configuration reloaded").await,
        "log:\n{}",
        gw.log_text()
    );
    assert!(wait_log(&gw, "only after a restart").await);
    let log = gw.log_text();
    assert!(
        log.contains("mqtt.host"),
        "restart-only key not named:\n{log}"
    );
    assert!(wait_log(&gw, "DEBUG").await, "level not applied:\n{log}");
    let fast = delivered_during(&sub, 3).await;
    eprintln!("delivered in 3 s: {slow} at 20/s, {fast} at 1000/s");
    assert!(fast > slow * 5, "rate not applied: {slow} then {fast}");

    // A bad file: rejected with file:line: key, the gateway keeps running and delivering.
    let bad = changed.replace("rate = 1000.0", "rate = \"fast\"");
    std::fs::write(&cfg, &bad)?;
    unsafe_kill(gw.child.id(), 1);
    assert!(wait_log(&gw, "configuration rejected").await);
    let log = gw.log_text();
    let line = bad
        .lines()
        .position(|l| l.contains("\"fast\""))
        .map(|i| i + 1)
        .unwrap_or(0);
    let located = format!("{}:{line}: sources.sim.rate", cfg.display());
    assert!(log.contains(&located), "no `{located}` in:\n{log}");
    let after = delivered_during(&sub, 2).await;
    assert!(
        after > 100,
        "delivery stopped after a rejected reload: {after}"
    );
    let mut gw = gw;
    assert!(gw.child.try_wait()?.is_none(), "the gateway exited");
    assert!(gw.sigterm_and_wait(Duration::from_secs(20)).is_some());
    Ok(())
}

/// One canonical POS transaction as a JSON-lines export file.
const TX_JSONL: &str = "{\"transaction_id\":\"RL-1\",\"register\":\"R1\",\"currency\":\"EUR\",\"lines\":[{\"sku\":\"S-1\",\"qty\":1,\"amount_minor\":100}],\"totals\":{\"total_minor\":100},\"tenders\":[{\"type\":\"cash\",\"amount_minor\":100}]}\n";

/// Live class: a reloaded `sources.pos.watch` is really watched (a file dropped in the new
/// directory is stored and published) and the old directory no longer is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_pos_watch_directories() -> TestResult {
    require_mosquitto!();
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), "")?;
    let sub = Subscriber::start(broker.port, "storegw/v1/s042/gw1/pos", 0, None).await;
    let pos = |inbox: &str| {
        format!(
            "[sources.pos]\nenabled = true\n[sources.pos.http]\nenabled = false\n\
             [[sources.pos.watch]]\ndir = \"{inbox}\"\nformat = \"jsonl\"\ninterval = \"200ms\"\nsettle = \"200ms\"\n"
        )
    };
    let cfg = write_config(dir.path(), broker.port, "", &pos("inbox_a"))?;
    let gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    assert!(wait_log(&gw, "watching for POS export files").await);

    let changed = std::fs::read_to_string(&cfg)?.replace("inbox_a", "inbox_b");
    std::fs::write(&cfg, &changed)?;
    unsafe_kill(gw.child.id(), 1);
    assert!(wait_log(&gw, "configuration reloaded").await);
    let log = gw.log_text();
    assert!(
        log.contains("applied=sources.pos.watch"),
        "live key not reported as applied:\n{log}"
    );
    assert!(
        !log.contains("only after a restart"),
        "live key reported as restart-only:\n{log}"
    );
    let inbox = dir.path().join("inbox_b");
    for _ in 0..50 {
        if inbox.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(inbox.join("t.jsonl.part"), TX_JSONL)?;
    std::fs::rename(inbox.join("t.jsonl.part"), inbox.join("t.jsonl"))?;
    assert!(
        sub.wait_for(1, Duration::from_secs(20)).await >= 1,
        "file in the reloaded watch directory not published:\n{}",
        gw.log_text()
    );
    let mut gw = gw;
    assert!(gw.sigterm_and_wait(Duration::from_secs(20)).is_some());
    Ok(())
}

/// Restart class: keys the running gateway cannot apply (the Wi-Fi interface, POS parsing
/// defaults) are named as needing a restart, not as applied, in the log and in the status file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reports_restart_only_keys() -> TestResult {
    require_mosquitto!();
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), "")?;
    let cfg = write_config(
        dir.path(),
        broker.port,
        "",
        "[sources.sim]\nenabled = true\nrate = 5.0\n\
         [sources.wifi]\ninterface = \"wlan1\"\n\
         [sources.pos]\ndefault_currency = \"EUR\"\n",
    )?;
    let gw = Gateway::start(&cfg, &dir.path().join("gw.log"))?;
    assert!(wait_log(&gw, "storegw started").await);
    let changed = std::fs::read_to_string(&cfg)?
        .replace("\"wlan1\"", "\"wlan2\"")
        .replace("\"EUR\"", "\"GBP\"");
    std::fs::write(&cfg, &changed)?;
    unsafe_kill(gw.child.id(), 1);
    assert!(wait_log(&gw, "only after a restart").await);
    let log = gw.log_text();
    let applied = log
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap_or_default();
    assert!(
        applied.contains("applied=(nothing)"),
        "restart-only keys reported as applied: {applied}"
    );
    let restart = log
        .lines()
        .find(|l| l.contains("only after a restart"))
        .unwrap_or_default();
    for key in ["sources.wifi.interface", "sources.pos.default_currency"] {
        assert!(restart.contains(key), "{key} not named: {restart}");
    }
    let mut pending = Vec::new();
    for _ in 0..100 {
        if let Some(s) = status_file(dir.path()) {
            pending = s["pending_restart"].as_array().cloned().unwrap_or_default();
            if !pending.is_empty() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        pending,
        [
            serde_json::json!("sources.pos.default_currency"),
            serde_json::json!("sources.wifi.interface")
        ],
        "status file pending_restart"
    );
    let mut gw = gw;
    assert!(gw.sigterm_and_wait(Duration::from_secs(20)).is_some());
    Ok(())
}
