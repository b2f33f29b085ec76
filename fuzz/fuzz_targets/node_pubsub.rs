#![no_main]
//! A node's pub/sub fed arbitrary bytes by an established peer while it subscribes, reads and
//! publishes.

libfuzzer_sys::fuzz_target!(|data: &[u8]| macula_proto::fuzzing::node_pubsub(data));
