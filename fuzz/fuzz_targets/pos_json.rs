//! POS JSON as pushed over HTTP, dropped in a watched directory or polled: the first byte
//! picks the canonical document, JSON lines, Square or Shopify.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| storegw::fuzzing::pos_json(data));
