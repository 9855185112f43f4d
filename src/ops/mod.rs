//! The control plane: metrics, health, status payloads, systemd integration.

pub mod fleet;
pub mod http_server;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod status;
pub mod systemd;
pub mod tail;
