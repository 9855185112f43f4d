//! The live scanner without hardware: a private D-Bus bus with python3-dbusmock's `bluez5`
//! template standing in for bluetoothd, the real storegw binary, a real mosquitto.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BEACON_ADDR: &str = "C0:11:22:33:44:55";
/// iBeacon manufacturer data after the company id: UUID fda50693-…, major 5, minor 6, -59 dBm.
const IBEACON: &str = "0215fda50693a4e24fb1afcfc6eb0764782500050006c5";

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Why the test cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    if !Path::new("/usr/bin/dbus-daemon").exists() {
        return Some("dbus-daemon not installed (apt-get install dbus-daemon)".into());
    }
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import dbusmock, dbus"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    (!ok).then(|| "python3-dbusmock not installed (apt-get install python3-dbusmock)".into())
}

/// A private system bus with a mocked bluetoothd on it.
struct MockBluez {
    address: String,
    _bus: Proc,
    _mock: Proc,
}

impl MockBluez {
    fn start(dir: &Path) -> Result<MockBluez, Box<dyn std::error::Error>> {
        std::fs::create_dir_all(dir)?;
        let sock = dir.join("bus");
        let conf = dir.join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"#,
                sock.display()
            ),
        )?;
        let bus = Proc(
            Command::new("/usr/bin/dbus-daemon")
                .arg(format!("--config-file={}", conf.display()))
                .arg("--nofork")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let until = Instant::now() + Duration::from_secs(10);
        while !sock.exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let address = format!("unix:path={}", sock.display());
        let mock = Proc(
            Command::new("/usr/bin/python3")
                .args(["-m", "dbusmock", "--system", "--template", "bluez5"])
                .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        Ok(MockBluez {
            address,
            _bus: bus,
            _mock: mock,
        })
    }

    /// Adds adapter hci0 and the beacon, then advertises for `seconds`; returns once the
    /// device exists.
    fn advertise(&self, seconds: f64) -> Result<Proc, Box<dyn std::error::Error>> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ble_mock/drive.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(BEACON_ADDR)
            .arg(IBEACON)
            .arg(seconds.to_string())
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        if line.trim() != "ready" {
            return Err(format!("mock driver did not get ready: {line:?}").into());
        }
        Ok(Proc(child))
    }
}

fn start_gateway(cfg: &Path, log: &Path, bus: &str) -> Result<Gateway, Box<dyn std::error::Error>> {
    let out = std::fs::File::create(log)?;
    let child = Command::new(env!("CARGO_BIN_EXE_storegw"))
        .arg("run")
        .arg("--config")
        .arg(cfg)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    Ok(Gateway {
        child,
        log: log.to_path_buf(),
    })
}

/// The mocked beacon's sightings are the point of these tests, so every beacon is known here
/// (`known_beacons = "all"` written explicitly; the default is the allowlist).
fn ble_section(stall: &str) -> String {
    format!(
        "[sources.ble]\nenabled = true\nknown_beacons = \"all\"\nwindow = \"1s\"\nstall_timeout = \"{stall}\"\nretry_interval = \"1s\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbusmock_beacon_is_published_as_sighting() -> TestResult {
    require_mosquitto!();
    if let Some(why) = missing_tools() {
        eprintln!("skipping: {why}");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let bluez = MockBluez::start(&dir.path().join("dbus"))?;
    let broker = Mosquitto::start(&dir.path().join("broker"), "")?;
    let sub = Subscriber::start(broker.port, "storegw/v1/#", 10_000, None).await;
    let _driver = bluez.advertise(20.0)?;
    let cfg = write_config(dir.path(), broker.port, "", &ble_section("30s"))?;
    let gw = start_gateway(&cfg, &dir.path().join("gw.log"), &bluez.address)?;
    let until = Instant::now() + Duration::from_secs(30);
    let mut sighting = None;
    while Instant::now() < until && sighting.is_none() {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = sub.got.lock().map_err(|_| "poisoned")?;
        sighting = r
            .payloads
            .iter()
            .flat_map(|p| p["events"].as_array().cloned().unwrap_or_default())
            .find(|e| e["kind"] == "ble.sighting");
    }
    let s =
        sighting.ok_or_else(|| format!("no ble.sighting published; log:\n{}", gw.log_text()))?;
    assert_eq!(s["beacon"]["type"], "ibeacon");
    assert_eq!(s["beacon"]["uuid"], "fda50693-a4e2-4fb1-afcf-c6eb07647825");
    assert_eq!(s["beacon"]["major"], 5);
    assert_eq!(s["beacon"]["minor"], 6);
    assert_eq!(s["tx_power"], -59);
    let rssi_max = s["rssi"]["max"].as_i64().unwrap_or(0);
    assert!((-59..=-55).contains(&rssi_max), "{s}");
    let schemas = Schemas::load()?;
    let r = sub.got.lock().map_err(|_| "poisoned")?;
    let mut text = gw.log_text();
    for p in &r.payloads {
        let errs = schemas.check_batch(p);
        assert!(errs.is_empty(), "{errs:?}");
        text.push_str(&p.to_string());
    }
    for form in [
        BEACON_ADDR,
        "c0:11:22:33:44:55",
        "C0_11_22_33_44_55",
        "c01122334455",
    ] {
        assert!(
            !text.to_lowercase().contains(&form.to_lowercase()),
            "{form} leaked"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_scanner_is_restarted_and_counted() -> TestResult {
    require_mosquitto!();
    if let Some(why) = missing_tools() {
        eprintln!("skipping: {why}");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let bluez = MockBluez::start(&dir.path().join("dbus"))?;
    let broker = Mosquitto::start(&dir.path().join("broker"), "")?;
    // Two seconds of adverts, then silence.
    let _driver = bluez.advertise(2.0)?;
    let cfg = write_config(dir.path(), broker.port, "", &ble_section("2s"))?;
    let gw = start_gateway(&cfg, &dir.path().join("gw.log"), &bluez.address)?;
    let until = Instant::now() + Duration::from_secs(40);
    let mut restarts = 0;
    while Instant::now() < until && restarts < 2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        restarts = status_file(dir.path())
            .and_then(|s| s["sources"]["ble"]["restarts"].as_u64())
            .unwrap_or(0);
    }
    let log = gw.log_text();
    assert!(restarts >= 2, "restarts {restarts}; log:\n{log}");
    assert!(log.contains("restarting the scan"), "{log}");
    assert!(log.contains("reopening the adapter"), "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bluez_fails_the_source_not_the_daemon() -> TestResult {
    require_mosquitto!();
    let dir = tempfile::tempdir()?;
    let broker = Mosquitto::start(&dir.path().join("broker"), "")?;
    let sub = Subscriber::start(broker.port, "storegw/v1/#", 100, None).await;
    let rest = format!(
        "{}\n[sources.sim]\nenabled = true\nrate = 50.0\nlimit = 20\n",
        ble_section("5s")
    );
    let cfg = write_config(dir.path(), broker.port, "", &rest)?;
    // A bus address where nothing listens: BlueZ is unreachable.
    let nobus = format!("unix:path={}", dir.path().join("nobus").display());
    let mut gw = start_gateway(&cfg, &dir.path().join("gw.log"), &nobus)?;
    let got = sub.wait_for(20, Duration::from_secs(30)).await;
    assert_eq!(
        got,
        20,
        "other sources keep running; log:\n{}",
        gw.log_text()
    );
    let until = Instant::now() + Duration::from_secs(15);
    let mut state = String::new();
    while Instant::now() < until && state != "failed" {
        tokio::time::sleep(Duration::from_millis(300)).await;
        state = status_file(dir.path())
            .and_then(|s| s["sources"]["ble"]["state"].as_str().map(String::from))
            .unwrap_or_default();
    }
    assert_eq!(state, "failed");
    assert!(gw.log_text().contains("BlueZ"), "{}", gw.log_text());
    assert!(gw.child.try_wait()?.is_none(), "daemon still running");
    let st = gw.sigterm_and_wait(Duration::from_secs(15));
    assert!(st.is_some_and(|s| s.success()), "clean exit");
    Ok(())
}

/// Every spelling of an address a log line could carry: both byte orders, upper and lower case,
/// `:` `-` `_` (BlueZ object paths) `.` and space separators, none, and Cisco-style groups.
fn address_spellings(addr: &str) -> Vec<String> {
    let bytes: Vec<String> = addr.split(':').map(|b| b.to_lowercase()).collect();
    let mut rev = bytes.clone();
    rev.reverse();
    let mut out = Vec::new();
    for b in [bytes, rev] {
        let cat = b.concat();
        let cisco = format!("{}.{}.{}", &cat[0..4], &cat[4..8], &cat[8..12]);
        let dec: Vec<String> = b
            .iter()
            .filter_map(|x| u8::from_str_radix(x, 16).ok())
            .map(|x| x.to_string())
            .collect();
        out.push(format!("[{}]", dec.join(", ")));
        for s in [
            b.join(":"),
            b.join("-"),
            b.join("_"),
            b.join("."),
            b.join(" "),
            cat.clone(),
            cisco,
        ] {
            out.push(s.to_uppercase());
            out.push(s);
        }
    }
    out
}

fn events_of(sub: &Subscriber) -> Vec<serde_json::Value> {
    sub.got
        .lock()
        .map(|r| {
            r.payloads
                .iter()
                .flat_map(|p| p["events"].as_array().cloned().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// With the default configuration a phone (or any tag) advertising an iBeacon is only counted:
/// its fixed beacon identity is never published as a sighting, presence or dwell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_ibeacon_is_only_counted_by_default() -> TestResult {
    require_mosquitto!();
    if let Some(why) = missing_tools() {
        eprintln!("skipping: {why}");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let bluez = MockBluez::start(&dir.path().join("dbus"))?;
    let broker = Mosquitto::start(&dir.path().join("broker"), "")?;
    let sub = Subscriber::start(broker.port, "storegw/v1/#", 10_000, None).await;
    let _driver = bluez.advertise(20.0)?;
    let ble = "[sources.ble]\nenabled = true\nwindow = \"1s\"\nstall_timeout = \"30s\"\nretry_interval = \"1s\"\nabsence_timeout = \"2s\"\n";
    let cfg = write_config(dir.path(), broker.port, "", ble)?;
    let gw = start_gateway(&cfg, &dir.path().join("gw.log"), &bluez.address)?;
    let until = Instant::now() + Duration::from_secs(30);
    let mut counted = 0;
    while Instant::now() < until && counted < 3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        counted = events_of(&sub)
            .iter()
            .filter(|e| e["kind"] == "ble.census" && e["devices"].as_u64().unwrap_or(0) >= 1)
            .count();
    }
    let log = gw.log_text();
    assert!(
        counted >= 3,
        "the device is counted in ble.census; log:\n{log}"
    );
    assert!(log.contains("no beacon is known"), "{log}");
    let events = events_of(&sub);
    for e in &events {
        assert!(
            e["kind"] != "ble.sighting" && e["kind"] != "ble.presence",
            "beacon identity published: {e}"
        );
        let text = e.to_string().to_lowercase();
        assert!(!text.contains("fda50693"), "iBeacon UUID published: {e}");
    }
    Ok(())
}

/// At `log.level = "trace"` no log line carries the scanned address in any spelling, BlueZ
/// object paths (`/org/bluez/hci0/dev_C0_11_…`) included, in text and JSON; the libraries
/// (btleplug, bluez-async, rumqttc, sled) stay at warn. `STOREGW_LOG=trace` lifts that cap for
/// every library but the BLE stack, whose lines below error (object paths, property maps with
/// names and payloads) are withheld whatever the filter; the rest is scrubbed as it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_carry_no_ble_address() -> TestResult {
    require_mosquitto!();
    if let Some(why) = missing_tools() {
        eprintln!("skipping: {why}");
        return Ok(());
    }
    for (format, env_filter) in [
        ("text", ""),
        ("json", ""),
        ("text", "trace"),
        ("json", "trace"),
    ] {
        let what = format!("format {format}, STOREGW_LOG={env_filter:?}");
        let dir = tempfile::tempdir()?;
        let bluez = MockBluez::start(&dir.path().join("dbus"))?;
        let broker = Mosquitto::start(&dir.path().join("broker"), "")?;
        let sub = Subscriber::start(broker.port, "storegw/v1/#", 10_000, None).await;
        let _driver = bluez.advertise(20.0)?;
        let cfg = write_config(dir.path(), broker.port, "", &ble_section("30s"))?;
        let text = std::fs::read_to_string(&cfg)?
            .replace("level = \"info\"", "level = \"trace\"")
            .replace("format = \"text\"", &format!("format = \"{format}\""));
        std::fs::write(&cfg, text)?;
        let log_path = dir.path().join("gw.log");
        let out = std::fs::File::create(&log_path)?;
        let child = Command::new(env!("CARGO_BIN_EXE_storegw"))
            .arg("run")
            .arg("--config")
            .arg(&cfg)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bluez.address)
            .env("STOREGW_LOG", env_filter)
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        let mut gw = Gateway {
            child,
            log: log_path,
        };
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until && !events_of(&sub).iter().any(|e| e["kind"] == "ble.sighting")
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A few more windows of trace logging, then a clean stop (shutdown logs too).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = gw.sigterm_and_wait(Duration::from_secs(15));
        let log = gw.log_text();
        assert!(
            events_of(&sub).iter().any(|e| e["kind"] == "ble.sighting"),
            "{what}: the scan works at trace; log:\n{log}"
        );
        assert!(log.contains("DEBUG"), "{what}: debug logging is on:\n{log}");
        if !env_filter.is_empty() {
            assert!(log.contains("TRACE"), "{what}: trace logging is on:\n{log}");
            // The BLE stack's own lines (device names, payloads, property maps) are withheld
            // below error even though the filter asks for everything.
            let stack: Vec<&str> = log
                .lines()
                .filter(|l| {
                    ["bluez_async", "btleplug", "dbus::", "dbus_tokio"]
                        .iter()
                        .any(|t| l.contains(t))
                })
                .filter(|l| !l.contains("ERROR"))
                .collect();
            assert!(
                stack.is_empty(),
                "{what}: BLE stack lines below error: {stack:?}"
            );
        }
        for form in address_spellings(BEACON_ADDR) {
            assert!(
                !log.contains(&form),
                "{what}: address spelling `{form}` in the log:\n{}",
                log.lines()
                    .filter(|l| l.contains(&form))
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    Ok(())
}
