//! The frames of protocol version 1.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// The protocol version this build speaks, sent in `Connect` and `ConnectAck`.
pub const PROTOCOL_VERSION: u16 = 1;

/// One protocol message. The variant index is the frame type on the wire, so variants are only
/// ever appended, never reordered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Frame {
    /// Type 0. The dialer's opening message on the control stream.
    Connect(Connect),
    /// Type 1. The listener accepted the `Connect`.
    ConnectAck(ConnectAck),
    /// Type 2. The listener refused the `Connect`; it closes the link after sending this.
    ConnectError(ConnectError),
    /// Type 3. A request for a `Pong` with the same correlation id.
    Ping(Ping),
    /// Type 4. The answer to a `Ping`, echoing its correlation id.
    Pong(Ping),
    /// Type 5. DHT: which nodes do you know closest to `target`? Answered by `Nodes`.
    FindNode(FindNode),
    /// Type 6. DHT: the records under `key`, or the nodes you know closest to it. Answered by
    /// `Records`.
    FindValue(FindValue),
    /// Type 7. DHT: the answer to `FindNode`.
    Nodes(Nodes),
    /// Type 8. DHT: the answer to `FindValue`.
    Records(Records),
    /// Type 9. DHT: keep this record (published by the sender) under `key`. Answered by `Ack`
    /// or `Refused`.
    Store(Store),
    /// Type 10. DHT: drop the sender's record under `key`. Answered by `Ack` or `Refused`.
    Withdraw(Withdraw),
    /// Type 11. DHT: a `Store` or `Withdraw` was carried out.
    Ack(Ack),
    /// Type 12. DHT: a request was refused; the requester should not wait for anything else.
    Refused(Refused),
}

impl Frame {
    /// The frame type as it appears on the wire (postcard's variant index).
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Connect(_) => 0,
            Frame::ConnectAck(_) => 1,
            Frame::ConnectError(_) => 2,
            Frame::Ping(_) => 3,
            Frame::Pong(_) => 4,
            Frame::FindNode(_) => 5,
            Frame::FindValue(_) => 6,
            Frame::Nodes(_) => 7,
            Frame::Records(_) => 8,
            Frame::Store(_) => 9,
            Frame::Withdraw(_) => 10,
            Frame::Ack(_) => 11,
            Frame::Refused(_) => 12,
        }
    }

    /// Whether the DHT handles this frame (types 5–12).
    pub fn is_dht(&self) -> bool {
        (5..=12).contains(&self.kind())
    }

    /// Whether this is a DHT request, which gets an answer (not itself an answer).
    pub fn is_dht_request(&self) -> bool {
        matches!(
            self,
            Frame::FindNode(_) | Frame::FindValue(_) | Frame::Store(_) | Frame::Withdraw(_)
        )
    }
}

/// The dialer's handshake message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connect {
    /// The dialer's protocol version.
    pub version: u16,
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
}

/// The listener's acceptance of a `Connect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectAck {
    /// The listener's protocol version.
    pub version: u16,
    /// The listener's node id; must equal the id proven by its TLS certificate.
    pub node_id: NodeId,
    /// Addresses the listener listens on (at most 16).
    pub listen_addrs: Vec<WireAddr>,
    /// The listener's roles.
    pub roles: u8,
}

/// The listener's refusal of a `Connect`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectError {
    /// Why the listener refused.
    pub reason: RefuseReason,
    /// A human-readable explanation (at most 256 bytes are kept).
    pub message: String,
}

/// Why a handshake was refused. Encoded as its variant index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RefuseReason {
    /// 0: the listener serves another realm.
    WrongRealm,
    /// 1: the realm requires an API key and the proof was missing or wrong.
    BadCredentials,
    /// 2: the protocol versions are incompatible.
    Version,
    /// 3: the listener has no room for another peer.
    Capacity,
    /// 4: the `node_id` in the handshake is not the one proven by TLS.
    IdentityMismatch,
}

impl RefuseReason {
    /// Every reason, in wire order.
    pub const ALL: [RefuseReason; 5] = [
        RefuseReason::WrongRealm,
        RefuseReason::BadCredentials,
        RefuseReason::Version,
        RefuseReason::Capacity,
        RefuseReason::IdentityMismatch,
    ];

    /// The short name used in logs, stats and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::WrongRealm => "wrong_realm",
            RefuseReason::BadCredentials => "bad_credentials",
            RefuseReason::Version => "version",
            RefuseReason::Capacity => "capacity",
            RefuseReason::IdentityMismatch => "identity_mismatch",
        }
    }
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A ping or pong: a correlation id echoed by the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// The correlation id; a `Pong` carries the id of the `Ping` it answers.
    pub id: u64,
}

/// A 256-bit DHT key. Record keys are derived from the realm, a kind and a name
/// (`dht::record_key`); node lookups use a [`NodeId`]'s bytes.
pub type KeyBytes = [u8; 32];

/// `FindNode`: a correlation id and a target id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindNode {
    /// The correlation id, echoed by the answer.
    pub id: u64,
    /// The id to find the closest nodes to.
    pub target: KeyBytes,
}

/// `FindValue`: a correlation id and a record key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindValue {
    /// The correlation id, echoed by the answer.
    pub id: u64,
    /// The record key.
    pub key: KeyBytes,
}

/// A node and one address it listens on, as DHT answers carry them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireContact {
    /// The node's id.
    pub id: NodeId,
    /// Where it listens.
    pub addr: WireAddr,
}

/// `Nodes`: the answer to `FindNode` (at most k contacts, closest first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nodes {
    /// The `FindNode`'s correlation id.
    pub id: u64,
    /// The closest contacts the answerer knows.
    pub nodes: Vec<WireContact>,
}

/// A record as it travels: who published it, where they listen, its value, and how long it has
/// left to live (relative, so clocks need not agree).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRecord {
    /// The publishing node; a `Store` is accepted only from this node itself.
    pub publisher: NodeId,
    /// Addresses the publisher listens on (at most 16).
    pub addrs: Vec<WireAddr>,
    /// The value or provider metadata (bounded by the store's value size limit).
    pub value: Vec<u8>,
    /// Seconds left to live; the store caps it at its own maximum.
    pub ttl_secs: u32,
}

/// `Records`: the answer to `FindValue`. Records under the key if the answerer holds any, and
/// the closest contacts it knows either way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Records {
    /// The `FindValue`'s correlation id.
    pub id: u64,
    /// Records under the key (empty if none).
    pub records: Vec<WireRecord>,
    /// The closest contacts the answerer knows.
    pub nodes: Vec<WireContact>,
}

/// `Store`: keep `record` under `key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Store {
    /// The correlation id, echoed by `Ack` or `Refused`.
    pub id: u64,
    /// The record key.
    pub key: KeyBytes,
    /// The record; its publisher must be the sender.
    pub record: WireRecord,
}

/// `Withdraw`: drop the sender's record under `key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdraw {
    /// The correlation id, echoed by `Ack` or `Refused`.
    pub id: u64,
    /// The record key.
    pub key: KeyBytes,
}

/// `Ack`: the request with this correlation id was carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The request's correlation id.
    pub id: u64,
}

/// `Refused`: the request with this correlation id was refused, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// The request's correlation id.
    pub id: u64,
    /// Why.
    pub reason: DhtRefusal,
}

/// Why a DHT request was refused. Encoded as its variant index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DhtRefusal {
    /// 0: the sender sent more requests than its rate allows; try another node or later.
    RateLimited,
    /// 1: the store holds as many records as it may.
    StoreFull,
    /// 2: the key has as many providers as it may.
    TooManyProviders,
    /// 3: the value is larger than the store accepts.
    ValueTooLarge,
    /// 4: the record's publisher is not the sender.
    NotPublisher,
}

impl DhtRefusal {
    /// The short name used in logs and stats.
    pub fn as_str(self) -> &'static str {
        match self {
            DhtRefusal::RateLimited => "rate_limited",
            DhtRefusal::StoreFull => "store_full",
            DhtRefusal::TooManyProviders => "too_many_providers",
            DhtRefusal::ValueTooLarge => "value_too_large",
            DhtRefusal::NotPublisher => "not_publisher",
        }
    }
}

impl fmt::Display for DhtRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A socket address on the wire: an IPv4 or IPv6 address and a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireAddr {
    /// 0: IPv4 address octets and port.
    V4([u8; 4], u16),
    /// 1: IPv6 address octets and port.
    V6([u8; 16], u16),
}

impl From<SocketAddr> for WireAddr {
    fn from(addr: SocketAddr) -> Self {
        match addr.ip() {
            IpAddr::V4(ip) => WireAddr::V4(ip.octets(), addr.port()),
            IpAddr::V6(ip) => WireAddr::V6(ip.octets(), addr.port()),
        }
    }
}

impl From<WireAddr> for SocketAddr {
    fn from(addr: WireAddr) -> Self {
        match addr {
            WireAddr::V4(ip, port) => SocketAddr::new(Ipv4Addr::from(ip).into(), port),
            WireAddr::V6(ip, port) => SocketAddr::new(Ipv6Addr::from(ip).into(), port),
        }
    }
}

/// Why a link was closed, carried by the transport's close (the QUIC application error code) so
/// the other side learns it even if no frame got through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// 0: a clean goodbye; the node is leaving or dropping the peer on purpose.
    Goodbye,
    /// 1: the peer sent bytes that are not a valid frame.
    MalformedFrame,
    /// 2: the peer announced a frame larger than the maximum frame size.
    FrameTooLarge,
    /// 3: the peer sent a frame that is not allowed in the link's state.
    ProtocolViolation,
    /// 4: nothing was heard from the peer for the idle timeout.
    IdleTimeout,
    /// 5: the handshake did not complete in time.
    HandshakeTimeout,
    /// 6: the link was replaced by another link to the same peer.
    Duplicate,
    /// 7: the peer did not read what it was sent and the send buffer overflowed.
    SendBufferFull,
    /// 8: the dialed node is not the node that was expected at the address.
    UnexpectedPeer,
    /// 16 + reason: the handshake was refused for `reason`.
    Refused(RefuseReason),
    /// Any other code, from a newer peer.
    Other(u32),
}

impl CloseCode {
    /// The numeric code sent by the transport.
    pub fn to_u32(self) -> u32 {
        match self {
            CloseCode::Goodbye => 0,
            CloseCode::MalformedFrame => 1,
            CloseCode::FrameTooLarge => 2,
            CloseCode::ProtocolViolation => 3,
            CloseCode::IdleTimeout => 4,
            CloseCode::HandshakeTimeout => 5,
            CloseCode::Duplicate => 6,
            CloseCode::SendBufferFull => 7,
            CloseCode::UnexpectedPeer => 8,
            CloseCode::Refused(r) => 16 + r as u32,
            CloseCode::Other(code) => code,
        }
    }

    /// The code for a numeric value received from the transport.
    pub fn from_u32(code: u32) -> Self {
        match code {
            0 => CloseCode::Goodbye,
            1 => CloseCode::MalformedFrame,
            2 => CloseCode::FrameTooLarge,
            3 => CloseCode::ProtocolViolation,
            4 => CloseCode::IdleTimeout,
            5 => CloseCode::HandshakeTimeout,
            6 => CloseCode::Duplicate,
            7 => CloseCode::SendBufferFull,
            8 => CloseCode::UnexpectedPeer,
            16..=20 => CloseCode::Refused(RefuseReason::ALL[(code - 16) as usize]),
            other => CloseCode::Other(other),
        }
    }

    /// The short name used in logs and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseCode::Goodbye => "goodbye",
            CloseCode::MalformedFrame => "malformed_frame",
            CloseCode::FrameTooLarge => "frame_too_large",
            CloseCode::ProtocolViolation => "protocol_violation",
            CloseCode::IdleTimeout => "idle_timeout",
            CloseCode::HandshakeTimeout => "handshake_timeout",
            CloseCode::Duplicate => "duplicate",
            CloseCode::SendBufferFull => "send_buffer_full",
            CloseCode::UnexpectedPeer => "unexpected_peer",
            CloseCode::Refused(r) => r.as_str(),
            CloseCode::Other(_) => "other",
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseCode::Refused(r) => write!(f, "refused: {r}"),
            CloseCode::Other(code) => write!(f, "code {code}"),
            other => f.write_str(other.as_str()),
        }
    }
}
