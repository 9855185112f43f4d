//! A refused POS export file: the card-data search over its bytes, before it may be kept.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| storegw::fuzzing::pos_refused(data));
