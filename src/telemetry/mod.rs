//! Telemetry: what the gateway counts ([`metrics`]) and how its parts are doing ([`health`]).
//! Both sit low in the tree, below the spool and the sources that report into them, so nothing
//! that reports has to import `ops/` (the HTTP server, status documents, reload), which reads
//! them.
//!
//! The registries are not statics: the daemon creates one [`Telemetry`] per pipeline and hands
//! clones down (the sources' `SourceContext`, `Spool::open_with`, the uplink, the remote agent,
//! the reloader, the HTTP server's state). Whoever reads a figure reads the registry of the
//! pipeline it belongs to, so two pipelines in one process (tests, the fleet bench) never mix
//! their counts, and a test sees only what it caused.

pub mod health;
pub mod metrics;

use std::sync::Arc;

/// A handle on one pipeline's metrics and health registries. Cloning is two reference-count
/// increments, so every part that reports keeps its own clone instead of reaching for a global.
#[derive(Clone, Default)]
pub struct Telemetry {
    metrics: Arc<metrics::Metrics>,
    health: Arc<health::Health>,
}

impl Telemetry {
    /// Fresh, empty registries: one per pipeline, or a tool's or test's own.
    pub fn new() -> Telemetry {
        Telemetry::default()
    }

    /// The counters and gauges `/metrics` renders.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// Source states, dead tasks, uptime and configuration state (status document, `/healthz`).
    /// Shared (`Arc`) so a [`health::Vital`] can keep reporting from the task it watches.
    pub fn health(&self) -> &Arc<health::Health> {
        &self.health
    }

    /// A restart inside a source (e.g. the BLE scanner): counted in its health and in
    /// `storegw_source_restarts_total{source, what}`.
    pub fn source_restart(&self, name: &str, what: &str) {
        self.health.source_restart(name);
        self.metrics.count(
            metrics::Metric::SourceRestarts,
            &metrics::labels(&[("source", name), ("what", what)]),
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The point of handing registries down: what one pipeline reports stays out of another's.
    #[test]
    fn two_handles_share_nothing_and_clones_share_everything() {
        let a = Telemetry::new();
        let b = Telemetry::new();
        let a2 = a.clone();
        a2.source_restart("ble", "scan");
        a2.metrics().events_out(crate::event::Stream::Pos, 3);
        assert_eq!(a.health().source_snapshot()["ble"].restarts, 1);
        assert_eq!(a.metrics().events_out_total(crate::event::Stream::Pos), 3);
        assert!(b.health().source_snapshot().is_empty());
        assert_eq!(b.metrics().events_out_total(crate::event::Stream::Pos), 0);
    }
}
