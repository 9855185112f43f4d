//! A pcap or pcapng file as `storegw replay --wifi` reads it: framing, radiotap, 802.11 and
//! the footfall stage, then every event serialized for the wire.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| storegw::fuzzing::wifi_capture(data));
