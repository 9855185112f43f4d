//! A till's CSV export with the default column mapping.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| storegw::fuzzing::pos_csv(data));
