#![no_main]
//! A node's RPC fed arbitrary bytes by an established peer while it serves, answers and calls.

libfuzzer_sys::fuzz_target!(|data: &[u8]| macula_proto::fuzzing::node_rpc(data));
