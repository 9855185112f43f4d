//! A synthetic store: every event kind at a configurable rate, seeded and repeatable, for the
//! demo, tests and load. Shapes match what the real BLE, Wi-Fi and POS stages publish.

pub mod config;

use crate::config::Config;
use crate::event::{now_ms, rfc3339_ms, Event, EventKind};
use crate::sensor_events::*;
use crate::telemetry::health::SourceState;
use config::SimConfig;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Deterministic generator of synthetic events.
pub struct Simulator {
    rng: fastrand::Rng,
    cfg: SimConfig,
    tx_seq: u64,
    present: Vec<Option<i64>>,
}

const UUID: &str = "fda50693-a4e2-4fb1-afcf-c6eb07647825";

impl Simulator {
    /// A simulator seeded from the config.
    pub fn new(cfg: &SimConfig) -> Simulator {
        Simulator {
            rng: fastrand::Rng::with_seed(cfg.seed),
            cfg: cfg.clone(),
            tx_seq: 0,
            present: vec![None; cfg.beacons as usize],
        }
    }

    fn beacon(&mut self) -> (usize, BeaconId) {
        let i = self.rng.usize(0..self.cfg.beacons.max(1) as usize);
        let id = match i % 4 {
            0 | 1 => BeaconId::Ibeacon {
                uuid: UUID.into(),
                major: 100 + (i / 50) as u16,
                minor: i as u16,
            },
            2 => BeaconId::EddystoneUid {
                namespace: "edd1ebeac04e5defa017".into(),
                instance: format!("{i:012x}"),
            },
            _ => BeaconId::Altbeacon {
                id1: "2f234454-cf6d-4a0f-adf2-f4911ba9ffa6".into(),
                id2: 1,
                id3: i as u16,
                mfg: 0x0118,
            },
        };
        (i, id)
    }

    /// The next event, mixing kinds in a realistic proportion (sightings dominate).
    pub fn next_event(&mut self, now: i64) -> Event {
        let r = self.rng.u32(0..1000);
        let win = rfc3339_ms(now - now.rem_euclid(10_000));
        match r {
            0..=599 => {
                let (_, beacon) = self.beacon();
                let base = -55 - self.rng.i16(0..35);
                let spread = self.rng.i16(0..8);
                let mean = base as f64 + self.rng.f64() * spread as f64;
                Event::new(
                    EventKind::BleSighting,
                    now,
                    &BleSighting {
                        beacon,
                        window_start: win,
                        window_s: 10,
                        count: self.rng.u32(1..=10),
                        rssi: RssiStats {
                            min: base,
                            max: base + spread,
                            mean: (mean * 10.0).round() / 10.0,
                        },
                        tx_power: Some(-59),
                        distance_m: Some(
                            (10f64.powf((-59.0 - mean) / 20.0) * 100.0).round() / 100.0,
                        ),
                        telemetry: None,
                    },
                )
            }
            600..=699 => {
                let (i, beacon) = self.beacon();
                let (transition, dwell) = match self.present[i] {
                    None => {
                        self.present[i] = Some(now);
                        ("enter", None)
                    }
                    Some(t) => {
                        self.present[i] = None;
                        ("exit", Some(((now - t) as f64 / 1000.0).max(0.0)))
                    }
                };
                Event::new(
                    EventKind::BlePresence,
                    now,
                    &BlePresence {
                        beacon,
                        transition: transition.into(),
                        rssi_smoothed: -60.0 - self.rng.f64() * 20.0,
                        dwell_s: dwell,
                    },
                )
            }
            700..=799 => {
                let public = self.rng.u64(0..20);
                let random = self.rng.u64(5..120);
                let mut by_company = BTreeMap::new();
                by_company.insert("0x004c".to_string(), random / 2);
                by_company.insert("0x0006".to_string(), public / 3);
                Event::new(
                    EventKind::BleCensus,
                    now,
                    &BleCensus {
                        window_start: win,
                        window_s: 10,
                        devices: public + random,
                        by_address_type: [
                            ("public".to_string(), public),
                            ("random".to_string(), random),
                        ]
                        .into(),
                        by_company,
                        advertisements: (public + random) * self.rng.u64(5..30),
                        suppressed: false,
                    },
                )
            }
            800..=899 => {
                let devices = self.rng.u64(5..300);
                let randomized = devices * self.rng.u64(50..95) / 100;
                let in_store = devices * self.rng.u64(10..60) / 100;
                // Randomized addresses inflate the address count about tenfold.
                let estimated = (devices / 10).max(1);
                let in_store_estimated = (in_store / 10).min(estimated);
                let probes = devices * self.rng.u64(2..12);
                let mut hist = BTreeMap::new();
                let mut left = probes;
                for b in [-90, -80, -70, -60, -50] {
                    let n = if b == -50 {
                        left
                    } else {
                        self.rng.u64(0..=left / 2)
                    };
                    left -= n;
                    hist.insert(b.to_string(), n);
                }
                Event::new(
                    EventKind::WifiCensus,
                    now,
                    &WifiCensus {
                        window_start: rfc3339_ms(now - now.rem_euclid(60_000)),
                        window_s: 60,
                        probe_requests: probes,
                        directed_probes: probes * self.rng.u64(0..30) / 100,
                        devices,
                        randomized,
                        randomized_share: (randomized as f64 / devices as f64 * 1000.0).round()
                            / 1000.0,
                        in_store,
                        passer_by: devices - in_store,
                        devices_estimated: estimated,
                        in_store_estimated,
                        passer_by_estimated: estimated - in_store_estimated,
                        people_estimated: in_store_estimated,
                        resident_estimated: 0,
                        arrivals_estimated: in_store_estimated / 4,
                        rssi_threshold_dbm: -70,
                        rssi_histogram: hist,
                        dwell_histogram: crate::source::wifi::people::DWELL_LABELS
                            .iter()
                            .map(|(l, _)| (l.to_string(), 0))
                            .collect(),
                        suppressed: false,
                    },
                )
            }
            900..=949 => {
                let dwell = self.rng.u64(120..3600) as i64;
                let mut dev = [0u8; 8];
                self.rng.fill(&mut dev);
                Event::new(
                    EventKind::WifiVisit,
                    now,
                    &WifiVisit {
                        device: dev.iter().map(|b| format!("{b:02x}")).collect(),
                        first_seen: rfc3339_ms(now - dwell * 1000),
                        last_seen: rfc3339_ms(now),
                        dwell_s: dwell as f64,
                        peak_rssi: -40 - self.rng.i16(0..30),
                        probe_requests: self.rng.u64(3..200),
                        randomized: self.rng.bool(),
                    },
                )
            }
            _ => self.transaction(now),
        }
    }

    fn transaction(&mut self, now: i64) -> Event {
        self.tx_seq += 1;
        let register = format!("R{}", self.rng.u32(1..=self.cfg.registers));
        let n = self.rng.usize(1..6);
        let mut lines = Vec::new();
        let mut sum = 0i64;
        for _ in 0..n {
            let qty = self.rng.u32(1..4) as i64;
            let price = self.rng.i64(99..4999);
            let amount = qty * price;
            sum += amount;
            lines.push(serde_json::json!({
                "sku": format!("SKU-{:05}", self.rng.u32(0..20000)),
                "description": "Sample item",
                "qty": qty, "unit_price_minor": price, "amount_minor": amount, "discounts": []
            }));
        }
        let tax = sum * 19 / 119;
        let card = self.rng.bool();
        Event::from_value(
            EventKind::PosTransaction,
            now,
            serde_json::json!({
                "transaction_id": format!("sim-{}-{}", self.cfg.seed, self.tx_seq),
                "register": register,
                "time": rfc3339_ms(now),
                "currency": self.cfg.currency,
                "type": "sale",
                "source": "sim",
                "lines": lines,
                "totals": { "total_minor": sum, "tax_minor": tax, "lines_sum_minor": sum },
                "tenders": [ if card { serde_json::json!({"type": "card", "amount_minor": sum, "card_brand": "visa"}) }
                             else { serde_json::json!({"type": "cash", "amount_minor": sum}) } ],
                "flags": []
            }),
        )
    }
}

/// Starts the simulator when enabled; it stops at shutdown or at its `limit`.
pub fn start(ctx: &crate::source::SourceContext) -> crate::source::Started {
    if !ctx.cfg.sources.sim.enabled {
        return crate::source::Started::default();
    }
    let sim = run(
        ctx.cfg.sources.sim.clone(),
        ctx.tx.clone(),
        Some(ctx.config.clone()),
        ctx.telemetry.clone(),
    );
    let mut stop = ctx.shutdown.clone();
    crate::source::Started::tasks(vec![tokio::spawn(async move {
        tokio::select! {
            _ = sim => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    })])
}

/// Feeds simulated events into the pipeline at `cfg.rate` until `limit` (if any) is reached or
/// the channel closes. With `live`, a reloaded `rate` and `limit` apply at once. Its state is
/// reported to `telemetry`'s health.
pub async fn run(
    cfg: SimConfig,
    tx: mpsc::Sender<Event>,
    mut live: Option<watch::Receiver<Arc<Config>>>,
    telemetry: crate::telemetry::Telemetry,
) {
    let health = telemetry.health();
    health.set_source("sim", SourceState::Running, None);
    let mut cfg = cfg;
    let mut sim = Simulator::new(&cfg);
    // Emit in small bursts so high rates do not need a timer per event.
    let tick = Duration::from_millis(20);
    let mut per_tick = cfg.rate * tick.as_secs_f64();
    let mut carry = 0.0;
    let mut sent = 0u64;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        interval.tick().await;
        if let Some(rx) = live.as_mut() {
            if rx.has_changed().unwrap_or(false) {
                let new = rx.borrow_and_update().sources.sim.clone();
                if new.rate != cfg.rate {
                    tracing::info!(from = cfg.rate, to = new.rate, "simulator rate changed");
                }
                cfg.rate = new.rate;
                cfg.limit = new.limit;
                per_tick = cfg.rate * tick.as_secs_f64();
            }
        }
        carry += per_tick;
        let n = carry.floor() as u64;
        carry -= n as f64;
        let now = now_ms();
        for _ in 0..n {
            if cfg.limit > 0 && sent >= cfg.limit {
                health.set_source(
                    "sim",
                    SourceState::Stopped,
                    Some(format!("limit of {} events reached", cfg.limit)),
                );
                return;
            }
            if tx.send(sim.next_event(now)).await.is_err() {
                return;
            }
            sent += 1;
        }
    }
}

feed!(
    /// The simulator as a feed.
    Sim,
    "sim",
    start = start
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_covers_every_kind() {
        let cfg = SimConfig {
            seed: 7,
            ..SimConfig::default()
        };
        let mut a = Simulator::new(&cfg);
        let mut b = Simulator::new(&cfg);
        let mut kinds = std::collections::BTreeSet::new();
        for _ in 0..5000 {
            let (x, y) = (a.next_event(0), b.next_event(0));
            assert_eq!(x.to_wire("g", 1), y.to_wire("g", 1));
            kinds.insert(x.kind);
        }
        assert_eq!(kinds.len(), EventKind::ALL.len());
    }
}
