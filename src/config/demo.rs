//! The configuration `storegw demo` runs with, embedded in the binary.
//!
//! A leaf of the configuration layer: `storegw demo` and replay without `--config` both start
//! from it, and replay (under `source/`) must not import the demo, which imports the daemon.

/// The embedded demo configuration (`config/demo.toml`): the simulator on, a loopback broker.
pub const DEMO_TOML: &str = include_str!("../../config/demo.toml");
