//! Replays the checked-in corpus of the `store_files` fuzz target (`fuzz/corpus/store_files/`)
//! on stable Rust, so every input a fuzzer found interesting keeps being checked.

use std::path::PathBuf;

#[test]
fn store_files_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/store_files");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} must exist: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entries are readable").path())
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 10,
        "the corpus holds {} inputs",
        inputs.len()
    );
    for path in inputs {
        let data = std::fs::read(&path).expect("corpus files are readable");
        macula_mesh::fuzzing::store_files(&data);
    }
}
