//! `storegw bench`: measures storegw beside a baseline taken in the same run on the same
//! machine, and writes a markdown report (plus the raw figures as JSON).
//!
//! Small shared machines are noisy, so every figure is reported as a ratio to its baseline
//! (raw sled, raw rumqttc publishing, tshark) rather than as an absolute claim.

mod customer;
mod data;
pub mod estimation;
mod fleet;
mod parsers;
mod pos_push;

pub use pos_push::PushLoad;

use crate::config::{self, Config};
use crate::event::{batch_payload, Event, Stream};
use crate::source::sim::Simulator;
use crate::spool::Spool;
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to measure and where to write it.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Markdown report path, the JSON figures next to it; None prints the table only (a
    /// partial run must not replace the full report).
    pub out: Option<PathBuf>,
    /// Events for the end-to-end and spool measurements.
    pub events: u64,
    /// Backlog size for the bytes-on-disk and drain measurements.
    pub backlog: u64,
    /// Seconds of the footprint run at typical store load.
    pub footprint_s: u64,
    /// Gateways in the fleet simulation (0 = skip it).
    pub fleet: usize,
    /// Seconds the broker stays down in the fleet simulation.
    pub fleet_outage_s: u64,
    /// Transactions of the POS push measurement.
    pub pos: PushLoad,
    /// Measurements to run (empty = all), for profiling one path at a time.
    pub only: Vec<String>,
}

impl BenchOptions {
    fn wants(&self, what: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == what)
    }
}

/// One line of the report: a figure, its baseline and the target it is held to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// The measurement as the report's first column names it (load and conditions included).
    pub what: String,
    /// storegw's figure, in `unit`.
    pub value: f64,
    /// Unit of `value` and `baseline`, printed after the value (`events/s`, `MiB`, `s`).
    pub unit: String,
    /// What the baseline is (raw sled, raw rumqttc, tshark…); empty without a baseline.
    pub baseline_name: String,
    /// The baseline's figure from the same run on the same machine; None when there is none.
    pub baseline: Option<f64>,
    /// `value / baseline`, the figure to compare across machines; None without a baseline above 0.
    pub ratio: Option<f64>,
    /// The target the figure is held to, as text (`≥0.8× raw sled`); empty without a target.
    pub target: String,
    /// Whether the target was met (`**no**` in the report when not); None without a target.
    pub met: Option<bool>,
}

impl Row {
    fn new(what: &str, value: f64, unit: &str) -> Row {
        Row {
            what: what.into(),
            value,
            unit: unit.into(),
            baseline_name: String::new(),
            baseline: None,
            ratio: None,
            target: String::new(),
            met: None,
        }
    }
    fn baseline(mut self, name: &str, v: f64) -> Row {
        self.baseline_name = name.into();
        self.baseline = Some(v);
        if v > 0.0 {
            self.ratio = Some(self.value / v);
        }
        self
    }
    fn target(mut self, text: &str, met: bool) -> Row {
        self.target = text.into();
        self.met = Some(met);
        self
    }
}

/// Runs every measurement and writes the report.
pub async fn run(opts: BenchOptions) -> Result<(), String> {
    const KNOWN: [&str; 11] = [
        "spool",
        "e2e",
        "backlog",
        "footprint",
        "fleet",
        "fleet-config",
        "ready",
        "size",
        "parsers",
        "sealing",
        "pos-push",
    ];
    if let Some(bad) = opts.only.iter().find(|o| !KNOWN.contains(&o.as_str())) {
        return Err(format!(
            "--only: unknown measurement {bad:?} (known: {})",
            KNOWN.join(", ")
        ));
    }
    let work = tempdir("bench")?;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    if opts.wants("spool") {
        eprintln!(
            "bench: spool append+ack vs raw sled ({} events)",
            opts.events
        );
        rows.extend(spool_vs_sled(&work.join("spool"), opts.events)?);
    }
    let needs_broker = [
        "e2e",
        "backlog",
        "footprint",
        "fleet",
        "fleet-config",
        "pos-push",
    ]
    .iter()
    .any(|w| opts.wants(w));
    match mosquitto_path() {
        Some(bin) => {
            if opts.wants("e2e") {
                eprintln!("bench: end to end vs raw rumqttc ({} events)", opts.events);
                rows.extend(end_to_end(&bin, &work.join("e2e"), opts.events).await?);
            }
            if opts.wants("backlog") {
                eprintln!(
                    "bench: {}-event backlog: bytes on disk and drain",
                    opts.backlog
                );
                rows.extend(backlog(&bin, &work.join("backlog"), opts.backlog).await?);
            }
            if opts.wants("footprint") {
                eprintln!(
                    "bench: footprint at typical store load ({} s)",
                    opts.footprint_s
                );
                match footprint(&bin, &work.join("footprint"), opts.footprint_s).await {
                    Ok(r) => rows.extend(r),
                    Err(e) => notes.push(format!("footprint not measured: {e}")),
                }
            }
            if opts.wants("pos-push") {
                eprintln!(
                    "bench: POS push ({} in requests of 1000, {} one per request)",
                    opts.pos.bulk, opts.pos.single
                );
                match pos_push::pos_push(&bin, &work.join("pos-push"), opts.pos).await {
                    Ok(r) => rows.extend(r),
                    Err(e) => notes.push(format!("POS push not measured: {e}")),
                }
            }
            if opts.fleet > 0 && opts.wants("fleet") {
                eprintln!("bench: fleet of {} gateways, broker restarted", opts.fleet);
                let outage = Duration::from_secs(opts.fleet_outage_s);
                match fleet::fleet(&bin, &work.join("fleet"), opts.fleet, outage).await {
                    Ok(r) => rows.extend(r),
                    Err(e) => notes.push(format!("fleet simulation not measured: {e}")),
                }
            }
            if opts.fleet > 0 && opts.wants("fleet-config") {
                eprintln!(
                    "bench: fleet of {} gateways, signed config rollout",
                    opts.fleet
                );
                match fleet::config_rollout(&bin, &work.join("fleet-config"), opts.fleet).await {
                    Ok(r) => rows.extend(r),
                    Err(e) => notes.push(format!("fleet config rollout not measured: {e}")),
                }
            }
        }
        None if needs_broker => notes
            .push("mosquitto not installed: end-to-end, backlog and footprint not measured".into()),
        None => {}
    }
    if opts.wants("ready") {
        eprintln!("bench: start to ready");
        match start_to_ready(&work.join("ready")) {
            Ok(r) => rows.push(r),
            Err(e) => notes.push(format!("start to ready not measured: {e}")),
        }
    }
    if opts.wants("size") {
        rows.extend(binary_sizes(&mut notes));
    }
    if opts.wants("sealing") {
        eprintln!("bench: customer identifier sealing vs HMAC");
        match customer::sealing() {
            Ok(r) => rows.extend(r),
            Err(e) => notes.push(format!("sealing not measured: {e}")),
        }
    }
    if opts.wants("parsers") {
        for (name, f) in parsers::ALL {
            eprintln!("bench: {name}");
            match f() {
                Ok(r) => rows.extend(r),
                Err(e) => notes.push(format!("{name}: {e}")),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    write_report(opts.out.as_deref(), &rows, &notes)
}

fn tempdir(what: &str) -> Result<PathBuf, String> {
    let d = std::env::temp_dir().join(format!(
        "storegw-{what}-{}-{}",
        std::process::id(),
        crate::event::now_ms()
    ));
    std::fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    Ok(d)
}

/// Pre-built wire events from the simulator, so both sides of a comparison move the same bytes.
fn wire_events(n: u64) -> Vec<(Stream, Vec<u8>)> {
    sim_events(n)
        .iter()
        .zip(1..)
        .map(|(e, seq)| (e.stream(), e.to_wire("bench", seq)))
        .collect()
}

fn sim_events(n: u64) -> Vec<Event> {
    let mut sim = Simulator::new(&crate::config::SimConfig::default());
    let now = crate::event::now_ms();
    (0..n).map(|_| sim.next_event(now)).collect()
}

fn bench_config(state: &Path, port: u16) -> Result<Config, String> {
    let text = format!(
        "[gateway]\nstore_id = \"bench\"\ngateway_id = \"gw1\"\nstate_dir = \"{}\"\n\
         [mqtt]\nport = {port}\nlinger = \"20ms\"\nreconnect_min = \"100ms\"\nreconnect_max = \"1s\"\n\
         [spool]\nble = {{ max_bytes = \"4GiB\", max_age = \"7d\" }}\nwifi = {{ max_bytes = \"4GiB\", max_age = \"7d\" }}\n\
         pos = {{ max_bytes = \"4GiB\", max_age = \"7d\" }}\n[http]\nenabled = false\n",
        state.display()
    );
    config::parse("(bench)", &text, None).map_err(|e| e.to_string())
}

/// Spool append + ack (the way the uplink uses it) vs raw sled insert + remove of the same bytes.
fn spool_vs_sled(dir: &Path, n: u64) -> Result<Vec<Row>, String> {
    let events = sim_events(n);
    let cfg = bench_config(dir, 1883)?;
    let chunk = cfg.mqtt.batch_max_events;
    let spool = Spool::open(&dir.join("spool"), "gw1", &cfg.spool).map_err(|e| e.to_string())?;
    let t = Instant::now();
    for part in events.chunks(chunk) {
        spool.append(part).map_err(|e| e.to_string())?;
    }
    for s in Stream::ALL {
        loop {
            let b = spool
                .peek(s, 0, chunk, usize::MAX)
                .map_err(|e| e.to_string())?;
            if b.is_empty() {
                break;
            }
            let seqs: Vec<_> = b.iter().map(|e| e.ack_ref()).collect();
            spool.ack(s, &seqs).map_err(|e| e.to_string())?;
        }
    }
    spool.flush_blocking().map_err(|e| e.to_string())?;
    let ours = n as f64 / t.elapsed().as_secs_f64();
    drop(spool);

    let wire = wire_events(n);
    let db = sled::Config::new()
        .path(dir.join("raw"))
        .cache_capacity(cfg.spool.cache_capacity.0)
        .flush_every_ms(None)
        .mode(sled::Mode::LowSpace)
        .open()
        .map_err(|e| e.to_string())?;
    let tree = db.open_tree("raw").map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut seq = 0u64;
    for part in wire.chunks(chunk) {
        let mut b = sled::Batch::default();
        for (_, w) in part {
            seq += 1;
            b.insert(&seq.to_be_bytes(), w.as_slice());
        }
        tree.apply_batch(b).map_err(|e| e.to_string())?;
    }
    for k in 1..=seq {
        tree.remove(k.to_be_bytes()).map_err(|e| e.to_string())?;
    }
    db.flush().map_err(|e| e.to_string())?;
    let raw = n as f64 / t.elapsed().as_secs_f64();
    Ok(vec![Row::new("spool append+ack", ours, "events/s")
        .baseline("raw sled insert+remove", raw)
        .target("≥0.8× raw sled", ours >= 0.8 * raw)])
}

/// A mosquitto on a free loopback port, stopped on drop.
struct Broker {
    port: u16,
    child: Child,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto_path() -> Option<PathBuf> {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn start_broker(bin: &Path, dir: &Path) -> Result<Broker, String> {
    start_broker_on(bin, dir, crate::demo::free_port()?, false)
}

/// Starts mosquitto on `port`; with `persist` it keeps sessions and queued messages in `dir`
/// across a graceful restart.
fn start_broker_on(bin: &Path, dir: &Path, port: u16, persist: bool) -> Result<Broker, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let persistence = if persist {
        format!("persistence true\npersistence_location {}/", dir.display())
    } else {
        "persistence false".to_string()
    };
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n\
             max_inflight_messages 0\nmessage_size_limit 0\n{persistence}\nlog_dest file {}/mosquitto.log\nuser root\n",
            dir.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start mosquitto: {e}"))?;
    let b = Broker { port, child };
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(b);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("mosquitto did not start".into())
}

/// A QoS 1 subscriber that counts events (`{"id":` occurrences) in every batch it receives.
async fn counting_subscriber(port: u16, filter: &str) -> Result<Arc<AtomicU64>, String> {
    let count = Arc::new(AtomicU64::new(0));
    static N: AtomicU64 = AtomicU64::new(0);
    let id = N.fetch_add(1, Ordering::Relaxed);
    let mut o = MqttOptions::new(format!("bench-sub-{port}-{id}"), "127.0.0.1", port);
    o.set_max_packet_size(16 * 1024 * 1024, 64 * 1024)
        .set_keep_alive(Duration::from_secs(60));
    let (client, mut ev) = AsyncClient::new(o, 256);
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    let c = count.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    tokio::spawn(async move {
        let _keep = client;
        loop {
            match ev.poll().await {
                Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                    if let Some(t) = ready_tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                    let n = count_ids(&p.payload);
                    c.fetch_add(n, Ordering::Relaxed);
                }
                Ok(_) => {}
                // Brokers of finished measurements are gone: retry quietly.
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(5), ready_rx).await;
    Ok(count)
}

fn count_ids(payload: &[u8]) -> u64 {
    memchr::memmem::find_iter(payload, b"{\"id\":").count() as u64
}

async fn wait_count(c: &AtomicU64, n: u64, timeout: Duration) -> Result<(), String> {
    let until = Instant::now() + timeout;
    while c.load(Ordering::Relaxed) < n {
        if Instant::now() > until {
            return Err(format!(
                "only {} of {n} events arrived within {timeout:?}",
                c.load(Ordering::Relaxed)
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Simulator → spool → mosquitto (QoS 1) → subscriber, beside rumqttc publishing the same
/// pre-built batches with the same in-flight window and no spool.
async fn end_to_end(bin: &Path, dir: &Path, n: u64) -> Result<Vec<Row>, String> {
    let broker = start_broker(bin, &dir.join("broker"))?;
    let cfg = bench_config(&dir.join("state"), broker.port)?;

    // Baseline: raw rumqttc.
    let raw_count = counting_subscriber(broker.port, "raw/#").await?;
    let wire = wire_events(n);
    let batches: Vec<Vec<u8>> = wire
        .chunks(cfg.mqtt.batch_max_events)
        .map(|c| batch_payload("bench", "raw", 0, c.iter().map(|(_, w)| w.as_slice())))
        .collect();
    let mut o = MqttOptions::new("bench-raw", "127.0.0.1", broker.port);
    o.set_inflight(cfg.mqtt.max_inflight)
        .set_max_packet_size(1024 * 1024, 16 * 1024 * 1024);
    let (client, mut ev) = AsyncClient::new(o, cfg.mqtt.max_inflight as usize + 16);
    let t = Instant::now();
    let poller = tokio::spawn(async move {
        loop {
            if let Err(e) = ev.poll().await {
                eprintln!("bench: raw publisher: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    for b in batches {
        client
            .publish("raw/gw/ble", QoS::AtLeastOnce, false, b)
            .await
            .map_err(|e| e.to_string())?;
    }
    wait_count(&raw_count, n, Duration::from_secs(300)).await?;
    let raw = n as f64 / t.elapsed().as_secs_f64();
    poller.abort();

    // storegw: the real pipeline in this process.
    let ours_count = counting_subscriber(broker.port, "storegw/v1/#").await?;
    let mut c = cfg.clone();
    c.sources.sim.enabled = true;
    // As fast as the pipeline takes them (the channel to the spool writer applies backpressure).
    c.sources.sim.rate = 100_000_000.0;
    c.sources.sim.limit = n;
    let t = Instant::now();
    let p = crate::daemon::Pipeline::start(&c).await?;
    let done = wait_count(&ours_count, n, Duration::from_secs(300)).await;
    let ours = n as f64 / t.elapsed().as_secs_f64();
    p.shutdown().await;
    done?;
    Ok(vec![Row::new(
        "end to end sim→spool→mosquitto→subscriber",
        ours,
        "events/s",
    )
    .baseline("raw rumqttc QoS 1, same batches", raw)
    .target(
        "≥100k ev/s and ≥0.7× raw",
        ours >= 100_000.0 && ours >= 0.7 * raw,
    )])
}

/// Bytes on disk per event at a large backlog, and the time to drain it once the broker is back.
async fn backlog(bin: &Path, dir: &Path, n: u64) -> Result<Vec<Row>, String> {
    let cfg = bench_config(&dir.join("state"), 1)?;
    let spool =
        Arc::new(Spool::open(&cfg.spool_dir(), "gw1", &cfg.spool).map_err(|e| e.to_string())?);
    let mut sim = Simulator::new(&cfg.sources.sim);
    let now = crate::event::now_ms();
    let mut payload = 0u64;
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        let part: Vec<Event> = (0..k).map(|_| sim.next_event(now)).collect();
        let seqs = spool.append(&part).map_err(|e| e.to_string())?;
        for (e, s) in part.iter().zip(seqs) {
            payload += e.to_wire("gw1", s).len() as u64;
        }
        left -= k;
    }
    spool.flush().await.map_err(|e| e.to_string())?;
    let disk = dir_bytes(&cfg.spool_dir());
    let per_event = disk as f64 / n as f64;
    let payload_per_event = payload as f64 / n as f64;

    let broker = start_broker(bin, &dir.join("broker"))?;
    let count = counting_subscriber(broker.port, "storegw/v1/#").await?;
    let mut c = cfg.clone();
    c.mqtt.port = broker.port;
    c.mqtt.batch_max_events = 1000;
    c.mqtt.max_inflight = 64;
    let settings = crate::uplink::UplinkSettings::from_config(&c)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let t = Instant::now();
    let up = tokio::spawn(crate::uplink::run(
        settings,
        spool.clone(),
        crate::telemetry::Telemetry::new(),
        stop_rx,
    ));
    let until = Instant::now() + Duration::from_secs(600);
    while spool.total_depth() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = t.elapsed().as_secs_f64();
    let delivered = count.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), up).await;
    Ok(vec![
        Row::new(
            &format!("bytes on disk per event at a {n}-event backlog"),
            per_event,
            "bytes",
        )
        .baseline("wire JSON payload per event", payload_per_event)
        .target("≤2× payload", per_event <= 2.0 * payload_per_event),
        Row::new(&format!("drain a {n}-event backlog"), drain, "s").target(
            &format!("≤20 s (subscriber counted {delivered})"),
            drain <= 20.0 && spool.total_depth() == 0,
        ),
    ])
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                Ok(m) => {
                    use std::os::unix::fs::MetadataExt;
                    total += m.blocks() * 512;
                }
                Err(_) => {}
            }
        }
    }
    total
}

/// Reads `key:` (kB) from /proc/PID/status.
fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn proc_write_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    s.lines()
        .find(|l| l.starts_with("write_bytes:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The gateway the rows that start one measure: `STOREGW_BENCH_GATEWAY` when set, else this
/// binary. `scripts/bench` sets it to the gateway a store runs (the store's features at this
/// profile): a gateway built with the central team's tools, the demo broker and this benchmark
/// keeps their code pages resident too, and its memory would be theirs (BENCHMARKS.md, "POS
/// push").
pub(crate) fn gateway_exe() -> Result<PathBuf, String> {
    match std::env::var_os("STOREGW_BENCH_GATEWAY") {
        Some(p) => Ok(PathBuf::from(p)),
        None => std::env::current_exe().map_err(|e| e.to_string()),
    }
}

/// The storegw binary as a separate process at a typical large-store load, measured from /proc.
async fn footprint(bin: &Path, dir: &Path, secs: u64) -> Result<Vec<Row>, String> {
    let broker = start_broker(bin, &dir.join("broker"))?;
    let _count = counting_subscriber(broker.port, "storegw/v1/#").await?;
    let conf = dir.join("storegw.toml");
    std::fs::write(&conf, typical_load_config(&dir.join("state"), broker.port))
        .map_err(|e| e.to_string())?;
    let mut child = Command::new(gateway_exe()?)
        .args(["run", "--config"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id();
    // Let it reach steady state before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu0, io0, t0) = (
        proc_cpu_ticks(pid).unwrap_or(0),
        proc_write_bytes(pid).unwrap_or(0),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let cpu1 = proc_cpu_ticks(pid).unwrap_or(0);
    let io1 = proc_write_bytes(pid).unwrap_or(0);
    let elapsed = t0.elapsed().as_secs_f64();
    let rss_kb = proc_status_kb(pid, "VmRSS:").unwrap_or(0);
    let hwm_kb = proc_status_kb(pid, "VmHWM:").unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    let cpu_share = (cpu1.saturating_sub(cpu0)) as f64 / clock_ticks() / elapsed;
    let per_day = (io1.saturating_sub(io0)) as f64 / elapsed * 86_400.0;
    Ok(vec![
        Row::new("RSS at typical load (peak)", hwm_kb as f64 / 1024.0, "MB").target(
            &format!("≤20 MB (current {:.1} MB)", rss_kb as f64 / 1024.0),
            (hwm_kb as f64 / 1024.0) <= 20.0,
        ),
        Row::new("CPU at typical load", cpu_share * 100.0, "% of one core")
            .target("≤2%", cpu_share <= 0.02),
        Row::new(
            "bytes written to disk per day at typical load",
            per_day / 1e9,
            "GB/day",
        )
        .target("≤1 GB", per_day <= 1e9),
    ])
}

/// A large store: 200 beacons at 1 Hz (20 sightings/s in 10 s windows), 2,000 probes/min
/// (census and visits), 1 transaction/s; as aggregated events, about 25 events/s.
fn typical_load_config(state: &Path, port: u16) -> String {
    format!(
        "[gateway]\nstore_id = \"bench\"\ngateway_id = \"gw1\"\nstate_dir = \"{}\"\n\
         [mqtt]\nport = {port}\n[http]\nenabled = false\n[log]\nlevel = \"warn\"\nformat = \"text\"\n\
         [sources.sim]\nenabled = true\nrate = 25.0\nbeacons = 200\n",
        state.display()
    )
}

/// Time from exec to `READY=1` on the systemd notify socket, median of 5 starts.
fn start_to_ready(dir: &Path) -> Result<Row, String> {
    use std::os::unix::net::UnixDatagram;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let conf = dir.join("storegw.toml");
    std::fs::write(
        &conf,
        format!(
            "[gateway]\nstore_id = \"bench\"\ngateway_id = \"gw1\"\nstate_dir = \"{}\"\n\
             [mqtt]\nport = 1\n[http]\nenabled = false\n[log]\nlevel = \"error\"\nformat = \"text\"\n",
            dir.join("state").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let exe = gateway_exe()?;
    let mut times = Vec::new();
    for i in 0..5 {
        let sock_path = dir.join(format!("notify-{i}.sock"));
        let sock = UnixDatagram::bind(&sock_path).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let t = Instant::now();
        let mut child = Command::new(&exe)
            .args(["run", "--config"])
            .arg(&conf)
            .env("NOTIFY_SOCKET", &sock_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 512];
        let mut ready = None;
        while let Ok(n) = sock.recv(&mut buf) {
            if buf
                .get(..n)
                .is_some_and(|b| b.windows(7).any(|w| w == b"READY=1"))
            {
                ready = Some(t.elapsed());
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        times.push(ready.ok_or("no READY=1 within 10 s")?);
    }
    times.sort();
    let median = times[times.len() / 2].as_secs_f64() * 1000.0;
    Ok(Row::new(
        "start to ready (READY=1 on the notify socket)",
        median,
        "ms",
    )
    .target("≤300 ms", median <= 300.0))
}

/// Size of the store binaries `scripts/cross-build --release` left behind: the release profile
/// (fat LTO, opt-level "z", stripped by cargo) with the store features (`--no-default-features
/// --features ble-live`). The target is the 6 MiB (binary megabytes).
fn binary_sizes(notes: &mut Vec<String>) -> Vec<Row> {
    const TARGET_BYTES: u64 = 6 * 1024 * 1024;
    let mut rows = Vec::new();
    // Where cargo put them: CARGO_TARGET_DIR when the build set it, else the crate's target/.
    let root = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    for target in ["aarch64-unknown-linux-gnu", "armv7-unknown-linux-gnueabihf"] {
        let p = root.join(target).join("release").join("storegw");
        match std::fs::metadata(&p) {
            Ok(m) => {
                let mib = m.len() as f64 / (1024.0 * 1024.0);
                rows.push(
                    Row::new(
                        &format!(
                            "stripped {target} release binary, {} bytes (store features, \
                             scripts/cross-build --release)",
                            m.len()
                        ),
                        mib,
                        "MiB",
                    )
                    .target("≤6 MiB", m.len() <= TARGET_BYTES),
                );
            }
            Err(_) => notes.push(format!(
                "{target} binary not built (scripts/cross-build builds it), size not measured"
            )),
        }
    }
    rows
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1048576.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {mem} RAM, Linux {}, storegw {}",
        kernel.trim(),
        env!("CARGO_PKG_VERSION")
    )
}

fn write_report(out: Option<&Path>, rows: &[Row], notes: &[String]) -> Result<(), String> {
    let mut md = String::new();
    let _ = writeln!(md, "# storegw benchmarks\n");
    let _ = writeln!(
        md,
        "Measured {} on: {}.\n\nEvery figure sits beside a baseline measured in the same run; \
         the ratio is what to compare across machines. Regenerate with `scripts/bench`.\n",
        crate::event::rfc3339_ms(crate::event::now_ms()),
        machine()
    );
    // Which build the rows that start a gateway measured, so a report says what it describes.
    if let Ok(gw) = gateway_exe() {
        let bytes = std::fs::metadata(&gw).map(|m| m.len()).unwrap_or(0);
        let _ = writeln!(
            md,
            "Footprint, start to ready and POS push measure the gateway `{}` ({bytes} bytes{}).\n",
            gw.file_name().unwrap_or_default().to_string_lossy(),
            if std::env::var_os("STOREGW_BENCH_GATEWAY").is_some() {
                ", from STOREGW_BENCH_GATEWAY"
            } else {
                ", this binary"
            }
        );
    }
    let _ = writeln!(
        md,
        "| measurement | storegw | baseline (same run) | ratio | target | met |\n|---|---:|---|---:|---|---|"
    );
    for r in rows {
        let base = match r.baseline {
            Some(b) => format!("{}: {}", r.baseline_name, fmt_num(b)),
            None => "–".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} {} | {} | {} | {} | {} |",
            r.what,
            fmt_num(r.value),
            r.unit,
            base,
            r.ratio.map(|x| format!("{x:.2}×")).unwrap_or("–".into()),
            r.target,
            match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            }
        );
    }
    if !notes.is_empty() {
        let _ = writeln!(md, "\nNot measured in this run:\n");
        for n in notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    print!("{md}");
    let Some(out) = out else {
        return Ok(());
    };
    std::fs::write(out, &md).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    let json = serde_json::json!({ "machine": machine(), "rows": rows, "notes": notes });
    let jpath = out.with_extension("json");
    std::fs::write(&jpath, serde_json::to_vec_pretty(&json).unwrap_or_default())
        .map_err(|e| format!("cannot write {}: {e}", jpath.display()))?;
    Ok(())
}

fn fmt_num(v: f64) -> String {
    if v >= 1000.0 {
        let s = format!("{:.0}", v);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
