//! Process-wide counters and gauges, rendered as Prometheus text on `/metrics`.
//!
//! Labels are streams, reasons and source names only: never an identifier.

use crate::event::Stream;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// All metrics of the process.
#[derive(Default)]
pub struct Metrics {
    events_in: [AtomicU64; 3],
    events_out: [AtomicU64; 3],
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
    match s {
        Stream::Ble => 0,
        Stream::Wifi => 1,
        Stream::Pos => 2,
    }
}

static GLOBAL: OnceLock<Metrics> = OnceLock::new();

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    GLOBAL.get_or_init(Metrics::default)
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
            "storegw_dropped_events_total",
            &format!("stream=\"{s}\",reason=\"{reason}\""),
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
    /// Adds to a free-form labelled counter (source health, malformed inputs, restarts).
    pub fn count(&self, name: &str, labels: &str, n: u64) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entry((name.to_string(), labels.to_string())).or_default() += n;
        }
    }
    /// Sets a free-form labelled gauge.
    pub fn gauge(&self, name: &str, labels: &str, v: f64) {
        if let Ok(mut g) = self.gauges.lock() {
            g.insert((name.to_string(), labels.to_string()), v);
        }
    }
    /// Current value of a labelled counter.
    pub fn counter_value(&self, name: &str, labels: &str) -> u64 {
        self.counters
            .lock()
            .ok()
            .and_then(|c| c.get(&(name.to_string(), labels.to_string())).copied())
            .unwrap_or(0)
    }

    /// Prometheus text exposition.
    pub fn render(&self, spool: Option<&crate::spool::Spool>) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# HELP storegw_events_in_total Events accepted into the spool.\n# TYPE storegw_events_in_total counter");
        for s in Stream::ALL {
            let _ = writeln!(
                o,
                "storegw_events_in_total{{stream=\"{s}\"}} {}",
                self.events_in[si(s)].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(o, "# HELP storegw_events_out_total Events acknowledged by the broker.\n# TYPE storegw_events_out_total counter");
        for s in Stream::ALL {
            let _ = writeln!(
                o,
                "storegw_events_out_total{{stream=\"{s}\"}} {}",
                self.events_out[si(s)].load(Ordering::Relaxed)
            );
        }
        if let Some(sp) = spool {
            let _ = writeln!(o, "# TYPE storegw_spool_depth gauge\n# TYPE storegw_spool_bytes gauge\n# TYPE storegw_spool_oldest_age_seconds gauge");
            for s in Stream::ALL {
                let d = sp.depth(s);
                let _ = writeln!(o, "storegw_spool_depth{{stream=\"{s}\"}} {}", d.depth);
                let _ = writeln!(o, "storegw_spool_bytes{{stream=\"{s}\"}} {}", d.bytes);
                let _ = writeln!(
                    o,
                    "storegw_spool_oldest_age_seconds{{stream=\"{s}\"}} {}",
                    d.oldest_age_s.unwrap_or(0.0)
                );
            }
            let _ = writeln!(
                o,
                "# TYPE storegw_spool_disk_bytes gauge\nstoregw_spool_disk_bytes {}",
                sp.disk_bytes()
            );
        }
        let _ = writeln!(
            o,
            "# TYPE storegw_mqtt_connected gauge\nstoregw_mqtt_connected {}",
            self.mqtt_connected.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# TYPE storegw_mqtt_reconnects_total counter\nstoregw_mqtt_reconnects_total {}",
            self.mqtt_reconnects.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# TYPE storegw_mqtt_batches_acked_total counter\nstoregw_mqtt_batches_acked_total {}",
            self.batches_out.load(Ordering::Relaxed)
        );
        let _ = writeln!(o, "# HELP storegw_publish_ack_seconds Publish-to-PUBACK latency per batch.\n# TYPE storegw_publish_ack_seconds histogram");
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
            self.ack_latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            o,
            "storegw_publish_ack_seconds_count {}",
            self.ack_latency_count.load(Ordering::Relaxed)
        );
        if let Ok(c) = self.counters.lock() {
            let mut last = "";
            for ((name, labels), v) in c.iter() {
                if name != last {
                    let _ = writeln!(o, "# TYPE {name} counter");
                    last = name;
                }
                let _ = writeln!(o, "{name}{{{labels}}} {v}");
            }
        }
        if let Ok(g) = self.gauges.lock() {
            let mut last = "";
            for ((name, labels), v) in g.iter() {
                if name != last {
                    let _ = writeln!(o, "# TYPE {name} gauge");
                    last = name;
                }
                let _ = writeln!(o, "{name}{{{labels}}} {v}");
            }
        }
        o
    }
}
