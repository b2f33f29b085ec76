#![no_main]
//! A node's DHT fed arbitrary bytes by an established peer while it runs its own operations.

libfuzzer_sys::fuzz_target!(|data: &[u8]| macula_proto::fuzzing::node_dht(data));
