//! The simulator's section, `[sources.sim]`: what the demo and load tests set.

use crate::config::section::{self, Row, Section};
use serde::Deserialize;

/// The synthetic store used by the demo and for load.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Run the synthetic store (default false): for demos and load tests; off in production.
    pub enabled: bool,
    /// Events per second across all kinds.
    pub rate: f64,
    /// Seed of the generator: the same seed gives the same events (default 1).
    pub seed: u64,
    /// Simulated beacons (at least 1, default 40).
    pub beacons: u32,
    /// Simulated tills, `R1`, `R2`, ... (at least 1, default 4).
    pub registers: u32,
    /// ISO 4217 code of the simulated transactions (default `EUR`).
    pub currency: String,
    /// Stop after this many events (0 = never); used by tests and benchmarks.
    pub limit: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            enabled: false,
            rate: 50.0,
            seed: 1,
            beacons: 40,
            registers: 4,
            currency: "EUR".into(),
            limit: 0,
        }
    }
}

impl Section for SimConfig {
    fn check(&self, issues: &mut Vec<(String, String)>) {
        let mut bad = |k: &str, m: String| issues.push((k.to_string(), m));
        if !(self.rate > 0.0 && self.rate <= 1_000_000.0) {
            bad(
                "sources.sim.rate",
                "must be greater than 0 and at most 1000000 events/s".into(),
            );
        }
        if self.beacons == 0 || self.registers == 0 {
            bad(
                "sources.sim.beacons",
                "beacons and registers must be at least 1".into(),
            );
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            bad(
                "sources.sim.currency",
                format!("`{}` is not an ISO 4217 code", self.currency),
            );
        }
    }
}

impl SimConfig {
    /// The simulator's rows of the reload table: rate and limit are re-read by the running
    /// task; what shapes the simulated store needs a restart.
    pub const RELOAD: &'static [Row<SimConfig>] = &[
        section::live(""),
        section::restart("enabled", |e, r| e.enabled = r.enabled),
        section::restart("seed", |e, r| e.seed = r.seed),
        section::restart("beacons", |e, r| e.beacons = r.beacons),
        section::restart("registers", |e, r| e.registers = r.registers),
        section::restart("currency", |e, r| e.currency = r.currency.clone()),
    ];
}
