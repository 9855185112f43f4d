//! Telemetry: what the gateway counts ([`metrics`]) and how its parts are doing ([`health`]).
//! Both sit low in the tree, below the spool and the sources that report into them, so nothing
//! that reports has to import `ops/` (the HTTP server, status documents, reload), which reads
//! them.

pub mod health;
pub mod metrics;

/// A restart inside a source (e.g. the BLE scanner): counted in its health and in
/// `storegw_source_restarts_total{source, what}`.
pub fn source_restart(name: &str, what: &str) {
    health::source_restart(name);
    metrics::global().count(
        metrics::Metric::SourceRestarts,
        &metrics::labels(&[("source", name), ("what", what)]),
        1,
    );
}
