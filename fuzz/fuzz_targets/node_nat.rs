#![no_main]
//! A node's NAT traversal fed arbitrary raw datagrams and NAT frames while it detects.

libfuzzer_sys::fuzz_target!(|data: &[u8]| macula_proto::fuzzing::node_nat(data));
