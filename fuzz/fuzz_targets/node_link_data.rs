#![no_main]
//! A node fed arbitrary bytes on an unauthenticated and on an established link.

libfuzzer_sys::fuzz_target!(|data: &[u8]| macula_proto::fuzzing::node_link_data(data));
