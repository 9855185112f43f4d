//! One pipeline's counters and gauges, rendered as Prometheus text on `/metrics`. The registry
//! reaches its users inside a [`super::Telemetry`] handle, never through a static.
//!
//! Labels are streams, reasons and source names only: never an identifier.
//!
//! Every family is declared in this module (docs/design.md, "Metrics"): the fixed ones in
//! [`FAMILIES`], the ones call sites feed in [`Metric`]; call sites name a variant, never a
//! string. The registry is in-house rather than `prometheus-client`: it keeps the 0.0.4 text
//! exposition (`_total` names in `# TYPE`, no `# EOF`) that operators' dashboards and
//! `tests/ops_http.rs` rely on (docs/design.md, "Metrics").

use super::health::{SourceHealth, SourceState};
use crate::event::Stream;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// All metrics of one pipeline (the gateway runs one; tests and the fleet bench run several).
#[derive(Default)]
pub struct Metrics {
    events_in: [AtomicU64; Stream::COUNT],
    events_out: [AtomicU64; Stream::COUNT],
    batches_out: AtomicU64,
    mqtt_connected: AtomicI64,
    mqtt_reconnects: AtomicU64,
    ack_latency_sum_us: AtomicU64,
    ack_latency_count: AtomicU64,
    ack_latency_buckets: [AtomicU64; 8],
    counters: Mutex<BTreeMap<(String, String), u64>>,
    gauges: Mutex<BTreeMap<(String, String), f64>>,
}

const LATENCY_BOUNDS_MS: [u64; 7] = [5, 20, 50, 200, 1000, 5000, 30000];

fn si(s: Stream) -> usize {
    s.index()
}

impl Metrics {
    /// Events accepted into the spool.
    pub fn events_in(&self, s: Stream, n: u64) {
        self.events_in[si(s)].fetch_add(n, Ordering::Relaxed);
    }
    /// Events acknowledged by the broker.
    pub fn events_out(&self, s: Stream, n: u64) {
        self.events_out[si(s)].fetch_add(n, Ordering::Relaxed);
        self.batches_out.fetch_add(1, Ordering::Relaxed);
    }
    /// Events acknowledged so far for a stream.
    pub fn events_out_total(&self, s: Stream) -> u64 {
        self.events_out[si(s)].load(Ordering::Relaxed)
    }
    /// Events dropped or refused.
    pub fn drops(&self, s: Stream, reason: &str, n: u64) {
        self.count(
            Metric::DroppedEvents,
            &labels(&[("stream", s.as_str()), ("reason", reason)]),
            n,
        );
    }
    /// MQTT session state.
    pub fn set_connected(&self, up: bool) {
        self.mqtt_connected.store(up as i64, Ordering::Relaxed);
    }
    /// Whether the MQTT session is up.
    pub fn connected(&self) -> bool {
        self.mqtt_connected.load(Ordering::Relaxed) == 1
    }
    /// A new connection after a lost one.
    pub fn reconnect(&self) {
        self.mqtt_reconnects.fetch_add(1, Ordering::Relaxed);
    }
    /// Reconnections so far.
    pub fn reconnects(&self) -> u64 {
        self.mqtt_reconnects.load(Ordering::Relaxed)
    }
    /// Publish-to-PUBACK latency of one batch.
    pub fn ack_latency(&self, us: u64) {
        self.ack_latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.ack_latency_count.fetch_add(1, Ordering::Relaxed);
        let ms = us / 1000;
        let b = LATENCY_BOUNDS_MS.iter().position(|&b| ms <= b).unwrap_or(7);
        self.ack_latency_buckets[b].fetch_add(1, Ordering::Relaxed);
    }
    /// Adds to a labelled counter (source health, malformed inputs, restarts).
    pub fn count(&self, m: Metric, labels: &str, n: u64) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entry((m.name().to_string(), labels.to_string()))
                .or_default() += n;
        }
    }
    /// Sets a labelled gauge.
    pub fn gauge(&self, m: Metric, labels: &str, v: f64) {
        if let Ok(mut g) = self.gauges.lock() {
            g.insert((m.name().to_string(), labels.to_string()), v);
        }
    }
    /// Counts malformed input of a source (see [`labels`] for the convention).
    pub fn malformed(&self, source: &str, reason: &str, n: u64) {
        self.count(
            Metric::Malformed,
            &labels(&[("source", source), ("reason", reason)]),
            n,
        );
    }
    /// Current value of a labelled counter.
    pub fn counter_value(&self, m: Metric, labels: &str) -> u64 {
        self.counters
            .lock()
            .ok()
            .and_then(|c| c.get(&(m.name().to_string(), labels.to_string())).copied())
            .unwrap_or(0)
    }

    /// Prometheus text exposition (format 0.0.4): every family with HELP and TYPE, once;
    /// `cx` brings what the registry does not hold (uptime, the spool, the sources).
    pub fn render(&self, cx: &Exposition<'_>) -> String {
        let mut o = String::new();
        let counters = self.counters.lock().map(|c| c.clone()).unwrap_or_default();
        let gauges = self.gauges.lock().map(|g| g.clone()).unwrap_or_default();
        family(&mut o, "storegw_build_info", "gauge");
        let _ = writeln!(
            o,
            "storegw_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        family(&mut o, "storegw_uptime_seconds", "gauge");
        let _ = writeln!(o, "storegw_uptime_seconds {}", cx.uptime_s);
        family(&mut o, "storegw_events_in_total", "counter");
        for s in Stream::ALL {
            let v = self.events_in[si(s)].load(Ordering::Relaxed);
            let _ = writeln!(o, "storegw_events_in_total{{stream=\"{s}\"}} {v}");
        }
        family(&mut o, "storegw_events_out_total", "counter");
        for s in Stream::ALL {
            let v = self.events_out[si(s)].load(Ordering::Relaxed);
            let _ = writeln!(o, "storegw_events_out_total{{stream=\"{s}\"}} {v}");
        }
        if let Some(sp) = &cx.spool {
            let depths = &sp.streams;
            family(&mut o, "storegw_spool_depth", "gauge");
            for d in depths {
                let _ = writeln!(
                    o,
                    "storegw_spool_depth{{stream=\"{}\"}} {}",
                    d.stream, d.depth
                );
            }
            family(&mut o, "storegw_spool_bytes", "gauge");
            for d in depths {
                let _ = writeln!(
                    o,
                    "storegw_spool_bytes{{stream=\"{}\"}} {}",
                    d.stream, d.bytes
                );
            }
            family(&mut o, "storegw_spool_oldest_age_seconds", "gauge");
            for d in depths {
                let _ = writeln!(
                    o,
                    "storegw_spool_oldest_age_seconds{{stream=\"{}\"}} {}",
                    d.stream,
                    num(d.oldest_age_s.unwrap_or(0.0))
                );
            }
            family(&mut o, "storegw_spool_disk_bytes", "gauge");
            let _ = writeln!(o, "storegw_spool_disk_bytes {}", sp.disk_bytes);
            family(&mut o, "storegw_healthy", "gauge");
            let _ = writeln!(o, "storegw_healthy {}", sp.healthy as u8);
        }
        family(&mut o, "storegw_mqtt_connected", "gauge");
        let _ = writeln!(
            o,
            "storegw_mqtt_connected {}",
            self.mqtt_connected.load(Ordering::Relaxed)
        );
        family(&mut o, "storegw_mqtt_reconnects_total", "counter");
        let _ = writeln!(
            o,
            "storegw_mqtt_reconnects_total {}",
            self.mqtt_reconnects.load(Ordering::Relaxed)
        );
        family(&mut o, "storegw_mqtt_batches_acked_total", "counter");
        let _ = writeln!(
            o,
            "storegw_mqtt_batches_acked_total {}",
            self.batches_out.load(Ordering::Relaxed)
        );
        family(&mut o, "storegw_publish_ack_seconds", "histogram");
        let mut cum = 0;
        for (i, b) in LATENCY_BOUNDS_MS.iter().enumerate() {
            cum += self.ack_latency_buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                o,
                "storegw_publish_ack_seconds_bucket{{le=\"{}\"}} {cum}",
                *b as f64 / 1000.0
            );
        }
        cum += self.ack_latency_buckets[7].load(Ordering::Relaxed);
        let _ = writeln!(o, "storegw_publish_ack_seconds_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(
            o,
            "storegw_publish_ack_seconds_sum {}",
            num(self.ack_latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6)
        );
        let _ = writeln!(o, "storegw_publish_ack_seconds_count {cum}");
        let sources = cx.sources;
        family(&mut o, "storegw_source_up", "gauge");
        for (name, h) in sources {
            let _ = writeln!(
                o,
                "storegw_source_up{{{}}} {}",
                labels(&[("source", name), ("state", &h.state)]),
                (h.state == SourceState::Running.as_str()) as u8
            );
        }
        family(&mut o, "storegw_source_last_input_age_seconds", "gauge");
        let now = crate::event::now_ms();
        for (name, h) in sources {
            if let Some(ms) = h.last_input_ms {
                let _ = writeln!(
                    o,
                    "storegw_source_last_input_age_seconds{{{}}} {}",
                    labels(&[("source", name)]),
                    num((now - ms).max(0) as f64 / 1000.0)
                );
            }
        }
        // Labelled counters and gauges: the documented families first (HELP and TYPE even
        // without samples), then any other family a source registers.
        for m in Metric::ALL.iter().copied().filter(|m| m.always_listed()) {
            family(&mut o, m.name(), m.kind());
            write_samples(&mut o, m.name(), m.kind(), &counters, &gauges);
        }
        let mut extra: Vec<(&str, &str)> = counters
            .keys()
            .map(|(n, _)| (n.as_str(), "counter"))
            .chain(gauges.keys().map(|(n, _)| (n.as_str(), "gauge")))
            .filter(|(n, _)| {
                !Metric::ALL
                    .iter()
                    .any(|m| m.always_listed() && m.name() == *n)
            })
            .collect();
        extra.sort();
        extra.dedup_by(|a, b| a.0 == b.0);
        for (name, kind) in extra {
            if !valid_name(name) {
                continue;
            }
            family(&mut o, name, kind);
            write_samples(&mut o, name, kind, &counters, &gauges);
        }
        o
    }
}

/// What `/metrics` shows besides the registry's own values, gathered by the HTTP server: the
/// registry sits below the spool and the health registry's users, so it is handed the facts.
pub struct Exposition<'a> {
    /// Seconds since the gateway started.
    pub uptime_s: u64,
    /// The spool's figures, when a spool is open.
    pub spool: Option<SpoolFigures>,
    /// Every source's health.
    pub sources: &'a BTreeMap<String, SourceHealth>,
}

/// The spool's figures for `/metrics`.
pub struct SpoolFigures {
    /// Depth, bytes and oldest age per stream.
    pub streams: Vec<StreamFigures>,
    /// Bytes on disk.
    pub disk_bytes: u64,
    /// `/healthz` would answer 200.
    pub healthy: bool,
}

/// One stream's spool figures.
pub struct StreamFigures {
    /// The `stream` label of the spool gauges.
    pub stream: Stream,
    /// `storegw_spool_depth`: events not yet acknowledged by the broker.
    pub depth: u64,
    /// `storegw_spool_bytes`: bytes the stream holds in sled.
    pub bytes: u64,
    /// `storegw_spool_oldest_age_seconds`; None (an empty stream) is written as 0.
    pub oldest_age_s: Option<f64>,
}

type CounterMap = BTreeMap<(String, String), u64>;
type GaugeMap = BTreeMap<(String, String), f64>;

fn write_samples(o: &mut String, name: &str, kind: &str, c: &CounterMap, g: &GaugeMap) {
    if kind == "counter" {
        for ((n, l), v) in c.iter().filter(|((n, _), _)| n == name) {
            let _ = writeln!(o, "{n}{} {v}", braces(l));
        }
    } else {
        for ((n, l), v) in g.iter().filter(|((n, _), _)| n == name) {
            let _ = writeln!(o, "{n}{} {}", braces(l), num(*v));
        }
    }
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

/// Declares [`Metric`]: variant, exposed name, type, whether it is listed without samples,
/// and HELP text, in one row each.
macro_rules! metrics {
    ($($v:ident => $name:literal, $kind:literal, $listed:literal, $help:literal;)*) => {
        /// A family fed through [`Metrics::count`] / [`Metrics::gauge`] at its call sites.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Metric {
            $(#[doc = $help] $v,)*
        }

        impl Metric {
            /// Every call-site family.
            pub const ALL: &'static [Metric] = &[$(Metric::$v,)*];

            /// The exposed name (part of the operator contract: never renamed).
            pub const fn name(self) -> &'static str {
                match self { $(Metric::$v => $name,)* }
            }

            /// `counter` or `gauge`.
            pub const fn kind(self) -> &'static str {
                match self { $(Metric::$v => $kind,)* }
            }

            /// HELP text.
            pub const fn help(self) -> &'static str {
                match self { $(Metric::$v => $help,)* }
            }

            /// Documented families are rendered (HELP and TYPE) even before their first sample.
            const fn always_listed(self) -> bool {
                match self { $(Metric::$v => $listed,)* }
            }
        }
    };
}

metrics! {
    DroppedEvents => "storegw_dropped_events_total", "counter", true,
        "Events dropped or refused, by stream and reason.";
    SourceRestarts => "storegw_source_restarts_total", "counter", true,
        "Restarts of a source's component (e.g. the BLE scanner), by source and what restarted.";
    Malformed => "storegw_malformed_total", "counter", true,
        "Malformed inputs counted and skipped, by source and reason.";
    ConfigReloads => "storegw_config_reloads_total", "counter", true,
        "SIGHUP configuration reloads, by result (applied, rejected).";
    HttpConnectionsRefused => "storegw_http_connections_refused_total", "counter", false,
        "Loopback HTTP connections refused at the connection cap.";
    WifiFrames => "storegw_wifi_frames_total", "counter", false,
        "Wi-Fi frames captured.";
    WifiProbeRequests => "storegw_wifi_probe_requests_total", "counter", false,
        "Wi-Fi probe requests seen.";
    WifiAccepted => "storegw_wifi_accepted_total", "counter", false,
        "Wi-Fi probe requests counted.";
    WifiMalformed => "storegw_wifi_malformed_total", "counter", false,
        "Wi-Fi frames that did not parse.";
    WifiBadFcs => "storegw_wifi_bad_fcs_total", "counter", false,
        "Wi-Fi frames with a bad frame check sequence.";
    WifiGroupSource => "storegw_wifi_group_source_total", "counter", false,
        "Wi-Fi frames with a group (multicast) source address.";
    WifiTrackedDevices => "storegw_wifi_tracked_devices", "gauge", false,
        "Devices the Wi-Fi estimator tracks now.";
    WifiKernelDrops => "storegw_wifi_kernel_drops_total", "counter", false,
        "Frames the kernel dropped before the capture socket read them.";
    BleReports => "storegw_ble_reports_total", "counter", false,
        "BLE advertising reports received.";
    BleMalformed => "storegw_ble_malformed_total", "counter", false,
        "BLE advertising reports that did not parse.";
    BleDecoded => "storegw_ble_decoded_total", "counter", false,
        "BLE beacon frames decoded, by format.";
    BleEvents => "storegw_ble_events_total", "counter", false,
        "BLE events produced, by kind.";
    PosPollErrors => "storegw_pos_poll_errors_total", "counter", false,
        "Failed POS API polls.";
    PosRejected => "storegw_pos_rejected_total", "counter", false,
        "POS inputs rejected as invalid, by input.";
    PosFiles => "storegw_pos_files_total", "counter", false,
        "POS export files processed, by result.";
    PosConflicts => "storegw_pos_conflicts_total", "counter", false,
        "POS transactions refused: id reused with other content.";
    PosDuplicates => "storegw_pos_duplicates_total", "counter", false,
        "POS transactions already stored (idempotent retries).";
    PosRefused => "storegw_pos_refused_total", "counter", false,
        "POS inputs refused for lack of room, by reason.";
    RemoteUnverified => "storegw_remote_unverified_total", "counter", true,
        "Messages on the remote topics that no trusted key signed (ignored), by topic and reason.";
    OutgoingOversized => "storegw_outgoing_oversized_total", "counter", true,
        "Control messages (status, configuration state, command answers) too large to send, replaced by a bounded error.";
}

/// Every fixed metric family: name, type and HELP text. docs/operations.md lists the same.
pub const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "storegw_build_info",
        "gauge",
        "Version of the running binary (always 1).",
    ),
    (
        "storegw_uptime_seconds",
        "gauge",
        "Seconds since the gateway started.",
    ),
    (
        "storegw_events_in_total",
        "counter",
        "Events accepted into the spool, by stream.",
    ),
    (
        "storegw_events_out_total",
        "counter",
        "Events acknowledged by the broker (PUBACK), by stream.",
    ),
    (
        "storegw_spool_depth",
        "gauge",
        "Events waiting in the spool, by stream.",
    ),
    (
        "storegw_spool_bytes",
        "gauge",
        "Logical bytes waiting in the spool, by stream.",
    ),
    (
        "storegw_spool_oldest_age_seconds",
        "gauge",
        "Age of the oldest waiting event, by stream (0 when empty).",
    ),
    (
        "storegw_spool_disk_bytes",
        "gauge",
        "Bytes the spool occupies on disk.",
    ),
    (
        "storegw_healthy",
        "gauge",
        "1 when /healthz answers 200 (the systemd watchdog is fed), else 0.",
    ),
    (
        "storegw_mqtt_connected",
        "gauge",
        "1 while the MQTT session is up.",
    ),
    (
        "storegw_mqtt_reconnects_total",
        "counter",
        "New MQTT sessions after a lost one.",
    ),
    (
        "storegw_mqtt_batches_acked_total",
        "counter",
        "Batches (MQTT messages) acknowledged by the broker.",
    ),
    (
        "storegw_publish_ack_seconds",
        "histogram",
        "Latency from publishing a batch to its PUBACK.",
    ),
    (
        "storegw_source_up",
        "gauge",
        "1 while a source is running, else 0; the state label says which state.",
    ),
    (
        "storegw_source_last_input_age_seconds",
        "gauge",
        "Seconds since a source last saw input.",
    ),
];

fn family(o: &mut String, name: &str, kind: &str) {
    let help = FAMILIES
        .iter()
        .find(|f| f.0 == name)
        .map(|f| f.2)
        .or_else(|| {
            Metric::ALL
                .iter()
                .find(|m| m.name() == name)
                .map(|m| m.help())
        })
        .unwrap_or("Source-defined metric.");
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A float as Prometheus writes it (`NaN`, `+Inf`, `-Inf`).
fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Formats label pairs for [`Metrics::count`] / [`Metrics::gauge`], escaping values as the
/// exposition format requires, so a reason string can never break the `/metrics` page.
///
/// Convention for sources: malformed input is counted as
/// `count(Metric::Malformed, &labels(&[("source", "wifi"), ("reason", "short_frame")]), n)`
/// with a short, fixed snake_case reason (never input data, never an identifier).
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("source", "wifi"), ("reason", "a\"b\\c\nd")]),
            r#"source="wifi",reason="a\"b\\c\nd""#
        );
    }

    #[test]
    fn every_family_is_declared_once() {
        let m = Metrics::default();
        m.count(
            Metric::Malformed,
            &labels(&[("source", "x"), ("reason", "y")]),
            2,
        );
        m.count(Metric::PosFiles, "result=\"done\"", 1);
        m.gauge(Metric::WifiTrackedDevices, "", f64::INFINITY);
        let sources = BTreeMap::new();
        let text = m.render(&Exposition {
            uptime_s: 0,
            spool: None,
            sources: &sources,
        });
        let mut seen = std::collections::HashSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split_whitespace().nth(2).unwrap_or_default();
            assert!(seen.insert(name.to_string()), "{name} declared twice");
        }
        assert!(text.contains("storegw_malformed_total{source=\"x\",reason=\"y\"} 2"));
        assert!(text.contains("storegw_wifi_tracked_devices +Inf"));
        assert!(text.contains("# HELP storegw_pos_files_total POS export files"));
        assert!(text.contains("# HELP storegw_dropped_events_total "));
    }
}
