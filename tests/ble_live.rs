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

fn ble_section(stall: &str) -> String {
    format!(
        "[sources.ble]\nenabled = true\nwindow = \"1s\"\nstall_timeout = \"{stall}\"\nretry_interval = \"1s\"\n"
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
