//! Signed remote configuration documents: envelope, signature line, overlay header, forbidden
//! keys, layering and validation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| storegw::fuzzing::remote_document(data));
