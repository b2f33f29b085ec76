//! Realm authentication: the API-key proofs sent in `Connect.auth` (the dialer's) and
//! `ConnectAck.auth` (the listener's).
//!
//! A proof is HMAC-SHA-256 keyed with the realm API key over a domain label (one for each side,
//! so neither proof can be reflected as the other), the realm name, the prover's node id and a
//! 32-byte value both ends export from the link's TLS session. The exported value is unique to
//! the connection, so a proof cannot be replayed on another one, and the key itself never
//! crosses the wire.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::ApiKey;
use crate::id::NodeId;

/// The label under which adapters export keying material from TLS for the proof.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-macula-realm-auth";

/// Which side proves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prover {
    /// The dialer, in `Connect`.
    Dialer,
    /// The listener, in `ConnectAck`.
    Listener,
}

impl Prover {
    fn domain(self) -> &'static [u8] {
        match self {
            Prover::Dialer => b"macula/1 realm-auth",
            Prover::Listener => b"macula/1 realm-auth-listener",
        }
    }
}

fn proof_mac(
    side: Prover,
    key: &ApiKey,
    realm: &str,
    prover: &NodeId,
    exporter: &[u8; 32],
) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(side.domain());
    mac.update(&(realm.len() as u32).to_be_bytes());
    mac.update(realm.as_bytes());
    mac.update(prover.as_bytes());
    mac.update(exporter);
    mac
}

/// The proof `side` (node `prover`) with `key` sends; the other end computes the same and
/// compares.
pub(crate) fn realm_proof(
    side: Prover,
    key: &ApiKey,
    realm: &str,
    prover: &NodeId,
    exporter: &[u8; 32],
) -> [u8; 32] {
    proof_mac(side, key, realm, prover, exporter)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `proof` is right, compared in constant time.
pub(crate) fn verify_realm_proof(
    side: Prover,
    key: &ApiKey,
    realm: &str,
    prover: &NodeId,
    exporter: &[u8; 32],
    proof: &[u8; 32],
) -> bool {
    proof_mac(side, key, realm, prover, exporter)
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
        let d = Prover::Dialer;
        let p = realm_proof(d, &key, "a.b", &id, &ex);
        assert!(verify_realm_proof(d, &key, "a.b", &id, &ex, &p));
        assert!(!verify_realm_proof(d, &other, "a.b", &id, &ex, &p));
        assert!(!verify_realm_proof(d, &key, "a.c", &id, &ex, &p));
        assert!(!verify_realm_proof(
            d,
            &key,
            "a.b",
            &NodeId([2; 32]),
            &ex,
            &p
        ));
        assert!(!verify_realm_proof(d, &key, "a.b", &id, &[8; 32], &p));
        // A dialer's proof is no listener's: neither side can reflect the other's.
        assert!(!verify_realm_proof(
            Prover::Listener,
            &key,
            "a.b",
            &id,
            &ex,
            &p
        ));
    }
}
