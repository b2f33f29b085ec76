//! Replays the checked-in corpus of the `store_files` fuzz target (`fuzz/corpus/store_files/`)
//! on stable Rust, so every input a fuzzer found interesting keeps being checked.

#[test]
fn store_files_corpus() {
    macula_proto::fuzzing::replay_corpus("store_files", macula_mesh::fuzzing::store_files);
}
