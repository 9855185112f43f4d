//! Test harness: a real mosquitto on a free loopback port, the real storegw binary, and a real
//! MQTT subscriber that counts every event by id.
#![allow(dead_code)]

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Path of mosquitto, or None (the test then skips with a printed reason).
pub fn mosquitto_path() -> Option<PathBuf> {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Skips the calling test, loudly, when mosquitto is missing.
#[macro_export]
macro_rules! require_mosquitto {
    () => {
        if common::mosquitto_path().is_none() {
            eprintln!(
                "skipping: mosquitto not installed (apt-get install mosquitto; .ci/run does)"
            );
            return Ok(());
        }
    };
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18830)
}

/// A mosquitto broker owned by the test.
pub struct Mosquitto {
    pub port: u16,
    dir: PathBuf,
    extra: String,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts mosquitto with persistence (so a restart keeps queued messages for subscribers).
    pub fn start(dir: &Path, extra: &str) -> Result<Mosquitto, Box<dyn std::error::Error>> {
        Self::start_on(dir, free_port(), extra)
    }

    /// Starts on a given port (e.g. one a gateway already points at).
    pub fn start_on(
        dir: &Path,
        port: u16,
        extra: &str,
    ) -> Result<Mosquitto, Box<dyn std::error::Error>> {
        let mut m = Mosquitto {
            port,
            dir: dir.to_path_buf(),
            extra: extra.to_string(),
            child: None,
        };
        m.restart()?;
        Ok(m)
    }

    /// Starts (again) on the same port.
    pub fn restart(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        std::fs::create_dir_all(&self.dir)?;
        let conf = self.dir.join("mosquitto.conf");
        let listener = if self.extra.contains("listener") {
            self.extra.replace("PORT", &self.port.to_string())
        } else {
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\n{}",
                self.port, self.extra
            )
        };
        // Running as root, mosquitto drops to its own user: let it write the persistence dir.
        let _ = Command::new("chmod").arg("777").arg(&self.dir).status();
        std::fs::write(
            &conf,
            format!(
                "{listener}\npersistence true\npersistence_location {}/\nmax_queued_messages 0\nmax_inflight_messages 0\nmessage_size_limit 0\nlog_dest none\nuser root\n",
                self.dir.display()
            ),
        )?;
        let bin = mosquitto_path().ok_or("mosquitto missing")?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("mosquitto did not start".into())
    }

    /// Graceful stop (SIGTERM): mosquitto saves its persistence file.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe_kill(c.id(), libc_sigterm());
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn libc_sigterm() -> i32 {
    15
}

/// Sends a signal through the `kill` command (keeps tests free of unsafe code).
pub fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// What a subscriber received, by id.
#[derive(Default, Debug)]
pub struct Received {
    pub counts: HashMap<String, u32>,
    pub per_kind: BTreeMap<String, u64>,
    pub status: Vec<serde_json::Value>,
    pub payloads: Vec<serde_json::Value>,
    pub keep_payloads: usize,
    pub subscribed: bool,
}

impl Received {
    pub fn unique(&self) -> usize {
        self.counts.len()
    }
    pub fn duplicates(&self) -> u64 {
        self.counts.values().map(|&c| (c - 1) as u64).sum()
    }
}

/// A persistent-session QoS 1 subscriber on `{prefix}/#`, reconnecting across broker restarts.
pub struct Subscriber {
    pub got: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn start(
        port: u16,
        filter: &str,
        keep_payloads: usize,
        tls: Option<rumqttc::Transport>,
    ) -> Subscriber {
        let got = Arc::new(Mutex::new(Received {
            keep_payloads,
            ..Default::default()
        }));
        let g = got.clone();
        let mut o = MqttOptions::new(format!("test-sub-{}", free_port()), "127.0.0.1", port);
        o.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(16 * 1024 * 1024, 64 * 1024);
        if let Some(t) = tls {
            o.set_transport(t);
        }
        let (client, mut ev) = AsyncClient::new(o, 100);
        let filter = filter.to_string();
        let task = tokio::spawn(async move {
            let _keep = client.clone();
            loop {
                match ev.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.subscribe(filter.clone(), QoS::AtLeastOnce).await;
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                        if let Ok(mut r) = g.lock() {
                            r.subscribed = true;
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
                            continue;
                        };
                        let Ok(mut r) = g.lock() else { continue };
                        if v["kind"] == "status" {
                            r.status.push(v);
                            continue;
                        }
                        for e in v["events"].as_array().into_iter().flatten() {
                            let id = e["id"].as_str().unwrap_or_default().to_string();
                            let c = r.counts.entry(id).or_default();
                            *c += 1;
                            if *c == 1 {
                                *r.per_kind
                                    .entry(e["kind"].as_str().unwrap_or_default().to_string())
                                    .or_default() += 1;
                            }
                        }
                        if r.payloads.len() < r.keep_payloads {
                            r.payloads.push(v);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        // Give the subscription time to land before the flow starts.
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until && !got.lock().map(|r| r.subscribed).unwrap_or(true) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Subscriber { got, task }
    }

    pub fn unique(&self) -> usize {
        self.got.lock().map(|r| r.unique()).unwrap_or(0)
    }

    /// Waits until `n` distinct ids arrived or the timeout passes; returns the count.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let until = Instant::now() + timeout;
        loop {
            let u = self.unique();
            if u >= n || Instant::now() > until {
                return u;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A storegw process started from the real binary.
pub struct Gateway {
    pub child: Child,
    pub log: PathBuf,
}

impl Gateway {
    pub fn start(config: &Path, log: &Path) -> Result<Gateway, Box<dyn std::error::Error>> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_storegw"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        Ok(Gateway {
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn sigterm_and_wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        unsafe_kill(self.child.id(), 15);
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a secret file (token, password, key) as the gateway requires it: mode 0600, readable
/// by its owner only. storegw refuses group- or world-readable secrets.
pub fn write_secret(path: &Path, content: impl AsRef<[u8]>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// A config for tests with the loopback HTTP server off; `rest` is appended (sections must not
/// repeat the ones given here).
pub fn write_config(
    dir: &Path,
    port: u16,
    mqtt_extra: &str,
    rest: &str,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    write_config_with_http(dir, port, mqtt_extra, "enabled = false", rest)
}

/// The one test config writer: `storegw.toml` in `dir` for a gateway (`s042`/`gw1`, state in
/// `dir/state`) talking to the broker on `port` with fast reconnects; `http` is the body of
/// `[http]`, `rest` is appended (sections must not repeat the ones given here).
pub fn write_config_with_http(
    dir: &Path,
    port: u16,
    mqtt_extra: &str,
    http: &str,
    rest: &str,
) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let path = dir.join("storegw.toml");
    std::fs::write(
        &path,
        format!(
            r#"[gateway]
store_id = "s042"
gateway_id = "gw1"
state_dir = "{state}"

[mqtt]
host = "127.0.0.1"
port = {port}
reconnect_min = "100ms"
reconnect_max = "1s"
linger = "50ms"
status_interval = "2s"
connect_timeout = "3s"
{mqtt_extra}

[http]
{http}

[log]
level = "info"
format = "text"

{rest}
"#,
            state = dir.join("state").display()
        ),
    )?;
    Ok(path)
}

/// Reads the status file the daemon refreshes.
pub fn status_file(dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read(dir.join("state").join("status.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Shared test data directory, or None with a printed reason.
pub fn shared_data() -> Option<PathBuf> {
    let candidates = [
        std::env::var("STOREGW_SHARED_DATA").ok().map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data")),
        Some(PathBuf::from("/work/shared/data")),
    ];
    for c in candidates.into_iter().flatten() {
        if c.join("SOURCES.md").exists() {
            return Some(c);
        }
    }
    eprintln!("skipping: shared data not found (set STOREGW_SHARED_DATA)");
    None
}

/// JSON Schema validators of every payload, compiled from `schemas/`.
pub struct Schemas {
    pub batch: jsonschema::Validator,
    pub status: jsonschema::Validator,
    pub kinds: HashMap<String, jsonschema::Validator>,
}

impl Schemas {
    pub fn load() -> Result<Schemas, Box<dyn std::error::Error>> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas");
        let load = |name: &str| -> Result<jsonschema::Validator, Box<dyn std::error::Error>> {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(name))?)?;
            Ok(jsonschema::validator_for(&v).map_err(|e| format!("{name}: {e}"))?)
        };
        let mut kinds = HashMap::new();
        for k in storegw::event::EventKind::ALL {
            kinds.insert(k.to_string(), load(&format!("{k}.schema.json"))?);
        }
        Ok(Schemas {
            batch: load("batch.schema.json")?,
            status: load("status.schema.json")?,
            kinds,
        })
    }

    /// Validates a batch payload and every event in it; returns the errors.
    pub fn check_batch(&self, v: &serde_json::Value) -> Vec<String> {
        let mut errs: Vec<String> = self
            .batch
            .iter_errors(v)
            .map(|e| format!("batch: {e} at {}", e.instance_path))
            .collect();
        for e in v["events"].as_array().into_iter().flatten() {
            let kind = e["kind"].as_str().unwrap_or_default();
            match self.kinds.get(kind) {
                Some(s) => errs.extend(
                    s.iter_errors(e)
                        .map(|x| format!("{kind}: {x} at {}", x.instance_path)),
                ),
                None => errs.push(format!("unknown kind {kind}")),
            }
        }
        errs
    }
}

/// Waits for `child` to exit; kills it and returns None after `timeout`.
pub fn wait_exit(
    child: &mut std::process::Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

/// The events a stopped gateway's spool holds, in the clear: every chunk of the stream trees
/// decoded (LZ4 bodies decompressed). A search of the raw files sees compressed bytes, where
/// a repeated substring is a back-reference and a leaked identifier can hide; this is what
/// the spool would give anyone who reads it. Returns the text and how many chunks it decoded.
pub fn spool_plaintext(spool_dir: &Path) -> Result<(Vec<u8>, usize), Box<dyn std::error::Error>> {
    let db = sled::Config::new().path(spool_dir).open()?;
    let mut out = Vec::new();
    let mut chunks = 0;
    for name in ["ble", "wifi", "pos"] {
        for kv in db.open_tree(name)?.iter() {
            let (_, v) = kv?;
            // Enqueued ms (8 bytes), format (1), event count (4), then the body: raw, or LZ4
            // with its size prepended.
            let body = match (v.get(8), v.get(13..)) {
                (Some(0), Some(b)) => b.to_vec(),
                (Some(1), Some(b)) => lz4_flex::block::decompress_size_prepended(b)?,
                _ => return Err("a spool value that is no chunk".into()),
            };
            out.extend_from_slice(&body);
            out.push(b'\n');
            chunks += 1;
        }
    }
    Ok((out, chunks))
}

/// Runs `replay --publish <source>` of `capture` (`--wifi`, `--ble`) with no broker listening,
/// until the uplink says it cannot connect (the events were spooled and flushed before it
/// started), then kills it: the events stay in the spool as a store's backlog would during an
/// outage. Returns stderr.
pub fn replay_into_backlog(
    source: &str,
    capture: &Path,
    cfg: &Path,
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_storegw"))
        .args(["replay", "--publish", source])
        .arg(capture)
        .arg("--config")
        .arg(cfg)
        .env("STOREGW_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = child.stderr.take().ok_or("no stderr")?;
    let log = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut l) = log.lock() {
                    l.extend_from_slice(&buf[..n]);
                }
            }
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let waiting = log
            .lock()
            .map(|l| String::from_utf8_lossy(&l).contains("cannot connect to broker"))
            .unwrap_or(false);
        // A capture that yields no event exits at once, without publishing.
        if waiting || child.try_wait()?.is_some() || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let out = log.lock().map(|l| l.clone()).unwrap_or_default();
    Ok(out)
}
