//! Node identities: Ed25519 key pairs and the [`NodeId`] derived from them.
//!
//! A `NodeId` is the SHA-256 digest of the node's Ed25519 public key, 32 raw bytes. Ids are compared
//! by XOR distance (Kademlia). Hex is for humans only; the wire carries the raw bytes.

use core::fmt;

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The 256-bit identifier of a node: SHA-256 of its Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The id belonging to an Ed25519 public key.
    pub fn from_public_key(public_key: &[u8; 32]) -> Self {
        NodeId(Sha256::digest(public_key).into())
    }

    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The Kademlia XOR distance between two ids.
    pub fn distance(&self, other: &NodeId) -> Distance {
        Distance(core::array::from_fn(|i| self.0[i] ^ other.0[i]))
    }

    /// Parses 64 hexadecimal digits.
    ///
    /// # Errors
    /// [`ParseIdError`] if the text is not exactly 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, ParseIdError> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return Err(ParseIdError);
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or(ParseIdError)?;
            let lo = hex_value(pair[1]).ok_or(ParseIdError)?;
            out[i] = hi << 4 | lo;
        }
        Ok(NodeId(out))
    }

    /// A short prefix for logs: the first 8 hex digits.
    pub fn short(&self) -> ShortId {
        ShortId(*self)
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Writes `bytes` as lowercase hex.
pub(crate) fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

/// The first eight hex digits of a [`NodeId`], for log lines.
#[derive(Clone, Copy)]
pub struct ShortId(NodeId);

impl fmt::Display for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0 .0[..4])
    }
}

impl fmt::Debug for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Text that is not a node id: 64 hexadecimal digits were expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseIdError;

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a node id is 64 hexadecimal digits")
    }
}

impl core::error::Error for ParseIdError {}

/// XOR distance between two [`NodeId`]s; ordered as a big-endian 256-bit number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Distance(pub [u8; 32]);

impl Distance {
    /// Number of leading zero bits: the length of the common prefix of the two ids.
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for b in self.0 {
            if b == 0 {
                n += 8;
            } else {
                return n + b.leading_zeros();
            }
        }
        n
    }
}

/// A node's long-term identity: an Ed25519 key pair.
///
/// Adapters make one from operating-system randomness ([`Identity::from_secret`] with 32 random
/// bytes); the simulator and tests derive them from seeds. The secret never leaves this value
/// except through [`Identity::secret`], which the QUIC layer uses to sign its certificate.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
    id: NodeId,
}

impl Identity {
    /// The identity whose Ed25519 secret key is `secret`.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&secret);
        let id = NodeId::from_public_key(key.verifying_key().as_bytes());
        Identity { key, id }
    }

    /// An identity derived deterministically from a seed (tests and simulation only: a seed is
    /// not a secret).
    pub fn from_seed(seed: u64) -> Self {
        let mut secret = [0u8; 32];
        crate::Rng::from_seed(seed ^ 0x6d61_6375_6c61_6964).fill(&mut secret);
        Identity::from_secret(secret)
    }

    /// The node id of this identity.
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The Ed25519 secret key (32 bytes). Handle with care.
    pub fn secret(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The key fingerprint shown to operators: `sha256:<hex of NodeId>`.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(self.id)
    }

    /// An Ed25519 signature of `message` by this identity.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.key.sign(message).to_bytes()
    }
}

/// Whether `signature` is an Ed25519 signature of `message` by `public_key` (strict
/// verification: no malleable or small-order forms).
pub fn verify_signature(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    let signature = ed25519_dalek::Signature::from_bytes(signature);
    key.verify_strict(message, &signature).is_ok()
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A key fingerprint, displayed as `sha256:<hex>` (SSH style).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Fingerprint(pub NodeId);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn node_id_is_sha256_of_public_key_and_hex_round_trips() {
        let who = Identity::from_seed(1);
        let expect: [u8; 32] = Sha256::digest(who.public_key()).into();
        assert_eq!(who.node_id().0, expect);
        let hex = format!("{}", who.node_id());
        assert_eq!(hex.len(), 64);
        assert_eq!(NodeId::from_hex(&hex), Ok(who.node_id()));
        assert_eq!(NodeId::from_hex("xyz"), Err(ParseIdError));
        assert_eq!(
            NodeId::from_hex(&hex.replace('0', "g")).is_err(),
            hex.contains('0')
        );
        assert_ne!(Identity::from_seed(2).node_id(), who.node_id());
        assert_eq!(Identity::from_seed(1).node_id(), who.node_id());
    }

    #[test]
    fn distance_has_the_xor_metric_basics() {
        let a = Identity::from_seed(3).node_id();
        let b = Identity::from_seed(4).node_id();
        assert_eq!(a.distance(&a), Distance([0; 32]));
        assert_eq!(a.distance(&b), b.distance(&a));
        assert_eq!(a.distance(&a).leading_zeros(), 256);
        let mut c = a;
        c.0[0] ^= 0x80;
        assert_eq!(a.distance(&c).leading_zeros(), 0);
        c = a;
        c.0[31] ^= 1;
        assert_eq!(a.distance(&c).leading_zeros(), 255);
    }
}
