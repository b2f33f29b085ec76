#![no_main]
//! The identity and pin file readers of `macula-mesh::store`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| macula_mesh::fuzzing::store_files(data));
