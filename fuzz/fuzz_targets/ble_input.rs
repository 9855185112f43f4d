//! A recorded BLE input as `storegw replay --ble` reads it: a btsnoop log or JSON lines of
//! reports, through the aggregator to the wire form.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| storegw::fuzzing::ble_input(data));
