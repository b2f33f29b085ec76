//! Entry points for the fuzz targets in `fuzz/` (and their corpus replay in `cargo test`):
//! each takes arbitrary bytes and panics only on a real bug.

use crate::store::{format_identity, format_pins, parse_identity, parse_pins};

/// Reads `data` as an identity file and as a pin file; whatever reads must read back the
/// same once written out again.
pub fn store_files(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(identity) = parse_identity(&text) {
        let again = parse_identity(&format_identity(&identity))
            .expect("a written identity file reads back");
        assert_eq!(again.node_id(), identity.node_id());
    }
    if let Ok(pins) = parse_pins(&text) {
        let written = format_pins(pins.iter().map(|(name, id)| (name.as_str(), *id)));
        assert_eq!(parse_pins(&written), Ok(pins), "{written}");
    }
}
