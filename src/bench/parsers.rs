//! Parser throughput beside external tools on the same input (tshark, TheengsDecoder).

use super::Row;

/// A named parser measurement.
pub type ParserBench = (&'static str, fn() -> Result<Vec<Row>, String>);

/// Every parser measurement, run in this order.
pub const ALL: &[ParserBench] = &[];
