//! The control protocol (id 0): the handshake and keep-alive, on every link's control channel.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::{Message, ProtocolId, RefuseReason, WireAddr};
use crate::id::NodeId;

/// The oldest link version this build speaks.
pub const MIN_VERSION: u16 = 3;
/// The newest link version this build speaks; two nodes use the newest both speak.
pub const MAX_VERSION: u16 = 3;

/// Most protocols a `Connect` or `ConnectAck` may list; more is a protocol violation.
pub const MAX_PROTOCOLS: usize = 64;

/// The control protocol's messages. The variant index is the message kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Kind 0. The dialer's opening message.
    Connect(Connect),
    /// Kind 1. The listener accepted the `Connect`.
    ConnectAck(ConnectAck),
    /// Kind 2. The listener refused the `Connect`; it closes the link after sending this.
    ConnectError(ConnectError),
    /// Kind 3. A request for a `Pong` with the same correlation id.
    Ping(Ping),
    /// Kind 4. The answer to a `Ping`, echoing its correlation id.
    Pong(Ping),
}

impl Message for Control {
    const PROTOCOL: ProtocolId = ProtocolId::CONTROL;
    const KINDS: u32 = 5;
}

/// A range of link versions, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    /// The oldest.
    pub min: u16,
    /// The newest.
    pub max: u16,
}

impl Versions {
    /// The versions this build speaks.
    pub const OURS: Versions = Versions {
        min: MIN_VERSION,
        max: MAX_VERSION,
    };

    /// The newest version both ranges hold, if any.
    pub fn common(self, other: Versions) -> Option<u16> {
        let newest = self.max.min(other.max);
        (newest >= self.min.max(other.min)).then_some(newest)
    }
}

/// A protocol a node speaks, with its version. Two nodes exchange a protocol's frames only when
/// both list it with the same version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProtocolOffer {
    /// The protocol.
    pub id: ProtocolId,
    /// Its version.
    pub version: u16,
}

/// The dialer's handshake message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connect {
    /// The link versions the dialer speaks. First, so that every version can read it.
    pub versions: Versions,
    /// The dialer's node id; must equal the id proven by its TLS certificate.
    pub node_id: NodeId,
    /// The realm the dialer wants to join.
    pub realm: String,
    /// HMAC-SHA-256 proof of the realm API key over the link's TLS exporter value, or `None` when
    /// the dialer has no key.
    pub auth: Option<[u8; 32]>,
    /// Addresses the dialer listens on (at most 16).
    pub listen_addrs: Vec<WireAddr>,
    /// The dialer's roles (bit 0 bootstrap, bit 1 gateway).
    pub roles: u8,
    /// The protocols the dialer speaks besides the control protocol (at most 64).
    pub protocols: Vec<ProtocolOffer>,
}

/// The listener's acceptance of a `Connect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectAck {
    /// The link version the listener chose: the newest both speak.
    pub version: u16,
    /// The listener's node id; must equal the id proven by its TLS certificate.
    pub node_id: NodeId,
    /// Addresses the listener listens on (at most 16).
    pub listen_addrs: Vec<WireAddr>,
    /// The listener's roles.
    pub roles: u8,
    /// The protocols the listener speaks besides the control protocol (at most 64).
    pub protocols: Vec<ProtocolOffer>,
    /// The listener's proof that it knows the realm's API key (under the key the dialer's
    /// proof was made with); `None` in an open realm.
    pub auth: Option<[u8; 32]>,
}

/// The listener's refusal of a `Connect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectError {
    /// Why the listener refused.
    pub reason: RefuseReason,
    /// A human-readable explanation (at most 256 bytes are kept).
    pub message: String,
}

/// A ping or pong: a correlation id echoed by the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// The correlation id; a `Pong` carries the id of the `Ping` it answers.
    pub id: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_common_version_is_chosen() {
        let v = |min, max| Versions { min, max };
        assert_eq!(v(2, 4).common(v(3, 5)), Some(4));
        assert_eq!(v(2, 2).common(v(2, 2)), Some(2));
        assert_eq!(v(2, 3).common(v(4, 5)), None, "disjoint");
        assert_eq!(v(4, 5).common(v(2, 3)), None, "disjoint, either way round");
    }
}
