//! Signed remote configuration and commands over MQTT (docs/fleet.md, "Remote configuration"):
//! the document format and its verification ([`document`]), signed commands ([`command`]),
//! what a gateway keeps on disk about them ([`state`]), the gateway's decisions ([`agent`]),
//! and the central team's tools ([`tools`]: `storegw keygen`, `sign`, `verify`, `push`,
//! `command`).

pub mod agent;
pub mod command;
pub mod document;
pub mod state;
#[cfg(feature = "central")]
pub mod tools;
