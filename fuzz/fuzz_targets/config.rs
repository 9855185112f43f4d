//! The configuration file: TOML syntax, every section's validation and the error rendering
//! that names file, line and key.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| storegw::fuzzing::config(data));
