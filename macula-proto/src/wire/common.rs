//! Types every protocol shares on the wire: addresses, close codes, handshake refusals.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

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
    /// 5: the dialer's source address is over a rate limit (failed authentications or new
    /// handshakes); its proof, if any, was not looked at.
    RateLimited,
}

impl RefuseReason {
    /// Every reason, in wire order.
    pub const ALL: [RefuseReason; 6] = [
        RefuseReason::WrongRealm,
        RefuseReason::BadCredentials,
        RefuseReason::Version,
        RefuseReason::Capacity,
        RefuseReason::IdentityMismatch,
        RefuseReason::RateLimited,
    ];

    /// The short name used in logs, stats and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::WrongRealm => "wrong_realm",
            RefuseReason::BadCredentials => "bad_credentials",
            RefuseReason::Version => "version",
            RefuseReason::Capacity => "capacity",
            RefuseReason::IdentityMismatch => "identity_mismatch",
            RefuseReason::RateLimited => "rate_limited",
        }
    }
}

impl fmt::Display for RefuseReason {
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
    /// 9: a frame of a protocol both ends speak named a message kind that protocol does not
    /// have.
    UnknownKind,
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
            CloseCode::UnknownKind => 9,
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
            9 => CloseCode::UnknownKind,
            16..=21 => CloseCode::Refused(RefuseReason::ALL[(code - 16) as usize]),
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
            CloseCode::UnknownKind => "unknown_kind",
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
