//! The control plane: the HTTP server (`/metrics`, `/healthz`, POS ingest), status payloads,
//! reload, logging, systemd integration and the central tools; it reads `telemetry`.

#[cfg(feature = "central")]
pub mod fleet;
pub mod http_server;
pub mod logging;
pub mod reload;
pub mod status;
pub mod systemd;
#[cfg(feature = "central")]
pub mod tail;
