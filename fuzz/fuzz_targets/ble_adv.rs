//! One advertising report's AD structures (after a selector byte that varies the address,
//! event type and RSSI): the decoder, then the aggregator and the wire form.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| storegw::fuzzing::ble_adv(data));
