//! Signed commands: envelope, signature line, fields, target, expiry, nonce replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| storegw::fuzzing::remote_command(data));
