//! storegw: the in-store edge gateway of the retail CDP (see README and docs/design.md).

// Every public item says why it is there (the project's standard); CI's clippy makes this an
// error.
#![warn(missing_docs)]

#[cfg(feature = "bench")]
pub mod bench;
pub mod buffers;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod event;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod ops;
pub mod privacy;
pub mod remote;
pub mod sensor_events;
pub mod source;
pub mod spool;
pub mod telemetry;
pub mod tls;
pub mod uplink;
