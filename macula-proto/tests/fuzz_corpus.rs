//! Replays the checked-in fuzz corpora (`fuzz/corpus/<target>/`) on stable Rust, so every
//! input a fuzzer ever found interesting keeps being checked by `cargo test`.

use std::path::PathBuf;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} must exist: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entries are readable").path())
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 10,
        "{target}: the corpus holds {} inputs",
        inputs.len()
    );
    for path in inputs {
        let data = std::fs::read(&path).expect("corpus files are readable");
        body(&data);
    }
}

#[test]
fn frame_decode_corpus() {
    replay("frame_decode", macula_proto::fuzzing::frame_decode);
}

#[test]
fn node_link_data_corpus() {
    replay("node_link_data", macula_proto::fuzzing::node_link_data);
}

#[test]
fn node_dht_corpus() {
    replay("node_dht", macula_proto::fuzzing::node_dht);
}
