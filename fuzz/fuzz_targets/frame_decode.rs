#![no_main]
//! The streaming frame decoder on arbitrary bytes and chunkings.

libfuzzer_sys::fuzz_target!(|data: &[u8]| macula_proto::fuzzing::frame_decode(data));
