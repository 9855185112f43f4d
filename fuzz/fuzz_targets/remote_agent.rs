//! The remote agent under what a hostile broker could send on the three remote topics:
//! unverified and signed documents and commands, with bounded output checked after each.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| storegw::fuzzing::remote_agent(data));
