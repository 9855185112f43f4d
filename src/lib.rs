//! storegw: the in-store edge gateway of the retail CDP (see README and DESIGN).

pub mod bench;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod event;
pub mod fuzzing;
pub mod model;
pub mod ops;
pub mod privacy;
pub mod remote;
pub mod replay;
pub mod source;
pub mod spool;
pub mod uplink;
