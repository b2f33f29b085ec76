//! Realm authentication: the API-key proof sent in `Connect.auth`.
//!
//! The proof is HMAC-SHA-256 keyed with the realm API key over a domain label, the realm name, the
//! dialer's node id and a 32-byte value both ends export from the link's TLS session. The exported
//! value is unique to the connection, so a proof cannot be replayed on another one, and the key
//! itself never crosses the wire.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::ApiKey;
use crate::id::NodeId;

/// The label under which adapters export keying material from TLS for the proof.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-macula-realm-auth";

const DOMAIN: &[u8] = b"macula/1 realm-auth";

fn proof_mac(key: &ApiKey, realm: &str, dialer: &NodeId, exporter: &[u8; 32]) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(DOMAIN);
    mac.update(&(realm.len() as u32).to_be_bytes());
    mac.update(realm.as_bytes());
    mac.update(dialer.as_bytes());
    mac.update(exporter);
    mac
}

/// The proof a dialer with `key` sends; the listener computes the same and compares.
pub(crate) fn realm_proof(
    key: &ApiKey,
    realm: &str,
    dialer: &NodeId,
    exporter: &[u8; 32],
) -> [u8; 32] {
    proof_mac(key, realm, dialer, exporter)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `proof` is right, compared in constant time.
pub(crate) fn verify_realm_proof(
    key: &ApiKey,
    realm: &str,
    dialer: &NodeId,
    exporter: &[u8; 32],
    proof: &[u8; 32],
) -> bool {
    proof_mac(key, realm, dialer, exporter)
        .verify_slice(proof)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_binds_key_realm_dialer_and_session() {
        let key = ApiKey::new(b"0123456789abcdef").unwrap();
        let other = ApiKey::new(b"fedcba9876543210").unwrap();
        let id = NodeId([1; 32]);
        let ex = [7u8; 32];
        let p = realm_proof(&key, "a.b", &id, &ex);
        assert!(verify_realm_proof(&key, "a.b", &id, &ex, &p));
        assert!(!verify_realm_proof(&other, "a.b", &id, &ex, &p));
        assert!(!verify_realm_proof(&key, "a.c", &id, &ex, &p));
        assert!(!verify_realm_proof(&key, "a.b", &NodeId([2; 32]), &ex, &p));
        assert!(!verify_realm_proof(&key, "a.b", &id, &[8; 32], &p));
    }
}
