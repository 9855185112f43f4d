//! Input feeds. Raw identifiers exist only inside a source and its privacy stage, in RAM.

pub mod sim;
