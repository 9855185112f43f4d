//! ARTS POSLog XML from a legacy till's export directory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| storegw::fuzzing::pos_xml(data));
