//! Signed remote configuration and commands with the real daemon and a real mosquitto: a live
//! change, a change applied by restart, every kind of rejection, a rollback from a dead broker,
//! fleet vs gateway precedence, and signed commands (answered, replayed, expired, misdirected).
//!
//! The test plays systemd: a gateway that exits with status 75 is started again.

mod common;
use common::*;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use storegw::remote::command::{self, Action};
use storegw::remote::document;

const PREFIX: &str = "storegw/v1/s042/gw1";
const FLEET: &str = "storegw/v1/_fleet/config";

fn signing_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[42u8; 32])
}

/// Signs an overlay for this gateway's own topic.
fn sign(overlay: &str) -> Result<Vec<u8>, String> {
    sign_for("s042/gw1", overlay)
}

/// Signs an overlay for `target` (`_fleet` or `<store>/<gateway>`), placed after `version`.
fn sign_for(target: &str, overlay: &str) -> Result<Vec<u8>, String> {
    let text = match overlay.split_once('\n') {
        Some((first, rest)) => format!("{first}\ntarget = \"{target}\"\n{rest}"),
        None => format!("{overlay}\ntarget = \"{target}\"\n"),
    };
    document::sign(text.as_bytes(), &signing_key())
}

/// The central side: publishes documents and commands, records everything the gateway says.
struct Central {
    client: AsyncClient,
    got: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Central {
    async fn start(port: u16) -> Result<Central, Box<dyn std::error::Error>> {
        let mut o = MqttOptions::new(format!("central-{}", free_port()), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1024 * 1024, 1024 * 1024);
        let (client, mut ev) = AsyncClient::new(o, 64);
        let got = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(Mutex::new(false));
        let (g, s, c) = (got.clone(), subscribed.clone(), client.clone());
        let task = tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        for t in ["config/state", "cmd/result", "status"] {
                            let _ = c.subscribe(format!("{PREFIX}/{t}"), QoS::AtLeastOnce).await;
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                        if let Ok(mut s) = s.lock() {
                            *s = true;
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        if let Ok(v) = serde_json::from_slice(&p.payload) {
                            if let Ok(mut g) = g.lock() {
                                g.push((p.topic.to_string(), v));
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until && !subscribed.lock().map(|s| *s).unwrap_or(true) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Central { client, got, task })
    }

    async fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) -> TestResult {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await?;
        Ok(())
    }

    /// Every message on `leaf` so far.
    fn on(&self, leaf: &str) -> Vec<serde_json::Value> {
        let topic = format!("{PREFIX}/{leaf}");
        self.got
            .lock()
            .map(|g| {
                g.iter()
                    .filter(|(t, _)| *t == topic)
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Validates every message received against its JSON Schema; returns how many were checked.
    fn check_schemas(&self) -> Result<usize, Box<dyn std::error::Error>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let load = |name: &str| -> Result<jsonschema::Validator, Box<dyn std::error::Error>> {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(name))?)?;
            Ok(jsonschema::validator_for(&v).map_err(|e| format!("{name}: {e}"))?)
        };
        let state = load("config.state.schema.json")?;
        let result = load("command.result.schema.json")?;
        let status = load("status.schema.json")?;
        let got = self.got.lock().map(|g| g.clone()).unwrap_or_default();
        for (topic, v) in &got {
            let schema = if topic.ends_with("/config/state") {
                &state
            } else if topic.ends_with("/cmd/result") {
                &result
            } else {
                &status
            };
            let errs: Vec<String> = schema.iter_errors(v).map(|e| e.to_string()).collect();
            assert!(errs.is_empty(), "{topic}: {v}: {errs:?}");
        }
        Ok(got.len())
    }

    fn count(&self) -> usize {
        self.got.lock().map(|g| g.len()).unwrap_or(0)
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gateway under a minimal supervisor: exit status 75 means "start me again".
struct Supervised {
    config: PathBuf,
    log: PathBuf,
    gw: Gateway,
    restarts: u32,
}

impl Supervised {
    fn start(config: &Path, log: &Path) -> Result<Supervised, Box<dyn std::error::Error>> {
        Ok(Supervised {
            config: config.to_path_buf(),
            log: log.to_path_buf(),
            gw: Gateway::start(config, log)?,
            restarts: 0,
        })
    }

    /// Restarts the gateway if it asked to be; any other exit is an error.
    fn poll(&mut self) -> TestResult {
        if let Some(st) = self.gw.child.try_wait()? {
            if st.code() == Some(75) {
                self.restarts += 1;
                self.gw = Gateway::start(&self.config, &self.log)?;
            } else {
                return Err(format!("gateway exited with {st}:\n{}", self.gw.log_text()).into());
            }
        }
        Ok(())
    }

    /// Polls (restarting as asked) until `cond` holds; false on timeout.
    async fn until(
        &mut self,
        timeout: Duration,
        mut cond: impl FnMut() -> bool,
    ) -> Result<bool, Box<dyn std::error::Error>> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            self.poll()?;
            if cond() {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(false)
    }

    fn log_text(&self) -> String {
        self.gw.log_text()
    }
}

/// A gateway config with `[remote]` trusting the test key, the simulator on at `rate` events
/// per second, and `http`.
fn setup_at_rate(
    dir: &Path,
    port: u16,
    http: &str,
    confirm: &str,
    rate: f64,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    std::fs::write(
        dir.join("central.pub"),
        format!(
            "{}\n",
            document::format_public_key(&signing_key().verifying_key())
        ),
    )?;
    write_config_with_http(
        dir,
        port,
        "",
        http,
        &format!(
            "[sources.sim]\nenabled = true\nrate = {rate:?}\nseed = 3\n\n[remote]\npublic_key_file = \"{}\"\nconfirm_timeout = \"{confirm}\"\n",
            dir.join("central.pub").display()
        ),
    )
}

/// A broker (`broker_extra` added to its configuration), the central side, and a gateway with
/// `[remote]` that has connected and reported that it runs its local file.
async fn scene(
    dir: &Path,
    broker_extra: &str,
    http: &str,
    confirm: &str,
) -> Result<(Mosquitto, Central, PathBuf, Supervised), Box<dyn std::error::Error>> {
    scene_at_rate(dir, broker_extra, http, confirm, 5.0).await
}

/// [`scene`] with the simulator at `rate` events per second.
async fn scene_at_rate(
    dir: &Path,
    broker_extra: &str,
    http: &str,
    confirm: &str,
    rate: f64,
) -> Result<(Mosquitto, Central, PathBuf, Supervised), Box<dyn std::error::Error>> {
    let broker = Mosquitto::start(&dir.join("broker"), broker_extra)?;
    let central = Central::start(broker.port).await?;
    let cfg = setup_at_rate(dir, broker.port, http, confirm, rate)?;
    let mut gw = Supervised::start(&cfg, &dir.join("gw.log"))?;
    let local = gw
        .until(Duration::from_secs(20), || {
            latest_state(&central)["state"] == "local"
        })
        .await?;
    if !local {
        return Err(format!("no initial config state; log:\n{}", gw.log_text()).into());
    }
    Ok((broker, central, cfg, gw))
}

fn latest_state(c: &Central) -> serde_json::Value {
    c.on("config/state").last().cloned().unwrap_or_default()
}

fn state_is(c: &Central, version: i64, state: &str) -> bool {
    let s = latest_state(c);
    s["version"] == version && s["state"] == state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_and_restart_changes_and_every_rejection() -> TestResult {
    require_mosquitto!();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let (port_a, port_b) = (free_port(), free_port());
    let http = format!("enabled = true\nlisten = \"127.0.0.1:{port_a}\"");
    // Before any document the gateway reports that it runs its local file.
    let (_broker, central, cfg, mut gw) = scene(dir, "", &http, "30s").await?;

    // 1. A live change: the simulator rate and the log level, no restart.
    let gw_topic = format!("{PREFIX}/config");
    let t0 = Instant::now();
    central
        .publish(
            &gw_topic,
            sign("version = 1\n[sources.sim]\nrate = 50.0\n[log]\nlevel = \"debug\"\n")?,
            true,
        )
        .await?;
    assert!(
        gw.until(Duration::from_secs(10), || state_is(&central, 1, "applied"))
            .await?,
        "v1 not applied: {}\n{}",
        latest_state(&central),
        gw.log_text()
    );
    eprintln!("live change confirmed in {:?}", t0.elapsed());
    assert_eq!(gw.restarts, 0, "a live change restarted the gateway");
    let log = gw.log_text();
    assert!(log.contains("remote configuration applied live"), "{log}");
    assert!(log.contains("applied=log.level, sources.sim.rate"), "{log}");
    // The status file (refreshed every few seconds) carries the same state.
    assert!(
        gw.until(Duration::from_secs(10), || status_file(dir)
            .is_some_and(|st| st["config"]["state"] == "applied"))
            .await?
    );
    let st = status_file(dir).ok_or("no status file")?;
    assert_eq!(st["config"]["versions"]["gateway"], 1, "{st}");

    // 2. Rejections, each with its reason and nothing changed.
    let mut tampered = sign("version = 2\n[sources.sim]\nrate = 60.0\n")?;
    if let Some(b) = tampered.iter_mut().find(|b| **b == b'6') {
        *b = b'9';
    }
    let expired = "version = 3\nnot_after = 2020-01-01T00:00:00Z\n[sources.sim]\nrate = 70.0\n";
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            sign("version = 1\n[sources.sim]\nrate = 80.0\n")?,
            "stale_version: 1 <= 1",
        ),
        (sign(expired)?, "expired"),
        (
            sign("version = 4\n[mqtt]\npassword_file = \"/tmp/pw\"\n")?,
            "forbidden_key: mqtt.password_file",
        ),
        (
            sign("version = 5\n[sources.sim]\nrate = -1.0\n")?,
            "invalid: sources.sim.rate",
        ),
        (
            sign(&format!(
                "version = 6\n[http]\nlisten = \"127.0.0.1:{port_b}\"\n"
            ))?,
            "forbidden_key: http.listen",
        ),
        (
            sign_for("s042/gw2", "version = 8\n[sources.sim]\nrate = 1.0\n")?,
            "wrong_target: s042/gw2",
        ),
        (
            sign_for("_fleet", "version = 8\n[sources.sim]\nrate = 1.0\n")?,
            "wrong_target: _fleet",
        ),
    ];
    for (doc, reason) in cases {
        let before = central.on("config/state").len();
        central.publish(&gw_topic, doc, true).await?;
        let ok = gw
            .until(Duration::from_secs(10), || {
                central.on("config/state").len() > before
                    && latest_state(&central)["state"] == "rejected"
            })
            .await?;
        let s = latest_state(&central);
        assert!(ok, "no rejection for {reason}: {s}\n{}", gw.log_text());
        let got = s["reason"].as_str().unwrap_or_default();
        assert!(
            got.starts_with(reason),
            "reason `{got}`, expected `{reason}`"
        );
        assert_eq!(
            s["versions"]["gateway"], 1,
            "a rejected document changed the version"
        );
        let effective = std::fs::read_to_string(dir.join("state/remote/effective.toml"))?;
        assert!(effective.contains("rate = 50.0"), "{effective}");
    }
    // Input no trusted key signed (altered bytes, no signature at all) is not reported: the
    // last genuine report stays, and nothing is published for it.
    let reported = latest_state(&central);
    let before = central.on("config/state").len();
    for junk in [tampered, b"version = 6\n".to_vec()] {
        central.publish(&gw_topic, junk, true).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    gw.poll()?;
    assert_eq!(
        central.on("config/state").len(),
        before,
        "junk was answered"
    );
    assert_eq!(latest_state(&central), reported);
    assert!(gw
        .log_text()
        .contains("unverified message on a remote topic ignored"));
    assert_eq!(gw.restarts, 0);

    // 3. A change that takes a restart: the simulator's seed. The gateway exits with 75,
    // starts with the new file, reaches the broker, runs healthy and confirms.
    let t0 = Instant::now();
    central
        .publish(
            &gw_topic,
            sign("version = 7\n[sources.sim]\nrate = 50.0\nseed = 77\n[log]\nlevel = \"debug\"\n")?,
            true,
        )
        .await?;
    assert!(
        gw.until(Duration::from_secs(30), || state_is(&central, 7, "applied"))
            .await?,
        "v7 not applied by restart: {}\n{}",
        latest_state(&central),
        gw.log_text()
    );
    eprintln!("restart change confirmed in {:?}", t0.elapsed());
    assert_eq!(gw.restarts, 1);
    let effective = std::fs::read_to_string(dir.join("state/remote/effective.toml"))?;
    assert!(effective.contains("seed = 77"), "{effective}");
    let previous = std::fs::read_to_string(dir.join("state/remote/effective.toml.prev"))?;
    assert!(previous.contains("seed = 3"), "{previous}");
    // Confirmed means healthy too: the HTTP listener is up.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port_a)).is_ok());
    // The local file is never rewritten.
    assert!(std::fs::read_to_string(&cfg)?.contains("seed = 3"));
    // The retained v7 comes again at every connection and changes nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    gw.poll()?;
    assert_eq!(gw.restarts, 1);
    assert!(central.check_schemas()? > 10);
    let mut g = gw.gw;
    assert!(g.sigterm_and_wait(Duration::from_secs(20)).is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_broker_is_rolled_back_within_confirm_timeout() -> TestResult {
    require_mosquitto!();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let (_broker, central, _cfg, mut gw) = scene(dir, "", "enabled = false", "4s").await?;
    let dead = free_port();
    let t0 = Instant::now();
    central
        .publish(
            &format!("{PREFIX}/config"),
            sign(&format!("version = 1\n[mqtt]\nport = {dead}\n"))?,
            true,
        )
        .await?;
    assert!(
        gw.until(Duration::from_secs(40), || state_is(
            &central,
            1,
            "rolled_back"
        ))
        .await?,
        "not rolled back: {}\n{}",
        latest_state(&central),
        gw.log_text()
    );
    let took = t0.elapsed();
    eprintln!("rolled back and reported in {took:?} (confirm_timeout 4 s)");
    let s = latest_state(&central);
    let reason = s["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("not confirmed"), "{reason}");
    assert!(reason.contains("last problem"), "{reason}");
    assert_eq!(s["versions"]["gateway"], 0, "{s}");
    assert_eq!(gw.restarts, 2, "one restart to apply, one to roll back");
    assert!(took < Duration::from_secs(25), "{took:?}");
    // Back on the working broker, the retained bad document is not applied again.
    let before = central.count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    gw.poll()?;
    assert_eq!(gw.restarts, 2);
    assert!(central.count() > before, "the gateway is not publishing");
    let mut g = gw.gw;
    assert!(g.sigterm_and_wait(Duration::from_secs(20)).is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_document_overrides_the_fleet_document() -> TestResult {
    require_mosquitto!();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let (_broker, central, cfg, mut gw) = scene(dir, "", "enabled = false", "30s").await?;
    central
        .publish(
            FLEET,
            sign_for(
                "_fleet",
                "version = 10\n[sources.sim]\nrate = 7.0\n[log]\nlevel = \"debug\"\n",
            )?,
            true,
        )
        .await?;
    assert!(
        gw.until(Duration::from_secs(10), || state_is(
            &central, 10, "applied"
        ))
        .await?
    );
    central
        .publish(
            &format!("{PREFIX}/config"),
            sign("version = 1\n[sources.sim]\nrate = 500.0\n")?,
            true,
        )
        .await?;
    assert!(
        gw.until(Duration::from_secs(10), || state_is(&central, 1, "applied"))
            .await?
    );
    // A newer fleet document still loses to the gateway's on the key both set.
    central
        .publish(
            FLEET,
            sign_for(
                "_fleet",
                "version = 11\n[sources.sim]\nrate = 9.0\n[log]\nlevel = \"info\"\n",
            )?,
            true,
        )
        .await?;
    assert!(
        gw.until(Duration::from_secs(10), || state_is(
            &central, 11, "applied"
        ))
        .await?
    );
    let s = latest_state(&central);
    assert_eq!(s["layer"], "fleet");
    assert_eq!(s["versions"]["fleet"], 11);
    assert_eq!(s["versions"]["gateway"], 1);
    let effective: toml::Table =
        std::fs::read_to_string(dir.join("state/remote/effective.toml"))?.parse()?;
    assert_eq!(effective["sources"]["sim"]["rate"].as_float(), Some(500.0));
    assert_eq!(effective["log"]["level"].as_str(), Some("info"));
    assert_eq!(gw.restarts, 0);
    // A restart rebuilds the same configuration from the stored layers.
    let mut g = gw.gw;
    assert!(g.sigterm_and_wait(Duration::from_secs(20)).is_some());
    std::fs::remove_file(dir.join("state/remote/effective.toml"))?;
    let mut gw = Supervised::start(&cfg, &dir.join("gw.log"))?;
    assert!(
        gw.until(Duration::from_secs(10), || dir
            .join("state/remote/effective.toml")
            .exists())
            .await?
    );
    let again: toml::Table =
        std::fs::read_to_string(dir.join("state/remote/effective.toml"))?.parse()?;
    assert_eq!(again, effective);
    gw.poll()?;
    let mut g = gw.gw;
    assert!(g.sigterm_and_wait(Duration::from_secs(20)).is_some());
    // `storegw status` with the gateway stopped shows the configuration state it left.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_storegw"))
        .arg("status")
        .arg("--config")
        .arg(&cfg)
        .output()?;
    let st: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(st["config"]["versions"]["fleet"], 11, "{st}");
    assert_eq!(st["config"]["versions"]["gateway"], 1, "{st}");
    assert_eq!(st["config"]["state"], "applied", "{st}");
    Ok(())
}

fn nonce(i: u32) -> String {
    format!("test-nonce-{i:08}")
}

fn cmd(
    action: Action,
    n: &str,
    store: &str,
    gateway: &str,
    ttl_ms: i64,
) -> Result<Vec<u8>, String> {
    let now = storegw::event::now_ms();
    command::sign(
        &command::render(action, store, gateway, n, now + ttl_ms),
        &signing_key(),
    )
}

fn answer(c: &Central, n: &str) -> Option<serde_json::Value> {
    c.on("cmd/result")
        .into_iter()
        .rev()
        .find(|v| v["nonce"] == n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_commands_are_answered_and_replays_refused() -> TestResult {
    require_mosquitto!();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let (broker, central, cfg, mut gw) = scene(dir, "", "enabled = false", "30s").await?;
    let topic = format!("{PREFIX}/cmd");
    let mut i = 0;
    for action in Action::ALL {
        i += 1;
        let n = nonce(i);
        let statuses = central.on("status").len();
        let t0 = Instant::now();
        central
            .publish(&topic, cmd(action, &n, "s042", "gw1", 60_000)?, false)
            .await?;
        assert!(
            gw.until(Duration::from_secs(15), || answer(&central, &n).is_some())
                .await?,
            "{} not answered:\n{}",
            action.as_str(),
            gw.log_text()
        );
        let a = answer(&central, &n).unwrap_or_default();
        eprintln!("{} answered in {:?}: {a}", action.as_str(), t0.elapsed());
        assert_eq!(a["result"], "done", "{a}");
        assert_eq!(a["command"], action.as_str());
        match action {
            Action::Status => assert!(central.on("status").len() > statuses),
            Action::Reconnect => {
                assert!(gw
                    .log_text()
                    .contains("reconnect requested by a signed command"))
            }
            Action::RotateKeys => assert!(gw.log_text().contains("device keys rotated")),
            Action::Reload => assert_eq!(a["reason"], "reloaded"),
        }
    }
    // The same command again (a replay), an expired one, one for another gateway, a forged one.
    let n = nonce(1);
    let replay = cmd(Action::Status, &n, "s042", "gw1", 60_000)?;
    let refusals: Vec<(Vec<u8>, String, &str)> = vec![
        (replay, n, "replayed"),
        (
            cmd(Action::Status, &nonce(100), "s042", "gw1", -1_000)?,
            nonce(100),
            "expired",
        ),
        (
            cmd(Action::Reconnect, &nonce(101), "s042", "gw2", 60_000)?,
            nonce(101),
            "wrong_target",
        ),
    ];
    for (doc, n, reason) in refusals {
        let before = central.on("cmd/result").len();
        central.publish(&topic, doc, false).await?;
        assert!(
            gw.until(Duration::from_secs(10), || central.on("cmd/result").len()
                > before)
                .await?
        );
        let a = central.on("cmd/result").last().cloned().unwrap_or_default();
        assert_eq!(a["result"], "refused", "{a}");
        assert_eq!(a["nonce"], n.as_str());
        let got = a["reason"].as_str().unwrap_or_default();
        assert!(got.starts_with(reason), "`{got}` for {reason}");
    }
    // An unsigned command gets no answer at all: junk cannot make the gateway publish.
    let before = central.on("cmd/result").len();
    central
        .publish(&topic, b"command = \"reconnect\"\n".to_vec(), false)
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    gw.poll()?;
    assert_eq!(central.on("cmd/result").len(), before);
    // The central tool: sign, publish, wait for the answer, in one command.
    use base64::Engine as _;
    let seed = base64::engine::general_purpose::STANDARD.encode(signing_key().to_bytes());
    write_secret(
        &dir.join("central.key"),
        format!("ed25519-private:{seed}\n"),
    )?;
    let broker_url = format!("mqtt://127.0.0.1:{}", broker.port);
    let key = dir.join("central.key");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_storegw"))
            .args(["command", "rotate-keys", "--broker", &broker_url])
            .args([
                "--store",
                "s042",
                "--gateway",
                "gw1",
                "--wait",
                "15s",
                "--key",
            ])
            .arg(&key)
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a: serde_json::Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(a["result"], "done");
    assert_eq!(a["command"], "rotate-keys");

    // A replay after a restart is still refused: the nonces are on disk.
    let mut g = gw.gw;
    assert!(g.sigterm_and_wait(Duration::from_secs(20)).is_some());
    let states = central.on("config/state").len();
    let mut gw = Supervised::start(&cfg, &dir.join("gw.log"))?;
    // Commands are not retained: publish once the gateway is connected again.
    assert!(
        gw.until(Duration::from_secs(20), || central.on("config/state").len()
            > states)
            .await?
    );
    for (n, expected) in [(nonce(2), "refused"), (nonce(200), "done")] {
        let before = central.on("cmd/result").len();
        central
            .publish(
                &topic,
                cmd(Action::Reconnect, &n, "s042", "gw1", 60_000)?,
                false,
            )
            .await?;
        assert!(
            gw.until(Duration::from_secs(10), || answer(&central, &n)
                .is_some_and(|a| a["result"] == expected)
                && central.on("cmd/result").len() > before)
                .await?,
            "{n}: expected {expected}: {:?}",
            central.on("cmd/result").last()
        );
    }
    gw.poll()?;
    let mut g = gw.gw;
    assert!(g.sigterm_and_wait(Duration::from_secs(20)).is_some());
    Ok(())
}

/// A change that moves the gateway somewhere the broker's ACL does not allow (here a new topic
/// prefix) gets a connection, but not a session that works: no acknowledged message confirms
/// it, and it is rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_acl_refuses_is_rolled_back() -> TestResult {
    require_mosquitto!();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let acl = dir.join("acl");
    std::fs::create_dir_all(dir.join("broker"))?;
    std::fs::write(&acl, "topic readwrite storegw/v1/#\n")?;
    let _ = std::process::Command::new("chmod")
        .arg("644")
        .arg(&acl)
        .status();
    let (_broker, central, _cfg, mut gw) = scene(
        dir,
        &format!("acl_file {}\n", acl.display()),
        "enabled = false",
        "4s",
    )
    .await?;
    central
        .publish(
            &format!("{PREFIX}/config"),
            sign("version = 1\n[mqtt]\ntopic_prefix = \"elsewhere/v1\"\n")?,
            true,
        )
        .await?;
    assert!(
        gw.until(Duration::from_secs(40), || state_is(
            &central,
            1,
            "rolled_back"
        ))
        .await?,
        "not rolled back: {}\n{}",
        latest_state(&central),
        gw.log_text()
    );
    let s = latest_state(&central);
    let reason = s["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("not confirmed"), "{reason}");
    assert_eq!(gw.restarts, 2);
    let mut g = gw.gw;
    assert!(g.sigterm_and_wait(Duration::from_secs(20)).is_some());
    Ok(())
}

/// A plain HTTP/1.0 GET against the gateway's loopback server; returns the body.
fn http_body(port: u16, path: &str) -> Result<String, Box<dyn std::error::Error>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

/// The value of one sample line (`name{labels} value`) summed over every line that starts
/// with `prefix`.
fn metric_sum(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// The broker is not trusted: one retained message whose key id is 250,000 control bytes, and
/// a stream of distinct forgeries and junk on all three remote topics, must neither cut the
/// uplink nor slow delivery, nor write anything to disk, nor change what the gateway reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_on_every_remote_topic_neither_persists_nor_slows_delivery() -> TestResult {
    require_mosquitto!();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let http = free_port();
    let rate = 400.0;
    let (broker, central, cfg, mut gw) = scene_at_rate(
        dir,
        "",
        &format!("enabled = true\nlisten = \"127.0.0.1:{http}\""),
        "30s",
        rate,
    )
    .await?;
    // A genuine document first, so there is a report that junk must not replace.
    central
        .publish(
            FLEET,
            sign_for("_fleet", "version = 3\n[log]\nlevel = \"info\"\n")?,
            true,
        )
        .await?;
    assert!(
        gw.until(Duration::from_secs(10), || state_is(&central, 3, "applied"))
            .await?
    );
    let sub = Subscriber::start(broker.port, &format!("{PREFIX}/#"), 0, None).await;
    let window = Duration::from_secs(4);
    // Delivery before the junk.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let n0 = sub.unique();
    tokio::time::sleep(window).await;
    let base = sub.unique() - n0;

    let state_json = dir.join("state/remote/state.json");
    let state_before = std::fs::read(&state_json)?;
    let state_mtime = std::fs::metadata(&state_json)?.modified()?;
    let reports = central.on("config/state").len();
    let answers = central.on("cmd/result").len();

    // The retained message of the report: a key id of 250,000 bytes of \x01.
    let mut huge = b"version = 9\ntarget = \"_fleet\"\n# storegw-signature: ed25519:".to_vec();
    huge.extend(std::iter::repeat_n(1u8, 250_000));
    huge.extend_from_slice(b":AAAA\n");
    central.publish(FLEET, huge, true).await?;
    // Then distinct junk on every remote topic for one window, while measuring delivery.
    let forger = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]);
    let gw_topic = format!("{PREFIX}/config");
    let cmd_topic = format!("{PREFIX}/cmd");
    let n1 = sub.unique();
    let t0 = Instant::now();
    let mut sent = 0u64;
    while t0.elapsed() < window {
        let v = 100 + sent;
        let forged = document::sign(
            format!("version = {v}\ntarget = \"s042/gw1\"\n[log]\nlevel = \"trace\"\n").as_bytes(),
            &forger,
        )?;
        let mut altered = sign_for(
            "_fleet",
            &format!("version = {v}\n[log]\nlevel = \"debug\"\n"),
        )?;
        altered[0] ^= 0x20;
        let fake_cmd = format!(
            "command = \"reconnect\"\nstore = \"s042\"\ngateway = \"gw1\"\nnonce = \"junk{v:012}\"\n# storegw-signature: ed25519:{:016x}:AAAA\n",
            v
        );
        central.publish(&gw_topic, forged, false).await?;
        central.publish(FLEET, altered, false).await?;
        central
            .publish(&cmd_topic, fake_cmd.into_bytes(), false)
            .await?;
        sent += 3;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let during = sub.unique() - n1;
    eprintln!(
        "delivered {base} events in {window:?} before, {during} while {sent} junk messages arrived"
    );
    assert!(sent > 300, "only {sent} junk messages sent");
    assert!(
        during as f64 >= 0.75 * base as f64,
        "delivery slowed: {during} vs {base}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    gw.poll()?;
    assert_eq!(gw.restarts, 0);
    // Nothing written, nothing reported, nothing answered, the session never dropped.
    assert_eq!(std::fs::read(&state_json)?, state_before);
    assert_eq!(std::fs::metadata(&state_json)?.modified()?, state_mtime);
    assert_eq!(central.on("config/state").len(), reports);
    assert_eq!(central.on("cmd/result").len(), answers);
    assert!(state_is(&central, 3, "applied"));
    let metrics = http_body(http, "/metrics")?;
    assert_eq!(metric_sum(&metrics, "storegw_mqtt_reconnects_total"), 0.0);
    let counted = metric_sum(&metrics, "storegw_remote_unverified_total{");
    assert!(counted >= sent as f64 * 0.9, "counted {counted} of {sent}");
    assert!(
        !central.on("status").iter().any(|s| s["state"] == "offline"),
        "the last will was published"
    );
    let status = std::fs::read(dir.join("state/status.json"))?;
    assert!(
        status.len() < 16 * 1024,
        "status.json is {} bytes",
        status.len()
    );
    // The retained junk survives a restart without effect: the gateway starts, connects and
    // keeps delivering.
    let mut g = gw.gw;
    assert!(g.sigterm_and_wait(Duration::from_secs(20)).is_some());
    let n2 = sub.unique();
    let reports = central.on("config/state").len();
    let mut gw = Supervised::start(&cfg, &dir.join("gw.log"))?;
    assert!(
        gw.until(Duration::from_secs(20), || central.on("config/state").len()
            > reports
            && sub.unique() > n2 + 100)
            .await?,
        "no delivery after a restart with junk retained:\n{}",
        gw.log_text()
    );
    assert!(state_is(&central, 3, "applied"));
    let mut g = gw.gw;
    assert!(g.sigterm_and_wait(Duration::from_secs(20)).is_some());
    Ok(())
}
