//! One frame as live capture hands it over. The first byte selects radiotap or bare 802.11,
//! a cut capture, the FCS check, the bad-FCS and group-source policies and visits.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| storegw::fuzzing::wifi_frame(data));
